//! The schedule of a BucketSync as one pure decision: the resource, its runs (child
//! MigrationJobs) and the time go in; the runs to create, cancel, suspend or prune, the Events,
//! the new status and when to look again come out. The controller carries the steps out
//! (`ferry run --watch` runs its passes on the same [`ferry_api::schedule::Trigger`] ticks, one at a time, with no
//! history to prune).
//!
//! The rules (as a CronJob's, and stricter where a sync needs it):
//! - a run is named from its tick (`<sync>-<unix minutes>`, seconds for intervals under a
//!   minute), so a restarted operator never starts the same tick twice;
//! - after an outage at most one catch-up run starts (the newest missed tick), and a tick
//!   missed by more than `startingDeadlineSeconds` is skipped;
//! - `Forbid` skips (and counts) a tick that comes while a run is active; `Replace` cancels the
//!   active run and starts the new one;
//! - `ferry.dev/sync-now` set to a new value starts a run now;
//! - finished runs beyond the history limits are deleted, oldest first, except the newest run
//!   whose deletes are held (it is the one a user approves).

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_api::bucketsync::{checked_trigger, RunSummary, SyncPhase};
use ferry_api::conditions::{ConditionType, Conditions, Reason};
use ferry_api::schedule::format_duration;
use ferry_api::{BucketSync, BucketSyncStatus, ConcurrencyPolicy, Phase};
use sha2::{Digest, Sha256};

use ConditionType::*;

/// The annotation a user sets to a new value to start a run now.
pub const SYNC_NOW_ANNOTATION: &str = "ferry.dev/sync-now";
/// The annotation on a run with the tick it was started for (RFC 3339).
pub const SCHEDULED_ANNOTATION: &str = "ferry.dev/scheduled-at";

/// What is known of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    /// The tick it was started for (manual runs: when they were asked for).
    pub scheduled: DateTime<Utc>,
    /// None until its controller has written a status.
    pub phase: Option<Phase>,
    pub suspended: bool,
    pub cancelled: bool,
    /// A user rolls it back (`ferry.dev/rollback`): it is never cancelled nor replaced, as a
    /// new run beside it would skip objects the rollback then deletes.
    pub rolling_back: bool,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub summary: RunSummary,
    /// Waiting for something outside to change (a missing Secret, an unreachable endpoint):
    /// the MigrationJob's own message.
    pub stuck: Option<String>,
}

impl Run {
    fn active(&self) -> bool {
        !self.phase.is_some_and(|p| p.is_terminal())
    }
}

