//! What the planner is asked and what it answers. The planner checks the Secrets a job names
//! and both endpoints, then splits the source keyspace into shards. In a cluster it runs in a
//! short pod of its own (the agent image, the job's ServiceAccount, Secrets by `secretKeyRef`),
//! so the operator never reads a Secret nor talks to a tenant's endpoint; `ferry run` calls
//! the same code in its own process.

use serde::{Deserialize, Serialize};

use crate::plan::JobPlan;

/// The planner's input: the plan to fill in (every field but the shard ranges, which are
/// left empty), how many shards, and the secret variables it must find.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRequest {
    pub plan: JobPlan,
    pub shards: u32,
    /// The variables that must be set (from a Secret), each with the problem to report when
    /// it is not: the operator names the Secret and key, which only it knows.
    #[serde(default)]
    pub required: Vec<RequiredVar>,
    /// Which sides the planner checks (a side kept in a volume the planner does not mount is
    /// left to the agents).
    #[serde(default)]
    pub check_source: bool,
    #[serde(default)]
    pub check_destination: bool,
}

/// A variable the planner must find in its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequiredVar {
    pub name: String,
    /// What is wrong when it is missing (no value in it).
    pub problem: String,
}

/// The result of checking both sides without writing anything.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// None when fine, else what is wrong.
    #[serde(default)]
    pub source: Option<ProbeError>,
    #[serde(default)]
    pub destination: Option<ProbeError>,
}

impl Probe {
    pub fn is_fine(&self) -> bool {
        self.source.is_none() && self.destination.is_none()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeError {
    pub message: String,
    /// Credentials were refused (as opposed to an unreachable endpoint or a missing bucket).
    #[serde(default)]
    pub credentials: bool,
    /// May heal by itself (network): retry instead of failing.
    #[serde(default)]
    pub transient: bool,
}

/// What the planner found, stored beside the plan. A plan is stored only when every check
/// passed and `error` is None.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanOutcome {
    /// The job uid and spec hash the planner was asked about: an outcome of another job or
    /// spec is stale.
    pub uid: String,
    pub spec_hash: String,
    /// When it ended (RFC 3339).
    pub at: String,
    /// Missing Secrets or keys (never a value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_problems: Vec<String>,
    /// The endpoints, when the Secrets were fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Why planning failed after the checks passed (collecting or listing the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the URL-list collector did, for a `collect` source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<crate::collect::CollectProgress>,
}

impl PlanOutcome {
    /// Whether it belongs to `plan`'s job and spec.
    pub fn is_for(&self, uid: &str, spec_hash: &str) -> bool {
        self.uid == uid && self.spec_hash == spec_hash
    }
}

/// The problems of the variables `required` that `vars` does not hold (empty values count
/// as missing).
pub fn missing_vars(
    required: &[RequiredVar],
    vars: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut out: Vec<String> = required
        .iter()
        .filter(|r| vars.get(&r.name).is_none_or(|v| v.is_empty()))
        .map(|r| r.problem.clone())
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variables_are_named_by_their_problem() {
        let req = vec![
            RequiredVar {
                name: "A".into(),
                problem: "Secret s has no key a".into(),
            },
            RequiredVar {
                name: "B".into(),
                problem: "Secret s has no key b".into(),
            },
        ];
        let vars = std::collections::BTreeMap::from([
            ("A".to_string(), "x".to_string()),
            ("B".to_string(), String::new()),
        ]);
        assert_eq!(missing_vars(&req, &vars), vec!["Secret s has no key b"]);
    }
}
