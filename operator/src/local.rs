//! `ferry run`: executes MigrationJobs in-process with the same validation, planner and shard
//! engine as the cluster, tasks instead of pods, files under `--state-dir` for progress.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::aggregate::{aggregate, human_duration};
use ferry_api::quantity::human_bytes;
use ferry_api::validate::validate;
use ferry_api::{
    Endpoint, JobPlan, MigrationJobSpec, MigrationJobStatus, Phase, ShardProgress, ShardState,
    ValidatedSpec,
};
use ferry_core::{JobCredentials, ProgressStore};
use ferry_engine::checkpoint::FileProgressStore;
use ferry_engine::retry::RetryPolicy;
use ferry_engine::stores::{self, Source};
use ferry_engine::{run_shard, ShardInputs};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::credentials::job_credentials;
use crate::manifests::{self, LoadedJob, Manifests, DEFAULT_NAMESPACE};
use crate::planner;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// YAML files or directories with MigrationJobs and the Secrets they reference.
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
    if loaded.jobs.is_empty() {
        eprintln!(
            "error: no MigrationJob (apiVersion ferry.dev/v1alpha1) found in the given files"
        );
        return 1;
    }
    let mut worst = 0;
    for job in &loaded.jobs {
        let status = run_job(job, &loaded, &args).await;
        let code = status.phase.map(Phase::exit_code).unwrap_or(1);
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

fn severity_max(a: i32, b: i32) -> i32 {
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

/// Relative filesystem paths are relative to the file the job came from (and may climb out
/// of its directory with `..`; absolute paths may not contain `..`).
pub(crate) fn resolve_paths(spec: &mut MigrationJobSpec, dir: &Path) {
    let fix = |ep: &mut Endpoint| {
        if let Some(fs) = ep.filesystem.as_mut() {
            let p = Path::new(&fs.path);
            if p.is_relative() {
                let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
                fs.path = normalize(&base.join(p)).to_string_lossy().into_owned();
            }
        }
    };
    fix(&mut spec.source);
    fix(&mut spec.destination);
    if let Some(r) = spec.report.as_mut() {
        fix(r);
    }
}

/// Removes `.` and `..` components without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

async fn run_job(loaded: &LoadedJob, all: &Manifests, args: &RunArgs) -> MigrationJobStatus {
    let job = &loaded.job;
    let namespace = job
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let Some(name) = job.metadata.name.clone() else {
        return failed(format!(
            "{}: the MigrationJob has no metadata.name",
            loaded.file.display()
        ));
    };
    let mut spec = job.spec.clone();
    resolve_paths(&mut spec, &loaded.dir);

    let validated = match validate(&spec) {
        Ok(v) => v,
        Err(problems) => {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return failed(format!(
                "MigrationJob {namespace}/{name} is invalid: {}",
                list.join("; ")
            ));
        }
    };
    let lookup = |n: &str| all.secrets.get(&(namespace.clone(), n.to_string()));
    let creds = match job_credentials(&spec, &namespace, &lookup) {
        Ok(c) => c,
        Err(e) => return failed(format!("MigrationJob {namespace}/{name}: {e}")),
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".ferry").join(&namespace).join(&name));
    let uid = job
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| "local".to_string());

    // Reachability, without writing anything.
    let retry = RetryPolicy {
        max_attempts: 3,
        ..Default::default()
    };
    let probe_limits = Arc::new(ferry_engine::limit::Limits::unlimited());
    let t = &validated.transfer;
    let src = match stores::open(
        &t.source,
        &creds.source,
        probe_limits.clone(),
        retry.clone(),
    )
    .await
    {
        Ok(s) => s.source(),
        Err(e) => return failed(format!("source: {e}")),
    };
    if let Err(e) = src.probe().await {
        return failed(format!("source {} is not readable: {e}", src.describe()));
    }
    let dst = match stores::open(&t.destination, &creds.destination, probe_limits, retry)
        .await
        .and_then(|o| o.sink())
    {
        Ok(s) => s,
        Err(e) => return failed(format!("destination: {e}")),
    };
    if let Err(e) = dst.probe_destination(t.dry_run).await {
        return failed(format!("destination {} is not usable: {e}", dst.describe()));
    }

    let mut plan = match load_or_plan(
        &state_dir,
        &namespace,
        &name,
        &uid,
        &validated,
        src.as_ref(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return failed(format!("planning failed: {e}")),
    };
    let mut shard_dir = state_dir.clone();
    if args.retry_failed {
        match retry_plan(&plan, &state_dir).await {
            Ok((p, dir)) => {
                plan = p;
                shard_dir = dir;
            }
            Err(e) => return failed(e),
        }
    }
    let plan = Arc::new(plan);
    execute(plan, &shard_dir, creds, args).await
}

/// Reuses the plan saved in the state directory when the spec is unchanged, so a resumed run
/// has the same shard ranges as its checkpoints.
async fn load_or_plan(
    state_dir: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
    spec: &ValidatedSpec,
    src: &dyn Source,
) -> Result<JobPlan, String> {
    let path = state_dir.join("plan.json");
    if let Ok(bytes) = tokio::fs::read(&path).await {
        if let Ok(mut p) = serde_json::from_slice::<JobPlan>(&bytes) {
            if p.spec_hash == spec.spec_hash {
                // Runtime knobs (bandwidth, concurrency...) may have changed: take them from now.
                p.transfer = spec.transfer.clone();
                return Ok(p);
            }
        }
    }
    let p = planner::plan(namespace, name, uid, spec, src)
        .await
        .map_err(|e| e.to_string())?;
    tokio::fs::create_dir_all(state_dir)
        .await
        .map_err(|e| format!("{}: {e}", state_dir.display()))?;
    tokio::fs::write(&path, serde_json::to_vec_pretty(&p).expect("serializes"))
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(p)
}

/// A plan that copies only the keys the last attempt failed, with its own report folder and
/// state (`retry-N/`); each shard reads its keys from the last attempt's failure report.
async fn retry_plan(base: &JobPlan, state_dir: &Path) -> Result<(JobPlan, PathBuf), String> {
    let mut last = 0;
    while state_dir.join(format!("retry-{}", last + 1)).exists() {
        last += 1;
    }
    // An interrupted retry is resumed rather than started anew.
    let unfinished = last > 0 && {
        let rec = FileProgressStore {
            path: state_dir.join(format!("retry-{last}/shard-0.json")),
        };
        !matches!(rec.load().await, Ok(Some(p)) if p.state == ShardState::Completed)
    };
    let attempt = if unfinished { last } else { last + 1 };
    let dir = state_dir.join(format!("retry-{attempt}"));
    let saved = dir.join("plan.json");
    if unfinished {
        if let Ok(p) = tokio::fs::read(&saved)
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<JobPlan>(&b).map_err(|e| e.to_string()))
        {
            return Ok((p, dir));
        }
    }
    eprintln!("retrying the failed keys of the last attempt (attempt {attempt})");
    let p = base.retry(attempt);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    tokio::fs::write(&saved, serde_json::to_vec_pretty(&p).expect("serializes"))
        .await
        .map_err(|e| format!("{}: {e}", saved.display()))?;
    Ok((p, dir))
}

