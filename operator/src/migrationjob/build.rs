//! The objects the operator creates for a MigrationJob, built as pure functions: the plan,
//! live limits and progress ConfigMaps, the pods' ServiceAccount, Role and RoleBinding, the planner's Job and
//! the agents' Indexed Job. Every one is owned by the MigrationJob, so deleting it removes
//! them; none holds a secret, and every pod meets the restricted Pod Security Standard.
//! Names, keys and variables come from `ferry_k8s`, which the agent reads them with.

use std::collections::BTreeMap;

use ferry_api::{Endpoint, JobPlan, MigrationJob, Side, ValidatedSpec};
use ferry_core::plan::report_prefix;
use ferry_core::planning::{PlanRequest, RequiredVar};
use ferry_core::stores::{
    S3Auth, UrlListConfig, UrlListLocation, URL_LIST_HEADER_PREFIX, URL_LIST_MOUNT_DIR,
};
use ferry_core::{LiveLimits, StoreConfig, Transfer};
use ferry_k8s::env;
use ferry_k8s::limits_configmap::limits_data;
use ferry_k8s::names::{
    agent_name, job_name, limits_name, plan_name, plan_path, planner_name, request_path,
    shard_name, shard_prefix, AGENT_COMMAND, JOB_LABEL, PLAN_MOUNT, REQUEST_KEY,
};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, KeyToPath, LocalObjectReference, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext,
    ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

fn meta(mj: &MigrationJob, name: String) -> ObjectMeta {
    let owner = mj
        .controller_owner_ref(&())
        .expect("a stored MigrationJob has a name and uid");
    ObjectMeta {
        name: Some(name),
        namespace: mj.metadata.namespace.clone(),
        owner_references: Some(vec![owner]),
        labels: Some(BTreeMap::from([
            (
                JOB_LABEL.to_string(),
                mj.metadata.name.clone().unwrap_or_default(),
            ),
            ("app.kubernetes.io/managed-by".into(), "ferry".into()),
        ])),
        ..Default::default()
    }
}

/// What every pod the operator creates for a job shares, from the operator's settings.
#[derive(Debug, Clone, Default)]
pub struct Pods {
    pub image: String,
    pub image_pull_secrets: Vec<String>,
    pub service_account_annotations: BTreeMap<String, String>,
    /// The longest a planner pod may run.
    pub planner_deadline_seconds: i64,
    /// The operator's log format (`FERRY_LOG_FORMAT`), passed on to the pods so that all of
    /// Ferry logs alike; None: their default (text).
    pub log_format: Option<String>,
    /// Where the planner and agent pods may run (the chart's `agent.nodeSelector`,
    /// `tolerations`, `affinity`, `priorityClassName`).
    pub scheduling: Scheduling,
}

/// Where the pods of a job may run: the fields of a PodSpec a platform team sets for all of
/// Ferry's pods (`--agent-scheduling` / `FERRY_AGENT_SCHEDULING`, a JSON object).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scheduling {
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    #[serde(default)]
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
}

/// Where a side's volume is mounted in the agents and the planner: a fixed root chosen by
/// Ferry, never the user's path (which names a folder inside the volume, a `subPath`).
pub fn mount_root(side: Side) -> String {
    format!("/mnt/ferry/{}", side.field())
}

/// The sides as the pods see them: a filesystem side at its volume's mount root.
pub fn cluster_transfer(t: &Transfer) -> Transfer {
    let mut t = t.clone();
    let at_root = |c: &mut StoreConfig, side: Side| {
        if let StoreConfig::Filesystem(fs) = c {
            fs.path = mount_root(side);
        }
    };
    at_root(&mut t.source, Side::Source);
    at_root(&mut t.destination, Side::Destination);
    if let Some(r) = t.report.as_mut() {
        at_root(r, Side::Report);
    }
    t
}

fn sides(mj: &MigrationJob) -> [(Side, Option<&Endpoint>); 3] {
    [
        (Side::Source, Some(&mj.spec.source)),
        (Side::Destination, Some(&mj.spec.destination)),
        (Side::Report, mj.spec.report.as_ref()),
    ]
}

