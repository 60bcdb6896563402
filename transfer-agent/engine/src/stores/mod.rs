//! The kinds of store the engine reads and writes, behind two traits: a [`Source`] lists and
//! reads, a [`Sink`] (every sink is also a source: the merge lists the destination) writes,
//! deletes and says what it can do. Keys are always relative to the side's prefix (S3) or
//! root directory (filesystem), so a source key and its destination key are the same string.
//!
//! The one rule every store keeps: **a listing comes back in byte order of the key**, with
//! `after < key <= until`. The sorted merge, the watermark checkpoint and the planner depend
//! on it.
//!
//! [`open`] is the only place that turns a plan's [`StoreConfig`] into a store; adding a kind
//! of store is one implementation of these traits and one arm there.

pub mod fs;
pub mod http;
pub mod memory;
pub mod s3;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_core::database::DATABASE_URL;
use ferry_core::stores::{SideSecrets, StoreConfig};
use ferry_core::ShardRange;
use futures::stream::BoxStream;

use crate::error::TransferError;
use crate::limit::{Buffer, Limits};
use crate::report::SourceJournal;
use crate::retry::RetryPolicy;

pub use fs::FsStore;
pub use http::UrlListStore;
pub use memory::MemoryStore;
pub use s3::S3Store;

/// A listing: entries in byte order of the key.
pub type Listing = BoxStream<'static, Result<ObjectInfo, TransferError>>;

/// A stream fed by a producer task through a bounded channel.
pub(crate) fn channel_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    use futures::StreamExt;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    /// Relative to the side's prefix or root.
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
    /// The ETag without quotes, when the side has one.
    pub etag: Option<String>,
    /// In an archive storage class (Glacier, Deep Archive): not readable without a restore.
    pub archived: bool,
    /// Why this entry can never be copied (a file name that is not UTF-8...).
    pub invalid: Option<String>,
}

impl ObjectInfo {
    /// The ETag when it has the form of a plain MD5 (single-part upload). Whether it really is
    /// the MD5 of the content is the store's to say ([`SourceCaps::md5_etags`]) and, per
    /// object, the service's ([`etag_is_md5`], [`ObjectMeta::etag_not_md5`]).
    pub fn plain_md5(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// Whether an S3 service's ETag for an object (single-part or multipart) is derived from the
/// MD5 of its bytes, judging by the object's encryption as the same answer reports it
/// (`x-amz-server-side-encryption`, `x-amz-server-side-encryption-customer-algorithm`). With
/// SSE-KMS (`aws:kms`), DSSE-KMS (`aws:kms:dsse`) or SSE-C it is not, though a single-part
/// one still has the form of an MD5; with none or SSE-S3 (`AES256`) it is. The one place
/// that decides (`docs/contract.md` §4): an ETag it rejects is never compared with an MD5.
pub fn etag_is_md5(sse: Option<&str>, sse_customer_algorithm: Option<&str>) -> bool {
    sse_customer_algorithm.is_none_or(|a| a.is_empty())
        && !sse.is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("aws:kms"))
}

/// The headers Ferry preserves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub content_language: Option<String>,
    /// HTTP-date, as the source gave it.
    pub expires: Option<String>,
    /// User metadata (`x-amz-meta-*`), names without the prefix.
    pub user: BTreeMap<String, String>,
    /// The modification time to give a filesystem destination.
    pub modified: Option<DateTime<Utc>>,
    /// Not a header that is copied: the service said (in the same answer) that the object's
    /// ETag is not derived from the MD5 of its bytes ([`etag_is_md5`]: SSE-KMS, SSE-C), so
    /// that ETag, though it may have the form of one, is never compared with an MD5.
    pub etag_not_md5: bool,
}

/// A part of an object in memory.
pub struct Body {
    pub bytes: Bytes,
    pub meta: ObjectMeta,
    /// The MD5 of `bytes` when the source computed it from these very bytes (a database row,
    /// hashed as it was listed): the copy sends it as `Content-MD5` without hashing again,
    /// and the destination's check of `Content-MD5` still covers the bytes end to end. None:
    /// the copy hashes the bytes itself.
    pub md5: Option<[u8; 16]>,
}

