//! What Ferry reports: the `MigrationJob` status. The shard progress records it is folded
//! from, and the counters and failure classes in it, are `ferry-core`'s.

use std::collections::BTreeMap;

pub use ferry_core::progress::{
    Checkpoint, Counters, ErrorSample, FailureClass, PendingUpload, ShardProgress, ShardState,
    Totals, Transport, MAX_FIRST_ERRORS,
};

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
    /// Taking back what the job wrote (`ferry.dev/rollback`, `ferry rollback`).
    RollingBack,
    /// Every object the job wrote is gone again, and every object it replaced or deleted is
    /// back (from its backup).
    RolledBack,
    /// Rolled back but for some keys (changed since the copy, or not restorable without a
    /// backup); see the rollback's report.
    PartiallyRolledBack,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Completed
                | Phase::PartiallyCompleted
                | Phase::Failed
                | Phase::Cancelled
                | Phase::RolledBack
                | Phase::PartiallyRolledBack
        )
    }

    /// Whether its agents run (the job holds one of the cluster's running slots).
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Running | Phase::RollingBack)
    }

    /// The exit code of `ferry run` for a job that ended in this phase.
    pub fn exit_code(self) -> i32 {
        match self {
            Phase::Completed | Phase::RolledBack => 0,
            Phase::PartiallyCompleted | Phase::PartiallyRolledBack => 2,
            Phase::Paused => 130,
            _ => 1,
        }
    }
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
#[schemars(transform = crate::cel::bound_integers)]
pub struct MigrationJobStatus {
    /// Pending, Running, Paused, Completed, PartiallyCompleted, Failed, Cancelled;
    /// RollingBack, RolledBack or PartiallyRolledBack after a `ferry.dev/rollback`.
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
    /// How objects travel: `ServerSide` (copied inside the service: the two sides are one
    /// service and one account, same endpoint, region and access key) or `Streamed` (read and
    /// written by Ferry's agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
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
    /// The last `ferry.dev/rollback` annotation value handled (a token present when the
    /// resource was created counts as handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback_token: Option<String>,
    /// The last rollback asked with `ferry.dev/rollback`: where it stands and what it did
    /// (`docs/rollback.md`). While it runs, `progress` counts the rollback's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::rollback::RollbackStatus>,
    /// 0 for the first run; n while or after re-running the failed objects for the n-th time
    /// (each retry has its own report folder, `retry-<n>/`, and progress counts only its keys).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// Delete propagation (`spec.deletes.policy: Propagate`): candidates, the guard's
    /// verdict, what was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<crate::deletes::DeletesStatus>,
    /// A dry run's estimate of a real run: objects and bytes to copy, skip and delete,
    /// requests by class on each side, egress, duration, and cost (`docs/estimates.md`). Set
    /// when a dry run has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::estimate::Estimate>,
    /// After a real run (mode `Copy`) has ended: what it cost, in the lines of a dry run's
    /// estimate, from what it did (objects and bytes copied and deleted; requests counted by
    /// the estimate's rules, retries not counted; `docs/estimates.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::pricing::Cost>,
    /// `mode: Check`: how many keys are identical, missing at the destination, different,
    /// extra at the destination, or could not be compared. Set while and after a check runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::check::CheckStatus>,
    /// The URL-list collector of a `source.urlList.collect` job: pages read, URLs listed,
    /// where the list is. Updated while the planner collects (every few seconds), final
    /// once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<ferry_core::collect::CollectProgress>,
    /// A one-line explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
