//! `transfer-agent`: copies one shard of a job plan in a cluster (the protocol between the
//! operator and its agents: `docs/agent-protocol.md`; its names: `ferry_k8s`).
//! `transfer-agent plan` is the job's planner instead: it checks the Secrets and both
//! endpoints, plans the shards, and answers in the plan ConfigMap (exit 0 once the answer is
//! stored, whatever it says; 1 when it cannot be).
//!
//! Exit codes: 0 when the shard is done (objects copied, skipped, vanished, or failed — object
//! failures are in the progress record and the report, never in the exit code); 1 on a
//! job-fatal error or an unusable plan; 3 when the shard could not start for a passing reason or
//! its final state could not be saved, or its credentials stopped working mid-run (an expired
//! token, a key rotated away: the Job runs the index again, from the last checkpoint saved, in
//! a pod that reads the Secret's values as they are then); 128 + signal when stopped by SIGTERM/SIGINT (the checkpoint is saved and in-flight
//! multipart uploads are aborted).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferry_core::collect::CollectProgress;
use ferry_core::planning::PlanRequest;
use ferry_core::{
    JobCredentials, JobPlan, LiveLimits, ProgressStore, ShardProgress, ShardState, Side,
};
use ferry_engine::checkpoint::FileProgressStore;
use ferry_engine::planner;
use ferry_engine::{run_shard, ShardInputs};
use ferry_k8s::env;
use ferry_k8s::limits_configmap;
use ferry_k8s::plan_configmap;
use tokio::sync::watch;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "transfer-agent",
    version,
    about = "Copies one shard of a Ferry MigrationJob",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    copy: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Checks the job's Secrets and endpoints, then plans its shards (the planner pod).
    Plan(PlanArgs),
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// The planner's request (JSON), mounted read-only by the operator.
    #[arg(long, env = env::PLAN, default_value_t = ferry_k8s::names::request_path())]
    request: String,
    /// The ConfigMap to answer in (of FERRY_NAMESPACE).
    #[arg(long, env = env::PLAN_CONFIGMAP)]
    configmap: String,
    /// The namespace of the plan ConfigMap.
    #[arg(long, env = env::NAMESPACE, default_value = "default")]
    namespace: String,
}

#[derive(clap::Args, Debug)]
struct Args {
    /// The job plan (JSON), mounted read-only by the operator.
    #[arg(long, env = env::PLAN, default_value_t = ferry_k8s::names::plan_path())]
    plan: String,
    /// The shard to copy; an Indexed Job sets JOB_COMPLETION_INDEX.
    #[arg(long, env = env::SHARD, required = true)]
    shard: Option<usize>,
    /// Where the shard's progress record (with its checkpoint) is kept, as a file...
    #[arg(
        long,
        env = env::PROGRESS_FILE,
        required_unless_present = "progress_configmap_prefix"
    )]
    progress_file: Option<PathBuf>,
    /// ...or in the ConfigMap `<prefix><shard>` of FERRY_NAMESPACE (in a cluster).
    #[arg(long, env = env::PROGRESS_CONFIGMAP_PREFIX)]
    progress_configmap_prefix: Option<String>,
    /// The namespace of the progress ConfigMap.
    #[arg(long, env = env::NAMESPACE, default_value = "default")]
    namespace: String,
    /// The ConfigMap of the job's live limits (of FERRY_NAMESPACE), followed while the
    /// shard runs; without it the plan's limits hold for the whole run.
    #[arg(long, env = env::LIMITS_CONFIGMAP)]
    limits_configmap: Option<String>,
    /// Seconds between checkpoints (default: max(5, shards/20)).
    #[arg(long, env = env::CHECKPOINT_SECONDS)]
    checkpoint_seconds: Option<f64>,
}

