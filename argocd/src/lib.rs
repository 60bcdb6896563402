//! Argo CD health checks for Ferry's resources (`resource_customizations/ferry.dev/<Kind>/`,
//! the layout of Argo CD's own `resource_customizations`).
//!
//! This crate builds the checks' status fixtures (`testdata/*.yaml`) with Ferry's API types
//! and its status code (the MigrationJob status is folded from shard progress records by
//! [`ferry_api::aggregate::aggregate`], as the operator does), so the Lua is tested against
//! exactly what the operator writes. `tests/health.rs` compares the committed fixtures with
//! these and runs the Lua over them.

use ferry_api::aggregate::aggregate;
use ferry_api::{
    BucketSync, BucketSyncStatus, Condition, DeletesState, DeletesStatus, ErrorSample,
    FailureClass, MigrationJob, MigrationJobStatus, Phase, RunSummary, ShardProgress, ShardState,
    SyncPhase, Totals,
};
use serde_json::{json, Value};

/// One fixture: its file name in `testdata/` (without `.yaml`) and the object.
pub struct Fixture {
    pub name: &'static str,
    pub object: Value,
}

fn fixture(name: &'static str, object: Value) -> Fixture {
    Fixture { name, object }
}

const START: &str = "2026-12-03T09:00:00Z";
const END: &str = "2026-12-03T09:20:00Z";

fn spec(extra: Value) -> Value {
    let side = |bucket: &str, secret: &str| {
        json!({"s3": {"endpoint": "https://s3.us-east-1.amazonaws.com", "region": "us-east-1",
                      "bucket": bucket, "credentialsSecretRef": {"name": secret}}})
    };
    let mut spec = json!({"source": side("legacy", "aws-creds"),
                          "destination": side("photos", "r2-creds"),
                          "parallelism": {"shards": 2}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    spec
}

/// A MigrationJob `photos` at `generation` with this spec (decoded into the real type).
fn job(generation: i64, extra_spec: Value) -> MigrationJob {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
        "metadata": {"name": "photos", "namespace": "media", "generation": generation},
        "spec": spec(extra_spec),
    }))
    .expect("a valid MigrationJob")
}

/// A shard's progress record: `done` of 500 objects of 1 MiB each, `failed` of them failed.
fn shard(index: u32, state: ShardState, done: u64, failed: u64) -> ShardProgress {
    let mut s = ShardProgress {
        shard: index,
        state,
        listing_complete: true,
        expected: Some(Totals {
            objects: 500,
            bytes: 500 << 20,
        }),
        bytes_per_second: if state == ShardState::Running {
            8 << 20
        } else {
            0
        },
        ..Default::default()
    };
    let c = &mut s.counters;
    (c.objects_total, c.bytes_total) = (500, 500 << 20);
    (c.objects_copied, c.bytes_copied) = (done - failed, (done - failed) << 20);
    (c.objects_failed, c.bytes_failed) = (failed, failed << 20);
    if failed > 0 {
        s.failures_by_class
            .insert(FailureClass::AccessDenied, failed);
        s.first_errors.push(ErrorSample {
            key: "images/2019/locked.jpg".into(),
            class: FailureClass::AccessDenied,
            code: Some("AccessDenied".into()),
            message: "Access Denied".into(),
        });
    }
    s
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, generation: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: START.into(),
        observed_generation: Some(generation),
    }
}

/// The status the operator writes for these shards: folded by the status code, then the
/// fields the reconciler adds.
fn folded(mj: &MigrationJob, shards: &[ShardProgress]) -> MigrationJobStatus {
    let transfer = ferry_api::resolve(&mj.spec.transfer, mj.spec.dry_run, mj.spec.cancel);
    let mut st = aggregate(&transfer, shards, 2);
    st.observed_generation = mj.metadata.generation;
    st.start_time = Some(START.into());
    st.report = Some("s3://photos/.ferry/reports/media/photos/".into());
    if st.phase.is_some_and(Phase::is_terminal) {
        st.completion_time = Some(END.into());
    }
    st
}

