//! The crate graph keeps its rules: the engine and the crate it shares with the operator know
//! nothing of Kubernetes or of the `MigrationJob` API (`docs/architecture.md`). Checked with
//! `cargo tree` over normal (non-dev) dependencies, offline.

use std::process::Command;

/// The packages `package` depends on, itself included (names only).
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(ferry_tests::workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn assert_free_of(package: &str, forbidden: &[&str]) {
    let deps = dependencies(package);
    assert!(
        deps.iter().any(|d| d == package),
        "cargo tree did not list {package} itself: {deps:?}"
    );
    let found: Vec<&String> = deps
        .iter()
        .filter(|d| {
            forbidden
                .iter()
                .any(|f| d == f || d.starts_with(&format!("{f}-")))
        })
        .collect();
    assert!(
        found.is_empty(),
        "{package} must not depend on {found:?} (directly or not)"
    );
}

#[test]
fn the_engine_depends_on_neither_kubernetes_nor_the_api_types() {
    assert_free_of(
        "ferry-engine",
        &["kube", "k8s-openapi", "ferry-api", "ferry-k8s"],
    );
}

#[test]
fn the_shared_core_depends_on_neither_kubernetes_nor_an_s3_client() {
    assert_free_of(
        "ferry-core",
        &[
            "kube",
            "k8s-openapi",
            "ferry-api",
            "ferry-engine",
            "aws-sdk-s3",
        ],
    );
}
