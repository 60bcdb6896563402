//! What Ferry reads and writes stays where it belongs (issue 12, holes 4 and 8):
//! - a filesystem source never follows a symbolic link out of its root (a link to a fake
//!   `~/.aws/credentials`, a link to a directory outside): nothing of it reaches the bucket;
//!   a link to a file inside the root is copied as that file;
//! - a filesystem destination with a planted link creates nothing outside its root, however
//!   deep the key (`link/a/b/f` used to create `/outside/a/b` before it was refused);
//! - reports are never public: with `cannedAcl: public-read` the data objects are public and
//!   Ferry's report objects are not.

use std::os::unix::fs::symlink;

use aws_sdk_s3::types::Type as GranteeType;
use ferry_tests::data::all_paths;
use ferry_tests::fixtures::tree;
use ferry_tests::*;
use serde_json::json;

const SECRET: &[u8] = b"[default]\naws_secret_access_key = not-a-real-secret-but-it-is-outside\n";

/// A `ferry run` of a source tree holding links out of its root into a bucket: only the
/// tree's own files arrive, the outside file's bytes are nowhere in the bucket, the job
/// completes (skipped links are not failures) and the log says how many were skipped.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_link_out_of_the_root_is_not_copied() {
    let t = tree([
        ("ok.txt", b"inside".to_vec()),
        ("sub/a.bin", bytes(1, 3000)),
    ]);
    let sc = Scenario::fs_to_s3("contain-src")
        .source_tree(&t)
        .build()
        .await;
    let home = sc.wd.subdir("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(home.join(".aws/credentials"), SECRET).unwrap();
    let src = sc.src_dir();
    symlink(home.join(".aws/credentials"), src.join("credentials")).unwrap();
    symlink(home.join(".aws"), src.join("aws")).unwrap();
    symlink(home.join(".aws/credentials"), src.join("sub/creds")).unwrap();
    // Inside the root: a link to a file is copied as that file, a link to a directory is not
    // entered.
    symlink("ok.txt", src.join("alias.txt")).unwrap();
    symlink("sub", src.join("sub-link")).unwrap();

    let run = sc.run().await;

    run.assert_exit(0).assert_phase("Completed");
    let mut expected = t.clone();
    expected.insert("alias.txt".into(), b"inside".to_vec());
    run.assert_counter("objectsCopied", expected.len() as u64);
    sc.assert_destination_eq(
        &expected,
        "bucket after copying a tree with links out of it",
    )
    .await;
    let contents = sc.dst_s3().contents(sc.dst_bucket()).await;
    for (key, body) in &contents {
        assert!(
            !ferry_tests::data::contains(body, b"not-a-real-secret"),
            "the outside file reached the bucket as {key}"
        );
    }
    if std::env::var_os("FERRY_LOG").is_none() {
        assert!(
            run.stderr.contains("symbolic links not followed"),
            "no warning about the skipped links\n{}",
            run.describe()
        );
    }
}

/// A destination directory with a planted `link -> outside`: keys through the link fail as
/// `Unrepresentable`, the other keys arrive, and nothing at all appears outside the root.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_link_in_the_destination_creates_nothing_outside() {
    let ok = tree([("ok/file", bytes(2, 500))]);
    let mut t = ok.clone();
    for k in ["link/a/b/f", "link/f", "link/deep/er/still/g"] {
        t.insert(k.into(), bytes(3, 100));
    }
    let sc = Scenario::s3_to_fs("contain-dst")
        .source_tree(&t)
        .build()
        .await;
    let outside = sc.wd.subdir("outside");
    symlink(&outside, sc.dst_dir().join("link")).unwrap();

    let run = sc.run().await;

    assert!(
        all_paths(&outside).is_empty(),
        "a write escaped the destination root: {:?}\n{}",
        all_paths(&outside),
        run.describe()
    );
    run.assert_exit(2).assert_phase("PartiallyCompleted");
    assert_eq!(
        run.status().failures_of("Unrepresentable"),
        3,
        "{}",
        run.describe()
    );
    assert_eq!(
        std::fs::read(sc.dst_dir().join("ok/file")).ok().as_ref(),
        ok.get("ok/file")
    );
    assert!(
        std::fs::symlink_metadata(sc.dst_dir().join("link"))
            .unwrap()
            .is_symlink(),
        "the planted link itself is left alone"
    );
}

/// `cannedAcl: public-read` on the destination: the copied objects get it, Ferry's reports
/// (manifest, failure report) do not: they are readable by nobody but the owner.
#[tokio::test(flavor = "multi_thread")]
async fn reports_are_private_whatever_the_canned_acl() {
    if shared_server().is_garage() {
        eprintln!("skipped on Garage: it has no object ACLs (the moto pass runs it)");
        return;
    }
    let t = small_objects("pub/", 3, 2000);
    let sc = Scenario::fs_to_s3("contain-acl")
        .source_tree(&t)
        .destination_side(|s| s.set("cannedAcl", json!("public-read")))
        .build()
        .await;
    sc.copy_and_compare(&t, "bucket after a copy with cannedAcl: public-read")
        .await;

    let (s3, bucket) = (sc.dst_s3(), sc.dst_bucket());
    let public = |key: String| async move {
        let acl = s3
            .client
            .get_object_acl()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObjectAcl {key}: {e:?}"));
        acl.grants().iter().any(|g| {
            g.grantee().is_some_and(|who| {
                who.r#type() == &GranteeType::Group
                    && who.uri().is_some_and(|u| {
                        u.ends_with("/global/AllUsers") || u.ends_with("/global/AuthenticatedUsers")
                    })
            })
        })
    };
    for key in t.keys() {
        assert!(
            public(key.clone()).await,
            "{key}: the data object is not public-read"
        );
    }
    let reports = s3.list_ferry_keys(bucket).await;
    assert!(!reports.is_empty(), "the job wrote no report objects");
    for key in reports {
        assert!(
            !public(key.clone()).await,
            "{key}: a report object is public"
        );
    }
}
