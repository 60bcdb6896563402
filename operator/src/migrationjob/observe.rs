//! What the controller observes of a MigrationJob's world before deciding: its Secrets, its
//! plan, its agents' Job and progress records (from the ConfigMap cache), planning, the queue;
//! and, when the decision asks for it, both endpoints.

use std::collections::BTreeMap;

use ferry_api::{
    validate, DeletesState, JobPlan, MigrationJob, ShardProgress, Side, Stage, ValidatedSpec,
    APPROVE_DELETES_ANNOTATION,
};
use ferry_core::JobCredentials;
use ferry_k8s::names::{job_name, plan_name, shard_name, PLAN_KEY};
use ferry_k8s::progress_configmap::record_of;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::decide::{AgentJob, Observed, Probe, RETRY_ANNOTATION};
use crate::context::{Context, Error};
use crate::credentials::job_credentials;
use crate::manifests::SecretData;

/// What was observed, with what the steps need besides the decision's inputs.
pub struct World {
    pub observed: Observed,
    /// The spec, validated (None when it is not valid: the decision says why).
    pub validated: Option<ValidatedSpec>,
    /// The sides' secret values (never in `observed`, never logged), when the Secrets are fine.
    pub credentials: JobCredentials,
    /// The stored plan of the current spec (of any attempt: a retry builds on it).
    pub plan: Option<JobPlan>,
}

pub async fn observe(mj: &MigrationJob, ctx: &Context) -> Result<World, Error> {
    let ns = mj.namespace().unwrap_or_default();
    let name = mj.name_any();
    // Where planning stands is read before the plan: a task that ends in between has stored
    // its plan already, so it is either still planning here or its plan is found below.
    let planning = ctx.plans.state(&mj.uid().unwrap_or_default());
    let validated = validate(&mj.spec).ok();
    let secrets = secrets_of(mj, ctx).await?;
    let (credentials, secret_problems) = match job_credentials(&mj.spec, &ns, &|n| secrets.get(n)) {
        Ok(c) => (c, vec![]),
        Err(e) => (JobCredentials::default(), vec![e.to_string()]),
    };
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let hash = validated.as_ref().map(|v| v.spec_hash.clone());
    let plan = cms
        .get_opt(&plan_name(&name))
        .await?
        .and_then(|cm| cm.data)
        .and_then(|d| d.get(PLAN_KEY).cloned())
        .and_then(|j| serde_json::from_str::<JobPlan>(&j).ok())
        .filter(|p| Some(&p.spec_hash) == hash.as_ref());
    let attempt = mj.status.as_ref().map_or(0, |s| s.attempt);
    let stage = stage_of(mj);
    let current = plan
        .as_ref()
        .filter(|p| p.attempt == attempt && p.stage == stage);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = jobs.get_opt(&job_name(&name)).await?.map(|j| agent_job(&j));
    ctx.configmaps
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    // Only the records of this plan's shards count (a record left by an earlier attempt, or
    // by a plan made again, is stale even when the cache has not yet seen it reset).
    let shards = current.map_or_else(Vec::new, |plan| {
        (0..plan.shards.len())
            .map(|i| {
                ctx.configmaps
                    .get(&ObjectRef::new(&shard_name(&name, i as u32)).within(&ns))
                    .and_then(|cm| record_of(&cm))
                    .and_then(|p| of_plan(p, plan, i))
            })
            .collect()
    });
    let key = (ns.clone(), name.clone());
    let observed = Observed {
        secret_problems,
        probe: None,
        plan_ready: current.is_some(),
        planning,
        job,
        shards,
        running_elsewhere: ctx.admission.running_besides(&key),
        max_running: ctx.args.max_running,
        retry_token: mj.annotations().get(RETRY_ANNOTATION).cloned(),
        report: current.map(JobPlan::report_location),
        approval: approval_of(mj, ctx).await?,
        now: now(),
    };
    Ok(World {
        observed,
        validated,
        credentials,
        plan,
    })
}

/// The stage the job is in: the delete stage once the guard (or an approval) let it start.
pub fn stage_of(mj: &MigrationJob) -> Stage {
    let deleting = mj
        .status
        .as_ref()
        .and_then(|s| s.deletes.as_ref())
        .is_some_and(|d| d.state == DeletesState::Deleting);
    if deleting {
        Stage::Delete
    } else {
        Stage::Copy
    }
}

/// The record if it belongs to shard `i` of `plan`; in the delete stage, a shard whose agent
/// has not started yet still holds its copy-stage record, which the delete stage goes on from.
pub fn of_plan(p: ShardProgress, plan: &JobPlan, i: usize) -> Option<ShardProgress> {
    if p.is_for(plan, i) {
        Some(p)
    } else if plan.stage == Stage::Delete && p.is_for(&plan.copy_stage(), i) {
        Some(p.continued_for(plan, i))
    } else {
        None
    }
}

/// The approval annotation that concerns the job: its own, else that of the BucketSync that
/// owns it (a run is approved on the resource the user manages).
async fn approval_of(mj: &MigrationJob, ctx: &Context) -> Result<Option<String>, Error> {
    if let Some(v) = mj.annotations().get(APPROVE_DELETES_ANNOTATION) {
        return Ok(Some(v.clone()));
    }
    crate::bucketsync::approval_for(mj, ctx).await
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What the decision needs of the agents' Indexed Job.
fn agent_job(j: &Job) -> AgentJob {
    let suspended = j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
    let failed = j
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
        });
    AgentJob {
        suspended,
        failed: failed.is_some(),
        failed_message: failed.and_then(|c| c.message.clone()),
    }
}

/// The Secrets the job's sides name, read once per reconcile.
async fn secrets_of(
    mj: &MigrationJob,
    ctx: &Context,
) -> Result<BTreeMap<String, SecretData>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &mj.namespace().unwrap_or_default());
    let mut out = BTreeMap::new();
    let sides = [
        Some(&mj.spec.source),
        Some(&mj.spec.destination),
        mj.spec.report.as_ref(),
    ];
    for ep in sides.into_iter().flatten() {
        let Some(secret) = ep.location().ok().and_then(|l| l.secret()) else {
            continue;
        };
        if out.contains_key(secret.name) {
            continue;
        }
        if let Some(s) = api.get_opt(secret.name).await? {
            let mut data: BTreeMap<String, String> = s.string_data.unwrap_or_default();
            for (k, v) in s.data.unwrap_or_default() {
                data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            out.insert(secret.name.to_string(), SecretData(data));
        }
    }
    Ok(out)
}

/// Checks both sides, writing nothing; a side whose data only the agents can see (a path in
/// their volume) is left to them.
pub async fn probe(mj: &MigrationJob, world: &World) -> Probe {
    let Some(v) = &world.validated else {
        return Probe::default();
    };
    let endpoint = |side: Side| match side {
        Side::Source => Some(&mj.spec.source),
        Side::Destination => Some(&mj.spec.destination),
        Side::Report => mj.spec.report.as_ref(),
    };
    crate::probe::probe(&v.transfer, &world.credentials, 2, |side| {
        endpoint(side)
            .and_then(|ep| ep.location().ok())
            .is_some_and(|l| l.checked_by_operator())
    })
    .await
}
