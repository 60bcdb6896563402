//! The operator end to end: the real `ferry controller` binary against a Kubernetes API, with a
//! harness that plays the parts of a cluster the tests have no nodes for. Data moves between
//! two buckets of the real S3 server.
//!
//! Two backends:
//! - a real API server (FERRY_E2E_KUBECONFIG, with kube-controller-manager for the Job
//!   controller and garbage collection): the CRD with its CEL rules, RBAC, everything. The
//!   harness plays kubelet: it runs each agent pod as a local `transfer-agent` process with the
//!   environment the pod would get (Secrets resolved from `secretKeyRef`, the plan from its
//!   ConfigMap, a token of the agent's own ServiceAccount, so its RBAC is real) and writes the
//!   pod's status back.
//! - otherwise the API stand-in `tests/support/kapi.py` (kmock 0.8 with a faithful object
//!   store; CI installs kmock next to moto). There is no Job controller there, so the harness
//!   also plays it: it runs one agent per index of each Indexed Job, retries failed indexes up
//!   to `backoffLimitPerIndex`, honours the `FailIndex` rule and `suspend`, and writes the Job's
//!   status. The stand-in checks no schema, CEL or RBAC: those tests run on a real server only.
//!
//! With neither (no kubeconfig, no Python with kmock) the tests print a notice and pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_tests::{ferry_bin, shared_server, workspace_root, S3};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

/// Where the tests talk to Kubernetes.
enum Backend {
    Real(PathBuf),
    StandIn(StandIn),
}

impl Backend {
    fn kubeconfig(&self) -> &Path {
        match self {
            Backend::Real(p) => p,
            Backend::StandIn(s) => &s.kubeconfig,
        }
    }

    fn is_real(&self) -> bool {
        matches!(self, Backend::Real(_))
    }
}

/// The API stand-in process (tests/support/kapi.py) and a kubeconfig for it.
struct StandIn {
    _process: std::process::Child,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self._process.kill();
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
    let log = std::fs::File::create(dir.path().join("kapi.log")).unwrap();
    let process = std::process::Command::new(python)
        .arg(workspace_root().join("tests/support/kapi.py"))
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the API stand-in starts");
    let start = Instant::now();
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the API stand-in did not start: {}",
            std::fs::read_to_string(dir.path().join("kapi.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kapi\n\
             clusters: [{{name: kapi, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: kapi, user: {{token: stand-in}}}}]\n\
             contexts: [{{name: kapi, context: {{cluster: kapi, user: kapi}}}}]\n"
        ),
    )
    .unwrap();
    StandIn {
        _process: process,
        kubeconfig,
        _dir: dir,
    }
}

