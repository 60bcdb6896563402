//! What the controller observes of a MigrationJob's world before deciding: its Secrets, its
//! plan, its agents' Job and progress records (from the ConfigMap cache), the live limits its
//! agents are told, planning, the queue;
//! and, when the decision asks for it, both endpoints.

use ferry_api::{
    validate, DeletesState, JobPlan, MigrationJob, RollbackState, ShardProgress, Stage,
    ValidatedSpec, APPROVE_DELETES_ANNOTATION, ROLLBACK_ANNOTATION,
};
use ferry_k8s::limits_configmap::limits_of;
use ferry_k8s::names::{
    job_name, limits_name, plan_name, planner_name, shard_name, JOB_LABEL, PLAN_KEY,
};
use ferry_k8s::plan_configmap::{collect_progress_of, digest, outcome_of};
use ferry_k8s::progress_configmap::record_of;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::decide::{AgentJob, Observed, Planning, PriceTables, RETRY_ANNOTATION};
use crate::context::{Context, Error};

/// The namespace label that lets the jobs of a namespace use ambient credentials (the pods'
/// own cloud identity) for an S3 side without a Secret.
pub const AMBIENT_LABEL: &str = "ferry.dev/ambient-credentials";

/// What was observed, with what the steps need besides the decision's inputs.
pub struct World {
    pub observed: Observed,
    /// The spec, validated (None when it is not valid: the decision says why).
    pub validated: Option<ValidatedSpec>,
    /// The stored plan of the current spec (of any attempt: a retry builds on it).
    pub plan: Option<JobPlan>,
    /// The SHA-256 of `plan` as stored: the agents refuse a plan that differs.
    pub plan_digest: Option<String>,
    /// The plan ConfigMap's resourceVersion, when it exists (and is the job's own): writes
    /// to it are made on that version only.
    pub plan_version: Option<String>,
    /// The limits ConfigMap's resourceVersion, when it exists (and is the job's own): the
    /// limits are written on that version only.
    pub limits_version: Option<String>,
    /// The uid of the planner's Job, when one exists (and is the job's own).
    pub planner: Option<String>,
    /// The uid of the agents' Job, when one exists (and is the job's own).
    pub agents: Option<String>,
}

/// Whether `meta` names `uid` as its controller owner.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// What to say about an object named like a child that `uid` does not own.
pub fn taken(kind: &str, meta: &ObjectMeta) -> String {
    let name = meta.name.clone().unwrap_or_default();
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match owner {
        Some(o) if o.kind == "MigrationJob" => format!(
            "{kind} {name} belongs to another MigrationJob {} (uid {}), probably a deleted one \
             whose objects are being removed: waiting; nothing of it is used or changed",
            o.name, o.uid
        ),
        _ => format!(
            "{kind} {name} already exists and is not this MigrationJob's: Ferry neither uses, \
             changes nor deletes it; rename the job or remove that object"
        ),
    }
}

