//! The progress record of a shard, written by whoever runs it (an agent, or `ferry run`) and
//! read by whoever reports on the job: the state, live counters, failures by class, the first
//! errors and the checkpoint a resumed run starts from (`docs/contract.md` §3).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::{JobPlan, ShardRange, Stage};

/// At most this many first errors are kept in a progress record and in a status.
pub const MAX_FIRST_ERRORS: usize = 10;

/// Why an object (or a job) failed. One enum for reports, status and metrics.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum FailureClass {
    AccessDenied,
    AuthExpired,
    NoSuchBucket,
    SourceVanished,
    Archived,
    TooLarge,
    Throttled,
    Network,
    ChecksumMismatch,
    Unrepresentable,
    InvalidRequest,
    Internal,
    /// A second entry of a URL list that maps to the key of an earlier one: not copied (the
    /// first is), so that no URL silently overwrites another.
    DuplicateKey,
    /// A source value that is not a valid object: a database payload that does not decode
    /// for its encoding, is empty, or whose bytes contradict its declared content type. Never
    /// uploaded.
    InvalidData,
    /// Rollback: the object at the destination is no longer what the job wrote (written to
    /// since): kept.
    ChangedSinceCopy,
    /// Rollback: the job overwrote (or deleted) an object and kept no backup of it
    /// (`backupReplaced` was off): the object the job wrote is kept, the old one cannot
    /// come back.
    NotRestorable,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::AccessDenied => "AccessDenied",
            FailureClass::AuthExpired => "AuthExpired",
            FailureClass::NoSuchBucket => "NoSuchBucket",
            FailureClass::SourceVanished => "SourceVanished",
            FailureClass::Archived => "Archived",
            FailureClass::TooLarge => "TooLarge",
            FailureClass::Throttled => "Throttled",
            FailureClass::Network => "Network",
            FailureClass::ChecksumMismatch => "ChecksumMismatch",
            FailureClass::Unrepresentable => "Unrepresentable",
            FailureClass::InvalidRequest => "InvalidRequest",
            FailureClass::Internal => "Internal",
            FailureClass::DuplicateKey => "DuplicateKey",
            FailureClass::InvalidData => "InvalidData",
            FailureClass::ChangedSinceCopy => "ChangedSinceCopy",
            FailureClass::NotRestorable => "NotRestorable",
        }
    }
}

