//! The `BucketSync` resource: a bucket kept in sync on a schedule. Each run is a child
//! MigrationJob carrying the sync's transfer (the same [`TransferSpec`] type).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schedule::Trigger;
use crate::spec::TransferSpec;
use crate::status::{Condition, Phase};
use crate::validate::{err, transfer_problems, SpecError};

/// A bucket (or directory) kept in sync with a source, on a schedule or every interval. In a
/// cluster each run is a MigrationJob named `<sync>-<unix minutes>` (seconds for intervals
/// under a minute; `ferry run` names its passes by the second), labelled
/// `ferry.dev/bucket-sync: <sync>`. Its name is at most 35 characters and has no dots, so
/// that its runs' names fit.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "BucketSync",
    namespaced,
    status = "BucketSyncStatus",
    shortname = "bs",
    category = "ferry",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Next Sync","type":"string","jsonPath":".status.nextSyncTime"}"#,
    printcolumn = r#"{"name":"Copied","type":"integer","jsonPath":".status.lastRun.objectsCopied"}"#,
    printcolumn = r#"{"name":"Deleted","type":"integer","jsonPath":".status.lastRun.objectsDeleted"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.lastRun.objectsFailed"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeRun","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = crate::cel::name_length("BucketSync", MAX_SYNC_NAME, SYNC_NAME_WHY),
    validation = crate::cel::name_without_dots("BucketSync")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::sync_spec)]
pub struct BucketSyncSpec {
    /// What is copied and how: the same fields as a MigrationJob's.
    #[serde(flatten)]
    pub transfer: TransferSpec,
    /// When runs start: a 5-field cron expression (`0 2 * * *`; `@hourly`, `@daily`...).
    /// Set exactly one of `schedule` and `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), transform = crate::cel::cron)]
    pub schedule: Option<String>,
    /// The IANA time zone of `schedule` (`Europe/Berlin`). Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Start a run every this long (`15m`, `1h30m`; at least `10s`). The first run starts
    /// when the resource is created. Set exactly one of `schedule` and `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"), transform = crate::cel::interval)]
    pub interval: Option<String>,
    /// No new runs while true; a running one is suspended (and resumes from its checkpoints).
    #[serde(default)]
    pub suspend: bool,
    /// What a tick does while a run is still active: `Forbid` (the default: the tick is
    /// skipped and counted in `status.skippedTicks`) or `Replace` (the active run is cancelled
    /// and a new one starts).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A tick missed by more than this many seconds (the operator was down) is skipped.
    /// After an outage at most one catch-up run starts, never a burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_622_400))]
    pub starting_deadline_seconds: Option<i64>,
    /// Successful runs (MigrationJobs) kept. Default 3.
    #[serde(default = "default_successful")]
    #[schemars(range(max = 100))]
    pub successful_runs_history_limit: u32,
    /// Failed runs kept. Default 1.
    #[serde(default = "default_failed")]
    #[schemars(range(max = 100))]
    pub failed_runs_history_limit: u32,
}

fn default_successful() -> u32 {
    3
}
fn default_failed() -> u32 {
    1
}

/// What a tick does while a run is active.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the tick (counted).
    #[default]
    Forbid,
    /// Cancel the active run and start a new one.
    Replace,
}

/// The longest suffix of a run's name: `-` and the tick in unix seconds (10 digits until the
/// year 2286; minutes have 8), or `-m` and 8 hex digits for a `ferry.dev/sync-now` run.
pub const MAX_RUN_SUFFIX: usize = 1 + 10;

/// The longest BucketSync name (35): its runs are MigrationJobs named `<sync><suffix>`
/// ([`MAX_RUN_SUFFIX`]), which must fit [`crate::validate::MAX_JOB_NAME`].
pub const MAX_SYNC_NAME: usize = crate::validate::MAX_JOB_NAME - MAX_RUN_SUFFIX;

/// Why a BucketSync name is bounded, in the CRD's message and the operator's.
pub const SYNC_NAME_WHY: &str = "its runs are MigrationJobs named <name>-<up to 10 digits>, and a MigrationJob name is at most 46 characters";

/// Everything wrong with a BucketSync spec (and its name); empty when valid.
pub fn sync_problems(name: &str, spec: &BucketSyncSpec) -> Vec<SpecError> {
    let mut errors = transfer_problems(&spec.transfer);
    if let Err(e) = Trigger::parse(
        spec.schedule.as_deref(),
        spec.time_zone.as_deref(),
        spec.interval.as_deref(),
    ) {
        let field = if spec.interval.is_some() && spec.schedule.is_none() {
            "spec.interval"
        } else {
            "spec.schedule"
        };
        errors.push(err(field, e.to_string()));
    }
    errors.extend(crate::validate::name_problems(
        "BucketSync",
        name,
        MAX_SYNC_NAME,
        SYNC_NAME_WHY,
    ));
    errors
}