/// What a source's own rules refuse before anything is read: a database source's table and
/// column names, its `where` condition and its templates, checked as its agents will check
/// them, without connecting (so a bad spec fails at once as invalid, not at planning).
pub fn source_refusals(v: &ValidatedSpec) -> Vec<String> {
    use ferry_engine::db::config::Check;
    match &v.transfer.source {
        StoreConfig::Database(c) => c
            .check()
            .err()
            .map(|e| format!("spec.source.database.{e}"))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// The paths without a volume: in a cluster a path would be the agents' own filesystem
/// (their image, their ServiceAccount token), so a filesystem side must name a claim, and a
/// URL list cannot be a file (no volume is mounted for it); a SQLite file on a volume is
/// written back by one shard only.
pub fn volume_refusals(mj: &MigrationJob) -> Vec<String> {
    sides(mj)
        .into_iter()
        .filter_map(|(side, ep)| {
            let l = ep?.location().ok()?;
            let field = side.field();
            if l.kind() == "filesystem" && l.volume().is_none() {
                return Some(format!(
                    "spec.{field}.filesystem: in a cluster a filesystem side must name a \
                     persistentVolumeClaim (its path is then a folder inside that volume)"
                ));
            }
            let config = l.store_config();
            let list = url_list_of(&config)?;
            matches!(list.list, UrlListLocation::Path { .. }).then(|| {
                format!(
                    "spec.{field}.urlList.path: in a cluster no volume is mounted for a list \
                     file; give the list as configMapRef (up to 1 MiB, mounted into the pods) \
                     or as s3 (an object in a bucket)"
                )
            })
        })
        .chain(collect_refusal(mj))
        .chain(sqlite_volume_refusal(mj))
        .collect()
}

/// Whether the source is a URL list the planner collects from an API first.
fn collects(mj: &MigrationJob) -> bool {
    let Ok(l) = mj.spec.source.location() else {
        return false;
    };
    url_list_of(&l.store_config())
        .is_some_and(|u| matches!(u.list, UrlListLocation::Collect { .. }))
}

/// A collected URL list is written to the report location, where the agents read it: in a
/// cluster that must be a bucket (a volume is not mounted into the planner and every agent).
fn collect_refusal(mj: &MigrationJob) -> Option<String> {
    let report = mj.spec.report.as_ref().unwrap_or(&mj.spec.destination);
    let kind = report.location().ok()?.kind();
    (collects(mj) && kind != "s3").then(|| {
        format!(
            "spec.source.urlList.collect: in a cluster the collected list is written to the \
             report location for the agents to read, which must be a bucket; it is {kind} \
             (set spec.report to an s3 location)"
        )
    })
}

/// A SQLite file on a volume is written back by one agent only: its locks are not reliable
/// on network filesystems, so writers in several pods could corrupt it.
fn sqlite_volume_refusal(mj: &MigrationJob) -> Option<String> {
    let db = mj.spec.source.database.as_ref()?;
    (db.volume.is_some() && db.write_back.is_some() && mj.spec.parallelism.shards > 1).then(|| {
        "spec.parallelism.shards: a database on a volume (a SQLite file) with writeBack is \
         copied by one shard: SQLite's file locks are not reliable on network filesystems, so \
         writers in several pods could corrupt it"
            .to_string()
    })
}

/// The claim of a database source on a volume (a SQLite file), mounted at its `mountPath`
/// in the planner and agent pods: read-only unless `writeBack` writes the file.
fn database_volume(mj: &MigrationJob, volumes: &mut Vec<Volume>, mounts: &mut Vec<VolumeMount>) {
    let Some(db) = mj.spec.source.database.as_ref() else {
        return;
    };
    let Some(v) = &db.volume else {
        return;
    };
    let read_only = v.read_only(db.write_back.is_some());
    let name = "database-data".to_string();
    volumes.push(Volume {
        name: name.clone(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: v.claim_name.clone(),
            read_only: Some(read_only),
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name,
        mount_path: v.mount_path.trim_end_matches('/').to_string(),
        sub_path: v
            .sub_path
            .clone()
            .filter(|s| !s.trim_matches('/').is_empty()),
        read_only: Some(read_only),
        ..Default::default()
    });
}

fn url_list_of(c: &StoreConfig) -> Option<&UrlListConfig> {
    match c {
        StoreConfig::UrlList(u) => Some(u),
        _ => None,
    }
}

/// The S3 sides that would use the pods' own cloud identity (no Secret, not anonymous), as
/// fields.
pub fn ambient_sides(mj: &MigrationJob) -> Vec<String> {
    sides(mj)
        .into_iter()
        .filter_map(|(side, ep)| {
            let l = ep?.location().ok()?;
            let ambient = matches!(
                l.store_config(),
                StoreConfig::S3(ref c) if c.auth == S3Auth::DefaultChain
            );
            ambient.then(|| format!("spec.{}.s3", side.field()))
        })
        .collect()
}

/// Whether `plan` is one the operator would have made for `mj` (first run, retry or delete
/// stage): its job, its report folder,
/// and exactly the sides (endpoints, credentials, paths) of the spec as the pods see them
/// (a collect source replaced by the list the planner collected, where the job keeps it).
pub fn plan_is_of(mj: &MigrationJob, v: &ValidatedSpec, plan: &JobPlan) -> bool {
    let want = plan_request(mj, v).plan;
    let t = &plan.transfer;
    let w = &want.transfer;
    plan.namespace == want.namespace
        && plan.name == want.name
        && plan.uid == want.uid
        // Its folder, or a retry's folder inside it.
        && plan.report_prefix.starts_with(&want.report_prefix)
        && (t.source == w.source
            || Some(&t.source) == ferry_core::collect::collected_source(&want).as_ref())
        && t.destination == w.destination
        && t.report == w.report
}

/// What the planner is asked: the plan of the first run but its ranges, the shard count, and
/// the Secret keys it must find (each with the problem to report, naming Secret and key).
pub fn plan_request(mj: &MigrationJob, v: &ValidatedSpec) -> PlanRequest {
    let ns = mj.metadata.namespace.clone().unwrap_or_default();
    let name = mj.metadata.name.clone().unwrap_or_default();
    let uid = mj.metadata.uid.clone().unwrap_or_default();
    let mut required = Vec::new();
    for (side, ep) in sides(mj) {
        let Some(l) = ep.and_then(|e| e.location().ok()) else {
            continue;
        };
        let Some(secret) = l.secret() else { continue };
        for key in secret.keys.iter().filter(|k| k.required) {
            required.push(RequiredVar {
                name: env::secret_var(side, key.name),
                problem: format!(
                    "spec.{}.{}.{}: Secret {ns}/{} does not exist or has no key {} (a job may \
                     only use Secrets of its own namespace)",
                    side.field(),
                    l.kind(),
                    secret.field,
                    secret.name,
                    key.name
                ),
            });
        }
    }
    PlanRequest {
        plan: JobPlan {
            rollback_token: None,
            namespace: ns.clone(),
            name: name.clone(),
            uid: uid.clone(),
            transfer: cluster_transfer(&v.transfer),
            spec_hash: v.spec_hash.clone(),
            shards: Vec::new(),
            only_keys: None,
            report_prefix: report_prefix(&ns, &name, &uid),
            attempt: 0,
            retry_failed_from: None,
            stage: Default::default(),
        },
        shards: v.shards,
        required,
        check_source: true,
        check_destination: true,
    }
}

/// The planner's request as stored (its SHA-256 pins it in the planner's Job).
pub fn request_text(req: &PlanRequest) -> String {
    serde_json::to_string_pretty(req).expect("serializes")
}

/// The plan ConfigMap, holding the planner's request (the planner adds its answer).
pub fn request_configmap(mj: &MigrationJob, req: &PlanRequest) -> ConfigMap {
    let name = mj.metadata.name.clone().unwrap_or_default();
    ConfigMap {
        metadata: meta(mj, plan_name(&name)),
        data: Some(BTreeMap::from([(
            REQUEST_KEY.to_string(),
            request_text(req),
        )])),
        ..Default::default()
    }
}

/// The progress object of shard `i`, created empty; its agent fills it.
pub fn shard_configmap(mj: &MigrationJob, i: u32) -> ConfigMap {
    let name = mj.metadata.name.clone().unwrap_or_default();
    ConfigMap {
        metadata: meta(mj, shard_name(&name, i)),
        data: Some(BTreeMap::new()),
        ..Default::default()
    }
}

/// The live limits ConfigMap, holding `limits`; the agents follow it.
pub fn limits_configmap(mj: &MigrationJob, limits: &LiveLimits) -> ConfigMap {
    let name = mj.metadata.name.clone().unwrap_or_default();
    ConfigMap {
        metadata: meta(mj, limits_name(&name)),
        data: Some(limits_data(limits)),
        ..Default::default()
    }
}

/// The identity of the job's pods and exactly the rights they need: the planner patches the
/// plan ConfigMap (its answer); the agents get, update and patch their own shards' progress
/// objects (by name; `create` cannot be limited that way, so the operator pre-creates them),
/// and get, list and watch the live limits ConfigMap (by name: a list or watch is allowed
/// with a `metadata.name` field selector). Nothing else: no Secret (their values come by
/// `secretKeyRef` or `envFrom`, resolved by the kubelet).
pub fn agent_access(
    mj: &MigrationJob,
    shards: u32,
    annotations: &BTreeMap<String, String>,
) -> (ServiceAccount, Role, RoleBinding) {
    let name = mj.metadata.name.clone().unwrap_or_default();
    let mut sa_meta = meta(mj, agent_name(&name));
    if !annotations.is_empty() {
        sa_meta.annotations = Some(annotations.clone());
    }
    let sa = ServiceAccount {
        metadata: sa_meta,
        // Mounted only in the pods that set it (both need the API for their records).
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(mj, agent_name(&name)),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some((0..shards).map(|i| shard_name(&name, i)).collect()),
                verbs: vec!["get".into(), "update".into(), "patch".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some(vec![plan_name(&name)]),
                verbs: vec!["patch".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some(vec![limits_name(&name)]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..Default::default()
            },
        ]),
    };
    let binding = RoleBinding {
        metadata: meta(mj, agent_name(&name)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: agent_name(&name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: agent_name(&name),
            namespace: mj.metadata.namespace.clone(),
            ..Default::default()
        }]),
    };
    (sa, role, binding)
}

fn log_format_env(pods: &Pods) -> Option<EnvVar> {
    pods.log_format
        .as_deref()
        .map(|f| value_env(env::LOG_FORMAT, f))
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn namespace_env() -> EnvVar {
    EnvVar {
        name: env::NAMESPACE.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.namespace".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: String, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Credentials of every side, by reference only (`secretKeyRef`), under names of their own.
/// The planner's are all optional: it reports a missing Secret or key itself (a required
/// reference would keep its pod from starting, with nothing said on the job).
fn secrets_env(mj: &MigrationJob, all_optional: bool, out: &mut Vec<EnvVar>) {
    for (side, ep) in sides(mj) {
        // A single value of a Secret, under the side secret it becomes (a database's
        // connection URL as DATABASE_URL).
        if let Some(v) = ep
            .and_then(|e| e.location().ok())
            .and_then(|l| l.secret_value())
        {
            out.push(secret_env(
                env::secret_var(side, v.as_key),
                v.name,
                v.key,
                all_optional,
            ));
        }
        let Some(secret) = ep.and_then(|e| e.location().ok()).and_then(|l| l.secret()) else {
            continue;
        };
        for key in secret.keys {
            out.push(secret_env(
                env::secret_var(side, key.name),
                secret.name,
                key.name,
                all_optional || !key.required,
            ));
        }
    }
}

/// The volumes the sides' locations need, each at its side's mount root with the user's path
/// as the folder inside the claim.
fn side_volumes(mj: &MigrationJob, volumes: &mut Vec<Volume>, mounts: &mut Vec<VolumeMount>) {
    for (side, ep) in sides(mj) {
        let Some(v) = ep.and_then(|e| e.location().ok()).and_then(|l| l.volume()) else {
            continue;
        };
        let name = format!("{}-data", side.field());
        volumes.push(Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: v.claim.claim_name.clone(),
                read_only: Some(v.claim.read_only),
            }),
            ..Default::default()
        });
        let folder = v.mount_path.trim_matches('/');
        mounts.push(VolumeMount {
            name,
            mount_path: mount_root(side),
            sub_path: (!folder.is_empty()).then(|| folder.to_string()),
            read_only: Some(v.claim.read_only),
            ..Default::default()
        });
    }
}

/// Where the pods' scratch `emptyDir` is mounted; `TMPDIR` names it (the root filesystem is
/// read-only).
pub const SCRATCH_MOUNT: &str = "/tmp";

/// The most the scratch `emptyDir` of a planner or agent pod may hold: a URL list is sorted
/// there, in about as much disk as the list (a 4-million-line list takes some hundreds of
/// MiB). A pod that writes more is evicted by the kubelet.
pub const SCRATCH_SIZE_LIMIT: &str = "2Gi";

/// What a URL-list source needs in the planner and the agents: its ConfigMap (a
/// `configMapRef`) mounted read-only at [`URL_LIST_MOUNT_DIR`], the key as the file of its
/// name, and [`FERRY_URL_LIST_DIR`](env::URL_LIST_DIR) naming that folder; a scratch
/// `emptyDir` with `TMPDIR` naming it, where the list is sorted. Nothing for other sources.
///
/// The ConfigMap volume is optional: a missing ConfigMap or key leaves the folder empty and the
/// planner says so on the job, where a required one would keep its pod from starting
/// (nothing said until its deadline).
fn url_list_volumes(
    mj: &MigrationJob,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
    envs: &mut Vec<EnvVar>,
) {
    let Some(list) = mj
        .spec
        .source
        .location()
        .ok()
        .map(|l| l.store_config())
        .and_then(|c| url_list_of(&c).cloned())
    else {
        return;
    };
    if let UrlListLocation::ConfigMap { name, key } = &list.list {
        volumes.push(Volume {
            name: "url-list".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                items: Some(vec![KeyToPath {
                    key: key.clone(),
                    path: key.clone(),
                    ..Default::default()
                }]),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "url-list".into(),
            mount_path: URL_LIST_MOUNT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        envs.push(value_env(env::URL_LIST_DIR, URL_LIST_MOUNT_DIR));
    }
    volumes.push(Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(SCRATCH_SIZE_LIMIT.into())),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "scratch".into(),
        mount_path: SCRATCH_MOUNT.into(),
        ..Default::default()
    });
    envs.push(value_env(env::TMPDIR, SCRATCH_MOUNT));
}

/// The Secrets the agents get whole (a URL list's request headers), by reference only: each
/// key becomes a variable with the side's prefix and
/// [`URL_LIST_HEADER_PREFIX`] (`FERRY_SOURCE_HEADER_Authorization`), which
/// `ferry_k8s::env::secrets_from` maps back. Not optional: without its headers an agent
/// would send requests the server refuses; a missing Secret keeps the pod from starting, which
/// the job reports (`CreateContainerConfigError`).
fn whole_secrets(mj: &MigrationJob) -> Vec<EnvFromSource> {
    sides(mj)
        .into_iter()
        .filter_map(|(side, ep)| {
            let name = ep?.location().ok()?.whole_secret()?.to_string();
            Some(EnvFromSource {
                prefix: Some(env::secret_var(side, URL_LIST_HEADER_PREFIX)),
                secret_ref: Some(SecretEnvSource {
                    name,
                    optional: None,
                }),
                ..Default::default()
            })
        })
        .collect()
}

/// The plan ConfigMap, mounted read-only where the pods read their plan (or request).
fn plan_volume(name: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "plan".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: plan_name(name),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "plan".into(),
            mount_path: PLAN_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// The user the image runs as (distroless `nonroot`).
const RUN_AS: i64 = 65532;

/// A pod that meets the restricted Pod Security Standard: non-root, no privilege escalation,
/// every capability dropped, the runtime's default seccomp profile, a read-only root
/// filesystem; the ServiceAccount token mounted (it reports through the API), no Service
/// links, pulling with the configured Secrets.
fn restricted_pod(
    name: &str,
    pods: &Pods,
    container: Container,
    volumes: Vec<Volume>,
) -> PodTemplateSpec {
    let spec = PodSpec {
        service_account_name: Some(agent_name(name)),
        automount_service_account_token: Some(true),
        enable_service_links: Some(false),
        restart_policy: Some("Never".into()),
        termination_grace_period_seconds: Some(30),
        node_selector: (!pods.scheduling.node_selector.is_empty())
            .then(|| pods.scheduling.node_selector.clone()),
        tolerations: (!pods.scheduling.tolerations.is_empty())
            .then(|| pods.scheduling.tolerations.clone()),
        affinity: pods.scheduling.affinity.clone(),
        priority_class_name: pods.scheduling.priority_class_name.clone(),
        image_pull_secrets: (!pods.image_pull_secrets.is_empty()).then(|| {
            pods.image_pull_secrets
                .iter()
                .map(|n| LocalObjectReference { name: n.clone() })
                .collect()
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![Container {
            image: Some(pods.image.clone()),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Default::default()
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..container
        }],
        volumes: Some(volumes),
        ..Default::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([(JOB_LABEL.to_string(), name.to_string())])),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

fn resources(request_cpu: &str, request_mib: u64, limit_mib: u64) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity(request_cpu.into())),
            ("memory".into(), Quantity(format!("{request_mib}Mi"))),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity(format!("{limit_mib}Mi")),
        )])),
        ..Default::default()
    }
}

