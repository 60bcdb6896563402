//! The plan ConfigMap (`<job>-plan`): the operator writes the planner's request in it; the
//! planner pod answers in it with its outcome and, when every check passed, the plan the
//! agents then run (mounted read-only). The planner may only get and patch that object.

use std::collections::BTreeMap;

use ferry_core::collect::CollectProgress;
use ferry_core::planning::PlanOutcome;
use ferry_core::JobPlan;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::names::{COLLECT_KEY, OUTCOME_KEY, PLAN_KEY};

/// Stores the planner's answer in the ConfigMap `name` of `namespace`.
pub async fn store_answer(
    client: Client,
    namespace: &str,
    name: &str,
    plan: Option<&JobPlan>,
    outcome: &PlanOutcome,
) -> Result<(), kube::Error> {
    let mut data: BTreeMap<&str, String> = BTreeMap::new();
    data.insert(
        OUTCOME_KEY,
        serde_json::to_string(outcome).expect("serializes"),
    );
    if let Some(plan) = plan {
        data.insert(
            PLAN_KEY,
            serde_json::to_string_pretty(plan).expect("serializes"),
        );
    }
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "data": data })),
    )
    .await
    .map(|_| ())
}

/// Stores the collector's progress in the ConfigMap `name` of `namespace` while the planner
/// collects (the operator shows it in `status.collect` until the outcome is in).
pub async fn store_collect_progress(
    client: Client,
    namespace: &str,
    name: &str,
    progress: &CollectProgress,
) -> Result<(), kube::Error> {
    let text = serde_json::to_string(progress).expect("serializes");
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "data": { COLLECT_KEY: text } })),
    )
    .await
    .map(|_| ())
}

/// The collector's progress in a plan ConfigMap's data, if it holds one that parses.
pub fn collect_progress_of(cm: &ConfigMap) -> Option<CollectProgress> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(COLLECT_KEY))
        .and_then(|j| serde_json::from_str(j).ok())
}

/// The SHA-256 (hex) of a plan or request as stored (the ConfigMap's value, byte for byte).
pub fn digest(text: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text))
}

/// Reads the file at `path` and checks it against the digest in [`crate::env::PLAN_SHA256`],
/// when the environment has one (a pod of the operator's Jobs always does).
pub fn read_pinned(path: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if let Ok(want) = std::env::var(crate::env::PLAN_SHA256) {
        let got = digest(&bytes);
        if got != want {
            return Err(format!(
                "{path} is not the one the operator checked (SHA-256 {got}, expected {want}): \
                 its ConfigMap was changed since; refusing it"
            ));
        }
    }
    Ok(bytes)
}

/// The planner's outcome in a plan ConfigMap's data, if it holds one that parses.
pub fn outcome_of(cm: &ConfigMap) -> Option<PlanOutcome> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(OUTCOME_KEY))
        .and_then(|j| serde_json::from_str(j).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod reads its plan only as the operator checked it.
    #[test]
    fn a_changed_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("ferry-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.json");
        std::fs::write(&path, b"{\"a\": 1}").unwrap();
        let path = path.to_str().unwrap();
        // SAFETY: this test alone sets the variable, before reading it.
        unsafe { std::env::set_var(crate::env::PLAN_SHA256, digest(b"{\"a\": 1}")) };
        assert!(read_pinned(path).is_ok());
        std::fs::write(path, b"{\"a\": 2}").unwrap();
        let e = read_pinned(path).unwrap_err();
        assert!(e.contains("not the one the operator checked"), "{e}");
        unsafe { std::env::remove_var(crate::env::PLAN_SHA256) };
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
