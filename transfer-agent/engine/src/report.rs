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
}

pub struct ReportWriter {
    /// The shard's report folder.
    store: Arc<dyn Sink>,
    pub segment: u32,
    failures: Vec<u8>,
    manifest: Vec<u8>,
}

impl ReportWriter {
    /// Writes segments from number `segment` on into `store`, the shard's report folder.
    pub fn new(store: Arc<dyn Sink>, segment: u32) -> Self {
        ReportWriter {
            store,
            segment,
            failures: Vec::new(),
            manifest: Vec::new(),
        }
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
        if self.failures.is_empty() && self.manifest.is_empty() {
            return Ok(());
        }
        let meta = ObjectMeta {
            content_type: Some("application/x-ndjson".into()),
            ..Default::default()
        };
        for (kind, buf) in [("failures", &self.failures), ("manifest", &self.manifest)] {
            if buf.is_empty() {
                continue;
            }
            let key = format!("{kind}-{:06}.jsonl", self.segment);
            let body = Bytes::copy_from_slice(buf);
            with_retry(&RetryPolicy::default(), "PutObject", |_| {
                self.store.put(&key, body.clone(), &meta, None)
            })
            .await?;
        }
        self.failures.clear();
        self.manifest.clear();
        self.segment += 1;
        Ok(())
    }
}

/// Reads every failure line of a shard's report folder (for retries of failed objects).
pub async fn read_failures(dir: &dyn Source) -> Result<Vec<FailureLine>, TransferError> {
    use futures::StreamExt;
    let mut keys = Vec::new();
    let mut listing = dir.list(None, None);
    while let Some(item) = listing.next().await {
        let item = item?;
        if item.key.starts_with("failures-") {
            keys.push((item.key, item.size));
        }
    }
    let mut out = Vec::new();
    for (k, size) in keys {
        let body = dir
            .get(&k, 0, size, true, None, Buffer::unbudgeted(size))
            .await?;
        for line in body.bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(f) = serde_json::from_slice::<FailureLine>(line) {
                out.push(f);
            }
        }
    }
    Ok(out)
}
