//! Rows read ahead: the decoded payloads a listing has just read and hashed, kept for the
//! copy that follows so that it neither reads, decodes nor hashes the row again
//! (`docs/database-sources.md`).
//!
//! - [`Shelf`] (pure): entries by key in listing order, bounded in bytes; taking one drops it,
//!   and the entries the copies have passed over (skipped, filtered) go with it.
//! - [`ReadAhead`]: a shelf in the shard's memory budget. The listing waits for room, at most
//!   [`STALL`] when nothing is taken meanwhile (a dry run, a stretch of rows already at the
//!   destination), then makes room by dropping the oldest; a copy that waits for the budget
//!   takes all of it back ([`Reclaim`]). A row not on the shelf is read again by key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::limit::{Buffer, Limits, Reclaim};

/// How long the listing waits for room while nothing is taken before it drops the oldest
/// entries instead (and waits no more until something is taken).
pub const STALL: Duration = Duration::from_secs(1);
/// The shelf's share of the memory budget: at most this fraction of it is read ahead.
const BUDGET_SHARE: u64 = 4;
/// What an entry costs beside its payload (key, map and queue slots), counted in the bound.
const ENTRY_OVERHEAD: u64 = 128;
/// Entries passed over are dropped once a copy takes one this many entries later, at least
/// (four times the objects in flight, when that is more).
const MIN_LAG: u64 = 1024;

/// A decoded row as its copy needs it.
pub struct Payload<B> {
    pub bytes: B,
    /// The MD5 of `bytes`, computed from them as they were listed.
    pub md5: [u8; 16],
    pub content_type: String,
    pub modified: Option<DateTime<Utc>>,
}

struct Slot<B> {
    seq: u64,
    weight: u64,
    payload: Payload<B>,
}

/// Entries by key, in the order they were put, bounded in bytes by the caller.
pub struct Shelf<B> {
    slots: HashMap<String, Slot<B>>,
    /// (seq, key) in put order; entries taken since are skipped when met.
    order: VecDeque<(u64, String)>,
    next_seq: u64,
    weight: u64,
    /// Entries taken so far.
    pub taken: u64,
}

impl<B> Default for Shelf<B> {
    fn default() -> Self {
        Shelf {
            slots: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            weight: 0,
            taken: 0,
        }
    }
}

/// What a payload of `len` bytes under `key` counts for.
pub fn weight(key: &str, len: usize) -> u64 {
    len as u64 + key.len() as u64 + ENTRY_OVERHEAD
}

impl<B> Shelf<B> {
    /// The bytes held (payloads and overhead).
    pub fn weight(&self) -> u64 {
        self.weight
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether `weight` more fits within `cap`.
    pub fn fits(&self, weight: u64, cap: u64) -> bool {
        self.weight + weight <= cap
    }

    /// Puts `payload` under `key` (replacing an older one).
    pub fn put(&mut self, key: String, weight: u64, payload: Payload<B>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, key.clone()));
        self.weight += weight;
        let old = self.slots.insert(
            key,
            Slot {
                seq,
                weight,
                payload,
            },
        );
        if let Some(old) = old {
            self.weight -= old.weight;
        }
    }

    /// Takes the payload of `key`, and drops the entries put more than `lag` entries before
    /// it: the copies have passed them over (their rows were skipped or filtered out).
    /// Returns the payload and what was dropped (to be freed outside any lock).
    pub fn take(&mut self, key: &str, lag: u64) -> (Option<Payload<B>>, Vec<Payload<B>>) {
        let Some(slot) = self.slots.remove(key) else {
            return (None, Vec::new());
        };
        self.weight -= slot.weight;
        self.taken += 1;
        let mut dropped = Vec::new();
        while let Some((seq, _)) = self.order.front() {
            if seq.saturating_add(lag) >= slot.seq {
                break;
            }
            dropped.extend(self.pop_oldest());
        }
        (Some(slot.payload), dropped)
    }

    /// Removes the oldest entry still held (None when empty).
    pub fn pop_oldest(&mut self) -> Option<Payload<B>> {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.slots.get(&key).is_some_and(|s| s.seq == seq) {
                let slot = self.slots.remove(&key).expect("just seen");
                self.weight -= slot.weight;
                return Some(slot.payload);
            }
        }
        None
    }

    /// Removes everything.
    pub fn clear(&mut self) -> Vec<Payload<B>> {
        self.order.clear();
        self.weight = 0;
        self.slots.drain().map(|(_, s)| s.payload).collect()
    }
}

