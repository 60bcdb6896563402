//! Checks of the test support code itself (no ferry involved): the server starts, the client
//! round-trips awkward keys, the proxy relays, counts and injects faults as scheduled.

use ferry_tests::proxy::{Fault, FaultProxy, FaultSchedule};
use ferry_tests::{bytes, shared_server, S3};

#[tokio::test(flavor = "multi_thread")]
async fn server_round_trips_awkward_keys() {
    let server = shared_server();
    let s3 = S3::for_server(server);
    let bucket = s3.create_bucket("selftest-keys").await;
    let long = format!("long/{}", "x".repeat(1019));
    let keys = [
        "with space",
        "ünïcödé/ключ",
        "plus+sign",
        "per%cent",
        "per%25cent",
        "a//b",
        "./x",
        "a/../b",
        "../sibling/pwned",
        "/abs",
        "dir/",
        "q?x=1#frag",
        "z",
        long.as_str(),
    ];
    // Garage drops a leading `/` from keys (it stores `/abs` as `abs`); moto keeps it.
    let keys: Vec<&str> = keys
        .into_iter()
        .filter(|k| !(server.is_garage() && k.starts_with('/')))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        s3.put(
            &bucket,
            k,
            bytes(i as u64, if k.ends_with('/') { 0 } else { 10 + i }),
        )
        .await;
    }
    let listed = s3.list(&bucket).await;
    for (i, k) in keys.iter().enumerate() {
        assert!(
            listed.contains_key(*k),
            "key {k:?} not listed back: {listed:?}"
        );
        let body = s3.get(&bucket, k).await;
        assert_eq!(
            body,
            bytes(i as u64, if k.ends_with('/') { 0 } else { 10 + i }),
            "key {k:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_relays_and_counts() {
    let server = shared_server();
    let proxy = FaultProxy::start(&server.endpoint, FaultSchedule::none()).await;
    let s3 = S3::new(&proxy.endpoint(), &server.creds);
    let bucket = s3.create_bucket("selftest-proxy").await;
    let big = bytes(7, 3 * 1024 * 1024 + 17);
    s3.put(&bucket, "big", big.clone()).await;
    s3.put(&bucket, "small", b"hello".to_vec()).await;
    assert_eq!(s3.get(&bucket, "big").await, big);
    assert_eq!(s3.list(&bucket).await.len(), 2);
    let direct = S3::for_server(server);
    assert_eq!(direct.get(&bucket, "small").await, b"hello");
    assert_eq!(proxy.data_puts().len(), 2, "{}", proxy.summary());
    assert_eq!(proxy.object_gets().len(), 1, "{}", proxy.summary());
    assert!(
        proxy.aws_chunked().is_empty(),
        "the test client must not send aws-chunked bodies:\n{}",
        proxy.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_injects_faults_and_the_sdk_recovers() {
    let server = shared_server();
    let direct = S3::for_server(server);
    let bucket = direct.create_bucket("selftest-faults").await;
    for i in 0..20u64 {
        direct
            .put(&bucket, &format!("k{i}"), bytes(i, 1000 + i as usize))
            .await;
    }
    let schedule = FaultSchedule {
        slowdown_every: 4,
        reset_every: 7,
        truncate_get_every: 5,
        ..Default::default()
    };
    let proxy = FaultProxy::start(&server.endpoint, schedule).await;
    let s3 = S3::new(&proxy.endpoint(), &server.creds);
    let mut ok = 0;
    for i in 0..20u64 {
        // The SDK retries throttling and transient errors; a truncated body surfaces as an
        // error while reading it, which the SDK does not retry: retry here.
        for _ in 0..5 {
            let Ok(resp) = s3
                .client
                .get_object()
                .bucket(&bucket)
                .key(format!("k{i}"))
                .send()
                .await
            else {
                continue;
            };
            if let Ok(b) = resp.body.collect().await {
                assert_eq!(b.to_vec(), bytes(i, 1000 + i as usize));
                ok += 1;
                break;
            }
        }
    }
    assert_eq!(ok, 20, "{}", proxy.summary());
    assert!(proxy.faults(Fault::SlowDown) > 0, "{}", proxy.summary());
    assert!(proxy.faults(Fault::Reset) > 0, "{}", proxy.summary());
    assert!(proxy.faults(Fault::Truncate) > 0, "{}", proxy.summary());
}

#[test]
fn ferry_binary_is_built() {
    let bin = ferry_tests::ferry_bin();
    assert!(bin.is_file(), "{}", bin.display());
}
