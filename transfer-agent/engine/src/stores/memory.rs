//! A store in memory: a map of keys to bytes behind the [`Source`] and [`Sink`] traits. It
//! makes the shard engine (merge, watermark, count-only listing, recording) testable without
//! a server, and it shows what a kind of store needs: this file and one `open` arm would make
//! it a kind a plan can name.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_core::FailureClass;
use md5::{Digest, Md5};

use super::{Body, Listing, ObjectInfo, ObjectMeta, Sink, SinkCaps, Source, SourceCaps, Upload};
use crate::error::TransferError;
use crate::limit::Buffer;

#[derive(Clone, Debug)]
struct Object {
    bytes: Bytes,
    meta: ObjectMeta,
    modified: DateTime<Utc>,
    etag: String,
}

/// An upload in parts: the (full) key, and the parts by number with their MD5s.
type Parts = (String, BTreeMap<i32, (Bytes, [u8; 16])>);

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    /// Uploads in parts, by id.
    uploads: BTreeMap<String, Parts>,
    /// Keys whose reads are refused (AccessDenied), for tests of failures.
    denied: BTreeSet<String>,
    /// How long each write takes.
    write_delay: Option<Duration>,
    /// Objects are encrypted as with SSE-KMS: their ETags are 32 hex digits but not MD5s.
    kms: bool,
    /// Keys that a writer changes just before each of their next reads, with how many more
    /// times: a hot object rewritten while it is copied.
    changes_before_read: BTreeMap<String, u32>,
}

/// A map of keys to objects. Clones share the same objects.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// The folder this view is of (empty: the whole store).
    prefix: String,
    /// Leave Ferry's own `.ferry/` folder out of listings (not in a [`Sink::folder`] view).
    show_ferry: bool,
    next_upload: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Stores `bytes` under `key`, modified at `modified`, with a plain MD5 ETag (or an
    /// opaque one with [`MemoryStore::encrypt_with_kms`]).
    pub fn insert_at(&self, key: &str, bytes: impl Into<Bytes>, modified: DateTime<Utc>) {
        let bytes = bytes.into();
        let etag = self.etag_for(md5_hex(&bytes));
        let mut st = self.state.lock().unwrap();
        let meta = ObjectMeta {
            etag_not_md5: st.kms,
            ..ObjectMeta::default()
        };
        st.objects.insert(
            self.full(key),
            Object {
                bytes,
                meta,
                modified,
                etag,
            },
        );
    }

    /// Stores `bytes` under `key`, modified now.
    pub fn insert(&self, key: &str, bytes: impl Into<Bytes>) {
        self.insert_at(key, bytes, Utc::now());
    }

    /// The bytes under `key`, if any.
    pub fn bytes(&self, key: &str) -> Option<Bytes> {
        let st = self.state.lock().unwrap();
        st.objects.get(&self.full(key)).map(|o| o.bytes.clone())
    }

    /// Every key of this view, in order (Ferry's folder included).
    pub fn keys(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.objects
            .keys()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
            .collect()
    }

    /// Refuses reads of `key` from now on, as a service denying access would.
    pub fn deny(&self, key: &str) {
        let full = self.full(key);
        self.state.lock().unwrap().denied.insert(full);
    }

    /// Changes `key` (a byte appended, so a new ETag) just before each of its next `times`
    /// reads, as a writer that keeps rewriting an object would.
    pub fn change_before_reads(&self, key: &str, times: u32) {
        let full = self.full(key);
        self.state
            .lock()
            .unwrap()
            .changes_before_read
            .insert(full, times);
    }

    /// From now on objects behave as SSE-KMS objects of S3 do: every ETag (single-part or
    /// multipart) is 32 hex digits that are not the MD5 of the content, and reads say so.
    pub fn encrypt_with_kms(&self) {
        self.state.lock().unwrap().kms = true;
    }

    /// The ETag the store gives an object whose MD5 (or multipart form) is `md5`.
    fn etag_for(&self, md5: String) -> String {
        if self.state.lock().unwrap().kms {
            let (hash, parts) = md5
                .split_once('-')
                .map_or((md5.as_str(), None), |(h, n)| (h, Some(n)));
            let opaque = md5_hex(format!("kms:{hash}").as_bytes());
            match parts {
                Some(n) => format!("{opaque}-{n}"),
                None => opaque,
            }
        } else {
            md5
        }
    }

    /// `etag` as a write returns it: None when it is not an MD5 (as an S3 store's writes).
    fn md5_etag(&self, etag: String) -> Option<String> {
        (!self.state.lock().unwrap().kms).then_some(etag)
    }

    /// Makes every write take `delay` (with tokio's clock, so paused time skips it).
    pub fn slow_writes(&self, delay: Duration) {
        self.state.lock().unwrap().write_delay = Some(delay);
    }

    /// Object reads served so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Rewrites `full` if a writer is set to change it before this read.
    fn change_if_hot(&self, full: &str) {
        let mut st = self.state.lock().unwrap();
        let Some(left) = st.changes_before_read.get_mut(full).filter(|n| **n > 0) else {
            return;
        };
        *left -= 1;
        let Some(o) = st.objects.get(full).cloned() else {
            return;
        };
        let mut bytes = o.bytes.to_vec();
        bytes.push(b'+');
        let bytes = Bytes::from(bytes);
        drop(st);
        let etag = self.etag_for(md5_hex(&bytes));
        let mut st = self.state.lock().unwrap();
        st.objects
            .insert(full.to_string(), Object { bytes, etag, ..o });
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn info(&self, key: &str, o: &Object) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: o.bytes.len() as u64,
            modified: Some(o.modified),
            etag: Some(o.etag.clone()),
            archived: false,
            invalid: None,
        }
    }

    async fn write_pause(&self) {
        let delay = self.state.lock().unwrap().write_delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }

    fn store(&self, key: &str, bytes: Bytes, meta: &ObjectMeta, etag: String) {
        let modified = meta.modified.unwrap_or_else(Utc::now);
        let mut st = self.state.lock().unwrap();
        let meta = ObjectMeta {
            etag_not_md5: st.kms,
            ..meta.clone()
        };
        st.objects.insert(
            self.full(key),
            Object {
                bytes,
                meta,
                modified,
                etag,
            },
        );
    }
}