/// The sync's trigger when the spec (and name) are valid, else everything wrong with them in
/// one sentence.
pub fn checked_trigger(name: &str, spec: &BucketSyncSpec) -> Result<Trigger, String> {
    let problems = sync_problems(name, spec);
    if problems.is_empty() {
        if let Ok(t) = Trigger::parse(
            spec.schedule.as_deref(),
            spec.time_zone.as_deref(),
            spec.interval.as_deref(),
        ) {
            return Ok(t);
        }
    }
    let msg: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    Err(format!("the spec is invalid: {}", msg.join("; ")))
}

/// Where a BucketSync stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SyncPhase {
    /// Waiting for the next tick.
    Idle,
    /// A run is active.
    Syncing,
    /// `spec.suspend` is set.
    Suspended,
    /// The spec is invalid; nothing runs until it is fixed.
    Failed,
}

/// The last run that ended, in short.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run's MigrationJob.
    pub name: String,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Objects copied.
    #[serde(default)]
    pub objects_copied: u64,
    /// Objects deleted at the destination (absent at the source).
    #[serde(default)]
    pub objects_deleted: u64,
    /// Objects already up to date.
    #[serde(default)]
    pub objects_up_to_date: u64,
    /// Objects that failed.
    #[serde(default)]
    pub objects_failed: u64,
    /// Bytes copied.
    #[serde(default)]
    pub bytes_copied: u64,
    /// More delete candidates than `maxDeletes` allowed: none deleted.
    #[serde(default)]
    pub deletes_held: bool,
}

/// The observed state of a BucketSync.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::bound_integers)]
pub struct BucketSyncStatus {
    /// Idle, Syncing, Suspended or Failed (an invalid spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SyncPhase>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus) and `DeletesHeld`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The tick the last scheduled run was started for (or skipped at), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When the last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// When the last run that completed without failures ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync_time: Option<String>,
    /// When the next run is due (none while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<String>,
    /// How long the last run took (`1m20s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_duration: Option<String>,
    /// The run active now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run: Option<String>,
    /// The last run that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// Ticks skipped: a run was still active (`concurrencyPolicy: Forbid`), or the tick was
    /// missed by more than `startingDeadlineSeconds`.
    #[serde(default)]
    pub skipped_ticks: u64,
    /// Runs in a row that did not complete cleanly (0 after a clean one).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The last `ferry.dev/sync-now` value handled (a value present at creation counts as
    /// handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_now: Option<String>,
    /// A one-line explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's name (as the operator derives it, `operator/src/bucketsync/decide.rs`) fits a
    /// MigrationJob name for the longest sync name, and the sync name limits hold in both the
    /// CRD and [`sync_problems`].
    #[test]
    fn run_names_of_the_longest_sync_name_fit_a_migrationjob_name() {
        let sync = "s".repeat(MAX_SYNC_NAME);
        let by_second = format!("{sync}-{}", 9_999_999_999i64); // 2286-11-20
        let by_minute = format!("{sync}-{}", 9_999_999_999i64 / 60);
        let manual = format!("{sync}-m{}", "0".repeat(8));
        for run in [by_second, by_minute, manual] {
            assert!(
                crate::validate::job_name_problems(&run).is_empty(),
                "{run} ({} characters)",
                run.len()
            );
        }
        assert_eq!(MAX_SYNC_NAME, 35);
    }

    #[test]
    fn sync_names_too_long_or_with_dots_are_refused() {
        let spec: BucketSyncSpec = serde_yaml::from_str(
            "source: {s3: {bucket: src}}\ndestination: {filesystem: {path: /b}}\ninterval: 1h",
        )
        .unwrap();
        assert_eq!(sync_problems(&"s".repeat(MAX_SYNC_NAME), &spec), vec![]);
        let long = sync_problems(&"s".repeat(MAX_SYNC_NAME + 1), &spec);
        assert_eq!(long.len(), 1, "{long:?}");
        assert!(
            long[0].message.contains("at most 35 characters"),
            "{long:?}"
        );
        assert_eq!(sync_problems("a.b", &spec).len(), 1);

        let rules = crate::cel::root_rules::<BucketSync>();
        assert_eq!(rules[0]["rule"], "self.metadata.name.size() <= 35");
        assert!(rules[0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 35 characters"));
        assert_eq!(rules[1]["rule"], "!self.metadata.name.contains('.')");
    }
}
