//! `ferry controller`: the thin I/O around [`crate::reconcile::decide`]. It observes a
//! MigrationJob's world (Secrets, children, shard progress objects), asks for a decision,
//! carries the actions out with deterministic names (idempotent, restart-safe), and patches
//! the status subresource.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::{spec_hash, validate, JobPlan, MigrationJob, Phase, ShardProgress, Side};
use ferry_engine::limit::Limits;
use ferry_engine::retry::RetryPolicy;
use ferry_engine::stores;
use ferry_k8s::names::{self as children_names, JOB_LABEL, PLAN_KEY, PROGRESS_KEY};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalize};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::children;
use crate::credentials::job_credentials;
use crate::manifests::SecretData;
use crate::planner;
use crate::reconcile::{decide, Action, AgentJob, Observed, Probe, ProbeError, RETRY_ANNOTATION};

pub const FINALIZER: &str = "ferry.dev/cleanup";
const MANAGER: &str = "ferry-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// The transfer-agent image the agents' Jobs run.
    #[arg(long, env = "FERRY_AGENT_IMAGE", default_value = concat!("ferry/transfer-agent:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// MigrationJobs running at once; the rest stay Pending (Queued).
    #[arg(long, env = "FERRY_MAX_RUNNING", default_value_t = 10)]
    pub max_running: usize,
    /// The Lease used for leader election, as namespace/name.
    #[arg(
        long,
        env = "FERRY_LEADER_LEASE",
        default_value = "ferry-system/ferry-controller"
    )]
    pub leader_lease: String,
    /// This replica's identity in the Lease (defaults to the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

pub struct Ctx {
    pub client: Client,
    pub recorder: Recorder,
    pub args: ControllerArgs,
}

/// Runs the controller until SIGTERM, once this replica holds the leader Lease.
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry-controller".into()));
    let lease = crate::leader::Lease::new(client.clone(), &args.leader_lease, &identity);
    lease.acquire().await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => Error::Other(format!(
            "the namespace of the leader Lease {} does not exist: create it (the Helm chart \
             runs the operator in its own namespace) or choose another with --leader-lease \
             NAMESPACE/NAME",
            args.leader_lease
        )),
        e => e.into(),
    })?;
    let renewing = tokio::spawn(lease.clone().keep());
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: Some(identity),
    };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        args,
    });
    let mjs: Api<MigrationJob> = Api::all(client.clone());
    let controller = Controller::new(mjs, watcher::Config::default())
        .owns(
            Api::<Job>::all(client.clone()),
            watcher::Config::default().labels(JOB_LABEL),
        )
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().labels(JOB_LABEL),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::warn!(error = %e, "reconcile failed");
            }
        });
    tokio::select! {
        _ = controller => {}
        r = renewing => {
            tracing::error!(?r, "lost the leader Lease; stopping");
            return Err(Error::Other("lost the leader Lease".into()));
        }
    }
    lease.release().await;
    Ok(())
}

fn error_policy(_: Arc<MigrationJob>, e: &Error, _: Arc<Ctx>) -> Requeue {
    tracing::warn!(error = %e, "retrying");
    Requeue::requeue(Duration::from_secs(15))
}

