//! The operator end-to-end harness: a Kubernetes API to run the real `ferry controller`
//! binary against, and the parts of a cluster the tests have no nodes for.
//!
//! Two backends ([`backend`]):
//! - a real API server (`FERRY_E2E_KUBECONFIG`, with kube-controller-manager for the Job
//!   controller and garbage collection): the CRD with its CEL rules, RBAC, everything. The
//!   harness plays kubelet ([`play_kubelet`]): it runs each agent pod as a local
//!   `transfer-agent` process with the environment the pod would get (Secrets resolved from
//!   `secretKeyRef`, the plan from its ConfigMap, a token of the agent's own ServiceAccount,
//!   so its RBAC is real) and writes the pod's status back.
//! - otherwise the API stand-in `tests/support/kapi.py` (kmock 0.8 with an object store that
//!   behaves like the API server where Ferry depends on it; CI installs kmock next to moto).
//!   There is no Job controller there, so the harness also plays it (`play_job_controller`).
//!   The stand-in checks no schema, CEL or RBAC (the agents use the stand-in's kubeconfig, and
//!   every request is allowed): those are exercised on a real server only.
//!
//! With neither (no kubeconfig, no Python with kmock) [`backend`] prints a notice and the
//! tests pass without running.
//!
//! On a real API server the tests of a process take turns (`REAL_SERVER_TURN`: the
//! controller watches all namespaces) and sweep up what earlier tests left; any other Ferry
//! controller running against the same server acts on the tests' jobs too and makes them fail
//! (a second Job, Events from another instance). Knobs: `FERRY_E2E_KEEP=1` keeps each test's
//! logs (controllers, agents) and prints where; `FERRY_E2E_CONTROLLER_LOG` is the
//! controllers' `FERRY_LOG` (default `info`); `FERRY_KAPI_WATCH_DELAY` the most seconds the
//! stand-in's watch events lag their writes (default 0.2).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::ferry::built_binaries;
use crate::{ferry_bin, workspace_root};

/// Where the tests talk to Kubernetes.
pub enum Backend {
    Real(PathBuf),
    StandIn(StandIn),
}

impl Backend {
    pub fn kubeconfig(&self) -> &Path {
        match self {
            Backend::Real(p) => p,
            Backend::StandIn(s) => &s.kubeconfig,
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, Backend::Real(_))
    }
}