/// The rows read ahead of a table's copies, in the shard's memory budget.
pub struct ReadAhead {
    state: Mutex<State>,
    /// Room was made (an entry taken or dropped).
    room: Notify,
    limits: Arc<Limits>,
}

struct State {
    shelf: Shelf<Buffer>,
    /// The count of entries taken when the listing last waited [`STALL`] in vain: until the
    /// next take, the oldest entries make room instead of waits.
    stalled_at: Option<u64>,
}

impl State {
    fn stalled(&mut self) -> bool {
        if self.stalled_at.is_some_and(|t| t != self.shelf.taken) {
            self.stalled_at = None;
        }
        self.stalled_at.is_some()
    }
}

impl Reclaim for ReadAhead {
    fn reclaim(&self) {
        let freed = self.state.lock().unwrap().shelf.clear();
        if !freed.is_empty() {
            tracing::debug!(rows = freed.len(), "read-ahead given back to the copies");
        }
        drop(freed);
        self.room.notify_one();
    }
}

impl ReadAhead {
    /// A shelf within `limits`' budget, which takes it back whenever a copy must wait.
    pub fn new(limits: Arc<Limits>) -> Arc<ReadAhead> {
        let r = Arc::new(ReadAhead {
            state: Mutex::new(State {
                shelf: Shelf::default(),
                stalled_at: None,
            }),
            room: Notify::new(),
            limits: limits.clone(),
        });
        let weak: Weak<dyn Reclaim> = Arc::downgrade(&r) as Weak<dyn Reclaim>;
        limits.add_reclaimer(weak);
        r
    }

    /// The bytes the shelf may hold now.
    fn cap(&self) -> u64 {
        self.limits.memory_budget() / BUDGET_SHARE
    }

    /// The weight one batch of rows may keep: half the shelf, which
    /// [`ReadAhead::wait_for_room`] leaves free before the batch is read.
    pub fn allowance(&self) -> u64 {
        self.cap() / 2
    }

    /// Entries passed over are dropped this far behind the one taken.
    fn lag(&self) -> u64 {
        let inflight = self.limits.concurrency().unwrap_or(0) as u64;
        (4 * inflight).max(MIN_LAG)
    }