fn with_status(mut mj: MigrationJob, st: MigrationJobStatus) -> Value {
    mj.status = Some(st);
    serde_json::to_value(mj).expect("serializes")
}

/// The MigrationJob fixtures.
pub fn migration_jobs() -> Vec<Fixture> {
    let fresh = job(1, json!({}));
    let mut out = vec![fixture("no-status", serde_json::to_value(&fresh).unwrap())];
    let pending = MigrationJobStatus {
        phase: Some(Phase::Pending),
        observed_generation: Some(1),
        message: Some("queued: 10 MigrationJobs are running (maxRunning 10)".into()),
        ..Default::default()
    };
    out.push(fixture("pending", with_status(fresh.clone(), pending)));
    let running = [
        shard(0, ShardState::Running, 200, 0),
        shard(1, ShardState::Running, 220, 0),
    ];
    out.push(fixture(
        "running",
        with_status(fresh.clone(), folded(&fresh, &running)),
    ));
    let done = [
        shard(0, ShardState::Completed, 500, 0),
        shard(1, ShardState::Completed, 500, 0),
    ];
    out.push(fixture(
        "completed",
        with_status(fresh.clone(), folded(&fresh, &done)),
    ));
    // The spec changed (generation 2) and the operator has not acted on it yet.
    let changed = job(2, json!({"bandwidthLimit": "100Mi"}));
    out.push(fixture(
        "spec-changed",
        with_status(changed.clone(), folded(&fresh, &done)),
    ));
    let some_failed = [
        shard(0, ShardState::Completed, 500, 3),
        shard(1, ShardState::Completed, 500, 0),
    ];
    out.push(fixture(
        "partially-completed",
        with_status(fresh.clone(), folded(&fresh, &some_failed)),
    ));
    let strict = job(1, json!({"maxFailures": "0"}));
    out.push(fixture(
        "failed",
        with_status(strict.clone(), folded(&strict, &some_failed)),
    ));
    let suspended = job(2, json!({"suspend": true}));
    let paused = [
        shard(0, ShardState::Paused, 200, 0),
        shard(1, ShardState::Paused, 220, 0),
    ];
    out.push(fixture(
        "paused",
        with_status(suspended.clone(), folded(&suspended, &paused)),
    ));
    let cancel = job(2, json!({"cancel": true}));
    let cancelled = [
        shard(0, ShardState::Cancelled, 200, 0),
        shard(1, ShardState::Cancelled, 220, 0),
    ];
    out.push(fixture(
        "cancelled",
        with_status(cancel.clone(), folded(&cancel, &cancelled)),
    ));
    // Deletes held: the copy is complete, the guard found more candidates than maxDeletes.
    let mirror = job(
        1,
        json!({"deletes": {"policy": "Propagate", "maxDeletes": "10"}}),
    );
    let mut held = folded(&mirror, &done);
    held.deletes = Some(DeletesStatus {
        state: DeletesState::Held,
        candidates: 40,
        candidate_bytes: 40 << 20,
        destination_objects: 1040,
        allowed: 10,
        deleted: 0,
        bytes_deleted: 0,
        kept: 0,
        failed: 0,
        approved: None,
        message: "40 candidates, more than maxDeletes 10: none deleted; approve with the \
                  ferry.dev/approve-deletes annotation"
            .into(),
    });
    out.push(fixture("deletes-held", with_status(mirror, held)));
    // A job the operator cannot make progress on (kstatus: Stalled), still Pending.
    let mut stalled = MigrationJobStatus {
        phase: Some(Phase::Pending),
        observed_generation: Some(1),
        ..Default::default()
    };
    stalled.conditions.push(condition(
        "Stalled",
        "True",
        "SecretNotFound",
        "Secret media/aws-creds not found",
        1,
    ));
    out.push(fixture("stalled", with_status(fresh, stalled)));
    out
}

