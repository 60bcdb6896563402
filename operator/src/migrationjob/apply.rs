//! Carries the decision's steps out in a cluster, with deterministic names (idempotent,
//! restart-safe): the objects come from [`super::build`].

use std::sync::Arc;

use ferry_api::{JobPlan, MigrationJob};
use ferry_engine::limit::Limits;
use ferry_engine::retry::RetryPolicy;
use ferry_engine::stores;
use ferry_k8s::names::{agent_name, job_name, plan_name, shard_name, PROGRESS_KEY};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::build;
use super::decide::Step;
use super::observe::World;
use crate::context::{publish_event, Context, Error, MANAGER};
use crate::planner;

pub async fn execute(
    mj: &MigrationJob,
    step: &Step,
    world: &World,
    ctx: &Context,
) -> Result<(), Error> {
    let ns = mj.namespace().unwrap_or_default();
    let name = mj.name_any();
    let client = ctx.client.clone();
    // The decision creates agents only once the plan of this attempt is stored.
    let current = || world.plan.as_ref().ok_or(Error::PlanGone);
    match step {
        Step::CreatePlan => create_plan(mj, world, ctx).await?,
        Step::PlanDeletes => {
            // The same shards and report folder: each agent deletes its shard's candidates.
            let plan = current()?.copy_stage().deletes();
            store_plan(&client, mj, &plan).await?;
        }
        Step::CreateAgentAccess => {
            let shards = current()?.shards.len() as u32;
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            for i in 0..shards {
                create(&cms, &build::shard_configmap(mj, i)).await?;
            }
            let (sa, role, binding) = build::agent_access(mj, shards);
            let pp = PatchParams::apply(MANAGER).force();
            Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .patch(&agent_name(&name), &pp, &Patch::Apply(&sa))
                .await?;
            Api::<Role>::namespaced(client.clone(), &ns)
                .patch(&agent_name(&name), &pp, &Patch::Apply(&role))
                .await?;
            Api::<RoleBinding>::namespaced(client, &ns)
                .patch(&agent_name(&name), &pp, &Patch::Apply(&binding))
                .await?;
        }
        Step::ResetProgress => {
            // The shards of the plan the retry builds on.
            let shards = world.plan.as_ref().map_or(0, |p| p.shards.len() as u32);
            let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
            let empty = json!({"data": {PROGRESS_KEY: null}});
            for i in 0..shards {
                let res = cms
                    .patch(
                        &shard_name(&name, i),
                        &PatchParams::default(),
                        &Patch::Merge(&empty),
                    )
                    .await;
                match res {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Step::CreateJob { suspend } => {
            let jobs: Api<Job> = Api::namespaced(client, &ns);
            let job = build::agent_job(mj, current()?, &ctx.args.agent_image, *suspend);
            create(&jobs, &job).await?;
        }
        Step::SetSuspend { suspend } => {
            let jobs: Api<Job> = Api::namespaced(client, &ns);
            jobs.patch(
                &job_name(&name),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": suspend}})),
            )
            .await?;
        }
        Step::DeleteJob => delete_job(mj, ctx).await?,
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

/// A retry builds its plan from the stored one at once; a first plan samples the source in a
/// task of its own, which stores the plan when done.
async fn create_plan(mj: &MigrationJob, world: &World, ctx: &Context) -> Result<(), Error> {
    let attempt = mj.status.as_ref().map_or(0, |s| s.attempt);
    if attempt > 0 {
        // A retry keeps the shard ranges of the run whose failures it re-runs.
        let plan = world.plan.as_ref().ok_or(Error::PlanGone)?.retry(attempt);
        return store_plan(&ctx.client, mj, &plan)
            .await
            .map_err(Error::from);
    }
    let Some(v) = world.validated.clone() else {
        return Ok(()); // the decision fails an invalid spec before planning
    };
    let (client, mj) = (ctx.client.clone(), mj.clone());
    let credentials = world.credentials.clone();
    let uid = mj.uid().unwrap_or_default();
    ctx.plans.start(&uid, async move {
        let src = stores::open(
            &v.transfer.source,
            &credentials.source,
            Arc::new(Limits::unlimited()),
            RetryPolicy::default(),
        )
        .await
        .map_err(|e| e.to_string())?
        .source();
        let (ns, name) = (mj.namespace().unwrap_or_default(), mj.name_any());
        let uid = mj.uid().unwrap_or_default();
        let plan = planner::plan(&ns, &name, &uid, &v, src.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        store_plan(&client, &mj, &plan)
            .await
            .map_err(|e| format!("storing the plan: {e}"))
    });
    Ok(())
}

async fn store_plan(client: &Client, mj: &MigrationJob, plan: &JobPlan) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &mj.namespace().unwrap_or_default());
    api.patch(
        &plan_name(&mj.name_any()),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&build::plan_configmap(mj, plan)),
    )
    .await
    .map(|_| ())
}

/// Creates an object unless it exists (names are deterministic, so a restarted operator
/// never duplicates a child).
async fn create<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_job(mj: &MigrationJob, ctx: &Context) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &mj.namespace().unwrap_or_default());
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(&job_name(&mj.name_any()), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
