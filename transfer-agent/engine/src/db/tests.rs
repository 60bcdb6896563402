//! Database sources on real SQLite files (PostgreSQL: `tests/e2e/database.rs`): listing,
//! reading, failures by class, collisions, the condition, modification times, 100,000 rows
//! with bounded memory, shard ranges, write-back, and the shard engine end to end.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{TimeZone, Utc};
use ferry_core::{FailureClass, Selection, Selector};
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::config::{ContentTypeRule, DbConfig, Encoding, WriteBackConfig};
use super::payload::tests::{JPEG, PNG};
use super::writeback::{Outcome, Verified};
use super::{failure_of, DbStore};
use crate::limit::Buffer;
use crate::shard::ShardRun;
use crate::stores::{MemoryStore, ObjectInfo, Sink, Source};
use futures::future::BoxFuture;
use tokio::sync::watch;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A SQLite file in a temporary directory, with a read-write pool for the test's own SQL.
struct Db {
    _dir: tempfile::TempDir,
    url: String,
    pool: SqlitePool,
}

impl Db {
    async fn new(schema: &str) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("app.db").display());
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        sqlx::raw_sql(schema).execute(&pool).await.unwrap();
        Db {
            _dir: dir,
            url,
            pool,
        }
    }

    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(&self.pool).await.unwrap();
    }

    async fn insert(&self, id: i64, data: Option<&[u8]>, mime: Option<&str>, text: bool) {
        let q = sqlx::query(
            "INSERT INTO images (id, image_data, mime_type, updated_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(id);
        let q = match (data, text) {
            (Some(d), true) => q.bind(String::from_utf8(d.to_vec()).unwrap()),
            (Some(d), false) => q.bind(d.to_vec()),
            (None, _) => q.bind(None::<Vec<u8>>),
        };
        q.bind(mime)
            .bind(format!("2024-01-{:02} 00:00:00", 1 + id % 28))
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

const SCHEMA: &str = "CREATE TABLE images (id INTEGER PRIMARY KEY, image_data, mime_type TEXT, \
    updated_at TEXT, deleted_at TEXT, image_url TEXT, owner TEXT);";

fn config(key: &str) -> DbConfig {
    DbConfig {
        table: "images".into(),
        id_column: "id".into(),
        data_column: "image_data".into(),
        encoding: Encoding::Auto,
        key: key.into(),
        content_type: ContentTypeRule {
            column: Some("mime_type".into()),
            sniff: true,
        },
        modified_column: Some("updated_at".into()),
        where_clause: None,
        batch_size: 3,
        write_back: None,
    }
}

async fn list(s: &DbStore, after: Option<&str>, until: Option<&str>) -> Vec<ObjectInfo> {
    s.list(after.map(String::from), until.map(String::from))
        .map(Result::unwrap)
        .collect()
        .await
}

async fn read(s: &DbStore, info: &ObjectInfo) -> Result<crate::stores::Body, crate::TransferError> {
    s.get(
        &info.key,
        0,
        info.size,
        true,
        info.etag.as_deref(),
        Buffer::unbudgeted(info.size),
    )
    .await
}

/// Rows of every encoding, a NULL payload (no object) and a sniffed type.
async fn mixed() -> Db {
    let db = Db::new(SCHEMA).await;
    db.insert(1, Some(b64(PNG).as_bytes()), Some("image/png"), true)
        .await;
    let uri = format!("data:image/jpeg;base64,{}", b64(JPEG));
    db.insert(2, Some(uri.as_bytes()), None, true).await;
    db.insert(3, Some(PNG), None, false).await;
    db.insert(4, None, Some("image/png"), false).await;
    db.insert(5, Some(b64(JPEG).as_bytes()), None, true).await;
    db
}

#[tokio::test]
async fn every_encoding_lists_and_reads_as_its_bytes() {
    let db = mixed().await;
    let s = DbStore::open(&config("img/{id:04}.{ext}"), &db.url)
        .await
        .unwrap();
    assert!(s.ordered().await.unwrap());
    let got = list(&s, None, None).await;
    let keys: Vec<&str> = got.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "img/0001.png",
            "img/0002.jpg",
            "img/0003.png",
            "img/0005.jpg"
        ]
    );
    for (info, bytes, ct) in [
        (&got[0], PNG, "image/png"),
        (&got[1], JPEG, "image/jpeg"),
        (&got[2], PNG, "image/png"),
        (&got[3], JPEG, "image/jpeg"),
    ] {
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(
            info.etag.as_deref(),
            Some(hex::encode(<md5::Md5 as md5::Digest>::digest(bytes)).as_str())
        );
        let body = read(&s, info).await.unwrap();
        assert_eq!(&body.bytes[..], bytes, "{}", info.key);
        assert_eq!(body.meta.content_type.as_deref(), Some(ct));
        let (head, _) = s.head(&info.key).await.unwrap().unwrap();
        assert_eq!(&head, info);
    }
    assert_eq!(
        got[0].modified,
        Some(Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap())
    );
    // No row has these keys.
    assert!(s.head("img/0004.png").await.unwrap().is_none());
    assert!(s.head("img/0001.jpg").await.unwrap().is_none());
    assert!(s.head("elsewhere").await.unwrap().is_none());
    s.probe().await.unwrap();
}

