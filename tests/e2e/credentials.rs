//! Credentials that stop working mid-run (issue 13, failure mode 11): a session token past its
//! expiry, or an access key rotated away. No object may be recorded failed for it, the run
//! must stop where it is and say why, and a run with the rotated credentials must go on from
//! the checkpoint. In a cluster the agent exits to be run again, and a pod started
//! again reads the rotated Secret.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_tests::cluster::{backend, Cluster};
use ferry_tests::server::Creds;
use ferry_tests::{small_objects, Fault, FaultProxy, FaultSchedule, Job, Run, Scenario};
use serde_json::json;

use crate::operator_cluster::{buckets, secret_yaml};

/// The expiry is played by the fault proxy for an access key the server takes: moto takes any
/// key; Garage checks them (its refusal of an unknown key would come before any expiry), so
/// these tests run on moto only.
fn on_moto(test: &str) -> bool {
    if ferry_tests::shared_server().is_garage() {
        eprintln!("skipped: {test} needs a server that takes any access key (moto)");
        return false;
    }
    true
}

/// Credentials the test server accepts (moto takes any); the proxy makes the first expire.
fn creds(access_key: &str) -> Creds {
    Creds {
        access_key: access_key.into(),
        secret_key: "ferry-test-secret".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_credentials_stop_the_run_and_rotated_ones_resume_it() {
    if !on_moto("expired_credentials_stop_the_run_and_rotated_ones_resume_it") {
        return;
    }
    const N: usize = 240;
    let t = small_objects("k/", N, 400);
    let sc = Scenario::one_server("expiry")
        .source_tree(&t)
        .source_proxy(FaultSchedule::none())
        .source_side(|s| s.secret_name("src-creds").creds(creds("FERRYOLDKEY")))
        .with("requestsPerSecond", json!(40))
        .with("parallelism", json!({"shards": 1, "concurrency": 4}))
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let mut child = sc.wd.spawn(&sc.job, &["--checkpoint-interval", "0.3"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.list(dst).await.len() < N / 4 {
        assert!(Instant::now() < deadline, "no progress within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "ferry ended early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sc.src_proxy().set_schedule(FaultSchedule {
        expired_access_keys: vec!["FERRYOLDKEY".into()],
        ..FaultSchedule::default()
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ferry did not stop within 60 s of its credentials expiring")
        .unwrap();
    let stopped = Run::from_output(out, Duration::ZERO);
    stopped.assert_exit(1).assert_phase("Paused");
    let msg = stopped.status().message();
    assert!(
        msg.contains("credentials") && msg.contains("ExpiredToken"),
        "the reason is not said: {msg}\n{}",
        stopped.describe()
    );
    assert_eq!(
        stopped.counter("objectsFailed"),
        0,
        "{}",
        stopped.describe()
    );
    let before = stopped.counter("objectsCopied");
    assert!(before < N as u64, "{}", stopped.describe());

    // The Secret rotated: the same job (same Secret name) with the new key goes on.
    sc.src_proxy().clear();
    let rotated = Job::new(
        &sc.name,
        sc.source
            .side()
            .secret_name("src-creds")
            .creds(creds("FERRYNEWKEY")),
        sc.destination.side(),
    )
    .with("parallelism", json!({"shards": 1, "concurrency": 4}));
    let run = sc.wd.run(&rotated, &[]).await;
    run.assert_exit(0).assert_phase("Completed");
    assert_eq!(run.counter("objectsFailed"), 0, "{}", run.describe());
    sc.assert_destination_eq(&t, "destination after the credentials were rotated")
        .await;
    // It went on from the checkpoint: the objects read again are those after it.
    let read_again = sc.src_proxy().object_get_keys().len();
    assert!(
        read_again <= N - before as usize + 8,
        "the second run read {read_again} objects; {before} of {N} were copied before the \
         credentials expired: it did not resume"
    );
    eprintln!(
        "FIGURE credentials_expired objects_failed=0 copied_before={before} read_after_rotation={read_again} of {N}"
    );
}

/// A MigrationJob whose source is read through `proxy` with the Secret `src-creds`, and whose
/// destination is the shared server with the Secret `creds`.
fn job_through(name: &str, proxy: &str, src: &str, dst: &str, rps: u32) -> serde_json::Value {
    let server = ferry_tests::shared_server();
    let side = |endpoint: &str, bucket: &str, secret: &str| json!({"s3": {"endpoint": endpoint, "region": "us-east-1", "bucket": bucket, "forcePathStyle": true, "credentialsSecretRef": {"name": secret}}});
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": name},
           "spec": {"source": side(proxy, src, "src-creds"),
                    "destination": side(&server.endpoint.replace("127.0.0.1", "localhost"), dst, "creds"),
                    "requestsPerSecond": rps,
                    "parallelism": {"shards": 1, "concurrency": 2}}})
}

fn src_secret(access_key: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "src-creds"},
           "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": "ferry-test-secret"}})
}

/// A job named `name` copying `n` objects at `rps` whose source is read through a proxy with
/// the key FERRYOLDKEY, started and past `progress` objects copied.
async fn expiring_job(
    c: &Cluster,
    name: &str,
    n: usize,
    rps: u32,
    progress: u64,
) -> (
    FaultProxy,
    ferry_tests::S3,
    String,
    BTreeMap<String, Vec<u8>>,
) {
    let (s3, src, dst, objects) = buckets(n).await;
    let proxy = FaultProxy::start(
        &ferry_tests::shared_server().endpoint,
        FaultSchedule::none(),
    )
    .await;
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(src_secret("FERRYOLDKEY")).await.unwrap();
    c.apply(job_through(name, &proxy.endpoint(), &src, &dst, rps))
        .await
        .unwrap();
    c.wait_for(name, "some progress", Duration::from_secs(90), |mj| {
        mj.status
            .as_ref()
            .is_some_and(|s| s.progress.counters.objects_copied >= progress)
    })
    .await;
    (proxy, s3, dst, objects)
}

/// The proxy answers ExpiredToken to every request signed with FERRYOLDKEY from now on.
fn expire_old_key(proxy: &FaultProxy) {
    proxy.set_schedule(FaultSchedule {
        expired_access_keys: vec!["FERRYOLDKEY".into()],
        ..FaultSchedule::default()
    });
}

/// In a cluster, a Secret rotated the usual way (the new key written to the Secret, then the
/// old one revoked) is picked up: the agent whose key stops working saves its checkpoint and
/// exits 3, the Job runs its index again in a pod that reads the Secret as it is now, and the
/// job completes with no object failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_is_picked_up_by_the_agents() {
    if !on_moto("a_rotated_secret_is_picked_up_by_the_agents") {
        return;
    }
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "rotate").await;
    let (proxy, s3, dst, objects) = expiring_job(&c, "rotated", 120, 20, 10).await;
    c.apply(src_secret("FERRYNEWKEY")).await.unwrap();
    expire_old_key(&proxy);
    let mj = c
        .wait_for(
            "rotated",
            "a terminal phase",
            Duration::from_secs(180),
            |mj| {
                mj.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
            },
        )
        .await;
    let st = mj.status.clone().unwrap();
    assert_eq!(
        st.phase,
        Some(ferry_api::Phase::Completed),
        "{:?}",
        st.message
    );
    assert_eq!(st.progress.counters.objects_failed, 0);
    for (k, v) in &objects {
        assert_eq!(&s3.get(&dst, k).await, v, "{k} differs at the destination");
    }
    let restarts = c
        .agents
        .exits()
        .iter()
        .filter(|(_, code, _)| *code == 3)
        .count();
    assert!(
        restarts >= 1,
        "no agent exited to be run again: {:?}",
        c.agents.exits()
    );
    let expired = proxy.faults(Fault::Expired);
    assert!(expired >= 1, "the old key was never refused");
    eprintln!("FIGURE credentials_rotated_in_cluster objects_failed=0 agent_restarts={restarts} refused_requests={expired}");
    c.finish().await;
}