async fn reconcile(mj: Arc<MigrationJob>, ctx: Arc<Ctx>) -> Result<Requeue, Error> {
    let ns = mj.namespace().unwrap_or_default();
    let api: Api<MigrationJob> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, mj, |ev| async {
        match ev {
            Finalize::Apply(mj) => apply(&mj, &ctx).await,
            Finalize::Cleanup(mj) => cleanup(&mj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Deleting a MigrationJob stops its agents (they get SIGTERM, checkpoint and abort their
/// multipart uploads); copied data is never touched. Owned children are garbage-collected.
async fn cleanup(mj: &MigrationJob, ctx: &Ctx) -> Result<Requeue, Error> {
    delete_job(mj, ctx).await?;
    Ok(Requeue::await_change())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn secrets_of(
    mj: &MigrationJob,
    ctx: &Ctx,
) -> Result<std::collections::BTreeMap<String, SecretData>, Error> {
    let ns = mj.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = std::collections::BTreeMap::new();
    for ep in [
        Some(&mj.spec.source),
        Some(&mj.spec.destination),
        mj.spec.report.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(r) = ep
            .s3
            .as_ref()
            .and_then(|s| s.credentials_secret_ref.as_ref())
        {
            if let Some(s) = api.get_opt(&r.name).await? {
                let mut data: std::collections::BTreeMap<String, String> =
                    s.string_data.unwrap_or_default();
                for (k, v) in s.data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                out.insert(r.name.clone(), SecretData(data));
            }
        }
    }
    Ok(out)
}

async fn observe(mj: &MigrationJob, ctx: &Ctx) -> Result<Observed, Error> {
    let ns = mj.namespace().unwrap_or_default();
    let name = mj.name_any();
    let secrets = secrets_of(mj, ctx).await?;
    let secret_problems = match job_credentials(&mj.spec, &ns, &|n| secrets.get(n)) {
        Ok(_) => vec![],
        Err(e) => vec![e.to_string()],
    };
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let attempt = mj.status.as_ref().map(|s| s.attempt).unwrap_or(0);
    let plan = stored_plan(&cms, mj)
        .await?
        .filter(|p| p.attempt == attempt);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = jobs
        .get_opt(&children_names::job_name(&name))
        .await?
        .map(|j| {
            let spec = j.spec.unwrap_or_default();
            let st = j.status.unwrap_or_default();
            let cond = |t: &str| {
                st.conditions.as_ref().and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == t && c.status == "True")
                        .cloned()
                })
            };
            AgentJob {
                suspended: spec.suspend.unwrap_or(false),
                active: st.active.unwrap_or(0),
                complete: cond("Complete").is_some(),
                failed: cond("Failed").is_some(),
                failed_message: cond("Failed").and_then(|c| c.message),
            }
        });
    let mut shards = Vec::new();
    for i in 0..mj.spec.parallelism.shards {
        let rec = cms
            .get_opt(&children_names::shard_name(&name, i))
            .await?
            .and_then(|cm| cm.data)
            .and_then(|d| d.get(PROGRESS_KEY).cloned())
            .and_then(|j| serde_json::from_str::<ShardProgress>(&j).ok())
            .filter(|p| p.spec_hash == spec_hash(&mj.spec));
        shards.push(rec);
    }
    let all: Api<MigrationJob> = Api::all(ctx.client.clone());
    let running_elsewhere = all
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|o| {
            o.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
                && !(o.name_any() == name && o.namespace() == mj.namespace())
        })
        .count();
    Ok(Observed {
        secret_problems,
        probe: None,
        job,
        shards,
        running_elsewhere,
        max_running: ctx.args.max_running,
        retry_token: mj.annotations().get(RETRY_ANNOTATION).cloned(),
        plan_ready: plan.is_some(),
        report: plan.map(|p| p.report_location()),
        now: now(),
    })
}

/// The plan stored in the plan ConfigMap, if it was made for the current spec (of any attempt).
async fn stored_plan(cms: &Api<ConfigMap>, mj: &MigrationJob) -> Result<Option<JobPlan>, Error> {
    Ok(cms
        .get_opt(&children_names::plan_name(&mj.name_any()))
        .await?
        .and_then(|cm| cm.data)
        .and_then(|d| d.get(PLAN_KEY).cloned())
        .and_then(|j| serde_json::from_str::<JobPlan>(&j).ok())
        .filter(|p| p.spec_hash == spec_hash(&mj.spec)))
}

/// Lists the source (max-keys 1) and heads the destination bucket, writing nothing.
async fn probe(mj: &MigrationJob, ctx: &Ctx) -> Result<Probe, Error> {
    let ns = mj.namespace().unwrap_or_default();
    let secrets = secrets_of(mj, ctx).await?;
    let creds = job_credentials(&mj.spec, &ns, &|n| secrets.get(n))
        .map_err(|e| Error::Other(e.to_string()))?;
    let limits = Arc::new(Limits::unlimited());
    let retry = RetryPolicy {
        max_attempts: 2,
        ..Default::default()
    };
    let check = |res: Result<(), ferry_engine::TransferError>, side: Side| {
        res.err().map(|e| ProbeError {
            message: format!("{}: {e}", side.field()),
            credentials: matches!(
                e.class,
                ferry_api::FailureClass::AccessDenied | ferry_api::FailureClass::AuthExpired
            ),
            transient: e.class == ferry_api::FailureClass::Network,
        })
    };
    let Ok(v) = validate(&mj.spec) else {
        return Ok(Probe::default());
    };
    let t = &v.transfer;
    // A location in the agents' volume (a path) is theirs to see, not the operator's.
    let by_operator =
        |ep: &ferry_api::Endpoint| ep.location().is_ok_and(|l| l.checked_by_operator());
    let source = if by_operator(&mj.spec.source) {
        match stores::open(&t.source, &creds.source, limits.clone(), retry.clone()).await {
            Ok(s) => check(s.source().probe().await, Side::Source),
            Err(e) => check(Err(e), Side::Source),
        }
    } else {
        None
    };
    let destination = if by_operator(&mj.spec.destination) {
        let opened = stores::open(&t.destination, &creds.destination, limits, retry).await;
        match opened.and_then(|o| o.sink()) {
            Ok(d) => check(d.probe_destination(t.dry_run).await, Side::Destination),
            Err(e) => check(Err(e), Side::Destination),
        }
    } else {
        None
    };
    Ok(Probe {
        source,
        destination,
    })
}

async fn apply(cached: &MigrationJob, ctx: &Ctx) -> Result<Requeue, Error> {
    // Decide on the object as it is now, not as the watch cache last saw it: a reconcile
    // woken by a child between our status write and its watch event would otherwise see the
    // old phase and announce the same transition (Event) twice.
    let api: Api<MigrationJob> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(fresh) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Requeue::await_change());
    };
    let mj = &fresh;
    let mut obs = observe(mj, ctx).await?;
    let mut d = decide(mj, &obs);
    if d.requeue.is_zero() {
        obs.probe = Some(probe(mj, ctx).await?);
        d = decide(mj, &obs);
    }
    for action in &d.actions {
        execute(mj, action, ctx).await?;
    }
    if mj.status.as_ref() != Some(&d.status) {
        // The whole status is replaced: a merge patch would keep every field the new status
        // leaves out (an ETA once the job has ended, first errors after a retry).
        let replace: json_patch::Patch = serde_json::from_value(json!([
            { "op": "add", "path": "/status", "value": d.status }
        ]))
        .expect("a valid JSON patch");
        api.patch_status(
            &mj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(replace),
        )
        .await?;
    }
    Ok(Requeue::requeue(if d.requeue.is_zero() {
        Duration::from_secs(5)
    } else {
        d.requeue
    }))
}

