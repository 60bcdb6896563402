//! Copies one shard: list the source range (from the checkpoint on), merge it with the
//! destination listing, filter, decide, copy with bounded concurrency, and record outcomes in
//! listing order (watermark, counters, reports, checkpoint).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::aggregate::MAX_FIRST_ERRORS;
use ferry_api::{
    Checkpoint, Counters, ErrorSample, FailureClass, JobPlan, OverwritePolicy, Selector,
    ShardProgress, ShardRange, ShardState, Totals,
};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::checkpoint::{ProgressStore, Recorded, Watermark};
use crate::copy::{Copied, Copier, UploadRegistry};
use crate::diff::needs_copy;
use crate::error::TransferError;
use crate::limit::Limits;
use crate::report::{FailureLine, ManifestLine, ReportWriter};
use crate::retry::RetryPolicy;
use crate::store::{ObjectInfo, Store, Upload};

/// Job-fatal errors tolerated before the shard stops (circuit breaker).
const FATAL_THRESHOLD: u32 = 3;
/// Access denials in a row, with nothing copied yet, that mean the job cannot work at all.
const DENIED_THRESHOLD: u32 = 5;
/// How long in-flight objects may take to finish after a stop before they are abandoned.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the listing must have waited for the copy before a count-only listing starts.
const CENSUS_AFTER: Duration = Duration::from_secs(2);

/// Everything one shard run needs.
pub struct ShardRun {
    pub plan: Arc<JobPlan>,
    pub index: usize,
    pub src: Store,
    pub dst: Store,
    /// Where reports go (the destination root by default). None writes none (dry runs).
    pub report: Option<Store>,
    pub limits: Arc<Limits>,
    pub retry: RetryPolicy,
    /// Source and destination are the same S3 service and account.
    pub server_side: bool,
    pub progress: Arc<dyn ProgressStore>,
    /// The live progress record, for progress bars and the agent's progress writer.
    pub live: watch::Sender<ShardProgress>,
    /// Becomes true when the run must stop (signal, suspend).
    pub stop: watch::Receiver<bool>,
    /// How often the checkpoint is saved.
    pub checkpoint_every: Duration,
}

/// What the listing side hands the copying side, in key order.
enum Work {
    Copy {
        info: ObjectInfo,
        replaced: bool,
    },
    /// Up to date because an earlier attempt of this shard wrote it after its last checkpoint.
    Rewritten {
        info: ObjectInfo,
        checksum: String,
    },
    Skip(ObjectInfo),
    WouldCopy(ObjectInfo),
    Archived(ObjectInfo),
    Invalid(ObjectInfo, String),
    ListingFailed(TransferError),
}

type Listing = BoxStream<'static, Result<ObjectInfo, TransferError>>;

/// A listing of only the given keys, looked up one by one (for retries of failed keys).
fn keys_listing(store: Store, keys: Vec<String>) -> Listing {
    futures::stream::iter(keys)
        .then(move |k| {
            let store = store.clone();
            async move { store.head(&k).await.map(|o| o.map(|(i, _)| i)) }
        })
        .filter_map(|r| async move { r.transpose() })
        .boxed()
}