#[tokio::test]
async fn listings_start_after_a_key_in_both_orders() {
    let db = mixed().await;
    for key in ["img/{id:04}.{ext}", "img/{id}.{ext}"] {
        let s = DbStore::open(&config(key), &db.url).await.unwrap();
        let all = list(&s, None, None).await;
        let tail = list(&s, Some(&all[1].key), None).await;
        assert_eq!(tail, all[2..], "{key}");
        let middle = list(&s, Some(&all[0].key), Some(&all[2].key)).await;
        assert_eq!(middle, all[1..3], "{key}");
    }
    // Unpadded ids sort as text: 1, 10, 2 (sorted, not streamed).
    db.insert(10, Some(PNG), None, false).await;
    let s = DbStore::open(&config("img/{id}.{ext}"), &db.url)
        .await
        .unwrap();
    assert!(!s.ordered().await.unwrap());
    let keys: Vec<String> = list(&s, None, None)
        .await
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(
        keys,
        [
            "img/1.png",
            "img/10.png",
            "img/2.jpg",
            "img/3.png",
            "img/5.jpg"
        ]
    );
}

#[tokio::test]
async fn bad_payloads_fail_as_invalid_data_and_are_never_read_as_objects() {
    let db = Db::new(SCHEMA).await;
    db.insert(1, Some(b"@@not base64@@"), None, true).await;
    db.insert(2, Some(b""), Some("image/png"), true).await;
    db.insert(3, Some(b64(JPEG).as_bytes()), Some("image/png"), true)
        .await;
    db.insert(4, Some(b64(PNG).as_bytes()), Some("image/png"), true)
        .await;
    let mut c = config("img/{id:04}.{ext}");
    c.encoding = Encoding::Base64;
    let s = DbStore::open(&c, &db.url).await.unwrap();
    let got = list(&s, None, None).await;
    assert_eq!(got.len(), 4);
    for (info, why) in got[..3]
        .iter()
        .zip(["not valid base64", "empty", "contradicts"])
    {
        let e = failure_of(info).unwrap();
        assert_eq!(e.class, FailureClass::InvalidData, "{}", info.key);
        assert!(e.message.contains(why), "{}", e.message);
        let read_err = s.head(&info.key).await.unwrap_err();
        assert_eq!(read_err.class, FailureClass::InvalidData);
    }
    assert!(got[3].invalid.is_none());
}

#[tokio::test]
async fn a_second_row_with_the_same_key_fails_as_duplicate() {
    let db = Db::new(SCHEMA).await;
    // "{id}{owner}": id 1 + "2" and id 12 + "" both give "12.png".
    db.exec("INSERT INTO images (id, image_data, mime_type, owner) VALUES (12, X'89504E470D0A1A0A0000000D49484452', 'image/png', ''), (1, X'89504E470D0A1A0A0000000D49484452', 'image/png', '2'), (3, X'FFD8FFE0', 'image/jpeg', 'x')").await;
    let s = DbStore::open(&config("{id}{owner}.{ext}"), &db.url)
        .await
        .unwrap();
    let got = list(&s, None, None).await;
    let keys: Vec<&str> = got.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["12.png", "12.png", "3x.jpg"]);
    assert!(got[0].invalid.is_none());
    let dup = failure_of(&got[1]).unwrap();
    assert_eq!(dup.class, FailureClass::DuplicateKey);
    assert!(
        dup.message.contains("row 12") && dup.message.contains("row 1 "),
        "{}",
        dup.message
    );
    // The key reads as its first row's object.
    assert!(s.head("12.png").await.unwrap().is_some());
}

