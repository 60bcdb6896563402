//! `ferry run` of a BucketSync: one pass now (a run, that is a MigrationJob carrying the
//! sync's transfer, named `<sync>-<unix seconds>`, with its own state directory), or with
//! `--watch` a pass at every tick of its schedule until Ctrl-C. `--approve-deletes RUN` runs
//! the held run `RUN` again to delete its candidates.

use std::path::PathBuf;

use chrono::Utc;
use ferry_api::bucketsync::checked_trigger;
use ferry_api::{DeletesState, Phase};

use super::{run_job, RunArgs};
use crate::bucketsync::run_job as sync_run_job;
use crate::manifests::{LoadedJob, LoadedSync, Manifests, DEFAULT_NAMESPACE};

/// Runs the sync (one pass, or on its schedule with `--watch`); returns the exit code.
pub async fn run_sync(loaded: &LoadedSync, all: &Manifests, args: &RunArgs) -> i32 {
    let bs = &loaded.sync;
    let name = bs.metadata.name.clone().unwrap_or_default();
    let namespace = bs
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let trigger = match checked_trigger(&name, &bs.spec) {
        Ok(t) => t,
        Err(msg) => {
            eprintln!(
                "error: {}: BucketSync {namespace}/{name}: {msg}",
                loaded.file.display()
            );
            return 1;
        }
    };
    if let Some(run) = &args.approve_deletes {
        // The held run again, from its state directory: its delete stage.
        return pass(loaded, all, args, &namespace, run).await;
    }
    if !args.watch {
        let run = format!("{name}-{}", Utc::now().timestamp());
        return pass(loaded, all, args, &namespace, &run).await;
    }
    let anchor = Utc::now();
    let mut last = None;
    loop {
        let now = Utc::now();
        let due = trigger.last_tick(anchor, last, now);
        if let Some(tick) = due {
            last = Some(tick);
            let run = format!("{name}-{}", tick.timestamp());
            let code = pass(loaded, all, args, &namespace, &run).await;
            if code == 130 {
                return 130;
            }
            continue;
        }
        let next = trigger.next_tick(anchor, last.unwrap_or(now).max(now));
        eprintln!(
            "{namespace}/{name}: next run at {} (Ctrl-C stops)",
            next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped between runs");
                return 130;
            }
        }
    }
}

/// One run of the sync, named `run`, in its own state directory.
async fn pass(
    loaded: &LoadedSync,
    all: &Manifests,
    args: &RunArgs,
    namespace: &str,
    run: &str,
) -> i32 {
    let mut job = sync_run_job(&loaded.sync, run, Utc::now(), false);
    job.metadata.namespace = Some(namespace.to_string());
    let state_dir = match &args.state_dir {
        Some(d) => d.join(run),
        None => PathBuf::from(".ferry").join(namespace).join(run),
    };
    let args = RunArgs {
        state_dir: Some(state_dir),
        ..args.clone()
    };
    eprintln!(
        "{namespace}/{}: run {run}",
        loaded.sync.metadata.name.as_deref().unwrap_or("")
    );
    let lj = LoadedJob {
        job,
        dir: loaded.dir.clone(),
        file: loaded.file.clone(),
    };
    let status = run_job(&lj, all, &args).await;
    if args.output == super::Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("serializes")
        );
    }
    if status
        .deletes
        .as_ref()
        .is_some_and(|d| d.state == DeletesState::Held)
    {
        eprintln!(
            "deletes held: approve them with `ferry run -f {} --approve-deletes {run}`",
            loaded.file.display()
        );
    }
    status.phase.map(Phase::exit_code).unwrap_or(1)
}