async fn execute(
    plan: Arc<JobPlan>,
    shard_dir: &Path,
    creds: JobCredentials,
    args: &RunArgs,
) -> MigrationJobStatus {
    let started = chrono::Utc::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let n = plan.shards.len();
    let mut lives = Vec::new();
    let mut tasks = Vec::new();
    let mut already_done = true;
    for i in 0..n {
        let store = Arc::new(FileProgressStore {
            path: shard_dir.join(format!("shard-{i}.json")),
        });
        let prior = store.load().await.ok().flatten();
        already_done &= prior
            .as_ref()
            .is_some_and(|p| p.spec_hash == plan.spec_hash && p.state == ShardState::Completed);
        let (live_tx, live_rx) = watch::channel(
            prior
                .filter(|p| p.spec_hash == plan.spec_hash)
                .unwrap_or_default(),
        );
        lives.push(live_rx);
        let inputs = ShardInputs {
            plan: plan.clone(),
            index: i,
            credentials: creds.clone(),
            progress: store as Arc<dyn ProgressStore>,
            live: live_tx,
            stop: stop_rx.clone(),
            checkpoint_every: Duration::from_secs_f64(args.checkpoint_interval.max(0.1)),
        };
        tasks.push(tokio::spawn(run_shard(inputs)));
    }
    let name = format!("{}/{}", plan.namespace, plan.name);
    if already_done {
        eprintln!(
            "{name}: already completed with this spec; nothing to do (delete {} to start over)",
            shard_dir.display()
        );
    } else {
        eprintln!(
            "{name}: {} -> {}",
            plan.transfer.source.describe(),
            plan.transfer.destination.describe()
        );
    }

    let ui = Ui::new(plan.transfer.dry_run);
    let mut interrupted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                eprintln!("\nstopping: finishing objects in flight and saving the checkpoint (again to abandon them)...");
                let _ = stop_tx.send(true);
            }
            _ = async { match sigterm.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } }, if !interrupted => {
                interrupted = true;
                let _ = stop_tx.send(true);
            }
            _ = tick.tick() => {
                let recs: Vec<ShardProgress> = lives.iter().map(|l| l.borrow().clone()).collect();
                ui.update(&aggregate(&plan.transfer, &recs, n));
            }
        }
    };
    let mut finals = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(p)) => finals.push(p),
            Ok(Err(e)) => return done_with(ui, failed(format!("shard {i}: {e}"))),
            Err(e) => return done_with(ui, failed(format!("shard {i} crashed: {e}"))),
        }
    }
    let mut status = aggregate(&plan.transfer, &finals, n);
    if interrupted && status.phase == Some(Phase::Running) {
        status.phase = Some(Phase::Paused);
    }
    status.start_time = Some(started.to_rfc3339());
    if status.phase.is_some_and(Phase::is_terminal) {
        status.completion_time = Some(chrono::Utc::now().to_rfc3339());
    }
    if !plan.transfer.dry_run {
        status.report = Some(plan.report_location());
    }
    let status = done_with(ui, status);
    summary(&status, started);
    status
}

