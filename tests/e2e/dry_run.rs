//! `dryRun: true` lists, compares and reports, and writes nothing: the destination stays as it
//! was, without even a `.ferry/` report.

use ferry_tests::data::all_paths;
use ferry_tests::fixtures::tree;
use ferry_tests::*;
use serde_json::json;

fn source() -> Tree {
    tree([
        ("identical", bytes(1, 100)),
        ("changed", bytes(2, 100)),
        ("new-1", bytes(3, 100)),
        ("new-2", bytes(4, 6 * MI)),
        ("new-3", Vec::new()),
    ])
}

fn seeded() -> Tree {
    tree([("identical", bytes(1, 100)), ("changed", bytes(20, 50))])
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_to_s3_writes_nothing_and_counts_would_copy() {
    let sc = Scenario::one_server("dry-s3")
        .source_tree(&source())
        .destination_tree(&seeded())
        .one_proxy(FaultSchedule::none())
        .with("dryRun", json!(true))
        .multipart()
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());

    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert!(
        run.status().dry_run(),
        "the status should say dryRun: true\n{}",
        run.describe()
    );
    run.assert_counter("objectsWouldCopy", 4)
        .assert_counter("objectsCopied", 0)
        .assert_counter("objectsSkipped", 1);

    let all_keys: Vec<String> = s3
        .list_all(dst, "")
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        all_keys,
        vec!["changed".to_string(), "identical".to_string()],
        "a dry run must not write to the destination"
    );
    sc.assert_destination_eq(&seeded(), "destination after a dry run")
        .await;
    let writes: Vec<_> = sc
        .proxy()
        .records()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "DELETE"))
        .collect();
    assert!(
        writes.is_empty(),
        "a dry run sent write requests:\n{}",
        writes
            .iter()
            .map(|r| format!("  {} {}\n", r.method, r.target))
            .collect::<String>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_to_fs_writes_nothing() {
    let sc = Scenario::s3_to_fs("dry-fs")
        .source_tree(&source())
        .destination_tree(&seeded())
        .with("dryRun", json!(true))
        .build()
        .await;
    let dst = sc.dst_dir();
    let before = all_paths(dst);

    let run = sc.run().await;
    run.assert_exit(0)
        .assert_phase("Completed")
        .assert_counter("objectsWouldCopy", 4)
        .assert_counter("objectsCopied", 0);
    assert_eq!(
        all_paths(dst),
        before,
        "a dry run must not create anything in the destination directory"
    );
    sc.assert_destination_eq(&seeded(), "destination directory after a dry run")
        .await;
}
