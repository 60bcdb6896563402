//! Progress while the copy runs: when copying, not listing, holds a shard back, a count-only
//! listing makes its total known long before its own listing reaches the end (so percent and
//! ETA show early), counting only the selected keys.

use std::time::{Duration, Instant};

use ferry_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_total_is_known_before_the_listing_ends() {
    // 3,000 selected files of 1,000 bytes, and 200 that a filter leaves out (listed last).
    let mut t = Tree::new();
    for i in 0..3000 {
        let key = format!("f-{i:04}.dat");
        t.insert(key.clone(), bytes(ferry_tests::data::seed_of(&key), 1000));
    }
    for i in 0..200u64 {
        t.insert(format!("x-{i:03}.skip"), bytes(i, 5000));
    }
    // About 300 objects a second: the listing (1,000 keys queued ahead of 4 copies) must wait.
    let sc = Scenario::fs_to_fs("census")
        .source_tree(&t)
        .with("filters", json!({ "exclude": ["*.skip"] }))
        .with("bandwidthLimit", json!("300Ki"))
        .with("parallelism", json!({ "shards": 1, "concurrency": 4 }))
        .build()
        .await;
    let wd = &sc.wd;
    let mut child = wd.spawn(&sc.job, &["--checkpoint-interval", "0.3"]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let early = loop {
        if let Some(state) = wd.shard_state(0) {
            if !state["expected"].is_null() {
                break state;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "ferry exited ({status}) before any progress record carried the expected total: {:?}",
                wd.shard_state(0)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no expected total in shard-0.json within 60 s: {:?}",
            wd.shard_state(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        early["expected"],
        json!({ "objects": 3000, "bytes": 3_000_000 }),
        "the count must cover exactly the selected keys; record: {early:#}"
    );
    let listed = early["counters"]["objectsTotal"].as_u64().unwrap_or(0);
    assert!(
        early["listingComplete"] == json!(false) && listed < 3000,
        "the total should be known while the listing is still under way (listed {listed}): {early:#}"
    );

    let out = child
        .wait_with_output()
        .await
        .expect("ferry runs to its end");
    let run = Run::from_output(out, Duration::ZERO);
    run.assert_exit(0)
        .assert_phase("Completed")
        .assert_counter("objectsTotal", 3000)
        .assert_counter("objectsCopied", 3000);
    let progress = &run.status().0["progress"];
    assert_eq!(
        (
            &progress["expected"],
            &progress["percent"],
            &progress["summary"]
        ),
        (
            &json!({ "objects": 3000, "bytes": 3_000_000 }),
            &json!("100%"),
            &json!("3000/3000")
        ),
        "{progress:#}"
    );
}
