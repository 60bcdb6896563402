//! Delete propagation's guard and status, pure: once every shard's copy stage has ended, the
//! job's counters decide whether the candidates are deleted, held, or left alone, before a
//! single object is deleted.

use ferry_core::plan::DeleteSettings;
use ferry_core::Counters;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::human_bytes;

/// The annotation that approves a held run's deletes: its value is the run's name (the
/// MigrationJob's own name, set on it or on the BucketSync that owns it).
pub const APPROVE_DELETES_ANNOTATION: &str = "ferry.dev/approve-deletes";

/// Where delete propagation stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeletesState {
    /// The copy stage is finding the candidates.
    Finding,
    /// More candidates than `maxDeletes` allows: none deleted, waiting for approval.
    Held,
    /// The guard allowed them (or the run was approved): the delete stage is running.
    Deleting,
    /// The delete stage ended (or there was nothing to delete).
    Done,
    /// Not deleting: the copy stage had failures or a listing error.
    Skipped,
    /// A dry run: candidates reported, nothing deleted.
    DryRun,
}

/// Delete propagation in a MigrationJob's status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletesStatus {
    /// Finding, Held, Deleting, Done, Skipped or DryRun.
    pub state: DeletesState,
    /// Destination keys absent at the source (selected by the filters).
    #[serde(default)]
    pub candidates: u64,
    /// Their bytes.
    #[serde(default)]
    pub candidate_bytes: u64,
    /// Selected destination keys seen (the base of a percentage `maxDeletes`).
    #[serde(default)]
    pub destination_objects: u64,
    /// How many candidates `maxDeletes` allows for this destination.
    #[serde(default)]
    pub allowed: u64,
    /// Objects deleted.
    #[serde(default)]
    pub deleted: u64,
    /// Bytes deleted.
    #[serde(default)]
    pub bytes_deleted: u64,
    /// Candidates not deleted after all (back at the source, changed, or already gone).
    #[serde(default)]
    pub kept: u64,
    /// Candidates whose delete failed.
    #[serde(default)]
    pub failed: u64,
    /// The run name whose approval was acted on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<String>,
    /// What happened, in a sentence.
    #[serde(default)]
    pub message: String,
}

/// The guard's verdict for the whole job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delete the candidates (within the limit, or approved).
    Delete,
    /// No candidate: nothing to do.
    Nothing,
    /// Too many candidates: hold them all.
    Hold,
    /// Delete nothing: the copy stage did not fully succeed.
    Skip(String),
    /// A dry run: report only.
    DryRun,
}

/// Decides, before anything is deleted, what happens to the candidates the copy stage found.
/// `copy_succeeded`: every shard completed its copy stage (no listing error, no fatal error);
/// `approved`: the run's plan was approved with [`APPROVE_DELETES_ANNOTATION`].
pub fn guard(
    settings: &DeleteSettings,
    c: &Counters,
    copy_succeeded: bool,
    dry_run: bool,
    approved: bool,
) -> Verdict {
    if !copy_succeeded {
        return Verdict::Skip(
            "the copy did not complete (a listing or job-fatal error): deleting nothing".into(),
        );
    }
    if c.objects_failed > 0 {
        return Verdict::Skip(format!(
            "{} objects failed to copy: a run with any failure deletes nothing",
            c.objects_failed
        ));
    }
    if dry_run {
        return Verdict::DryRun;
    }
    if c.objects_to_delete == 0 {
        return Verdict::Nothing;
    }
    if settings
        .max
        .exceeded(c.objects_to_delete, c.destination_objects)
        && !approved
    {
        return Verdict::Hold;
    }
    Verdict::Delete
}

