//! Object sizes around the multipart threshold (5Mi here, parts of 5Mi): zero bytes, exactly
//! the threshold, one byte over, several parts, and a source object that was itself uploaded
//! in parts (its ETag is not an MD5). Every path must deliver them byte-identical.

use ferry_tests::*;

const T: usize = 5 * MI;

fn sizes() -> Tree {
    let mut t = Tree::new();
    t.insert("zero".into(), Vec::new());
    t.insert("one".into(), bytes(1, 1));
    t.insert("threshold-minus-one".into(), bytes(2, T - 1));
    t.insert("threshold-exact".into(), bytes(3, T));
    t.insert("threshold-plus-one".into(), bytes(4, T + 1));
    t.insert("four-parts".into(), bytes(5, 3 * T + 3));
    t
}

/// A source object uploaded in 3 parts (ETag `...-3`).
const MULTIPART_SOURCE_KEY: &str = "uploaded-in-parts";
fn multipart_source() -> Vec<u8> {
    bytes(6, 2 * T + 12345)
}

fn expected() -> Tree {
    let mut t = sizes();
    t.insert(MULTIPART_SOURCE_KEY.into(), multipart_source());
    t
}

async fn source_bucket(s3: &S3, hint: &str) -> String {
    let b = bucket_with(s3, hint, &sizes()).await;
    s3.put_multipart(&b, MULTIPART_SOURCE_KEY, &multipart_source(), T)
        .await;
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_s3_to_s3_server_side() {
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = source_bucket(&s3, "sizes-ssc-src").await;
    let dst = s3.create_bucket("sizes-ssc-dst").await;
    let wd = Workdir::new("sizes-ssc");
    let job = Job::new("sizes-ssc", Side::s3(server, &src), Side::s3(server, &dst))
        .with("multipart", small_multipart());
    wd.run(&job, &[])
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", expected().len() as u64);
    assert_bucket_eq(&s3, &dst, &expected(), "sizes after a server-side copy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_s3_to_s3_streaming() {
    let (a, b) = (shared_server(), second_server());
    let (s3a, s3b) = (S3::for_server(a), S3::for_server(b));
    let src = source_bucket(&s3a, "sizes-stream-src").await;
    let dst = s3b.create_bucket("sizes-stream-dst").await;
    let wd = Workdir::new("sizes-stream");
    let job = Job::new(
        "sizes-stream",
        Side::s3(a, &src).secret_name("src-creds"),
        Side::s3(b, &dst).secret_name("dst-creds"),
    )
    .with("multipart", small_multipart());
    wd.run(&job, &[])
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", expected().len() as u64);
    assert_bucket_eq(&s3b, &dst, &expected(), "sizes after a streaming copy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_fs_to_s3() {
    let server = shared_server();
    let s3 = S3::for_server(server);
    let wd = Workdir::new("sizes-fs-s3");
    let src = wd.subdir("src");
    write_tree(&src, &expected());
    let dst = s3.create_bucket("sizes-fs-s3-dst").await;
    let job = Job::new("sizes-fs-s3", Side::fs(&src), Side::s3(server, &dst))
        .with("multipart", small_multipart());
    wd.run(&job, &[])
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", expected().len() as u64);
    assert_bucket_eq(&s3, &dst, &expected(), "sizes after fs→S3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_s3_to_fs() {
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = source_bucket(&s3, "sizes-s3-fs-src").await;
    let wd = Workdir::new("sizes-s3-fs");
    let dst = wd.subdir("dst");
    let job = Job::new("sizes-s3-fs", Side::s3(server, &src), Side::fs(&dst))
        .with("multipart", small_multipart());
    wd.run(&job, &[])
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", expected().len() as u64);
    assert_trees_eq(&expected(), &read_tree(&dst), "sizes after S3→fs");
}

/// "Objects larger than the threshold are uploaded in parts", all parts but the last equal:
/// visible in the destination ETag (`<md5>-<parts>` for multipart uploads).
#[tokio::test(flavor = "multi_thread")]
async fn multipart_threshold_and_part_count() {
    let server = shared_server();
    let s3 = S3::for_server(server);
    let wd = Workdir::new("sizes-parts");
    let src = wd.subdir("src");
    write_tree(&src, &sizes());
    let dst = s3.create_bucket("sizes-parts-dst").await;
    let job = Job::new("sizes-parts", Side::fs(&src), Side::s3(server, &dst))
        .with("multipart", small_multipart());
    wd.run(&job, &[]).await.assert_exit(0);
    let etags: std::collections::BTreeMap<String, String> = s3
        .list_all(&dst, "")
        .await
        .into_iter()
        .map(|o| (o.key, o.etag.trim_matches('"').to_string()))
        .collect();
    let parts = |key: &str| {
        etags[key]
            .split_once('-')
            .map(|(_, n)| n.parse::<u32>().unwrap())
            .unwrap_or(1)
    };
    assert_eq!(
        parts("threshold-exact"),
        1,
        "an object of exactly the threshold is one PUT (ETag {})",
        etags["threshold-exact"]
    );
    assert_eq!(
        parts("threshold-plus-one"),
        2,
        "threshold + 1 byte is two parts of 5Mi and 1 byte (ETag {})",
        etags["threshold-plus-one"]
    );
    assert_eq!(
        parts("four-parts"),
        4,
        "3×5Mi + 3 bytes is 4 parts (ETag {})",
        etags["four-parts"]
    );
    assert_eq!(parts("one"), 1);
}
