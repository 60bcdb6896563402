//! Rollback in the status (`ferry.dev/rollback` in a cluster, `ferry rollback` locally,
//! `docs/rollback.md`): what the rollback's shards counted, and the phase it makes. Pure.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::{Counters, FailureClass, Phase, ShardProgress, ShardState};

/// The annotation a user sets to a new value on a finished MigrationJob to take back what
/// it wrote (the same token rules as `ferry.dev/retry-failed`).
pub const ROLLBACK_ANNOTATION: &str = "ferry.dev/rollback";

/// Where a rollback stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RollbackState {
    /// Its agents are taking back what the job wrote.
    #[default]
    RollingBack,
    /// It ended (`RolledBack`, `PartiallyRolledBack` or `Failed`: the job's phase).
    Ended,
}

/// What a rollback did, summed over its shards. Every key counted in `kept` is listed, with
/// its reason, in the rollback's report (`rollback-kept-NNNNNN.jsonl` in each shard's folder
/// under `report`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackCounts {
    /// Objects deleted again: still what the job wrote (same ETag, or size and checksum; a
    /// file with the same size and modification time).
    pub rolled_back: u64,
    /// Objects the job replaced or deleted, put back from their backups
    /// (`spec.backupReplaced`).
    pub restored: u64,
    /// Keys with nothing left to undo (already gone, or already restored).
    pub already_undone: u64,
    /// Keys not undone: changed since the copy (`ChangedSinceCopy`), replaced without a
    /// backup (`NotRestorable`), or an error.
    pub kept: u64,
    /// `kept`, by class.
    #[serde(default)]
    pub kept_by_class: BTreeMap<FailureClass, u64>,
    /// Database rows whose `writeBack` column holds its value from before the job again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_reverted: u64,
    /// Database rows written back that were not set back (changed since, or their payload
    /// cleared): counted in `keptByClass` too.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_not_reverted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RollbackCounts {
    /// The counts of the rollback shards' records `records`.
    pub fn of(records: &[ShardProgress]) -> RollbackCounts {
        let mut c = Counters::default();
        let mut kept_by_class = BTreeMap::new();
        for r in records {
            c.add(&r.counters);
            for (class, n) in &r.failures_by_class {
                *kept_by_class.entry(*class).or_insert(0) += n;
            }
        }
        RollbackCounts {
            rolled_back: c.objects_rolled_back,
            restored: c.objects_restored,
            already_undone: c.objects_rollback_gone,
            kept: c.objects_rollback_kept,
            kept_by_class,
            rows_reverted: c.rows_reverted,
            rows_not_reverted: c.rows_not_reverted,
        }
    }

    /// One line: `118 deleted, 2 restored, 0 already undone, 1 kept (ChangedSinceCopy: 1)`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} deleted, {} restored, {} already undone, {} kept",
            self.rolled_back, self.restored, self.already_undone, self.kept
        );
        if self.rows_reverted + self.rows_not_reverted > 0 {
            s.push_str(&format!(
                ", {} rows set back, {} rows not set back",
                self.rows_reverted, self.rows_not_reverted
            ));
        }
        if !self.kept_by_class.is_empty() {
            let classes: Vec<String> = self
                .kept_by_class
                .iter()
                .map(|(c, n)| format!("{}: {n}", c.as_str()))
                .collect();
            s.push_str(&format!(" ({})", classes.join(", ")));
        }
        s
    }
}

/// A rollback in a MigrationJob's status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// `RollingBack` while its agents run, then `Ended`.
    pub state: RollbackState,
    /// The `ferry.dev/rollback` value it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// 1 for the first rollback of the job, n for the n-th (its report folder is `rollback/`
    /// for the first, `rollback-<n>/` after).
    #[serde(default)]
    pub number: u32,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// What it did so far.
    #[serde(flatten)]
    pub counts: RollbackCounts,
    /// Its report folder: the keys kept with the reason, the keys undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

/// The phase and message the rollback shards' records add up to, `expected` shards in all:
/// `Failed` on a job-fatal error, `Paused` when a shard paused, `RollingBack` while any is
/// not done, then `PartiallyRolledBack` when anything was kept (an object or a row), else
/// `RolledBack`.
pub fn outcome(records: &[ShardProgress], expected: usize) -> (Phase, String) {
    let counts = RollbackCounts::of(records);
    if let Some(f) = records.iter().find_map(|r| r.fatal.as_ref()) {
        return (
            Phase::Failed,
            format!("the rollback stopped: {}", f.message),
        );
    }
    let done =
        records.len() == expected && records.iter().all(|r| r.state == ShardState::Completed);
    if !done {
        if records.iter().any(|r| r.state == ShardState::Paused) {
            return (
                Phase::Paused,
                format!(
                    "rollback paused: {}; run it again to go on",
                    counts.summary()
                ),
            );
        }
        return (
            Phase::RollingBack,
            format!("rolling back: {}", counts.summary()),
        );
    }
    let phase = if counts.kept + counts.rows_not_reverted > 0 {
        Phase::PartiallyRolledBack
    } else {
        Phase::RolledBack
    };
    (phase, format!("rolled back: {}", counts.summary()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ShardState, rolled: u64, kept: u64) -> ShardProgress {
        let mut r = ShardProgress {
            state,
            ..Default::default()
        };
        r.counters.objects_rolled_back = rolled;
        r.counters.objects_rollback_kept = kept;
        if kept > 0 {
            r.failures_by_class
                .insert(FailureClass::ChangedSinceCopy, kept);
        }
        r
    }

    #[test]
    fn the_phase_says_whether_anything_was_kept_or_left() {
        let done = [
            record(ShardState::Completed, 3, 0),
            record(ShardState::Completed, 2, 0),
        ];
        assert_eq!(outcome(&done, 2).0, Phase::RolledBack);
        assert_eq!(RollbackCounts::of(&done).rolled_back, 5);
        assert_eq!(
            outcome(&done[..1], 2).0,
            Phase::RollingBack,
            "a shard not reported yet is not done"
        );
        let partial = [
            record(ShardState::Completed, 3, 1),
            record(ShardState::Completed, 2, 0),
        ];
        let (phase, message) = outcome(&partial, 2);
        assert_eq!(phase, Phase::PartiallyRolledBack);
        assert_eq!(
            message,
            "rolled back: 5 deleted, 0 restored, 0 already undone, 1 kept (ChangedSinceCopy: 1)"
        );
        let mut row_kept = record(ShardState::Completed, 3, 0);
        row_kept.counters.rows_reverted = 2;
        row_kept.counters.rows_not_reverted = 1;
        assert_eq!(
            outcome(&[row_kept], 1).0,
            Phase::PartiallyRolledBack,
            "a row not set back is something kept"
        );
        let running = [
            record(ShardState::Running, 1, 0),
            record(ShardState::Completed, 2, 0),
        ];
        assert_eq!(outcome(&running, 2).0, Phase::RollingBack);
        let stopped = [
            record(ShardState::Paused, 1, 0),
            record(ShardState::Completed, 2, 0),
        ];
        assert_eq!(outcome(&stopped, 2).0, Phase::Paused);
        let mut fatal = record(ShardState::Failed, 1, 0);
        fatal.fatal = Some(crate::status::ErrorSample {
            class: FailureClass::AccessDenied,
            code: None,
            key: String::new(),
            message: "denied".into(),
        });
        assert_eq!(
            outcome(&[fatal], 1),
            (Phase::Failed, "the rollback stopped: denied".into())
        );
    }
}
