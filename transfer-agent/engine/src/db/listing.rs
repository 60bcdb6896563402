//! Listing a table in key order: entries (key, size, MD5, modification time, or the row's
//! failure) made from rows read by keyset pagination, streamed as they come when keys sort
//! as ids do, else sorted externally first (`docs/database-sources.md`).

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use ferry_core::FailureClass;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::item::{Item, RowFailure};
use super::readahead::Payload;
use super::row::Id;
use super::sort::{Sorter, RUN_LEN};
use super::store::DbStore;
use super::template::IdStart;
use crate::error::TransferError;
use crate::stores::ObjectInfo;

/// Marks an entry's `invalid` text with its failure class: `InvalidData: row 7: ...`.
const CLASS_SEPARATOR: &str = ": ";

/// One row as a listing entry, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub id: Id,
    pub size: u64,
    /// Hex MD5 of the decoded bytes.
    pub md5: String,
    pub modified: Option<DateTime<Utc>>,
    pub failure: Option<(FailureClass, String)>,
}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        (&self.key, &self.id).cmp(&(&o.key, &o.id))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Entry {
    pub fn of(judged: Result<Item, RowFailure>) -> Entry {
        Entry::with_payload(judged).0
    }

    /// The entry of a judged row, and (an object) its decoded bytes with the MD5 computed
    /// from them, for a copy to take ([`super::readahead`]).
    pub fn with_payload(judged: Result<Item, RowFailure>) -> (Entry, Option<Payload<Vec<u8>>>) {
        match judged {
            Ok(item) => {
                let md5: [u8; 16] = Md5::digest(&item.bytes).into();
                let entry = Entry {
                    size: item.bytes.len() as u64,
                    md5: hex::encode(md5),
                    key: item.key,
                    id: item.id,
                    modified: item.modified,
                    failure: None,
                };
                let payload = Payload {
                    bytes: item.bytes,
                    md5,
                    content_type: item.content_type,
                    modified: item.modified,
                };
                (entry, Some(payload))
            }
            Err(f) => (
                Entry {
                    key: f.key,
                    id: f.id,
                    size: 0,
                    md5: String::new(),
                    modified: f.modified,
                    failure: Some((f.class, f.message)),
                },
                None,
            ),
        }
    }

    /// The entry as a listing gives it: a failed row is `invalid`, its text starting with
    /// its class ([`failure_of`] reads it back).
    pub fn info(&self) -> ObjectInfo {
        ObjectInfo {
            key: self.key.clone(),
            size: self.size,
            modified: self.modified,
            etag: (!self.md5.is_empty()).then(|| self.md5.clone()),
            archived: false,
            invalid: self
                .failure
                .as_ref()
                .map(|(c, m)| format!("{}{CLASS_SEPARATOR}{m}", c.as_str())),
        }
    }

    fn duplicate_of(&mut self, first: &Entry) {
        self.failure = Some((
            FailureClass::DuplicateKey,
            format!(
                "row {} maps to the key of row {} (the key template gives both {:?}): not copied",
                self.id, first.id, self.key
            ),
        ));
        self.size = 0;
        self.md5.clear();
    }
}

/// The failure of a listed database entry, with its class (`InvalidData`, `DuplicateKey`),
/// for the engine to record instead of copying.
pub fn failure_of(info: &ObjectInfo) -> Option<TransferError> {
    let text = info.invalid.as_deref()?;
    let (class, _) = text.split_once(CLASS_SEPARATOR)?;
    let class = [FailureClass::InvalidData, FailureClass::DuplicateKey]
        .into_iter()
        .find(|c| c.as_str() == class)?;
    Some(TransferError::new(class, text).retryable(false))
}

/// What a listing sends.
pub type Sent = Result<ObjectInfo, TransferError>;

