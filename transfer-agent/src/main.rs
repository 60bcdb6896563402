//! `transfer-agent`: copies one shard of a MigrationJob (the agent contract, see
//! `transfer-agent/AGENT_CONTRACT.md`).
//!
//! Exit codes: 0 when the shard is done (objects copied, skipped, vanished, or failed — object
//! failures are in the progress record and the report, never in the exit code); 1 on a
//! job-fatal error or an unusable plan; 128 + signal when stopped by SIGTERM/SIGINT (the
//! checkpoint is saved and in-flight multipart uploads are aborted).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferry_api::{JobPlan, ShardProgress, ShardState};
use ferry_engine::checkpoint::{FileProgressStore, ProgressStore};
use ferry_engine::store::S3Credentials;
use ferry_engine::{run_shard, JobCredentials, ShardInputs};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "transfer-agent",
    version,
    about = "Copies one shard of a Ferry MigrationJob"
)]
struct Args {
    /// The job plan (JSON), mounted read-only by the operator.
    #[arg(long, env = "FERRY_PLAN", default_value = "/etc/ferry/plan/plan.json")]
    plan: PathBuf,
    /// The shard to copy; an Indexed Job sets JOB_COMPLETION_INDEX.
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    shard: usize,
    /// Where the shard's progress record (with its checkpoint) is kept, as a file...
    #[arg(
        long,
        env = "FERRY_PROGRESS_FILE",
        required_unless_present = "progress_configmap_prefix"
    )]
    progress_file: Option<PathBuf>,
    /// ...or in the ConfigMap `<prefix><shard>` of FERRY_NAMESPACE (in a cluster).
    #[arg(long, env = "FERRY_PROGRESS_CONFIGMAP_PREFIX")]
    progress_configmap_prefix: Option<String>,
    /// The namespace of the progress ConfigMap.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Seconds between checkpoints (default: max(5, shards/20)).
    #[arg(long, env = "FERRY_CHECKPOINT_SECONDS")]
    checkpoint_seconds: Option<f64>,
}

/// Credentials of one side from `FERRY_<SIDE>_AWS_*` variables (set by the operator from
/// `secretKeyRef`), so that the two sides never share the default environment chain.
fn side(name: &str, has_secret: bool) -> Result<S3Credentials, String> {
    let var = |k: &str| {
        std::env::var(format!("FERRY_{name}_{k}"))
            .ok()
            .filter(|v| !v.is_empty())
    };
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(a), Some(s)) => Ok(S3Credentials::Static { access_key_id: a, secret_access_key: s, session_token: var("AWS_SESSION_TOKEN") }),
        (None, None) if !has_secret => Ok(S3Credentials::DefaultChain),
        _ => Err(format!("FERRY_{name}_AWS_ACCESS_KEY_ID and FERRY_{name}_AWS_SECRET_ACCESS_KEY must both be set")),
    }
}

fn credentials(plan: &JobPlan) -> Result<JobCredentials, String> {
    let has = |ep: Option<&ferry_api::Endpoint>| {
        ep.and_then(|e| e.s3.as_ref())
            .is_some_and(|s| s.credentials_secret_ref.is_some())
    };
    let anon = plan.spec.source.s3.as_ref().is_some_and(|s| s.anonymous);
    Ok(JobCredentials {
        source: if anon {
            S3Credentials::Anonymous
        } else {
            side("SOURCE", has(Some(&plan.spec.source)))?
        },
        destination: side("DESTINATION", has(Some(&plan.spec.destination)))?,
        report: side("REPORT", has(plan.spec.report.as_ref()))?,
    })
}

async fn run(args: Args) -> i32 {
    let plan: JobPlan = match std::fs::read(&args.plan)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(plan = %args.plan.display(), error = %e, "cannot read the job plan");
            return 1;
        }
    };
    if args.shard >= plan.shards.len() {
        tracing::error!(
            shard = args.shard,
            shards = plan.shards.len(),
            "shard index out of range"
        );
        return 1;
    }
    let creds = match credentials(&plan) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "credentials");
            return 1;
        }
    };
    let every = args
        .checkpoint_seconds
        .unwrap_or_else(|| (plan.shards.len() as f64 / 20.0).max(5.0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (live_tx, mut live_rx) = watch::channel(ShardProgress::default());
    let store: Arc<dyn ProgressStore> = match (&args.progress_configmap_prefix, &args.progress_file)
    {
        (Some(prefix), _) => match kube::Client::try_default().await {
            Ok(client) => Arc::new(ferry_engine::cluster::ConfigMapProgressStore::new(
                client,
                &args.namespace,
                format!("{prefix}{}", args.shard),
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the Kubernetes API for the progress ConfigMap");
                return 1;
            }
        },
        (None, Some(path)) => Arc::new(FileProgressStore { path: path.clone() }),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let shard = tokio::spawn(run_shard(ShardInputs {
        plan: Arc::new(plan),
        index: args.shard,
        credentials: creds,
        progress: store,
        live: live_tx,
        stop: stop_rx,
        checkpoint_every: Duration::from_secs_f64(every),
        limits: None,
    }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut signal_code = None;
    tokio::pin!(shard);
    let result = loop {
        tokio::select! {
            r = &mut shard => break r,
            _ = term.recv(), if signal_code.is_none() => { signal_code = Some(143); let _ = stop_tx.send(true); }
            _ = tokio::signal::ctrl_c(), if signal_code.is_none() => { signal_code = Some(130); let _ = stop_tx.send(true); }
            _ = live_rx.changed() => {}
        }
    };
    match result {
        Ok(Ok(p)) => {
            tracing::info!(state = ?p.state, copied = p.counters.objects_copied, failed = p.counters.objects_failed, "shard finished");
            match p.state {
                ShardState::Failed => 1,
                ShardState::Paused => signal_code.unwrap_or(143),
                _ => 0,
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "shard could not start");
            1
        }
        Err(e) => {
            tracing::error!(error = %e, "shard crashed");
            1
        }
    }
}

fn main() {
    ferry_engine::limit::return_large_buffers_to_the_system();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,aws_config=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    std::process::exit(rt.block_on(run(args)));
}
