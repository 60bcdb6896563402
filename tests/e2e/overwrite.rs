//! Every overwrite policy against a pre-seeded destination: which objects get replaced.
//!
//! Keys: `same` (identical at the destination), `diff-size` (the destination has other bytes
//! of another size), `diff-content` (other bytes of the same size), `new` (absent at the
//! destination), and `dest-only` (only at the destination; Ferry never deletes).

use std::collections::BTreeSet;

use ferry_tests::fixtures::tree;
use ferry_tests::reports::{self, Kind};
use ferry_tests::*;
use serde_json::{json, Value};

fn source() -> Tree {
    tree([
        ("same", bytes(1, 1000)),
        ("diff-size", bytes(2, 1000)),
        ("diff-content", bytes(3, 1000)),
        ("new", bytes(4, 1000)),
    ])
}

fn seeded_destination() -> Tree {
    tree([
        ("same", bytes(1, 1000)),
        ("diff-size", bytes(20, 500)),
        ("diff-content", bytes(30, 1000)),
        ("dest-only", bytes(50, 10)),
    ])
}

/// The destination we expect when exactly `replaced` keys were copied from the source.
fn expected_after(replaced: &[&str]) -> Tree {
    let mut t = seeded_destination();
    for k in replaced {
        t.insert(k.to_string(), source()[*k].clone());
    }
    t
}

struct Outcome {
    run: Run,
    dst: Tree,
    /// Keys the destination saw a write for (PutObject, CopyObject, parts).
    written: BTreeSet<String>,
    manifest: Vec<Value>,
}

