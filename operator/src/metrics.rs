//! The operator's Prometheus metrics (`/metrics`, see `docs/observability.md`).
//!
//! Two sources:
//! - **From the status** of every MigrationJob and BucketSync in the leader's caches, computed
//!   at each scrape ([`status_families`], pure). Nothing is counted in memory, so the counters
//!   are the same after an operator restart or a change of leader: they are what the status
//!   says. Only the leader has the caches; a standby serves the operator metrics alone.
//! - **Of the operator itself**: leader state and, under controller-runtime's names so stock
//!   dashboards work, reconcile count, errors, duration and workers busy ([`Metrics::observe`]).
//!
//! Labels are bounded: namespace, name, kind, and small fixed sets (result, phase, failure
//! class); never an object key or an error message.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use ferry_api::{BucketSync, MigrationJob, Phase, SyncPhase};
use ferry_k8s::names::{job_name as agents_job_name, JOB_LABEL};
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Every phase of a MigrationJob, so `ferry_jobs` has a sample (maybe 0) for each.
const PHASES: [Phase; 10] = [
    Phase::Pending,
    Phase::Running,
    Phase::Paused,
    Phase::Completed,
    Phase::PartiallyCompleted,
    Phase::Failed,
    Phase::Cancelled,
    Phase::RollingBack,
    Phase::RolledBack,
    Phase::PartiallyRolledBack,
];
/// Every phase of a BucketSync.
const SYNC_PHASES: [SyncPhase; 4] = [
    SyncPhase::Idle,
    SyncPhase::Syncing,
    SyncPhase::Suspended,
    SyncPhase::Failed,
];
/// The operator's controllers (the `controller` label of the reconcile metrics).
pub const CONTROLLERS: [&str; 2] = ["migrationjob", "bucketsync"];
/// Reconcile durations, seconds (controller-runtime's range, 5 ms to 60 s).
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// The caches the status metrics are read from (the leader's).
#[derive(Clone)]
pub struct Stores {
    pub jobs: Store<MigrationJob>,
    pub syncs: Store<BucketSync>,
    /// The planner and agents' Jobs of every MigrationJob (label `ferry.dev/migrationjob`).
    pub children: Store<Job>,
}

/// The labels of the operator's reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

/// The labels of `controller_runtime_reconcile_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: &'static str,
    result: &'static str,
}

type Durations = Family<ControllerLabels, Histogram, fn() -> Histogram>;

/// The registry and the handles the runtime updates.
pub struct Metrics {
    registry: Registry,
    ready: AtomicBool,
    leader: Gauge,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ControllerLabels, Counter>,
    durations: Durations,
    active: Family<ControllerLabels, Gauge>,
    stores: Arc<RwLock<Option<Stores>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let leader = Gauge::default();
        registry.register(
            "ferry_leader",
            "1 on the replica that holds the leader Lease (and reconciles), 0 on a standby",
            leader.clone(),
        );
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "controller_runtime_reconcile",
            "Reconciles per controller, by result (success or error)",
            reconciles.clone(),
        );
        let errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconciles that returned an error, per controller",
            errors.clone(),
        );
        let durations: Durations =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "How long a reconcile took, per controller",
            durations.clone(),
        );
        let active = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "controller_runtime_active_workers",
            "Reconciles running now, per controller",
            active.clone(),
        );
        // Every series of the operator's controllers exists from the start, at 0, so a rate()
        // over it has a first sample.
        for controller in CONTROLLERS {
            let labels = ControllerLabels { controller };
            let _ = errors.get_or_create(&labels);
            let _ = active.get_or_create(&labels);
            let _ = durations.get_or_create(&labels);
            for result in ["success", "error"] {
                let _ = reconciles.get_or_create(&ResultLabels { controller, result });
            }
        }
        let stores = Arc::new(RwLock::new(None));
        registry.register_collector(Box::new(StatusCollector {
            stores: stores.clone(),
        }));
        Metrics {
            registry,
            ready: AtomicBool::new(false),
            leader,
            reconciles,
            errors,
            durations,
            active,
            stores,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// This replica leads (and reconciles) with these caches, or no longer does.
    pub fn set_leader(&self, stores: Option<Stores>) {
        self.leader.set(i64::from(stores.is_some()));
        *self.stores.write().unwrap_or_else(|e| e.into_inner()) = stores;
    }

    /// Runs one reconcile of `controller`, counting it, its result and its duration.
    pub async fn observe<T, E>(
        &self,
        controller: &'static str,
        reconcile: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let labels = ControllerLabels { controller };
        let active = self.active.get_or_create(&labels).clone();
        active.inc();
        // Decremented however the reconcile ends, a cancelled one too.
        let _busy = Busy(active);
        let start = Instant::now();
        let result = reconcile.await;
        self.durations
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels {
                controller,
                result: outcome,
            })
            .inc();
        if result.is_err() {
            self.errors.get_or_create(&labels).inc();
        }
        result
    }
}