    /// Waits until the shelf holds at most half its share, so that a batch's
    /// [`ReadAhead::allowance`] fits: as long as copies take entries; after [`STALL`] in
    /// which none was taken, the oldest entries are dropped instead (and until the next take
    /// no more waits). Returns early when `gone` (the listing's reader left) ends.
    pub async fn wait_for_room(&self, gone: impl std::future::Future<Output = ()>) {
        tokio::pin!(gone);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let half = self.allowance();
            let (taken, dropped) = {
                let mut st = self.state.lock().unwrap();
                let mut dropped = Vec::new();
                if st.stalled() {
                    while st.shelf.weight() > half {
                        dropped.extend(st.shelf.pop_oldest());
                    }
                }
                if st.shelf.weight() <= half {
                    (None, dropped)
                } else {
                    (Some(st.shelf.taken), dropped)
                }
            };
            drop(dropped);
            let Some(taken) = taken else { return };
            tokio::select! {
                _ = &mut room => {}
                _ = &mut gone => return,
                _ = tokio::time::sleep(STALL) => {
                    let mut st = self.state.lock().unwrap();
                    if st.shelf.taken == taken {
                        st.stalled_at = Some(taken);
                    }
                }
            }
        }
    }

    /// `payload` counted in the budget, when no copy waits for it and it has room; else
    /// None (the payload dropped: the copy reads the row again).
    pub fn adopt(&self, payload: Payload<Vec<u8>>) -> Option<Payload<Buffer>> {
        let bytes = self.limits.try_adopt(payload.bytes).ok()?;
        Some(Payload {
            bytes,
            md5: payload.md5,
            content_type: payload.content_type,
            modified: payload.modified,
        })
    }

    /// Keeps payloads for the copies of their keys (never waits). None are kept while a copy
    /// waits for the budget.
    pub fn put_all(&self, payloads: Vec<(String, Payload<Buffer>)>) {
        if payloads.is_empty() {
            return;
        }
        let mut st = self.state.lock().unwrap();
        if self.limits.starving() {
            drop(st);
            drop(payloads);
            return;
        }
        for (key, p) in payloads {
            let w = weight(&key, p.bytes.capacity());
            st.shelf.put(key, w, p);
        }
    }

    /// Takes the payload kept for `key`, if any.
    pub fn take(&self, key: &str) -> Option<Payload<Buffer>> {
        let (got, dropped) = self.state.lock().unwrap().shelf.take(key, self.lag());
        drop(dropped);
        if got.is_some() {
            self.room.notify_one();
        }
        got
    }

    /// Entries held, and their weight.
    pub fn held(&self) -> (usize, u64) {
        let st = self.state.lock().unwrap();
        (st.shelf.len(), st.shelf.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Payload<Vec<u8>> {
        Payload {
            bytes: vec![n; 10],
            md5: [n; 16],
            content_type: "image/png".into(),
            modified: None,
        }
    }

    #[test]
    fn a_shelf_gives_each_entry_once_and_counts_its_weight() {
        let mut s = Shelf::default();
        s.put("a".into(), 100, p(1));
        s.put("b".into(), 50, p(2));
        assert_eq!((s.len(), s.weight()), (2, 150));
        assert!(s.fits(50, 200) && !s.fits(51, 200));
        let (got, dropped) = s.take("a", 10);
        assert_eq!(got.unwrap().md5, [1; 16]);
        assert!(dropped.is_empty());
        assert!(s.take("a", 10).0.is_none(), "taken twice");
        assert_eq!((s.len(), s.weight(), s.taken), (1, 50, 1));
        // A key put again replaces its entry (and its weight).
        s.put("b".into(), 70, p(3));
        assert_eq!((s.len(), s.weight()), (1, 70));
        assert_eq!(s.take("b", 10).0.unwrap().md5, [3; 16]);
        assert_eq!((s.len(), s.weight()), (0, 0));
        assert!(s.pop_oldest().is_none());
    }

    #[test]
    fn entries_passed_over_go_when_a_later_one_is_taken() {
        let mut s = Shelf::default();
        for i in 0..10u8 {
            s.put(format!("k{i}"), 10, p(i));
        }
        // k9 taken with a lag of 3: k0..k5 are more than 3 entries before it.
        let (got, dropped) = s.take("k9", 3);
        assert_eq!(got.unwrap().md5, [9; 16]);
        let mut gone: Vec<u8> = dropped.iter().map(|d| d.md5[0]).collect();
        gone.sort();
        assert_eq!(gone, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!((s.len(), s.weight()), (3, 30));
        assert!(s.take("k6", 3).0.is_some());
        // The oldest left is k7; clearing empties it all.
        assert_eq!(s.pop_oldest().unwrap().md5, [7; 16]);
        assert_eq!(s.clear().len(), 1);
        assert_eq!((s.len(), s.weight()), (0, 0));
    }

    #[test]
    fn a_replaced_entry_is_not_dropped_by_its_old_place() {
        let mut s = Shelf::default();
        s.put("a".into(), 10, p(1));
        s.put("b".into(), 10, p(2));
        s.put("a".into(), 10, p(3));
        // The oldest is b now: a's first place is stale.
        assert_eq!(s.pop_oldest().unwrap().md5, [2; 16]);
        assert_eq!(s.pop_oldest().unwrap().md5, [3; 16]);
        assert!(s.is_empty());
    }

    fn never() -> impl std::future::Future<Output = ()> {
        std::future::pending()
    }

    fn row(n: u8) -> Payload<Vec<u8>> {
        Payload {
            bytes: vec![n; 6 * 1024],
            md5: [n; 16],
            content_type: "image/png".into(),
            modified: None,
        }
    }

    /// Puts rows `ns` as a listing does: adopted into the budget, then kept.
    fn put(ra: &ReadAhead, ns: std::ops::Range<u8>) {
        let rows = ns
            .filter_map(|n| ra.adopt(row(n)).map(|p| (format!("k{n}"), p)))
            .collect();
        ra.put_all(rows);
    }

    #[tokio::test]
    async fn read_ahead_stays_in_its_share_of_the_budget() {
        // 64 KiB budget: 16 KiB for the shelf, 8 KiB a batch.
        let limits = Arc::new(Limits::new(0.0, 0.0, 64 * 1024));
        let ra = ReadAhead::new(limits.clone());
        assert_eq!(ra.allowance(), 8 * 1024);
        put(&ra, 0..2);
        assert_eq!(ra.held().0, 2);
        // Above half its share: the next batch waits until a copy takes one.
        let t0 = tokio::time::Instant::now();
        let take = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let k0 = ra.take("k0").unwrap();
            assert_eq!(k0.md5, [0; 16]);
            assert_eq!(k0.bytes.as_ref(), &[0u8; 6 * 1024][..]);
        };
        tokio::join!(ra.wait_for_room(never()), take);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < STALL,
            "{waited:?}"
        );
        assert!(ra.take("k0").is_none(), "taken twice");
        // A listing whose reader left stops waiting.
        put(&ra, 2..3);
        ra.wait_for_room(async {}).await;
        assert_eq!(ra.held().0, 2);
        // A copy that must wait for the budget takes the shelf back at once, and nothing is
        // adopted or kept while it waits.
        let copy = tokio::time::timeout(Duration::from_millis(500), limits.buffer(60 * 1024))
            .await
            .expect("the copy waited for the read-ahead");
        assert_eq!(ra.held(), (0, 0));
        let second = limits.buffer(8 * 1024);
        tokio::pin!(second);
        assert!(futures::poll!(&mut second).is_pending());
        assert!(ra.adopt(row(9)).is_none());
        drop(copy);
        let second = second.await;
        let kept = ra.adopt(row(9)).unwrap();
        let waiting = limits.buffer(60 * 1024);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        ra.put_all(vec![("k9".into(), kept)]);
        assert_eq!(ra.held().0, 0, "kept while a copy waits for the budget");
        drop(second);
        waiting.await;
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_taken_for_a_while_makes_the_oldest_give_way() {
        let limits = Arc::new(Limits::new(0.0, 0.0, 64 * 1024));
        let ra = ReadAhead::new(limits);
        put(&ra, 0..2);
        // One wait of STALL (a dry run: nothing is ever taken), then the oldest give way.
        let t0 = tokio::time::Instant::now();
        ra.wait_for_room(never()).await;
        let waited = t0.elapsed();
        assert!(waited >= STALL && waited < STALL * 2, "{waited:?}");
        assert_eq!(ra.held().0, 1);
        assert!(ra.take("k0").is_none());
        // No more waits until something is taken.
        put(&ra, 2..3);
        let t1 = tokio::time::Instant::now();
        ra.wait_for_room(never()).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
        assert_eq!(ra.held().0, 1);
        assert_eq!(ra.take("k2").unwrap().md5, [2; 16]);
        put(&ra, 3..5);
        ra.wait_for_room(never()).await;
        assert!(t1.elapsed() >= STALL, "a take did not end the stall");
        assert_eq!(ra.held().0, 1);
    }
}
