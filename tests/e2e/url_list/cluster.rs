//! URL-list sources in a cluster: the real `ferry controller` against the API (the stand-in,
//! or a real API server with FERRY_E2E_KUBECONFIG; `ferry_tests::cluster`), a list kept in a
//! ConfigMap that the operator mounts into the planner and the agents, its files served by the
//! test's HTTP server, a request header from a Secret the agents get whole (`envFrom`), copied
//! into a bucket of the real S3 server.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_tests::cluster::{backend, Cluster};
use ferry_tests::{bytes, shared_server, S3};
use serde_json::{json, Value};

use super::server::{File, FileServer};
use super::tsv_line;
use crate::operator_cluster::secret_yaml;

/// A MigrationJob copying the URL list `url_list` into `bucket`, with the S3 Secret `creds`.
fn job_yaml(name: &str, url_list: Value, bucket: &str, extra: Value) -> Value {
    let server = shared_server();
    let mut spec = json!({
        "source": {"urlList": url_list},
        "destination": {"s3": {"endpoint": server.endpoint, "region": "us-east-1", "bucket": bucket,
            "forcePathStyle": true, "credentialsSecretRef": {"name": "creds"}}},
        "parallelism": {"shards": 2, "concurrency": 4},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": name}, "spec": spec})
}

fn phase(mj: &ferry_api::MigrationJob) -> Option<ferry_api::Phase> {
    mj.status.as_ref().and_then(|s| s.phase)
}

/// A TSV list in a ConfigMap (lines with size and MD5, and lines with neither), with an
/// `Authorization` header from a Secret: the job completes, every file arrives byte-identical
/// under its key, every request the server saw carried the header, and the header's value is
/// in no Job the operator made (a reference by name only).
#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_list_with_secret_headers_copies_into_a_bucket() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "urllist").await;
    let http = FileServer::start().await;
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket("url-op").await;
    let files: BTreeMap<String, Vec<u8>> = (0..12)
        .map(|i| (format!("img/{i:02}.jpg"), bytes(i, 1000 + i as usize * 997)))
        .chain([
            ("docs/empty.txt".to_string(), Vec::new()),
            ("docs/a b.bin".to_string(), bytes(99, 70_000)),
        ])
        .collect();
    let mut tsv = "TsvHttpData-1.0\n".to_string();
    for (i, (key, body)) in files.iter().enumerate() {
        http.put(&format!("/{key}"), File::new(body.clone()));
        let url = http.url(&format!("/{}", key.replace(' ', "%20")));
        if i % 2 == 0 {
            tsv.push_str(&tsv_line(&url, body));
        } else {
            tsv.push_str(&format!("{url}\n"));
        }
    }
    let token = format!("Bearer e2e-{}", std::process::id());
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cdn-auth"},
                   "stringData": {"Authorization": token}}),
    )
    .await
    .unwrap();
    c.apply(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cdn-urls"},
                   "data": {"urls.tsv": tsv}}),
    )
    .await
    .unwrap();
    let list = json!({"configMapRef": {"name": "cdn-urls", "key": "urls.tsv"},
                      "headersSecretRef": {"name": "cdn-auth"}, "allowPrivateNetworks": true});
    // Slowed (14 GETs and 7 HEADs over 2 shards at 4/s) so that the agents' Job is seen.
    c.apply(job_yaml(
        "cdn",
        list,
        &bucket,
        json!({"requestsPerSecond": 4}),
    ))
    .await
    .unwrap();
    for (text, job) in c.planner_and_agents_jobs("cdn").await {
        let name = job.metadata.name.clone().unwrap_or_default();
        assert!(
            !text.contains(&token) && !text.contains("e2e-"),
            "{name} holds the header's value"
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let from = container.env_from.clone().unwrap_or_default();
        if name.ends_with("-agents") {
            assert_eq!(from.len(), 1, "{name}: {from:?}");
            assert_eq!(from[0].prefix.as_deref(), Some("FERRY_SOURCE_HEADER_"));
            assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "cdn-auth");
        } else {
            assert!(from.is_empty(), "the planner sends no HTTP: {from:?}");
        }
        assert!(
            container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == "/etc/ferry/url-list" && m.read_only == Some(true)),
            "{name}: the list is not mounted"
        );
    }
    let mj = c
        .wait_for("cdn", "a terminal phase", Duration::from_secs(180), |mj| {
            phase(mj).is_some_and(|p| p.is_terminal())
        })
        .await;
    assert_eq!(
        phase(&mj),
        Some(ferry_api::Phase::Completed),
        "{:#?}\n{}",
        mj.status,
        c.logs()
    );
    let st = mj.status.unwrap();
    assert_eq!(st.progress.counters.objects_copied, files.len() as u64);
    assert_eq!(s3.contents(&bucket).await, files, "the bucket differs");
    let log = http.log();
    let gets = log.iter().filter(|l| l.method == "GET").count();
    assert_eq!(gets, files.len(), "one GET per file: {log:?}");
    for l in &log {
        assert_eq!(
            l.headers.get("authorization"),
            Some(&token),
            "{} {} without the Secret's header",
            l.method,
            l.path
        );
    }
    c.finish().await;
}

/// What a cluster cannot read: a list given as a file (no volume is mounted for it) is
/// refused before any pod runs; a ConfigMap that does not exist is named by the planner, whose
/// pod still starts (the mount is optional), and nothing is copied.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_file_is_refused_and_a_missing_configmap_is_named() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "urllist-bad").await;
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket("url-op-bad").await;
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(job_yaml(
        "file",
        json!({"path": "/lists/urls.tsv", "allowPrivateNetworks": true}),
        &bucket,
        json!({}),
    ))
    .await
    .unwrap();
    let mj = c
        .wait_for("file", "Failed", Duration::from_secs(60), |mj| {
            phase(mj) == Some(ferry_api::Phase::Failed)
        })
        .await;
    let msg = mj.status.unwrap().message.unwrap_or_default();
    assert!(
        msg.contains("spec.source.urlList.path: in a cluster no volume is mounted"),
        "{msg}"
    );
    assert_eq!(c.agents.starts(), 0, "no pod ran for a refused job");
    c.apply(job_yaml(
        "absent",
        json!({"configMapRef": {"name": "no-such-list", "key": "urls.tsv"}, "allowPrivateNetworks": true}),
        &bucket,
        json!({}),
    ))
    .await
    .unwrap();
    let mj = c
        .wait_for(
            "absent",
            "a terminal phase",
            Duration::from_secs(120),
            |mj| phase(mj).is_some_and(|p| p.is_terminal()),
        )
        .await;
    let st = mj.status.unwrap();
    let msg = st.message.clone().unwrap_or_default();
    assert_eq!(
        st.phase,
        Some(ferry_api::Phase::Failed),
        "{msg}\n{}",
        c.logs()
    );
    // (The harness mounts the folder elsewhere: its name ends the same.)
    assert!(
        msg.contains("url-list/urls.tsv")
            && msg.contains("ConfigMap no-such-list, key urls.tsv does not exist"),
        "{msg}"
    );
    assert_eq!(c.agents.planners_created().len(), 1);
    assert!(c.agents.jobs_created().is_empty(), "no agent ran");
    assert!(s3.contents(&bucket).await.is_empty());
    c.finish().await;
}