/// The status of delete propagation for `verdict` over the copy stage's counters `c`.
pub fn status_of(
    settings: &DeleteSettings,
    c: &Counters,
    verdict: &Verdict,
    run: &str,
) -> DeletesStatus {
    let allowed = settings.max.allowed(c.destination_objects);
    let found = format!(
        "{} destination keys ({}) are absent at the source, of {} (maxDeletes {} allows {})",
        c.objects_to_delete,
        human_bytes(c.bytes_to_delete),
        c.destination_objects,
        settings.max,
        allowed
    );
    let (state, message) = match verdict {
        Verdict::Delete => (DeletesState::Deleting, format!("{found}: deleting them")),
        Verdict::Nothing => (
            DeletesState::Done,
            "no destination key is absent at the source".into(),
        ),
        Verdict::Hold => (
            DeletesState::Held,
            format!(
                "{found}: holding all of them, none deleted. Raise maxDeletes, restore the \
                 source, or approve this run with the annotation {APPROVE_DELETES_ANNOTATION}={run}"
            ),
        ),
        Verdict::Skip(why) => (DeletesState::Skipped, why.clone()),
        Verdict::DryRun => (
            DeletesState::DryRun,
            format!(
                "dry run: {found}; a real run would {}",
                if settings
                    .max
                    .exceeded(c.objects_to_delete, c.destination_objects)
                {
                    "hold them"
                } else {
                    "delete them"
                }
            ),
        ),
    };
    DeletesStatus {
        state,
        candidates: c.objects_to_delete,
        candidate_bytes: c.bytes_to_delete,
        destination_objects: c.destination_objects,
        allowed,
        deleted: 0,
        bytes_deleted: 0,
        kept: 0,
        failed: 0,
        approved: None,
        message,
    }
}

/// The status once the delete stage's shards add up to `c`.
pub fn deleted(before: &DeletesStatus, c: &Counters, done: bool) -> DeletesStatus {
    let mut s = before.clone();
    s.deleted = c.objects_deleted;
    s.bytes_deleted = c.bytes_deleted;
    s.kept = c.objects_delete_kept;
    s.failed = c.objects_delete_failed;
    if done {
        s.state = DeletesState::Done;
        s.message = format!(
            "{} deleted ({}), {} kept (back at the source or changed since listed), {} failed",
            s.deleted,
            human_bytes(s.bytes_deleted),
            s.kept,
            s.failed
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::FailureBudget;

    fn settings(max: &str) -> DeleteSettings {
        DeleteSettings {
            max: FailureBudget::parse(max).unwrap(),
            backup_prefix: None,
        }
    }

    fn counters(candidates: u64, destination: u64, failed: u64) -> Counters {
        Counters {
            objects_to_delete: candidates,
            destination_objects: destination,
            objects_failed: failed,
            ..Default::default()
        }
    }

    #[test]
    fn the_guard_holds_at_n_plus_one_and_deletes_at_n() {
        let s = settings("10%");
        assert_eq!(
            guard(&s, &counters(10, 100, 0), true, false, false),
            Verdict::Delete
        );
        assert_eq!(
            guard(&s, &counters(11, 100, 0), true, false, false),
            Verdict::Hold
        );
        assert_eq!(
            guard(&s, &counters(11, 100, 0), true, false, true),
            Verdict::Delete
        );
        let s = settings("3");
        assert_eq!(
            guard(&s, &counters(3, 5, 0), true, false, false),
            Verdict::Delete
        );
        assert_eq!(
            guard(&s, &counters(4, 5, 0), true, false, false),
            Verdict::Hold
        );
        let zero = settings("0");
        assert_eq!(
            guard(&zero, &counters(1, 5, 0), true, false, false),
            Verdict::Hold
        );
        assert_eq!(
            guard(&zero, &counters(0, 5, 0), true, false, false),
            Verdict::Nothing
        );
    }

    #[test]
    fn any_failure_or_an_incomplete_copy_deletes_nothing_even_when_approved() {
        let s = settings("100%");
        assert!(matches!(
            guard(&s, &counters(1, 5, 1), true, false, true),
            Verdict::Skip(_)
        ));
        assert!(matches!(
            guard(&s, &counters(1, 5, 0), false, false, true),
            Verdict::Skip(_)
        ));
    }

    #[test]
    fn a_held_status_says_how_to_approve() {
        let s = settings("10%");
        let c = counters(50, 100, 0);
        let st = status_of(&s, &c, &Verdict::Hold, "media-29000000");
        assert_eq!(st.state, DeletesState::Held);
        assert_eq!(st.allowed, 10);
        assert!(
            st.message
                .contains("ferry.dev/approve-deletes=media-29000000"),
            "{}",
            st.message
        );
        let dry = status_of(&s, &c, &Verdict::DryRun, "x");
        assert!(dry.message.contains("would hold"), "{}", dry.message);
    }
}
