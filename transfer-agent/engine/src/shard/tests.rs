//! The shard engine on in-memory stores: the whole loop (merge, copies, recording, reports,
//! checkpoints, resume, the count-only listing), no server, tokio's clock paused where timing
//! matters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::plan::{report_prefix, MultipartSettings, Transfer};
use ferry_core::stores::FsConfig;
use ferry_core::{
    JobPlan, OverwritePolicy, ProgressStore, ShardProgress, ShardRange, ShardState, StoreConfig,
    VerifyMode,
};
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::watch;

use super::ShardRun;
use crate::limit::Limits;
use crate::retry::RetryPolicy;
use crate::stores::{MemoryStore, Sink};

/// A progress record kept in memory.
#[derive(Default)]
struct Saved(Mutex<Option<ShardProgress>>);

impl ProgressStore for Saved {
    fn load(&self) -> BoxFuture<'_, Result<Option<ShardProgress>, String>> {
        Box::pin(async move { Ok(self.0.lock().unwrap().clone()) })
    }
    fn save<'a>(&'a self, p: &'a ShardProgress) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            *self.0.lock().unwrap() = Some(p.clone());
            Ok(())
        })
    }
}

fn plan(concurrency: u32) -> JobPlan {
    // The stores are handed to the shard directly; these configurations are not opened.
    let unused = || {
        StoreConfig::Filesystem(FsConfig {
            path: "/unused".into(),
        })
    };
    JobPlan {
        rollback_token: None,
        namespace: "ns".into(),
        name: "job".into(),
        uid: "u".into(),
        spec_hash: "h".into(),
        transfer: Transfer {
            source: unused(),
            destination: unused(),
            report: None,
            selection: Default::default(),
            overwrite: OverwritePolicy::IfDifferent,
            verify: VerifyMode::Checksum,
            concurrency,
            memory_budget: 64 << 20,
            bandwidth_limit: None,
            requests_per_second: 0,
            multipart: MultipartSettings {
                threshold: 64 << 20,
                part_size: 16 << 20,
            },
            max_failures: None,
            dry_run: false,
            cancel: false,
            deletes: None,
            backup_replaced: false,
            mode: Default::default(),
            inventory: None,
        },
        shards: vec![ShardRange::default()],
        only_keys: None,
        report_prefix: report_prefix("ns", "job", "u"),
        attempt: 0,
        retry_failed_from: None,
        stage: Default::default(),
    }
}

struct Harness {
    src: MemoryStore,
    dst: MemoryStore,
    saved: Arc<Saved>,
}

impl Harness {
    fn new(keys: usize) -> Harness {
        let src = MemoryStore::new();
        for i in 0..keys {
            src.insert(&format!("k{i:05}"), format!("value {i}").into_bytes());
        }
        Harness {
            src,
            dst: MemoryStore::new(),
            saved: Arc::default(),
        }
    }

    /// A run of the shard, with its live record and its stop switch.
    fn shard(
        &self,
        plan: JobPlan,
    ) -> (
        ShardRun,
        watch::Receiver<ShardProgress>,
        watch::Sender<bool>,
    ) {
        let (live, live_rx) = watch::channel(ShardProgress::default());
        let (stop_tx, stop) = watch::channel(false);
        let dst: Arc<dyn Sink> = Arc::new(self.dst.clone());
        let run = ShardRun {
            plan: Arc::new(plan),
            index: 0,
            src: Arc::new(self.src.clone()),
            report: Some(dst.clone()),
            dst,
            limits: Arc::new(Limits::unlimited()),
            retry: RetryPolicy {
                max_attempts: 2,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
            },
            server: None,
            progress: self.saved.clone(),
            live,
            stop,
            checkpoint_every: Duration::from_millis(500),
            unsaved: Default::default(),
            uploads: Default::default(),
        };
        (run, live_rx, stop_tx)
    }

    /// The keys listed in the manifests the shard wrote, each once per listing.
    async fn manifest_keys(&self) -> Vec<String> {
        let folder = self
            .dst
            .folder(&format!("{}shard-0/", plan(1).report_prefix));
        let files: Vec<String> = folder
            .list(None, None)
            .map(|r| r.unwrap().key)
            .filter(|k| futures::future::ready(k.starts_with("manifest-")))
            .collect()
            .await;
        let mut keys = Vec::new();
        for f in files {
            let body = self
                .dst
                .bytes(&format!("{}shard-0/{f}", plan(1).report_prefix));
            for line in body
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                keys.push(v["key"].as_str().unwrap().to_string());
            }
        }
        keys.sort();
        keys
    }
}

