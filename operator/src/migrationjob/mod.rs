//! The MigrationJob controller: for each job, observe its world ([`observe`]), decide
//! ([`decide`], pure), carry the steps out ([`apply`], with the objects [`build`] makes, pure),
//! and write the status.

pub mod apply;
pub mod build;
pub mod decide;
pub mod observe;

use std::sync::Arc;
use std::time::Duration;

use ferry_api::{MigrationJob, Phase};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalize};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::{Context, Error, FINALIZER};
use decide::{decide, Step};

pub fn error_policy(_: Arc<MigrationJob>, e: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "retrying");
    Action::requeue(Duration::from_secs(15))
}

pub async fn reconcile(mj: Arc<MigrationJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = mj.namespace().unwrap_or_default();
    let api: Api<MigrationJob> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, mj, |ev| async {
        match ev {
            Finalize::Apply(mj) => reconcile_live(&mj, &ctx).await,
            Finalize::Cleanup(mj) => cleanup(&mj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Deleting a MigrationJob stops its agents (they get SIGTERM, checkpoint and abort their
/// multipart uploads); copied data is never touched. Owned children are garbage-collected.
async fn cleanup(mj: &MigrationJob, ctx: &Context) -> Result<Action, Error> {
    ctx.admission.record(&key(mj), false);
    apply::delete_jobs(mj, ctx).await?;
    Ok(Action::await_change())
}

fn key(mj: &MigrationJob) -> (String, String) {
    (mj.namespace().unwrap_or_default(), mj.name_any())
}

async fn reconcile_live(cached: &MigrationJob, ctx: &Context) -> Result<Action, Error> {
    // Decide on the object as it is now, not as the watch cache last saw it: a reconcile
    // woken by a child between our status write and its watch event would otherwise see the
    // old phase and announce the same transition (Event) twice.
    let api: Api<MigrationJob> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(mj) = api.get_opt(&cached.name_any()).await? else {
        ctx.admission.record(&key(cached), false);
        return Ok(Action::await_change());
    };
    let mut world = observe::observe(&mj, ctx).await?;
    let mut d = decide(&mj, &world.observed);
    let starts = d.steps.iter().any(|s| matches!(s, Step::CreateJob { .. }));
    let caps = (ctx.args.max_running, ctx.args.max_running_per_namespace);
    if starts && !ctx.admission.try_admit(&key(&mj), caps.0, caps.1) {
        // Another job took the last slot since we observed: decide again (Queued) shortly.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut applied = carry_out(&api, &mj, &d, &world, ctx).await;
    if let Err(Error::NameTaken(msg)) = applied {
        // A child's name is held by an object the job does not own: say so, touch nothing.
        world.observed.name_taken = Some(msg);
        d = decide(&mj, &world.observed);
        applied = carry_out(&api, &mj, &d, &world, ctx).await;
    }
    // The slot follows the phase in effect: the decided one once written, else the old one
    // (a job whose agents could not be created gives back the slot it was admitted to).
    let phase = match &applied {
        Ok(()) => d.status.phase,
        Err(_) => mj.status.as_ref().and_then(|s| s.phase),
    };
    ctx.admission
        .record(&key(&mj), phase.is_some_and(Phase::is_active));
    applied?;
    Ok(Action::requeue(if d.requeue.is_zero() {
        Duration::from_secs(5)
    } else {
        d.requeue
    }))
}

/// Carries the decision's steps out, then writes its status.
async fn carry_out(
    api: &Api<MigrationJob>,
    mj: &MigrationJob,
    d: &decide::Decision,
    world: &observe::World,
    ctx: &Context,
) -> Result<(), Error> {
    for step in &d.steps {
        apply::execute(mj, step, world, ctx).await?;
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
    Ok(())
}
