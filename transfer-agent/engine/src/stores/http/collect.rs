//! The URL-list collector (`source.urlList.collect`): pages through a JSON API and writes
//! the URLs it names as a list the URL-list source then reads, in the job's report folder.
//!
//! - The page is read with the store's [`Client`]: the private-network guard on every page
//!   URL and redirect, the Secret's headers (never logged), 429/503 with `Retry-After`
//!   retried by [`with_retry`], other answers classified as for files.
//! - What a page means ([`read_page`]: its items, their lines, the next page) is pure.
//! - The list grows in chunks (`chunk-NNNNNN`), each followed by the checkpoint
//!   (`state.json`: the next page's URL, pages, lines and chunks so far). A killed collector
//!   starts again at the checkpoint's page and writes the next chunk again under the same
//!   name, so no line is written twice and none is lost. At the end the chunks are joined
//!   into [`COLLECTED_LIST`] and the checkpoint says done.
//! - The list is `TsvHttpData-1.0` (URL, size, base64 MD5), or `URL,KEY` (the `Csv` format)
//!   when the items name keys (`fields.key`): the Tsv format has no key column.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use ferry_core::collect::{
    collect_of, collected_list_key, collected_source, format_of, CollectConfig, CollectProgress,
    Pagination, COLLECTED_LIST,
};
use ferry_core::stores::{SideSecrets, UrlListConfig, UrlListFormat};
use ferry_core::{FailureClass, JobCredentials, JobPlan, StoreConfig};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, LINK};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::client::Client;
use super::keys::loggable;
use super::list::TSV_HEADER;
use crate::error::TransferError;
use crate::limit::{Buffer, Limits, TokenBucket};
use crate::retry::{with_retry, RetryPolicy};
use crate::stores::{ObjectMeta, Sink};

/// The checkpoint's name in the collector's folder.
const STATE: &str = "state.json";
/// The longest page read (bytes).
const MAX_PAGE_BYTES: usize = 32 << 20;
/// A checkpoint at least this often while pages come in...
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// ...or when this many bytes of lines wait.
const CHUNK_BYTES: usize = 4 << 20;
/// The parts the joined list is uploaded in, above [`WHOLE_BYTES`].
const PART_BYTES: usize = 8 << 20;
const WHOLE_BYTES: u64 = 16 << 20;