/// Merges the sorted source and destination listings and decides about each selected key.
///
/// `resumed_since`: when resuming, the start of the first attempt; an up-to-date destination
/// object written since then was copied by that attempt after its last checkpoint, and is
/// counted (and listed in the manifest) as copied rather than as skipped.
async fn produce(
    mut src: Listing,
    dst: Listing,
    selector: Selector,
    policy: OverwritePolicy,
    dry_run: bool,
    resumed_since: Option<i64>,
    tx: mpsc::Sender<Work>,
) -> Option<Totals> {
    let mut dst = dst.peekable();
    // What has been handed over: the shard's total once the source listing has reached its
    // end (long before the copying side has taken the last of it from the queue).
    let mut sent = Totals::default();
    while let Some(item) = src.next().await {
        let info = match item {
            Ok(i) => i,
            Err(e) => {
                let _ = tx.send(Work::ListingFailed(e)).await;
                return None;
            }
        };
        if !selector.selects(&info.key, info.size, info.modified) {
            continue;
        }
        let mut existing = None;
        loop {
            match std::pin::Pin::new(&mut dst).peek().await {
                Some(Ok(d)) if d.key < info.key => {
                    dst.next().await;
                }
                Some(Ok(d)) if d.key == info.key => {
                    existing = dst.next().await.and_then(Result::ok);
                    break;
                }
                Some(Err(_)) => {
                    if let Some(Err(e)) = dst.next().await {
                        let _ = tx.send(Work::ListingFailed(e)).await;
                    }
                    return None;
                }
                _ => break,
            }
        }
        let size = info.size;
        let work = if let Some(why) = info.invalid.clone() {
            Work::Invalid(info, why)
        } else if info.archived {
            Work::Archived(info)
        } else if needs_copy(policy, &info, existing.as_ref()) {
            if dry_run {
                Work::WouldCopy(info)
            } else {
                Work::Copy {
                    info,
                    replaced: existing.is_some(),
                }
            }
        } else {
            match existing {
                Some(d)
                    if resumed_since
                        .is_some_and(|t| d.modified.is_some_and(|m| m.timestamp() >= t)) =>
                {
                    Work::Rewritten {
                        info,
                        checksum: d.plain_md5().unwrap_or_default().to_string(),
                    }
                }
                _ => Work::Skip(info),
            }
        };
        sent.objects += 1;
        sent.bytes += size;
        if tx.send(work).await.is_err() {
            return None;
        }
    }
    Some(sent)
}

/// Counts the selected keys of `listing` and their bytes, on top of `base` (a count-only
/// listing: nothing is held, so it runs ahead of the copy in constant memory).
async fn census(
    mut listing: Listing,
    selector: Selector,
    base: Totals,
) -> Result<Totals, TransferError> {
    let mut t = base;
    while let Some(item) = listing.next().await {
        let info = item?;
        if selector.selects(&info.key, info.size, info.modified) {
            t.objects += 1;
            t.bytes += info.size;
        }
    }
    Ok(t)
}

/// Throughput over the last few seconds.
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

struct State {
    record: ShardProgress,
    cp: Checkpoint,
    window: Watermark,
    report: Option<ReportWriter>,
    fatal_count: u32,
    denied_in_a_row: u32,
}

impl State {
    fn note_error(&mut self, key: &str, e: &TransferError) {
        if self.record.first_errors.len() < MAX_FIRST_ERRORS {
            self.record.first_errors.push(ErrorSample {
                key: key.to_string(),
                class: e.class,
                code: e.code.clone(),
                message: e.message.clone(),
            });
        }
    }

    /// Records how the key at `seq` ended: in the live counters now, in the checkpoint once
    /// every key before it is done too (the delta then also counts the key in the totals).
    fn settle(
        &mut self,
        seq: u64,
        size: u64,
        outcome: Counters,
        failure: Option<FailureLine>,
        written: Option<ManifestLine>,
    ) {
        self.record.counters.add(&outcome);
        let delta = Counters {
            objects_total: 1,
            bytes_total: size,
            ..outcome
        };
        self.window.complete(
            seq,
            Recorded {
                delta,
                failure,
                written,
            },
        );
    }

    /// Moves the done prefix into the checkpoint and the report buffers.
    fn drain(&mut self) {
        while let Some((key, rec)) = self.window.pop_ready() {
            self.cp.counters.add(&rec.delta);
            if let Some(f) = &rec.failure {
                *self.cp.failures_by_class.entry(f.class).or_insert(0) += 1;
            }
            if let Some(r) = self.report.as_mut() {
                if let Some(f) = &rec.failure {
                    r.failure(f);
                }
                if let Some(w) = &rec.written {
                    r.written(w);
                }
            }
            self.cp.watermark = Some(key);
        }
    }
}

impl ShardRun {
    fn range(&self) -> ShardRange {
        self.plan.shards[self.index].clone()
    }

