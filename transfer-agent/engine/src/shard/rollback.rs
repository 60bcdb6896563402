//! The rollback stage of a shard: takes back what the job's copy and delete stages wrote, from
//! their manifests (every attempt's), in key order, resumable from its checkpoint.
//!
//! For each key the job wrote, the object at the destination is looked at again:
//! - still what the job wrote, and no object was there before: deleted;
//! - still what the job wrote, and it replaced an object: the backup of that object
//!   (`backupReplaced`) is put back, or, without one, the key is reported `NotRestorable` and
//!   kept;
//! - something else since (another size or checksum): kept, reported `ChangedSinceCopy`;
//! - already gone, or already restored: nothing to do (a second rollback finds nothing).
//!
//! Keys the job deleted (delete propagation) are put back from their backups when they have
//! one, and reported `NotRestorable` otherwise. Nothing the job did not write is touched: the
//! work list is the manifests, never a listing.

use std::collections::BTreeMap;

use ferry_core::{FailureClass, ShardProgress};
use futures::StreamExt;
use md5::{Digest, Md5};

use super::record::{Outcome, Recorder};
use super::ShardRun;
use crate::copy::{composite_md5, effective_part_size};
use crate::error::TransferError;
use crate::report::{FailureLine, ManifestLine};
use crate::stores::{ObjectInfo, Sink};

/// Undos in flight at most (each is a HEAD or two and a DELETE or a CopyObject).
const UNDOS_IN_FLIGHT: usize = 64;

/// What to do about one key the job wrote, decided from its manifest line and what is at the
/// destination now.
#[derive(Debug, PartialEq, Eq)]
pub enum Undo {
    /// Delete the object (the job created it, and it is still what the job wrote).
    Delete,
    /// Put the backup back (the job replaced or deleted an object, and kept a copy of it).
    Restore,
    /// Nothing to undo: already gone, or already restored.
    Nothing,
    /// Not undone, and why.
    Keep(FailureClass, &'static str),
}

/// What is at the destination under a key the job wrote, as far as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    Absent,
    /// The object the job wrote (same size and checksum).
    Written,
    /// The backup the job kept (already restored).
    Restored,
    /// Another object.
    Other,
}

/// The decision for one manifest line (pure).
pub fn decide(line: &ManifestLine, now: Now, has_backup: bool) -> Undo {
    if line.deleted {
        return match now {
            Now::Absent if has_backup => Undo::Restore,
            Now::Absent => Undo::Keep(
                FailureClass::NotRestorable,
                "the job deleted it and kept no backup",
            ),
            // The very object it deleted is back (restored before): nothing to do.
            Now::Restored | Now::Written => Undo::Nothing,
            Now::Other => Undo::Keep(
                FailureClass::ChangedSinceCopy,
                "an object was written under the key since the job deleted it",
            ),
        };
    }
    match now {
        Now::Absent | Now::Restored => Undo::Nothing,
        Now::Other => Undo::Keep(
            FailureClass::ChangedSinceCopy,
            "the object changed since the job wrote it",
        ),
        Now::Written if !line.replaced => Undo::Delete,
        Now::Written if has_backup => Undo::Restore,
        Now::Written => Undo::Keep(
            FailureClass::NotRestorable,
            "the job replaced an object and kept no backup of it (backupReplaced)",
        ),
    }
}

/// The keys the job wrote in this shard: every manifest line of every attempt, the latest
/// per key, by key relative to the destination prefix, in key order.
pub async fn written(run: &ShardRun) -> Result<BTreeMap<String, ManifestLine>, TransferError> {
    let Some(root) = &run.report else {
        return Err(TransferError::new(
            FailureClass::InvalidRequest,
            "the rollback needs the job's report folder",
        )
        .fatal());
    };
    let prefix = run.dst.full_key("");
    let index = run.range().index;
    let mut out = BTreeMap::new();
    for attempt in run.plan.attempt_report_prefixes() {
        let folder = root.folder(&ferry_core::plan::shard_folder(&attempt, index));
        for line in crate::report::read_manifest(folder.as_ref()).await? {
            if let Some(rel) = line.key.strip_prefix(prefix.as_str()) {
                out.insert(rel.to_string(), line);
            }
        }
    }
    Ok(out)
}

/// Sets back what the job changed at the source ([`crate::stores::Source::take_back`]: a
/// database's write-back), once per rollback: a resumed rollback that did it already (its
/// checkpoint counts the rows) does not count them again. Saves a checkpoint, and returns
/// the keys whose objects must be kept, and why.
pub async fn take_back_at_source(
    run: &ShardRun,
    rec: &mut Recorder,
) -> Result<BTreeMap<String, &'static str>, TransferError> {
    let Some(root) = &run.report else {
        return Ok(BTreeMap::new());
    };
    let index = run.range().index;
    let folders: Vec<_> = run
        .plan
        .attempt_report_prefixes()
        .iter()
        .map(|a| root.folder(&ferry_core::plan::shard_folder(a, index)))
        .collect();
    let t = run.src.take_back(&folders).await?;
    let c = &rec.cp.counters;
    if c.rows_reverted + c.rows_not_reverted == 0 {
        rec.taken_back_at_source(t.undone, t.kept);
        run.checkpoint(rec).await;
    }
    Ok(t.keep_objects)
}