/// Each side's secret values from its own `FERRY_<SIDE>_*` variables (set by the operator
/// from `secretKeyRef`), so that no side's keys reach another through a default chain.
fn credentials() -> JobCredentials {
    let side = |s| env::secrets_from(s, std::env::vars());
    JobCredentials {
        source: side(Side::Source),
        destination: side(Side::Destination),
        report: side(Side::Report),
    }
}

/// The planner: answers the request in the plan ConfigMap.
async fn plan(args: PlanArgs) -> i32 {
    let req: PlanRequest = match plan_configmap::read_pinned(&args.request)
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(request = %args.request, error = %e, "cannot read the planner's request");
            return 1;
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the Kubernetes API");
            return 1;
        }
    };
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let (progress_tx, progress) = watch::channel(None);
    let publisher = tokio::spawn(publish_collect_progress(
        client.clone(),
        args.namespace.clone(),
        args.configmap.clone(),
        progress,
    ));
    let (plan, outcome) = planner::answer_with(&req, &vars, &credentials(), 3, &|p| {
        let _ = progress_tx.send(Some(p.clone()));
    })
    .await;
    publisher.abort();
    tracing::info!(
        planned = plan.is_some(),
        secret_problems = outcome.secret_problems.len(),
        probe_fine = outcome.probe.as_ref().is_some_and(|p| p.is_fine()),
        "planner answered"
    );
    match plan_configmap::store_answer(
        client,
        &args.namespace,
        &args.configmap,
        plan.as_ref(),
        &outcome,
    )
    .await
    {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot store the planner's answer");
            1
        }
    }
}

