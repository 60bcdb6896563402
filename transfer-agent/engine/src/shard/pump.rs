//! The loop of a running shard: takes work from the listing in key order, starts copies with
//! bounded concurrency, records what ends, starts the count-only listing when copying (not
//! listing) holds the shard back, publishes the live record and saves checkpoints, and stops
//! cleanly on request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    FailureClass, InventoryChecksums, Mode, Selector, ShardProgress, ShardState, Totals,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
// Tokio's clock, so that tests can run the loop's timers on paused time.
use tokio::time::Instant;

use super::census::census;
use super::check::{Read, Reader};
use super::merge::{keys_listing, produce, Rules, Work};
use super::record::{Outcome, Recorder, Verdict};
use super::ShardRun;
use crate::audit::{Action, InventoryLine, Listed};
use crate::copy::{Copied, Copier, UploadRegistry};
use crate::error::TransferError;
use crate::report::{DeleteLine, ManifestLine};
use crate::stores::ObjectInfo;

/// How long in-flight objects may take to finish after a stop before they are abandoned.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the listing must have waited for the copy before a count-only listing starts.
const CENSUS_AFTER: Duration = Duration::from_secs(2);
/// How often the live record is published (and the stop grace and checkpoint timers looked at).
const TICK: Duration = Duration::from_millis(250);

/// One copy that ended.
struct Done {
    seq: u64,
    info: ObjectInfo,
    replaced: bool,
    /// The destination held the key when it was listed.
    at_destination: bool,
    result: Result<Copied, TransferError>,
}

/// A task of the pump that ended: a copy, or a read of Check mode or of the inventory.
enum Ended {
    Copy(Done),
    Read(Box<Read>),
}

/// Throughput over the last few seconds.
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    fn observe(&mut self, total: u64) -> u64 {
        let now = Instant::now();
        self.samples.push_back((now, total));
        while self.samples.len() > 2
            && now.duration_since(self.samples[0].0) > Duration::from_secs(5)
        {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        if secs < 0.2 {
            0
        } else {
            ((total - b0) as f64 / secs) as u64
        }
    }
}

/// When the shard's total becomes known: from the listing once it reaches its end, or before
/// that from a count-only listing started once the work queue has stayed full for
/// [`CENSUS_AFTER`] (where listing is what takes the time, a second listing would only slow
/// the shard down).
struct Total {
    /// The counters at the resume point: the listing's own total counts from there.
    resumed_at: Totals,
    /// Where the run's listing started, for a count-only listing before anything was taken.
    after: Option<String>,
    /// The listing (producer) task; it returns what it handed over.
    producer: JoinHandle<Option<Totals>>,
    listed: bool,
    census: Option<JoinHandle<Result<Totals, TransferError>>>,
    census_started: bool,
    queue_full_since: Option<Instant>,
}

/// The state of the loop.
pub struct Pump<'a> {
    run: &'a ShardRun,
    /// Count the destination's selected keys (the base of a percentage `maxDeletes`).
    count_destination: bool,
    rec: Recorder,
    selector: Selector,
    copier: Arc<Copier>,
    uploads: Arc<UploadRegistry>,
    moved: Arc<AtomicU64>,
    work: mpsc::Receiver<Work>,
    inflight: FuturesUnordered<JoinHandle<Ended>>,
    /// Check mode's and the inventory's reads.
    reader: Reader,
    /// A dry run's inventory (None: none is written), and whether it reads the SHA-256s.
    inventory: Option<InventoryChecksums>,
    /// Objects in flight at most (the live limit, looked at on each tick).
    concurrency: usize,
    /// Keys registered and not yet popped from the watermark window at most.
    window_cap: usize,
    listing_done: bool,
    stopping: Option<Instant>,
    total: Total,
    rate: Rate,
    last_save: Instant,
}

