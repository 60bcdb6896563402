//! Database sources in a cluster: the real `ferry controller` against the API (the stand-in,
//! or a real API server with FERRY_E2E_KUBECONFIG; `ferry_tests::cluster`), the planner and
//! agents run as local processes by the harness, copying table rows into a bucket of the real
//! S3 server. A PostgreSQL URL with its password comes from a Secret (by `secretKeyRef`:
//! never in a Job, the status, an Event or a log); a SQLite file lies on a claim mounted at
//! the volume's mountPath (the harness stands a directory in for the claim).

use std::time::Duration;

use ferry_tests::cluster::{backend, Cluster};
use ferry_tests::postgres::PASSWORD;
use ferry_tests::{shared_server, S3};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::database_postgres::{b64, database, image, urls, JPEG, PNG};
use crate::operator_cluster::secret_yaml;

fn phase(mj: &ferry_api::MigrationJob) -> Option<ferry_api::Phase> {
    mj.status.as_ref().and_then(|s| s.phase)
}

/// A MigrationJob from the database source `db` into `bucket` (Secret `creds`).
fn job_yaml(name: &str, db: Value, bucket: &str, extra: Value) -> Value {
    let server = shared_server();
    let mut spec = json!({
        "source": {"database": db},
        "destination": {"s3": {"endpoint": server.endpoint, "region": "us-east-1", "bucket": bucket,
            "forcePathStyle": true, "credentialsSecretRef": {"name": "creds"}}},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": name}, "spec": spec})
}

fn url_secret(url: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-db"},
           "stringData": {"DATABASE_URL": url}})
}

