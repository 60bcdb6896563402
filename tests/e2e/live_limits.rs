//! Live limits in a cluster (issue 13, failure mode 4): a change of `requestsPerSecond` in a
//! running MigrationJob reaches its running agent (through the job's limits ConfigMap, which
//! the agent watches) and the copy speeds up within seconds, without a restart.
//!
//! Measured from the job's status (objects copied, as the progress records report them every
//! few seconds), over windows with wide margins: the rates differ by a factor of about 50.
//! Runs on the API stand-in, or on a real API server with `FERRY_E2E_KUBECONFIG` (where the
//! agent's watch of its limits ConfigMap goes through real RBAC).

use std::time::{Duration, Instant};

use ferry_tests::cluster::{backend, Cluster};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

use crate::operator_cluster::{buckets, job_yaml, secret_yaml};

/// Objects in the job: at the low rate they would take minutes.
const OBJECTS: usize = 400;
/// The low rate: each object takes a GET and a PUT, so about 2 objects a second.
const SLOW_RPS: u32 = 4;
/// The raised rate: about 100 objects a second.
const FAST_RPS: u32 = 200;
/// The window over which the low rate is measured.
const SLOW_WINDOW: Duration = Duration::from_secs(15);

fn copied(mj: &ferry_api::MigrationJob) -> u64 {
    mj.status
        .as_ref()
        .map_or(0, |s| s.progress.counters.objects_copied)
}

fn phase(mj: &ferry_api::MigrationJob) -> Option<ferry_api::Phase> {
    mj.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raised_request_rate_reaches_the_running_agent_within_seconds() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "live-limits").await;
    let (s3, src, dst, objects) = buckets(OBJECTS).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    let spec = |rps: u32| json!({"requestsPerSecond": rps, "parallelism": {"shards": 1, "concurrency": 8}});
    c.apply(job_yaml("live", &src, &dst, "creds", spec(SLOW_RPS)))
        .await
        .unwrap();
    // The agent runs once a first checkpoint shows copies.
    c.wait_for("live", "the first copies", Duration::from_secs(90), |mj| {
        copied(mj) > 0
    })
    .await;
    let limits: ConfigMap = c.api::<ConfigMap>().get("live-limits").await.unwrap();
    let told = limits.data.unwrap_or_default()["limits.json"].clone();
    assert!(
        told.contains(&format!("\"requestsPerSecond\":{SLOW_RPS}")),
        "the limits ConfigMap holds the spec's rate: {told}"
    );

    // The low rate, measured.
    let start = copied(&c.job("live").await);
    tokio::time::sleep(SLOW_WINDOW).await;
    let slow = copied(&c.job("live").await) - start;
    let slow_rate = slow as f64 / SLOW_WINDOW.as_secs_f64();
    println!(
        "MEASURED live_limits slow: {slow} objects in {}s at {SLOW_RPS} rps = {slow_rate:.1}/s",
        SLOW_WINDOW.as_secs()
    );
    // About 30 at 2 objects a second (each object takes two requests); unlimited would be
    // all of them. The margin covers a checkpoint's worth either side of the window.
    assert!(
        slow < 80,
        "{slow} objects copied in {}s at {SLOW_RPS} requests/s: the rate is not applied",
        SLOW_WINDOW.as_secs()
    );

    // Raised while the agent runs: no new plan, no new pod.
    let before = copied(&c.job("live").await);
    let jobs_before = c.agents.jobs_created();
    let raised = Instant::now();
    c.apply(job_yaml("live", &src, &dst, "creds", spec(FAST_RPS)))
        .await
        .unwrap();
    let left = OBJECTS as u64 - before;
    // At the low rate the rest would take `left / 2` seconds (over 2 minutes).
    let mj = c
        .wait_for(
            "live",
            "Completed at the raised rate",
            Duration::from_secs(45),
            |mj| phase(mj) == Some(ferry_api::Phase::Completed),
        )
        .await;
    let took = raised.elapsed();
    let fast_rate = left as f64 / took.as_secs_f64();
    println!(
        "MEASURED live_limits fast: the last {left} objects in {:.1}s after raising to \
         {FAST_RPS} rps = {fast_rate:.1}/s (including the watch, a checkpoint and the final \
         status); {:.0}x the slow rate",
        took.as_secs_f64(),
        fast_rate / slow_rate.max(0.1)
    );
    assert_eq!(copied(&mj), OBJECTS as u64);
    assert!(
        fast_rate > 3.0 * slow_rate.max(1.0),
        "the rate rose from {slow_rate:.1}/s to {fast_rate:.1}/s only"
    );
    assert_eq!(
        c.agents.jobs_created(),
        jobs_before,
        "the change was taken live: no new agents' Job"
    );
    let told = c.api::<ConfigMap>().get("live-limits").await;
    // Gone with the job's children once it completed, or holding the new rate.
    if let Ok(cm) = told {
        let told = cm.data.unwrap_or_default()["limits.json"].clone();
        assert!(
            told.contains(&format!("\"requestsPerSecond\":{FAST_RPS}")),
            "{told}"
        );
    }
    for (k, v) in &objects {
        assert_eq!(&s3.get(&dst, k).await, v, "{k} differs at the destination");
    }
    c.finish().await;
}
