//! Database sources on a real PostgreSQL server (started by `tests/support/postgres.rs`, a
//! database per test; skipped with a notice when PostgreSQL is not installed): bytea, base64
//! and data-URI payloads, timestamps, text ids, keyset paging across batches, read-only
//! listing transactions, write-back (and its missing privilege), and the password, which no
//! message or description shows.

#[path = "../../../tests/support/postgres.rs"]
mod postgres;

use base64::Engine;
use ferry_core::FailureClass;
use ferry_engine::db::writeback::{Outcome, Verified};
use ferry_engine::db::{ContentTypeRule, DbConfig, DbStore, Encoding, WriteBackConfig};
use ferry_engine::limit::Buffer;
use ferry_engine::stores::{ObjectInfo, Source};
use futures::StreamExt;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";

/// A fresh database with `schema`, or None (skip) without PostgreSQL.
fn database(hint: &str, schema: &str) -> Option<(&'static postgres::Postgres, String)> {
    let pg = postgres::shared_postgres()?;
    let db = pg.database(hint).unwrap();
    pg.psql(&db, schema).unwrap();
    Some((pg, db))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn config(key: &str) -> DbConfig {
    DbConfig {
        table: "public.images".into(),
        id_column: "id".into(),
        data_column: "image_data".into(),
        encoding: Encoding::Auto,
        key: key.into(),
        content_type: ContentTypeRule {
            column: Some("mime_type".into()),
            sniff: true,
        },
        modified_column: Some("updated_at".into()),
        where_clause: Some("deleted_at IS NULL".into()),
        batch_size: 2,
        write_back: None,
    }
}

const SCHEMA: &str = "CREATE TABLE images (id bigint PRIMARY KEY, image_data text, \
    mime_type text, updated_at timestamptz, deleted_at timestamptz, image_url text);\n\
    CREATE TABLE blobs (id integer PRIMARY KEY, data bytea, updated_at timestamp);";

async fn list(s: &DbStore, after: Option<&str>) -> Vec<ObjectInfo> {
    s.list(after.map(String::from), None)
        .map(Result::unwrap)
        .collect()
        .await
}

async fn read(s: &DbStore, info: &ObjectInfo) -> Vec<u8> {
    let b = s
        .get(
            &info.key,
            0,
            info.size,
            true,
            info.etag.as_deref(),
            Buffer::unbudgeted(info.size),
        )
        .await
        .unwrap();
    b.bytes.to_vec()
}

#[tokio::test]
async fn postgres_rows_of_each_encoding_become_objects() {
    let Some((pg, db)) = database("encodings", SCHEMA) else {
        return;
    };
    pg.psql(
        &db,
        &format!(
            "INSERT INTO images VALUES \
             (1, '{png}', 'image/png', '2024-03-01T10:00:00Z', NULL, NULL), \
             (2, 'data:image/jpeg;base64,{jpeg}', NULL, '2024-03-02T10:00:00Z', NULL, NULL), \
             (3, '{png}', 'image/png', NULL, '2024-01-01', NULL), \
             (4, '{jpeg}', NULL, NULL, NULL, NULL), \
             (5, 'not base64 at all!', 'image/png', NULL, NULL, NULL), \
             (6, NULL, 'image/png', NULL, NULL, NULL);\n\
             INSERT INTO blobs VALUES (10, decode('{png_hex}', 'hex'), '2024-05-05 05:05:05');",
            png = b64(PNG),
            jpeg = b64(JPEG),
            png_hex = hex::encode(PNG),
        ),
    )
    .unwrap();
    let s = DbStore::open(&config("img/{id:06}.{ext}"), &pg.url(&db))
        .await
        .unwrap();
    s.probe().await.unwrap();
    let got = list(&s, None).await;
    let keys: Vec<&str> = got.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "img/000001.png",
            "img/000002.jpg",
            "img/000004.jpg",
            "img/000005.png"
        ]
    );
    assert_eq!(read(&s, &got[0]).await, PNG);
    assert_eq!(read(&s, &got[1]).await, JPEG);
    assert_eq!(read(&s, &got[2]).await, JPEG);
    assert_eq!(
        got[0].modified.unwrap().to_rfc3339(),
        "2024-03-01T10:00:00+00:00"
    );
    let bad = ferry_engine::db::failure_of(&got[3]).unwrap();
    assert_eq!(bad.class, FailureClass::InvalidData);
    // Resuming after a key reads only what follows (keyset paging, batches of 2).
    assert_eq!(list(&s, Some("img/000002.jpg")).await, got[2..]);
    let (_, meta) = s.head("img/000002.jpg").await.unwrap().unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("image/jpeg"));

    // bytea payloads and timestamp (without zone) columns.
    let mut c = config("blob-{id}");
    c.table = "blobs".into();
    c.data_column = "data".into();
    c.content_type = ContentTypeRule::default();
    c.where_clause = None;
    c.encoding = Encoding::Binary;
    let s = DbStore::open(&c, &pg.url(&db)).await.unwrap();
    let got = list(&s, None).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, "blob-10");
    assert_eq!(read(&s, &got[0]).await, PNG);
    assert_eq!(
        got[0].modified.unwrap().to_rfc3339(),
        "2024-05-05T05:05:05+00:00"
    );
}

