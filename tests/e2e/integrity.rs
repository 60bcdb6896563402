//! The aws-chunked trap: an uploader that frames bodies as aws-chunked (with
//! `;chunk-signature=` or trailing checksums) against a server that does not decode them stores
//! the framing as the object's bytes. After fs→S3 and streaming S3→S3 copies we read the
//! objects back raw and compare them with the source byte for byte, and check that uploads were
//! not aws-chunked at all (`docs/contract.md` §4.3: no aws-chunked trailers on S3-compatible endpoints).
//! The same runs against Garage when a garage binary is available.

use ferry_tests::data::contains;
use ferry_tests::server::{find_garage, start_garage};
use ferry_tests::*;
use serde_json::json;

/// Sizes around the SDK's chunking (64 KiB) and the multipart threshold.
fn objects() -> Tree {
    let mut t = Tree::new();
    for (i, n) in [
        0usize,
        1,
        8 * 1024,
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        1_000_000,
        5 * MI + 1,
    ]
    .iter()
    .enumerate()
    {
        t.insert(format!("size-{n:08}"), bytes(i as u64 + 1, *n));
    }
    t
}

/// Read every object back and compare raw bytes, naming framing when it is found.
async fn assert_exact_bytes(s3: &S3, bucket: &str, expected: &Tree, what: &str) {
    let mut problems = String::new();
    for (k, want) in expected {
        let got = s3.get(bucket, k).await;
        if &got != want {
            let framing = if contains(&got, b";chunk-signature=") {
                " — the stored bytes contain aws-chunked `;chunk-signature=` framing"
            } else if contains(&got, b"x-amz-checksum-") {
                " — the stored bytes contain an aws-chunked checksum trailer"
            } else {
                ""
            };
            problems.push_str(&format!(
                "  {k}: stored {} bytes, source {} bytes{framing}\n",
                got.len(),
                want.len()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: stored bytes differ from the source:\n{problems}"
    );
}

fn assert_no_aws_chunked(proxy: &FaultProxy, what: &str) {
    let chunked = proxy.aws_chunked();
    assert!(
        chunked.is_empty(),
        "{what}: uploads used aws-chunked bodies (Content-Encoding: aws-chunked or STREAMING-* payload hash):\n{}",
        chunked.iter().map(|r| format!("  {} {}\n", r.method, r.target)).collect::<String>()
    );
}

/// Copies [`objects`] from `source` to a bucket on `dst_server`, reached through a counting
/// proxy; checks the stored bytes and that no upload was aws-chunked.
async fn copy_exact(source: Place<'_>, dst_server: &S3Server, test: &str, what: &str) {
    let sc = Scenario::between(test, source, Place::Bucket(dst_server))
        .source_tree(&objects())
        .destination_proxy(FaultSchedule::none())
        .multipart()
        .build()
        .await;
    sc.run().await.assert_exit(0);
    assert_exact_bytes(sc.dst_s3(), sc.dst_bucket(), &objects(), what).await;
    assert_no_aws_chunked(sc.dst_proxy(), what);
}

async fn fs_to_s3_exact(server: &S3Server, test: &str) {
    let what = format!("fs→S3 ({:?})", server.kind);
    copy_exact(Place::Dir, server, test, &what).await;
}

async fn streaming_exact(src_server: &S3Server, dst_server: &S3Server, test: &str) {
    let what = format!(
        "S3→S3 streaming ({:?} → {:?})",
        src_server.kind, dst_server.kind
    );
    copy_exact(Place::Bucket(src_server), dst_server, test, &what).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_to_s3_stores_exact_bytes() {
    fs_to_s3_exact(shared_server(), "chunk-fs-s3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_to_s3_streaming_stores_exact_bytes() {
    streaming_exact(shared_server(), second_server(), "chunk-stream").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_stores_exact_bytes() {
    let Some(garage_bin) = find_garage() else {
        eprintln!("skipped: no garage binary (set FERRY_TEST_GARAGE=/path/to/garage)");
        return;
    };
    let garage = start_garage(&garage_bin);
    fs_to_s3_exact(&garage, "chunk-garage-fs").await;
    streaming_exact(shared_server(), &garage, "chunk-garage-stream").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_modes_are_reported() {
    let (a, b) = (shared_server(), second_server());
    let (s3a, s3b) = (S3::for_server(a), S3::for_server(b));
    let t = small_objects("v-", 5, 5000);
    let src = bucket_with(&s3a, "verify-src", &t).await;
    for (mode, reported) in [
        ("Checksum", "Checksum"),
        ("ReRead", "ReRead"),
        ("Size", "SizeOnly"),
    ] {
        let name = format!("verify-{}", mode.to_lowercase());
        let dst = s3b.create_bucket(&name).await;
        let wd = Workdir::new(&name);
        let job = Job::new(
            &name,
            Side::s3(a, &src).secret_name("src-creds"),
            Side::s3(b, &dst).secret_name("dst-creds"),
        )
        .with("verify", json!(mode));
        let run = wd.run(&job, &[]).await;
        run.assert_exit(0).assert_counter("objectsCopied", 5);
        assert_eq!(
            run.status().0.get("verified").and_then(|v| v.as_str()),
            Some(reported),
            "verify: {mode} should be reported as verified: {reported}\n{}",
            run.describe()
        );
        assert_bucket_eq(&s3b, &dst, &t, &format!("verify: {mode}")).await;
    }
}

/// Issue 13, mode 2: SSE-KMS objects at both ends. Their ETags are 32 hex digits that (on
/// AWS) are not the MD5 of the bytes; the answers say `x-amz-server-side-encryption:
/// aws:kms`, and Ferry then verifies with the Content-MD5 it sends and the re-read, never the
/// ETag. Each object is read and written once (no re-sends), the bytes are exact, and a
/// fresh `IfDifferent` run copies nothing. (moto keeps MD5 ETags under aws:kms, so here this
/// guards the header path; the mismatch itself is reproduced by the engine's unit test
/// `copy::tests::kms_etags_are_not_taken_for_md5s`.)
#[tokio::test(flavor = "multi_thread")]
async fn sse_kms_objects_are_verified_without_their_etags() {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::ServerSideEncryption;
    if shared_server().is_garage() {
        eprintln!("skipped: Garage has no SSE-KMS");
        return;
    }
    let sc = Scenario::two_servers("kms-etags")
        .destination_side(|s| s.set("serverSideEncryption", json!("aws:kms")))
        .destination_proxy(FaultSchedule::none())
        .with("verify", json!("ReRead"))
        .multipart()
        .build()
        .await;
    let mut t = Tree::new();
    t.insert("small".into(), bytes(21, 1000));
    t.insert("zero".into(), Vec::new());
    t.insert("big".into(), bytes(22, 5 * MI + 1));
    for (k, body) in &t {
        let out = sc
            .src_s3()
            .client
            .put_object()
            .bucket(sc.src_bucket())
            .key(k)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {k}: {e:?}"));
        assert_eq!(
            out.server_side_encryption(),
            Some(&ServerSideEncryption::AwsKms),
            "the server reports SSE-KMS for {k}"
        );
    }
    sc.copy_and_compare(&t, "SSE-KMS at both ends").await;
    // small, zero: one PutObject each; big: two parts of 5 MiB.
    assert_eq!(
        sc.dst_proxy().data_puts().len(),
        4,
        "no object is sent twice:\n{}",
        sc.dst_proxy().summary()
    );
    let h = sc.dst_s3().head(sc.dst_bucket(), "small").await;
    assert_eq!(
        h.server_side_encryption(),
        Some(&ServerSideEncryption::AwsKms)
    );
    let again = Workdir::new("kms-etags-again").run(&sc.job, &[]).await;
    again
        .assert_exit(0)
        .assert_counter("objectsCopied", 0)
        .assert_counter("objectsSkipped", 3);
}

/// Issue 13, mode 2, `IfDifferent`: a listing does not say how each object is encrypted, so
/// the ETags of a bucket whose default encryption is SSE-KMS are never compared as MD5s (on
/// AWS they differ even for equal bytes, and every re-run would copy everything again).
/// Size and time decide there, as for multipart ETags. Shown on moto with an object of the
/// same size but other bytes, written to the destination after the source: compared by
/// ETag it would be copied, by size and time it is not.
#[tokio::test(flavor = "multi_thread")]
async fn kms_default_destination_is_compared_by_size_and_time() {
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    if shared_server().is_garage() {
        eprintln!("skipped: Garage has no SSE-KMS");
        return;
    }
    let mut src = Tree::new();
    src.insert("same-size".into(), bytes(31, 2000));
    src.insert("other-size".into(), bytes(32, 2000));
    let mut dst = Tree::new();
    dst.insert("same-size".into(), bytes(33, 2000));
    dst.insert("other-size".into(), bytes(34, 1999));
    let sc = Scenario::two_servers("kms-default")
        .source_tree(&src)
        .destination_tree(&dst)
        .with("overwrite", json!("IfDifferent"))
        .build()
        .await;
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::AwsKms)
        .build()
        .unwrap();
    let config = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(by_default)
                .build(),
        )
        .build()
        .unwrap();
    sc.dst_s3()
        .client
        .put_bucket_encryption()
        .bucket(sc.dst_bucket())
        .server_side_encryption_configuration(config)
        .send()
        .await
        .expect("PutBucketEncryption");
    sc.run()
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", 1)
        .assert_counter("objectsSkipped", 1);
    assert_eq!(
        sc.dst_s3().get(sc.dst_bucket(), "other-size").await,
        src["other-size"]
    );
    assert_eq!(
        sc.dst_s3().get(sc.dst_bucket(), "same-size").await,
        dst["same-size"],
        "same size, destination not older: kept"
    );
}
