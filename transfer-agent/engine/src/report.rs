//! The failure report and the manifest of written keys (`docs/contract.md` §3): JSON Lines
//! segments under the shard's report folder, one pair per checkpoint, written before the
//! checkpoint that covers their keys. A resumed shard rewrites from the checkpoint's segment
//! number, so each key appears once.

use std::sync::Arc;

use bytes::Bytes;
use ferry_core::FailureClass;
use serde::{Deserialize, Serialize};

use crate::error::TransferError;
use crate::limit::Buffer;
use crate::retry::{with_retry, RetryPolicy};
use crate::stores::{ObjectMeta, Sink, Source};

/// One failed object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FailureLine {
    /// The source key (with the source prefix).
    pub key: String,
    pub size: u64,
    pub class: FailureClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub attempts: u32,
    pub message: String,
    /// The HTTP status of the answer that failed, beside the service's code.
    #[serde(
        default,
        rename = "httpStatus",
        skip_serializing_if = "Option::is_none"
    )]
    pub http_status: Option<u16>,
    /// When it failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl FailureLine {
    /// The line of `key` (`size` bytes) that failed with `e`, now.
    pub fn of(key: String, size: u64, e: &TransferError) -> FailureLine {
        FailureLine {
            key,
            size,
            class: e.class,
            code: e.code.clone(),
            attempts: e.attempts,
            message: e.message.clone(),
            http_status: e.http_status,
            at: Some(now()),
        }
    }

    /// The line of `key` (`size` bytes) left as it is, of `class` and why, now (no request
    /// failed: a rollback's decision).
    pub fn kept(key: String, size: u64, class: FailureClass, why: &str) -> FailureLine {
        FailureLine {
            key,
            size,
            class,
            code: None,
            attempts: 1,
            message: why.to_string(),
            http_status: None,
            at: Some(now()),
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One written object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ManifestLine {
    /// The destination key (with the destination prefix).
    pub key: String,
    pub size: u64,
    /// MD5 (single part) or the S3 multipart form `md5-N`; empty when only sizes were checked.
    pub checksum: String,
    /// Whether an object already existed under the key and was overwritten.
    pub replaced: bool,
    /// The object was deleted (delete propagation: absent at the source); `checksum` is the
    /// ETag it had.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One delete candidate: a selected destination key absent at the source, as it was listed.
/// The copy stage writes them (`deletes-NNNNNN.jsonl`); the delete stage deletes each one that
/// is still the same object and still absent at the source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DeleteLine {
    /// The destination key (with the destination prefix).
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The modification time listed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// The segment file names a writer uses: the copy stage's, or the delete stage's (apart, so
/// a retry of failed copies never reads a failed delete, and segment numbers never collide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segments {
    Copy,
    Delete,
    Rollback,
}

impl Segments {
    fn names(self) -> [&'static str; 3] {
        match self {
            Segments::Copy => ["failures", "manifest", "deletes"],
            Segments::Delete => ["delete-failures", "manifest-deletes", "unused"],
            // Not `manifest-…`: a rollback's own lines are never taken for what the job wrote.
            Segments::Rollback => ["rollback-kept", "rolled-back", "unused"],
        }
    }
}

pub struct ReportWriter {
    /// The shard's report folder.
    store: Arc<dyn Sink>,
    pub segment: u32,
    segments: Segments,
    failures: Vec<u8>,
    manifest: Vec<u8>,
    candidates: Vec<u8>,
    /// Check mode's differences (`check-NNNNNN.jsonl`).
    checks: Vec<u8>,
    /// A dry run's inventory (`inventory-NNNNNN.jsonl` and `inventory-NNNNNN.csv`).
    inventory: Vec<u8>,
    inventory_csv: Vec<u8>,
}

impl ReportWriter {
    /// Writes segments from number `segment` on into `store`, the shard's report folder.
    pub fn new(store: Arc<dyn Sink>, segment: u32) -> Self {
        Self::with(store, segment, Segments::Copy)
    }

    /// A writer with the segment names of `segments`.
    pub fn with(store: Arc<dyn Sink>, segment: u32, segments: Segments) -> Self {
        ReportWriter {
            store,
            segment,
            segments,
            failures: Vec::new(),
            manifest: Vec::new(),
            candidates: Vec::new(),
            checks: Vec::new(),
            inventory: Vec::new(),
            inventory_csv: Vec::new(),
        }
    }

    pub fn check(&mut self, line: &crate::audit::CheckLine) {
        serde_json::to_writer(&mut self.checks, line).expect("serializes");
        self.checks.push(b'\n');
    }

    pub fn inventory(&mut self, line: &crate::audit::InventoryLine) {
        serde_json::to_writer(&mut self.inventory, line).expect("serializes");
        self.inventory.push(b'\n');
        if self.inventory_csv.is_empty() {
            self.inventory_csv
                .extend_from_slice(crate::audit::INVENTORY_CSV_HEADER.as_bytes());
        }
        self.inventory_csv.extend_from_slice(line.csv().as_bytes());
    }

    pub fn candidate(&mut self, line: &DeleteLine) {
        serde_json::to_writer(&mut self.candidates, line).expect("serializes");
        self.candidates.push(b'\n');
    }

    pub fn failure(&mut self, line: &FailureLine) {
        serde_json::to_writer(&mut self.failures, line).expect("serializes");
        self.failures.push(b'\n');
    }

    pub fn written(&mut self, line: &ManifestLine) {
        serde_json::to_writer(&mut self.manifest, line).expect("serializes");
        self.manifest.push(b'\n');
    }

    /// Writes what was added since the last flush as the next segment. The lines stay
    /// buffered until both files of the segment are written, so a retry rewrites both.
    pub async fn flush(&mut self) -> Result<(), TransferError> {
        if self.failures.is_empty()
            && self.manifest.is_empty()
            && self.candidates.is_empty()
            && self.checks.is_empty()
            && self.inventory.is_empty()
        {
            return Ok(());
        }
        let meta = ObjectMeta {
            content_type: Some("application/x-ndjson".into()),
            ..Default::default()
        };
        let [f, m, c] = self.segments.names();
        for (kind, ext, buf) in [
            (f, "jsonl", &self.failures),
            (m, "jsonl", &self.manifest),
            (c, "jsonl", &self.candidates),
            ("check", "jsonl", &self.checks),
            ("inventory", "jsonl", &self.inventory),
            ("inventory", "csv", &self.inventory_csv),
        ] {
            if buf.is_empty() {
                continue;
            }
            let key = format!("{kind}-{:06}.{ext}", self.segment);
            let body = Bytes::copy_from_slice(buf);
            let meta = if ext == "csv" {
                ObjectMeta {
                    content_type: Some("text/csv".into()),
                    ..Default::default()
                }
            } else {
                meta.clone()
            };
            with_retry(&RetryPolicy::default(), "PutObject", |_| {
                self.store.put(&key, body.clone(), &meta, None)
            })
            .await?;
        }
        self.failures.clear();
        self.manifest.clear();
        self.candidates.clear();
        self.checks.clear();
        self.inventory.clear();
        self.inventory_csv.clear();
        self.segment += 1;
        Ok(())
    }
}

/// Where a source writes down what it changes at the source itself (a database's
/// write-back: each row's value before), in the shard's report folder, before it commits the
/// change: `{kind}-{time}-{n}.jsonl`, never overwritten (a resumed shard writes its report
/// from its checkpoint's segment on again, but the changes an earlier run committed past
/// that checkpoint must stay on record). The rollback reads every one, in the order written.
pub struct SourceJournal {
    store: Arc<dyn Sink>,
}

impl SourceJournal {
    /// A journal in `store`, the shard's report folder.
    pub fn new(store: Arc<dyn Sink>) -> SourceJournal {
        SourceJournal { store }
    }

    /// Writes `lines` (JSON Lines) as a new segment of `kind`, retried; Ok once it is stored.
    pub async fn write<T: Serialize>(&self, kind: &str, lines: &[T]) -> Result<(), TransferError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for l in lines {
            serde_json::to_writer(&mut body, l).expect("serializes");
            body.push(b'\n');
        }
        let key = format!("{kind}-{}.jsonl", unique_suffix());
        let body = Bytes::from(body);
        let meta = ObjectMeta {
            content_type: Some("application/x-ndjson".into()),
            ..Default::default()
        };
        with_retry(&RetryPolicy::default(), "PutObject", |_| {
            self.store.put(&key, body.clone(), &meta, None)
        })
        .await
        .map(|_| ())
    }
}

/// A suffix no other journal segment has: the time in microseconds and a counter of this
/// process (names sort in the order they were written).
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let micros = chrono::Utc::now().timestamp_micros();
    format!("{micros:017}-{n:06}")
}