/// The folder of a collected list's key (`a/b/urls.list` → `a/b/`).
pub fn list_folder(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// The name of a collected list's key (`a/b/urls.list` → `urls.list`).
pub fn list_name(key: &str) -> &str {
    key.rfind('/').map_or(key, |i| &key[i + 1..])
}

/// One page read.
#[derive(Debug, PartialEq)]
pub struct Page {
    /// Its items as lines of the list, each ending in `\n`.
    pub lines: String,
    pub items: u64,
    /// The next page; None at the end.
    pub next: Option<Url>,
}

/// What the page `body` at `url` (with its `Link` header) holds, and where the next one is.
/// An empty page is the end, whatever the pagination says.
pub fn read_page(
    cfg: &CollectConfig,
    url: &Url,
    body: &Value,
    link: Option<&str>,
) -> Result<Page, String> {
    let items = body
        .pointer(&cfg.items)
        .ok_or_else(|| format!("the page has nothing at items {:?}", cfg.items))?
        .as_array()
        .ok_or_else(|| format!("items {:?} is not an array", cfg.items))?;
    let keyed = cfg.fields.key.is_some();
    let mut lines = String::new();
    for (i, item) in items.iter().enumerate() {
        let line = item_line(cfg, item, url, keyed).map_err(|why| format!("item {i}: {why}"))?;
        lines.push_str(&line);
        lines.push('\n');
    }
    let n = items.len() as u64;
    let next = if n == 0 {
        None
    } else {
        next_page(cfg, url, body, link, n)?
    };
    if next.as_ref() == Some(url) {
        return Err("the next page is this page again".into());
    }
    Ok(Page {
        lines,
        items: n,
        next,
    })
}

/// The text at `pointer` in `item`: a string, or a number as written; None when absent,
/// null or empty.
fn text_at(item: &Value, pointer: &str) -> Option<String> {
    match item.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn item_line(cfg: &CollectConfig, item: &Value, page: &Url, keyed: bool) -> Result<String, String> {
    let f = &cfg.fields;
    let raw = text_at(item, &f.url).ok_or_else(|| format!("no URL at {:?}", f.url))?;
    let url = page
        .join(&raw)
        .map_err(|e| format!("the URL {:?} is not a URL: {e}", loggable_text(&raw)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the URL {} is not http(s)", loggable(&url)));
    }
    if keyed {
        let key = f.key.as_deref().and_then(|p| text_at(item, p));
        if key.as_deref().is_some_and(|k| k.contains(['\n', '\r'])) {
            return Err("the key holds a line break".into());
        }
        return Ok(format!(
            "{},{}",
            csv_field(url.as_str()),
            csv_field(key.as_deref().unwrap_or(""))
        ));
    }
    let size = match f.size.as_deref().and_then(|p| text_at(item, p)) {
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| format!("the size {s:?} is not a number of bytes"))?
            .to_string(),
        None => String::new(),
    };
    let md5 = match f.md5.as_deref().and_then(|p| text_at(item, p)) {
        Some(m) => md5_base64(&m)?,
        None => String::new(),
    };
    Ok(match (size.is_empty(), md5.is_empty()) {
        (true, true) => url.to_string(),
        (_, true) => format!("{url}\t{size}"),
        _ => format!("{url}\t{size}\t{md5}"),
    })
}

fn loggable_text(raw: &str) -> String {
    ferry_core::stores::loggable_url(raw)
}

/// An MD5 as base64 (the Tsv form), from base64 or 32 hex digits.
fn md5_base64(text: &str) -> Result<String, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = if text.len() == 32 {
        hex::decode(text).map_err(|_| format!("the MD5 {text:?} is not hex"))?
    } else {
        b64.decode(text)
            .map_err(|_| format!("the MD5 {text:?} is neither base64 nor hex"))?
    };
    if bytes.len() != 16 {
        return Err(format!("the MD5 {text:?} is not 16 bytes"));
    }
    Ok(b64.encode(bytes))
}

/// A field of a `Csv` line, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn next_page(
    cfg: &CollectConfig,
    url: &Url,
    body: &Value,
    link: Option<&str>,
    items: u64,
) -> Result<Option<Url>, String> {
    Ok(match &cfg.pagination {
        Pagination::Cursor(c) => {
            text_at(body, &c.from).map(|cursor| with_param(url, &c.param, &cursor))
        }
        Pagination::Page(p) => {
            let now = number_param(url, &p.param)?.unwrap_or(p.start);
            Some(with_param(url, &p.param, &(now + 1).to_string()))
        }
        Pagination::Offset(o) => {
            let now = number_param(url, &o.param)?.unwrap_or(0);
            Some(with_param(url, &o.param, &(now + items).to_string()))
        }
        Pagination::LinkHeader => match link.and_then(link_next) {
            Some(next) => Some(
                url.join(&next)
                    .map_err(|e| format!("the Link header's next page is not a URL: {e}"))?,
            ),
            None => None,
        },
        Pagination::NextUrl(pointer) => match text_at(body, pointer) {
            Some(next) => Some(
                url.join(&next)
                    .map_err(|e| format!("the next page at {pointer:?} is not a URL: {e}"))?,
            ),
            None => None,
        },
    })
}

/// The value of query parameter `name` of `url` as a number.
fn number_param(url: &Url, name: &str) -> Result<Option<u64>, String> {
    match url.query_pairs().find(|(k, _)| k == name) {
        Some((_, v)) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("the query parameter {name}={v:?} is not a number")),
        None => Ok(None),
    }
}

/// `url` with query parameter `name` set to `value` (replaced where it was, else added).
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let mut next = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = next.query_pairs_mut();
        q.clear();
        let mut set = false;
        for (k, v) in &pairs {
            if k == name {
                if !set {
                    q.append_pair(k, value);
                    set = true;
                }
            } else {
                q.append_pair(k, v);
            }
        }
        if !set {
            q.append_pair(name, value);
        }
    }
    next
}

/// The target of the `rel="next"` link of a `Link` header (RFC 8288).
pub fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
        let params = &rest[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_string());
        }
        rest = &rest[params_end..];
    }
    None
}

