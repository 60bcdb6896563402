//! A database table as a [`Source`]: rows read in short read-only transactions by keyset
//! pagination, one object per row; a key leads back to its row through the key template.

use std::any::Any;
use std::sync::Arc;

use futures::StreamExt;
use md5::{Digest, Md5};

use super::config::{Check, Checked, DbConfig};
use super::conn::{bind_id, end_transaction, on_pool, DbUrl, Pool, ValueRow};
use super::item::{judge, Item, RowFailure};
use super::listing::{failure_of, produce, Entry};
use super::ranges::{int_bounds, ranges, sample_bounds};
use super::readahead::{weight, Payload, ReadAhead};
use super::row::{Id, RawRow, Value};
use super::sql::{Columns, IdKind, Queries};
use super::template::Template;
use super::writeback::{Queue, Verified};
use crate::error::TransferError;
use crate::limit::{Buffer, Limits};
use crate::report::SourceJournal;
use crate::stores::{
    channel_stream, Body, Listing, ObjectInfo, ObjectMeta, Sink, Source, SourceCaps, TakeBack,
};
use ferry_core::{FailureClass, ShardRange};

/// Entries a listing holds ready for the engine.
const LISTING_QUEUE: usize = 1024;
/// Ids drawn per shard to place the boundaries of text ids.
const SAMPLES_PER_SHARD: i64 = 64;

/// A table of a SQLite file or a PostgreSQL database. Clones share the connections.
#[derive(Clone)]
pub struct DbStore {
    inner: Arc<Inner>,
}

struct Inner {
    checked: Checked,
    url: DbUrl,
    reader: Pool,
    kind: IdKind,
    queries: Queries,
    /// The one read-write connection write-back uses (the reader's are read-only).
    writer: Option<Pool>,
    /// Verified objects waiting to be written back.
    written_back: Queue,
    /// Rows the listing has decoded, kept for their copies.
    read_ahead: Arc<ReadAhead>,
}

