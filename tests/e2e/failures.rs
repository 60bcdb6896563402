//! Failure budgets, job-fatal errors and invalid specs.
//!
//! Object-level failures come from keys that cannot be files (an S3 source with `a/../b`-like
//! keys and a filesystem destination): within `maxFailures` the job ends PartiallyCompleted
//! (exit 2), beyond it Failed (exit 1). A missing bucket is job-fatal (exit 1, a message naming
//! the bucket). An invalid spec exits 1 before anything is written.

use std::collections::BTreeSet;

use ferry_tests::data::all_paths;
use ferry_tests::fixtures::tree;
use ferry_tests::reports::{self, Kind};
use ferry_tests::*;
use serde_json::json;

fn good() -> Tree {
    small_objects("good/", 5, 200)
}

const BAD: [&str; 3] = ["a/../b", "./x", "a//b"];

fn source_tree() -> Tree {
    let mut t = good();
    for (i, k) in BAD.iter().enumerate() {
        t.insert(k.to_string(), bytes(i as u64 + 90, 10));
    }
    t
}

/// S3 source with 5 good and 3 unrepresentable keys → fs destination, with `max_failures`.
async fn run_with_budget(test: &str, max_failures: Option<&str>) -> (Run, Scenario<'static>) {
    let mut sc = Scenario::s3_to_fs(test).source_tree(&source_tree());
    if let Some(m) = max_failures {
        sc = sc.with("maxFailures", json!(m));
    }
    let sc = sc.build().await;
    (sc.run().await, sc)
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_within_max_failures_end_partially_completed() {
    let (run, sc) = run_with_budget("fail-within", Some("10")).await;
    let dst = sc.dst_dir();
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    run.assert_counter("objectsFailed", 3)
        .assert_counter("objectsCopied", 5)
        .assert_counter("objectsTotal", 8);
    assert_eq!(
        run.status().failures_of("Unrepresentable"),
        3,
        "failuresByClass\n{}",
        run.describe()
    );
    sc.assert_destination_eq(&good(), "the good keys are copied")
        .await;

    let lines = reports::fs_report_lines(dst, "default", "fail-within", Kind::Failures);
    let keys: BTreeSet<String> = reports::keys(&lines).into_iter().collect();
    assert_eq!(
        keys,
        BAD.iter().map(|k| k.to_string()).collect(),
        "keys of the failure report: {lines:#?}"
    );
    for l in &lines {
        assert_eq!(l["class"], "Unrepresentable", "failure report line: {l}");
        assert!(
            l.get("size").is_some() && l.get("attempts").is_some() && l.get("message").is_some(),
            "report line fields: {l}"
        );
    }
    let errors = run.status().first_errors();
    assert!(
        !errors.is_empty(),
        "firstErrors should show the failures\n{}",
        run.describe()
    );
    assert!(
        errors.iter().all(|e| e["class"] == "Unrepresentable"),
        "firstErrors: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_max_failures_means_any_number() {
    let (run, _sc) = run_with_budget("fail-nobudget", None).await;
    run.assert_exit(2)
        .assert_phase("PartiallyCompleted")
        .assert_counter("objectsFailed", 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_beyond_max_failures_end_failed() {
    let (run, _sc) = run_with_budget("fail-beyond", Some("0")).await;
    run.assert_exit(1).assert_phase("Failed");
    assert!(
        run.counter("objectsFailed") >= 1,
        "at least one failure was counted\n{}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_failures_as_a_percentage() {
    // 3 of 8 objects fail: 37.5%.
    let (run, _sc) = run_with_budget("fail-pct-ok", Some("50%")).await;
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    let (run, _sc) = run_with_budget("fail-pct-over", Some("10%")).await;
    run.assert_exit(1).assert_phase("Failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_source_bucket_fails_with_a_message_naming_it() {
    let server = shared_server();
    let sc = Scenario::between("nsb-src", Place::Missing(server), Place::Bucket(server))
        .build()
        .await;
    let missing = sc.src_bucket();
    let run = sc.run().await;
    run.assert_exit(1).assert_phase("Failed");
    let status = &run.status().0;
    assert!(
        run.status().message().contains(missing),
        "the status message should name the missing bucket {missing}: {:?}\n{}",
        run.status().message(),
        run.describe()
    );
    assert!(
        status.to_string().contains("NoSuchBucket"),
        "the status should say NoSuchBucket:\n{}",
        run.describe()
    );
    assert!(
        sc.dst_s3().list_all(sc.dst_bucket(), "").await.is_empty(),
        "nothing may be written to the destination"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_destination_bucket_fails_with_a_message_naming_it() {
    let server = shared_server();
    let sc = Scenario::between("nsb-dst", Place::Bucket(server), Place::Missing(server))
        .source_tree(&tree([("k", bytes(1, 10))]))
        .build()
        .await;
    let missing = sc.dst_bucket();
    let run = sc.run().await;
    run.assert_exit(1).assert_phase("Failed");
    assert!(
        run.status().message().contains(missing),
        "the status message should name the missing bucket {missing}: {:?}\n{}",
        run.status().message(),
        run.describe()
    );
}

/// An invalid spec exits 1 with a message on stderr and writes nothing: not to the
/// destination, not even the state directory.
async fn assert_rejected(
    test: &str,
    mutate: impl FnOnce(serde_json::Map<String, serde_json::Value>, &str) -> serde_json::Value,
) {
    let sc = Scenario::one_server(test)
        .source_tree(&tree([("k", bytes(1, 10))]))
        .build()
        .await;
    let wd = &sc.wd;
    let fs_dir = wd.subdir("fs");
    let spec = mutate(sc.job.spec.clone(), fs_dir.to_str().unwrap());
    let job = sc.job.clone().with_raw_spec(spec);
    let run = wd.run(&job, &[]).await;
    run.assert_exit(1);
    assert!(
        !run.stderr.trim().is_empty(),
        "{test}: an invalid spec should be explained on stderr\n{}",
        run.describe()
    );
    assert!(
        sc.dst_s3().list_all(sc.dst_bucket(), "").await.is_empty(),
        "{test}: an invalid spec must not write to the destination"
    );
    assert!(
        all_paths(&fs_dir).is_empty(),
        "{test}: an invalid spec must not write to the filesystem"
    );
    let state = wd.state_dir();
    assert!(
        !state.exists() || all_paths(&state).is_empty(),
        "{test}: an invalid spec must not write state: {:?}",
        all_paths(&state)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spec_with_two_source_kinds_is_rejected() {
    assert_rejected("inv-two-kinds", |mut spec, fs| {
        spec["source"]["filesystem"] = json!({ "path": fs });
        serde_json::Value::Object(spec)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spec_with_no_destination_kind_is_rejected() {
    assert_rejected("inv-no-dst", |mut spec, _| {
        spec.insert("destination".into(), json!({}));
        serde_json::Value::Object(spec)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spec_with_a_part_size_below_5mi_is_rejected() {
    assert_rejected("inv-part", |mut spec, _| {
        spec.insert(
            "multipart".into(),
            json!({ "threshold": "5Mi", "partSize": "1Mi" }),
        );
        serde_json::Value::Object(spec)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spec_with_a_bad_max_failures_is_rejected() {
    assert_rejected("inv-maxf", |mut spec, _| {
        spec.insert("maxFailures".into(), json!("lots"));
        serde_json::Value::Object(spec)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_spec_with_a_bad_glob_is_rejected() {
    assert_rejected("inv-glob", |mut spec, _| {
        spec.insert("filters".into(), json!({ "include": ["a[b"] }));
        serde_json::Value::Object(spec)
    })
    .await;
}

/// An object the source refuses to serve (403 AccessDenied, injected by the proxy for that key
/// only) is an object-level failure: the rest is copied, the job ends PartiallyCompleted, and
/// the failure report in the destination bucket names the key.
#[tokio::test(flavor = "multi_thread")]
async fn access_denied_objects_are_reported_in_an_s3_destination() {
    let mut t = small_objects("ok/", 6, 300);
    t.insert("secret/denied".into(), bytes(77, 123));
    let sc = Scenario::two_servers("denied")
        .source_tree(&t)
        .source_proxy(FaultSchedule::deny(&["secret/denied"]))
        .build()
        .await;
    let (s3b, dst) = (sc.dst_s3(), sc.dst_bucket());
    let run = sc.run().await;
    run.assert_exit(2)
        .assert_phase("PartiallyCompleted")
        .assert_counter("objectsFailed", 1)
        .assert_counter("objectsCopied", 6);
    assert_eq!(
        run.status().failures_of("AccessDenied"),
        1,
        "failuresByClass\n{}",
        run.describe()
    );
    sc.assert_destination_eq(
        &ferry_tests::fixtures::without(&t, &["secret/denied"]),
        "the other objects are copied",
    )
    .await;
    let lines = reports::s3_report_lines(s3b, dst, "default", "denied", Kind::Failures).await;
    assert_eq!(
        reports::keys(&lines),
        vec!["secret/denied".to_string()],
        "failure report: {lines:#?}"
    );
    assert_eq!(
        lines[0]["class"], "AccessDenied",
        "failure report: {lines:#?}"
    );
    let manifest = reports::s3_report_lines(s3b, dst, "default", "denied", Kind::Manifest).await;
    let mut listed = reports::keys(&manifest);
    listed.sort();
    let mut want: Vec<String> = t
        .keys()
        .filter(|k| *k != "secret/denied")
        .cloned()
        .collect();
    want.sort();
    assert_eq!(listed, want, "the manifest lists the keys written");
}

/// `--retry-failed` re-runs only the keys of the last run's failure report: once the source
/// serves the denied key again, the retry copies it and reads nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn retry_failed_copies_only_the_failed_keys() {
    let mut t = small_objects("ok/", 6, 300);
    t.insert("secret/denied".into(), bytes(78, 321));
    let sc = Scenario::two_servers("retry")
        .source_tree(&t)
        .source_proxy(FaultSchedule::deny(&["secret/denied"]))
        .build()
        .await;
    sc.run()
        .await
        .assert_exit(2)
        .assert_counter("objectsFailed", 1);

    let src_proxy = sc.src_proxy();
    src_proxy.set_schedule(FaultSchedule::none());
    src_proxy.clear();
    let retry = sc.run_with(&["--retry-failed"]).await;
    retry.assert_exit(0).assert_phase("Completed");
    sc.assert_destination_eq(&t, "destination after --retry-failed")
        .await;
    let gets = src_proxy.object_get_keys();
    assert!(
        gets.iter().all(|k| k == "secret/denied"),
        "--retry-failed should read only the failed key, read: {gets:?}"
    );
}

/// Wrong credentials are job-fatal: exit 1, Failed, no object marked failed, nothing written.
/// Needs a server that checks signatures (Garage; moto accepts any credentials).
#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_fail_the_job_without_failing_objects() {
    let garage_server;
    let server: &S3Server = if shared_server().is_garage() {
        shared_server()
    } else if let Some(bin) = ferry_tests::server::find_garage() {
        garage_server = ferry_tests::server::start_garage(&bin);
        &garage_server
    } else {
        eprintln!("skipped: needs Garage (moto does not check credentials); set FERRY_TEST_GARAGE");
        return;
    };
    let sc = Scenario::between("badcreds", Place::Bucket(server), Place::Bucket(server))
        .source_tree(&small_objects("k", 5, 100))
        .build()
        .await;
    let wrong = Creds {
        access_key: server.creds.access_key.clone(),
        secret_key: "0".repeat(64),
    };
    let job = Job::new(
        "badcreds",
        Side::s3_at(&server.endpoint, &wrong, sc.src_bucket()).secret_name("wrong"),
        Side::s3(server, sc.dst_bucket()).secret_name("right"),
    );
    let run = sc.wd.run(&job, &[]).await;
    run.assert_exit(1)
        .assert_phase("Failed")
        .assert_counter("objectsFailed", 0);
    assert!(
        !run.status().message().is_empty(),
        "the status should explain the failure\n{}",
        run.describe()
    );
    assert!(
        sc.dst_s3().list_all(sc.dst_bucket(), "").await.is_empty(),
        "nothing may be written to the destination"
    );
}