pub async fn observe(mj: &MigrationJob, ctx: &Context) -> Result<World, Error> {
    let ns = mj.namespace().unwrap_or_default();
    let name = mj.name_any();
    let uid = mj.uid().unwrap_or_default();
    let validated = validate(&mj.spec).ok();
    let mut name_taken = None;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // The planner's Job is read before the plan ConfigMap: a planner that has ended has
    // stored its answer already, so a finished planner without an answer did fail.
    let planner = match jobs.get_opt(&planner_name(&name)).await? {
        Some(j) if !owned_by(&j.metadata, &uid) => {
            name_taken = Some(taken("Job", &j.metadata));
            None
        }
        other => other,
    };
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let plan_cm = match cms.get_opt(&plan_name(&name)).await? {
        Some(cm) if !owned_by(&cm.metadata, &uid) => {
            name_taken.get_or_insert_with(|| taken("ConfigMap", &cm.metadata));
            None
        }
        other => other,
    };
    let limits_cm = match cms.get_opt(&limits_name(&name)).await? {
        Some(cm) if !owned_by(&cm.metadata, &uid) => {
            name_taken.get_or_insert_with(|| taken("ConfigMap", &cm.metadata));
            None
        }
        other => other,
    };
    let hash = validated.as_ref().map(|v| v.spec_hash.clone());
    let plan_text = plan_cm
        .as_ref()
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get(PLAN_KEY))
        .cloned();
    // Only a plan of this job and spec whose sides are the ones the operator asked for (the
    // ConfigMap sits in the tenant's namespace: a plan edited there is not run).
    let plan = plan_text
        .as_deref()
        .and_then(|j| serde_json::from_str::<JobPlan>(j).ok())
        .filter(|p| Some(&p.spec_hash) == hash.as_ref() && p.uid == uid)
        .filter(|p| {
            let ours = validated
                .as_ref()
                .is_some_and(|v| super::build::plan_is_of(mj, v, p));
            if !ours {
                tracing::warn!(namespace = %ns, job = %name, "the stored plan is not the one asked for (edited in its ConfigMap?): not run");
            }
            ours
        });
    let outcome = plan_cm
        .as_ref()
        .and_then(outcome_of)
        .filter(|o| hash.as_ref().is_some_and(|h| o.is_for(&uid, h)));
    let current = plan.as_ref().filter(|p| is_current(mj, p));
    let agents = match jobs.get_opt(&job_name(&name)).await? {
        Some(j) if !owned_by(&j.metadata, &uid) => {
            name_taken.get_or_insert_with(|| taken("Job", &j.metadata));
            None
        }
        other => other,
    };
    ctx.configmaps
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    // Only the records of this plan's shards count, in ConfigMaps this job owns (a record
    // left by an earlier attempt, by a plan made again, or by a deleted job of the same
    // name is stale even when the cache has not yet seen it reset).
    let shards = current.map_or_else(Vec::new, |plan| {
        (0..plan.shards.len())
            .map(|i| {
                ctx.configmaps
                    .get(&ObjectRef::new(&shard_name(&name, i as u32)).within(&ns))
                    .filter(|cm| owned_by(&cm.metadata, &uid))
                    .and_then(|cm| record_of(&cm))
                    .and_then(|p| of_plan(p, plan, i))
            })
            .collect()
    });
    let (planning, secret_problems, probe) = match (&outcome, &planner) {
        (Some(o), _) => (
            Planning::Ended {
                at: o.at.clone(),
                message: o.error.clone(),
            },
            o.secret_problems.clone(),
            o.probe.clone(),
        ),
        (None, Some(j)) => (planner_state(j), vec![], None),
        (None, None) => (Planning::Idle, vec![], None),
    };
    let key = (ns.clone(), name.clone());
    let observed = Observed {
        secret_problems,
        probe,
        refusals: refusals(mj, ctx).await?,
        name_taken,
        plan_ready: current.is_some(),
        planning,
        job: match &agents {
            Some(j) => Some(AgentJob {
                pods_problem: pods_problem(ctx, &ns, &name, j).await?,
                ..agent_job(j)
            }),
            None => None,
        },
        shards,
        running_elsewhere: ctx.admission.running_besides(&key),
        max_running: ctx.args.max_running,
        running_in_namespace: ctx.admission.running_in_namespace_besides(&key),
        max_running_per_namespace: ctx.args.max_running_per_namespace,
        retry_token: mj.annotations().get(RETRY_ANNOTATION).cloned(),
        rollback_token: mj.annotations().get(ROLLBACK_ANNOTATION).cloned(),
        stored_plan: plan.is_some(),
        report: current.map(JobPlan::report_location),
        // The outcome's figures, else the planner's progress while it collects (the key is
        // dropped with the outcome when a new request is made).
        collect: match &outcome {
            Some(o) => o.collect.clone(),
            None => plan_cm.as_ref().and_then(collect_progress_of),
        },
        approval: approval_of(mj, ctx).await?,
        limits: limits_cm.as_ref().and_then(limits_of),
        price_tables: price_tables(mj, &cms).await?,
        now: now(),
    };
    Ok(World {
        observed,
        validated,
        plan_digest: plan
            .as_ref()
            .and(plan_text.as_deref())
            .map(|t| digest(t.as_bytes())),
        plan,
        plan_version: plan_cm.and_then(|cm| cm.metadata.resource_version),
        limits_version: limits_cm.and_then(|cm| cm.metadata.resource_version),
        planner: planner.and_then(|j| j.metadata.uid),
        agents: agents.and_then(|j| j.metadata.uid),
    })
}

