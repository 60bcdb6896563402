//! Re-runs and restarts: a completed job re-run copies nothing; a job killed with SIGKILL
//! resumes from its watermark without re-copying everything, and its manifest lists every key
//! exactly once; SIGTERM pauses (exit 130) and the next run completes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_tests::reports::{self, Kind};
use ferry_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn rerun_of_a_completed_job_copies_nothing() {
    let mut t = small_objects("obj-", 20, 2000);
    t.insert("big".into(), bytes(9, 6 * MI));
    let sc = Scenario::two_servers("rerun")
        .source_tree(&t)
        .source_proxy(FaultSchedule::none())
        .destination_proxy(FaultSchedule::none())
        .multipart()
        .build()
        .await;
    let (src_proxy, dst_proxy) = (sc.src_proxy(), sc.dst_proxy());

    let first = sc.run().await;
    first
        .assert_exit(0)
        .assert_counter("objectsCopied", t.len() as u64);
    src_proxy.clear();
    dst_proxy.clear();

    let second = sc.run().await;
    second.assert_exit(0).assert_phase("Completed");
    let puts = dst_proxy.data_puts();
    assert!(
        puts.is_empty(),
        "the re-run of a completed job wrote objects again:\n{}",
        puts.iter()
            .map(|r| format!("  {} {}\n", r.method, r.target))
            .collect::<String>()
    );
    assert!(
        src_proxy.object_gets().is_empty(),
        "the re-run read object bodies again:\n{}",
        src_proxy.summary()
    );
    let copied = second.counter("objectsCopied");
    assert!(
        copied == first.counter("objectsCopied") || (copied == 0 && second.counter("objectsSkipped") == t.len() as u64),
        "the re-run should either restore the first run's counters or show it skipped everything\nfirst:\n{}\nsecond:\n{}",
        first.describe(),
        second.describe()
    );
    sc.assert_destination_eq(&t, "destination after the re-run")
        .await;
}

const N: usize = 300;

fn many() -> Tree {
    // Three directories so the filesystem walk has some structure to order.
    (0..N)
        .map(|i| {
            let key = format!("d{}/obj-{i:04}", i % 3);
            (
                key.clone(),
                bytes(ferry_tests::data::seed_of(&key), 200 + (i * 7) % 1800),
            )
        })
        .collect()
}

