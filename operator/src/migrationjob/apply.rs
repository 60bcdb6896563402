//! Carries the decision's steps out in a cluster, with deterministic names (idempotent,
//! restart-safe): the objects come from [`super::build`].

use ferry_api::{JobPlan, MigrationJob};
use ferry_k8s::limits_configmap::limits_data;
use ferry_k8s::names::{
    agent_name, job_name, limits_name, plan_name, planner_name, shard_name, COLLECT_KEY,
    OUTCOME_KEY, PLAN_KEY, PROGRESS_KEY, REQUEST_KEY,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::build::{self, Pods};
use super::decide::Step;
use super::observe::{owned_by, taken, World};
use crate::context::{publish_event, Context, Error, MANAGER};
use ferry_k8s::plan_configmap::digest;

/// The settings of the pods the operator creates, from its arguments.
pub fn pods(ctx: &Context) -> Pods {
    Pods {
        image: ctx.args.agent_image.clone(),
        image_pull_secrets: ctx.args.agent_image_pull_secrets.clone(),
        service_account_annotations: ctx
            .args
            .agent_service_account_annotations
            .clone()
            .unwrap_or_default(),
        planner_deadline_seconds: ctx.args.planner_deadline_seconds,
        log_format: std::env::var(ferry_k8s::env::LOG_FORMAT).ok(),
        scheduling: ctx
            .args
            .agent_scheduling
            .as_deref()
            .cloned()
            .unwrap_or_default(),
    }
}

pub async fn execute(
    mj: &MigrationJob,
    step: &Step,
    world: &World,
    ctx: &Context,
) -> Result<(), Error> {
    let ns = mj.namespace().unwrap_or_default();
    let name = mj.name_any();
    let uid = mj.uid().unwrap_or_default();
    let client = ctx.client.clone();
    // The decision creates agents only once the plan of this attempt is stored.
    let current = || world.plan.as_ref().ok_or(Error::PlanGone);
    match step {
        Step::CreatePlan => create_plan(mj, world, ctx).await?,
        Step::PlanDeletes => {
            // The same shards and report folder: each agent deletes its shard's candidates.
            let plan = current()?.copy_stage().deletes();
            store_plan(ctx, mj, world, &plan).await?;
        }
        Step::PlanRollback => {
            // The same shards and job: each agent takes back what its shard's manifests name.
            let asked = mj.status.as_ref().and_then(|s| s.rollback.clone());
            let asked = asked.unwrap_or_default();
            let plan = current()?.rollback_run(asked.token, asked.number);
            store_plan(ctx, mj, world, &plan).await?;
        }
        Step::CreateAgentAccess => {
            let shards = current()?.shards.len() as u32;
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            for i in 0..shards {
                create_owned(&cms, &build::shard_configmap(mj, i), &uid).await?;
            }
            agent_access(mj, shards, ctx).await?;
        }
        Step::ResetProgress => {
            // The shards of the plan the retry builds on, in ConfigMaps this job owns.
            let shards = world.plan.as_ref().map_or(0, |p| p.shards.len() as u32);
            let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
            for i in 0..shards {
                let Some(cm) = cms.get_opt(&shard_name(&name, i)).await? else {
                    continue;
                };
                if !owned_by(&cm.metadata, &uid) {
                    return Err(Error::NameTaken(taken("ConfigMap", &cm.metadata)));
                }
                let empty = json!({
                    "metadata": {"resourceVersion": cm.metadata.resource_version},
                    "data": {PROGRESS_KEY: null}
                });
                cms.patch(
                    &shard_name(&name, i),
                    &PatchParams::default(),
                    &Patch::Merge(&empty),
                )
                .await?;
            }
        }
        Step::CreateJob { suspend } => {
            let jobs: Api<Job> = Api::namespaced(client, &ns);
            let digest = world.plan_digest.as_deref().ok_or(Error::PlanGone)?;
            let job = build::agent_job(mj, current()?, digest, &pods(ctx), *suspend);
            create_owned(&jobs, &job, &uid).await?;
        }
        Step::SetSuspend { suspend } => {
            let Some(job_uid) = &world.agents else {
                return Ok(());
            };
            // Only the Job observed as this job's own (its uid tested in the same request).
            let patch: json_patch::Patch = serde_json::from_value(json!([
                { "op": "test", "path": "/metadata/uid", "value": job_uid },
                { "op": "add", "path": "/spec/suspend", "value": suspend }
            ]))
            .expect("a valid JSON patch");
            Api::<Job>::namespaced(client, &ns)
                .patch(
                    &job_name(&name),
                    &PatchParams::default(),
                    &Patch::Json::<()>(patch),
                )
                .await?;
        }
        Step::SetLimits { limits } => set_limits(mj, world, limits, ctx).await?,
        Step::DeleteJob => {
            if let Some(job_uid) = &world.agents {
                delete_job_uid(ctx, &ns, &job_name(&name), job_uid).await?;
            }
        }
        Step::Event {
            warning,
            reason,
            message,
        } => {
            let obj = mj.object_ref(&());
            publish_event(ctx, &obj, *warning, *reason, message, "Reconcile").await;
        }
    }
    Ok(())
}

/// The pods' ServiceAccount, Role and RoleBinding: created, or brought up to date when they
/// are this job's own; never taken over.
async fn agent_access(mj: &MigrationJob, shards: u32, ctx: &Context) -> Result<(), Error> {
    let ns = mj.namespace().unwrap_or_default();
    let uid = mj.uid().unwrap_or_default();
    let name = agent_name(&mj.name_any());
    let (sa, role, binding) =
        build::agent_access(mj, shards, &pods(ctx).service_account_annotations);
    let client = ctx.client.clone();
    ensure_owned(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        &name,
        sa,
        &uid,
    )
    .await?;
    ensure_owned(
        &Api::<Role>::namespaced(client.clone(), &ns),
        &name,
        role,
        &uid,
    )
    .await?;
    ensure_owned(
        &Api::<RoleBinding>::namespaced(client, &ns),
        &name,
        binding,
        &uid,
    )
    .await
}

/// Writes `limits` into the job's limits ConfigMap: created when absent, else written on the
/// version observed as the job's own (a ConfigMap replaced or edited since is not
/// overwritten blindly: the write fails and the next pass looks again).
async fn set_limits(
    mj: &MigrationJob,
    world: &World,
    limits: &ferry_core::LiveLimits,
    ctx: &Context,
) -> Result<(), Error> {
    let ns = mj.namespace().unwrap_or_default();
    let uid = mj.uid().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(version) = &world.limits_version else {
        return create_owned(&cms, &build::limits_configmap(mj, limits), &uid).await;
    };
    let patch = json!({
        "metadata": {"resourceVersion": version},
        "data": limits_data(limits),
    });
    cms.patch(
        &limits_name(&mj.name_any()),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(namespace = %ns, job = %mj.name_any(), ?limits, "live limits written");
    Ok(())
}

/// A retry builds its plan from the stored one at once; a first plan is made by the planner
/// pod: the request is written, then its Job created (a finished planner's Job is removed
/// first, to be asked again).
async fn create_plan(mj: &MigrationJob, world: &World, ctx: &Context) -> Result<(), Error> {
    let attempt = mj.status.as_ref().map_or(0, |s| s.attempt);
    if attempt > 0 {
        // A retry keeps the shard ranges of the run whose failures it re-runs.
        let plan = world.plan.as_ref().ok_or(Error::PlanGone)?.retry(attempt);
        return store_plan(ctx, mj, world, &plan).await;
    }
    let Some(v) = &world.validated else {
        return Ok(()); // the decision fails an invalid spec before planning
    };
    let ns = mj.namespace().unwrap_or_default();
    let name = mj.name_any();
    let uid = mj.uid().unwrap_or_default();
    if let Some(planner_uid) = &world.planner {
        return delete_job_uid(ctx, &ns, &planner_name(&name), planner_uid).await;
    }
    agent_access(mj, v.shards, ctx).await?;
    let req = build::plan_request(mj, v);
    let text = build::request_text(&req);
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    match &world.plan_version {
        None => create_owned(&cms, &build::request_configmap(mj, &req), &uid).await?,
        Some(version) => {
            // Observed as this job's own at `version`; the answer of an earlier request goes.
            let patch = json!({
                "metadata": {"resourceVersion": version},
                "data": {
                    REQUEST_KEY: text,
                    OUTCOME_KEY: null,
                    COLLECT_KEY: null,
                }
            });
            cms.patch(
                &plan_name(&name),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = build::planner_job(mj, &pods(ctx), &digest(text.as_bytes()));
    create_owned(&jobs, &job, &uid).await
}

/// Stores `plan` in the job's own plan ConfigMap (observed as its own at `plan_version`).
async fn store_plan(
    ctx: &Context,
    mj: &MigrationJob,
    world: &World,
    plan: &JobPlan,
) -> Result<(), Error> {
    let version = world.plan_version.as_ref().ok_or(Error::PlanGone)?;
    let api: Api<ConfigMap> =
        Api::namespaced(ctx.client.clone(), &mj.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": {"resourceVersion": version},
        "data": {PLAN_KEY: serde_json::to_string_pretty(plan).expect("serializes")}
    });
    api.patch(
        &plan_name(&mj.name_any()),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Creates an object unless this job already owns one of that name (names are deterministic,
/// so a restarted operator never duplicates a child). An object of that name the job does
/// not own is never adopted: [`Error::NameTaken`].
async fn create_owned<K>(api: &Api<K>, obj: &K, uid: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let name = obj.meta().name.clone().unwrap_or_default();
            match api.get_opt(&name).await? {
                Some(found) if owned_by(found.meta(), uid) => Ok(()),
                Some(found) => Err(Error::NameTaken(taken(&K::kind(&()), found.meta()))),
                None => Err(kube::Error::Api(e).into()), // gone since: next reconcile
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates `obj`, or, when this job owns the object of that name, applies it (on the version
/// seen, so an object replaced in between is not written).
async fn ensure_owned<K>(api: &Api<K>, name: &str, mut obj: K, uid: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        None => create_owned(api, &obj, uid).await,
        Some(found) if !owned_by(found.meta(), uid) => {
            Err(Error::NameTaken(taken(&K::kind(&()), found.meta())))
        }
        Some(found) => {
            obj.meta_mut().resource_version = found.meta().resource_version.clone();
            let value = serde_json::to_value(&obj).expect("serializes");
            let mut value = value;
            value["apiVersion"] = json!(K::api_version(&()));
            value["kind"] = json!(K::kind(&()));
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&value),
            )
            .await?;
            Ok(())
        }
    }
}

/// Deletes the Job `name` if it is still the one of uid `job_uid` (a Job of that name made
/// since by someone else is left alone).
async fn delete_job_uid(ctx: &Context, ns: &str, name: &str, job_uid: &str) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    // Foreground: the Job stays until its pods are gone, so whatever comes next (a retry, a
    // rollback, the delete stage) starts only once the old agents have stopped writing.
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: Some(job_uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match jobs.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stops the job's pods (its agents get SIGTERM, checkpoint and abort their uploads): the
/// Jobs this job owns, and nothing of that name it does not.
pub async fn delete_jobs(mj: &MigrationJob, ctx: &Context) -> Result<(), Error> {
    let ns = mj.namespace().unwrap_or_default();
    let uid = mj.uid().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    for name in [job_name(&mj.name_any()), planner_name(&mj.name_any())] {
        if let Some(j) = jobs.get_opt(&name).await? {
            if owned_by(&j.metadata, &uid) {
                let job_uid = j.metadata.uid.clone().unwrap_or_default();
                delete_job_uid(ctx, &ns, &name, &job_uid).await?;
            }
        }
    }
    Ok(())
}
