//! A URL list as a source (`StoreConfig::UrlList`): each line of the list names one file on
//! an http(s) server; its key comes from the URL (or the list). The list is sorted by key on
//! disk once per process ([`table`]), so the store lists in key order like any other, and
//! the engine's merge, shard ranges and watermark checkpoints work unchanged.
//!
//! - [`list`]: the formats (Lines, Tsv, Csv) and [`keys`]: URL to key;
//! - [`read`] and [`table`]: the list read in chunks and sorted in bounded memory;
//! - [`client`], [`guard`], [`classify`]: requests, the private-network guard, statuses.
//!
//! A row without a size is sized by a HEAD request when a shard lists it (not when the
//! planner samples or counts keys: [`Source::list_keys`]).

pub mod classify;
pub mod client;
pub mod collect;
pub mod guard;
pub mod keys;
pub mod list;
pub mod read;
pub mod table;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_core::stores::{SideSecrets, StoreConfig, UrlListConfig, UrlListLocation};
use ferry_core::FailureClass;
use futures::StreamExt;
use md5::{Digest, Md5};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::error::TransferError;
use crate::limit::{Buffer, Limits};
use crate::retry::{with_retry, RetryPolicy};
use crate::stores::{channel_stream, Body, Listing, ObjectInfo, ObjectMeta, Source, SourceCaps};
use client::{Client, READ_TIMEOUT};
use keys::loggable;
use read::ListFile;
use table::{Row, Table};

/// The ETag a listing gives a later row of a key (a duplicate): never an MD5, never sent.
const DUPLICATE: &str = "ferry-duplicate:";
/// Rows without a size sized at once by HEAD requests, ahead of the copies.
const SIZING_AHEAD: usize = 16;
/// Server ETags remembered for ranged reads of objects copied in parts.
const VALIDATORS: usize = 4096;

/// A URL list, read only.
pub struct UrlListStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: UrlListConfig,
    client: Client,
    list: ListFile,
    table: tokio::sync::OnceCell<Arc<Table>>,
    retry: RetryPolicy,
    limits: Arc<Limits>,
    /// Key → the server's strong ETag, learned by HEAD before a copy in parts, sent as
    /// `If-Match` with every ranged GET so parts of two versions are never stitched.
    validators: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl UrlListStore {
    /// Opens the store: the HTTP client, and the bucket of an `s3` list (with the side's
    /// credentials). Reads nothing yet.
    pub async fn open(
        cfg: &UrlListConfig,
        secrets: &SideSecrets,
        limits: Arc<Limits>,
        retry: RetryPolicy,
    ) -> Result<Self, TransferError> {
        let client = Client::new(cfg, secrets, limits.clone())?;
        let store: Option<Arc<dyn Source>> = match &cfg.list {
            UrlListLocation::S3 { s3, .. } => Some(Arc::new(
                super::S3Store::connect(s3, secrets, Arc::new(Limits::unlimited()), retry.clone())
                    .await?,
            )),
            UrlListLocation::Collected { at, key } => match at.as_ref() {
                StoreConfig::S3(s3) => {
                    let bucket = super::S3Store::connect(
                        s3,
                        secrets,
                        Arc::new(Limits::unlimited()),
                        retry.clone(),
                    )
                    .await?;
                    let folder: Arc<dyn Source> =
                        super::Sink::folder(&bucket, collect::list_folder(key));
                    Some(folder)
                }
                _ => None,
            },
            _ => None,
        };
        Ok(UrlListStore {
            inner: Arc::new(Inner {
                list: ListFile::of(cfg, store),
                config: cfg.clone(),
                client,
                table: tokio::sync::OnceCell::new(),
                retry,
                limits,
                validators: Mutex::new((HashMap::new(), VecDeque::new())),
            }),
        })
    }
}

/// Tables by list (configuration), shared by the stores of one process (`ferry run` opens
/// one per shard) while any of them holds it.
fn tables() -> &'static tokio::sync::Mutex<HashMap<String, Weak<Table>>> {
    static TABLES: std::sync::OnceLock<tokio::sync::Mutex<HashMap<String, Weak<Table>>>> =
        std::sync::OnceLock::new();
    TABLES.get_or_init(Default::default)
}