/// The checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
struct State {
    /// The settings it was made with: another spec starts over.
    config: String,
    /// The page to read next; None when there is none.
    next: Option<String>,
    pages: u64,
    urls: u64,
    /// Chunks written (`chunk-000001` ...).
    chunks: u32,
    /// Bytes in the chunks.
    bytes: u64,
    done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

impl State {
    fn progress(&self) -> CollectProgress {
        CollectProgress {
            pages: self.pages,
            urls: self.urls,
            done: self.done,
            stopped: self.stopped.clone(),
            list: None,
        }
    }
}

fn chunk_name(n: u32) -> String {
    format!("chunk-{n:06}")
}

/// The collector of one job.
pub struct Collector {
    client: Client,
    cfg: CollectConfig,
    /// The collector's folder in the report location.
    folder: Arc<dyn Sink>,
    retry: RetryPolicy,
    pace: Option<TokenBucket>,
}

impl Collector {
    /// `list` gives the guard and the headers (`secrets`, with their prefix); `folder` is
    /// where the list, its chunks and checkpoint go.
    pub fn new(
        list: &UrlListConfig,
        cfg: &CollectConfig,
        secrets: &SideSecrets,
        folder: Arc<dyn Sink>,
        retry: RetryPolicy,
    ) -> Result<Self, TransferError> {
        let client = Client::new(list, secrets, Arc::new(Limits::unlimited()))?;
        Ok(Collector {
            client,
            cfg: cfg.clone(),
            folder,
            retry,
            pace: (cfg.requests_per_second > 0)
                .then(|| TokenBucket::new(cfg.requests_per_second as f64)),
        })
    }

    /// Collects the list (or goes on from the checkpoint), calling `progress` after each
    /// page. Returns what was done once [`COLLECTED_LIST`] is complete.
    pub async fn run(
        &self,
        progress: &(dyn Fn(&CollectProgress) + Send + Sync),
    ) -> Result<CollectProgress, TransferError> {
        let config = serde_json::to_string(&self.cfg).unwrap_or_default();
        let mut saved = match self.load().await? {
            Some(s) if s.config == config => s,
            Some(_) => {
                tracing::info!("the collector's settings changed: collecting again");
                self.fresh(config)
            }
            None => self.fresh(config),
        };
        if saved.done && self.folder.head(COLLECTED_LIST).await?.is_some() {
            tracing::info!(
                pages = saved.pages,
                urls = saved.urls,
                "the URL list was collected before"
            );
            return Ok(saved.progress());
        }
        if saved.pages > 0 && !saved.done {
            tracing::info!(
                pages = saved.pages,
                urls = saved.urls,
                "the collector goes on from its checkpoint"
            );
        }
        let mut live = saved.clone();
        let mut lines = String::new();
        let mut since = Instant::now();
        while !saved.done {
            let next = match &live.next {
                Some(n) if self.cfg.max_pages > 0 && live.pages >= self.cfg.max_pages => {
                    tracing::info!(max_pages = self.cfg.max_pages, next = %loggable_text(n), "maxPages reached");
                    live.stopped = Some(format!(
                        "stopped at maxPages ({}) with pages left",
                        self.cfg.max_pages
                    ));
                    None
                }
                Some(n) => Some(Url::parse(n).map_err(|e| {
                    TransferError::new(FailureClass::InvalidRequest, format!("{n}: {e}")).fatal()
                })?),
                None => None,
            };
            match next {
                Some(url) => {
                    let page = self.page(&url).await?;
                    lines.push_str(&page.lines);
                    live.pages += 1;
                    live.urls += page.items;
                    live.next = page.next.map(|u| u.to_string());
                    progress(&live.progress());
                }
                None => live.next = None,
            }
            let end = live.next.is_none();
            if end || since.elapsed() >= CHECKPOINT_EVERY || lines.len() >= CHUNK_BYTES {
                if !lines.is_empty() {
                    live.chunks += 1;
                    live.bytes += lines.len() as u64;
                    let body = Bytes::from(std::mem::take(&mut lines));
                    self.put(&chunk_name(live.chunks), body).await?;
                }
                if end {
                    self.join(&live).await?;
                    live.done = true;
                }
                self.save(&live).await?;
                saved = live.clone();
                since = Instant::now();
            }
        }
        tracing::info!(
            pages = saved.pages,
            urls = saved.urls,
            stopped = saved
                .stopped
                .as_deref()
                .unwrap_or("at the end of the pages"),
            "URL list collected"
        );
        let done = saved.progress();
        progress(&done);
        Ok(done)
    }

    fn fresh(&self, config: String) -> State {
        State {
            config,
            next: Some(self.cfg.url.clone()),
            ..Default::default()
        }
    }

