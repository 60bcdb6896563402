//! A MigrationJob the operator ran, read from the cluster for `ferry report --namespace
//! --name`: its spec, the plan the operator stored (its shards and report folders), and the
//! Secrets of its report location only (the destination's, or `spec.report`'s). The kubeconfig
//! is kubectl's (`KUBECONFIG`, `~/.kube/config`, or the pod's own service account), so what
//! `ferry report` may read is what the user may read.

use std::collections::BTreeMap;

use ferry_api::{validate, Endpoint, MigrationJob, Side, ValidatedSpec};
use ferry_core::stores::JobCredentials;
use ferry_core::JobPlan;
use ferry_k8s::names::{plan_name, PLAN_KEY};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt};

use crate::credentials::side_credentials;
use crate::manifests::SecretData;
use crate::migrationjob::observe::owned_by;

/// A job of the cluster with what its report needs.
pub struct ClusterJob {
    pub namespace: String,
    pub name: String,
    pub validated: ValidatedSpec,
    /// The report location's credentials (the other sides' are not read).
    pub credentials: JobCredentials,
    /// The plan the operator stored last (of any attempt or stage).
    pub plan: JobPlan,
}

/// Reads MigrationJob `namespace/name` (the kubeconfig's namespace when None) and what its
/// report needs. The error is a message for people.
pub async fn load(namespace: Option<&str>, name: &str) -> Result<ClusterJob, String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the cluster (kubeconfig): {e}"))?;
    let namespace = namespace.unwrap_or(client.default_namespace()).to_string();
    let id = format!("{namespace}/{name}");
    let mjs: Api<MigrationJob> = Api::namespaced(client.clone(), &namespace);
    let mj = mjs
        .get_opt(name)
        .await
        .map_err(|e| format!("{id}: reading the MigrationJob: {e}"))?
        .ok_or_else(|| format!("{id}: no such MigrationJob"))?;
    let validated = validate(&mj.spec).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("{id}: the spec is not valid: {}", all.join("; "))
    })?;
    let uid = mj.uid().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let cm = cms
        .get_opt(&plan_name(name))
        .await
        .map_err(|e| format!("{id}: reading its plan: {e}"))?
        .filter(|cm| owned_by(&cm.metadata, &uid))
        .ok_or_else(|| format!("{id}: no report: the operator has stored no plan of this job"))?;
    let plan = cm
        .data
        .as_ref()
        .and_then(|d| d.get(PLAN_KEY))
        .and_then(|text| serde_json::from_str::<JobPlan>(text).ok())
        .filter(|p| p.uid == uid && p.spec_hash == validated.spec_hash)
        .filter(|p| crate::migrationjob::build::plan_is_of(&mj, &validated, p))
        .ok_or_else(|| {
            format!("{id}: no report: no plan of this job's spec is stored (it is still planning?)")
        })?;
    let (side, endpoint) = match &mj.spec.report {
        Some(r) => (Side::Report, r),
        None => (Side::Destination, &mj.spec.destination),
    };
    if endpoint.filesystem.is_some() {
        return Err(format!(
            "{id}: the report is on a volume (spec.{}.filesystem), which only the job's pods \
             mount: read it from a pod that mounts the claim, or with `ferry report -f` where \
             the folder is",
            side.field()
        ));
    }
    let secrets = secrets_of(&client, &namespace, endpoint)
        .await
        .map_err(|e| format!("{id}: {e}"))?;
    let values = side_credentials(side, endpoint, &namespace, &|n| secrets.get(n))
        .map_err(|e| format!("{id}: {e}"))?;
    let mut credentials = JobCredentials::default();
    match side {
        Side::Report => credentials.report = values,
        _ => credentials.destination = values,
    }
    Ok(ClusterJob {
        namespace,
        name: name.to_string(),
        validated,
        credentials,
        plan,
    })
}

/// The Secrets `endpoint` names, by name (one that does not exist is left out: resolving the
/// side says which).
async fn secrets_of(
    client: &Client,
    namespace: &str,
    endpoint: &Endpoint,
) -> Result<BTreeMap<String, SecretData>, String> {
    let Ok(location) = endpoint.location() else {
        return Ok(BTreeMap::new());
    };
    let names: Vec<&str> = location
        .whole_secret()
        .into_iter()
        .chain(location.secret_value().map(|v| v.name))
        .chain(location.secret().map(|s| s.name))
        .collect();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for name in names {
        let Some(secret) = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading Secret {name}: {e}"))?
        else {
            continue;
        };
        out.insert(name.to_string(), data_of(secret));
    }
    Ok(out)
}

/// A Secret's values as text (a value that is not UTF-8 is left out).
fn data_of(secret: Secret) -> SecretData {
    let mut data: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
        .collect();
    data.extend(secret.string_data.unwrap_or_default());
    SecretData(data)
}
