//! `ferry rollback`: takes back what a MigrationJob run by `ferry run` wrote, from its
//! manifests (the engine's rollback stage, [`ferry_engine::shard::rollback`]), shard by shard,
//! resumable: progress records `rollback-shard-<i>.json` beside the run's own under the state
//! directory. Ends `RolledBack` (exit 0), `PartiallyRolledBack` (exit 2: some keys kept, said
//! by class and in the rollback's report), `Paused` (Ctrl-C, exit 130: run it again to go on)
//! or `Failed` (exit 1).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::{Phase, ShardProgress, ShardState};
use ferry_core::{Counters, FailureClass, JobPlan};
use ferry_engine::checkpoint::FileProgressStore;
use ferry_engine::{run_shard, ShardInputs};
use serde::Serialize;
use tokio::sync::watch;

use super::{received, stored, Output};
use crate::manifests::{LoadedJob, Manifests};

#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// YAML files or directories with the MigrationJobs to roll back and the Secrets they
    /// reference (the same files `ferry run` was given).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Where `ferry run` kept the job's state (default: ./.ferry/<namespace>/<name>/).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// `json` prints the outcome as JSON on standard output.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 2.0)]
    pub checkpoint_interval: f64,
}

/// What a rollback did, for people and for `--output json`.
#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct RollbackOutcome {
    pub phase: Option<Phase>,
    /// Why it did not run or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Objects deleted again (still what the job wrote).
    pub rolled_back: u64,
    /// Objects put back from their backups.
    pub restored: u64,
    /// Keys with nothing left to undo (already gone or already restored).
    pub already_undone: u64,
    /// Keys not undone, by class (`ChangedSinceCopy`, `NotRestorable`, errors).
    pub kept: u64,
    pub kept_by_class: BTreeMap<FailureClass, u64>,
    /// Database rows whose `writeBack` column holds its value from before the job again.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_reverted: u64,
    /// Database rows written back that were not set back (changed since, or their payload
    /// cleared), counted in `kept_by_class` too.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_not_reverted: u64,
    /// The rollback's report folder (kept keys with the reason, undone keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

impl RollbackOutcome {
    fn refused(message: String) -> Self {
        RollbackOutcome {
            phase: Some(Phase::Failed),
            message: Some(message),
            ..Default::default()
        }
    }

    fn exit_code(&self) -> i32 {
        self.phase.map(Phase::exit_code).unwrap_or(1)
    }
}

/// Rolls back every MigrationJob given and returns the worst exit code.
pub async fn rollback(args: RollbackArgs) -> i32 {
    let Some(loaded) = stored::jobs_of(&args.files) else {
        return 1;
    };
    let mut worst = 0;
    for job in &loaded.jobs {
        let outcome = rollback_job(job, &loaded, &args).await;
        if let Some(m) = &outcome.message {
            eprintln!("error: {m}");
        }
        if args.output == Output::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(&outcome).expect("serializes")
            );
        }
        let code = outcome.exit_code();
        worst = super::severity_max(worst, code);
        if code == 130 {
            break;
        }
    }
    worst
}

async fn rollback_job(loaded: &LoadedJob, all: &Manifests, args: &RollbackArgs) -> RollbackOutcome {
    let job = match stored::load(
        loaded,
        all,
        args.state_dir.as_deref(),
        "nothing to roll back",
    ) {
        Ok(j) => j,
        Err(e) => return RollbackOutcome::refused(e),
    };
    let (namespace, name, v, credentials, plan, state_dir) = (
        &job.namespace,
        &job.name,
        &job.validated,
        &job.credentials,
        job.plan.clone(),
        &job.state_dir,
    );
    if let Some(why) = refusal(&plan) {
        return RollbackOutcome::refused(format!("{namespace}/{name}: {why}"));
    }
    let plan = Arc::new(with_knobs(plan.rollback(), &v.transfer));
    eprintln!(
        "{namespace}/{name}: rolling back what the job wrote to {}",
        v.transfer.destination.describe()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    for i in 0..plan.shards.len() {
        let store = FileProgressStore {
            path: state_dir.join(format!("rollback-shard-{i}.json")),
        };
        let (live, _) = watch::channel(ShardProgress::default());
        handles.push(tokio::spawn(run_shard(ShardInputs {
            plan: plan.clone(),
            index: i,
            credentials: credentials.clone(),
            progress: Arc::new(store),
            live,
            stop: stop_rx.clone(),
            checkpoint_every: Duration::from_secs_f64(args.checkpoint_interval.max(0.1)),
            limits: None,
        })));
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let all_done = futures::future::join_all(handles);
    tokio::pin!(all_done);
    let results = loop {
        tokio::select! {
            r = &mut all_done => break r,
            _ = received(&mut sigint) => {
                eprintln!("\nstopping: saving the rollback's checkpoint...");
                let _ = stop_tx.send(true);
            }
            _ = received(&mut sigterm) => { let _ = stop_tx.send(true); }
        }
    };
    let mut records = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(p)) => records.push(p),
            Ok(Err(e)) => return RollbackOutcome::refused(format!("shard {i}: {e}")),
            Err(e) => return RollbackOutcome::refused(format!("shard {i} crashed: {e}")),
        }
    }
    let mut outcome = outcome_of(&records);
    outcome.report = Some(plan.report_location());
    summary(&outcome);
    outcome
}

