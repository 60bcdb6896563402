//! `ferry rollback`: what a job wrote is taken back, and nothing else.
//!
//! The source holds `a`, `b`, `c`, `d`, `old` (and `big`, in parts); the destination holds
//! `old` (other bytes: the job replaces it) and `foreign` (never written by the job) before
//! the copy. After the copy, `c` is rewritten at the destination by someone else and `d` is
//! deleted there. A rollback then deletes `a`, `b` and `big`, keeps `c` (`ChangedSinceCopy`),
//! finds `d` gone, never touches `foreign`, and either puts the old `old` back (with
//! `backupReplaced`) or keeps the job's `old` (`NotRestorable`). A second rollback (from a
//! fresh state) changes nothing.

use ferry_tests::ferry::last_json_object;
use ferry_tests::fixtures::tree;
use ferry_tests::*;
use serde_json::{json, Value};

const MI: usize = 1 << 20;

fn source() -> Tree {
    tree([
        ("a", bytes(1, 1000)),
        ("b", bytes(2, 2000)),
        ("c", bytes(3, 3000)),
        ("d", bytes(4, 4000)),
        ("old", bytes(5, 500)),
        ("big", bytes(6, 6 * MI)),
    ])
}

fn seeded_destination() -> Tree {
    tree([("old", bytes(50, 700)), ("foreign", bytes(60, 10))])
}

/// The rollback's JSON outcome.
fn outcome(run: &Run) -> Value {
    last_json_object(&run.stdout).unwrap_or_else(|| panic!("no JSON outcome\n{}", run.describe()))
}

