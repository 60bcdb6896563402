//! The delete stage of a shard: deletes the candidates its copy stage recorded, once the
//! guard allowed them for the whole job. Each candidate is looked at again first: one that is
//! back at the source, or that changed at the destination since it was listed, is kept. With
//! a backup prefix the object is copied there before it is deleted. Deleted keys go into the
//! manifest (`manifest-deletes-NNNNNN.jsonl`, with `"deleted": true`).

use ferry_core::{FailureClass, ShardProgress};
use futures::StreamExt;

use super::record::{Outcome, Recorder};
use super::ShardRun;
use crate::error::TransferError;
use crate::report::{DeleteLine, FailureLine, ManifestLine};
use crate::stores::ObjectInfo;

/// Deletes in flight at most (each is two HEADs and a DELETE).
const DELETES_IN_FLIGHT: usize = 64;

/// What became of one candidate.
enum Fate {
    Deleted,
    Kept(&'static str),
    Failed(TransferError),
}

/// Runs the delete stage of the shard over `candidates` (in key order) from the checkpoint
/// on, and returns the final record (also saved).
pub async fn run(run: &ShardRun, rec: Recorder, candidates: Vec<DeleteLine>) -> ShardProgress {
    let prefix = run.dst.full_key("");
    let after = rec.cp.watermark.clone();
    let todo: Vec<(String, DeleteLine)> = candidates
        .into_iter()
        .filter_map(|c| {
            let rel = c.key.strip_prefix(prefix.as_str())?.to_string();
            Some((rel, c))
        })
        .filter(|(rel, _)| after.as_deref().is_none_or(|a| rel.as_str() > a))
        .collect();
    let backup = run
        .plan
        .transfer
        .deletes
        .as_ref()
        .and_then(|d| d.backup_prefix.clone())
        // `backupReplaced` keeps what the job deletes too, for a rollback to put back.
        .or_else(|| {
            run.plan
                .transfer
                .backup_replaced
                .then(|| run.plan.backup_prefix())
        });
    let in_flight = (run.plan.transfer.concurrency as usize).clamp(1, DELETES_IN_FLIGHT);
    let fates = futures::stream::iter(todo)
        .map(|(rel, line)| {
            let backup = backup.clone();
            async move {
                let fate = delete_one(run, &rel, &line, backup.as_deref()).await;
                (rel, line, fate)
            }
        })
        .buffered(in_flight);
    super::settle_in_order(run, rec, fates, |rec, (rel, line, fate)| {
        let outcome = match fate {
            Fate::Deleted => Outcome::Deleted(ManifestLine {
                key: line.key.clone(),
                size: line.size,
                checksum: line.etag.clone().unwrap_or_default(),
                replaced: false,
                deleted: true,
            }),
            Fate::Kept(why) => {
                tracing::info!(key = %line.key, why, "not deleting a candidate");
                Outcome::Kept
            }
            Fate::Failed(e) => {
                tracing::warn!(key = %line.key, error = %e, "a delete failed");
                rec.note_error(e.sample(&line.key));
                Outcome::DeleteFailed(FailureLine::of(line.key.clone(), line.size, &e))
            }
        };
        (rel, line.size, outcome)
    })
    .await
}

/// Looks at one candidate again and deletes it if it is still absent at the source and
/// still the object that was listed.
async fn delete_one(run: &ShardRun, rel: &str, line: &DeleteLine, backup: Option<&str>) -> Fate {
    match run.src.head(rel).await {
        Ok(Some(_)) => return Fate::Kept("it is back at the source"),
        Ok(None) => {}
        Err(e) => return Fate::Failed(e),
    }
    let now = match run.dst.head(rel).await {
        Ok(Some((info, _))) => info,
        Ok(None) => return Fate::Kept("it is already gone"),
        Err(e) => return Fate::Failed(e),
    };
    if changed(line, &now) {
        return Fate::Kept("it changed at the destination since it was listed");
    }
    if let Some(prefix) = backup {
        let to = format!("{prefix}{}", line.key);
        if let Err(e) = run.dst.backup(rel, &to, now.etag.as_deref()).await {
            return Fate::Failed(e);
        }
    }
    match run.dst.delete(rel).await {
        Ok(()) => Fate::Deleted,
        Err(e) => Fate::Failed(e),
    }
}

/// Whether the object at the destination is not the one listed: another size, another ETag,
/// or (without ETags: filesystems) another modification time.
fn changed(listed: &DeleteLine, now: &ObjectInfo) -> bool {
    if listed.size != now.size {
        return true;
    }
    match (&listed.etag, &now.etag) {
        (Some(a), Some(b)) => a != b,
        _ => {
            let now_modified = now.modified.map(|m| m.to_rfc3339());
            listed.modified != now_modified
        }
    }
}

/// The candidates of the shard, or the error that stops the delete stage (no report folder,
/// unreadable candidates): deleting part of a plan is never right.
pub async fn candidates(run: &ShardRun) -> Result<Vec<DeleteLine>, TransferError> {
    let Some(root) = &run.report else {
        return Err(TransferError::new(
            FailureClass::InvalidRequest,
            "the delete stage needs the copy stage's report folder (a dry run deletes nothing)",
        )
        .fatal());
    };
    let folder = root.folder(&run.plan.shard_report_folder(run.range().index));
    crate::report::read_candidates(folder.as_ref()).await
}
