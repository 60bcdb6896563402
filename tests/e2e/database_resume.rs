//! Database sources (issue 15): a `ferry run` killed with SIGKILL resumes, on PostgreSQL and on
//! a SQLite file alike. The first run is throttled and checkpoints every half second; it is
//! killed once a third of the rows is checkpointed. The resumed run uploads only rows past the
//! watermark (PUTs counted by a proxy in front of the bucket), the manifests of both runs list
//! each key once, every row gets its URL (write-back), and the password never shows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_tests::postgres::Postgres;
use ferry_tests::reports::{self, Kind};
use ferry_tests::{shared_server, FaultProxy, FaultSchedule, Workdir, S3};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::database_postgres::{
    assert_password_never_shown, b64, database, image, images_source, job, run, write_secret, PNG,
};

/// A database the test sets up and reads with its own connection (psql or sqlx).
enum Db {
    Pg(&'static Postgres, String),
    Sqlite(SqlitePool, PathBuf),
}

impl Db {
    async fn exec(&self, sql: &str) {
        match self {
            Db::Pg(pg, db) => {
                pg.psql(db, sql).unwrap();
            }
            Db::Sqlite(pool, _) => {
                sqlx::raw_sql(sql).execute(pool).await.unwrap();
            }
        }
    }

    /// One text column of every row of `sql`.
    async fn lines(&self, sql: &str) -> Vec<String> {
        match self {
            Db::Pg(pg, db) => pg
                .psql(db, sql)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect(),
            Db::Sqlite(pool, _) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        }
    }

    fn url(&self) -> String {
        match self {
            Db::Pg(pg, db) => pg.url(db),
            Db::Sqlite(_, path) => format!("sqlite://{}", path.display()),
        }
    }

    /// `id|image_url` of every row (`-` for NULL).
    async fn urls(&self) -> Vec<String> {
        self.lines(
            "SELECT CAST(id AS TEXT) || '|' || coalesce(image_url, '-') FROM images ORDER BY id",
        )
        .await
    }
}

const SCHEMA: &str =
    "CREATE TABLE images (id bigint PRIMARY KEY, image_data text, image_url text);";

const N: u32 = 150;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_postgres_copy_resumes_and_copies_each_row_once() {
    let Some((pg, db)) = database("pgkill", SCHEMA) else {
        return;
    };
    killed_then_resumed("db-pg-kill", Db::Pg(pg, db)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_sqlite_copy_resumes_and_copies_each_row_once() {
    let wd = Workdir::new("db-lite-kill-file");
    let path = wd.path().join("app.db");
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    let db = Db::Sqlite(pool, path);
    db.exec(SCHEMA).await;
    killed_then_resumed("db-lite-kill", db).await;
}

async fn killed_then_resumed(name: &str, db: Db) {
    let wd = Workdir::new(name);
    let server = shared_server();
    let s3 = S3::for_server(server);
    let bucket = s3.create_bucket(name).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultSchedule::none()).await;
    let rows: Vec<String> = (1..=N)
        .map(|id| format!("({id}, '{}')", b64(&image(PNG, id))))
        .collect();
    db.exec(&format!(
        "INSERT INTO images (id, image_data) VALUES {};",
        rows.join(",")
    ))
    .await;
    write_secret(wd.path(), &db.url());
    let keys: Vec<String> = (1..=N).map(|id| format!("img/{id:06}.png")).collect();
    let job = job(
        name,
        &wd,
        &proxy.endpoint(),
        &bucket,
        images_source(json!({
            "encoding": "Base64",
            "key": "img/{id:06}.{ext}",
            "contentType": { "sniff": true },
            "batchSize": 20,
            "writeBack": { "column": "image_url", "value": "/{key}" },
        })),
    );

    // Throttled to 30 requests/s, checkpoints every 0.5 s: killed once a third is saved.
    let file = job
        .clone()
        .with("requestsPerSecond", json!(30))
        .write(wd.path());
    let mut child = ferry_tests::ferry::spawn_ferry(
        &[&file, &wd.path().join("db-secret.yaml")],
        &wd.state_dir(),
        &["--checkpoint-interval", "0.5"],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let (watermark, idx) = loop {
        let w = wd
            .shard_state(0)
            .and_then(|s| s["checkpoint"]["watermark"].as_str().map(str::to_string));
        if let Some(w) = w {
            let idx = keys
                .iter()
                .position(|k| *k == w)
                .unwrap_or_else(|| panic!("the watermark {w:?} is no row's key"));
            if idx as u32 >= N / 3 {
                break (w, idx);
            }
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("ferry ended ({s}) before a third was checkpointed");
        }
        assert!(Instant::now() < deadline, "no checkpoint past a third");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.start_kill().unwrap();
    assert!(child.wait().await.unwrap().code().is_none(), "not killed");
    // Uploads the killed run left in flight land (and are counted) before the resume.
    proxy.idle(Duration::from_secs(60)).await;
    // Every row up to the watermark was written back before its checkpoint was saved.
    let written_at_kill = db
        .urls()
        .await
        .iter()
        .filter(|l| !l.ends_with("|-"))
        .count();
    assert!(
        written_at_kill > idx,
        "{written_at_kill} rows written back at the kill, watermark at row #{idx}"
    );
    proxy.clear();

    let resumed = run(&wd, &job, &[]).await;
    resumed.assert_exit(0).assert_phase("Completed");
    let puts = proxy.data_puts().len();
    assert!(
        puts <= N as usize - (idx + 1),
        "the resumed run uploaded {puts} rows; the watermark was {watermark:?} (row #{idx})"
    );
    assert_eq!(
        resumed.counter("objectsCopied") + resumed.counter("objectsSkipped"),
        N as u64,
        "{}",
        resumed.describe()
    );
    let got = s3.list(&bucket).await;
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), keys);
    for (i, k) in keys.iter().enumerate().step_by(37) {
        assert_eq!(s3.get(&bucket, k).await, image(PNG, i as u32 + 1), "{k}");
    }
    let files = reports::s3_report_files(&s3, &bucket, "default", name, Kind::Manifest).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in files.iter().flat_map(|(_, l)| l) {
        *counts
            .entry(line["key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), keys);
    assert!(
        counts.values().all(|n| *n == 1),
        "keys in the manifests more than once: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let want: Vec<String> = (1..=N).map(|id| format!("{id}|/img/{id:06}.png")).collect();
    assert_eq!(db.urls().await, want);
    assert_password_never_shown(&[&resumed], &wd, &s3, &bucket).await;
}