/// What was observed.
#[derive(Debug, Clone)]
pub struct SyncObserved {
    /// The runs this sync owns.
    pub runs: Vec<Run>,
    /// The value of `ferry.dev/sync-now`, if set.
    pub sync_now: Option<String>,
    pub now: DateTime<Utc>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Create the run `name` for tick `scheduled` (idempotent: the name is the tick's).
    CreateRun {
        name: String,
        scheduled: DateTime<Utc>,
        manual: bool,
    },
    /// Suspend or resume a run.
    SetRunSuspend { name: String, suspend: bool },
    /// Cancel a run (`Replace`).
    CancelRun { name: String },
    /// Delete a finished run beyond the history limits.
    DeleteRun { name: String },
    /// An Event on the BucketSync.
    Event {
        warning: bool,
        reason: Reason,
        message: String,
    },
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncDecision {
    pub steps: Vec<SyncStep>,
    pub status: BucketSyncStatus,
    pub requeue: Duration,
}

/// Look again at least this often while a run is active.
const WATCH: Duration = Duration::from_secs(30);
/// And at most this long between looks when idle.
const IDLE: Duration = Duration::from_secs(300);

/// The name of the run for tick `t`.
pub fn run_name(sync: &str, t: DateTime<Utc>, by_second: bool) -> String {
    if by_second {
        format!("{sync}-{}", t.timestamp())
    } else {
        format!("{sync}-{}", t.timestamp().div_euclid(60))
    }
}

/// The name of the run a `ferry.dev/sync-now` value asks for (the same value, the same run).
pub fn manual_run_name(sync: &str, token: &str) -> String {
    let h = Sha256::digest(token.as_bytes());
    format!("{sync}-m{}", hex::encode(&h[..4]))
}

/// A Kubernetes timestamp as a chrono time.
pub fn from_k8s(t: &k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_time(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Decides what to do about `bs` given `obs`.
pub fn decide(bs: &BucketSync, obs: &SyncObserved) -> SyncDecision {
    let prev = bs.status.clone().unwrap_or_default();
    let mut st = prev.clone();
    st.observed_generation = bs.metadata.generation;
    let mut steps = Vec::new();
    let name = bs.metadata.name.clone().unwrap_or_default();
    let now = obs.now;
    let now_s = rfc3339(now);
    let event = |steps: &mut Vec<SyncStep>, warning, reason, message: String| {
        steps.push(SyncStep::Event {
            warning,
            reason,
            message,
        })
    };

    // An invalid spec: nothing new runs until it is fixed (kstatus: Stalled).
    let trigger = match checked_trigger(&name, &bs.spec) {
        Ok(t) => t,
        Err(msg) => {
            let mut c = Conditions::new(&mut st.conditions, st.observed_generation, &now_s);
            c.set(Stalled, true, Reason::InvalidSpec, &msg);
            c.set(Ready, false, Reason::InvalidSpec, &msg);
            c.set(Reconciling, false, Reason::InvalidSpec, &msg);
            if prev.phase != Some(SyncPhase::Failed) || prev.message.as_deref() != Some(&msg) {
                event(&mut steps, true, Reason::InvalidSpec, msg.clone());
            }
            st.phase = Some(SyncPhase::Failed);
            st.message = Some(msg);
            st.next_sync_time = None;
            return SyncDecision {
                steps,
                status: st,
                requeue: IDLE,
            };
        }
    };
    let anchor = bs
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| from_k8s(&t.0));

    // Runs that ended since the last look: the newest becomes `lastRun`; each is announced.
    let mut runs = obs.runs.clone();
    runs.sort_by(|a, b| (a.scheduled, &a.name).cmp(&(b.scheduled, &b.name)));
    let known_last = prev.last_run.as_ref().map(|r| r.name.clone());
    let finished: Vec<&Run> = runs.iter().filter(|r| !r.active()).collect();
    let newly: Vec<&Run> = match finished
        .iter()
        .position(|r| Some(&r.name) == known_last.as_ref())
    {
        Some(i) => finished[i + 1..].to_vec(),
        None if known_last.is_none() => finished.clone(),
        // The last known run was pruned or deleted: only runs that ended after it count.
        None => finished
            .iter()
            .filter(|r| r.ended.map(rfc3339) > prev.last_sync_time)
            .copied()
            .collect(),
    };
    for r in &newly {
        let phase = r.phase.unwrap_or(Phase::Failed);
        let clean = phase == Phase::Completed;
        let ended = r.ended.unwrap_or(now);
        st.last_sync_time = Some(rfc3339(ended));
        if let Some(started) = r.started {
            let secs = (ended - started).num_seconds().max(0) as u64;
            st.last_sync_duration = Some(format_duration(Duration::from_secs(secs)));
        }
        if clean {
            st.last_successful_sync_time = Some(rfc3339(ended));
            st.consecutive_failures = 0;
        } else {
            st.consecutive_failures += 1;
        }
        st.last_run = Some(r.summary.clone());
        let s = &r.summary;
        let mut msg = format!(
            "run {} ended {phase:?}: {} copied, {} up to date, {} deleted, {} failed",
            r.name, s.objects_copied, s.objects_up_to_date, s.objects_deleted, s.objects_failed
        );
        if s.deletes_held {
            msg.push_str("; deletes held (more candidates than maxDeletes)");
        }
        let reason = if clean {
            Reason::SyncSucceeded
        } else {
            Reason::SyncFailed
        };
        event(&mut steps, !clean || s.deletes_held, reason, msg);
    }

    // The last run may change after it ended: an approval of its held deletes runs its delete
    // stage, after which its summary says what was deleted.
    if newly.is_empty() {
        if let Some(r) = finished
            .iter()
            .find(|r| Some(&r.name) == known_last.as_ref())
        {
            if prev.last_run.as_ref() != Some(&r.summary) {
                let was_held = prev.last_run.as_ref().is_some_and(|l| l.deletes_held);
                if was_held && !r.summary.deletes_held {
                    event(
                        &mut steps,
                        false,
                        Reason::DeletesApproved,
                        format!(
                            "run {}: its approved deletes ended: {} deleted",
                            r.name, r.summary.objects_deleted
                        ),
                    );
                }
                st.last_run = Some(r.summary.clone());
            }
        }
    }

    let mut active: Vec<&Run> = runs.iter().filter(|r| r.active()).collect();
    // Suspend follows the sync.
    for r in &active {
        if r.suspended != bs.spec.suspend && !r.cancelled {
            steps.push(SyncStep::SetRunSuspend {
                name: r.name.clone(),
                suspend: bs.spec.suspend,
            });
        }
    }

    // The manual trigger.
    let mut to_start: Option<(String, DateTime<Utc>, bool)> = None;
    let new_token = obs
        .sync_now
        .clone()
        .filter(|t| prev.last_sync_now.as_deref() != Some(t.as_str()));
    if prev.phase.is_none() {
        // A value present at creation asks for nothing.
        st.last_sync_now = obs.sync_now.clone();
    } else if let Some(token) = new_token {
        st.last_sync_now = Some(token.clone());
        if bs.spec.suspend {
            event(
                &mut steps,
                false,
                Reason::SyncSkipped,
                format!("{SYNC_NOW_ANNOTATION}={token}: the sync is suspended; no run started"),
            );
        } else {
            to_start = Some((manual_run_name(&name, &token), now, true));
        }
    }

    // The schedule.
    let last_schedule = parse_time(&prev.last_schedule_time);
    if !bs.spec.suspend {
        if let Some(tick) = trigger.last_tick(anchor, last_schedule, now) {
            st.last_schedule_time = Some(rfc3339(tick));
            let late = bs
                .spec
                .starting_deadline_seconds
                .is_some_and(|d| (now - tick).num_seconds() > d);
            if late {
                st.skipped_ticks += 1;
                event(
                    &mut steps,
                    true,
                    Reason::SyncSkipped,
                    format!(
                        "the tick of {} was missed by more than startingDeadlineSeconds; skipped",
                        rfc3339(tick)
                    ),
                );
            } else if to_start.is_none() {
                to_start = Some((run_name(&name, tick, trigger.by_second()), tick, false));
            }
        }
    }

    if let Some((run, scheduled, manual)) = to_start {
        let exists = runs.iter().any(|r| r.name == run);
        // A run that cannot start (a missing Secret, an unreachable endpoint) does not hold
        // the schedule: at the next tick it is cancelled (counted as a failure when it ends)
        // and the new run tries again.
        if !exists {
            for r in active
                .iter()
                .filter(|r| r.stuck.is_some() && !r.cancelled && !r.rolling_back)
            {
                steps.push(SyncStep::CancelRun {
                    name: r.name.clone(),
                });
                event(
                    &mut steps,
                    true,
                    Reason::SyncFailed,
                    format!(
                        "run {} could not start and is cancelled: {}",
                        r.name,
                        r.stuck.as_deref().unwrap_or_default()
                    ),
                );
            }
            active.retain(|r| r.stuck.is_none() || r.cancelled || r.rolling_back);
        }
        if exists {
            // Started by an earlier pass whose status write was lost: nothing to do.
        } else if let Some(r) = active.iter().find(|r| r.rolling_back) {
            st.skipped_ticks += 1;
            event(
                &mut steps,
                false,
                Reason::SyncSkipped,
                format!(
                    "run {run} not started: {} is being rolled back (ferry.dev/rollback)",
                    r.name
                ),
            );
        } else if !active.is_empty() && bs.spec.concurrency_policy == ConcurrencyPolicy::Forbid {
            st.skipped_ticks += 1;
            let names: Vec<&str> = active.iter().map(|r| r.name.as_str()).collect();
            event(
                &mut steps,
                false,
                Reason::SyncSkipped,
                format!(
                    "run {run} not started: {} is still active (concurrencyPolicy Forbid)",
                    names.join(", ")
                ),
            );
        } else {
            for r in active.iter().filter(|r| !r.cancelled) {
                steps.push(SyncStep::CancelRun {
                    name: r.name.clone(),
                });
                event(
                    &mut steps,
                    false,
                    Reason::SyncReplaced,
                    format!(
                        "run {} cancelled for {run} (concurrencyPolicy Replace)",
                        r.name
                    ),
                );
            }
            steps.push(SyncStep::CreateRun {
                name: run.clone(),
                scheduled,
                manual,
            });
            let why = if manual {
                format!("asked for with {SYNC_NOW_ANNOTATION}")
            } else {
                format!("for the tick of {}", rfc3339(scheduled))
            };
            event(
                &mut steps,
                false,
                Reason::SyncStarted,
                format!("run {run} started ({why})"),
            );
            active.retain(|r| r.cancelled);
            st.active_run = Some(run);
        }
    }
    if st.active_run.as_ref().is_none_or(|a| {
        !steps
            .iter()
            .any(|s| matches!(s, SyncStep::CreateRun { name, .. } if name == a))
    }) {
        st.active_run = runs
            .iter()
            .filter(|r| r.active() && !r.cancelled)
            .map(|r| r.name.clone())
            .next_back();
    }

    // History: finished runs beyond the limits go, oldest first; the newest held run stays.
    let newest_held = finished
        .iter()
        .rev()
        .find(|r| r.summary.deletes_held)
        .map(|r| r.name.clone());
    for (clean, limit) in [
        (true, bs.spec.successful_runs_history_limit),
        (false, bs.spec.failed_runs_history_limit),
    ] {
        let of_kind: Vec<&&Run> = finished
            .iter()
            .filter(|r| (r.phase == Some(Phase::Completed)) == clean)
            .collect();
        let excess = of_kind.len().saturating_sub(limit as usize);
        for r in of_kind.into_iter().take(excess) {
            if Some(&r.name) != newest_held.as_ref() {
                steps.push(SyncStep::DeleteRun {
                    name: r.name.clone(),
                });
            }
        }
    }

    // Phase, conditions, next tick.
    let next = (!bs.spec.suspend).then(|| {
        let from = parse_time(&st.last_schedule_time).map_or(now, |t| t.max(now));
        trigger.next_tick(anchor, from)
    });
    st.next_sync_time = next.map(rfc3339);
    let (phase, reason, msg) = if bs.spec.suspend {
        (
            SyncPhase::Suspended,
            Reason::Suspended,
            "suspended: no new runs; set spec.suspend to false to resume".to_string(),
        )
    } else if let Some(run) = &st.active_run {
        (
            SyncPhase::Syncing,
            Reason::SyncStarted,
            format!("run {run} is active"),
        )
    } else {
        (
            SyncPhase::Idle,
            Reason::Scheduled,
            match &st.next_sync_time {
                Some(t) => format!("next run at {t}"),
                None => "idle".into(),
            },
        )
    };
    let held = st.last_run.as_ref().is_some_and(|r| r.deletes_held);
    let failing = st.consecutive_failures > 0;
    let mut c = Conditions::new(&mut st.conditions, st.observed_generation, &now_s);
    c.set(Stalled, false, Reason::Scheduled, "the spec is valid");
    c.set(Reconciling, phase == SyncPhase::Syncing, reason, &msg);
    let ready_msg = if failing {
        format!("{msg}; the last run did not complete cleanly")
    } else {
        msg.clone()
    };
    c.set(
        Ready,
        phase != SyncPhase::Syncing && !failing && !held,
        if failing { Reason::SyncFailed } else { reason },
        &ready_msg,
    );
    if held {
        let run = st
            .last_run
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        c.set(
            DeletesHeld,
            true,
            Reason::MaxDeletesExceeded,
            &format!(
                "run {run} held its deletes (more candidates than maxDeletes); raise maxDeletes \
                 or approve with the annotation ferry.dev/approve-deletes={run} on this BucketSync"
            ),
        );
    } else {
        c.set(DeletesHeld, false, Reason::WithinLimit, "no deletes held");
    }
    st.phase = Some(phase);
    st.message = Some(msg);
    let requeue = match next {
        _ if st.active_run.is_some() => WATCH,
        Some(t) => (t - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_secs(1), IDLE),
        None => IDLE,
    };
    SyncDecision {
        steps,
        status: st,
        requeue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ferry_api::BucketSyncSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, s).unwrap()
    }

    fn sync(extra: &str) -> BucketSync {
        let spec: BucketSyncSpec = serde_yaml::from_str(&format!(
            "source: {{s3: {{bucket: src}}}}\ndestination: {{s3: {{bucket: dst}}}}\n{extra}"
        ))
        .unwrap();
        let mut bs = BucketSync::new("media", spec);
        bs.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(t(10, 0, 0).timestamp()).unwrap(),
        ));
        bs.metadata.generation = Some(1);
        bs
    }

