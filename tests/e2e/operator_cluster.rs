//! The operator end to end: the real `ferry controller` binary against a Kubernetes API, with
//! a harness that plays the parts of a cluster the tests have no nodes for
//! (`ferry_tests::cluster`). Data moves between two buckets of the real S3 server.
//!
//! The API is a real API server when FERRY_E2E_KUBECONFIG names one (with
//! kube-controller-manager; the harness plays kubelet), else the kmock-based stand-in
//! `tests/support/kapi.py` (CI; the harness also plays the Job controller). Every test runs
//! on both but `bad_specs_are_refused_at_apply_time`, which needs the real server's schema and
//! CEL checks. With neither backend the tests print a notice and pass.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_tests::cluster::{backend, client, play_kubelet, real_server_only, Agents, Cluster};
use ferry_tests::{shared_server, S3};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

pub(crate) fn secret_yaml(name: &str) -> Value {
    let server = shared_server();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
           "stringData": {"AWS_ACCESS_KEY_ID": server.creds.access_key, "AWS_SECRET_ACCESS_KEY": server.creds.secret_key}})
}

pub(crate) fn job_yaml(name: &str, src: &str, dst: &str, secret: &str, extra: Value) -> Value {
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

pub(crate) async fn buckets(n: usize) -> (S3, String, String, BTreeMap<String, Vec<u8>>) {
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

/// The API behaviours the operator and kube-runtime rely on, checked on whichever backend
/// runs: on a real API server this pins down what the stand-in must do, on the stand-in it
/// checks that it does. A controller breaks on each when it is wrong: 404/409 handling of
/// creates and gets, the Lease race (a stale resourceVersion loses), generations and the
/// status subresource (observedGeneration, status writes), selectors and resumable watches
/// (kube-runtime's watchers), finalizers and garbage collection (deletion).
#[tokio::test(flavor = "multi_thread")]
async fn the_api_behaves_as_the_operator_relies_on() {
    let Some(b) = backend() else { return };
    let c = Cluster::start_bare(b, "api").await;
    let cms = c.api::<ConfigMap>();
    let pp = PostParams::default();
    let cm = |name: &str, labels: Value| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
        )
        .unwrap()
    };
    // The server fills in uid, namespace, creationTimestamp and resourceVersion.
    let a = cms
        .create(&pp, &cm("a", json!({"set": "api", "tier": "x"})))
        .await
        .unwrap();
    let m = &a.metadata;
    assert!(m.uid.is_some() && m.creation_timestamp.is_some() && m.resource_version.is_some());
    assert_eq!(m.namespace.as_deref(), Some(c.ns.as_str()));
    // Create of an existing name, get of a missing one.
    let err = api_error(cms.create(&pp, &cm("a", json!({}))).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    let err = api_error(cms.get("absent").await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert!(cms.get_opt("absent").await.unwrap().is_none());
    // Optimistic concurrency: a replace (or a patch) naming a stale resourceVersion loses.
    let mut newer = a.clone();
    newer.data = Some(BTreeMap::from([("k".into(), "w".into())]));
    let newer = cms.replace("a", &pp, &newer).await.unwrap();
    assert_ne!(newer.metadata.resource_version, a.metadata.resource_version);
    let err = api_error(cms.replace("a", &pp, &a).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let stale =
        json!({"metadata": {"resourceVersion": a.metadata.resource_version}, "data": {"k": "z"}});
    let err = api_error(
        cms.patch("a", &PatchParams::default(), &Patch::Merge(&stale))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    // Label selectors, as lists and watches use them.
    cms.create(&pp, &cm("b", json!({"set": "api", "tier": "y"})))
        .await
        .unwrap();
    cms.create(&pp, &cm("c", json!({"set": "api"})))
        .await
        .unwrap();
    for (selector, want) in [
        ("set=api,tier=x", vec!["a"]),
        ("set=api,tier", vec!["a", "b"]),
        ("set=api,!tier", vec!["c"]),
        ("set=api,tier!=x", vec!["b", "c"]),
        ("set=api,tier in (x,y)", vec!["a", "b"]),
        ("set=other", vec![]),
    ] {
        let list = cms
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        let mut names: Vec<String> = list.items.iter().map(|o| o.name_any()).collect();
        names.sort();
        assert_eq!(names, want, "selector {selector}");
        assert_eq!(list.types.kind, "ConfigMapList");
    }
    // A watch from a list's resourceVersion sees exactly what changed after it.
    let rv = cms
        .list(&ListParams::default().labels("set=api"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    cms.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("set=api").timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match stream.next().await {
            Some(Ok(WatchEvent::Modified(o))) => seen.push(format!("MODIFIED {}", o.name_any())),
            Some(Ok(WatchEvent::Added(o))) => seen.push(format!("ADDED {}", o.name_any())),
            Some(Ok(WatchEvent::Deleted(o))) => seen.push(format!("DELETED {}", o.name_any())),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("the watch ended after {seen:?}: {other:?}"),
        }
    }
    assert_eq!(seen, ["MODIFIED b", "DELETED c"]);
    // Generations and the status subresource, on the CRD.
    let mjs = c.api::<ferry_api::MigrationJob>();
    c.apply(job_yaml(
        "gen",
        "src-bucket",
        "dst-bucket",
        "creds",
        json!({}),
    ))
    .await
    .unwrap();
    let generation = |mj: &ferry_api::MigrationJob| mj.metadata.generation;
    assert_eq!(generation(&c.job("gen").await), Some(1));
    let status_write = json!({"status": {"phase": "Pending"}, "spec": {"suspend": true}});
    mjs.patch_status("gen", &PatchParams::default(), &Patch::Merge(&status_write))
        .await
        .unwrap();
    let mj = c.job("gen").await;
    assert_eq!(phase(&mj), Some(ferry_api::Phase::Pending));
    assert!(!mj.spec.suspend, "a status write changed the spec");
    assert_eq!(
        generation(&mj),
        Some(1),
        "a status write bumped the generation"
    );
    let labels = json!({"metadata": {"labels": {"touched": "yes"}}});
    mjs.patch("gen", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    assert_eq!(
        generation(&c.job("gen").await),
        Some(1),
        "metadata bumped the generation"
    );
    let spec_write = json!({"spec": {"suspend": true}, "status": {"phase": "Running"}});
    mjs.patch("gen", &PatchParams::default(), &Patch::Merge(&spec_write))
        .await
        .unwrap();
    let mj = c.job("gen").await;
    assert!(mj.spec.suspend);
    assert_eq!(
        generation(&mj),
        Some(2),
        "a spec change bumps the generation"
    );
    assert_eq!(
        phase(&mj),
        Some(ferry_api::Phase::Pending),
        "a write to the object changed its status"
    );
    let list = mjs.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        (list.types.api_version.as_str(), list.types.kind.as_str()),
        ("ferry.dev/v1alpha1", "MigrationJobList")
    );
    // Secrets: stringData is stored as data.
    let secrets = c.api::<Secret>();
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"key": "value"}}))
            .unwrap();
    secrets.create(&pp, &s).await.unwrap();
    let s = secrets.get("s").await.unwrap();
    assert_eq!(s.data.unwrap()["key"].0, b"value");
    assert!(s.string_data.is_none());
    // A finalizer holds a deletion; once the object goes, so do its dependents.
    let owner: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "owner", "finalizers": ["e2e.ferry.dev/hold"]}}),
    )
    .unwrap();
    let owner = cms.create(&pp, &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dependent",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()}]}}))
    .unwrap();
    cms.create(&pp, &dependent).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let held = cms
        .get("owner")
        .await
        .expect("a finalizer holds the deletion");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(cms.get_opt("dependent").await.unwrap().is_some());
    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("owner", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    let start = Instant::now();
    while cms.get_opt("owner").await.unwrap().is_some()
        || cms.get_opt("dependent").await.unwrap().is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the owner or its dependent is still there"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.finish().await;
}

fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
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
        (
            "/spec/source",
            json!({"database": {
                "connectionSecretRef": {"name": "db"}, "table": "images", "idColumn": "id",
                "dataColumn": "data", "key": "{id}.{ext}",
                "where": "deleted_at IS NULL; DROP TABLE images"
            }}),
            "';' is not allowed",
        ),
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

    // Delete propagation on a MigrationJob, and BucketSync's own fields.
    let deletes = [
        (
            json!({"deletes": {"policy": "Propagate", "maxDeletes": "lots"}}),
            "maxDeletes",
        ),
        (
            json!({"deletes": {"policy": "Propagate", "maxDeletes": "120%"}}),
            "at most 100%",
        ),
        (
            json!({"deletes": {"policy": "Propagate"}, "filters": {"modifiedAfter": "2024-01-01T00:00:00Z"}}),
            "time window",
        ),
        (
            json!({"deletes": {"policy": "Keep", "maxDeletes": "5"}}),
            "only apply with deletes.policy Propagate",
        ),
    ];
    for (extra, expected) in deletes {
        let v = job_yaml(
            "bad-deletes",
            "src-bucket",
            "dst-bucket",
            "creds",
            extra.clone(),
        );
        let err = c
            .apply(v)
            .await
            .expect_err(&format!("{extra} was accepted"));
        assert!(
            err.to_string().contains(expected),
            "{extra}: {err} does not say {expected:?}"
        );
    }
    let mut fs_backup = job_yaml(
        "bad-backup",
        "src-bucket",
        "dst-bucket",
        "creds",
        json!({"deletes": {"policy": "Propagate", "backupPrefix": "bk/"}}),
    );
    fs_backup["spec"]["destination"] = json!({"filesystem": {"path": "/data"}});
    let err = c
        .apply(fs_backup)
        .await
        .expect_err("backupPrefix on a filesystem was accepted");
    assert!(err.to_string().contains("needs an S3 destination"), "{err}");
    let sync = |extra: Value| {
        let mut spec =
            job_yaml("s", "src-bucket", "dst-bucket", "creds", json!({}))["spec"].clone();
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "BucketSync", "metadata": {"name": "bad-sync"}, "spec": spec})
    };
    let sync_cases = [
        (json!({}), "exactly one of schedule and interval"),
        (
            json!({"schedule": "0 2 * * *", "interval": "15m"}),
            "exactly one of schedule and interval",
        ),
        (json!({"interval": "5s"}), "at least 10s"),
        (json!({"interval": "soon"}), "interval"),
        (json!({"schedule": "0 2 * *"}), "5-field cron"),
        (
            json!({"interval": "15m", "timeZone": "Europe/Berlin"}),
            "timeZone applies to schedule only",
        ),
        (
            json!({"interval": "15m", "deletes": {"policy": "Propagate", "maxDeletes": "x%"}}),
            "maxDeletes",
        ),
    ];
    for (extra, expected) in sync_cases {
        let err = c
            .apply(sync(extra.clone()))
            .await
            .expect_err(&format!("BucketSync {extra} was accepted"));
        assert!(
            err.to_string().contains(expected),
            "BucketSync {extra}: {err} does not say {expected:?}"
        );
    }
    c.apply(sync(
        json!({"schedule": "*/5 * * * *", "timeZone": "Europe/Berlin"}),
    ))
    .await
    .expect("a valid BucketSync is accepted");
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