/// An upload of an object in parts that is under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    /// The S3 upload id, or the temporary file's path for a filesystem.
    pub id: String,
}

/// A multipart upload found under way at a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenUpload {
    pub upload: Upload,
    pub initiated: Option<DateTime<Utc>>,
}

/// What a source can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceCaps {
    /// A listed ETag of the form of an MD5 is the MD5 of the content: it may be compared with
    /// the destination's and checked against the bytes read. (HTTP ETags, for one, are opaque.)
    pub md5_etags: bool,
    /// Byte ranges of an object can be read on their own, so large objects are copied in
    /// parts; otherwise they are read whole.
    pub ranged_reads: bool,
}

/// What a destination can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkCaps {
    /// The largest object it stores, if it has a limit.
    pub max_object_size: Option<u64>,
    /// The ETag it returns for a written object is the MD5 of the bytes (single PUT) or of the
    /// part MD5s (multipart), so a write can be checked against what was sent.
    pub etags_are_md5: bool,
}

/// What a source set back of its own changes at a rollback ([`Source::take_back`]).
#[derive(Debug, Default, PartialEq)]
pub struct TakeBack {
    /// Changes undone: the source holds what it held before the job again.
    pub undone: u64,
    /// Changes not undone, each with why (its class), under the object's key.
    pub kept: Vec<crate::report::FailureLine>,
    /// Keys whose objects the rollback must keep, and why: the source gave up its own copy
    /// of their bytes (a payload cleared), so the object is the only one left.
    pub keep_objects: BTreeMap<String, &'static str>,
}

/// A store objects are read from.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// A description for messages, without credentials.
    fn describe(&self) -> String;

    /// `key` as people know it: with the side's prefix (S3), or the path below the root.
    fn full_key(&self, key: &str) -> String;

    fn caps(&self) -> SourceCaps;

    /// The entries `after < key <= until` (bounds optional) in byte order of the key, leaving
    /// out Ferry's own `.ferry/` folder.
    fn list(&self, after: Option<String>, until: Option<String>) -> Listing;

    /// The keys of [`Source::list`], for sampling and counting: the same entries, but a store
    /// that must ask a server for an entry's size (a URL list without sizes) may give 0
    /// instead of asking.
    fn list_keys(&self, after: Option<String>, until: Option<String>) -> Listing {
        self.list(after, until)
    }

    /// The entry for one key, or None when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError>;

    /// Reads `len` bytes at `offset` (the whole object when `whole`) into `buf`, checking that
    /// exactly that many arrive. `etag` guards against reading parts of two versions. `buf` is
    /// empty with room for `len` bytes: from [`crate::limit::Limits::buffer`] for copies (the
    /// body keeps its share of the in-flight budget until dropped), else
    /// [`Buffer::unbudgeted`].
    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        whole: bool,
        etag: Option<&str>,
        buf: Buffer,
    ) -> Result<Body, TransferError>;

    /// Checks that the location exists and can be read, writing nothing.
    async fn probe(&self) -> Result<(), TransferError>;

    /// Why a listed entry is not to be copied, when this source says so before any read (a
    /// URL list: a later URL of a key already copied from an earlier line, `DuplicateKey`).
    fn refuse(&self, info: &ObjectInfo) -> Option<TransferError> {
        let _ = info;
        None
    }

    /// A listed entry that cannot be found when read is a failure to report, not an object
    /// deleted at the source meanwhile: the entries of a URL list are what the list says,
    /// and a 404 means the list names a file the server has not got.
    fn vanished_is_failure(&self) -> bool {
        false
    }

    /// Shard ranges this source can cut itself without a listing (a database table: id
    /// ranges), or None for the planner's sampling of the listing.
    async fn own_shard_ranges(
        &self,
        shards: u32,
    ) -> Result<Option<Vec<ShardRange>>, TransferError> {
        let _ = shards;
        Ok(None)
    }

    /// The object `key` is at the destination with the bytes of MD5 `md5` (hex): copied and
    /// verified, or found there with the source's MD5. Never called in a dry run. A source
    /// that records where its objects went (a database's `writeBack`) notes it, and writes it
    /// down at [`Source::settle`].
    fn verified(&self, key: &str, md5: &str) {
        let _ = (key, md5);
    }

    /// Writes down what [`Source::verified`] noted. Called before each checkpoint is saved
    /// (and so at the end of a shard): an error keeps the old checkpoint. What it changes at
    /// the source it first writes down in `journal` (the shard's report folder; None in a
    /// run without one), for [`Source::take_back`].
    async fn settle(&self, journal: Option<&SourceJournal>) -> Result<(), TransferError> {
        let _ = journal;
        Ok(())
    }

    /// The rollback: sets back what [`Source::settle`] changed at the source, from the
    /// journals in `folders` (the shard's report folder of every attempt). Nothing to do for
    /// a source that changes nothing.
    async fn take_back(&self, folders: &[Arc<dyn Sink>]) -> Result<TakeBack, TransferError> {
        let _ = folders;
        Ok(TakeBack::default())
    }

    /// For [`Sink::server_copy`]: lets a sink recognise a source of its own kind.
    fn as_any(&self) -> &dyn Any;
}

