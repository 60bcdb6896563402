//! `ferry run`: runs MigrationJobs in this process, driven by the same decision as the
//! controller ([`crate::migrationjob::decide`]) with a local executor ([`executor`]): the same
//! validation, planner, lifecycle and shard engine, tasks instead of pods, files under
//! `--state-dir` instead of ConfigMaps.
//!
//! Where the controller waits for the world to change (a missing Secret, an unreachable
//! endpoint, a planning failure: `Pending` and `Degraded`), `ferry run` ends with the reason
//! and exit code 1. Ctrl-C (or SIGTERM) suspends the job: it ends `Paused`, exit code 130.
//! Credentials that stop working mid-run (an expired token, a key rotated away) end it
//! `Paused` with the reason, exit code 1: run again with new ones, it resumes.

mod executor;
mod in_cluster;
pub mod report;
pub mod rollback;
mod stored;
mod sync;
mod ui;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_api::{
    validate, DeletesState, MigrationJob, MigrationJobSpec, MigrationJobStatus, Phase,
    APPROVE_DELETES_ANNOTATION,
};

use crate::credentials::job_credentials;
use crate::manifests::{self, LoadedJob, Manifests};
use crate::migrationjob::decide::{
    decide, waits_on_the_world, PriceTables, Step, RETRY_ANNOTATION,
};
use executor::{retry_token, Local};
use ui::Ui;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// YAML files or directories with MigrationJobs or BucketSyncs and the Secrets they
    /// reference.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Where checkpoints and progress records are kept
    /// (default: ./.ferry/<namespace>/<name>/).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// `json` prints the final status as JSON on standard output.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Re-run only the keys in the failure report of the last run.
    #[arg(long)]
    pub retry_failed: bool,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 2.0)]
    pub checkpoint_interval: f64,
    /// Approve the held deletes of the run (MigrationJob) of this name: its candidates still
    /// absent at the source are deleted.
    #[arg(long, value_name = "RUN")]
    pub approve_deletes: Option<String>,
    /// BucketSyncs: keep running them on their schedule, in the foreground, until Ctrl-C
    /// (without it, one pass runs now).
    #[arg(long)]
    pub watch: bool,
}

/// Runs every job given and returns the process exit code (the worst outcome).
pub async fn run(args: RunArgs) -> i32 {
    let loaded = match manifests::load(&args.files) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if loaded.jobs.is_empty() && loaded.syncs.is_empty() {
        eprintln!(
            "error: no MigrationJob or BucketSync (apiVersion ferry.dev/v1alpha1) found in the given files"
        );
        return 1;
    }
    let mut worst = 0;
    for s in &loaded.syncs {
        let code = sync::run_sync(s, &loaded, &args).await;
        worst = severity_max(worst, code);
        if code == 130 {
            return code;
        }
    }
    for job in &loaded.jobs {
        let status = run_job(job, &loaded, &args).await;
        let code = if credentials_expired(&status) {
            1
        } else {
            status.phase.map(Phase::exit_code).unwrap_or(1)
        };
        if args.output == Output::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(&status).expect("serializes")
            );
        }
        worst = severity_max(worst, code);
        if code == 130 {
            break;
        }
    }
    worst
}

/// Whether the job's Degraded condition says its credentials went stale mid-run.
fn credentials_expired(status: &MigrationJobStatus) -> bool {
    status.conditions.iter().any(|c| {
        c.type_ == "Degraded"
            && c.status == "True"
            && c.reason == ferry_api::Reason::CredentialsExpired.as_str()
    })
}