/// Wait until `shard-0.json` has a watermark at or beyond `min_index` keys (in byte order of
/// `keys`); return the watermark and its index. Fails if ferry exits first.
async fn wait_for_watermark(
    wd: &Workdir,
    child: &mut tokio::process::Child,
    keys: &[String],
    min_index: usize,
) -> (String, usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(state) = wd.shard_state(0) {
            if let Some(w) = state["checkpoint"]["watermark"].as_str() {
                let idx = keys.iter().position(|k| k.as_str() == w).unwrap_or_else(|| {
                    panic!("the watermark {w:?} is not one of the source keys; shard-0.json: {state:#}")
                });
                if idx >= min_index {
                    return (w.to_string(), idx);
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ferry exited ({status}) before the watermark reached key #{min_index}; raise N or lower the rate");
        }
        assert!(
            Instant::now() < deadline,
            "no watermark beyond key #{min_index} in shard-0.json within 90 s: {:?}",
            wd.shard_state(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_then_resume_copies_each_object_once() {
    let t = many();
    let keys: Vec<String> = t.keys().cloned().collect(); // byte order, like the listing
    let sc = Scenario::fs_to_s3("sigkill")
        .source_tree(&t)
        .destination_proxy(FaultSchedule::none())
        .build()
        .await;
    let (wd, proxy) = (&sc.wd, sc.dst_proxy());
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());

    // First run, throttled to 20 requests/s: kill -9 once a third is checkpointed.
    // Checkpoints every 0.5 s, so the kill lands soon after a third, not up to 5 s later
    // (under load the run could end first: CI saw it exit 0 before the kill).
    let mut child = wd.spawn(
        &sc.job.clone().with("requestsPerSecond", json!(20)),
        &["--checkpoint-interval", "0.5"],
    );
    let (watermark, idx) = wait_for_watermark(wd, &mut child, &keys, N / 3).await;
    child.start_kill().expect("SIGKILL ferry");
    let killed = child.wait().await.expect("wait");
    assert!(
        killed.code().is_none(),
        "ferry should have died by SIGKILL, got {killed}"
    );
    // Uploads the killed run left in flight land (and are counted) before the resume.
    proxy.idle(Duration::from_secs(60)).await;
    let present_at_kill = s3.list(dst).await.len();
    proxy.clear();

    // Second run without the rate limit (not part of the spec hash): resumes.
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    sc.assert_destination_eq(&t, "destination after kill -9 and resume")
        .await;

    let puts = proxy.data_puts().len();
    let done_at_kill = idx + 1;
    assert!(
        puts <= N - done_at_kill,
        "the resumed run wrote {puts} objects; with the watermark at {watermark:?} (key #{idx}), at most {} were \
         left ({present_at_kill} objects were already in the bucket at the kill)",
        N - done_at_kill
    );
    run.assert_counter("objectsTotal", N as u64);
    assert_eq!(
        run.counter("objectsCopied") + run.counter("objectsSkipped"),
        N as u64,
        "each object is counted once as copied or skipped after the resume\n{}",
        run.describe()
    );

    // The manifests of both runs together list every key exactly once.
    let files = reports::s3_report_files(s3, dst, "default", "sigkill", Kind::Manifest).await;
    let lines: Vec<serde_json::Value> = files.iter().flat_map(|(_, l)| l.clone()).collect();
    let file_summary: Vec<String> = files
        .iter()
        .map(|(k, l)| format!("{k}: {} lines", l.len()))
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for k in reports::keys(&lines) {
        *counts.entry(k).or_default() += 1;
    }
    let missing: Vec<_> = keys.iter().filter(|k| !counts.contains_key(*k)).collect();
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let unknown: Vec<_> = counts.keys().filter(|k| !t.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && unknown.is_empty(),
        "manifest lines should list every key once: {} missing {:?}, {} repeated {:?}, unknown {:?}\n\
         (watermark at the kill: {watermark:?} = key #{idx}; {present_at_kill} objects were in the bucket at the kill; \
         the resumed run copied {} and skipped {}; manifest files: {file_summary:#?})",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        repeated.len(),
        repeated.iter().take(10).collect::<Vec<_>>(),
        unknown,
        run.counter("objectsCopied"),
        run.counter("objectsSkipped"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_pauses_with_exit_130_and_the_next_run_completes() {
    let t = many();
    let keys: Vec<String> = t.keys().cloned().collect();
    let sc = Scenario::fs_to_s3("sigterm").source_tree(&t).build().await;
    let wd = &sc.wd;

    // 20 requests/s and 4 objects in flight: at the signal most of the 300 objects are left.
    let throttled = sc
        .job
        .clone()
        .with("requestsPerSecond", json!(20))
        .with("parallelism", json!({ "shards": 1, "concurrency": 4 }));
    let mut child = wd.spawn(&throttled, &[]);
    wait_for_watermark(wd, &mut child, &keys, 10).await;
    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ferry did not stop within 30 s of SIGTERM (a pod's default grace period)")
        .expect("wait");
    let paused = Run::from_output(out, Duration::ZERO);
    paused.assert_exit(130).assert_phase("Paused");
    let state = wd.shard_state(0).expect("shard-0.json after SIGTERM");
    assert_eq!(
        state["state"], "Paused",
        "shard-0.json after SIGTERM: {state:#}"
    );

    let run = sc.run().await;
    run.assert_exit(0)
        .assert_phase("Completed")
        .assert_counter("objectsTotal", t.len() as u64);
    sc.assert_destination_eq(&t, "destination after SIGTERM and resume")
        .await;
}
