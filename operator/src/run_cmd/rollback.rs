//! `ferry rollback`: takes back what a MigrationJob run by `ferry run` wrote, from its
//! manifests (the engine's rollback stage, [`ferry_engine::shard::rollback`]), shard by shard,
//! resumable: progress records `rollback-shard-<i>.json` beside the run's own under the state
//! directory. Ends `RolledBack` (exit 0), `PartiallyRolledBack` (exit 2: some keys kept, said
//! by class and in the rollback's report), `Paused` (Ctrl-C, exit 130: run it again to go on)
//! or `Failed` (exit 1).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::{Phase, RollbackCounts, ShardProgress};
use ferry_core::JobPlan;
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
    /// What it did (the counts a cluster's `status.rollback` shows).
    #[serde(flatten)]
    pub counts: RollbackCounts,
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

/// The outcome of the shards' final records (pure; the rules are
/// [`ferry_api::rollback::outcome`], as in a cluster).
pub fn outcome_of(records: &[ShardProgress]) -> RollbackOutcome {
    let (phase, message) = ferry_api::rollback::outcome(records, records.len());
    // Every shard has returned: one that did not complete stopped (Ctrl-C) and goes on from
    // its checkpoint when run again.
    let phase = match phase {
        Phase::RollingBack => Phase::Paused,
        p => p,
    };
    RollbackOutcome {
        phase: Some(phase),
        message: (phase == Phase::Failed).then_some(message),
        counts: RollbackCounts::of(records),
        report: None,
    }
}

fn summary(o: &RollbackOutcome) {
    let phase = o.phase.map_or("unknown".to_string(), |p| format!("{p:?}"));
    eprintln!("{phase}");
    eprintln!(
        "  deleted (as the job wrote them)   {}",
        o.counts.rolled_back
    );
    eprintln!("  restored from backups             {}", o.counts.restored);
    eprintln!(
        "  nothing left to undo              {}",
        o.counts.already_undone
    );
    eprintln!("  kept                              {}", o.counts.kept);
    if o.counts.rows_reverted + o.counts.rows_not_reverted > 0 {
        eprintln!(
            "  rows set back (writeBack)         {}",
            o.counts.rows_reverted
        );
        eprintln!(
            "  rows not set back                 {}",
            o.counts.rows_not_reverted
        );
    }
    for (class, n) in &o.counts.kept_by_class {
        eprintln!("    {:<31} {n}", class.as_str());
    }
    if let Some(r) = &o.report {
        eprintln!("  report                            {r}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::{Counters, FailureClass, ShardState};

    fn record(
        state: ShardState,
        counters: Counters,
        kept: &[(FailureClass, u64)],
    ) -> ShardProgress {
        ShardProgress {
            state,
            counters,
            failures_by_class: kept.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_outcome_prints_the_counts_and_exits_by_its_phase() {
        let undone = |n| Counters {
            objects_rolled_back: n,
            ..Default::default()
        };
        let one_kept = Counters {
            objects_rollback_kept: 1,
            ..undone(3)
        };
        let partial = outcome_of(&[
            record(
                ShardState::Completed,
                one_kept,
                &[(FailureClass::ChangedSinceCopy, 1)],
            ),
            record(ShardState::Completed, undone(2), &[]),
        ]);
        assert_eq!(partial.exit_code(), 2);
        assert_eq!(partial.message, None);
        let json = serde_json::to_value(&partial).unwrap();
        assert_eq!(json["phase"], "PartiallyRolledBack");
        assert_eq!(json["rolledBack"], 5, "{json}");
        assert_eq!(json["keptByClass"]["ChangedSinceCopy"], 1, "{json}");
        let stopped = outcome_of(&[record(ShardState::Paused, undone(1), &[])]);
        assert_eq!(stopped.exit_code(), 130);
    }
}
