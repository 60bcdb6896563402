//! Database sources (issue 15) end to end: `ferry run` of a `database` job reading a SQLite
//! file into a real S3 server. Checked with the test's own S3 client and SQL connection: the
//! objects' bytes and content types, the failure report's classes, the write-back, and that a
//! dry run writes nothing anywhere.

use std::time::Duration;

use base64::Engine;
use ferry_tests::reports::{self, Kind};
use ferry_tests::{shared_server, Job, Side, Workdir, S3};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::database_postgres::{images_source, write_secret};

/// An 8-byte PNG signature and a few bytes: sniffed and declared `image/png`.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-ferry-e2e";
/// A JPEG start of image.
const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0-ferry-e2e";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `app.db` in `dir`: six rows, base64 and data-URI payloads, one that does not decode, one
/// NULL (no object), one marked deleted (left out by the `where`).
async fn sqlite_file(dir: &std::path::Path) -> SqlitePool {
    let opts = SqliteConnectOptions::new()
        .filename(dir.join("app.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    sqlx::query(
        "CREATE TABLE images (id INTEGER PRIMARY KEY, image_data TEXT, mime_type TEXT, \
         deleted_at TEXT, image_url TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let jpeg_uri = format!("data:image/jpeg;base64,{}", b64(JPEG));
    let rows = [
        (1, Some(b64(PNG)), Some("image/png"), None),
        (2, Some(jpeg_uri), None, None),
        (
            3,
            Some("not base64 at all!".into()),
            Some("image/png"),
            None,
        ),
        (4, None, Some("image/png"), None),
        (5, Some(b64(JPEG)), None, None),
        (6, Some(b64(PNG)), Some("image/png"), Some("2024-01-01")),
    ];
    for (id, data, mime, deleted) in rows {
        sqlx::query(
            "INSERT INTO images (id, image_data, mime_type, deleted_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(id)
        .bind(data)
        .bind(mime)
        .bind(deleted)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool
}

/// A work directory with [`sqlite_file`]'s table, its URL in the Secret file, a bucket, and
/// the job copying the table with the source fields `fields` into it.
async fn sqlite_images(
    name: &str,
    fields: serde_json::Value,
) -> (Workdir, S3, String, SqlitePool, Job) {
    let wd = Workdir::new(name);
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket(name).await;
    let pool = sqlite_file(wd.path()).await;
    let url = format!("sqlite://{}", wd.path().join("app.db").display());
    write_secret(wd.path(), &url);
    let job = crate::database_postgres::job(
        name,
        &wd,
        &shared_server().endpoint,
        &bucket,
        images_source(fields),
    );
    (wd, s3, bucket, pool, job)
}

async fn urls(pool: &SqlitePool) -> Vec<(i64, Option<String>)> {
    sqlx::query_as("SELECT id, image_url FROM images ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A SQLite file of base64 and data-URI images copied to S3: the right bytes and content
/// types, a bad payload reported as `InvalidData`, the rows pointed at their objects; a dry
/// run before writes neither objects nor rows, and a second run copies and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_table_of_images_lands_in_a_bucket_and_is_written_back() {
    let name = "db-sqlite";
    let (wd, s3, bucket, pool, job) = sqlite_images(
        name,
        json!({
            "encoding": "Auto",
            "key": "images/{id:06}.{ext}",
            "contentType": { "column": "mime_type", "sniff": true },
            "where": "deleted_at IS NULL",
            "batchSize": 2,
            "writeBack": { "column": "image_url", "value": "https://img.example.com/{key}" },
        }),
    )
    .await;
    let run = |job: Job| {
        let wd = &wd;
        async move { crate::database_postgres::run(wd, &job, &[]).await }
    };

    // A dry run reads and writes nothing anywhere.
    let dry = run(job.clone().with("dryRun", json!(true))).await;
    dry.assert_exit(0);
    assert!(s3.contents(&bucket).await.is_empty());
    assert!(urls(&pool).await.iter().all(|(_, u)| u.is_none()));
    std::fs::remove_dir_all(wd.state_dir()).unwrap();

    let first = run(job.clone()).await;
    first.assert_exit(2);
    let got = s3.contents(&bucket).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        [
            "images/000001.png",
            "images/000002.jpg",
            "images/000005.jpg"
        ]
    );
    for (key, bytes, ty) in [
        ("images/000001.png", PNG, "image/png"),
        ("images/000002.jpg", JPEG, "image/jpeg"),
        ("images/000005.jpg", JPEG, "image/jpeg"),
    ] {
        assert_eq!(got[key], bytes, "{key}");
        assert_eq!(
            s3.meta(&bucket, key).await.content_type.as_deref(),
            Some(ty)
        );
    }
    let failures = reports::s3_report_lines(&s3, &bucket, "default", name, Kind::Failures).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["key"], "images/000003.png");
    assert_eq!(failures[0]["class"], "InvalidData");
    let written = |id: i64| {
        Some(format!(
            "https://img.example.com/images/{id:06}.{}",
            if id == 1 { "png" } else { "jpg" }
        ))
    };
    assert_eq!(
        urls(&pool).await,
        [
            (1, written(1)),
            (2, written(2)),
            (3, None),
            (4, None),
            (5, written(5)),
            (6, None)
        ]
    );

    // A row whose URL was lost gets it from the next run, which copies nothing.
    sqlx::query("UPDATE images SET image_url = NULL WHERE id = 2")
        .execute(&pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(wd.state_dir()).unwrap();
    let again = run(job).await;
    again.assert_exit(2);
    assert_eq!(urls(&pool).await[1], (2, written(2)));
    assert_eq!(s3.contents(&bucket).await, got, "nothing copied again");
}

/// Through `ferry run`, on a SQLite file: `filters.modifiedAfter` on the rows'
/// `modifiedColumn` (text timestamps and Unix seconds) leaves older rows out; bad payloads
/// (empty, not base64, a data URI whose base64 is broken, JPEG bytes declared `image/png`)
/// fail as `InvalidData`; a key template that maps two rows to one key (`{id}{owner}`: row 1
/// of owner "2" and row 12 of owner "" both give `12.png`) fails the second row in id order as
/// `DuplicateKey`, and the key keeps the first row's bytes. The template does not keep id
/// order, so this also runs the listing's on-disk sort.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_filters_bad_payloads_and_key_collisions() {
    let name = "db-sqlite-edges";
    let wd = Workdir::new(name);
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket(name).await;
    let opts = SqliteConnectOptions::new()
        .filename(wd.path().join("app.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    sqlx::query(
        "CREATE TABLE images (id INTEGER PRIMARY KEY, image_data TEXT, mime_type TEXT, \
         owner TEXT NOT NULL, updated_at)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let png = |n: u8| [PNG, &[n]].concat();
    let new = "2024-06-01T00:00:00Z";
    let rows: Vec<(i64, String, Option<&str>, &str, serde_json::Value)> = vec![
        (1, b64(&png(1)), Some("image/png"), "2", json!(new)),
        (
            2,
            b64(&png(2)),
            Some("image/png"),
            "a",
            json!("2023-01-01T00:00:00Z"),
        ),
        // Unix seconds: 2024-06-01 and 2020-01-01.
        (3, b64(&png(3)), None, "b", json!(1_717_200_000)),
        (4, b64(&png(4)), None, "c", json!(1_577_836_800)),
        (5, String::new(), Some("image/png"), "d", json!(new)),
        (
            6,
            "%%% not base64 %%%".into(),
            Some("image/png"),
            "e",
            json!(new),
        ),
        (
            7,
            "data:image/png;base64,iVBOR!!".into(),
            None,
            "f",
            json!(new),
        ),
        (8, b64(JPEG), Some("image/png"), "g", json!(new)),
        (12, b64(&png(12)), Some("image/png"), "", json!(new)),
        // An old bad row: filtered out, so neither an object nor a failure.
        (
            13,
            "not base64!".into(),
            Some("image/png"),
            "h",
            json!("2019-01-01T00:00:00Z"),
        ),
    ];
    for (id, data, mime, owner, at) in rows {
        let q = sqlx::query(
            "INSERT INTO images (id, image_data, mime_type, owner, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(id)
        .bind(data)
        .bind(mime)
        .bind(owner);
        let q = match at {
            serde_json::Value::String(s) => q.bind(s),
            n => q.bind(n.as_i64().unwrap()),
        };
        q.execute(&pool).await.unwrap();
    }
    let url = format!("sqlite://{}", wd.path().join("app.db").display());
    write_secret(wd.path(), &url);
    let job = crate::database_postgres::job(
        name,
        &wd,
        &shared_server().endpoint,
        &bucket,
        images_source(json!({
            "key": "{id}{owner}.{ext}",
            "contentType": { "column": "mime_type", "sniff": true },
            "modifiedColumn": "updated_at",
            "batchSize": 3,
        })),
    )
    .with(
        "filters",
        json!({ "modifiedAfter": "2024-01-01T00:00:00Z" }),
    );
    let run = crate::database_postgres::run(&wd, &job, &[]).await;
    run.assert_exit(2);
    let got = s3.contents(&bucket).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["12.png", "3b.png"],
        "{}",
        run.describe()
    );
    assert_eq!(got["12.png"], png(1), "the key keeps its first row's bytes");
    assert_eq!(got["3b.png"], png(3));
    let mut failures: Vec<(String, String)> =
        reports::s3_report_lines(&s3, &bucket, "default", name, Kind::Failures)
            .await
            .iter()
            .map(|l| {
                (
                    l["key"].as_str().unwrap().to_string(),
                    l["class"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    failures.sort();
    let f = |k: &str, c: &str| (k.to_string(), c.to_string());
    assert_eq!(
        failures,
        [
            f("12.png", "DuplicateKey"),
            f("5d.png", "InvalidData"),
            f("6e.png", "InvalidData"),
            // A data URI that does not decode declares no type the key could use.
            f("7f.bin", "InvalidData"),
            f("8g.png", "InvalidData"),
        ],
        "{}",
        run.describe()
    );
    // Nothing was written to the file (no writeBack).
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM images")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 10);
}

/// A `where` that is more than one condition fails the job at once as an invalid spec, with
/// the field and the reason, before the database is opened (nothing read, nothing written,
/// the table intact).
#[tokio::test(flavor = "multi_thread")]
async fn a_condition_with_a_second_statement_fails_the_job_before_any_read() {
    let name = "db-sqlite-where";
    let (wd, s3, bucket, pool, job) = sqlite_images(
        name,
        json!({
            "key": "{id}.{ext}",
            "where": "image_data IS NOT NULL; DROP TABLE images",
        }),
    )
    .await;
    let run = crate::database_postgres::run(&wd, &job, &[]).await;
    run.assert_exit(1).assert_phase("Failed");
    let message = run.status().message();
    assert!(
        message.contains("spec.source.database.where: ';' is not allowed"),
        "{}",
        run.describe()
    );
    assert!(s3.contents(&bucket).await.is_empty(), "nothing written");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM images")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(n > 0, "the table is intact");
}

/// The peak resident memory (VmHWM, KiB) of process `pid`, if it still runs.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// 100,000 rows of a SQLite file (1 KiB `BLOB`s, 100 MiB of payload) copied by `ferry run`
/// at the default concurrency into a directory: every row arrives, and the `ferry` process
/// never holds more than 256 MiB (its peak RSS, read from /proc while it runs). The
/// destination is a directory (on /dev/shm when there is one) so that the test measures the
/// database source, not an S3 server's or a disk's pace.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_sqlite_rows_copy_with_bounded_memory() {
    const ROWS: i64 = 100_000;
    let name = "db-sqlite-100k";
    let wd = Workdir::new(name);
    // On a tmpfs when there is one: the filesystem sink syncs every file, which on a disk
    // would make the test about fsync (minutes), not about the source.
    let shm = tempfile::Builder::new()
        .prefix("ferry-e2e-db-100k-")
        .tempdir_in("/dev/shm")
        .ok();
    let dst = match &shm {
        Some(d) => d.path().join("dst"),
        None => wd.subdir("dst"),
    };
    let opts = SqliteConnectOptions::new()
        .filename(wd.path().join("big.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB);\n\
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         INSERT INTO blobs SELECT i, randomblob(1024) FROM n;"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let url = format!("sqlite://{}", wd.path().join("big.db").display());
    write_secret(wd.path(), &url);
    let job = Job::new(name, Side::fs(wd.path()), Side::fs(&dst)).with(
        "source",
        json!({ "database": {
            "connectionSecretRef": { "name": "app-db" },
            "table": "blobs",
            "idColumn": "id",
            "dataColumn": "data",
            "encoding": "Binary",
            "key": "b/{id:06}",
        }}),
    );
    let file = job.write(wd.path());
    let started = std::time::Instant::now();
    let child = ferry_tests::ferry::spawn_ferry(
        &[&file, &wd.path().join("db-secret.yaml")],
        &wd.state_dir(),
        &[],
    );
    let pid = child.id().unwrap();
    let waiting = tokio::spawn(child.wait_with_output());
    let mut peak = 0;
    while !waiting.is_finished() {
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "100,000 rows not copied in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = waiting.await.unwrap().unwrap();
    let run = ferry_tests::Run::from_output(out, started.elapsed());
    run.assert_exit(0).assert_phase("Completed");
    run.assert_counter("objectsCopied", ROWS as u64);
    eprintln!(
        "FIGURE db_sqlite_100k_peak_rss_mib={} seconds={:.1}",
        peak / 1024,
        started.elapsed().as_secs_f64()
    );
    assert!(peak > 0, "the ferry process was never seen");
    assert!(
        peak < 256 * 1024,
        "ferry peaked at {} MiB copying 100,000 rows",
        peak / 1024
    );
    let files = std::fs::read_dir(dst.join("b")).unwrap().count();
    assert_eq!(files, ROWS as usize);
    for id in [1i64, 4_321, ROWS] {
        let want: Vec<u8> = sqlx::query_scalar("SELECT data FROM blobs WHERE id = ?1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dst.join(format!("b/{id:06}"))).unwrap(),
            want,
            "row {id}"
        );
    }
}
