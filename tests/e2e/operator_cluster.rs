//! The operator end to end on a real Kubernetes API server (FERRY_E2E_KUBECONFIG): the CRD
//! with its CEL rules, the real `ferry controller` binary, and a small harness that plays
//! kubelet for the agents' pods: it runs each pod as a local `transfer-agent` process with the
//! environment the pod would get (Secrets resolved from `secretKeyRef`, the plan from its
//! ConfigMap, a ServiceAccount token of the agent's own identity, so its RBAC is real) and
//! writes the pod's status back; the cluster's Job controller does the rest. Data moves
//! between two buckets of the real S3 server.
//!
//! Without FERRY_E2E_KUBECONFIG the tests print a notice and pass without checking anything.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_tests::{ferry_bin, shared_server, workspace_root, S3};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("FERRY_E2E_KUBECONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("NOTICE: FERRY_E2E_KUBECONFIG is not set: the operator tests on a real Kubernetes API server are skipped");
            None
        }
    }
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

/// A namespace of its own, the CRD installed, and the controller running.
struct Cluster {
    client: Client,
    ns: String,
    kubeconfig: PathBuf,
    controller: Option<tokio::process::Child>,
    kubelet: tokio::task::JoinHandle<()>,
    tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start(kubeconfig: &Path, test: &str) -> Cluster {
        let client = client(kubeconfig).await;
        install_crd(&client).await;
        let ns = format!("ferry-{test}-{}", rand::random::<u32>() % 100_000);
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("namespace created");
        let tmp = tempfile::tempdir().unwrap();
        let kubelet = tokio::spawn(play_kubelet(
            client.clone(),
            ns.clone(),
            kubeconfig.to_path_buf(),
            tmp.path().to_path_buf(),
        ));
        let mut c = Cluster {
            client,
            ns,
            kubeconfig: kubeconfig.to_path_buf(),
            controller: None,
            kubelet,
            tmp,
        };
        c.start_controller();
        c
    }