    fn with_status(mut bs: BucketSync, f: impl FnOnce(&mut BucketSyncStatus)) -> BucketSync {
        let mut st = BucketSyncStatus {
            phase: Some(SyncPhase::Idle),
            ..Default::default()
        };
        f(&mut st);
        bs.status = Some(st);
        bs
    }

    fn run(name: &str, at: DateTime<Utc>, phase: Option<Phase>) -> Run {
        Run {
            name: name.into(),
            scheduled: at,
            phase,
            suspended: false,
            cancelled: false,
            rolling_back: false,
            started: Some(at),
            stuck: None,
            ended: phase
                .filter(|p| p.is_terminal())
                .map(|_| at + chrono::Duration::seconds(30)),
            summary: RunSummary {
                name: name.into(),
                phase,
                ..Default::default()
            },
        }
    }

    fn obs(runs: Vec<Run>, now: DateTime<Utc>) -> SyncObserved {
        SyncObserved {
            runs,
            sync_now: None,
            now,
        }
    }

    fn created(d: &SyncDecision) -> Vec<String> {
        d.steps
            .iter()
            .filter_map(|s| match s {
                SyncStep::CreateRun { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn deleted(d: &SyncDecision) -> Vec<String> {
        d.steps
            .iter()
            .filter_map(|s| match s {
                SyncStep::DeleteRun { name } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_interval_runs_at_creation_then_every_interval() {
        let bs = sync("interval: 15m");
        let d = decide(&bs, &obs(vec![], t(10, 0, 5)));
        let first = run_name("media", t(10, 0, 0), false);
        assert_eq!(created(&d), std::slice::from_ref(&first));
        assert_eq!(
            d.status.last_schedule_time.as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
        assert_eq!(
            d.status.next_sync_time.as_deref(),
            Some("2026-12-01T10:15:00Z")
        );
        assert_eq!(d.status.phase, Some(SyncPhase::Syncing));
        // Before the next tick nothing new starts, whatever the run does.
        let bs = with_status(sync("interval: 15m"), |s| {
            s.last_schedule_time = Some("2026-12-01T10:00:00Z".into())
        });
        let done = run(&first, t(10, 0, 0), Some(Phase::Completed));
        let d = decide(&bs, &obs(vec![done], t(10, 14, 59)));
        assert!(created(&d).is_empty());
        assert_eq!(d.status.phase, Some(SyncPhase::Idle));
        assert_eq!(d.requeue, Duration::from_secs(1));
    }

    #[test]
    fn a_cron_schedule_waits_for_its_first_tick() {
        let bs = sync("schedule: '0 2 * * *'");
        let d = decide(&bs, &obs(vec![], t(10, 0, 5)));
        assert!(created(&d).is_empty());
        assert_eq!(
            d.status.next_sync_time.as_deref(),
            Some("2026-12-02T02:00:00Z")
        );
        assert_eq!(d.requeue, IDLE);
        // In another time zone the tick is the local 02:00.
        let bs = sync("schedule: '0 2 * * *'\ntimeZone: Europe/Berlin");
        let d = decide(&bs, &obs(vec![], t(10, 0, 5)));
        assert_eq!(
            d.status.next_sync_time.as_deref(),
            Some("2026-12-02T01:00:00Z")
        );
    }

    #[test]
    fn after_an_outage_one_catch_up_run_starts_never_a_burst() {
        let bs = with_status(sync("schedule: '*/5 * * * *'"), |s| {
            s.last_schedule_time = Some("2026-12-01T10:00:00Z".into())
        });
        let d = decide(&bs, &obs(vec![], t(13, 2, 0)));
        assert_eq!(created(&d), [run_name("media", t(13, 0, 0), false)]);
        // With a deadline shorter than the delay the tick is skipped and counted.
        let bs = with_status(
            sync("schedule: '*/5 * * * *'\nstartingDeadlineSeconds: 60"),
            |s| s.last_schedule_time = Some("2026-12-01T10:00:00Z".into()),
        );
        let d = decide(&bs, &obs(vec![], t(13, 2, 0)));
        assert!(created(&d).is_empty());
        assert_eq!(d.status.skipped_ticks, 1);
        assert_eq!(
            d.status.last_schedule_time.as_deref(),
            Some("2026-12-01T13:00:00Z")
        );
    }

    #[test]
    fn forbid_skips_and_counts_replace_cancels() {
        let active = run("media-29000000", t(10, 0, 0), Some(Phase::Running));
        let base = |policy: &str| {
            with_status(
                sync(&format!("interval: 10s\nconcurrencyPolicy: {policy}")),
                |s| s.last_schedule_time = Some("2026-12-01T10:00:00Z".into()),
            )
        };
        let d = decide(&base("Forbid"), &obs(vec![active.clone()], t(10, 0, 12)));
        assert!(created(&d).is_empty());
        assert_eq!(d.status.skipped_ticks, 1);
        assert_eq!(d.status.active_run.as_deref(), Some("media-29000000"));
        let d = decide(&base("Replace"), &obs(vec![active.clone()], t(10, 0, 12)));
        assert_eq!(created(&d), [run_name("media", t(10, 0, 10), true)]);
        assert!(d.steps.contains(&SyncStep::CancelRun {
            name: "media-29000000".into()
        }));
        // A run being rolled back is neither cancelled nor joined by a new one.
        let rolling_back = Run {
            rolling_back: true,
            ..active
        };
        let d = decide(&base("Replace"), &obs(vec![rolling_back], t(10, 0, 12)));
        assert!(created(&d).is_empty(), "{:?}", d.steps);
        assert!(!d
            .steps
            .iter()
            .any(|s| matches!(s, SyncStep::CancelRun { .. })));
        assert_eq!(d.status.skipped_ticks, 1);
    }

    #[test]
    fn a_run_that_cannot_start_is_cancelled_at_the_next_tick_and_counted() {
        let mut stuck = run("media-1", t(10, 0, 0), Some(Phase::Pending));
        stuck.stuck = Some("Secret creds not found".into());
        let bs = with_status(sync("interval: 10s"), |s| {
            s.last_schedule_time = Some("2026-12-01T10:00:00Z".into())
        });
        let d = decide(&bs, &obs(vec![stuck.clone()], t(10, 0, 11)));
        assert!(d.steps.contains(&SyncStep::CancelRun {
            name: "media-1".into()
        }));
        assert_eq!(created(&d), [run_name("media", t(10, 0, 10), true)]);
        // Once it has ended Cancelled it counts as a failure.
        let mut ended = stuck;
        ended.phase = Some(Phase::Cancelled);
        ended.ended = Some(t(10, 0, 12));
        let d = decide(
            &with_status(sync("interval: 10s"), |s| {
                s.last_schedule_time = Some("2026-12-01T10:00:10Z".into())
            }),
            &obs(vec![ended], t(10, 0, 13)),
        );
        assert_eq!(d.status.consecutive_failures, 1);
    }

    #[test]
    fn the_same_tick_is_never_started_twice() {
        // The run exists but the status write that recorded the tick was lost.
        let first = run_name("media", t(10, 0, 0), false);
        let d = decide(
            &with_status(sync("interval: 15m"), |_| {}),
            &obs(vec![run(&first, t(10, 0, 0), None)], t(10, 0, 30)),
        );
        assert!(created(&d).is_empty());
        assert_eq!(d.status.active_run.as_deref(), Some(first.as_str()));
    }

    #[test]
    fn suspend_suspends_the_active_run_and_starts_nothing() {
        let active = run("media-1", t(10, 0, 0), Some(Phase::Running));
        let bs = with_status(sync("interval: 10s\nsuspend: true"), |s| {
            s.last_schedule_time = Some("2026-12-01T10:00:00Z".into())
        });
        let d = decide(&bs, &obs(vec![active], t(11, 0, 0)));
        assert!(created(&d).is_empty());
        assert!(d.steps.contains(&SyncStep::SetRunSuspend {
            name: "media-1".into(),
            suspend: true
        }));
        assert_eq!(d.status.phase, Some(SyncPhase::Suspended));
        assert_eq!(d.status.next_sync_time, None);
    }

    #[test]
    fn sync_now_starts_a_run_once_per_value_and_not_at_creation() {
        let mut o = obs(vec![], t(10, 0, 0));
        o.sync_now = Some("a".into());
        // At creation: recorded, not acted on (the interval's own first run starts).
        let d = decide(&sync("schedule: '0 2 * * *'"), &o);
        assert!(created(&d).is_empty());
        assert_eq!(d.status.last_sync_now.as_deref(), Some("a"));
        let bs = with_status(sync("schedule: '0 2 * * *'"), |s| {
            s.last_sync_now = Some("a".into())
        });
        o.sync_now = Some("b".into());
        let d = decide(&bs, &o);
        assert_eq!(created(&d), [manual_run_name("media", "b")]);
        assert_eq!(d.status.last_sync_now.as_deref(), Some("b"));
        let bs = with_status(sync("schedule: '0 2 * * *'"), |s| {
            s.last_sync_now = Some("b".into())
        });
        assert!(created(&decide(&bs, &o)).is_empty());
    }

    #[test]
    fn history_limits_prune_oldest_first_and_keep_the_newest_held_run() {
        let mut runs: Vec<Run> = (0..5)
            .map(|i| run(&format!("media-{i}"), t(10, i, 0), Some(Phase::Completed)))
            .collect();
        runs.push(run("media-f1", t(9, 0, 0), Some(Phase::Failed)));
        runs.push(run("media-f2", t(9, 1, 0), Some(Phase::Failed)));
        runs[0].summary.deletes_held = true;
        let bs = with_status(sync("schedule: '0 2 * * *'"), |s| {
            s.last_run = Some(RunSummary {
                name: "media-4".into(),
                ..Default::default()
            });
            s.last_schedule_time = Some("2026-12-01T02:00:00Z".into());
        });
        let d = decide(&bs, &obs(runs, t(11, 0, 0)));
        assert_eq!(deleted(&d), ["media-1", "media-f1"]);
    }

    #[test]
    fn a_finished_run_is_summarised_once_and_failures_are_counted() {
        let bs = with_status(sync("schedule: '0 2 * * *'"), |s| {
            s.last_schedule_time = Some("2026-12-01T02:00:00Z".into());
            s.consecutive_failures = 1;
        });
        let mut r = run("media-9", t(10, 0, 0), Some(Phase::Failed));
        r.summary.objects_failed = 3;
        let d = decide(&bs, &obs(vec![r.clone()], t(10, 5, 0)));
        assert_eq!(d.status.consecutive_failures, 2);
        assert_eq!(d.status.last_run.as_ref().unwrap().name, "media-9");
        assert_eq!(d.status.last_sync_duration.as_deref(), Some("30s"));
        let again = decide(
            &with_status(bs.clone(), |s| {
                *s = d.status.clone();
            }),
            &obs(vec![r], t(10, 6, 0)),
        );
        assert_eq!(again.status.consecutive_failures, 2, "counted once");
        let ready = again
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
    }

    #[test]
    fn an_approved_run_is_summarised_again_once_its_deletes_ended() {
        let bs = with_status(sync("schedule: '0 2 * * *'"), |s| {
            s.last_schedule_time = Some("2026-12-01T02:00:00Z".into());
            s.last_run = Some(RunSummary {
                name: "media-1".into(),
                phase: Some(Phase::Completed),
                deletes_held: true,
                ..Default::default()
            });
        });
        let mut r = run("media-1", t(10, 0, 0), Some(Phase::Completed));
        r.summary.objects_deleted = 40;
        let d = decide(&bs, &obs(vec![r], t(11, 0, 0)));
        let last = d.status.last_run.clone().unwrap();
        assert_eq!((last.objects_deleted, last.deletes_held), (40, false));
        let held = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "DeletesHeld")
            .unwrap();
        assert_eq!(held.status, "False");
        assert!(d.steps.iter().any(|s| matches!(
            s,
            SyncStep::Event {
                reason: Reason::DeletesApproved,
                ..
            }
        )));
    }

    #[test]
    fn an_invalid_spec_stalls_and_starts_nothing() {
        for extra in [
            "interval: 5s",
            "schedule: '61 * * * *'",
            "schedule: '0 2 * * *'\ninterval: 15m",
            "schedule: '0 2 * * *'\ntimeZone: Mars/Base",
            "interval: 15m\ndeletes: {policy: Propagate, maxDeletes: lots}",
        ] {
            let d = decide(&sync(extra), &obs(vec![], t(10, 0, 0)));
            assert!(created(&d).is_empty(), "{extra}");
            assert_eq!(d.status.phase, Some(SyncPhase::Failed), "{extra}");
            let stalled = d
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == "Stalled")
                .unwrap();
            assert_eq!(
                (stalled.status.as_str(), stalled.reason.as_str()),
                ("True", "InvalidSpec"),
                "{extra}"
            );
        }
    }
}
