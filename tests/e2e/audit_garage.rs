//! Issue 16 at scale, on Garage only (`FERRY_TEST_GARAGE`): a 20,000-object job between two
//! Garage servers (streamed: GET, then PUT), whose destination bucket already holds 4 of the
//! source's objects (identical: the job skips them) and one object outside the job's prefix
//! that nothing of the job may touch.
//!
//! 1. A dry run's `status.estimate` equals a count made here from the generated data by the
//!    rules of `docs/estimates.md` (objects and bytes, LIST/HEAD/GET/PUT/parts per side,
//!    egress), and its cost lines equal, to the cent, the built-in `aws-s3` (source) and
//!    `cloudflare-r2` (destination) prices applied by hand.
//! 2. The copy, then a `mode: Check`: `Completed`, 20,000 identical.
//! 3. Three corruptions with the test's own S3 client (one object rewritten with other bytes of
//!    the same size, one deleted, one of another size); a second check reports exactly those
//!    three keys (`Etag`, `Missing`, `Size`), `PartiallyCompleted`, exit 2. Garage's ETags of
//!    single-request uploads are MD5s of the bytes, so the default `verify: Checksum` sees the
//!    same-size rewrite from the listings (`Etag`, after a HEAD of the source); the case where
//!    only `verify: ReRead` tells (an ETag that is no MD5) is `check.rs`'s.
//! 4. `ferry rollback`: the job's objects are gone but the two changed since the copy (kept as
//!    `ChangedSinceCopy`); the deleted one counts as already undone; the 4 skipped objects and
//!    the foreign object are untouched. Judged by listing the bucket with the test's client.
//!
//! On moto (no `FERRY_TEST_GARAGE`) it returns at once: the point is the real server at scale,
//! and the same flows at small scale run on moto in `dry_run.rs`, `check.rs` and `rollback.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_tests::ferry::{last_json_object, run_ferry, spawn_ferry_sub, Run};
use ferry_tests::reports::{self, Kind};
use ferry_tests::server::garage_from_env;
use ferry_tests::*;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

/// Objects of a few hundred bytes to 4 KiB: 19,997 of them, and `BIG` above the threshold.
const SMALL: usize = 19_997;
/// Sizes of the three objects copied in parts (5 MiB parts): 2, 2 and 3 parts.
const BIG: [usize; 3] = [5 * MI + 1, 6 * MI, 11 * MI];
const PART: u64 = 5 * MI as u64;
/// The job's destination prefix; the foreign object lies outside it.
const DST_PREFIX: &str = "migrated/";
const FOREIGN: &str = "unrelated/keep-me.txt";
/// Small objects already at the destination, identical: a real run skips them.
const PRESENT: [usize; 4] = [0, 4_321, 12_345, SMALL - 1];
/// The three corruptions after the copy.
const REWRITTEN: usize = 777;
const DELETED: usize = 8_888;
const RESIZED: usize = 15_000;

fn small_key(i: usize) -> String {
    format!("photos/{i:05}.jpg")
}

fn small_size(i: usize) -> usize {
    200 + (i * 7_919) % 3_900
}

/// The source: key → bytes.
fn source() -> BTreeMap<String, Vec<u8>> {
    let mut t: BTreeMap<String, Vec<u8>> = (0..SMALL)
        .map(|i| (small_key(i), bytes(i as u64, small_size(i))))
        .collect();
    for (n, size) in BIG.iter().enumerate() {
        t.insert(
            format!("videos/clip-{n}.mp4"),
            bytes(100_000 + n as u64, *size),
        );
    }
    t
}

/// Put many objects, 64 at a time.
async fn put_many(s3: &S3, bucket: &str, objects: impl Iterator<Item = (String, Vec<u8>)>) {
    stream::iter(objects)
        .for_each_concurrent(64, |(k, v)| async move { s3.put(bucket, &k, v).await })
        .await;
}

/// How long one `ferry` command may take: 20,000 objects on a loaded CI machine with a debug
/// build took up to 163 s (the copy), beyond `Workdir::run`'s 240 s margin for comfort.
const LONG: Duration = Duration::from_secs(600);

/// Whole pico-dollars per dollar, and per cent.
const PICO: u128 = 1_000_000_000_000;
const CENT: u128 = PICO / 100;
/// A billed GB.
const GB: u128 = 1 << 30;