/// Credentials that expire and are never rotated: the job says why while its agents are
/// retried (Degraded CredentialsExpired, a Warning), then fails with the server's reason when
/// the Job runs out of retries, instead of failing objects or staying Running.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_that_stay_expired_fail_the_job_with_the_reason() {
    if !on_moto("credentials_that_stay_expired_fail_the_job_with_the_reason") {
        return;
    }
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "expired").await;
    // 10 requests/s: far from done when the key expires.
    let (proxy, _s3, _dst, _objects) = expiring_job(&c, "expired", 400, 10, 5).await;
    expire_old_key(&proxy);
    // The real Job controller waits 10, 20 and 40 s between the index's runs.
    let mj = c
        .wait_for("expired", "Failed", Duration::from_secs(240), |mj| {
            mj.status.as_ref().and_then(|s| s.phase) == Some(ferry_api::Phase::Failed)
        })
        .await;
    let st = mj.status.clone().unwrap();
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("ExpiredToken"),
        "{msg}: {}",
        serde_json::to_string_pretty(&st).unwrap()
    );
    assert_eq!(st.progress.counters.objects_failed, 0, "{msg}");
    let warned = c
        .events_of("expired")
        .await
        .into_iter()
        .any(|e| e.type_ == "Warning" && e.reason == "CredentialsExpired");
    assert!(
        warned,
        "no CredentialsExpired Warning: {:?}",
        c.events_of("expired").await
    );
    eprintln!("FIGURE credentials_expired_in_cluster stuck=0 objects_failed=0 reason_said=1");
    c.finish().await;
}