/// Declares the counters with their `add`, so a new counter is one field, not four edits.
macro_rules! counters {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: u64,)* }) => {
        $(#[$m])*
        pub struct $name { $($(#[$fm])* pub $f: u64,)* }

        impl $name {
            /// Adds every counter of `o` to this one.
            pub fn add(&mut self, o: &$name) {
                $(self.$f += o.$f;)*
            }
        }
    };
}

counters! {
    /// Object and byte counters of a shard or a job.
    #[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Counters {
        /// Selected objects discovered so far.
        pub objects_total: u64,
        /// Objects written and verified.
        pub objects_copied: u64,
        /// Objects already up to date at the destination.
        pub objects_skipped: u64,
        /// Objects deleted at the source while the job ran.
        pub objects_vanished: u64,
        /// Objects that failed (see the failure report).
        pub objects_failed: u64,
        /// In a dry run: objects that would be copied.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_would_copy: u64,
        /// Bytes of the selected objects discovered so far.
        pub bytes_total: u64,
        /// Bytes written and verified.
        pub bytes_copied: u64,
        /// Bytes of objects already up to date.
        pub bytes_skipped: u64,
        /// Bytes of failed objects.
        pub bytes_failed: u64,
        /// In a dry run: bytes that would be copied.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub bytes_would_copy: u64,
        /// In a dry run: of the objects that would be copied, those that would go in one
        /// request (a PUT, or one CopyObject server-side). Together with
        /// `objects_would_copy_in_parts` it tells how requests add up (`docs/estimates.md`);
        /// when the two do not add up to `objects_would_copy`, the shard did not count them
        /// and the estimate assumes objects of the mean size.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_would_copy_whole: u64,
        /// In a dry run: of the objects that would be copied, those that would go in parts (a
        /// multipart upload above `multipart.threshold`, or UploadPartCopy above 5 GiB
        /// server-side).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_would_copy_in_parts: u64,
        /// In a dry run: the parts those objects would be copied in (the part size raised as a
        /// copy raises it, so that no object needs more than 10,000 parts).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub parts_would_copy: u64,
        /// Archived objects (Glacier classes) skipped, counted among the failures by class.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_archived: u64,
        /// With delete propagation: selected destination keys seen (the base of a percentage
        /// `maxDeletes`).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub destination_objects: u64,
        /// With delete propagation: destination keys absent at the source (delete candidates).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_to_delete: u64,
        /// Bytes of the delete candidates.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub bytes_to_delete: u64,
        /// Candidates deleted.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_deleted: u64,
        /// Bytes deleted.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub bytes_deleted: u64,
        /// Candidates not deleted after all: back at the source, changed at the destination
        /// since they were listed, or already gone.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_delete_kept: u64,
        /// Candidates whose delete (or backup) failed.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_delete_failed: u64,
        /// Rollback: objects the job wrote, deleted again (they were still what it wrote).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_rolled_back: u64,
        /// Rollback: objects the job replaced or deleted, put back from their backups.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_restored: u64,
        /// Rollback: objects the job wrote that were already gone (nothing to undo).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_rollback_gone: u64,
        /// Rollback: objects not undone (changed since the copy, not restorable, or an
        /// error; by class in the failures and the rollback's failure report).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_rollback_kept: u64,
        /// Rollback of a database source: rows whose `writeBack` column holds its value from
        /// before the job again.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub rows_reverted: u64,
        /// Rollback of a database source: rows written back that were not set back (changed
        /// since, or their payload cleared by `clearData`; by class in the failures and the
        /// rollback's report).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub rows_not_reverted: u64,
        /// Check mode: selected source objects the destination holds with the same content
        /// (as far as the check can tell: size, ETag, or the bytes with `verify: ReRead`).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_identical: u64,
        /// Check mode: selected source objects absent at the destination.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_missing: u64,
        /// Check mode: selected source objects the destination holds with other content.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_different: u64,
        /// Check mode: selected destination keys the source does not hold.
        #[serde(default, skip_serializing_if = "is_zero")]
        pub objects_extra: u64,
        /// Check mode: bytes of the source objects compared (identical, missing or different).
        #[serde(default, skip_serializing_if = "is_zero")]
        pub bytes_checked: u64,
    }
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl Counters {
    /// Objects whose fate is decided.
    pub fn objects_done(&self) -> u64 {
        self.objects_copied
            + self.objects_skipped
            + self.objects_vanished
            + self.objects_failed
            + self.objects_would_copy
            + self.objects_rolled_back
            + self.objects_restored
            + self.objects_rollback_gone
            + self.objects_rollback_kept
            + self.objects_checked()
    }

    /// Check mode: selected source objects compared (identical, missing or different).
    pub fn objects_checked(&self) -> u64 {
        self.objects_identical + self.objects_missing + self.objects_different
    }

    /// The objects and bytes counted (selected so far).
    pub fn totals(&self) -> Totals {
        Totals {
            objects: self.objects_total,
            bytes: self.bytes_total,
        }
    }

    pub fn bytes_done(&self) -> u64 {
        self.bytes_copied
            + self.bytes_skipped
            + self.bytes_failed
            + self.bytes_would_copy
            + self.bytes_checked
    }

    /// What a dry run counts for an object of `size` bytes that it would copy in `parts`
    /// parts (0: in one request, a PUT or a CopyObject). The shard gives `parts` by the rule
    /// its copy follows, so that the estimate's request counts are exact.
    pub fn would_copy(size: u64, parts: u64) -> Counters {
        let mut c = Counters {
            objects_would_copy: 1,
            bytes_would_copy: size,
            parts_would_copy: parts,
            ..Default::default()
        };
        if parts == 0 {
            c.objects_would_copy_whole = 1;
        } else {
            c.objects_would_copy_in_parts = 1;
        }
        c
    }
}

/// One failed object, as shown in the status (keys truncated) and written to the report.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSample {
    /// The source key (truncated to 256 bytes in the status).
    pub key: String,
    /// The failure class.
    pub class: FailureClass,
    /// The service's error code, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What went wrong, with credentials and signed URLs removed.
    pub message: String,
}

/// The state of one shard.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShardState {
    #[default]
    Pending,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

/// How objects travel from the source to the destination.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Transport {
    /// Copied inside the service (CopyObject, UploadPartCopy): the two sides are one service
    /// and one account, and no byte passes through Ferry.
    ServerSide,
    /// Read from the source and written to the destination by Ferry.
    Streamed,
}

/// Where a shard may resume: everything up to the watermark is done and recorded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The greatest source key (relative to the prefix) such that it and every key before it
    /// in the shard is done and recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// The counters up to the watermark.
    #[serde(default)]
    pub counters: Counters,
    /// Failures by class up to the watermark.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures_by_class: BTreeMap<FailureClass, u64>,
    /// The next report segment number.
    #[serde(default)]
    pub report_segment: u32,
    /// Multipart uploads that were in flight: aborted when the shard restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<PendingUpload>,
}

/// A multipart upload Ferry started and has not completed yet.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingUpload {
    /// The destination key.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
}

