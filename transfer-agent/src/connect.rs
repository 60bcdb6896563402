//! Builds the stores of a job's sides, each with its own credentials, and runs shards.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::{Endpoint, JobPlan, ShardProgress};
use tokio::sync::watch;

use crate::checkpoint::ProgressStore;
use crate::error::TransferError;
use crate::limit::Limits;
use crate::retry::RetryPolicy;
use crate::shard::ShardRun;
use crate::store::{FsStore, S3Credentials, S3Store, Store};

/// The credentials of each side of a job.
#[derive(Clone, Debug)]
pub struct JobCredentials {
    pub source: S3Credentials,
    pub destination: S3Credentials,
    pub report: S3Credentials,
}

/// Opens one side. `base` resolves relative filesystem paths (for `ferry run`).
pub async fn open_store(
    ep: &Endpoint,
    creds: S3Credentials,
    limits: Arc<Limits>,
    retry: RetryPolicy,
) -> Result<Store, TransferError> {
    match (&ep.s3, &ep.filesystem) {
        (Some(s3), None) => Ok(Store::S3(S3Store::connect(s3, creds, limits, retry).await)),
        (None, Some(fs)) => Ok(Store::Fs(FsStore::new(&fs.path, limits))),
        _ => Err(TransferError::new(
            ferry_api::FailureClass::InvalidRequest,
            "set exactly one of s3 or filesystem",
        )
        .fatal()),
    }
}

/// Whether objects can be copied inside the service: both sides S3 on the same endpoint and
/// region with the same credentials Secret (or both on the default chain).
pub fn server_side_possible(plan: &JobPlan) -> bool {
    match (&plan.spec.source.s3, &plan.spec.destination.s3) {
        (Some(s), Some(d)) => {
            !s.anonymous
                && s.endpoint == d.endpoint
                && s.region == d.region
                && s.force_path_style == d.force_path_style
                && s.credentials_secret_ref == d.credentials_secret_ref
        }
        _ => false,
    }
}

/// The per-shard limits: the job's rates divided evenly across shards.
pub fn shard_limits(plan: &JobPlan) -> Arc<Limits> {
    let spec = &plan.spec;
    let shards = spec.parallelism.shards.max(1) as f64;
    let bandwidth = spec
        .bandwidth_limit
        .as_ref()
        .map(|b| b.bytes() as f64 / shards)
        .unwrap_or(0.0);
    let rps = spec.requests_per_second as f64 / shards;
    let memory = spec
        .parallelism
        .memory_budget
        .as_ref()
        .map(|m| m.bytes())
        .unwrap_or(256 << 20);
    Arc::new(Limits::new(rps, bandwidth, memory))
}

/// What a caller supplies to run one shard.
pub struct ShardInputs {
    pub plan: Arc<JobPlan>,
    pub index: usize,
    pub credentials: JobCredentials,
    pub progress: Arc<dyn ProgressStore>,
    pub live: watch::Sender<ShardProgress>,
    pub stop: watch::Receiver<bool>,
    pub checkpoint_every: Duration,
    /// Shared limits (several shards of one process), or None for the shard's own.
    pub limits: Option<Arc<Limits>>,
}

/// Opens the stores and runs one shard to its end.
pub async fn run_shard(inp: ShardInputs) -> Result<ShardProgress, TransferError> {
    let plan = inp.plan;
    let limits = inp.limits.unwrap_or_else(|| shard_limits(&plan));
    let retry = RetryPolicy::default();
    let src = open_store(
        &plan.spec.source,
        inp.credentials.source,
        limits.clone(),
        retry.clone(),
    )
    .await?;
    let dst = open_store(
        &plan.spec.destination,
        inp.credentials.destination,
        limits.clone(),
        retry.clone(),
    )
    .await?;
    let report = if plan.spec.dry_run {
        None
    } else {
        match &plan.spec.report {
            Some(ep) => Some(
                open_store(ep, inp.credentials.report, limits.clone(), retry.clone())
                    .await?
                    .at_root(),
            ),
            None => Some(dst.at_root()),
        }
    };
    let plan = match (&plan.retry_failed_from, &plan.only_keys) {
        (Some(folder), None) => {
            // A dry run writes no report, so it has nothing to retry.
            let keys = match &report {
                Some(report) => failed_keys(report, &plan, folder, inp.index).await?,
                None => Vec::new(),
            };
            tracing::info!(
                shard = inp.index,
                keys = keys.len(),
                "retrying the failed keys of {folder}"
            );
            Arc::new(JobPlan {
                only_keys: Some(keys),
                ..(*plan).clone()
            })
        }
        _ => plan,
    };
    let run = ShardRun {
        server_side: server_side_possible(&plan),
        plan,
        index: inp.index,
        src,
        dst,
        report,
        limits,
        retry,
        progress: inp.progress,
        live: inp.live,
        stop: inp.stop,
        checkpoint_every: inp.checkpoint_every,
    };
    Ok(run.run().await)
}

/// The keys (relative to the source prefix, sorted, distinct) that shard `index` reported
/// failed in the attempt whose report folder is `folder`; archived objects are left out (a
/// retry cannot read them either).
async fn failed_keys(
    report: &Store,
    plan: &JobPlan,
    folder: &str,
    index: usize,
) -> Result<Vec<String>, TransferError> {
    let lines = crate::report::read_failures(report, &format!("{folder}shard-{index}/")).await?;
    let src_prefix = plan
        .spec
        .source
        .s3
        .as_ref()
        .map(|s| s.prefix.as_str())
        .unwrap_or_default();
    let mut keys: Vec<String> = lines
        .into_iter()
        .filter(|l| l.class != ferry_api::FailureClass::Archived)
        .filter_map(|l| l.key.strip_prefix(src_prefix).map(str::to_string))
        .collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}
