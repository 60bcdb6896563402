//! The operator's HTTP port end to end: the real `ferry controller` serves `/healthz`,
//! `/readyz` and `/metrics`; scraped during a real copy and after it, its job metrics equal
//! the MigrationJob's status, and stay equal after an operator restart (they are read from the
//! status, not counted in memory). Runs on whichever backend `operator_cluster` uses; with
//! neither it prints a notice and passes.

use std::time::{Duration, Instant};

use ferry_api::{MigrationJob, Phase};
use ferry_tests::cluster::{backend, Cluster};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::operator_cluster::{buckets, job_yaml, secret_yaml};

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path`: (status code, body), or None when nothing answers.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// GET `path` until it answers (the controller is starting), for at most 30 s.
async fn get_when_up(addr: &str, path: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        if let Some(answer) = get(addr, path).await {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{addr} does not answer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the sample `name` whose labels include `labels`, in a Prometheus text page.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    page.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            return None;
        }
        let have: Vec<(&str, &str)> = rest
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        if labels.iter().all(|l| have.contains(l)) {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// The job metrics of `mj` in `page`, in the order of [`from_status`].
fn from_page(page: &str, mj: &MigrationJob) -> Vec<Option<u64>> {
    let ns = mj.metadata.namespace.as_deref().unwrap();
    let name = mj.metadata.name.as_deref().unwrap();
    let job = |extra: &[(&'static str, &'static str)]| {
        let mut l = vec![("namespace", ns), ("name", name), ("kind", "MigrationJob")];
        l.extend_from_slice(extra);
        l
    };
    vec![
        sample(page, "ferry_objects_total", &job(&[("result", "copied")])),
        sample(page, "ferry_objects_total", &job(&[("result", "skipped")])),
        sample(page, "ferry_objects_total", &job(&[("result", "failed")])),
        sample(page, "ferry_bytes_total", &job(&[("result", "copied")])),
        sample(page, "ferry_listed_objects", &job(&[])),
        sample(page, "ferry_listed_bytes", &job(&[])),
    ]
}

/// The same values as the status says them.
fn from_status(mj: &MigrationJob) -> Vec<Option<u64>> {
    let c = &mj.status.as_ref().unwrap().progress.counters;
    [
        c.objects_copied,
        c.objects_skipped,
        c.objects_failed,
        c.bytes_copied,
        c.objects_total,
        c.bytes_total,
    ]
    .into_iter()
    .map(Some)
    .collect()
}

/// Scrapes until the job metrics equal the job's status (the leader's cache follows the API
/// within moments), for at most 20 s; returns the last page.
async fn wait_equal(c: &Cluster, addr: &str, name: &str) -> String {
    let start = Instant::now();
    loop {
        let mj = c.job(name).await;
        let (code, page) = get_when_up(addr, "/metrics").await;
        assert_eq!(code, 200);
        if from_page(&page, &mj) == from_status(&mj) {
            return page;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the metrics {:?} never equal the status {:?}\n{page}",
            from_page(&page, &mj),
            from_status(&mj)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// With FERRY_METRICS_RECORD=FILE: every /metrics page of the run, scraped twice a second, each
/// after a line `# scraped <unix seconds>` (tests/support/render_dashboard.py draws the
/// dashboard's panels from them).
fn record(addr: &str, path: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    let addr = addr.to_string();
    tokio::spawn(async move {
        let mut file = std::fs::File::create(&path).unwrap();
        loop {
            if let Some((200, page)) = get(&addr, "/metrics").await {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64();
                std::io::Write::write_all(&mut file, format!("# scraped {now}\n{page}").as_bytes())
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_equal_the_status_during_and_after_a_run_and_across_a_restart() {
    let Some(b) = backend() else { return };
    let addr = format!("127.0.0.1:{}", free_port());
    let http = ["--http-addr", addr.as_str()];
    let mut c = Cluster::start_with(b, "metrics", &http).await;
    assert_eq!(get_when_up(&addr, "/healthz").await.0, 200);
    assert_eq!(get_when_up(&addr, "/readyz").await.0, 200);
    assert_eq!(get_when_up(&addr, "/nothing").await.0, 404);

    let recording = std::env::var_os("FERRY_METRICS_RECORD").map(|path| record(&addr, path.into()));
    // Recorded for a picture: a longer copy.
    let n = if recording.is_some() { 400 } else { 60 };
    let (_s3, src, dst, objects) = buckets(n).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(job_yaml(
        "copy",
        &src,
        &dst,
        "creds",
        json!({"requestsPerSecond": if recording.is_some() { 25 } else { 10 }}),
    ))
    .await
    .unwrap();
    c.wait_for(
        "copy",
        "some objects copied",
        Duration::from_secs(90),
        |mj| {
            mj.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Running) && s.progress.counters.objects_copied >= 10
            })
        },
    )
    .await;
    // During the run: the scraped counter lies between the status read a moment before the
    // scrape (the leader's cache has it by then) and the status read after it.
    let before = c.job("copy").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, page) = get_when_up(&addr, "/metrics").await;
    let after = c.job("copy").await;
    let copied = |mj: &MigrationJob| mj.status.as_ref().unwrap().progress.counters.objects_copied;
    let scraped = from_page(&page, &before)[0].expect("ferry_objects_total of the running job");
    assert!(
        copied(&before) <= scraped && scraped <= copied(&after),
        "scraped {scraped}, status {} before and {} after\n{page}",
        copied(&before),
        copied(&after)
    );
    assert_eq!(sample(&page, "ferry_leader", &[]), Some(1), "{page}");
    // The agents' Job runs: its failed pods are a series (none failed here).
    let agents = [("namespace", c.ns.as_str()), ("name", "copy")];
    assert_eq!(
        sample(&page, "ferry_agent_pods_failed", &agents),
        Some(0),
        "{page}"
    );
    let running = [
        ("namespace", c.ns.as_str()),
        ("name", "copy"),
        ("phase", "Running"),
    ];
    let after_phase = after.status.as_ref().unwrap().phase;
    if after_phase == Some(Phase::Running) {
        assert_eq!(
            sample(&page, "ferry_job_phase", &running),
            Some(1),
            "{page}"
        );
    }
    assert!(
        sample(
            &page,
            "controller_runtime_reconcile_total",
            &[("controller", "migrationjob"), ("result", "success")]
        )
        .is_some_and(|n| n > 0),
        "{page}"
    );

    // After the run: equal, counter for counter.
    let done = c
        .wait_for("copy", "Completed", Duration::from_secs(180), |mj| {
            mj.status.as_ref().and_then(|s| s.phase) == Some(Phase::Completed)
        })
        .await;
    assert_eq!(copied(&done), objects.len() as u64);
    let page = wait_equal(&c, &addr, "copy").await;
    if let Some(recording) = recording {
        tokio::time::sleep(Duration::from_secs(3)).await;
        recording.abort();
    }
    let completed = [
        ("namespace", c.ns.as_str()),
        ("name", "copy"),
        ("phase", "Completed"),
    ];
    assert_eq!(
        sample(&page, "ferry_job_phase", &completed),
        Some(1),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "ferry_objects_total",
            &[("name", "copy"), ("result", "copied")]
        ),
        Some(objects.len() as u64)
    );

    // A restarted operator serves the same counters (read from the status, not from memory).
    c.kill_controller("e2e").await;
    c.start_controller("e2e", &http);
    let page = wait_equal(&c, &addr, "copy").await;
    assert_eq!(
        sample(
            &page,
            "ferry_objects_total",
            &[("name", "copy"), ("result", "copied")]
        ),
        Some(objects.len() as u64),
        "{page}"
    );
    assert_eq!(sample(&page, "ferry_leader", &[]), Some(1), "{page}");
    c.finish().await;
}