#[tokio::test]
async fn postgres_pages_many_rows_in_order_and_splits_text_ids() {
    let Some((pg, db)) = database(
        "paging",
        "CREATE TABLE t (name text PRIMARY KEY, body bytea);",
    ) else {
        return;
    };
    // Upper and lower case: byte order puts every upper-case name first.
    pg.psql(
        &db,
        "INSERT INTO t SELECT (CASE WHEN i % 2 = 0 THEN 'A' ELSE 'a' END) || lpad(i::text, 6, '0'), \
         decode('ffd8ffe0', 'hex') || int4send(i) FROM generate_series(1, 5000) i;",
    )
    .unwrap();
    let mut c = config("t/{name}");
    c.table = "t".into();
    c.id_column = "name".into();
    c.data_column = "body".into();
    c.content_type = ContentTypeRule {
        column: None,
        sniff: true,
    };
    c.modified_column = None;
    c.where_clause = None;
    c.batch_size = 300;
    let s = DbStore::open(&c, &pg.url(&db)).await.unwrap();
    let all = list(&s, None).await;
    assert_eq!(all.len(), 5000);
    assert!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "not in byte order"
    );
    assert!(all[0].key.starts_with("t/A") && all[4999].key.starts_with("t/a"));
    let shards = s.shard_ranges(4).await.unwrap().unwrap();
    let mut union = Vec::new();
    for r in &shards {
        let part: Vec<ObjectInfo> = s
            .list(r.after.clone(), r.until.clone())
            .map(Result::unwrap)
            .collect()
            .await;
        assert!(!part.is_empty());
        union.extend(part);
    }
    assert_eq!(union, all);
}

#[tokio::test]
async fn postgres_listing_transactions_are_read_only() {
    let Some((pg, db)) = database("readonly", SCHEMA) else {
        return;
    };
    pg.psql(
        &db,
        &format!("CREATE SEQUENCE s; INSERT INTO images VALUES (1, '{}', 'image/png', NULL, NULL, NULL);", b64(PNG)),
    )
    .unwrap();
    let mut c = config("{id:04}");
    // A condition that would write (advance a sequence) fails: the transaction is read-only.
    c.where_clause = Some("nextval('s') > 0".into());
    let s = DbStore::open(&c, &pg.url(&db)).await;
    let err = match s {
        Err(e) => e,
        Ok(s) => s.list(None, None).next().await.unwrap().unwrap_err(),
    };
    assert!(
        err.message.contains("read-only") || err.message.contains("nextval"),
        "{}",
        err.message
    );
    assert_eq!(pg.psql(&db, "SELECT last_value FROM s").unwrap(), "1");
}

