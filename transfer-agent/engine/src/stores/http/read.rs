//! Reading a URL list from where it is into the sorted [`Table`], in bounded memory: the
//! list is read in chunks (a file, or ranged GETs of an object), parsed line by line, and
//! sorted in runs.

use std::sync::Arc;

use ferry_core::stores::{url_list_mount_path, UrlListConfig, UrlListLocation};
use ferry_core::FailureClass;
use tokio::io::AsyncReadExt;

use super::list::{Entry, Parser};
use super::table::{Row, Sorter, Table, RUN_BYTES};
use crate::error::TransferError;
use crate::limit::Buffer;
use crate::retry::{with_retry, RetryPolicy};
use crate::stores::Source;

/// Bytes read from the list at once.
const CHUNK: u64 = 4 << 20;

/// Where the list's bytes come from.
pub enum ListFile {
    File(String),
    /// A ConfigMap's key, mounted by the operator (a cluster only): the file, and the
    /// ConfigMap and key for messages.
    Mounted(String, String),
    Object {
        store: Arc<dyn Source>,
        key: String,
    },
    /// A list still to be collected (`collect`), or one that cannot be read where the
    /// collector put it: why.
    Unreadable(String),
}

impl ListFile {
    /// The list of `cfg`; `store` is the opened bucket of an `s3` list.
    pub fn of(cfg: &UrlListConfig, store: Option<Arc<dyn Source>>) -> Self {
        match (&cfg.list, store) {
            (UrlListLocation::S3 { key, .. }, Some(store)) => ListFile::Object {
                store,
                key: key.clone(),
            },
            (UrlListLocation::ConfigMap { key, .. }, _) => {
                ListFile::Mounted(url_list_mount_path(key), cfg.list.describe())
            }
            (UrlListLocation::Path { path }, _) => ListFile::File(path.clone()),
            (UrlListLocation::S3 { .. }, None) => {
                unreachable!("an s3 list is opened with its store")
            }
            (UrlListLocation::Collect { .. }, _) => ListFile::Unreadable(
                "the URL list has not been collected yet (the planner collects it first)".into(),
            ),
            (UrlListLocation::Collected { key, .. }, Some(store)) => ListFile::Object {
                store,
                key: super::collect::list_name(key).to_string(),
            },
            (UrlListLocation::Collected { at, key }, None) => match at.as_ref() {
                ferry_core::StoreConfig::Filesystem(fs) => ListFile::File(
                    std::path::Path::new(&fs.path)
                        .join(key)
                        .display()
                        .to_string(),
                ),
                other => ListFile::Unreadable(format!(
                    "a collected URL list cannot be read from {}",
                    other.describe()
                )),
            },
        }
    }

    /// Checks that the list exists and can be read.
    pub async fn probe(&self) -> Result<(), TransferError> {
        match self {
            // The collector's own requests check its API.
            ListFile::Unreadable(_) => Ok(()),
            ListFile::Mounted(path, what) => match tokio::fs::metadata(path).await {
                Ok(m) if m.is_file() => Ok(()),
                _ => Err(missing(&format!(
                    "the URL list of a configMapRef is mounted at {path} by the operator in a \
                     cluster; it is not there: {what} does not exist in the job's namespace or \
                     has no such key (with ferry run, give the list as a path)"
                ))),
            },
            ListFile::File(path) => match tokio::fs::metadata(path).await {
                Ok(m) if m.is_file() => Ok(()),
                Ok(_) => Err(missing(&format!("{path} is not a file"))),
                Err(e) => Err(TransferError::io(&format!("the URL list {path}"), &e).fatal()),
            },
            ListFile::Object { store, key } => match store.head(key).await? {
                Some(_) => Ok(()),
                None => Err(missing(&format!(
                    "the URL list {} does not exist",
                    store.full_key(key)
                ))),
            },
        }
    }

