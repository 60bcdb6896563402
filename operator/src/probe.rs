//! Checks both sides of a job without writing anything (ListObjectsV2 max-keys 1 on the
//! source, HeadBucket on the destination, a directory check on a path). The controller and
//! `ferry run` both turn the result into the decision's [`Probe`].

use std::sync::Arc;

use ferry_api::{FailureClass, Side};
use ferry_core::{JobCredentials, Transfer};
use ferry_engine::limit::Limits;
use ferry_engine::retry::RetryPolicy;
use ferry_engine::{stores, TransferError};

use crate::migrationjob::decide::{Probe, ProbeError};

/// Probes the sides for which `check(side)` holds; the others count as fine.
pub async fn probe(
    t: &Transfer,
    credentials: &JobCredentials,
    attempts: u32,
    check: impl Fn(Side) -> bool,
) -> Probe {
    let limits = Arc::new(Limits::unlimited());
    let retry = RetryPolicy {
        max_attempts: attempts,
        ..Default::default()
    };
    let source = if check(Side::Source) {
        let opened = stores::open(
            &t.source,
            &credentials.source,
            limits.clone(),
            retry.clone(),
        );
        let res = match opened.await {
            Ok(s) => s.source().probe().await,
            Err(e) => Err(e),
        };
        problem(res, Side::Source)
    } else {
        None
    };
    let destination = if check(Side::Destination) {
        let opened = stores::open(&t.destination, &credentials.destination, limits, retry);
        let res = match opened.await.and_then(|o| o.sink()) {
            Ok(d) => d.probe_destination(t.dry_run).await,
            Err(e) => Err(e),
        };
        problem(res, Side::Destination)
    } else {
        None
    };
    Probe {
        source,
        destination,
    }
}

fn problem(res: Result<(), TransferError>, side: Side) -> Option<ProbeError> {
    res.err().map(|e| ProbeError {
        message: format!("{}: {e}", side.field()),
        credentials: matches!(
            e.class,
            FailureClass::AccessDenied | FailureClass::AuthExpired
        ),
        transient: e.class == FailureClass::Network,
    })
}
