//! Database sources (issue 15) end to end on a real PostgreSQL server: `ferry run` of a
//! `database` job whose connection URL (with its password) is in a Secret, into a real S3
//! server (moto, or Garage with `FERRY_TEST_GARAGE`). Checked with the test's own S3 client
//! and psql, not Ferry: the objects' bytes and content types for base64, data-URI and
//! `bytea` payloads; the write-back of the URLs, and a row changed during the copy left
//! alone; a dry run that writes nothing anywhere; a SIGKILLed run that resumes and copies
//! each row once (`database_resume`); and the password, which no output, report or state file
//! shows.
//!
//! The server is `tests/support/postgres.rs`, started once per test process (about a second)
//! and shared, a database per test. Without PostgreSQL installed the tests print a notice and
//! pass without checking anything (as the engine's `db_postgres` tests do); `tests/run.sh`
//! installs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use ferry_tests::postgres::{shared_postgres, Postgres, PASSWORD};
use ferry_tests::reports::{self, Kind};
use ferry_tests::{shared_server, FaultProxy, FaultSchedule, Job, Run, Side, Workdir, S3};
use serde_json::{json, Value};

pub(crate) const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
pub(crate) const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";
const GIF: &[u8] = b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff!";
const WEBP: &[u8] = b"RIFF\x1a\0\0\0WEBPVP8 \x0e\0\0\0\x30\x01\0\x9d\x01\x2a\x01\0\x01\0";

pub(crate) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `bytes` made unique to `id` (the signature kept first, so the type is still recognised).
pub(crate) fn image(bytes: &[u8], id: u32) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.extend_from_slice(format!("-row-{id}").as_bytes());
    v
}

/// The shared server and a fresh database with `schema`; None (skip) without PostgreSQL.
pub(crate) fn database(hint: &str, schema: &str) -> Option<(&'static Postgres, String)> {
    let pg = shared_postgres()?;
    let db = pg.database(hint).unwrap();
    pg.psql(&db, schema).unwrap();
    Some((pg, db))
}

/// A `database` source of the tests' `images` table (id `id`, payload `image_data`, URL in the
/// Secret `app-db`) with `fields` added.
pub(crate) fn images_source(fields: Value) -> Value {
    let mut v = json!({
        "connectionSecretRef": { "name": "app-db" },
        "table": "images",
        "idColumn": "id",
        "dataColumn": "image_data",
    });
    for (k, x) in fields.as_object().expect("a mapping") {
        v[k] = x.clone();
    }
    v
}

/// The Secret holding the connection URL, beside the job.
pub(crate) fn write_secret(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("db-secret.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: app-db, namespace: default}}\n\
             stringData: {{DATABASE_URL: '{url}'}}\n"
        ),
    )
    .unwrap();
    path
}

/// A job from the database to `bucket` (reached at `endpoint`, a proxy or the server).
pub(crate) fn job(name: &str, wd: &Workdir, endpoint: &str, bucket: &str, database: Value) -> Job {
    let server = shared_server();
    Job::new(
        name,
        Side::fs(wd.path()),
        Side::s3_at(endpoint, &server.creds, bucket),
    )
    .with("source", json!({ "database": database }))
}

pub(crate) async fn run(wd: &Workdir, job: &Job, extra: &[&str]) -> Run {
    let file = job.write(wd.path());
    let secret = wd.path().join("db-secret.yaml");
    ferry_tests::ferry::run_ferry(
        &[&file, &secret],
        &wd.state_dir(),
        extra,
        Duration::from_secs(180),
    )
    .await
}

/// `id|image_url` of every row, in id order (`-` for NULL).
pub(crate) fn urls(pg: &Postgres, db: &str, table: &str) -> Vec<String> {
    pg.psql(
        db,
        &format!("SELECT id || '|' || coalesce(image_url, '-') FROM {table} ORDER BY id"),
    )
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect()
}

/// A digest of every column of every row: equal before and after means nothing was written.
fn table_digest(pg: &Postgres, db: &str, table: &str) -> String {
    pg.psql(
        db,
        &format!("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM {table} t"),
    )
    .unwrap()
}

/// Every file under `dir`, as text (lossy).
pub(crate) fn files_text(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_text(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, String::from_utf8_lossy(&b).into_owned()));
        }
    }
    out
}

