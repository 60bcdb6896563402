//! S3→S3 keeps Content-Type, Content-Encoding, Content-Disposition, Cache-Control,
//! Content-Language, Expires and user metadata: with server-side copy (one endpoint) and with
//! streaming (two endpoints), for single-part and multipart objects.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use ferry_tests::*;

fn rich_meta(i: usize) -> Meta {
    Meta {
        content_type: Some(format!("application/x-ferry-{i}; charset=utf-8")),
        content_encoding: Some("identity".into()),
        content_disposition: Some(format!("attachment; filename=\"report {i}.pdf\"")),
        cache_control: Some("public, max-age=3600".into()),
        content_language: Some("de-CH".into()),
        expires: Some("Wed, 21 Oct 2037 07:28:00 GMT".into()),
        user: BTreeMap::from([
            ("owner".to_string(), format!("team-{i}")),
            ("checksum-note".to_string(), "kept as is".to_string()),
            ("empty".to_string(), String::new()),
        ]),
    }
}

/// (key, body, metadata): a small object, a zero-byte one, a multipart-sized one, and one
/// with a content type only.
fn objects() -> Vec<(String, Vec<u8>, Meta)> {
    vec![
        ("small.pdf".into(), bytes(1, 1234), rich_meta(1)),
        ("zero".into(), Vec::new(), rich_meta(2)),
        (
            "big/multipart.bin".into(),
            bytes(3, 6 * MI + 7),
            rich_meta(3),
        ),
        (
            "typed.json".into(),
            b"{}".to_vec(),
            Meta {
                content_type: Some("application/json".into()),
                ..Meta::default()
            },
        ),
    ]
}

fn normalized(mut m: Meta) -> Meta {
    // Expires: compare the instant, not its spelling.
    m.expires = m
        .expires
        .map(|e| match DateTime::from_str(&e, DateTimeFormat::HttpDate) {
            Ok(t) => t.secs().to_string(),
            Err(_) => e,
        });
    m
}

async fn seed(s3: &S3, hint: &str) -> String {
    let bucket = s3.create_bucket(hint).await;
    for (k, body, meta) in objects() {
        s3.put_with(&bucket, &k, body, &meta).await;
    }
    bucket
}

async fn assert_metadata_kept(src: &S3, src_bucket: &str, dst: &S3, dst_bucket: &str, what: &str) {
    let mut problems = String::new();
    for (k, body, _) in objects() {
        let want = normalized(src.meta(src_bucket, &k).await);
        let got = normalized(dst.meta(dst_bucket, &k).await);
        if want != got {
            problems.push_str(&format!(
                "  {k}:\n    source:      {want:?}\n    destination: {got:?}\n"
            ));
        }
        assert_eq!(dst.get(dst_bucket, &k).await, body, "{what}: bytes of {k}");
    }
    assert!(problems.is_empty(), "{what}: metadata differs:\n{problems}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_round_trips_with_server_side_copy() {
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = seed(&s3, "meta-ssc-src").await;
    let dst = s3.create_bucket("meta-ssc-dst").await;
    let wd = Workdir::new("meta-ssc");
    let job = Job::new("meta-ssc", Side::s3(server, &src), Side::s3(server, &dst))
        .with("multipart", small_multipart());
    wd.run(&job, &[])
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", objects().len() as u64);
    assert_metadata_kept(&s3, &src, &s3, &dst, "server-side copy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_round_trips_when_streaming() {
    let (a, b) = (shared_server(), second_server());
    let (s3a, s3b) = (S3::for_server(a), S3::for_server(b));
    let src = seed(&s3a, "meta-stream-src").await;
    let dst = s3b.create_bucket("meta-stream-dst").await;
    let wd = Workdir::new("meta-stream");
    let job = Job::new(
        "meta-stream",
        Side::s3(a, &src).secret_name("src-creds"),
        Side::s3(b, &dst).secret_name("dst-creds"),
    )
    .with("multipart", small_multipart());
    wd.run(&job, &[])
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", objects().len() as u64);
    assert_metadata_kept(&s3a, &src, &s3b, &dst, "streaming copy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_storage_class_is_applied() {
    let server = shared_server();
    if server.is_garage() {
        eprintln!("skipped: Garage has no storage classes");
        return;
    }
    let s3 = S3::for_server(server);
    let src = seed(&s3, "meta-sc-src").await;
    let dst = s3.create_bucket("meta-sc-dst").await;
    let wd = Workdir::new("meta-sc");
    let job = Job::new(
        "meta-sc",
        Side::s3(server, &src),
        Side::s3(server, &dst).set("storageClass", serde_json::json!("STANDARD_IA")),
    )
    .with("multipart", small_multipart());
    wd.run(&job, &[]).await.assert_exit(0);
    for (k, _, _) in objects() {
        let h = s3.head(&dst, &k).await;
        assert_eq!(
            h.storage_class().map(|s| s.as_str().to_string()),
            Some("STANDARD_IA".to_string()),
            "{k}: storage class of the copy"
        );
    }
}
