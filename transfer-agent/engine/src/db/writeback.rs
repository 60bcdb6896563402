//! Write-back: after objects are verified at the destination, each row records where its
//! object is (`writeBack.column`), and optionally drops its payload (`clearData`). One write
//! transaction per batch; each row is locked (PostgreSQL `FOR UPDATE`, SQLite `BEGIN
//! IMMEDIATE`) and updated only if its payload still decodes to the bytes that were verified
//! (their MD5): a row changed during the copy is not written back. No other column is
//! touched; without `writeBack` nothing is ever written. Before each transaction commits,
//! the rows it changes, with the column's value before, are written down in the shard's
//! journal (`writeback-….jsonl`, [`WriteBackLine`]): what a rollback sets back
//! ([`super::revert`]).

use md5::{Digest, Md5};
use tokio::sync::Mutex;

use super::conn::{bind_id, end_transaction, on_pool, ValueRow};
use super::item::judge;
use super::row::{Id, Value};
use super::sql::Columns;
use super::store::{raw_row, DbStore};
use crate::error::TransferError;
use crate::report::SourceJournal;
use ferry_core::FailureClass;

/// The kind of the write-back's journal segments (`writeback-….jsonl`).
pub const JOURNAL: &str = "writeback";

/// One row changed by write-back, as its journal line.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriteBackLine {
    /// The object's key.
    pub key: String,
    pub id: Id,
    /// The write-back column's value before.
    pub before: Value,
    /// The value written.
    pub written: String,
    /// The payload was cleared too (`clearData`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleared: bool,
}

/// An object written and verified at the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub key: String,
    /// Hex MD5 of the bytes verified.
    pub md5: String,
}

/// What write-back did with one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The column was set (and the payload cleared, with `clearData`).
    Written,
    /// The column already held the value (a run repeated): nothing written.
    AlreadyThere,
    /// The payload is no longer the one copied: not written back.
    Changed,
    /// No row has this key any more (deleted, or no longer meeting the condition).
    Gone,
}

/// Counts of write-back outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub written: u64,
    pub already_there: u64,
    pub changed: u64,
    pub gone: u64,
}

impl Summary {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Written => self.written += 1,
            Outcome::AlreadyThere => self.already_there += 1,
            Outcome::Changed => self.changed += 1,
            Outcome::Gone => self.gone += 1,
        }
    }
}

impl DbStore {
    /// Writes back a batch of verified objects in one transaction, the rows it changes
    /// written down in `journal` before it commits; an outcome per object.
    pub async fn write_back(
        &self,
        done: &[Verified],
        journal: Option<&SourceJournal>,
    ) -> Result<Vec<Outcome>, TransferError> {
        let c = self.checked();
        let (Some(value), Some(update), Some(writer)) =
            (&c.write_back, &self.queries().update, self.writer())
        else {
            return Err(TransferError::new(
                FailureClass::InvalidRequest,
                "this database source has no writeBack",
            )
            .fatal());
        };
        let clear = c.config.write_back.as_ref().is_some_and(|w| w.clear_data);
        let q = self.queries();
        let url = self.url();
        let err = |e: sqlx::Error| url.error("writing back", &e);
        let ncols = c.key_columns.len();
        let mut out = Vec::with_capacity(done.len());
        let mut lines = Vec::new();
        on_pool!(writer, p => {
            let mut conn = p.acquire().await.map_err(err)?;
            sqlx::query(q.begin_write).execute(&mut *conn).await.map_err(err)?;
            let result: Result<(), sqlx::Error> = async {
                for v in done {
                    let mut outcome = Outcome::Gone;
                    for id in self.candidate_ids(&v.key) {
                        let query = bind_id!(sqlx::query(&q.lock_by_id), &id);
                        let Some(row) = query.fetch_optional(&mut *conn).await? else {
                            continue;
                        };
                        let current = row.value(Columns::KEY_COLUMNS + ncols)?;
                        let Some(raw) = raw_row(&row, ncols)? else { continue };
                        let item = match judge(c, raw) {
                            Ok(item) if item.key == v.key => item,
                            Err(f) if f.key == v.key => {
                                outcome = Outcome::Changed;
                                break;
                            }
                            // The row of this id now has another key (another type, say),
                            // unless another candidate's row has this one.
                            _ => {
                                outcome = Outcome::Changed;
                                continue;
                            }
                        };
                        let md5 = hex::encode(Md5::digest(&item.bytes));
                        let text = value.render(&v.key, &id);
                        outcome = if !md5.eq_ignore_ascii_case(&v.md5) {
                            Outcome::Changed
                        } else if current == Value::Text(text.clone()) && !clear {
                            Outcome::AlreadyThere
                        } else {
                            bind_id!(sqlx::query(update).bind(text.clone()), &id)
                            .execute(&mut *conn)
                            .await?;
                            lines.push(WriteBackLine {
                                key: v.key.clone(),
                                id: id.clone(),
                                before: current,
                                written: text,
                                cleared: clear,
                            });
                            Outcome::Written
                        };
                        break;
                    }
                    out.push(outcome);
                }
                Ok(())
            }
            .await;
            // On record before it is committed: a rollback must find every change made.
            if let (Ok(()), Some(j)) = (&result, journal) {
                if let Err(e) = j.write(JOURNAL, &lines).await {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    conn.close_on_drop();
                    return Err(e);
                }
            }
            end_transaction!(conn, result, err);
        });
        Ok(out)
    }

