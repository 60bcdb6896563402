//! The reconcile decision, pure: a MigrationJob and what was observed of its world go in,
//! the actions to take and the new status come out. The controller does the I/O on both
//! sides; tests feed YAML fixtures.

use std::time::Duration;

use ferry_api::aggregate::aggregate;
use ferry_api::validate::validate;
use ferry_api::{Condition, MigrationJob, MigrationJobStatus, Phase, ShardProgress, ShardState};
use serde::{Deserialize, Serialize};

/// What the controller observed before deciding.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Problems with the referenced Secrets (missing Secret or key); empty when fine.
    #[serde(default)]
    pub secret_problems: Vec<String>,
    /// The reachability check, made before the agents are created.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// Whether the plan ConfigMap exists (with the current spec hash).
    #[serde(default)]
    pub plan_ready: bool,
    /// The agents' Job, if it exists.
    #[serde(default)]
    pub job: Option<AgentJob>,
    /// The progress record of each shard (index order), where one exists.
    #[serde(default)]
    pub shards: Vec<Option<ShardProgress>>,
    /// MigrationJobs of the cluster that are running now (this one excluded).
    #[serde(default)]
    pub running_elsewhere: usize,
    /// The cap on concurrently running MigrationJobs.
    #[serde(default = "default_cap")]
    pub max_running: usize,
    /// The value of the `ferry.dev/retry-failed` annotation, if set.
    #[serde(default)]
    pub retry_token: Option<String>,
    /// Where the current plan writes its reports (from the plan), once planned.
    #[serde(default)]
    pub report: Option<String>,
    /// The time of the decision (RFC 3339).
    pub now: String,
}

/// The annotation a user sets to a new value to re-run the failed objects of a finished job.
pub const RETRY_ANNOTATION: &str = "ferry.dev/retry-failed";

fn default_cap() -> usize {
    10
}

/// The result of checking both sides without writing anything.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// None when fine, else what is wrong.
    #[serde(default)]
    pub source: Option<ProbeError>,
    #[serde(default)]
    pub destination: Option<ProbeError>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeError {
    pub message: String,
    /// Credentials were refused (as opposed to an unreachable endpoint or a missing bucket).
    #[serde(default)]
    pub credentials: bool,
    /// May heal by itself (network): retry instead of failing.
    #[serde(default)]
    pub transient: bool,
}

/// What is known of the agents' Indexed Job.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentJob {
    pub suspended: bool,
    #[serde(default)]
    pub active: i32,
    /// The Job has the `Complete` condition.
    #[serde(default)]
    pub complete: bool,
    /// The Job has the `Failed` condition (indexes out of retries).
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub failed_message: Option<String>,
}

/// One thing for the controller to do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Plan the shards and store the plan (ConfigMap `<name>-plan`).
    CreatePlan,
    /// Create the progress ConfigMaps, the agents' ServiceAccount, Role and RoleBinding.
    CreateAgentAccess,
    /// Empty the shards' progress records (a retry attempt starts without checkpoints).
    ResetProgress,
    /// Create the Indexed Job, suspended or not.
    CreateJob { suspend: bool },
    /// Suspend or resume the Job.
    SetSuspend { suspend: bool },
    /// Delete the Job (its pods get SIGTERM: they checkpoint and abort multipart uploads).
    DeleteJob,
    /// Emit an Event on the MigrationJob.
    Event {
        warning: bool,
        reason: String,
        message: String,
    },
}

/// The decision: actions, the status to write, and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: MigrationJobStatus,
    pub requeue: Duration,
}

const FAST: Duration = Duration::from_secs(5);
const SLOW: Duration = Duration::from_secs(60);