fn data_keys(s: &MemoryStore) -> Vec<String> {
    s.keys()
        .into_iter()
        .filter(|k| !k.starts_with(".ferry/"))
        .collect()
}

#[tokio::test]
async fn a_shard_copies_every_key_and_records_each_once() {
    let h = Harness::new(300);
    h.dst.insert("k00007", b"stale".to_vec());
    let (run, _live, _stop) = h.shard(plan(8));
    let rec = run.run().await;
    assert_eq!(rec.state, ShardState::Completed);
    let c = &rec.counters;
    assert_eq!(
        (c.objects_total, c.objects_copied, c.objects_failed),
        (300, 300, 0)
    );
    assert_eq!(data_keys(&h.dst), data_keys(&h.src));
    assert_eq!(
        h.dst.bytes("k00007"),
        h.src.bytes("k00007"),
        "the stale copy is replaced"
    );
    assert_eq!(rec.checkpoint.watermark.as_deref(), Some("k00299"));
    assert_eq!(rec.checkpoint.counters, rec.counters);
    assert_eq!(rec.expected.map(|t| t.objects), Some(300));
    let manifest = h.manifest_keys().await;
    assert_eq!(
        manifest,
        data_keys(&h.src),
        "the manifest lists every key once"
    );
    assert_eq!(
        h.saved.0.lock().unwrap().as_ref(),
        Some(&rec),
        "the end is saved"
    );

    // Run again: everything is up to date, nothing is read.
    let reads = h.src.reads();
    let (again, _live, _stop) = h.shard(plan(8));
    let rec = again.run().await;
    assert_eq!(rec.state, ShardState::Completed);
    assert_eq!(h.src.reads(), reads, "a completed shard does nothing");
}