/// The Job's condition of type `kind` (`Complete`, `Failed`), when it holds.
fn job_condition<'a>(j: &'a Job, kind: &str) -> Option<&'a JobCondition> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Where a planner's Job without an answer stands: under way, or failed (deadline, memory,
/// image: the Job's condition says).
fn planner_state(j: &Job) -> Planning {
    let ended = job_condition(j, "Failed").or_else(|| job_condition(j, "Complete"));
    match ended {
        None => Planning::Running,
        Some(c) if c.type_ == "Complete" => Planning::Idle, // it answered an older request
        Some(c) => Planning::Ended {
            at: c
                .last_transition_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(now),
            message: Some(format!(
                "the planner pod failed ({}): {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )),
        },
    }
}

/// What the cluster refuses of the spec: a filesystem side without a volume (the agents'
/// image is not the user's data), and sides without a Secret (which would use the pods' own
/// cloud identity) unless allowed cluster-wide or by the namespace's label.
async fn refusals(mj: &MigrationJob, ctx: &Context) -> Result<Vec<String>, Error> {
    // Names too long for the children (a job stored before the schema refused them).
    let mut out: Vec<String> = ferry_api::job_name_problems(&mj.name_any())
        .iter()
        .map(|p| p.to_string())
        .collect();
    out.extend(super::build::volume_refusals(mj));
    if let Ok(v) = validate(&mj.spec) {
        out.extend(super::build::source_refusals(&v));
    }
    let ambient = super::build::ambient_sides(mj);
    if !ambient.is_empty() && !ctx.args.allow_ambient_credentials {
        let ns = mj.namespace().unwrap_or_default();
        let allowed = Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&ns)
            .await?
            .is_some_and(|n| n.labels().get(AMBIENT_LABEL).is_some_and(|v| v == "true"));
        if !allowed {
            for field in ambient {
                out.push(format!(
                    "{field}: no credentialsSecretRef; using the pods' own cloud identity \
                     (ambient credentials) is not allowed here (a cluster administrator can \
                     allow it for namespace {ns} with the label {AMBIENT_LABEL}=true, or for \
                     the cluster with the chart value allowAmbientCredentials)"
                ));
            }
        }
    }
    Ok(out)
}

/// The price tables of `spec.pricing.configMapRef` (a dry run's estimate, a copy's cost),
/// read in the job's own namespace (never another's); None when the job names none.
async fn price_tables(
    mj: &MigrationJob,
    cms: &Api<ConfigMap>,
) -> Result<Option<PriceTables>, Error> {
    let Some(r) = mj
        .spec
        .pricing
        .as_ref()
        .and_then(|p| p.config_map_ref.as_ref())
    else {
        return Ok(None);
    };
    let key = r.key.as_deref().unwrap_or(ferry_api::pricing::DEFAULT_KEY);
    let text = cms
        .get_opt(&r.name)
        .await?
        .and_then(|cm| cm.data)
        .and_then(|mut d| d.remove(key));
    Ok(Some(match text {
        Some(t) => PriceTables::Found(t),
        None => PriceTables::Missing(format!(
            "spec.pricing.configMapRef: no ConfigMap {} with the key {key} in the job's namespace",
            r.name
        )),
    }))
}

/// The stage the job is in: the rollback stage while a rollback runs; the delete stage once
/// the guard (or an approval) let it start.
pub fn stage_of(mj: &MigrationJob) -> Stage {
    let status = mj.status.as_ref();
    let rolling_back = status
        .and_then(|s| s.rollback.as_ref())
        .is_some_and(|r| r.state == RollbackState::RollingBack);
    let deleting = status
        .and_then(|s| s.deletes.as_ref())
        .is_some_and(|d| d.state == DeletesState::Deleting);
    if rolling_back {
        Stage::Rollback
    } else if deleting {
        Stage::Delete
    } else {
        Stage::Copy
    }
}

/// Whether `plan` is the one the job runs now: of its attempt and stage, and, in the rollback
/// stage, of the rollback asked last.
pub fn is_current(mj: &MigrationJob, plan: &JobPlan) -> bool {
    let status = mj.status.as_ref();
    let attempt = status.map_or(0, |s| s.attempt);
    let stage = stage_of(mj);
    let token = status
        .and_then(|s| s.rollback.as_ref())
        .filter(|_| stage == Stage::Rollback)
        .and_then(|r| r.token.as_ref());
    plan.attempt == attempt && plan.stage == stage && plan.rollback_token.as_ref() == token
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
    let failed = job_condition(j, "Failed");
    let completed_at = job_condition(j, "Complete")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string());
    AgentJob {
        suspended,
        failed: failed.is_some(),
        failed_message: failed.and_then(|c| c.message.clone()),
        pods_problem: None,
        completed_at,
        deleting_since: j
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
    }
}

/// The container waiting reasons that mean a pod will not run by itself.
const STUCK: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Why the pods of the agents' Job `j` do not run, if they do not: a container that cannot
/// start (its image, its Secret reference), a pod that cannot be scheduled, or pods the Job
/// controller could not create (quota, admission: its FailedCreate Events).
async fn pods_problem(
    ctx: &Context,
    ns: &str,
    name: &str,
    j: &Job,
) -> Result<Option<String>, Error> {
    let st = j.status.clone().unwrap_or_default();
    let ended = job_condition(j, "Complete").is_some() || job_condition(j, "Failed").is_some();
    let suspended = j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
    if ended || suspended || st.ready.unwrap_or(0) > 0 {
        return Ok(None);
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(&format!("{JOB_LABEL}={name}"));
    for pod in pods.list(&lp).await?.items {
        let pst = pod.status.unwrap_or_default();
        for cs in pst.container_statuses.iter().flatten() {
            if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.clone().unwrap_or_default();
                if STUCK.contains(&reason.as_str()) {
                    return Ok(Some(format!(
                        "pod {}: {reason}: {}",
                        pod.metadata.name.unwrap_or_default(),
                        w.message.clone().unwrap_or_default()
                    )));
                }
            }
        }
        for c in pst.conditions.iter().flatten() {
            if c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
            {
                return Ok(Some(format!(
                    "pod {}: cannot be scheduled: {}",
                    pod.metadata.name.unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )));
            }
        }
    }
    if st.active.unwrap_or(0) == 0 {
        // No pod exists: the Job controller's FailedCreate Events say why (a quota, an
        // admission policy such as Pod Security).
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(ctx.client.clone(), ns);
        let lp = kube::api::ListParams::default().fields(&format!(
            "involvedObject.kind=Job,involvedObject.name={},reason=FailedCreate",
            job_name(name)
        ));
        let latest = events
            .list(&lp)
            .await?
            .items
            .into_iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
        if let Some(e) = latest {
            return Ok(Some(format!(
                "the agents' pods cannot be created: {}",
                e.message.unwrap_or_default()
            )));
        }
    }
    Ok(None)
}
