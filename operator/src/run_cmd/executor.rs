//! `ferry run`'s executor of the MigrationJob decision: it observes and acts on local state
//! instead of a cluster. The plan is `plan.json` and each shard's progress record
//! `shard-<i>.json` under the state directory; the agents are tasks of this process; Events
//! go to the log.
//!
//! A local job has no stored status: it is made from the state directory each time, so a run
//! that ended on its own (every shard completed or cancelled) stays ended, and one that was
//! stopped or failed on a job-fatal error resumes from its checkpoints.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::aggregate::aggregate;
use ferry_api::{MigrationJob, MigrationJobStatus, ShardProgress, ShardState, ValidatedSpec};
use ferry_core::{JobCredentials, JobPlan, LiveLimits, ProgressStore};
use ferry_engine::checkpoint::FileProgressStore;
use ferry_engine::{run_shard, ShardInputs, TransferError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::migrationjob::decide::{
    AgentJob, Observed, Planning, PriceTables, Step, RETRY_ANNOTATION,
};
use crate::migrationjob::observe::{is_current, of_plan};
use ferry_api::deletes::{self, DeletesState, Verdict};
use ferry_api::Reason;
use ferry_api::{Stage, APPROVE_DELETES_ANNOTATION};
use ferry_core::plan::report_prefix;
use ferry_core::planning::{PlanOutcome, PlanRequest};
use ferry_engine::planner;

/// The retry token of attempt `n` (`ferry run --retry-failed` asks for the next one).
pub fn retry_token(attempt: u32) -> String {
    format!("attempt-{attempt}")
}

/// The shards running in this process.
struct Tasks {
    handles: Vec<JoinHandle<Result<ShardProgress, TransferError>>>,
    lives: Vec<watch::Receiver<ShardProgress>>,
    /// Final records (or why a shard could not run), once its task ended.
    ended: Vec<Option<Result<ShardProgress, String>>>,
    stop: watch::Sender<bool>,
    suspended: bool,
}

impl Tasks {
    /// Takes the results of the shards that have ended. A result the runtime does not hand
    /// over yet (its cooperative budget is spent) is taken on a later call.
    fn collect(&mut self) {
        for (i, h) in self.handles.iter_mut().enumerate() {
            if self.ended[i].is_some() || !h.is_finished() {
                continue;
            }
            if let Some(result) = futures::FutureExt::now_or_never(h) {
                self.ended[i] = Some(match result {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(e)) => Err(format!("shard {i}: {e}")),
                    Err(e) => Err(format!("shard {i} crashed: {e}")),
                });
            }
        }
    }

    fn running(&self) -> bool {
        self.ended.iter().any(Option::is_none)
    }
}

/// One job's local state and agents.
pub struct Local {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub state_dir: PathBuf,
    pub checkpoint_every: Duration,
    /// The sides' secret values, or what is wrong with the Secrets.
    pub credentials: Result<JobCredentials, String>,
    tasks: Option<Tasks>,
    /// The planner's last answer (its checks; why it made no plan).
    outcome: Option<PlanOutcome>,
    /// The live limits the shards follow, once the decision set them.
    limits: Option<watch::Sender<LiveLimits>>,
    /// The price tables of `spec.pricing.configMapRef`, from the files given.
    pub price_tables: Option<PriceTables>,
}

impl Local {
    pub fn new(
        namespace: String,
        name: String,
        uid: String,
        state_dir: PathBuf,
        checkpoint_every: Duration,
        credentials: Result<JobCredentials, String>,
    ) -> Self {
        Local {
            namespace,
            name,
            uid,
            state_dir,
            checkpoint_every,
            credentials,
            tasks: None,
            outcome: None,
            limits: None,
            price_tables: None,
        }
    }

    fn plan_path(&self) -> PathBuf {
        self.state_dir.join("plan.json")
    }

    fn shard_store(&self, i: usize) -> FileProgressStore {
        FileProgressStore {
            path: self.state_dir.join(format!("shard-{i}.json")),
        }
    }

    /// The stored plan of this spec (of any attempt).
    pub fn stored_plan(&self, v: &ValidatedSpec) -> Option<JobPlan> {
        let bytes = std::fs::read(self.plan_path()).ok()?;
        serde_json::from_slice::<JobPlan>(&bytes)
            .ok()
            .filter(|p| p.spec_hash == v.spec_hash)
    }

