//! The nemesis suite (issue 13): faults injected during real copies, on moto and the API
//! stand-in (or a real API server with `FERRY_E2E_KUBECONFIG`), each scenario judged by one
//! checker (`ferry_tests::nemesis`): every selected key at the destination with the bytes of
//! one complete source version, the reports a partition of the keys with each key once, the
//! counters equal to the reports, the job terminal within a bound after its agents exited,
//! nothing written outside the prefix and nothing foreign touched.
//!
//! Scenarios: agents SIGKILLed during a sharded cluster copy (right after a report segment was
//! written, right after a progress write, between the parts of a multipart upload, and at
//! random times), the operator killed and restarted mid-reconcile, source objects overwritten
//! and deleted during a `ferry run` copy (with a SIGKILL and resume), a 503 storm at the
//! destination, a progress record deleted mid-run, a quota of 0 pods, a paused leader, API
//! outages of 5 s (the stand-in SIGSTOPped) as the agents start and as they finish, and the
//! destination bucket deleted mid-run.
//!
//! The kill points are found from outside (the counting proxy sees a segment PUT or a part
//! PUT; a progress ConfigMap's resourceVersion moves) and the agent killed at once: close to
//! the point, not exactly at it (the agent runs on meanwhile, by a few milliseconds). Times
//! and choices come from a seed printed at the start (`FERRY_NEMESIS_SEED` replays it).
//! Bounded for CI; `FERRY_NEMESIS_ROUNDS=N` runs the kill scenarios N times (new buckets,
//! new seed stream) for a longer local run.
//!
//! Each scenario prints `FIGURE nemesis_<scenario>_<figure>=<value>` lines and the running
//! totals of the process (`FIGURE nemesis_total ...`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_tests::cluster::{backend, real_server_only, Cluster};
use ferry_tests::nemesis::{self, Check, Foreign, Rng, SourceHistory, TERMINAL_BOUND};
use ferry_tests::{
    bytes, shared_server, small_objects, FaultProxy, FaultSchedule, Scenario, Tree, MI, S3,
};
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::operator_cluster::{buckets, job_yaml, secret_yaml};

fn phase(mj: &ferry_api::MigrationJob) -> Option<ferry_api::Phase> {
    mj.status.as_ref().and_then(|s| s.phase)
}

/// The destination prefix of the nemesis jobs (foreign objects are seeded under and beside it).
const DST_PREFIX: &str = "copy/";

/// Small objects `k/NNNN` and a few multipart ones (`k/NNNN-mp`, 6 to 11 MiB: two or three
/// 5 MiB parts) spread over the key space, so every shard of three has some.
fn source_tree(small: usize, multipart: &[usize]) -> Tree {
    let mut t = small_objects("k/", small, 4000);
    for (n, i) in multipart.iter().enumerate() {
        let key = format!("k/{i:04}-mp");
        t.insert(key, bytes(1000 + *i as u64, 6 * MI + n * 5 * MI / 2 + 17));
    }
    t
}