/// Whether an object of kind `K` named `name` exists in the cluster's namespace.
async fn exists<K>(c: &Cluster, name: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    c.api::<K>().get_opt(name).await.unwrap().is_some()
}

/// The names of the MigrationJob's children that exist (by their deterministic names).
async fn children_of(c: &Cluster, name: &str, shards: u32) -> Vec<String> {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let mut out = Vec::new();
    let mut cm_names = vec![format!("{name}-plan")];
    cm_names.extend((0..shards).map(|i| format!("{name}-shard-{i}")));
    for n in cm_names {
        if exists::<ConfigMap>(c, &n).await {
            out.push(format!("ConfigMap/{n}"));
        }
    }
    let agent = format!("{name}-agent");
    let agent_objects = [
        ("ServiceAccount", exists::<ServiceAccount>(c, &agent).await),
        ("Role", exists::<Role>(c, &agent).await),
        ("RoleBinding", exists::<RoleBinding>(c, &agent).await),
    ];
    for (kind, present) in agent_objects {
        if present {
            out.push(format!("{kind}/{agent}"));
        }
    }
    if exists::<Job>(c, &format!("{name}-agents")).await {
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

/// Waits until the MigrationJob `name` has copied at least `n` objects.
async fn wait_copied(c: &Cluster, name: &str, n: u64) {
    c.wait_for(name, "some progress", Duration::from_secs(90), |mj| {
        mj.status
            .as_ref()
            .is_some_and(|s| s.progress.counters.objects_copied >= n)
    })
    .await;
}

/// Deletes the MigrationJob `name` (of 2 shards) and asserts that within a minute it is gone,
/// with every child (see [`children_of`]) and every agent process.
async fn delete_and_wait(c: &Cluster, name: &str) {
    let mjs = c.api::<ferry_api::MigrationJob>();
    mjs.delete(name, &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    let (mut gone, mut left, mut alive) = (false, Vec::new(), usize::MAX);
    while start.elapsed() < Duration::from_secs(60) {
        gone = mjs.get_opt(name).await.unwrap().is_none();
        left = children_of(c, name, 2).await;
        alive = c.agents.alive();
        if gone && left.is_empty() && alive == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gone, "the MigrationJob was not deleted\n{}", c.logs());
    assert!(left.is_empty(), "children left after deletion: {left:?}");
    assert_eq!(alive, 0, "agents still run after the deletion");
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
    } = start_slow_copy(&c, "copy", 200, 10).await;
    assert_eq!(
        children_of(&c, "copy", 2).await.len(),
        7,
        "plan, 2 progress ConfigMaps, ServiceAccount, Role, RoleBinding, Job"
    );
    // While it runs the status shows a percent and an ETA (checked gone at the end).
    c.wait_for("copy", "an ETA", Duration::from_secs(60), |mj| {
        mj.status
            .as_ref()
            .is_some_and(|s| s.progress.eta_seconds.is_some() && s.progress.percent.is_some())
    })
    .await;
    // Restart the operator mid-run: no duplicate Job, the run goes on.
    c.kill_controller("e2e").await;
    c.start_controller("e2e", &[]);
    let mj = wait_terminal(&c, "copy", 180).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    let st = mj.status.clone().unwrap();
    assert_eq!(st.progress.counters.objects_copied, objects.len() as u64);
    assert_eq!(st.observed_generation, mj.metadata.generation);
    assert!(st.completion_time.is_some());
    // What the running job showed and the ended one no longer has is gone from the status,
    // not left over from an earlier write.
    assert_eq!(
        (
            st.progress.percent.as_deref(),
            st.progress.eta.as_deref(),
            st.progress.eta_seconds
        ),
        (Some("100%"), None, None),
        "an ended job shows 100% and no ETA: {:?}",
        st.progress
    );
    assert!(
        st.report.as_deref().is_some_and(|r| r.contains(&dst)),
        "the status names the report location: {:?}",
        st.report
    );
    assert_copied(&s3, &dst, &objects).await;
    let jobs = c.agents.jobs_created();
    assert_eq!(
        jobs.len(),
        1,
        "exactly one agents' Job was ever created (the harness watches every Job): {jobs:?}\n{}",
        c.logs()
    );
    let planners = c.agents.planners_created();
    assert_eq!(
        planners.len(),
        1,
        "one planner pod planned the job, once (a restarted operator does not plan again): \
         {planners:?}"
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
    assert!(events.iter().any(|e| e.reason == "Completed"), "{events:?}");
    // Deletion removes the finalizer and every child; copied data stays.
    delete_and_wait(&c, "copy").await;
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
    wait_copied(&c, "pause", 1).await;
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
    let agents: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.metadata.name.as_deref() == Some("pause-agents"))
        .collect();
    assert!(
        agents.len() == 1
            && agents
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
    assert_eq!(c.agents.alive(), 0, "agents still run while suspended");
    let mut resumed = job.clone();
    resumed["spec"]["suspend"] = json!(false);
    resumed["spec"]["requestsPerSecond"] = json!(0);
    c.apply(resumed).await.unwrap();
    let mj = wait_terminal(&c, "pause", 120).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    assert_copied(&s3, &dst, &objects).await;
    c.finish().await;
}

/// Deleting a MigrationJob mid-run stops its agents (the finalizer's cleanup deletes the
/// agents' Job; garbage collection the rest), removes every child, and keeps what was copied.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_running_job_stops_its_agents_and_removes_every_child() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "delete").await;
    let Copy {
        s3, dst, objects, ..
    } = start_slow_copy(&c, "gone", 200, 20).await;
    wait_copied(&c, "gone", 5).await;
    assert!(c.agents.alive() > 0, "no agent runs before the deletion");
    delete_and_wait(&c, "gone").await;
    // What was copied stays, intact, and nothing moves any more.
    let copied = s3.list(&dst).await;
    assert!(
        !copied.is_empty() && copied.len() < objects.len(),
        "{} of {} objects copied: the deletion should come mid-run",
        copied.len(),
        objects.len()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s3.list(&dst).await,
        copied,
        "objects still move after the deletion"
    );
    for k in copied.keys() {
        assert_eq!(&s3.get(&dst, k).await, &objects[k], "{k} differs");
    }
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
    wait_copied(&c, "kill", 10).await;
    let killed = c.agents.kill_one().expect("an agent is running");
    eprintln!("killed agent {killed}");
    let mj = wait_terminal(&c, "kill", 180).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    assert_eq!(
        c.agents.starts(),
        4,
        "the planner once, two shards, and the killed one started once more"
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
    let other = if first == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    let Copy {
        s3, dst, objects, ..
    } = start_slow_copy(&c, "lead", 150, 25).await;
    // The leader keeps the Lease while it lives; the standby does not take it, and does
    // nothing: it never logs that it leads, and every Event comes from the leader.
    for _ in 0..6 {
        assert_eq!(holder().await.as_deref(), Some(first.as_str()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(c.controller_log(&first).contains("leading"));
    assert!(
        !c.controller_log(other).contains("leading"),
        "the standby acts as a leader too:\n{}",
        c.controller_log(other)
    );
    let events = c.events_of("lead").await;
    assert!(
        !events.is_empty() && events.iter().all(|e| e.instance == first),
        "Events before the failover come from {first} only: {events:?}"
    );
    c.kill_controller(&first).await;
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
    let events = c.events_of("lead").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "Completed" && e.instance == other),
        "the standby finished the job after the failover: {events:?}"
    );
    let jobs = c.agents.jobs_created();
    assert_eq!(
        jobs.len(),
        1,
        "exactly one agents' Job across both replicas: {jobs:?}\n{}",
        c.logs()
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
    // The second ran only after the first had finished (both times are RFC 3339 in UTC,
    // whole seconds, so they compare as strings).
    let (done, started) = (
        first.status.as_ref().unwrap().completion_time.clone(),
        second.status.as_ref().unwrap().start_time.clone(),
    );
    assert!(
        matches!((&done, &started), (Some(d), Some(s)) if s >= d),
        "the second job started at {started:?}, before the first ended at {done:?}"
    );
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
        ferry_tests::FaultSchedule::deny(&["secret/denied"]),
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
    let gets = proxy.object_get_keys();
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

/// `ferry.dev/rollback` (issue 16): the operator plans the rollback stage from the stored
/// plan and its agents take back what the job wrote: deleted where still as written, the
/// replaced object restored from its backup, an object changed since the copy kept, and an
/// object the job never wrote untouched (checked with the test's own S3 client). The same
/// token again does nothing; a new one finds nothing left to do.
#[tokio::test(flavor = "multi_thread")]
async fn the_rollback_annotation_takes_back_what_the_job_wrote() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "rollback").await;
    let server = shared_server();
    let s3 = S3::for_server(server);
    let src = s3.create_bucket("op-undo-src").await;
    let dst = s3.create_bucket("op-undo-dst").await;
    let objects: BTreeMap<String, Vec<u8>> = (0..12)
        .map(|i| (format!("k/{i:02}"), ferry_tests::bytes(i, 200 + i as usize)))
        .collect();
    s3.put_all(&src, &objects).await;
    let before = ferry_tests::bytes(77, 123);
    s3.put(&dst, "k/03", before.clone()).await;
    s3.put(&dst, "theirs/kept", b"never the job's").await;
    let other = server.endpoint.replace("127.0.0.1", "localhost");
    c.apply(secret_yaml("creds")).await.unwrap();
    let job = job_yaml_at(
        "undo",
        (&server.endpoint, &src),
        (&other, &dst),
        "creds",
        json!({"backupReplaced": true, "overwrite": "Always"}),
    );
    c.apply(job.clone()).await.unwrap();
    let mj = wait_terminal(&c, "undo", 120).await;
    assert_phase(&mj, ferry_api::Phase::Completed);
    assert_copied(&s3, &dst, &objects).await;
    let changed = b"changed after the copy".to_vec();
    s3.put(&dst, "k/05", changed.clone()).await;

    let mut annotated = job.clone();
    annotated["metadata"]["annotations"] = json!({"ferry.dev/rollback": "undo-1"});
    c.apply(annotated.clone()).await.unwrap();
    let ended = |token: &'static str| {
        move |mj: &ferry_api::MigrationJob| {
            mj.status.as_ref().is_some_and(|s| {
                s.rollback.as_ref().is_some_and(|r| {
                    r.token.as_deref() == Some(token) && r.state == ferry_api::RollbackState::Ended
                })
            })
        }
    };
    let mj = c
        .wait_for(
            "undo",
            "the rollback to end",
            Duration::from_secs(120),
            ended("undo-1"),
        )
        .await;
    assert_phase(&mj, ferry_api::Phase::PartiallyRolledBack);
    let st = mj.status.clone().unwrap();
    let r = st.rollback.clone().unwrap();
    assert_eq!(st.last_rollback_token.as_deref(), Some("undo-1"));
    assert_eq!(
        (r.counts.rolled_back, r.counts.restored, r.counts.kept),
        (10, 1, 1),
        "{r:?}"
    );
    assert_eq!(
        r.counts
            .kept_by_class
            .get(&ferry_api::FailureClass::ChangedSinceCopy),
        Some(&1)
    );
    assert!(
        r.report
            .as_deref()
            .is_some_and(|p| p.ends_with("/rollback/")),
        "{r:?}"
    );
    assert!(
        st.report
            .as_deref()
            .is_some_and(|p| !p.ends_with("/rollback/")),
        "the copy's report stays: {:?}",
        st.report
    );
    let left: Vec<String> = s3.list(&dst).await.into_keys().collect();
    assert_eq!(left, vec!["k/03", "k/05", "theirs/kept"]);
    assert_eq!(
        s3.get(&dst, "k/03").await,
        before,
        "restored from its backup"
    );
    assert_eq!(s3.get(&dst, "k/05").await, changed, "changed since: kept");
    assert_eq!(s3.get(&dst, "theirs/kept").await, b"never the job's");
    // `ferry report --namespace/--name` reads the same report from the cluster: what the
    // rollback kept and why, every key the job wrote.
    let kept = report_in_cluster(&c, "undo", &["--show", "rollback", "--format", "jsonl"]);
    kept.assert_exit(0);
    let kept: Vec<Value> = kept
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        (&kept[0]["key"], &kept[0]["class"]),
        (&json!("k/05"), &json!("ChangedSinceCopy"))
    );
    let written = report_in_cluster(&c, "undo", &["--show", "written", "--format", "csv"]);
    written.assert_exit(0);
    let rows: Vec<&str> = written.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 12, "{}", written.stdout);
    let k03: Vec<&str> = rows[3].split(',').collect();
    assert_eq!((k03[0], k03[3]), ("k/03", "true"), "replaced: {}", rows[3]);
    report_in_cluster(&c, "absent", &[]).assert_exit(1);
    let events = c.events_of("undo").await;
    assert!(
        events.iter().any(|e| e.reason == "RollingBack"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason == "PartiallyRolledBack" && e.type_ == "Warning"),
        "{events:?}"
    );

    // The same value again is not a new request.
    c.apply(annotated.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let again = c.job("undo").await;
    assert_eq!(again.status.as_ref().unwrap().rollback, st.rollback);

    // A new value rolls back again: nothing is left to do.
    annotated["metadata"]["annotations"] = json!({"ferry.dev/rollback": "undo-2"});
    c.apply(annotated).await.unwrap();
    let mj = c
        .wait_for(
            "undo",
            "the second rollback",
            Duration::from_secs(120),
            ended("undo-2"),
        )
        .await;
    let r = mj.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(
        (r.counts.rolled_back, r.counts.restored, r.counts.kept),
        (0, 0, 1),
        "{r:?}"
    );
    assert_eq!(r.counts.already_undone, 11, "{r:?}");
    assert_phase(&mj, ferry_api::Phase::PartiallyRolledBack);
    assert!(
        r.report
            .as_deref()
            .is_some_and(|p| p.ends_with("/rollback-2/")),
        "a second rollback reports in a folder of its own: {r:?}"
    );
    let kept = report_in_cluster(&c, "undo", &["--show", "rollback", "--format", "csv"]);
    kept.assert_exit(0);
    assert_eq!(kept.stdout.lines().count(), 2, "{}", kept.stdout);
    assert!(
        kept.stderr.contains("line(s)") && kept.stdout.contains("k/05,"),
        "the last rollback's kept key: {}",
        kept.stdout
    );
    c.finish().await;
}

/// `ferry report --namespace <the test's> --name NAME ARGS...` with the cluster's kubeconfig
/// (and no AWS credentials of the environment: the report's come from the job's Secret).
fn report_in_cluster(c: &Cluster, name: &str, args: &[&str]) -> ferry_tests::Run {
    let started = Instant::now();
    let out = std::process::Command::new(ferry_tests::ferry_bin())
        .args(["report", "--namespace", &c.ns, "--name", name])
        .args(args)
        .env("KUBECONFIG", c.backend.kubeconfig())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("ferry report runs");
    ferry_tests::Run::from_output(out, started.elapsed())
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
            .any(|e| e.type_ == "Warning" && e.reason == "SecretNotFound"),
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
        events.iter().any(|e| e.type_ == "Warning"),
        "a Warning Event: {events:?}"
    );
    for e in events {
        assert!(!e.note.contains("s3cr3t-value-that-must-not-leak"));
    }
    assert!(
        !c.logs().contains("s3cr3t-value-that-must-not-leak"),
        "the secret leaked into a log"
    );
    c.finish().await;
}

/// Not a test: plays kubelet for the namespace FERRY_DEMO_NAMESPACE on the real API server of
/// FERRY_E2E_KUBECONFIG for FERRY_DEMO_SECONDS (default 600), so `kubectl apply -f examples/...`
/// can be watched running on a cluster without nodes (README, "In a cluster"). Run with
/// `cargo test -p ferry-tests --test e2e -- --ignored --nocapture operator_cluster::kubelet_for`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn kubelet_for_a_namespace() {
    let (Some(kc), Some(ns)) = (
        std::env::var_os("FERRY_E2E_KUBECONFIG"),
        std::env::var("FERRY_DEMO_NAMESPACE").ok(),
    ) else {
        eprintln!("set FERRY_E2E_KUBECONFIG and FERRY_DEMO_NAMESPACE");
        return;
    };
    let secs: u64 = std::env::var("FERRY_DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let kc = PathBuf::from(kc);
    let dir = tempfile::tempdir().unwrap();
    eprintln!(
        "playing kubelet for namespace {ns} for {secs} s; agent logs in {}",
        dir.path().display()
    );
    let agents = Arc::new(Agents::default());
    let kubelet = tokio::spawn(play_kubelet(
        client(&kc).await,
        ns,
        kc,
        dir.path().to_path_buf(),
        agents.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    kubelet.abort();
    agents.stop(|_| true);
}
