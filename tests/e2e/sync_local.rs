//! `ferry run` of a BucketSync, without a cluster: one pass now, and `--watch` on its
//! schedule until Ctrl-C, on directories (the same engine and decision as in the cluster).

use std::path::Path;
use std::time::Duration;

use ferry_tests::ferry::{run_ferry, spawn_ferry, Workdir};

fn sync_yaml(dir: &Path, extra: &str) -> std::path::PathBuf {
    let f = dir.join("sync.yaml");
    std::fs::write(
        &f,
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: BucketSync\nmetadata: {{name: docs}}\nspec:\n  \
             source: {{filesystem: {{path: src}}}}\n  destination: {{filesystem: {{path: dst}}}}\n  \
             interval: 10s\n  deletes: {{policy: Propagate, maxDeletes: \"100%\"}}\n{extra}"
        ),
    )
    .unwrap();
    f
}

fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".ferry")
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn one_pass_then_watch_until_ctrl_c() {
    let w = Workdir::new("sync-local");
    let (src, dst) = (w.path().join("src"), w.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(src.join("a"), "a").unwrap();
    std::fs::write(dst.join("old"), "old").unwrap();
    let f = sync_yaml(w.path(), "");
    let state = w.state_dir();

    // One pass: copied and deleted, exit 0.
    let r = run_ferry(&[&f], &state, &[], Duration::from_secs(60)).await;
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(files(&dst), ["a"]);

    // --watch: a pass at once, then one per tick; Ctrl-C between passes ends it (130).
    std::fs::write(src.join("b"), "b").unwrap();
    let child = spawn_ferry(&[&f], &state, &["--watch"]);
    let pid = child.id().unwrap() as i32;
    let start = std::time::Instant::now();
    while files(&dst) != ["a", "b"] {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first watched pass never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(src.join("c"), "c").unwrap();
    std::fs::remove_file(src.join("a")).unwrap();
    while files(&dst) != ["b", "c"] {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the next tick never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ferry --watch stops on Ctrl-C")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each pass is a run with a state directory of its own.
    let runs = std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0);
    assert!(runs >= 3, "{runs} run state directories");
}