/// `num / den` pico-dollars rounded to the cent, halves up, as `0.00`.
fn usd(num: u128, den: u128) -> String {
    let cents = (2 * num + den * CENT) / (2 * den * CENT);
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn phase_of(run: &Run) -> String {
    last_json_object(&run.stdout)
        .and_then(|o| o["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn n(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

/// The lines of a check's report (key, difference, source size, destination size), sorted.
async fn check_lines(s3: &S3, bucket: &str, name: &str) -> Vec<(String, String, Value, Value)> {
    let mut out: Vec<_> = reports::s3_report_lines(s3, bucket, "default", name, Kind::Check)
        .await
        .into_iter()
        .map(|v| {
            let field = |f: &str| v[f].as_str().unwrap_or_default().to_string();
            (
                field("key"),
                field("difference"),
                v["sourceSize"].clone(),
                v["destinationSize"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `mode: Check` of the scenario's job under another name (and its own state directory).
async fn run_check(sc: &Scenario<'_>, name: &str) -> Run {
    let mut job = sc.job.clone().with("mode", json!("Check"));
    job.name = name.to_string();
    let state = sc.wd.path().join(format!("state-{name}"));
    run_ferry(&[&job.write(sc.wd.path())], &state, &[], LONG).await
}

#[tokio::test(flavor = "multi_thread")]
async fn estimate_check_and_rollback_of_20000_objects_on_garage() {
    if garage_from_env().is_none() {
        eprintln!("audit_garage: skipped (Garage only: set FERRY_TEST_GARAGE to a garage binary)");
        return;
    }
    ferry_bin(); // built before the clock starts
    let t0 = Instant::now();
    let src_tree = source();
    assert_eq!(src_tree.len(), 20_000);
    let sc = Scenario::two_servers("audit-garage")
        .destination_side(|s| s.prefix(DST_PREFIX))
        .multipart()
        .build()
        .await;
    let (src, src_bucket) = (sc.src_s3(), sc.src_bucket());
    let (dst, dst_bucket) = (sc.dst_s3(), sc.dst_bucket());
    put_many(src, src_bucket, src_tree.clone().into_iter()).await;
    let present: Vec<(String, Vec<u8>)> = PRESENT
        .iter()
        .map(|&i| {
            let k = small_key(i);
            (format!("{DST_PREFIX}{k}"), src_tree[&k].clone())
        })
        .chain([(FOREIGN.to_string(), b"not the job's\n".to_vec())])
        .collect();
    put_many(dst, dst_bucket, present.clone().into_iter()).await;
    let seeded = t0.elapsed();

    // ---- 1. The dry run's estimate against a count made here.
    let mut dry = sc.job.clone().with("dryRun", json!(true)).with(
        "pricing",
        json!({"source": "aws-s3", "destination": "cloudflare-r2"}),
    );
    dry.name = "audit-garage-dry".into();
    let run = run_ferry(
        &[&dry.write(sc.wd.path())],
        &sc.wd.path().join("state-dry"),
        &[],
        LONG,
    )
    .await;
    run.assert_exit(0).assert_phase("Completed");
    let e = run.status().0["estimate"].clone();

    let skipped: Vec<String> = PRESENT.iter().map(|&i| small_key(i)).collect();
    let to_copy: Vec<(&String, u64)> = src_tree
        .iter()
        .filter(|(k, _)| !skipped.contains(k))
        .map(|(k, v)| (k, v.len() as u64))
        .collect();
    let bytes_to_copy: u64 = to_copy.iter().map(|(_, s)| s).sum();
    let bytes_to_skip: u64 = skipped.iter().map(|k| src_tree[k].len() as u64).sum();
    // Above the threshold (5 MiB): 1 HEAD and one ranged GET per part at the source; create,
    // one UploadPart per part, complete at the destination. Else 1 GET and 1 PUT.
    let in_parts: Vec<u64> = to_copy
        .iter()
        .filter(|(_, s)| *s > PART)
        .map(|(_, s)| s.div_ceil(PART))
        .collect();
    let (big, parts) = (in_parts.len() as u64, in_parts.iter().sum::<u64>());
    let whole = to_copy.len() as u64 - big;
    assert_eq!((big, parts), (3, 7), "the data as designed");
    // LIST: one shard; the source's 20,000 selected keys in pages of 1,000; the destination's
    // up-to-date keys (4) in one page.
    let src_list = (src_tree.len() as u64).div_ceil(1000);
    let want = json!({
        "objectsToCopy": to_copy.len(), "bytesToCopy": bytes_to_copy,
        "objectsToSkip": skipped.len(), "bytesToSkip": bytes_to_skip,
        "objectsToDelete": 0, "objectsInParts": big, "parts": parts,
        "transport": "Streamed",
        "sourceRequests": {"list": src_list, "head": big, "get": whole + parts, "put": 0,
            "createMultipart": 0, "uploadPart": 0, "completeMultipart": 0, "copyObject": 0,
            "delete": 0},
        "destinationRequests": {"list": 1, "head": 0, "get": 0, "put": whole,
            "createMultipart": big, "uploadPart": parts, "completeMultipart": big,
            "copyObject": 0, "delete": 0},
        "egressBytes": bytes_to_copy, "destinationEgressBytes": 0,
    });
    let got: serde_json::Map<String, Value> = want
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), e[k].clone()))
        .collect();
    assert_eq!(
        Value::Object(got),
        want,
        "the estimate against the count by hand\n{}",
        run.describe()
    );

    // The cost, by hand, from the built-in tables (docs/estimates.md): aws-s3 egress 0.09/GB
    // (the first tier: well below 10 TB), Class A 5.00/M, Class B 0.40/M; cloudflare-r2 Class
    // A 4.50/M, storage 0.015/GB-month. Prices in pico-dollars.
    let egress = usd(u128::from(bytes_to_copy) * 90_000_000_000, GB);
    let src_req = usd(
        u128::from(src_list) * 5 * PICO + u128::from(big + whole + parts) * 400_000_000_000,
        1_000_000,
    );
    let dst_class_a = 1 + whole + big + parts + big;
    let dst_req = usd(u128::from(dst_class_a) * 4_500_000_000_000, 1_000_000);
    let cents = |s: &str| -> u64 { s.replace('.', "").parse().unwrap() };
    let total = cents(&egress) + cents(&src_req) + cents(&dst_req);
    let storage = usd(
        u128::from(bytes_to_copy + bytes_to_skip) * 15_000_000_000,
        GB,
    );
    let cost = &e["cost"];
    let line = |item: &str| -> String {
        cost["lines"]
            .as_array()
            .expect("cost lines")
            .iter()
            .find(|l| l["item"] == item)
            .unwrap_or_else(|| panic!("no cost line {item}: {cost:#}"))["usd"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        [
            line("source egress"),
            line("source requests"),
            line("destination requests"),
            line("destination storage per month"),
        ],
        [egress, src_req, dst_req, storage.clone()],
        "{cost:#}"
    );
    assert_eq!(
        cost["total"],
        format!("{}.{:02}", total / 100, total % 100),
        "{cost:#}"
    );
    assert_eq!(cost["storagePerMonth"], storage, "{cost:#}");
    assert_eq!(
        cost["tables"],
        json!([
            "source: aws-s3 (2026-06-04)",
            "destination: cloudflare-r2 (2026-08-03)"
        ])
    );
    assert!(
        run.stderr.contains("estimate of a real run"),
        "ferry run prints the estimate\n{}",
        run.describe()
    );
    let dry_time = run.elapsed;
    let only_present = |l: &BTreeMap<String, u64>| {
        let want: BTreeMap<String, u64> = present
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect();
        assert_eq!(l, &want, "the destination holds only what it held before");
    };
    only_present(&dst.list(dst_bucket).await);

    // ---- 2. The copy, then a check: every key identical.
    let run = run_ferry(
        &[&sc.job.write(sc.wd.path())],
        &sc.wd.state_dir(),
        &[],
        LONG,
    )
    .await;
    run.assert_exit(0)
        .assert_phase("Completed")
        .assert_counter("objectsCopied", to_copy.len() as u64)
        .assert_counter("objectsSkipped", skipped.len() as u64);
    let copy_time = run.elapsed;
    let listed = dst.list(dst_bucket).await;
    let mut want_after_copy: BTreeMap<String, u64> = src_tree
        .iter()
        .map(|(k, v)| (format!("{DST_PREFIX}{k}"), v.len() as u64))
        .collect();
    want_after_copy.insert(FOREIGN.into(), present.last().unwrap().1.len() as u64);
    assert_eq!(listed.len(), want_after_copy.len(), "keys after the copy");
    assert!(listed == want_after_copy, "keys and sizes after the copy");

    let check = |run: &Run| -> [u64; 5] {
        let c = run.status().0["check"].clone();
        ["identical", "missing", "different", "extra", "failed"]
            .map(|f| c.get(f).and_then(Value::as_u64).unwrap_or(0))
    };
    let run = run_check(&sc, "audit-garage-check-1").await;
    run.assert_exit(0).assert_phase("Completed");
    assert_eq!(check(&run), [20_000, 0, 0, 0, 0], "{}", run.describe());
    assert!(check_lines(dst, dst_bucket, "audit-garage-check-1")
        .await
        .is_empty());
    let check_time = run.elapsed;

    // ---- 3. Three corruptions behind the job's back, with this test's client.
    let key_at = |i: usize| format!("{DST_PREFIX}{}", small_key(i));
    let size = small_size(REWRITTEN);
    let mut other = bytes(REWRITTEN as u64, size);
    other[size / 2] ^= 0xff;
    dst.put(dst_bucket, &key_at(REWRITTEN), other.clone()).await;
    dst.delete(dst_bucket, &key_at(DELETED)).await;
    let resized = bytes(RESIZED as u64, small_size(RESIZED) + 1);
    dst.put(dst_bucket, &key_at(RESIZED), resized.clone()).await;

    let run = run_check(&sc, "audit-garage-check-2").await;
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    assert_eq!(check(&run), [19_997, 1, 2, 0, 0], "{}", run.describe());
    let sz = |i: usize| json!(small_size(i));
    assert_eq!(
        check_lines(dst, dst_bucket, "audit-garage-check-2").await,
        vec![
            (
                small_key(REWRITTEN),
                "Etag".into(),
                sz(REWRITTEN),
                sz(REWRITTEN)
            ),
            (
                small_key(DELETED),
                "Missing".into(),
                sz(DELETED),
                Value::Null
            ),
            (
                small_key(RESIZED),
                "Size".into(),
                sz(RESIZED),
                json!(small_size(RESIZED) + 1)
            ),
        ],
        "exactly the three corruptions"
    );

    // ---- 4. The rollback: the job's objects go, the changed ones stay, nothing else moves.
    let started = Instant::now();
    let child = spawn_ferry_sub(
        "rollback",
        &[&sc.job.write(sc.wd.path())],
        &sc.wd.state_dir(),
        &[],
    );
    let out = tokio::time::timeout(LONG, child.wait_with_output())
        .await
        .expect("ferry rollback did not finish in time")
        .expect("wait for ferry rollback");
    let run = Run::from_output(out, started.elapsed());
    run.assert_exit(2);
    let o = last_json_object(&run.stdout).expect("the rollback's JSON outcome");
    assert_eq!(phase_of(&run), "PartiallyRolledBack", "{o}");
    let written = to_copy.len() as u64;
    assert_eq!(
        (
            n(&o, "/rolledBack"),
            n(&o, "/alreadyUndone"),
            n(&o, "/kept"),
            n(&o, "/restored")
        ),
        (written - 3, 1, 2, 0),
        "{o}"
    );
    assert_eq!(o["keptByClass"], json!({"ChangedSinceCopy": 2}), "{o}");
    let rollback_time = run.elapsed;
    let mut left = present.clone();
    left.push((key_at(REWRITTEN), other));
    left.push((key_at(RESIZED), resized));
    let left: BTreeMap<String, Vec<u8>> = left.into_iter().collect();
    assert_eq!(
        dst.list(dst_bucket).await,
        left.iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect::<BTreeMap<_, _>>(),
        "after the rollback: the objects that were there before and the two changed since"
    );
    for (k, v) in &left {
        assert!(&dst.get(dst_bucket, k).await == v, "{k} is as it was");
    }
    eprintln!(
        "FIGURE audit_garage objects=20000 seed={:.1}s dry_run={:.1}s copy={:.1}s \
         check={:.1}s rollback={:.1}s total={:.1}s",
        seeded.as_secs_f64(),
        dry_time.as_secs_f64(),
        copy_time.as_secs_f64(),
        check_time.as_secs_f64(),
        rollback_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