/// A store objects are written to.
#[async_trait]
pub trait Sink: Source {
    fn sink_caps(&self) -> SinkCaps;

    /// Writes a whole object. `md5` (raw digest) is sent for the destination to check.
    /// Returns the ETag the destination reports when it is the MD5 of the bytes stored; None
    /// when there is none or it is not an MD5 ([`etag_is_md5`]: SSE-KMS, SSE-C), so the write
    /// is checked by the `md5` the destination verified (and a re-read) only.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        md5: Option<&[u8]>,
    ) -> Result<Option<String>, TransferError>;

    /// Starts an upload in parts of an object of `size` bytes.
    async fn create_upload(
        &self,
        key: &str,
        meta: &ObjectMeta,
        size: u64,
    ) -> Result<Upload, TransferError>;

    /// Uploads part `number` (1-based) at `offset`. Returns the part's ETag.
    async fn upload_part(
        &self,
        up: &Upload,
        number: i32,
        offset: u64,
        body: Bytes,
        md5: Option<&[u8]>,
    ) -> Result<String, TransferError>;

    /// Completes an upload from its parts' ETags. Returns the object's ETag when it is the
    /// S3 multipart form of the parts' MD5s (as [`Sink::put`]: None when opaque).
    async fn complete_upload(
        &self,
        up: &Upload,
        etags: Vec<String>,
        size: u64,
        meta: &ObjectMeta,
    ) -> Result<Option<String>, TransferError>;

    /// Abandons an upload and frees what it stored. Best effort.
    async fn abort_upload(&self, up: &Upload);

    /// Deletes one object; a key that is already gone is no error.
    async fn delete(&self, key: &str) -> Result<(), TransferError>;

    /// Copies the object at `key` to `to`, a key of this side's bucket (not below its
    /// prefix), inside the service, guarded by `etag`: the backup of an object about to be
    /// deleted. Only S3 destinations can (`deletes.backupPrefix` is refused on others).
    async fn backup(&self, key: &str, to: &str, etag: Option<&str>) -> Result<(), TransferError> {
        let _ = (key, to, etag);
        Err(TransferError::new(
            ferry_core::FailureClass::InvalidRequest,
            format!("{} cannot keep backups of deleted objects", self.describe()),
        )
        .fatal())
    }

    /// Checks that the location can be written to, writing nothing. In a dry run a location
    /// that would be created by the first write (a directory) is no error.
    async fn probe_destination(&self, dry_run: bool) -> Result<(), TransferError>;

    /// Uploads in parts under way below this location, to sweep those a killed run left.
    async fn open_uploads(&self) -> Result<Vec<OpenUpload>, TransferError> {
        Ok(Vec::new())
    }

    /// A way to copy objects of `src` inside the service, when `src` is the same service and
    /// account as this sink; None when the bytes must travel through Ferry.
    fn server_copy(&self, src: &dyn Source) -> Option<Arc<dyn ServerCopy>> {
        let _ = src;
        None
    }

    /// The folder `folder` below this side's root (the bucket or directory, not its prefix)
    /// as a store of its own, with nothing hidden: where Ferry keeps its reports. Called on a
    /// side, not on a folder (folders do not nest).
    fn folder(&self, folder: &str) -> Arc<dyn Sink>;
}

