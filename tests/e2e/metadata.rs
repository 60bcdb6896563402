//! S3→S3 keeps Content-Type, Content-Encoding, Content-Disposition, Cache-Control,
//! Content-Language, Expires and user metadata: with server-side copy (one endpoint) and with
//! streaming (two endpoints), for single-part and multipart objects. An object stored
//! without a Content-Type (Garage, MinIO and R2 allow one; moto and AWS give it a default)
//! comes out with what the source reports: none stays none (issue 13, mode 12).

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

/// (key, body) of objects stored without a Content-Type: one single-part, one in parts.
fn untyped() -> Vec<(String, Vec<u8>)> {
    vec![
        ("untyped".into(), bytes(4, 321)),
        ("big/untyped-multipart".into(), bytes(5, 6 * MI + 3)),
    ]
}

/// Stores `body` under `key` with no Content-Type header at all (the SDK gives a PutObject
/// body `application/octet-stream` unless told otherwise); in two parts when it is larger
/// than 5 MiB.
async fn put_untyped(s3: &S3, bucket: &str, key: &str, body: Vec<u8>) {
    use aws_sdk_s3::primitives::ByteStream;
    if body.len() <= 5 * MI {
        s3.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .customize()
            .mutate_request(|r| {
                r.headers_mut().remove("content-type");
            })
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
    } else {
        // CreateMultipartUpload has no body: no Content-Type unless one is given.
        s3.put_multipart(bucket, key, &body, 5 * MI).await;
    }
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

/// Puts [`objects`], with their metadata, into the scenario's source bucket.
async fn seed(sc: &Scenario<'_>) {
    for (k, body, meta) in objects() {
        sc.src_s3().put_with(sc.src_bucket(), &k, body, &meta).await;
    }
    for (k, body) in untyped() {
        put_untyped(sc.src_s3(), sc.src_bucket(), &k, body).await;
    }
}

/// Seeds the source, runs the job, and checks that every object arrived with its bytes and
/// the metadata the source has.
async fn assert_metadata_kept(sc: &Scenario<'_>, what: &str) {
    seed(sc).await;
    sc.run()
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", (objects().len() + untyped().len()) as u64);
    let (src, src_bucket) = (sc.src_s3(), sc.src_bucket());
    let (dst, dst_bucket) = (sc.dst_s3(), sc.dst_bucket());
    let mut problems = String::new();
    let all = objects()
        .into_iter()
        .map(|(k, body, _)| (k, body))
        .chain(untyped());
    for (k, body) in all {
        let want = normalized(src.meta(src_bucket, &k).await);
        if untyped().iter().any(|(u, _)| *u == k) {
            // What the server made of an object stored without one: none (Garage), or its
            // default (moto: binary/octet-stream). The copy must report the same.
            eprintln!(
                "{what}: {k} stored without a Content-Type, the server reports {:?}",
                want.content_type
            );
        }
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
    let sc = Scenario::one_server("meta-ssc").multipart().build().await;
    assert_metadata_kept(&sc, "server-side copy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_round_trips_when_streaming() {
    let sc = Scenario::two_servers("meta-stream")
        .multipart()
        .build()
        .await;
    assert_metadata_kept(&sc, "streaming copy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_storage_class_is_applied() {
    if shared_server().is_garage() {
        eprintln!("skipped: Garage has no storage classes");
        return;
    }
    let sc = Scenario::one_server("meta-sc")
        .destination_side(|s| s.set("storageClass", serde_json::json!("STANDARD_IA")))
        .multipart()
        .build()
        .await;
    seed(&sc).await;
    sc.run().await.assert_exit(0);
    for (k, _, _) in objects() {
        let h = sc.dst_s3().head(sc.dst_bucket(), &k).await;
        assert_eq!(
            h.storage_class().map(|s| s.as_str().to_string()),
            Some("STANDARD_IA".to_string()),
            "{k}: storage class of the copy"
        );
    }
}