/// A BucketSync `media` at generation `generation` (decoded into the real type).
fn sync(generation: i64, extra_spec: Value) -> BucketSync {
    let mut extra = json!({"interval": "15m"});
    for (k, v) in extra_spec.as_object().into_iter().flatten() {
        extra[k] = v.clone();
    }
    let s = spec(extra);
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "BucketSync",
        "metadata": {"name": "media", "namespace": "media", "generation": generation},
        "spec": s,
    }))
    .expect("a valid BucketSync")
}

fn run(name: &str, phase: Phase, copied: u64, failed: u64) -> RunSummary {
    RunSummary {
        name: name.into(),
        phase: Some(phase),
        objects_copied: copied,
        objects_deleted: 0,
        objects_up_to_date: 980,
        objects_failed: failed,
        bytes_copied: copied << 20,
        deletes_held: false,
    }
}

fn sync_status(phase: SyncPhase, last_run: Option<RunSummary>) -> BucketSyncStatus {
    BucketSyncStatus {
        phase: Some(phase),
        observed_generation: Some(1),
        last_schedule_time: Some(START.into()),
        last_sync_time: last_run.as_ref().map(|_| END.into()),
        next_sync_time: Some("2026-12-03T09:30:00Z".into()),
        last_run,
        ..Default::default()
    }
}

fn with_sync_status(mut bs: BucketSync, st: BucketSyncStatus) -> Value {
    bs.status = Some(st);
    serde_json::to_value(bs).expect("serializes")
}

/// The BucketSync fixtures.
pub fn bucket_syncs() -> Vec<Fixture> {
    let bs = sync(1, json!({}));
    let ok = run("media-29413500", Phase::Completed, 20, 0);
    let mut out = vec![fixture("no-status", serde_json::to_value(&bs).unwrap())];
    out.push(fixture(
        "idle-before-first-run",
        with_sync_status(bs.clone(), sync_status(SyncPhase::Idle, None)),
    ));
    let mut first = sync_status(SyncPhase::Syncing, None);
    first.active_run = Some("media-29413500".into());
    out.push(fixture("first-run", with_sync_status(bs.clone(), first)));
    let mut idle = sync_status(SyncPhase::Idle, Some(ok.clone()));
    idle.last_successful_sync_time = Some(END.into());
    out.push(fixture("idle", with_sync_status(bs.clone(), idle.clone())));
    let mut syncing = idle.clone();
    syncing.phase = Some(SyncPhase::Syncing);
    syncing.active_run = Some("media-29413515".into());
    out.push(fixture("syncing", with_sync_status(bs.clone(), syncing)));
    let partial = run("media-29413515", Phase::PartiallyCompleted, 17, 3);
    out.push(fixture(
        "last-run-partially-completed",
        with_sync_status(bs.clone(), sync_status(SyncPhase::Idle, Some(partial))),
    ));
    let mut failed = sync_status(
        SyncPhase::Failed,
        Some(run("media-29413515", Phase::Failed, 0, 0)),
    );
    failed.consecutive_failures = 3;
    failed.message = Some("3 runs failed in a row; the last: bad credentials".into());
    out.push(fixture("failed", with_sync_status(bs.clone(), failed)));
    let mut held = run("media-29413515", Phase::Completed, 20, 0);
    held.deletes_held = true;
    out.push(fixture(
        "deletes-held",
        with_sync_status(bs.clone(), sync_status(SyncPhase::Idle, Some(held))),
    ));
    let paused = sync(2, json!({"suspend": true}));
    let mut suspended = idle.clone();
    suspended.phase = Some(SyncPhase::Suspended);
    suspended.observed_generation = Some(2);
    out.push(fixture("suspended", with_sync_status(paused, suspended)));
    out.push(fixture(
        "spec-changed",
        with_sync_status(sync(2, json!({"interval": "5m"})), idle),
    ));
    out
}
