//! The attack suite of a shared cluster: a tenant who may only create MigrationJobs, Secrets
//! and ConfigMaps in its namespace (RBAC on a real API server; the admin on the stand-in, which
//! has no RBAC) tries to gain more through the operator. Each test performs one attack and
//! checks that it gained nothing: no foreign object adopted, changed or deleted, no pod run as
//! an identity the tenant does not own, no path into the pods' own files, no stop of the
//! operator for others, no operator memory spent on a hostile endpoint. Each prints its
//! figures as `FIGURE name=value` lines (docs/security.md has them).

use std::time::{Duration, Instant};

use ferry_tests::cluster::{backend, Cluster};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::operator_cluster::{buckets, job_yaml, secret_yaml};

fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE {name}={value}");
}

/// Server-side apply of `v` with `client` (the tenant's) in `ns`.
async fn tenant_apply(client: &Client, ns: &str, v: Value) -> Result<(), kube::Error> {
    let name = v["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply("tenant").force();
    match v["kind"].as_str().unwrap() {
        "Secret" => {
            let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
            api.patch(&name, &pp, &Patch::Apply(&v)).await.map(|_| ())
        }
        _ => {
            // Untyped: a stored object the Rust type cannot hold must not read as a refusal.
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
                client.clone(),
                ns,
                &kube::api::ApiResource::erase::<ferry_api::MigrationJob>(&()),
            );
            api.patch(&name, &pp, &Patch::Apply(&v)).await.map(|_| ())
        }
    }
}

fn reason(mj: &ferry_api::MigrationJob, kind: &str) -> Option<String> {
    mj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| c.reason.clone())
}

/// What identifies an object's state: resourceVersion (any write changes it).
async fn version<K>(api: &Api<K>, name: &str) -> Option<String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .unwrap()
        .and_then(|o| o.meta().resource_version.clone())
}