impl<'a> Pump<'a> {
    /// Starts the listing (from the checkpoint on) and sets the loop up.
    pub fn start(
        run: &'a ShardRun,
        rec: Recorder,
        selector: Selector,
        resumed_since: Option<i64>,
    ) -> Self {
        let range = run.range();
        let after = match (&range.after, &rec.cp.watermark) {
            (Some(a), Some(w)) => Some(a.max(w).clone()),
            (a, w) => w.clone().or(a.clone()),
        };
        let (src_list, dst_list) = match &run.plan.only_keys {
            Some(keys) => {
                let keys: Vec<String> = keys
                    .iter()
                    .filter(|k| {
                        range.contains(k) && after.as_deref().is_none_or(|a| k.as_str() > a)
                    })
                    .cloned()
                    .collect();
                (
                    keys_listing(run.src.clone(), keys.clone()),
                    keys_listing(run.dst.clone(), keys),
                )
            }
            None => (
                run.src.list(after.clone(), range.until.clone()),
                run.dst.list(after.clone(), range.until.clone()),
            ),
        };
        let t = &run.plan.transfer;
        let deletes = run.plan.finds_deletes();
        let rules = Rules {
            selector: selector.clone(),
            policy: t.overwrite,
            dry_run: t.dry_run,
            md5_etags: run.src.caps().md5_etags && run.dst.sink_caps().etags_are_md5,
            resumed_since,
            deletes,
            protected: protected_prefixes(run),
            source: Some(run.src.clone()),
            check: t.mode == Mode::Check,
            verify: t.verify,
        };
        let (tx, work) = mpsc::channel::<Work>(1024);
        let producer = tokio::spawn(produce(src_list, dst_list, rules, tx));
        let uploads = run.uploads.clone();
        let moved = Arc::new(AtomicU64::new(0));
        let copier = Arc::new(Copier {
            src: run.src.clone(),
            dst: run.dst.clone(),
            threshold: t.multipart.threshold,
            part_size: t.multipart.part_size,
            verify: t.verify,
            server: run.server.clone(),
            limits: run.limits.clone(),
            retry: run.retry.clone(),
            uploads: uploads.clone(),
            bytes_moved: moved.clone(),
        });
        let reader = Reader {
            src: run.src.clone(),
            dst: run.dst.clone(),
            limits: run.limits.clone(),
            retry: run.retry.clone(),
            piece: t.multipart.part_size,
            moved: moved.clone(),
        };
        let inventory = t
            .inventory
            .filter(|_| t.dry_run && run.report.is_some())
            .map(|i| i.checksums);
        let concurrency = live_concurrency(run);
        let resumed_at = rec.record.counters.totals();
        Pump {
            run,
            count_destination: deletes,
            rec,
            selector,
            copier,
            uploads,
            moved,
            work,
            inflight: FuturesUnordered::new(),
            reader,
            inventory,
            concurrency,
            window_cap: window_cap(concurrency),
            listing_done: false,
            stopping: None,
            total: Total {
                resumed_at,
                after,
                producer,
                listed: false,
                census: None,
                census_started: run.plan.only_keys.is_some(),
                queue_full_since: None,
            },
            rate: Rate::default(),
            last_save: Instant::now(),
        }
    }

    /// Neither taking new work nor waiting for more.
    fn halted(&self) -> bool {
        self.stopping.is_some() || self.rec.stopped()
    }

    fn can_take(&self) -> bool {
        !self.halted()
            && !self.listing_done
            && self.inflight.len() < self.concurrency
            && self.rec.window.len() < self.window_cap
    }

