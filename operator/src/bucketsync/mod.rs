//! The BucketSync controller: observe a sync's runs (the MigrationJobs it owns), decide
//! ([`decide`], pure), carry the steps out, write the status. Every run is an ordinary
//! MigrationJob, reconciled by the MigrationJob controller.

pub mod decide;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_api::bucketsync::RunSummary;
use ferry_api::{
    BucketSync, DeletesState, MigrationJob, MigrationJobSpec, APPROVE_DELETES_ANNOTATION,
};
use ferry_k8s::names::SYNC_LABEL;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::context::{publish_event, Context, Error, MANAGER};
use decide::{Run, SyncObserved, SyncStep, SCHEDULED_ANNOTATION, SYNC_NOW_ANNOTATION};

/// The annotation on a run started by `ferry.dev/sync-now`.
pub const MANUAL_ANNOTATION: &str = "ferry.dev/manual";

pub fn error_policy(_: Arc<BucketSync>, e: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "retrying");
    Action::requeue(Duration::from_secs(15))
}

pub async fn reconcile(cached: Arc<BucketSync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let api: Api<BucketSync> = Api::namespaced(ctx.client.clone(), &ns);
    // Decide on the object as it is now (see the MigrationJob controller).
    let Some(bs) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if bs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // runs are garbage-collected with it
    }
    let mjs: Api<MigrationJob> = Api::namespaced(ctx.client.clone(), &ns);
    let observed = SyncObserved {
        runs: runs_of(&bs, &ctx).await?,
        sync_now: bs.annotations().get(SYNC_NOW_ANNOTATION).cloned(),
        now: Utc::now(),
    };
    let d = decide::decide(&bs, &observed);
    for step in &d.steps {
        execute(&bs, step, &mjs, &ctx).await?;
    }
    if bs.status.as_ref() != Some(&d.status) {
        let replace: json_patch::Patch = serde_json::from_value(json!([
            { "op": "add", "path": "/status", "value": d.status }
        ]))
        .expect("a valid JSON patch");
        api.patch_status(
            &bs.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(replace),
        )
        .await?;
    }
    Ok(Action::requeue(d.requeue))
}

/// The runs this sync owns (labelled with its name and owned by its uid: a MigrationJob that
/// only carries the label is not one of them).
async fn runs_of(bs: &BucketSync, ctx: &Context) -> Result<Vec<Run>, Error> {
    let uid = bs.uid().unwrap_or_default();
    let lp = ListParams::default().labels(&format!("{SYNC_LABEL}={}", bs.name_any()));
    let ns = bs.namespace().unwrap_or_default();
    // One by one: a run that cannot be decoded is left out (and told so), not the sync.
    let list: Vec<MigrationJob> = ctx.runs.list(Some(&ns), &lp).await?;
    Ok(list
        .iter()
        .filter(|mj| mj.owner_references().iter().any(|o| o.uid == uid))
        .map(run_of)
        .collect())
}

fn time(s: Option<&String>) -> Option<DateTime<Utc>> {
    s.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What the schedule needs of one run.
pub fn run_of(mj: &MigrationJob) -> Run {
    let st = mj.status.clone().unwrap_or_default();
    let c = &st.progress.counters;
    let created = mj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| decide::from_k8s(&t.0));
    Run {
        name: mj.name_any(),
        scheduled: time(mj.annotations().get(SCHEDULED_ANNOTATION))
            .or(created)
            .unwrap_or_else(Utc::now),
        phase: st.phase,
        suspended: mj.spec.suspend,
        cancelled: mj.spec.cancel,
        rolling_back: st
            .rollback
            .as_ref()
            .is_some_and(|r| r.state == ferry_api::RollbackState::RollingBack),
        started: time(st.start_time.as_ref()).or(created),
        ended: time(st.completion_time.as_ref()),
        stuck: crate::migrationjob::decide::waits_on_the_world(&st)
            .then(|| st.message.clone().unwrap_or_default()),
        summary: RunSummary {
            name: mj.name_any(),
            phase: st.phase,
            objects_copied: c.objects_copied,
            objects_deleted: c.objects_deleted,
            objects_up_to_date: c.objects_skipped,
            objects_failed: c.objects_failed,
            bytes_copied: c.bytes_copied,
            deletes_held: st
                .deletes
                .as_ref()
                .is_some_and(|d| d.state == DeletesState::Held),
        },
    }
}

