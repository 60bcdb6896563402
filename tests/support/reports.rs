//! Reading the reports Ferry writes into the destination:
//! `.ferry/reports/<namespace>/<name>/<uid>/shard-<i>/{failures,manifest,check}-NNNNNN.jsonl`.
//!
//! The files are found by their path segments (`.ferry/reports/<namespace>/<name>/` anywhere in
//! the key, so a report under the destination prefix is found too) and read in key order.

use std::path::Path;

use serde_json::Value;

use crate::s3::S3;

/// Which report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Failures,
    Manifest,
    /// A `mode: Check`'s differences.
    Check,
}

impl Kind {
    fn file_prefix(self) -> &'static str {
        match self {
            Kind::Failures => "failures-",
            Kind::Manifest => "manifest-",
            Kind::Check => "check-",
        }
    }
}

fn is_report_file(rel: &str, namespace: &str, name: &str, kind: Kind) -> bool {
    let marker = format!(".ferry/reports/{namespace}/{name}/");
    let Some(pos) = rel.find(&marker) else {
        return false;
    };
    if pos != 0 && !rel[..pos].ends_with('/') {
        return false;
    }
    let file = rel.rsplit('/').next().unwrap_or("");
    file.starts_with(kind.file_prefix()) && file.ends_with(".jsonl")
}

fn parse_lines(source: &str, text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{source}: a line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The report files of a job in an S3 destination bucket, as (key, lines).
pub async fn s3_report_files(
    s3: &S3,
    bucket: &str,
    namespace: &str,
    name: &str,
    kind: Kind,
) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for o in s3.list_all(bucket, "").await {
        if is_report_file(&o.key, namespace, name, kind) {
            let body = s3.get(bucket, &o.key).await;
            let text = String::from_utf8(body).unwrap_or_else(|_| panic!("{} is not UTF-8", o.key));
            let lines = parse_lines(&o.key, &text);
            out.push((o.key, lines));
        }
    }
    out
}

/// All lines of a job's reports of one kind in an S3 destination bucket, in file order.
pub async fn s3_report_lines(
    s3: &S3,
    bucket: &str,
    namespace: &str,
    name: &str,
    kind: Kind,
) -> Vec<Value> {
    s3_report_files(s3, bucket, namespace, name, kind)
        .await
        .into_iter()
        .flat_map(|(_, l)| l)
        .collect()
}

/// The report files of a job below a filesystem destination root, as (relative path, lines).
pub fn fs_report_files(
    root: &Path,
    namespace: &str,
    name: &str,
    kind: Kind,
) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for path in crate::data::all_paths(root) {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if path.is_file() && is_report_file(&rel, namespace, name, kind) {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let lines = parse_lines(&rel, &text);
            out.push((rel, lines));
        }
    }
    out
}

/// All lines of a job's reports of one kind below a filesystem destination root.
pub fn fs_report_lines(root: &Path, namespace: &str, name: &str, kind: Kind) -> Vec<Value> {
    fs_report_files(root, namespace, name, kind)
        .into_iter()
        .flat_map(|(_, l)| l)
        .collect()
}

/// The `key` field of report lines.
pub fn keys(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l.get("key")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("report line without key: {l}"))
                .to_string()
        })
        .collect()
}

/// The `class` field of report lines.
pub fn classes(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l.get("class")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect()
}