/// Lists `after < key <= until` in key order into `tx`. With `read_ahead` (the listing a
/// copy follows, not a count), rows listed as they are read are kept for their copies
/// ([`DbStore::read_ahead`]).
pub async fn produce(
    store: DbStore,
    after: Option<String>,
    until: Option<String>,
    tx: mpsc::Sender<Sent>,
    read_ahead: bool,
) {
    let result = match store.ordered().await {
        Ok(true) => in_id_order(&store, after, until, &tx, read_ahead).await,
        Ok(false) => sorted(&store, after, until, &tx).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}

fn in_range(key: &str, after: Option<&str>, until: Option<&str>) -> bool {
    after.is_none_or(|a| key > a) && until.is_none_or(|u| key <= u)
}

/// Keys sort as ids: rows are listed batch by batch as they are read. With `read_ahead`,
/// each batch is read once the read-ahead has room for it, and the decoded bytes of its
/// objects are kept there before their entries are sent.
async fn in_id_order(
    store: &DbStore,
    after: Option<String>,
    until: Option<String>,
    tx: &mpsc::Sender<Sent>,
    read_ahead: bool,
) -> Result<(), TransferError> {
    let shelf = read_ahead.then(|| store.read_ahead());
    let mut last = match &after {
        None => None,
        Some(a) => match store.template().start_after(a, store.kind()) {
            IdStart::First => None,
            IdStart::After(id) => Some(id),
            IdStart::Nothing => return Ok(()),
        },
    };
    let mut prev: Option<String> = None;
    loop {
        if let Some(shelf) = shelf {
            shelf.wait_for_room(tx.closed()).await;
        }
        let (batch, next) = store.read_batch(last.as_ref(), shelf).await?;
        let (sent, kept, end) = in_order(batch, after.as_deref(), until.as_deref(), &mut prev);
        if let Some(shelf) = shelf {
            shelf.put_all(kept);
        }
        for e in sent {
            if tx.send(Ok(e.info())).await.is_err() {
                return Ok(());
            }
        }
        match (end, next) {
            (Some(end), _) => return end,
            (None, Some(id)) => last = Some(id),
            (None, None) => return Ok(()),
        }
    }
}

/// What a batch read in id order gives (pure): the entries to send in `after < key <=
/// until`, the payloads of those that are objects, and, when the listing ends in this batch,
/// how (past `until`, or a key out of order). `prev` is the last key sent.
#[allow(clippy::type_complexity)]
fn in_order<B>(
    batch: Vec<(Entry, Option<Payload<B>>)>,
    after: Option<&str>,
    until: Option<&str>,
    prev: &mut Option<String>,
) -> (
    Vec<Entry>,
    Vec<(String, Payload<B>)>,
    Option<Result<(), TransferError>>,
) {
    let mut sent = Vec::new();
    let mut kept = Vec::new();
    for (mut e, payload) in batch {
        if until.is_some_and(|u| e.key.as_str() > u) && e.failure.is_none() {
            return (sent, kept, Some(Ok(())));
        }
        if !in_range(&e.key, after, until) {
            continue;
        }
        if let Some(p) = prev.as_ref() {
            if e.key <= *p {
                if e.failure.is_none() {
                    let err = TransferError::new(
                        FailureClass::Internal,
                        format!(
                            "the key {:?} of row {} does not sort after {p:?}",
                            e.key, e.id
                        ),
                    );
                    return (sent, kept, Some(Err(err)));
                }
                // A failed row's key made as well as it could be: reported just after the
                // previous key, so the listing stays in order.
                e.key = format!("{p}\u{10ffff}{}", e.id);
            }
        }
        *prev = Some(e.key.clone());
        if let (Some(p), None) = (payload, &e.failure) {
            kept.push((e.key.clone(), p));
        }
        sent.push(e);
    }
    (sent, kept, None)
}

/// Keys do not sort as ids: every row is read first (its bytes hashed and dropped), the
/// entries sorted with bounded memory, and a second row of a key fails as `DuplicateKey`.
async fn sorted(
    store: &DbStore,
    after: Option<String>,
    until: Option<String>,
    tx: &mpsc::Sender<Sent>,
) -> Result<(), TransferError> {
    let io = |e: std::io::Error| TransferError::io("sorting the rows by key", &e);
    let mut sorter = Sorter::new(RUN_LEN);
    let mut last = None;
    loop {
        let (batch, next) = store.read_batch(last.as_ref(), None).await?;
        for (e, _) in batch {
            if in_range(&e.key, after.as_deref(), until.as_deref()) {
                sorter.push(e).map_err(io)?;
            }
        }
        match next {
            Some(id) => last = Some(id),
            None => break,
        }
    }
    if sorter.spilled_runs() > 0 {
        tracing::info!(runs = sorter.spilled_runs(), "rows sorted by key on disk");
    }
    let mut first: Option<Entry> = None;
    for e in sorter.finish().map_err(io)? {
        let mut e = e.map_err(io)?;
        match &first {
            Some(f) if f.key == e.key => e.duplicate_of(f),
            _ => first = Some(e.clone()),
        }
        if tx.send(Ok(e.info())).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_class() {
        let e = Entry::of(Err(RowFailure {
            id: Id::Int(3),
            key: "k/3.bin".into(),
            class: FailureClass::InvalidData,
            message: "row 3: the payload is empty".into(),
            modified: None,
        }));
        let info = e.info();
        assert_eq!(
            info.invalid.as_deref(),
            Some("InvalidData: row 3: the payload is empty")
        );
        let err = failure_of(&info).unwrap();
        assert_eq!(err.class, FailureClass::InvalidData);
        assert!(!err.retryable);
        let mut second = Entry {
            id: Id::Int(9),
            ..e.clone()
        };
        second.duplicate_of(&e);
        assert_eq!(
            failure_of(&second.info()).unwrap().class,
            FailureClass::DuplicateKey
        );
        let plain = ObjectInfo {
            invalid: Some("not UTF-8".into()),
            ..info
        };
        assert!(failure_of(&plain).is_none());
    }
}
