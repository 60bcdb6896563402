//! Faults around the engine in a cluster, each made to happen during a real copy: a job must
//! never stay `Running` for ever nor end `Completed` with something missing. (The first
//! scenarios of the nemesis suite; each prints `FIGURE name=value` lines.)

use std::time::{Duration, Instant};

use ferry_tests::cluster::{backend, real_server_only, Cluster};
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::operator_cluster::{buckets, job_yaml, secret_yaml};

fn phase(mj: &ferry_api::MigrationJob) -> Option<ferry_api::Phase> {
    mj.status.as_ref().and_then(|s| s.phase)
}

/// A shard's progress ConfigMap deleted while its agent runs: the agent cannot save its final
/// state, so it exits to be run again (not 0), and the job ends in a terminal phase with the
/// reason, instead of staying `Running` for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_progress_record_deleted_mid_run_ends_the_job_not_stuck() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "recordgone").await;
    let (_s3, src, dst, _objects) = buckets(120).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    let job = job_yaml(
        "gone",
        &src,
        &dst,
        "creds",
        json!({"requestsPerSecond": 20, "parallelism": {"shards": 1, "concurrency": 2}}),
    );
    c.apply(job).await.unwrap();
    c.wait_for("gone", "some progress", Duration::from_secs(90), |mj| {
        mj.status
            .as_ref()
            .is_some_and(|s| s.progress.counters.objects_copied >= 5)
    })
    .await;
    let cms: Api<ConfigMap> = c.api();
    cms.delete("gone-shard-0", &DeleteParams::default())
        .await
        .unwrap();
    let start = Instant::now();
    let mj = c
        .wait_for("gone", "a terminal phase", Duration::from_secs(240), |mj| {
            phase(mj).is_some_and(|p| p.is_terminal())
        })
        .await;
    let msg = mj
        .status
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    eprintln!("ended {:?} after {:?}: {msg}", phase(&mj), start.elapsed());
    assert_eq!(phase(&mj), Some(ferry_api::Phase::Failed), "{msg}");
    assert!(
        msg.contains("agents gave up") || msg.contains("saved no final state"),
        "{msg}"
    );
    eprintln!("FIGURE nemesis_record_deleted_stuck_jobs=0");
    c.finish().await;
}

/// Pods the Job controller cannot create (a ResourceQuota of 0 pods, as a quota or an
/// admission policy would): the job says so with the Job controller's own reason, as a
/// Degraded condition and a Warning, instead of `Running` with nothing said. Real API server
/// only (the stand-in has no Job controller of its own).
#[tokio::test(flavor = "multi_thread")]
async fn pods_that_cannot_be_created_are_said() {
    let Some(b) = backend() else { return };
    if !real_server_only(&b, "pods_that_cannot_be_created_are_said") {
        return;
    }
    let c = Cluster::start(b, "quota").await;
    let (_s3, src, dst, _objects) = buckets(10).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    // Suspended: the planner runs, the agents' Job is made without pods; then the quota.
    c.apply(job_yaml(
        "capped",
        &src,
        &dst,
        "creds",
        json!({"suspend": true}),
    ))
    .await
    .unwrap();
    c.wait_for("capped", "Paused", Duration::from_secs(90), |mj| {
        phase(mj) == Some(ferry_api::Phase::Paused)
    })
    .await;
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}),
    )
    .unwrap();
    c.api::<ResourceQuota>()
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.apply(job_yaml(
        "capped",
        &src,
        &dst,
        "creds",
        json!({"suspend": false}),
    ))
    .await
    .unwrap();
    let mj = c
        .wait_for("capped", "PodsNotRunning", Duration::from_secs(120), |mj| {
            mj.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Degraded" && c.reason == "PodsNotRunning")
            })
        })
        .await;
    let cond = mj
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    eprintln!("{}", cond.message);
    assert!(cond.message.contains("quota"), "{}", cond.message);
    let events = c.events_of("capped").await;
    assert!(
        events
            .iter()
            .any(|e| e.type_ == "Warning" && e.reason == "PodsNotRunning"),
        "{events:?}"
    );
    c.finish().await;
}

/// A leader paused (SIGSTOP: a stalled node, a long pause) loses the Lease to the standby,
/// which takes it only after seeing it unchanged for its whole duration; woken (SIGCONT), the
/// old leader stops acting at once instead of going on as a second leader. The job completes
/// with one agents' Job.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_stops_when_it_wakes() {
    let Some(b) = backend() else { return };
    let mut c = Cluster::start(b, "pausedleader").await;
    c.start_controller("standby", &[]);
    let (_s3, src, dst, objects) = buckets(200).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(job_yaml(
        "paused",
        &src,
        &dst,
        "creds",
        json!({"requestsPerSecond": 10}),
    ))
    .await
    .unwrap();
    c.wait_for("paused", "Running", Duration::from_secs(60), |mj| {
        phase(mj) == Some(ferry_api::Phase::Running)
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = c.api();
    let holder = |l: k8s_openapi::api::coordination::v1::Lease| {
        l.spec.and_then(|s| s.holder_identity).unwrap_or_default()
    };
    // Either replica may have won the Lease (they start together): pause the one that did.
    let leader = holder(leases.get("ferry-controller").await.unwrap());
    let standby = if leader == "e2e" { "standby" } else { "e2e" };
    assert!(leader == "e2e" || leader == "standby", "holder {leader:?}");
    c.signal_controller(&leader, "STOP");
    let paused = Instant::now();
    while holder(leases.get("ferry-controller").await.unwrap()) != standby {
        assert!(
            paused.elapsed() < Duration::from_secs(60),
            "the standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The standby counts the Lease's 15 s from when it first saw the last renewal, which
    // came a renewal period (5 s, longer on a loaded machine) before the pause at most.
    let took_over = paused.elapsed();
    assert!(
        took_over >= Duration::from_secs(5),
        "taken after {took_over:?}: before the Lease's duration"
    );
    c.signal_controller(&leader, "CONT");
    let woke = Instant::now();
    let exit = loop {
        if let Some(st) = c.controller_exit(&leader) {
            break st;
        }
        assert!(
            woke.elapsed() < Duration::from_secs(15),
            "the old leader goes on after waking"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "standby took over after {took_over:?}; the woken leader exited after {:?} ({exit})",
        woke.elapsed()
    );
    let mj = c
        .wait_for("paused", "Completed", Duration::from_secs(120), |mj| {
            phase(mj) == Some(ferry_api::Phase::Completed)
        })
        .await;
    assert_eq!(
        mj.status.unwrap().progress.counters.objects_copied,
        objects.len() as u64
    );
    assert_eq!(c.agents.jobs_created().len(), 1, "one agents' Job");
    eprintln!("FIGURE nemesis_paused_leader_second_leaders=0");
    c.finish().await;
}