/// Decides what to do about `mj` given `obs`.
pub fn decide(mj: &MigrationJob, obs: &Observed) -> Decision {
    let spec = &mj.spec;
    let prev = mj.status.clone().unwrap_or_default();
    let generation = mj.metadata.generation;
    let prev_phase = prev.phase;
    let mut d = Decision {
        actions: Vec::new(),
        status: prev.clone(),
        requeue: FAST,
    };
    d.status.observed_generation = generation;

    // Terminal phases stay terminal, unless the user asks for the failed objects again; the
    // agents are cleaned up.
    if let Some(p) = prev_phase.filter(|p| p.is_terminal()) {
        if obs.job.is_some() {
            d.actions.push(Action::DeleteJob);
        } else if let Some(token) = obs
            .retry_token
            .as_deref()
            .filter(|t| prev.last_retry_token.as_deref() != Some(*t))
        {
            return retry(d, &prev, obs, p, token);
        }
        d.requeue = SLOW;
        d.status.phase = Some(p);
        return d;
    }
    if prev_phase.is_none() {
        // A token present from the start (applied with the resource) asks for nothing.
        d.status.last_retry_token = obs.retry_token.clone();
    }

    let validated = match validate(spec) {
        Ok(v) => v,
        Err(problems) => {
            let msg = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            return finish(
                d,
                &prev,
                obs,
                Phase::Failed,
                "InvalidSpec",
                &format!("the spec is invalid: {msg}"),
            );
        }
    };
    if spec.cancel {
        if obs.job.is_some() {
            d.actions.push(Action::DeleteJob);
        }
        return finish(
            d,
            &prev,
            obs,
            Phase::Cancelled,
            "Cancelled",
            "cancelled by spec.cancel; data already copied stays",
        );
    }

    // Before any agent exists: Secrets, reachability, the queue.
    if obs.job.is_none() {
        if !obs.secret_problems.is_empty() {
            let msg = obs.secret_problems.join("; ");
            set(
                &mut d.status,
                generation,
                &obs.now,
                "CredentialsValid",
                false,
                "SecretNotFound",
                &msg,
            );
            d.requeue = Duration::from_secs(30);
            return pending(d, &prev, obs, "SecretNotFound", &msg, true);
        }
        set(
            &mut d.status,
            generation,
            &obs.now,
            "CredentialsValid",
            true,
            "SecretsFound",
            "the referenced Secrets exist and have the expected keys",
        );
        if let Some(probe) = &obs.probe {
            for (kind, res) in [
                ("SourceReachable", &probe.source),
                ("DestinationReachable", &probe.destination),
            ] {
                match res {
                    None => set(
                        &mut d.status,
                        generation,
                        &obs.now,
                        kind,
                        true,
                        "Reachable",
                        "checked without writing anything",
                    ),
                    Some(e) => set(
                        &mut d.status,
                        generation,
                        &obs.now,
                        kind,
                        false,
                        if e.transient {
                            "Unreachable"
                        } else {
                            "Refused"
                        },
                        &e.message,
                    ),
                }
            }
            if let Some(e) = probe
                .source
                .iter()
                .chain(probe.destination.iter())
                .find(|e| e.credentials)
            {
                set(
                    &mut d.status,
                    generation,
                    &obs.now,
                    "CredentialsValid",
                    false,
                    "CredentialsRefused",
                    &e.message,
                );
            }
            if let Some(e) = probe
                .source
                .iter()
                .chain(probe.destination.iter())
                .find(|e| !e.transient)
            {
                let reason = if e.credentials {
                    "CredentialsRefused"
                } else {
                    "EndpointRefused"
                };
                return finish(d, &prev, obs, Phase::Failed, reason, &e.message);
            }
            if let Some(e) = probe.source.iter().chain(probe.destination.iter()).next() {
                d.requeue = Duration::from_secs(30);
                return pending(d, &prev, obs, "Unreachable", &e.message, true);
            }
        } else {
            // The controller probes when asked to decide again with a probe.
            d.requeue = Duration::ZERO;
            return pending(
                d,
                &prev,
                obs,
                "Validating",
                "checking the Secrets and both endpoints",
                false,
            );
        }
        if obs.running_elsewhere >= obs.max_running {
            d.requeue = Duration::from_secs(30);
            let msg = format!(
                "{} MigrationJobs are running, the most allowed at once",
                obs.running_elsewhere
            );
            return pending(d, &prev, obs, "Queued", &msg, false);
        }
        if !obs.plan_ready {
            d.actions.push(Action::CreatePlan);
            return pending(
                d,
                &prev,
                obs,
                "Planning",
                "splitting the keyspace into shards",
                false,
            );
        }
        d.actions.push(Action::CreateAgentAccess);
        d.actions.push(Action::CreateJob {
            suspend: spec.suspend,
        });
        d.status.start_time.get_or_insert_with(|| obs.now.clone());
    }

    if obs.plan_ready && obs.report.is_some() {
        d.status.report = obs.report.clone();
    }

    // Agents exist (or are being created): aggregate their progress.
    let shards: Vec<ShardProgress> = obs.shards.iter().flatten().cloned().collect();
    let expected = validated.shards as usize;
    let agg = aggregate(&validated.transfer, &shards, expected);
    d.status.progress = agg.progress;
    d.status.failures_by_class = agg.failures_by_class;
    d.status.first_errors = agg.first_errors;
    d.status.shards = agg.shards;
    d.status.verified = agg.verified;
    d.status.dry_run = agg.dry_run;
    let mut phase = agg.phase.unwrap_or(Phase::Running);
    let mut message = agg.message.unwrap_or_default();
    if let Some(job) = &obs.job {
        if spec.suspend != job.suspended {
            d.actions.push(Action::SetSuspend {
                suspend: spec.suspend,
            });
        }
        if job.failed && !phase.is_terminal() {
            phase = Phase::Failed;
            message = format!(
                "agents ran out of retries: {}",
                job.failed_message.clone().unwrap_or_default()
            );
        }
    }
    if !phase.is_terminal() {
        phase = if spec.suspend {
            Phase::Paused
        } else {
            Phase::Running
        };
        if spec.suspend {
            message = "suspended; set spec.suspend to false to resume from the checkpoints".into();
        }
    }
    if phase.is_terminal() {
        d.actions.push(Action::DeleteJob);
        return finish(d, &prev, obs, phase, &format!("{phase:?}"), &message);
    }
    let reason = if phase == Phase::Paused {
        "Suspended"
    } else {
        "Copying"
    };
    let msg = if message.is_empty() {
        format!(
            "{} of {} shards copying",
            shards
                .iter()
                .filter(|s| s.state == ShardState::Running)
                .count(),
            expected
        )
    } else {
        message
    };
    set(
        &mut d.status,
        generation,
        &obs.now,
        "Ready",
        false,
        reason,
        &msg,
    );
    set(
        &mut d.status,
        generation,
        &obs.now,
        "Progressing",
        phase == Phase::Running,
        reason,
        &msg,
    );
    let failed = d.status.progress.counters.objects_failed;
    set(
        &mut d.status,
        generation,
        &obs.now,
        "Degraded",
        failed > 0,
        if failed > 0 {
            "ObjectsFailed"
        } else {
            "NoFailures"
        },
        &format!("{failed} objects failed so far"),
    );
    transition(&mut d, prev_phase, phase, reason, &msg);
    d
}