    /// One page, with retries (429/503 after their `Retry-After`, 5xx, resets).
    async fn page(&self, url: &Url) -> Result<Page, TransferError> {
        let what = format!("GET {}", loggable(url));
        let (body, link) = with_retry(&self.retry, "collect page", |_| async {
            if let Some(p) = &self.pace {
                p.take(1.0).await;
            }
            let mut accept = HeaderMap::new();
            accept.insert(ACCEPT, HeaderValue::from_static("application/json"));
            let mut resp = self.client.send(Method::GET, url, &accept).await?;
            let link = resp
                .headers()
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            let mut body = Vec::new();
            while let Some(c) = resp
                .chunk()
                .await
                .map_err(|e| super::client::transport_error(&what, &e))?
            {
                if body.len() + c.len() > MAX_PAGE_BYTES {
                    return Err(TransferError::new(
                        FailureClass::InvalidRequest,
                        format!("{what}: the page is larger than {MAX_PAGE_BYTES} bytes"),
                    )
                    .retryable(false));
                }
                body.extend_from_slice(&c);
            }
            Ok((body, link))
        })
        .await
        .map_err(|mut e| {
            e.message = format!("collecting the URL list: {}", e.message);
            e
        })?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            TransferError::new(
                FailureClass::InvalidRequest,
                format!("collecting the URL list: {what}: the page is not JSON: {e}"),
            )
            .fatal()
        })?;
        let link = (!link.is_empty()).then_some(link);
        read_page(&self.cfg, url, &value, link.as_deref()).map_err(|why| {
            TransferError::new(
                FailureClass::InvalidRequest,
                format!("collecting the URL list: {what}: {why}"),
            )
            .fatal()
        })
    }

    async fn load(&self) -> Result<Option<State>, TransferError> {
        let Some(bytes) = self.read(STATE).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    async fn save(&self, s: &State) -> Result<(), TransferError> {
        let body = serde_json::to_vec(s).expect("a state serializes");
        self.put(STATE, Bytes::from(body)).await
    }

    async fn put(&self, name: &str, body: Bytes) -> Result<(), TransferError> {
        let md5 = md5_of(&body);
        let meta = ObjectMeta::default();
        with_retry(&self.retry, "collect write", |_| {
            self.folder.put(name, body.clone(), &meta, Some(&md5))
        })
        .await
        .map(|_| ())
    }

    /// The whole object `name`, or None.
    async fn read(&self, name: &str) -> Result<Option<Bytes>, TransferError> {
        let Some((info, _)) = self.folder.head(name).await? else {
            return Ok(None);
        };
        let body = with_retry(&self.retry, "collect read", |_| {
            self.folder.get(
                name,
                0,
                info.size,
                true,
                info.etag.as_deref(),
                Buffer::unbudgeted(info.size),
            )
        })
        .await?;
        Ok(Some(body.bytes))
    }

    /// Joins the header and the chunks of `s` into [`COLLECTED_LIST`].
    async fn join(&self, s: &State) -> Result<(), TransferError> {
        let header = match format_of(&self.cfg) {
            UrlListFormat::Tsv => format!("{TSV_HEADER}\n"),
            _ => String::new(),
        };
        let size = header.len() as u64 + s.bytes;
        let meta = ObjectMeta {
            content_type: Some("text/plain; charset=utf-8".into()),
            ..Default::default()
        };
        let chunk = |n: u32| async move {
            self.read(&chunk_name(n)).await?.ok_or_else(|| {
                TransferError::new(
                    FailureClass::SourceVanished,
                    format!(
                        "collecting the URL list: the chunk {} is gone from {}",
                        chunk_name(n),
                        self.folder.describe()
                    ),
                )
                .fatal()
            })
        };
        let mut buf = header.into_bytes();
        if size <= WHOLE_BYTES {
            for n in 1..=s.chunks {
                buf.extend_from_slice(&chunk(n).await?);
            }
            return self.put(COLLECTED_LIST, Bytes::from(buf)).await;
        }
        let up = self
            .folder
            .create_upload(COLLECTED_LIST, &meta, size)
            .await?;
        let result = async {
            let (mut etags, mut offset) = (Vec::new(), 0u64);
            for n in 1..=s.chunks {
                buf.extend_from_slice(&chunk(n).await?);
                let last = n == s.chunks;
                while buf.len() >= PART_BYTES || (last && !buf.is_empty()) {
                    let take = if last && buf.len() < 2 * PART_BYTES {
                        buf.len()
                    } else {
                        PART_BYTES
                    };
                    let part = Bytes::from(buf.drain(..take).collect::<Vec<u8>>());
                    let md5 = md5_of(&part);
                    let number = etags.len() as i32 + 1;
                    let len = part.len() as u64;
                    let etag = with_retry(&self.retry, "collect part", |_| {
                        self.folder
                            .upload_part(&up, number, offset, part.clone(), Some(&md5))
                    })
                    .await?;
                    etags.push(etag);
                    offset += len;
                }
            }
            self.folder.complete_upload(&up, etags, size, &meta).await
        }
        .await;
        if result.is_err() {
            self.folder.abort_upload(&up).await;
        }
        result.map(|_| ())
    }
}

