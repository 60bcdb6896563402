//! BucketSync end to end: the real `ferry controller` against the Kubernetes API (the stand-in
//! in CI, a real API server with FERRY_E2E_KUBECONFIG), data on the real S3 server, the
//! destination checked with the tests' own S3 client (not Ferry's).

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_api::{BucketSync, DeletesState, MigrationJob, Phase};
use ferry_tests::cluster::{backend, Cluster};
use ferry_tests::S3;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::operator_cluster::{buckets, job_yaml, secret_yaml};

const LONG: Duration = Duration::from_secs(180);

/// The data keys of a bucket (Ferry's `.ferry/` reports aside) with their bytes.
/// A key listed and then deleted by a run under way is left out, not a failure.
async fn data(s3: &S3, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in s3.list(bucket).await.into_keys() {
        if ferry_tests::s3::is_ferry_key(&key) {
            continue;
        }
        if let Some(body) = s3.try_get(bucket, &key).await {
            out.insert(key, body);
        }
    }
    out
}

async fn wait_identical(s3: &S3, src: &str, dst: &str, what: &str) {
    let start = std::time::Instant::now();
    loop {
        let (a, b) = (data(s3, src).await, data(s3, dst).await);
        if a == b {
            return;
        }
        if start.elapsed() > LONG {
            let extra: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
            let missing: Vec<&String> = a.keys().filter(|k| b.get(*k) != a.get(*k)).collect();
            panic!("{what}: the destination never matched the source; extra {extra:?}, missing or different {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn annotate(c: &Cluster, name: &str, key: &str, value: &str) {
    c.api::<BucketSync>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap();
}

fn last_run(bs: &BucketSync) -> Option<&ferry_api::RunSummary> {
    bs.status.as_ref()?.last_run.as_ref()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_sync_keeps_a_destination_in_sync_and_holds_a_mass_delete() {
    let Some(b) = backend() else { return };
    let real = b.is_real();
    let c = Cluster::start(b, "sync").await;
    let (s3, src, dst, _objects) = buckets(6).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    // A destination key the source never had. The first run holds it (the destination held
    // 1 key: deleting it is 100%, over maxDeletes 50%); the next run, with 7 keys there,
    // deletes it.
    s3.put(&dst, "k/stale", b"old".to_vec()).await;
    let mut spec = job_yaml("media", &src, &dst, "creds", json!({}))["spec"].clone();
    spec["interval"] = json!("10s");
    spec["deletes"] = json!({"policy": "Propagate", "maxDeletes": "50%"});
    spec["successfulRunsHistoryLimit"] = json!(1);
    c.apply(
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "BucketSync",
                   "metadata": {"name": "media"}, "spec": spec}),
    )
    .await
    .unwrap();

    // The first run (at creation) makes the destination identical.
    wait_identical(&s3, &src, &dst, "the first run").await;
    let bs = c
        .wait_for_sync("media", "a first clean run", LONG, |bs| {
            last_run(bs).is_some_and(|r| r.phase == Some(Phase::Completed))
        })
        .await;
    let st = bs.status.clone().unwrap();
    assert!(
        st.last_sync_time.is_some() && st.next_sync_time.is_some(),
        "{st:?}"
    );
    // `kubectl get bs`: the API server's own table of the printer columns (a real server's:
    // the stand-in does not render tables).
    if real {
        check_table(&c).await;
    }
    // The run that deleted k/stale says so in its Event (the destination can match before
    // the BucketSync has summarised that run, so the Event is waited for).
    let start = std::time::Instant::now();
    loop {
        let notes: Vec<String> = c
            .events_of("media")
            .await
            .into_iter()
            .map(|e| e.note)
            .collect();
        if notes
            .iter()
            .any(|n| n.contains("ended Completed") && n.contains(" 1 deleted"))
        {
            break;
        }
        assert!(
            start.elapsed() < LONG,
            "no run reported deleting k/stale: {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The source gains, changes and loses keys; sync-now starts a run at once.
    s3.put(&src, "k/new", b"brand new".to_vec()).await;
    s3.put(&src, "k/0001", b"changed content".to_vec()).await;
    s3.delete(&src, "k/0002").await;
    annotate(&c, "media", "ferry.dev/sync-now", "1").await;
    wait_identical(&s3, &src, &dst, "after additions, changes and deletions").await;

    // Each run's start and end are Events on the BucketSync.
    let reasons: Vec<String> = c
        .events_of("media")
        .await
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "SyncStarted"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "SyncSucceeded"), "{reasons:?}");

    // A mass delete at the source (4 of 6 keys) is held: nothing deleted, a clear condition.
    let before = data(&s3, &dst).await;
    for k in ["k/0000", "k/0003", "k/0004", "k/0005"] {
        s3.delete(&src, k).await;
    }
    let bs = c
        .wait_for_sync("media", "a held run", LONG, |bs| {
            last_run(bs).is_some_and(|r| r.deletes_held)
        })
        .await;
    assert_eq!(data(&s3, &dst).await, before, "a held run deletes nothing");
    let held = bs
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "DeletesHeld")
        .cloned()
        .unwrap();
    assert_eq!(
        (held.status.as_str(), held.reason.as_str()),
        ("True", "MaxDeletesExceeded")
    );
    let run = last_run(&bs).unwrap().name.clone();
    let mj: MigrationJob = c.job(&run).await;
    let d = mj.status.as_ref().and_then(|s| s.deletes.clone()).unwrap();
    assert_eq!((d.state, d.candidates), (DeletesState::Held, 4));

    // Approving that run deletes exactly its held candidates.
    annotate(&c, "media", "ferry.dev/approve-deletes", &run).await;
    c.wait_for(&run, "the approved deletes", LONG, |mj| {
        mj.status
            .as_ref()
            .and_then(|s| s.deletes.as_ref())
            .is_some_and(|d| d.state == DeletesState::Done && d.deleted == 4)
    })
    .await;
    wait_identical(&s3, &src, &dst, "after the approval").await;

    // History: finished clean runs beyond successfulRunsHistoryLimit (1) are pruned; the
    // newest held run may stay besides.
    let start = std::time::Instant::now();
    loop {
        let runs = c
            .api::<MigrationJob>()
            .list(&ListParams::default().labels("ferry.dev/bucket-sync=media"))
            .await
            .unwrap()
            .items;
        let done = runs
            .iter()
            .filter(|m| m.status.as_ref().and_then(|s| s.phase) == Some(Phase::Completed))
            .count();
        if done <= 2 {
            break;
        }
        assert!(start.elapsed() < LONG, "{done} finished runs kept");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.finish().await;
}

async fn runs(c: &Cluster, sync: &str) -> Vec<MigrationJob> {
    c.api::<MigrationJob>()
        .list(&ListParams::default().labels(&format!("ferry.dev/bucket-sync={sync}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_restart_mid_run_starts_no_second_run_and_suspend_and_sync_now_work() {
    let Some(b) = backend() else { return };
    let mut c = Cluster::start(b, "sync-restart").await;
    let (s3, src, dst, _objects) = buckets(60).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    // A long interval: the only run is the one at creation; slowed so the restart lands
    // mid-run.
    let mut spec = job_yaml(
        "nightly",
        &src,
        &dst,
        "creds",
        json!({"requestsPerSecond": 20}),
    )["spec"]
        .clone();
    spec["interval"] = json!("1h");
    c.apply(
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "BucketSync",
                   "metadata": {"name": "nightly"}, "spec": spec}),
    )
    .await
    .unwrap();
    let bs = c
        .wait_for_sync("nightly", "an active run", LONG, |bs| {
            bs.status.as_ref().is_some_and(|s| s.active_run.is_some())
        })
        .await;
    let first = bs.status.unwrap().active_run.unwrap();
    c.kill_controller("e2e").await;
    c.start_controller("e2e", &[]);
    c.wait_for_sync("nightly", "the run to end", LONG, |bs| {
        last_run(bs).is_some_and(|r| r.name == first && r.phase == Some(Phase::Completed))
    })
    .await;
    wait_identical(&s3, &src, &dst, "the first run").await;
    let names: Vec<String> = runs(&c, "nightly")
        .await
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        std::slice::from_ref(&first),
        "one run for one tick, restart or not"
    );

    // Suspended: no run, even when asked for one; no next sync time.
    c.api::<BucketSync>()
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    c.wait_for_sync("nightly", "Suspended", LONG, |bs| {
        bs.status.as_ref().is_some_and(|s| {
            s.phase == Some(ferry_api::SyncPhase::Suspended) && s.next_sync_time.is_none()
        })
    })
    .await;
    annotate(&c, "nightly", "ferry.dev/sync-now", "while-suspended").await;
    c.wait_for_sync("nightly", "the sync-now handled", LONG, |bs| {
        bs.status.as_ref().and_then(|s| s.last_sync_now.as_deref()) == Some("while-suspended")
    })
    .await;
    assert_eq!(runs(&c, "nightly").await.len(), 1, "no run while suspended");

    // Resumed, sync-now starts a run at once (not waiting for the hour).
    c.api::<BucketSync>()
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    s3.put(&src, "k/late", b"late".to_vec()).await;
    annotate(&c, "nightly", "ferry.dev/sync-now", "now").await;
    c.wait_for_sync("nightly", "a manual run", LONG, |bs| {
        last_run(bs).is_some_and(|r| r.name != first && r.phase == Some(Phase::Completed))
    })
    .await;
    wait_identical(&s3, &src, &dst, "the manual run").await;
    c.finish().await;
}

/// The BucketSyncs of the test's namespace as `kubectl get bs` shows them: the server-side
/// table (column names, and the cells of each row as text).
async fn get_table(c: &Cluster) -> (Vec<String>, Vec<Vec<String>>) {
    let req = http::Request::get(format!(
        "/apis/ferry.dev/v1alpha1/namespaces/{}/bucketsyncs",
        c.ns
    ))
    .header(
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .body(Vec::new())
    .unwrap();
    let text = c.client.request_text(req).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let headers: Vec<String> = v["columnDefinitions"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let rows = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r["cells"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|cell| match cell {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    (headers, rows)
}

async fn check_table(c: &Cluster) {
    let (headers, rows) = get_table(c).await;
    println!(
        "kubectl get bs (the server's table):\n{}",
        headers.join("\t")
    );
    for row in &rows {
        println!("{}", row.join("\t"));
    }
    for col in [
        "Phase",
        "Last Sync",
        "Next Sync",
        "Copied",
        "Deleted",
        "Failed",
        "Age",
    ] {
        assert!(
            headers.iter().any(|h| h == col),
            "no {col} column: {headers:?}"
        );
    }
    let at = |name: &str| rows[0][headers.iter().position(|h| h == name).unwrap()].clone();
    assert!(
        !at("Last Sync").is_empty() && !at("Next Sync").is_empty(),
        "{:?}",
        rows[0]
    );
}
