//! The recording side of a shard: counts each object's outcome in the live record at once, and
//! in the checkpoint (with its report lines) once every key before it is done too, so the
//! watermark never passes a key whose outcome is not written down.

use ferry_core::progress::MAX_FIRST_ERRORS;
use ferry_core::{Checkpoint, Counters, ErrorSample, FailureClass, ShardProgress};

use crate::audit::{CheckLine, Difference, InventoryLine};
use crate::checkpoint::{Recorded, Watermark};
use crate::error::TransferError;
use crate::report::{DeleteLine, FailureLine, ManifestLine, ReportWriter};
use crate::stores::ObjectInfo;

/// Job-fatal errors tolerated before the shard stops (circuit breaker).
const FATAL_THRESHOLD: u32 = 3;
/// Access denials in a row, with nothing copied yet, that mean the job cannot work at all.
const DENIED_THRESHOLD: u32 = 5;

/// How one object ended.
#[derive(Debug)]
pub enum Outcome {
    /// Written and verified; `line` goes to the manifest.
    Copied(ManifestLine),
    /// Already up to date at the destination.
    Skipped,
    /// A dry run would copy it.
    /// A dry run would copy it, in this many parts (0: in one request).
    WouldCopy { parts: u64 },
    /// Deleted at the source before it could be read.
    Vanished,
    /// In an archive storage class: skipped, reported, not counted as failed.
    Archived(FailureLine),
    /// Failed; `line` goes to the failure report.
    Failed(FailureLine),
    /// A destination key absent at the source; `line` goes to the candidates.
    Candidate(DeleteLine),
    /// A candidate deleted (delete stage); `line` goes to the manifest.
    Deleted(ManifestLine),
    /// A candidate not deleted after all (back at the source, changed, already gone).
    Kept,
    /// A candidate whose delete failed; `line` goes to the delete stage's failure report.
    DeleteFailed(FailureLine),
    /// Rollback: an object the job wrote, deleted; `line` (the job's) goes to the rollback's
    /// manifest.
    RolledBack(ManifestLine),
    /// Rollback: an object the job replaced or deleted, put back from its backup.
    Restored(ManifestLine),
    /// Rollback: nothing to undo (already gone, or already restored).
    RollbackGone,
    /// Rollback: not undone; `line` says why (its class) in the rollback's report.
    RollbackKept(FailureLine),
    /// Check mode: the destination holds the same object.
    Identical,
    /// Check mode: a key that is not identical on both sides (an extra destination key
    /// too); `line` goes to the check report.
    Differs(CheckLine),
}

impl Outcome {
    /// What the outcome adds to the counters, for an object of `size` bytes.
    fn counters(&self, size: u64) -> Counters {
        let mut c = Counters::default();
        match self {
            Outcome::Copied(_) => (c.objects_copied, c.bytes_copied) = (1, size),
            Outcome::Skipped => (c.objects_skipped, c.bytes_skipped) = (1, size),
            Outcome::WouldCopy { parts } => c = Counters::would_copy(size, *parts),
            Outcome::Vanished => c.objects_vanished = 1,
            Outcome::Archived(_) => c.objects_archived = 1,
            Outcome::Failed(_) => (c.objects_failed, c.bytes_failed) = (1, size),
            Outcome::Candidate(_) => {
                (
                    c.objects_to_delete,
                    c.bytes_to_delete,
                    c.destination_objects,
                ) = (1, size, 1)
            }
            Outcome::Deleted(_) => (c.objects_deleted, c.bytes_deleted) = (1, size),
            Outcome::Kept => c.objects_delete_kept = 1,
            Outcome::DeleteFailed(_) => c.objects_delete_failed = 1,
            Outcome::RolledBack(_) => c.objects_rolled_back = 1,
            Outcome::Restored(_) => c.objects_restored = 1,
            Outcome::RollbackGone => c.objects_rollback_gone = 1,
            Outcome::RollbackKept(_) => c.objects_rollback_kept = 1,
            Outcome::Identical => (c.objects_identical, c.bytes_checked) = (1, size),
            Outcome::Differs(line) => match line.difference {
                Difference::Missing => (c.objects_missing, c.bytes_checked) = (1, size),
                Difference::Extra => c.objects_extra = 1,
                _ => (c.objects_different, c.bytes_checked) = (1, size),
            },
        }
        c
    }

