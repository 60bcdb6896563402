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

/// Copies [`sizes`] and the object uploaded in parts along `route` (with the small multipart
/// settings) and checks that every size arrived intact.
async fn copies_every_size(route: ScenarioBuilder<'static>, what: &str) {
    let sc = route
        .source_tree(&sizes())
        .source_uploaded_in_parts(MULTIPART_SOURCE_KEY, multipart_source(), T)
        .multipart()
        .build()
        .await;
    sc.run()
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", expected().len() as u64);
    sc.assert_destination_eq(&expected(), what).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_s3_to_s3_server_side() {
    copies_every_size(
        Scenario::one_server("sizes-ssc"),
        "sizes after a server-side copy",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_s3_to_s3_streaming() {
    copies_every_size(
        Scenario::two_servers("sizes-stream"),
        "sizes after a streaming copy",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_fs_to_s3() {
    copies_every_size(Scenario::fs_to_s3("sizes-fs-s3"), "sizes after fs→S3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_s3_to_fs() {
    copies_every_size(Scenario::s3_to_fs("sizes-s3-fs"), "sizes after S3→fs").await;
}

/// "Objects larger than the threshold are uploaded in parts", all parts but the last equal:
/// visible in the destination ETag (`<md5>-<parts>` for multipart uploads).
#[tokio::test(flavor = "multi_thread")]
async fn multipart_threshold_and_part_count() {
    let sc = Scenario::fs_to_s3("sizes-parts")
        .source_tree(&sizes())
        .multipart()
        .build()
        .await;
    sc.run().await.assert_exit(0);
    let etags: std::collections::BTreeMap<String, String> = sc
        .dst_s3()
        .list_all(sc.dst_bucket(), "")
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