fn count(o: &Value, field: &str) -> u64 {
    o[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {o}"))
}

/// Copies, then changes the destination behind the job's back (`c` rewritten, `d` deleted);
/// returns the scenario and the destination as it is then.
async fn copied(name: &str, backup: bool) -> (Scenario<'static>, Tree) {
    let sc = Scenario::one_server(name)
        .source_tree(&source())
        .destination_tree(&seeded_destination())
        .multipart()
        .with("overwrite", json!("Always"))
        .with("backupReplaced", json!(backup))
        .build()
        .await;
    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    let (s3, bucket) = (sc.dst_s3(), sc.dst_bucket());
    s3.put(bucket, "c", bytes(33, 3000)).await;
    s3.delete(bucket, "d").await;
    let mut now = source();
    now.insert("c".into(), bytes(33, 3000));
    now.remove("d");
    now.insert("foreign".into(), bytes(60, 10));
    sc.assert_destination_eq(&now, "after the copy and the changes")
        .await;
    (sc, now)
}

#[tokio::test]
async fn a_rollback_deletes_what_the_job_wrote_and_keeps_what_changed_or_cannot_come_back() {
    let (sc, _) = copied("rollback_plain", false).await;
    let run = sc.wd.rollback(&sc.job, &[]).await;
    run.assert_exit(2);
    let o = outcome(&run);
    assert_eq!(o["phase"], "PartiallyRolledBack", "{o}");
    assert_eq!(count(&o, "rolledBack"), 3, "a, b, big: {o}");
    assert_eq!(count(&o, "alreadyUndone"), 1, "d: {o}");
    assert_eq!(count(&o, "kept"), 2, "c, old: {o}");
    assert_eq!(o["keptByClass"]["ChangedSinceCopy"], 1, "{o}");
    assert_eq!(o["keptByClass"]["NotRestorable"], 1, "{o}");
    let after = tree([
        ("c", bytes(33, 3000)),
        ("old", bytes(5, 500)),
        ("foreign", bytes(60, 10)),
    ]);
    sc.assert_destination_eq(&after, "after the rollback").await;

    // Again, from nothing: every key is found undone or kept, nothing is written.
    std::fs::remove_file(sc.wd.state_dir().join("rollback-shard-0.json")).unwrap();
    let again = sc.wd.rollback(&sc.job, &[]).await;
    again.assert_exit(2);
    let o = outcome(&again);
    assert_eq!(count(&o, "rolledBack"), 0, "{o}");
    assert_eq!(count(&o, "alreadyUndone"), 4, "{o}");
    assert_eq!(count(&o, "kept"), 2, "{o}");
    sc.assert_destination_eq(&after, "after a second rollback")
        .await;
}

#[tokio::test]
async fn with_backup_replaced_a_rollback_puts_the_replaced_object_back() {
    let (sc, _) = copied("rollback_backup", true).await;
    let run = sc.wd.rollback(&sc.job, &[]).await;
    run.assert_exit(2);
    let o = outcome(&run);
    assert_eq!(count(&o, "restored"), 1, "old: {o}");
    assert_eq!(count(&o, "rolledBack"), 3, "{o}");
    assert_eq!(o["keptByClass"]["ChangedSinceCopy"], 1, "c: {o}");
    assert!(o["keptByClass"].get("NotRestorable").is_none(), "{o}");
    let mut after = seeded_destination();
    after.insert("c".into(), bytes(33, 3000));
    sc.assert_destination_eq(&after, "the old `old` is back, `foreign` untouched")
        .await;

    std::fs::remove_file(sc.wd.state_dir().join("rollback-shard-0.json")).unwrap();
    let again = sc.wd.rollback(&sc.job, &[]).await;
    let o = outcome(&again);
    assert_eq!(
        (count(&o, "restored"), count(&o, "rolledBack")),
        (0, 0),
        "a second rollback undoes nothing: {o}"
    );
    assert_eq!(count(&o, "alreadyUndone"), 5, "{o}");
    sc.assert_destination_eq(&after, "after a second rollback")
        .await;
}

/// A filesystem destination has no MD5 ETags: each file is read back and hashed (in parts
/// for `big`) before it is deleted.
#[tokio::test]
async fn a_filesystem_destination_is_rolled_back_by_its_checksums() {
    let sc = Scenario::fs_to_fs("rollback_fs")
        .source_tree(&source())
        .multipart()
        .build()
        .await;
    sc.run().await.assert_exit(0).assert_phase("Completed");
    // Same size, other bytes: only a checksum tells.
    std::fs::write(sc.dst_dir().join("a"), bytes(11, 1000)).unwrap();
    let run = sc.wd.rollback(&sc.job, &[]).await;
    run.assert_exit(2);
    let o = outcome(&run);
    assert_eq!(count(&o, "rolledBack"), 5, "{o}");
    assert_eq!(o["keptByClass"]["ChangedSinceCopy"], 1, "a: {o}");
    sc.assert_destination_eq(
        &tree([("a", bytes(11, 1000))]),
        "only the changed file is left",
    )
    .await;
}

#[tokio::test]
async fn a_dry_run_has_nothing_to_roll_back() {
    let sc = Scenario::one_server("rollback_dry")
        .source_tree(&source())
        .with("dryRun", json!(true))
        .build()
        .await;
    sc.run().await.assert_exit(0);
    let run = sc.wd.rollback(&sc.job, &[]).await;
    run.assert_exit(1);
    assert!(
        run.stderr.contains("a dry run writes nothing"),
        "{}",
        run.describe()
    );
}

/// A rollback killed part-way (SIGKILL) goes on from its checkpoint: the second run deletes
/// the rest, and the job's keys are all gone, the foreign object kept. The rollback runs at 20
/// requests per second and 2 keys at a time (runtime knobs taken from the spec as it is now)
/// so it can be killed.
#[tokio::test]
async fn a_killed_rollback_resumes_from_its_checkpoint() {
    let many: Tree = (0..120)
        .map(|i| (format!("k/{i:04}"), bytes(i as u64, 100)))
        .collect();
    let sc = Scenario::one_server("rollback_kill")
        .source_tree(&many)
        .destination_tree(&tree([("foreign", bytes(60, 10))]))
        .build()
        .await;
    sc.run().await.assert_exit(0).assert_phase("Completed");
    let slow = sc
        .job
        .clone()
        .with("requestsPerSecond", json!(20))
        .with("parallelism", json!({"concurrency": 2}));
    let file = slow.write(sc.wd.path());
    let mut child = ferry_tests::ferry::spawn_ferry_sub(
        "rollback",
        &[&file],
        &sc.wd.state_dir(),
        &["--checkpoint-interval", "0.3"],
    );
    // Killed once a good part (not all) of the keys is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sc.dst_s3().list(sc.dst_bucket()).await.len() > 80 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollback made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the rollback ended before the kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let left = sc.dst_s3().contents(sc.dst_bucket()).await.len();
    assert!(
        left > 1 && left < 121,
        "killed part-way: {left} objects left"
    );
    let run = sc.wd.rollback(&sc.job, &[]).await;
    run.assert_exit(0);
    let o = outcome(&run);
    eprintln!("FIGURE rollback_killed left_at_kill={left} resumed={o}");
    assert_eq!(o["phase"], "RolledBack", "{o}");
    assert_eq!(
        count(&o, "rolledBack") + count(&o, "alreadyUndone"),
        120,
        "every key once: {o}"
    );
    assert!(
        count(&o, "alreadyUndone") < 120 - (left as u64 - 1),
        "the resumed run went on from the checkpoint, not from the start: {o}"
    );
    sc.assert_destination_eq(
        &tree([("foreign", bytes(60, 10))]),
        "after the resumed rollback",
    )
    .await;
}