/// Collects the list of `plan`'s `collect` source into its report location, in the folder
/// [`COLLECT_FOLDER`] of the job's report folder (of its first attempt, so a retry finds it),
/// and returns the source that reads it (a [`UrlListLocation::Collected`] list in the format
/// the collector wrote) with what was done. The report location must be a bucket or a
/// directory.
pub async fn collect_plan(
    plan: &JobPlan,
    credentials: &JobCredentials,
    progress: &(dyn Fn(&CollectProgress) + Send + Sync),
) -> Result<(StoreConfig, CollectProgress), TransferError> {
    let t = &plan.transfer;
    let (StoreConfig::UrlList(list), Some(cfg)) = (&t.source, collect_of(t)) else {
        return Err(TransferError::new(
            FailureClass::InvalidRequest,
            "the source has no URL list to collect",
        )
        .fatal());
    };
    let at = t.report_store();
    if !matches!(at, StoreConfig::S3(_) | StoreConfig::Filesystem(_)) {
        return Err(TransferError::new(
            FailureClass::InvalidRequest,
            format!(
                "collecting the URL list: the report location ({}) cannot hold the collected list: \
                 it must be a bucket or a directory",
                at.describe()
            ),
        )
        .fatal());
    }
    let secrets = if t.report.is_some() {
        &credentials.report
    } else {
        &credentials.destination
    };
    let retry = RetryPolicy::default();
    let root = super::super::open(at, secrets, Arc::new(Limits::unlimited()), retry.clone())
        .await?
        .sink()?;
    let key = collected_list_key(plan);
    let collector = Collector::new(
        list,
        cfg,
        &credentials.source,
        root.folder(list_folder(&key)),
        retry,
    )?;
    let mut done = collector.run(progress).await?;
    done.list = Some(at.location_of(&key));
    let source = collected_source(plan).expect("a collect source");
    Ok((source, done))
}