impl Inner {
    /// The sorted list, read on first use.
    async fn table(&self) -> Result<Arc<Table>, TransferError> {
        self.table
            .get_or_try_init(|| async {
                let id = serde_json::to_string(&StoreConfig::UrlList(self.config.clone()))
                    .unwrap_or_default();
                let mut all = tables().lock().await;
                if let Some(t) = all.get(&id).and_then(Weak::upgrade) {
                    return Ok(t);
                }
                let t = Arc::new(
                    self.list
                        .sort(&self.config, &std::env::temp_dir(), &self.retry)
                        .await?,
                );
                all.retain(|_, w| w.strong_count() > 0);
                all.insert(id, Arc::downgrade(&t));
                Ok(t)
            })
            .await
            .cloned()
    }

    async fn row(&self, key: &str) -> Result<Option<Row>, TransferError> {
        let table = self.table().await?;
        let key = key.to_string();
        tokio::task::spawn_blocking(move || table.get(&key))
            .await
            .map_err(|e| TransferError::new(FailureClass::Internal, e.to_string()))?
            .map_err(|e| TransferError::io("reading the sorted URL list", &e))
    }

    /// Rows `after < key <= until` in key order.
    fn rows(
        self: &Arc<Self>,
        after: Option<String>,
        until: Option<String>,
    ) -> futures::stream::BoxStream<'static, Result<Row, TransferError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let inner = self.clone();
        tokio::spawn(async move {
            let table = match inner.table().await {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let failed = tx.clone();
            let scan = tokio::task::spawn_blocking(move || {
                table.scan(after.as_deref(), until.as_deref(), |row| {
                    tx.blocking_send(Ok(row)).is_ok()
                })
            });
            if let Ok(Err(e)) = scan.await {
                let e = TransferError::io("reading the sorted URL list", &e);
                let _ = failed.send(Err(e)).await;
            }
        });
        channel_stream(rx)
    }

    fn remember(&self, key: &str, etag: String) {
        let mut v = self.validators.lock().unwrap();
        if v.0.insert(key.to_string(), etag).is_none() {
            v.1.push_back(key.to_string());
            if v.1.len() > VALIDATORS {
                if let Some(old) = v.1.pop_front() {
                    v.0.remove(&old);
                }
            }
        }
    }

    fn validator(&self, key: &str) -> Option<String> {
        self.validators.lock().unwrap().0.get(key).cloned()
    }