/// A count of selected objects and their bytes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            objects: self.objects + o.objects,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::iter::Sum for Totals {
    fn sum<I: Iterator<Item = Totals>>(iter: I) -> Totals {
        iter.fold(Totals::default(), |a, b| a + b)
    }
}

/// The progress record of one shard: written by its agent, read by the operator or `ferry run`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardProgress {
    /// The shard index.
    pub shard: u32,
    /// A hash of the spec fields that shape the key set; a record with another hash is stale.
    pub spec_hash: String,
    /// The attempt of the plan the record belongs to (0, or n for the n-th retry).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// The range of the plan's shard the record belongs to: a record of another range (a plan
    /// made again) is stale, so a checkpoint is never applied to keys it does not cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub range: Option<ShardRange>,
    /// The stage of the plan the record belongs to (the delete stage carries the copy
    /// stage's counters on).
    #[serde(default, skip_serializing_if = "Stage::is_copy")]
    #[schemars(skip)]
    pub stage: Stage,
    /// The rollback request of the plan the record belongs to (`JobPlan::rollback_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_token: Option<String>,
    /// The shard's state.
    pub state: ShardState,
    /// Live counters (they may run ahead of the checkpoint).
    pub counters: Counters,
    /// Live failures by class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures_by_class: BTreeMap<FailureClass, u64>,
    /// The first errors (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_errors: Vec<ErrorSample>,
    /// Whether the shard's listing has been read to its end.
    #[serde(default)]
    pub listing_complete: bool,
    /// The selected objects and bytes the shard holds in all, once known: when its listing
    /// reaches the end (before the copy has taken the last of it from the queue), or earlier
    /// from a count-only listing, started when copying, not listing, holds the shard back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Totals>,
    /// Recent throughput in bytes per second.
    #[serde(default)]
    pub bytes_per_second: u64,
    /// How the shard's objects travel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// The job-fatal error that stopped the shard, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fatal: Option<ErrorSample>,
    /// Where to resume.
    #[serde(default)]
    pub checkpoint: Checkpoint,
    /// When the record was written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// When the shard first started with this spec (RFC 3339). On resume, destination
    /// objects written since then and equal to their source are the earlier attempt's work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

impl ShardProgress {
    /// A new record for shard `index` of `plan`.
    pub fn new_for(plan: &JobPlan, index: usize) -> Self {
        let range = plan.shards[index].clone();
        ShardProgress {
            shard: range.index,
            spec_hash: plan.spec_hash.clone(),
            attempt: plan.attempt,
            range: Some(range),
            stage: plan.stage,
            rollback_token: plan.rollback_token.clone(),
            ..Default::default()
        }
    }

    /// The record of the delete stage of `plan`, going on from this completed copy-stage
    /// record: its counters stay (the job's totals are those of the copy plus the deletes);
    /// the checkpoint starts over (it walks the candidates now).
    pub fn continued_for(&self, plan: &JobPlan, index: usize) -> Self {
        let mut r = ShardProgress::new_for(plan, index);
        r.counters = self.counters.clone();
        r.failures_by_class = self.failures_by_class.clone();
        r.first_errors = self.first_errors.clone();
        r.transport = self.transport;
        r.started_at = self.started_at.clone();
        r.checkpoint = Checkpoint {
            counters: self.counters.clone(),
            failures_by_class: self.failures_by_class.clone(),
            ..Default::default()
        };
        r
    }

    /// Whether this record belongs to shard `index` of `plan`: the same spec, attempt, stage,
    /// rollback request and range. Any other record is stale.
    pub fn is_for(&self, plan: &JobPlan, index: usize) -> bool {
        self.spec_hash == plan.spec_hash
            && self.attempt == plan.attempt
            && self.stage == plan.stage
            && self.rollback_token == plan.rollback_token
            && self.range.as_ref() == plan.shards.get(index)
    }
}

/// Where a shard's progress record (with its checkpoint) is kept: a file for `ferry run` and
/// the file-based agent, the ConfigMap the operator owns in a cluster.
pub trait ProgressStore: Send + Sync {
    fn load(&self) -> BoxFuture<'_, Result<Option<ShardProgress>, String>>;
    fn save<'a>(&'a self, p: &'a ShardProgress) -> BoxFuture<'a, Result<(), String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn would_copy_counts_whole_objects_apart_from_objects_in_parts() {
        let mut c = Counters::would_copy(10, 0);
        c.add(&Counters::would_copy(100, 7));
        assert_eq!(
            (c.objects_would_copy, c.bytes_would_copy),
            (2, 110),
            "both are objects that would be copied"
        );
        assert_eq!(c.objects_would_copy_whole, 1);
        assert_eq!((c.objects_would_copy_in_parts, c.parts_would_copy), (1, 7));
        assert_eq!(c.objects_done(), 2);
    }
}