/// The password is in no output of `runs`, no state file (the Secret file apart: the test
/// wrote it), and no object of the bucket (reports included).
pub(crate) async fn assert_password_never_shown(
    runs: &[&Run],
    wd: &Workdir,
    s3: &S3,
    bucket: &str,
) {
    for r in runs {
        assert!(
            !r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD),
            "the password was printed\n{}",
            r.describe()
        );
    }
    for (path, text) in files_text(&wd.state_dir()) {
        assert!(
            !text.contains(PASSWORD),
            "{} holds the password",
            path.display()
        );
    }
    for o in s3.list_all(bucket, "").await {
        let body = s3.get(bucket, &o.key).await;
        assert!(
            !String::from_utf8_lossy(&body).contains(PASSWORD),
            "the object {} holds the password",
            o.key
        );
    }
}

/// Base64 text, data URIs (the content type from a column, the URI, or the bytes' magic
/// numbers) and a `bytea` table land in the bucket as the right bytes with the right content
/// types; a payload whose bytes contradict its declared type fails as `InvalidData`; the rows
/// get their URLs, and a row rewritten during the copy (after its object is uploaded, before
/// the write-back) keeps no URL until the next run copies its new bytes. A dry run before
/// writes nothing to the bucket or the database. The password never shows.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_rows_land_in_a_bucket_with_their_types_and_are_written_back() {
    let Some((pg, db)) = database(
        "pge2e",
        "CREATE TABLE images (id bigint PRIMARY KEY, image_data text, mime_type text, \
         updated_at timestamptz, image_url text);\n\
         CREATE TABLE blobs (id integer PRIMARY KEY, data bytea, image_url text);",
    ) else {
        return;
    };
    let name = "db-pg";
    let wd = Workdir::new(name);
    let server = shared_server();
    let s3 = S3::for_server(server);
    let bucket = s3.create_bucket(name).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultSchedule::none()).await;

    // Rows 1..=4 are the interesting ones; 5..=24 are plain PNGs that give the run enough
    // requests (at 10 per second) for the test to rewrite row 1 while the copy goes on.
    let mut expected: BTreeMap<String, (Vec<u8>, &str)> = BTreeMap::new();
    let mut sql = String::from("INSERT INTO images (id, image_data, mime_type) VALUES\n");
    let mut values = vec![
        format!("(1, '{}', 'image/png')", b64(&image(PNG, 1))),
        format!(
            "(2, 'data:image/jpeg;base64,{}', NULL)",
            b64(&image(JPEG, 2))
        ),
        format!("(3, '{}', NULL)", b64(&image(GIF, 3))),
        // Declared PNG, JPEG bytes: never uploaded.
        format!("(4, '{}', 'image/png')", b64(&image(JPEG, 4))),
    ];
    expected.insert("img/000001.png".into(), (image(PNG, 1), "image/png"));
    expected.insert("img/000002.jpg".into(), (image(JPEG, 2), "image/jpeg"));
    expected.insert("img/000003.gif".into(), (image(GIF, 3), "image/gif"));
    for id in 5..=24 {
        values.push(format!("({id}, '{}', 'image/png')", b64(&image(PNG, id))));
        expected.insert(format!("img/{id:06}.png"), (image(PNG, id), "image/png"));
    }
    sql.push_str(&values.join(",\n"));
    sql.push_str(";\nINSERT INTO blobs (id, data) VALUES ");
    sql.push_str(&format!(
        "(7, decode('{}', 'hex')), (8, decode('{}', 'hex')), (9, NULL);",
        hex::encode(image(WEBP, 7)),
        hex::encode(image(PNG, 8))
    ));
    pg.psql(&db, &sql).unwrap();
    write_secret(wd.path(), &pg.url(&db));

    let images = job(
        name,
        &wd,
        &proxy.endpoint(),
        &bucket,
        images_source(json!({
            "encoding": "Auto",
            "key": "img/{id:06}.{ext}",
            "contentType": { "column": "mime_type", "sniff": true },
            "batchSize": 5,
            "writeBack": { "column": "image_url", "value": "https://img.example.com/{key}" },
        })),
    );

    // A dry run: reads, writes nothing anywhere.
    let before = table_digest(pg, &db, "images");
    let dry = run(&wd, &images.clone().with("dryRun", json!(true)), &[]).await;
    dry.assert_exit(0);
    assert!(dry.status().dry_run(), "{}", dry.describe());
    assert_eq!(dry.counter("objectsWouldCopy"), 23, "{}", dry.describe());
    assert!(
        s3.list_all(&bucket, "").await.is_empty(),
        "a dry run wrote to the bucket"
    );
    let writes: Vec<String> = proxy
        .records()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "DELETE"))
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert!(writes.is_empty(), "a dry run sent writes: {writes:?}");
    assert_eq!(
        table_digest(pg, &db, "images"),
        before,
        "a dry run changed the table"
    );
    std::fs::remove_dir_all(wd.state_dir()).unwrap();

    // The copy, throttled (10 requests/s: about two seconds of uploads after row 1's), the
    // write-back at the end only (no checkpoint before): row 1 is rewritten as soon as its
    // object is in the bucket.
    let mut child = {
        let file = images
            .clone()
            .with("requestsPerSecond", json!(10))
            .write(wd.path());
        ferry_tests::ferry::spawn_ferry(
            &[&file, &wd.path().join("db-secret.yaml")],
            &wd.state_dir(),
            &["--checkpoint-interval", "600"],
        )
    };
    let throttled_started = Instant::now();
    let new_png = image(PNG, 1001);
    loop {
        if s3.try_get(&bucket, "img/000001.png").await.is_some() {
            pg.psql(
                &db,
                &format!(
                    "UPDATE images SET image_data = '{}' WHERE id = 1",
                    b64(&new_png)
                ),
            )
            .unwrap();
            break;
        }
        if let Ok(Some(s)) = child.try_wait() {
            panic!("ferry ended ({s}) before row 1's object appeared");
        }
        assert!(throttled_started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("ferry did not finish")
        .unwrap();
    let first = Run::from_output(out, throttled_started.elapsed());
    first.assert_exit(2);
    assert_eq!(first.status().failures_of("InvalidData"), 1);

    let got = s3.list(&bucket).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the objects in the bucket"
    );
    for (key, (bytes, ty)) in &expected {
        assert_eq!(&s3.get(&bucket, key).await, bytes, "{key}: bytes");
        assert_eq!(
            s3.meta(&bucket, key).await.content_type.as_deref(),
            Some(*ty),
            "{key}: content type"
        );
    }
    let failures = reports::s3_report_lines(&s3, &bucket, "default", name, Kind::Failures).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["key"], "img/000004.png");
    assert_eq!(failures[0]["class"], "InvalidData");
    let url = |key: &str| format!("https://img.example.com/{key}");
    let mut want: Vec<String> = (1..=24u32)
        .map(|id| {
            let key = expected
                .keys()
                .find(|k| k.starts_with(&format!("img/{id:06}.")));
            match (id, key) {
                // Rewritten during the copy: not written back.
                (1, _) | (_, None) => format!("{id}|-"),
                (_, Some(k)) => format!("{id}|{}", url(k)),
            }
        })
        .collect();
    assert_eq!(urls(pg, &db, "images"), want, "the write-back");

    // The next run (a new job run: the state of the finished one removed) copies row 1's
    // new bytes and writes its URL; nothing else is copied.
    std::fs::remove_dir_all(wd.state_dir()).unwrap();
    proxy.clear();
    let second = run(&wd, &images, &[]).await;
    second.assert_exit(2);
    let puts: Vec<String> = proxy
        .data_puts()
        .iter()
        .map(|r| r.bucket_and_key().1)
        .collect();
    assert_eq!(puts, ["img/000001.png"], "the second run's uploads");
    assert_eq!(s3.get(&bucket, "img/000001.png").await, new_png);
    want[0] = format!("1|{}", url("img/000001.png"));
    assert_eq!(urls(pg, &db, "images"), want);

    // A bytea table: the bytes as stored, the type sniffed.
    std::fs::remove_dir_all(wd.state_dir()).unwrap();
    let blobs = job(
        "db-pg-blobs",
        &wd,
        &server.endpoint,
        &bucket,
        json!({
            "connectionSecretRef": { "name": "app-db" },
            "table": "public.blobs",
            "idColumn": "id",
            "dataColumn": "data",
            "encoding": "Binary",
            "key": "blobs/{id}.{ext}",
            "contentType": { "sniff": true },
            "writeBack": { "column": "image_url", "value": "s3://{key}" },
        }),
    );
    let third = run(&wd, &blobs, &[]).await;
    third.assert_exit(0).assert_phase("Completed");
    for (key, bytes, ty) in [
        ("blobs/7.webp", image(WEBP, 7), "image/webp"),
        ("blobs/8.png", image(PNG, 8), "image/png"),
    ] {
        assert_eq!(s3.get(&bucket, key).await, bytes, "{key}");
        assert_eq!(
            s3.meta(&bucket, key).await.content_type.as_deref(),
            Some(ty)
        );
    }
    assert!(s3.try_get(&bucket, "blobs/9.bin").await.is_none());
    assert_eq!(
        urls(pg, &db, "blobs"),
        ["7|s3://blobs/7.webp", "8|s3://blobs/8.png", "9|-"]
    );

    assert_password_never_shown(&[&dry, &first, &second, &third], &wd, &s3, &bucket).await;
}
