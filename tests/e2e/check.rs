//! `mode: Check` (`docs/check.md`): lists both sides like a copy, writes nothing at the
//! destination but the report, and classifies each selected key. After a copy every key is
//! identical; after three deliberate corruptions (one deleted at the destination, one of
//! another size, one with other bytes of the same size under an ETag that is no MD5, found
//! only with `verify: ReRead`) and one key added at the destination, exactly those four are
//! reported. A killed check resumes from its checkpoint and reports each difference once.

use std::time::{Duration, Instant};

use ferry_tests::ferry::Run;
use ferry_tests::fixtures::tree;
use ferry_tests::*;
use serde_json::{json, Value};

const N: usize = 6;

fn source() -> Tree {
    tree((0..N).map(|i| (format!("obj-{i}"), bytes(i as u64 + 1, 1000 + i))))
}

/// `status.check` of a run.
fn check(run: &Run) -> Value {
    run.status().0.get("check").cloned().unwrap_or_default()
}

fn assert_check(run: &Run, identical: u64, missing: u64, different: u64, extra: u64) {
    let c = check(run);
    let got = ["identical", "missing", "different", "extra", "failed"]
        .map(|f| c.get(f).and_then(Value::as_u64).unwrap_or(0));
    assert_eq!(
        got,
        [identical, missing, different, extra, 0],
        "status.check (identical, missing, different, extra, failed)\n{}",
        run.describe()
    );
}

/// The check report's lines of a run whose report is in an S3 bucket: (key, difference),
/// sorted, with every line's key appearing once.
async fn s3_differences(s3: &S3, bucket: &str, run: &Run) -> Vec<(String, String)> {
    let report = run.status().report().expect("status.report");
    let prefix = report
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap_or_else(|| panic!("report {report} is not in bucket {bucket}"));
    let mut out = Vec::new();
    for o in s3.list_all(bucket, prefix).await {
        if o.key.contains("/check-") {
            out.extend(lines(&s3.get(bucket, &o.key).await));
        }
    }
    out.sort();
    out
}

