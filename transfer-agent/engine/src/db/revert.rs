//! The rollback of write-back: every row the job's write-back changed (its journal,
//! [`WriteBackLine`]) gets its `writeBack.column` back as it was, where it still holds what
//! the job wrote; nothing else of the row is touched. One write transaction per batch, each
//! row locked and compared first, so a value someone wrote since is kept (and said).
//!
//! A row whose payload the job cleared (`clearData`) is not set back, and its object is kept:
//! the object is the only copy of those bytes left.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::FailureClass;

use super::conn::{bind_id, end_transaction, on_pool, ValueRow};
use super::row::Value;
use super::store::DbStore;
use super::writeback::{WriteBackLine, JOURNAL};
use crate::error::TransferError;
use crate::report::{read_journal, FailureLine};
use crate::stores::{Sink, TakeBack};

/// Why a row with a cleared payload keeps its object.
const CLEARED: &str = "writeBack.clearData cleared the row's payload: this object is the only copy of its bytes, so the rollback keeps it (and the row's reference to it)";

/// What to do about one row the job wrote back, from its journal line and the column's value
/// now (None: no row has the id any more).
#[derive(Debug, PartialEq)]
pub enum Revert {
    /// Set the column back to the value before.
    Set,
    /// The column holds the value from before already.
    AlreadyBefore,
    /// No row has the id any more: nothing to set back.
    Gone,
    /// Not set back, and why.
    Keep(FailureClass, &'static str),
}

/// The decision for one row (pure).
pub fn decide(line: &WriteBackLine, now: Option<&Value>) -> Revert {
    if line.cleared {
        return Revert::Keep(FailureClass::NotRestorable, CLEARED);
    }
    match now {
        None => Revert::Gone,
        Some(Value::Text(t)) if *t == line.written => Revert::Set,
        Some(v) if *v == line.before => Revert::AlreadyBefore,
        Some(_) => Revert::Keep(
            FailureClass::ChangedSinceCopy,
            "the row's writeBack column was changed since the job wrote it: kept as it is",
        ),
    }
}

/// The rows to set back from the journal lines in the order written: the last line of each
/// key (the job's last write of the row; a row the job wrote again was changed in between).
pub fn latest_per_key(lines: Vec<WriteBackLine>) -> BTreeMap<String, WriteBackLine> {
    lines.into_iter().map(|l| (l.key.clone(), l)).collect()
}

/// `$query` with a row value bound as its next parameter, as the type it had.
macro_rules! bind_value {
    ($query:expr, $value:expr) => {
        match $value {
            Value::Null => $query.bind(None::<String>),
            Value::Int(i) => $query.bind(*i),
            Value::Real(x) => $query.bind(*x),
            Value::Text(t) => $query.bind(t.clone()),
            Value::Bytes(b) => $query.bind(b.clone()),
            Value::Time(t) => $query.bind(*t),
        }
    };
}

/// Reads the write-back journals of `folders` and sets back each row, in transactions of
/// `batchSize` rows.
pub async fn take_back(
    store: &DbStore,
    folders: &[Arc<dyn Sink>],
) -> Result<TakeBack, TransferError> {
    let mut lines = Vec::new();
    for f in folders {
        lines.extend(read_journal::<WriteBackLine>(f.as_ref(), JOURNAL).await?);
    }
    let rows = latest_per_key(lines);
    let mut out = TakeBack::default();
    if rows.is_empty() {
        return Ok(out);
    }
    let rows: Vec<WriteBackLine> = rows.into_values().collect();
    let batch = store.checked().config.batch_size.max(1) as usize;
    for chunk in rows.chunks(batch) {
        let decided = revert_batch(store, chunk).await?;
        for (line, d) in chunk.iter().zip(decided) {
            match d {
                Revert::Set | Revert::AlreadyBefore => out.undone += 1,
                Revert::Gone => {
                    tracing::info!(key = %line.key, "the row written back is gone; nothing to set back")
                }
                Revert::Keep(class, why) => {
                    tracing::info!(key = %line.key, why, "not setting a row back");
                    if line.cleared {
                        out.keep_objects.insert(line.key.clone(), CLEARED);
                    }
                    let key = crate::stores::Source::full_key(store, &line.key);
                    out.kept.push(FailureLine::kept(key, 0, class, why));
                }
            }
        }
    }
    Ok(out)
}

/// Sets back one batch of rows in one transaction; the decision for each.
async fn revert_batch(
    store: &DbStore,
    rows: &[WriteBackLine],
) -> Result<Vec<Revert>, TransferError> {
    let q = store.queries();
    let (Some(current), Some(revert), Some(writer)) = (&q.written_by_id, &q.revert, store.writer())
    else {
        return Err(TransferError::new(
            FailureClass::InvalidRequest,
            "the job's journal names rows it wrote back, but this database source has no writeBack to set them back with",
        )
        .fatal());
    };
    let url = store.url();
    let err = |e: sqlx::Error| url.error("setting back written-back rows", &e);
    let mut out = Vec::with_capacity(rows.len());
    on_pool!(writer, p => {
        let mut conn = p.acquire().await.map_err(err)?;
        sqlx::query(q.begin_write).execute(&mut *conn).await.map_err(err)?;
        let result: Result<(), sqlx::Error> = async {
            for line in rows {
                if line.cleared {
                    out.push(decide(line, None));
                    continue;
                }
                let row = bind_id!(sqlx::query(current), &line.id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let now = row.map(|r| r.value(0)).transpose()?;
                let d = decide(line, now.as_ref());
                if d == Revert::Set {
                    bind_id!(bind_value!(sqlx::query(revert), &line.before), &line.id)
                        .execute(&mut *conn)
                        .await?;
                }
                out.push(d);
            }
            Ok(())
        }
        .await;
        end_transaction!(conn, result, err);
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::row::Id;

    fn line(before: Value, cleared: bool) -> WriteBackLine {
        WriteBackLine {
            key: "images/1.png".into(),
            id: Id::Int(1),
            before,
            written: "https://img/images/1.png".into(),
            cleared,
        }
    }

    #[test]
    fn only_a_column_still_holding_what_the_job_wrote_is_set_back() {
        let l = line(Value::Null, false);
        let written = Value::Text(l.written.clone());
        assert_eq!(decide(&l, Some(&written)), Revert::Set);
        assert_eq!(decide(&l, Some(&Value::Null)), Revert::AlreadyBefore);
        assert_eq!(decide(&l, None), Revert::Gone);
        assert!(matches!(
            decide(&l, Some(&Value::Text("https://elsewhere/1.png".into()))),
            Revert::Keep(FailureClass::ChangedSinceCopy, _)
        ));
        let l = line(Value::Text("legacy".into()), false);
        assert_eq!(
            decide(&l, Some(&Value::Text("legacy".into()))),
            Revert::AlreadyBefore
        );
    }

    #[test]
    fn a_cleared_payload_keeps_its_row_and_object() {
        let l = line(Value::Null, true);
        let written = Value::Text(l.written.clone());
        assert!(matches!(
            decide(&l, Some(&written)),
            Revert::Keep(FailureClass::NotRestorable, _)
        ));
    }

    #[test]
    fn the_last_write_of_a_row_is_the_one_set_back() {
        let mut first = line(Value::Null, false);
        first.written = "a".into();
        let mut second = line(Value::Text("x".into()), false);
        second.written = "b".into();
        let other = WriteBackLine {
            key: "images/2.png".into(),
            ..line(Value::Null, false)
        };
        let rows = latest_per_key(vec![first, other, second.clone()]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows["images/1.png"], second);
    }

    #[test]
    fn journal_lines_keep_the_value_and_its_type() {
        for before in [
            Value::Null,
            Value::Int(7),
            Value::Text("t".into()),
            Value::Bytes(vec![0, 255]),
        ] {
            let l = line(before, false);
            let text = serde_json::to_string(&l).unwrap();
            assert_eq!(serde_json::from_str::<WriteBackLine>(&text).unwrap(), l);
        }
        let text = serde_json::to_string(&line(Value::Text("old".into()), false)).unwrap();
        assert!(text.contains(r#""before":{"text":"old"}"#), "{text}");
    }
}
