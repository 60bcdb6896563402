//! Awkward keys: spaces, unicode, `+`, `%`, empty segments, `.`/`..` segments, a trailing `/`,
//! 1,024-byte keys, zero-byte objects. Between buckets every one must arrive byte-identical;
//! to a filesystem the ones that cannot be files fail as `Unrepresentable`, the rest arrive
//! intact, and nothing is written outside the destination root.

use std::collections::BTreeSet;
use std::path::Path;

use ferry_tests::data::all_paths;
use ferry_tests::reports::{self, Kind};
use ferry_tests::*;

/// A 1,024-byte key made of segments a filesystem accepts (each under 255 bytes).
fn long_key_ok() -> String {
    let mut k = String::from("long");
    let mut i = 0;
    while k.len() < 1024 {
        let seg = format!(
            "/{}",
            char::from(b'a' + (i % 26) as u8).to_string().repeat(200)
        );
        k.push_str(&seg);
        i += 1;
    }
    k.truncate(1024);
    assert!(!k.ends_with('/'));
    k
}

/// A 1,024-byte key whose last segment is longer than 255 bytes (not a file name).
fn long_key_name_too_long() -> String {
    let mut k = String::from("longname/");
    k.push_str(&"n".repeat(1024 - k.len()));
    k
}

/// Keys a filesystem can hold, with their bytes (zero-byte objects included).
fn representable() -> Tree {
    let mut t = Tree::new();
    let keys = [
        "with space/file name.txt",
        "ünïcödé/日本語 ключ.bin",
        "plus+sign",
        "per%cent",
        "per%25cent",
        "q?x=1&y=2#frag",
        "semi;colon,comma=eq",
        "tilde~/star*",
        "dir/empty",
        "zero-byte",
    ];
    for (i, k) in keys.iter().enumerate() {
        let size = if k.contains("empty") || k.contains("zero") {
            0
        } else {
            100 + i * 37
        };
        t.insert(k.to_string(), bytes(i as u64 + 100, size));
    }
    t.insert(long_key_ok(), bytes(7, 777));
    t
}

/// Keys that cannot be files below a root. `abs_key` is an absolute path (a key starting with
/// `/`): a naive join would write exactly there. None on servers that drop a leading `/`
/// from keys (Garage).
fn unrepresentable(abs_key: Option<&str>) -> Tree {
    let mut t = Tree::new();
    for (i, k) in ["a//b", "./x", "a/../b", "../sibling/pwned", "x/./y"]
        .iter()
        .enumerate()
    {
        t.insert(k.to_string(), bytes(i as u64 + 200, 50 + i));
    }
    if let Some(abs_key) = abs_key {
        t.insert(abs_key.to_string(), bytes(300, 30));
    }
    t.insert(long_key_name_too_long(), bytes(301, 31));
    t
}

/// Every awkward key, for copies between buckets.
fn all_keys(abs_key: Option<&str>) -> Tree {
    let mut t = representable();
    t.extend(unrepresentable(abs_key));
    t.insert("trailing/".into(), Vec::new());
    t.insert("clash".into(), bytes(400, 40));
    t.insert("clash/inner".into(), bytes(401, 41));
    t
}