#[async_trait::async_trait]
impl Source for MemoryStore {
    fn describe(&self) -> String {
        format!("memory:{}", self.prefix)
    }

    fn full_key(&self, key: &str) -> String {
        self.full(key)
    }

    fn caps(&self) -> SourceCaps {
        SourceCaps {
            md5_etags: true,
            ranged_reads: true,
        }
    }

    fn list(&self, after: Option<String>, until: Option<String>) -> Listing {
        // A snapshot, in byte order of the key, as every listing must be.
        let st = self.state.lock().unwrap();
        let items: Vec<Result<ObjectInfo, TransferError>> = st
            .objects
            .iter()
            .filter_map(|(full, o)| full.strip_prefix(&self.prefix).map(|k| (k, o)))
            .filter(|(k, _)| self.show_ferry || !k.starts_with(ferry_core::plan::FERRY_DIR))
            .filter(|(k, _)| after.as_deref().is_none_or(|a| *k > a))
            .take_while(|(k, _)| until.as_deref().is_none_or(|u| *k <= u))
            .map(|(k, o)| Ok(self.info(k, o)))
            .collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError> {
        let st = self.state.lock().unwrap();
        Ok(st
            .objects
            .get(&self.full(key))
            .map(|o| (self.info(key, o), o.meta.clone())))
    }

    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        _whole: bool,
        etag: Option<&str>,
        mut buf: Buffer,
    ) -> Result<Body, TransferError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let full = self.full(key);
        self.change_if_hot(&full);
        let st = self.state.lock().unwrap();
        if st.denied.contains(&full) {
            return Err(
                TransferError::new(FailureClass::AccessDenied, "GetObject: AccessDenied")
                    .with_code("AccessDenied"),
            );
        }
        let Some(o) = st.objects.get(&full) else {
            return Err(
                TransferError::new(FailureClass::SourceVanished, "GetObject: NoSuchKey")
                    .with_code("NoSuchKey"),
            );
        };
        if etag.is_some_and(|e| e != o.etag) {
            return Err(TransferError::new(
                FailureClass::SourceVanished,
                "GetObject: the object changed (412)",
            )
            .with_code("PreconditionFailed")
            .changed());
        }
        let end = offset + len;
        if end > o.bytes.len() as u64 {
            return Err(TransferError::short_body(
                len,
                o.bytes.len() as u64 - offset.min(o.bytes.len() as u64),
            ));
        }
        buf.extend_from_slice(&o.bytes[offset as usize..end as usize]);
        Ok(Body {
            bytes: buf.freeze(),
            md5: None,
            meta: ObjectMeta {
                modified: Some(o.modified),
                ..o.meta.clone()
            },
        })
    }

    async fn probe(&self) -> Result<(), TransferError> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[async_trait::async_trait]