/// A new retry token on a finished job: start attempt n+1 over the keys of the last
/// attempt's failure report, or say why there is nothing to retry. The token is recorded
/// either way, so it is handled once.
fn retry(
    mut d: Decision,
    prev: &MigrationJobStatus,
    obs: &Observed,
    phase: Phase,
    token: &str,
) -> Decision {
    d.status.last_retry_token = Some(token.to_string());
    let failed = prev.progress.counters.objects_failed;
    if !matches!(phase, Phase::PartiallyCompleted | Phase::Failed) || failed == 0 {
        d.status.phase = Some(phase);
        d.actions.push(Action::Event {
            warning: false,
            reason: "NothingToRetry".into(),
            message: format!(
                "{RETRY_ANNOTATION}={token}: the job ended {phase:?} with no failed objects in \
                 its report; nothing to retry (delete and recreate it to run it again)"
            ),
        });
        d.requeue = SLOW;
        return d;
    }
    let attempt = prev.attempt + 1;
    d.status.attempt = attempt;
    d.status.progress = Default::default();
    d.status.failures_by_class = Default::default();
    d.status.first_errors = Vec::new();
    d.status.shards = Vec::new();
    d.status.completion_time = None;
    d.status.start_time = Some(obs.now.clone());
    d.actions.push(Action::ResetProgress);
    let msg = format!(
        "{RETRY_ANNOTATION}={token}: retrying the {failed} failed objects (attempt {attempt})"
    );
    pending(d, prev, obs, "Retrying", &msg, false)
}

fn pending(
    mut d: Decision,
    prev: &MigrationJobStatus,
    obs: &Observed,
    reason: &str,
    msg: &str,
    degraded: bool,
) -> Decision {
    let g = d.status.observed_generation;
    set(&mut d.status, g, &obs.now, "Ready", false, reason, msg);
    set(
        &mut d.status,
        g,
        &obs.now,
        "Progressing",
        !degraded,
        reason,
        msg,
    );
    set(
        &mut d.status,
        g,
        &obs.now,
        "Degraded",
        degraded,
        reason,
        msg,
    );
    d.status.message = Some(msg.to_string());
    if prev.phase != Some(Phase::Pending) || prev.message.as_deref() != Some(msg) {
        d.actions.push(Action::Event {
            warning: degraded,
            reason: reason.to_string(),
            message: msg.to_string(),
        });
    }
    d.status.phase = Some(Phase::Pending);
    d
}

