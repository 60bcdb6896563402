//! The objects the operator creates for a MigrationJob, built as pure functions: the plan and
//! progress ConfigMaps, the agents' ServiceAccount, Role and RoleBinding, and the Indexed Job.
//! Every one is owned by the MigrationJob, so deleting it removes them; none holds a secret.
//! Names, keys and variables come from `ferry_k8s`, which the agent reads them with.

use std::collections::BTreeMap;

use ferry_api::{Endpoint, JobPlan, MigrationJob, Side};
use ferry_k8s::env;
use ferry_k8s::names::{
    agent_name, job_name, plan_name, plan_path, shard_name, shard_prefix, AGENT_COMMAND, JOB_LABEL,
    PLAN_KEY, PLAN_MOUNT,
};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretKeySelector, SecurityContext, ServiceAccount, Volume, VolumeMount,
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

pub fn plan_configmap(mj: &MigrationJob, plan: &JobPlan) -> ConfigMap {
    let name = mj.metadata.name.clone().unwrap_or_default();
    ConfigMap {
        metadata: meta(mj, plan_name(&name)),
        data: Some(BTreeMap::from([(
            PLAN_KEY.to_string(),
            serde_json::to_string_pretty(plan).expect("serializes"),
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

/// The agents' identity and exactly the rights they need: get, update and patch their own
/// shards' progress objects (by name; `create` cannot be limited that way, so the operator
/// pre-creates them).
pub fn agent_access(mj: &MigrationJob, shards: u32) -> (ServiceAccount, Role, RoleBinding) {
    let name = mj.metadata.name.clone().unwrap_or_default();
    let sa = ServiceAccount {
        metadata: meta(mj, agent_name(&name)),
        automount_service_account_token: Some(true),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(mj, agent_name(&name)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some((0..shards).map(|i| shard_name(&name, i)).collect()),
            verbs: vec!["get".into(), "update".into(), "patch".into()],
            ..Default::default()
        }]),
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

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
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

/// Credentials of one side, by reference only (`secretKeyRef`), under names of its own.
fn side_env(side: Side, ep: Option<&Endpoint>, out: &mut Vec<EnvVar>) {
    let Some(secret) = ep.and_then(|e| e.location().ok()).and_then(|l| l.secret()) else {
        return;
    };
    for key in secret.keys {
        out.push(secret_env(
            env::secret_var(side, key.name),
            secret.name,
            key.name,
            !key.required,
        ));
    }
}

/// The volume a side's location needs mounted in the agents, if any.
fn side_volume(
    side: Side,
    ep: Option<&Endpoint>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    let Some(v) = ep.and_then(|e| e.location().ok()).and_then(|l| l.volume()) else {
        return;
    };
    if mounts.iter().any(|m| m.mount_path == v.mount_path) {
        return; // the same path as another side (a report next to the data it reports on)
    }
    let name = format!("{}-data", side.field());
    volumes.push(Volume {
        name: name.clone(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: v.claim.claim_name.clone(),
            read_only: Some(v.claim.read_only),
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name,
        mount_path: v.mount_path.to_string(),
        read_only: Some(v.claim.read_only),
        ..Default::default()
    });
}

/// The Indexed Job that runs `plan`: one index per shard, retried per index, never retried on
/// a job-fatal exit (1).
pub fn agent_job(mj: &MigrationJob, plan: &JobPlan, image: &str, suspend: bool) -> Job {
    let name = mj.metadata.name.clone().unwrap_or_default();
    let spec = &mj.spec;
    let shards = plan.shards.len() as i32;
    let mut envs = vec![
        value_env(env::PLAN, &plan_path()),
        value_env(env::PROGRESS_CONFIGMAP_PREFIX, &shard_prefix(&name)),
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
        },
    ];
    side_env(Side::Source, Some(&spec.source), &mut envs);
    side_env(Side::Destination, Some(&spec.destination), &mut envs);
    side_env(Side::Report, spec.report.as_ref(), &mut envs);
    let mut volumes = vec![Volume {
        name: "plan".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: plan_name(&name),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "plan".into(),
        mount_path: PLAN_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    side_volume(Side::Source, Some(&spec.source), &mut volumes, &mut mounts);
    side_volume(
        Side::Destination,
        Some(&spec.destination),
        &mut volumes,
        &mut mounts,
    );
    side_volume(
        Side::Report,
        spec.report.as_ref(),
        &mut volumes,
        &mut mounts,
    );
    let limit_mib = plan.transfer.memory_budget / (1 << 20) + 256;
    Job {
        metadata: meta(mj, job_name(&name)),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(shards),
            parallelism: Some(shards),
            backoff_limit_per_index: Some(3),
            suspend: Some(suspend),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailIndex".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("agent".into()),
                        operator: "In".into(),
                        values: vec![1],
                    }),
                    ..Default::default()
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([(JOB_LABEL.to_string(), name.clone())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(agent_name(&name)),
                    restart_policy: Some("Never".into()),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some(image.into()),
                        command: Some(vec![AGENT_COMMAND.into()]),
                        env: Some(envs),
                        volume_mounts: Some(mounts),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".into(), Quantity("500m".into())),
                                ("memory".into(), Quantity(format!("{}Mi", limit_mib / 2))),
                            ])),
                            limits: Some(BTreeMap::from([(
                                "memory".into(),
                                Quantity(format!("{limit_mib}Mi")),
                            )])),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let job = agent_job(&m, &plan, "img:1", true);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(
            (spec.completions, spec.parallelism, spec.suspend),
            (Some(3), Some(3), Some(true))
        );
        assert_eq!(job.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
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
        let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|v| v.mount_path == "/backup"));
        assert!(mounts
            .iter()
            .any(|v| v.mount_path == PLAN_MOUNT && v.read_only == Some(true)));
    }

    #[test]
    fn agents_may_only_touch_their_progress_objects() {
        let (_, role, binding) = agent_access(&mj(), 3);
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 1);
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
}