/// S3→S3 on one server through a counting proxy, with `overwrite: policy`.
async fn run_policy(test: &str, policy: &str) -> Outcome {
    let sc = Scenario::one_server(test)
        .source_tree(&source())
        .destination_tree(&seeded_destination())
        .one_proxy(FaultSchedule::none())
        .with("overwrite", json!(policy))
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    let written = sc
        .proxy()
        .data_puts()
        .into_iter()
        .map(|r| r.bucket_and_key())
        .filter(|(b, _)| *b == dst)
        .map(|(_, k)| k)
        .collect();
    let manifest = reports::s3_report_lines(s3, dst, "default", test, Kind::Manifest).await;
    Outcome {
        run,
        dst: s3.contents(dst).await,
        written,
        manifest,
    }
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn manifest_keys(o: &Outcome) -> BTreeSet<String> {
    reports::keys(&o.manifest).into_iter().collect()
}

fn replaced_flag(o: &Outcome, key: &str) -> Option<bool> {
    o.manifest
        .iter()
        .find(|l| l["key"] == key)
        .and_then(|l| l["replaced"].as_bool())
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_copies_only_absent_keys() {
    let o = run_policy("ow-skip", "Skip").await;
    assert_trees_eq(
        &expected_after(&["new"]),
        &o.dst,
        "Skip: only `new` is copied",
    );
    o.run
        .assert_counter("objectsCopied", 1)
        .assert_counter("objectsSkipped", 3);
    assert_eq!(
        o.written,
        set(&["new"]),
        "Skip: keys written at the destination"
    );
    assert_eq!(manifest_keys(&o), set(&["new"]), "Skip: manifest keys");
}

#[tokio::test(flavor = "multi_thread")]
async fn always_replaces_everything() {
    let o = run_policy("ow-always", "Always").await;
    assert_trees_eq(
        &expected_after(&["same", "diff-size", "diff-content", "new"]),
        &o.dst,
        "Always",
    );
    o.run
        .assert_counter("objectsCopied", 4)
        .assert_counter("objectsSkipped", 0);
    assert_eq!(
        o.written,
        set(&["same", "diff-size", "diff-content", "new"]),
        "Always: keys written"
    );
    assert_eq!(
        manifest_keys(&o),
        set(&["same", "diff-size", "diff-content", "new"]),
        "Always: manifest keys"
    );
    for k in ["same", "diff-size", "diff-content"] {
        assert_eq!(
            replaced_flag(&o, k),
            Some(true),
            "manifest `replaced` of {k} (it existed): {:#?}",
            o.manifest
        );
    }
    assert_eq!(
        replaced_flag(&o, "new"),
        Some(false),
        "manifest `replaced` of new: {:#?}",
        o.manifest
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn if_different_replaces_different_sizes_and_checksums() {
    let o = run_policy("ow-ifdiff", "IfDifferent").await;
    assert_trees_eq(
        &expected_after(&["diff-size", "diff-content", "new"]),
        &o.dst,
        "IfDifferent",
    );
    o.run
        .assert_counter("objectsCopied", 3)
        .assert_counter("objectsSkipped", 1);
    assert_eq!(
        o.written,
        set(&["diff-size", "diff-content", "new"]),
        "IfDifferent: `same` must not be rewritten"
    );
    assert_eq!(
        manifest_keys(&o),
        set(&["diff-size", "diff-content", "new"]),
        "IfDifferent: manifest keys"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn if_different_is_the_default() {
    let sc = Scenario::one_server("ow-default")
        .source_tree(&source())
        .destination_tree(&seeded_destination())
        .build()
        .await;
    sc.run()
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", 3)
        .assert_counter("objectsSkipped", 1);
    sc.assert_destination_eq(
        &expected_after(&["diff-size", "diff-content", "new"]),
        "default policy",
    )
    .await;
}

// IfNewer, with a filesystem source and destination so that mtimes are under our control.

const T_OLD: i64 = 1_704_067_200; // 2024-01-01
const T_MID: i64 = 1_709_251_200; // 2024-03-01
const T_NEW: i64 = 1_717_200_000; // 2024-06-01

/// key, source mtime, destination mtime (None: absent at the destination)
fn if_newer_cases() -> Vec<(&'static str, i64, Option<i64>)> {
    vec![
        ("source-newer", T_NEW, Some(T_OLD)),
        ("destination-newer", T_OLD, Some(T_NEW)),
        ("same-time", T_MID, Some(T_MID)),
        ("absent", T_MID, None),
    ]
}

/// An fs→fs scenario with `overwrite: IfNewer` over the files of [`if_newer_cases`].
async fn if_newer_scenario(test: &str) -> Scenario<'static> {
    let sc = Scenario::fs_to_fs(test)
        .with("overwrite", json!("IfNewer"))
        .build()
        .await;
    let (src, dst) = (sc.src_dir(), sc.dst_dir());
    for (i, (k, src_t, dst_t)) in if_newer_cases().into_iter().enumerate() {
        std::fs::write(src.join(k), bytes(i as u64, 100)).unwrap();
        set_mtime(&src.join(k), src_t);
        if let Some(t) = dst_t {
            std::fs::write(dst.join(k), bytes(i as u64 + 50, 60)).unwrap();
            set_mtime(&dst.join(k), t);
        }
    }
    sc
}

#[tokio::test(flavor = "multi_thread")]
async fn if_newer_replaces_only_older_destinations() {
    let sc = if_newer_scenario("ow-ifnewer").await;
    let run = sc.run().await;
    run.assert_exit(0)
        .assert_counter("objectsCopied", 2)
        .assert_counter("objectsSkipped", 2);
    let got = read_tree(sc.dst_dir());
    for (i, (k, _, _)) in if_newer_cases().into_iter().enumerate() {
        let from_source = bytes(i as u64, 100);
        let seeded = bytes(i as u64 + 50, 60);
        let want_source = matches!(k, "source-newer" | "absent");
        let want = if want_source { &from_source } else { &seeded };
        assert_eq!(
            &got[k],
            want,
            "IfNewer: {k} should {}",
            if want_source {
                "be copied from the source"
            } else {
                "keep the destination's bytes"
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn if_newer_does_not_recopy_what_it_copied() {
    let sc = if_newer_scenario("ow-ifnewer-again").await;
    sc.run().await.assert_exit(0);
    // A fresh job (new state) over the same trees: every destination file now carries its
    // source's mtime, so nothing is newer.
    let wd2 = Workdir::new("ow-ifnewer-again2");
    let run = wd2.run(&sc.job, &[]).await;
    run.assert_exit(0)
        .assert_counter("objectsCopied", 0)
        .assert_counter("objectsSkipped", 4);
}
