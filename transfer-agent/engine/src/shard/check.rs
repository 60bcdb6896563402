//! The reads of Check mode and of a dry run's inventory: the keys whose listings agree are
//! read on both sides and hashed (`verify: ReRead`), and with `inventory.checksums: Sha256`
//! every inventoried source object is read and hashed. Each runs as a task of the pump, with
//! the shard's concurrency and memory budget; the classification itself is
//! [`crate::audit`]'s, pure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::audit::{by_content, sha256_of, CheckLine, Difference, InventoryLine, Listed};
use crate::error::TransferError;
use crate::limit::Limits;
use crate::retry::RetryPolicy;
use crate::stores::{ObjectInfo, Sink, Source};

use super::record::Outcome;

/// What the reads need of the shard.
#[derive(Clone)]
pub struct Reader {
    pub src: Arc<dyn Source>,
    pub dst: Arc<dyn Sink>,
    pub limits: Arc<Limits>,
    pub retry: RetryPolicy,
    /// The size of each piece read (the copy's part size).
    pub piece: u64,
    /// The bytes compared or hashed so far (the shard's rate).
    pub moved: Arc<AtomicU64>,
}

/// A read that ended: the key's outcome (and inventory line), or why it could not be read.
pub struct Read {
    pub seq: u64,
    pub info: ObjectInfo,
    /// The destination held the key when it was listed.
    pub at_destination: bool,
    pub result: Result<(Outcome, Option<InventoryLine>), TransferError>,
}

impl Reader {
    /// The check report's line of `difference`.
    pub fn line(
        &self,
        difference: Difference,
        src: Option<&ObjectInfo>,
        dst: Option<&ObjectInfo>,
    ) -> CheckLine {
        CheckLine::of(
            difference,
            src,
            dst,
            |k| self.src.full_key(k),
            |k| self.dst.full_key(k),
        )
    }

    /// The outcome of a key the listings classified as `listed` (not [`Listed::Read`]).
    pub fn listed(&self, listed: Listed, info: &ObjectInfo, dst: Option<&ObjectInfo>) -> Outcome {
        self.moved.fetch_add(info.size, Ordering::Relaxed);
        match listed {
            Listed::Different(d) => Outcome::Differs(self.line(d, Some(info), dst)),
            Listed::Identical | Listed::Read => Outcome::Identical,
        }
    }

    /// Reads `info` and the destination's `dst` (same key, same size), both streamed, and
    /// compares their SHA-256s.
    pub async fn compare(
        &self,
        info: &ObjectInfo,
        dst: &ObjectInfo,
    ) -> Result<Outcome, TransferError> {
        let (a, b) = tokio::join!(
            sha256_of(
                self.src.as_ref(),
                info,
                self.piece,
                &self.limits,
                &self.retry
            ),
            sha256_of(
                self.dst.as_ref(),
                dst,
                self.piece,
                &self.limits,
                &self.retry
            ),
        );
        let (a, b) = (a?, b?);
        self.moved.fetch_add(info.size, Ordering::Relaxed);
        Ok(match by_content(&a, &b) {
            Listed::Different(d) => {
                let mut line = self.line(d, Some(info), Some(dst));
                line.source_sha256 = Some(hex::encode(a));
                line.destination_sha256 = Some(hex::encode(b));
                Outcome::Differs(line)
            }
            _ => Outcome::Identical,
        })
    }

    /// `line` with the SHA-256 of the source object `info`, or why it could not be read.
    pub async fn hashed(&self, info: &ObjectInfo, mut line: InventoryLine) -> InventoryLine {
        match sha256_of(
            self.src.as_ref(),
            info,
            self.piece,
            &self.limits,
            &self.retry,
        )
        .await
        {
            Ok(h) => {
                self.moved.fetch_add(info.size, Ordering::Relaxed);
                line.sha256 = Some(hex::encode(h));
            }
            Err(e) => {
                tracing::warn!(key = %line.key, error = %e, "could not read the object for its SHA-256");
                line.error = Some(e.to_string());
            }
        }
        line
    }
}