/// Waits for a terminal phase and asserts Completed.
async fn completed(c: &Cluster, name: &str) -> ferry_api::MigrationJob {
    let mj = c
        .wait_for(name, "a terminal phase", Duration::from_secs(180), |mj| {
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
    mj
}

/// A PostgreSQL table of base64 and data-URI images, its URL (with the password) in a
/// Secret, two shards (the planner cuts id ranges): the job completes, the objects are the
/// right bytes with the right content types (read with the test's S3 client), every row has
/// its URL, and neither the password nor the URL is in the Jobs (a `secretKeyRef` only), the
/// status, the Events or any log of the controller, planner and agents.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_table_is_copied_by_the_operator_and_written_back() {
    let Some(b) = backend() else { return };
    let Some((pg, db)) = database(
        "pgcluster",
        "CREATE TABLE images (id bigint PRIMARY KEY, image_data text, mime_type text, image_url text);",
    ) else {
        return;
    };
    let c = Cluster::start(b, "db-pg").await;
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket("db-op").await;
    let n = 12u32;
    let rows: Vec<String> = (1..=n)
        .map(|id| {
            if id % 3 == 0 {
                format!(
                    "({id}, 'data:image/jpeg;base64,{}', NULL)",
                    b64(&image(JPEG, id))
                )
            } else {
                format!("({id}, '{}', 'image/png')", b64(&image(PNG, id)))
            }
        })
        .collect();
    pg.psql(
        &db,
        &format!(
            "INSERT INTO images (id, image_data, mime_type) VALUES {};",
            rows.join(",")
        ),
    )
    .unwrap();
    let url = pg.url(&db);
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(url_secret(&url)).await.unwrap();
    c.apply(job_yaml(
        "pgrows",
        json!({
            "connectionSecretRef": {"name": "app-db"},
            "table": "images", "idColumn": "id", "dataColumn": "image_data",
            "key": "img/{id:06}.{ext}",
            "contentType": {"column": "mime_type", "sniff": true},
            "batchSize": 5,
            "writeBack": {"column": "image_url", "value": "https://cdn.example.com/{key}"},
        }),
        &bucket,
        // Slowed (12 PUTs over 2 shards at 4/s) so that the agents' Job is seen.
        json!({"parallelism": {"shards": 2, "concurrency": 4}, "requestsPerSecond": 4}),
    ))
    .await
    .unwrap();
    for (text, job) in c.planner_and_agents_jobs("pgrows").await {
        let name = job.metadata.name.clone().unwrap_or_default();
        assert!(
            !text.contains(PASSWORD) && !text.contains(&url) && !text.contains("postgres://"),
            "{name} holds the connection URL"
        );
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let var = env
            .iter()
            .find(|e| e.name == "FERRY_SOURCE_DATABASE_URL")
            .unwrap_or_else(|| panic!("{name}: no DATABASE_URL"));
        let r = var.value_from.as_ref().unwrap().secret_key_ref.as_ref();
        assert_eq!(
            r.map(|r| (r.name.as_str(), r.key.as_str())),
            Some(("app-db", "DATABASE_URL"))
        );
    }
    let mj = completed(&c, "pgrows").await;
    let st = mj.status.clone().unwrap();
    assert_eq!(st.progress.counters.objects_copied, n as u64);
    let got = s3.list(&bucket).await;
    assert_eq!(got.len(), n as usize, "{got:?}");
    for id in 1..=n {
        let (key, bytes, ty) = if id % 3 == 0 {
            (format!("img/{id:06}.jpg"), image(JPEG, id), "image/jpeg")
        } else {
            (format!("img/{id:06}.png"), image(PNG, id), "image/png")
        };
        assert_eq!(s3.get(&bucket, &key).await, bytes, "{key}");
        assert_eq!(
            s3.meta(&bucket, &key).await.content_type.as_deref(),
            Some(ty),
            "{key}"
        );
    }
    let want: Vec<String> = (1..=n)
        .map(|id| {
            let ext = if id % 3 == 0 { "jpg" } else { "png" };
            format!("{id}|https://cdn.example.com/img/{id:06}.{ext}")
        })
        .collect();
    assert_eq!(urls(pg, &db, "images"), want, "the write-back");

    let status = serde_json::to_string(&mj).unwrap();
    assert!(
        !status.contains(PASSWORD),
        "the MigrationJob holds the password"
    );
    for e in c.events_of("pgrows").await {
        assert!(
            !e.note.contains(PASSWORD),
            "an Event holds the password: {e:?}"
        );
    }
    let logs = c.full_logs();
    assert!(
        logs.iter().any(|(f, _)| f.contains("agents")),
        "no agent logs: {:?}",
        logs.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    for (file, text) in &logs {
        assert!(!text.contains(PASSWORD), "{file} holds the password");
    }
    c.finish().await;
}

/// A SQLite file on a claim, `sqlite:///data/app.db` in the Secret, the claim mounted at the
/// default mountPath (`/data`) in the planner and the agents, writable for writeBack: the
/// job completes, the rows are objects and have their URLs. Several shards writing back one
/// SQLite file are refused before any pod runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_file_on_a_claim_is_copied_by_the_operator_and_written_back() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "db-lite").await;
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket("db-op-lite").await;
    let file = c.claim_dir("app-data").join("app.db");
    let opts = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    sqlx::raw_sql("CREATE TABLE images (id INTEGER PRIMARY KEY, image_data TEXT, image_url TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    let n = 8u32;
    for id in 1..=n {
        sqlx::query("INSERT INTO images (id, image_data) VALUES (?1, ?2)")
            .bind(id)
            .bind(b64(&image(PNG, id)))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(url_secret("sqlite:///data/app.db")).await.unwrap();
    let source = json!({
        "connectionSecretRef": {"name": "app-db"},
        "table": "images", "idColumn": "id", "dataColumn": "image_data",
        "encoding": "Base64", "key": "lite/{id:04}.{ext}", "contentType": {"sniff": true},
        "writeBack": {"column": "image_url", "value": "/{key}"},
        "volume": {"claimName": "app-data"},
    });
    // Several shards would write one SQLite file from several pods: refused.
    c.apply(job_yaml(
        "lite-sharded",
        source.clone(),
        &bucket,
        json!({"parallelism": {"shards": 3}}),
    ))
    .await
    .unwrap();
    let refused = c
        .wait_for("lite-sharded", "Failed", Duration::from_secs(60), |mj| {
            phase(mj) == Some(ferry_api::Phase::Failed)
        })
        .await;
    let msg = refused.status.unwrap().message.unwrap_or_default();
    assert!(msg.contains("spec.parallelism.shards"), "{msg}");
    assert_eq!(c.agents.starts(), 0, "no pod ran for a refused job");

    c.apply(job_yaml("lite", source, &bucket, json!({})))
        .await
        .unwrap();
    completed(&c, "lite").await;
    let got = s3.contents(&bucket).await;
    assert_eq!(got.len(), n as usize, "{:?}", got.keys());
    for id in 1..=n {
        let key = format!("lite/{id:04}.png");
        assert_eq!(got[&key], image(PNG, id), "{key}");
        assert_eq!(
            s3.meta(&bucket, &key).await.content_type.as_deref(),
            Some("image/png")
        );
    }
    let opts = SqliteConnectOptions::new().filename(&file).read_only(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    let written: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, image_url FROM images ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let want: Vec<(i64, Option<String>)> = (1..=n as i64)
        .map(|id| (id, Some(format!("/lite/{id:04}.png"))))
        .collect();
    assert_eq!(written, want, "the write-back");
    pool.close().await;
    c.finish().await;
}