/// Name takeover: objects named like a job's children exist already (a CI ServiceAccount with
/// a cloud role, its Role and RoleBinding, a ConfigMap, another team's Job). The tenant's jobs
/// named to collide with them get a NameTaken condition and Event; every foreign object keeps
/// its resourceVersion (nothing adopted, changed or deleted), no pod runs, and deleting the
/// tenant's job leaves the foreign Job alone.
#[tokio::test(flavor = "multi_thread")]
async fn name_takeover_touches_no_foreign_object() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "takeover").await;
    let ns = c.ns.clone();
    let pp = PostParams::default();
    let sas: Api<ServiceAccount> = c.api();
    let roles: Api<Role> = c.api();
    let bindings: Api<RoleBinding> = c.api();
    let cms: Api<ConfigMap> = c.api();
    let jobs: Api<Job> = c.api();
    let victim_sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "gitlab-agent",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/ci"}}}))
        .unwrap();
    sas.create(&pp, &victim_sa).await.unwrap();
    let victim_role: Role = serde_json::from_value(json!({"metadata": {"name": "gitlab-agent"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}))
    .unwrap();
    roles.create(&pp, &victim_role).await.unwrap();
    let victim_binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "gitlab-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gitlab-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "gitlab-agent", "namespace": ns}]}))
    .unwrap();
    bindings.create(&pp, &victim_binding).await.unwrap();
    let victim_cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "release-plan"}, "data": {"owner": "release team"}}),
    )
    .unwrap();
    cms.create(&pp, &victim_cm).await.unwrap();
    let victim_job: Job = serde_json::from_value(json!({"metadata": {"name": "build-agents"},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "build", "image": "busybox"}]}}}}))
    .unwrap();
    let victim_job = jobs.create(&pp, &victim_job).await.unwrap();
    let before = (
        version(&sas, "gitlab-agent").await,
        version(&roles, "gitlab-agent").await,
        version(&bindings, "gitlab-agent").await,
        version(&cms, "release-plan").await,
        version(&jobs, "build-agents").await,
    );

    let tenant = c.tenant_client().await;
    let (_s3, src, dst, _objects) = buckets(5).await;
    tenant_apply(&tenant, &ns, secret_yaml("creds"))
        .await
        .unwrap();
    let mut attacks = 0;
    for (name, extra) in [
        ("gitlab", json!({})),
        ("release", json!({})),
        ("build", json!({"suspend": true})),
    ] {
        tenant_apply(&tenant, &ns, job_yaml(name, &src, &dst, "creds", extra))
            .await
            .unwrap();
        attacks += 1;
    }
    for name in ["gitlab", "release", "build"] {
        let mj = c
            .wait_for(name, "NameTaken", Duration::from_secs(60), |mj| {
                reason(mj, "Degraded").as_deref() == Some("NameTaken")
            })
            .await;
        let msg = mj.status.unwrap().message.unwrap_or_default();
        assert!(msg.contains("is not this MigrationJob's"), "{name}: {msg}");
        let events = c.events_of(name).await;
        assert!(
            events
                .iter()
                .any(|e| e.type_ == "Warning" && e.reason == "NameTaken"),
            "{name}: {events:?}"
        );
    }
    // A while later still: nothing of theirs changed, nothing ran.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Deleting the job whose agents' Job name was taken leaves that Job alone.
    let mjs: Api<ferry_api::MigrationJob> = c.api();
    mjs.delete("build", &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while mjs.get_opt("build").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "build is not deleted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = (
        version(&sas, "gitlab-agent").await,
        version(&roles, "gitlab-agent").await,
        version(&bindings, "gitlab-agent").await,
        version(&cms, "release-plan").await,
        version(&jobs, "build-agents").await,
    );
    let touched = [
        before.0 != after.0,
        before.1 != after.1,
        before.2 != after.2,
        before.3 != after.3,
        before.4 != after.4,
    ]
    .iter()
    .filter(|t| **t)
    .count();
    assert_eq!(before, after, "a foreign object was changed or deleted");
    let job_now = jobs.get("build-agents").await.unwrap();
    assert_eq!(job_now.uid(), victim_job.uid());
    let sa_now = sas.get("gitlab-agent").await.unwrap();
    assert!(sa_now.owner_references().is_empty());
    assert_eq!(
        c.agents.starts(),
        0,
        "no planner or agent ran under a taken name (as a foreign ServiceAccount)"
    );
    figure("takeover_attacks", attacks);
    figure("takeover_foreign_objects_touched", touched);
    figure("takeover_pods_run_as_foreign_identity", c.agents.starts());
    c.finish().await;
}