#[tokio::test]
async fn the_condition_and_modification_times_select_rows() {
    let db = mixed().await;
    db.exec("UPDATE images SET deleted_at = '2024-02-01' WHERE id = 3")
        .await;
    let mut c = config("img/{id:04}.{ext}");
    c.where_clause =
        Some("deleted_at IS NULL AND (mime_type IS NULL OR mime_type <> 'x)y')".into());
    let s = DbStore::open(&c, &db.url).await.unwrap();
    let keys: Vec<String> = list(&s, None, None)
        .await
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, ["img/0001.png", "img/0002.jpg", "img/0005.jpg"]);
    assert!(!keys.contains(&"img/0003.png".to_string()));
    assert!(s.head("img/0003.png").await.unwrap().is_none());
    // The engine's filters see each row's modification time.
    let sel = Selector::new(&Selection {
        modified_after: Some(Utc.with_ymd_and_hms(2024, 1, 4, 0, 0, 0).unwrap()),
        ..Default::default()
    })
    .unwrap();
    let selected: Vec<String> = list(&s, None, None)
        .await
        .into_iter()
        .filter(|i| sel.selects(&i.key, i.size, i.modified))
        .map(|i| i.key)
        .collect();
    assert_eq!(selected, ["img/0005.jpg"]);
    // A condition that is not one condition never reaches the database.
    c.where_clause = Some("1=1; DELETE FROM images".into());
    let e = DbStore::open(&c, &db.url).await.unwrap_err();
    assert_eq!(e.class, FailureClass::InvalidRequest);
    assert!(e.fatal);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM images")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 5);
}

/// The peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn a_hundred_thousand_rows_stream_with_bounded_memory() {
    const ROWS: i64 = 100_000;
    let db = Db::new(SCHEMA).await;
    // 100,000 rows of 3 KiB of base64 each (~300 MiB of payload), made by SQLite itself.
    db.exec(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         INSERT INTO images (id, image_data, mime_type) \
         SELECT i, 'iVBORw0KGgoA' || hex(randomblob(1536)) || printf('%08d', i) , 'image/png' FROM n"
    ))
    .await;
    let mut c = config("img/{id:08}.{ext}");
    c.encoding = Encoding::Base64;
    c.content_type.sniff = false;
    c.batch_size = 500;
    let s = DbStore::open(&c, &db.url).await.unwrap();
    let before = peak_rss();
    let mut listing = s.list(None, None);
    let (mut n, mut prev, mut bytes) = (0i64, String::new(), 0u64);
    while let Some(info) = listing.next().await {
        let info = info.unwrap();
        assert!(info.key > prev, "{} after {prev}", info.key);
        assert!(info.invalid.is_none(), "{:?}", info.invalid);
        bytes += info.size;
        prev = info.key;
        n += 1;
    }
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(n, ROWS);
    assert!(bytes > 200 << 20, "{bytes}");
    // A listing holds one batch of entries and one row's payload, not the table.
    assert!(grown < 64 << 20, "peak memory grew by {grown} bytes");
    // Keys that do not sort as ids: the same rows, sorted on disk in runs.
    let mut c2 = c.clone();
    c2.key = "img/{id}.{ext}".into();
    let s2 = DbStore::open(&c2, &db.url).await.unwrap();
    let mut listing = s2.list(Some("img/99990.png".into()), None);
    let mut keys = Vec::new();
    while let Some(info) = listing.next().await {
        keys.push(info.unwrap().key);
    }
    let mut want: Vec<String> = (1..=ROWS)
        .map(|i| format!("img/{i}.png"))
        .filter(|k| k.as_str() > "img/99990.png")
        .collect();
    want.sort();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn shard_ranges_partition_the_rows() {
    let db = Db::new(SCHEMA).await;
    for id in [1i64, 2, 3, 1000, 1001, 1_000_000_000] {
        db.insert(id, Some(PNG), None, false).await;
    }
    let s = DbStore::open(&config("img/{id:010}.{ext}"), &db.url)
        .await
        .unwrap();
    let shards = s.shard_ranges(4).await.unwrap().unwrap();
    assert_eq!(shards.len(), 4);
    let all = list(&s, None, None).await;
    let mut union = Vec::new();
    for r in &shards {
        union.extend(list(&s, r.after.as_deref(), r.until.as_deref()).await);
    }
    assert_eq!(union, all);
    // Keys that do not sort as ids cannot be split by id.
    let s = DbStore::open(&config("img/{id}.{ext}"), &db.url)
        .await
        .unwrap();
    assert!(s.shard_ranges(4).await.unwrap().is_none());
    // Text ids: sampled boundaries.
    let db = Db::new("CREATE TABLE t (name TEXT PRIMARY KEY, data BLOB);").await;
    for n in ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"] {
        db.exec(&format!("INSERT INTO t VALUES ('{n}', X'FFD8FFE0')"))
            .await;
    }
    let mut c = config("animals/{name}");
    c.table = "t".into();
    c.id_column = "name".into();
    c.data_column = "data".into();
    c.content_type = ContentTypeRule::default();
    c.modified_column = None;
    let s = DbStore::open(&c, &db.url).await.unwrap();
    let shards = s.shard_ranges(3).await.unwrap().unwrap();
    let all = list(&s, None, None).await;
    assert_eq!(all.len(), 8);
    let mut union = Vec::new();
    for r in &shards {
        union.extend(list(&s, r.after.as_deref(), r.until.as_deref()).await);
    }
    assert_eq!(union, all);
}

