//! Delete propagation (`spec.deletes.policy: Propagate`): destination keys absent at the
//! source are deleted once the whole copy succeeded, within `maxDeletes`, never a key the
//! filters leave out, nothing under `.ferry/` or the backup prefix; a run with more
//! candidates holds them all (`DeletesHeld`) until approved (`--approve-deletes <name>`);
//! a run with a failed copy or a listing error deletes nothing; a dry run only counts.
//!
//! Every scenario is small (a handful of keys of a few hundred bytes): what matters is which
//! keys survive, what `status.deletes` says, and what the `manifest-deletes-*` lines name.

use std::collections::BTreeSet;

use ferry_tests::fixtures::{tree, without};
use ferry_tests::reports::{self, Kind};
use ferry_tests::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

/// `deletes: {policy: Propagate, maxDeletes: max}` (plus `backupPrefix` when given).
fn propagate(max: &str, backup_prefix: Option<&str>) -> Value {
    let mut d = json!({ "policy": "Propagate", "maxDeletes": max });
    if let Some(b) = backup_prefix {
        d["backupPrefix"] = json!(b);
    }
    d
}

/// `status.deletes`, or a panic showing the output.
#[track_caller]
fn deletes_of(run: &Run) -> &Value {
    match run.status().0.get("deletes") {
        Some(d) if d.is_object() => d,
        _ => panic!("the status has no `deletes`\n{}", run.describe()),
    }
}

/// `status.deletes.<field>` as a number (absent = 0).
#[track_caller]
fn deletes_n(run: &Run, field: &str) -> u64 {
    match deletes_of(run).get(field) {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .unwrap_or_else(|| panic!("deletes.{field} is not a count: {v}")),
    }
}

/// Assert `status.deletes.state` and the given counters (`deletes.<field> == n`).
#[track_caller]
fn assert_deletes(run: &Run, state: &str, counts: &[(&str, u64)]) {
    let d = deletes_of(run);
    assert_eq!(
        d.get("state").and_then(Value::as_str),
        Some(state),
        "status.deletes.state: {d:#}\n{}",
        run.describe()
    );
    for (field, n) in counts {
        assert_eq!(
            deletes_n(run, field),
            *n,
            "status.deletes.{field}: {d:#}\n{}",
            run.describe()
        );
    }
}

/// The condition of `type` in the final status.
#[track_caller]
fn condition<'r>(run: &'r Run, kind: &str) -> &'r Value {
    run.status()
        .0
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no condition {kind} in the status\n{}", run.describe()))
}

/// The lines of the delete stage's manifests (`manifest-deletes-NNNNNN.jsonl`) of job `name`
/// in an S3 destination bucket.
async fn s3_deletes_manifest(s3: &S3, bucket: &str, name: &str) -> Vec<Value> {
    reports::s3_report_files(s3, bucket, "default", name, Kind::Manifest)
        .await
        .into_iter()
        .filter(|(key, _)| is_deletes_manifest(key))
        .flat_map(|(_, lines)| lines)
        .collect()
}

/// The same below a filesystem destination.
fn fs_deletes_manifest(root: &std::path::Path, name: &str) -> Vec<Value> {
    reports::fs_report_files(root, "default", name, Kind::Manifest)
        .into_iter()
        .filter(|(path, _)| is_deletes_manifest(path))
        .flat_map(|(_, lines)| lines)
        .collect()
}

fn is_deletes_manifest(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|f| f.starts_with("manifest-deletes-") && f.ends_with(".jsonl"))
}

/// Every key of the bucket, `.ferry/` included, with its bytes.
async fn everything(s3: &S3, bucket: &str) -> Tree {
    let mut out = Tree::new();
    for o in s3.list_all(bucket, "").await {
        let body = s3.get(bucket, &o.key).await;
        out.insert(o.key, body);
    }
    out
}

/// The ETags (unquoted) of the bucket's keys, as listed.
async fn etags(s3: &S3, bucket: &str) -> std::collections::BTreeMap<String, String> {
    s3.list_all(bucket, "")
        .await
        .into_iter()
        .map(|o| (o.key, o.etag.trim_matches('"').to_string()))
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn keyset(lines: &[Value]) -> BTreeSet<String> {
    reports::keys(lines).into_iter().collect()
}

/// `n` bytes of content particular to `key`.
fn body(key: &str, n: usize) -> Vec<u8> {
    bytes(ferry_tests::data::seed_of(key), n)
}

fn tree_of(keys: &[&str]) -> Tree {
    keys.iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), body(k, 100 + 37 * i)))
        .collect()
}