impl std::fmt::Debug for DbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Reads a row's columns into a [`RawRow`]; an id that is neither integer nor text is a
/// configuration error.
pub(crate) fn raw_row<R: ValueRow>(
    r: &R,
    key_columns: usize,
) -> Result<Option<RawRow>, sqlx::Error> {
    let id = r
        .value(Columns::ID)?
        .into_id()
        .map_err(|m| sqlx::Error::ColumnDecode {
            index: "idColumn".into(),
            source: m.into(),
        })?;
    let is_text = r.is_text(Columns::DATA)?;
    let data = match r.value(Columns::DATA)? {
        Value::Null => return Ok(None),
        Value::Bytes(b) => b,
        Value::Text(t) => t.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::Real(x) => x.to_string().into_bytes(),
        Value::Time(t) => t.to_rfc3339().into_bytes(),
    };
    let columns = (0..key_columns)
        .map(|i| r.value(Columns::KEY_COLUMNS + i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(RawRow {
        id,
        data,
        data_is_text: is_text,
        content_type: r.value(Columns::CONTENT_TYPE)?,
        modified: r.value(Columns::MODIFIED)?,
        columns,
    }))
}

impl DbStore {
    /// Opens `config`'s table at `url` (a secret: never shown but redacted), reading ahead
    /// within a budget of its own ([`Limits::unlimited`]). See [`DbStore::open_within`].
    pub async fn open(config: &DbConfig, url: &str) -> Result<DbStore, TransferError> {
        DbStore::open_within(config, url, Arc::new(Limits::unlimited())).await
    }

    /// Opens `config`'s table at `url` (a secret: never shown but redacted). Reads the first
    /// id to learn whether ids are integers or text; writes nothing. Rows read ahead for the
    /// copies are held in `limits`' memory budget (a quarter of it at most).
    pub async fn open_within(
        config: &DbConfig,
        url: &str,
        limits: Arc<Limits>,
    ) -> Result<DbStore, TransferError> {
        let checked = config.check().map_err(|e| {
            TransferError::new(
                FailureClass::InvalidRequest,
                format!("database source: {e}"),
            )
            .fatal()
        })?;
        let url = DbUrl::parse(url)?;
        let reader = Pool::open(&url, false)?;
        let probe_queries = Queries::new(&checked, url.dialect, IdKind::Int);
        let first: Option<Value> = on_pool!(&reader, p => {
            let row = sqlx::query(&probe_queries.first_id)
                .fetch_optional(p)
                .await
                .map_err(|e| url.error("reading the first id", &e))?;
            row.map(|r| r.value(0)).transpose().map_err(|e| url.error("reading the first id", &e))?
        });
        let kind = match first {
            Some(Value::Text(_)) => IdKind::Text,
            Some(Value::Int(_)) | None => IdKind::Int,
            Some(other) => {
                return Err(TransferError::new(
                    FailureClass::InvalidRequest,
                    format!(
                        "idColumn {}: {}",
                        config.id_column,
                        other.into_id().unwrap_err()
                    ),
                )
                .fatal())
            }
        };
        let writer = match &checked.write_back {
            None => None,
            Some(_) => Some(Pool::open(&url, true)?),
        };
        let queries = Queries::new(&checked, url.dialect, kind);
        Ok(DbStore {
            inner: Arc::new(Inner {
                checked,
                url,
                reader,
                kind,
                queries,
                writer,
                written_back: Queue::new(),
                read_ahead: ReadAhead::new(limits),
            }),
        })
    }

    pub fn kind(&self) -> IdKind {
        self.inner.kind
    }

    pub fn template(&self) -> &Template {
        &self.inner.checked.key
    }

    pub(crate) fn checked(&self) -> &Checked {
        &self.inner.checked
    }

    pub(crate) fn queries(&self) -> &Queries {
        &self.inner.queries
    }

    pub(crate) fn url(&self) -> &DbUrl {
        &self.inner.url
    }

    pub(crate) fn writer(&self) -> Option<&Pool> {
        self.inner.writer.as_ref()
    }

    /// The rows read ahead for the copies.
    pub fn read_ahead(&self) -> &ReadAhead {
        &self.inner.read_ahead
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.inner.reader.close().await;
        if let Some(w) = &self.inner.writer {
            w.close().await;
        }
    }

    /// The smallest and largest id (None for an empty table).
    pub async fn id_bounds(&self) -> Result<Option<(Id, Id)>, TransferError> {
        let q = &self.inner.queries.bounds;
        let url = &self.inner.url;
        let (lo, hi) = on_pool!(&self.inner.reader, p => {
            let row = sqlx::query(q).fetch_one(p).await.map_err(|e| url.error("reading the id range", &e))?;
            (row.value(0), row.value(1))
        });
        let err = |e: sqlx::Error| url.error("reading the id range", &e);
        match (lo.map_err(err)?, hi.map_err(err)?) {
            (Value::Null, _) | (_, Value::Null) => Ok(None),
            (lo, hi) => Ok(Some((
                lo.into_id().map_err(|m| invalid_id(&m))?,
                hi.into_id().map_err(|m| invalid_id(&m))?,
            ))),
        }
    }

    /// Whether a listing can follow the ids: the template keeps their order and (integers)
    /// every id fits its width.
    pub async fn ordered(&self) -> Result<bool, TransferError> {
        if !self.template().ordered(self.kind()) {
            return Ok(false);
        }
        if self.kind() == IdKind::Text {
            return Ok(true);
        }
        let Some((Id::Int(lo), Id::Int(hi))) = self.id_bounds().await? else {
            return Ok(true);
        };
        let fits = |i: i64| self.template().bound(&Id::Int(i)).is_ok();
        let ok = fits(lo) && fits(hi);
        if !ok {
            tracing::warn!(
                min = lo,
                max = hi,
                "ids do not all fit the key's zero-padded width: rows are sorted by key instead"
            );
        }
        Ok(ok)
    }

    /// Reads one batch of rows after `after` (from the first without), in one short read-only
    /// transaction, each row judged and hashed as it arrives. With `keep`, the decoded bytes
    /// of the objects are kept (counted in its budget) up to its
    /// [`ReadAhead::allowance`], the rest dropped at once; without, all are dropped.
    /// Returns the entries and the id to continue after, None after the last batch.
    pub async fn read_batch(
        &self,
        after: Option<&Id>,
        keep: Option<&ReadAhead>,
    ) -> Result<(Vec<(Entry, Option<Payload<Buffer>>)>, Option<Id>), TransferError> {
        let q = &self.inner.queries;
        let url = &self.inner.url;
        let c = &self.inner.checked;
        let ncols = c.key_columns.len();
        let err = |e: sqlx::Error| url.error("reading rows", &e);
        let mut entries = Vec::new();
        let mut kept = 0u64;
        let allowance = keep.map_or(0, |k| k.allowance());
        let mut rows = 0u32;
        let mut last = None;
        on_pool!(&self.inner.reader, p => {
            let mut conn = p.acquire().await.map_err(err)?;
            sqlx::query(q.begin_read).execute(&mut *conn).await.map_err(err)?;
            let query = match after {
                None => sqlx::query(&q.batch_first),
                Some(id) => bind_id!(sqlx::query(&q.batch_after), id),
            };
            let result: Result<(), sqlx::Error> = async {
                let mut stream = query.fetch(&mut *conn);
                while let Some(row) = stream.next().await {
                    let row = row?;
                    rows += 1;
                    if let Some(raw) = raw_row(&row, ncols)? {
                        last = Some(raw.id.clone());
                        let (entry, payload) = Entry::with_payload(judge(c, raw));
                        let payload = match (keep, payload) {
                            (Some(k), Some(p)) => {
                                let w = weight(&entry.key, p.bytes.capacity());
                                if kept + w <= allowance {
                                    let adopted = k.adopt(p);
                                    kept += adopted.as_ref().map_or(0, |_| w);
                                    adopted
                                } else {
                                    None
                                }
                            }
                            _ => None,
                        };
                        entries.push((entry, payload));
                    }
                }
                Ok(())
            }
            .await;
            end_transaction!(conn, result, err);
        });
        let more = rows >= c.config.batch_size;
        Ok((entries, if more { last } else { None }))
    }

    /// The row `key` was made from, judged: its object, or its failure. None when no row
    /// (meeting the condition, with a payload) has this key.
    pub async fn find(&self, key: &str) -> Result<Option<Result<Item, RowFailure>>, TransferError> {
        for id in self.candidate_ids(key) {
            if let Some(judged) = self.row(&id).await? {
                let k = match &judged {
                    Ok(item) => &item.key,
                    Err(f) => &f.key,
                };
                if k == key {
                    return Ok(Some(judged));
                }
            }
        }
        Ok(None)
    }

    /// The ids whose rows may have `key`, in id order (the first row of a key is its row).
    pub(crate) fn candidate_ids(&self, key: &str) -> Vec<Id> {
        let mut ids: Vec<Id> = self
            .template()
            .id_candidates(key)
            .into_iter()
            .filter_map(|s| match self.kind() {
                IdKind::Int => s.parse().ok().map(Id::Int),
                IdKind::Text => Some(Id::Text(s)),
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The row of `id`, judged.
    async fn row(&self, id: &Id) -> Result<Option<Result<Item, RowFailure>>, TransferError> {
        let q = &self.inner.queries.by_id;
        let url = &self.inner.url;
        let c = &self.inner.checked;
        let err = |e: sqlx::Error| url.error("reading a row", &e);
        let raw = on_pool!(&self.inner.reader, p => {
            let query = bind_id!(sqlx::query(q), id);
            match query.fetch_optional(p).await.map_err(err)? {
                Some(row) => raw_row(&row, c.key_columns.len()).map_err(err)?,
                None => None,
            }
        });
        Ok(raw.map(|r| judge(c, r)))
    }

    /// Shard ranges over ids when keys sort as ids (min/max strides for integers, sampled
    /// quantiles for text); None when they do not (the listing must then be sampled).
    pub async fn shard_ranges(
        &self,
        shards: u32,
    ) -> Result<Option<Vec<ShardRange>>, TransferError> {
        if shards <= 1 {
            return Ok(Some(ranges(&[])));
        }
        if !self.ordered().await? {
            return Ok(None);
        }
        let t = self.template();
        let bounds: Vec<Id> = match self.kind() {
            IdKind::Int => match self.id_bounds().await? {
                Some((Id::Int(lo), Id::Int(hi))) => int_bounds(lo, hi, shards)
                    .into_iter()
                    .map(Id::Int)
                    .collect(),
                _ => Vec::new(),
            },
            IdKind::Text => {
                let mut sample = self
                    .sample_ids(SAMPLES_PER_SHARD * i64::from(shards))
                    .await?;
                sample.sort();
                sample_bounds(&sample, shards)
            }
        };
        let keys = bounds
            .iter()
            .map(|b| t.bound(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| TransferError::new(FailureClass::Internal, m))?;
        if keys.is_empty() {
            return Ok(Some(ranges(&[])));
        }
        Ok(Some(ranges(&keys)))
    }

    /// Up to `n` ids drawn at random.
    async fn sample_ids(&self, n: i64) -> Result<Vec<Id>, TransferError> {
        let q = &self.inner.queries.sample;
        let url = &self.inner.url;
        let err = |e: sqlx::Error| url.error("sampling ids", &e);
        let values: Vec<Value> = on_pool!(&self.inner.reader, p => {
            let rows = sqlx::query(q).bind(n).fetch_all(p).await.map_err(err)?;
            rows.iter().map(|r| r.value(0)).collect::<Result<_, _>>().map_err(err)?
        });
        values
            .into_iter()
            .map(|v| v.into_id().map_err(|m| invalid_id(&m)))
            .collect()
    }
}

fn invalid_id(m: &str) -> TransferError {
    TransferError::new(FailureClass::InvalidRequest, format!("idColumn: {m}")).fatal()
}

/// The failure of a row as an error of a read.
fn row_error(f: RowFailure) -> TransferError {
    TransferError::new(f.class, f.message).retryable(false)
}

fn info_meta(item: &Item) -> (ObjectInfo, ObjectMeta) {
    let md5 = hex::encode(Md5::digest(&item.bytes));
    (
        ObjectInfo {
            key: item.key.clone(),
            size: item.bytes.len() as u64,
            modified: item.modified,
            etag: Some(md5),
            archived: false,
            invalid: None,
        },
        meta_of(item),
    )
}

fn meta_of(item: &Item) -> ObjectMeta {
    ObjectMeta {
        content_type: Some(item.content_type.clone()),
        modified: item.modified,
        ..ObjectMeta::default()
    }
}

impl DbStore {
    /// The body of `key` from the rows read ahead, when its listing kept it, the read is of
    /// the whole row and the row is the version `etag` names: the bytes the listing hashed,
    /// with that MD5 (neither read nor hashed again). Taken once: a retry reads the row.
    /// `all_of(size)`: whether the read asked for is the whole of an object of `size` bytes.
    fn read_ahead_body(
        &self,
        key: &str,
        etag: Option<&str>,
        all_of: impl Fn(u64) -> bool,
    ) -> Option<Body> {
        let p = self.inner.read_ahead.take(key)?;
        let same = etag.is_none_or(|e| e.eq_ignore_ascii_case(&hex::encode(p.md5)));
        if !(same && all_of(p.bytes.len() as u64)) {
            return None;
        }
        Some(Body {
            md5: Some(p.md5),
            meta: ObjectMeta {
                content_type: Some(p.content_type),
                modified: p.modified,
                ..ObjectMeta::default()
            },
            bytes: p.bytes.freeze(),
        })
    }
}

#[async_trait::async_trait]
impl Source for DbStore {
    fn describe(&self) -> String {
        format!(
            "the table {} of {}",
            self.inner.checked.config.table,
            self.inner.url.redacted()
        )
    }

    fn full_key(&self, key: &str) -> String {
        key.to_string()
    }

    fn caps(&self) -> SourceCaps {
        // The listed ETag is the MD5 of the decoded bytes, computed here.
        SourceCaps {
            md5_etags: true,
            ranged_reads: false,
        }
    }

    /// The listing the copies follow: rows listed as they are read are kept for them.
    fn list(&self, after: Option<String>, until: Option<String>) -> Listing {
        let (tx, rx) = tokio::sync::mpsc::channel(LISTING_QUEUE);
        tokio::spawn(produce(self.clone(), after, until, tx, true));
        channel_stream(rx)
    }

    /// A count (the planner's, the census): nothing is kept.
    fn list_keys(&self, after: Option<String>, until: Option<String>) -> Listing {
        let (tx, rx) = tokio::sync::mpsc::channel(LISTING_QUEUE);
        tokio::spawn(produce(self.clone(), after, until, tx, false));
        channel_stream(rx)
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError> {
        match self.find(key).await? {
            None => Ok(None),
            Some(Ok(item)) => Ok(Some(info_meta(&item))),
            Some(Err(f)) => Err(row_error(f)),
        }
    }

    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        whole: bool,
        etag: Option<&str>,
        mut buf: Buffer,
    ) -> Result<Body, TransferError> {
        let all_of = |size: u64| whole && offset == 0 && len == size;
        if let Some(body) = self.read_ahead_body(key, etag, all_of) {
            return Ok(body);
        }
        let item = match self.find(key).await? {
            None => {
                return Err(TransferError::new(
                    FailureClass::SourceVanished,
                    format!("the row of {key:?} is gone"),
                ))
            }
            Some(Err(f)) => return Err(row_error(f)),
            Some(Ok(item)) => item,
        };
        let size = item.bytes.len() as u64;
        let changed = || {
            TransferError::new(
                FailureClass::SourceVanished,
                format!("the row of {key:?} changed since it was listed"),
            )
            .changed()
        };
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= size && (!whole || len == size))
            .ok_or_else(changed)?;
        buf.extend_from_slice(&item.bytes[offset as usize..end as usize]);
        // Hashed once, from the bytes handed over: the row's MD5 when they are all of it.
        let all = offset == 0 && end == size;
        let md5: [u8; 16] = if all {
            Md5::digest(buf.as_ref()).into()
        } else {
            Md5::digest(&item.bytes).into()
        };
        if etag.is_some_and(|e| !e.eq_ignore_ascii_case(&hex::encode(md5))) {
            return Err(changed());
        }
        Ok(Body {
            bytes: buf.freeze(),
            meta: meta_of(&item),
            md5: all.then_some(md5),
        })
    }

    /// Reads the table, and with `writeBack` checks (writing nothing) that the rows may be
    /// updated.
    async fn probe(&self) -> Result<(), TransferError> {
        let q = &self.inner.queries.probe;
        let url = &self.inner.url;
        on_pool!(&self.inner.reader, p => {
            sqlx::query(q)
                .fetch_optional(p)
                .await
                .map_err(|e| url.error(&format!("reading {}", self.inner.checked.config.table), &e))?;
        });
        self.probe_write_back().await
    }

    /// A row that failed when listed fails with its own class (`InvalidData`,
    /// `DuplicateKey`).
    fn refuse(&self, info: &ObjectInfo) -> Option<TransferError> {
        failure_of(info)
    }

    async fn own_shard_ranges(
        &self,
        shards: u32,
    ) -> Result<Option<Vec<ShardRange>>, TransferError> {
        self.shard_ranges(shards).await
    }

    /// Noted for write-back (with `writeBack` only).
    fn verified(&self, key: &str, md5: &str) {
        if self.inner.writer.is_some() {
            self.inner.written_back.push(Verified {
                key: key.to_string(),
                md5: md5.to_string(),
            });
        }
    }

    /// Writes back what was noted, in transactions of `batchSize` rows, each journaled.
    async fn settle(&self, journal: Option<&SourceJournal>) -> Result<(), TransferError> {
        if self.inner.writer.is_none() {
            return Ok(());
        }
        let s = self.inner.written_back.flush(self, journal).await?;
        tracing::debug!(
            written = s.written,
            already_there = s.already_there,
            changed = s.changed,
            gone = s.gone,
            "write-back"
        );
        Ok(())
    }

    /// Sets back the write-back column of the rows the journals name ([`super::revert`]).
    async fn take_back(&self, folders: &[Arc<dyn Sink>]) -> Result<TakeBack, TransferError> {
        super::revert::take_back(self, folders).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