/// A MigrationJob from `src` (the shared server, no prefix) to `dst` under [`DST_PREFIX`],
/// reached at `dst_endpoint` (a counting proxy: another endpoint, so the agents stream).
fn cluster_job(name: &str, src: &str, dst_endpoint: &str, dst: &str, extra: Value) -> Value {
    let side = |endpoint: &str, bucket: &str, prefix: &str| json!({"s3": {"endpoint": endpoint, "region": "us-east-1", "bucket": bucket, "prefix": prefix, "forcePathStyle": true, "credentialsSecretRef": {"name": "creds"}}});
    let mut spec = json!({
        "source": side(&shared_server().endpoint, src, ""),
        "destination": side(dst_endpoint, dst, DST_PREFIX),
        "parallelism": {"shards": 3, "concurrency": 4},
        "multipart": ferry_tests::fixtures::small_multipart(),
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": name}, "spec": spec})
}

/// A cluster copy's buckets: the source filled with `tree`, an empty destination with the
/// foreign seeds, and a counting proxy in front of the destination.
struct Copy {
    s3: S3,
    src: String,
    dst: String,
    proxy: FaultProxy,
    foreign: Foreign,
}

async fn cluster_copy(tree: &Tree) -> Copy {
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = s3.create_bucket("nem-src").await;
    let dst = s3.create_bucket("nem-dst").await;
    s3.put_all(&src, tree).await;
    let foreign = Foreign::seed(&s3, &dst, DST_PREFIX).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultSchedule::none()).await;
    Copy {
        s3,
        src,
        dst,
        proxy,
        foreign,
    }
}

/// A [`cluster_copy`] of `tree` and its job `name` (with `extra` in its spec) applied; the
/// source's history (no writes during the run).
async fn start_copy(c: &Cluster, name: &str, tree: &Tree, extra: Value) -> (Copy, SourceHistory) {
    let cp = cluster_copy(tree).await;
    let job = cluster_job(name, &cp.src, &cp.proxy.endpoint(), &cp.dst, extra);
    c.apply(job).await.unwrap();
    (cp, SourceHistory::of_tree(tree))
}

/// The pod-name prefix of a job's agents (`<job>-agents-<index>-…`, on the stand-in and on a
/// real API server alike).
fn agents_of(job: &str) -> String {
    format!("{job}-agents-")
}

fn index_of(job: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(&agents_of(job))?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Polls the job until it shows a terminal phase. Returns it and how long after its agents'
/// last exit that was seen; None when it was not terminal within [`TERMINAL_BOUND`] (and a
/// little) of its agents all being gone, or within `overall` (stuck).
async fn wait_end(
    c: &Cluster,
    name: &str,
    overall: Duration,
) -> (ferry_api::MigrationJob, Option<Duration>) {
    let start = Instant::now();
    let pods = agents_of(name);
    let mut idle_since: Option<Instant> = None;
    loop {
        let mj = c.job(name).await;
        let last_exit = c
            .agents
            .exits()
            .into_iter()
            .filter(|(p, _, _)| p.starts_with(&pods))
            .map(|(_, _, t)| t)
            .max();
        if phase(&mj).is_some_and(|p| p.is_terminal()) {
            return (mj, Some(last_exit.map(|t| t.elapsed()).unwrap_or_default()));
        }
        if c.agents
            .running_names()
            .iter()
            .any(|p| p.starts_with(&pods))
        {
            idle_since = None;
        } else {
            idle_since.get_or_insert_with(Instant::now);
        }
        let idle_too_long =
            idle_since.is_some_and(|t| t.elapsed() > TERMINAL_BOUND + Duration::from_secs(5));
        if idle_too_long || start.elapsed() > overall {
            eprintln!(
                "{name} not terminal: status {}\nlogs:\n{}",
                serde_json::to_string(&mj.status).unwrap_or_default(),
                c.logs()
            );
            return (mj, None);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn status_json(mj: &ferry_api::MigrationJob) -> Value {
    serde_json::to_value(&mj.status).unwrap_or_default()
}

/// The checker on a cluster copy of [`cluster_copy`] (prefix, foreign seeds, counted writes).
async fn check_copy(
    c: &Cluster,
    cp: &Copy,
    name: &str,
    history: &SourceHistory,
    mj: &ferry_api::MigrationJob,
    terminal_after: Option<Duration>,
    kills: u64,
) -> nemesis::Figures {
    let writes = cp.proxy.records();
    Check {
        s3: &cp.s3,
        bucket: &cp.dst,
        src_prefix: "",
        dst_prefix: DST_PREFIX,
        namespace: &c.ns,
        name,
        source: history,
        status: &status_json(mj),
        terminal_after,
        foreign: Some(&cp.foreign),
        writes: Some(&writes),
        kills,
    }
    .run()
    .await
}

/// The checker on a job between the plain buckets of `operator_cluster::buckets` (no prefix,
/// no foreign seeds, no proxy).
async fn check_buckets(
    c: &Cluster,
    s3: &S3,
    dst: &str,
    name: &str,
    objects: &Tree,
    mj: &ferry_api::MigrationJob,
    terminal_after: Option<Duration>,
) -> nemesis::Figures {
    Check {
        s3,
        bucket: dst,
        src_prefix: "",
        dst_prefix: "",
        namespace: &c.ns,
        name,
        source: &SourceHistory::of_tree(objects),
        status: &status_json(mj),
        terminal_after,
        foreign: None,
        writes: None,
        kills: 0,
    }
    .run()
    .await
}

/// The checker on a `ferry run` scenario (destination under [`DST_PREFIX`] behind a proxy).
async fn check_run(
    sc: &Scenario<'_>,
    foreign: &Foreign,
    history: &SourceHistory,
    run: &ferry_tests::Run,
    kills: u64,
) -> nemesis::Figures {
    let writes = sc.dst_proxy().records();
    let status = run.status.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    Check {
        s3: sc.dst_s3(),
        bucket: sc.dst_bucket(),
        src_prefix: "",
        dst_prefix: DST_PREFIX,
        namespace: "default",
        name: &sc.name,
        source: history,
        status: &status,
        // `ferry run` ends with its agents (tasks): it printed its final status or nothing.
        terminal_after: run.code.map(|_| Duration::ZERO),
        foreign: Some(foreign),
        writes: Some(&writes),
        kills,
    }
    .run()
    .await
}

/// Where an agent is killed.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// Right after the proxy saw a manifest segment written (before or around the checkpoint
    /// that covers it).
    AfterReportFlush,
    /// Right after a shard's progress ConfigMap changed (a checkpoint saved).
    AfterProgressWrite,
    /// Right after a part of a multipart upload was written (before the next part or the
    /// completion).
    MidMultipart,
    /// At a seeded random time.
    Random,
}

/// The shard ranges of the job's plan: (index, after, until).
async fn plan_ranges(c: &Cluster, job: &str) -> Vec<(u32, Option<String>, Option<String>)> {
    let Ok(cm) = c.api::<ConfigMap>().get(&format!("{job}-plan")).await else {
        return Vec::new();
    };
    let plan: Value = cm
        .data
        .and_then(|d| d.get("plan.json").cloned())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    plan["shards"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let b = |f: &str| s[f].as_str().map(str::to_string);
            (
                s["index"].as_u64().unwrap_or(0) as u32,
                b("after"),
                b("until"),
            )
        })
        .collect()
}

fn shard_of(ranges: &[(u32, Option<String>, Option<String>)], key: &str) -> Option<u32> {
    ranges.iter().find_map(|(i, after, until)| {
        let above = after.as_deref().is_none_or(|a| key > a);
        let below = until.as_deref().is_none_or(|u| key <= u);
        (above && below).then_some(*i)
    })
}

/// Waits for `point` on a shard whose kills are below the cap, and SIGKILLs that shard's
/// agent. Returns (index, pod, what was seen), or None when the point did not come within
/// `within` (the caller then kills at random).
async fn kill_at(
    c: &Cluster,
    job: &str,
    proxy: &FaultProxy,
    point: Point,
    may_kill: &dyn Fn(u32) -> bool,
    rng: &mut Rng,
    within: Duration,
) -> Option<(u32, String, String)> {
    let start = Instant::now();
    let mut seen_seq = proxy.records().last().map(|r| r.seq).unwrap_or(0);
    let mut versions: BTreeMap<u32, String> = BTreeMap::new();
    let ranges = plan_ranges(c, job).await;
    if matches!(point, Point::Random) {
        tokio::time::sleep(rng.millis(300, 2500)).await;
    }
    while start.elapsed() < within {
        let running: Vec<String> = c
            .agents
            .running_names()
            .into_iter()
            .filter(|p| index_of(job, p).is_some_and(may_kill))
            .collect();
        let mut target: Option<(u32, String)> = None;
        match point {
            Point::Random => {
                if !running.is_empty() {
                    let pod = &running[rng.below(running.len() as u64) as usize];
                    target = index_of(job, pod).map(|i| (i, "a random time".to_string()));
                }
            }
            Point::AfterReportFlush | Point::MidMultipart => {
                for r in proxy.records() {
                    if r.seq <= seen_seq || !r.status.is_some_and(|s| (200..300).contains(&s)) {
                        continue;
                    }
                    seen_seq = r.seq;
                    let (_, key) = r.bucket_and_key();
                    let hit = match point {
                        Point::AfterReportFlush => {
                            r.method == "PUT"
                                && key.contains("/manifest-")
                                && key.contains("/shard-")
                        }
                        _ => {
                            r.method == "PUT"
                                && r.query().contains("partNumber=")
                                && !key.starts_with(".ferry/")
                        }
                    };
                    if !hit || target.is_some() {
                        continue;
                    }
                    let index = match point {
                        Point::AfterReportFlush => key
                            .split("/shard-")
                            .nth(1)
                            .and_then(|s| s.split('/').next())
                            .and_then(|s| s.parse().ok()),
                        _ => shard_of(&ranges, key.strip_prefix(DST_PREFIX).unwrap_or(&key)),
                    };
                    if let Some(i) = index.filter(|i| may_kill(*i)) {
                        target = Some((i, format!("{} {}", r.method, r.target)));
                    }
                }
            }
            Point::AfterProgressWrite => {
                for pod in &running {
                    let Some(i) = index_of(job, pod) else {
                        continue;
                    };
                    let Ok(cm) = c.api::<ConfigMap>().get(&format!("{job}-shard-{i}")).await else {
                        continue;
                    };
                    let rv = cm.metadata.resource_version.unwrap_or_default();
                    match versions.insert(i, rv.clone()) {
                        Some(old) if old != rv => {
                            target = Some((i, format!("{job}-shard-{i} at resourceVersion {rv}")));
                            break;
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some((i, what)) = target {
            let prefix = format!("{}{i}-", agents_of(job));
            if let Some(pod) = c.agents.kill_where(|p| p.starts_with(&prefix)) {
                return Some((i, pod, what));
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    None
}

/// Agents SIGKILLed while a 3-shard copy with 1 s checkpoints runs: after a report segment
/// was written, after a progress write, between parts of a multipart upload, and at random
/// times; at most 2 kills per shard (the Job retries an index 3 times). The job completes and
/// the checker finds nothing lost, corrupt, duplicated or foreign touched.
#[tokio::test(flavor = "multi_thread")]
async fn agents_killed_at_many_points_lose_nothing() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "agentkills").await;
    // Checkpoints (and report segments) every second: many points to land a kill near.
    c.agents.set_env("FERRY_CHECKPOINT_SECONDS", "1");
    c.apply(secret_yaml("creds")).await.unwrap();
    let seed = nemesis::seed();
    let mut rng = Rng::new(seed);
    eprintln!(
        "nemesis agent_kill: seed {seed} (FERRY_NEMESIS_SEED), rounds {}",
        nemesis::rounds()
    );
    for round in 0..nemesis::rounds() {
        let name = format!("kills-{round}");
        let tree = source_tree(200, &[40, 110, 170]);
        let cp = cluster_copy(&tree).await;
        let history = SourceHistory::of_tree(&tree);
        let job = cluster_job(
            &name,
            &cp.src,
            &cp.proxy.endpoint(),
            &cp.dst,
            json!({"requestsPerSecond": 25}),
        );
        c.apply(job).await.unwrap();
        c.wait_for(&name, "some progress", Duration::from_secs(90), |mj| {
            mj.status
                .as_ref()
                .is_some_and(|s| s.progress.counters.objects_copied >= 3)
        })
        .await;
        let mut per_index: BTreeMap<u32, u32> = BTreeMap::new();
        let mut log = Vec::new();
        let mut points = [
            Point::AfterReportFlush,
            Point::MidMultipart,
            Point::AfterProgressWrite,
            Point::Random,
            Point::AfterReportFlush,
        ];
        // A seeded order, so rounds hit the points at different stages of the copy.
        for i in (1..points.len()).rev() {
            points.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for point in points {
            if phase(&c.job(&name).await).is_some_and(|p| p.is_terminal()) {
                break;
            }
            let caps = per_index.clone();
            let may = move |i: u32| caps.get(&i).copied().unwrap_or(0) < 2;
            let mut killed = kill_at(
                &c,
                &name,
                &cp.proxy,
                point,
                &may,
                &mut rng,
                Duration::from_secs(8),
            )
            .await;
            if killed.is_none() {
                killed = kill_at(
                    &c,
                    &name,
                    &cp.proxy,
                    Point::Random,
                    &may,
                    &mut rng,
                    Duration::from_secs(5),
                )
                .await;
            }
            if let Some((i, pod, what)) = killed {
                *per_index.entry(i).or_default() += 1;
                log.push(format!("{point:?}: {pod} after {what}"));
            }
            // Give the Job controller a moment to start the index again.
            tokio::time::sleep(rng.millis(200, 1200)).await;
        }
        let kills = per_index.values().sum::<u32>() as u64;
        eprintln!("round {round}: {kills} kills:\n  {}", log.join("\n  "));
        let (mj, terminal_after) = wait_end(&c, &name, Duration::from_secs(240)).await;
        let figures = check_copy(&c, &cp, &name, &history, &mj, terminal_after, kills).await;
        let scenario = if round == 0 {
            "agent_kill".to_string()
        } else {
            format!("agent_kill_r{round}")
        };
        figures.print(&scenario);
        assert_eq!(
            phase(&mj),
            Some(ferry_api::Phase::Completed),
            "{}",
            status_json(&mj)
        );
        figures.assert_clean(
            &scenario,
            &format!("seed {seed}, round {round}, kills {log:?}"),
        );
        assert!(kills >= 3, "only {kills} kills landed: {log:?}");
    }
    c.finish().await;
}

/// The operator killed (SIGKILL) and started again while a job is planned, runs, and ends: at
/// seeded times during planning and the copy, and right when the agents have all exited (the
/// reconcile that ends the job). One agents' Job and one planner, the plan never rewritten,
/// and the checker clean.
#[tokio::test(flavor = "multi_thread")]
async fn operator_restarts_mid_reconcile_lose_nothing() {
    let Some(b) = backend() else { return };
    let mut c = Cluster::start(b, "oprestart").await;
    c.agents.set_env("FERRY_CHECKPOINT_SECONDS", "1");
    c.apply(secret_yaml("creds")).await.unwrap();
    let seed = nemesis::seed();
    let mut rng = Rng::new(seed);
    eprintln!("nemesis operator_restart: seed {seed}");
    let name = "restarts";
    let tree = source_tree(150, &[75]);
    let extra = json!({"requestsPerSecond": 20, "parallelism": {"shards": 2, "concurrency": 4}});
    let (cp, history) = start_copy(&c, name, &tree, extra).await;
    let mut kills = 0u64;
    let mut log = Vec::new();
    let restart = |c: &mut Cluster| c.start_controller("e2e", &[]);
    // 1: while it is validated and planned.
    tokio::time::sleep(rng.millis(100, 1500)).await;
    c.kill_controller("e2e").await;
    kills += 1;
    log.push(format!("planning ({:?})", phase(&c.job(name).await)));
    tokio::time::sleep(rng.millis(100, 1000)).await;
    restart(&mut c);
    c.wait_for(name, "Running", Duration::from_secs(90), |mj| {
        phase(mj) == Some(ferry_api::Phase::Running)
    })
    .await;
    let plan_at_start = plan_ranges(&c, name).await;
    // 2, 3: while the agents copy.
    for _ in 0..2 {
        tokio::time::sleep(rng.millis(500, 3000)).await;
        if phase(&c.job(name).await).is_some_and(|p| p.is_terminal()) {
            break;
        }
        c.kill_controller("e2e").await;
        kills += 1;
        log.push("copying".to_string());
        tokio::time::sleep(rng.millis(100, 1500)).await;
        restart(&mut c);
    }
    // 4: as soon as every agent has exited 0 (the reconcile that ends the job).
    let pods = agents_of(name);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done: std::collections::BTreeSet<u32> = c
            .agents
            .exits()
            .iter()
            .filter(|(p, code, _)| *code == 0 && p.starts_with(&pods))
            .filter_map(|(p, _, _)| index_of(name, p))
            .collect();
        let running = c
            .agents
            .running_names()
            .iter()
            .any(|p| p.starts_with(&pods));
        if done.len() == 2 || !running || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill_controller("e2e").await;
    kills += 1;
    log.push(format!("agents done ({:?})", phase(&c.job(name).await)));
    tokio::time::sleep(rng.millis(200, 1500)).await;
    restart(&mut c);
    eprintln!("{kills} operator kills: {log:?}");
    let (mj, terminal_after) = wait_end(&c, name, Duration::from_secs(240)).await;
    let figures = check_copy(&c, &cp, name, &history, &mj, terminal_after, kills).await;
    let agents_jobs = c.agents.jobs_created().len();
    let planners = c.agents.planners_created().len();
    let plan_rewritten = plan_ranges(&c, name).await != plan_at_start;
    eprintln!("FIGURE nemesis_operator_restart_agents_jobs={agents_jobs}");
    eprintln!("FIGURE nemesis_operator_restart_planner_jobs={planners}");
    eprintln!(
        "FIGURE nemesis_operator_restart_plan_rewrites={}",
        plan_rewritten as u8
    );
    figures.print("operator_restart");
    assert_eq!(
        phase(&mj),
        Some(ferry_api::Phase::Completed),
        "{}",
        status_json(&mj)
    );
    figures.assert_clean("operator_restart", &format!("seed {seed}, kills {log:?}"));
    assert_eq!(
        agents_jobs,
        1,
        "one agents' Job: {:?}",
        c.agents.jobs_created()
    );
    assert_eq!(
        planners,
        1,
        "one planner: {:?}",
        c.agents.planners_created()
    );
    assert!(!plan_rewritten, "the plan changed while the job ran");
    c.finish().await;
}

/// Overwrites, deletes and re-creations at the source while `ferry run` copies it (two
/// shards, checkpoints every 0.5 s), then a SIGKILL and a resume once the churn has stopped:
/// every object at the destination is one complete version of its source key (none torn,
/// multipart ones included), the deleted ones not copied count as vanished.
#[tokio::test(flavor = "multi_thread")]
async fn source_churn_during_a_copy_tears_nothing() {
    churn_scenario("churn", "source_churn", Duration::ZERO).await;
}

/// The same with the churn going on for 15 s into the resumed run: objects changed after
/// they were listed (a 412 on the `If-Match` GET) must still end in a bounded time.
#[tokio::test(flavor = "multi_thread")]
async fn source_churn_into_the_resumed_run_ends_in_bounded_time() {
    churn_scenario("churnlong", "source_churn_long", Duration::from_secs(15)).await;
}

/// A copy with source churn until a SIGKILL (2–5 s in) and for `into_resume` of the resumed
/// run, which must end within 180 s.
async fn churn_scenario(name: &str, scenario: &str, into_resume: Duration) {
    let seed = nemesis::seed();
    let mut rng = Rng::new(seed);
    eprintln!("nemesis {scenario}: seed {seed}");
    let tree = source_tree(240, &[60, 180]);
    let sc = Scenario::two_servers(name)
        .source_tree(&tree)
        .destination_proxy(FaultSchedule::none())
        .destination_side(|s| s.prefix(DST_PREFIX))
        .multipart()
        .with("parallelism", json!({"shards": 2, "concurrency": 4}))
        .with("requestsPerSecond", json!(40))
        .build()
        .await;
    let foreign = Foreign::seed(sc.dst_s3(), sc.dst_bucket(), DST_PREFIX).await;
    let stop = Arc::new(AtomicBool::new(false));
    let churn = tokio::spawn(churn(
        sc.src_s3().clone(),
        sc.src_bucket().to_string(),
        tree.clone(),
        Rng::new(rng.next_u64()),
        stop.clone(),
    ));
    let args = ["--checkpoint-interval", "0.5"];
    let mut child = sc.wd.spawn(&sc.job, &args);
    tokio::time::sleep(rng.millis(2000, 5000)).await;
    let kills = match child.try_wait().unwrap() {
        None => {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            1
        }
        Some(_) => 0, // it ended first: no kill
    };
    // The resumed run, with the churn going on for `into_resume`, then alone to its end.
    if into_resume.is_zero() {
        stop.store(true, Ordering::SeqCst);
    }
    let started = Instant::now();
    let resumed = sc.wd.spawn(&sc.job, &args);
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(into_resume).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (mut resumed, stdout, stderr) = drain(resumed);
    let ended = tokio::time::timeout(Duration::from_secs(180), resumed.wait()).await;
    stop.store(true, Ordering::SeqCst);
    stopper.abort();
    let history = churn.await.unwrap();
    if ended.is_err() {
        let _ = resumed.start_kill();
        let _ = resumed.wait().await;
        let err = String::from_utf8_lossy(&stderr.await.unwrap()).into_owned();
        panic!(
            "the resumed run did not end within 180 s (seed {seed}, {} mutations)\nshard-0: {:#}\nshard-1: {:#}\nstderr (end): {}",
            history.mutations,
            sc.wd.shard_state(0).unwrap_or_default(),
            sc.wd.shard_state(1).unwrap_or_default(),
            &err[err.len().saturating_sub(6000)..]
        );
    }
    let out = std::process::Output {
        status: ended.unwrap().unwrap(),
        stdout: stdout.await.unwrap(),
        stderr: stderr.await.unwrap(),
    };
    let run = ferry_tests::Run::from_output(out, started.elapsed());
    eprintln!(
        "{scenario}: the resumed run took {:?}; {} mutations",
        run.elapsed, history.mutations
    );
    let figures = check_run(&sc, &foreign, &history, &run, kills).await;
    figures.print(scenario);
    run.assert_exit(0).assert_phase("Completed");
    figures.assert_clean(
        scenario,
        &format!("seed {seed}, {} mutations", history.mutations),
    );
    assert!(
        history.mutations >= 8,
        "only {} source mutations",
        history.mutations
    );
}

/// Reads a child's stdout and stderr as it runs (so a test can wait with a timeout and still
/// see what it printed).
type Drained = tokio::task::JoinHandle<Vec<u8>>;
fn drain(mut child: tokio::process::Child) -> (tokio::process::Child, Drained, Drained) {
    use tokio::io::AsyncReadExt;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let o = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b).await;
        b
    });
    let e = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b).await;
        b
    });
    (child, o, e)
}

/// Writes to the source until `stop`: overwrites (multipart keys again in parts), deletes,
/// re-creations of deleted keys and new keys, 20–100 ms apart. Returns the history.
async fn churn(
    s3: S3,
    bucket: String,
    tree: Tree,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> SourceHistory {
    let mut h = SourceHistory::of_tree(&tree);
    let mut present: Vec<String> = tree.keys().cloned().collect();
    let mut gone: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(rng.millis(20, 100)).await;
        n += 1;
        let roll = rng.below(100);
        if roll < 55 && !present.is_empty() {
            let key = present[rng.below(present.len() as u64) as usize].clone();
            if key.ends_with("-mp") {
                let body = bytes(rng.next_u64(), 5 * MI + 1 + rng.below(MI as u64) as usize);
                s3.put_multipart(&bucket, &key, &body, 5 * MI).await;
                h.put(&key, &body);
            } else {
                let body = bytes(rng.next_u64(), 1 + rng.below(5000) as usize);
                s3.put(&bucket, &key, body.clone()).await;
                h.put(&key, &body);
            }
        } else if roll < 80 && !present.is_empty() {
            let key = present.swap_remove(rng.below(present.len() as u64) as usize);
            s3.delete(&bucket, &key).await;
            h.delete(&key);
            gone.push(key);
        } else if roll < 92 && !gone.is_empty() {
            let key = gone.swap_remove(rng.below(gone.len() as u64) as usize);
            let body = bytes(rng.next_u64(), 1 + rng.below(5000) as usize);
            s3.put(&bucket, &key, body.clone()).await;
            h.put(&key, &body);
            present.push(key);
        } else {
            let key = format!("k/new-{n:05}");
            let body = bytes(rng.next_u64(), 1 + rng.below(5000) as usize);
            s3.put(&bucket, &key, body.clone()).await;
            h.put(&key, &body);
            present.push(key);
        }
    }
    h
}

/// A storm of 503 SlowDown at the destination once the copy runs (the first 10 requests
/// but HEADs, then one in three, scrambled: within the 12 attempts each request has), with a foreign object and a foreign multipart upload under
/// the destination prefix and beside it: the job completes, every object exact, nothing
/// foreign touched. (HEAD is spared: the start-up check's HeadBucket gives up on a storm, see
/// [`a_503_storm_from_the_start_is_not_job_fatal`].)
#[tokio::test(flavor = "multi_thread")]
async fn a_503_storm_at_the_destination_loses_nothing_and_touches_nothing_foreign() {
    let methods = ["GET", "PUT", "POST", "DELETE"].map(String::from).to_vec();
    storm("storm", "destination_503", methods).await;
}

/// The same storm from the very first request: a throttling answer (503 SlowDown) is
/// transient, so the start-up check should wait it out (or, in a cluster, stay `Pending`
/// like an unreachable endpoint) rather than end the job.
#[tokio::test(flavor = "multi_thread")]
async fn a_503_storm_from_the_start_is_not_job_fatal() {
    storm("stormstart", "destination_503_from_start", Vec::new()).await;
}

async fn storm(name: &str, scenario: &str, only_methods: Vec<String>) {
    let tree = source_tree(120, &[50]);
    let sc = Scenario::two_servers(name)
        .source_tree(&tree)
        .destination_proxy(FaultSchedule {
            slowdown_first: 10,
            slowdown_every: 3,
            scrambled: true,
            only_methods,
            ..Default::default()
        })
        .destination_side(|s| s.prefix(DST_PREFIX))
        .multipart()
        .with("parallelism", json!({"shards": 2, "concurrency": 8}))
        .build()
        .await;
    let foreign = Foreign::seed(sc.dst_s3(), sc.dst_bucket(), DST_PREFIX).await;
    let run = sc.run().await;
    let slowdowns = sc.dst_proxy().faults(ferry_tests::Fault::SlowDown);
    let figures = check_run(&sc, &foreign, &SourceHistory::of_tree(&tree), &run, 0).await;
    eprintln!("FIGURE nemesis_{scenario}_slowdowns={slowdowns}");
    figures.print(scenario);
    run.assert_exit(0).assert_phase("Completed");
    figures.assert_clean(scenario, &format!("{slowdowns} SlowDown answers"));
    assert!(slowdowns >= 10, "{slowdowns} SlowDown answers");
}

/// A shard's progress ConfigMap deleted while its agent runs: the agent cannot save its final
/// state, so it exits to be run again (not 0), and the job ends in a terminal phase with the
/// reason, instead of staying `Running` for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_progress_record_deleted_mid_run_ends_the_job_not_stuck() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "recordgone").await;
    let (s3, src, dst, objects) = buckets(120).await;
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
    let (mj, terminal_after) = wait_end(&c, "gone", Duration::from_secs(240)).await;
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
    // A Failed job promises only what it reported: nothing corrupt, no key twice, none
    // outside, and not stuck.
    let figures = check_buckets(&c, &s3, &dst, "gone", &objects, &mj, terminal_after).await;
    eprintln!("FIGURE nemesis_record_deleted_stuck_jobs={}", figures.stuck);
    figures.print("record_deleted");
    figures.assert_clean("record_deleted", "the shard-0 progress ConfigMap deleted");
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
    let (s3, src, dst, objects) = buckets(200).await;
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
    let (mj, terminal_after) = wait_end(&c, "paused", Duration::from_secs(180)).await;
    let figures = check_buckets(&c, &s3, &dst, "paused", &objects, &mj, terminal_after).await;
    figures.print("paused_leader");
    assert_eq!(
        phase(&mj),
        Some(ferry_api::Phase::Completed),
        "{}",
        status_json(&mj)
    );
    figures.assert_clean("paused_leader", "the leader SIGSTOPped, then SIGCONTed");
    assert_eq!(
        mj.status.unwrap().progress.counters.objects_copied,
        objects.len() as u64
    );
    assert_eq!(c.agents.jobs_created().len(), 1, "one agents' Job");
    eprintln!("FIGURE nemesis_paused_leader_second_leaders=0");
    c.finish().await;
}

/// Where an API-server outage falls.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// As the agents start: the first agent process of the job started (its first reads of
    /// the plan and its progress record come during the outage).
    AgentStart,
    /// As the agents finish: every object written at the destination (the last shard's final
    /// checkpoint and report flush, the Job's completion and the reconcile that ends the job
    /// come during the outage).
    AllWritten,
    /// As the agents finish: right after the first agent exited (the others are finishing).
    FirstAgentExit,
}

/// The API stand-in paused (SIGSTOP) for 5 s, then resumed, at `at` of a 3-shard cluster copy
/// with 1 s checkpoints: the job completes, the checker is clean (no key twice in the reports:
/// no segment overwritten by a restart from scratch), every object written once, and the job
/// terminal within the bound. Stand-in only: a real API server cannot be paused from a test.
async fn api_outage(name: &str, scenario: &str, at: Outage) {
    let Some(b) = backend() else { return };
    if b.is_real() {
        eprintln!("NOTICE: nemesis {scenario} pauses the API stand-in (SIGSTOP, SIGCONT); a real API server cannot be paused from a test: skipped");
        return;
    }
    let mut c = Cluster::start(b, name).await;
    c.agents.set_env("FERRY_CHECKPOINT_SECONDS", "1");
    c.apply(secret_yaml("creds")).await.unwrap();
    let tree = source_tree(150, &[30, 100]);
    let (cp, history) = start_copy(&c, name, &tree, json!({"requestsPerSecond": 40})).await;
    let pods = agents_of(name);
    let deadline = Instant::now() + Duration::from_secs(120);
    let trigger = loop {
        match at {
            Outage::AgentStart => {
                if let Some(p) = c
                    .agents
                    .running_names()
                    .into_iter()
                    .find(|p| p.starts_with(&pods))
                {
                    break format!("agent {p} started");
                }
            }
            Outage::AllWritten => {
                let written = written_keys(&cp.proxy.records());
                if written >= tree.len() {
                    break format!("all {written} objects written");
                }
            }
            Outage::FirstAgentExit => {
                let written = written_keys(&cp.proxy.records());
                if let Some((p, code, _)) = c
                    .agents
                    .exits()
                    .into_iter()
                    .find(|(p, _, _)| p.starts_with(&pods))
                {
                    break format!("agent {p} exited {code} ({written} objects written)");
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: no {at:?} within 120 s: {}\n{}",
            status_json(&c.job(name).await),
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let running = c
        .agents
        .running_names()
        .iter()
        .filter(|p| p.starts_with(&pods))
        .count();
    assert!(c.pause_api(Duration::from_secs(5)).await);
    eprintln!("{scenario}: the API paused for 5 s once {trigger} ({running} agents running)");
    // The controller stops when it could not renew its Lease within 10 s of the last renewal
    // (5 s before the outage at most): play its Deployment, which starts it again.
    let mut controller_restarts = 0;
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(8) {
        if let Some(st) = c.controller_exit("e2e") {
            eprintln!("{scenario}: the controller exited ({st}); started again");
            c.kill_controller("e2e").await; // reaped and forgotten
            c.start_controller("e2e", &[]);
            controller_restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mj, terminal_after) = wait_end(&c, name, Duration::from_secs(180)).await;
    let figures = check_copy(&c, &cp, name, &history, &mj, terminal_after, 0).await;
    let starts = c.agents.starts();
    let rewrites = segment_rewrites(&cp.proxy.records());
    eprintln!("FIGURE nemesis_{scenario}_api_pauses=1");
    eprintln!("FIGURE nemesis_{scenario}_agent_starts={starts}");
    eprintln!("FIGURE nemesis_{scenario}_controller_restarts={controller_restarts}");
    eprintln!("FIGURE nemesis_{scenario}_segment_rewrites={rewrites}");
    figures.print(scenario);
    assert_eq!(
        phase(&mj),
        Some(ferry_api::Phase::Completed),
        "{}",
        status_json(&mj)
    );
    figures.assert_clean(scenario, &format!("the API paused 5 s once {trigger}"));
    assert_eq!(
        figures.rework_objects,
        Some(0),
        "objects written more than once: {}",
        cp.proxy.summary()
    );
    assert_eq!(c.agents.jobs_created().len(), 1, "one agents' Job");
    c.finish().await;
}

/// The destination keys (not `.ferry/`) whose write completed (a PutObject of data, or a
/// CompleteMultipartUpload, answered 2xx), as a counting proxy saw them.
fn written_keys(records: &[ferry_tests::RequestRecord]) -> usize {
    let mut keys = std::collections::BTreeSet::new();
    for r in records {
        let (_, key) = r.bucket_and_key();
        let ok = r.status.is_some_and(|s| (200..300).contains(&s));
        if !ok || !key.starts_with(DST_PREFIX) || key.contains("zz-foreign") {
            continue;
        }
        let q = r.query();
        let done = (r.method == "PUT" && r.is_data_put() && !q.contains("uploadId"))
            || (r.method == "POST" && q.contains("uploadId"));
        if done {
            keys.insert(key);
        }
    }
    keys.len()
}

/// Report segments (`.ferry/reports/…`) written more than once (2xx PUTs of one key): a shard
/// that resumed rewrites the segment its last checkpoint did not cover; without a kill, none.
fn segment_rewrites(records: &[ferry_tests::RequestRecord]) -> usize {
    let mut puts: BTreeMap<String, u32> = BTreeMap::new();
    for r in records {
        let (_, key) = r.bucket_and_key();
        if r.method == "PUT"
            && key.contains("/reports/")
            && r.status.is_some_and(|s| (200..300).contains(&s))
        {
            *puts.entry(key).or_default() += 1;
        }
    }
    puts.values().filter(|n| **n > 1).count()
}

/// An API-server outage of 5 s right as the agents start.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_outage_as_the_agents_start_loses_and_redoes_nothing() {
    api_outage("apistart", "api_outage_start", Outage::AgentStart).await;
}

/// An API-server outage of 5 s as the agents finish (the last object written).
#[tokio::test(flavor = "multi_thread")]
async fn an_api_outage_as_the_agents_finish_loses_and_redoes_nothing() {
    api_outage("apiend", "api_outage_end", Outage::AllWritten).await;
}

/// An API-server outage of 5 s right after the first agent exited.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_outage_after_the_first_agent_exit_loses_and_redoes_nothing() {
    api_outage("apiexit", "api_outage_first_exit", Outage::FirstAgentExit).await;
}

/// Deletes `bucket` while a job may still write to it: its objects and open uploads, then the
/// bucket, again until the bucket is gone (a write between the two makes it not empty).
/// Returns the objects deleted.
async fn delete_bucket(s3: &S3, bucket: &str) -> usize {
    let mut deleted = 0;
    for attempt in 0..30 {
        for o in s3.list_all(bucket, "").await {
            s3.delete(bucket, &o.key).await;
            deleted += 1;
        }
        for u in nemesis::open_uploads(s3, bucket).await.uploads() {
            let _ = s3
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(u.key().unwrap_or_default())
                .upload_id(u.upload_id().unwrap_or_default())
                .send()
                .await;
        }
        match s3.client.delete_bucket().bucket(bucket).send().await {
            Ok(_) => return deleted,
            Err(e) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                let code = e.code().unwrap_or("error").to_string();
                eprintln!("DeleteBucket {bucket} (attempt {attempt}): {code}; again");
            }
        }
    }
    panic!("the bucket {bucket} could not be deleted");
}

/// The destination bucket deleted (its objects and uploads, then the bucket) while a 3-shard
/// cluster copy runs: the job ends `Failed` with `NoSuchBucket` in its message within the
/// bound, not `Running` for ever; the source and a bystander bucket's objects and uploads
/// (the foreign seeds, under and beside the prefix) untouched. The reports went with the
/// bucket, so the checker's other figures have nothing to read.
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_bucket_deleted_mid_run_fails_the_job_not_stuck() {
    let scenario = "destination_bucket_deleted";
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "bucketgone").await;
    c.apply(secret_yaml("creds")).await.unwrap();
    let name = "bucketgone";
    let tree = source_tree(150, &[30, 100]);
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = s3.create_bucket("nem-src").await;
    let dst = s3.create_bucket("nem-dst").await;
    let bystander = s3.create_bucket("nem-by").await;
    s3.put_all(&src, &tree).await;
    let foreign = Foreign::seed(&s3, &bystander, DST_PREFIX).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultSchedule::none()).await;
    let job = cluster_job(
        name,
        &src,
        &proxy.endpoint(),
        &dst,
        json!({"requestsPerSecond": 8}),
    );
    c.apply(job).await.unwrap();
    c.wait_for(name, "some progress", Duration::from_secs(90), |mj| {
        mj.status
            .as_ref()
            .is_some_and(|s| s.progress.counters.objects_copied >= 5)
    })
    .await;
    let deleted = delete_bucket(&s3, &dst).await;
    eprintln!("{scenario}: {dst} deleted ({deleted} objects deleted first)");
    let start = Instant::now();
    let (mj, terminal_after) = wait_end(&c, name, Duration::from_secs(150)).await;
    let status = status_json(&mj);
    let msg = status["message"].as_str().unwrap_or_default().to_string();
    eprintln!(
        "{scenario}: ended {:?} after {:?}: {msg}",
        phase(&mj),
        start.elapsed()
    );
    let ph = status["phase"].as_str().unwrap_or_default().to_string();
    let stuck = nemesis::stuck(&ph, terminal_after);
    let mut touched = foreign.touched(&s3, &bystander).await;
    touched.extend(Foreign::of_tree(&tree).touched(&s3, &src).await);
    let src_now = s3.list(&src).await.len();
    if src_now != tree.len() {
        touched.push(format!(
            "the source holds {src_now} objects, not {}",
            tree.len()
        ));
    }
    let figures = nemesis::Figures {
        objects: tree.len() as u64,
        stuck: stuck.is_some() as u64,
        foreign_touched: touched.len() as u64,
        copied: mj
            .status
            .as_ref()
            .map_or(0, |s| s.progress.counters.objects_copied),
        failed: mj
            .status
            .as_ref()
            .map_or(0, |s| s.progress.counters.objects_failed),
        terminal_after_secs: terminal_after.map(|d| d.as_secs_f64()),
        problems: stuck.into_iter().chain(touched).collect(),
        ..Default::default()
    };
    eprintln!(
        "FIGURE nemesis_{scenario}_agent_starts={}",
        c.agents.starts()
    );
    figures.print(scenario);
    assert_eq!(phase(&mj), Some(ferry_api::Phase::Failed), "{status}");
    assert!(
        msg.contains("NoSuchBucket"),
        "message: {msg}\nstatus: {status}"
    );
    figures.assert_clean(scenario, &format!("{dst} deleted mid-run"));
    c.finish().await;
}
