//! The conditions and reasons a Ferry resource reports, typed, and one writer that sets them.
//! Conditions follow the Kubernetes convention (`type`, `status`, `reason`, `message`,
//! `lastTransitionTime`, `observedGeneration`), so kstatus and Argo CD read them.

use serde::{Deserialize, Serialize};

use crate::status::{Condition, Phase};

/// The condition types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The job has reached what it was asked to do (`Completed`).
    Ready,
    /// The job is moving towards it.
    Progressing,
    /// Something is wrong: objects failed, or the job cannot go on.
    Degraded,
    /// The referenced Secrets exist, have the keys, and the services accept them.
    CredentialsValid,
    SourceReachable,
    DestinationReachable,
    /// Delete propagation found more candidates than `maxDeletes` allows and deleted none.
    DeletesHeld,
    /// kstatus: the resource is being brought to its desired state (BucketSync: a run).
    Reconciling,
    /// kstatus: the resource cannot make progress without a change (an invalid spec).
    Stalled,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
            ConditionType::CredentialsValid => "CredentialsValid",
            ConditionType::SourceReachable => "SourceReachable",
            ConditionType::DestinationReachable => "DestinationReachable",
            ConditionType::DeletesHeld => "DeletesHeld",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
        }
    }
}

/// Why a condition is what it is; also the reason of the Event that announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum Reason {
    /// Checking the Secrets and both endpoints.
    Validating,
    SecretNotFound,
    SecretsFound,
    Reachable,
    /// An endpoint did not answer (network); checked again later.
    Unreachable,
    /// An endpoint answered with a refusal (missing bucket...).
    Refused,
    CredentialsRefused,
    EndpointRefused,
    /// Waiting for a slot under the operator's cap on running jobs.
    Queued,
    Planning,
    PlanningFailed,
    Copying,
    Suspended,
    Retrying,
    NothingToRetry,
    NothingToRollBack,
    InvalidSpec,
    NoFailures,
    ObjectsFailed,
    Completed,
    PartiallyCompleted,
    Failed,
    Cancelled,
    /// More delete candidates than `maxDeletes` allows: none deleted.
    MaxDeletesExceeded,
    /// The candidates are within `maxDeletes`.
    WithinLimit,
    /// A held run's deletes were approved with `ferry.dev/approve-deletes`.
    DeletesApproved,
    /// A run with failures (or a listing error) deletes nothing.
    DeletesSkipped,
    /// The delete stage is running.
    Deleting,
    /// Nothing to delete.
    NoDeletes,
    /// A BucketSync run started.
    SyncStarted,
    /// A BucketSync run ended well.
    SyncSucceeded,
    /// A BucketSync run failed.
    SyncFailed,
    /// A tick came while a run was active (`concurrencyPolicy: Forbid`) or too late.
    SyncSkipped,
    /// The active run was cancelled for a new one (`concurrencyPolicy: Replace`).
    SyncReplaced,
    /// Waiting for the next tick.
    Scheduled,
    /// Nothing running.
    Idle,
    /// A child's name is held by an object Ferry does not own.
    NameTaken,
    /// The job's pods do not run (image pull, scheduling, quota, admission).
    PodsNotRunning,
    /// The agents ended, but some shard's final state was never saved.
    StateNotSaved,
    /// The old agents' Job has been deleting for long: its pods do not go away.
    AgentsNotStopping,
    /// A shard's credentials stopped working mid-run (a token expired, a key rotated away):
    /// it stopped at its checkpoint and goes on when run again with the Secret's values.
    CredentialsExpired,
    RollingBack,
    RolledBack,
    PartiallyRolledBack,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Validating => "Validating",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretsFound => "SecretsFound",
            Reason::Reachable => "Reachable",
            Reason::Unreachable => "Unreachable",
            Reason::Refused => "Refused",
            Reason::CredentialsRefused => "CredentialsRefused",
            Reason::EndpointRefused => "EndpointRefused",
            Reason::Queued => "Queued",
            Reason::Planning => "Planning",
            Reason::PlanningFailed => "PlanningFailed",
            Reason::Copying => "Copying",
            Reason::Suspended => "Suspended",
            Reason::Retrying => "Retrying",
            Reason::NothingToRetry => "NothingToRetry",
            Reason::NothingToRollBack => "NothingToRollBack",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::NoFailures => "NoFailures",
            Reason::ObjectsFailed => "ObjectsFailed",
            Reason::Completed => "Completed",
            Reason::PartiallyCompleted => "PartiallyCompleted",
            Reason::Failed => "Failed",
            Reason::Cancelled => "Cancelled",
            Reason::MaxDeletesExceeded => "MaxDeletesExceeded",
            Reason::WithinLimit => "WithinLimit",
            Reason::DeletesApproved => "DeletesApproved",
            Reason::DeletesSkipped => "DeletesSkipped",
            Reason::Deleting => "Deleting",
            Reason::NoDeletes => "NoDeletes",
            Reason::SyncStarted => "SyncStarted",
            Reason::SyncSucceeded => "SyncSucceeded",
            Reason::SyncFailed => "SyncFailed",
            Reason::SyncSkipped => "SyncSkipped",
            Reason::SyncReplaced => "SyncReplaced",
            Reason::Scheduled => "Scheduled",
            Reason::Idle => "Idle",
            Reason::NameTaken => "NameTaken",
            Reason::PodsNotRunning => "PodsNotRunning",
            Reason::StateNotSaved => "StateNotSaved",
            Reason::AgentsNotStopping => "AgentsNotStopping",
            Reason::CredentialsExpired => "CredentialsExpired",
            Reason::RollingBack => "RollingBack",
            Reason::RolledBack => "RolledBack",
            Reason::PartiallyRolledBack => "PartiallyRolledBack",
        }
    }

    /// The reason of reaching a terminal or waiting phase.
    pub fn of_phase(phase: Phase) -> Reason {
        match phase {
            Phase::Pending => Reason::Validating,
            Phase::Running => Reason::Copying,
            Phase::Paused => Reason::Suspended,
            Phase::Completed => Reason::Completed,
            Phase::PartiallyCompleted => Reason::PartiallyCompleted,
            Phase::Failed => Reason::Failed,
            Phase::Cancelled => Reason::Cancelled,
            Phase::RollingBack => Reason::RollingBack,
            Phase::RolledBack => Reason::RolledBack,
            Phase::PartiallyRolledBack => Reason::PartiallyRolledBack,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Conditions are short: longer messages are cut (on a character boundary).
const MAX_MESSAGE: usize = 1024;

/// Sets conditions of one status for one observation (generation and time).
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: &'a str,
}

impl<'a> Conditions<'a> {
    pub fn new(list: &'a mut Vec<Condition>, generation: Option<i64>, now: &'a str) -> Self {
        Conditions {
            list,
            generation,
            now,
        }
    }

    /// Sets a condition, keeping its transition time when its status does not change.
    pub fn set(&mut self, kind: ConditionType, value: bool, reason: Reason, message: &str) {
        let status = if value { "True" } else { "False" };
        let mut message = message.to_string();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let now = self.now.to_string();
        match self.list.iter_mut().find(|c| c.type_ == kind.as_str()) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status.to_string();
                c.reason = reason.as_str().to_string();
                c.message = message;
                c.observed_generation = self.generation;
            }
            None => self.list.push(Condition {
                type_: kind.as_str().to_string(),
                status: status.to_string(),
                reason: reason.as_str().to_string(),
                message,
                last_transition_time: now,
                observed_generation: self.generation,
            }),
        }
    }
}

/// The condition of type `kind` in `list`, if set.
pub fn find(list: &[Condition], kind: ConditionType) -> Option<&Condition> {
    list.iter().find(|c| c.type_ == kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut list = Vec::new();
        Conditions::new(&mut list, Some(1), "t1").set(
            ConditionType::Ready,
            false,
            Reason::Planning,
            "a",
        );
        Conditions::new(&mut list, Some(2), "t2").set(
            ConditionType::Ready,
            false,
            Reason::Copying,
            "b",
        );
        assert_eq!(list[0].last_transition_time, "t1");
        assert_eq!(list[0].reason, "Copying");
        assert_eq!(list[0].observed_generation, Some(2));
        Conditions::new(&mut list, Some(2), "t3").set(
            ConditionType::Ready,
            true,
            Reason::Completed,
            &"é".repeat(1000),
        );
        assert_eq!(list[0].last_transition_time, "t3");
        assert!(list[0].message.len() <= MAX_MESSAGE);
        assert_eq!(list.len(), 1);
    }
}
