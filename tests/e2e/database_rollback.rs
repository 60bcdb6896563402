//! The rollback of a database job with `writeBack` (issues 15 and 16), end to end on the real
//! PostgreSQL server and S3 server: `ferry run` writes the objects' URLs into the rows (and
//! journals each row's value before), `ferry rollback` sets each row's column back to exactly
//! that value and then deletes the objects; a column the application changed since is kept
//! and said; with `clearData` rows and objects are both kept (the object is the only copy of
//! the bytes left). Checked with psql and the test's own S3 client.

use ferry_tests::{shared_server, Workdir, S3};
use serde_json::{json, Value};

use crate::database_postgres::{
    b64, database, image, images_source, job, run, urls, write_secret, PNG,
};

fn outcome(run: &ferry_tests::Run) -> Value {
    ferry_tests::ferry::last_json_object(&run.stdout)
        .unwrap_or_else(|| panic!("no JSON outcome\n{}", run.describe()))
}

/// Every column but the URL, of every row: equal before and after means the rollback
/// touched nothing else.
fn payloads(pg: &ferry_tests::postgres::Postgres, db: &str, table: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT md5(string_agg(id || '|' || coalesce(image_data, '-') || '|' || \
             coalesce(mime_type, '-'), ',' ORDER BY id)) FROM {table}"
        ),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_sets_written_back_rows_back_and_deletes_the_objects() {
    const ROWS: u32 = 30;
    let Some((pg, db)) = database(
        "pgrollback",
        "CREATE TABLE images (id bigint PRIMARY KEY, image_data text, mime_type text, \
         image_url text);\n\
         CREATE TABLE archive (id bigint PRIMARY KEY, image_data text, mime_type text, \
         image_url text);",
    ) else {
        return;
    };
    let name = "db-rollback";
    let wd = Workdir::new(name);
    let s3 = S3::for_server(shared_server());
    let bucket = s3.create_bucket(name).await;
    let values: Vec<String> = (1..=ROWS)
        .map(|id| {
            // Row 3 had a URL of its own before the job.
            let before = if id == 3 { "'legacy://3'" } else { "NULL" };
            format!("({id}, '{}', 'image/png', {before})", b64(&image(PNG, id)))
        })
        .collect();
    pg.psql(
        &db,
        &format!(
            "INSERT INTO images VALUES {};\n\
             INSERT INTO archive VALUES (1, '{}', 'image/png', NULL), (2, '{}', 'image/png', NULL);",
            values.join(", "),
            b64(&image(PNG, 101)),
            b64(&image(PNG, 102))
        ),
    )
    .unwrap();
    let secret = write_secret(wd.path(), &pg.url(&db));
    s3.put(&bucket, "img/foreign.png", image(PNG, 999)).await;
    let payloads_before = payloads(pg, &db, "images");
    let url = |id: u32| format!("https://img.example.com/img/{id:06}.png");

    let images = job(
        name,
        &wd,
        &shared_server().endpoint,
        &bucket,
        images_source(json!({
            "encoding": "Base64",
            "key": "img/{id:06}.{ext}",
            "contentType": { "column": "mime_type" },
            "batchSize": 7,
            "writeBack": { "column": "image_url", "value": "https://img.example.com/{key}" },
        })),
    )
    .with("parallelism", json!({"shards": 2}));
    run(&wd, &images, &[])
        .await
        .assert_exit(0)
        .assert_phase("Completed");
    let written: Vec<String> = (1..=ROWS).map(|id| format!("{id}|{}", url(id))).collect();
    assert_eq!(urls(pg, &db, "images"), written, "the write-back");
    // The application points row 5 elsewhere meanwhile.
    pg.psql(
        &db,
        "UPDATE images SET image_url = 'https://cdn2.example.com/5' WHERE id = 5",
    )
    .unwrap();

    let rb = wd.rollback_with(&images, &[&secret], &[]).await;
    rb.assert_exit(2);
    let o = outcome(&rb);
    assert_eq!(o["phase"], "PartiallyRolledBack", "{o}");
    assert_eq!(o["rowsReverted"], ROWS - 1, "{o}");
    assert_eq!(o["rowsNotReverted"], 1, "{o}");
    assert_eq!(o["keptByClass"]["ChangedSinceCopy"], 1, "{o}");
    assert_eq!(o["rolledBack"], ROWS, "every object the job wrote: {o}");
    let want: Vec<String> = (1..=ROWS)
        .map(|id| match id {
            3 => "3|legacy://3".to_string(),
            5 => "5|https://cdn2.example.com/5".to_string(),
            _ => format!("{id}|-"),
        })
        .collect();
    assert_eq!(
        urls(pg, &db, "images"),
        want,
        "each row as it was (row 5 as changed)"
    );
    assert_eq!(
        payloads(pg, &db, "images"),
        payloads_before,
        "nothing else touched"
    );
    let left: Vec<String> = s3
        .list(&bucket)
        .await
        .into_keys()
        .filter(|k| !k.starts_with(".ferry/"))
        .collect();
    assert_eq!(
        left,
        ["img/foreign.png"],
        "only what the job did not write is left"
    );

    // clearData: the rows lose their payloads, so the rollback keeps rows and objects.
    std::fs::remove_dir_all(wd.state_dir()).unwrap();
    let archive = job(
        "db-rollback-clear",
        &wd,
        &shared_server().endpoint,
        &bucket,
        json!({
            "connectionSecretRef": { "name": "app-db" },
            "table": "archive",
            "idColumn": "id",
            "dataColumn": "image_data",
            "encoding": "Base64",
            "key": "archive/{id}.{ext}",
            "contentType": { "column": "mime_type" },
            "writeBack": { "column": "image_url", "value": "s3://{key}", "clearData": true },
        }),
    );
    run(&wd, &archive, &[]).await.assert_exit(0);
    let rb = wd.rollback_with(&archive, &[&secret], &[]).await;
    rb.assert_exit(2);
    let o = outcome(&rb);
    assert_eq!(o["rowsNotReverted"], 2, "{o}");
    assert_eq!(
        o["keptByClass"]["NotRestorable"], 4,
        "two rows and their objects: {o}"
    );
    assert_eq!(s3.get(&bucket, "archive/1.png").await, image(PNG, 101));
    assert_eq!(
        urls(pg, &db, "archive"),
        ["1|s3://archive/1.png", "2|s3://archive/2.png"]
    );
}