fn done_with(ui: Ui, status: MigrationJobStatus) -> MigrationJobStatus {
    ui.finish();
    status
}

/// A progress bar on a terminal, a log line every few seconds otherwise.
struct Ui {
    bar: Option<ProgressBar>,
    last_line: std::sync::Mutex<Instant>,
    dry_run: bool,
}

impl Ui {
    fn new(dry_run: bool) -> Ui {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Ui {
            bar,
            last_line: std::sync::Mutex::new(Instant::now()),
            dry_run,
        }
    }

    fn update(&self, s: &MigrationJobStatus) {
        let p = &s.progress;
        let c = &p.counters;
        // Totals: the expected ones once counted, else what is listed so far.
        let total = p.expected.unwrap_or(c.totals());
        let eta = match (&p.expected, &p.eta) {
            (Some(_), Some(eta)) => eta.clone(),
            (Some(_), None) => "-".into(),
            (None, _) => "(listing)".into(),
        };
        let verb = if self.dry_run { "checked" } else { "done" };
        let msg = format!(
            "{eta} · {}/{} objects {verb}{}",
            c.objects_done(),
            total.objects,
            if c.objects_failed > 0 {
                format!(", {} failed", c.objects_failed)
            } else {
                String::new()
            }
        );
        if let Some(b) = &self.bar {
            b.set_length(total.bytes);
            b.set_position(c.bytes_done());
            b.set_message(msg);
        } else {
            let mut last = self.last_line.lock().unwrap();
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!(
                    "progress: {} of {} · {}/s · ETA {msg}",
                    human_bytes(c.bytes_done()),
                    human_bytes(total.bytes),
                    human_bytes(p.bytes_per_second)
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn summary(s: &MigrationJobStatus, started: chrono::DateTime<chrono::Utc>) {
    let c = &s.progress.counters;
    let secs = (chrono::Utc::now() - started).num_milliseconds().max(1) as f64 / 1000.0;
    let phase = s.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    eprintln!("{phase}: {}", s.message.clone().unwrap_or_default());
    eprintln!(
        "  objects: {} selected, {} copied, {} up to date, {} vanished, {} failed{}",
        c.objects_total,
        c.objects_copied,
        c.objects_skipped,
        c.objects_vanished,
        c.objects_failed,
        if s.dry_run {
            format!(", {} would be copied", c.objects_would_copy)
        } else {
            String::new()
        }
    );
    eprintln!(
        "  bytes:   {} copied of {} in {} ({}/s), verified: {}",
        human_bytes(c.bytes_copied),
        human_bytes(c.bytes_total),
        human_duration(secs as u64),
        human_bytes((c.bytes_copied as f64 / secs) as u64),
        s.verified.clone().unwrap_or_default()
    );
    for (class, n) in &s.failures_by_class {
        eprintln!("  {}: {n}", class.as_str());
    }
    for e in &s.first_errors {
        eprintln!("  failed {:?}: {}", e.key, e.message);
    }
    if let Some(r) = &s.report {
        eprintln!("  report: {r}");
    }
}