/// The memory a planner pod may use: its key sample and one listing page, whatever the
/// endpoint sends (a larger answer kills the pod, never the operator).
pub const PLANNER_MEMORY_MIB: u64 = 256;

/// The planner's Job: one pod, under a deadline, that checks the Secrets and both endpoints
/// and plans the shards, then answers in the plan ConfigMap. Indexed with one completion,
/// like the agents, and removed by the Job controller some minutes after it ends.
pub fn planner_job(mj: &MigrationJob, pods: &Pods, request_sha256: &str) -> Job {
    let name = mj.metadata.name.clone().unwrap_or_default();
    let mut envs = vec![
        value_env(env::PLAN, &request_path()),
        value_env(env::PLAN_SHA256, request_sha256),
        value_env(env::PLAN_CONFIGMAP, &plan_name(&name)),
        namespace_env(),
    ];
    envs.extend(log_format_env(pods));
    secrets_env(mj, true, &mut envs);
    let (plan_vol, plan_mount) = plan_volume(&name);
    let (mut volumes, mut mounts) = (vec![plan_vol], vec![plan_mount]);
    side_volumes(mj, &mut volumes, &mut mounts);
    database_volume(mj, &mut volumes, &mut mounts);
    // The planner samples a URL list (no request to its servers: no headers), but collects
    // a `collect` list from its API first (with the headers).
    url_list_volumes(mj, &mut volumes, &mut mounts, &mut envs);
    let env_from = if collects(mj) {
        whole_secrets(mj)
    } else {
        Vec::new()
    };
    let container = Container {
        name: "planner".into(),
        command: Some(vec![AGENT_COMMAND.into(), "plan".into()]),
        env: Some(envs),
        env_from: (!env_from.is_empty()).then_some(env_from),
        volume_mounts: Some(mounts),
        resources: Some(resources(
            "100m",
            PLANNER_MEMORY_MIB / 2,
            PLANNER_MEMORY_MIB,
        )),
        ..Default::default()
    };
    Job {
        metadata: meta(mj, planner_name(&name)),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(1),
            parallelism: Some(1),
            backoff_limit: Some(1),
            active_deadline_seconds: Some(pods.planner_deadline_seconds),
            ttl_seconds_after_finished: Some(300),
            template: restricted_pod(&name, pods, container, volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Indexed Job that runs `plan`: one index per shard, retried per index, never retried on
/// a job-fatal exit (1).
pub fn agent_job(
    mj: &MigrationJob,
    plan: &JobPlan,
    plan_sha256: &str,
    pods: &Pods,
    suspend: bool,
) -> Job {
    let name = mj.metadata.name.clone().unwrap_or_default();
    let shards = plan.shards.len() as i32;
    let mut envs = vec![
        value_env(env::PLAN, &plan_path()),
        value_env(env::PLAN_SHA256, plan_sha256),
        value_env(env::PROGRESS_CONFIGMAP_PREFIX, &shard_prefix(&name)),
        value_env(env::LIMITS_CONFIGMAP, &limits_name(&name)),
        namespace_env(),
    ];
    envs.extend(log_format_env(pods));
    secrets_env(mj, false, &mut envs);
    let (plan_vol, plan_mount) = plan_volume(&name);
    let (mut volumes, mut mounts) = (vec![plan_vol], vec![plan_mount]);
    side_volumes(mj, &mut volumes, &mut mounts);
    database_volume(mj, &mut volumes, &mut mounts);
    url_list_volumes(mj, &mut volumes, &mut mounts, &mut envs);
    let env_from = whole_secrets(mj);
    // The plan's budget: the agents never take a live budget above it (their memory limit
    // is made for it).
    let limit_mib = plan.transfer.memory_budget / (1 << 20) + 256;
    let container = Container {
        name: "agent".into(),
        command: Some(vec![AGENT_COMMAND.into()]),
        env: Some(envs),
        env_from: (!env_from.is_empty()).then_some(env_from),
        volume_mounts: Some(mounts),
        resources: Some(resources("500m", limit_mib / 2, limit_mib)),
        ..Default::default()
    };
    Job {
        metadata: meta(mj, job_name(&name)),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(shards),
            parallelism: Some(shards),
            backoff_limit_per_index: Some(3),
            suspend: Some(suspend),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    // An eviction, a node drain or a preemption is not the agent's failure:
                    // it does not count against the index's retries (the agent checkpointed
                    // on SIGTERM and goes on from there).
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                        ..Default::default()
                    },
                    PodFailurePolicyRule {
                        action: "FailIndex".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some("agent".into()),
                            operator: "In".into(),
                            values: vec![1],
                        }),
                        ..Default::default()
                    },
                ],
            }),
            template: restricted_pod(&name, pods, container, volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_source_with_a_bad_condition_or_template_is_refused_before_planning() {
        let job = |db: serde_json::Value| -> ValidatedSpec {
            let spec: ferry_api::MigrationJobSpec = serde_json::from_value(serde_json::json!({
                "source": {"database": db},
                "destination": {"s3": {"bucket": "photos"}},
            }))
            .unwrap();
            ferry_api::validate(&spec).unwrap()
        };
        let base = serde_json::json!({
            "connectionSecretRef": {"name": "db", "key": "DATABASE_URL"},
            "table": "images", "idColumn": "id", "dataColumn": "data",
            "key": "img/{id}.{ext}",
        });
        assert!(source_refusals(&job(base.clone())).is_empty());
        let with = |k: &str, v: serde_json::Value| {
            let mut db = base.clone();
            db[k] = v;
            source_refusals(&job(db))
        };
        let refused = with("where", serde_json::json!("a = 1 -- and more"));
        assert_eq!(
            refused,
            ["spec.source.database.where: comments are not allowed"]
        );
        let refused = with("key", serde_json::json!("img/{id"));
        assert!(
            refused[0].starts_with("spec.source.database.key: "),
            "{refused:?}"
        );
        let refused = with(
            "writeBack",
            serde_json::json!({"column": "url", "value": "{owner}"}),
        );
        assert!(
            refused[0].starts_with("spec.source.database.writeBack.value: "),
            "{refused:?}"
        );
    }

    fn mj() -> MigrationJob {
        serde_yaml::from_str(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: photos, namespace: media, uid: u1}\nspec:\n  source: {s3: {bucket: src, credentialsSecretRef: {name: aws-creds}}}\n  destination: {filesystem: {path: /backup, persistentVolumeClaim: {claimName: backup}}}\n  parallelism: {shards: 3}\n",
        )
        .unwrap()
    }

    #[test]
    fn job_is_indexed_owned_and_references_secrets_only_by_name() {
        let m = mj();
        let v = ferry_api::validate(&m.spec).unwrap();
        let plan = JobPlan {
            rollback_token: None,
            namespace: "media".into(),
            name: "photos".into(),
            uid: "u1".into(),
            spec_hash: v.spec_hash.clone(),
            transfer: v.transfer.clone(),
            shards: (0..3)
                .map(|index| ferry_api::ShardRange {
                    index,
                    ..Default::default()
                })
                .collect(),
            only_keys: None,
            report_prefix: String::new(),
            attempt: 0,
            retry_failed_from: None,
            stage: Default::default(),
        };
        let job = agent_job(&m, &plan, "d1g3st", &pods(), true);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(
            (spec.completions, spec.parallelism, spec.suspend),
            (Some(3), Some(3), Some(true))
        );
        assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        // Evictions and drains do not use up an index's retries; exit 1 fails the index.
        let rules = &spec.pod_failure_policy.as_ref().unwrap().rules;
        assert_eq!(rules[0].action, "Ignore");
        assert_eq!(
            rules[0].on_pod_conditions.as_ref().unwrap()[0].type_,
            "DisruptionTarget"
        );
        assert_eq!(rules[1].action, "FailIndex");
        let pod = spec.template.spec.as_ref().unwrap();
        let env = pod.containers[0].env.as_ref().unwrap();
        let key = env
            .iter()
            .find(|e| e.name == "FERRY_SOURCE_AWS_SECRET_ACCESS_KEY")
            .unwrap();
        assert!(key.value.is_none());
        assert_eq!(
            key.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "aws-creds"
        );
        assert!(
            !env.iter()
                .any(|e| e.name.starts_with("FERRY_DESTINATION_AWS")),
            "the destination has no Secret"
        );
        assert!(
            !env.iter().any(|e| e.name.starts_with("AWS_")),
            "the default chain must not see either side's keys"
        );
        let limits = env
            .iter()
            .find(|e| e.name == env::LIMITS_CONFIGMAP)
            .unwrap();
        assert_eq!(limits.value.as_deref(), Some("photos-limits"));
        let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
        // The claim is mounted at Ferry's root for the side; the user's path is a folder in it.
        let backup = mounts
            .iter()
            .find(|v| v.name == "destination-data")
            .unwrap();
        assert_eq!(backup.mount_path, "/mnt/ferry/destination");
        assert_eq!(backup.sub_path.as_deref(), Some("backup"));
        assert_eq!(
            ferry_k8s::pss::restricted_violations(pod),
            Vec::<String>::new()
        );
        assert!(mounts
            .iter()
            .any(|v| v.mount_path == PLAN_MOUNT && v.read_only == Some(true)));
    }

    #[test]
    fn agents_may_only_touch_their_progress_objects() {
        let (sa, role, binding) = agent_access(&mj(), 3, &BTreeMap::new());
        assert_eq!(sa.automount_service_account_token, Some(false));
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[2].resource_names.as_ref().unwrap(),
            &vec!["photos-limits".to_string()]
        );
        assert_eq!(rules[2].verbs, vec!["get", "list", "watch"]);
        assert_eq!(
            rules[1].resource_names.as_ref().unwrap(),
            &vec!["photos-plan".to_string()]
        );
        assert_eq!(rules[1].verbs, vec!["patch"]);
        assert!(
            rules
                .iter()
                .all(|r| r.resources.as_ref().unwrap() == &vec!["configmaps".to_string()]),
            "no Secret, no other kind"
        );
        assert_eq!(
            rules[0].resource_names.as_ref().unwrap(),
            &vec![
                "photos-shard-0".to_string(),
                "photos-shard-1".into(),
                "photos-shard-2".into()
            ]
        );
        assert_eq!(rules[0].verbs, vec!["get", "update", "patch"]);
        assert_eq!(binding.subjects.unwrap()[0].name, "photos-agent");
    }

    fn pods() -> Pods {
        Pods {
            image: "img:1".into(),
            image_pull_secrets: vec!["regcred".into()],
            service_account_annotations: BTreeMap::new(),
            planner_deadline_seconds: 600,
            log_format: Some("json".into()),
            scheduling: Scheduling::default(),
        }
    }

    /// The chart's agent scheduling values reach both kinds of pod, and pods stay restricted.
    #[test]
    fn agent_scheduling_reaches_the_planner_and_the_agents() {
        let scheduling: Scheduling = serde_json::from_str(
            r#"{"nodeSelector": {"pool": "transfer"},
                "tolerations": [{"key": "transfer", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                  {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                "priorityClassName": "batch-low"}"#,
        )
        .unwrap();
        let p = Pods {
            scheduling: scheduling.clone(),
            ..pods()
        };
        let m = mj();
        let jobs = [
            planner_job(&m, &p, "d1"),
            agent_job(&m, &plan_of(&m), "d2", &p, false),
        ];
        for job in jobs {
            let pod = job.spec.unwrap().template.spec.unwrap();
            assert_eq!(pod.node_selector.as_ref(), Some(&scheduling.node_selector));
            assert_eq!(pod.tolerations.as_ref(), Some(&scheduling.tolerations));
            assert_eq!(pod.affinity, scheduling.affinity);
            assert_eq!(pod.priority_class_name.as_deref(), Some("batch-low"));
            assert!(ferry_k8s::pss::restricted_violations(&pod).is_empty());
        }
        // An unknown field is refused rather than ignored.
        assert!(serde_json::from_str::<Scheduling>(r#"{"nodeSelektor": {}}"#).is_err());
    }

    /// The planner runs the agent image as `transfer-agent plan`, under a deadline and a memory
    /// limit, restricted; it finds the Secrets only by optional references (it reports a
    /// missing one itself), and mounts the sides' volumes like the agents.
    #[test]
    fn the_planner_is_a_short_restricted_pod_with_secrets_by_reference() {
        let m = mj();
        let job = planner_job(&m, &pods(), "d1g3st");
        assert_eq!(job.metadata.name.as_deref(), Some("photos-planner"));
        assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.completions, Some(1));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(
            ferry_k8s::pss::restricted_violations(pod),
            Vec::<String>::new()
        );
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        let c = &pod.containers[0];
        assert_eq!(c.command.as_ref().unwrap(), &vec!["transfer-agent", "plan"]);
        let env = c.env.as_ref().unwrap();
        let secret_refs: Vec<_> = env
            .iter()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .collect();
        assert!(!secret_refs.is_empty());
        assert!(secret_refs
            .iter()
            .all(|r| r.optional == Some(true) && r.name == "aws-creds"));
        assert!(env
            .iter()
            .all(|e| e.value.as_deref().is_none_or(|v| !v.contains("SECRET"))));
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.mount_path == "/mnt/ferry/destination"));
    }

    /// What the planner is asked names every required Secret key with the problem to report,
    /// and shows filesystem sides where the pods mount them.
    #[test]
    fn the_request_names_the_keys_and_the_mount_roots() {
        let m = mj();
        let v = ferry_api::validate(&m.spec).unwrap();
        let req = plan_request(&m, &v);
        assert_eq!(req.shards, 3);
        assert!(req.plan.shards.is_empty());
        let names: Vec<_> = req.required.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names.contains(&"FERRY_SOURCE_AWS_SECRET_ACCESS_KEY"),
            "{names:?}"
        );
        assert!(req.required[0].problem.contains("Secret media/aws-creds"));
        match &req.plan.transfer.destination {
            StoreConfig::Filesystem(fs) => assert_eq!(fs.path, "/mnt/ferry/destination"),
            other => panic!("{other:?}"),
        }
    }

    /// A filesystem side without a claim is refused in a cluster; an S3 side without a Secret
    /// is named (ambient credentials).
    #[test]
    fn paths_without_a_volume_and_sides_without_a_secret_are_found() {
        let m: MigrationJob = serde_yaml::from_str(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: j, namespace: t, uid: u}\nspec:\n  source: {filesystem: {path: /var/run/secrets/kubernetes.io/serviceaccount}}\n  destination: {s3: {bucket: loot}}\n",
        )
        .unwrap();
        let refused = volume_refusals(&m);
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].starts_with("spec.source.filesystem: in a cluster"),
            "{refused:?}"
        );
        assert_eq!(ambient_sides(&m), vec!["spec.destination.s3"]);
        assert!(volume_refusals(&mj()).is_empty());
        assert!(ambient_sides(&mj()).is_empty());
    }

    fn url_list_job(list: &str) -> MigrationJob {
        serde_yaml::from_str(&format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {{name: cdn, namespace: media, uid: u2}}\nspec:\n  source: {{urlList: {{{list}, headersSecretRef: {{name: cdn-auth}}}}}}\n  destination: {{s3: {{bucket: dst, credentialsSecretRef: {{name: aws-creds}}}}}}\n"
        ))
        .unwrap()
    }

    fn plan_of(m: &MigrationJob) -> JobPlan {
        let v = ferry_api::validate(&m.spec).unwrap();
        let mut plan = plan_request(m, &v).plan;
        plan.shards = vec![ferry_api::ShardRange::default()];
        plan
    }

    /// A ConfigMap URL list is mounted read-only in the planner and the agents where the
    /// engine reads it, both get a bounded scratch emptyDir as TMPDIR (the root filesystem
    /// stays read-only), and only the agents get the headers Secret, whole, by reference
    /// under the source's header prefix.
    #[test]
    fn a_configmap_list_is_mounted_and_its_headers_come_by_reference() {
        let m = url_list_job("configMapRef: {name: cdn-urls, key: urls.tsv}");
        assert!(volume_refusals(&m).is_empty());
        let planner = planner_job(&m, &pods(), "d1");
        let agents = agent_job(&m, &plan_of(&m), "d2", &pods(), false);
        for job in [&planner, &agents] {
            let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            assert_eq!(
                ferry_k8s::pss::restricted_violations(pod),
                Vec::<String>::new()
            );
            let volumes = pod.volumes.as_ref().unwrap();
            let list = volumes.iter().find(|v| v.name == "url-list").unwrap();
            let cm = list.config_map.as_ref().unwrap();
            assert_eq!(cm.name, "cdn-urls");
            let items = cm.items.as_ref().unwrap();
            assert_eq!(
                (items[0].key.as_str(), items[0].path.as_str()),
                ("urls.tsv", "urls.tsv")
            );
            let scratch = volumes.iter().find(|v| v.name == "scratch").unwrap();
            assert_eq!(
                scratch.empty_dir.as_ref().unwrap().size_limit,
                Some(Quantity(SCRATCH_SIZE_LIMIT.into()))
            );
            let c = &pod.containers[0];
            let mounts = c.volume_mounts.as_ref().unwrap();
            let at = |name: &str| mounts.iter().find(|m| m.name == name).unwrap();
            assert_eq!(at("url-list").mount_path, "/etc/ferry/url-list");
            assert_eq!(at("url-list").read_only, Some(true));
            assert_eq!(at("scratch").mount_path, SCRATCH_MOUNT);
            let env = c.env.as_ref().unwrap();
            let value = |n: &str| {
                env.iter()
                    .find(|e| e.name == n)
                    .and_then(|e| e.value.clone())
            };
            assert_eq!(value("TMPDIR").as_deref(), Some(SCRATCH_MOUNT));
            assert_eq!(
                value("FERRY_URL_LIST_DIR").as_deref(),
                Some(URL_LIST_MOUNT_DIR)
            );
            // The engine reads `<dir>/<key>`: the mount and the item's path give that file.
            assert_eq!(
                format!("{}/{}", at("url-list").mount_path, items[0].path),
                ferry_core::stores::url_list_mount_path("urls.tsv")
            );
        }
        let planner_c = &planner.spec.unwrap().template.spec.unwrap().containers[0];
        assert!(planner_c.env_from.is_none(), "the planner sends no HTTP");
        let agent_c = &agents.spec.unwrap().template.spec.unwrap().containers[0];
        let from = agent_c.env_from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].prefix.as_deref(), Some("FERRY_SOURCE_HEADER_"));
        let secret = from[0].secret_ref.as_ref().unwrap();
        assert_eq!((secret.name.as_str(), secret.optional), ("cdn-auth", None));
        assert!(from[0].config_map_ref.is_none());
        // Variables named after a Secret carry references, never values.
        let env = agent_c.env.as_ref().unwrap();
        assert!(env
            .iter()
            .filter(
                |e| e.name.starts_with("FERRY_SOURCE_") || e.name.starts_with("FERRY_DESTINATION_")
            )
            .all(|e| e.value.is_none() && e.value_from.is_some()));
        // What the agents read back: the header under its own name.
        let vars = [(
            format!("{}Authorization", from[0].prefix.as_deref().unwrap()),
            "Bearer t".to_string(),
        )];
        let secrets = env::secrets_from(Side::Source, vars);
        assert_eq!(
            secrets
                .with_prefix(URL_LIST_HEADER_PREFIX)
                .collect::<Vec<_>>(),
            vec![("Authorization", "Bearer t")]
        );
    }

    /// A database's connection URL reaches the pods by reference to the Secret key the spec
    /// names, as the source's DATABASE_URL (optional for the planner, which says what is
    /// missing itself); the operator's log format is passed on.
    #[test]
    fn a_database_url_comes_by_reference_and_the_log_format_is_passed_on() {
        let m: MigrationJob = serde_yaml::from_str(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: blobs, namespace: app, uid: u3}\nspec:\n  source: {database: {connectionSecretRef: {name: app-db, key: URL}, table: images, idColumn: id, dataColumn: data, key: 'img/{id}'}}\n  destination: {s3: {bucket: dst, credentialsSecretRef: {name: aws-creds}}}\n",
        )
        .unwrap();
        let planner = planner_job(&m, &pods(), "d1");
        let agents = agent_job(&m, &plan_of(&m), "d2", &pods(), false);
        for (job, optional) in [(&planner, Some(true)), (&agents, None)] {
            let c = &job
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0];
            let env = c.env.as_ref().unwrap();
            let url = env
                .iter()
                .find(|e| e.name == "FERRY_SOURCE_DATABASE_URL")
                .expect("the connection URL");
            assert!(url.value.is_none());
            let r = url
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!((r.name.as_str(), r.key.as_str()), ("app-db", "URL"));
            assert_eq!(r.optional, optional);
            let format = env.iter().find(|e| e.name == "FERRY_LOG_FORMAT").unwrap();
            assert_eq!(format.value.as_deref(), Some("json"));
        }
    }

    fn sqlite_job(volume: &str, extra: &str) -> MigrationJob {
        serde_yaml::from_str(&format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {{name: lite, namespace: app, uid: u4}}\nspec:\n  source: {{database: {{connectionSecretRef: {{name: app-db}}, table: images, idColumn: id, dataColumn: data, key: 'img/{{id}}', volume: {volume}{extra}}}}}\n  destination: {{s3: {{bucket: dst, credentialsSecretRef: {{name: aws-creds}}}}}}\n"
        ))
        .unwrap()
    }

    /// The mount of a database volume in the planner or the agents.
    fn database_mount(job: &Job) -> (Volume, VolumeMount) {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            ferry_k8s::pss::restricted_violations(pod),
            Vec::<String>::new()
        );
        let v = pod.volumes.as_ref().unwrap();
        let m = pod.containers[0].volume_mounts.as_ref().unwrap();
        (
            v.iter()
                .find(|v| v.name == "database-data")
                .unwrap()
                .clone(),
            m.iter()
                .find(|m| m.name == "database-data")
                .unwrap()
                .clone(),
        )
    }

    /// A SQLite file on a claim: mounted at the volume's mountPath (default /data, so that
    /// `sqlite:///data/app.db` names it) in the planner and the agents, read-only unless
    /// writeBack writes it, the pods still restricted; with writeBack, one shard only.
    #[test]
    fn a_sqlite_volume_is_mounted_read_only_unless_written_back() {
        let m = sqlite_job("{claimName: app-data}", "");
        assert!(ferry_api::validate(&m.spec).is_ok());
        assert!(volume_refusals(&m).is_empty());
        for job in [
            planner_job(&m, &pods(), "d1"),
            agent_job(&m, &plan_of(&m), "d2", &pods(), false),
        ] {
            let (v, mount) = database_mount(&job);
            let pvc = v.persistent_volume_claim.unwrap();
            assert_eq!(
                (pvc.claim_name.as_str(), pvc.read_only),
                ("app-data", Some(true))
            );
            assert_eq!(mount.mount_path, "/data");
            assert_eq!((mount.sub_path, mount.read_only), (None, Some(true)));
        }

        let w = sqlite_job(
            "{claimName: app-data, mountPath: /srv/db/, subPath: tenants/a}",
            ", writeBack: {column: url, value: '/{key}'}",
        );
        assert!(ferry_api::validate(&w.spec).is_ok());
        assert!(volume_refusals(&w).is_empty());
        let (v, mount) = database_mount(&agent_job(&w, &plan_of(&w), "d", &pods(), false));
        assert_eq!(v.persistent_volume_claim.unwrap().read_only, Some(false));
        assert_eq!(mount.mount_path, "/srv/db");
        assert_eq!(mount.sub_path.as_deref(), Some("tenants/a"));
        assert_eq!(mount.read_only, Some(false));

        // Several shards writing one SQLite file over a network filesystem: refused.
        let mut many = w.clone();
        many.spec.parallelism.shards = 4;
        let refused = volume_refusals(&many);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("spec.parallelism.shards:"),
            "{refused:?}"
        );
        // Reading only, several shards are fine.
        let mut readers = m.clone();
        readers.spec.parallelism.shards = 4;
        assert!(volume_refusals(&readers).is_empty());
        // No volume, no mount (PostgreSQL).
        let mut pg = m;
        pg.spec.source.database.as_mut().unwrap().volume = None;
        let pod = planner_job(&pg, &pods(), "d")
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert!(pod
            .volumes
            .unwrap()
            .iter()
            .all(|v| v.name != "database-data"));
    }

    /// Mount paths over system or Ferry directories, escaping subPaths, and a read-only
    /// volume with writeBack are refused with their field.
    #[test]
    fn bad_sqlite_volumes_are_refused_with_their_field() {
        for (volume, extra, field) in [
            ("{claimName: d, mountPath: /}", "", "mountPath"),
            ("{claimName: d, mountPath: data}", "", "mountPath"),
            ("{claimName: d, mountPath: /etc/app}", "", "mountPath"),
            (
                "{claimName: d, mountPath: /var/run/secrets}",
                "",
                "mountPath",
            ),
            ("{claimName: d, mountPath: /tmp}", "", "mountPath"),
            (
                "{claimName: d, mountPath: /mnt/ferry/source}",
                "",
                "mountPath",
            ),
            ("{claimName: d, mountPath: /data/../etc}", "", "mountPath"),
            ("{claimName: d, subPath: ../other}", "", "subPath"),
            ("{claimName: d, subPath: /abs}", "", "subPath"),
            ("{claimName: Not_A_Claim}", "", "claimName"),
            (
                "{claimName: d, readOnly: true}",
                ", writeBack: {column: url, value: '/{key}'}",
                "readOnly",
            ),
        ] {
            let m = sqlite_job(volume, extra);
            let errors = ferry_api::validate(&m.spec).expect_err(volume);
            let text = format!("{errors:?}");
            assert!(
                text.contains(&format!("spec.source.database.volume.{field}")),
                "{volume}: {text}"
            );
        }
    }

    /// A list in a bucket needs no volume of its own, only the scratch space; a list as a
    /// file is refused in a cluster (no volume is mounted for it).
    #[test]
    fn a_list_in_a_bucket_needs_scratch_only_and_a_list_file_is_refused() {
        let m = url_list_job("s3: {bucket: lists, key: urls.tsv, credentialsSecretRef: {name: l}}");
        assert!(volume_refusals(&m).is_empty());
        let job = agent_job(&m, &plan_of(&m), "d", &pods(), false);
        let pod = job.spec.unwrap().template.spec.unwrap();
        let names: Vec<_> = pod
            .volumes
            .unwrap()
            .iter()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(names, vec!["plan", "scratch"]);
        let file = url_list_job("path: /lists/urls.tsv");
        let refused = volume_refusals(&file);
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].starts_with("spec.source.urlList.path: in a cluster no volume"),
            "{refused:?}"
        );
        // Other sources get no scratch space.
        let s3 = planner_job(&mj(), &pods(), "d");
        let pod = s3.spec.unwrap().template.spec.unwrap();
        assert!(pod.volumes.unwrap().iter().all(|v| v.empty_dir.is_none()));
    }

    /// A plan edited in its ConfigMap (the tenant's namespace) to use the pods' own identity
    /// or another path is not one of the job's: the operator does not run it.
    #[test]
    fn an_edited_plan_is_not_the_jobs() {
        let m = mj();
        let v = ferry_api::validate(&m.spec).unwrap();
        let mut plan = plan_request(&m, &v).plan;
        plan.shards = vec![ferry_api::ShardRange::default()];
        assert!(plan_is_of(&m, &v, &plan));
        assert!(
            plan_is_of(&m, &v, &plan.retry(2)),
            "a retry's plan is the job's"
        );
        assert!(plan_is_of(&m, &v, &plan.deletes()));
        let mut ambient = plan.clone();
        if let StoreConfig::S3(c) = &mut ambient.transfer.source {
            c.auth = S3Auth::DefaultChain;
        }
        assert!(!plan_is_of(&m, &v, &ambient));
        let mut path = plan.clone();
        if let StoreConfig::Filesystem(fs) = &mut path.transfer.destination {
            fs.path = "/var/run/secrets/kubernetes.io/serviceaccount".into();
        }
        assert!(!plan_is_of(&m, &v, &path));
        let mut elsewhere = plan;
        elsewhere.report_prefix = "other/".into();
        assert!(!plan_is_of(&m, &v, &elsewhere));
    }

    /// A collect job's plan holds the list the planner collected in place of the collector
    /// (else the job never leaves Planning); a list elsewhere is not the job's.
    #[test]
    fn a_collected_list_is_the_jobs_and_only_where_the_job_keeps_it() {
        let m = url_list_job(
            "collect: {url: 'https://api.example.com/v1', items: /data, fields: {url: /url}, \
             pagination: {linkHeader: true}}",
        );
        let v = ferry_api::validate(&m.spec).unwrap();
        let asked = plan_of(&m);
        let mut plan = asked.clone();
        plan.transfer.source = ferry_core::collect::collected_source(&asked).unwrap();
        assert!(plan_is_of(&m, &v, &asked));
        assert!(plan_is_of(&m, &v, &plan));
        assert!(plan_is_of(&m, &v, &plan.retry(2)));
        let mut elsewhere = plan.clone();
        if let StoreConfig::UrlList(u) = &mut elsewhere.transfer.source {
            if let UrlListLocation::Collected { at, .. } = &mut u.list {
                if let StoreConfig::S3(c) = at.as_mut() {
                    c.bucket = "another-bucket".into();
                }
            }
        }
        assert!(!plan_is_of(&m, &v, &elsewhere));
        let mut other_key = plan;
        if let StoreConfig::UrlList(u) = &mut other_key.transfer.source {
            if let UrlListLocation::Collected { key, .. } = &mut u.list {
                *key = "other/urls.list".into();
            }
        }
        assert!(!plan_is_of(&m, &v, &other_key));
    }
}