    /// Starts the count-only listing of the range beyond the last key taken (every selected
    /// key up to it is in the counters already; `after` is where the run started).
    fn start_census(
        &self,
        st: &State,
        after: Option<String>,
        selector: &Selector,
    ) -> JoinHandle<Result<Totals, TransferError>> {
        let from = st
            .window
            .last_key()
            .map(str::to_string)
            .or_else(|| st.cp.watermark.clone())
            .or(after);
        let base = st.record.counters.totals();
        tokio::spawn(census(
            self.src.list(from, self.range().until),
            selector.clone(),
            base,
        ))
    }

    fn src_key(&self, rel: &str) -> String {
        match &self.plan.spec.source.s3 {
            Some(s) => format!("{}{rel}", s.prefix),
            None => rel.to_string(),
        }
    }

    fn dst_key(&self, rel: &str) -> String {
        match &self.plan.spec.destination.s3 {
            Some(s) => format!("{}{rel}", s.prefix),
            None => rel.to_string(),
        }
    }

    /// Runs the shard to its end (completed, failed, paused or cancelled) and returns the
    /// final progress record, which is also saved.
    pub async fn run(mut self) -> ShardProgress {
        let range = self.range();
        let fresh = ShardProgress {
            shard: range.index,
            spec_hash: self.plan.spec_hash.clone(),
            ..Default::default()
        };
        let loaded = match self.progress.load().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the progress record could not be read; starting over");
                None
            }
        };
        // Uploads recorded by an earlier run were left behind by a kill: abort them.
        if let Some(old) = &loaded {
            for u in &old.checkpoint.uploads {
                self.dst
                    .abort_upload(&Upload {
                        key: u.key.clone(),
                        id: u.upload_id.clone(),
                    })
                    .await;
            }
        }
        if !self.plan.spec.dry_run {
            self.sweep_uploads(&range).await;
        }
        let mut record = match loaded {
            Some(r) if r.spec_hash == self.plan.spec_hash => r,
            _ => fresh,
        };
        let resumed_since = record
            .started_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp());
        if record.started_at.is_none() {
            record.started_at = Some(chrono::Utc::now().to_rfc3339());
        }
        record.checkpoint.uploads.clear();
        if record.state == ShardState::Completed || record.state == ShardState::Cancelled {
            self.live.send_replace(record.clone());
            return record;
        }
        if self.plan.spec.cancel {
            record.state = ShardState::Cancelled;
            self.save(&record).await;
            return record;
        }
        // Resume: counters and failures are those of the checkpoint; what ran past it is redone.
        let cp = record.checkpoint.clone();
        record.counters = cp.counters.clone();
        record.failures_by_class = cp.failures_by_class.clone();
        record.fatal = None;
        record.listing_complete = false;
        record.expected = None;
        record.state = ShardState::Running;
        let folder = format!("{}shard-{}/", self.plan.report_prefix, range.index);
        let report = self
            .report
            .clone()
            .map(|store| ReportWriter::new(store, folder, cp.report_segment));
        let mut st = State {
            record,
            cp,
            window: Watermark::default(),
            report,
            fatal_count: 0,
            denied_in_a_row: 0,
        };

        let after = match (&range.after, &st.cp.watermark) {
            (Some(a), Some(w)) => Some(a.max(w).clone()),
            (a, w) => w.clone().or(a.clone()),
        };
        let (src_list, dst_list) = match &self.plan.only_keys {
            Some(keys) => {
                let keys: Vec<String> = keys
                    .iter()
                    .filter(|k| {
                        range.contains(k) && after.as_deref().is_none_or(|a| k.as_str() > a)
                    })
                    .cloned()
                    .collect();
                (
                    keys_listing(self.src.clone(), keys.clone()),
                    keys_listing(self.dst.clone(), keys),
                )
            }
            None => (
                self.src.list(after.clone(), range.until.clone()),
                self.dst.list(after.clone(), range.until.clone()),
            ),
        };
        let selector = Selector::new(&self.plan.spec.filters).unwrap_or_else(|_| Selector::all());
        let (tx, mut rx) = mpsc::channel::<Work>(1024);
        let mut producer = tokio::spawn(produce(
            src_list,
            dst_list,
            selector.clone(),
            self.plan.spec.overwrite,
            self.plan.spec.dry_run,
            resumed_since,
            tx,
        ));

        let spec = &self.plan.spec;
        let uploads = Arc::new(UploadRegistry::default());
        let moved = Arc::new(AtomicU64::new(0));
        let copier = Arc::new(Copier {
            src: self.src.clone(),
            dst: self.dst.clone(),
            threshold: spec.multipart.threshold.bytes(),
            part_size: spec.multipart.part_size.bytes(),
            verify: spec.verify,
            server_side: self.server_side,
            limits: self.limits.clone(),
            retry: self.retry.clone(),
            uploads: uploads.clone(),
            bytes_moved: moved.clone(),
        });
        let concurrency = spec.parallelism.concurrency.max(1) as usize;
        let window_cap = (concurrency * 16).max(4096);
        let mut inflight: FuturesUnordered<
            JoinHandle<(u64, ObjectInfo, bool, Result<Copied, TransferError>)>,
        > = FuturesUnordered::new();
        let mut listing_done = false;
        let mut stopping: Option<Instant> = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        let mut last_save = Instant::now();
        let mut rate = Rate {
            samples: VecDeque::new(),
        };
        // The shard's total is known once the listing has reached its end: the counters at
        // the resume point plus what the listing found after it.
        let resumed_at = st.record.counters.totals();
        let mut listed_known = false;
        // Long before that, a count-only listing makes it known. It starts only once
        // the listing has waited for the copy (the work queue full) for CENSUS_AFTER: where
        // listing is what takes the time (a sync with little to copy), a second listing would
        // only slow it down.
        let mut census_task: Option<JoinHandle<Result<Totals, TransferError>>> = None;
        let mut census_started = self.plan.only_keys.is_some();
        let mut queue_full_since: Option<Instant> = None;

        loop {
            let halted = stopping.is_some() || st.record.fatal.is_some();
            if inflight.is_empty() && (listing_done || halted) {
                break;
            }
            let can_take = !halted
                && !listing_done
                && inflight.len() < concurrency
                && st.window.len() < window_cap;
            tokio::select! {
                changed = self.stop.changed(), if stopping.is_none() => {
                    if changed.is_err() || *self.stop.borrow() {
                        stopping = Some(Instant::now());
                    }
                }
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    match done {
                        Ok((seq, info, replaced, res)) => self.finish(&mut st, seq, &info, replaced, res),
                        Err(e) => tracing::error!(error = %e, "a copy task failed"),
                    }
                    st.drain();
                }
                work = rx.recv(), if can_take => {
                    match work {
                        None => {
                            listing_done = true;
                            st.record.listing_complete = true;
                        }
                        Some(Work::ListingFailed(e)) => {
                            tracing::error!(error = %e, "listing failed");
                            st.note_error("", &e);
                            st.record.fatal = Some(ErrorSample { key: String::new(), class: e.class, code: e.code.clone(), message: e.message.clone() });
                        }
                        Some(work) => self.take(&mut st, work, &copier, &mut inflight),
                    }
                }
                listed = &mut producer, if !listed_known => {
                    listed_known = true;
                    if let Some(c) = census_task.take() {
                        c.abort();
                    }
                    if let Ok(Some(t)) = listed {
                        st.record.expected = Some(resumed_at + t);
                    }
                }
                counted = async { census_task.as_mut().expect("guarded").await }, if census_task.is_some() => {
                    census_task = None;
                    match counted {
                        Ok(Ok(t)) => {
                            st.record.expected.get_or_insert(t);
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "the count-only listing failed; the total stays unknown until the listing ends"),
                        Err(e) => tracing::debug!(error = %e, "the count-only listing stopped"),
                    }
                }
                _ = ticker.tick() => {
                    queue_full_since = if rx.capacity() == 0 {
                        queue_full_since.or(Some(Instant::now()))
                    } else {
                        None
                    };
                    if !census_started
                        && !listed_known
                        && !listing_done
                        && !halted
                        && queue_full_since.is_some_and(|t| t.elapsed() >= CENSUS_AFTER)
                    {
                        census_started = true;
                        census_task = Some(self.start_census(&st, after.clone(), &selector));
                    }
                    if let Some(t) = stopping {
                        if t.elapsed() > STOP_GRACE {
                            for h in inflight.iter() {
                                h.abort();
                            }
                            inflight.clear();
                        }
                    }
                    st.record.bytes_per_second = rate.observe(moved.load(Ordering::Relaxed));
                    self.live.send_replace(st.record.clone());
                    if last_save.elapsed() >= self.checkpoint_every {
                        st.cp.uploads = uploads.snapshot();
                        self.checkpoint(&mut st).await;
                        last_save = Instant::now();
                    }
                }
            }
        }
        producer.abort();
        if let Some(c) = census_task {
            c.abort();
        }
        // Uploads still open belong to objects that were abandoned: free their parts.
        for u in uploads.drain() {
            self.dst.abort_upload(&u).await;
        }
        st.cp.uploads.clear();
        st.record.state = if st.record.fatal.is_some() {
            ShardState::Failed
        } else if stopping.is_some() && (!listing_done || !st.window.is_empty()) {
            ShardState::Paused
        } else {
            ShardState::Completed
        };
        st.record.bytes_per_second = 0;
        self.checkpoint(&mut st).await;
        self.live.send_replace(st.record.clone());
        st.record
    }

    /// Registers a unit of work in listing order and starts it (or records it at once).
    fn take(
        &self,
        st: &mut State,
        work: Work,
        copier: &Arc<Copier>,
        inflight: &mut FuturesUnordered<
            JoinHandle<(u64, ObjectInfo, bool, Result<Copied, TransferError>)>,
        >,
    ) {
        let info = match &work {
            Work::Copy { info, .. }
            | Work::Rewritten { info, .. }
            | Work::Skip(info)
            | Work::WouldCopy(info)
            | Work::Archived(info)
            | Work::Invalid(info, _) => info.clone(),
            Work::ListingFailed(_) => unreachable!("handled by the caller"),
        };
        st.record.counters.objects_total += 1;
        st.record.counters.bytes_total += info.size;
        let seq = st.window.push(info.key.clone());
        match work {
            Work::Copy { info, replaced } => {
                let c = copier.clone();
                inflight.push(tokio::spawn(async move {
                    let res = c.copy(&info).await;
                    (seq, info, replaced, res)
                }));
            }
            Work::Rewritten { info, checksum } => {
                self.finish(st, seq, &info, false, Ok(Copied::Done { checksum }));
            }
            Work::Skip(info) => {
                st.settle(
                    seq,
                    info.size,
                    Counters {
                        objects_skipped: 1,
                        bytes_skipped: info.size,
                        ..Default::default()
                    },
                    None,
                    None,
                );
            }
            Work::WouldCopy(info) => {
                st.settle(
                    seq,
                    info.size,
                    Counters {
                        objects_would_copy: 1,
                        bytes_would_copy: info.size,
                        ..Default::default()
                    },
                    None,
                    None,
                );
            }
            Work::Archived(info) => {
                let e = TransferError::new(
                    FailureClass::Archived,
                    "skipped: the object is in an archive storage class (restore it first)",
                );
                *st.record
                    .failures_by_class
                    .entry(FailureClass::Archived)
                    .or_insert(0) += 1;
                let failure = Some(self.failure_line(&info, &e));
                st.settle(
                    seq,
                    info.size,
                    Counters {
                        objects_archived: 1,
                        ..Default::default()
                    },
                    failure,
                    None,
                );
            }
            Work::Invalid(info, why) => {
                let e = TransferError::new(FailureClass::Unrepresentable, why).retryable(false);
                self.fail(st, seq, &info, &e);
            }
            Work::ListingFailed(_) => {}
        }
        st.drain();
    }

    /// Aborts multipart uploads left in the shard's range of the destination by an earlier
    /// run that could not record them (a create whose answer was lost, a kill before the
    /// checkpoint): uploads started before this run, for keys the source holds.
    async fn sweep_uploads(&self, range: &ShardRange) {
        let Store::S3(d) = &self.dst else { return };
        let started = chrono::Utc::now();
        let uploads = match d.list_uploads().await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list multipart uploads; not sweeping");
                return;
            }
        };
        for (key, id, initiated) in uploads {
            if !range.contains(&key) || initiated.is_some_and(|t| t > started) {
                continue;
            }
            if matches!(self.src.head(&key).await, Ok(Some(_))) {
                tracing::info!(key = %self.dst_key(&key), "aborting a stale multipart upload");
                self.dst.abort_upload(&Upload { key, id }).await;
            }
        }
    }

    fn failure_line(&self, info: &ObjectInfo, e: &TransferError) -> FailureLine {
        FailureLine {
            key: self.src_key(&info.key),
            size: info.size,
            class: e.class,
            code: e.code.clone(),
            attempts: e.attempts,
            message: e.message.clone(),
        }
    }

    fn fail(&self, st: &mut State, seq: u64, info: &ObjectInfo, e: &TransferError) {
        *st.record.failures_by_class.entry(e.class).or_insert(0) += 1;
        st.note_error(&self.src_key(&info.key), e);
        let outcome = Counters {
            objects_failed: 1,
            bytes_failed: info.size,
            ..Default::default()
        };
        st.settle(
            seq,
            info.size,
            outcome,
            Some(self.failure_line(info, e)),
            None,
        );
    }

    fn finish(
        &self,
        st: &mut State,
        seq: u64,
        info: &ObjectInfo,
        replaced: bool,
        res: Result<Copied, TransferError>,
    ) {
        match res {
            Ok(Copied::Done { checksum }) => {
                st.denied_in_a_row = 0;
                let written = ManifestLine {
                    key: self.dst_key(&info.key),
                    size: info.size,
                    checksum,
                    replaced,
                };
                st.settle(
                    seq,
                    info.size,
                    Counters {
                        objects_copied: 1,
                        bytes_copied: info.size,
                        ..Default::default()
                    },
                    None,
                    Some(written),
                );
            }
            Ok(Copied::Vanished) => {
                st.settle(
                    seq,
                    info.size,
                    Counters {
                        objects_vanished: 1,
                        ..Default::default()
                    },
                    None,
                    None,
                );
            }
            Err(e) => {
                if e.class == FailureClass::AccessDenied && !e.fatal {
                    st.denied_in_a_row += 1;
                }
                let breaker = e.fatal
                    || (st.denied_in_a_row >= DENIED_THRESHOLD
                        && st.record.counters.objects_copied == 0);
                if breaker {
                    // Not recorded: the checkpoint stays before this key, so a fixed job redoes it.
                    st.fatal_count += 1;
                    tracing::warn!(key = %self.src_key(&info.key), error = %e, "job-fatal error");
                    if st.fatal_count >= FATAL_THRESHOLD || !e.fatal {
                        st.record.fatal = Some(ErrorSample {
                            key: self.src_key(&info.key),
                            class: e.class,
                            code: e.code.clone(),
                            message: e.message.clone(),
                        });
                    }
                    if st.record.fatal.is_none() {
                        // Below the threshold: count it as an ordinary failure.
                        self.fail(st, seq, info, &e);
                    }
                    return;
                }
                tracing::debug!(key = %self.src_key(&info.key), error = %e, "object failed");
                self.fail(st, seq, info, &e);
            }
        }
    }

    /// Writes the report segment covering the done prefix, then the checkpoint.
    async fn checkpoint(&self, st: &mut State) {
        if let Some(r) = st.report.as_mut() {
            if let Err(e) = r.flush().await {
                // The checkpoint must not move past keys whose report lines are not written.
                tracing::warn!(error = %e, "could not write the report segment; keeping the old checkpoint");
                return;
            }
            st.cp.report_segment = r.segment;
        }
        st.record.checkpoint = st.cp.clone();
        st.record.updated_at = Some(chrono::Utc::now().to_rfc3339());
        let rec = st.record.clone();
        self.save(&rec).await;
    }

    async fn save(&self, rec: &ShardProgress) {
        if let Err(e) = self.progress.save(rec).await {
            tracing::warn!(error = %e, "could not save the progress record");
        }
    }
}
