//! The two kinds of endpoint the engine reads and writes: S3-compatible buckets and
//! filesystem trees. Keys are always relative to the side's prefix (S3) or root directory
//! (filesystem), so a source key and its destination key are the same string.

pub mod fs;
pub mod s3;

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::error::TransferError;
use crate::limit::Buffer;

pub use fs::FsStore;

/// A stream fed by a producer task through a bounded channel.
pub(crate) fn channel_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    use futures::StreamExt;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
pub use s3::{S3Credentials, S3Store};

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
    /// The ETag when it is a plain MD5 of the content (single-part upload, no SSE-KMS).
    pub fn plain_md5(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
    }
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
}

/// A part of an object in memory.
pub struct Body {
    pub bytes: Bytes,
    pub meta: ObjectMeta,
}

/// An upload of an object in parts that is under way.
#[derive(Clone, Debug)]
pub struct Upload {
    pub key: String,
    /// The S3 upload id, or the temporary file's path for a filesystem.
    pub id: String,
}

/// Either kind of endpoint.
#[derive(Clone, Debug)]
pub enum Store {
    S3(S3Store),
    Fs(FsStore),
}

impl Store {
    /// A listing in byte order of the key, of the keys `after < key <= until` (bounds
    /// optional), leaving out Ferry's own `.ferry/` folder.
    pub fn list(
        &self,
        after: Option<String>,
        until: Option<String>,
    ) -> BoxStream<'static, Result<ObjectInfo, TransferError>> {
        match self {
            Store::S3(s) => s.list(after, until),
            Store::Fs(f) => f.list(after, until),
        }
    }

    /// The entry for one key, or None when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError> {
        match self {
            Store::S3(s) => s.head(key, None).await,
            Store::Fs(f) => f.head(key).await,
        }
    }

    /// Reads `len` bytes at `offset` (the whole object when `whole`) into `buf`, checking that
    /// exactly that many arrive. `etag` guards against reading parts of two versions. `buf` is
    /// empty with room for `len` bytes: from [`crate::limit::Limits::buffer`] for copies (the
    /// body keeps its share of the in-flight budget until dropped), else
    /// [`Buffer::unbudgeted`].
    pub async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        whole: bool,
        etag: Option<&str>,
        buf: Buffer,
    ) -> Result<Body, TransferError> {
        match self {
            Store::S3(s) => s.get(key, offset, len, whole, etag, buf).await,
            Store::Fs(f) => f.get(key, offset, len, buf).await,
        }
    }

    /// Writes a whole object. `md5` (raw digest) is sent for the destination to check.
    /// Returns the ETag the destination reports (S3), if any.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        md5: Option<&[u8]>,
    ) -> Result<Option<String>, TransferError> {
        match self {
            Store::S3(s) => s.put(key, body, meta, md5).await,
            Store::Fs(f) => f.put(key, body, meta).await.map(|_| None),
        }
    }

    pub async fn create_upload(
        &self,
        key: &str,
        meta: &ObjectMeta,
        size: u64,
    ) -> Result<Upload, TransferError> {
        match self {
            Store::S3(s) => s.create_upload(key, meta).await,
            Store::Fs(f) => f.create_upload(key, size).await,
        }
    }

    /// Uploads part `number` (1-based) at `offset`. Returns the part's ETag.
    pub async fn upload_part(
        &self,
        up: &Upload,
        number: i32,
        offset: u64,
        body: Bytes,
        md5: Option<&[u8]>,
    ) -> Result<String, TransferError> {
        match self {
            Store::S3(s) => s.upload_part(up, number, body, md5).await,
            Store::Fs(f) => f.write_part(up, offset, body).await.map(|_| String::new()),
        }
    }

    /// Completes an upload from its parts' ETags. Returns the object's ETag, if any.
    pub async fn complete_upload(
        &self,
        up: &Upload,
        etags: Vec<String>,
        size: u64,
        meta: &ObjectMeta,
    ) -> Result<Option<String>, TransferError> {
        match self {
            Store::S3(s) => s.complete_upload(up, etags, size).await,
            Store::Fs(f) => f.complete_upload(up, size, meta).await.map(|_| None),
        }
    }

    /// Abandons an upload and frees what it stored. Best effort.
    pub async fn abort_upload(&self, up: &Upload) {
        match self {
            Store::S3(s) => s.abort_upload(up).await,
            Store::Fs(f) => f.abort_upload(up).await,
        }
    }

    /// Checks that the location exists and can be read, without writing anything
    /// (ListObjectsV2 with max-keys 1 or HeadBucket; a directory check).
    pub async fn probe(&self, as_destination: bool) -> Result<(), TransferError> {
        match self {
            Store::S3(s) => s.probe(as_destination).await,
            Store::Fs(f) => f.probe(as_destination).await,
        }
    }

    /// A description for messages, without credentials.
    pub fn describe(&self) -> String {
        match self {
            Store::S3(s) => s.describe(),
            Store::Fs(f) => f.describe(),
        }
    }

    /// The same endpoint at its root (no key prefix): where the report folder goes.
    pub fn at_root(&self) -> Store {
        match self {
            Store::S3(s) => Store::S3(s.with_prefix(String::new())),
            Store::Fs(f) => Store::Fs(f.clone()),
        }
    }

    /// The folder `folder` (below this store's prefix or root) as a store of its own, with
    /// Ferry's own folder not hidden: for reading reports back.
    pub fn under(&self, folder: &str) -> Store {
        match self {
            Store::S3(s) => Store::S3(s.under(folder)),
            Store::Fs(f) => Store::Fs(f.under(folder)),
        }
    }
}
