//! The preflight (issue 16): before a real run the source is listed and one object read (a
//! ranged GET of its first byte), and the destination shown to accept writes (a multipart
//! upload created and aborted under `.ferry/preflight/`, leaving nothing). A permission that
//! is missing fails the job before anything is copied, with a message that names it; a dry
//! run writes nothing, not even the preflight's upload. A proxy in front of the real S3
//! server answers `403 AccessDenied` where a bucket policy would.

use ferry_tests::*;
use serde_json::json;

/// A source bucket with two objects (and an empty one listed first), a destination bucket,
/// both reached through `proxy`.
async fn buckets(name: &str) -> (S3, String, String) {
    let s3 = S3::for_server(shared_server());
    let src = s3.create_bucket(&format!("{name}-src")).await;
    let dst = s3.create_bucket(&format!("{name}-dst")).await;
    s3.put(&src, "a-empty", Vec::new()).await;
    s3.put(&src, "b", bytes(1, 1000)).await;
    s3.put(&src, "c", bytes(2, 2000)).await;
    (s3, src, dst)
}

fn job(name: &str, proxy: &FaultProxy, src: &str, dst: &str) -> Job {
    let creds = &shared_server().creds;
    Job::new(
        name,
        Side::s3_at(&proxy.endpoint(), creds, src),
        Side::s3_at(&proxy.endpoint(), creds, dst),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_that_refuses_writes_fails_before_any_copy_and_names_the_permission() {
    let name = "pf-write";
    let (s3, src, dst) = buckets(name).await;
    let proxy = FaultProxy::start(
        &shared_server().endpoint,
        FaultSchedule {
            deny_targets_containing: vec![".ferry/preflight/".into()],
            ..FaultSchedule::none()
        },
    )
    .await;
    let wd = Workdir::new(name);
    let run = wd.run(&job(name, &proxy, &src, &dst), &[]).await;
    run.assert_exit(1).assert_phase("Failed");
    let msg = run.status().message();
    assert!(
        msg.contains("s3:PutObject is denied") && msg.contains("does not accept writes"),
        "{msg}\n{}",
        run.describe()
    );
    assert!(
        proxy.data_puts().is_empty(),
        "nothing copied: {}",
        proxy.summary()
    );
    assert!(s3.list_all(&dst, "").await.is_empty());

    // A dry run does not try to write, so the same refusal does not stop it.
    let dry = wd
        .run(
            &job(name, &proxy, &src, &dst).with("dryRun", json!(true)),
            &[],
        )
        .await;
    dry.assert_exit(0);
    // Nor does a Check (it writes nothing to the destination but its report).
    let _ = std::fs::remove_dir_all(wd.state_dir());
    let check = wd
        .run(
            &job(name, &proxy, &src, &dst).with("mode", json!("Check")),
            &[],
        )
        .await;
    check.assert_exit(2).assert_phase("PartiallyCompleted");
    let posts = proxy.records_where(|r| r.method == "POST" && r.target.contains("preflight"));
    assert_eq!(
        posts.len(),
        1,
        "only the real run's preflight: {}",
        proxy.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_can_be_listed_but_not_read_fails_before_any_copy() {
    let name = "pf-read";
    let (s3, src, dst) = buckets(name).await;
    // The first non-empty object is the one the preflight reads.
    let proxy = FaultProxy::start(&shared_server().endpoint, FaultSchedule::deny(&["b"])).await;
    let wd = Workdir::new(name);
    let run = wd.run(&job(name, &proxy, &src, &dst), &[]).await;
    run.assert_exit(1).assert_phase("Failed");
    let msg = run.status().message();
    assert!(
        msg.contains("s3:GetObject is denied") && msg.contains(&format!("s3://{src}/b")),
        "{msg}\n{}",
        run.describe()
    );
    assert!(proxy.data_puts().is_empty(), "{}", proxy.summary());

    // Allowed, the same job copies, and the preflight left no upload open.
    proxy.set_schedule(FaultSchedule::none());
    proxy.clear();
    let _ = std::fs::remove_dir_all(wd.state_dir());
    let run = wd.run(&job(name, &proxy, &src, &dst), &[]).await;
    run.assert_exit(0).assert_phase("Completed");
    let ranged = proxy.records_where(|r| r.method == "POST" && r.target.contains("preflight"));
    assert_eq!(ranged.len(), 1, "{}", proxy.summary());
    let open = s3
        .client
        .list_multipart_uploads()
        .bucket(&dst)
        .send()
        .await
        .unwrap();
    assert!(
        open.uploads().is_empty(),
        "the preflight's upload is aborted: {open:?}"
    );
    let keys: Vec<String> = s3
        .list_all(&dst, "")
        .await
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.starts_with(".ferry/reports/"))
        .collect();
    assert_eq!(keys, ["a-empty", "b", "c"]);
}