    /// Whether the outcome is of a selected source object (counted in the totals).
    fn of_source(&self) -> bool {
        !matches!(
            self,
            Outcome::Candidate(_) | Outcome::Deleted(_) | Outcome::Kept | Outcome::DeleteFailed(_)
        ) && !matches!(self, Outcome::Differs(l) if l.difference == Difference::Extra)
    }
}

/// What the circuit breaker makes of an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An ordinary failure of this object.
    Fail,
    /// The job cannot work: stop the shard without recording the object, so the checkpoint
    /// stays before it and a fixed job redoes it.
    Stop,
}

/// Tells an object's failure from the job's: a few job-fatal errors (bad credentials, a
/// missing bucket) are counted as failures, the next stops the shard; so do access denials in
/// a row before anything at all was copied.
#[derive(Debug, Default)]
pub struct Breaker {
    fatal_seen: u32,
    denied_in_a_row: u32,
}

impl Breaker {
    pub fn copied(&mut self) {
        self.denied_in_a_row = 0;
    }

    pub fn judge(&mut self, e: &TransferError, anything_copied: bool) -> Verdict {
        // Credentials that stopped working mid-run fail every object after them: none is
        // recorded, the shard stops where it is, to go on with the Secret's current values.
        if ferry_core::credentials::went_stale(e.class, e.code.as_deref()) {
            return Verdict::Stop;
        }
        if e.fatal {
            self.fatal_seen += 1;
            return if self.fatal_seen >= FATAL_THRESHOLD {
                Verdict::Stop
            } else {
                Verdict::Fail
            };
        }
        if e.class == FailureClass::AccessDenied {
            self.denied_in_a_row += 1;
            if self.denied_in_a_row >= DENIED_THRESHOLD && !anything_copied {
                return Verdict::Stop;
            }
        }
        Verdict::Fail
    }
}

impl TransferError {
    /// The error as the status shows it, for the object at `key`.
    pub fn sample(&self, key: &str) -> ErrorSample {
        ErrorSample {
            key: key.to_string(),
            class: self.class,
            code: self.code.clone(),
            message: self.message.clone(),
        }
    }

    /// The error as the failure report lists it, for `info` at (full) `key`.
    pub fn report_line(&self, key: String, info: &ObjectInfo) -> FailureLine {
        FailureLine::of(key, info.size, self)
    }
}

/// The live record, the checkpoint and the report of a running shard.
pub struct Recorder {
    pub record: ShardProgress,
    pub cp: Checkpoint,
    pub window: Watermark,
    pub report: Option<ReportWriter>,
    pub breaker: Breaker,
}

impl Recorder {
    /// Registers the next key in listing order (counted as listed); returns its sequence.
    pub fn register(&mut self, info: &ObjectInfo) -> u64 {
        self.record.counters.objects_total += 1;
        self.record.counters.bytes_total += info.size;
        self.window.push(info.key.clone())
    }

    /// Registers the next key in listing order that is not a selected source object (a
    /// delete candidate): it moves the watermark but is not counted as listed.
    pub fn register_key(&mut self, key: &str) -> u64 {
        self.window.push(key.to_string())
    }

    /// Records how the key at `seq` ended: in the live counters now, in the checkpoint once
    /// every key before it is done too (the delta then also counts the key in the totals).
    pub fn settle(&mut self, seq: u64, size: u64, outcome: Outcome) {
        self.settle_at(seq, size, outcome, false)
    }

    /// [`Recorder::settle`], counting the key among the destination's objects when
    /// `at_destination` (delete propagation's percentage base).
    pub fn settle_at(&mut self, seq: u64, size: u64, outcome: Outcome, at_destination: bool) {
        self.settle_listed(seq, size, outcome, at_destination, None)
    }