/// A key with a leading `/`, where the server keeps it (moto does, Garage does not).
fn abs_key_for_buckets(server: &S3Server) -> Option<&'static str> {
    (!server.is_garage()).then_some("/leading-slash/abs")
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_keys_s3_to_s3_server_side() {
    let t = all_keys(abs_key_for_buckets(shared_server()));
    Scenario::one_server("keys-ssc")
        .copy_tree(&t, "awkward keys after a server-side copy")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_keys_s3_to_s3_streaming() {
    let t =
        all_keys(abs_key_for_buckets(shared_server()).and(abs_key_for_buckets(second_server())));
    Scenario::two_servers("keys-stream")
        .copy_tree(&t, "awkward keys after a streaming copy")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_keys_fs_to_s3() {
    Scenario::fs_to_s3("keys-fs-s3")
        .copy_tree(&representable(), "file names as keys after fs→S3")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_keys_fs_to_fs() {
    Scenario::fs_to_fs("keys-fs-fs")
        .copy_tree(&representable(), "awkward file names after fs→fs")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_keys_s3_to_fs_fail_as_unrepresentable_and_stay_inside_the_root() {
    let sc = Scenario::s3_to_fs("keys-s3-fs").build().await;
    let (wd, dst) = (&sc.wd, sc.dst_dir());
    let sibling = wd.subdir("sibling");
    // An absolute key pointing into our work directory: a naive join would write there.
    let abs_target = wd.path().join("escaped-absolute");
    let abs_key = abs_target.to_string_lossy().to_string();
    assert!(abs_key.starts_with('/'));
    let abs_key = abs_key_for_buckets(shared_server()).map(|_| abs_key);
    let t = all_keys(abs_key.as_deref());
    sc.source.fill(&t).await;
    let before: BTreeSet<_> = std::fs::read_dir(wd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let run = sc.run().await;

    // Nothing outside the destination root, whatever else happened.
    assert!(
        std::fs::read_dir(&sibling).unwrap().next().is_none(),
        "a key with `..` wrote outside the destination root: {:?}",
        all_paths(&sibling)
    );
    assert!(
        !abs_target.exists(),
        "an absolute key was written at {}",
        abs_target.display()
    );
    let after: BTreeSet<_> = std::fs::read_dir(wd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let new: Vec<_> = after
        .difference(&before)
        .filter(|n| *n != "state" && !n.to_string_lossy().ends_with(".yaml"))
        .collect();
    assert!(
        new.is_empty(),
        "new entries next to the destination root: {new:?}"
    );

    let unrep = unrepresentable(abs_key.as_deref());
    // Exactly one of the file/directory clash fails: whichever comes second.
    let files = read_tree(dst);
    let clash_failed = if files.contains_key("clash") {
        "clash/inner"
    } else {
        "clash"
    };
    let expected_failed: BTreeSet<String> = unrep
        .keys()
        .cloned()
        .chain(std::iter::once(clash_failed.to_string()))
        .collect();
    let failed_count = expected_failed.len() as u64;

    run.assert_exit(2)
        .assert_phase("PartiallyCompleted")
        .assert_counter("objectsFailed", failed_count);
    assert_eq!(
        run.status().failures_of("Unrepresentable"),
        failed_count,
        "failuresByClass.Unrepresentable\n{}",
        run.describe()
    );
    assert!(
        run.status()
            .first_errors()
            .iter()
            .all(|e| e["class"] == "Unrepresentable"),
        "firstErrors should all be Unrepresentable: {:?}",
        run.status().first_errors()
    );

    // The representable keys arrived intact; the trailing-slash key became a directory.
    let mut expected = representable();
    expected.insert("trailing/".into(), Vec::new());
    let survivor = if clash_failed == "clash" {
        "clash/inner"
    } else {
        "clash"
    };
    expected.insert(survivor.to_string(), t[survivor].clone());
    assert_trees_eq(
        &expected,
        &files,
        "destination directory after S3→fs with unrepresentable keys",
    );
    assert!(
        dst.join("trailing").is_dir(),
        "the zero-byte key `trailing/` should be a directory"
    );

    // The failure report lists exactly the failed keys, as Unrepresentable.
    let lines = reports::fs_report_lines(dst, "default", "keys-s3-fs", Kind::Failures);
    let reported: BTreeSet<String> = reports::keys(&lines).into_iter().collect();
    assert_eq!(
        reported, expected_failed,
        "keys in the failure report (lines: {lines:#?})"
    );
    assert!(
        reports::classes(&lines)
            .iter()
            .all(|c| c == "Unrepresentable"),
        "every failure line should have class Unrepresentable: {lines:#?}"
    );
    no_temp_files(dst);
}

fn no_temp_files(root: &Path) {
    let temps: Vec<_> = all_paths(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".ferry-tmp")
        })
        .collect();
    assert!(temps.is_empty(), "temporary files left behind: {temps:?}");
}
