//! Copies one shard: list the source range (from the checkpoint on), merge it with the
//! destination listing, filter, decide, copy with bounded concurrency, and record outcomes in
//! listing order (watermark, counters, reports, checkpoint).
//!
//! - [`merge`]: the listing side, pure over two sorted listings;
//! - [`census`]: the count-only listing that makes the total known early;
//! - [`record`]: outcomes into the live record, the checkpoint and the report;
//! - [`pump`]: the loop that moves work from the listing to copies and records what ends;
//! - [`delete`]: the delete stage, over the candidates the copy stage recorded;
//! - [`rollback`]: the rollback stage, over what the job's stages wrote;
//! - [`check`]: the reads of Check mode (`verify: ReRead`) and of an inventory's SHA-256s.

pub mod census;
pub mod check;
pub mod delete;
pub mod merge;
pub mod pump;
pub mod record;
pub mod rollback;

use std::sync::Arc;
use std::time::Duration;

use ferry_core::{
    Checkpoint, FailureClass, JobPlan, ProgressStore, Selector, ShardProgress, ShardRange,
    ShardState, Stage, Transport,
};
use tokio::sync::watch;

use crate::checkpoint::Watermark;
use crate::error::TransferError;
use crate::limit::Limits;
use crate::report::{ReportWriter, Segments, SourceJournal};
use crate::retry::RetryPolicy;
use crate::stores::{ServerCopy, Sink, Source};
use record::{Breaker, Recorder};

/// Everything one shard run needs.
pub struct ShardRun {
    pub plan: Arc<JobPlan>,
    pub index: usize,
    pub src: Arc<dyn Source>,
    pub dst: Arc<dyn Sink>,
    /// The side whose root (bucket or directory) the report folder is under: the destination
    /// unless `spec.report` names another. None writes no report (dry runs).
    pub report: Option<Arc<dyn Sink>>,
    pub limits: Arc<Limits>,
    pub retry: RetryPolicy,
    /// Copies inside the service, when source and destination are one service and account.
    pub server: Option<Arc<dyn ServerCopy>>,
    pub progress: Arc<dyn ProgressStore>,
    /// The live progress record, for progress bars and the agent's progress writer.
    pub live: watch::Sender<ShardProgress>,
    /// Becomes true when the run must stop (signal, suspend).
    pub stop: watch::Receiver<bool>,
    /// How often the checkpoint is saved.
    pub checkpoint_every: Duration,
    /// Why the last save (report segment, then progress record) failed; None once one
    /// succeeds. A run that ends with one is not over: its final state is not saved.
    pub unsaved: Arc<std::sync::Mutex<Option<String>>>,
    /// The uploads in parts this run starts (for the checkpoint, a stop, and the sweep).
    pub uploads: Arc<crate::copy::UploadRegistry>,
}

impl ShardRun {
    fn range(&self) -> &ShardRange {
        &self.plan.shards[self.index]
    }

    /// Runs the shard to its end (completed, failed, paused or cancelled) and returns the
    /// final progress record, which is also saved.
    pub async fn run(self) -> ShardProgress {
        let (mut record, resumed_since) = match self.load().await {
            Ok(loaded) => loaded,
            Err(e) => {
                // Not "start over": that would write the report from its first segment again,
                // over what an earlier run wrote. The run is not over (see `unsaved`).
                tracing::warn!(error = %e, "the progress record could not be read");
                *self.unsaved.lock().unwrap() = Some(format!("reading the progress record: {e}"));
                let mut record = ShardProgress::new_for(&self.plan, self.index);
                record.state = ShardState::Paused;
                return record;
            }
        };
        if matches!(record.state, ShardState::Completed | ShardState::Cancelled) {
            self.live.send_replace(record.clone());
            return record;
        }
        if self.plan.transfer.cancel {
            record.state = ShardState::Cancelled;
            self.save(&record).await;
            return record;
        }
        match self.plan.stage {
            Stage::Delete => return self.run_deletes(record).await,
            Stage::Rollback => return self.run_rollback(record).await,
            Stage::Copy => {}
        }
        record.transport = Some(if self.server.is_some() {
            Transport::ServerSide
        } else {
            Transport::Streamed
        });
        let record = resumed(record);
        let selector = match Selector::new(&self.plan.transfer.selection) {
            Ok(s) => s,
            Err(e) => {
                // A plan whose filters do not compile here (version skew, a hand-made plan)
                // must never turn into "copy everything".
                let e = TransferError::new(
                    FailureClass::InvalidRequest,
                    format!("the plan's filters do not compile: {e}"),
                )
                .fatal();
                return self.failed_at_start(record, &e).await;
            }
        };
        let rec = self.recorder(record, Segments::Copy);
        let record = pump::Pump::start(&self, rec, selector, resumed_since)
            .run()
            .await;
        if record.state == ShardState::Completed && !self.plan.transfer.dry_run {
            // Uploads this run started but could not track (a create whose answer was lost)
            // are still open: a completed shard starts no more runs that would sweep them.
            self.sweep_uploads().await;
        }
        record
    }