/// `plan` with the runtime knobs of the spec as it is now (concurrency, memory budget,
/// bandwidth and request rate: a rollback may be run gentler or faster than the copy was).
fn with_knobs(mut plan: JobPlan, now: &ferry_core::Transfer) -> JobPlan {
    let t = &mut plan.transfer;
    t.concurrency = now.concurrency;
    t.memory_budget = now.memory_budget;
    t.bandwidth_limit = now.bandwidth_limit;
    t.requests_per_second = now.requests_per_second;
    plan
}

/// Why a run's plan cannot be rolled back, if it cannot.
fn refusal(plan: &JobPlan) -> Option<String> {
    if plan.transfer.dry_run {
        return Some("a dry run writes nothing: there is nothing to roll back".into());
    }
    if plan.transfer.mode == ferry_core::Mode::Check {
        return Some("a Check writes nothing but its report: there is nothing to roll back".into());
    }
    if plan.stage == ferry_core::Stage::Rollback {
        return Some("the stored plan is a rollback's".into());
    }
    None
}

/// The outcome of the shards' final records (pure).
pub fn outcome_of(records: &[ShardProgress]) -> RollbackOutcome {
    let mut c = Counters::default();
    let mut by_class = BTreeMap::new();
    for r in records {
        c.add(&r.counters);
        for (class, n) in &r.failures_by_class {
            *by_class.entry(*class).or_insert(0) += n;
        }
    }
    let fatal = records.iter().find_map(|r| r.fatal.as_ref());
    let phase = if let Some(f) = fatal {
        return RollbackOutcome {
            phase: Some(Phase::Failed),
            message: Some(format!("the rollback stopped: {}", f.message)),
            ..counted(&c, by_class)
        };
    } else if records.iter().any(|r| r.state != ShardState::Completed) {
        Phase::Paused
    } else if c.objects_rollback_kept + c.rows_not_reverted > 0 {
        Phase::PartiallyRolledBack
    } else {
        Phase::RolledBack
    };
    RollbackOutcome {
        phase: Some(phase),
        ..counted(&c, by_class)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn counted(c: &Counters, kept_by_class: BTreeMap<FailureClass, u64>) -> RollbackOutcome {
    RollbackOutcome {
        rolled_back: c.objects_rolled_back,
        restored: c.objects_restored,
        already_undone: c.objects_rollback_gone,
        kept: c.objects_rollback_kept,
        kept_by_class,
        rows_reverted: c.rows_reverted,
        rows_not_reverted: c.rows_not_reverted,
        ..Default::default()
    }
}

fn summary(o: &RollbackOutcome) {
    let phase = o.phase.map_or("unknown".to_string(), |p| format!("{p:?}"));
    eprintln!("{phase}");
    eprintln!("  deleted (as the job wrote them)   {}", o.rolled_back);
    eprintln!("  restored from backups             {}", o.restored);
    eprintln!("  nothing left to undo              {}", o.already_undone);
    eprintln!("  kept                              {}", o.kept);
    if o.rows_reverted + o.rows_not_reverted > 0 {
        eprintln!("  rows set back (writeBack)         {}", o.rows_reverted);
        eprintln!(
            "  rows not set back                 {}",
            o.rows_not_reverted
        );
    }
    for (class, n) in &o.kept_by_class {
        eprintln!("    {:<31} {n}", class.as_str());
    }
    if let Some(r) = &o.report {
        eprintln!("  report                            {r}");
    }
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
        let done = outcome_of(&[
            record(ShardState::Completed, 3, 0),
            record(ShardState::Completed, 2, 0),
        ]);
        assert_eq!((done.phase, done.rolled_back), (Some(Phase::RolledBack), 5));
        let partial = outcome_of(&[
            record(ShardState::Completed, 3, 1),
            record(ShardState::Completed, 2, 0),
        ]);
        assert_eq!(partial.phase, Some(Phase::PartiallyRolledBack));
        assert_eq!(partial.kept_by_class[&FailureClass::ChangedSinceCopy], 1);
        let mut row_kept = record(ShardState::Completed, 3, 0);
        row_kept.counters.rows_reverted = 2;
        row_kept.counters.rows_not_reverted = 1;
        let rows = outcome_of(&[row_kept]);
        assert_eq!(
            (rows.phase, rows.rows_reverted, rows.rows_not_reverted),
            (Some(Phase::PartiallyRolledBack), 2, 1),
            "a row not set back is something kept"
        );
        let stopped = outcome_of(&[
            record(ShardState::Paused, 1, 0),
            record(ShardState::Completed, 2, 0),
        ]);
        assert_eq!(stopped.phase, Some(Phase::Paused));
        assert_eq!(stopped.exit_code(), 130);
    }
}