    /// What the server says of `url` now: its headers from a HEAD request (or, where HEAD
    /// is not allowed, from a GET of its first byte), with `retry`.
    async fn look(&self, url: &Url, retry: &RetryPolicy) -> Result<Answer, TransferError> {
        with_retry(retry, "HEAD", |_| async {
            match self.client.send(Method::HEAD, url, &HeaderMap::new()).await {
                Ok(resp) => Ok(Answer::of(&resp, false)),
                Err(e) if matches!(e.code.as_deref(), Some("HTTP 405" | "HTTP 501")) => {
                    let mut range = HeaderMap::new();
                    range.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
                    let resp = self.client.send(Method::GET, url, &range).await?;
                    Ok(Answer::of(
                        &resp,
                        resp.status() == StatusCode::PARTIAL_CONTENT,
                    ))
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// `row` as listed, sized by the server when the list does not say.
    async fn sized(&self, row: Row) -> ObjectInfo {
        let mut info = info_of(&row);
        if row.size.is_some() || info.invalid.is_some() || row.duplicate_of.is_some() {
            return info;
        }
        let Ok(url) = Url::parse(&row.url) else {
            return info;
        };
        // One attempt, so that the listing never waits for a server's retries: a URL that
        // cannot be looked up is listed with size 0; its GET then fails with the reason (a
        // 404 is SourceVanished, a 403 AccessDenied), or finds the file and sizes it again
        // with retries (`head`).
        let once = RetryPolicy {
            max_attempts: 1,
            ..self.retry.clone()
        };
        match self.look(&url, &once).await {
            Ok(a) => {
                info.size = a.size.unwrap_or(0);
                info.modified = a.meta.modified;
            }
            Err(e) => tracing::debug!(url = %loggable(&url), error = %e, "cannot size"),
        }
        info
    }
}

/// The headers of an answer Ferry keeps, and the size it gives.
struct Answer {
    size: Option<u64>,
    etag: Option<String>,
    meta: ObjectMeta,
}

impl Answer {
    /// `ranged`: the answer is a 206 to a range, whose `Content-Range` gives the size.
    fn of(resp: &Response, ranged: bool) -> Self {
        let h = resp.headers();
        let text = |name: header::HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .filter(|s| !s.is_empty())
        };
        let size = if ranged {
            text(header::CONTENT_RANGE)
                .and_then(|r| parse_content_range(&r))
                .and_then(|r| r.2)
        } else {
            text(header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
        };
        let modified = text(header::LAST_MODIFIED)
            .and_then(|v| DateTime::parse_from_rfc2822(&v).ok())
            .map(|t| t.with_timezone(&Utc));
        Answer {
            size,
            etag: text(header::ETAG),
            meta: ObjectMeta {
                content_type: text(header::CONTENT_TYPE),
                content_encoding: text(header::CONTENT_ENCODING),
                content_disposition: text(header::CONTENT_DISPOSITION),
                cache_control: text(header::CACHE_CONTROL),
                content_language: text(header::CONTENT_LANGUAGE),
                expires: text(header::EXPIRES),
                user: Default::default(),
                modified,
                etag_not_md5: false,
            },
        }
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok(),
    ))
}

/// A row as a listing entry: the list's MD5 as the ETag; a later row of a key marked.
fn info_of(row: &Row) -> ObjectInfo {
    let etag = match (row.duplicate_of, row.md5) {
        (Some(first), _) => Some(format!("{DUPLICATE}{}:{first}", row.line)),
        (None, Some(md5)) => Some(hex::encode(md5)),
        (None, None) => None,
    };
    ObjectInfo {
        key: row.key.clone(),
        size: row.size.unwrap_or(0),
        modified: None,
        etag,
        archived: false,
        invalid: row.invalid.clone(),
    }
}

fn mismatch(message: String) -> TransferError {
    TransferError::new(FailureClass::ChecksumMismatch, message).with_code("IncompleteBody")
}

#[async_trait]
impl Source for UrlListStore {
    fn describe(&self) -> String {
        format!("the URL list {}", self.inner.config.list.describe())
    }

    fn full_key(&self, key: &str) -> String {
        key.to_string()
    }

    fn caps(&self) -> SourceCaps {
        SourceCaps {
            // The listed ETag is the list's MD5 column, when it has one.
            md5_etags: true,
            ranged_reads: true,
        }
    }

    fn list(&self, after: Option<String>, until: Option<String>) -> Listing {
        let inner = self.inner.clone();
        self.inner
            .rows(after, until)
            .map(move |row| {
                let inner = inner.clone();
                async move { Ok(inner.sized(row?).await) }
            })
            .buffered(SIZING_AHEAD)
            .boxed()
    }

    fn list_keys(&self, after: Option<String>, until: Option<String>) -> Listing {
        self.inner
            .rows(after, until)
            .map(|row| row.map(|r| info_of(&r)))
            .boxed()
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError> {
        let Some(row) = self.inner.row(key).await? else {
            return Ok(None);
        };
        let mut info = info_of(&row);
        let Ok(url) = Url::parse(&row.url) else {
            return Ok(Some((info, ObjectMeta::default())));
        };
        // A URL the server will not describe is left to its GET to fail with the reason.
        let answer = match self.inner.look(&url, &self.inner.retry).await {
            Ok(a) => a,
            Err(_) => return Ok(Some((info, ObjectMeta::default()))),
        };
        if row.size.is_none() {
            info.size = answer.size.unwrap_or(0);
            info.modified = answer.meta.modified;
        }
        if let Some(etag) = answer.etag.filter(|e| !e.starts_with("W/")) {
            self.inner.remember(key, etag);
        }
        Ok(Some((info, answer.meta)))
    }

    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        whole: bool,
        _etag: Option<&str>,
        mut buf: Buffer,
    ) -> Result<Body, TransferError> {
        let row = self.inner.row(key).await?.ok_or_else(|| {
            TransferError::new(
                FailureClass::SourceVanished,
                "the key is not in the URL list",
            )
            .retryable(false)
        })?;
        let url = Url::parse(&row.url)
            .map_err(|e| TransferError::new(FailureClass::InvalidRequest, e.to_string()))?;
        let what = format!("GET {}", loggable(&url));
        self.inner.limits.bandwidth(len).await;
        let mut extra = HeaderMap::new();
        let ranged = !whole && len > 0;
        if ranged {
            let range = format!("bytes={}-{}", offset, offset + len - 1);
            extra.insert(header::RANGE, HeaderValue::from_str(&range).expect("ascii"));
            if let Some(v) = self
                .inner
                .validator(key)
                .and_then(|e| HeaderValue::from_str(&e).ok())
            {
                extra.insert(header::IF_MATCH, v);
            }
        }
        let mut resp = self.inner.client.send(Method::GET, &url, &extra).await?;
        let answer = Answer::of(&resp, false);
        // Bytes of the body to pass over: a server that ignores Range sends it all.
        let mut skip = 0;
        if ranged && resp.status() == StatusCode::PARTIAL_CONTENT {
            let got = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            if got.map(|(a, b, _)| (a, b)) != Some((offset, offset + len - 1)) {
                return Err(mismatch(format!(
                    "{what}: the server sent another range than asked"
                )));
            }
        } else if ranged {
            skip = offset;
            if answer.size.is_some_and(|s| s < offset + len) {
                return Err(TransferError::new(
                    FailureClass::SourceVanished,
                    format!("{what}: the file is shorter now than listed"),
                )
                .changed());
            }
        } else if let Some(cl) = answer.size.filter(|&cl| cl != len) {
            return Err(match row.size {
                Some(listed) => TransferError::new(
                    FailureClass::ChecksumMismatch,
                    format!("{what}: the server sends {cl} bytes, the list says {listed}"),
                )
                .with_code("SizeMismatch")
                .retryable(false),
                None => TransferError::new(
                    FailureClass::SourceVanished,
                    format!("{what}: the file is {cl} bytes now, {len} when it was listed"),
                )
                .retryable(true)
                .changed(),
            });
        }
        let mut hasher = (whole && row.md5.is_some()).then(Md5::new);
        loop {
            let chunk = match tokio::time::timeout(READ_TIMEOUT, resp.chunk()).await {
                Err(_) => {
                    return Err(TransferError::new(
                        FailureClass::Network,
                        format!("{what}: the body stalled for {} s", READ_TIMEOUT.as_secs()),
                    )
                    .with_code("Timeout"))
                }
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(mismatch(format!(
                        "{what}: the body broke off after {} of {len} bytes ({})",
                        buf.len(),
                        client::transport_error("", &e)
                            .message
                            .trim_start_matches(": ")
                    )))
                }
            };
            let mut c: &[u8] = &chunk;
            if skip > 0 {
                let n = skip.min(c.len() as u64) as usize;
                skip -= n as u64;
                c = &c[n..];
            }
            if buf.len() + c.len() > len as usize {
                if ranged && skip == 0 && resp.status() == StatusCode::OK {
                    // The rest of a whole body sent to a range request is not needed.
                    buf.extend_from_slice(&c[..len as usize - buf.len()]);
                    break;
                }
                return Err(mismatch(format!(
                    "{what}: the body is longer than {len} bytes"
                )));
            }
            if let Some(h) = hasher.as_mut() {
                h.update(c);
            }
            buf.extend_from_slice(c);
        }
        if buf.len() as u64 != len {
            return Err(mismatch(format!(
                "{what}: the body ended after {} of {len} bytes",
                buf.len()
            )));
        }
        if let (Some(h), Some(expected)) = (hasher, row.md5) {
            if h.finalize().as_slice() != expected {
                return Err(TransferError::new(
                    FailureClass::ChecksumMismatch,
                    format!("{what}: the bytes do not match the list's MD5"),
                )
                .with_code("BadDigest")
                .retryable(false));
            }
        }
        let mut meta = answer.meta;
        if !whole {
            meta = ObjectMeta::default();
        }
        Ok(Body {
            bytes: buf.freeze(),
            md5: None,
            meta,
        })
    }

    fn refuse(&self, info: &ObjectInfo) -> Option<TransferError> {
        let (line, first) = info
            .etag
            .as_deref()?
            .strip_prefix(DUPLICATE)?
            .split_once(':')?;
        Some(
            TransferError::new(
                FailureClass::DuplicateKey,
                format!(
                    "line {line} of the URL list maps to the same key as line {first}, which is copied instead"
                ),
            )
            .retryable(false),
        )
    }

    fn vanished_is_failure(&self) -> bool {
        true
    }

    async fn probe(&self) -> Result<(), TransferError> {
        self.inner.list.probe().await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every request with a Content-Length of 1000 and 500 bytes.
    async fn cutting_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).await.unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    .await;
                let _ = conn.write_all(&[7u8; 500]).await;
            }
        });
        (port, hits)
    }

    /// A body cut short is retried, and after the last attempt fails as ChecksumMismatch;
    /// nothing is written.
    #[tokio::test]
    async fn a_body_cut_short_is_retried_then_a_checksum_mismatch() {
        use crate::copy::{Copier, UploadRegistry};
        use crate::stores::MemoryStore;
        use ferry_core::stores::{UrlKeys, UrlListFormat};
        let (port, hits) = cutting_server().await;
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("urls.tsv");
        std::fs::write(
            &list,
            format!("TsvHttpData-1.0\nhttp://127.0.0.1:{port}/f\t1000\n"),
        )
        .unwrap();
        let cfg = UrlListConfig {
            list: UrlListLocation::Path {
                path: list.display().to_string(),
            },
            format: UrlListFormat::Tsv,
            keys: UrlKeys::default(),
            requests_per_second_per_host: 0,
            allow_private_networks: true,
        };
        let retry = RetryPolicy {
            max_attempts: 3,
            base: std::time::Duration::from_millis(1),
            cap: std::time::Duration::from_millis(2),
        };
        let limits = Arc::new(Limits::unlimited());
        let store = Arc::new(
            UrlListStore::open(&cfg, &SideSecrets::default(), limits.clone(), retry.clone())
                .await
                .unwrap(),
        );
        let info = store.list(None, None).next().await.unwrap().unwrap();
        assert_eq!((info.key.as_str(), info.size), ("f", 1000));
        let dst = MemoryStore::new();
        let copier = Copier {
            src: store,
            dst: Arc::new(dst.clone()),
            threshold: 8 << 20,
            part_size: 5 << 20,
            verify: ferry_core::VerifyMode::Checksum,
            server: None,
            limits,
            retry,
            uploads: Arc::new(UploadRegistry::default()),
            bytes_moved: Default::default(),
        };
        let e = copier.copy(&info).await.unwrap_err();
        assert_eq!(
            (e.class, e.attempts),
            (FailureClass::ChecksumMismatch, 3),
            "{e}"
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(dst.head("f").await.unwrap().is_none());
    }

    /// https to a server that speaks plain HTTP: a TLS failure, named, not retried.
    #[tokio::test]
    async fn tls_failures_are_named() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let cfg = UrlListConfig {
            list: UrlListLocation::Path {
                path: "unused".into(),
            },
            format: Default::default(),
            keys: Default::default(),
            requests_per_second_per_host: 0,
            allow_private_networks: true,
        };
        let client =
            Client::new(&cfg, &SideSecrets::default(), Arc::new(Limits::unlimited())).unwrap();
        let url = Url::parse(&format!("https://127.0.0.1:{port}/f")).unwrap();
        let e = client
            .send(Method::GET, &url, &HeaderMap::new())
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("TlsError"), "{e}");
        assert!(!e.retryable && e.message.contains("TLS failed"), "{e}");
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn duplicates_are_refused_and_md5s_listed() {
        let row = Row {
            key: "a".into(),
            line: 9,
            url: "https://h/a".into(),
            size: Some(3),
            md5: Some([0xab; 16]),
            invalid: None,
            duplicate_of: None,
        };
        assert_eq!(
            info_of(&row).etag.as_deref(),
            Some("abababababababababababababababab")
        );
        let dup = info_of(&Row {
            duplicate_of: Some(2),
            ..row
        });
        assert!(dup.plain_md5().is_none());
        assert!(dup.etag.unwrap().starts_with(DUPLICATE));
    }
}