    /// Ends the shard `Failed` before it started, on `e`.
    async fn failed_at_start(&self, mut record: ShardProgress, e: &TransferError) -> ShardProgress {
        record.state = ShardState::Failed;
        record.fatal = Some(e.sample(""));
        self.save(&record).await;
        self.live.send_replace(record.clone());
        record
    }

    /// The recorder of a resumed record: its checkpoint, and a writer of the shard's report
    /// folder from the checkpoint's segment on (none in a dry run).
    fn recorder(&self, record: ShardProgress, segments: Segments) -> Recorder {
        let cp: Checkpoint = record.checkpoint.clone();
        let report = self.report.as_ref().map(|root| {
            let folder = self.plan.shard_report_folder(self.range().index);
            ReportWriter::with(root.folder(&folder), cp.report_segment, segments)
        });
        Recorder {
            record,
            cp,
            window: Watermark::default(),
            report,
            breaker: Breaker::default(),
        }
    }

    /// Writes down what the source noted of verified objects ([`Source::settle`]: a
    /// database's write-back), the report segment covering the done prefix, then the
    /// checkpoint (which never moves past keys whose write-back or report lines are not
    /// written).
    pub(crate) async fn checkpoint(&self, rec: &mut Recorder) {
        if let Err(e) = self.src.settle(self.journal().as_ref()).await {
            tracing::warn!(error = %e, "could not write back to the source; keeping the old checkpoint");
            *self.unsaved.lock().unwrap() = Some(format!("the write-back: {e}"));
            return;
        }
        if let Some(r) = rec.report.as_mut() {
            if let Err(e) = r.flush().await {
                tracing::warn!(error = %e, "could not write the report segment; keeping the old checkpoint");
                *self.unsaved.lock().unwrap() = Some(format!("the report segment: {e}"));
                return;
            }
            rec.cp.report_segment = r.segment;
        }
        rec.record.checkpoint = rec.cp.clone();
        rec.record.updated_at = Some(chrono::Utc::now().to_rfc3339());
        self.save(&rec.record).await;
    }

    /// Where the source writes down what it changes at the source (the shard's report
    /// folder), if the run writes a report.
    fn journal(&self) -> Option<SourceJournal> {
        let root = self.report.as_ref()?;
        let folder = self.plan.shard_report_folder(self.range().index);
        Some(SourceJournal::new(root.folder(&folder)))
    }