fn with_write_back(clear_data: bool) -> DbConfig {
    let mut c = config("img/{id:04}.{ext}");
    c.write_back = Some(WriteBackConfig {
        column: "image_url".into(),
        value: "https://img.example.com/{key}".into(),
        clear_data,
    });
    c
}

async fn row(
    db: &Db,
    id: i64,
) -> (
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    sqlx::query_as("SELECT image_data, mime_type, updated_at, image_url FROM images WHERE id = ?1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn write_back_records_verified_objects_and_skips_changed_rows() {
    let db = mixed().await;
    let s = DbStore::open(&with_write_back(false), &db.url)
        .await
        .unwrap();
    s.probe_write_back().await.unwrap();
    let got = list(&s, None, None).await;
    let verified: Vec<Verified> = got
        .iter()
        .map(|i| Verified {
            key: i.key.clone(),
            md5: i.etag.clone().unwrap(),
        })
        .collect();
    let before_3 = row(&db, 3).await;
    // Row 5 changes between the copy and the write-back.
    let other_jpeg = [JPEG, b"x"].concat();
    db.exec(&format!(
        "UPDATE images SET image_data = '{}' WHERE id = 5",
        b64(&other_jpeg)
    ))
    .await;
    let out = s.write_back(&verified, None).await.unwrap();
    assert_eq!(
        out,
        [
            Outcome::Written,
            Outcome::Written,
            Outcome::Written,
            Outcome::Changed
        ]
    );
    let after_3 = row(&db, 3).await;
    assert_eq!(
        after_3.3.as_deref(),
        Some("https://img.example.com/img/0003.png")
    );
    // No other column touched.
    assert_eq!(
        (&after_3.0, &after_3.1, &after_3.2),
        (&before_3.0, &before_3.1, &before_3.2)
    );
    assert_eq!(row(&db, 5).await.3, None);
    assert_eq!(row(&db, 4).await.3, None);
    // Again: nothing to write; a deleted row is gone.
    db.exec("DELETE FROM images WHERE id = 2").await;
    let out = s.write_back(&verified, None).await.unwrap();
    assert_eq!(
        out,
        [
            Outcome::AlreadyThere,
            Outcome::Gone,
            Outcome::AlreadyThere,
            Outcome::Changed
        ]
    );
    s.close().await;
    // clearData drops the payload of verified rows only.
    let db = mixed().await;
    let s = DbStore::open(&with_write_back(true), &db.url)
        .await
        .unwrap();
    let first = list(&s, None, None).await.remove(0);
    let queue = super::writeback::Queue::new();
    queue.push(Verified {
        key: first.key.clone(),
        md5: first.etag.clone().unwrap(),
    });
    let summary = queue.flush(&s, None).await.unwrap();
    assert_eq!(summary.written, 1);
    let r1 = row(&db, 1).await;
    assert_eq!(
        (r1.0, r1.3.as_deref()),
        (None, Some("https://img.example.com/img/0001.png"))
    );
    assert!(row(&db, 3).await.0.is_some());
    // A verified MD5 that is not the row's is never written back.
    let out = s
        .write_back(
            &[Verified {
                key: "img/0003.png".into(),
                md5: "0".repeat(32),
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, [Outcome::Changed]);
}

/// The probe's error for `c`.
async fn probe_error(c: &DbConfig, url: &str) -> crate::TransferError {
    let s = DbStore::open(c, url).await.unwrap();
    s.probe().await.unwrap_err()
}

#[tokio::test]
async fn without_write_back_the_file_is_opened_read_only() {
    let db = mixed().await;
    let s = DbStore::open(&config("img/{id:04}.{ext}"), &db.url)
        .await
        .unwrap();
    assert!(s.write_back(&[], None).await.is_err());
    // A missing column is found by the probe, fatally (the write-back column too).
    let mut c = with_write_back(false);
    c.write_back.as_mut().unwrap().column = "no_such_column".into();
    let e = probe_error(&c, &db.url).await;
    assert!(e.fatal && e.class == FailureClass::InvalidRequest, "{e:?}");
    assert!(e.message.contains("no_such_column"), "{}", e.message);
    let mut c = config("img/{id:04}.{ext}");
    c.modified_column = Some("no_such_column".into());
    let e = probe_error(&c, &db.url).await;
    assert!(e.fatal && e.class == FailureClass::InvalidRequest, "{e:?}");
    // A file that does not exist is not created.
    let missing = format!("{}.missing", db.url);
    assert!(DbStore::open(&config("{id}"), &missing).await.is_err());
    assert!(!std::path::Path::new(missing.trim_start_matches("sqlite://")).exists());
}

/// A progress record kept in memory (None: each run starts afresh).
#[derive(Default)]
struct Saved(std::sync::Mutex<Option<ferry_core::ShardProgress>>, bool);

impl ferry_core::ProgressStore for Saved {
    fn load(&self) -> BoxFuture<'_, Result<Option<ferry_core::ShardProgress>, String>> {
        let p = self.0.lock().unwrap().clone().filter(|_| self.1);
        Box::pin(async move { Ok(p) })
    }
    fn save<'a>(&'a self, p: &'a ferry_core::ShardProgress) -> BoxFuture<'a, Result<(), String>> {
        *self.0.lock().unwrap() = Some(p.clone());
        Box::pin(async { Ok(()) })
    }
}

/// One shard over the whole table, to a memory store; its live record and stop switch.
fn shard(
    s: &DbStore,
    dst: &MemoryStore,
    progress: Arc<Saved>,
    attempt: u32,
) -> (
    ShardRun,
    watch::Receiver<ferry_core::ShardProgress>,
    watch::Sender<bool>,
) {
    let unused = || {
        ferry_core::StoreConfig::Filesystem(ferry_core::stores::FsConfig {
            path: "/unused".into(),
        })
    };
    let plan = ferry_core::JobPlan {
        rollback_token: None,
        namespace: "ns".into(),
        name: "job".into(),
        uid: "u".into(),
        spec_hash: "h".into(),
        transfer: ferry_core::Transfer {
            source: unused(),
            destination: unused(),
            report: None,
            selection: Default::default(),
            overwrite: ferry_core::OverwritePolicy::IfDifferent,
            verify: ferry_core::VerifyMode::Checksum,
            concurrency: 4,
            memory_budget: 64 << 20,
            bandwidth_limit: None,
            requests_per_second: 0,
            multipart: ferry_core::MultipartSettings {
                threshold: 64 << 20,
                part_size: 16 << 20,
            },
            max_failures: None,
            dry_run: false,
            cancel: false,
            deletes: None,
            backup_replaced: false,
            mode: Default::default(),
            inventory: None,
        },
        shards: vec![ferry_core::ShardRange::default()],
        only_keys: None,
        report_prefix: REPORTS.into(),
        attempt,
        retry_failed_from: None,
        stage: Default::default(),
    };
    let (live, live_rx) = watch::channel(ferry_core::ShardProgress::default());
    let (stop_tx, stop) = watch::channel(false);
    let sink: Arc<dyn Sink> = Arc::new(dst.clone());
    let run = ShardRun {
        plan: Arc::new(plan),
        index: 0,
        src: Arc::new(s.clone()),
        report: Some(sink.clone()),
        dst: sink,
        limits: Arc::new(crate::limit::Limits::unlimited()),
        retry: crate::retry::RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        },
        server: None,
        progress,
        live,
        stop,
        checkpoint_every: Duration::from_millis(100),
        unsaved: Default::default(),
        uploads: Default::default(),
    };
    (run, live_rx, stop_tx)
}

const REPORTS: &str = ".ferry/reports/u/";

/// The keys of the manifests the shard wrote (each listed key once per manifest line).
fn manifest_keys(dst: &MemoryStore) -> Vec<String> {
    let mut keys: Vec<String> = dst
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(REPORTS) && k.contains("/manifest-"))
        .flat_map(|k| {
            let body = dst.bytes(&k).unwrap();
            body.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    serde_json::from_slice::<serde_json::Value>(l).unwrap()["key"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys
}

/// The shard engine with a table as its source: every row copied once, failures recorded,
/// and a second run copies nothing (the listed MD5s match the destination's).
#[tokio::test]
async fn the_shard_engine_copies_a_table() {
    let db = mixed().await;
    db.insert(6, Some(b"!!"), Some("image/png"), true).await;
    let s = DbStore::open(&config("img/{id:04}.{ext}"), &db.url)
        .await
        .unwrap();
    let dst = MemoryStore::new();
    for attempt in 0..2 {
        let (run, _live, _stop) = shard(&s, &dst, Arc::default(), attempt);
        let p = run.run().await;
        let c = &p.counters;
        if attempt == 0 {
            assert_eq!((c.objects_copied, c.objects_failed), (4, 1), "{c:?}");
        } else {
            assert_eq!(
                (c.objects_copied, c.objects_skipped, c.objects_failed),
                (0, 4, 1),
                "{c:?}"
            );
        }
    }
    assert_eq!(dst.bytes("img/0001.png").as_deref(), Some(PNG));
    assert_eq!(dst.bytes("img/0002.jpg").as_deref(), Some(JPEG));
    assert!(dst.bytes("img/0006.png").is_none());
}

/// A run stopped midway resumes at its watermark (an id, through the key) and copies each
/// row once.
#[tokio::test]
async fn a_stopped_table_copy_resumes_and_copies_each_row_once() {
    const ROWS: i64 = 60;
    let db = Db::new(SCHEMA).await;
    for id in 1..=ROWS {
        db.insert(
            id,
            Some(&[PNG, &id.to_be_bytes()].concat()),
            Some("image/png"),
            false,
        )
        .await;
    }
    let mut c = config("img/{id:06}.{ext}");
    c.batch_size = 7;
    let s = DbStore::open(&c, &db.url).await.unwrap();
    let dst = MemoryStore::new();
    dst.slow_writes(Duration::from_millis(20));
    let saved = Arc::new(Saved(Default::default(), true));
    let (run, mut live, stop) = shard(&s, &dst, saved.clone(), 0);
    let task = tokio::spawn(run.run());
    while live.borrow().counters.objects_copied < 15 {
        live.changed().await.unwrap();
    }
    stop.send(true).unwrap();
    let paused = task.await.unwrap();
    assert_eq!(paused.state, ferry_core::ShardState::Paused);
    let done = paused.checkpoint.counters.objects_copied as i64;
    assert!((15..ROWS).contains(&done), "{done}");
    assert_eq!(
        paused.checkpoint.watermark,
        Some(format!("img/{done:06}.png"))
    );

    let (resumed, _live, _stop) = shard(&s, &dst, saved, 0);
    let rec = resumed.run().await;
    assert_eq!(rec.state, ferry_core::ShardState::Completed);
    assert_eq!(
        (rec.counters.objects_copied, rec.counters.objects_skipped),
        (ROWS as u64, 0)
    );
    let want: Vec<String> = (1..=ROWS).map(|i| format!("img/{i:06}.png")).collect();
    assert_eq!(manifest_keys(&dst), want, "each row once in the manifests");
    assert_eq!(
        dst.bytes("img/000060.png").as_deref(),
        Some(&[PNG, &60i64.to_be_bytes()].concat()[..])
    );
}

/// Through the shard engine: a row that does not decode fails as `InvalidData` (not
/// `Unrepresentable`); every copied row gets its URL once the checkpoint is saved; a row
/// whose URL was lost is written back by the next run, which finds its object up to date
/// (same MD5) and copies nothing; a dry run writes nothing back.
#[tokio::test]
async fn the_shard_engine_writes_back_and_fails_rows_with_their_class() {
    let db = mixed().await;
    db.insert(6, Some(b"!!"), Some("image/png"), true).await;
    let s = DbStore::open(&with_write_back(false), &db.url)
        .await
        .unwrap();
    let dst = MemoryStore::new();
    let url = |id: i64, ext: &str| Some(format!("https://img.example.com/img/{id:04}.{ext}"));
    let (run, _live, _stop) = shard(&s, &dst, Arc::default(), 0);
    let p = run.run().await;
    assert_eq!(
        p.failures_by_class.get(&FailureClass::InvalidData),
        Some(&1),
        "{:?}",
        p.failures_by_class
    );
    assert_eq!(p.counters.objects_copied, 4);
    assert_eq!(row(&db, 1).await.3, url(1, "png"));
    assert_eq!(row(&db, 2).await.3, url(2, "jpg"));
    assert_eq!(row(&db, 5).await.3, url(5, "jpg"));
    assert_eq!(
        row(&db, 6).await.3,
        None,
        "a failed row is not written back"
    );
    sqlx::query("UPDATE images SET image_url = NULL WHERE id = 2")
        .execute(&db.pool)
        .await
        .unwrap();
    // A dry run writes nothing back.
    let (mut run, _live, _stop) = shard(&s, &dst, Arc::default(), 1);
    Arc::get_mut(&mut run.plan).unwrap().transfer.dry_run = true;
    run.run().await;
    assert_eq!(row(&db, 2).await.3, None);
    let (run, _live, _stop) = shard(&s, &dst, Arc::default(), 2);
    let p = run.run().await;
    assert_eq!(
        (p.counters.objects_copied, p.counters.objects_skipped),
        (0, 4)
    );
    assert_eq!(row(&db, 2).await.3, url(2, "jpg"));
}

/// A copy of the whole table into `dst` with its report in the job's own folder (where a
/// rollback looks).
async fn copy_for_rollback(s: &DbStore, dst: &MemoryStore) -> ferry_core::ShardProgress {
    let (mut run, _live, _stop) = shard(s, dst, Arc::default(), 0);
    let plan = Arc::get_mut(&mut run.plan).unwrap();
    plan.report_prefix = plan.job_report_prefix();
    run.run().await
}

/// The rollback of [`copy_for_rollback`], from the start.
async fn rollback(s: &DbStore, dst: &MemoryStore) -> ferry_core::ShardProgress {
    let (mut run, _live, _stop) = shard(s, dst, Arc::default(), 0);
    run.plan = Arc::new(run.plan.rollback());
    run.run().await
}

/// The rollback stage of a table copy with write-back: each row's column is set back to what
/// it held before the job (NULL, or a value of its own) from the journal the copy wrote,
/// before the objects are deleted; a column someone changed since is kept as it is and said;
/// a second rollback finds nothing left to do.
#[tokio::test]
async fn the_rollback_sets_written_back_rows_back_from_the_journal() {
    let db = mixed().await;
    db.exec("UPDATE images SET image_url = 'legacy://1' WHERE id = 1")
        .await;
    let s = DbStore::open(&with_write_back(false), &db.url)
        .await
        .unwrap();
    let dst = MemoryStore::new();
    assert_eq!(copy_for_rollback(&s, &dst).await.counters.objects_copied, 4);
    let journals: Vec<String> = dst
        .keys()
        .into_iter()
        .filter(|k| k.contains("/shard-0/writeback-"))
        .collect();
    assert!(!journals.is_empty(), "the write-back keeps a journal");
    db.exec("UPDATE images SET image_url = 'https://elsewhere/5' WHERE id = 5")
        .await;

    let p = rollback(&s, &dst).await;
    let c = &p.counters;
    assert_eq!(p.state, ferry_core::ShardState::Completed);
    assert_eq!((c.rows_reverted, c.rows_not_reverted), (3, 1), "{c:?}");
    assert_eq!(
        p.failures_by_class.get(&FailureClass::ChangedSinceCopy),
        Some(&1)
    );
    assert_eq!(row(&db, 1).await.3.as_deref(), Some("legacy://1"));
    assert_eq!(row(&db, 2).await.3, None);
    assert_eq!(row(&db, 3).await.3, None);
    assert_eq!(row(&db, 5).await.3.as_deref(), Some("https://elsewhere/5"));
    assert!(row(&db, 1).await.0.is_some(), "the payload is untouched");
    assert_eq!(c.objects_rolled_back, 4);
    assert!(dst.bytes("img/0001.png").is_none());

    // Again: every row holds its value from before (or the changed one); nothing is deleted.
    let c = rollback(&s, &dst).await.counters;
    assert_eq!((c.rows_reverted, c.rows_not_reverted), (3, 1), "{c:?}");
    assert_eq!((c.objects_rolled_back, c.objects_rollback_gone), (0, 4));
    assert_eq!(row(&db, 1).await.3.as_deref(), Some("legacy://1"));
}

/// With `clearData` the rows' payloads are gone from the database: the rollback keeps both
/// the rows (their references) and the objects (the only copies of those bytes), each said as
/// `NotRestorable`.
#[tokio::test]
async fn the_rollback_keeps_objects_whose_rows_were_cleared() {
    let db = mixed().await;
    let s = DbStore::open(&with_write_back(true), &db.url)
        .await
        .unwrap();
    let dst = MemoryStore::new();
    assert_eq!(copy_for_rollback(&s, &dst).await.counters.objects_copied, 4);
    assert_eq!(row(&db, 1).await.0, None);
    let p = rollback(&s, &dst).await;
    let c = &p.counters;
    assert_eq!((c.rows_reverted, c.rows_not_reverted), (0, 4), "{c:?}");
    assert_eq!((c.objects_rolled_back, c.objects_rollback_kept), (0, 4));
    assert_eq!(
        p.failures_by_class.get(&FailureClass::NotRestorable),
        Some(&8),
        "each row and each object"
    );
    assert_eq!(dst.bytes("img/0001.png").as_deref(), Some(PNG));
    assert_eq!(
        row(&db, 1).await.3.as_deref(),
        Some("https://img.example.com/img/0001.png")
    );
}

/// A copy takes the bytes its listing decoded, with the MD5 the listing computed from them
/// (read, decoded and hashed once); a count (`list_keys`) keeps nothing. A row changed after
/// it was listed is copied as listed, bytes and MD5 agreeing; the next read of it (a retry)
/// reads the row again and finds it changed.
#[tokio::test]
async fn copies_take_the_rows_their_listing_read() {
    let db = mixed().await;
    let s = DbStore::open(&config("img/{id:04}.{ext}"), &db.url)
        .await
        .unwrap();
    let counted: Vec<ObjectInfo> = s.list_keys(None, None).map(Result::unwrap).collect().await;
    assert_eq!(counted.len(), 4);
    assert_eq!(s.read_ahead().held().0, 0, "a count kept rows");
    let got = list(&s, None, None).await;
    assert_eq!(s.read_ahead().held().0, 4);
    let md5 = |b: &[u8]| <md5::Md5 as md5::Digest>::digest(b).into();
    let body = read(&s, &got[0]).await.unwrap();
    assert_eq!(&body.bytes[..], PNG);
    assert_eq!(body.md5, Some(md5(PNG)));
    assert_eq!(
        got[0].etag.as_deref(),
        Some(hex::encode(body.md5.unwrap()).as_str())
    );
    assert_eq!(body.meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(s.read_ahead().held().0, 3, "not taken");
    // Row 2 changes after it was listed: its copy gets the listed version.
    let other = [JPEG, b"changed"].concat();
    db.exec(&format!(
        "UPDATE images SET image_data = '{}' WHERE id = 2",
        b64(&other)
    ))
    .await;
    let body = read(&s, &got[1]).await.unwrap();
    assert_eq!((&body.bytes[..], body.md5), (JPEG, Some(md5(JPEG))));
    // Read again (a retry): the row as it is now, which is not the listed version.
    let e = read(&s, &got[1])
        .await
        .err()
        .expect("a changed row was read");
    assert!(e.changed, "{e:?}");
    // Read by key without a listed version, from the row: hashed from the bytes handed over.
    let now = s
        .get(
            &got[1].key,
            0,
            other.len() as u64,
            true,
            None,
            Buffer::unbudgeted(0),
        )
        .await
        .unwrap();
    assert_eq!((&now.bytes[..], now.md5), (&other[..], Some(md5(&other))));
}