fn md5_of(b: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::collect::{CollectFields, CursorPagination, OffsetPagination, PagePagination};
    use serde_json::json;

    fn cfg(pagination: Pagination) -> CollectConfig {
        CollectConfig {
            url: "https://api.example.com/v1/files?per_page=2".into(),
            items: "/data".into(),
            fields: CollectFields {
                url: "/url".into(),
                size: Some("/bytes".into()),
                md5: Some("/md5".into()),
                key: None,
            },
            pagination,
            requests_per_second: 0,
            max_pages: 0,
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn items_become_tsv_lines() {
        let c = cfg(Pagination::LinkHeader);
        let body = json!({"data": [
            {"url": "https://cdn.example.com/a.jpg", "bytes": 3, "md5": "900150983cd24fb0d6963f7d28e17f72"},
            {"url": "/b.jpg", "bytes": "5"},
            {"url": "https://cdn.example.com/c.jpg", "md5": "kAFQmDzST7DWlj99KOF/cg=="},
            {"url": "https://cdn.example.com/d.jpg", "bytes": null},
        ]});
        let p = read_page(&c, &url(&c.url), &body, None).unwrap();
        assert_eq!(
            p.lines,
            "https://cdn.example.com/a.jpg\t3\tkAFQmDzST7DWlj99KOF/cg==\n\
             https://api.example.com/b.jpg\t5\n\
             https://cdn.example.com/c.jpg\t\tkAFQmDzST7DWlj99KOF/cg==\n\
             https://cdn.example.com/d.jpg\n"
        );
        assert_eq!((p.items, p.next), (4, None));
        for bad in [
            json!({"data": [{"bytes": 3}]}),
            json!({"data": [{"url": "ftp://h/a"}]}),
            json!({"data": [{"url": "https://h/a", "bytes": -1}]}),
            json!({"data": [{"url": "https://h/a", "md5": "abc"}]}),
            json!({"data": {"url": "https://h/a"}}),
            json!({"items": []}),
        ] {
            assert!(read_page(&c, &url(&c.url), &bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn keyed_items_become_csv_lines() {
        let mut c = cfg(Pagination::LinkHeader);
        c.fields.key = Some("/path".into());
        let body = json!({"data": [
            {"url": "https://h/a", "path": "x/a,b.jpg"},
            {"url": "https://h/b", "path": "say \"hi\""},
            {"url": "https://h/c"},
        ]});
        let p = read_page(&c, &url(&c.url), &body, None).unwrap();
        assert_eq!(
            p.lines,
            "https://h/a,\"x/a,b.jpg\"\nhttps://h/b,\"say \"\"hi\"\"\"\nhttps://h/c,\n"
        );
        assert_eq!(format_of(&c), UrlListFormat::Csv);
        let bad = json!({"data": [{"url": "https://h/a", "path": "a\nb"}]});
        assert!(read_page(&c, &url(&c.url), &bad, None).is_err());
    }

    #[test]
    fn each_pagination_finds_the_next_page_and_an_empty_page_ends() {
        let one = json!({"data": [{"url": "https://h/a"}, {"url": "https://h/b"}],
                         "meta": {"next": "c2"}, "links": {"next": "/v1/files?after=b"}});
        let empty = json!({"data": [], "meta": {"next": "c3"}});
        let next = |p: Pagination, at: &str, body: &Value, link: Option<&str>| {
            read_page(&cfg(p), &url(at), body, link)
                .unwrap()
                .next
                .map(|u| u.to_string())
        };
        let cursor = Pagination::Cursor(CursorPagination {
            from: "/meta/next".into(),
            param: "cursor".into(),
        });
        let base = "https://api.example.com/v1/files?per_page=2";
        assert_eq!(
            next(cursor.clone(), base, &one, None).as_deref(),
            Some("https://api.example.com/v1/files?per_page=2&cursor=c2")
        );
        assert_eq!(
            next(
                cursor.clone(),
                "https://api.example.com/v1/files?cursor=c1&per_page=2",
                &one,
                None
            )
            .as_deref(),
            Some("https://api.example.com/v1/files?cursor=c2&per_page=2")
        );
        let last = json!({"data": [{"url": "https://h/a"}], "meta": {"next": null}});
        assert_eq!(next(cursor.clone(), base, &last, None), None);
        assert_eq!(next(cursor, base, &empty, None), None);
        let page = Pagination::Page(PagePagination {
            param: "page".into(),
            start: 1,
        });
        assert_eq!(
            next(page.clone(), base, &one, None).as_deref(),
            Some("https://api.example.com/v1/files?per_page=2&page=2")
        );
        assert_eq!(
            next(page.clone(), &format!("{base}&page=7"), &one, None).as_deref(),
            Some("https://api.example.com/v1/files?per_page=2&page=8")
        );
        assert_eq!(next(page, base, &empty, None), None);
        let offset = Pagination::Offset(OffsetPagination {
            param: "offset".into(),
        });
        assert_eq!(
            next(offset.clone(), &format!("{base}&offset=4"), &one, None).as_deref(),
            Some("https://api.example.com/v1/files?per_page=2&offset=6")
        );
        assert!(read_page(&cfg(offset), &url(&format!("{base}&offset=x")), &one, None).is_err());
        let link = r#"<https://api.example.com/v1/files?page=1>; rel="first", <https://api.example.com/v1/files?page=3>; rel="next""#;
        assert_eq!(
            next(Pagination::LinkHeader, base, &one, Some(link)).as_deref(),
            Some("https://api.example.com/v1/files?page=3")
        );
        assert_eq!(next(Pagination::LinkHeader, base, &one, None), None);
        assert_eq!(
            next(Pagination::NextUrl("/links/next".into()), base, &one, None).as_deref(),
            Some("https://api.example.com/v1/files?after=b")
        );
        // A next page that is the same page would loop: refused.
        let same = json!({"data": [{"url": "https://h/a"}], "links": {"next": base}});
        assert!(read_page(
            &cfg(Pagination::NextUrl("/links/next".into())),
            &url(base),
            &same,
            None
        )
        .is_err());
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            link_next(r#"<a>; rel="prev", <b?x=1,2>; rel="next last""#).as_deref(),
            Some("b?x=1,2")
        );
        assert_eq!(link_next("<a>; rel=next").as_deref(), Some("a"));
        assert_eq!(
            link_next(r#"<n>; rel="next", <f>; rel="first""#).as_deref(),
            Some("n")
        );
        assert_eq!(link_next(r#"<a>; rel="prev""#), None);
        assert_eq!(link_next("garbage"), None);
    }

    #[test]
    fn collected_list_keys() {
        assert_eq!(
            list_folder(".ferry/reports/a/collect/urls.list"),
            ".ferry/reports/a/collect/"
        );
        assert_eq!(list_name(".ferry/reports/a/collect/urls.list"), "urls.list");
    }

    /// A collector killed between pages goes on at its checkpoint: no line twice, none lost.
    #[tokio::test]
    async fn a_collector_stopped_midway_goes_on_without_duplicates() {
        use crate::stores::{MemoryStore, Source};
        use std::sync::atomic::{AtomicU32, Ordering};
        // A local API: page n (0..10) holds items n*3..n*3+3; each request is counted.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU32::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).await.unwrap_or(0) == 1
                    {
                        head.push(b[0]);
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&head);
                    let page: u64 = text
                        .split("page=")
                        .nth(1)
                        .and_then(|r| r.split([' ', '&']).next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let items: Vec<Value> = if page < 10 {
                        (page * 3..page * 3 + 3)
                            .map(|i| json!({"u": format!("http://127.0.0.1:{port}/f{i:03}")}))
                            .collect()
                    } else {
                        vec![]
                    };
                    let body = json!({ "items": items }).to_string();
                    let _ = conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        let c = CollectConfig {
            url: format!("http://127.0.0.1:{port}/api"),
            items: "/items".into(),
            fields: CollectFields {
                url: "/u".into(),
                ..Default::default()
            },
            pagination: Pagination::Page(PagePagination {
                param: "page".into(),
                start: 0,
            }),
            requests_per_second: 0,
            max_pages: 0,
        };
        let list = UrlListConfig {
            list: ferry_core::stores::UrlListLocation::Collect { collect: c.clone() },
            format: UrlListFormat::Auto,
            keys: Default::default(),
            requests_per_second_per_host: 0,
            allow_private_networks: true,
        };
        let store = MemoryStore::new();
        let folder: Arc<dyn Sink> = Arc::new(store.clone());
        // A first collector that stops (is dropped) after 4 pages.
        let first = Collector::new(
            &list,
            &c,
            &SideSecrets::default(),
            folder.clone(),
            RetryPolicy::default(),
        )
        .unwrap();
        let seen = Arc::new(AtomicU32::new(0));
        let pages = seen.clone();
        let stop = async {
            while seen.load(Ordering::SeqCst) < 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let count = move |p: &CollectProgress| pages.store(p.pages as u32, Ordering::SeqCst);
        tokio::select! {
            _ = first.run(&count) => panic!("ended"),
            _ = stop => {}
        }
        // The checkpoint of the last second: the stopped collector's last page is written
        // at most once.
        let second = Collector::new(
            &list,
            &c,
            &SideSecrets::default(),
            folder.clone(),
            RetryPolicy::default(),
        )
        .unwrap();
        let done = second.run(&|_| {}).await.unwrap();
        assert_eq!((done.pages, done.urls, done.done), (11, 30, true));
        let (info, _) = store.head(COLLECTED_LIST).await.unwrap().unwrap();
        let body = store
            .get(
                COLLECTED_LIST,
                0,
                info.size,
                true,
                None,
                Buffer::unbudgeted(info.size),
            )
            .await
            .unwrap()
            .bytes;
        let text = String::from_utf8(body.to_vec()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.remove(0), TSV_HEADER);
        let want: Vec<String> = (0..30)
            .map(|i| format!("http://127.0.0.1:{port}/f{i:03}"))
            .collect();
        assert_eq!(lines, want);
        // Collected: a third run reads no page.
        let before = hits.load(Ordering::SeqCst);
        let third = Collector::new(
            &list,
            &c,
            &SideSecrets::default(),
            folder,
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(third.run(&|_| {}).await.unwrap().urls, 30);
        assert_eq!(hits.load(Ordering::SeqCst), before);
    }
}
