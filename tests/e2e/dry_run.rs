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
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = bucket_with(&s3, "dry-src", &source()).await;
    let dst = bucket_with(&s3, "dry-dst", &seeded()).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultSchedule::none()).await;
    let wd = Workdir::new("dry-s3");
    let job = Job::new(
        "dry-s3",
        Side::s3_at(&proxy.endpoint(), &server.creds, &src),
        Side::s3_at(&proxy.endpoint(), &server.creds, &dst),
    )
    .with("dryRun", json!(true))
    .with("multipart", small_multipart());

    let run = wd.run(&job, &[]).await;
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
        .list_all(&dst, "")
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        all_keys,
        vec!["changed".to_string(), "identical".to_string()],
        "a dry run must not write to the destination"
    );
    assert_bucket_eq(&s3, &dst, &seeded(), "destination after a dry run").await;
    let writes: Vec<_> = proxy
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
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = bucket_with(&s3, "dry-fs-src", &source()).await;
    let wd = Workdir::new("dry-fs");
    let dst = wd.subdir("dst");
    write_tree(&dst, &seeded());
    let before = all_paths(&dst);
    let job =
        Job::new("dry-fs", Side::s3(server, &src), Side::fs(&dst)).with("dryRun", json!(true));

    let run = wd.run(&job, &[]).await;
    run.assert_exit(0)
        .assert_phase("Completed")
        .assert_counter("objectsWouldCopy", 4)
        .assert_counter("objectsCopied", 0);
    assert_eq!(
        all_paths(&dst),
        before,
        "a dry run must not create anything in the destination directory"
    );
    assert_trees_eq(
        &seeded(),
        &read_tree(&dst),
        "destination directory after a dry run",
    );
}
