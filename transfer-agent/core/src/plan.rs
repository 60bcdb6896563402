//! The job plan an agent (or a `ferry run` task) runs: the shard ranges and the transfer
//! settings with every default resolved. The operator and `ferry run` make it once from a
//! validated `MigrationJob` spec; the agent reads it from a file (`docs/agent-protocol.md`).

use serde::{Deserialize, Serialize};

use crate::audit::{Inventory, Mode};
use crate::policy::{OverwritePolicy, VerifyMode};
use crate::select::Selection;
use crate::stores::StoreConfig;

/// Which side of a job a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Source,
    Destination,
    /// Where reports go, when not the destination.
    Report,
}

impl Side {
    /// The spec field (`source`, `destination`, `report`).
    pub fn field(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
            Side::Report => "report",
        }
    }
}

/// One contiguous range of the source keyspace (keys relative to the source prefix):
/// `after < key <= until`, with an absent bound meaning unbounded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardRange {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl ShardRange {
    pub fn contains(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|a| key > a)
            && self.until.as_deref().is_none_or(|u| key <= u)
    }

    /// Whether `key` lies beyond the end of the range.
    pub fn is_past(&self, key: &str) -> bool {
        self.until.as_deref().is_some_and(|u| key > u)
    }
}

/// What a job copies and how, every default resolved.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    pub source: StoreConfig,
    pub destination: StoreConfig,
    /// Where reports go; the destination when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<StoreConfig>,
    #[serde(default)]
    pub selection: Selection,
    pub overwrite: OverwritePolicy,
    pub verify: VerifyMode,
    /// Objects in flight per shard.
    pub concurrency: u32,
    /// Bytes buffered per shard at most.
    pub memory_budget: u64,
    /// Bytes per second for the whole job (divided evenly across shards); unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    /// Requests per second for the whole job (divided evenly across shards); 0 is unlimited.
    #[serde(default)]
    pub requests_per_second: u32,
    pub multipart: MultipartSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<FailureBudget>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub cancel: bool,
    /// Delete propagation: destination keys absent at the source are deleted (after the copy
    /// stage, and only when the guard allows). None keeps every destination key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<DeleteSettings>,
    /// Before an existing destination object is overwritten, it is copied (inside the
    /// service) under the job's backup folder ([`JobPlan::backup_prefix`]), so a rollback can
    /// put it back. S3 destinations only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup_replaced: bool,
    /// Copy, or check the two sides against each other (writing only the report).
    #[serde(default, skip_serializing_if = "Mode::is_copy")]
    pub mode: Mode,
    /// A dry run's inventory of the selected source objects; None writes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
}

/// How destination keys absent at the source are deleted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeleteSettings {
    /// The guard: at most this many candidates (a count, or a percentage of the destination's
    /// selected keys) are deleted without approval; more and none are.
    pub max: FailureBudget,
    /// Before a delete, the object is copied to this key prefix of the destination's bucket
    /// (`<backupPrefix><destination key>`). Keys under it are never candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_prefix: Option<String>,
}

/// The stage a plan runs: the copy (which also finds the delete candidates), or the deletes
/// of the candidates the copy stage recorded, once the guard allowed them.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    #[default]
    Copy,
    Delete,
    /// Undoes what the job's copy and delete stages wrote, from their manifests.
    Rollback,
}

impl Stage {
    pub fn is_copy(&self) -> bool {
        *self == Stage::Copy
    }
}

impl Transfer {
    /// Where reports are written.
    pub fn report_store(&self) -> &StoreConfig {
        self.report.as_ref().unwrap_or(&self.destination)
    }
}

/// When and how objects are uploaded in parts.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MultipartSettings {
    /// Objects larger than this are uploaded in parts.
    pub threshold: u64,
    /// The size of each part but the last (raised so no object needs more than 10,000 parts).
    pub part_size: u64,
}