/// `reconcile` as a reconciler of `controller`, each call counted and timed by
/// [`Metrics::observe`].
pub fn instrumented<K, C, T, E, Fut>(
    metrics: &Arc<Metrics>,
    controller: &'static str,
    reconcile: impl Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<T, E>>
where
    K: Send + Sync + 'static,
    C: Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let metrics = metrics.clone();
    let reconcile = Arc::new(reconcile);
    move |obj, ctx| {
        let (m, reconcile) = (metrics.clone(), reconcile.clone());
        Box::pin(async move { m.observe(controller, reconcile(obj, ctx)).await })
    }
}

/// Decrements a workers gauge when dropped.
struct Busy(Gauge);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Encodes [`status_families`] of the leader's caches at each scrape.
struct StatusCollector {
    stores: Arc<RwLock<Option<Stores>>>,
}

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusCollector")
    }
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stores) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let (jobs, syncs, children) = (
            stores.jobs.state(),
            stores.syncs.state(),
            stores.children.state(),
        );
        for family in status_families(&jobs, &syncs, &children) {
            if family.samples.is_empty() {
                continue;
            }
            let kind = if family.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                if family.counter {
                    ConstCounter::new(*value).encode(sample)?;
                } else {
                    ConstGauge::new(*value).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

/// A metric's labels: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// One metric and its samples, as read from the statuses.
#[derive(Debug, PartialEq)]
pub struct MetricFamily {
    /// The name; a counter's samples get `_total` added when encoded.
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub samples: Vec<(Labels, u64)>,
}

impl MetricFamily {
    fn new(name: &'static str, help: &'static str, counter: bool) -> MetricFamily {
        MetricFamily {
            name,
            help,
            counter,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &Labels, extra: &[(&'static str, &str)], value: u64) {
        let mut l = labels.clone();
        l.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        self.samples.push((l, value));
    }
}

fn object_labels(kind: &str, obj: &impl ResourceExt) -> Labels {
    vec![
        ("namespace", obj.namespace().unwrap_or_default()),
        ("name", obj.name_any()),
        ("kind", kind.to_string()),
    ]
}

/// The status metrics of these MigrationJobs and BucketSyncs (pure).
pub fn status_families(
    jobs: &[Arc<MigrationJob>],
    syncs: &[Arc<BucketSync>],
    children: &[Arc<Job>],
) -> Vec<MetricFamily> {
    let mut objects = MetricFamily::new(
        "ferry_objects",
        "Objects of a job by result (copied, skipped as up to date, vanished at the source, \
         failed, deleted at the destination), as its status counts them",
        true,
    );
    let mut bytes = MetricFamily::new(
        "ferry_bytes",
        "Bytes of a job by result (copied, skipped, failed, deleted), as its status counts them",
        true,
    );
    let mut failures = MetricFamily::new(
        "ferry_failures",
        "Failed objects of a job by failure class",
        true,
    );
    let mut listed_objects = MetricFamily::new(
        "ferry_listed_objects",
        "Selected objects a job's listings found so far",
        false,
    );
    let mut listed_bytes = MetricFamily::new(
        "ferry_listed_bytes",
        "Bytes of the selected objects a job's listings found so far",
        false,
    );
    let mut expected_objects = MetricFamily::new(
        "ferry_expected_objects",
        "Selected objects a job holds in all, once known",
        false,
    );
    let mut expected_bytes = MetricFamily::new(
        "ferry_expected_bytes",
        "Bytes of the selected objects a job holds in all, once known",
        false,
    );
    let mut rate = MetricFamily::new(
        "ferry_throughput_bytes_per_second",
        "Bytes per second a job's running shards copy now",
        false,
    );
    let mut eta = MetricFamily::new(
        "ferry_eta_seconds",
        "Estimated seconds left of a running job, once its totals are known",
        false,
    );
    let mut attempt = MetricFamily::new(
        "ferry_job_attempt",
        "0 for a job's first run, n while or after its n-th retry of the failed objects \
         (a retry's counters count only its keys, from 0)",
        false,
    );
    let mut phase = MetricFamily::new(
        "ferry_job_phase",
        "1 for the phase a MigrationJob or BucketSync is in",
        false,
    );
    let mut by_phase = MetricFamily::new(
        "ferry_jobs",
        "MigrationJobs and BucketSyncs by phase",
        false,
    );
    let mut last_success = MetricFamily::new(
        "ferry_bucketsync_last_success_timestamp_seconds",
        "When a BucketSync's last successful run ended (Unix time)",
        false,
    );
    let mut consecutive = MetricFamily::new(
        "ferry_bucketsync_consecutive_failures",
        "Runs of a BucketSync that failed in a row",
        false,
    );
    let mut skipped_ticks = MetricFamily::new(
        "ferry_bucketsync_skipped_ticks",
        "Ticks of a BucketSync skipped because its last run was still going",
        true,
    );

    let mut agent_failures = MetricFamily::new(
        "ferry_agent_pods_failed",
        "Agent pods of a MigrationJob's agents' Job that failed and were replaced (the Job's \
         status.failed; evictions and drains not counted); gone with the Job",
        false,
    );

    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for mj in jobs {
        let Some(st) = &mj.status else { continue };
        let l = object_labels("MigrationJob", mj.as_ref());
        let c = &st.progress.counters;
        for (result, n) in [
            ("copied", c.objects_copied),
            ("skipped", c.objects_skipped),
            ("vanished", c.objects_vanished),
            ("failed", c.objects_failed),
            ("deleted", c.objects_deleted),
        ] {
            objects.add(&l, &[("result", result)], n);
        }
        for (result, n) in [
            ("copied", c.bytes_copied),
            ("skipped", c.bytes_skipped),
            ("failed", c.bytes_failed),
            ("deleted", c.bytes_deleted),
        ] {
            bytes.add(&l, &[("result", result)], n);
        }
        for (class, n) in &st.failures_by_class {
            failures.add(&l, &[("class", class.as_str())], *n);
        }
        listed_objects.add(&l, &[], c.objects_total);
        listed_bytes.add(&l, &[], c.bytes_total);
        if let Some(e) = st.progress.expected {
            expected_objects.add(&l, &[], e.objects);
            expected_bytes.add(&l, &[], e.bytes);
        }
        rate.add(&l, &[], st.progress.bytes_per_second);
        if let Some(s) = st.progress.eta_seconds {
            eta.add(&l, &[], s);
        }
        attempt.add(&l, &[], u64::from(st.attempt));
        if let Some(p) = st.phase {
            let p = format!("{p:?}");
            phase.add(&l, &[("phase", &p)], 1);
            *counts.entry(format!("MigrationJob/{p}")).or_default() += 1;
        }
    }
    for bs in syncs {
        let Some(st) = &bs.status else { continue };
        let l = object_labels("BucketSync", bs.as_ref());
        if let Some(p) = st.phase {
            let p = format!("{p:?}");
            phase.add(&l, &[("phase", &p)], 1);
            *counts.entry(format!("BucketSync/{p}")).or_default() += 1;
        }
        let success = st
            .last_successful_sync_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let Some(t) = success {
            last_success.add(&l, &[], t.timestamp().max(0) as u64);
        }
        consecutive.add(&l, &[], u64::from(st.consecutive_failures));
        skipped_ticks.add(&l, &[], st.skipped_ticks);
    }
    for job in children {
        let Some(owner) = job.labels().get(JOB_LABEL) else {
            continue;
        };
        if job.name_any() != agents_job_name(owner) {
            continue; // the planner's Job
        }
        let l = vec![
            ("namespace", job.namespace().unwrap_or_default()),
            ("name", owner.clone()),
            ("kind", "MigrationJob".to_string()),
        ];
        let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
        agent_failures.add(&l, &[], failed.max(0) as u64);
    }
    let phases = PHASES
        .iter()
        .map(|p| ("MigrationJob", format!("{p:?}")))
        .chain(SYNC_PHASES.iter().map(|p| ("BucketSync", format!("{p:?}"))));
    for (kind, p) in phases {
        let n = counts.get(&format!("{kind}/{p}")).copied().unwrap_or(0);
        by_phase.add(&vec![("kind", kind.to_string())], &[("phase", &p)], n);
    }
    vec![
        objects,
        bytes,
        failures,
        listed_objects,
        listed_bytes,
        expected_objects,
        expected_bytes,
        rate,
        eta,
        attempt,
        phase,
        by_phase,
        last_success,
        consecutive,
        skipped_ticks,
        agent_failures,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::{BucketSyncStatus, FailureClass, MigrationJobStatus, Totals};

    fn job(name: &str, status: Option<MigrationJobStatus>) -> Arc<MigrationJob> {
        let mut mj: MigrationJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
            "metadata": {"name": name, "namespace": "media"},
            "spec": {"source": {"filesystem": {"path": "/a"}},
                     "destination": {"filesystem": {"path": "/b"}}}
        }))
        .unwrap();
        mj.status = status;
        Arc::new(mj)
    }

    fn sync(name: &str, status: BucketSyncStatus) -> BucketSync {
        let mut bs: BucketSync = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "BucketSync",
            "metadata": {"name": name, "namespace": "media"},
            "spec": {"interval": "15m", "source": {"filesystem": {"path": "/a"}},
                     "destination": {"filesystem": {"path": "/b"}}}
        }))
        .unwrap();
        bs.status = Some(status);
        bs
    }

    fn sample(families: &[MetricFamily], name: &str, extra: &[(&str, &str)]) -> Option<u64> {
        let f = families.iter().find(|f| f.name == name)?;
        f.samples
            .iter()
            .find(|(l, _)| {
                extra
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| *v)
    }

    #[test]
    fn a_job_status_becomes_its_counters_gauges_and_phase() {
        let mut st = MigrationJobStatus {
            phase: Some(Phase::Running),
            attempt: 1,
            ..Default::default()
        };
        let c = &mut st.progress.counters;
        (c.objects_copied, c.objects_skipped, c.objects_failed) = (40, 7, 2);
        (c.bytes_copied, c.objects_total, c.bytes_total) = (4096, 60, 9000);
        st.progress.bytes_per_second = 1234;
        st.progress.eta_seconds = Some(17);
        st.progress.expected = Some(Totals {
            objects: 100,
            bytes: 10_000,
        });
        st.failures_by_class.insert(FailureClass::AccessDenied, 2);
        let jobs = [job("a", Some(st)), job("fresh", None)];
        let f = status_families(&jobs, &[], &[]);
        let a = [
            ("name", "a"),
            ("namespace", "media"),
            ("kind", "MigrationJob"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut l = a.to_vec();
            l.extend_from_slice(extra);
            l
        };
        assert_eq!(
            sample(&f, "ferry_objects", &with(&[("result", "copied")])),
            Some(40)
        );
        assert_eq!(
            sample(&f, "ferry_objects", &with(&[("result", "skipped")])),
            Some(7)
        );
        assert_eq!(
            sample(&f, "ferry_objects", &with(&[("result", "failed")])),
            Some(2)
        );
        assert_eq!(
            sample(&f, "ferry_bytes", &with(&[("result", "copied")])),
            Some(4096)
        );
        assert_eq!(
            sample(&f, "ferry_failures", &with(&[("class", "AccessDenied")])),
            Some(2)
        );
        assert_eq!(
            sample(&f, "ferry_throughput_bytes_per_second", &a),
            Some(1234)
        );
        assert_eq!(sample(&f, "ferry_eta_seconds", &a), Some(17));
        assert_eq!(sample(&f, "ferry_expected_bytes", &a), Some(10_000));
        assert_eq!(sample(&f, "ferry_listed_objects", &a), Some(60));
        assert_eq!(sample(&f, "ferry_job_attempt", &a), Some(1));
        assert_eq!(
            sample(&f, "ferry_job_phase", &with(&[("phase", "Running")])),
            Some(1)
        );
        // A job without a status has no series; every phase has a count, 0 included.
        assert_eq!(sample(&f, "ferry_objects", &[("name", "fresh")]), None);
        let running = [("kind", "MigrationJob"), ("phase", "Running")];
        assert_eq!(sample(&f, "ferry_jobs", &running), Some(1));
        let failed = [("kind", "MigrationJob"), ("phase", "Failed")];
        assert_eq!(sample(&f, "ferry_jobs", &failed), Some(0));
        assert_eq!(
            f.iter()
                .find(|m| m.name == "ferry_jobs")
                .unwrap()
                .samples
                .len(),
            PHASES.len() + SYNC_PHASES.len()
        );
    }

    #[test]
    fn a_bucketsync_status_becomes_its_gauges() {
        let bs = sync(
            "nightly",
            BucketSyncStatus {
                phase: Some(SyncPhase::Idle),
                last_successful_sync_time: Some("2026-12-03T10:00:00Z".into()),
                consecutive_failures: 2,
                skipped_ticks: 3,
                ..Default::default()
            },
        );
        let f = status_families(&[], &[Arc::new(bs)], &[]);
        let l = [("name", "nightly"), ("kind", "BucketSync")];
        assert_eq!(
            sample(&f, "ferry_bucketsync_last_success_timestamp_seconds", &l),
            Some(1_796_292_000)
        );
        assert_eq!(
            sample(&f, "ferry_bucketsync_consecutive_failures", &l),
            Some(2)
        );
        assert_eq!(sample(&f, "ferry_bucketsync_skipped_ticks", &l), Some(3));
        let idle = [("kind", "BucketSync"), ("phase", "Idle")];
        assert_eq!(sample(&f, "ferry_jobs", &idle), Some(1));
    }

    #[tokio::test]
    async fn reconciles_are_counted_timed_and_encoded() {
        let m = Metrics::new();
        let ok: Result<(), ()> = m.observe("migrationjob", async { Ok(()) }).await;
        assert!(ok.is_ok());
        let _ = m.observe("migrationjob", async { Err::<(), ()>(()) }).await;
        let text = m.encode();
        for line in [
            "controller_runtime_reconcile_total{controller=\"migrationjob\",result=\"success\"} 1",
            "controller_runtime_reconcile_total{controller=\"migrationjob\",result=\"error\"} 1",
            "controller_runtime_reconcile_errors_total{controller=\"migrationjob\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"migrationjob\"} 2",
            "controller_runtime_active_workers{controller=\"migrationjob\"} 0",
            "ferry_leader 0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // A standby (no caches) has no status metrics.
        assert!(!text.contains("ferry_jobs"), "{text}");
    }

    #[test]
    fn the_leader_encodes_the_status_of_its_caches() {
        use kube::runtime::{reflector, watcher};
        let (jobs, mut writer) = reflector::store::<MigrationJob>();
        let mut st = MigrationJobStatus {
            phase: Some(Phase::Completed),
            ..Default::default()
        };
        st.progress.counters.objects_copied = 40;
        writer.apply_watcher_event(&watcher::Event::Apply(job("a", Some(st)).as_ref().clone()));
        let (syncs, _sync_writer) = reflector::store::<BucketSync>();
        let m = Metrics::new();
        let (children, _children_writer) = reflector::store::<Job>();
        m.set_leader(Some(Stores {
            jobs,
            syncs,
            children,
        }));
        let text = m.encode();
        for line in [
            "ferry_leader 1",
            "# TYPE ferry_objects counter",
            "ferry_objects_total{namespace=\"media\",name=\"a\",kind=\"MigrationJob\",result=\"copied\"} 40",
            "ferry_jobs{kind=\"MigrationJob\",phase=\"Completed\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        m.set_leader(None);
        assert!(!m.encode().contains("ferry_objects"));
    }

    /// Every metric the chart's Grafana dashboard and alert rules query is one this operator
    /// serves.
    #[test]
    fn the_dashboard_and_the_alerts_query_only_metrics_that_exist() {
        use kube::runtime::{reflector, watcher};
        let (jobs, mut job_writer) = reflector::store::<MigrationJob>();
        let mut st = MigrationJobStatus {
            phase: Some(Phase::Running),
            ..Default::default()
        };
        st.progress.eta_seconds = Some(5);
        st.progress.expected = Some(Totals::default());
        st.failures_by_class.insert(FailureClass::Throttled, 1);
        job_writer.apply_watcher_event(&watcher::Event::Apply(job("a", Some(st)).as_ref().clone()));
        let (syncs, mut sync_writer) = reflector::store::<BucketSync>();
        let bs = sync(
            "s",
            BucketSyncStatus {
                phase: Some(SyncPhase::Idle),
                last_successful_sync_time: Some("2026-12-03T10:00:00Z".into()),
                ..Default::default()
            },
        );
        sync_writer.apply_watcher_event(&watcher::Event::Apply(bs));
        let m = Metrics::new();
        futures::executor::block_on(m.observe("migrationjob", async { Ok::<(), ()>(()) })).unwrap();
        let (children, _children_writer) = reflector::store::<Job>();
        m.set_leader(Some(Stores {
            jobs,
            syncs,
            children,
        }));
        let served: std::collections::BTreeSet<String> = m
            .encode()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
            .collect();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/ferry/dashboards/ferry.json"
        );
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut exprs: Vec<String> = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                exprs.push(target["expr"].as_str().unwrap().to_string());
            }
        }
        // And the chart's alert rules.
        let rules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/ferry/templates/prometheusrule.yaml"
        );
        let rules = std::fs::read_to_string(rules).unwrap();
        let alerts: Vec<String> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:").map(str::to_string))
            .collect();
        assert_eq!(alerts.len(), 5, "{rules}");
        exprs.extend(alerts);
        let mut queried = Vec::new();
        for expr in exprs {
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("ferry_") || word.starts_with("controller_runtime_") {
                    queried.push(word.to_string());
                }
            }
        }
        assert!(queried.len() >= 20, "{queried:?}");
        for name in queried {
            assert!(
                served.contains(&name),
                "the dashboard queries {name}, not served: {served:?}"
            );
        }
    }

    #[test]
    fn failed_agent_pods_come_from_the_agents_job_only() {
        let job = |name: &str, failed: i32| -> Arc<Job> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "media",
                                 "labels": {JOB_LABEL: "photos"}},
                    "status": {"failed": failed}
                }))
                .unwrap(),
            )
        };
        let f = status_families(
            &[],
            &[],
            &[job("photos-agents", 2), job("photos-planner", 1)],
        );
        let family = f
            .iter()
            .find(|m| m.name == "ferry_agent_pods_failed")
            .unwrap();
        assert_eq!(family.samples.len(), 1);
        let l = [
            ("name", "photos"),
            ("namespace", "media"),
            ("kind", "MigrationJob"),
        ];
        assert_eq!(sample(&f, "ferry_agent_pods_failed", &l), Some(2));
    }
}
