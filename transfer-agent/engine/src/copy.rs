//! Copies one object: a single PUT, a multipart upload with parts in parallel, or a
//! server-side copy; verifies it (`docs/contract.md` §4) before anyone may count it as copied.
//! What each side can do comes from its declared capabilities, never from its kind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_core::{FailureClass, PendingUpload, VerifyMode};
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use crate::error::TransferError;
use crate::limit::Limits;
use crate::retry::{with_retry, RetryPolicy};
use crate::stores::{Body, ObjectInfo, ObjectMeta, ServerCopy, Sink, Source, Upload};

const MIB: u64 = 1 << 20;
/// S3 allows at most this many parts.
pub const MAX_PARTS: u64 = 10_000;
/// The largest object one CopyObject may copy.
pub const MAX_SINGLE_COPY: u64 = 5 * (1 << 30);
/// Parts of one object in flight at once (the memory budget bounds them further).
const PARTS_IN_FLIGHT: usize = 8;

/// The part size for an object: the configured size, raised (to a whole MiB) so that no more
/// than 10,000 parts are needed. Every part but the last has this size.
pub fn effective_part_size(size: u64, configured: u64) -> u64 {
    let min = size.div_ceil(MAX_PARTS);
    if configured >= min {
        configured
    } else {
        min.div_ceil(MIB) * MIB
    }
}

/// The S3 multipart ETag of parts with these MD5s: MD5 of the concatenated digests, `-N`.
pub fn composite_md5(part_md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for d in part_md5s {
        h.update(d);
    }
    format!("{}-{}", hex::encode(h.finalize()), part_md5s.len())
}

fn md5_of(b: &[u8]) -> [u8; 16] {
    Md5::digest(b).into()
}

/// How an object ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Copied {
    /// Written and verified; the checksum recorded in the manifest (empty when verification
    /// is `Size`).
    Done { checksum: String },
    /// Deleted at the source before it could be read.
    Vanished,
}

/// Multipart uploads under way, so that a checkpoint can record them and a stop can abort them.
#[derive(Default, Debug)]
pub struct UploadRegistry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Upload>>,
    /// Every key this run started an upload in parts for.
    started: Mutex<std::collections::BTreeSet<String>>,
}