    /// [`Recorder::settle_at`] with the object's line of a dry run's inventory.
    pub fn settle_listed(
        &mut self,
        seq: u64,
        size: u64,
        outcome: Outcome,
        at_destination: bool,
        inventory: Option<InventoryLine>,
    ) {
        let mut counters = outcome.counters(size);
        if at_destination {
            counters.destination_objects += 1;
        }
        self.record.counters.add(&counters);
        let source = outcome.of_source();
        let (mut failure, mut written, mut candidate, mut check) = (None, None, None, None);
        match outcome {
            Outcome::Copied(line) => {
                self.breaker.copied();
                written = Some(line);
            }
            Outcome::Archived(line) | Outcome::Failed(line) => {
                *self.record.failures_by_class.entry(line.class).or_insert(0) += 1;
                failure = Some(line);
            }
            Outcome::Deleted(line) => written = Some(line),
            Outcome::DeleteFailed(line) => failure = Some(line),
            Outcome::RolledBack(line) | Outcome::Restored(line) => written = Some(line),
            Outcome::RollbackKept(line) => {
                *self.record.failures_by_class.entry(line.class).or_insert(0) += 1;
                failure = Some(line);
            }
            Outcome::Candidate(line) => candidate = Some(line),
            Outcome::Differs(line) => check = Some(line),
            _ => {}
        }
        let delta = if source {
            Counters {
                objects_total: 1,
                bytes_total: size,
                ..counters
            }
        } else {
            counters
        };
        self.window.complete(
            seq,
            Recorded {
                delta,
                failure,
                written,
                candidate,
                check,
                inventory,
                source,
            },
        );
        self.drain();
    }

    /// Records what the source set back of its own changes (a rollback, before any key):
    /// `undone` rows, and `kept` ones with why; in the live record and the checkpoint at once.
    pub fn taken_back_at_source(&mut self, undone: u64, kept: Vec<FailureLine>) {
        let c = Counters {
            rows_reverted: undone,
            rows_not_reverted: kept.len() as u64,
            ..Default::default()
        };
        self.record.counters.add(&c);
        self.cp.counters.add(&c);
        for line in kept {
            *self.record.failures_by_class.entry(line.class).or_insert(0) += 1;
            *self.cp.failures_by_class.entry(line.class).or_insert(0) += 1;
            if let Some(r) = self.report.as_mut() {
                r.failure(&line);
            }
        }
    }

    /// Keeps `sample` among the first errors of the record (at most [`MAX_FIRST_ERRORS`]).
    pub fn note_error(&mut self, sample: ErrorSample) {
        if self.record.first_errors.len() < MAX_FIRST_ERRORS {
            self.record.first_errors.push(sample);
        }
    }

    /// Stops the shard on a job-fatal error.
    pub fn stop(&mut self, sample: ErrorSample) {
        self.record.fatal = Some(sample);
    }

    pub fn stopped(&self) -> bool {
        self.record.fatal.is_some()
    }

