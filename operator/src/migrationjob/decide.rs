//! The lifecycle of a MigrationJob as one pure decision: the resource and what was observed
//! of its world go in; the steps to take, the new status and when to look again come out.
//! The controller (`super::observe`, `super::apply`) and `ferry run` (`crate::run_cmd`) each
//! observe and carry the steps out in their own way; the rules are the same. Tests feed YAML
//! fixtures (`operator/tests/fixtures/migrationjob/`).
//!
//! A pass goes through stages, each of which may end it:
//! 1. [`Pass::ended`]: a finished job stays finished (unless asked to retry its failures or
//!    to roll back what it wrote);
//! 2. [`Pass::checked`]: the spec is valid, and not cancelled;
//! 3. [`Pass::admit`], before any agent exists: Secrets, reachability, the queue, the plan;
//! 4. [`Pass::track`]: the agents' progress folded into the status.

use std::ops::ControlFlow;
use std::time::Duration;

use ferry_api::aggregate::{aggregate, credentials_message, stale_credentials};
use ferry_api::conditions::{find, ConditionType, Conditions, Reason};
use ferry_api::deletes::{self, DeletesState, Verdict};
use ferry_api::rollback::{self, RollbackCounts, RollbackState, RollbackStatus};
use ferry_api::{validate, MigrationJob, MigrationJobStatus, Phase, ShardProgress, ShardState};
use ferry_api::{ValidatedSpec, APPROVE_DELETES_ANNOTATION, ROLLBACK_ANNOTATION};
use ferry_core::LiveLimits;
use serde::{Deserialize, Serialize};

use ConditionType::*;

/// The annotation a user sets to a new value to re-run the failed objects of a finished job.
pub const RETRY_ANNOTATION: &str = "ferry.dev/retry-failed";

/// What was observed before deciding.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Problems with the referenced Secrets (missing Secret or key) the planner found; empty
    /// when fine or not checked yet.
    #[serde(default)]
    pub secret_problems: Vec<String>,
    /// The reachability check the planner made, before the agents are created.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// What the spec asks that this place refuses (a cluster: a filesystem side without a
    /// volume, ambient credentials where they are not allowed); the job fails with them.
    #[serde(default)]
    pub refusals: Vec<String>,
    /// An object with the name of one of the job's children that the job does not own: the
    /// job touches nothing and says so.
    #[serde(default)]
    pub name_taken: Option<String>,
    /// Whether the plan exists for the current spec and attempt.
    #[serde(default)]
    pub plan_ready: bool,
    /// Where planning stands, while there is no plan.
    #[serde(default)]
    pub planning: Planning,
    /// The agents, if they exist.
    #[serde(default)]
    pub job: Option<AgentJob>,
    /// The progress record of each shard (index order), where one exists.
    #[serde(default)]
    pub shards: Vec<Option<ShardProgress>>,
    /// Jobs running now besides this one.
    #[serde(default)]
    pub running_elsewhere: usize,
    /// The cap on jobs running at once.
    #[serde(default = "default_cap")]
    pub max_running: usize,
    /// Jobs of this job's namespace running now besides this one.
    #[serde(default)]
    pub running_in_namespace: usize,
    /// The cap on jobs of one namespace running at once (so one tenant cannot keep the
    /// others queued); None for no cap of its own.
    #[serde(default)]
    pub max_running_per_namespace: Option<usize>,
    /// The value of the `ferry.dev/retry-failed` annotation, if set.
    #[serde(default)]
    pub retry_token: Option<String>,
    /// The value of the `ferry.dev/rollback` annotation, if set.
    #[serde(default)]
    pub rollback_token: Option<String>,
    /// Whether a plan of this spec is stored (of any attempt or stage): what a retry or a
    /// rollback builds on.
    #[serde(default)]
    pub stored_plan: bool,
    /// Where the current plan writes its reports, once planned.
    #[serde(default)]
    pub report: Option<String>,
    /// What the planner's URL-list collector did (a `collect` source).
    #[serde(default)]
    pub collect: Option<ferry_core::collect::CollectProgress>,
    /// The `ferry.dev/approve-deletes` annotation that concerns this job: its own, or that of
    /// the BucketSync that owns it. It approves a held run when it names the job.
    #[serde(default)]
    pub approval: Option<String>,
    /// The live limits the agents are told (in a cluster the job's limits ConfigMap), when
    /// they are told any.
    #[serde(default)]
    pub limits: Option<LiveLimits>,
    /// The price tables of `spec.pricing.configMapRef` (a dry run's cost), when the spec
    /// names a ConfigMap.
    #[serde(default)]
    pub price_tables: Option<PriceTables>,
    /// The time of the decision (RFC 3339).
    pub now: String,
}

fn default_cap() -> usize {
    10
}

/// Where planning stands. The planner checks the Secrets and both endpoints, then lists
/// (samples) the source, so it runs apart from the decision: in a cluster in a pod of its
/// own, in `ferry run` as a task.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Planning {
    /// Not under way, and no answer for this spec.
    #[default]
    Idle,
    /// Under way.
    Running,
    /// It ended at `at` (RFC 3339) without a plan of this attempt: why is in
    /// `Observed::secret_problems`, `Observed::probe`, or `message`; with none of them, the
    /// checks passed and only the plan is missing (a retry builds it from the stored one).
    Ended {
        at: String,
        #[serde(default)]
        message: Option<String>,
    },
}

pub use ferry_core::planning::Probe;

/// The price tables a ConfigMap holds, or why there are none to read.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum PriceTables {
    /// The text of the ConfigMap's key.
    Found(String),
    /// The ConfigMap or its key is missing: what to say.
    Missing(String),
}

/// What is known of the agents (an Indexed Job, or `ferry run`'s tasks).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentJob {
    pub suspended: bool,
    /// The agents gave up (indexes out of retries, a task that could not start).
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub failed_message: Option<String>,
    /// Why its pods do not run, when they do not (an image that cannot be pulled, pods that
    /// cannot be scheduled or created: quota, admission).
    #[serde(default)]
    pub pods_problem: Option<String>,
    /// When the Job reported all its indexes done (Complete), RFC 3339.
    #[serde(default)]
    pub completed_at: Option<String>,
    /// Since when it is being deleted (RFC 3339): it stays until its pods are gone.
    #[serde(default)]
    pub deleting_since: Option<String>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum Step {
    /// Plan the shards and store the plan.
    CreatePlan,
    /// Store the delete stage of the stored plan (the same shards; no listing).
    PlanDeletes,
    /// Store the rollback stage of the stored plan (the same shards, over what every attempt
    /// wrote; no listing).
    PlanRollback,
    /// Give the agents what they need to report (progress records, their identity).
    CreateAgentAccess,
    /// Empty the shards' progress records (a retry attempt starts without checkpoints).
    ResetProgress,
    /// Start the agents, suspended or not.
    CreateJob { suspend: bool },
    /// Suspend or resume the agents.
    SetSuspend { suspend: bool },
    /// Tell the agents (running, or about to start) the spec's live limits: rates,
    /// concurrency, memory budget.
    SetLimits { limits: LiveLimits },
    /// Stop and remove the agents (they checkpoint and abort multipart uploads).
    DeleteJob,
    /// Tell the user (an Event on the resource).
    Event {
        warning: bool,
        reason: Reason,
        message: String,
    },
}

/// The decision: steps, the status to write, and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub steps: Vec<Step>,
    pub status: MigrationJobStatus,
    /// When to look again.
    pub requeue: Duration,
}

const FAST: Duration = Duration::from_secs(5);
const SLOW: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

/// Seconds after which agents that do not stop are said to be stuck.
const STUCK_DELETING: i64 = 600;

/// The longest `status.message` (and Event note) the decision writes, in characters: the
/// rest of a long text (an endpoint's error, many problems) is cut with an ellipsis.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// `msg`, cut to [`MAX_MESSAGE_CHARS`].
fn bounded(msg: &str) -> String {
    if msg.chars().count() <= MAX_MESSAGE_CHARS {
        return msg.to_string();
    }
    let mut out: String = msg.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    out.push('…');
    out
}

/// A dry run's estimate once it has completed, and a real copy's cost once it has ended
/// (`Completed` or `PartiallyCompleted`), priced with `tables` when the spec names a
/// ConfigMap (pure).
pub fn priced_outcome(
    v: &ValidatedSpec,
    shards: &[ShardProgress],
    pricing: Option<&ferry_api::pricing::Pricing>,
    tables: Option<&PriceTables>,
    phase: Option<Phase>,
) -> (
    Option<ferry_api::estimate::Estimate>,
    Option<ferry_api::pricing::Cost>,
) {
    use ferry_api::estimate::{estimate, priced, run_cost};
    let tables = match tables {
        Some(PriceTables::Found(text)) => Ok(Some(text.as_str())),
        Some(PriceTables::Missing(why)) => Err(why.as_str()),
        None => Ok(None),
    };
    let t = &v.transfer;
    let estimate = (t.dry_run && phase == Some(Phase::Completed)).then(|| match tables {
        Ok(tables) => priced(t, shards, pricing, tables),
        Err(why) => {
            let mut e = estimate(t, shards);
            e.notes.push(format!("no cost: {why}"));
            e
        }
    });
    let ended = matches!(phase, Some(Phase::Completed | Phase::PartiallyCompleted));
    let cost = match tables {
        Ok(tables)
            if ended
                && !t.dry_run
                && t.mode == ferry_core::Mode::Copy
                && ferry_api::estimate::has_a_price(t) =>
        {
            run_cost(t, shards, pricing, tables).ok()
        }
        _ => None,
    };
    (estimate, cost)
}