/// Copies inside one service, from a source to a sink of its own.
#[async_trait]
pub trait ServerCopy: Send + Sync {
    /// Copies a whole object with its metadata, guarded by `etag`. Returns the new ETag when
    /// it is derived from the MD5 of the bytes (as [`Sink::put`]: None when opaque).
    async fn copy_object(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<String>, TransferError>;

    /// Copies `len` bytes at `offset` as part `number` of `up`. Returns the part's ETag.
    async fn copy_part(
        &self,
        up: &Upload,
        number: i32,
        offset: u64,
        len: u64,
        etag: Option<&str>,
    ) -> Result<String, TransferError>;
}

/// A store opened from a plan: read-only kinds can only be sources.
#[derive(Clone)]
pub enum Opened {
    ReadOnly(Arc<dyn Source>),
    ReadWrite(Arc<dyn Sink>),
}

impl Opened {
    pub fn source(&self) -> Arc<dyn Source> {
        match self {
            Opened::ReadOnly(s) => s.clone(),
            Opened::ReadWrite(s) => s.clone(),
        }
    }

    /// The store as a destination, or a job-fatal error for a kind that cannot be written.
    pub fn sink(&self) -> Result<Arc<dyn Sink>, TransferError> {
        match self {
            Opened::ReadWrite(s) => Ok(s.clone()),
            Opened::ReadOnly(s) => Err(TransferError::new(
                ferry_core::FailureClass::InvalidRequest,
                format!("{} can only be read from, not written to", s.describe()),
            )
            .fatal()),
        }
    }
}

/// Opens one side of a plan with its own secrets. The only place that matches on the kind.
pub async fn open(
    config: &StoreConfig,
    secrets: &SideSecrets,
    limits: Arc<Limits>,
    retry: RetryPolicy,
) -> Result<Opened, TransferError> {
    Ok(match config {
        StoreConfig::S3(c) => {
            Opened::ReadWrite(Arc::new(S3Store::connect(c, secrets, limits, retry).await?))
        }
        StoreConfig::Filesystem(c) => Opened::ReadWrite(Arc::new(FsStore::new(&c.path, limits))),
        StoreConfig::UrlList(c) => Opened::ReadOnly(Arc::new(
            UrlListStore::open(c, secrets, limits, retry).await?,
        )),
        StoreConfig::Database(c) => {
            let url = secrets.get(DATABASE_URL).ok_or_else(|| {
                TransferError::new(
                    ferry_core::FailureClass::InvalidRequest,
                    format!("database source: no connection URL ({DATABASE_URL}) was given"),
                )
                .fatal()
            })?;
            Opened::ReadOnly(Arc::new(
                crate::db::DbStore::open_within(c, url, limits).await?,
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_and_customer_keys_make_etags_opaque() {
        assert!(etag_is_md5(None, None));
        assert!(etag_is_md5(Some("AES256"), None));
        assert!(!etag_is_md5(Some("aws:kms"), None));
        assert!(!etag_is_md5(Some("aws:kms:dsse"), None));
        assert!(!etag_is_md5(None, Some("AES256")));
        assert!(!etag_is_md5(Some("AES256"), Some("AES256")));
    }
}