/// The API stand-in process (tests/support/kapi.py) and a kubeconfig for it.
pub struct StandIn {
    process: std::process::Child,
    kubeconfig: PathBuf,
    /// Its stderr: requests are not logged, failures of the stand-in itself are.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl StandIn {
    /// An API-server outage of `d`: the stand-in SIGSTOPped (the kernel still accepts
    /// connections, nothing is answered), then SIGCONTed; requests made meanwhile are answered
    /// late, or time out on the client's side.
    pub async fn pause_api(&self, d: Duration) {
        signal(self.process.id(), "-STOP");
        tokio::time::sleep(d).await;
        signal(self.process.id(), "-CONT");
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A Python that can import kmock: FERRY_KMOCK_PYTHON, the one next to moto_server
/// (FERRY_MOTO_SERVER, as tests/run.sh installs both into .venv), or .venv/bin/python.
fn kmock_python() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("FERRY_KMOCK_PYTHON") {
        candidates.push(p.into());
    }
    if let Some(moto) = std::env::var_os("FERRY_MOTO_SERVER") {
        if let Some(dir) = Path::new(&moto).parent() {
            candidates.push(dir.join("python"));
        }
    }
    candidates.push(workspace_root().join(".venv/bin/python"));
    candidates.into_iter().find(|p| {
        std::process::Command::new(p)
            .args(["-c", "import kmock"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn start_stand_in(python: &Path) -> StandIn {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let kubeconfig = dir.path().join("kubeconfig");
    let log = dir.path().join("kapi.log");
    let mut process = std::process::Command::new(python)
        .arg(workspace_root().join("tests/support/kapi.py"))
        .arg("--port-file")
        .arg(&port_file)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        // Watch events lag their writes by up to this many seconds, differently per watch,
        // as the API server's watch caches can: races between a controller's writes and its
        // caches show on the stand-in too.
        .args([
            "--watch-delay",
            &std::env::var("FERRY_KAPI_WATCH_DELAY").unwrap_or("0.2".into()),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the API stand-in starts");
    // kapi.py writes the kubeconfig, then the port file, once it listens.
    let start = Instant::now();
    while !port_file.exists() {
        let exited = process.try_wait().unwrap();
        assert!(
            exited.is_none() && start.elapsed() < Duration::from_secs(30),
            "the API stand-in did not start ({exited:?}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    StandIn {
        process,
        kubeconfig,
        log,
        _dir: dir,
    }
}

/// The backend for a test, or None (with a notice) when there is none.
pub fn backend() -> Option<Backend> {
    if let Some(p) = std::env::var_os("FERRY_E2E_KUBECONFIG") {
        return Some(Backend::Real(PathBuf::from(p)));
    }
    match kmock_python() {
        Some(py) => Some(Backend::StandIn(start_stand_in(&py))),
        None => {
            eprintln!("NOTICE: neither FERRY_E2E_KUBECONFIG nor a Python with kmock (FERRY_KMOCK_PYTHON; tests/run.sh installs it): the operator tests are skipped");
            None
        }
    }
}

/// A test that needs what only a real API server checks (schema, CEL, RBAC).
pub fn real_server_only(b: &Backend, what: &str) -> bool {
    if !b.is_real() {
        eprintln!("NOTICE: {what} needs a real API server (FERRY_E2E_KUBECONFIG); the stand-in does not check it");
    }
    b.is_real()
}

pub async fn client(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("a readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// The `transfer-agent` binary, built once per test process with `ferry` (other test runs
/// and other engineers may rebuild it meanwhile; one build keeps every agent of a run the same).
pub fn agent_bin() -> &'static Path {
    &built_binaries().agent
}

/// The agent processes the harness runs, by pod name, so a test can kill one, and what the
/// harness saw of the agents' Jobs.
#[derive(Default)]
pub struct Agents {
    running: Mutex<HashMap<String, tokio::process::Child>>,
    /// Agents sent SIGTERM and not yet reaped.
    stopping: Mutex<Vec<tokio::process::Child>>,
    /// Every Job created in the namespace, uid -> "name (created at)", from a watch (see
    /// [`record_jobs`]).
    jobs_created: Mutex<BTreeMap<String, String>>,
    /// Agent processes started so far.
    starts: std::sync::atomic::AtomicUsize,
    /// Variables added to every agent's environment from now on ([`Self::set_env`]).
    extra_env: Mutex<Vec<(String, String)>>,
    /// Every agent exit the harness saw: (pod name, exit code, when it was seen).
    exits: Mutex<Vec<(String, i32, Instant)>>,
}

impl Agents {
    fn add(&self, pod: String, child: tokio::process::Child) {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.running.lock().unwrap().insert(pod, child);
    }

    fn is_running(&self, pod: &str) -> bool {
        self.running.lock().unwrap().contains_key(pod)
    }

    /// How many agent processes were started so far.
    pub fn starts(&self) -> usize {
        self.starts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// All agents' Jobs (`<job>-agents`) ever created in the namespace while the harness ran:
    /// uid -> "name (created at)". Planners' Jobs are left out (see [`Self::planners_created`]).
    pub fn jobs_created(&self) -> BTreeMap<String, String> {
        let all = self.jobs_created.lock().unwrap().clone();
        all.into_iter()
            .filter(|(_, v)| v.contains("-agents ("))
            .collect()
    }

    /// All planners' Jobs (`<job>-planner`) ever created in the namespace while the harness ran.
    pub fn planners_created(&self) -> BTreeMap<String, String> {
        let all = self.jobs_created.lock().unwrap().clone();
        all.into_iter()
            .filter(|(_, v)| v.contains("-planner ("))
            .collect()
    }

    /// How many agent processes are alive: running, or stopped and not yet exited.
    pub fn alive(&self) -> usize {
        let running = self
            .running
            .lock()
            .unwrap()
            .values_mut()
            .map(|c| c.try_wait())
            .filter(|s| matches!(s, Ok(None)))
            .count();
        let mut stopping = self.stopping.lock().unwrap();
        stopping.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        running + stopping.len()
    }

    /// SIGKILLs one running agent; returns its pod name.
    pub fn kill_one(&self) -> Option<String> {
        self.kill_where(|_| true)
    }

    /// SIGKILLs the first running agent (by pod name) that `pick` selects; returns its name.
    pub fn kill_where(&self, pick: impl Fn(&str) -> bool) -> Option<String> {
        let mut r = self.running.lock().unwrap();
        let mut names: Vec<&String> = r.keys().filter(|k| pick(k)).collect();
        names.sort();
        let names: Vec<String> = names.into_iter().cloned().collect();
        for name in names {
            let child = r.get_mut(&name)?;
            if matches!(child.try_wait(), Ok(None)) {
                signal(child.id()?, "-KILL");
                return Some(name);
            }
        }
        None
    }

    /// The pod names of the agents running now.
    pub fn running_names(&self) -> Vec<String> {
        let mut r = self.running.lock().unwrap();
        let mut out: Vec<String> = r
            .iter_mut()
            .filter_map(|(k, c)| matches!(c.try_wait(), Ok(None)).then(|| k.clone()))
            .collect();
        out.sort();
        out
    }

    /// Adds `key=value` to the environment of every agent started from now on, as a mutating
    /// admission webhook would add it to the pods (e.g. `FERRY_CHECKPOINT_SECONDS`, an agent
    /// input of docs/agent-protocol.md).
    pub fn set_env(&self, key: &str, value: &str) {
        self.extra_env
            .lock()
            .unwrap()
            .push((key.to_string(), value.to_string()));
    }

    fn env(&self) -> Vec<(String, String)> {
        self.extra_env.lock().unwrap().clone()
    }

    /// Every agent exit the harness has seen so far: (pod name, exit code, when).
    pub fn exits(&self) -> Vec<(String, i32, Instant)> {
        self.exits.lock().unwrap().clone()
    }

    /// Stops the agents whose names `gone` selects, as a kubelet does (SIGTERM).
    pub fn stop(&self, gone: impl Fn(&str) -> bool) {
        let mut r = self.running.lock().unwrap();
        let names: Vec<String> = r.keys().filter(|k| gone(k)).cloned().collect();
        for k in names {
            if let Some(mut child) = r.remove(&k) {
                // One that exited before the harness saw it (its Job deleted at once) is an exit.
                if let Ok(Some(status)) = child.try_wait() {
                    let code = status.code().unwrap_or(137);
                    self.exits
                        .lock()
                        .unwrap()
                        .push((k.clone(), code, Instant::now()));
                    continue;
                }
                if let Some(pid) = child.id() {
                    signal(pid, "-TERM");
                }
                self.stopping.lock().unwrap().push(child);
            }
        }
    }

    /// Agents that exited since the last call: (pod name, exit code).
    fn exited(&self) -> Vec<(String, i32)> {
        let mut r = self.running.lock().unwrap();
        let mut out = Vec::new();
        for (k, c) in r.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                out.push((k.clone(), status.code().unwrap_or(137)));
            }
        }
        for (k, _) in &out {
            r.remove(k);
        }
        let now = Instant::now();
        self.exits
            .lock()
            .unwrap()
            .extend(out.iter().map(|(k, c)| (k.clone(), *c, now)));
        out
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

/// Records the uid of every Job of `ns` from a watch (so a Job created and deleted between
/// two polls is seen too); signals `ready` once the watch runs.
async fn record_jobs(
    client: Client,
    ns: String,
    agents: Arc<Agents>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    let mut ready = Some(ready);
    let mut events = watcher(jobs, watcher::Config::default()).boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(
                watcher::Event::Apply(j) | watcher::Event::InitApply(j) | watcher::Event::Delete(j),
            ) => {
                if let Some(uid) = j.uid() {
                    let created = j
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string());
                    let what =
                        format!("{} (created {})", j.name_any(), created.unwrap_or_default());
                    agents.jobs_created.lock().unwrap().insert(uid, what);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(watcher::Event::Init) => {}
            Err(e) => {
                eprintln!("harness: the Job watch failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// An Event of a MigrationJob, as the tests read it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub type_: String,
    pub reason: String,
    pub note: String,
    /// The controller replica that published it (`reportingInstance`).
    pub instance: String,
}

/// A namespace of its own, the CRD installed, the controller(s) running, and the harness.
pub struct Cluster {
    pub backend: Backend,
    pub client: Client,
    pub ns: String,
    /// (identity, process, log file) of each controller replica.
    controllers: Vec<(String, tokio::process::Child, PathBuf)>,
    /// The kubeconfig the controller replicas run with.
    controller_kubeconfig: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub agents: Arc<Agents>,
    tmp: tempfile::TempDir,
    /// On a real API server, the one cluster of this test process that runs (see
    /// [`REAL_SERVER_TURN`]); dropped last, when the test ends, even by a panic.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The label on the namespaces the operator tests make.
const TEST_NAMESPACE_LABEL: &str = "ferry.dev/e2e";

/// `ferry controller` watches MigrationJobs in all namespaces (it has no namespace option), so
/// on a shared real API server the controllers of tests running in parallel would act on each
/// other's jobs (a second controller creating Jobs and Events, the `--max-running` cap
/// counting other tests' jobs). There, the tests take turns; on the stand-in each test has an
/// API server of its own and they run in parallel.
static REAL_SERVER_TURN: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();

/// Removes what earlier operator tests left on a real API server (a test that panicked never
/// reached [`Cluster::finish`]): their MigrationJobs are deleted and lose their finalizer (no
/// controller of theirs runs any more; deleted first, so that no later controller adds the
/// finalizer back), and their namespaces are deleted.
async fn sweep_earlier_tests(client: &Client) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let Ok(list) = nss
        .list(&ListParams::default().labels(TEST_NAMESPACE_LABEL))
        .await
    else {
        return;
    };
    for ns in list.items {
        let name = ns.name_any();
        let mjs: Api<ferry_api::MigrationJob> = Api::namespaced(client.clone(), &name);
        for mj in mjs
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let _ = mjs.delete(&mj.name_any(), &DeleteParams::default()).await;
            let release = json!({"metadata": {"finalizers": null}});
            let _ = mjs
                .patch(
                    &mj.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&release),
                )
                .await;
        }
        if ns.metadata.deletion_timestamp.is_none() {
            let _ = nss.delete(&name, &DeleteParams::default()).await;
        }
    }
}

impl Cluster {
    pub async fn start(backend: Backend, test: &str) -> Cluster {
        Self::start_with(backend, test, &[]).await
    }

    /// Starts with one controller (identity `e2e`) given `controller_args`.
    pub async fn start_with(backend: Backend, test: &str, controller_args: &[&str]) -> Cluster {
        let mut c = Self::start_bare(backend, test).await;
        c.start_controller("e2e", controller_args);
        c
    }

    /// Without a controller.
    pub async fn start_bare(backend: Backend, test: &str) -> Cluster {
        let turn = if backend.is_real() {
            let lock = REAL_SERVER_TURN.get_or_init(Default::default).clone();
            Some(lock.lock_owned().await)
        } else {
            None
        };
        let client = client(backend.kubeconfig()).await;
        if backend.is_real() {
            sweep_earlier_tests(&client).await;
        }
        install_crd(&client, backend.is_real()).await;
        let ns = format!("ferry-{test}-{}", rand::random::<u32>() % 100_000);
        let nss: Api<Namespace> = Api::all(client.clone());
        // Every test namespace enforces the restricted Pod Security Standard: on a real API
        // server a planner or agent pod that did not meet it would not be created.
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
                TEST_NAMESPACE_LABEL: test,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}}))
            .unwrap(),
        )
        .await
        .expect("namespace created");
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{ns}-"))
            .tempdir()
            .unwrap();
        if std::env::var_os("FERRY_E2E_KEEP").is_some() {
            // For debugging: the controllers' and agents' logs stay after the test.
            tmp.disable_cleanup(true);
            eprintln!("{ns}: logs in {}", tmp.path().display());
        }
        let agents = Arc::new(Agents::default());
        let (ready, watching) = tokio::sync::oneshot::channel();
        let recorder = tokio::spawn(record_jobs(
            client.clone(),
            ns.clone(),
            agents.clone(),
            ready,
        ));
        tokio::time::timeout(Duration::from_secs(30), watching)
            .await
            .expect("the Job watch starts")
            .unwrap();
        let kubeconfig = backend.kubeconfig().to_path_buf();
        // On a real API server the controller runs with exactly the chart's RBAC (no access
        // to Secrets), as the ServiceAccount the chart makes.
        let controller_kubeconfig = if backend.is_real() {
            chart_rbac_kubeconfig(&client, &ns, &kubeconfig, tmp.path()).await
        } else {
            kubeconfig.clone()
        };
        let harness = if backend.is_real() {
            tokio::spawn(play_kubelet(
                client.clone(),
                ns.clone(),
                kubeconfig,
                tmp.path().to_path_buf(),
                agents.clone(),
            ))
        } else {
            tokio::spawn(play_job_controller(
                client.clone(),
                ns.clone(),
                kubeconfig,
                tmp.path().to_path_buf(),
                agents.clone(),
            ))
        };
        Cluster {
            backend,
            client,
            ns,
            controllers: Vec::new(),
            controller_kubeconfig,
            tasks: vec![recorder, harness],
            agents,
            tmp,
            _turn: turn,
        }
    }

    /// Starts a controller replica with this identity (all replicas share one Lease).
    pub fn start_controller(&mut self, identity: &str, extra: &[&str]) {
        let path = self.tmp.path().join(format!(
            "controller-{identity}-{}.log",
            rand::random::<u16>()
        ));
        let log = std::fs::File::create(&path).unwrap();
        let child = tokio::process::Command::new(ferry_bin())
            .args([
                "controller",
                "--agent-image",
                "ferry/transfer-agent:test",
                "--leader-lease",
                &format!("{}/ferry-controller", self.ns),
                "--identity",
                identity,
            ])
            .args(extra)
            .env("KUBECONFIG", &self.controller_kubeconfig)
            .env(
                "FERRY_LOG",
                std::env::var("FERRY_E2E_CONTROLLER_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("ferry controller starts");
        self.controllers.push((identity.to_string(), child, path));
    }

    /// The peak resident memory (VmHWM, KiB) of the controller replica `identity` so far.
    pub fn controller_peak_rss_kib(&self, identity: &str) -> Option<u64> {
        let (_, child, _) = self.controllers.iter().find(|(i, _, _)| i == identity)?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// A client of the tenant: on a real API server the ServiceAccount `tenant` of the test's
    /// namespace, which may only create and read MigrationJobs, Secrets and ConfigMaps there
    /// (RBAC); on the stand-in (no RBAC) the admin client.
    pub async fn tenant_client(&self) -> Client {
        if !self.backend.is_real() {
            return self.client.clone();
        }
        let ns = &self.ns;
        let apply = |v: Value| async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(v).unwrap();
            let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
            let ar = kube::api::ApiResource::from_gvk(&gvk);
            let plural = match gvk.kind.as_str() {
                "ServiceAccount" => "serviceaccounts",
                "Role" => "roles",
                _ => "rolebindings",
            };
            let ar = kube::api::ApiResource {
                plural: plural.into(),
                ..ar
            };
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.ns, &ar);
            api.patch(
                &obj.name_any(),
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap();
        };
        apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant", "namespace": ns}})).await;
        apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tenant", "namespace": ns},
            "rules": [
                {"apiGroups": ["ferry.dev"], "resources": ["migrationjobs", "bucketsyncs"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}
            ]})).await;
        apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tenant", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]})).await;
        let kc = agent_kubeconfig(
            &self.client,
            ns,
            "tenant",
            self.backend.kubeconfig(),
            self.tmp.path(),
        )
        .await;
        client(&kc).await
    }

    /// The log of the running controller replica with this identity.
    pub fn controller_log(&self, identity: &str) -> String {
        self.controllers
            .iter()
            .find(|(id, _, _)| id == identity)
            .map(|(_, _, p)| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Kills the controller replica with this identity (SIGKILL: it cannot release its Lease).
    /// Sends `signal` (`STOP`, `CONT`) to the controller replica `identity` (a paused process,
    /// as a stalled node or a long GC pause would leave it).
    pub fn signal_controller(&self, identity: &str, signal: &str) {
        let (_, child, _) = self
            .controllers
            .iter()
            .find(|(i, _, _)| i == identity)
            .expect("a replica of that identity");
        let pid = child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Whether the controller replica `identity` has exited, and how.
    pub fn controller_exit(&mut self, identity: &str) -> Option<std::process::ExitStatus> {
        let (_, child, _) = self
            .controllers
            .iter_mut()
            .find(|(i, _, _)| i == identity)?;
        child.try_wait().ok().flatten()
    }

    pub async fn kill_controller(&mut self, identity: &str) {
        if let Some(i) = self
            .controllers
            .iter()
            .position(|(id, _, _)| id == identity)
        {
            let (_, mut c, _) = self.controllers.remove(i);
            let _ = c.kill().await;
        }
    }

    pub async fn stop_controllers(&mut self) {
        for (_, mut c, _) in self.controllers.drain(..) {
            let _ = c.kill().await;
        }
    }

    pub fn api<K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// An API-server outage of `d` ([`StandIn::pause_api`]); false (nothing done) on a real
    /// API server, which a test cannot pause.
    pub async fn pause_api(&self, d: Duration) -> bool {
        match &self.backend {
            Backend::StandIn(s) => {
                s.pause_api(d).await;
                true
            }
            Backend::Real(_) => false,
        }
    }

    /// Server-side apply of a Secret, a ConfigMap, a BucketSync or a MigrationJob, as
    /// `kubectl apply --server-side`.
    pub async fn apply(&self, v: Value) -> Result<(), kube::Error> {
        let kind = v["kind"].as_str().unwrap().to_string();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let pp = PatchParams::apply("e2e").force();
        match kind.as_str() {
            "Secret" => self
                .api::<Secret>()
                .patch(&name, &pp, &Patch::Apply(&v))
                .await
                .map(|_| ()),
            "ConfigMap" => self
                .api::<ConfigMap>()
                .patch(&name, &pp, &Patch::Apply(&v))
                .await
                .map(|_| ()),
            "BucketSync" => self
                .api::<ferry_api::BucketSync>()
                .patch(&name, &pp, &Patch::Apply(&v))
                .await
                .map(|_| ()),
            _ => self
                .api::<ferry_api::MigrationJob>()
                .patch(&name, &pp, &Patch::Apply(&v))
                .await
                .map(|_| ()),
        }
    }

    pub async fn sync(&self, name: &str) -> ferry_api::BucketSync {
        self.api::<ferry_api::BucketSync>().get(name).await.unwrap()
    }

    /// Waits until `pred` holds for the BucketSync, or fails with its last status.
    pub async fn wait_for_sync(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ferry_api::BucketSync) -> bool,
    ) -> ferry_api::BucketSync {
        self.wait_until(name, what, timeout, pred).await
    }

    /// Waits until `pred` holds for the object `name` of kind `K`, or fails with its last
    /// status and the logs.
    async fn wait_until<K>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&K) -> bool,
    ) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let start = Instant::now();
        loop {
            let obj = self.api::<K>().get(name).await.unwrap();
            if pred(&obj) {
                return obj;
            }
            if start.elapsed() > timeout {
                let status = serde_json::to_value(&obj).unwrap()["status"].clone();
                panic!(
                    "timed out waiting for {what}; status: {}\nlogs:\n{}",
                    serde_json::to_string_pretty(&status).unwrap(),
                    tail(&self.logs(), 8000)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn job(&self, name: &str) -> ferry_api::MigrationJob {
        self.api::<ferry_api::MigrationJob>()
            .get(name)
            .await
            .unwrap()
    }

    /// The directory standing in for the PersistentVolumeClaim `claim` in every pod (created):
    /// a test puts the files the claim should hold there.
    pub fn claim_dir(&self, claim: &str) -> PathBuf {
        let d = claim_dir(self.tmp.path(), claim);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The whole text of every log of the controllers and the agents (planners included), by
    /// file name.
    pub fn full_logs(&self) -> Vec<(String, String)> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    text,
                )
            })
            .collect()
    }

    /// The tails of the controllers', the agents' and the stand-in's logs.
    /// A job's planner and agents' Jobs as the API held them, each with its serialized form,
    /// once both were seen (each is kept from when it was first seen: the agents' Job is
    /// removed when the job completes, so a test slows the copy down to see it).
    pub async fn planner_and_agents_jobs(&self, name: &str) -> Vec<(String, Job)> {
        let jobs = self.api::<Job>();
        let start = Instant::now();
        let (mut planner, mut agents) = (None, None);
        loop {
            planner = planner.or(jobs.get_opt(&format!("{name}-planner")).await.unwrap());
            agents = agents.or(jobs.get_opt(&format!("{name}-agents")).await.unwrap());
            if let (Some(p), Some(a)) = (&planner, &agents) {
                return [p.clone(), a.clone()]
                    .into_iter()
                    .map(|j| (serde_json::to_string(&j).unwrap(), j))
                    .collect();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no planner and agents' Jobs\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        if let Backend::StandIn(s) = &self.backend {
            files.push(s.log.clone());
        }
        files
            .iter()
            .map(|p| {
                format!(
                    "== {}\n{}",
                    p.file_name().unwrap_or_default().to_string_lossy(),
                    tail(&std::fs::read_to_string(p).unwrap_or_default(), 1500)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `pred` holds for the MigrationJob, or fails with its last status.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ferry_api::MigrationJob) -> bool,
    ) -> ferry_api::MigrationJob {
        self.wait_until(name, what, timeout, pred).await
    }

    /// Waits until the MigrationJob ends, and fails with its status and the logs unless it
    /// Completed.
    pub async fn wait_completed(&self, name: &str, timeout: Duration) -> ferry_api::MigrationJob {
        let mj = self
            .wait_for(name, "a terminal phase", timeout, |mj| {
                mj.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal())
            })
            .await;
        let phase = mj.status.as_ref().and_then(|s| s.phase);
        assert_eq!(
            phase,
            Some(ferry_api::Phase::Completed),
            "{:#?}\n{}",
            mj.status,
            self.logs()
        );
        mj
    }

    /// The Events (events.k8s.io/v1) about the MigrationJob `name`.
    pub async fn events_of(&self, name: &str) -> Vec<Ev> {
        let evs: Api<k8s_openapi::api::events::v1::Event> = self.api();
        evs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| Ev {
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                note: e.note.unwrap_or_default(),
                instance: e.reporting_instance.unwrap_or_default(),
            })
            .collect()
    }

    /// Stops everything this cluster started and deletes its namespace.
    pub async fn finish(mut self) {
        // The BucketSyncs (no new runs) and MigrationJobs go first, while a controller still
        // runs to remove their finalizers (else the namespace would stay Terminating).
        let _ = self
            .api::<ferry_api::BucketSync>()
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let mjs = self.api::<ferry_api::MigrationJob>();
        let _ = mjs
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let start = Instant::now();
        while !self.controllers.is_empty() && start.elapsed() < Duration::from_secs(30) {
            match mjs.list(&ListParams::default()).await {
                Ok(l) if !l.items.is_empty() => {
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                _ => break,
            }
        }
        self.stop_controllers().await;
        for t in &self.tasks {
            t.abort();
        }
        self.agents.stop(|_| true);
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::default()).await;
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

async fn install_crd(client: &Client, wait_established: bool) {
    for name in ["migrationjobs.ferry.dev", "bucketsyncs.ferry.dev"] {
        let text =
            std::fs::read_to_string(workspace_root().join(format!("crds/{name}.yaml"))).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        api.patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the CRD is accepted");
        if !wait_established {
            continue; // the stand-in serves ferry.dev from the start
        }
        let mut established = false;
        for _ in 0..60 {
            let c = api.get(name).await.unwrap();
            if c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                established = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(established, "the CRD {name} never became Established");
    }
}

/// A kubeconfig for `sa` with a fresh token: the agent acts with exactly its own rights.
async fn agent_kubeconfig(
    client: &Client,
    ns: &str,
    sa: &str,
    admin: &Path,
    out: &Path,
) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let tr: TokenRequest = serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})).unwrap();
    let token = sas
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .expect("a token for the agent")
        .status
        .expect("token status")
        .token;
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    kc["users"] =
        serde_yaml::from_str(&format!("[{{name: agent, user: {{token: {token}}}}}]")).unwrap();
    let ctx_name = kc["current-context"].as_str().unwrap().to_string();
    if let Some(list) = kc["contexts"].as_sequence_mut() {
        for c in list {
            if c["name"].as_str() == Some(&ctx_name) {
                c["context"]["user"] = "agent".into();
            }
        }
    }
    // The pods of one ServiceAccount start together: each file is written whole under a name of
    // its own, then renamed, so no agent reads another's half-written kubeconfig.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = out.join(format!("agent-{sa}.kubeconfig"));
    let partial = out.join(format!(".agent-{sa}-{n}.kubeconfig"));
    std::fs::write(&partial, serde_yaml::to_string(&kc).unwrap()).unwrap();
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// The chart's RBAC (charts/ferry/templates/rbac.yaml, release `ferry-e2e` in `ns`) applied,
/// and a kubeconfig of its controller ServiceAccount.
async fn chart_rbac_kubeconfig(client: &Client, ns: &str, admin: &Path, out: &Path) -> PathBuf {
    let template =
        std::fs::read_to_string(workspace_root().join("charts/ferry/templates/rbac.yaml")).unwrap();
    let rendered: String = template
        .replace("{{ .Release.Name }}", "ferry-e2e")
        .replace("{{ .Release.Namespace }}", ns)
        .lines()
        .filter(|l| !l.contains("{{"))
        .collect::<Vec<_>>()
        .join("\n");
    for doc in rendered.split("\n---") {
        let v: Value = serde_yaml::from_str(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let obj: kube::api::DynamicObject = serde_json::from_value(v).unwrap();
        let types = obj.types.clone().unwrap();
        let gvk = kube::api::GroupVersionKind::try_from(&types).unwrap();
        let (plural, cluster) = match gvk.kind.as_str() {
            "ServiceAccount" => ("serviceaccounts", false),
            "ClusterRole" => ("clusterroles", true),
            "ClusterRoleBinding" => ("clusterrolebindings", true),
            "Role" => ("roles", false),
            _ => ("rolebindings", false),
        };
        let ar = kube::api::ApiResource {
            plural: plural.into(),
            ..kube::api::ApiResource::from_gvk(&gvk)
        };
        let api: Api<kube::api::DynamicObject> = if cluster {
            Api::all_with(client.clone(), &ar)
        } else {
            Api::namespaced_with(client.clone(), ns, &ar)
        };
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying the chart's {}: {e}", gvk.kind));
    }
    agent_kubeconfig(client, ns, "ferry-e2e-controller", admin, out).await
}

/// Plays kubelet for the agents' pods of `ns` on a real API server (whose Job controller
/// makes the pods).
pub async fn play_kubelet(
    client: Client,
    ns: String,
    admin: PathBuf,
    dir: PathBuf,
    agents: Arc<Agents>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let agent = agent_bin();
    loop {
        let list = match pods.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let alive: Vec<String> = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        // Pods deleted (suspend, Job deletion): stop their agents like a kubelet would.
        agents.stop(|k| !alive.iter().any(|a| a == k));
        for pod in list {
            let name = pod.name_any();
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some()
                || phase == "Succeeded"
                || phase == "Failed"
                || agents.is_running(&name)
            {
                continue;
            }
            let Some(index) = pod
                .annotations()
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
            else {
                continue;
            };
            let spec = pod.spec.clone().unwrap_or_default();
            let Some(sa) = spec.service_account_name.clone() else {
                eprintln!("kubelet: {name} has no service account");
                continue;
            };
            let kc = agent_kubeconfig(&client, &ns, &sa, &admin, &dir).await;
            let env = agents.env();
            match start_agent(&client, &ns, &name, &spec, &index, agent, &kc, &dir, env).await {
                Ok(child) => {
                    agents.add(name.clone(), child);
                    let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "startTime": chrono::Utc::now().to_rfc3339()}}))).await;
                }
                Err(e) => eprintln!("kubelet: cannot start {name}: {e}"),
            }
        }
        for (name, code) in agents.exited() {
            let phase = if code == 0 { "Succeeded" } else { "Failed" };
            let now = chrono::Utc::now().to_rfc3339();
            let st = json!({"status": {"phase": phase, "containerStatuses": [{
                "name": "agent", "image": "ferry/transfer-agent:test", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": now, "finishedAt": now}}
            }]}});
            if let Err(e) = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(st))
                .await
            {
                eprintln!("kubelet: cannot report {name}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What the Job controller keeps of one Indexed Job on the stand-in.
#[derive(Default)]
struct IndexedJob {
    succeeded: BTreeSet<i32>,
    failed: BTreeSet<i32>,
    /// Failed attempts per index.
    attempts: BTreeMap<i32, i32>,
    pods_failed: i32,
    /// The pod name of each index's running agent.
    running: BTreeMap<i32, String>,
}

/// Plays the Job controller and kubelet on the API stand-in, for the Indexed Jobs of `ns`:
/// one agent per index not yet done, an index retried up to `backoffLimitPerIndex` times and
/// failed at once on an exit code the `FailIndex` rule names, agents stopped (SIGTERM) while
/// the Job is suspended or once it is deleted, and the Job status the operator reads
/// (`active`, `succeeded`, `failed`, `completedIndexes`, `failedIndexes`, the `Suspended`,
/// `Complete` and `Failed` conditions) written through the status subresource.
///
/// Like the Job controller only roughly, and only where Ferry looks: no Pod objects (an agent
/// is a process named like a pod), the Job fails only once every index has succeeded or
/// failed (no `maxFailedIndexes`, no `FailureTarget`/`SuccessCriteriaMet` conditions),
/// index lists are plain (`0,1,2` where Kubernetes writes `0-2`), the rule's `containerName`
/// is not checked, and it polls (300 ms) instead of watching.
async fn play_job_controller(
    client: Client,
    ns: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    agents: Arc<Agents>,
) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    // The Jobs Ferry makes, selected as the operator's own watch selects them.
    let ferrys = ListParams::default().labels("ferry.dev/migrationjob");
    let agent = agent_bin();
    let mut state: HashMap<String, IndexedJob> = HashMap::new();
    let mut pod_serial = 0u32;
    loop {
        let Ok(list) = jobs.list(&ferrys).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let live: Vec<String> = list.items.iter().filter_map(|j| j.uid()).collect();
        // Deleted Jobs: their pods go, and so do their agents.
        for (_, st) in state.iter_mut().filter(|(u, _)| !live.contains(u)) {
            let names: Vec<String> = std::mem::take(&mut st.running).into_values().collect();
            agents.stop(|k| names.iter().any(|n| n == k));
        }
        state.retain(|u, _| live.contains(u));
        let exited: HashMap<String, i32> = agents.exited().into_iter().collect();
        for job in list.items {
            let uid = job.uid().unwrap_or_default();
            let name = job.name_any();
            let spec = job.spec.clone().unwrap_or_default();
            let status = job.status.clone().unwrap_or_default();
            let finished = status
                .conditions
                .iter()
                .flatten()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
            let st = state.entry(uid).or_default();
            // Agents that exited: a success, or a failure to count against the index.
            let done: Vec<(i32, i32)> = st
                .running
                .iter()
                .filter_map(|(i, pod)| exited.get(pod).map(|code| (*i, *code)))
                .collect();
            for (i, code) in done {
                st.running.remove(&i);
                if code == 0 {
                    st.succeeded.insert(i);
                    continue;
                }
                st.pods_failed += 1;
                let fail_index = spec
                    .pod_failure_policy
                    .iter()
                    .flat_map(|p| p.rules.iter())
                    .any(|r| {
                        r.action == "FailIndex"
                            && r.on_exit_codes
                                .as_ref()
                                .is_some_and(|e| (e.operator == "In") == e.values.contains(&code))
                    });
                let attempts = st.attempts.entry(i).or_default();
                *attempts += 1;
                if fail_index || *attempts > spec.backoff_limit_per_index.unwrap_or(0) {
                    st.failed.insert(i);
                }
            }
            let suspended = spec.suspend.unwrap_or(false);
            if suspended {
                let names: Vec<String> = std::mem::take(&mut st.running).into_values().collect();
                agents.stop(|k| names.iter().any(|n| n == k));
            }
            let completions = spec.completions.unwrap_or(1);
            if !suspended && !finished {
                let template = spec.template.spec.clone().unwrap_or_default();
                for i in 0..completions {
                    if st.succeeded.contains(&i)
                        || st.failed.contains(&i)
                        || st.running.contains_key(&i)
                    {
                        continue;
                    }
                    pod_serial += 1;
                    let pod = format!("{name}-{i}-{pod_serial}");
                    match start_agent(
                        &client,
                        &ns,
                        &pod,
                        &template,
                        &i.to_string(),
                        agent,
                        &kubeconfig,
                        &dir,
                        agents.env(),
                    )
                    .await
                    {
                        Ok(child) => {
                            agents.add(pod.clone(), child);
                            st.running.insert(i, pod);
                        }
                        Err(e) => eprintln!("job controller: cannot start {pod}: {e}"),
                    }
                }
            }
            let all_done = st.succeeded.len() + st.failed.len() == completions as usize;
            let now = chrono::Utc::now().to_rfc3339();
            let mut conditions = Vec::new();
            if suspended {
                conditions.push(json!({"type": "Suspended", "status": "True", "reason": "JobSuspended", "lastTransitionTime": now}));
            }
            if all_done && !st.failed.is_empty() {
                conditions.push(json!({"type": "Failed", "status": "True", "reason": "FailedIndexes", "message": "Job has failed indexes", "lastTransitionTime": now}));
            } else if all_done {
                conditions.push(json!({"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now}));
            }
            let list = |s: &BTreeSet<i32>| {
                s.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let want = json!({"status": {
                "active": st.running.len(),
                "succeeded": st.succeeded.len(),
                "failed": st.pods_failed,
                "completedIndexes": list(&st.succeeded),
                "failedIndexes": list(&st.failed),
                "conditions": conditions,
            }});
            let have = serde_json::to_value(&status).unwrap_or_default();
            let same = [
                "active",
                "succeeded",
                "failed",
                "completedIndexes",
                "failedIndexes",
            ]
            .iter()
            .all(|k| {
                have.get(k).cloned().unwrap_or(Value::Null)
                    == match &want["status"][k] {
                        Value::Number(n) if n.as_i64() == Some(0) => Value::Null,
                        Value::String(s) if s.is_empty() => Value::Null,
                        v => v.clone(),
                    }
            }) && have["conditions"].as_array().map(|c| c.len()).unwrap_or(0)
                == conditions.len();
            if !same && !finished {
                if let Err(e) = jobs
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(want))
                    .await
                {
                    eprintln!("job controller: cannot write the status of {name}: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The directory standing in for a PersistentVolumeClaim, under the harness's directory.
fn claim_dir(dir: &Path, claim: &str) -> PathBuf {
    dir.join("claims").join(claim)
}

/// Runs one agent pod as a local process: the container's environment (literal values,
/// `secretKeyRef` read from the API, `fieldRef` as the namespace, `envFrom` Secrets with their
/// prefix), the completion index, and its volumes: a ConfigMap's keys (or its `items`) written
/// to a directory that stands in for the mount (an `optional` one that is missing: empty), an
/// `emptyDir` as an empty directory, a PersistentVolumeClaim as the directory of the claim
/// ([`Cluster::claim_dir`]). A process cannot see them at their mount paths, so every
/// variable whose value is a path under a mount (`FERRY_PLAN`, `FERRY_URL_LIST_DIR`, `TMPDIR`,
/// a `sqlite://` URL) is pointed at the stand-in directory instead. Other kinds of volume are
/// not mounted.
#[allow(clippy::too_many_arguments)]
async fn start_agent(
    client: &Client,
    ns: &str,
    pod: &str,
    spec: &PodSpec,
    index: &str,
    agent: &Path,
    kubeconfig: &Path,
    dir: &Path,
    extra_env: Vec<(String, String)>,
) -> Result<tokio::process::Child, String> {
    let container = &spec.containers[0];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in container.env.clone().unwrap_or_default() {
        let value = if let Some(v) = e.value {
            Some(v)
        } else if let Some(src) = e.value_from {
            if let Some(sk) = src.secret_key_ref {
                let s = secrets.get_opt(&sk.name).await.map_err(|e| e.to_string())?;
                match s.and_then(|s| s.data).and_then(|d| {
                    d.get(&sk.key)
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                }) {
                    Some(v) => Some(v),
                    None if sk.optional == Some(true) => None,
                    None => return Err(format!("secret {}/{} is missing", sk.name, sk.key)),
                }
            } else if let Some(f) = src.field_ref {
                // The downward API: the namespace and the pod name. Other paths stay unset;
                // the one the Job controller adds (JOB_COMPLETION_INDEX, from a label) is set
                // below from the index.
                match f.field_path.as_str() {
                    "metadata.namespace" => Some(ns.to_string()),
                    "metadata.name" => Some(pod.to_string()),
                    _ => None,
                }
            } else {
                None
            }
        } else {
            None
        };
        if let Some(v) = value {
            env.insert(e.name, v);
        }
    }
    for from in container.env_from.clone().unwrap_or_default() {
        let Some(sr) = from.secret_ref else { continue };
        let prefix = from.prefix.unwrap_or_default();
        match secrets.get_opt(&sr.name).await.map_err(|e| e.to_string())? {
            Some(s) => {
                for (k, v) in s.data.unwrap_or_default() {
                    env.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    );
                }
            }
            None if sr.optional == Some(true) => {}
            None => return Err(format!("secret {} is missing (envFrom)", sr.name)),
        }
    }
    env.insert("JOB_COMPLETION_INDEX".into(), index.to_string());
    // (mount path, the directory standing in for it)
    let mut mounted: Vec<(String, PathBuf)> = Vec::new();
    for v in spec.volumes.clone().unwrap_or_default() {
        let Some(mount) = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == v.name)
        else {
            continue;
        };
        let local = dir.join(format!("{pod}-{}", v.name));
        if let Some(cmv) = &v.config_map {
            std::fs::create_dir_all(&local).unwrap();
            let data = match cms.get_opt(&cmv.name).await.map_err(|e| e.to_string())? {
                Some(cm) => cm.data.unwrap_or_default(),
                None if cmv.optional == Some(true) => BTreeMap::new(),
                None => return Err(format!("configmap {} is missing", cmv.name)),
            };
            let files: Vec<(String, String)> = match &cmv.items {
                Some(items) => items
                    .iter()
                    .filter_map(|i| Some((i.path.clone(), data.get(&i.key)?.clone())))
                    .collect(),
                None => data.into_iter().collect(),
            };
            for (path, val) in files {
                std::fs::write(local.join(path), val).unwrap();
            }
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&local).unwrap();
        } else if let Some(pvc) = &v.persistent_volume_claim {
            // One directory per claim, shared by every pod (as a ReadWriteMany volume), the
            // mount's subPath inside it; a read-only mount is not enforced.
            let mut at = claim_dir(dir, &pvc.claim_name);
            if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                at = at.join(sub);
            }
            std::fs::create_dir_all(&at).unwrap();
            mounted.push((mount.mount_path.trim_end_matches('/').to_string(), at));
            continue;
        } else {
            continue;
        }
        mounted.push((mount.mount_path.trim_end_matches('/').to_string(), local));
    }
    // Each value once, by the deepest mount it is under (the stand-ins may themselves lie
    // under another mount path, such as /tmp).
    mounted.sort_by_key(|(at, _)| std::cmp::Reverse(at.len()));
    for value in env.values_mut() {
        // A SQLite URL names a file under a mount too (`sqlite:///data/app.db`).
        let (scheme, path) = match value.strip_prefix("sqlite://") {
            Some(path) => ("sqlite://", path),
            None => ("", value.as_str()),
        };
        let under = mounted.iter().find_map(|(at, local)| {
            let rest = path.strip_prefix(at.as_str())?;
            (rest.is_empty() || rest.starts_with('/'))
                .then(|| format!("{scheme}{}{rest}", local.display()))
        });
        if let Some(v) = under {
            *value = v;
        }
    }
    let log = std::fs::File::create(dir.join(format!("{pod}.log"))).unwrap();
    // The container's command after the binary, and its args (the planner runs `plan`).
    let args: Vec<String> = container
        .command
        .clone()
        .unwrap_or_default()
        .into_iter()
        .skip(1)
        .chain(container.args.clone().unwrap_or_default())
        .collect();
    tokio::process::Command::new(agent)
        .args(&args)
        .env_clear()
        .envs(&env)
        .env("KUBECONFIG", kubeconfig)
        .env("FERRY_LOG", "info")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(extra_env)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())
}