impl UploadRegistry {
    fn add(&self, up: &Upload) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap().insert(id, up.clone());
        self.started.lock().unwrap().insert(up.key.clone());
        id
    }

    /// Whether this run started an upload in parts for `key`.
    pub fn started(&self, key: &str) -> bool {
        self.started.lock().unwrap().contains(key)
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap().remove(&id);
    }

    /// The uploads open now, for the checkpoint.
    pub fn snapshot(&self) -> Vec<PendingUpload> {
        let mut v: Vec<PendingUpload> = self
            .open
            .lock()
            .unwrap()
            .values()
            .map(|u| PendingUpload {
                key: u.key.clone(),
                upload_id: u.id.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Takes every open upload out of the registry (to abort them).
    pub fn drain(&self) -> Vec<Upload> {
        self.open.lock().unwrap().drain().map(|(_, u)| u).collect()
    }
}

/// How many versions of one object a copy tries before it fails the object as "kept
/// changing": the listed one (often stale by the time its turn comes) and five it looked up
/// itself. Only a change during a read counts (the GET with `If-Match` answers 412): a hot
/// object written every few seconds is still copied, one rewritten all the time is failed.
const VERSIONS_TRIED: u32 = 6;

/// The wait before looking up again an object that changed while Ferry read it (`tried` ≥ 1
/// versions already tried): 200 ms, doubling, at most 2 s.
fn settle_wait(tried: u32) -> Duration {
    Duration::from_millis(200 << (tried - 1).min(4)).min(Duration::from_secs(2))
}

/// Everything needed to copy objects of one shard.
pub struct Copier {
    pub src: Arc<dyn Source>,
    pub dst: Arc<dyn Sink>,
    pub threshold: u64,
    pub part_size: u64,
    pub verify: VerifyMode,
    /// Source and destination are one service and account: copy inside the service.
    pub server: Option<Arc<dyn ServerCopy>>,
    pub limits: Arc<Limits>,
    pub retry: RetryPolicy,
    pub uploads: Arc<UploadRegistry>,
    /// Bytes moved so far (for live rates; counts parts as they finish).
    pub bytes_moved: Arc<AtomicU64>,
}

/// Errors of writes to the destination are never "the source vanished".
fn dst_err(mut e: TransferError) -> TransferError {
    if e.class == FailureClass::SourceVanished {
        e.class = FailureClass::InvalidRequest;
        e.changed = false;
    }
    e
}

impl Copier {
    /// Copies `info` (a source listing entry); a source that changed meanwhile is looked up
    /// again and its new version copied.
    pub async fn copy(&self, info: &ObjectInfo) -> Result<Copied, TransferError> {
        if let Some(refused) = self.src.refuse(info) {
            return Err(refused);
        }
        if let Some(max) = self.dst.sink_caps().max_object_size {
            if info.size > max {
                return Err(TransferError::new(
                    FailureClass::TooLarge,
                    format!(
                        "{} bytes is more than the {max} bytes an object of {} can hold",
                        info.size,
                        self.dst.describe()
                    ),
                )
                .retryable(false));
            }
        }
        let mut info = info.clone();
        for tried in 0..VERSIONS_TRIED {
            match self.copy_version(&info).await {
                Err(e) if e.changed => {
                    // The listed version is often just stale: look again at once. A version
                    // Ferry looked up itself changed while it was read: let the writer settle.
                    if tried > 0 {
                        tokio::time::sleep(settle_wait(tried)).await;
                    }
                    match self.src.head(&info.key).await? {
                        None if self.src.vanished_is_failure() => return Err(e),
                        None => return Ok(Copied::Vanished),
                        Some((now, _)) => info = now,
                    }
                }
                Err(e)
                    if e.class == FailureClass::SourceVanished
                        && !self.src.vanished_is_failure() =>
                {
                    return Ok(Copied::Vanished)
                }
                other => return other,
            }
        }
        Err(TransferError::new(
            FailureClass::SourceVanished,
            "the source object kept changing while it was copied",
        )
        .retryable(false))
    }

    /// How many parts an object of `size` bytes is copied in (0: in one request). Server-side:
    /// one CopyObject up to the 5 GiB it allows (services copy inside, often by reference),
    /// UploadPartCopy in parts only above; streamed: in parts above the threshold when the
    /// source reads ranges. A dry run counts with it what a real run would send.
    pub fn parts_of(&self, size: u64) -> u64 {
        let in_parts = if self.server.is_some() {
            size > MAX_SINGLE_COPY
        } else {
            size > self.threshold && self.src.caps().ranged_reads
        };
        if in_parts {
            size.div_ceil(effective_part_size(size, self.part_size))
        } else {
            0
        }
    }

    async fn copy_version(&self, info: &ObjectInfo) -> Result<Copied, TransferError> {
        let multipart = self.parts_of(info.size) > 0;
        if let Some(server) = &self.server {
            return if multipart {
                self.server_multipart(server.as_ref(), info).await
            } else {
                self.server_single(server.as_ref(), info).await
            };
        }
        if multipart {
            self.stream_multipart(info).await
        } else {
            self.stream_single(info).await
        }
    }

    fn checking(&self) -> bool {
        self.verify != VerifyMode::Size
    }

    /// The source's MD5 of the object, when its listing carries one.
    fn source_md5<'a>(&self, info: &'a ObjectInfo) -> Option<&'a str> {
        info.plain_md5().filter(|_| self.src.caps().md5_etags)
    }

    async fn stream_single(&self, info: &ObjectInfo) -> Result<Copied, TransferError> {
        let etag = info.etag.as_deref();
        let body = with_retry(&self.retry, "GetObject", |_| async {
            let buf = self.limits.buffer(info.size).await;
            let b = self
                .src
                .get(&info.key, 0, info.size, true, etag, buf)
                .await?;
            if self.checking() {
                // The source's own MD5 of these bytes when it has one (not hashed twice): the
                // destination checks the bytes against it as Content-MD5.
                let digest = b.md5.unwrap_or_else(|| md5_of(&b.bytes));
                // Not when the GET's own answer says the ETag is no MD5 (SSE-KMS, SSE-C).
                let expected = self.source_md5(info).filter(|_| !b.meta.etag_not_md5);
                if let Some(expected) = expected {
                    if hex::encode(digest) != expected.to_ascii_lowercase() {
                        return Err(TransferError::new(
                            FailureClass::ChecksumMismatch,
                            "the bytes read do not match the source's MD5 ETag",
                        )
                        .with_code("BadDigest"));
                    }
                }
                return Ok((b, Some(digest)));
            }
            Ok((b, None))
        })
        .await?;
        let (body, digest) = body;
        let Body {
            bytes, mut meta, ..
        } = body;
        meta.modified = info.modified.or(meta.modified);
        meta.etag_not_md5 = false;
        let md5_etags = self.dst.sink_caps().etags_are_md5;
        with_retry(&self.retry, "PutObject", |_| async {
            let got = self.dst.put(&info.key, bytes.clone(), &meta, digest.as_ref().map(|d| &d[..])).await.map_err(dst_err)?;
            if let (Some(d), Some(etag), true) = (digest, got.as_deref(), md5_etags) {
                if etag.len() == 32 && !etag.eq_ignore_ascii_case(&hex::encode(d)) {
                    return Err(TransferError::new(FailureClass::ChecksumMismatch, "the destination stored other bytes than were sent (ETag differs from the MD5)").with_code("BadDigest"));
                }
            }
            Ok(())
        })
        .await?;
        // The sent body gives its share of the in-flight budget back before the re-read asks
        // for one (holding both, an object above half the budget waited for ever).
        drop(bytes);
        self.bytes_moved.fetch_add(info.size, Ordering::Relaxed);
        let checksum = digest.map(hex::encode).unwrap_or_default();
        if self.verify == VerifyMode::ReRead {
            self.reread(
                &info.key,
                info.size,
                info.size.max(1),
                &checksum,
                digest.map(|d| vec![d]),
            )
            .await?;
        }
        Ok(Copied::Done { checksum })
    }

    async fn source_meta(&self, info: &ObjectInfo) -> Result<ObjectMeta, TransferError> {
        match self.src.head(&info.key).await? {
            None => Err(TransferError::new(
                FailureClass::SourceVanished,
                "the source object is gone",
            )),
            Some((now, _)) if now.etag != info.etag || now.size != info.size => {
                let mut e =
                    TransferError::new(FailureClass::SourceVanished, "the source object changed");
                e.changed = true;
                Err(e)
            }
            Some((_, mut meta)) => {
                meta.modified = info.modified.or(meta.modified);
                meta.etag_not_md5 = false;
                Ok(meta)
            }
        }
    }

    /// A multipart upload of `info`: creates it (recorded for checkpoints), runs `part` for
    /// every part (at most [`PARTS_IN_FLIGHT`] at once, results in part order), completes it
    /// from the parts' ETags, and aborts it if anything fails. Returns the part results, the
    /// completed object's ETag and the part size.
    async fn multipart<T, F, Fut>(
        &self,
        info: &ObjectInfo,
        part: F,
    ) -> Result<(Vec<T>, Option<String>, u64), TransferError>
    where
        F: Fn(Upload, i32, u64, u64) -> Fut,
        Fut: std::future::Future<Output = Result<(String, T), TransferError>>,
    {
        let meta = self.source_meta(info).await?;
        let size = effective_part_size(info.size, self.part_size);
        let parts = info.size.div_ceil(size);
        let up = self
            .dst
            .create_upload(&info.key, &meta, info.size)
            .await
            .map_err(dst_err)?;
        let reg = self.uploads.add(&up);
        let result: Result<Vec<(String, T)>, TransferError> = futures::stream::iter(0..parts)
            .map(|i| {
                let offset = i * size;
                let len = size.min(info.size - offset);
                let fut = part(up.clone(), i as i32 + 1, offset, len);
                async move {
                    let r = fut.await?;
                    self.bytes_moved.fetch_add(len, Ordering::Relaxed);
                    Ok(r)
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        let completed = match result {
            Ok(done) => {
                let (etags, out): (Vec<String>, Vec<T>) = done.into_iter().unzip();
                self.dst
                    .complete_upload(&up, etags, info.size, &meta)
                    .await
                    .map_err(dst_err)
                    .map(|etag| (out, etag, size))
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            self.dst.abort_upload(&up).await;
        }
        self.uploads.remove(reg);
        completed
    }

    async fn stream_multipart(&self, info: &ObjectInfo) -> Result<Copied, TransferError> {
        let etag = info.etag.as_deref();
        let (digests, got, part) = self
            .multipart(info, |up, number, offset, len| async move {
                let bytes = with_retry(&self.retry, "GetObject", |_| async {
                    let buf = self.limits.buffer(len).await;
                    self.src
                        .get(&info.key, offset, len, false, etag, buf)
                        .await
                        .map(|b| b.bytes)
                })
                .await?;
                let digest = self.checking().then(|| md5_of(&bytes));
                let part_etag = with_retry(&self.retry, "UploadPart", |_| {
                    let bytes: Bytes = bytes.clone();
                    let up = &up;
                    async move {
                        self.dst
                            .upload_part(up, number, offset, bytes, digest.as_ref().map(|d| &d[..]))
                            .await
                            .map_err(dst_err)
                    }
                })
                .await?;
                Ok((part_etag, digest))
            })
            .await?;
        let digests: Option<Vec<[u8; 16]>> = digests.into_iter().collect();
        let checksum = digests.as_deref().map(composite_md5).unwrap_or_default();
        if let (true, Some(etag), false) = (
            self.dst.sink_caps().etags_are_md5,
            got.as_deref(),
            checksum.is_empty(),
        ) {
            if etag.contains('-') && !etag.eq_ignore_ascii_case(&checksum) {
                return Err(TransferError::new(FailureClass::ChecksumMismatch, format!("the completed upload's ETag {etag} is not the MD5 of the parts sent ({checksum})")).with_code("BadDigest"));
            }
        }
        if self.verify == VerifyMode::ReRead {
            self.reread(&info.key, info.size, part, &checksum, digests)
                .await?;
        }
        Ok(Copied::Done { checksum })
    }

    /// Reads the written object back in the same parts and compares the digests.
    async fn reread(
        &self,
        key: &str,
        size: u64,
        part: u64,
        checksum: &str,
        expected: Option<Vec<[u8; 16]>>,
    ) -> Result<(), TransferError> {
        let Some(expected) = expected else {
            return Ok(());
        };
        let parts = size.div_ceil(part).max(1);
        for i in 0..parts {
            let offset = i * part;
            let len = part.min(size - offset);
            let b = with_retry(&self.retry, "GetObject", |_| async {
                let buf = self.limits.buffer(len).await;
                self.dst
                    .get(key, offset, len, parts == 1, None, buf)
                    .await
                    .map_err(dst_err)
            })
            .await?;
            if md5_of(&b.bytes) != expected[i as usize] {
                return Err(TransferError::new(FailureClass::ChecksumMismatch, format!("re-reading the destination gave other bytes than were written (part {} of {checksum})", i + 1)).with_code("BadDigest"));
            }
        }
        Ok(())
    }

    async fn server_single(
        &self,
        server: &dyn ServerCopy,
        info: &ObjectInfo,
    ) -> Result<Copied, TransferError> {
        let etag = info.etag.as_deref();
        let got = with_retry(&self.retry, "CopyObject", |_| async {
            server.copy_object(&info.key, etag).await
        })
        .await?;
        self.bytes_moved.fetch_add(info.size, Ordering::Relaxed);
        // `got` is None when the copy's ETag is no MD5 (SSE-KMS, SSE-C at the destination).
        if let (Some(src), Some(new), true) = (
            self.source_md5(info),
            got.as_deref(),
            self.dst.sink_caps().etags_are_md5,
        ) {
            if src.eq_ignore_ascii_case(new) {
                return Ok(Copied::Done {
                    checksum: src.to_ascii_lowercase(),
                });
            }
            // The listing does not say whether the source's ETag is an MD5; its HEAD does.
            let opaque = matches!(self.src.head(&info.key).await?, Some((_, m)) if m.etag_not_md5);
            if !opaque {
                return Err(TransferError::new(
                    FailureClass::ChecksumMismatch,
                    format!("server-side copy produced ETag {new}, the source has {src}"),
                )
                .with_code("BadDigest"));
            }
            self.check_size(info).await?;
            return Ok(Copied::Done {
                checksum: String::new(),
            });
        }
        self.check_size(info).await?;
        Ok(Copied::Done {
            checksum: info.etag.clone().unwrap_or_default(),
        })
    }

    async fn check_size(&self, info: &ObjectInfo) -> Result<(), TransferError> {
        match self.dst.head(&info.key).await.map_err(dst_err)? {
            Some((w, _)) if w.size == info.size => Ok(()),
            Some((w, _)) => Err(TransferError::new(
                FailureClass::ChecksumMismatch,
                format!("the copy has {} bytes, the source {}", w.size, info.size),
            )),
            None => Err(TransferError::new(
                FailureClass::Internal,
                "the copy is missing right after it was written",
            )),
        }
    }

    async fn server_multipart(
        &self,
        server: &dyn ServerCopy,
        info: &ObjectInfo,
    ) -> Result<Copied, TransferError> {
        let etag = info.etag.as_deref();
        self.multipart(info, |up, number, offset, len| async move {
            let e = with_retry(&self.retry, "UploadPartCopy", |_| {
                server.copy_part(&up, number, offset, len, etag)
            })
            .await?;
            Ok((e, ()))
        })
        .await?;
        self.check_size(info).await?;
        Ok(Copied::Done {
            checksum: info.etag.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::stores::MemoryStore;

    fn copier(src: &MemoryStore, dst: &MemoryStore, verify: VerifyMode) -> Copier {
        Copier {
            src: Arc::new(src.clone()),
            dst: Arc::new(dst.clone()),
            threshold: 8 * MIB,
            part_size: 5 * MIB,
            verify,
            server: None,
            limits: Arc::new(Limits::unlimited()),
            retry: RetryPolicy {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
                ..RetryPolicy::default()
            },
            uploads: Arc::new(UploadRegistry::default()),
            bytes_moved: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn listed(s: &MemoryStore, key: &str) -> ObjectInfo {
        s.head(key).await.unwrap().unwrap().0
    }

    /// SSE-KMS objects (issue 13, mode 2): their single-part ETags have the form of an MD5 but
    /// are not one. A copy from or to such a bucket is verified with what there is (the MD5
    /// sent as Content-MD5, a re-read), is not failed as a checksum mismatch, and does not
    /// read or write an object more than once.
    #[tokio::test]
    async fn kms_etags_are_not_taken_for_md5s() {
        let small = Bytes::from(vec![7u8; 1000]);
        let big = Bytes::from((0..9 * MIB).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        for (src_kms, dst_kms) in [(true, false), (false, true), (true, true)] {
            for verify in [VerifyMode::Checksum, VerifyMode::ReRead] {
                let (src, dst) = (MemoryStore::new(), MemoryStore::new());
                if src_kms {
                    src.encrypt_with_kms();
                }
                if dst_kms {
                    dst.encrypt_with_kms();
                }
                src.insert("small", small.clone());
                src.insert("big", big.clone());
                let c = copier(&src, &dst, verify);
                for (key, bytes) in [("small", &small), ("big", &big)] {
                    let reads = src.reads();
                    let info = listed(&src, key).await;
                    let what = format!(
                        "{key}, source KMS {src_kms}, destination KMS {dst_kms}, {verify:?}"
                    );
                    match c.copy(&info).await {
                        Ok(Copied::Done { .. }) => {}
                        other => panic!("{what}: {other:?}"),
                    }
                    assert_eq!(dst.bytes(key).as_ref(), Some(bytes), "{what}");
                    let parts = if key == "big" { 2 } else { 1 };
                    assert_eq!(src.reads() - reads, parts, "{what}: the source read once");
                }
            }
        }
    }

    /// An object rewritten while it is read (the GET's `If-Match` fails) is looked up and
    /// copied again in the version found, up to [`VERSIONS_TRIED`] versions, then failed as
    /// "kept changing"; nothing is written at the destination for a version not read whole.
    #[tokio::test(start_paused = true)]
    async fn a_hot_object_is_copied_in_a_version_read_whole_or_failed_as_changing() {
        for (changes, copied) in [(VERSIONS_TRIED - 1, true), (VERSIONS_TRIED, false)] {
            let (src, dst) = (MemoryStore::new(), MemoryStore::new());
            src.insert("hot", Bytes::from_static(b"v1"));
            let info = listed(&src, "hot").await;
            src.change_before_reads("hot", changes);
            let c = copier(&src, &dst, VerifyMode::Checksum);
            let res = c.copy(&info).await;
            assert_eq!(src.reads(), u64::from(VERSIONS_TRIED.min(changes + 1)));
            if copied {
                assert!(matches!(res, Ok(Copied::Done { .. })), "{res:?}");
                assert_eq!(dst.bytes("hot"), src.bytes("hot"));
            } else {
                let e = res.expect_err("a writer that never stops");
                assert_eq!(e.class, FailureClass::SourceVanished);
                assert!(e.message.contains("kept changing"), "{e}");
                assert_eq!(dst.bytes("hot"), None);
            }
        }
    }

    /// A re-read of an object above half the memory budget does not wait for ever for the
    /// budget its own sent body still held.
    #[tokio::test]
    async fn a_re_read_fits_in_the_budget_of_one_object() {
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        let bytes = Bytes::from(vec![3u8; 6 * MIB as usize]);
        src.insert("k", bytes.clone());
        let mut c = copier(&src, &dst, VerifyMode::ReRead);
        c.limits = Arc::new(Limits::new(0.0, 0.0, 8 * MIB));
        let info = listed(&src, "k").await;
        let done = tokio::time::timeout(Duration::from_secs(10), c.copy(&info)).await;
        assert!(matches!(done, Ok(Ok(Copied::Done { .. }))), "{done:?}");
        assert_eq!(dst.bytes("k"), Some(bytes));
    }

    #[test]
    fn part_size_is_raised_to_fit_ten_thousand_parts() {
        assert_eq!(effective_part_size(100 * MIB, 16 * MIB), 16 * MIB);
        let huge = 5 * (1u64 << 40);
        let p = effective_part_size(huge, 16 * MIB);
        assert!(huge.div_ceil(p) <= MAX_PARTS);
        assert_eq!(p % MIB, 0);
    }

    #[test]
    fn composite_matches_the_s3_formula() {
        // Two parts "a" and "b": MD5(MD5("a") ‖ MD5("b")), suffixed with the part count.
        let parts = [md5_of(b"a"), md5_of(b"b")];
        let mut cat = Vec::new();
        cat.extend_from_slice(&parts[0]);
        cat.extend_from_slice(&parts[1]);
        assert_eq!(
            composite_md5(&parts),
            format!("{}-2", hex::encode(md5_of(&cat)))
        );
    }
}