impl Sink for MemoryStore {
    fn sink_caps(&self) -> SinkCaps {
        SinkCaps {
            max_object_size: None,
            etags_are_md5: true,
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        md5: Option<&[u8]>,
    ) -> Result<Option<String>, TransferError> {
        self.write_pause().await;
        let digest: [u8; 16] = Md5::digest(&body).into();
        if md5.is_some_and(|m| m != digest) {
            return Err(
                TransferError::new(FailureClass::ChecksumMismatch, "PutObject: BadDigest")
                    .with_code("BadDigest"),
            );
        }
        let etag = self.etag_for(hex::encode(digest));
        // A copy, as a server keeps its own: the body's buffer (and its share of the in-flight
        // budget) goes back when the caller drops it.
        self.store(key, Bytes::copy_from_slice(&body), meta, etag.clone());
        Ok(self.md5_etag(etag))
    }

    async fn create_upload(
        &self,
        key: &str,
        _meta: &ObjectMeta,
        _size: u64,
    ) -> Result<Upload, TransferError> {
        let id = self.next_upload.fetch_add(1, Ordering::Relaxed).to_string();
        let mut st = self.state.lock().unwrap();
        st.uploads
            .insert(id.clone(), (self.full(key), BTreeMap::new()));
        Ok(Upload {
            key: key.to_string(),
            id,
        })
    }

    async fn upload_part(
        &self,
        up: &Upload,
        number: i32,
        _offset: u64,
        body: Bytes,
        md5: Option<&[u8]>,
    ) -> Result<String, TransferError> {
        self.write_pause().await;
        let digest: [u8; 16] = Md5::digest(&body).into();
        if md5.is_some_and(|m| m != digest) {
            return Err(TransferError::new(
                FailureClass::ChecksumMismatch,
                "UploadPart: BadDigest",
            ));
        }
        let mut st = self.state.lock().unwrap();
        let (_, parts) = st.uploads.get_mut(&up.id).ok_or_else(|| {
            TransferError::new(FailureClass::InvalidRequest, "UploadPart: NoSuchUpload")
        })?;
        parts.insert(number, (Bytes::copy_from_slice(&body), digest));
        Ok(hex::encode(digest))
    }

    async fn complete_upload(
        &self,
        up: &Upload,
        _etags: Vec<String>,
        _size: u64,
        meta: &ObjectMeta,
    ) -> Result<Option<String>, TransferError> {
        let parts = {
            let mut st = self.state.lock().unwrap();
            st.uploads.remove(&up.id).ok_or_else(|| {
                TransferError::new(FailureClass::InvalidRequest, "Complete: NoSuchUpload")
            })?
        };
        let digests: Vec<[u8; 16]> = parts.1.values().map(|(_, d)| *d).collect();
        let mut all = Vec::new();
        for (b, _) in parts.1.values() {
            all.extend_from_slice(b);
        }
        let etag = self.etag_for(crate::copy::composite_md5(&digests));
        self.store(&up.key, Bytes::from(all), meta, etag.clone());
        Ok(self.md5_etag(etag))
    }

    async fn abort_upload(&self, up: &Upload) {
        self.state.lock().unwrap().uploads.remove(&up.id);
    }

    async fn delete(&self, key: &str) -> Result<(), TransferError> {
        self.state.lock().unwrap().objects.remove(&self.full(key));
        Ok(())
    }

    async fn probe_destination(&self, _dry_run: bool) -> Result<(), TransferError> {
        Ok(())
    }

    fn folder(&self, folder: &str) -> Arc<dyn Sink> {
        Arc::new(MemoryStore {
            prefix: folder.to_string(),
            show_ferry: true,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn listed(s: &MemoryStore, after: Option<&str>, until: Option<&str>) -> Vec<String> {
        s.list(after.map(String::from), until.map(String::from))
            .map(|r| r.unwrap().key)
            .collect()
            .await
    }

    #[tokio::test]
    async fn lists_in_byte_order_within_bounds_and_hides_ferry() {
        let s = MemoryStore::new();
        for k in ["b", "a/x", "a-b", ".ferry/reports/r", "c"] {
            s.insert(k, Bytes::from_static(b"1"));
        }
        assert_eq!(listed(&s, None, None).await, ["a-b", "a/x", "b", "c"]);
        assert_eq!(listed(&s, Some("a-b"), Some("b")).await, ["a/x", "b"]);
        let reports = s.folder(".ferry/reports/");
        let keys: Vec<String> = reports
            .list(None, None)
            .map(|r| r.unwrap().key)
            .collect()
            .await;
        assert_eq!(keys, ["r"]);
    }

    #[tokio::test]
    async fn writes_check_the_md5_sent_and_deletes_remove() {
        let s = MemoryStore::new();
        let meta = ObjectMeta::default();
        let e = s
            .put("k", Bytes::from_static(b"abc"), &meta, Some(&[0u8; 16]))
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::ChecksumMismatch);
        let etag = s
            .put("k", Bytes::from_static(b"abc"), &meta, None)
            .await
            .unwrap();
        assert_eq!(etag.as_deref(), Some(md5_hex(b"abc").as_str()));
        s.delete("k").await.unwrap();
        s.delete("k").await.unwrap();
        assert!(s.keys().is_empty());
    }

    #[tokio::test]
    async fn parts_are_assembled_in_order() {
        let s = MemoryStore::new();
        let meta = ObjectMeta::default();
        let up = s.create_upload("big", &meta, 6).await.unwrap();
        s.upload_part(&up, 2, 3, Bytes::from_static(b"def"), None)
            .await
            .unwrap();
        s.upload_part(&up, 1, 0, Bytes::from_static(b"abc"), None)
            .await
            .unwrap();
        let etag = s
            .complete_upload(&up, vec![], 6, &meta)
            .await
            .unwrap()
            .unwrap();
        assert!(etag.ends_with("-2"), "{etag}");
        assert_eq!(s.bytes("big").as_deref(), Some(&b"abcdef"[..]));
    }
}