/// Seconds from `from` to `to` (RFC 3339), if both parse.
fn seconds_between(from: &str, to: &str) -> Option<i64> {
    let from = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let to = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((to - from).num_seconds())
}

/// Decides what to do about `mj` given `obs`.
pub fn decide(mj: &MigrationJob, obs: &Observed) -> Decision {
    let mut pass = Pass::new(mj, obs);
    let _ = pass.run();
    pass.kstatus();
    pass.d
}

/// One decision under way.
struct Pass<'a> {
    mj: &'a MigrationJob,
    obs: &'a Observed,
    prev: MigrationJobStatus,
    d: Decision,
}

impl<'a> Pass<'a> {
    fn new(mj: &'a MigrationJob, obs: &'a Observed) -> Self {
        let prev = mj.status.clone().unwrap_or_default();
        let mut status = prev.clone();
        status.observed_generation = mj.metadata.generation;
        if let Some(c) = &obs.collect {
            status.collect = Some(c.clone());
        }
        Pass {
            mj,
            obs,
            prev,
            d: Decision {
                steps: Vec::new(),
                status,
                requeue: FAST,
            },
        }
    }

    fn run(&mut self) -> ControlFlow<()> {
        self.ended()?;
        let v = self.checked()?;
        if let Some(msg) = &self.obs.name_taken {
            // Nothing is created, changed or deleted under a name the job does not own.
            self.d.requeue = WAIT;
            self.pending(Reason::NameTaken, msg, true);
            return ControlFlow::Break(());
        }
        if self.obs.job.is_none() {
            self.admit()?;
        } else {
            self.planless()?;
        }
        self.track(&v);
        self.live_limits(&v);
        ControlFlow::Continue(())
    }

    /// The agents follow the spec's live limits while they run (`bandwidthLimit`,
    /// `requestsPerSecond`, `parallelism.concurrency`, `parallelism.memoryBudget` may change
    /// at any time): when what they are told differs, they are told again, before agents
    /// about to start are created.
    fn live_limits(&mut self, v: &ValidatedSpec) {
        let starting = self
            .d
            .steps
            .iter()
            .position(|s| matches!(s, Step::CreateJob { .. }));
        let ended = self.d.status.phase.is_some_and(Phase::is_terminal);
        if (self.obs.job.is_none() && starting.is_none()) || ended {
            return;
        }
        let want = LiveLimits::of(&v.transfer);
        if self.obs.limits == Some(want) {
            return;
        }
        let step = Step::SetLimits { limits: want };
        match starting {
            Some(i) => self.d.steps.insert(i, step),
            None => self.d.steps.push(step),
        }
    }

    /// Agents that run without a plan of this spec and attempt that can be read (it was
    /// deleted, or written by an older version) cannot be followed: they are stopped (they
    /// checkpoint) and the job goes through admission again.
    fn planless(&mut self) -> ControlFlow<()> {
        if self.obs.plan_ready {
            return ControlFlow::Continue(());
        }
        if self.deleting() {
            // The copy stage's agents are still going; the delete stage starts once they are.
            self.stop_agents();
            self.d.status.phase = Some(Phase::Running);
            return ControlFlow::Break(());
        }
        self.stop_agents();
        self.pending(
            Reason::Planning,
            "the agents run a plan that is gone or cannot be read; stopping them to plan again",
            false,
        );
        ControlFlow::Break(())
    }

    /// kstatus' `Reconciling` and `Stalled` (as Flux, Argo CD and `kstatus`-based tools read
    /// them), from the phase and conditions the pass decided: stalled when the job failed or
    /// waits for someone to fix something (a Secret, a name taken; not an endpoint that may
    /// come back), reconciling while it works towards its end, neither once it ended or is
    /// paused.
    fn kstatus(&mut self) {
        let phase = self.d.status.phase.unwrap_or(Phase::Pending);
        let message = self.d.status.message.clone().unwrap_or_default();
        let degraded = find(&self.d.status.conditions, Degraded)
            .filter(|c| c.status == "True")
            .map(|c| c.reason.clone());
        let stalled = phase == Phase::Failed
            || (phase == Phase::Pending
                && degraded.is_some_and(|r| r != Reason::Unreachable.as_str()));
        let reconciling = !stalled && !phase.is_terminal() && phase != Phase::Paused;
        let reason = Reason::of_phase(phase);
        let mut c = self.conditions();
        c.set(Stalled, stalled, reason, &message);
        c.set(Reconciling, reconciling, reason, &message);
    }