/// An edited plan: the plan ConfigMap sits in the tenant's namespace, so a tenant who may
/// edit ConfigMaps rewrites it to sign the source with the pods' own cloud identity (ambient
/// credentials, not allowed here). The operator does not run a plan that is not the one it
/// asked for: it stops the agents' Job made for it and plans again; the job completes with the
/// plan of its spec. (A plan changed after the agents started is refused by the agents
/// themselves: its SHA-256 is pinned in their Job.)
#[tokio::test(flavor = "multi_thread")]
async fn an_edited_plan_is_never_run() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "plantamper").await;
    let ns = c.ns.clone();
    let tenant = c.tenant_client().await;
    let (_s3, src, dst, objects) = buckets(20).await;
    tenant_apply(&tenant, &ns, secret_yaml("creds"))
        .await
        .unwrap();
    tenant_apply(
        &tenant,
        &ns,
        job_yaml("edit", &src, &dst, "creds", json!({"suspend": true})),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(tenant.clone(), &ns);
    let start = Instant::now();
    let plan = loop {
        let plan = cms
            .get_opt("edit-plan")
            .await
            .unwrap()
            .and_then(|cm| cm.data?.get("plan.json").cloned());
        if let Some(p) = plan {
            if !c.agents.jobs_created().is_empty() {
                break p;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no plan and agents' Job"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut edited: Value = serde_json::from_str(&plan).unwrap();
    assert!(
        edited["transfer"]["source"]["s3"]["auth"].is_object(),
        "{edited}"
    );
    edited["transfer"]["source"]["s3"]["auth"] = json!("defaultChain");
    let patch = json!({"data": {"plan.json": serde_json::to_string_pretty(&edited).unwrap()}});
    cms.patch("edit-plan", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    tenant_apply(
        &tenant,
        &ns,
        job_yaml("edit", &src, &dst, "creds", json!({"suspend": false})),
    )
    .await
    .unwrap();
    let mj = c
        .wait_for("edit", "Completed", Duration::from_secs(120), |mj| {
            mj.status.as_ref().and_then(|s| s.phase) == Some(ferry_api::Phase::Completed)
        })
        .await;
    assert_eq!(
        mj.status.unwrap().progress.counters.objects_copied,
        objects.len() as u64
    );
    let final_plan: Value =
        serde_json::from_str(&cms.get("edit-plan").await.unwrap().data.unwrap()["plan.json"])
            .unwrap();
    assert!(
        final_plan["transfer"]["source"]["s3"]["auth"].is_object(),
        "the plan run is the job's own: {final_plan}"
    );
    assert_eq!(
        c.agents.jobs_created().len(),
        2,
        "the agents' Job made for the edited plan was replaced before any agent ran"
    );
    figure("plan_edit_attacks", 1);
    figure("plan_edit_runs_of_the_edited_plan", 0);
    c.finish().await;
}

/// Paths into the pods' own files: a filesystem side with no volume (the ServiceAccount
/// token's directory, the root) is refused before any pod exists; the job says why.
#[tokio::test(flavor = "multi_thread")]
async fn paths_into_the_pod_are_refused() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "paths").await;
    let ns = c.ns.clone();
    let tenant = c.tenant_client().await;
    let (_s3, _src, dst, _objects) = buckets(1).await;
    tenant_apply(&tenant, &ns, secret_yaml("creds"))
        .await
        .unwrap();
    let server = ferry_tests::shared_server();
    let mut attacks = 0;
    for (name, path) in [
        ("token", "/var/run/secrets/kubernetes.io/serviceaccount"),
        ("root", "/"),
    ] {
        let job = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": name},
            "spec": {"source": {"filesystem": {"path": path}},
                     "destination": {"s3": {"endpoint": server.endpoint, "region": "us-east-1", "bucket": dst,
                        "forcePathStyle": true, "credentialsSecretRef": {"name": "creds"}}}}});
        tenant_apply(&tenant, &ns, job).await.unwrap();
        attacks += 1;
        let mj = c
            .wait_for(name, "Failed", Duration::from_secs(60), |mj| {
                mj.status.as_ref().and_then(|s| s.phase) == Some(ferry_api::Phase::Failed)
            })
            .await;
        let msg = mj.status.unwrap().message.unwrap_or_default();
        assert!(
            msg.contains("must name a persistentVolumeClaim"),
            "{name}: {msg}"
        );
    }
    assert_eq!(c.agents.starts(), 0, "no pod ran");
    assert!(c.agents.jobs_created().is_empty() && c.agents.planners_created().is_empty());
    figure("path_attacks", attacks);
    figure("path_pods_run", c.agents.starts());
    c.finish().await;
}