fn lines(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a check line is JSON");
            (
                v["key"].as_str().unwrap().to_string(),
                v["difference"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, d)| (k.to_string(), d.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_after_a_copy_is_identical_and_finds_each_corruption() {
    let sc = Scenario::one_server("check-s3")
        .source_tree(&source())
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    sc.copy_and_compare(&source(), "destination after the copy")
        .await;

    let checker = |name: &str, verify: &str| {
        let mut job = sc
            .job
            .clone()
            .with("mode", json!("Check"))
            .with("verify", json!(verify));
        job.name = name.to_string();
        job
    };
    let run = sc.wd.run(&checker("check-s3-a", "ReRead"), &[]).await;
    run.assert_exit(0).assert_phase("Completed");
    assert_check(&run, N as u64, 0, 0, 0);
    assert_eq!(
        s3_differences(s3, dst, &run).await,
        Vec::<(String, String)>::new()
    );
    let before = s3.contents(dst).await;

    // Three corruptions and one key the source lacks.
    s3.delete(dst, "obj-1").await;
    s3.put(dst, "obj-2", bytes(99, 10)).await;
    // Same size, other bytes, uploaded in one part: its ETag (`<md5>-1`) is no MD5, so only
    // reading the bytes tells.
    let mut same_size = source()["obj-3"].clone();
    same_size[500] ^= 0xff;
    s3.put_multipart(dst, "obj-3", &same_size, same_size.len())
        .await;
    s3.put(dst, "zz-extra", b"extra".to_vec()).await;
    let corrupted = s3.contents(dst).await;
    assert_ne!(before, corrupted);

    // Without reading, the listings find three of the four.
    let run = sc.wd.run(&checker("check-s3-b", "Checksum"), &[]).await;
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    assert_check(&run, 4, 1, 1, 1);
    assert_eq!(
        s3_differences(s3, dst, &run).await,
        pairs(&[
            ("obj-1", "Missing"),
            ("obj-2", "Size"),
            ("zz-extra", "Extra")
        ])
    );

    // With `verify: ReRead` the same-size change too.
    let run = sc.wd.run(&checker("check-s3-c", "ReRead"), &[]).await;
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    assert_check(&run, 3, 1, 2, 1);
    assert_eq!(
        s3_differences(s3, dst, &run).await,
        pairs(&[
            ("obj-1", "Missing"),
            ("obj-2", "Size"),
            ("obj-3", "Content"),
            ("zz-extra", "Extra")
        ])
    );
    assert!(
        run.stderr.contains("missing at destination"),
        "ferry run prints the check's counts:\n{}",
        run.describe()
    );

    // A check writes nothing at the destination but its report.
    let after: Vec<String> = s3
        .contents(dst)
        .await
        .into_keys()
        .filter(|k| !k.starts_with(".ferry/"))
        .collect();
    let expected: Vec<String> = corrupted
        .into_keys()
        .filter(|k| !k.starts_with(".ferry/"))
        .collect();
    assert_eq!(after, expected, "a check must not change the destination");
}

/// A filesystem source checked against a filesystem destination: the same classification
/// through the same `Source` trait (no ETags: sizes, and the bytes with ReRead).
#[tokio::test(flavor = "multi_thread")]
async fn check_of_a_filesystem_source() {
    let sc = Scenario::fs_to_fs("check-fs")
        .source_tree(&source())
        .with("mode", json!("Check"))
        .with("verify", json!("ReRead"))
        .build()
        .await;
    let dst = sc.dst_dir().to_path_buf();
    let mut t = source();
    t.remove("obj-0");
    t.insert("obj-4".into(), bytes(7, 3));
    let mut same = t["obj-5"].clone();
    same[0] ^= 1;
    t.insert("obj-5".into(), same);
    t.insert("extra/x".into(), b"x".to_vec());
    data::write_tree(&dst, &t);

    let run = sc.run().await;
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    assert_check(&run, 3, 1, 2, 1);
    let report = run.status().report().expect("status.report");
    let mut got = Vec::new();
    for p in data::all_paths(std::path::Path::new(&report)) {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("check-"))
        {
            got.extend(lines(&std::fs::read(&p).unwrap()));
        }
    }
    got.sort();
    assert_eq!(
        got,
        pairs(&[
            ("extra/x", "Extra"),
            ("obj-0", "Missing"),
            ("obj-4", "Size"),
            ("obj-5", "Content")
        ])
    );
}

/// A check killed with SIGKILL goes on from its checkpoint: the counts are those of one
/// whole check, and each difference is reported once.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_check_resumes() {
    const M: usize = 120;
    let t = tree((0..M).map(|i| (format!("k-{i:03}"), bytes(i as u64, 200))));
    let sc = Scenario::fs_to_s3("check-kill")
        .source_tree(&t)
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    sc.copy_and_compare(&t, "destination after the copy").await;
    // Every tenth key missing at the destination.
    for i in (0..M).step_by(10) {
        s3.delete(dst, &format!("k-{i:03}")).await;
    }
    let mut job = sc
        .job
        .clone()
        .with("mode", json!("Check"))
        .with("verify", json!("ReRead"));
    job.name = "check-kill-c".into();
    // Slowed down (two GETs per key read), killed once part of it is checkpointed.
    let mut child = sc.wd.spawn(
        &job.clone().with("requestsPerSecond", json!(40)),
        &["--checkpoint-interval", "0.3"],
    );
    let state_of = |wd: &ferry_tests::ferry::Workdir| wd.shard_state(0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = state_of(&sc.wd)
            .and_then(|s| s["checkpoint"]["counters"]["objectsIdentical"].as_u64())
            .unwrap_or(0);
        if done >= 20 {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("ferry exited ({st}) before the kill; lower the rate");
        }
        assert!(Instant::now() < deadline, "no checkpoint within 90 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.start_kill().expect("SIGKILL ferry");
    child.wait().await.expect("wait");
    let at_kill = state_of(&sc.wd).expect("the checkpoint");
    let watermark = at_kill["checkpoint"]["watermark"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        !watermark.is_empty(),
        "a watermark at the kill: {at_kill:#}"
    );

    let run = sc.wd.run(&job, &[]).await;
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    assert_check(&run, (M - M / 10) as u64, (M / 10) as u64, 0, 0);
    let got = s3_differences(s3, dst, &run).await;
    let want: Vec<(String, String)> = (0..M)
        .step_by(10)
        .map(|i| (format!("k-{i:03}"), "Missing".to_string()))
        .collect();
    assert_eq!(got, want, "each difference once (killed at {watermark})");
}