    /// The stored progress records of `plan`'s shards (none of another plan or attempt).
    async fn records(&self, plan: &JobPlan) -> Vec<Option<ShardProgress>> {
        let mut out = Vec::new();
        for i in 0..plan.shards.len() {
            let rec = self.shard_store(i).load().await.ok().flatten();
            out.push(rec.and_then(|r| of_plan(r, plan, i)));
        }
        out
    }

    /// `status` with its counters, failures and shards from the records the shards saved
    /// last (the decision that ended the job saw them a moment before the agents stopped).
    pub async fn with_final_records(
        &self,
        v: &ValidatedSpec,
        mut status: MigrationJobStatus,
    ) -> MigrationJobStatus {
        let Some(plan) = self.stored_plan(v) else {
            return status;
        };
        let records: Vec<ShardProgress> = self.records(&plan).await.into_iter().flatten().collect();
        if records.is_empty() {
            return status;
        }
        let agg = aggregate(&v.transfer, &records, plan.shards.len());
        status.progress = agg.progress;
        status.failures_by_class = agg.failures_by_class;
        status.first_errors = agg.first_errors;
        status.shards = agg.shards;
        status.transport = agg.transport;
        status
    }

    /// The status a local job has from its state directory, if it has been planned.
    /// `approval`: the `ferry.dev/approve-deletes` value given; `pricing`: the spec's.
    pub async fn prior_status(
        &self,
        v: &ValidatedSpec,
        approval: Option<&str>,
        pricing: Option<&ferry_api::pricing::Pricing>,
    ) -> Option<MigrationJobStatus> {
        let plan = self.stored_plan(v)?;
        let records: Vec<ShardProgress> = self.records(&plan).await.into_iter().flatten().collect();
        let ended = records.len() == plan.shards.len()
            && records
                .iter()
                .all(|r| matches!(r.state, ShardState::Completed | ShardState::Cancelled));
        let mut st = aggregate(&v.transfer, &records, plan.shards.len());
        // Delete propagation as the records say: the delete stage under way or done, or the
        // guard's verdict over a finished copy stage.
        if let (Some(settings), true) = (&v.transfer.deletes, plan.attempt == 0) {
            let c = st.progress.counters.clone();
            let copy_ok = ended && st.phase == Some(ferry_api::Phase::Completed);
            // An approval is the decision's to act on (as in the cluster): the guard is
            // asked without it, so a held run reads Held and `decide` approves it.
            let verdict = if plan.stage == Stage::Delete {
                Verdict::Delete
            } else {
                deletes::guard(settings, &c, copy_ok, v.transfer.dry_run, false)
            };
            let mut d = deletes::status_of(settings, &c, &verdict, &self.name);
            if plan.stage == Stage::Delete {
                d = deletes::deleted(&d, &c, ended);
                d.approved = approval.filter(|a| *a == self.name).map(str::to_string);
            }
            let deleting = d.state == DeletesState::Deleting;
            st.deletes = Some(d);
            if ended && deleting {
                // The copy stage ended and the deletes are due: the job goes on.
                st.phase = Some(ferry_api::Phase::Running);
                st.attempt = plan.attempt;
                return Some(st);
            }
        }
        if !ended {
            let deletes = st
                .deletes
                .take()
                .filter(|d| d.state == DeletesState::Deleting);
            st = MigrationJobStatus {
                deletes,
                ..Default::default()
            };
        }
        if ended {
            // A job that has ended shows its estimate or cost again.
            (st.estimate, st.cost) = crate::migrationjob::decide::priced_outcome(
                v,
                &records,
                pricing,
                self.price_tables.as_ref(),
                st.phase,
            );
        }
        st.attempt = plan.attempt;
        st.last_retry_token = Some(retry_token(plan.attempt));
        if !v.transfer.dry_run || v.transfer.inventory.is_some() {
            st.report = Some(plan.report_location());
        }
        Some(st)
    }