/// The destination's requests that delete or write an object outside `.ferry/`.
fn destructive(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .records()
        .into_iter()
        .filter(|r| {
            let (_, key) = r.bucket_and_key();
            !key.is_empty()
                && !ferry_tests::s3::is_ferry_key(&key)
                && matches!(r.method.as_str(), "DELETE" | "PUT")
                || (r.method == "POST" && r.query().contains("delete"))
        })
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The basics

/// Source a,b,c; destination a,b,x,y plus `keep.tmp` (excluded by the filters) and an object
/// of our own under `.ferry/`: one run copies c, deletes x and y, and leaves the rest.
#[tokio::test(flavor = "multi_thread")]
async fn propagate_deletes_destination_keys_absent_at_the_source() {
    let name = "del-basic";
    let source = tree_of(&["a", "b", "c"]);
    let mut seeded = without(&source, &["c"]);
    seeded.insert("x".into(), body("x", 321));
    seeded.insert("y".into(), body("y", 123));
    seeded.insert("keep.tmp".into(), body("keep.tmp", 50));
    seeded.insert(".ferry/not-a-report".into(), body(".ferry", 40));
    let sc = Scenario::one_server(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("filters", json!({ "exclude": ["*.tmp"] }))
        // 4 selected destination keys seen (a, b, x, y): 50% allows 2.
        .with("deletes", propagate("50%", None))
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let listed = etags(s3, dst).await;

    let run = sc.run().await;
    run.assert_exit(0)
        .assert_phase("Completed")
        .assert_counter("objectsCopied", 1)
        .assert_counter("objectsFailed", 0);
    assert_deletes(
        &run,
        "Done",
        &[
            ("candidates", 2),
            ("candidateBytes", 321 + 123),
            ("destinationObjects", 4),
            ("allowed", 2),
            ("deleted", 2),
            ("bytesDeleted", 321 + 123),
            ("kept", 0),
            ("failed", 0),
        ],
    );

    // x and y are gone; keep.tmp (filtered out) and our `.ferry/` object are untouched.
    let mut expected = source.clone();
    expected.insert("keep.tmp".into(), seeded["keep.tmp"].clone());
    sc.assert_destination_eq(&expected, "destination after propagating deletes")
        .await;
    assert_eq!(
        s3.try_get(dst, ".ferry/not-a-report").await.as_deref(),
        Some(seeded[".ferry/not-a-report"].as_slice()),
        "an object under .ferry/ must never be deleted"
    );

    // The delete manifest names x and y, deleted, with their sizes and ETags.
    let lines = s3_deletes_manifest(s3, dst, name).await;
    assert_eq!(
        keyset(&lines),
        set(&["x", "y"]),
        "manifest-deletes lines: {lines:#?}"
    );
    assert_eq!(lines.len(), 2, "one line per deleted key: {lines:#?}");
    for l in &lines {
        let key = l["key"].as_str().unwrap();
        assert_eq!(l["deleted"], json!(true), "manifest-deletes line: {l}");
        assert_eq!(
            l["size"].as_u64(),
            Some(seeded[key].len() as u64),
            "size in the manifest-deletes line: {l}"
        );
        assert_eq!(
            l["checksum"].as_str().map(|c| c.trim_matches('"')),
            Some(listed[key].as_str()),
            "checksum (the ETag the object had) in the manifest-deletes line: {l}"
        );
    }
    // The copy stage's own manifest names the copied key only, not as deleted.
    let copied: Vec<Value> = reports::s3_report_files(s3, dst, "default", name, Kind::Manifest)
        .await
        .into_iter()
        .filter(|(k, _)| !is_deletes_manifest(k))
        .flat_map(|(_, l)| l)
        .collect();
    assert_eq!(keyset(&copied), set(&["c"]), "copy manifest: {copied:#?}");
    assert!(
        copied
            .iter()
            .all(|l| l.get("deleted") != Some(&json!(true))),
        "a copied key is not marked deleted: {copied:#?}"
    );
}

/// `policy: Keep` (the default) deletes nothing, and the status says nothing of deletes.
#[tokio::test(flavor = "multi_thread")]
async fn keep_deletes_nothing() {
    let source = tree_of(&["a", "b"]);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 10));
    let sc = Scenario::one_server("del-keep")
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", json!({ "policy": "Keep" }))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    sc.assert_destination_eq(&seeded, "destination with policy Keep")
        .await;
    let d = run.status().0.get("deletes");
    assert!(
        d.is_none() || d == Some(&Value::Null),
        "policy Keep: no status.deletes expected, got {d:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The guard, and approving a held run

/// Source a,b; destination a,b plus `extra` keys absent at the source; `maxDeletes: "2"`.
async fn guarded(name: &str, extra: &[&str]) -> (Run, Scenario<'static>, Tree) {
    let source = tree_of(&["a", "b"]);
    let mut seeded = source.clone();
    for k in extra {
        seeded.insert(k.to_string(), body(k, 64));
    }
    let sc = Scenario::one_server(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", propagate("2", None))
        .build()
        .await;
    let run = sc.run().await;
    (run, sc, seeded)
}

#[tokio::test(flavor = "multi_thread")]
async fn more_candidates_than_max_deletes_are_all_held() {
    let (run, sc, seeded) = guarded("del-held", &["x", "y", "z"]).await;
    // Held is not a failure: the copy completed.
    run.assert_exit(0).assert_phase("Completed");
    assert_deletes(
        &run,
        "Held",
        &[("candidates", 3), ("allowed", 2), ("deleted", 0)],
    );
    let c = condition(&run, "DeletesHeld");
    assert_eq!(c["status"], "True", "DeletesHeld: {c}");
    assert_eq!(c["reason"], "MaxDeletesExceeded", "DeletesHeld: {c}");
    sc.assert_destination_eq(&seeded, "destination after a held run")
        .await;
    let lines = s3_deletes_manifest(sc.dst_s3(), sc.dst_bucket(), &sc.name).await;
    assert!(lines.is_empty(), "a held run deletes nothing: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_max_deletes_candidates_are_deleted() {
    let (run, sc, seeded) = guarded("del-atmax", &["x", "y"]).await;
    run.assert_exit(0).assert_phase("Completed");
    assert_deletes(
        &run,
        "Done",
        &[("candidates", 2), ("allowed", 2), ("deleted", 2)],
    );
    let c = condition(&run, "DeletesHeld");
    assert_eq!(c["status"], "False", "DeletesHeld: {c}");
    sc.assert_destination_eq(
        &without(&seeded, &["x", "y"]),
        "destination after deleting exactly maxDeletes candidates",
    )
    .await;
}

/// A held run (x, y, z absent at the source, `maxDeletes: "1"`); then x comes back at the
/// source and y changes at the destination; approving the run deletes z only and keeps x
/// and y. An approval naming another run changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn approving_a_held_run_deletes_the_candidates_still_due() {
    let name = "del-approve";
    let source = tree_of(&["a", "b"]);
    let mut seeded = source.clone();
    for k in ["x", "y", "z"] {
        seeded.insert(k.to_string(), body(k, 64));
    }
    let sc = Scenario::one_server(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", propagate("1", None))
        .build()
        .await;
    let (src_s3, src) = (sc.src_s3(), sc.src_bucket());
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());

    let held = sc.run().await;
    held.assert_exit(0).assert_phase("Completed");
    assert_deletes(&held, "Held", &[("candidates", 3), ("deleted", 0)]);

    // Since then: x is back at the source, y was rewritten at the destination.
    let x_at_source = body("x-again", 77);
    src_s3.put(src, "x", x_at_source.clone()).await;
    let y_now = body("y-rewritten", 64); // same size, other bytes: another ETag
    s3.put(dst, "y", y_now.clone()).await;

    // An approval for another run changes nothing.
    let other = sc.run_with(&["--approve-deletes", "some-other-run"]).await;
    other.assert_exit(0);
    assert_deletes(&other, "Held", &[("deleted", 0)]);
    let mut now = seeded.clone();
    now.insert("y".into(), y_now.clone());
    sc.assert_destination_eq(&now, "destination after approving another run")
        .await;

    let approved = sc.run_with(&["--approve-deletes", name]).await;
    approved.assert_exit(0).assert_phase("Completed");
    assert_deletes(
        &approved,
        "Done",
        &[
            ("candidates", 3),
            ("deleted", 1),
            ("kept", 2),
            ("failed", 0),
        ],
    );
    // (That the status names the approval is `an_approval_is_recorded_in_the_status`.)
    // z is gone; x (the destination's old bytes: the copy stage is not run again) and y (as
    // rewritten) stay.
    sc.assert_destination_eq(
        &without(&now, &["z"]),
        "destination after approving the held run",
    )
    .await;
    let lines = s3_deletes_manifest(s3, dst, name).await;
    assert_eq!(
        reports::keys(&lines),
        vec!["z".to_string()],
        "manifest-deletes after the approval: {lines:#?}"
    );
    assert_eq!(lines[0]["deleted"], json!(true), "{lines:#?}");
    assert_eq!(
        src_s3.get(src, "x").await,
        x_at_source,
        "the source is never written"
    );
}

/// `status.deletes.approved` names the run whose approval was acted on, and the condition
/// DeletesHeld turns False with reason DeletesApproved.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_is_recorded_in_the_status() {
    let name = "del-approved";
    let source = tree_of(&["a"]);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 64));
    let sc = Scenario::one_server(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", propagate("0", None))
        .build()
        .await;
    let held = sc.run().await;
    held.assert_exit(0).assert_phase("Completed");
    assert_deletes(&held, "Held", &[("candidates", 1), ("allowed", 0)]);

    let approved = sc.run_with(&["--approve-deletes", name]).await;
    approved.assert_exit(0).assert_phase("Completed");
    assert_deletes(&approved, "Done", &[("deleted", 1)]);
    sc.assert_destination_eq(&without(&seeded, &["x"]), "destination after the approval")
        .await;
    assert_eq!(
        deletes_of(&approved)
            .get("approved")
            .and_then(Value::as_str),
        Some(name),
        "status.deletes.approved should name the approved run\n{}",
        approved.describe()
    );
    let c = condition(&approved, "DeletesHeld");
    assert_eq!(c["status"], "False", "DeletesHeld after the approval: {c}");
    assert_eq!(
        c["reason"], "DeletesApproved",
        "DeletesHeld after the approval: {c}"
    );
}

/// Without `maxDeletes` the guard allows 10% of the selected destination keys, rounded
/// down: 12 seen (10 also at the source, 2 candidates) allow 1, so the 2 are held.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_max_deletes_is_ten_percent_rounded_down() {
    let source = small_objects("k", 10, 50);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 5));
    seeded.insert("y".into(), body("y", 6));
    let sc = Scenario::one_server("del-default")
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", json!({ "policy": "Propagate" }))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert_deletes(
        &run,
        "Held",
        &[
            ("candidates", 2),
            ("destinationObjects", 12),
            ("allowed", 1),
            ("deleted", 0),
        ],
    );
    sc.assert_destination_eq(&seeded, "destination after a held run")
        .await;
}