/// Everything an agent needs to copy its shard.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobPlan {
    pub namespace: String,
    pub name: String,
    /// The resource's uid (`local` for `ferry run` without one); names the report folder.
    pub uid: String,
    /// A hash of the spec fields that shape what a run does; progress records with another
    /// hash are stale.
    pub spec_hash: String,
    pub transfer: Transfer,
    pub shards: Vec<ShardRange>,
    /// When set, only these keys (relative to the source prefix, sorted) are copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_keys: Option<Vec<String>>,
    /// The report folder below the report location's root, ending in `/`.
    pub report_prefix: String,
    /// 0 for the first run of a job, n for its n-th retry of failed objects.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// On a retry: the report folder of the attempt before. Each agent copies only the keys
    /// of its own shard's failure report there (so the plan stays small whatever the number
    /// of failed keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_failed_from: Option<String>,
    /// The stage this plan runs (the delete stage reads the candidates of the copy stage's
    /// report folder, which is the same folder).
    #[serde(default, skip_serializing_if = "Stage::is_copy")]
    pub stage: Stage,
    /// A rollback asked in a cluster: the `ferry.dev/rollback` value it answers. Each one
    /// asked is a run of its own (the progress records of another are stale), so a second
    /// rollback looks at every key again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_token: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobPlan {
    /// Where this plan's failure report and manifest go: `s3://bucket/<folder>` or a path.
    pub fn report_location(&self) -> String {
        self.transfer
            .report_store()
            .location_of(&self.report_prefix)
    }

    /// The delete stage of this plan: the same shards and report folder.
    pub fn deletes(&self) -> JobPlan {
        JobPlan {
            stage: Stage::Delete,
            rollback_token: None,
            ..self.clone()
        }
    }

    /// The copy stage of this plan.
    pub fn copy_stage(&self) -> JobPlan {
        JobPlan {
            stage: Stage::Copy,
            rollback_token: None,
            ..self.clone()
        }
    }

    /// Whether this plan finds delete candidates: delete propagation is on, and this is the
    /// first attempt over the whole keyspace (a retry of failed keys never deletes).
    pub fn finds_deletes(&self) -> bool {
        self.transfer.deletes.is_some()
            && self.attempt == 0
            && self.only_keys.is_none()
            && self.retry_failed_from.is_none()
    }

    /// The rollback of this job: the same shards, over the manifests of every attempt up to
    /// this plan's, with a report folder of its own (`<report folder>rollback/`).
    pub fn rollback(&self) -> JobPlan {
        self.rollback_run(None, 1)
    }

    /// The `number`-th rollback asked in a cluster, answering `token`: its report folder is
    /// `<report folder>rollback/` for the first, `rollback-<n>/` after (so a later one never
    /// writes over an earlier one's report).
    pub fn rollback_run(&self, token: Option<String>, number: u32) -> JobPlan {
        let folder = match number {
            0 | 1 => "rollback/".to_string(),
            n => format!("rollback-{n}/"),
        };
        JobPlan {
            stage: Stage::Rollback,
            report_prefix: format!("{}{folder}", self.job_report_prefix()),
            retry_failed_from: None,
            only_keys: None,
            rollback_token: token,
            ..self.clone()
        }
    }

    /// The job's report folder (of its first attempt).
    pub fn job_report_prefix(&self) -> String {
        report_prefix(&self.namespace, &self.name, &self.uid)
    }

    /// The report folders of the job's attempts up to this plan's (first attempt, then its
    /// retries): where a rollback finds what the job wrote.
    pub fn attempt_report_prefixes(&self) -> Vec<String> {
        let base = self.job_report_prefix();
        let mut out = vec![base.clone()];
        out.extend((1..=self.attempt).map(|n| format!("{base}retry-{n}/")));
        out
    }

    /// Where the destination objects the job replaced are kept (`backupReplaced`), in the
    /// destination's bucket: `.ferry/backups/<namespace>/<name>/<uid>/` then the full key.
    pub fn backup_prefix(&self) -> String {
        format!(
            "{BACKUPS_ROOT}{}/{}/{}/",
            self.namespace, self.name, self.uid
        )
    }

    /// The report folder of shard `index`.
    pub fn shard_report_folder(&self, index: u32) -> String {
        shard_folder(&self.report_prefix, index)
    }

    /// The plan of retry attempt `attempt` (at least 1) of this job: the same shard ranges
    /// (a shard's failure report holds only keys of its range), only the keys that failed in
    /// the attempt before, and a report folder of its own (`<report folder>retry-<n>/`).
    pub fn retry(&self, attempt: u32) -> JobPlan {
        let base = report_prefix(&self.namespace, &self.name, &self.uid);
        let folder = |n: u32| {
            if n == 0 {
                base.clone()
            } else {
                format!("{base}retry-{n}/")
            }
        };
        JobPlan {
            attempt,
            report_prefix: folder(attempt),
            retry_failed_from: Some(folder(attempt.saturating_sub(1))),
            only_keys: None,
            stage: Stage::Copy,
            rollback_token: None,
            ..self.clone()
        }
    }
}

/// The report folder of shard `index` in the report folder `report_prefix` of an attempt.
pub fn shard_folder(report_prefix: &str, index: u32) -> String {
    format!("{report_prefix}shard-{index}/")
}

/// The report folder of a job: `.ferry/reports/<namespace>/<name>/<uid>/`.
pub fn report_prefix(namespace: &str, name: &str, uid: &str) -> String {
    format!("{REPORTS_ROOT}{namespace}/{name}/{uid}/")
}

/// The top folder Ferry writes its reports under; it is left out of every listing.
pub const FERRY_DIR: &str = ".ferry/";
const REPORTS_ROOT: &str = ".ferry/reports/";
/// Where the objects jobs replaced are kept (`backupReplaced`), in the destination bucket.
const BACKUPS_ROOT: &str = ".ferry/backups/";

/// `maxFailures`: a count or a percentage of the selected objects.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureBudget {
    Count(u64),
    Percent(f64),
}