/// Reads every line of a source journal's `kind` segments in a shard's report folder, in the
/// order they were written. A line that cannot be read is an error: a rollback must not act
/// on part of what was changed.
pub async fn read_journal<T: serde::de::DeserializeOwned>(
    dir: &dyn Source,
    kind: &str,
) -> Result<Vec<T>, TransferError> {
    read_lines(dir, &format!("{kind}-"), true).await
}

/// Reads the check report of a shard's report folder: every key that is not identical.
pub async fn read_checks(dir: &dyn Source) -> Result<Vec<crate::audit::CheckLine>, TransferError> {
    read_lines(dir, "check-", true).await
}

/// Reads the inventory of a shard's report folder, in key order.
pub async fn read_inventory(
    dir: &dyn Source,
) -> Result<Vec<crate::audit::InventoryLine>, TransferError> {
    read_lines(dir, "inventory-", true).await
}

/// Reads the keys a rollback kept, with why, of a rollback's shard report folder.
pub async fn read_rollback_kept(dir: &dyn Source) -> Result<Vec<FailureLine>, TransferError> {
    read_lines(dir, "rollback-kept-", false).await
}

/// Opens the side a job's report folder is under: `report` when the spec names one, else
/// the destination.
pub async fn open_root(
    t: &ferry_core::Transfer,
    credentials: &ferry_core::stores::JobCredentials,
) -> Result<Arc<dyn Sink>, TransferError> {
    let (config, secrets) = match &t.report {
        Some(r) => (r, &credentials.report),
        None => (&t.destination, &credentials.destination),
    };
    let limits = Arc::new(crate::limit::Limits::unlimited());
    crate::stores::open(config, secrets, limits, RetryPolicy::default())
        .await?
        .sink()
}