#[tokio::test]
async fn postgres_write_back_after_verification_only_for_unchanged_rows() {
    let Some((pg, db)) = database("writeback", SCHEMA) else {
        return;
    };
    pg.psql(
        &db,
        &format!(
            "INSERT INTO images VALUES (1, '{png}', 'image/png', now(), NULL, NULL), \
             (2, '{png}', 'image/png', now(), NULL, NULL), (3, '{png}', 'image/png', now(), NULL, NULL);",
            png = b64(PNG)
        ),
    )
    .unwrap();
    let mut c = config("img/{id:04}.{ext}");
    c.write_back = Some(WriteBackConfig {
        column: "image_url".into(),
        value: "https://cdn.example.com/{key}".into(),
        clear_data: true,
    });
    let s = DbStore::open(&c, &pg.url(&db)).await.unwrap();
    s.probe_write_back().await.unwrap();
    let got = list(&s, None).await;
    let verified: Vec<Verified> = got
        .iter()
        .map(|i| Verified {
            key: i.key.clone(),
            md5: i.etag.clone().unwrap(),
        })
        .collect();
    // Row 2 is rewritten by the application while it is being copied.
    let before = pg
        .psql(&db, "SELECT mime_type, updated_at FROM images ORDER BY id")
        .unwrap();
    pg.psql(
        &db,
        &format!(
            "UPDATE images SET image_data = '{}' WHERE id = 2",
            b64(&[PNG, b"!"].concat())
        ),
    )
    .unwrap();
    let out = s.write_back(&verified, None).await.unwrap();
    assert_eq!(out, [Outcome::Written, Outcome::Changed, Outcome::Written]);
    let rows = pg
        .psql(
            &db,
            "SELECT id, image_data IS NULL, coalesce(image_url, '-') FROM images ORDER BY id",
        )
        .unwrap();
    assert_eq!(
        rows,
        "1|t|https://cdn.example.com/img/0001.png\n2|f|-\n3|t|https://cdn.example.com/img/0003.png"
    );
    // No other column touched.
    assert_eq!(
        pg.psql(&db, "SELECT mime_type, updated_at FROM images ORDER BY id")
            .unwrap(),
        before
    );

    // A user who may read but not update: the check says what is missing.
    pg.psql(
        &db,
        "CREATE ROLE reader LOGIN PASSWORD 'rd-pass-77'; GRANT SELECT ON images TO reader;",
    )
    .unwrap();
    let url = format!("postgres://reader:rd-pass-77@127.0.0.1:{}/{db}", pg.port);
    let s = DbStore::open(&c, &url).await.unwrap();
    // The start-up check (probe) includes the write-back permission when writeBack is set.
    for e in [
        s.probe().await.unwrap_err(),
        s.probe_write_back().await.unwrap_err(),
    ] {
        assert_eq!(e.class, FailureClass::AccessDenied);
        assert!(e.message.contains("image_url"), "{}", e.message);
        assert!(!e.message.contains("rd-pass-77"));
    }
}

#[tokio::test]
async fn postgres_passwords_are_never_printed() {
    let Some((pg, db)) = database("secrets", SCHEMA) else {
        return;
    };
    let good = pg.url(&db);
    let s = DbStore::open(&config("{id}"), &good).await.unwrap();
    for shown in [s.describe(), format!("{s:?}")] {
        assert!(!shown.contains(postgres::PASSWORD), "{shown}");
        assert!(shown.contains("127.0.0.1"), "{shown}");
    }
    // A wrong password, a server that is not there, a database that does not exist.
    let wrong = good.replace(postgres::PASSWORD, "Wr0ng-pass-%40x");
    let e = DbStore::open(&config("{id}"), &wrong).await.unwrap_err();
    assert_eq!(
        (e.class, e.fatal),
        (FailureClass::AccessDenied, true),
        "{e:?}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = good.replace(&format!(":{}/", pg.port), &format!(":{closed}/"));
    let e2 = DbStore::open(&config("{id}"), &nowhere).await.unwrap_err();
    assert_eq!(e2.class, FailureClass::Network, "{e2:?}");
    let e3 = DbStore::open(&config("{id}"), &good.replace(&db, "no_such_db"))
        .await
        .unwrap_err();
    for e in [&e, &e2, &e3] {
        let text = format!("{e} {e:?}");
        for secret in [postgres::PASSWORD, "Wr0ng-pass", "pass-@x"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