impl FailureBudget {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is neither a count (\"100\") nor a percentage (\"0.1%\")");
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?}: a percentage must be between 0% and 100%"));
            }
            Ok(FailureBudget::Percent(v))
        } else {
            s.trim()
                .parse()
                .map(FailureBudget::Count)
                .map_err(|_| bad())
        }
    }

    /// How many of `total` the budget allows.
    pub fn allowed(&self, total: u64) -> u64 {
        match *self {
            FailureBudget::Count(n) => n,
            FailureBudget::Percent(p) => ((total as f64) * p / 100.0).floor() as u64,
        }
    }

    /// Whether `failed` failures out of `total` selected objects exceed the budget.
    pub fn exceeded(&self, failed: u64, total: u64) -> bool {
        match *self {
            FailureBudget::Count(n) => failed > n,
            FailureBudget::Percent(p) => (failed as f64) > (total as f64) * p / 100.0,
        }
    }
}

impl std::fmt::Display for FailureBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureBudget::Count(n) => write!(f, "{n}"),
            FailureBudget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::FsConfig;

    #[test]
    fn ranges_are_half_open_on_the_left() {
        let r = ShardRange {
            index: 1,
            after: Some("b".into()),
            until: Some("d".into()),
        };
        assert!(!r.contains("b"));
        assert!(r.contains("b0"));
        assert!(r.contains("d"));
        assert!(!r.contains("d0"));
        assert!(r.is_past("e"));
        assert!(ShardRange::default().contains(""));
    }

    fn plan() -> JobPlan {
        let fs = |p: &str| StoreConfig::Filesystem(FsConfig { path: p.into() });
        JobPlan {
            rollback_token: None,
            namespace: "ns".into(),
            name: "j".into(),
            uid: "u1".into(),
            spec_hash: "h".into(),
            transfer: Transfer {
                source: fs("/a"),
                destination: fs("/b"),
                report: None,
                selection: Selection::default(),
                overwrite: OverwritePolicy::default(),
                verify: VerifyMode::default(),
                concurrency: 1,
                memory_budget: 16 << 20,
                bandwidth_limit: None,
                requests_per_second: 0,
                multipart: MultipartSettings {
                    threshold: 64 << 20,
                    part_size: 16 << 20,
                },
                max_failures: None,
                dry_run: false,
                cancel: false,
                deletes: None,
                backup_replaced: false,
                mode: Mode::Copy,
                inventory: None,
            },
            shards: vec![ShardRange::default()],
            only_keys: None,
            report_prefix: report_prefix("ns", "j", "u1"),
            attempt: 0,
            retry_failed_from: None,
            stage: Stage::Copy,
        }
    }

    #[test]
    fn a_retry_reads_the_attempt_before_and_reports_apart() {
        let base = plan();
        let first = base.retry(1);
        assert_eq!(first.attempt, 1);
        assert_eq!(first.report_prefix, ".ferry/reports/ns/j/u1/retry-1/");
        assert_eq!(
            first.retry_failed_from.as_deref(),
            Some(".ferry/reports/ns/j/u1/")
        );
        // A second retry derived from the first reads the first retry's report.
        let second = first.retry(2);
        assert_eq!(second.report_prefix, ".ferry/reports/ns/j/u1/retry-2/");
        assert_eq!(
            second.retry_failed_from.as_deref(),
            Some(".ferry/reports/ns/j/u1/retry-1/")
        );
        assert_eq!(second.shards, base.shards);
        assert_eq!(second.spec_hash, base.spec_hash);
        assert_eq!(base.report_location(), "/b/.ferry/reports/ns/j/u1/");
    }

    #[test]
    fn the_plan_round_trips_through_json() {
        let p = plan();
        let back: JobPlan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn failure_budget() {
        assert_eq!(FailureBudget::parse("10"), Ok(FailureBudget::Count(10)));
        let p = FailureBudget::parse("0.1%").unwrap();
        assert!(!p.exceeded(1, 1000));
        assert!(p.exceeded(2, 1000));
        assert!(FailureBudget::Count(0).exceeded(1, 10));
        assert!(FailureBudget::parse("x").is_err());
        assert!(FailureBudget::parse("120%").is_err());
        assert_eq!(FailureBudget::parse("0.1%").unwrap().to_string(), "0.1%");
        assert_eq!(FailureBudget::parse("10%").unwrap().allowed(105), 10);
        assert_eq!(FailureBudget::Count(0).allowed(105), 0);
        // The guard holds at N+1 candidates and lets N through.
        let ten = FailureBudget::parse("10%").unwrap();
        assert!(!ten.exceeded(10, 100));
        assert!(ten.exceeded(11, 100));
    }

    #[test]
    fn the_delete_stage_is_the_same_plan_in_another_stage() {
        let p = plan();
        let d = p.deletes();
        assert_eq!(d.stage, Stage::Delete);
        assert_eq!(d.copy_stage(), p);
        assert_eq!(d.report_prefix, p.report_prefix);
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains("stage"),
            "a copy plan reads as before: {json}"
        );
    }
}