/// The MigrationJob of one run: the sync's transfer, owned by the sync, labelled with its name.
pub fn run_job(
    bs: &BucketSync,
    name: &str,
    scheduled: DateTime<Utc>,
    manual: bool,
) -> MigrationJob {
    let mut annotations = BTreeMap::from([(
        SCHEDULED_ANNOTATION.to_string(),
        scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )]);
    if manual {
        annotations.insert(MANUAL_ANNOTATION.into(), "true".into());
    }
    MigrationJob {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: bs.namespace(),
            labels: Some(BTreeMap::from([(SYNC_LABEL.to_string(), bs.name_any())])),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: BucketSync::api_version(&()).into(),
                kind: BucketSync::kind(&()).into(),
                name: bs.name_any(),
                uid: bs.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: MigrationJobSpec {
            transfer: bs.spec.transfer.clone(),
            dry_run: false,
            suspend: bs.spec.suspend,
            cancel: false,
            pricing: None,
            mode: Default::default(),
            inventory: None,
        },
        status: None,
    }
}

async fn execute(
    bs: &BucketSync,
    step: &SyncStep,
    mjs: &Api<MigrationJob>,
    ctx: &Context,
) -> Result<(), Error> {
    match step {
        SyncStep::CreateRun {
            name,
            scheduled,
            manual,
        } => {
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            match mjs
                .create(&pp, &run_job(bs, name, *scheduled, *manual))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // Ours already (a lost status write), or somebody else's: never adopted.
                    let uid = bs.uid().unwrap_or_default();
                    let ours = mjs
                        .get_opt(name)
                        .await?
                        .is_some_and(|mj| mj.owner_references().iter().any(|o| o.uid == uid));
                    if !ours {
                        let msg = format!(
                            "run {name} not started: a MigrationJob of that name exists and is \
                             not this BucketSync's"
                        );
                        publish(bs, ctx, true, ferry_api::Reason::NameTaken, &msg).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        SyncStep::SetRunSuspend { name, suspend } => {
            patch_spec(mjs, name, json!({"spec": {"suspend": suspend}})).await?
        }
        SyncStep::CancelRun { name } => {
            patch_spec(mjs, name, json!({"spec": {"cancel": true}})).await?
        }
        SyncStep::DeleteRun { name } => match mjs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        },
        SyncStep::Event {
            warning,
            reason,
            message,
        } => publish(bs, ctx, *warning, *reason, message).await,
    }
    Ok(())
}

async fn patch_spec(
    mjs: &Api<MigrationJob>,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), Error> {
    match mjs
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn publish(
    bs: &BucketSync,
    ctx: &Context,
    warning: bool,
    reason: ferry_api::Reason,
    msg: &str,
) {
    publish_event(ctx, &bs.object_ref(&()), warning, reason, msg, "Sync").await;
}

/// The approval annotation of the BucketSync that owns `mj`, if any.
pub async fn approval_for(mj: &MigrationJob, ctx: &Context) -> Result<Option<String>, Error> {
    let Some(owner) = mj
        .owner_references()
        .iter()
        .find(|o| o.kind == "BucketSync" && o.controller == Some(true))
    else {
        return Ok(None);
    };
    let api: Api<BucketSync> =
        Api::namespaced(ctx.client.clone(), &mj.namespace().unwrap_or_default());
    Ok(api
        .get_opt(&owner.name)
        .await?
        .filter(|bs| bs.uid().as_deref() == Some(owner.uid.as_str()))
        .and_then(|bs| bs.annotations().get(APPROVE_DELETES_ANNOTATION).cloned()))
}