/// A poison resource: a value the schema may let through but the Rust types cannot hold. A
/// real API server refuses it at apply time; where one is stored anyway (the stand-in checks
/// no schema, like an object stored before a bound existed), it alone is Failed and another
/// job runs to Completed beside it.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_resource_stops_no_one_else() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "poison").await;
    let ns = c.ns.clone();
    let tenant = c.tenant_client().await;
    let (_s3, src, dst, _objects) = buckets(20).await;
    tenant_apply(&tenant, &ns, secret_yaml("creds"))
        .await
        .unwrap();
    let poisons = [
        (
            "bandwidth",
            json!({"bandwidthLimit": "99999999999999999999"}),
        ),
        ("rps", json!({"requestsPerSecond": 4294967296u64})),
    ];
    let mut stored = Vec::new();
    for (name, extra) in &poisons {
        match tenant_apply(
            &tenant,
            &ns,
            job_yaml(name, &src, &dst, "creds", extra.clone()),
        )
        .await
        {
            Ok(()) => stored.push(*name),
            Err(e) => eprintln!("{name}: refused at apply time: {e}"),
        }
    }
    if c.backend.is_real() {
        assert!(stored.is_empty(), "the real API server stored {stored:?}");
    }
    tenant_apply(
        &tenant,
        &ns,
        job_yaml("good", &src, &dst, "creds", json!({})),
    )
    .await
    .unwrap();
    let good = c
        .wait_for("good", "Completed", Duration::from_secs(120), |mj| {
            mj.status.as_ref().and_then(|s| s.phase) == Some(ferry_api::Phase::Completed)
        })
        .await;
    assert!(good.status.is_some());
    for name in &stored {
        let mj: ferry_api::MigrationJob = {
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
                c.client.clone(),
                &ns,
                &kube::api::ApiResource::erase::<ferry_api::MigrationJob>(&()),
            );
            let start = Instant::now();
            loop {
                let o = api.get(name).await.unwrap();
                if o.data["status"]["phase"] == "Failed" {
                    let msg = o.data["status"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    assert!(msg.contains("cannot read this MigrationJob"), "{msg}");
                    break serde_json::from_value(json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
                        "metadata": {"name": name}, "spec": {"source": {"s3": {"bucket": "x"}}, "destination": {"s3": {"bucket": "y"}}}}))
                    .unwrap();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{name}: no Failed status: {o:?}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        let _ = mj;
    }
    figure("poison_attacks", poisons.len());
    figure("poison_refused_at_apply", poisons.len() - stored.len());
    figure("poison_other_jobs_completed", 1);
    c.finish().await;
}

