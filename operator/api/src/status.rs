//! What Ferry reports: the `MigrationJob` status, shard progress records and failure classes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The phase of a MigrationJob, for humans and dashboards.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, not yet running (validating, planning, or queued).
    Pending,
    /// Agents are copying.
    Running,
    /// Suspended; resumes from the checkpoints.
    Paused,
    /// Every selected object was copied, skipped as up to date, or vanished at the source.
    Completed,
    /// Some objects failed, within `maxFailures`; see the failure report.
    PartiallyCompleted,
    /// Failures beyond `maxFailures`, or a job-fatal error (credentials, missing bucket...).
    Failed,
    /// Ended by `cancel: true`.
    Cancelled,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::PartiallyCompleted | Phase::Failed | Phase::Cancelled
        )
    }

    /// The exit code of `ferry run` for a job that ended in this phase.
    pub fn exit_code(self) -> i32 {
        match self {
            Phase::Completed => 0,
            Phase::PartiallyCompleted => 2,
            Phase::Paused => 130,
            _ => 1,
        }
    }
}

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
        }
    }
}

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
    /// Archived objects (Glacier classes) skipped, counted among the failures by class.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub objects_archived: u64,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.objects_total += o.objects_total;
        self.objects_copied += o.objects_copied;
        self.objects_skipped += o.objects_skipped;
        self.objects_vanished += o.objects_vanished;
        self.objects_failed += o.objects_failed;
        self.objects_would_copy += o.objects_would_copy;
        self.bytes_total += o.bytes_total;
        self.bytes_copied += o.bytes_copied;
        self.bytes_skipped += o.bytes_skipped;
        self.bytes_failed += o.bytes_failed;
        self.bytes_would_copy += o.bytes_would_copy;
        self.objects_archived += o.objects_archived;
    }

    /// Objects whose fate is decided.
    pub fn objects_done(&self) -> u64 {
        self.objects_copied
            + self.objects_skipped
            + self.objects_vanished
            + self.objects_failed
            + self.objects_would_copy
    }

    /// The objects and bytes counted (selected so far).
    pub fn totals(&self) -> Totals {
        Totals {
            objects: self.objects_total,
            bytes: self.bytes_total,
        }
    }

    pub fn bytes_done(&self) -> u64 {
        self.bytes_copied + self.bytes_skipped + self.bytes_failed + self.bytes_would_copy
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

/// A standard Kubernetes condition.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing`, `Degraded`, `CredentialsValid`, `SourceReachable`,
    /// `DestinationReachable`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Aggregated progress, shaped for `kubectl get` columns.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Counters summed over the shards.
    #[serde(flatten)]
    pub counters: Counters,
    /// Bytes per second, summed over the running shards.
    pub bytes_per_second: u64,
    /// Whether every shard's listing is complete (totals are final).
    pub listing_complete: bool,
    /// The selected objects and bytes the job holds in all, once known for every shard: from
    /// the listings once they are complete, before that from count-only listings run ahead of
    /// the copy (exact unless the source changes meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Totals>,
    /// Estimated seconds left; once `expected` is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// Percent of the expected bytes done (`42%`), once `expected` is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<String>,
    /// `done/total` objects, for the printer column (the total is the expected one once
    /// known, else the objects listed so far).
    #[serde(default)]
    pub summary: String,
    /// Bytes done, human-readable.
    #[serde(default)]
    pub bytes_human: String,
    /// Throughput, human-readable.
    #[serde(default)]
    pub rate: String,
    /// Time left, human-readable (`3m20s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
}

/// The state of one shard, as summarized in the status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardSummary {
    /// The shard index.
    pub index: u32,
    /// Its state.
    pub state: ShardState,
    /// Objects done (copied, skipped, vanished or failed).
    pub objects_done: u64,
    /// Objects failed.
    pub objects_failed: u64,
}

/// The observed state of a MigrationJob.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationJobStatus {
    /// Pending, Running, Paused, Completed, PartiallyCompleted, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Counters, rate and ETA.
    #[serde(default)]
    pub progress: Progress,
    /// Failed objects by failure class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures_by_class: BTreeMap<FailureClass, u64>,
    /// The first errors (at most 10, keys truncated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_errors: Vec<ErrorSample>,
    /// Per-shard state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardSummary>,
    /// Where the failure report and manifest are (`s3://bucket/key-prefix` or a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// How copies were verified: `Checksum`, `ReRead` or `SizeOnly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// True when this was a dry run (nothing was written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// When the job started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the job ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The last `ferry.dev/retry-failed` annotation value handled (a token present when the
    /// resource was created counts as handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry_token: Option<String>,
    /// 0 for the first run; n while or after re-running the failed objects for the n-th time
    /// (each retry has its own report folder, `retry-<n>/`, and progress counts only its keys).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// A one-line explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