/// Creates an object unless it exists (names are deterministic, so a restarted operator
/// never duplicates a child).
async fn create<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api
        .create(
            &PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            },
            obj,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete_job(mj: &MigrationJob, ctx: &Ctx) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &mj.namespace().unwrap_or_default());
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs
        .delete(&children_names::job_name(&mj.name_any()), &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn execute(mj: &MigrationJob, action: &Action, ctx: &Ctx) -> Result<(), Error> {
    let ns = mj.namespace().unwrap_or_default();
    let name = mj.name_any();
    let client = ctx.client.clone();
    match action {
        Action::CreatePlan => {
            let secrets = secrets_of(mj, ctx).await?;
            let creds = job_credentials(&mj.spec, &ns, &|n| secrets.get(n))
                .map_err(|e| Error::Other(e.to_string()))?;
            let v = validate(&mj.spec)
                .map_err(|_| Error::Other("the spec is invalid; not planning".into()))?;
            let src = stores::open(
                &v.transfer.source,
                &creds.source,
                Arc::new(Limits::unlimited()),
                RetryPolicy::default(),
            )
            .await
            .map_err(|e| Error::Other(e.to_string()))?
            .source();
            let api: Api<ConfigMap> = Api::namespaced(client, &ns);
            let attempt = mj.status.as_ref().map(|s| s.attempt).unwrap_or(0);
            let plan = if attempt > 0 {
                // A retry keeps the shard ranges of the run whose failures it re-runs.
                stored_plan(&api, mj)
                    .await?
                    .ok_or_else(|| {
                        Error::Other("the plan of the first run is gone; cannot retry".into())
                    })?
                    .retry(attempt)
            } else {
                let uid = mj.uid().unwrap_or_default();
                planner::plan(&ns, &name, &uid, &v, src.as_ref())
                    .await
                    .map_err(|e| Error::Other(format!("planning: {e}")))?
            };
            let cm = children::plan_configmap(mj, &plan);
            api.patch(
                &children_names::plan_name(&name),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await?;
        }
        Action::CreateAgentAccess => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            for i in 0..mj.spec.parallelism.shards {
                create(&cms, &children::shard_configmap(mj, i)).await?;
            }
            let (sa, role, binding) = children::agent_access(mj, mj.spec.parallelism.shards);
            let pp = PatchParams::apply(MANAGER).force();
            Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .patch(&children_names::agent_name(&name), &pp, &Patch::Apply(&sa))
                .await?;
            Api::<Role>::namespaced(client.clone(), &ns)
                .patch(
                    &children_names::agent_name(&name),
                    &pp,
                    &Patch::Apply(&role),
                )
                .await?;
            Api::<RoleBinding>::namespaced(client, &ns)
                .patch(
                    &children_names::agent_name(&name),
                    &pp,
                    &Patch::Apply(&binding),
                )
                .await?;
        }
        Action::ResetProgress => {
            let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
            let empty = json!({"data": {PROGRESS_KEY: null}});
            for i in 0..mj.spec.parallelism.shards {
                match cms
                    .patch(
                        &children_names::shard_name(&name, i),
                        &PatchParams::default(),
                        &Patch::Merge(&empty),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Action::CreateJob { suspend } => {
            let jobs: Api<Job> = Api::namespaced(client, &ns);
            let v = validate(&mj.spec)
                .map_err(|_| Error::Other("the spec is invalid; no agents".into()))?;
            create(
                &jobs,
                &children::agent_job(mj, &v, &ctx.args.agent_image, *suspend),
            )
            .await?;
        }
        Action::SetSuspend { suspend } => {
            let jobs: Api<Job> = Api::namespaced(client, &ns);
            jobs.patch(
                &children_names::job_name(&name),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": suspend}})),
            )
            .await?;
        }
        Action::DeleteJob => delete_job(mj, ctx).await?,
        Action::Event {
            warning,
            reason,
            message,
        } => {
            let ev = Event {
                type_: if *warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: reason.clone(),
                note: Some(message.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&ev, &mj.object_ref(&())).await {
                tracing::warn!(error = %e, "could not publish an Event");
            }
        }
    }
    Ok(())
}
