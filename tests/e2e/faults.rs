//! Copies through a faulty network: 503 SlowDown, connection resets and truncated bodies on a
//! deterministic schedule. The job must still complete with every object byte-identical.

use ferry_tests::proxy::Fault;
use ferry_tests::reports::{self, Kind};
use ferry_tests::*;

/// ~100 objects: small ones, zero-byte ones, and multipart ones (threshold 5Mi).
fn objects() -> Tree {
    let mut t = small_objects("small/", 92, 64 * 1024);
    t.insert("zero-1".into(), Vec::new());
    t.insert("zero-2".into(), Vec::new());
    t.insert("mp/six".into(), bytes(1, 6 * MI));
    t.insert("mp/eleven".into(), bytes(2, 11 * MI + 5));
    t.insert("mp/sixteen".into(), bytes(3, 16 * MI + 3));
    t
}

const SOURCE_MULTIPART_KEY: &str = "mp/uploaded-in-parts";
fn source_multipart() -> Vec<u8> {
    bytes(4, 10 * MI + 1)
}

fn expected() -> Tree {
    let mut t = objects();
    t.insert(SOURCE_MULTIPART_KEY.into(), source_multipart());
    t
}

/// A scenario along `route` whose source holds [`objects`] and the object uploaded in parts
/// (a file in a directory source), with the small multipart settings.
fn with_every_object(route: ScenarioBuilder<'static>) -> ScenarioBuilder<'static> {
    route
        .source_tree(&objects())
        .source_uploaded_in_parts(SOURCE_MULTIPART_KEY, source_multipart(), 5 * MI)
        .multipart()
}

fn schedule(reset_after_forwarding: bool) -> FaultSchedule {
    FaultSchedule {
        slowdown_every: 4,
        reset_every: 7,
        truncate_get_every: 5,
        reset_after_forwarding,
        scrambled: true,
        ..Default::default()
    }
}

/// The faults a proxy injected, for assertion messages.
fn injected(proxy: &FaultProxy) -> String {
    format!(
        "{} SlowDown, {} Reset, {} Truncate",
        proxy.faults(Fault::SlowDown),
        proxy.faults(Fault::Reset),
        proxy.faults(Fault::Truncate)
    )
}

/// Assert exit 0; otherwise fail with the failure report in the scenario's destination
/// (attempts per key), what the proxies saw for the failed keys, and the output.
async fn assert_exit_0_or_show_report(
    run: &Run,
    sc: &Scenario<'_>,
    faults: &str,
    proxies: &[&FaultProxy],
) {
    if run.code == Some(0) {
        return;
    }
    let report = reports::s3_report_files(
        sc.dst_s3(),
        sc.dst_bucket(),
        "default",
        &sc.name,
        Kind::Failures,
    )
    .await;
    let failed: Vec<String> = run
        .status
        .as_ref()
        .map(|s| s.first_errors())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["key"].as_str().map(str::to_string))
        .collect();
    let mut seen = String::new();
    for key in &failed {
        for p in proxies {
            for r in p
                .records()
                .into_iter()
                .filter(|r| r.bucket_and_key().1 == *key)
            {
                seen.push_str(&format!(
                    "  {} #{} {} {} status={:?} fault={:?}\n",
                    p.endpoint(),
                    r.seq,
                    r.method,
                    r.target,
                    r.status,
                    r.fault
                ));
            }
        }
    }
    panic!(
        "{faults}\nfailure report files: {report:#?}\nrequests for the failed keys:\n{seen}ferry exited {:?}, expected 0\n{}",
        run.code,
        run.describe()
    );
}

/// S3→S3 across two servers, each behind a faulty proxy.
async fn streaming_through_faults(test: &str, reset_after_forwarding: bool) {
    let sc = with_every_object(Scenario::two_servers(test))
        .source_proxy(schedule(reset_after_forwarding))
        .destination_proxy(schedule(reset_after_forwarding))
        .with(
            "parallelism",
            serde_json::json!({ "shards": 1, "concurrency": 16 }),
        )
        .build()
        .await;

    let run = sc.run().await;
    let (src_proxy, dst_proxy) = (sc.src_proxy(), sc.dst_proxy());
    let faults = format!(
        "faults injected: source {}; destination {}",
        injected(src_proxy),
        injected(dst_proxy)
    );
    assert_exit_0_or_show_report(&run, &sc, &faults, &[src_proxy, dst_proxy]).await;
    run.assert_phase("Completed")
        .assert_counter("objectsFailed", 0)
        .assert_counter("objectsCopied", expected().len() as u64);
    sc.assert_destination_eq(
        &expected(),
        &format!("destination after copying through faults ({faults})"),
    )
    .await;
    // The schedule really hit the copy.
    assert!(
        src_proxy.faults(Fault::Truncate) > 0,
        "no truncated GET happened; {faults}"
    );
    assert!(
        src_proxy.faults(Fault::SlowDown) + dst_proxy.faults(Fault::SlowDown) > 0,
        "{faults}"
    );
    assert!(
        src_proxy.faults(Fault::Reset) + dst_proxy.faults(Fault::Reset) > 0,
        "{faults}"
    );
    // Faults before forwarding never reach the server, so no upload can be orphaned by them.
    // (After an ambiguous CreateMultipartUpload an orphan is unavoidable until the next start
    // sweeps it: see `an_upload_orphaned_by_an_ambiguous_create_is_swept_by_the_next_start`.)
    if !reset_after_forwarding {
        assert_no_open_uploads(sc.dst_s3(), sc.dst_bucket(), "after copying through faults").await;
    }
}