fn finish(
    mut d: Decision,
    prev: &MigrationJobStatus,
    obs: &Observed,
    phase: Phase,
    reason: &str,
    msg: &str,
) -> Decision {
    let g = d.status.observed_generation;
    let ok = phase == Phase::Completed;
    set(&mut d.status, g, &obs.now, "Ready", ok, reason, msg);
    set(
        &mut d.status,
        g,
        &obs.now,
        "Progressing",
        false,
        reason,
        msg,
    );
    let degraded = !ok || d.status.progress.counters.objects_failed > 0;
    set(
        &mut d.status,
        g,
        &obs.now,
        "Degraded",
        degraded,
        reason,
        msg,
    );
    d.status.message = Some(msg.to_string());
    d.status
        .completion_time
        .get_or_insert_with(|| obs.now.clone());
    transition(&mut d, prev.phase, phase, reason, msg);
    d.requeue = SLOW;
    d
}

/// Sets the phase, with an Event when it changes.
fn transition(d: &mut Decision, from: Option<Phase>, to: Phase, reason: &str, msg: &str) {
    if from != Some(to) {
        let warning = matches!(to, Phase::Failed | Phase::PartiallyCompleted);
        let text = if msg.is_empty() {
            format!("phase {to:?}")
        } else {
            format!("phase {to:?}: {msg}")
        };
        d.actions.push(Action::Event {
            warning,
            reason: reason.to_string(),
            message: text,
        });
    }
    d.status.phase = Some(to);
    if !msg.is_empty() {
        d.status.message = Some(msg.to_string());
    }
}

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set(
    status: &mut MigrationJobStatus,
    generation: Option<i64>,
    now: &str,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
) {
    let s = if value { "True" } else { "False" };
    let mut message = message.to_string();
    if message.len() > 1024 {
        let mut cut = 1024;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    match status.conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != s {
                c.last_transition_time = now.to_string();
            }
            c.status = s.to_string();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => status.conditions.push(Condition {
            type_: kind.to_string(),
            status: s.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: now.to_string(),
            observed_generation: generation,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture: the MigrationJob (as applied, with status) and the observed world, in YAML.
    #[derive(Deserialize)]
    struct Fixture {
        job: MigrationJob,
        observed: Observed,
    }

    fn load(name: &str) -> Fixture {
        let path = format!(
            "{}/tests/fixtures/reconcile/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_yaml::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn decide_fixture(name: &str) -> Decision {
        let f = load(name);
        decide(&f.job, &f.observed)
    }

    fn cond<'a>(d: &'a Decision, kind: &str) -> &'a Condition {
        d.status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind} condition in {:?}", d.status.conditions))
    }

    fn events(d: &Decision) -> Vec<String> {
        d.actions
            .iter()
            .filter_map(|a| {
                if let Action::Event { reason, .. } = a {
                    Some(reason.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn new_job_is_validated_first() {
        let d = decide_fixture("new");
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(d.requeue, Duration::ZERO, "asks to be probed at once");
        assert!(
            d.actions.iter().all(|a| matches!(a, Action::Event { .. })),
            "{:?}",
            d.actions
        );
        assert_eq!(d.status.observed_generation, Some(1));
    }

    #[test]
    fn missing_secret_is_a_pending_condition_and_warning_event() {
        let d = decide_fixture("missing-secret");
        assert_eq!(d.status.phase, Some(Phase::Pending));
        let c = cond(&d, "CredentialsValid");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert!(c.message.contains("media/aws-creds"), "{}", c.message);
        assert!(d.actions.iter().any(|a| matches!(a, Action::Event { warning: true, reason, .. } if reason == "SecretNotFound")));
        assert!(!d
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateJob { .. })));
    }

    #[test]
    fn refused_credentials_fail_the_job() {
        let d = decide_fixture("bad-credentials");
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert_eq!(cond(&d, "CredentialsValid").status, "False");
        assert_eq!(cond(&d, "SourceReachable").status, "False");
        assert_eq!(cond(&d, "Ready").status, "False");
        assert!(d.status.completion_time.is_some());
        assert_eq!(events(&d), vec!["CredentialsRefused"]);
    }

    #[test]
    fn unreachable_endpoint_waits() {
        let d = decide_fixture("unreachable");
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(cond(&d, "DestinationReachable").reason, "Unreachable");
        assert_eq!(d.requeue, Duration::from_secs(30));
    }

    #[test]
    fn plan_then_agents() {
        let d = decide_fixture("probed");
        assert_eq!(
            d.actions
                .iter()
                .filter(|a| !matches!(a, Action::Event { .. }))
                .collect::<Vec<_>>(),
            vec![&Action::CreatePlan]
        );
        let mut f = load("probed");
        f.observed.plan_ready = true;
        let d = decide(&f.job, &f.observed);
        assert!(d.actions.contains(&Action::CreateAgentAccess));
        assert!(d.actions.contains(&Action::CreateJob { suspend: false }));
        assert_eq!(d.status.phase, Some(Phase::Running));
        assert!(d.status.start_time.is_some());
        assert!(events(&d).contains(&"Copying".to_string()));
    }

    #[test]
    fn queued_when_too_many_run() {
        let mut f = load("probed");
        f.observed.running_elsewhere = 10;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(cond(&d, "Ready").reason, "Queued");
        assert!(!d
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreatePlan | Action::CreateJob { .. })));
    }

    #[test]
    fn a_new_retry_token_starts_an_attempt_over_the_failed_objects() {
        let f = load("partial");
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(d.status.attempt, 1);
        assert_eq!(d.status.last_retry_token.as_deref(), Some("2026-11-22"));
        assert_eq!(cond(&d, "Ready").reason, "Retrying");
        assert!(cond(&d, "Ready").message.contains("3 failed objects"));
        assert_eq!(d.actions.first(), Some(&Action::ResetProgress));
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::CreateJob { .. } | Action::CreatePlan)),
            "the agents start only after the checks and a new plan: {:?}",
            d.actions
        );
        assert_eq!(events(&d), vec!["Retrying"]);
        assert_eq!(d.status.progress.counters.objects_failed, 0);
        assert!(d.status.first_errors.is_empty() && d.status.failures_by_class.is_empty());
        assert_eq!(d.status.completion_time, None);

        // The next pass, checks done: the attempt needs its own plan (the observed plan is the
        // first run's), then agents.
        let mut job = f.job.clone();
        job.status = Some(d.status.clone());
        let mut obs = f.observed.clone();
        obs.probe = Some(Probe::default());
        obs.plan_ready = false;
        let d2 = decide(&job, &obs);
        assert_eq!(d2.actions.first(), Some(&Action::CreatePlan));
        assert!(!d2
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateJob { .. } | Action::ResetProgress)));
        assert_eq!(d2.status.attempt, 1);
    }

    #[test]
    fn a_handled_retry_token_does_nothing() {
        let mut f = load("partial");
        if let Some(st) = f.job.status.as_mut() {
            st.last_retry_token = Some("2026-11-22".into());
        }
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::PartiallyCompleted));
        assert!(d.actions.is_empty(), "{:?}", d.actions);
        assert_eq!(d.status.attempt, 0);
    }

    #[test]
    fn a_retry_waits_for_the_old_agents_to_go() {
        let mut f = load("partial");
        f.observed.job = Some(AgentJob {
            complete: true,
            ..Default::default()
        });
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.actions, vec![Action::DeleteJob]);
        assert_eq!(d.status.last_retry_token, None, "not handled yet");
    }

    #[test]
    fn a_retry_token_on_a_clean_job_is_recorded_and_ignored() {
        let mut f = load("partial");
        if let Some(st) = f.job.status.as_mut() {
            st.phase = Some(Phase::Completed);
            st.progress.counters.objects_failed = 0;
        }
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Completed));
        assert_eq!(d.status.last_retry_token.as_deref(), Some("2026-11-22"));
        assert_eq!(events(&d), vec!["NothingToRetry"]);
        assert!(!d.actions.contains(&Action::ResetProgress));
    }

    #[test]
    fn a_retry_token_present_at_creation_is_not_a_request() {
        let mut f = load("new");
        f.observed.retry_token = Some("from-git".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.last_retry_token.as_deref(), Some("from-git"));
    }

    #[test]
    fn running_aggregates_shard_progress() {
        let d = decide_fixture("running");
        assert_eq!(d.status.phase, Some(Phase::Running));
        let p = &d.status.progress;
        assert_eq!(p.counters.objects_copied, 150);
        assert_eq!(p.counters.objects_total, 400);
        assert_eq!(p.bytes_per_second, 3000);
        assert_eq!(d.status.shards.len(), 2);
        assert!(
            d.actions
                .iter()
                .all(|a| !matches!(a, Action::CreateJob { .. } | Action::Event { .. })),
            "{:?}",
            d.actions
        );
        assert_eq!(cond(&d, "Progressing").status, "True");
    }

    #[test]
    fn suspend_and_resume_go_through_the_job() {
        let mut f = load("running");
        f.job.spec.suspend = true;
        let d = decide(&f.job, &f.observed);
        assert!(d.actions.contains(&Action::SetSuspend { suspend: true }));
        assert_eq!(d.status.phase, Some(Phase::Paused));
        f.job.status = Some(d.status);
        f.job.spec.suspend = false;
        f.observed.job.as_mut().unwrap().suspended = true;
        let d = decide(&f.job, &f.observed);
        assert!(d.actions.contains(&Action::SetSuspend { suspend: false }));
        assert_eq!(d.status.phase, Some(Phase::Running));
    }

    #[test]
    fn all_shards_done_completes_and_removes_agents() {
        let d = decide_fixture("done");
        assert_eq!(d.status.phase, Some(Phase::Completed));
        assert!(d.actions.contains(&Action::DeleteJob));
        assert_eq!(cond(&d, "Ready").status, "True");
        assert_eq!(cond(&d, "Degraded").status, "False");
        assert!(d.status.completion_time.is_some());
        assert_eq!(d.status.progress.percent.as_deref(), Some("100%"));
        // Terminal stays terminal.
        let mut f = load("done");
        f.job.status = Some(d.status.clone());
        f.observed.job = None;
        let again = decide(&f.job, &f.observed);
        assert_eq!(again.status.phase, Some(Phase::Completed));
        assert!(again.actions.is_empty(), "{:?}", again.actions);
    }

    #[test]
    fn failures_within_budget_are_partial_and_beyond_are_failed() {
        let mut f = load("done");
        for s in f.observed.shards.iter_mut().flatten() {
            s.counters.objects_failed = 1;
            s.counters.objects_copied -= 1;
        }
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::PartiallyCompleted));
        assert_eq!(cond(&d, "Degraded").status, "True");
        f.job.spec.max_failures = Some("1".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
    }

    #[test]
    fn fatal_shard_fails_the_job() {
        let mut f = load("running");
        let s = f.observed.shards[0].as_mut().unwrap();
        s.state = ShardState::Failed;
        s.fatal = Some(ferry_api::ErrorSample {
            key: String::new(),
            class: ferry_api::FailureClass::NoSuchBucket,
            code: Some("NoSuchBucket".into()),
            message: "bucket gone".into(),
        });
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert!(d.status.message.as_deref().unwrap().contains("bucket gone"));
        assert!(d.actions.contains(&Action::DeleteJob));
    }

    #[test]
    fn agents_out_of_retries_fail_the_job() {
        let mut f = load("running");
        let j = f.observed.job.as_mut().unwrap();
        j.failed = true;
        j.failed_message = Some("Job has failed indexes".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
    }

    #[test]
    fn cancel_deletes_the_agents() {
        let mut f = load("running");
        f.job.spec.cancel = true;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Cancelled));
        assert!(d.actions.contains(&Action::DeleteJob));
    }

    #[test]
    fn invalid_spec_fails_without_children() {
        let mut f = load("new");
        f.job.spec.parallelism.shards = 0;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert_eq!(cond(&d, "Ready").reason, "InvalidSpec");
        assert!(!d.actions.iter().any(|a| !matches!(a, Action::Event { .. })));
    }

    #[test]
    fn condition_transition_time_moves_only_on_change() {
        let mut st = MigrationJobStatus::default();
        set(&mut st, Some(1), "t1", "Ready", false, "A", "a");
        set(&mut st, Some(2), "t2", "Ready", false, "B", "b");
        assert_eq!(st.conditions[0].last_transition_time, "t1");
        set(&mut st, Some(2), "t3", "Ready", true, "C", "c");
        assert_eq!(st.conditions[0].last_transition_time, "t3");
        assert_eq!(st.conditions.len(), 1);
    }
}
