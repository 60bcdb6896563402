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
    let wd = Workdir::new(name);
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket(name).await;
    let pool = sqlite_file(wd.path()).await;
    let url = format!("sqlite://{}", wd.path().join("app.db").display());
    std::fs::write(
        wd.path().join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: app-db, namespace: default}}\n\
             stringData: {{DATABASE_URL: '{url}'}}\n"
        ),
    )
    .unwrap();
    let job = Job::new(
        name,
        Side::fs(wd.path()),
        Side::s3(shared_server(), &bucket),
    )
    .with(
        "source",
        json!({ "database": {
            "connectionSecretRef": { "name": "app-db" },
            "table": "images",
            "idColumn": "id",
            "dataColumn": "image_data",
            "encoding": "Auto",
            "key": "images/{id:06}.{ext}",
            "contentType": { "column": "mime_type", "sniff": true },
            "where": "deleted_at IS NULL",
            "batchSize": 2,
            "writeBack": { "column": "image_url", "value": "https://img.example.com/{key}" },
        }}),
    );
    let run = |job: Job| {
        let wd = &wd;
        async move {
            let file = job.write(wd.path());
            ferry_tests::ferry::run_ferry(
                &[&file, &wd.path().join("secret.yaml")],
                &wd.state_dir(),
                &[],
                Duration::from_secs(180),
            )
            .await
        }
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