    /// The delete stage: the candidates the copy stage recorded, deleted where still due.
    async fn run_deletes(&self, record: ShardProgress) -> ShardProgress {
        let record = resumed(record);
        let candidates = match delete::candidates(self).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the delete candidates; deleting nothing");
                return self.failed_at_start(record, &e).await;
            }
        };
        let rec = self.recorder(record, Segments::Delete);
        delete::run(self, rec, candidates).await
    }

    /// The rollback stage: what the job wrote, taken back where it is still what it wrote.
    async fn run_rollback(&self, record: ShardProgress) -> ShardProgress {
        let record = resumed(record);
        let lines = match rollback::written(self).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read what the job wrote; undoing nothing");
                return self.failed_at_start(record, &e).await;
            }
        };
        let mut rec = self.recorder(record, Segments::Rollback);
        // What the job changed at the source first (a database row's reference to its
        // object), so that no row points at an object the rollback deleted.
        let keep = match rollback::take_back_at_source(self, &mut rec).await {
            Ok(keep) => keep,
            Err(e) => {
                tracing::error!(error = %e, "cannot set back what the job changed at the source; deleting nothing");
                return self.failed_at_start(rec.record, &e).await;
            }
        };
        rollback::run(self, rec, lines, keep).await
    }

    /// Loads the shard's record, cleans up what an earlier run left (multipart uploads), and
    /// returns the record to go on from (a fresh one when there is none for this plan) with,
    /// when resuming, the time the first attempt started (Unix seconds); or why the record
    /// could not be read.
    async fn load(&self) -> Result<(ShardProgress, Option<i64>), String> {
        let loaded = self.progress.load().await?;
        // Uploads recorded by an earlier run were left behind by a kill: abort them.
        if let Some(old) = &loaded {
            for u in &old.checkpoint.uploads {
                self.dst
                    .abort_upload(&crate::stores::Upload {
                        key: u.key.clone(),
                        id: u.upload_id.clone(),
                    })
                    .await;
            }
        }
        let mut record = match loaded {
            Some(r) if r.is_for(&self.plan, self.index) => r,
            // The delete stage goes on from the copy stage's record (its counters stay).
            Some(r)
                if self.plan.stage == Stage::Delete
                    && r.is_for(&self.plan.copy_stage(), self.index) =>
            {
                r.continued_for(&self.plan, self.index)
            }
            _ => ShardProgress::new_for(&self.plan, self.index),
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
        Ok((record, resumed_since))
    }

    /// Aborts the multipart uploads this run started but could not record (a create whose
    /// answer was lost): open uploads of the keys it uploaded in parts.
    /// Called when the shard has completed (every upload it recorded is closed by then).
    /// Nothing else is touched: an upload of another writer (a live application, another
    /// job) under the same prefix is left alone. (Uploads a killed run had recorded are
    /// aborted from its checkpoint when the shard starts again.)
    async fn sweep_uploads(&self) {
        let uploads = match self.dst.open_uploads().await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list multipart uploads; not sweeping");
                return;
            }
        };
        for open in uploads {
            let key = &open.upload.key;
            // Of a key this run uploaded in parts and completed: a leftover of its own
            // ambiguous create (another writer of that very key would overwrite the copy
            // anyway). The time it began is not used: servers report it loosely (moto gives a
            // fixed date).
            let ours = self.uploads.started(key);
            if ours {
                tracing::info!(key = %self.dst.full_key(key), "aborting an upload this run could not record");
                self.dst.abort_upload(&open.upload).await;
            }
        }
    }

    async fn save(&self, rec: &ShardProgress) {
        let res = self.progress.save(rec).await;
        if let Err(e) = &res {
            tracing::warn!(error = %e, "could not save the progress record");
        }
        *self.unsaved.lock().unwrap() = res.err().map(|e| format!("the progress record: {e}"));
    }
}

/// Settles the results of a stage that walks a list of keys (the delete and rollback stages),
/// in key order as `results` yields them: `outcome` makes each result a key, its size and its
/// outcome; checkpoints every `checkpoint_every`; a stop ends it `Paused` at its checkpoint,
/// the end of the list `Completed`. Returns the final record (also saved).
pub(crate) async fn settle_in_order<T>(
    run: &ShardRun,
    mut rec: Recorder,
    results: impl futures::Stream<Item = T>,
    mut outcome: impl FnMut(&mut Recorder, T) -> (String, u64, record::Outcome),
) -> ShardProgress {
    use futures::StreamExt;
    let mut results = std::pin::pin!(results);
    let mut stop = run.stop.clone();
    let mut last_save = tokio::time::Instant::now();
    let mut stopped = false;
    loop {
        let next = tokio::select! {
            n = results.next() => n,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    stopped = true;
                    break;
                }
                continue;
            }
        };
        let Some(result) = next else { break };
        let (key, size, out) = outcome(&mut rec, result);
        let seq = rec.register_key(&key);
        rec.settle(seq, size, out);
        if last_save.elapsed() >= run.checkpoint_every {
            run.checkpoint(&mut rec).await;
            run.live.send_replace(rec.record.clone());
            last_save = tokio::time::Instant::now();
        }
    }
    rec.record.state = if stopped {
        ShardState::Paused
    } else {
        ShardState::Completed
    };
    rec.record.listing_complete = true;
    run.checkpoint(&mut rec).await;
    run.live.send_replace(rec.record.clone());
    rec.record
}

/// A record going on from its checkpoint: counters and failures are those of the checkpoint;
/// what ran past it is redone.
fn resumed(mut record: ShardProgress) -> ShardProgress {
    let cp = &record.checkpoint;
    record.counters = cp.counters.clone();
    record.failures_by_class = cp.failures_by_class.clone();
    record.fatal = None;
    record.listing_complete = false;
    record.expected = None;
    record.state = ShardState::Running;
    record
}

#[cfg(test)]
mod tests;