    fn start_controller(&mut self) {
        let log = std::fs::File::create(
            self.tmp
                .path()
                .join(format!("controller-{}.log", rand::random::<u16>())),
        )
        .unwrap();
        let child = tokio::process::Command::new(ferry_bin())
            .args([
                "controller",
                "--agent-image",
                "ferry/transfer-agent:test",
                "--leader-lease",
                &format!("{}/ferry-controller", self.ns),
                "--identity",
                "e2e",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("ferry controller starts");
        self.controller = Some(child);
    }

    async fn stop_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
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
                let logs: String = std::fs::read_dir(self.tmp.path())
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                panic!(
                    "timed out waiting for {what}; status: {}\nlogs:\n{}",
                    serde_json::to_string_pretty(&mj.status).unwrap(),
                    tail(&logs, 6000)
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
        self.stop_controller().await;
        self.kubelet.abort();
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

async fn install_crd(client: &Client) {
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

/// Plays kubelet for the agents' pods of `ns`.
async fn play_kubelet(client: Client, ns: String, admin: PathBuf, dir: PathBuf) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running: Arc<Mutex<HashMap<String, tokio::process::Child>>> = Arc::default();
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
        {
            let mut r = running.lock().unwrap();
            let gone: Vec<String> = r.keys().filter(|k| !alive.contains(k)).cloned().collect();
            for k in gone {
                if let Some(child) = r.remove(&k) {
                    if let Some(pid) = child.id() {
                        unsafe_kill(pid);
                    }
                }
            }
        }
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
                || running.lock().unwrap().contains_key(&name)
            {
                continue;
            }
            match start_agent(&client, &ns, &pod, &agent, &admin, &dir).await {
                Ok(child) => {
                    running.lock().unwrap().insert(name.clone(), child);
                    let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running", "startTime": chrono::Utc::now().to_rfc3339()}}))).await;
                }
                Err(e) => eprintln!("kubelet: cannot start {name}: {e}"),
            }
        }
        // Report agents that exited.
        let done: Vec<(String, i32)> = {
            let mut r = running.lock().unwrap();
            let mut out = Vec::new();
            for (k, c) in r.iter_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((k.clone(), status.code().unwrap_or(143)));
                }
            }
            for (k, _) in &out {
                r.remove(k);
            }
            out
        };
        for (name, code) in done {
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

fn unsafe_kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

async fn start_agent(
    client: &Client,
    ns: &str,
    pod: &Pod,
    agent: &Path,
    admin: &Path,
    dir: &Path,
) -> Result<tokio::process::Child, String> {
    let spec = pod.spec.as_ref().ok_or("no spec")?;
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
    let index = pod
        .annotations()
        .get("batch.kubernetes.io/job-completion-index")
        .cloned()
        .ok_or("no completion index")?;
    env.insert("JOB_COMPLETION_INDEX".into(), index);
    // The plan volume: the ConfigMap written to a directory, as a mount would.
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
            let local = dir.join(format!("{}-{}", pod.name_any(), v.name));
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
    let sa = spec
        .service_account_name
        .clone()
        .ok_or("no service account")?;
    let kc = agent_kubeconfig(client, ns, &sa, admin, dir).await;
    let log = std::fs::File::create(dir.join(format!("{}.log", pod.name_any()))).unwrap();
    tokio::process::Command::new(agent)
        .env_clear()
        .envs(&env)
        .env("KUBECONFIG", kc)
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
    let side = |bucket: &str, endpoint: &str| json!({"s3": {"endpoint": endpoint, "region": server.region, "bucket": bucket, "forcePathStyle": true, "credentialsSecretRef": {"name": secret}}});
    // Two endpoint spellings of one server: the agents stream (GET + PUT) instead of copying
    // inside the server.
    let other = server.endpoint.replace("127.0.0.1", "localhost");
    let mut spec = json!({"source": side(src, &server.endpoint), "destination": side(dst, &other), "parallelism": {"shards": 2, "concurrency": 8}});
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
    let Some(kc) = kubeconfig() else { return };
    let c = Cluster::start(&kc, "cel").await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_to_completed_with_every_byte_verified_and_survives_an_operator_restart() {
    let Some(kc) = kubeconfig() else { return };
    let mut c = Cluster::start(&kc, "run").await;
    let (s3, src, dst, objects) = buckets(120).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    c.apply(job_yaml(
        "copy",
        &src,
        &dst,
        "creds",
        json!({"requestsPerSecond": 40}),
    ))
    .await
    .unwrap();
    c.wait_for("copy", "Running", Duration::from_secs(60), |mj| {
        phase(mj) == Some(ferry_api::Phase::Running)
    })
    .await;
    // Restart the operator mid-run: no duplicate Job, the run goes on.
    c.stop_controller().await;
    c.start_controller();
    let mj = c
        .wait_for("copy", "Completed", Duration::from_secs(180), |mj| {
            phase(mj).is_some_and(|p| p.is_terminal())
        })
        .await;
    assert_eq!(
        phase(&mj),
        Some(ferry_api::Phase::Completed),
        "{:?}",
        mj.status
    );
    let st = mj.status.unwrap();
    assert_eq!(st.progress.counters.objects_copied, objects.len() as u64);
    assert_eq!(st.observed_generation, mj.metadata.generation);
    assert!(st.completion_time.is_some());
    assert_copied(&s3, &dst, &objects).await;
    assert_eq!(
        c.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        0,
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
    for _ in 0..60 {
        if c.api::<ferry_api::MigrationJob>()
            .get_opt("copy")
            .await
            .unwrap()
            .is_none()
        {
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
    assert_copied(&s3, &dst, &objects).await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_pauses_and_resume_finishes_from_the_checkpoints() {
    let Some(kc) = kubeconfig() else { return };
    let c = Cluster::start(&kc, "suspend").await;
    let (s3, src, dst, objects) = buckets(200).await;
    c.apply(secret_yaml("creds")).await.unwrap();
    let job = job_yaml(
        "pause",
        &src,
        &dst,
        "creds",
        json!({"requestsPerSecond": 20}),
    );
    c.apply(job.clone()).await.unwrap();
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
        jobs.iter()
            .all(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(true)),
        "the agents' Job is not suspended"
    );
    let copied_when_paused = mj.status.unwrap().progress.counters.objects_copied;
    assert!(
        copied_when_paused < objects.len() as u64,
        "finished before it could be paused; slow it down"
    );
    let mut resumed = job.clone();
    resumed["spec"]["suspend"] = json!(false);
    resumed["spec"]["requestsPerSecond"] = json!(0);
    c.apply(resumed).await.unwrap();
    let mj = c
        .wait_for("pause", "Completed", Duration::from_secs(120), |mj| {
            phase(mj).is_some_and(|p| p.is_terminal())
        })
        .await;
    assert_eq!(
        phase(&mj),
        Some(ferry_api::Phase::Completed),
        "{:?}",
        mj.status
    );
    assert_copied(&s3, &dst, &objects).await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_is_a_condition_and_an_event() {
    let Some(kc) = kubeconfig() else { return };
    let c = Cluster::start(&kc, "secret").await;
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
    let events = c.events_of("nosecret").await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "SecretNotFound"),
        "{events:?}"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_fail_without_showing_the_secret() {
    let Some(kc) = kubeconfig() else { return };
    if !shared_server().is_garage() {
        eprintln!("NOTICE: moto accepts any credentials; wrong-credential checks need Garage (FERRY_TEST_GARAGE)");
        return;
    }
    let c = Cluster::start(&kc, "badcreds").await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong"},
        "stringData": {"AWS_ACCESS_KEY_ID": "GK0000000000000000deadbeef", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value-that-must-not-leak"}});
    c.apply(secret).await.unwrap();
    c.apply(job_yaml(
        "wrong",
        "src-bucket",
        "dst-bucket",
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
    let text = serde_json::to_string(&mj.status).unwrap();
    assert!(
        !text.contains("s3cr3t-value-that-must-not-leak"),
        "the secret leaked into the status: {text}"
    );
    for (_, _, note) in c.events_of("wrong").await {
        assert!(!note.contains("s3cr3t-value-that-must-not-leak"));
    }
    c.finish().await;
}