async fn open_uploads(s3: &S3, bucket: &str) -> Vec<String> {
    let uploads = s3
        .client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list uploads");
    uploads
        .uploads()
        .iter()
        .map(|u| {
            format!(
                "{} ({})",
                u.key().unwrap_or_default(),
                u.upload_id().unwrap_or_default()
            )
        })
        .collect()
}

async fn assert_no_open_uploads(s3: &S3, bucket: &str, when: &str) {
    let open = open_uploads(s3, bucket).await;
    assert!(
        open.is_empty(),
        "multipart uploads left open at the destination {when}: {open:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_copy_survives_slowdowns_resets_and_truncated_bodies() {
    streaming_through_faults("faults-stream", false).await;
}

/// Resets after the server performed the request: the client cannot know whether a PUT, a
/// part or a CompleteMultipartUpload happened, and must cope either way.
#[tokio::test(flavor = "multi_thread")]
async fn streaming_copy_survives_resets_after_the_server_acted() {
    streaming_through_faults("faults-ambiguous", true).await;
}

/// Runs a scenario of [`with_every_object`] whose one faulty proxy is `proxy`: exit 0 (or
/// the failure report), no failed object, and every object at the destination (`after`
/// names the copy). Returns the faults injected, for further messages.
async fn survives_one_faulty_proxy(sc: &Scenario<'_>, proxy: &FaultProxy, after: &str) -> String {
    let run = sc.run().await;
    let faults = format!("faults injected: {}", injected(proxy));
    assert_exit_0_or_show_report(&run, sc, &faults, &[proxy]).await;
    run.assert_counter("objectsFailed", 0);
    sc.assert_destination_eq(
        &expected(),
        &format!("destination after {after} through faults ({faults})"),
    )
    .await;
    faults
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_copy_survives_slowdowns_and_resets() {
    let sc = with_every_object(Scenario::one_server("faults-ssc"))
        .one_proxy(schedule(false))
        .build()
        .await;
    let proxy = sc.proxy();
    let faults = survives_one_faulty_proxy(&sc, proxy, "a server-side copy").await;
    assert!(
        proxy.faults(Fault::SlowDown) > 0 && proxy.faults(Fault::Reset) > 0,
        "{faults}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_to_s3_survives_slowdowns_and_resets() {
    let sc = with_every_object(Scenario::fs_to_s3("faults-fs-s3"))
        .destination_proxy(schedule(false))
        .build()
        .await;
    survives_one_faulty_proxy(&sc, sc.dst_proxy(), "fs→S3").await;
}

/// The failure report and the manifest are written even when the destination throttles the
/// first writes under `.ferry/reports/` (more 503s than one request's retries absorb): a job
/// that says "see the failure report" must have one.
#[tokio::test(flavor = "multi_thread")]
async fn reports_are_written_despite_a_throttling_destination() {
    let mut t = small_objects("ok/", 6, 300);
    t.insert("secret/denied".into(), bytes(77, 123));
    let sc = Scenario::two_servers("rep-flaky")
        .source_tree(&t)
        .source_proxy(FaultSchedule::deny(&["secret/denied"]))
        .destination_proxy(FaultSchedule {
            slowdown_first: 4,
            only_targets_containing: Some(".ferry/reports/".into()),
            ..Default::default()
        })
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(2).assert_counter("objectsFailed", 1);
    let throttled = sc.dst_proxy().faults(Fault::SlowDown);
    let (s3b, dst) = (sc.dst_s3(), sc.dst_bucket());
    let failures = reports::s3_report_lines(s3b, dst, "default", "rep-flaky", Kind::Failures).await;
    assert_eq!(
        reports::keys(&failures),
        vec!["secret/denied".to_string()],
        "the failure report after {throttled} throttled report writes\n{}",
        run.describe()
    );
    let manifest = reports::s3_report_lines(s3b, dst, "default", "rep-flaky", Kind::Manifest).await;
    assert_eq!(
        reports::keys(&manifest).len(),
        6,
        "the manifest after {throttled} throttled report writes: {manifest:#?}\n{}",
        run.describe()
    );
}

/// fs→S3 of one 3-part object through a proxy that resets the connection of the first
/// matching request after the server performed it.
async fn run_with_one_ambiguous_request(
    test: &str,
    method: &str,
    target_contains: &str,
) -> (Run, Scenario<'static>) {
    let t: Tree = [("big/three-parts".to_string(), bytes(11, 11 * MI))]
        .into_iter()
        .collect();
    let sc = Scenario::fs_to_s3(test)
        .source_tree(&t)
        .destination_proxy(FaultSchedule {
            reset_first: 1,
            reset_after_forwarding: true,
            only_methods: vec![method.to_string()],
            only_targets_containing: Some(target_contains.to_string()),
            ..Default::default()
        })
        .multipart()
        .build()
        .await;
    let run = sc.run().await;
    let proxy = sc.dst_proxy();
    assert_eq!(
        proxy.faults(Fault::Reset),
        1,
        "the reset was not injected:\n{}",
        proxy.summary()
    );
    if run.code != Some(0) {
        panic!(
            "ferry exited {:?}, expected 0; requests:\n{}\n{}",
            run.code,
            proxy.summary(),
            run.describe()
        );
    }
    sc.assert_destination_eq(&t, test).await;
    (run, sc)
}

/// CompleteMultipartUpload performed by the server, but the answer is lost (reset): a retry
/// gets NoSuchUpload although the object is complete. That is not a failure.
#[tokio::test(flavor = "multi_thread")]
async fn a_complete_multipart_upload_whose_answer_is_lost_is_not_a_failure() {
    let (run, sc) = run_with_one_ambiguous_request("amb-complete", "POST", "uploadId=").await;
    run.assert_phase("Completed")
        .assert_counter("objectsCopied", 1)
        .assert_counter("objectsFailed", 0);
    assert_no_open_uploads(
        sc.dst_s3(),
        sc.dst_bucket(),
        "after an ambiguous CompleteMultipartUpload",
    )
    .await;
}

/// CreateMultipartUpload performed by the server, but the answer is lost: the retry starts a
/// second upload and the first is orphaned. The copy succeeds, and the orphan is swept, by
/// the completed shard itself or at the latest by the next start (`docs/contract.md` §3.4).
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_orphaned_by_an_ambiguous_create_is_swept_by_the_next_start() {
    // The copy's create (the preflight's, under `.ferry/preflight/`, is another key).
    let (run, sc) =
        run_with_one_ambiguous_request("amb-create", "POST", "three-parts?uploads").await;
    run.assert_phase("Completed")
        .assert_counter("objectsFailed", 0);
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    let orphans = open_uploads(s3, dst).await;
    sc.dst_proxy().set_faults_enabled(false);
    let again = sc.run().await;
    again.assert_exit(0);
    let open = open_uploads(s3, dst).await;
    assert!(
        open.is_empty(),
        "uploads still open after the next start (after the first run: {orphans:?}); now: {open:?}"
    );
}

/// A shared destination: another writer (a live application) has uploads in parts open under
/// the job's prefix, one for a key the source also holds (up to date there already). The
/// job touches only uploads of the keys it uploaded in parts itself: the other writer's are
/// still open afterwards (before, every upload of a key the source holds was aborted when a
/// shard started).
#[tokio::test(flavor = "multi_thread")]
async fn another_writers_upload_under_the_prefix_is_left_alone() {
    let t: Tree = [
        ("big/three-parts".to_string(), bytes(12, 11 * MI)),
        ("small".to_string(), bytes(13, 1000)),
    ]
    .into_iter()
    .collect();
    let sc = Scenario::fs_to_s3("shared-dst")
        .source_tree(&t)
        .multipart()
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());
    // "small" is up to date at the destination: the job writes nothing there (a write would
    // supersede any upload of that key on some servers, Garage among them).
    s3.put(dst, "small", bytes(13, 1000)).await;
    let mut foreign = Vec::new();
    for key in ["small", "app/upload-in-progress"] {
        let up = s3
            .client
            .create_multipart_upload()
            .bucket(dst)
            .key(key)
            .send()
            .await
            .expect("the other writer's upload");
        foreign.push(up.upload_id().unwrap().to_string());
    }
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    sc.assert_destination_eq(&t, "shared-dst").await;
    let open = open_uploads(s3, dst).await;
    for id in &foreign {
        assert!(
            open.iter().any(|o| o.contains(id.as_str())),
            "the other writer's upload {id} was aborted; open now: {open:?}"
        );
    }
    assert_eq!(
        open.len(),
        foreign.len(),
        "only the other writer's: {open:?}"
    );
}
