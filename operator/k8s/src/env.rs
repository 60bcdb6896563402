//! The agent's environment: what the operator sets in the pod template and the agent reads.

use std::collections::BTreeMap;

use ferry_core::plan::Side;
use ferry_core::stores::SideSecrets;

/// The plan file.
pub const PLAN: &str = "FERRY_PLAN";
/// The plan ConfigMap the planner answers in.
pub const PLAN_CONFIGMAP: &str = "FERRY_PLAN_CONFIGMAP";
/// The SHA-256 (hex) of the plan (or the planner's request) as the operator checked it, set in
/// the Job it creates: a pod refuses a file that differs (written into the ConfigMap since, by
/// anyone who may edit ConfigMaps in the namespace).
pub const PLAN_SHA256: &str = "FERRY_PLAN_SHA256";
/// The ConfigMap of the job's live limits (of FERRY_NAMESPACE), which the agent follows;
/// unset: the plan's limits for the whole run.
pub const LIMITS_CONFIGMAP: &str = "FERRY_LIMITS_CONFIGMAP";
/// The shard to copy (set by an Indexed Job).
pub const SHARD: &str = "JOB_COMPLETION_INDEX";
/// The prefix of the progress ConfigMaps; the agent's is the prefix followed by its shard.
pub const PROGRESS_CONFIGMAP_PREFIX: &str = "FERRY_PROGRESS_CONFIGMAP_PREFIX";
/// The namespace of the progress ConfigMaps (from the downward API).
pub const NAMESPACE: &str = "FERRY_NAMESPACE";
/// A progress file, outside a cluster.
pub const PROGRESS_FILE: &str = "FERRY_PROGRESS_FILE";
/// Seconds between checkpoints.
pub const CHECKPOINT_SECONDS: &str = "FERRY_CHECKPOINT_SECONDS";
/// The log filter of both binaries (a `tracing` filter: `info`, `ferry_engine=debug`...).
pub const LOG: &str = "FERRY_LOG";
/// The log format of the agent and the planner: `text` (the default) or `json`, one object per
/// line; the operator passes its own on.
pub const LOG_FORMAT: &str = "FERRY_LOG_FORMAT";

/// The folder a URL list's ConfigMap is mounted in (`ferry_core::stores::URL_LIST_DIR_VAR`),
/// set by the operator to where it mounts it.
pub const URL_LIST_DIR: &str = ferry_core::stores::URL_LIST_DIR_VAR;
/// The folder for temporary files (the URL list's sorted runs), on a writable `emptyDir`:
/// the pods' root filesystem is read-only.
pub const TMPDIR: &str = "TMPDIR";

/// The prefix of one side's secret variables: `FERRY_SOURCE_`.
pub fn secret_prefix(side: Side) -> String {
    format!("FERRY_{}_", side.field().to_ascii_uppercase())
}

/// The variable that carries key `key` of a side's Secret: `FERRY_SOURCE_AWS_ACCESS_KEY_ID`.
/// Each side has its own names, so no side's keys reach another through a default chain.
pub fn secret_var(side: Side, key: &str) -> String {
    format!("{}{key}", secret_prefix(side))
}

/// A side's secret values from the variables given (the process environment in an agent).
pub fn secrets_from(side: Side, vars: impl IntoIterator<Item = (String, String)>) -> SideSecrets {
    let prefix = secret_prefix(side);
    let values: BTreeMap<String, String> = vars
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|key| (key.to_string(), v)))
        .collect();
    SideSecrets::new(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_reads_only_its_own_variables() {
        let vars = vec![
            (
                secret_var(Side::Source, "AWS_ACCESS_KEY_ID"),
                "a".to_string(),
            ),
            (
                secret_var(Side::Destination, "AWS_ACCESS_KEY_ID"),
                "b".to_string(),
            ),
            ("AWS_ACCESS_KEY_ID".to_string(), "c".to_string()),
        ];
        assert_eq!(
            secrets_from(Side::Source, vars.clone()).get("AWS_ACCESS_KEY_ID"),
            Some("a")
        );
        assert_eq!(
            secrets_from(Side::Destination, vars.clone()).get("AWS_ACCESS_KEY_ID"),
            Some("b")
        );
        assert!(secrets_from(Side::Report, vars).is_empty());
        assert_eq!(
            secret_var(Side::Source, "AWS_SECRET_ACCESS_KEY"),
            "FERRY_SOURCE_AWS_SECRET_ACCESS_KEY"
        );
    }
}
