//! The job plan handed to every agent (contract §3): the spec, the shard ranges, and where the
//! reports go. The same structure drives `ferry run`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::MigrationJobSpec;

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

/// Everything an agent needs to copy its shard.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobPlan {
    pub namespace: String,
    pub name: String,
    /// The resource's uid (`local` for `ferry run` without one); names the report folder.
    pub uid: String,
    pub spec: MigrationJobSpec,
    /// See [`spec_hash`].
    pub spec_hash: String,
    pub shards: Vec<ShardRange>,
    /// When set, only these keys (relative to the source prefix, sorted) are copied: the
    /// failed keys of an earlier run.
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
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobPlan {
    /// Where this plan's failure report and manifest go: `s3://bucket/<folder>` or a path.
    pub fn report_location(&self) -> String {
        let ep = self.spec.report.as_ref().unwrap_or(&self.spec.destination);
        match (&ep.s3, &ep.filesystem) {
            (Some(s3), _) => format!("s3://{}/{}", s3.bucket, self.report_prefix),
            (_, Some(fs)) => std::path::Path::new(&fs.path)
                .join(&self.report_prefix)
                .display()
                .to_string(),
            _ => String::new(),
        }
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
            ..self.clone()
        }
    }
}

/// A hash of every spec field that shapes what a run does, that is all but those the contract
/// lets change while a job runs (`suspend`, `cancel`, `bandwidthLimit`, `requestsPerSecond`,
/// `concurrency`, `memoryBudget`). Checkpoints and progress records with another hash are stale.
pub fn spec_hash(spec: &MigrationJobSpec) -> String {
    let mut s = spec.clone();
    s.suspend = false;
    s.cancel = false;
    s.bandwidth_limit = None;
    s.requests_per_second = 0;
    s.parallelism.concurrency = 0;
    s.parallelism.memory_budget = None;
    let json = serde_json::to_vec(&s).expect("spec serializes");
    hex::encode(&Sha256::digest(&json)[..12])
}

/// The report folder of a job: `.ferry/reports/<namespace>/<name>/<uid>/`.
pub fn report_prefix(namespace: &str, name: &str, uid: &str) -> String {
    format!("{REPORTS_ROOT}{namespace}/{name}/{uid}/")
}

/// The top folder Ferry writes its reports under; it is left out of every listing.
pub const FERRY_DIR: &str = ".ferry/";
const REPORTS_ROOT: &str = ".ferry/reports/";

/// `maxFailures`: a count or a percentage of the selected objects.
#[derive(Clone, Copy, Debug, PartialEq)]
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

    /// Whether `failed` failures out of `total` selected objects exceed the budget.
    pub fn exceeded(&self, failed: u64, total: u64) -> bool {
        match *self {
            FailureBudget::Count(n) => failed > n,
            FailureBudget::Percent(p) => (failed as f64) > (total as f64) * p / 100.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn spec_hash_ignores_only_the_runtime_knobs() {
        let base: MigrationJobSpec = serde_yaml::from_str(
            "source: {s3: {bucket: abc}}\ndestination: {filesystem: {path: /b}}",
        )
        .unwrap();
        let mut knobs = base.clone();
        knobs.suspend = true;
        knobs.parallelism.concurrency = 7;
        knobs.requests_per_second = 9;
        assert_eq!(spec_hash(&base), spec_hash(&knobs));
        let mut shaped = base.clone();
        shaped.filters.include = vec!["*.jpg".into()];
        assert_ne!(spec_hash(&base), spec_hash(&shaped));
        let mut sharded = base.clone();
        sharded.parallelism.shards = 2;
        assert_ne!(spec_hash(&base), spec_hash(&sharded));
    }

    #[test]
    fn a_retry_reads_the_attempt_before_and_reports_apart() {
        let spec: MigrationJobSpec = serde_yaml::from_str(
            "source: {s3: {bucket: abc}}\ndestination: {filesystem: {path: /b}}",
        )
        .unwrap();
        let base = JobPlan {
            namespace: "ns".into(),
            name: "j".into(),
            uid: "u1".into(),
            spec_hash: spec_hash(&spec),
            spec,
            shards: vec![ShardRange::default()],
            only_keys: None,
            report_prefix: report_prefix("ns", "j", "u1"),
            attempt: 0,
            retry_failed_from: None,
        };
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
    }
}