    /// Checks, writing nothing, that write-back may write: PostgreSQL's column privileges of
    /// the user, or that the SQLite file can be locked for writing. The error names what is
    /// missing.
    pub async fn probe_write_back(&self) -> Result<(), TransferError> {
        let c = self.checked();
        let (Some(w), Some(writer)) = (&c.config.write_back, self.writer()) else {
            return Ok(());
        };
        let url = self.url();
        let err = |e: sqlx::Error| url.error("checking the write-back permission", &e);
        let mut columns = vec![w.column.clone()];
        if w.clear_data {
            columns.push(c.config.data_column.clone());
        }
        match writer {
            super::conn::Pool::Postgres(p) => {
                for col in columns {
                    let (ok,): (bool,) =
                        sqlx::query_as("SELECT has_column_privilege($1, $2, 'UPDATE')")
                            .bind(&c.table)
                            .bind(&col)
                            .fetch_one(p)
                            .await
                            .map_err(err)?;
                    if !ok {
                        return Err(TransferError::new(
                            FailureClass::AccessDenied,
                            format!(
                                "writeBack: the database user may not UPDATE the column {col} of {}",
                                c.config.table
                            ),
                        )
                        .fatal());
                    }
                }
            }
            super::conn::Pool::Sqlite(p) => {
                let mut conn = p.acquire().await.map_err(err)?;
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        let mut e = err(e);
                        e.message = format!(
                            "writeBack: the SQLite file cannot be written: {}",
                            e.message
                        );
                        e
                    })?;
                sqlx::query("ROLLBACK")
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

/// Verified objects noted as the shard records them ([`Queue::push`], no I/O), written back
/// by [`Queue::flush`] in transactions of `batchSize` rows: before each checkpoint is saved
/// and at the end of the shard, so no checkpoint passes a row whose write-back is not done.
#[derive(Default)]
pub struct Queue {
    pending: std::sync::Mutex<Vec<Verified>>,
    /// Flushes one at a time, in the order they were asked for.
    flushing: Mutex<()>,
    summary: std::sync::Mutex<Summary>,
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Notes a verified object, to be written back at the next flush.
    pub fn push(&self, v: Verified) {
        self.pending.lock().unwrap().push(v);
    }

    /// Writes back whatever is pending, a batch per transaction (journaled in `journal`);
    /// what a failed batch left stays pending for the next flush. The counts of every flush
    /// so far.
    pub async fn flush(
        &self,
        store: &DbStore,
        journal: Option<&SourceJournal>,
    ) -> Result<Summary, TransferError> {
        let _one = self.flushing.lock().await;
        let batch = store.checked().config.batch_size.max(1) as usize;
        loop {
            let chunk: Vec<Verified> = {
                let mut pending = self.pending.lock().unwrap();
                let n = pending.len().min(batch);
                pending.drain(..n).collect()
            };
            if chunk.is_empty() {
                return Ok(*self.summary.lock().unwrap());
            }
            let outcomes = match store.write_back(&chunk, journal).await {
                Ok(o) => o,
                Err(e) => {
                    let mut pending = self.pending.lock().unwrap();
                    pending.splice(0..0, chunk);
                    return Err(e);
                }
            };
            for (v, o) in chunk.iter().zip(&outcomes) {
                if matches!(o, Outcome::Changed | Outcome::Gone) {
                    tracing::info!(key = %v.key, outcome = ?o, "not written back");
                }
            }
            let mut s = self.summary.lock().unwrap();
            outcomes.into_iter().for_each(|o| s.add(o));
        }
    }
}