pub(crate) fn severity_max(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        0 => 0,
        2 => 1,
        1 => 2,
        _ => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn failed(message: String) -> MigrationJobStatus {
    eprintln!("error: {message}");
    MigrationJobStatus {
        phase: Some(Phase::Failed),
        message: Some(message),
        ..Default::default()
    }
}

/// How often the decision is made again while shards run.
const TICK: Duration = Duration::from_millis(250);

/// The next delivery of a signal (never, when it could not be listened for).
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Relative paths (filesystem locations) are relative to the file the job came from.
pub(crate) fn resolve_paths(spec: &mut MigrationJobSpec, dir: &Path) {
    let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    spec.source.resolve_relative_paths(&base);
    spec.destination.resolve_relative_paths(&base);
    if let Some(r) = spec.report.as_mut() {
        r.resolve_relative_paths(&base);
    }
}

/// The price tables of `spec.pricing.configMapRef` among the files given (of the job's
/// namespace only), for the decision's costs.
fn price_tables(job: &MigrationJob, all: &Manifests, namespace: &str) -> Option<PriceTables> {
    let r = job.spec.pricing.as_ref()?.config_map_ref.as_ref()?;
    let key = r.key.as_deref().unwrap_or(ferry_api::pricing::DEFAULT_KEY);
    let text = all
        .config_maps
        .get(&(namespace.to_string(), r.name.clone()))
        .and_then(|data| data.get(key));
    Some(match text {
        Some(t) => PriceTables::Found(t.clone()),
        None => PriceTables::Missing(format!(
            "spec.pricing.configMapRef: no ConfigMap {namespace}/{} with the key {key} in the files given",
            r.name
        )),
    })
}

pub(crate) async fn run_job(
    loaded: &LoadedJob,
    all: &Manifests,
    args: &RunArgs,
) -> MigrationJobStatus {
    let started = Instant::now();
    let mut job: MigrationJob = loaded.job.clone();
    let (namespace, name) = match stored::identity(loaded) {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    resolve_paths(&mut job.spec, &loaded.dir);
    let lookup = |n: &str| all.secrets.get(&(namespace.clone(), n.to_string()));
    let credentials = job_credentials(&job.spec, &namespace, &lookup).map_err(|e| e.to_string());
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".ferry").join(&namespace).join(&name));
    let uid = job
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| "local".to_string());
    let mut local = Local::new(
        namespace.clone(),
        name.clone(),
        uid,
        state_dir.clone(),
        Duration::from_secs_f64(args.checkpoint_interval.max(0.1)),
        credentials,
    );
    local.price_tables = price_tables(&job, all, &namespace);
    let validated = validate(&job.spec).ok();
    if let Some(approve) = &args.approve_deletes {
        job.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(APPROVE_DELETES_ANNOTATION.to_string(), approve.clone());
    }
    if let Some(v) = &validated {
        let approval = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPROVE_DELETES_ANNOTATION).cloned());
        job.status = local
            .prior_status(v, approval.as_deref(), job.spec.pricing.as_ref())
            .await;
    }
    let attempt = job.status.as_ref().map_or(0, |s| s.attempt);
    if args.retry_failed {
        job.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(RETRY_ANNOTATION.to_string(), retry_token(attempt + 1));
    }
    let held = job
        .status
        .as_ref()
        .and_then(|s| s.deletes.as_ref())
        .is_some_and(|d| d.state == DeletesState::Held);
    let approving = held && args.approve_deletes.as_deref() == Some(name.as_str());
    let ended = job
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_terminal);
    if args.retry_failed && !ended {
        eprintln!(
            "{namespace}/{name}: --retry-failed: the last run did not end (or never ran); \
             running the job instead"
        );
    }
    let ended_before = ended && !args.retry_failed && !approving;
    if ended_before {
        eprintln!(
            "{namespace}/{name}: already completed with this spec; nothing to do (delete {} to start over)",
            state_dir.display()
        );
    }

    let mut ui: Option<Ui> = None;
    let mut interrupted = false;
    // Listening from the start, so a signal that arrives while a step runs is not lost.
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let status = loop {
        let obs = local.observe(&job, validated.as_ref()).await;
        let d = decide(&job, &obs);
        let stuck = waits_on_the_world(&d.status);
        let mut changed = false;
        for step in &d.steps {
            if stuck && !matches!(step, Step::Event { .. }) {
                continue; // nothing here will change the world: end instead
            }
            let Some(v) = &validated else { continue };
            if let Step::CreateJob { .. } = step {
                eprintln!(
                    "{namespace}/{name}: {} -> {}",
                    v.transfer.source.describe(),
                    v.transfer.destination.describe()
                );
                ui.get_or_insert_with(|| Ui::new(v.transfer.dry_run));
            }
            changed |= local.execute(&job, v, step).await;
        }
        job.status = Some(d.status.clone());
        if let Some(ui) = ui.as_mut() {
            ui.update(&d.status);
        }
        let phase = d.status.phase;
        if stuck {
            // `ferry run` cannot wait for a Secret to appear or an endpoint to come back.
            let mut st = d.status;
            st.phase = Some(Phase::Failed);
            break st;
        }
        if phase.is_some_and(Phase::is_terminal) && !local.agents_exist() {
            break d.status;
        }
        if phase == Some(Phase::Paused) && local.idle() {
            break d.status;
        }
        // A shard whose credentials went stale stopped at its checkpoint; a cluster runs
        // it again in a new pod, `ferry run` ends, paused, and says so (run again with the
        // rotated Secret).
        if credentials_expired(&d.status) && local.idle() {
            let mut st = d.status;
            st.phase = Some(Phase::Paused);
            break st;
        }
        if changed {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = received(&mut sigint), if !interrupted => {
                interrupted = true;
                eprintln!("\nstopping: finishing objects in flight and saving the checkpoint...");
                job.spec.suspend = true;
            }
            _ = received(&mut sigterm), if !interrupted => {
                interrupted = true;
                job.spec.suspend = true;
            }
        }
    };
    if let Some(ui) = &ui {
        ui.finish();
    }
    let status = match (&validated, &ui) {
        (Some(v), Some(_)) => local.with_final_records(v, status).await,
        _ => status,
    };
    if ui.is_some() || ended_before {
        ui::summary(&status, started);
    } else {
        eprintln!(
            "error: {}",
            status
                .message
                .clone()
                .unwrap_or_else(|| "the job did not run".into())
        );
    }
    status
}