    fn conditions(&mut self) -> Conditions<'_> {
        let generation = self.d.status.observed_generation;
        Conditions::new(&mut self.d.status.conditions, generation, &self.obs.now)
    }

    fn event(&mut self, warning: bool, reason: Reason, message: impl Into<String>) {
        self.d.steps.push(Step::Event {
            warning,
            reason,
            message: message.into(),
        });
    }

    /// Stage 1. Terminal phases stay terminal, unless the user asks for the failed objects
    /// again; the agents are removed.
    fn ended(&mut self) -> ControlFlow<()> {
        let Some(phase) = self.prev.phase.filter(|p| p.is_terminal()) else {
            if self.prev.phase.is_none() {
                // A token present from the start (applied with the resource) asks for nothing.
                self.d.status.last_retry_token = self.obs.retry_token.clone();
                self.d.status.last_rollback_token = self.obs.rollback_token.clone();
            }
            return ControlFlow::Continue(());
        };
        let new_token = self
            .obs
            .retry_token
            .as_deref()
            .filter(|t| self.prev.last_retry_token.as_deref() != Some(*t));
        let rollback_token = self
            .obs
            .rollback_token
            .as_deref()
            .filter(|t| self.prev.last_rollback_token.as_deref() != Some(*t));
        if self.obs.job.is_some() {
            self.stop_agents();
        } else if self.approved_now() {
            self.approve();
            return ControlFlow::Break(());
        } else if let Some(token) = rollback_token {
            let token = token.to_string();
            self.roll_back(phase, &token);
            return ControlFlow::Break(());
        } else if let Some(token) = new_token {
            let token = token.to_string();
            self.retry(phase, &token);
            return ControlFlow::Break(());
        }
        self.d.requeue = SLOW;
        self.d.status.phase = Some(phase);
        ControlFlow::Break(())
    }

    /// Stops the agents before what comes next (a retry, a rollback, the delete stage, a
    /// plan made again): their Job is deleted, and stays until its pods are gone. When that
    /// takes long (a lost node, a stuck finalizer) a Warning says so, as what comes next waits.
    fn stop_agents(&mut self) {
        self.d.steps.push(Step::DeleteJob);
        let since = self.obs.job.as_ref().and_then(|j| j.deleting_since.clone());
        let Some(since) = since else { return };
        let long = seconds_between(&since, &self.obs.now).is_some_and(|s| s >= STUCK_DELETING);
        if long {
            self.event(
                true,
                Reason::AgentsNotStopping,
                format!(
                    "the agents' Job has been deleting since {since}: its pods have not gone \
                     (a lost node? a stuck finalizer?); what comes next waits for them"
                ),
            );
        }
    }

    /// Whether the approval annotation names this job, held and not yet approved.
    fn approved_now(&self) -> bool {
        let held = self
            .prev
            .deletes
            .as_ref()
            .is_some_and(|d| d.state == DeletesState::Held);
        held && self.obs.approval.as_deref() == self.mj.metadata.name.as_deref()
    }

    /// Whether a rollback is under way (`ferry.dev/rollback`).
    fn rolling_back(&self) -> bool {
        self.prev
            .rollback
            .as_ref()
            .is_some_and(|r| r.state == RollbackState::RollingBack)
    }

    /// A new rollback token on a finished job: take back what the job wrote (every
    /// attempt's manifests), or say why there is nothing to take back. The token is recorded
    /// either way, so it is handled once.
    fn roll_back(&mut self, phase: Phase, token: &str) {
        self.d.status.last_rollback_token = Some(token.to_string());
        let spec = &self.mj.spec;
        let why = if spec.dry_run || self.prev.dry_run {
            Some("a dry run writes nothing: there is nothing to roll back")
        } else if spec.mode == ferry_core::Mode::Check || self.prev.check.is_some() {
            Some("a Check writes nothing but its report: there is nothing to roll back")
        } else if self.prev.report.is_none() || !self.obs.stored_plan {
            Some("the job wrote nothing (it ended before its agents ran, or its plan is gone)")
        } else {
            None
        };
        if let Some(why) = why {
            self.d.status.phase = Some(phase);
            self.event(
                true,
                Reason::NothingToRollBack,
                format!("{ROLLBACK_ANNOTATION}={token}: {why}"),
            );
            self.d.requeue = SLOW;
            return;
        }
        let now = self.obs.now.clone();
        // (A rollback recorded before rollbacks were numbered was the first.)
        let number = self.prev.rollback.as_ref().map_or(0, |r| r.number.max(1)) + 1;
        let st = &mut self.d.status;
        st.rollback = Some(RollbackStatus {
            state: RollbackState::RollingBack,
            token: Some(token.to_string()),
            number,
            start_time: Some(now),
            ..Default::default()
        });
        st.progress = Default::default();
        st.failures_by_class = Default::default();
        st.first_errors = Vec::new();
        st.shards = Vec::new();
        self.d.steps.push(Step::ResetProgress);
        if let Some(d) = st
            .deletes
            .as_mut()
            .filter(|d| d.state == DeletesState::Held)
        {
            // Held deletes of a copy being taken back are never made (nor approved later).
            d.state = DeletesState::Skipped;
            d.message = "not made: the job was rolled back".into();
            let msg = d.message.clone();
            self.conditions()
                .set(DeletesHeld, false, Reason::DeletesSkipped, &msg);
        }
        let msg = format!(
            "{ROLLBACK_ANNOTATION}={token}: taking back what the job wrote, where it is still \
             what the job wrote"
        );
        self.event(false, Reason::RollingBack, msg.clone());
        // Pending until its agents are admitted and created (then RollingBack).
        let mut c = self.conditions();
        c.set(Ready, false, Reason::RollingBack, &msg);
        c.set(Progressing, true, Reason::RollingBack, &msg);
        c.set(Degraded, false, Reason::RollingBack, &msg);
        self.d.status.phase = Some(Phase::Pending);
        self.d.status.message = Some(msg);
        self.d.requeue = FAST;
    }

    /// Whether the delete stage is the one in effect.
    fn deleting(&self) -> bool {
        self.prev
            .deletes
            .as_ref()
            .is_some_and(|d| d.state == DeletesState::Deleting)
    }

    /// A held run approved: its delete stage starts (the agents look at every candidate
    /// again, so only those still absent at the source and unchanged are deleted).
    fn approve(&mut self) {
        let name = self.mj.metadata.name.clone().unwrap_or_default();
        let st = &mut self.d.status;
        if let Some(d) = st.deletes.as_mut() {
            d.state = DeletesState::Deleting;
            d.approved = Some(name.clone());
            d.message = format!(
                "approved with {APPROVE_DELETES_ANNOTATION}={name}: deleting the held candidates                  still absent at the source"
            );
        }
        st.completion_time = None;
        let msg = format!(
            "{APPROVE_DELETES_ANNOTATION}={name}: deleting the {} held candidates that are still              absent at the source",
            st.deletes.as_ref().map_or(0, |d| d.candidates)
        );
        self.conditions()
            .set(DeletesHeld, false, Reason::DeletesApproved, &msg);
        self.event(false, Reason::DeletesApproved, msg.clone());
        self.d.requeue = FAST;
        let mut c = self.conditions();
        c.set(Ready, false, Reason::Deleting, &msg);
        c.set(Progressing, true, Reason::Deleting, &msg);
        self.d.status.phase = Some(Phase::Running);
        self.d.status.message = Some(msg);
    }

    /// A new retry token on a finished job: start attempt n+1 over the keys of the last
    /// attempt's failure report, or say why there is nothing to retry. The token is recorded
    /// either way, so it is handled once.
    fn retry(&mut self, phase: Phase, token: &str) {
        self.d.status.last_retry_token = Some(token.to_string());
        let failed = self.prev.progress.counters.objects_failed;
        if !matches!(phase, Phase::PartiallyCompleted | Phase::Failed) || failed == 0 {
            self.d.status.phase = Some(phase);
            let deletes_failed = self.prev.deletes.as_ref().map_or(0, |d| d.failed);
            let why = if deletes_failed > 0 {
                format!(
                    "{deletes_failed} deletes failed but no copy: a retry re-runs failed copies \
                     only; the next run (or a new job) tries those deletes again"
                )
            } else {
                "nothing to retry (delete and recreate it to run it again)".to_string()
            };
            self.event(
                false,
                Reason::NothingToRetry,
                format!(
                    "{RETRY_ANNOTATION}={token}: the job ended {phase:?} with no failed objects \
                     in its report; {why}"
                ),
            );
            self.d.requeue = SLOW;
            return;
        }
        let attempt = self.prev.attempt + 1;
        let st = &mut self.d.status;
        st.attempt = attempt;
        st.progress = Default::default();
        st.failures_by_class = Default::default();
        st.first_errors = Vec::new();
        st.shards = Vec::new();
        st.completion_time = None;
        st.start_time = Some(self.obs.now.clone());
        self.d.steps.push(Step::ResetProgress);
        let msg = format!(
            "{RETRY_ANNOTATION}={token}: retrying the {failed} failed objects (attempt {attempt})"
        );
        self.pending(Reason::Retrying, &msg, false);
    }

    /// Stage 2. The spec is valid (else the job fails) and not cancelled.
    fn checked(&mut self) -> ControlFlow<(), ValidatedSpec> {
        let v = match validate(&self.mj.spec) {
            Ok(v) if self.obs.refusals.is_empty() => v,
            res => {
                let problems = res.err().unwrap_or_default();
                let msg: Vec<String> = problems
                    .iter()
                    .map(|p| p.to_string())
                    .chain(self.obs.refusals.iter().cloned())
                    .collect();
                let msg = format!("the spec is invalid: {}", msg.join("; "));
                self.finish(Phase::Failed, Reason::InvalidSpec, &msg);
                return ControlFlow::Break(());
            }
        };
        // A rollback runs to its end (suspend pauses it): `cancel` stops copies, and a job
        // cancelled and then rolled back usually still says `cancel: true`.
        if v.transfer.cancel && !self.rolling_back() {
            if self.obs.job.is_some() {
                self.d.steps.push(Step::DeleteJob);
            }
            self.finish(
                Phase::Cancelled,
                Reason::Cancelled,
                "cancelled by spec.cancel; data already copied stays",
            );
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(v)
    }

    /// Stage 3, before any agent exists: the planner checks the Secrets and both endpoints,
    /// then plans; then the queue; then the agents are created.
    fn admit(&mut self) -> ControlFlow<()> {
        if !self.obs.plan_ready {
            return self.plan();
        }
        if let Some(msg) = self.queued() {
            self.d.requeue = WAIT;
            self.pending(Reason::Queued, &msg, false);
            return ControlFlow::Break(());
        }
        self.d.steps.push(Step::CreateAgentAccess);
        self.d.steps.push(Step::CreateJob {
            suspend: self.mj.spec.suspend,
        });
        let now = self.obs.now.clone();
        self.d.status.start_time.get_or_insert(now);
        ControlFlow::Continue(())
    }

    /// Why the job must wait for a running slot, if it must: the cluster's cap, or its
    /// namespace's.
    fn queued(&self) -> Option<String> {
        let o = self.obs;
        if o.running_elsewhere >= o.max_running {
            return Some(format!(
                "{} MigrationJobs are running, the most allowed at once",
                o.running_elsewhere
            ));
        }
        let cap = o.max_running_per_namespace?;
        (o.running_in_namespace >= cap).then(|| {
            format!(
                "{} MigrationJobs of this namespace are running, the most allowed at once in one \
                 namespace",
                o.running_in_namespace
            )
        })
    }

    /// No plan of this attempt yet: plan, or say why the planner could not.
    fn plan(&mut self) -> ControlFlow<()> {
        if self.rolling_back() {
            if !self.obs.stored_plan {
                self.finish(
                    Phase::Failed,
                    Reason::PlanningFailed,
                    "the rollback stopped: the job's plan is gone (its ConfigMap was deleted), \
                     so its shards and report folders are unknown; nothing more is taken back",
                );
                return ControlFlow::Break(());
            }
            self.d.steps.push(Step::PlanRollback);
            self.d.requeue = FAST;
            return ControlFlow::Break(());
        }
        if self.deleting() {
            self.d.steps.push(Step::PlanDeletes);
            self.d.requeue = FAST;
            self.d.status.phase = Some(Phase::Running);
            return ControlFlow::Break(());
        }
        const CHECKING: &str =
            "the planner checks the Secrets and both endpoints, then splits the keyspace";
        let (at, message) = match &self.obs.planning {
            Planning::Idle => {
                self.d.steps.push(Step::CreatePlan);
                self.pending(Reason::Planning, CHECKING, false);
                return ControlFlow::Break(());
            }
            Planning::Running => {
                self.pending(Reason::Planning, CHECKING, false);
                return ControlFlow::Break(());
            }
            Planning::Ended { at, message } => (at.clone(), message.clone()),
        };
        // An answer that says what is wrong is asked again once it is this old (a Secret
        // created, an endpoint back), no sooner.
        let stale = seconds_between(&at, &self.obs.now).is_none_or(|s| s >= WAIT.as_secs() as i64);
        let again = |pass: &mut Self| {
            pass.d.requeue = WAIT;
            if stale {
                pass.d.steps.push(Step::CreatePlan);
            }
        };
        if !self.obs.secret_problems.is_empty() {
            let msg = self.obs.secret_problems.join("; ");
            self.conditions()
                .set(CredentialsValid, false, Reason::SecretNotFound, &msg);
            again(self);
            self.pending(Reason::SecretNotFound, &msg, true);
            return ControlFlow::Break(());
        }
        if let Some(probe) = &self.obs.probe {
            self.conditions().set(
                CredentialsValid,
                true,
                Reason::SecretsFound,
                "the referenced Secrets exist and have the expected keys",
            );
            if self.probed(probe).is_break() {
                if self.d.status.phase == Some(Phase::Pending) {
                    again(self);
                }
                return ControlFlow::Break(());
            }
        }
        if let Some(message) = message {
            let msg = format!("planning failed: {message}");
            again(self);
            self.pending(Reason::PlanningFailed, &msg, true);
            return ControlFlow::Break(());
        }
        // The checks passed and no plan of this attempt exists (a retry, or a plan removed).
        self.d.steps.push(Step::CreatePlan);
        self.pending(
            Reason::Planning,
            "splitting the keyspace into shards",
            false,
        );
        ControlFlow::Break(())
    }

    /// The reachability conditions; a refusal fails the job, a network error waits.
    fn probed(&mut self, probe: &Probe) -> ControlFlow<()> {
        for (kind, res) in [
            (SourceReachable, &probe.source),
            (DestinationReachable, &probe.destination),
        ] {
            match res {
                None => self.conditions().set(
                    kind,
                    true,
                    Reason::Reachable,
                    "checked without writing anything",
                ),
                Some(e) => {
                    let reason = if e.transient {
                        Reason::Unreachable
                    } else {
                        Reason::Refused
                    };
                    self.conditions().set(kind, false, reason, &e.message)
                }
            }
        }
        let errors = || probe.source.iter().chain(probe.destination.iter());
        if let Some(e) = errors().find(|e| e.credentials) {
            self.conditions().set(
                CredentialsValid,
                false,
                Reason::CredentialsRefused,
                &e.message,
            );
        }
        if let Some(e) = errors().find(|e| !e.transient) {
            let reason = if e.credentials {
                Reason::CredentialsRefused
            } else {
                Reason::EndpointRefused
            };
            self.finish(Phase::Failed, reason, &e.message);
            return ControlFlow::Break(());
        }
        if let Some(e) = errors().next() {
            self.d.requeue = WAIT;
            self.pending(Reason::Unreachable, &e.message, true);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Stage 4. Agents exist (or are being created): their progress makes the status.
    fn track(&mut self, v: &ValidatedSpec) {
        let spec = &self.mj.spec;
        // A rollback's progress is the job's while it runs; what the copy was (its report,
        // verification, cost) stays as it was said.
        let rolling_back = self.rolling_back();
        if self.obs.plan_ready
            && (!v.transfer.dry_run || v.transfer.inventory.is_some())
            && !rolling_back
        {
            self.d.status.report = self.obs.report.clone();
        }
        let shards: Vec<ShardProgress> = self.obs.shards.iter().flatten().cloned().collect();
        let expected = v.shards as usize;
        let agg = aggregate(&v.transfer, &shards, expected);
        let st = &mut self.d.status;
        st.progress = agg.progress;
        st.failures_by_class = agg.failures_by_class;
        st.first_errors = agg.first_errors;
        st.shards = agg.shards;
        let (mut phase, mut message) =
            if let Some(r) = st.rollback.as_mut().filter(|_| rolling_back) {
                r.counts = RollbackCounts::of(&shards);
                r.report = self.obs.report.clone();
                rollback::outcome(&shards, expected)
            } else {
                st.verified = agg.verified;
                st.transport = agg.transport;
                st.dry_run = agg.dry_run;
                st.check = agg.check;
                // A dry run that has completed says what a real run would do and cost.
                (st.estimate, st.cost) = priced_outcome(
                    v,
                    &shards,
                    spec.pricing.as_ref(),
                    self.obs.price_tables.as_ref(),
                    agg.phase,
                );
                (
                    agg.phase.unwrap_or(Phase::Running),
                    agg.message.unwrap_or_default(),
                )
            };
        // A shard stopped because its credentials went stale: its agent exits to be run
        // again (a new pod reads the Secret's current values), so the job is not paused.
        let stale = shards
            .iter()
            .find_map(stale_credentials)
            .map(credentials_message);
        if let Some(job) = &self.obs.job {
            if spec.suspend != job.suspended {
                self.d.steps.push(Step::SetSuspend {
                    suspend: spec.suspend,
                });
            }
            if job.failed && !phase.is_terminal() {
                phase = Phase::Failed;
                message = format!(
                    "the agents gave up: {}",
                    job.failed_message.clone().unwrap_or_default()
                );
                if let Some(why) = &stale {
                    message = format!("{message}; {why}");
                }
            }
            // Every agent exited 0, yet a shard's final record is missing or not final (its
            // ConfigMap deleted or emptied): waiting would never end. Given time for the
            // records to reach the cache first.
            let settled = job.completed_at.as_deref().is_some_and(|at| {
                seconds_between(at, &self.obs.now).is_some_and(|s| s >= WAIT.as_secs() as i64)
            });
            if settled && !phase.is_terminal() {
                let unsaved: Vec<String> = (0..expected)
                    .filter(|&i| {
                        !self.obs.shards.get(i).cloned().flatten().is_some_and(|s| {
                            matches!(
                                s.state,
                                ShardState::Completed | ShardState::Failed | ShardState::Cancelled
                            )
                        })
                    })
                    .map(|i| i.to_string())
                    .collect();
                if !unsaved.is_empty() {
                    phase = Phase::Failed;
                    message = format!(
                        "the agents ended, but shards {} saved no final state (their progress \
                         ConfigMaps were deleted or could not be written); retry the job to run \
                         them again",
                        unsaved.join(", ")
                    );
                    self.event(true, Reason::StateNotSaved, message.clone());
                }
            }
        }
        if !phase.is_terminal() {
            phase = if spec.suspend {
                message =
                    "suspended; set spec.suspend to false to resume from the checkpoints".into();
                Phase::Paused
            } else if rolling_back {
                Phase::RollingBack
            } else {
                Phase::Running
            };
        }
        if self.d.status.attempt == 0 && !rolling_back {
            if let Some(settings) = &v.transfer.deletes {
                if self.propagate(settings, &mut phase, &mut message) {
                    return;
                }
            }
        }
        if phase.is_terminal() {
            self.d.steps.push(Step::DeleteJob);
            self.finish(phase, Reason::of_phase(phase), &message);
            return;
        }
        let reason = if self.deleting() {
            Reason::Deleting
        } else {
            Reason::of_phase(phase)
        };
        if message.is_empty() {
            let copying = shards
                .iter()
                .filter(|s| s.state == ShardState::Running)
                .count();
            message = format!("{copying} of {expected} shards copying");
        }
        let failed = self.d.status.progress.counters.objects_failed;
        let pods = self.obs.job.as_ref().and_then(|j| j.pods_problem.clone());
        let mut c = self.conditions();
        c.set(Ready, false, reason, &message);
        c.set(
            Progressing,
            matches!(phase, Phase::Running | Phase::RollingBack),
            reason,
            &message,
        );
        match (&pods, &stale) {
            // The agents cannot run: said as it is, with the pods' own reason.
            (Some(problem), _) => c.set(Degraded, true, Reason::PodsNotRunning, problem),
            (None, Some(why)) => c.set(Degraded, true, Reason::CredentialsExpired, why),
            (None, None) => {
                let why = if failed > 0 {
                    Reason::ObjectsFailed
                } else {
                    Reason::NoFailures
                };
                c.set(
                    Degraded,
                    failed > 0,
                    why,
                    &format!("{failed} objects failed so far"),
                )
            }
        }
        let was = self
            .prev
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .map(|c| c.message.clone());
        if let Some(problem) = &pods {
            if was.as_deref() != Some(problem.as_str()) {
                self.event(true, Reason::PodsNotRunning, problem.clone());
            }
        } else if let Some(why) = &stale {
            if was.as_deref() != Some(why.as_str()) {
                self.event(true, Reason::CredentialsExpired, why.clone());
            }
        }
        self.transition(phase, reason, &message);
    }

    /// Delete propagation at the end of a stage. In the delete stage: the deletes counted,
    /// the job's phase said with them. At the end of the copy stage: the guard's verdict;
    /// true when the delete stage starts (the pass ends here, the job runs on).
    fn propagate(
        &mut self,
        settings: &ferry_api::DeleteSettings,
        phase: &mut Phase,
        message: &mut String,
    ) -> bool {
        let counters = self.d.status.progress.counters.clone();
        let name = self.mj.metadata.name.clone().unwrap_or_default();
        if self.deleting() {
            let before = self.prev.deletes.clone().expect("deleting");
            let done = *phase == Phase::Completed;
            let st = deletes::deleted(&before, &counters, done);
            if done && st.failed > 0 {
                *phase = Phase::PartiallyCompleted;
            }
            if phase.is_terminal() {
                *message = format!("{message}; deletes: {}", st.message);
            } else if message.is_empty() {
                *message = format!("deleting {} candidates", st.candidates);
            }
            self.d.status.deletes = Some(st);
            return false;
        }
        if !phase.is_terminal() {
            if self.d.status.deletes.is_none() {
                self.d.status.deletes = Some(deletes::status_of(
                    settings,
                    &counters,
                    &Verdict::Nothing,
                    &name,
                ));
            }
            if let Some(d) = self.d.status.deletes.as_mut() {
                d.state = DeletesState::Finding;
                d.candidates = counters.objects_to_delete;
                d.candidate_bytes = counters.bytes_to_delete;
                d.destination_objects = counters.destination_objects;
                d.message = "finding destination keys absent at the source".into();
            }
            return false;
        }
        if *phase == Phase::Cancelled {
            return false;
        }
        let copied = matches!(*phase, Phase::Completed | Phase::PartiallyCompleted);
        let approved = self.obs.approval.as_deref() == Some(name.as_str());
        let dry_run = self.d.status.dry_run;
        let verdict = deletes::guard(settings, &counters, copied, dry_run, approved);
        let st = deletes::status_of(settings, &counters, &verdict, &name);
        let text = st.message.clone();
        let was_held = self
            .prev
            .deletes
            .as_ref()
            .is_some_and(|d| d.state == DeletesState::Held);
        self.d.status.deletes = Some(st);
        match verdict {
            Verdict::Delete => {
                let reason = if approved {
                    Reason::DeletesApproved
                } else {
                    Reason::WithinLimit
                };
                self.conditions().set(DeletesHeld, false, reason, &text);
                if let Some(d) = self.d.status.deletes.as_mut() {
                    d.approved = approved.then(|| name.clone());
                }
                self.event(false, Reason::Deleting, text.clone());
                self.d.steps.push(Step::DeleteJob);
                let mut c = self.conditions();
                c.set(Ready, false, Reason::Deleting, &text);
                c.set(Progressing, true, Reason::Deleting, &text);
                self.d.status.phase = Some(Phase::Running);
                self.d.status.message = Some(text);
                self.d.requeue = FAST;
                true
            }
            Verdict::Hold => {
                self.conditions()
                    .set(DeletesHeld, true, Reason::MaxDeletesExceeded, &text);
                if !was_held {
                    self.event(true, Reason::MaxDeletesExceeded, text.clone());
                }
                *message = format!("{message}; deletes held: {text}");
                false
            }
            Verdict::Skip(why) => {
                self.conditions()
                    .set(DeletesHeld, false, Reason::DeletesSkipped, &why);
                *message = format!("{message}; {why}");
                false
            }
            Verdict::Nothing | Verdict::DryRun => {
                self.conditions()
                    .set(DeletesHeld, false, Reason::NoDeletes, &text);
                if dry_run {
                    *message = format!("{message}; {text}");
                }
                false
            }
        }
    }

    /// Waits in `Pending` for `reason`; `degraded` when it cannot go on by itself.
    fn pending(&mut self, reason: Reason, msg: &str, degraded: bool) {
        let msg = &bounded(msg);
        let mut c = self.conditions();
        c.set(Ready, false, reason, msg);
        c.set(Progressing, !degraded, reason, msg);
        c.set(Degraded, degraded, reason, msg);
        self.d.status.message = Some(msg.to_string());
        if self.prev.phase != Some(Phase::Pending) || self.prev.message.as_deref() != Some(msg) {
            self.event(degraded, reason, msg);
        }
        self.d.status.phase = Some(Phase::Pending);
    }

    /// Ends the job in `phase`.
    fn finish(&mut self, phase: Phase, reason: Reason, msg: &str) {
        let msg = &bounded(msg);
        let ok = matches!(phase, Phase::Completed | Phase::RolledBack);
        let degraded = !ok || self.d.status.progress.counters.objects_failed > 0;
        let mut c = self.conditions();
        c.set(Ready, ok, reason, msg);
        c.set(Progressing, false, reason, msg);
        c.set(Degraded, degraded, reason, msg);
        self.d.status.message = Some(msg.to_string());
        let now = self.obs.now.clone();
        if let Some(r) = self
            .d
            .status
            .rollback
            .as_mut()
            .filter(|r| r.state == RollbackState::RollingBack)
        {
            r.state = RollbackState::Ended;
            r.completion_time = Some(now.clone());
        }
        self.d.status.completion_time.get_or_insert(now);
        self.transition(phase, reason, msg);
        self.d.requeue = SLOW;
    }

    /// Sets the phase, with an Event when it changes.
    fn transition(&mut self, to: Phase, reason: Reason, msg: &str) {
        if self.prev.phase != Some(to) {
            let warning = matches!(
                to,
                Phase::Failed | Phase::PartiallyCompleted | Phase::PartiallyRolledBack
            );
            let text = if msg.is_empty() {
                format!("phase {to:?}")
            } else {
                format!("phase {to:?}: {msg}")
            };
            self.event(warning, reason, text);
        }
        self.d.status.phase = Some(to);
        if !msg.is_empty() {
            self.d.status.message = Some(msg.to_string());
        }
    }
}

/// Whether a decision waits for something outside to change: `Pending` with `Degraded`.
pub fn waits_on_the_world(status: &MigrationJobStatus) -> bool {
    status.phase == Some(Phase::Pending)
        && find(&status.conditions, Degraded).is_some_and(|c| c.status == "True")
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
            "{}/tests/fixtures/migrationjob/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_yaml::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A completed dry run of `done.yaml`'s job, priced from the tables of its ConfigMap
    /// `prices` as the operator read them (or did not).
    fn priced_dry_run(tables: Option<PriceTables>) -> ferry_api::estimate::Estimate {
        let mut f = load("done");
        f.job.spec.dry_run = true;
        f.job.spec.pricing = Some(
            serde_yaml::from_str(
                "{source: aws-s3, destination: cloudflare-r2, configMapRef: {name: prices}}",
            )
            .unwrap(),
        );
        for s in f.observed.shards.iter_mut().flatten() {
            let c = &mut s.counters;
            (c.objects_would_copy, c.bytes_would_copy) =
                (c.objects_copied, c.bytes_copied * 1_000_000);
            (c.objects_copied, c.bytes_copied) = (0, 0);
        }
        f.observed.price_tables = tables;
        let d = decide(&f.job, &f.observed);
        assert_eq!(
            d.status.phase,
            Some(Phase::Completed),
            "{:?}",
            d.status.message
        );
        d.status
            .estimate
            .expect("a completed dry run has an estimate")
    }

    #[test]
    fn a_dry_run_in_a_cluster_is_priced_with_the_configmap_the_operator_read() {
        let built_in = priced_dry_run(None).cost.expect("priced");
        assert!(
            built_in.notes.iter().any(|n| n.contains("was not read")),
            "{built_in:?}"
        );
        let tables = "aws-s3:\n  description: our negotiated S3 prices\n  effectiveDate: \"2026-11-01\"\n  \
            storagePerGBMonth: \"0.021\"\n  classAPerMillion: \"5.00\"\n  classBPerMillion: \"0.40\"\n  \
            egressPerGB: [{price: \"9.00\"}]\n";
        let ours = priced_dry_run(Some(PriceTables::Found(tables.into())))
            .cost
            .expect("priced");
        assert!(
            ours.tables.iter().any(|t| t.contains("2026-11-01")),
            "the ConfigMap's table is named: {:?}",
            ours.tables
        );
        assert_ne!(ours.total, built_in.total, "{ours:?}");
        let missing = priced_dry_run(Some(PriceTables::Missing("no ConfigMap prices".into())));
        assert!(missing.cost.is_none());
        assert!(
            missing
                .notes
                .iter()
                .any(|n| n == "no cost: no ConfigMap prices"),
            "{:?}",
            missing.notes
        );
    }

    /// A copy that has ended says what it cost, priced like an estimate from what it did;
    /// one still running, a dry run or a check does not.
    #[test]
    fn an_ended_copy_says_what_it_cost() {
        let mut f = load("done");
        f.job.spec.pricing =
            Some(serde_yaml::from_str("{source: aws-s3, destination: cloudflare-r2}").unwrap());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Completed));
        assert!(d.status.estimate.is_none());
        let c = d.status.cost.expect("an ended copy has a cost");
        let quantities: Vec<(String, String)> = c
            .lines
            .iter()
            .map(|l| (l.item.clone(), l.quantity.clone()))
            .collect();
        // 350 objects (3,500 bytes) copied by 2 shards: the source listed once by each shard
        // and once by the planner (3 LIST) and read once per object (350 GET); each object
        // put once (350 PUT) after one destination listing per shard (2 LIST).
        let q = |item: &str, want: &str| (item.to_string(), want.to_string());
        assert_eq!(
            quantities,
            [
                q("source egress", "3.4 KiB"),
                q("source requests", "3 Class A + 350 Class B"),
                q("destination requests", "352 Class A + 0 Class B"),
                q("destination storage per month", "3.4 KiB"),
            ]
        );
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("retries are not counted")),
            "{c:?}"
        );
        assert!(decide_fixture("running").status.cost.is_none());
        f.job.spec.dry_run = true;
        assert!(decide(&f.job, &f.observed).status.cost.is_none());
    }

    fn decide_fixture(name: &str) -> Decision {
        let f = load(name);
        decide(&f.job, &f.observed)
    }

    fn cond(d: &Decision, kind: ConditionType) -> &ferry_api::Condition {
        find(&d.status.conditions, kind)
            .unwrap_or_else(|| panic!("no {kind:?} condition in {:?}", d.status.conditions))
    }

    fn events(d: &Decision) -> Vec<String> {
        d.steps
            .iter()
            .filter_map(|a| {
                if let Step::Event { reason, .. } = a {
                    Some(reason.as_str().to_string())
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
        assert_eq!(cond(&d, Ready).reason, "Planning");
        assert_eq!(
            d.steps
                .iter()
                .filter(|a| !matches!(a, Step::Event { .. }))
                .collect::<Vec<_>>(),
            vec![&Step::CreatePlan],
            "the planner pod checks the Secrets and endpoints, then plans"
        );
        assert_eq!(d.status.observed_generation, Some(1));
        // While it runs, nothing more is asked.
        let mut f = load("new");
        f.observed.planning = Planning::Running;
        let d = decide(&f.job, &f.observed);
        assert!(d.steps.iter().all(|a| matches!(a, Step::Event { .. })));
        assert_eq!(d.status.phase, Some(Phase::Pending));
    }

    /// An answer that says what is wrong is asked again only once it is 30 s old; a planner
    /// pod that failed (deadline, memory) is a PlanningFailed condition, asked again too.
    #[test]
    fn a_planner_answer_is_asked_again_only_when_stale() {
        let mut f = load("missing-secret");
        let d = decide(&f.job, &f.observed);
        assert!(!d.steps.contains(&Step::CreatePlan), "10 s old: not yet");
        assert_eq!(d.requeue, Duration::from_secs(30));
        f.observed.now = "2026-11-22T10:00:20Z".into();
        let d = decide(&f.job, &f.observed);
        assert!(d.steps.contains(&Step::CreatePlan), "30 s old: again");
        let mut f = load("new");
        f.observed.planning = Planning::Ended {
            at: "2026-11-22T09:00:00Z".into(),
            message: Some("the planner pod failed (DeadlineExceeded): Job was active longer than specified deadline".into()),
        };
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Pending));
        let c = cond(&d, Degraded);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "PlanningFailed")
        );
        assert!(c.message.contains("DeadlineExceeded"), "{}", c.message);
        assert!(d.steps.contains(&Step::CreatePlan));
    }

    /// A child's name held by an object the job does not own: a Degraded condition and a
    /// Warning, and no step at all (nothing created, changed or deleted).
    #[test]
    fn a_taken_name_touches_nothing_and_says_so() {
        for fixture in ["new", "running", "probed"] {
            let mut f = load(fixture);
            f.observed.name_taken = Some(
                "ServiceAccount photos-agent already exists and is not this MigrationJob's".into(),
            );
            let d = decide(&f.job, &f.observed);
            assert_eq!(d.status.phase, Some(Phase::Pending), "{fixture}");
            assert_eq!(cond(&d, Degraded).reason, "NameTaken");
            assert!(
                d.steps
                    .iter()
                    .all(|a| matches!(a, Step::Event { warning: true, .. })),
                "{fixture}: {:?}",
                d.steps
            );
        }
    }

    /// What the cluster refuses (a path without a volume, ambient credentials) fails the job
    /// as an invalid spec, before anything is created.
    #[test]
    fn cluster_refusals_fail_the_job_before_anything_runs() {
        let mut f = load("new");
        f.observed.refusals = vec!["spec.source.filesystem: in a cluster a filesystem side must name a persistentVolumeClaim".into()];
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert_eq!(cond(&d, Ready).reason, "InvalidSpec");
        assert!(d
            .status
            .message
            .as_ref()
            .unwrap()
            .contains("persistentVolumeClaim"));
        assert!(d.steps.iter().all(|a| matches!(a, Step::Event { .. })));
    }

    /// A message of any length (an endpoint's error text) is cut in status and Events.
    #[test]
    fn messages_are_bounded() {
        let mut f = load("unreachable");
        f.observed
            .probe
            .as_mut()
            .unwrap()
            .destination
            .as_mut()
            .unwrap()
            .message = "x".repeat(1 << 20);
        let d = decide(&f.job, &f.observed);
        assert_eq!(
            d.status.message.as_ref().unwrap().chars().count(),
            MAX_MESSAGE_CHARS
        );
        for step in &d.steps {
            if let Step::Event { message, .. } = step {
                assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 20);
            }
        }
    }

    #[test]
    fn missing_secret_is_a_pending_condition_and_warning_event() {
        let d = decide_fixture("missing-secret");
        assert_eq!(d.status.phase, Some(Phase::Pending));
        let c = cond(&d, CredentialsValid);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert!(c.message.contains("media/aws-creds"), "{}", c.message);
        assert!(d.steps.iter().any(|a| matches!(a, Step::Event { warning: true, reason, .. } if *reason == Reason::SecretNotFound)));
        assert!(!d.steps.iter().any(|a| matches!(a, Step::CreateJob { .. })));
    }

    #[test]
    fn refused_credentials_fail_the_job() {
        let d = decide_fixture("bad-credentials");
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert_eq!(cond(&d, CredentialsValid).status, "False");
        assert_eq!(cond(&d, SourceReachable).status, "False");
        assert_eq!(cond(&d, Ready).status, "False");
        assert!(d.status.completion_time.is_some());
        assert_eq!(events(&d), vec!["CredentialsRefused"]);
    }

    #[test]
    fn unreachable_endpoint_waits() {
        let d = decide_fixture("unreachable");
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(cond(&d, DestinationReachable).reason, "Unreachable");
        assert_eq!(d.requeue, Duration::from_secs(30));
    }

    #[test]
    fn plan_then_agents() {
        let d = decide_fixture("probed");
        assert_eq!(
            d.steps
                .iter()
                .filter(|a| !matches!(a, Step::Event { .. }))
                .collect::<Vec<_>>(),
            vec![&Step::CreatePlan]
        );
        let mut f = load("probed");
        f.observed.plan_ready = true;
        let d = decide(&f.job, &f.observed);
        assert!(d.steps.contains(&Step::CreateAgentAccess));
        assert!(d.steps.contains(&Step::CreateJob { suspend: false }));
        assert_eq!(d.status.phase, Some(Phase::Running));
        assert!(d.status.start_time.is_some());
        assert!(events(&d).contains(&"Copying".to_string()));
    }

    #[test]
    fn queued_when_too_many_run() {
        let mut f = load("probed");
        f.observed.plan_ready = true;
        f.observed.running_elsewhere = 10;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(cond(&d, Ready).reason, "Queued");
        assert!(!d
            .steps
            .iter()
            .any(|a| matches!(a, Step::CreatePlan | Step::CreateJob { .. })));
        // A namespace's own cap queues its jobs while the cluster has room.
        f.observed.running_elsewhere = 3;
        f.observed.running_in_namespace = 2;
        f.observed.max_running_per_namespace = Some(2);
        let d = decide(&f.job, &f.observed);
        assert_eq!(cond(&d, Ready).reason, "Queued");
        assert!(d
            .status
            .message
            .as_ref()
            .unwrap()
            .contains("of this namespace"));
        f.observed.max_running_per_namespace = Some(3);
        let d = decide(&f.job, &f.observed);
        assert!(d.steps.contains(&Step::CreateJob { suspend: false }));
    }

    #[test]
    fn a_new_retry_token_starts_an_attempt_over_the_failed_objects() {
        let f = load("partial");
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert_eq!(d.status.attempt, 1);
        assert_eq!(d.status.last_retry_token.as_deref(), Some("2026-11-22"));
        assert_eq!(cond(&d, Ready).reason, "Retrying");
        assert!(cond(&d, Ready).message.contains("3 failed objects"));
        assert_eq!(d.steps.first(), Some(&Step::ResetProgress));
        assert!(
            !d.steps
                .iter()
                .any(|a| matches!(a, Step::CreateJob { .. } | Step::CreatePlan)),
            "the agents start only after the checks and a new plan: {:?}",
            d.steps
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
        assert_eq!(d2.steps.first(), Some(&Step::CreatePlan));
        assert!(!d2
            .steps
            .iter()
            .any(|a| matches!(a, Step::CreateJob { .. } | Step::ResetProgress)));
        assert_eq!(d2.status.attempt, 1);
    }

    /// A record of a rollback shard that ended: `rolled` deleted, `kept` kept as changed.
    fn rolled_back(shard: u32, rolled: u64, kept: u64) -> ShardProgress {
        let mut r = ShardProgress {
            shard,
            state: ShardState::Completed,
            ..Default::default()
        };
        r.counters.objects_rolled_back = rolled;
        r.counters.objects_rollback_kept = kept;
        if kept > 0 {
            r.failures_by_class
                .insert(ferry_api::FailureClass::ChangedSinceCopy, kept);
        }
        r
    }

    #[test]
    fn a_new_rollback_token_takes_back_what_the_job_wrote() {
        let f = load("rollback");
        let d = decide(&f.job, &f.observed);
        assert_eq!(
            d.status.phase,
            Some(Phase::Pending),
            "RollingBack once its agents are admitted"
        );
        assert_eq!(d.status.last_rollback_token.as_deref(), Some("undo-1"));
        let r = d.status.rollback.clone().expect("a rollback");
        assert_eq!(
            (r.state, r.token.as_deref(), r.start_time.as_deref()),
            (
                RollbackState::RollingBack,
                Some("undo-1"),
                Some("2026-11-22T11:00:00Z")
            )
        );
        assert_eq!(d.steps.first(), Some(&Step::ResetProgress));
        assert_eq!(events(&d), vec!["RollingBack"]);
        assert_eq!(cond(&d, Progressing).status, "True");
        assert_eq!(
            d.status.progress.counters.objects_copied, 0,
            "the rollback's own"
        );
        assert_eq!(r.number, 1);
        assert_eq!(
            d.status.completion_time.as_deref(),
            Some("2026-11-22T10:09:00Z"),
            "the copy's end stays"
        );

        // The next pass: the rollback stage is planned from the stored plan (no planner).
        let mut job = f.job.clone();
        job.status = Some(d.status.clone());
        let mut obs = f.observed.clone();
        obs.plan_ready = false;
        let d2 = decide(&job, &obs);
        assert_eq!(d2.steps, vec![Step::PlanRollback]);
        assert_eq!(d2.status.phase, Some(Phase::Pending));

        // Planned: the agents start.
        job.status = Some(d2.status.clone());
        obs.plan_ready = true;
        obs.report = Some("s3://photos/.ferry/reports/media/photos/0f1e2d3c/rollback/".into());
        let d3 = decide(&job, &obs);
        assert!(
            d3.steps.contains(&Step::CreateJob { suspend: false }),
            "{:?}",
            d3.steps
        );
        assert_eq!(d3.status.phase, Some(Phase::RollingBack));

        // Under way: its counts are the job's progress, the copy's report stays.
        job.status = Some(d3.status.clone());
        obs.job = Some(AgentJob::default());
        let mut running = rolled_back(1, 20, 0);
        running.state = ShardState::Running;
        obs.shards = vec![Some(rolled_back(0, 100, 0)), Some(running)];
        let d4 = decide(&job, &obs);
        assert_eq!(d4.status.phase, Some(Phase::RollingBack));
        assert_eq!(d4.status.rollback.as_ref().unwrap().counts.rolled_back, 120);
        assert_eq!(d4.status.report, f.job.status.as_ref().unwrap().report);
        assert_eq!(d4.status.verified.as_deref(), Some("Checksum"));
        assert!(!d4.steps.contains(&Step::DeleteJob));

        // Done, with a key changed since the copy kept: PartiallyRolledBack.
        job.status = Some(d4.status.clone());
        obs.shards = vec![Some(rolled_back(0, 100, 0)), Some(rolled_back(1, 249, 1))];
        let d5 = decide(&job, &obs);
        assert_eq!(d5.status.phase, Some(Phase::PartiallyRolledBack));
        assert!(d5.steps.contains(&Step::DeleteJob));
        let r = d5.status.rollback.clone().unwrap();
        assert_eq!(r.state, RollbackState::Ended);
        assert_eq!((r.counts.rolled_back, r.counts.kept), (349, 1));
        assert_eq!(r.completion_time.as_deref(), Some("2026-11-22T11:00:00Z"));
        assert_eq!(r.report, obs.report);
        assert!(
            d5.status
                .message
                .as_deref()
                .unwrap()
                .contains("ChangedSinceCopy: 1"),
            "{:?}",
            d5.status.message
        );
        assert_eq!(cond(&d5, Ready).status, "False");
        assert_eq!(events(&d5), vec!["PartiallyRolledBack"]);
        assert!(
            d5.steps
                .iter()
                .any(|s| matches!(s, Step::Event { warning: true, .. })),
            "a rollback that kept keys is a warning"
        );

        // Ended, it stays ended; a second token runs it again (it finds nothing left to do).
        job.status = Some(d5.status.clone());
        obs.job = None;
        let d6 = decide(&job, &obs);
        assert_eq!(d6.status.phase, Some(Phase::PartiallyRolledBack));
        assert!(d6.steps.is_empty(), "{:?}", d6.steps);
        let mut again = job.clone();
        again
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ROLLBACK_ANNOTATION.into(), "undo-2".into());
        obs.rollback_token = Some("undo-2".into());
        let d7 = decide(&again, &obs);
        assert_eq!(d7.status.phase, Some(Phase::Pending));
        assert_eq!(d7.steps.first(), Some(&Step::ResetProgress));
        assert_eq!(
            d7.status.rollback.unwrap().number,
            2,
            "its own report folder"
        );
    }

    #[test]
    fn a_rollback_skips_held_deletes_and_runs_despite_cancel() {
        let mut f = load("rollback");
        let st = f.job.status.as_mut().unwrap();
        st.deletes = Some(ferry_api::DeletesStatus {
            state: DeletesState::Held,
            candidates: 9,
            candidate_bytes: 90,
            destination_objects: 10,
            allowed: 1,
            deleted: 0,
            bytes_deleted: 0,
            kept: 0,
            failed: 0,
            approved: None,
            message: "held".into(),
        });
        f.job.spec.cancel = true;
        let d = decide(&f.job, &f.observed);
        assert_eq!(
            d.status.deletes.as_ref().unwrap().state,
            DeletesState::Skipped
        );
        assert_eq!(cond(&d, DeletesHeld).status, "False");
        // Approving the held deletes afterwards does nothing.
        let mut job = f.job.clone();
        job.status = Some(d.status.clone());
        let mut obs = f.observed.clone();
        obs.approval = Some("photos".into());
        obs.plan_ready = false;
        let d2 = decide(&job, &obs);
        assert_eq!(
            d2.steps,
            vec![Step::PlanRollback],
            "cancel stops copies only"
        );
    }

    #[test]
    fn a_rollback_whose_plan_is_gone_fails_and_ends() {
        let f = load("rollback");
        let mut job = f.job.clone();
        job.status = Some(decide(&f.job, &f.observed).status);
        let mut obs = f.observed.clone();
        obs.plan_ready = false;
        obs.stored_plan = false;
        let d = decide(&job, &obs);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert!(d
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("plan is gone"));
        let r = d.status.rollback.unwrap();
        assert_eq!(r.state, RollbackState::Ended);
        assert!(d.steps.iter().all(|s| !matches!(s, Step::PlanRollback)));
    }

    #[test]
    fn a_rollback_all_kept_is_rolled_back_and_ready() {
        let f = load("rollback");
        let mut job = f.job.clone();
        job.status = Some(decide(&f.job, &f.observed).status);
        let mut obs = f.observed.clone();
        obs.job = Some(AgentJob::default());
        obs.shards = vec![Some(rolled_back(0, 200, 0)), Some(rolled_back(1, 150, 0))];
        let d = decide(&job, &obs);
        assert_eq!(d.status.phase, Some(Phase::RolledBack));
        assert_eq!(cond(&d, Ready).status, "True");
        assert_eq!(cond(&d, Degraded).status, "False");
    }

    #[test]
    fn a_rollback_of_what_wrote_nothing_is_refused_with_the_reason() {
        for (what, change) in [
            (
                "dry run",
                (|j: &mut MigrationJob| j.spec.dry_run = true) as fn(&mut _),
            ),
            ("a dry run's status", |j| {
                j.status.as_mut().unwrap().dry_run = true
            }),
            ("Check", |j| j.spec.mode = ferry_core::Mode::Check),
            ("a Check's status", |j| {
                j.status.as_mut().unwrap().check = Some(Default::default())
            }),
            ("nothing", |j| j.status.as_mut().unwrap().report = None),
        ] {
            let mut f = load("rollback");
            change(&mut f.job);
            let d = decide(&f.job, &f.observed);
            assert_eq!(d.status.phase, Some(Phase::Completed), "{what}");
            assert_eq!(d.status.rollback, None, "{what}");
            assert_eq!(d.status.last_rollback_token.as_deref(), Some("undo-1"));
            assert_eq!(events(&d), vec!["NothingToRollBack"], "{what}");
            assert!(!d.steps.contains(&Step::ResetProgress), "{what}");
        }
    }

    #[test]
    fn a_rollback_waits_for_the_old_agents_to_go() {
        let mut f = load("rollback");
        f.observed.job = Some(AgentJob::default());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.steps, vec![Step::DeleteJob]);
        assert_eq!(d.status.last_rollback_token, None, "not handled yet");
    }

    #[test]
    fn agents_that_do_not_stop_are_said_to_be_stuck() {
        let mut f = load("rollback");
        f.observed.job = Some(AgentJob {
            deleting_since: Some("2026-11-22T10:58:00Z".into()),
            ..Default::default()
        });
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.steps, vec![Step::DeleteJob], "two minutes: still waiting");
        f.observed.job.as_mut().unwrap().deleting_since = Some("2026-11-22T10:45:00Z".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(events(&d), vec!["AgentsNotStopping"]);
        assert_eq!(d.status.last_rollback_token, None, "the rollback waits");
    }

    #[test]
    fn a_rollback_token_present_at_creation_is_not_a_request() {
        let mut f = load("rollback");
        f.job.status = None;
        f.observed.plan_ready = false;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.last_rollback_token.as_deref(), Some("undo-1"));
        assert_eq!(d.status.rollback, None);
        assert_ne!(d.status.phase, Some(Phase::RollingBack));
    }

    #[test]
    fn a_handled_retry_token_does_nothing() {
        let mut f = load("partial");
        if let Some(st) = f.job.status.as_mut() {
            st.last_retry_token = Some("2026-11-22".into());
        }
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::PartiallyCompleted));
        assert!(d.steps.is_empty(), "{:?}", d.steps);
        assert_eq!(d.status.attempt, 0);
    }

    #[test]
    fn a_retry_waits_for_the_old_agents_to_go() {
        let mut f = load("partial");
        f.observed.job = Some(AgentJob::default());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.steps, vec![Step::DeleteJob]);
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
        assert!(!d.steps.contains(&Step::ResetProgress));
    }

    #[test]
    fn a_retry_token_present_at_creation_is_not_a_request() {
        let mut f = load("new");
        f.observed.retry_token = Some("from-git".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.last_retry_token.as_deref(), Some("from-git"));
    }

    /// Pods that cannot run (an image that cannot be pulled, a quota) are a Degraded
    /// condition with the pods' own reason and one Warning, while the job stays Running.
    #[test]
    fn pods_that_cannot_run_are_said() {
        let mut f = load("running");
        let problem =
            "pod photos-agents-0-x1: ImagePullBackOff: Back-off pulling image \"ferry/ferry:9\"";
        f.observed.job.as_mut().unwrap().pods_problem = Some(problem.into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Running));
        let c = cond(&d, Degraded);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "PodsNotRunning")
        );
        assert!(c.message.contains("ImagePullBackOff"));
        assert!(d.steps.iter().any(|a| matches!(
            a,
            Step::Event {
                warning: true,
                reason: Reason::PodsNotRunning,
                ..
            }
        )));
        // Said once: the same problem on the next pass makes no second Event.
        let mut f2 = f;
        f2.job.status = Some(d.status.clone());
        let d2 = decide(&f2.job, &f2.observed);
        assert!(!d2.steps.iter().any(|a| matches!(
            a,
            Step::Event {
                reason: Reason::PodsNotRunning,
                ..
            }
        )));
    }

    /// kstatus: Reconciling while the job works, Stalled when it failed or waits on a fix,
    /// neither once it ended.
    #[test]
    fn kstatus_conditions_follow_the_phase() {
        let state = |name: &str| {
            let d = decide_fixture(name);
            (
                d.status.phase,
                cond(&d, Reconciling).status.clone(),
                cond(&d, Stalled).status.clone(),
            )
        };
        let t = || "True".to_string();
        let f = || "False".to_string();
        assert_eq!(state("running"), (Some(Phase::Running), t(), f()));
        assert_eq!(state("missing-secret"), (Some(Phase::Pending), f(), t()));
        assert_eq!(state("unreachable"), (Some(Phase::Pending), t(), f()));
        assert_eq!(state("bad-credentials").2, t());
        let done = decide_fixture("done");
        assert!(done.status.phase.is_some_and(|p| p.is_terminal()));
        assert_eq!(cond(&done, Reconciling).status, "False");
    }

    /// A shard whose credentials went stale mid-run (its agent exits to be run again with the
    /// Secret's current values): the job runs on, Degraded with the server's reason and a
    /// Warning, and says it in the message if the Job runs out of retries.
    #[test]
    fn credentials_that_went_stale_are_said_and_do_not_end_the_job() {
        let mut f = load("running");
        let shard = f.observed.shards[0].as_mut().unwrap();
        shard.state = ShardState::Paused;
        shard.fatal = Some(ferry_api::ErrorSample {
            key: "photos/a.jpg".into(),
            class: ferry_core::FailureClass::AuthExpired,
            code: Some("ExpiredToken".into()),
            message: "GetObject: ExpiredToken: The provided token has expired.".into(),
        });
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Running));
        let c = cond(&d, Degraded);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "CredentialsExpired")
        );
        assert!(c.message.contains("ExpiredToken") && c.message.contains("rotate"));
        assert!(d.steps.iter().any(|a| matches!(
            a,
            Step::Event {
                warning: true,
                reason: Reason::CredentialsExpired,
                ..
            }
        )));
        assert!(!d.steps.iter().any(|a| matches!(a, Step::DeleteJob)));
        // Out of retries: Failed, with the reason.
        let job = f.observed.job.as_mut().unwrap();
        job.failed = true;
        job.failed_message = Some("Job has failed indexes".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        let msg = d.status.message.unwrap_or_default();
        assert!(
            msg.contains("gave up") && msg.contains("ExpiredToken"),
            "{msg}"
        );
    }

    /// The agents' Job completed, yet a shard's record is not final (its ConfigMap deleted or
    /// emptied): not Running for ever, but Failed, once the records had time to arrive.
    #[test]
    fn agents_done_without_final_records_fail_the_job() {
        let mut f = load("running");
        f.observed.job.as_mut().unwrap().completed_at = Some("2026-11-22T10:04:50Z".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(
            d.status.phase,
            Some(Phase::Running),
            "10 s: the records may lag"
        );
        f.observed.job.as_mut().unwrap().completed_at = Some("2026-11-22T10:04:00Z".into());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert!(
            d.status
                .message
                .as_ref()
                .unwrap()
                .contains("shards 0, 1 saved no final state"),
            "{:?}",
            d.status.message
        );
        assert!(d.steps.iter().any(|a| matches!(
            a,
            Step::Event {
                reason: Reason::StateNotSaved,
                ..
            }
        )));
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
            d.steps
                .iter()
                .all(|a| !matches!(a, Step::CreateJob { .. } | Step::Event { .. })),
            "{:?}",
            d.steps
        );
        assert_eq!(cond(&d, Progressing).status, "True");
    }

    #[test]
    fn agents_without_a_readable_plan_are_stopped_and_the_job_planned_again() {
        let mut f = load("running");
        f.observed.plan_ready = false;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Pending));
        assert!(d.steps.contains(&Step::DeleteJob));
        assert!(!d.steps.iter().any(|s| matches!(s, Step::CreateJob { .. })));
        // Once they are gone, planning starts over.
        f.job.status = Some(d.status);
        f.observed.job = None;
        f.observed.probe = Some(Probe::default());
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.steps.first(), Some(&Step::CreatePlan));
    }

    #[test]
    fn suspend_and_resume_go_through_the_job() {
        let mut f = load("running");
        f.job.spec.suspend = true;
        let d = decide(&f.job, &f.observed);
        assert!(d.steps.contains(&Step::SetSuspend { suspend: true }));
        assert_eq!(d.status.phase, Some(Phase::Paused));
        f.job.status = Some(d.status);
        f.job.spec.suspend = false;
        f.observed.job.as_mut().unwrap().suspended = true;
        let d = decide(&f.job, &f.observed);
        assert!(d.steps.contains(&Step::SetSuspend { suspend: false }));
        assert_eq!(d.status.phase, Some(Phase::Running));
    }

    #[test]
    fn all_shards_done_completes_and_removes_agents() {
        let d = decide_fixture("done");
        assert_eq!(d.status.phase, Some(Phase::Completed));
        assert!(d.steps.contains(&Step::DeleteJob));
        assert_eq!(cond(&d, Ready).status, "True");
        assert_eq!(cond(&d, Degraded).status, "False");
        assert!(d.status.completion_time.is_some());
        assert_eq!(d.status.progress.percent.as_deref(), Some("100%"));
        // Terminal stays terminal.
        let mut f = load("done");
        f.job.status = Some(d.status.clone());
        f.observed.job = None;
        let again = decide(&f.job, &f.observed);
        assert_eq!(again.status.phase, Some(Phase::Completed));
        assert!(again.steps.is_empty(), "{:?}", again.steps);
    }

    /// The "done" fixture with delete propagation on and `candidates` destination keys
    /// absent at the source, of 100 seen, in shard 0.
    fn done_with_deletes(max: &str, candidates: u64) -> Fixture {
        let mut f = load("done");
        f.job.spec.deletes = ferry_api::Deletes {
            policy: ferry_api::DeletePolicy::Propagate,
            max_deletes: Some(max.into()),
            backup_prefix: None,
        };
        let c = &mut f.observed.shards[0].as_mut().unwrap().counters;
        c.objects_to_delete = candidates;
        c.destination_objects = 100;
        f
    }

    #[test]
    fn within_the_guard_the_delete_stage_starts_after_the_copy() {
        let f = done_with_deletes("10", 10);
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Running), "not finished yet");
        assert!(d.steps.contains(&Step::DeleteJob), "the copy agents go");
        let del = d.status.deletes.clone().unwrap();
        assert_eq!(
            (del.state, del.candidates, del.allowed),
            (DeletesState::Deleting, 10, 10)
        );
        assert_eq!(cond(&d, DeletesHeld).status, "False");
        // With the copy agents gone, the delete stage is planned (no listing) and started.
        let mut f2 = f;
        f2.job.status = Some(d.status.clone());
        f2.observed.job = None;
        f2.observed.plan_ready = false;
        f2.observed.probe = Some(Probe::default());
        let d = decide(&f2.job, &f2.observed);
        assert!(d.steps.contains(&Step::PlanDeletes), "{:?}", d.steps);
        assert!(!d.steps.contains(&Step::CreatePlan));
    }

    #[test]
    fn beyond_the_guard_every_candidate_is_held_until_approved() {
        let f = done_with_deletes("10", 11);
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Completed));
        assert_eq!(d.status.deletes.as_ref().unwrap().state, DeletesState::Held);
        let held = cond(&d, DeletesHeld);
        assert_eq!(
            (held.status.as_str(), held.reason.as_str()),
            ("True", "MaxDeletesExceeded")
        );
        assert!(events(&d).contains(&"MaxDeletesExceeded".to_string()));
        // An approval naming another run does nothing; naming this one starts the deletes.
        let mut f2 = f;
        f2.job.status = Some(d.status.clone());
        f2.observed.job = None;
        f2.observed.approval = Some("photos-other".into());
        let d2 = decide(&f2.job, &f2.observed);
        assert_eq!(d2.status.phase, Some(Phase::Completed));
        f2.observed.approval = Some("photos".into());
        let d3 = decide(&f2.job, &f2.observed);
        assert_eq!(d3.status.phase, Some(Phase::Running));
        let del = d3.status.deletes.clone().unwrap();
        assert_eq!(
            (del.state, del.approved.as_deref()),
            (DeletesState::Deleting, Some("photos"))
        );
        assert!(events(&d3).contains(&"DeletesApproved".to_string()));
    }

    #[test]
    fn a_failed_object_means_no_delete_at_all() {
        let mut f = done_with_deletes("100%", 3);
        f.observed.shards[1]
            .as_mut()
            .unwrap()
            .counters
            .objects_failed = 1;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::PartiallyCompleted));
        assert_eq!(
            d.status.deletes.as_ref().unwrap().state,
            DeletesState::Skipped
        );
        assert_eq!(cond(&d, DeletesHeld).reason, "DeletesSkipped");
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
        assert_eq!(cond(&d, Degraded).status, "True");
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
        assert!(d.steps.contains(&Step::DeleteJob));
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
        assert!(d.steps.contains(&Step::DeleteJob));
    }

    /// The steps but Events.
    fn actions(d: &Decision) -> Vec<Step> {
        d.steps
            .iter()
            .filter(|s| !matches!(s, Step::Event { .. }))
            .cloned()
            .collect()
    }

    #[test]
    fn changed_live_limits_are_written_for_the_running_agents() {
        let f = load("live-limits");
        let d = decide(&f.job, &f.observed);
        let want = LiveLimits {
            bandwidth_limit: Some(10 << 20),
            requests_per_second: 200,
            concurrency: 8,
            memory_budget: 64 << 20,
        };
        assert_eq!(actions(&d), vec![Step::SetLimits { limits: want }]);
        assert_eq!(d.status.phase, Some(Phase::Running));
        // Once written, nothing more.
        let mut f = f;
        f.observed.limits = Some(want);
        assert_eq!(actions(&decide(&f.job, &f.observed)), vec![]);
    }

    #[test]
    fn agents_about_to_start_are_told_their_limits_first() {
        let mut f = load("probed");
        f.observed.plan_ready = true;
        let d = decide(&f.job, &f.observed);
        let steps = actions(&d);
        let set = steps
            .iter()
            .position(|s| matches!(s, Step::SetLimits { .. }))
            .expect("the limits are written");
        let create = steps
            .iter()
            .position(|s| matches!(s, Step::CreateJob { .. }))
            .unwrap();
        assert!(set < create, "{steps:?}");
    }

    #[test]
    fn no_limits_are_written_without_agents_or_once_ended() {
        let f = load("probed");
        assert!(!actions(&decide(&f.job, &f.observed))
            .iter()
            .any(|s| matches!(s, Step::SetLimits { .. })));
        let mut f = load("live-limits");
        f.job.spec.cancel = true;
        assert!(!actions(&decide(&f.job, &f.observed))
            .iter()
            .any(|s| matches!(s, Step::SetLimits { .. })));
    }

    #[test]
    fn invalid_spec_fails_without_children() {
        let mut f = load("new");
        f.job.spec.parallelism.shards = 0;
        let d = decide(&f.job, &f.observed);
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert_eq!(cond(&d, Ready).reason, "InvalidSpec");
        assert!(!d.steps.iter().any(|a| !matches!(a, Step::Event { .. })));
    }
}