    /// Runs until the listing is done and every copy has ended (or the shard is stopped),
    /// then saves and returns the final record.
    pub async fn run(mut self) -> ShardProgress {
        let mut stop = self.run.stop.clone();
        let mut ticker = tokio::time::interval(TICK);
        loop {
            if self.inflight.is_empty() && (self.listing_done || self.halted()) {
                break;
            }
            let can_take = self.can_take();
            tokio::select! {
                changed = stop.changed(), if self.stopping.is_none() => {
                    if changed.is_err() || *stop.borrow() {
                        self.stopping = Some(Instant::now());
                    }
                }
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    match done {
                        Ok(Ended::Copy(done)) => self.ended(done),
                        Ok(Ended::Read(read)) => self.read(*read),
                        Err(e) => tracing::error!(error = %e, "a copy task failed"),
                    }
                }
                work = self.work.recv(), if can_take => self.take(work),
                listed = &mut self.total.producer, if !self.total.listed => {
                    self.listed(listed.ok().flatten());
                }
                counted = async { self.total.census.as_mut().expect("guarded").await },
                    if self.total.census.is_some() => self.counted(counted),
                _ = ticker.tick() => self.tick().await,
            }
        }
        self.finish().await
    }

    /// Takes one unit of work from the listing: registers it in listing order and starts its
    /// copy, or records it at once.
    fn take(&mut self, work: Option<Work>) {
        let work = match work {
            None => {
                self.listing_done = true;
                self.rec.record.listing_complete = true;
                return;
            }
            Some(Work::ListingFailed(e)) => {
                tracing::error!(error = %e, "listing failed");
                self.rec.note_error(e.sample(""));
                self.rec.stop(e.sample(""));
                return;
            }
            Some(w) => w,
        };
        match work {
            Work::Copy { info, replaced } => {
                let seq = self.rec.register(&info);
                let copier = self.copier.clone();
                let keep = (replaced && self.run.plan.transfer.backup_replaced)
                    .then(|| (self.run.dst.clone(), self.run.plan.backup_prefix()));
                self.inflight.push(tokio::spawn(async move {
                    let kept = match keep {
                        Some((dst, root)) => {
                            super::rollback::keep_replaced(dst.as_ref(), &root, &info.key).await
                        }
                        None => Ok(()),
                    };
                    let result = match kept {
                        Ok(()) => copier.copy(&info).await,
                        Err(e) => Err(e),
                    };
                    Ended::Copy(Done {
                        seq,
                        info,
                        replaced,
                        at_destination: replaced,
                        result,
                    })
                }));
            }
            Work::Rewritten { info, checksum } => {
                let seq = self.rec.register(&info);
                self.ended(Done {
                    seq,
                    info,
                    replaced: false,
                    at_destination: true,
                    result: Ok(Copied::Done { checksum }),
                });
            }
            Work::Skip(info, md5) => {
                if let Some(md5) = md5 {
                    self.verified(&info.key, &md5);
                }
                self.listed_now(info, Outcome::Skipped, true, Action::Skip)
            }
            Work::WouldCopy { info, replaced } => {
                let parts = self.copier.parts_of(info.size);
                self.listed_now(info, Outcome::WouldCopy { parts }, replaced, Action::Copy)
            }
            Work::Check {
                info,
                existing,
                listed,
            } => self.check(info, existing, listed),
            Work::Extra(d) => {
                let seq = self.rec.register_key(&d.key);
                let line = self
                    .reader
                    .line(crate::audit::Difference::Extra, None, Some(&d));
                self.rec.settle(seq, d.size, Outcome::Differs(line));
            }
            Work::Candidate(info) => {
                let seq = self.rec.register_key(&info.key);
                let inventory = self.inventory.map(|_| {
                    InventoryLine::of(self.run.dst.full_key(&info.key), &info, Action::Delete)
                });
                let line = DeleteLine {
                    key: self.run.dst.full_key(&info.key),
                    size: info.size,
                    etag: info.etag.clone(),
                    modified: info.modified.map(|m| m.to_rfc3339()),
                };
                self.rec
                    .settle_listed(seq, info.size, Outcome::Candidate(line), false, inventory);
            }
            Work::Archived(info) => {
                let e = TransferError::new(
                    FailureClass::Archived,
                    "skipped: the object is in an archive storage class (restore it first)",
                );
                let line = e.report_line(self.run.src.full_key(&info.key), &info);
                let inventory = self.inventory_line(&info, Action::Archived);
                let seq = self.rec.register(&info);
                self.rec
                    .settle_listed(seq, info.size, Outcome::Archived(line), false, inventory);
            }
            Work::Invalid(info, why) => {
                let seq = self.rec.register(&info);
                let e = self.run.src.refuse(&info).unwrap_or_else(|| {
                    TransferError::new(FailureClass::Unrepresentable, why).retryable(false)
                });
                self.fail(seq, &info, &e);
            }
            Work::ListingFailed(_) => unreachable!("handled above"),
        }
    }

    fn record_now(&mut self, info: &ObjectInfo, outcome: Outcome, at_destination: bool) {
        let seq = self.rec.register(info);
        let counted = at_destination && self.count_destination;
        self.rec.settle_at(seq, info.size, outcome, counted);
    }

    /// The inventory line of a selected source object, when the dry run writes one.
    fn inventory_line(&self, info: &ObjectInfo, action: Action) -> Option<InventoryLine> {
        self.inventory
            .map(|_| InventoryLine::of(self.run.src.full_key(&info.key), info, action))
    }

    /// Records a decision the listings made (skip, would copy) with its inventory line; with
    /// `inventory.checksums: Sha256` the object is read for its SHA-256 first.
    fn listed_now(
        &mut self,
        info: ObjectInfo,
        outcome: Outcome,
        at_destination: bool,
        action: Action,
    ) {
        let Some(line) = self.inventory_line(&info, action) else {
            return self.record_now(&info, outcome, at_destination);
        };
        let seq = self.rec.register(&info);
        if self.inventory != Some(InventoryChecksums::Sha256) {
            let counted = at_destination && self.count_destination;
            return self
                .rec
                .settle_listed(seq, info.size, outcome, counted, Some(line));
        }
        let reader = self.reader.clone();
        self.inflight.push(tokio::spawn(async move {
            let line = reader.hashed(&info, line).await;
            Ended::Read(Box::new(Read {
                seq,
                info,
                at_destination,
                result: Ok((outcome, Some(line))),
            }))
        }));
    }

    /// Check mode: records what the listings tell of a key, or reads both sides first.
    fn check(&mut self, info: ObjectInfo, existing: Option<ObjectInfo>, listed: Listed) {
        let at_destination = existing.is_some();
        match (listed, existing) {
            (Listed::Read, Some(dst)) if !info.archived => {
                let seq = self.rec.register(&info);
                let reader = self.reader.clone();
                self.inflight.push(tokio::spawn(async move {
                    let result = reader.compare(&info, &dst).await.map(|o| (o, None));
                    Ended::Read(Box::new(Read {
                        seq,
                        info,
                        at_destination,
                        result,
                    }))
                }));
            }
            (Listed::Read, _) => {
                let e = TransferError::new(
                    FailureClass::Archived,
                    "not compared: the object is in an archive storage class (restore it first)",
                );
                let line = e.report_line(self.run.src.full_key(&info.key), &info);
                self.record_now(&info, Outcome::Archived(line), at_destination);
            }
            (listed, existing) => {
                let outcome = self.reader.listed(listed, &info, existing.as_ref());
                self.record_now(&info, outcome, at_destination);
            }
        }
    }

    /// Records a read of Check mode or of the inventory that ended.
    fn read(&mut self, read: Read) {
        let Read {
            seq,
            info,
            at_destination,
            result,
        } = read;
        let counted = at_destination && self.count_destination;
        match result {
            Ok((outcome, line)) => self
                .rec
                .settle_listed(seq, info.size, outcome, counted, line),
            Err(e) => self.failed(seq, info, e),
        }
    }

    fn fail(&mut self, seq: u64, info: &ObjectInfo, e: &TransferError) {
        let key = self.run.src.full_key(&info.key);
        self.rec.note_error(e.sample(&key));
        self.rec
            .settle(seq, info.size, Outcome::Failed(e.report_line(key, info)));
    }

    /// Records a copy that ended.
    fn ended(&mut self, done: Done) {
        let Done {
            seq,
            info,
            replaced,
            at_destination,
            result,
        } = done;
        let counted = at_destination && self.count_destination;
        match result {
            Ok(Copied::Done { checksum }) => {
                if let Some(md5) = info.plain_md5() {
                    self.verified(&info.key, md5);
                }
                let line = ManifestLine {
                    key: self.run.dst.full_key(&info.key),
                    size: info.size,
                    checksum,
                    replaced,
                    deleted: false,
                };
                self.rec
                    .settle_at(seq, info.size, Outcome::Copied(line), counted);
            }
            Ok(Copied::Vanished) => self
                .rec
                .settle_at(seq, info.size, Outcome::Vanished, counted),
            Err(e) => self.failed(seq, info, e),
        }
    }

    /// Records an object that failed, or stops the shard (the circuit breaker).
    fn failed(&mut self, seq: u64, info: ObjectInfo, e: TransferError) {
        let c = &self.rec.record.counters;
        let anything_copied = c.objects_copied > 0 || c.objects_checked() > 0;
        let key = self.run.src.full_key(&info.key);
        if e.fatal {
            tracing::warn!(key = %key, error = %e, "job-fatal error");
        } else {
            tracing::debug!(key = %key, error = %e, "object failed");
        }
        match self.rec.breaker.judge(&e, anything_copied) {
            // Not recorded: the checkpoint stays before this key.
            Verdict::Stop => self.rec.stop(e.sample(&key)),
            Verdict::Fail => self.fail(seq, &info, &e),
        }
    }

    /// Tells the source that `key` is at the destination with its bytes (not in a dry run).
    fn verified(&self, key: &str, md5: &str) {
        if !self.run.plan.transfer.dry_run {
            self.run.src.verified(key, md5);
        }
    }

    /// The listing reached its end (or failed): the shard's total is known.
    fn listed(&mut self, sent: Option<Totals>) {
        self.total.listed = true;
        if let Some(c) = self.total.census.take() {
            c.abort();
        }
        if let Some(t) = sent {
            self.rec.record.expected = Some(self.total.resumed_at + t);
        }
    }

    fn counted(&mut self, counted: Result<Result<Totals, TransferError>, tokio::task::JoinError>) {
        self.total.census = None;
        match counted {
            Ok(Ok(t)) => {
                self.rec.record.expected.get_or_insert(t);
            }
            Ok(Err(e)) => tracing::debug!(
                error = %e,
                "the count-only listing failed; the total stays unknown until the listing ends"
            ),
            Err(e) => tracing::debug!(error = %e, "the count-only listing stopped"),
        }
    }

    /// Starts the count-only listing of the range beyond the last key taken (every selected
    /// key up to it is in the counters already).
    fn start_census(&mut self) {
        self.total.census_started = true;
        let from = self
            .rec
            .window
            .last_key()
            .map(str::to_string)
            .or_else(|| self.rec.cp.watermark.clone())
            .or_else(|| self.total.after.clone());
        let base = self.rec.record.counters.totals();
        // Keys only: a store that asks a server for each size (a URL list without sizes) is
        // not asked twice; such entries count 0 bytes until the listing itself reaches them.
        let listing = self.run.src.list_keys(from, self.run.range().until.clone());
        self.total.census = Some(tokio::spawn(census(listing, self.selector.clone(), base)));
    }

    async fn tick(&mut self) {
        // The objects in flight may have been changed since (lowered: no new work is taken
        // until fewer are in flight).
        let concurrency = live_concurrency(self.run);
        if concurrency != self.concurrency {
            tracing::info!(
                from = self.concurrency,
                to = concurrency,
                "concurrency changed"
            );
            self.concurrency = concurrency;
            self.window_cap = window_cap(concurrency);
        }
        let t = &mut self.total;
        t.queue_full_since = if self.work.capacity() == 0 {
            t.queue_full_since.or(Some(Instant::now()))
        } else {
            None
        };
        let waited = t
            .queue_full_since
            .is_some_and(|since| since.elapsed() >= CENSUS_AFTER);
        if !t.census_started && !t.listed && !self.listing_done && !self.halted() && waited {
            self.start_census();
        }
        if self.stopping.is_some_and(|t| t.elapsed() > STOP_GRACE) {
            for h in self.inflight.iter() {
                h.abort();
            }
            self.inflight.clear();
        }
        self.rec.record.bytes_per_second = self.rate.observe(self.moved.load(Ordering::Relaxed));
        self.run.live.send_replace(self.rec.record.clone());
        if self.last_save.elapsed() >= self.run.checkpoint_every {
            self.rec.cp.uploads = self.uploads.snapshot();
            self.checkpoint().await;
            self.last_save = Instant::now();
        }
    }

    /// Ends the run: aborts what is left, decides the shard's state, saves the record.
    async fn finish(mut self) -> ShardProgress {
        self.total.producer.abort();
        if let Some(c) = self.total.census.take() {
            c.abort();
        }
        // Uploads still open belong to objects that were abandoned: free their parts.
        for u in self.uploads.drain() {
            self.run.dst.abort_upload(&u).await;
        }
        self.rec.cp.uploads.clear();
        let unfinished = !self.listing_done || !self.rec.window.is_empty();
        self.rec.record.state = if self.rec.stopped() {
            // Stale credentials are not the job's end: a run with the Secret's current
            // values goes on from the checkpoint.
            match &self.rec.record.fatal {
                Some(f) if f.credentials_went_stale() => ShardState::Paused,
                _ => ShardState::Failed,
            }
        } else if self.stopping.is_some() && unfinished {
            ShardState::Paused
        } else {
            ShardState::Completed
        };
        self.rec.record.bytes_per_second = 0;
        self.checkpoint().await;
        self.run.live.send_replace(self.rec.record.clone());
        self.rec.record
    }

    async fn checkpoint(&mut self) {
        self.run.checkpoint(&mut self.rec).await;
    }
}

/// The objects to keep in flight: the shard's live limit, else the plan's.
fn live_concurrency(run: &ShardRun) -> usize {
    run.limits
        .concurrency()
        .unwrap_or(run.plan.transfer.concurrency as usize)
        .max(1)
}

/// Keys registered and not yet popped from the watermark window at most, for `concurrency`.
fn window_cap(concurrency: usize) -> usize {
    (concurrency * 16).max(4096)
}

/// Key prefixes (relative to the destination) that are never delete candidates: the backup
/// prefix, where it lies below the destination's own prefix.
fn protected_prefixes(run: &ShardRun) -> Vec<String> {
    let Some(backup) = run
        .plan
        .transfer
        .deletes
        .as_ref()
        .and_then(|d| d.backup_prefix.as_deref())
    else {
        return Vec::new();
    };
    let root = run.dst.full_key("");
    backup
        .strip_prefix(root.as_str())
        .map(|rel| vec![rel.to_string()])
        .unwrap_or_default()
}