    /// What the decision needs to know, as the state directory and the tasks say.
    pub async fn observe(&mut self, job: &MigrationJob, v: Option<&ValidatedSpec>) -> Observed {
        let plan = v.and_then(|v| self.stored_plan(v));
        let stored_plan = plan.is_some();
        let current = plan.filter(|p| is_current(job, p));
        let agents = self.tasks.as_mut().map(|t| {
            t.collect();
            let failure = t.ended.iter().flatten().find_map(|r| r.as_ref().err());
            AgentJob {
                suspended: t.suspended,
                failed: failure.is_some(),
                failed_message: failure.cloned(),
                ..Default::default()
            }
        });
        let shards = match (&self.tasks, &current) {
            (Some(t), Some(p)) => (0..t.lives.len())
                .map(|i| match &t.ended[i] {
                    Some(Ok(rec)) => Some(rec.clone()),
                    _ => of_plan(t.lives[i].borrow().clone(), p, i),
                })
                .collect(),
            (None, Some(p)) => self.records(p).await,
            _ => Vec::new(),
        };
        let o = self.outcome.clone().unwrap_or_default();
        Observed {
            secret_problems: o.secret_problems,
            probe: o.probe,
            refusals: v
                .map(crate::migrationjob::build::source_refusals)
                .unwrap_or_default(),
            name_taken: None,
            plan_ready: current.is_some(),
            planning: match &self.outcome {
                Some(o) => Planning::Ended {
                    at: o.at.clone(),
                    message: o.error.clone(),
                },
                None => Planning::Idle,
            },
            job: agents,
            shards,
            running_elsewhere: 0,
            max_running: usize::MAX,
            running_in_namespace: 0,
            max_running_per_namespace: None,
            retry_token: job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RETRY_ANNOTATION).cloned()),
            // `ferry rollback` rolls a local job back; the annotation is the cluster's.
            rollback_token: None,
            stored_plan,
            report: current.as_ref().map(JobPlan::report_location),
            collect: self.outcome.as_ref().and_then(|o| o.collect.clone()),
            approval: job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPROVE_DELETES_ANNOTATION).cloned()),
            limits: self.limits.as_ref().map(|tx| *tx.borrow()),
            price_tables: self.price_tables.clone(),
            now: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// Whether no shard is running (none was started, or all have ended).
    pub fn idle(&mut self) -> bool {
        match self.tasks.as_mut() {
            None => true,
            Some(t) => {
                t.collect();
                !t.running()
            }
        }
    }

    pub fn agents_exist(&self) -> bool {
        self.tasks.is_some()
    }

    /// Carries one step out. Returns whether it changed something the next observation sees.
    pub async fn execute(&mut self, job: &MigrationJob, v: &ValidatedSpec, step: &Step) -> bool {
        match step {
            Step::CreatePlan => {
                if let Err(e) = self.create_plan(job, v).await {
                    self.outcome = Some(PlanOutcome {
                        error: Some(e),
                        at: now(),
                        ..Default::default()
                    });
                }
                true
            }
            // `ferry run` has no rollback token (`ferry rollback` runs a rollback), but the
            // stage is stored the same way.
            Step::PlanDeletes | Step::PlanRollback => {
                if let Some(plan) = self.stored_plan(v) {
                    let plan = if *step == Step::PlanDeletes {
                        plan.copy_stage().deletes()
                    } else {
                        plan.rollback()
                    };
                    let path = self.plan_path();
                    if let Err(e) =
                        std::fs::write(&path, serde_json::to_vec_pretty(&plan).expect("serializes"))
                    {
                        self.outcome = Some(PlanOutcome {
                            error: Some(format!("{}: {e}", path.display())),
                            at: now(),
                            ..Default::default()
                        });
                    }
                }
                true
            }
            // Local shards write their own files: nothing to grant.
            Step::CreateAgentAccess => false,
            Step::ResetProgress => {
                if let Some(plan) = self.stored_plan(v) {
                    for i in 0..plan.shards.len() {
                        let _ = std::fs::remove_file(self.shard_store(i).path);
                    }
                }
                true
            }
            Step::CreateJob { suspend } => {
                self.start(v, *suspend);
                true
            }
            Step::SetSuspend { suspend } => {
                if let Some(t) = self.tasks.as_mut() {
                    if *suspend {
                        let _ = t.stop.send(true);
                        t.suspended = true;
                    }
                }
                true
            }
            Step::SetLimits { limits } => {
                // The shards running follow it; shards started later begin with it.
                match &self.limits {
                    Some(tx) => {
                        tx.send_replace(*limits);
                    }
                    None => self.limits = Some(watch::channel(*limits).0),
                }
                true
            }
            Step::DeleteJob => {
                if let Some(t) = self.tasks.take() {
                    let _ = t.stop.send(true);
                    // A handle whose result was taken must not be polled again.
                    for (h, ended) in t.handles.into_iter().zip(&t.ended) {
                        if ended.is_none() {
                            let _ = h.await;
                        }
                    }
                }
                true
            }
            Step::Event {
                warning,
                reason,
                message,
            } => {
                // Phase changes and problems end up in the summary; what only an Event says
                // is printed.
                if *reason == Reason::NothingToRetry {
                    eprintln!("{message}");
                } else {
                    tracing::info!(%reason, warning, "{message}");
                }
                false
            }
        }
    }

    async fn create_plan(&mut self, job: &MigrationJob, v: &ValidatedSpec) -> Result<(), String> {
        let attempt = job.status.as_ref().map_or(0, |s| s.attempt);
        let plan = if attempt > 0 {
            // A retry keeps the shard ranges of the run whose failures it re-runs.
            let base = self
                .stored_plan(v)
                .ok_or("the plan of the first run is gone; cannot retry")?;
            eprintln!("retrying the failed keys of the last attempt (attempt {attempt})");
            base.retry(attempt)
        } else {
            // The planner, as a cluster's planner pod runs it: the Secrets (read from the
            // YAML), both endpoints (paths too: they are on this machine), then the shards.
            let credentials = match &self.credentials {
                Ok(c) => c.clone(),
                Err(problem) => {
                    self.outcome = Some(PlanOutcome {
                        secret_problems: vec![problem.clone()],
                        at: now(),
                        ..Default::default()
                    });
                    return Ok(());
                }
            };
            let req = PlanRequest {
                plan: JobPlan {
                    rollback_token: None,
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    uid: self.uid.clone(),
                    spec_hash: v.spec_hash.clone(),
                    transfer: v.transfer.clone(),
                    shards: Vec::new(),
                    only_keys: None,
                    report_prefix: report_prefix(&self.namespace, &self.name, &self.uid),
                    attempt: 0,
                    retry_failed_from: None,
                    stage: Default::default(),
                },
                shards: v.shards,
                required: Vec::new(),
                check_source: true,
                check_destination: true,
            };
            // `ferry run` cannot come back later as the controller does (Pending, asked again):
            // a busy or failing endpoint (503 SlowDown, 500, a reset) is asked with backoff
            // for up to the probe's deadline instead (a refusal still ends it at once).
            let attempts = ferry_engine::retry::RetryPolicy::default().max_attempts;
            // A `collect` source's list is collected first, its pages and URLs shown.
            let collecting = super::ui::CollectUi::new();
            let (plan, outcome) =
                planner::answer_with(&req, &Default::default(), &credentials, attempts, &|p| {
                    collecting.update(p)
                })
                .await;
            self.outcome = Some(outcome);
            let Some(plan) = plan else {
                return Ok(());
            };
            plan
        };
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| format!("{}: {e}", self.state_dir.display()))?;
        let path = self.plan_path();
        std::fs::write(&path, serde_json::to_vec_pretty(&plan).expect("serializes"))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Starts one task per shard of the stored plan (none while suspended).
    fn start(&mut self, v: &ValidatedSpec, suspend: bool) {
        let Some(mut plan) = self.stored_plan(v) else {
            return;
        };
        // The runtime knobs (bandwidth, concurrency...) may have changed since it was made.
        // The source stays the planner's: a collected URL list is read where it was written.
        let source = plan.transfer.source.clone();
        plan.transfer = v.transfer.clone();
        plan.transfer.source = source;
        let plan = Arc::new(plan);
        let (stop, stop_rx) = watch::channel(suspend);
        let mut tasks = Tasks {
            handles: Vec::new(),
            lives: Vec::new(),
            ended: Vec::new(),
            stop,
            suspended: suspend,
        };
        if !suspend {
            let credentials = self.credentials.clone().unwrap_or_default();
            for i in 0..plan.shards.len() {
                let (live, live_rx) = watch::channel(ShardProgress::default());
                tasks.lives.push(live_rx);
                tasks.ended.push(None);
                tasks.handles.push(tokio::spawn(run_shard(ShardInputs {
                    plan: plan.clone(),
                    index: i,
                    credentials: credentials.clone(),
                    progress: Arc::new(self.shard_store(i)),
                    live,
                    stop: stop_rx.clone(),
                    checkpoint_every: self.checkpoint_every,
                    limits: self.limits.as_ref().map(watch::Sender::subscribe),
                })));
            }
        }
        self.tasks = Some(tasks);
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