// ---------------------------------------------------------------------------------------------
// 3. No deletes after a failure

/// One object the source refuses to serve (403): the copy ends PartiallyCompleted, and no
/// candidate is deleted (not even by a later `--retry-failed` that succeeds).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_copy_deletes_nothing() {
    let source = tree_of(&["a", "b", "denied"]);
    let mut seeded = tree_of(&["a", "b"]);
    seeded.insert("x".into(), body("x", 99));
    seeded.insert("y".into(), body("y", 98));
    let sc = Scenario::two_servers("del-failed")
        .source_tree(&source)
        .destination_tree(&seeded)
        .source_proxy(FaultSchedule::deny(&["denied"]))
        .with("deletes", propagate("100%", None))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(2)
        .assert_phase("PartiallyCompleted")
        .assert_counter("objectsFailed", 1);
    assert_deletes(&run, "Skipped", &[("candidates", 2), ("deleted", 0)]);
    let c = condition(&run, "DeletesHeld");
    assert_eq!(c["reason"], "DeletesSkipped", "DeletesHeld: {c}");
    sc.assert_destination_eq(&seeded, "destination after a copy with a failure")
        .await;
    assert!(
        s3_deletes_manifest(sc.dst_s3(), sc.dst_bucket(), &sc.name)
            .await
            .is_empty(),
        "no manifest-deletes after a failed copy"
    );

    // A retry of the failed keys copies them and still deletes nothing.
    sc.src_proxy().set_schedule(FaultSchedule::none());
    let retry = sc.run_with(&["--retry-failed"]).await;
    retry.assert_exit(0).assert_phase("Completed");
    let mut expected = seeded.clone();
    expected.insert("denied".into(), source["denied"].clone());
    sc.assert_destination_eq(&expected, "destination after --retry-failed")
        .await;
}

