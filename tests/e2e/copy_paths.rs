//! Every source/destination combination copies a small tree byte for byte:
//! S3→S3 on one server (server-side copy), S3→S3 across two servers (streaming), fs→S3,
//! S3→fs and fs→fs; plus the key mapping between prefixes and file mtimes.

use ferry_tests::data::{mtime, rfc3339};
use ferry_tests::fixtures::tree;
use ferry_tests::*;

/// A small tree with nesting, an empty object and one multipart-sized object (6 MiB).
fn sample() -> Tree {
    let mut t = small_objects("flat-", 6, 3000);
    t.insert("nested/deeper/file.bin".into(), bytes(1, 10_000));
    t.insert("nested/other.txt".into(), b"hello ferry\n".to_vec());
    t.insert("empty".into(), Vec::new());
    t.insert("big/six-mib".into(), bytes(2, 6 * MI));
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_to_s3_same_endpoint_uses_server_side_copy() {
    // Both sides through one proxy: same endpoint string, region and Secret name.
    let sc = Scenario::one_server("ssc")
        .one_proxy(FaultSchedule::none())
        .multipart()
        .copy_tree(&sample(), "destination after a server-side copy")
        .await;

    let proxy = sc.proxy();
    // The preflight reads the first byte of one object; nothing else is read.
    let gets: Vec<_> = proxy
        .object_gets()
        .into_iter()
        .filter(|r| !ferry_tests::s3::is_ferry_key(&r.bucket_and_key().1))
        .collect();
    assert!(
        gets.len() <= 1,
        "a server-side copy must not GET object bodies, but these GETs happened:\n{}",
        gets.iter()
            .map(|r| format!("  {} {}\n", r.method, r.target))
            .collect::<String>()
    );
    let copies = proxy.copies();
    assert!(
        copies.len() >= sample().len(),
        "expected at least one CopyObject/UploadPartCopy per object ({}), saw {}:\n{}",
        sample().len(),
        copies.len(),
        proxy.summary()
    );
    let plain_puts: Vec<_> = proxy
        .data_puts()
        .into_iter()
        .filter(|r| !r.copy_source && r.body_len > 0)
        .collect();
    assert!(
        plain_puts.is_empty(),
        "a server-side copy must not upload object bytes, but these PUTs carried bodies:\n{}",
        plain_puts
            .iter()
            .map(|r| format!("  {} {} ({} bytes)\n", r.method, r.target, r.body_len))
            .collect::<String>()
    );
}

/// Two Secrets holding the same keys, the way every example writes a job (one Secret per
/// side), are one account: the objects are copied inside the service, and the status says so.
#[tokio::test(flavor = "multi_thread")]
async fn s3_to_s3_one_account_in_two_secrets_copies_inside_the_service() {
    let t = small_objects("o/", 20, 2000);
    let sc = Scenario::one_server("ssc2")
        .source_tree(&t)
        .one_proxy(FaultSchedule::none())
        .source_side(|s| s.secret_name("src-creds"))
        .destination_side(|s| s.secret_name("dst-creds"))
        .build()
        .await;
    let run = sc
        .copy_and_compare(&t, "destination after a copy between two Secrets")
        .await;
    assert_eq!(
        run.status().0["transport"],
        "ServerSide",
        "{}",
        run.describe()
    );
    let proxy = sc.proxy();
    // At most the preflight's one-byte read.
    assert!(
        proxy.object_gets().len() <= 1 && proxy.copies().len() >= t.len(),
        "one account in two Secrets must copy inside the service:\n{}",
        proxy.summary()
    );
}

/// Two accounts on one endpoint cannot copy inside the service (the destination's account may
/// not read the source): the bytes travel through Ferry, and the status says so.
#[tokio::test(flavor = "multi_thread")]
async fn s3_to_s3_two_accounts_on_one_endpoint_stream() {
    let t = small_objects("o/", 10, 2000);
    let other = Creds {
        access_key: "ferryotheraccount".into(),
        secret_key: "ferryothersecret".into(),
    };
    if shared_server().is_garage() {
        eprintln!("skipped on Garage: it refuses keys it does not know (the moto pass runs it)");
        return;
    }
    let sc = Scenario::one_server("stream2")
        .source_tree(&t)
        .one_proxy(FaultSchedule::none())
        .source_side(|s| s.secret_name("src-creds"))
        .destination_side(move |s| s.secret_name("dst-creds").creds(other))
        .build()
        .await;
    let run = sc
        .copy_and_compare(&t, "destination after a copy between two accounts")
        .await;
    assert_eq!(
        run.status().0["transport"],
        "Streamed",
        "{}",
        run.describe()
    );
    let proxy = sc.proxy();
    assert!(
        proxy.copies().is_empty() && proxy.object_gets().len() >= t.len(),
        "two accounts must stream:\n{}",
        proxy.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_to_s3_two_endpoints_streams() {
    let sc = Scenario::two_servers("stream")
        .source_proxy(FaultSchedule::none())
        .destination_proxy(FaultSchedule::none())
        .multipart()
        .copy_tree(&sample(), "destination after a streaming copy")
        .await;
    let (src_proxy, dst_proxy) = (sc.src_proxy(), sc.dst_proxy());
    assert!(
        dst_proxy.copies().is_empty(),
        "two endpoints cannot use server-side copy, yet the destination saw x-amz-copy-source:\n{}",
        dst_proxy.summary()
    );
    let non_empty = sample().values().filter(|v| !v.is_empty()).count();
    assert!(
        src_proxy.object_gets().len() >= non_empty,
        "a streaming copy reads every non-empty object from the source ({non_empty}), saw {} GETs:\n{}",
        src_proxy.object_gets().len(),
        src_proxy.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_to_s3() {
    Scenario::fs_to_s3("fs-s3")
        .multipart()
        .copy_tree(&sample(), "destination after fs→S3")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_to_fs() {
    Scenario::s3_to_fs("s3-fs")
        .multipart()
        .copy_tree(&sample(), "destination directory after S3→fs")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_to_fs_sets_file_mtime_to_source_last_modified() {
    let t = tree([("a", bytes(1, 100)), ("dir/b", bytes(2, 200))]);
    let sc = Scenario::s3_to_fs("s3-fs-mtime")
        .source_tree(&t)
        .build()
        .await;
    let listed = sc.src_s3().list_all(sc.src_bucket(), "").await;
    // Let the clock move so that "now" and LastModified differ.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    sc.run().await.assert_exit(0);
    for o in listed {
        let got = mtime(&sc.dst_dir().join(&o.key));
        assert!(
            (got - o.last_modified_secs).abs() <= 1,
            "{}: file mtime {} ({}) should be the source LastModified {} ({})",
            o.key,
            got,
            rfc3339(got),
            o.last_modified_secs,
            rfc3339(o.last_modified_secs)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_to_fs() {
    let sc = Scenario::fs_to_fs("fs-fs")
        .source_tree(&sample())
        .build()
        .await;
    let (src, dst) = (sc.src_dir(), sc.dst_dir());
    let old = 1_600_000_000; // 2020-09-13
    for (i, key) in sample().keys().enumerate() {
        set_mtime(&src.join(key), old + i as i64 * 60);
    }
    sc.copy_and_compare(&sample(), "destination directory after fs→fs")
        .await;
    for key in sample().keys() {
        assert_eq!(
            mtime(&dst.join(key)),
            mtime(&src.join(key)),
            "{key}: destination mtime should equal the source mtime"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prefixes_map_keys() {
    // dstKey = destination.prefix + srcKey without source.prefix; prefixes are raw strings.
    let t = tree([
        ("photos/a.jpg", bytes(1, 10)),
        ("photos/2024/b.jpg", bytes(2, 20)),
        ("photos-old/c.jpg", bytes(3, 30)),
        ("photosx", bytes(4, 40)),
        ("other/d.jpg", bytes(5, 50)),
    ]);
    let sc = Scenario::one_server("prefix")
        .source_tree(&t)
        .source_side(|s| s.prefix("photos"))
        .destination_side(|s| s.prefix("backup/p"))
        .build()
        .await;

    sc.run()
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", 4);
    let expected = tree([
        ("backup/p/a.jpg", bytes(1, 10)),
        ("backup/p/2024/b.jpg", bytes(2, 20)),
        ("backup/p-old/c.jpg", bytes(3, 30)),
        ("backup/px", bytes(4, 40)),
    ]);
    sc.assert_destination_eq(&expected, "keys mapped from prefix `photos` to `backup/p`")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_totals() {
    let t = small_objects("o", 10, 500);
    let total: u64 = t.values().map(|v| v.len() as u64).sum();
    let sc = Scenario::one_server("totals").source_tree(&t).build().await;
    let run = sc.run().await;
    run.assert_exit(0)
        .assert_counter("objectsTotal", 10)
        .assert_counter("objectsCopied", 10)
        .assert_counter("objectsFailed", 0)
        .assert_counter("bytesTotal", total)
        .assert_counter("bytesCopied", total);
    assert!(
        run.status().listing_complete(),
        "listingComplete should be true at the end\n{}",
        run.describe()
    );
}
