//! Every filter: include, exclude, caseInsensitive, minSize, maxSize, modifiedAfter,
//! modifiedBefore; patterns match keys relative to the source prefix; objects filtered out are
//! not counted at all.

use std::collections::BTreeSet;

use ferry_tests::data::rfc3339;
use ferry_tests::*;
use serde_json::{json, Value};

fn names() -> Vec<&'static str> {
    vec![
        "a.jpg",
        "b.JPG",
        "c.png",
        "photos/d.jpg",
        "photos/2024/e.jpg",
        "photos/2024/f.Jpg",
        "photos/g.png",
        "tmp/h.jpg",
        "tmp/deep/i.jpg",
        "docs/readme.txt",
    ]
}

fn keyed_tree() -> Tree {
    names()
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), bytes(i as u64, 10 + i)))
        .collect()
}

/// Run an S3→S3 job with `filters` over [`keyed_tree`] and return the destination keys.
async fn copied_with(test: &str, filters: Value) -> BTreeSet<String> {
    let sc = Scenario::one_server(test)
        .source_tree(&keyed_tree())
        .with("filters", filters)
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let got = destination_keys(&sc).await;
    // Objects filtered out are not counted at all.
    run.assert_counter("objectsTotal", got.len() as u64)
        .assert_counter("objectsCopied", got.len() as u64);
    for k in &got {
        assert_eq!(s3.get(dst, k).await, keyed_tree()[k], "bytes of {k}");
    }
    got
}

/// The keys in the scenario's destination bucket (Ferry's `.ferry/` left out).
async fn destination_keys(sc: &Scenario<'_>) -> BTreeSet<String> {
    sc.dst_s3()
        .list(sc.dst_bucket())
        .await
        .into_keys()
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn include_star_does_not_cross_slashes() {
    let got = copied_with("flt-star", json!({ "include": ["*.jpg"] })).await;
    assert_eq!(
        got,
        set(&["a.jpg"]),
        "`*.jpg` matches top-level .jpg keys only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn include_double_star_crosses_slashes() {
    let got = copied_with("flt-dstar", json!({ "include": ["**/*.jpg"] })).await;
    assert_eq!(
        got,
        set(&[
            "a.jpg",
            "photos/d.jpg",
            "photos/2024/e.jpg",
            "tmp/h.jpg",
            "tmp/deep/i.jpg"
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_includes_are_a_union() {
    let got = copied_with("flt-union", json!({ "include": ["*.png", "docs/**"] })).await;
    assert_eq!(got, set(&["c.png", "docs/readme.txt"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn exclude_wins_over_include() {
    let got = copied_with(
        "flt-excl",
        json!({ "include": ["**/*.jpg"], "exclude": ["tmp/**"] }),
    )
    .await;
    assert_eq!(got, set(&["a.jpg", "photos/d.jpg", "photos/2024/e.jpg"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn exclude_alone_selects_everything_else() {
    let got = copied_with("flt-exonly", json!({ "exclude": ["photos/**", "*.png"] })).await;
    assert_eq!(
        got,
        set(&[
            "a.jpg",
            "b.JPG",
            "tmp/h.jpg",
            "tmp/deep/i.jpg",
            "docs/readme.txt"
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patterns_are_case_sensitive_by_default() {
    let got = copied_with("flt-case", json!({ "include": ["photos/**/*.jpg"] })).await;
    assert_eq!(got, set(&["photos/d.jpg", "photos/2024/e.jpg"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn case_insensitive_matches_any_case() {
    let got = copied_with(
        "flt-nocase",
        json!({ "include": ["**/*.jpg"], "exclude": ["TMP/**"], "caseInsensitive": true }),
    )
    .await;
    assert_eq!(
        got,
        set(&[
            "a.jpg",
            "b.JPG",
            "photos/d.jpg",
            "photos/2024/e.jpg",
            "photos/2024/f.Jpg"
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn min_and_max_size_are_inclusive() {
    let t: Tree = [0usize, 1023, 1024, 2048, 4096, 4097, 10_000]
        .iter()
        .map(|&n| (format!("size-{n:05}"), bytes(n as u64, n)))
        .collect();
    let sc = Scenario::one_server("flt-size")
        .source_tree(&t)
        .with("filters", json!({ "minSize": "1Ki", "maxSize": "4Ki" }))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0)
        .assert_counter("objectsTotal", 3)
        .assert_counter("bytesTotal", 1024 + 2048 + 4096);
    let got = destination_keys(&sc).await;
    assert_eq!(
        got,
        set(&["size-01024", "size-02048", "size-04096"]),
        "minSize 1Ki and maxSize 4Ki, both inclusive"
    );
}

/// fs source with mtimes around the bounds: modifiedAfter is inclusive ("at or after"),
/// modifiedBefore exclusive ("before").
async fn copied_by_time(test: &str, filters: Value) -> BTreeSet<String> {
    let sc = Scenario::fs_to_fs(test)
        .with("filters", filters)
        .build()
        .await;
    let src = sc.src_dir();
    let times = [
        ("y2020", "2020-01-01T00:00:00Z"),
        ("y2023", "2023-12-31T23:59:59Z"),
        ("y2024-exact", "2024-01-01T00:00:00Z"),
        ("y2024-mid", "2024-06-01T12:00:00Z"),
        ("y2025-exact", "2025-01-01T00:00:00Z"),
        ("y2026", "2026-01-01T00:00:00Z"),
    ];
    for (i, (name, t)) in times.iter().enumerate() {
        let path = src.join("dir").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes(i as u64, 100 + i)).unwrap();
        let secs = chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp();
        set_mtime(&path, secs);
        assert_eq!(rfc3339(secs), *t);
    }
    let run = sc.run().await;
    run.assert_exit(0);
    let got: BTreeSet<String> = read_tree(sc.dst_dir()).into_keys().collect();
    run.assert_counter("objectsTotal", got.len() as u64);
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn modified_after_is_inclusive() {
    let got = copied_by_time(
        "flt-after",
        json!({ "modifiedAfter": "2024-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(
        got,
        set(&[
            "dir/y2024-exact",
            "dir/y2024-mid",
            "dir/y2025-exact",
            "dir/y2026"
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn modified_before_is_exclusive() {
    let got = copied_by_time(
        "flt-before",
        json!({ "modifiedBefore": "2024-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(got, set(&["dir/y2020", "dir/y2023"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn modified_window() {
    let got = copied_by_time(
        "flt-window",
        json!({ "modifiedAfter": "2024-01-01T00:00:00Z", "modifiedBefore": "2025-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(got, set(&["dir/y2024-exact", "dir/y2024-mid"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn patterns_match_keys_relative_to_the_source_prefix() {
    let t = ferry_tests::fixtures::tree([
        ("data/a.jpg", bytes(1, 10)),
        ("data/sub/b.jpg", bytes(2, 20)),
        ("data/c.txt", bytes(3, 30)),
        ("other/d.jpg", bytes(4, 40)),
    ]);
    let sc = Scenario::one_server("flt-prefix")
        .source_tree(&t)
        .source_side(|s| s.prefix("data/"))
        .with("filters", json!({ "include": ["*.jpg"] }))
        .build()
        .await;
    sc.run()
        .await
        .assert_exit(0)
        .assert_counter("objectsTotal", 1);
    let got = destination_keys(&sc).await;
    assert_eq!(
        got,
        set(&["a.jpg"]),
        "`*.jpg` against keys relative to `data/`"
    );
}