/// Two shards; every source listing after the first shard's boundary (`start-after=`) is
/// refused (403), so the second shard's listing fails while the first completes and finds its
/// candidates. The job deletes nothing: not the first shard's candidates either.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_listing_error_deletes_nothing() {
    let source = tree_of(&["a1", "a2", "m1", "m2", "t1", "t2"]);
    let mut seeded = source.clone();
    for k in ["b-gone", "c-gone", "s-gone", "z-gone"] {
        seeded.insert(k.to_string(), body(k, 55));
    }
    let sc = Scenario::two_servers("del-listerr")
        .source_tree(&source)
        .destination_tree(&seeded)
        .source_proxy(FaultSchedule {
            deny_targets_containing: vec!["start-after=".into()],
            ..Default::default()
        })
        .with("parallelism", json!({ "shards": 2 }))
        .with("deletes", propagate("100%", None))
        .build()
        .await;
    let run = sc.run().await;
    let proxy = sc.src_proxy();
    let denied = proxy.faults(ferry_tests::proxy::Fault::Denied);
    assert!(
        denied > 0,
        "no listing was refused: the test did not test anything\n{}",
        proxy.summary()
    );
    assert_ne!(
        run.code,
        Some(0),
        "a listing error is not a success\n{}",
        run.describe()
    );
    // The first shard completed and found its candidates (b-gone, c-gone): it is the guard,
    // over the whole job, that deletes none of them.
    let shards = run.status().0["shards"].clone();
    assert_eq!(
        shards[0]["state"],
        "Completed",
        "the first shard should complete: {shards:#}\n{}",
        run.describe()
    );
    assert!(
        deletes_n(&run, "candidates") >= 1,
        "the completed shard should have found candidates\n{}",
        run.describe()
    );
    assert_deletes(&run, "Skipped", &[("deleted", 0)]);
    sc.assert_destination_eq(&seeded, "destination after a source listing error")
        .await;
    assert!(
        s3_deletes_manifest(sc.dst_s3(), sc.dst_bucket(), &sc.name)
            .await
            .is_empty(),
        "no manifest-deletes after a listing error"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Backups

/// Destination prefix `data/`, `backupPrefix: data/bk/`: each deleted object is first copied
/// to `data/bk/<full key>` with the same bytes; an older backup already under the prefix is
/// never a candidate.
#[tokio::test(flavor = "multi_thread")]
async fn deleted_objects_are_backed_up_under_the_backup_prefix() {
    let name = "del-backup";
    let source = tree_of(&["a"]);
    let sc = Scenario::one_server(name)
        .source_tree(&source)
        .destination_side(|s| s.prefix("data/"))
        .with("deletes", propagate("100%", Some("data/bk/")))
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let before: Tree = tree([
        ("data/a", source["a"].clone()),
        ("data/x", body("x", 300)),
        ("data/sub/y", body("sub/y", 200)),
        ("data/bk/old", body("old backup", 10)),
        ("outside", body("outside", 20)),
    ]);
    s3.put_all(dst, &before).await;

    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert_deletes(&run, "Done", &[("candidates", 2), ("deleted", 2)]);

    let after = everything(s3, dst).await;
    let after: Tree = after
        .into_iter()
        .filter(|(k, _)| !ferry_tests::s3::is_ferry_key(k))
        .collect();
    let expected: Tree = tree([
        ("data/a", source["a"].clone()),
        ("data/bk/old", before["data/bk/old"].clone()),
        ("data/bk/data/x", before["data/x"].clone()),
        ("data/bk/data/sub/y", before["data/sub/y"].clone()),
        ("outside", before["outside"].clone()),
    ]);
    assert_trees_eq(&expected, &after, "bucket after deletes with backups");
    let lines = s3_deletes_manifest(s3, dst, name).await;
    assert_eq!(
        keyset(&lines),
        set(&["data/x", "data/sub/y"]),
        "manifest-deletes: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Dry run

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_counts_candidates_and_deletes_nothing() {
    let source = tree_of(&["a", "b"]);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 70));
    seeded.insert("y".into(), body("y", 30));
    let sc = Scenario::one_server("del-dry")
        .source_tree(&source)
        .destination_tree(&seeded)
        .one_proxy(FaultSchedule::none())
        .with("dryRun", json!(true))
        .with("deletes", propagate("100%", None))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert!(run.status().dry_run(), "dryRun: true\n{}", run.describe());
    assert_deletes(
        &run,
        "DryRun",
        &[("candidates", 2), ("candidateBytes", 100), ("deleted", 0)],
    );
    sc.assert_destination_eq(&seeded, "destination after a dry run")
        .await;
    let writes = destructive(sc.proxy());
    assert!(
        writes.is_empty(),
        "a dry run sent writes or deletes: {writes:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. A filesystem destination

/// S3 → directory: files absent at the source are deleted (a nested one too); a file the
/// filters leave out stays. Directories left empty are not looked at.
#[tokio::test(flavor = "multi_thread")]
async fn files_absent_at_the_source_are_deleted_from_a_directory() {
    let name = "del-fs";
    let source = tree_of(&["a", "dir/b"]);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 40));
    seeded.insert("dir/y".into(), body("dir/y", 41));
    seeded.insert("gone/deep/z".into(), body("z", 42));
    seeded.insert("notes.tmp".into(), body("notes", 43));
    let sc = Scenario::s3_to_fs(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("filters", json!({ "exclude": ["*.tmp"] }))
        .with("deletes", propagate("100%", None))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert_deletes(
        &run,
        "Done",
        &[
            ("candidates", 3),
            ("deleted", 3),
            ("kept", 0),
            ("failed", 0),
        ],
    );
    let files: Tree = read_tree(sc.dst_dir())
        .into_iter()
        .filter(|(k, _)| !k.ends_with('/'))
        .collect();
    let mut expected = source.clone();
    expected.insert("notes.tmp".into(), seeded["notes.tmp"].clone());
    assert_trees_eq(&expected, &files, "directory after propagating deletes");
    let lines = fs_deletes_manifest(sc.dst_dir(), name);
    assert_eq!(
        keyset(&lines),
        set(&["x", "dir/y", "gone/deep/z"]),
        "manifest-deletes: {lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l["deleted"] == json!(true)),
        "{lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// More: failed deletes, unusual keys, a filesystem source

/// The lines of the delete stage's failure reports (`delete-failures-NNNNNN.jsonl`) of job
/// `name` in an S3 destination bucket.
async fn s3_delete_failures(s3: &S3, bucket: &str, name: &str) -> Vec<Value> {
    let marker = format!(".ferry/reports/default/{name}/");
    let mut out = Vec::new();
    for o in s3.list_all(bucket, ".ferry/").await {
        let file = o.key.rsplit('/').next().unwrap_or("");
        if o.key.contains(&marker) && file.starts_with("delete-failures-") {
            let text = String::from_utf8(s3.get(bucket, &o.key).await).expect("UTF-8");
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                out.push(serde_json::from_str(l).expect("a JSON line"));
            }
        }
    }
    out
}

/// A candidate the destination refuses to let go of (403 on its requests) is counted as
/// failed and reported; the others are deleted; the job ends PartiallyCompleted (exit 2).
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_that_fails_is_counted_and_reported() {
    let name = "del-delfail";
    let source = tree_of(&["a", "b"]);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 20));
    seeded.insert("y".into(), body("y", 21));
    let sc = Scenario::two_servers(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .destination_proxy(FaultSchedule::deny(&["x"]))
        .with("deletes", propagate("100%", None))
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let run = sc.run().await;
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    assert_deletes(
        &run,
        "Done",
        &[("candidates", 2), ("deleted", 1), ("failed", 1)],
    );
    sc.assert_destination_eq(
        &without(&seeded, &["y"]),
        "destination after one delete failed",
    )
    .await;
    let failures = s3_delete_failures(s3, dst, name).await;
    assert_eq!(
        reports::keys(&failures),
        vec!["x".to_string()],
        "delete-failures lines: {failures:#?}"
    );
    let lines = s3_deletes_manifest(s3, dst, name).await;
    assert_eq!(keyset(&lines), set(&["y"]), "manifest-deletes: {lines:#?}");
    // `ferry report` prints the failed delete, with its class.
    let report = sc
        .wd
        .report(&sc.job, &["--show", "delete-failures", "--format", "csv"]);
    report.assert_exit(0);
    let rows: Vec<&str> = report.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{}", report.stdout);
    assert!(rows[1].starts_with("x,20,AccessDenied,"), "{}", rows[1]);
}

/// Keys that need escaping (spaces, `+`, `%`, `&`, non-ASCII) are deleted and backed up as
/// themselves.
#[tokio::test(flavor = "multi_thread")]
async fn candidates_with_unusual_keys_are_backed_up_and_deleted() {
    let name = "del-oddkeys";
    let odd = ["dir with space/a+b.txt", "100%/x&y=z", "é/ü ñ", "q?r#s"];
    let source = tree_of(&["keep"]);
    let mut seeded = source.clone();
    for k in odd {
        seeded.insert(k.to_string(), body(k, 33));
    }
    let sc = Scenario::one_server(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", propagate("100%", Some("bk/")))
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert_deletes(
        &run,
        "Done",
        &[
            ("candidates", odd.len() as u64),
            ("deleted", odd.len() as u64),
        ],
    );
    let mut expected = source.clone();
    for k in odd {
        expected.insert(format!("bk/{k}"), seeded[k].clone());
    }
    sc.assert_destination_eq(&expected, "bucket after deleting unusual keys")
        .await;
    let lines = s3_deletes_manifest(s3, dst, name).await;
    assert_eq!(
        keyset(&lines),
        odd.iter().map(|k| k.to_string()).collect(),
        "manifest-deletes: {lines:#?}"
    );
}

/// A directory source: the delete stage looks each candidate up in the directory again.
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_source_propagates_deletes_to_a_bucket() {
    let source = tree_of(&["a", "sub/b"]);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 12));
    seeded.insert("sub/y".into(), body("sub/y", 13));
    let sc = Scenario::fs_to_s3("del-fs-src")
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", propagate("100%", None))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert_deletes(&run, "Done", &[("candidates", 2), ("deleted", 2)]);
    sc.assert_destination_eq(&source, "bucket after deletes from a directory source")
        .await;
}

/// A directory destination has no ETags: a held candidate rewritten since (same size, another
/// modification time) is kept when the run is approved; an untouched one is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_since_listed_is_kept_on_approval() {
    let name = "del-fs-approve";
    let source = tree_of(&["a"]);
    let mut seeded = source.clone();
    seeded.insert("x".into(), body("x", 30));
    seeded.insert("y".into(), body("y", 31));
    let sc = Scenario::s3_to_fs(name)
        .source_tree(&source)
        .destination_tree(&seeded)
        .with("deletes", propagate("0", None))
        .build()
        .await;
    let held = sc.run().await;
    held.assert_exit(0).assert_phase("Completed");
    assert_deletes(&held, "Held", &[("candidates", 2), ("deleted", 0)]);

    let y = sc.dst_dir().join("y");
    let y_now = body("y-rewritten", 31);
    std::fs::write(&y, &y_now).expect("rewrite y");
    set_mtime(&y, ferry_tests::data::now_secs() + 3600);

    let approved = sc.run_with(&["--approve-deletes", name]).await;
    approved.assert_exit(0).assert_phase("Completed");
    assert_deletes(&approved, "Done", &[("deleted", 1), ("kept", 1)]);
    let files: Tree = read_tree(sc.dst_dir())
        .into_iter()
        .filter(|(k, _)| !k.ends_with('/'))
        .collect();
    let expected = tree([("a", source["a"].clone()), ("y", y_now)]);
    assert_trees_eq(&expected, &files, "directory after the approval");
}