/// Hostile S3 endpoints: one answers every request with a body that never ends, one pages
/// forever (every listing page says more follow), one redirects every request to an "internal"
/// address (a trap that counts its visitors). The operator never talks to them (the planner pod
/// does, bounded by a 60 s probe deadline and, in a cluster, its memory limit and deadline):
/// its memory stays flat and another tenant's job completes meanwhile; the endless body ends
/// as an unreachable source, the endless pages keep only their own planner busy, and the
/// redirect is never followed.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_endpoint_costs_the_operator_nothing() {
    let Some(b) = backend() else { return };
    let c = Cluster::start(b, "hostile").await;
    let ns = c.ns.clone();
    let tenant = c.tenant_client().await;
    let (_s3, src, dst, objects) = buckets(40).await;
    tenant_apply(&tenant, &ns, secret_yaml("creds"))
        .await
        .unwrap();
    let hostile = endless_server().await;
    let server = ferry_tests::shared_server();
    let side = |endpoint: &str, bucket: &str| json!({"s3": {"endpoint": endpoint, "region": "us-east-1", "bucket": bucket, "forcePathStyle": true, "credentialsSecretRef": {"name": "creds"}}});
    let job = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": "hostile"},
        "spec": {"source": side(&hostile, "anything"), "destination": side(&server.endpoint, &dst),
                 "parallelism": {"shards": 4}}});
    tenant_apply(&tenant, &ns, job).await.unwrap();
    let pages = endless_pages_server().await;
    let (redirect, trap_hits) = redirect_server().await;
    for (name, endpoint) in [("pages", &pages), ("redirect", &redirect)] {
        let job = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob", "metadata": {"name": name},
            "spec": {"source": side(endpoint, "anything"), "destination": side(&server.endpoint, &dst),
                     "parallelism": {"shards": 4}}});
        tenant_apply(&tenant, &ns, job).await.unwrap();
    }
    let rss_before = c.controller_peak_rss_kib("e2e").unwrap_or(0);
    tenant_apply(
        &tenant,
        &ns,
        job_yaml("other", &src, &dst, "creds", json!({})),
    )
    .await
    .unwrap();
    let other = c
        .wait_for("other", "Completed", Duration::from_secs(120), |mj| {
            mj.status.as_ref().and_then(|s| s.phase) == Some(ferry_api::Phase::Completed)
        })
        .await;
    assert_eq!(
        other.status.unwrap().progress.counters.objects_copied,
        objects.len() as u64
    );
    let mj = c
        .wait_for(
            "hostile",
            "the source named unreachable",
            Duration::from_secs(150),
            |mj| {
                mj.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "SourceReachable" && c.status == "False")
                })
            },
        )
        .await;
    let msg = mj.status.unwrap().message.unwrap_or_default();
    assert!(msg.chars().count() <= 1000, "{}", msg.len());
    let redirected = c
        .wait_for(
            "redirect",
            "the redirecting source refused",
            Duration::from_secs(150),
            |mj| {
                mj.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "SourceReachable" && c.status == "False")
                })
            },
        )
        .await;
    eprintln!(
        "redirect: {}",
        redirected.status.unwrap().message.unwrap_or_default()
    );
    assert_eq!(
        trap_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a redirect to an internal address was followed"
    );
    // The endless pages keep their planner busy, and only it: the job waits, planning.
    let paged = c.job("pages").await;
    let st = paged.status.unwrap_or_default();
    assert_eq!(st.phase, Some(ferry_api::Phase::Pending), "{st:?}");
    let rss = c.controller_peak_rss_kib("e2e").unwrap_or(0);
    eprintln!("operator peak RSS: {rss_before} KiB before, {rss} KiB after; hostile: {msg}");
    assert!(rss < 150 * 1024, "the operator grew to {rss} KiB");
    figure("hostile_operator_peak_rss_mib", rss / 1024);
    figure("hostile_other_job_completed", 1);
    figure("hostile_endpoints", 3);
    figure("hostile_redirects_followed", 0);
    c.finish().await;
}

/// A server that answers every request with 200 and a body that never ends (1 MiB/s of XML
/// that never closes). Returns its endpoint.
async fn endless_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let open = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>x</Name>";
                let _ = sock
                    .write_all(format!("{:x}\r\n{open}\r\n", open.len()).as_bytes())
                    .await;
                let chunk = "<Contents>".repeat(6_553); // 65 530 bytes
                let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
                loop {
                    for _ in 0..16 {
                        if sock.write_all(framed.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A server that answers every listing with a full page of keys that says more follow, for
/// ever (each page's keys after the last page's). Returns its endpoint.
async fn endless_pages_server() -> String {
    serve(|request: &str| {
        let page: u64 = request
            .split(['&', '?', ' '])
            .find_map(|p| p.strip_prefix("continuation-token=p"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>anything</Name><Prefix></Prefix><KeyCount>1000</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>");
        body.push_str(&format!("<NextContinuationToken>p{}</NextContinuationToken>", page + 1));
        for i in 0..1000u64 {
            body.push_str(&format!("<Contents><Key>k/{:012}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>", page * 1000 + i));
        }
        body.push_str("</ListBucketResult>");
        format!(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    })
    .await
}

/// A server that redirects every request to a trap standing for an internal address (the
/// cloud metadata service); returns its endpoint and the trap's visitor count.
async fn redirect_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let trap = serve(move |_: &str| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 19\r\n\r\nami-id\ninstance-id\n"
            .to_string()
    })
    .await;
    let endpoint = serve(move |_: &str| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nconnection: close\r\nlocation: {trap}/latest/meta-data/\r\ncontent-length: 0\r\n\r\n"
        )
    })
    .await;
    (endpoint, hits)
}

/// A one-response-per-connection HTTP server answering each request with `answer(request
/// line and headers)`. Returns its endpoint.
async fn serve(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let _ = sock.write_all(answer(&request).as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}
