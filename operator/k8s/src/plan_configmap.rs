//! The plan ConfigMap (`<job>-plan`): the operator writes the planner's request in it; the
//! planner pod answers in it with its outcome and, when every check passed, the plan the
//! agents then run (mounted read-only). The planner may only get and patch that object.

use std::collections::BTreeMap;

use ferry_core::planning::PlanOutcome;
use ferry_core::JobPlan;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::names::{OUTCOME_KEY, PLAN_KEY};

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

/// The planner's outcome in a plan ConfigMap's data, if it holds one that parses.
pub fn outcome_of(cm: &ConfigMap) -> Option<PlanOutcome> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(OUTCOME_KEY))
        .and_then(|j| serde_json::from_str(j).ok())
}