    /// Reads, parses and sorts the whole list into a table in `tmp`.
    pub async fn sort(
        &self,
        cfg: &UrlListConfig,
        tmp: &std::path::Path,
        retry: &RetryPolicy,
    ) -> Result<Table, TransferError> {
        let mut chunks = self.chunks(retry).await?;
        let tmp = tmp.to_path_buf();
        let mut sorter = blocking(move || Sorter::new(&tmp, RUN_BYTES)).await?;
        let mut parser = Parser::new(cfg.format, cfg.keys.clone());
        let (mut pending, mut n) = (Vec::<u8>::new(), 0u64);
        loop {
            let chunk = chunks.next().await?;
            let end = chunk.is_none();
            match chunk {
                Some(c) => pending.extend_from_slice(&c),
                None if pending.is_empty() => break,
                None => pending.push(b'\n'),
            }
            let mut start = 0;
            let mut full = false;
            while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
                n += 1;
                let line = &pending[start..start + nl];
                start += nl + 1;
                let text =
                    std::str::from_utf8(line).map_err(|_| malformed(n, "the line is not UTF-8"))?;
                if let Some(entry) = parser.line(n, text).map_err(|why| malformed(n, &why))? {
                    full |= sorter.push(row_of(entry));
                }
            }
            pending.drain(..start);
            if full {
                sorter = blocking(move || sorter.spill().map(|()| sorter)).await?;
            }
            if end {
                break;
            }
        }
        let table = blocking(move || sorter.finish()).await?;
        tracing::info!(rows = table.rows, lines = n, "URL list sorted");
        Ok(table)
    }

    async fn chunks(&self, retry: &RetryPolicy) -> Result<Chunks, TransferError> {
        Ok(match self {
            ListFile::Unreadable(why) => return Err(missing(why)),
            ListFile::File(path) | ListFile::Mounted(path, _) => Chunks::File(
                tokio::fs::File::open(path)
                    .await
                    .map_err(|e| TransferError::io(&format!("the URL list {path}"), &e).fatal())?,
            ),
            ListFile::Object { store, key } => {
                let (info, _) = store.head(key).await?.ok_or_else(|| {
                    missing(&format!(
                        "the URL list {} does not exist",
                        store.full_key(key)
                    ))
                })?;
                Chunks::Object {
                    store: store.clone(),
                    key: key.clone(),
                    etag: info.etag,
                    size: info.size,
                    offset: 0,
                    retry: retry.clone(),
                }
            }
        })
    }
}

/// The bytes of a list, chunk by chunk.
enum Chunks {
    File(tokio::fs::File),
    Object {
        store: Arc<dyn Source>,
        key: String,
        /// Every chunk is of this version.
        etag: Option<String>,
        size: u64,
        offset: u64,
        retry: RetryPolicy,
    },
}

impl Chunks {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, TransferError> {
        match self {
            Chunks::File(f) => {
                let mut buf = vec![0u8; CHUNK as usize];
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(|e| TransferError::io("reading the URL list", &e))?;
                buf.truncate(n);
                Ok((n > 0).then_some(buf))
            }
            Chunks::Object {
                store,
                key,
                etag,
                size,
                offset,
                retry,
            } => {
                if *offset >= *size {
                    return Ok(None);
                }
                let len = CHUNK.min(*size - *offset);
                let whole = *offset == 0 && len == *size;
                let body = with_retry(retry, "GetObject", |_| {
                    store.get(
                        key,
                        *offset,
                        len,
                        whole,
                        etag.as_deref(),
                        Buffer::unbudgeted(len),
                    )
                })
                .await?;
                *offset += len;
                Ok(Some(body.bytes.to_vec()))
            }
        }
    }
}

fn row_of(e: Entry) -> Row {
    let (key, invalid) = match e.key {
        Ok(k) => (k, None),
        // A stand-in key for the report: the URL's raw path, or the line.
        Err(why) => {
            let raw = url::Url::parse(&e.url)
                .map(|u| u.path().trim_start_matches('/').to_string())
                .unwrap_or_default();
            let key = if raw.is_empty() || raw.ends_with('/') {
                format!("{raw}(line {})", e.line)
            } else {
                raw
            };
            (key, Some(format!("line {}: {why}", e.line)))
        }
    };
    Row {
        key,
        line: e.line,
        url: e.url,
        size: e.size,
        md5: e.md5,
        invalid,
        duplicate_of: None,
    }
}

fn malformed(line: u64, why: &str) -> TransferError {
    TransferError::new(
        FailureClass::InvalidRequest,
        format!("the URL list is malformed at line {line}: {why}"),
    )
    .fatal()
}

fn missing(why: &str) -> TransferError {
    TransferError::new(FailureClass::InvalidRequest, why).fatal()
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            TransferError::new(FailureClass::Internal, format!("sorting the URL list: {e}"))
        })?
        .map_err(|e| TransferError::io("sorting the URL list (temporary files)", &e).fatal())
}