/// Runs the rollback over `lines` (relative key → manifest line, in key order) from the
/// checkpoint on, keeping the objects of `keep` (relative key → why), and returns the final
/// record (also saved).
pub async fn run(
    run: &ShardRun,
    rec: Recorder,
    lines: BTreeMap<String, ManifestLine>,
    keep: BTreeMap<String, &'static str>,
) -> ShardProgress {
    let after = rec.cp.watermark.clone();
    let todo: Vec<(String, ManifestLine)> = lines
        .into_iter()
        .filter(|(rel, _)| after.as_deref().is_none_or(|a| rel.as_str() > a))
        .collect();
    let in_flight = (run.plan.transfer.concurrency as usize).clamp(1, UNDOS_IN_FLIGHT);
    let fates = futures::stream::iter(todo)
        .map(|(rel, line)| {
            let kept = keep.get(&rel).copied();
            async move {
                let fate = match kept {
                    Some(why) => Ok(Undo::Keep(FailureClass::NotRestorable, why)),
                    None => undo_one(run, &rel, &line).await,
                };
                (rel, line, fate)
            }
        })
        .buffered(in_flight);
    super::settle_in_order(run, rec, fates, |rec, (rel, line, fate)| {
        let outcome = match fate {
            Ok(Undo::Delete) => Outcome::RolledBack(line.clone()),
            Ok(Undo::Restore) => Outcome::Restored(line.clone()),
            Ok(Undo::Nothing) => Outcome::RollbackGone,
            Ok(Undo::Keep(class, why)) => {
                tracing::info!(key = %line.key, why, "not undoing a key");
                Outcome::RollbackKept(FailureLine::kept(line.key.clone(), line.size, class, why))
            }
            Err(e) => {
                tracing::warn!(key = %line.key, error = %e, "undoing a key failed");
                rec.note_error(e.sample(&line.key));
                Outcome::RollbackKept(FailureLine::of(line.key.clone(), line.size, &e))
            }
        };
        (rel, line.size, outcome)
    })
    .await
}

/// Where the object a manifest line names was kept before the job replaced or deleted it,
/// if anywhere: the job's backup folder (`backupReplaced`), or the delete propagation's
/// `backupPrefix` for deleted keys.
fn backup_root(run: &ShardRun, line: &ManifestLine) -> Option<String> {
    let t = &run.plan.transfer;
    if line.deleted {
        if let Some(p) = t.deletes.as_ref().and_then(|d| d.backup_prefix.clone()) {
            return Some(p);
        }
    }
    t.backup_replaced.then(|| run.plan.backup_prefix())
}

/// Looks at one key again, decides, and carries the decision out.
async fn undo_one(run: &ShardRun, rel: &str, line: &ManifestLine) -> Result<Undo, TransferError> {
    let backups = backup_root(run, line).map(|root| run.dst.folder(&root));
    let backup = match &backups {
        Some(b) => b.head(&line.key).await?.map(|(info, _)| info),
        None => None,
    };
    let now = match run.dst.head(rel).await? {
        None => Now::Absent,
        Some((info, _)) if backup.as_ref().is_some_and(|b| same_object(b, &info)) => Now::Restored,
        Some((info, _)) => {
            if is_written(run, rel, line, &info).await? {
                Now::Written
            } else {
                Now::Other
            }
        }
    };
    let undo = decide(line, now, backup.is_some());
    match &undo {
        Undo::Delete => run.dst.delete(rel).await?,
        Undo::Restore => {
            let b = backups.expect("a backup was found");
            b.backup(&line.key, &line.key, backup.and_then(|b| b.etag).as_deref())
                .await?
        }
        Undo::Nothing | Undo::Keep(..) => {}
    }
    Ok(undo)
}

/// Before the copy stage overwrites `key` (`backupReplaced`): copies the object there under
/// `root` (the job's backup folder), inside the service, unless a backup of the key is there
/// already (the first one holds the object from before the job: a resumed or retried copy
/// must not replace it with the job's own).
pub async fn keep_replaced(dst: &dyn Sink, root: &str, key: &str) -> Result<(), TransferError> {
    let full = dst.full_key(key);
    if dst.folder(root).head(&full).await?.is_some() {
        return Ok(());
    }
    match dst.head(key).await? {
        Some((now, _)) => {
            dst.backup(key, &format!("{root}{full}"), now.etag.as_deref())
                .await
        }
        None => Ok(()),
    }
}

