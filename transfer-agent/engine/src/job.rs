//! Runs one shard of a plan: opens its stores, each with its own secrets, sets the shard's
//! limits, and hands everything to [`crate::shard::ShardRun`].

use std::sync::Arc;
use std::time::Duration;

use ferry_core::{FailureClass, JobCredentials, JobPlan, LiveLimits, ProgressStore, ShardProgress};
use tokio::sync::watch;

use crate::error::TransferError;
use crate::limit::{Limits, ShardLimits};
use crate::retry::RetryPolicy;
use crate::shard::ShardRun;
use crate::stores::{self, Sink, Source};

/// A shard's share of the job's live settings: the job's rates divided evenly across its
/// `shards`; concurrency and the memory budget are per shard already.
pub fn shard_share(live: &LiveLimits, shards: usize) -> ShardLimits {
    let shards = shards.max(1) as f64;
    ShardLimits {
        requests_per_second: live.requests_per_second as f64 / shards,
        bytes_per_second: live.bandwidth_limit.map_or(0.0, |b| b as f64 / shards),
        memory_budget: live.memory_budget,
        concurrency: live.concurrency.max(1) as usize,
    }
}

/// The per-shard limits of the plan's own settings.
pub fn shard_limits(plan: &JobPlan) -> Arc<Limits> {
    let live = LiveLimits::of(&plan.transfer);
    Arc::new(Limits::of(&shard_share(&live, plan.shards.len())))
}

/// Applies each new value of `live` to `limits` (a shard's share of it), until the sender
/// is gone. The current value is applied first.
async fn follow(limits: Arc<Limits>, shards: usize, mut live: watch::Receiver<LiveLimits>) {
    loop {
        let now = *live.borrow_and_update();
        let share = shard_share(&now, shards);
        limits.set(&share);
        tracing::debug!(?share, "the shard's limits");
        if live.changed().await.is_err() {
            return;
        }
    }
}

/// What a caller supplies to run one shard.
pub struct ShardInputs {
    pub plan: Arc<JobPlan>,
    pub index: usize,
    pub credentials: JobCredentials,
    pub progress: Arc<dyn ProgressStore>,
    pub live: watch::Sender<ShardProgress>,
    pub stop: watch::Receiver<bool>,
    pub checkpoint_every: Duration,
    /// The job's live settings as they change while the shard runs (taken over the plan's
    /// from the start); None keeps the plan's for the whole run.
    pub limits: Option<watch::Receiver<LiveLimits>>,
}

/// Opens the stores and runs one shard to its end.
pub async fn run_shard(inp: ShardInputs) -> Result<ShardProgress, TransferError> {
    let plan = inp.plan;
    if inp.index >= plan.shards.len() {
        return Err(TransferError::new(
            FailureClass::InvalidRequest,
            format!(
                "shard {} is out of range: the plan has {}",
                inp.index,
                plan.shards.len()
            ),
        )
        .fatal());
    }
    let t = &plan.transfer;
    let limits = shard_limits(&plan);
    // Stops following when the shard ends (dropped with the run's scope below).
    let _following = inp.limits.map(|rx| {
        let task = tokio::spawn(follow(limits.clone(), plan.shards.len(), rx));
        AbortOnDrop(task)
    });
    let retry = RetryPolicy::default();
    let open = |config, secrets| stores::open(config, secrets, limits.clone(), retry.clone());
    // A collected URL list is read with the report location's secrets too.
    let source_secrets = ferry_core::collect::source_secrets(t, &inp.credentials);
    let src = open(&t.source, &source_secrets).await?.source();
    let dst = open(&t.destination, &inp.credentials.destination)
        .await?
        .sink()?;
    // A dry run writes no report, but for the inventory when one is asked for.
    let report = if t.dry_run && t.inventory.is_none() {
        None
    } else {
        match &t.report {
            Some(r) => Some(open(r, &inp.credentials.report).await?.sink()?),
            None => Some(dst.clone()),
        }
    };
    let plan = match (&plan.retry_failed_from, &plan.only_keys) {
        (Some(folder), None) => {
            // A dry run writes no report, so it has nothing to retry.
            let keys = match &report {
                Some(root) => {
                    let folder =
                        ferry_core::plan::shard_folder(folder, plan.shards[inp.index].index);
                    failed_keys(root.folder(&folder).as_ref(), src.as_ref()).await?
                }
                None => Vec::new(),
            };
            tracing::info!(
                shard = inp.index,
                keys = keys.len(),
                "retrying the failed keys of {folder}"
            );
            Arc::new(JobPlan {
                rollback_token: None,
                only_keys: Some(keys),
                ..(*plan).clone()
            })
        }
        _ => plan,
    };
    let run = ShardRun {
        server: dst.server_copy(src.as_ref()),
        plan,
        index: inp.index,
        src,
        dst,
        report,
        limits,
        retry,
        progress: inp.progress,
        live: inp.live,
        stop: inp.stop,
        checkpoint_every: inp.checkpoint_every,
        unsaved: Default::default(),
        uploads: Default::default(),
    };
    let unsaved = run.unsaved.clone();
    let record = run.run().await;
    // A run whose last save failed (an API outage at the very end, its progress object gone
    // or too large) has not ended where anyone can see: it is an error, to be run again (it
    // goes on from the last checkpoint that was saved).
    if let Some(why) = unsaved.lock().unwrap().take() {
        return Err(TransferError::new(
            FailureClass::Network,
            format!("the shard's final state could not be saved ({why}); run it again"),
        ));
    }
    Ok(record)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The keys (relative to the source, sorted, distinct) that a shard's failure report in
/// `folder` lists; archived objects are left out (a retry cannot read them either).
async fn failed_keys(folder: &dyn Sink, src: &dyn Source) -> Result<Vec<String>, TransferError> {
    let lines = crate::report::read_failures(folder).await?;
    let src_prefix = src.full_key("");
    let mut keys: Vec<String> = lines
        .into_iter()
        .filter(|l| l.class != FailureClass::Archived)
        .filter_map(|l| l.key.strip_prefix(&src_prefix).map(str::to_string))
        .collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}