/// The backend for a test, or None (with a notice) when there is none.
fn backend() -> Option<Backend> {
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
fn real_server_only(b: &Backend, what: &str) -> bool {
    if !b.is_real() {
        eprintln!("NOTICE: {what} needs a real API server (FERRY_E2E_KUBECONFIG); the stand-in does not check it");
    }
    b.is_real()
}

async fn client(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("a readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

fn agent_bin() -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args(["build", "-p", "transfer-agent", "--bins"])
        .current_dir(&root)
        .status()
        .expect("cargo runs")
        .success();
    assert!(ok, "building transfer-agent failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug/transfer-agent")
}

/// The agent processes the harness runs, by pod name, so a test can kill one.
#[derive(Default)]
struct Agents {
    running: Mutex<HashMap<String, tokio::process::Child>>,
    /// Every Job uid the harness has seen (a restarted operator must not make a second Job).
    jobs_seen: Mutex<BTreeSet<String>>,
    /// Agent processes started so far.
    starts: std::sync::atomic::AtomicUsize,
}

impl Agents {
    fn add(&self, pod: String, child: tokio::process::Child) {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.running.lock().unwrap().insert(pod, child);
    }

    /// SIGKILLs one running agent; returns its pod name.
    fn kill_one(&self) -> Option<String> {
        let mut r = self.running.lock().unwrap();
        for (name, child) in r.iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                signal(child.id()?, "-KILL");
                return Some(name.clone());
            }
        }
        None
    }

    /// Stops the agents whose names `gone` selects, as a kubelet does (SIGTERM).
    fn stop(&self, gone: impl Fn(&str) -> bool) {
        let mut r = self.running.lock().unwrap();
        let names: Vec<String> = r.keys().filter(|k| gone(k)).cloned().collect();
        for k in names {
            if let Some(child) = r.remove(&k) {
                if let Some(pid) = child.id() {
                    signal(pid, "-TERM");
                }
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
        out
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

/// A namespace of its own, the CRD installed, the controller(s) running, and the harness.
struct Cluster {
    backend: Backend,
    client: Client,
    ns: String,
    controllers: Vec<(String, tokio::process::Child)>,
    harness: tokio::task::JoinHandle<()>,
    agents: Arc<Agents>,
    tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start(backend: Backend, test: &str) -> Cluster {
        Self::start_with(backend, test, &[]).await
    }

    /// Starts with one controller given `controller_args`.
    async fn start_with(backend: Backend, test: &str, controller_args: &[&str]) -> Cluster {
        let mut c = Self::start_bare(backend, test).await;
        c.start_controller("e2e", controller_args);
        c
    }

    /// Without a controller.
    async fn start_bare(backend: Backend, test: &str) -> Cluster {
        let client = client(backend.kubeconfig()).await;
        install_crd(&client, backend.is_real()).await;
        let ns = format!("ferry-{test}-{}", rand::random::<u32>() % 100_000);
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("namespace created");
        let tmp = tempfile::tempdir().unwrap();
        let agents = Arc::new(Agents::default());
        let kubeconfig = backend.kubeconfig().to_path_buf();
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
            harness,
            agents,
            tmp,
        }
    }

    /// Starts a controller replica with this identity (all replicas share one Lease).
    fn start_controller(&mut self, identity: &str, extra: &[&str]) {
        let log = std::fs::File::create(self.tmp.path().join(format!(
            "controller-{identity}-{}.log",
            rand::random::<u16>()
        )))
        .unwrap();
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
            .env("KUBECONFIG", self.backend.kubeconfig())
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("ferry controller starts");
        self.controllers.push((identity.to_string(), child));
    }

    /// Kills the controller replica with this identity (SIGKILL: it cannot release its Lease).
    async fn kill_controller(&mut self, identity: &str) {
        if let Some(i) = self.controllers.iter().position(|(id, _)| id == identity) {
            let (_, mut c) = self.controllers.remove(i);
            let _ = c.kill().await;
        }
    }

    async fn stop_controllers(&mut self) {
        for (_, mut c) in self.controllers.drain(..) {
            let _ = c.kill().await;
        }
    }

    fn api<K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn apply(&self, v: Value) -> Result<(), kube::Error> {
        let kind = v["kind"].as_str().unwrap().to_string();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let pp = PatchParams::apply("e2e").force();
        match kind.as_str() {
            "Secret" => self
                .api::<Secret>()
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

    async fn job(&self, name: &str) -> ferry_api::MigrationJob {
        self.api::<ferry_api::MigrationJob>()
            .get(name)
            .await
            .unwrap()
    }

    fn logs(&self) -> String {
        let logs: String = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| {
                format!(
                    "== {}\n{}",
                    e.file_name().to_string_lossy(),
                    tail(&std::fs::read_to_string(e.path()).unwrap_or_default(), 1500)
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        logs
    }

    /// Waits until `pred` holds for the MigrationJob, or fails with its last status.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ferry_api::MigrationJob) -> bool,
    ) -> ferry_api::MigrationJob {
        let start = Instant::now();
        loop {
            let mj = self.job(name).await;
            if pred(&mj) {
                return mj;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; status: {}\nlogs:\n{}",
                    serde_json::to_string_pretty(&mj.status).unwrap(),
                    tail(&self.logs(), 8000)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn events_of(&self, name: &str) -> Vec<(String, String, String)> {
        let evs: Api<k8s_openapi::api::events::v1::Event> = self.api();
        evs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn finish(mut self) {
        self.stop_controllers().await;
        self.harness.abort();
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
    let text = std::fs::read_to_string(workspace_root().join("crds/migrationjobs.ferry.dev.yaml"))
        .unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "migrationjobs.ferry.dev",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the CRD is accepted");
    if !wait_established {
        return; // the stand-in serves ferry.dev from the start
    }
    for _ in 0..60 {
        let c = api.get("migrationjobs.ferry.dev").await.unwrap();
        if c.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the CRD never became Established");
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
    let path = out.join(format!("agent-{sa}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path
}

/// Plays kubelet for the agents' pods of `ns` on a real API server (whose Job controller
/// makes the pods).
async fn play_kubelet(
    client: Client,
    ns: String,
    admin: PathBuf,
    dir: PathBuf,
    agents: Arc<Agents>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let agent = agent_bin();
    loop {
        if let Ok(l) = jobs.list(&ListParams::default()).await {
            let mut seen = agents.jobs_seen.lock().unwrap();
            seen.extend(l.items.iter().filter_map(|j| j.uid()));
        }
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
                || agents.running.lock().unwrap().contains_key(&name)
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
            match start_agent(&client, &ns, &name, &spec, &index, &agent, &kc, &dir).await {
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
async fn play_job_controller(
    client: Client,
    ns: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    agents: Arc<Agents>,
) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let agent = agent_bin();
    let mut state: HashMap<String, IndexedJob> = HashMap::new();
    let mut pod_serial = 0u32;
    loop {
        let Ok(list) = jobs.list(&ListParams::default()).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let live: Vec<String> = list.items.iter().filter_map(|j| j.uid()).collect();
        agents
            .jobs_seen
            .lock()
            .unwrap()
            .extend(live.iter().cloned());
        // Deleted Jobs: their pods go, and so do their agents.
        for (uid, st) in state.iter_mut().filter(|(u, _)| !live.contains(u)) {
            let names: Vec<String> = std::mem::take(&mut st.running).into_values().collect();
            let _ = uid;
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
                        &agent,
                        &kubeconfig,
                        &dir,
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

/// Runs one agent pod as a local process: the container's environment (literal values,
/// `secretKeyRef` read from the API, `fieldRef` as the namespace), the completion index, and
/// ConfigMap volumes written to a directory that stands in for the mount.
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
            } else if src.field_ref.is_some() {
                Some(ns.to_string())
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
    env.insert("JOB_COMPLETION_INDEX".into(), index.to_string());
    for v in spec.volumes.clone().unwrap_or_default() {
        if let Some(cmv) = v.config_map {
            let cm = cms.get(&cmv.name).await.map_err(|e| e.to_string())?;
            let mount = container
                .volume_mounts
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.name == v.name)
                .ok_or("no mount")?;
            let local = dir.join(format!("{pod}-{}", v.name));
            std::fs::create_dir_all(&local).unwrap();
            for (k, val) in cm.data.unwrap_or_default() {
                std::fs::write(local.join(&k), val).unwrap();
            }
            if let Some(plan) = env.get("FERRY_PLAN").cloned() {
                if let Some(rest) = plan.strip_prefix(&mount.mount_path) {
                    env.insert("FERRY_PLAN".into(), format!("{}{rest}", local.display()));
                }
            }
        }
    }
    let log = std::fs::File::create(dir.join(format!("{pod}.log"))).unwrap();
    tokio::process::Command::new(agent)
        .env_clear()
        .envs(&env)
        .env("KUBECONFIG", kubeconfig)
        .env("FERRY_LOG", "info")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())
}

fn secret_yaml(name: &str) -> Value {
    let server = shared_server();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
           "stringData": {"AWS_ACCESS_KEY_ID": server.creds.access_key, "AWS_SECRET_ACCESS_KEY": server.creds.secret_key}})
}

fn job_yaml(name: &str, src: &str, dst: &str, secret: &str, extra: Value) -> Value {
    let server = shared_server();
    // Two endpoint spellings of one server: the agents stream (GET + PUT) instead of copying
    // inside the server.
    let other = server.endpoint.replace("127.0.0.1", "localhost");
    job_yaml_at(name, (&server.endpoint, src), (&other, dst), secret, extra)
}

/// A MigrationJob between two (endpoint, bucket) sides with one Secret.
fn job_yaml_at(
    name: &str,
    src: (&str, &str),
    dst: (&str, &str),
    secret: &str,
    extra: Value,
) -> Value {
    let side = |(endpoint, bucket): (&str, &str)| json!({"s3": {"endpoint": endpoint, "region": "us-east-1", "bucket": bucket, "forcePathStyle": true, "credentialsSecretRef": {"name": secret}}});
    let mut spec = json!({"source": side(src), "destination": side(dst), "parallelism": {"shards": 2, "concurrency": 8}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": name}, "spec": spec})
}

async fn buckets(n: usize) -> (S3, String, String, BTreeMap<String, Vec<u8>>) {
    let s3 = S3::for_server(shared_server());
    let src = s3.create_bucket("op-src").await;
    let dst = s3.create_bucket("op-dst").await;
    let objects: BTreeMap<String, Vec<u8>> = (0..n)
        .map(|i| {
            (
                format!("k/{i:04}"),
                ferry_tests::bytes(i as u64, 100 + i * 7),
            )
        })
        .collect();
    s3.put_all(&src, &objects).await;
    (s3, src, dst, objects)
}

async fn assert_copied(s3: &S3, dst: &str, objects: &BTreeMap<String, Vec<u8>>) {
    for (k, v) in objects {
        assert_eq!(&s3.get(dst, k).await, v, "{k} differs at the destination");
    }
}

fn phase(mj: &ferry_api::MigrationJob) -> Option<ferry_api::Phase> {
    mj.status.as_ref().and_then(|s| s.phase)
}

fn condition<'a>(mj: &'a ferry_api::MigrationJob, kind: &str) -> Option<&'a ferry_api::Condition> {
    mj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_are_refused_at_apply_time() {
    let Some(b) = backend() else { return };
    if !real_server_only(&b, "the CRD's schema and CEL rules") {
        return;
    }
    let c = Cluster::start(b, "cel").await;
    let base = job_yaml("bad", "src-bucket", "dst-bucket", "creds", json!({}));
    let cases = [
        (
            "/spec/source/filesystem",
            json!({"path": "/data"}),
            "exactly one of s3 or filesystem",
        ),
        ("/spec/source/s3/prefix", json!("a/../b"), "'..'"),
        (
            "/spec/multipart",
            json!({"partSize": "1Mi"}),
            "partSize must be at least 5Mi",
        ),
        (
            "/spec/filters",
            json!({"minSize": "2Ki", "maxSize": "1Ki"}),
            "minSize must not be larger than maxSize",
        ),
        ("/spec/parallelism/shards", json!(0), "shards"),
        ("/spec/source/s3/bucket", json!("Bad_Bucket"), "bucket"),
    ];
    for (pointer, value, expected) in cases {
        let mut v = base.clone();
        set_path(&mut v, pointer, value);
        let err = c
            .apply(v)
            .await
            .expect_err(&format!("a spec with {pointer} wrong was accepted"));
        assert!(
            err.to_string().contains(expected),
            "{pointer}: the refusal {err} does not say {expected:?}"
        );
    }
    // The spec is immutable but for the runtime knobs.
    c.apply(base.clone())
        .await
        .expect("the valid job is accepted");
    let mut suspended = base.clone();
    suspended["spec"]["suspend"] = json!(true);
    suspended["spec"]["bandwidthLimit"] = json!("10Mi");
    c.apply(suspended)
        .await
        .expect("suspend and bandwidthLimit may change");
    let mut moved = base.clone();
    moved["spec"]["source"]["s3"]["bucket"] = json!("other-bucket");
    let err = c
        .apply(moved)
        .await
        .expect_err("changing the source was accepted");
    assert!(err.to_string().contains("immutable"), "{err}");
    c.finish().await;
}

/// Sets the value at a JSON pointer, creating objects on the way.
fn set_path(v: &mut Value, pointer: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur[*p] = value;
            return;
        }
        if cur.get(*p).is_none() {
            cur[*p] = json!({});
        }
        cur = cur.get_mut(*p).unwrap();
    }
}

async fn wait_terminal(c: &Cluster, name: &str, secs: u64) -> ferry_api::MigrationJob {
    c.wait_for(name, "a terminal phase", Duration::from_secs(secs), |mj| {
        phase(mj).is_some_and(|p| p.is_terminal())
    })
    .await
}

fn assert_phase(mj: &ferry_api::MigrationJob, want: ferry_api::Phase) {
    assert_eq!(phase(mj), Some(want), "{:#?}", mj.status);
}

/// The names of the MigrationJob's children that exist (by their deterministic names).
async fn children_of(c: &Cluster, name: &str, shards: u32) -> Vec<String> {
    let mut out = Vec::new();
    let cms = c.api::<ConfigMap>();
    let mut cm_names = vec![format!("{name}-plan")];
    cm_names.extend((0..shards).map(|i| format!("{name}-shard-{i}")));
    for n in cm_names {
        if cms.get_opt(&n).await.unwrap().is_some() {
            out.push(format!("ConfigMap/{n}"));
        }
    }
    let agent = format!("{name}-agent");
    if c.api::<ServiceAccount>()
        .get_opt(&agent)
        .await
        .unwrap()
        .is_some()
    {
        out.push(format!("ServiceAccount/{agent}"));
    }
    if c.api::<k8s_openapi::api::rbac::v1::Role>()
        .get_opt(&agent)
        .await
        .unwrap()
        .is_some()
    {
        out.push(format!("Role/{agent}"));
    }
    if c.api::<k8s_openapi::api::rbac::v1::RoleBinding>()
        .get_opt(&agent)
        .await
        .unwrap()
        .is_some()
    {
        out.push(format!("RoleBinding/{agent}"));
    }
    if c.api::<Job>()
        .get_opt(&format!("{name}-agents"))
        .await
        .unwrap()
        .is_some()
    {
        out.push(format!("Job/{name}-agents"));
    }
    out
}

/// Buckets with `n` objects, the Secret `creds`, and the MigrationJob `name` between them,
/// slowed to `rps` requests per second so a test can act mid-run; returns once it runs.
async fn start_slow_copy(c: &Cluster, name: &str, n: usize, rps: u32) -> Copy {
    let (s3, src, dst, objects) = buckets(n).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    let job = job_yaml(name, &src, &dst, "creds", json!({"requestsPerSecond": rps}));
    c.apply(job.clone()).await.unwrap();
    c.wait_for(name, "Running", Duration::from_secs(60), |mj| {
        phase(mj) == Some(ferry_api::Phase::Running)
    })
    .await;
    Copy {
        s3,
        src,
        dst,
        objects,
        job,
    }
}

struct Copy {
    s3: S3,
    src: String,
    dst: String,
    objects: BTreeMap<String, Vec<u8>>,
    job: Value,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_to_completed_with_every_byte_verified_and_survives_an_operator_restart() {
    let Some(b) = backend() else { return };
    let mut c = Cluster::start(b, "run").await;
    let Copy {
        s3, dst, objects, ..
    } = start_slow_copy(&c, "copy", 120, 40).await;
    assert_eq!(
        children_of(&c, "copy", 2).await.len(),
        7,
        "plan, 2 progress ConfigMaps, ServiceAccount, Role, RoleBinding, Job"
    );
    // Restart the operator mid-run: no duplicate Job, the run goes on.
    c.kill_controller("e2e").await;
    c.start_controller("e2e", &[]);
    let mj = wait_terminal(&c, "copy", 180).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    let st = mj.status.clone().unwrap();
    assert_eq!(st.progress.counters.objects_copied, objects.len() as u64);
    assert_eq!(st.observed_generation, mj.metadata.generation);
    assert!(st.completion_time.is_some());
    assert!(
        st.report.as_deref().is_some_and(|r| r.contains(&dst)),
        "the status names the report location: {:?}",
        st.report
    );
    assert_copied(&s3, &dst, &objects).await;
    assert_eq!(
        c.agents.jobs_seen.lock().unwrap().len(),
        1,
        "exactly one agents' Job was ever created"
    );
    assert!(
        c.api::<Job>()
            .get_opt("copy-agents")
            .await
            .unwrap()
            .is_none(),
        "the agents' Job is gone after completion"
    );
    let events = c.events_of("copy").await;
    assert!(
        events.iter().any(|(_, reason, _)| reason == "Completed"),
        "{events:?}"
    );
    // Deletion removes the finalizer and every child; copied data stays.
    c.api::<ferry_api::MigrationJob>()
        .delete("copy", &DeleteParams::default())
        .await
        .unwrap();
    let start = Instant::now();
    let mut left = Vec::new();
    while start.elapsed() < Duration::from_secs(60) {
        let gone = c
            .api::<ferry_api::MigrationJob>()
            .get_opt("copy")
            .await
            .unwrap()
            .is_none();
        left = children_of(&c, "copy", 2).await;
        if gone && left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        c.api::<ferry_api::MigrationJob>()
            .get_opt("copy")
            .await
            .unwrap()
            .is_none(),
        "the MigrationJob was not deleted"
    );
    assert!(left.is_empty(), "children left after deletion: {left:?}");
    assert_copied(&s3, &dst, &objects).await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_pauses_and_resume_finishes_from_the_checkpoints() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "suspend").await;
    let Copy {
        s3,
        dst,
        objects,
        job,
        ..
    } = start_slow_copy(&c, "pause", 200, 20).await;
    c.wait_for("pause", "some progress", Duration::from_secs(90), |mj| {
        mj.status
            .as_ref()
            .is_some_and(|s| s.progress.counters.objects_copied > 0)
    })
    .await;
    let mut suspended = job.clone();
    suspended["spec"]["suspend"] = json!(true);
    c.apply(suspended).await.unwrap();
    let mj = c
        .wait_for("pause", "Paused", Duration::from_secs(60), |mj| {
            phase(mj) == Some(ferry_api::Phase::Paused)
        })
        .await;
    let jobs = c
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(true)),
        "the agents' Job is not suspended"
    );
    let copied_when_paused = mj.status.unwrap().progress.counters.objects_copied;
    assert!(
        copied_when_paused < objects.len() as u64,
        "finished before it could be paused; slow it down"
    );
    // While paused, no agent runs and nothing moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        c.agents.running.lock().unwrap().is_empty(),
        "agents still run while suspended"
    );
    let mut resumed = job.clone();
    resumed["spec"]["suspend"] = json!(false);
    resumed["spec"]["requestsPerSecond"] = json!(0);
    c.apply(resumed).await.unwrap();
    let mj = wait_terminal(&c, "pause", 120).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    assert_copied(&s3, &dst, &objects).await;
    c.finish().await;
}

/// An agent killed mid-run (SIGKILL: no checkpoint at exit) is started again and resumes
/// from its last checkpoint; the job completes with every byte right.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_is_restarted_and_resumes() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "agentkill").await;
    let Copy {
        s3, dst, objects, ..
    } = start_slow_copy(&c, "kill", 160, 30).await;
    c.wait_for("kill", "some progress", Duration::from_secs(90), |mj| {
        mj.status
            .as_ref()
            .is_some_and(|s| s.progress.counters.objects_copied >= 10)
    })
    .await;
    let killed = c.agents.kill_one().expect("an agent is running");
    eprintln!("killed agent {killed}");
    let mj = wait_terminal(&c, "kill", 180).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    assert_eq!(
        c.agents.starts.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "two shards, and the killed one started once more"
    );
    assert_eq!(
        mj.status.unwrap().progress.counters.objects_copied,
        objects.len() as u64
    );
    assert_copied(&s3, &dst, &objects).await;
    c.finish().await;
}

/// Two controller replicas: one holds the Lease and acts; when it dies without releasing the
/// Lease, the other takes over once it expires and the job completes, with one agents' Job.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over() {
    let Some(b) = backend() else { return };
    let mut c = Cluster::start_bare(b, "leader").await;
    c.start_controller("replica-a", &[]);
    c.start_controller("replica-b", &[]);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = c.api();
    let holder = || async {
        leases
            .get_opt("ferry-controller")
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    let start = Instant::now();
    let first = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no replica took the Lease"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let Copy {
        s3, dst, objects, ..
    } = start_slow_copy(&c, "lead", 150, 25).await;
    // The leader keeps the Lease while it lives; the standby does not take it.
    for _ in 0..6 {
        assert_eq!(holder().await.as_deref(), Some(first.as_str()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    c.kill_controller(&first).await;
    let other = if first == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    let start = Instant::now();
    while holder().await.as_deref() != Some(other) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the standby never took the Lease over"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mj = wait_terminal(&c, "lead", 180).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    assert_copied(&s3, &dst, &objects).await;
    assert_eq!(
        c.agents.jobs_seen.lock().unwrap().len(),
        1,
        "exactly one agents' Job across both replicas"
    );
    c.finish().await;
}

/// With `--max-running 1`, a second job waits Pending (Queued) while the first runs.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_beyond_the_running_cap_wait_queued() {
    let Some(b) = backend() else { return };
    let c = Cluster::start_with(b, "queue", &["--max-running", "1"]).await;
    let Copy {
        s3,
        src,
        dst,
        objects,
        ..
    } = start_slow_copy(&c, "first", 100, 25).await;
    let dst2 = s3.create_bucket("op-dst2").await;
    c.apply(job_yaml("second", &src, &dst2, "creds", json!({})))
        .await
        .unwrap();
    let queued = c
        .wait_for("second", "Queued", Duration::from_secs(60), |mj| {
            condition(mj, "Ready").is_some_and(|c| c.reason == "Queued")
        })
        .await;
    assert_phase(&queued, ferry_api::Phase::Pending);
    assert!(
        c.api::<Job>()
            .get_opt("second-agents")
            .await
            .unwrap()
            .is_none(),
        "a queued job has no agents"
    );
    let first = wait_terminal(&c, "first", 180).await;
    assert_phase(&first, ferry_api::Phase::Completed);
    let second = wait_terminal(&c, "second", 180).await;
    assert_phase(&second, ferry_api::Phase::Completed);
    assert_copied(&s3, &dst, &objects).await;
    assert_copied(&s3, &dst2, &objects).await;
    c.finish().await;
}

/// A job that ended PartiallyCompleted re-runs exactly its failed keys when the user sets
/// the `ferry.dev/retry-failed` annotation; the same value again does nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_retry_annotation_re_runs_only_the_failed_keys() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "retry").await;
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = s3.create_bucket("op-retry-src").await;
    let dst = s3.create_bucket("op-retry-dst").await;
    let mut objects: BTreeMap<String, Vec<u8>> = (0..20)
        .map(|i| {
            (
                format!("ok/{i:02}"),
                ferry_tests::bytes(i, 300 + i as usize),
            )
        })
        .collect();
    objects.insert("secret/denied".into(), ferry_tests::bytes(99, 321));
    s3.put_all(&src, &objects).await;
    let proxy = ferry_tests::FaultProxy::start(
        &server.endpoint,
        ferry_tests::FaultSchedule {
            deny_keys: vec!["secret/denied".into()],
            ..Default::default()
        },
    )
    .await;
    let other = server.endpoint.replace("127.0.0.1", "localhost");
    c.apply(secret_yaml("creds")).await.unwrap();
    let job = job_yaml_at(
        "retry",
        (&proxy.endpoint(), &src),
        (&other, &dst),
        "creds",
        json!({}),
    );
    c.apply(job.clone()).await.unwrap();
    let mj = wait_terminal(&c, "retry", 120).await;
    assert_phase(&mj, ferry_api::Phase::PartiallyCompleted);
    assert_eq!(
        mj.status.as_ref().unwrap().progress.counters.objects_failed,
        1
    );
    assert!(s3.list_all(&dst, "secret/").await.is_empty());

    proxy.set_schedule(ferry_tests::FaultSchedule::none());
    proxy.clear();
    let mut annotated = job.clone();
    annotated["metadata"]["annotations"] = json!({"ferry.dev/retry-failed": "first"});
    c.apply(annotated.clone()).await.unwrap();
    let mj = c
        .wait_for(
            "retry",
            "the retry to complete",
            Duration::from_secs(120),
            |mj| {
                mj.status
                    .as_ref()
                    .is_some_and(|s| s.attempt == 1 && s.phase.is_some_and(|p| p.is_terminal()))
            },
        )
        .await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    let st = mj.status.clone().unwrap();
    assert_eq!(st.last_retry_token.as_deref(), Some("first"));
    assert_eq!(
        st.progress.counters.objects_copied, 1,
        "only the failed key"
    );
    assert!(
        st.report
            .as_deref()
            .is_some_and(|r| r.ends_with("/retry-1/")),
        "the retry reports in its own folder: {:?}",
        st.report
    );
    assert_copied(&s3, &dst, &objects).await;
    let gets: Vec<String> = proxy
        .object_gets()
        .iter()
        .map(|r| r.bucket_and_key().1)
        .collect();
    assert!(
        gets.iter().all(|k| k == "secret/denied") && !gets.is_empty(),
        "the retry should read only the failed key, read: {gets:?}"
    );
    // The same value again is not a new request.
    proxy.clear();
    c.apply(annotated).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = c.job("retry").await;
    assert_eq!(again.status.as_ref().unwrap().attempt, 1);
    assert!(proxy.object_gets().is_empty());
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_is_a_condition_and_an_event() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "secret").await;
    c.apply(job_yaml(
        "nosecret",
        "src-bucket",
        "dst-bucket",
        "absent",
        json!({}),
    ))
    .await
    .unwrap();
    let mj = c
        .wait_for(
            "nosecret",
            "CredentialsValid=False",
            Duration::from_secs(60),
            |mj| condition(mj, "CredentialsValid").is_some_and(|c| c.status == "False"),
        )
        .await;
    let cond = condition(&mj, "CredentialsValid").unwrap();
    assert_eq!(cond.reason, "SecretNotFound");
    assert!(cond.message.contains("absent"), "{}", cond.message);
    assert_phase(&mj, ferry_api::Phase::Pending);
    let events = c.events_of("nosecret").await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "SecretNotFound"),
        "{events:?}"
    );
    assert!(
        c.api::<Job>()
            .get_opt("nosecret-agents")
            .await
            .unwrap()
            .is_none(),
        "no agents without credentials"
    );
    c.finish().await;
}

/// Wrong credentials end the job Failed, and the secret appears nowhere. On moto the test
/// starts a second moto that checks credentials (moto's IAM authentication).
#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_fail_without_showing_the_secret() {
    let Some(b) = backend() else { return };
    let checking;
    let server: &ferry_tests::S3Server = if shared_server().is_garage() {
        shared_server()
    } else {
        checking = ferry_tests::server::start_moto_checking_credentials();
        &checking
    };
    let c = Cluster::start(b, "badcreds").await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong"},
        "stringData": {"AWS_ACCESS_KEY_ID": "GK0000000000000000deadbeef", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value-that-must-not-leak"}});
    c.apply(secret).await.unwrap();
    c.apply(job_yaml_at(
        "wrong",
        (&server.endpoint, "src-bucket"),
        (&server.endpoint, "dst-bucket"),
        "wrong",
        json!({}),
    ))
    .await
    .unwrap();
    let mj = c
        .wait_for("wrong", "Failed", Duration::from_secs(60), |mj| {
            phase(mj) == Some(ferry_api::Phase::Failed)
        })
        .await;
    let cond = condition(&mj, "CredentialsValid").expect("a CredentialsValid condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "CredentialsRefused"),
        "{cond:?}"
    );
    let text = serde_json::to_string(&mj.status).unwrap();
    assert!(
        !text.contains("s3cr3t-value-that-must-not-leak"),
        "the secret leaked into the status: {text}"
    );
    let events = c.events_of("wrong").await;
    assert!(
        events.iter().any(|(t, _, _)| t == "Warning"),
        "a Warning Event: {events:?}"
    );
    for (_, _, note) in events {
        assert!(!note.contains("s3cr3t-value-that-must-not-leak"));
    }
    assert!(
        !c.logs().contains("s3cr3t-value-that-must-not-leak"),
        "the secret leaked into a log"
    );
    c.finish().await;
}