/// Whether two listings name the same object (size and ETag).
fn same_object(a: &ObjectInfo, b: &ObjectInfo) -> bool {
    a.size == b.size && a.etag.is_some() && a.etag == b.etag
}

/// Whether the object at the destination is still the one the manifest line recorded: the
/// same size, and the same checksum, from its ETag where the destination's ETags are MD5s,
/// else read back and hashed (a filesystem). A line with no checksum (`verify: Size`) is
/// judged by its size alone.
async fn is_written(
    run: &ShardRun,
    rel: &str,
    line: &ManifestLine,
    now: &ObjectInfo,
) -> Result<bool, TransferError> {
    if now.size != line.size {
        return Ok(false);
    }
    if line.checksum.is_empty() {
        return Ok(true);
    }
    if run.dst.sink_caps().etags_are_md5 {
        if let Some(etag) = &now.etag {
            return Ok(etag.eq_ignore_ascii_case(&line.checksum));
        }
    }
    Ok(checksum_of(run, rel, line).await?.as_deref() == Some(line.checksum.as_str()))
}

/// The checksum of the destination object, read back in the form of `line`'s (one MD5, or
/// the MD5 of the part MD5s with the part size a copy uses); None when the part count of the
/// line does not fit this object (another object).
async fn checksum_of(
    run: &ShardRun,
    rel: &str,
    line: &ManifestLine,
) -> Result<Option<String>, TransferError> {
    let parts: Option<u64> = line
        .checksum
        .split_once('-')
        .and_then(|(_, n)| n.parse().ok());
    let size = line.size;
    let part = match parts {
        Some(n) => {
            let p = effective_part_size(size, run.plan.transfer.multipart.part_size);
            if size.div_ceil(p) != n {
                return Ok(None);
            }
            p
        }
        None => size.max(1),
    };
    let src: &dyn Sink = run.dst.as_ref();
    let mut digests = Vec::new();
    let mut whole = Md5::new();
    let mut offset = 0;
    while offset < size || (size == 0 && digests.is_empty()) {
        let len = part.min(size - offset);
        let buf = run.limits.buffer(len).await;
        let body = src
            .get(rel, offset, len, parts.is_none(), None, buf)
            .await?;
        let d: [u8; 16] = Md5::digest(&body.bytes).into();
        whole.update(&body.bytes);
        digests.push(d);
        offset += len;
        if len == 0 {
            break;
        }
    }
    Ok(Some(match parts {
        Some(_) => composite_md5(&digests),
        None => hex::encode(whole.finalize()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(replaced: bool, deleted: bool) -> ManifestLine {
        ManifestLine {
            key: "p/k".into(),
            size: 3,
            checksum: "abc".into(),
            replaced,
            deleted,
        }
    }

    #[test]
    fn only_what_the_job_wrote_and_nobody_changed_is_deleted() {
        let new = line(false, false);
        assert_eq!(decide(&new, Now::Written, false), Undo::Delete);
        assert_eq!(decide(&new, Now::Written, true), Undo::Delete);
        assert!(matches!(
            decide(&new, Now::Other, false),
            Undo::Keep(FailureClass::ChangedSinceCopy, _)
        ));
        assert_eq!(decide(&new, Now::Absent, false), Undo::Nothing);
    }

    #[test]
    fn a_replaced_object_comes_back_from_its_backup_or_is_kept_and_said() {
        let replaced = line(true, false);
        assert_eq!(decide(&replaced, Now::Written, true), Undo::Restore);
        assert!(matches!(
            decide(&replaced, Now::Written, false),
            Undo::Keep(FailureClass::NotRestorable, _)
        ));
        // A second rollback finds the backup in place: nothing to do.
        assert_eq!(decide(&replaced, Now::Restored, true), Undo::Nothing);
        assert!(matches!(
            decide(&replaced, Now::Other, true),
            Undo::Keep(FailureClass::ChangedSinceCopy, _)
        ));
    }

    #[test]
    fn a_deleted_object_comes_back_only_from_a_backup_and_only_to_an_empty_key() {
        let deleted = line(false, true);
        assert_eq!(decide(&deleted, Now::Absent, true), Undo::Restore);
        assert!(matches!(
            decide(&deleted, Now::Absent, false),
            Undo::Keep(FailureClass::NotRestorable, _)
        ));
        assert_eq!(decide(&deleted, Now::Restored, true), Undo::Nothing);
        assert_eq!(decide(&deleted, Now::Written, false), Undo::Nothing);
        assert!(matches!(
            decide(&deleted, Now::Other, true),
            Undo::Keep(FailureClass::ChangedSinceCopy, _)
        ));
    }
}