#[tokio::test]
async fn failures_are_reported_and_do_not_stop_the_checkpoint() {
    let h = Harness::new(20);
    h.src.deny("k00003");
    h.src.deny("k00011");
    let (run, _live, _stop) = h.shard(plan(4));
    let rec = run.run().await;
    assert_eq!(rec.state, ShardState::Completed);
    assert_eq!(rec.counters.objects_failed, 2);
    assert_eq!(rec.counters.objects_copied, 18);
    assert_eq!(rec.first_errors.len(), 2);
    assert_eq!(rec.checkpoint.watermark.as_deref(), Some("k00019"));
    assert_eq!(h.manifest_keys().await.len(), 18);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_shard_pauses_at_its_watermark_and_resumes_without_copying_twice() {
    let h = Harness::new(200);
    h.dst.slow_writes(Duration::from_millis(50));
    let (run, mut live, stop) = h.shard(plan(4));
    let task = tokio::spawn(run.run());
    while live.borrow().counters.objects_copied < 60 {
        live.changed().await.unwrap();
    }
    stop.send(true).unwrap();
    let paused = task.await.unwrap();
    assert_eq!(paused.state, ShardState::Paused);
    let mark = paused.checkpoint.watermark.clone().expect("a watermark");
    let done = paused.checkpoint.counters.objects_copied;
    assert!((60..200).contains(&done), "{done}");
    assert_eq!(
        mark,
        format!("k{:05}", done - 1),
        "the watermark is the done prefix"
    );

    let (resumed, _live, _stop) = h.shard(plan(4));
    let rec = resumed.run().await;
    assert_eq!(rec.state, ShardState::Completed);
    assert_eq!(data_keys(&h.dst), data_keys(&h.src));
    // Keys written after the last checkpoint are seen again and counted as copied, once.
    assert_eq!(rec.counters.objects_copied, 200);
    assert_eq!(rec.counters.objects_skipped, 0);
    assert_eq!(
        h.manifest_keys().await,
        data_keys(&h.src),
        "each key once in the manifests"
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_is_counted_ahead_when_copying_holds_the_shard_back() {
    let h = Harness::new(5000);
    h.dst.slow_writes(Duration::from_millis(100));
    let (run, mut live, stop) = h.shard(plan(1));
    let task = tokio::spawn(run.run());
    let seen = loop {
        live.changed().await.unwrap();
        let rec = live.borrow().clone();
        if rec.expected.is_some() {
            break rec;
        }
    };
    assert!(!seen.listing_complete, "the count-only listing came first");
    assert_eq!(seen.expected.map(|t| t.objects), Some(5000));
    assert!(seen.counters.objects_total < 5000);
    stop.send(true).unwrap();
    assert_eq!(task.await.unwrap().state, ShardState::Paused);
}

#[tokio::test(start_paused = true)]
async fn a_sync_bound_by_listing_runs_no_count_only_listing() {
    // Everything is up to date: the copy never holds the listing back.
    let h = Harness::new(3000);
    for k in data_keys(&h.src) {
        h.dst.insert(&k, h.src.bytes(&k).unwrap());
    }
    let (run, _live, _stop) = h.shard(plan(4));
    let reads = h.src.reads();
    let rec = run.run().await;
    assert_eq!(rec.counters.objects_skipped, 3000);
    assert_eq!(rec.expected.map(|t| t.objects), Some(3000));
    assert_eq!(h.src.reads(), reads, "nothing was read");
}

#[tokio::test]
async fn a_plan_whose_filters_do_not_compile_fails_instead_of_copying_everything() {
    let h = Harness::new(5);
    let mut p = plan(1);
    p.transfer.selection.include = vec!["a[".into()];
    let (run, _live, _stop) = h.shard(p);
    let rec = run.run().await;
    assert_eq!(rec.state, ShardState::Failed);
    assert!(rec.fatal.is_some());
    assert!(data_keys(&h.dst).is_empty());
}

#[tokio::test]
async fn deletes_wait_for_their_own_stage_and_delete_only_what_is_still_due() {
    let h = Harness::new(10);
    for k in ["x1", "x2", "x3", "x4"] {
        h.dst.insert(k, b"old".to_vec());
    }
    let mut p = plan(4);
    p.transfer.deletes = Some(ferry_core::DeleteSettings {
        max: ferry_core::FailureBudget::Count(100),
        backup_prefix: None,
    });
    let (run, _live, _stop) = h.shard(p.clone());
    let rec = run.run().await;
    assert_eq!(rec.state, ShardState::Completed);
    let c = &rec.counters;
    assert_eq!(
        (c.objects_copied, c.objects_to_delete, c.bytes_to_delete),
        (10, 4, 12)
    );
    assert_eq!(c.destination_objects, 4);
    assert_eq!(c.objects_total, 10, "candidates are not source objects");
    assert_eq!(
        data_keys(&h.dst).len(),
        14,
        "the copy stage deletes nothing"
    );

    // Between the stages x2 comes back at the source and x3 changes at the destination.
    h.src.insert("x2", b"new".to_vec());
    h.dst.insert("x3", b"changed".to_vec());
    let (run, _live, _stop) = h.shard(p.deletes());
    let rec = run.run().await;
    assert_eq!(rec.state, ShardState::Completed);
    let c = &rec.counters;
    assert_eq!(
        (
            c.objects_deleted,
            c.bytes_deleted,
            c.objects_delete_kept,
            c.objects_delete_failed
        ),
        (2, 6, 2, 0)
    );
    assert_eq!(c.objects_copied, 10, "the copy stage's counters carry on");
    assert!(h.dst.bytes("x1").is_none() && h.dst.bytes("x4").is_none());
    assert!(h.dst.bytes("x2").is_some() && h.dst.bytes("x3").is_some());
    let manifest = h.manifest_keys().await;
    assert!(manifest.contains(&"x1".to_string()) && manifest.contains(&"x4".to_string()));
    assert_eq!(manifest.len(), 12, "10 copied and 2 deleted, each once");

    // The delete stage done is done: running it again deletes nothing more.
    h.dst.insert("x1", b"old".to_vec());
    let (run, _live, _stop) = h.shard(p.deletes());
    run.run().await;
    assert!(h.dst.bytes("x1").is_some());
}

#[tokio::test]
async fn a_dry_run_counts_the_candidates_and_deletes_nothing() {
    let h = Harness::new(3);
    h.dst.insert("gone", b"old".to_vec());
    let mut p = plan(2);
    p.transfer.dry_run = true;
    p.transfer.deletes = Some(ferry_core::DeleteSettings {
        max: ferry_core::FailureBudget::Count(0),
        backup_prefix: None,
    });
    let (mut run, _live, _stop) = h.shard(p);
    run.report = None;
    let rec = run.run().await;
    assert_eq!(rec.counters.objects_to_delete, 1);
    assert!(h.dst.bytes("gone").is_some());
}

/// A dry run counts the objects a real run would copy in parts, and their parts, by the
/// copier's own rule (the estimate's requests are then exact).
#[tokio::test]
async fn a_dry_run_counts_objects_in_parts_and_their_parts() {
    const MIB: usize = 1 << 20;
    let h = Harness::new(1);
    h.src.insert("big", vec![1u8; 10 * MIB]);
    h.src.insert("mid", vec![2u8; 3 * MIB + 1]);
    let mut p = plan(2);
    p.transfer.dry_run = true;
    p.transfer.multipart.threshold = 2 * MIB as u64;
    p.transfer.multipart.part_size = MIB as u64;
    let (mut run, _live, _stop) = h.shard(p);
    run.report = None;
    let c = run.run().await.counters;
    assert_eq!(c.objects_would_copy, 3);
    assert_eq!(
        (
            c.objects_would_copy_whole,
            c.objects_would_copy_in_parts,
            c.parts_would_copy
        ),
        (1, 2, 10 + 4)
    );
    assert!(h.dst.bytes("big").is_none(), "a dry run writes nothing");
}

/// A progress store that is gone (an API outage at the end, a deleted ConfigMap).
struct Gone;

impl ProgressStore for Gone {
    fn load(&self) -> BoxFuture<'_, Result<Option<ShardProgress>, String>> {
        Box::pin(async move { Ok(None) })
    }
    fn save<'a>(&'a self, _: &'a ShardProgress) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { Err("ConfigMap x-shard-0: not found".to_string()) })
    }
}

/// A shard whose final record cannot be saved has not ended for anyone watching: the run
/// says so (the agent exits to be run again) instead of ending quietly.
#[tokio::test]
async fn a_final_state_that_cannot_be_saved_is_not_an_end() {
    let h = Harness::new(20);
    let (mut run, _live, _stop) = h.shard(plan(4));
    run.progress = Arc::new(Gone);
    let unsaved = run.unsaved.clone();
    let rec = run.run().await;
    assert_eq!(
        rec.state,
        ShardState::Completed,
        "the copy itself went through"
    );
    let why = unsaved.lock().unwrap().clone();
    assert!(
        why.as_deref().is_some_and(|w| w.contains("not found")),
        "{why:?}"
    );
    // A store that works again clears it.
    let (run, _live, _stop) = h.shard(plan(4));
    let unsaved = run.unsaved.clone();
    run.run().await;
    assert_eq!(*unsaved.lock().unwrap(), None);
}

/// A progress store that cannot be read (an API outage at agent start).
struct Unreadable;

impl ProgressStore for Unreadable {
    fn load(&self) -> BoxFuture<'_, Result<Option<ShardProgress>, String>> {
        Box::pin(async move { Err("ConfigMap x-shard-0: connection refused".to_string()) })
    }
    fn save<'a>(&'a self, _: &'a ShardProgress) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { Ok(()) })
    }
}

/// A record that cannot be read is not "start over" (which would write the report from its
/// first segment again, over an earlier run's): nothing is copied or written, and the run
/// says it is not over.
#[tokio::test]
async fn an_unreadable_record_starts_nothing_over() {
    let h = Harness::new(10);
    let (mut run, _live, _stop) = h.shard(plan(4));
    run.progress = Arc::new(Unreadable);
    let unsaved = run.unsaved.clone();
    let rec = run.run().await;
    assert_eq!(rec.state, ShardState::Paused);
    assert!(data_keys(&h.dst).is_empty(), "nothing copied");
    assert!(h.dst.keys().is_empty(), "no report written");
    assert!(unsaved
        .lock()
        .unwrap()
        .as_deref()
        .is_some_and(|w| w.contains("connection refused")));
}