/// Reads every failure line of a shard's report folder (for retries of failed objects).
pub async fn read_failures(dir: &dyn Source) -> Result<Vec<FailureLine>, TransferError> {
    read_lines(dir, "failures-", false).await
}

/// Reads the deletes that failed in a shard's delete stage (delete propagation).
pub async fn read_delete_failures(dir: &dyn Source) -> Result<Vec<FailureLine>, TransferError> {
    read_lines(dir, "delete-failures-", false).await
}

/// Reads every manifest line of a shard's report folder: the keys the copy stage wrote and
/// those the delete stage deleted (`manifest-deletes-…`), segment after segment. A line that
/// cannot be read is an error: a rollback must not act on part of what the job wrote.
pub async fn read_manifest(dir: &dyn Source) -> Result<Vec<ManifestLine>, TransferError> {
    read_lines(dir, "manifest-", true).await
}

/// Reads the delete candidates of a shard's report folder, in key order (the copy stage wrote
/// them in listing order, segment after segment). A line that cannot be read is an error: the
/// delete stage must not act on part of its plan.
pub async fn read_candidates(dir: &dyn Source) -> Result<Vec<DeleteLine>, TransferError> {
    read_lines(dir, "deletes-", true).await
}

async fn read_lines<T: serde::de::DeserializeOwned>(
    dir: &dyn Source,
    prefix: &str,
    strict: bool,
) -> Result<Vec<T>, TransferError> {
    use futures::StreamExt;
    let mut keys = Vec::new();
    let mut listing = dir.list(None, None);
    while let Some(item) = listing.next().await {
        let item = item?;
        if item.key.starts_with(prefix) && item.key.ends_with(".jsonl") {
            keys.push((item.key, item.size));
        }
    }
    let mut out = Vec::new();
    for (k, size) in keys {
        let body = dir
            .get(&k, 0, size, true, None, Buffer::unbudgeted(size))
            .await?;
        for line in body.bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<T>(line) {
                Ok(f) => out.push(f),
                Err(e) if strict => {
                    return Err(TransferError::new(
                        FailureClass::Internal,
                        format!("{k}: a line cannot be read: {e}"),
                    )
                    .fatal())
                }
                Err(_) => {}
            }
        }
    }
    Ok(out)
}