    /// Moves the done prefix into the checkpoint and the report buffers.
    fn drain(&mut self) {
        while let Some((key, rec)) = self.window.pop_ready() {
            self.cp.counters.add(&rec.delta);
            if let Some(f) = rec.failure.as_ref().filter(|_| rec.source) {
                *self.cp.failures_by_class.entry(f.class).or_insert(0) += 1;
            }
            if let Some(r) = self.report.as_mut() {
                if let Some(f) = &rec.failure {
                    r.failure(f);
                }
                if let Some(w) = &rec.written {
                    r.written(w);
                }
                if let Some(c) = &rec.candidate {
                    r.candidate(c);
                }
                if let Some(c) = &rec.check {
                    r.check(c);
                }
                if let Some(i) = &rec.inventory {
                    r.inventory(i);
                }
            }
            self.cp.watermark = Some(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            modified: None,
            etag: None,
            archived: false,
            invalid: None,
        }
    }

    fn recorder() -> Recorder {
        Recorder {
            record: ShardProgress::default(),
            cp: Checkpoint::default(),
            window: Watermark::default(),
            report: None,
            breaker: Breaker::default(),
        }
    }

    fn failed(key: &str) -> Outcome {
        let e = TransferError::new(FailureClass::Network, "reset");
        Outcome::Failed(e.report_line(key.into(), &info(key, 3)))
    }

    #[test]
    fn the_checkpoint_moves_only_over_a_done_prefix() {
        let mut r = recorder();
        let a = r.register(&info("a", 1));
        let b = r.register(&info("b", 2));
        let c = r.register(&info("c", 3));
        r.settle(b, 2, Outcome::Skipped);
        r.settle(c, 3, failed("c"));
        assert_eq!(r.cp.watermark, None, "a is still in flight");
        assert_eq!(
            r.record.counters.objects_done(),
            2,
            "live counters run ahead"
        );
        r.settle(
            a,
            1,
            Outcome::Copied(ManifestLine {
                key: "a".into(),
                size: 1,
                checksum: String::new(),
                replaced: false,
                deleted: false,
            }),
        );
        assert_eq!(r.cp.watermark.as_deref(), Some("c"));
        let c = &r.cp.counters;
        assert_eq!(
            (
                c.objects_total,
                c.objects_copied,
                c.objects_skipped,
                c.objects_failed
            ),
            (3, 1, 1, 1)
        );
        assert_eq!((c.bytes_total, c.bytes_failed), (6, 3));
        assert_eq!(r.cp.failures_by_class.get(&FailureClass::Network), Some(&1));
        assert_eq!(r.record.counters.objects_total, 3);
    }

    #[test]
    fn candidates_move_the_watermark_without_counting_as_listed() {
        let mut r = recorder();
        let a = r.register(&info("a", 1));
        let b = r.register_key("b");
        r.settle(
            b,
            5,
            Outcome::Candidate(DeleteLine {
                key: "b".into(),
                size: 5,
                etag: None,
                modified: None,
            }),
        );
        r.settle_at(a, 1, Outcome::Skipped, true);
        assert_eq!(r.cp.watermark.as_deref(), Some("b"));
        let c = &r.cp.counters;
        assert_eq!((c.objects_total, c.bytes_total), (1, 1));
        assert_eq!((c.objects_to_delete, c.bytes_to_delete), (1, 5));
        assert_eq!(c.destination_objects, 2);
    }

    #[test]
    fn the_breaker_stops_on_the_third_fatal_error_or_five_denials_before_any_copy() {
        let fatal = TransferError::new(FailureClass::NoSuchBucket, "gone").fatal();
        let mut b = Breaker::default();
        assert_eq!(b.judge(&fatal, false), Verdict::Fail);
        assert_eq!(b.judge(&fatal, false), Verdict::Fail);
        assert_eq!(b.judge(&fatal, false), Verdict::Stop);

        let denied = TransferError::new(FailureClass::AccessDenied, "no");
        let mut b = Breaker::default();
        for _ in 0..4 {
            assert_eq!(b.judge(&denied, false), Verdict::Fail);
        }
        assert_eq!(b.judge(&denied, false), Verdict::Stop);
        // Once something was copied, denials are ordinary failures (a policy on some keys).
        let mut b = Breaker::default();
        for _ in 0..10 {
            assert_eq!(b.judge(&denied, true), Verdict::Fail);
        }
        // Credentials that went stale stop the shard at once, none of its objects failed.
        for e in [
            TransferError::new(FailureClass::AuthExpired, "expired").fatal(),
            TransferError::new(FailureClass::AccessDenied, "no such key id")
                .with_code("InvalidAccessKeyId")
                .fatal(),
        ] {
            assert_eq!(Breaker::default().judge(&e, true), Verdict::Stop);
        }
        // A success in between resets the run of denials.
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.judge(&denied, false);
        }
        b.copied();
        assert_eq!(b.judge(&denied, false), Verdict::Fail);
    }
}