/// Publishes the collector's progress in the plan ConfigMap while the planner collects: the
/// first page's at once, then the latest at most every 2 s (the outcome holds the final one).
async fn publish_collect_progress(
    client: kube::Client,
    namespace: String,
    configmap: String,
    mut progress: watch::Receiver<Option<CollectProgress>>,
) {
    while progress.changed().await.is_ok() {
        let latest = progress.borrow_and_update().clone();
        if let Some(p) = latest {
            let stored =
                plan_configmap::store_collect_progress(client.clone(), &namespace, &configmap, &p)
                    .await;
            if let Err(e) = stored {
                tracing::warn!(error = %e, "cannot publish the collector's progress");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn run(args: Args) -> i32 {
    let Some(shard) = args.shard else {
        tracing::error!("no shard given (JOB_COMPLETION_INDEX)");
        return 1;
    };
    let plan: JobPlan = match plan_configmap::read_pinned(&args.plan)
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(plan = %args.plan, error = %e, "cannot read the job plan");
            return 1;
        }
    };
    if shard >= plan.shards.len() {
        tracing::error!(
            shard = shard,
            shards = plan.shards.len(),
            "shard index out of range"
        );
        return 1;
    }
    // Every line of the shard's run names it (JSON logs carry the span's fields).
    let span = tracing::info_span!("shard", namespace = %plan.namespace, job = %plan.name, shard);
    run_plan(args, plan, shard).instrument(span).await
}

async fn run_plan(args: Args, plan: JobPlan, shard: usize) -> i32 {
    let creds = credentials();
    let every = args
        .checkpoint_seconds
        .unwrap_or_else(|| (plan.shards.len() as f64 / 20.0).max(5.0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (live_tx, _live_rx) = watch::channel(ShardProgress::default());
    let store: Arc<dyn ProgressStore> = match (&args.progress_configmap_prefix, &args.progress_file)
    {
        (Some(prefix), _) => match ferry_k8s::ConfigMapProgressStore::connect(
            &args.namespace,
            format!("{prefix}{}", shard),
        )
        .await
        {
            Ok(store) => Arc::new(store),
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the Kubernetes API for the progress ConfigMap");
                return 1;
            }
        },
        (None, Some(path)) => Arc::new(FileProgressStore { path: path.clone() }),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let limits = match &args.limits_configmap {
        Some(name) => follow_limits(&args.namespace, name, &plan).await,
        None => None,
    };
    let shard = tokio::spawn(
        run_shard(ShardInputs {
            plan: Arc::new(plan),
            index: shard,
            credentials: creds,
            progress: store,
            live: live_tx,
            stop: stop_rx,
            checkpoint_every: Duration::from_secs_f64(every),
            limits,
        })
        .instrument(tracing::Span::current()),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut signal_code = None;
    tokio::pin!(shard);
    let result = loop {
        tokio::select! {
            r = &mut shard => break r,
            _ = term.recv(), if signal_code.is_none() => { signal_code = Some(143); let _ = stop_tx.send(true); }
            _ = tokio::signal::ctrl_c(), if signal_code.is_none() => { signal_code = Some(130); let _ = stop_tx.send(true); }
        }
    };
    match result {
        Ok(Ok(p)) => {
            tracing::info!(state = ?p.state, copied = p.counters.objects_copied, failed = p.counters.objects_failed, "shard finished");
            match p.state {
                ShardState::Failed => 1,
                // Stopped because its credentials went stale: run again (the Job does, in a
                // new pod that reads the Secret's current values), from the checkpoint.
                ShardState::Paused
                    if signal_code.is_none()
                        && p.fatal.as_ref().is_some_and(|f| f.credentials_went_stale()) =>
                {
                    tracing::error!(error = %p.fatal.as_ref().map(|f| f.message.as_str()).unwrap_or(""),
                        "the credentials no longer work; exiting to be run again with the Secret's current values");
                    3
                }
                ShardState::Paused => signal_code.unwrap_or(143),
                _ => 0,
            }
        }
        // Fatal: the plan or the job is wrong (the Job does not retry the index). Else a
        // shard that could not start, or whose final state could not be saved: exit 3, which
        // the Job retries (up to backoffLimitPerIndex), going on from the last checkpoint.
        Ok(Err(e)) if e.fatal => {
            tracing::error!(error = %e, "shard could not run");
            1
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "shard did not end where it can be seen; exiting to be run again");
            3
        }
        Err(e) => {
            tracing::error!(error = %e, "shard crashed");
            1
        }
    }
}

/// The job's live limits, followed from the ConfigMap `name` in the background; the plan's
/// until it is read, and the last read when the API cannot be reached. A memory budget above
/// the plan's (which the pod's memory limit was made for) is clamped to it. None when no
/// client can be made (the plan's limits hold then).
async fn follow_limits(
    namespace: &str,
    name: &str,
    plan: &JobPlan,
) -> Option<watch::Receiver<LiveLimits>> {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the live limits; the plan's hold");
            return None;
        }
    };
    let (tx, rx) = watch::channel(LiveLimits::of(&plan.transfer));
    let ceiling = plan.transfer.memory_budget;
    let (namespace, name) = (namespace.to_string(), name.to_string());
    tokio::spawn(async move {
        limits_configmap::follow(client, &namespace, &name, tx, ceiling).await;
    });
    Some(rx)
}

/// Logs to stderr, filtered by `FERRY_LOG`; one JSON object per line (with the job, namespace
/// and shard of the span the agent runs in) when `FERRY_LOG_FORMAT` is `json`, as the
/// operator's `--log-format json` sets for its pods, else text.
fn init_logs() {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env(env::LOG)
                .unwrap_or_else(|_| EnvFilter::new("info,aws_config=error")),
        )
        .with_writer(std::io::stderr);
    if std::env::var(LOG_FORMAT).is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

/// The log format variable (`text` or `json`), the same as the operator's.
const LOG_FORMAT: &str = "FERRY_LOG_FORMAT";

fn main() {
    ferry_engine::limit::return_large_buffers_to_the_system();
    init_logs();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    std::process::exit(rt.block_on(async {
        match cli.command {
            Some(Command::Plan(args)) => plan(args).await,
            None => run(cli.copy).await,
        }
    }));
}
