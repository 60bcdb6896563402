//! Names, labels, keys and paths of the objects the operator creates for a job. Every name is
//! derived from the job's name, so a restarted operator finds what it made.

/// The label on every child, with the owning job's name.
pub const JOB_LABEL: &str = "ferry.dev/migrationjob";
/// The label on the MigrationJobs a BucketSync runs: the BucketSync's name.
pub const SYNC_LABEL: &str = "ferry.dev/bucket-sync";
/// The key of the plan inside its ConfigMap (and the file name where it is mounted).
pub const PLAN_KEY: &str = "plan.json";
/// The key of the planner's request inside the plan ConfigMap.
pub const REQUEST_KEY: &str = "request.json";
/// The key of the planner's outcome (checks, planning error) inside the plan ConfigMap.
pub const OUTCOME_KEY: &str = "outcome.json";
/// The key of the URL-list collector's progress inside the plan ConfigMap, which the planner
/// updates while it collects (the outcome carries the final figures).
pub const COLLECT_KEY: &str = "collect.json";
/// Where the plan ConfigMap is mounted in an agent.
pub const PLAN_MOUNT: &str = "/etc/ferry/plan";
/// The key of the live limits inside the limits ConfigMap.
pub const LIMITS_KEY: &str = "limits.json";
/// The key of the progress record inside a shard's ConfigMap.
pub const PROGRESS_KEY: &str = "progress.json";
/// The command the agents' containers run (in the one image that holds both binaries).
pub const AGENT_COMMAND: &str = "transfer-agent";

/// The plan file as an agent sees it.
pub fn plan_path() -> String {
    format!("{PLAN_MOUNT}/{PLAN_KEY}")
}

/// The planner's request as the planner pod sees it.
pub fn request_path() -> String {
    format!("{PLAN_MOUNT}/{REQUEST_KEY}")
}

/// The planner's Job (one pod that checks the Secrets and endpoints, then plans).
pub fn planner_name(job: &str) -> String {
    format!("{job}-planner")
}

/// The plan ConfigMap of a job.
pub fn plan_name(job: &str) -> String {
    format!("{job}-plan")
}

/// The ConfigMap of a job's live limits (rates, concurrency, memory budget), which the
/// operator keeps equal to the spec and the agents follow while they run.
pub fn limits_name(job: &str) -> String {
    format!("{job}-limits")
}

/// The prefix of a job's shard progress ConfigMaps; shard `i` is the prefix followed by `i`.
pub fn shard_prefix(job: &str) -> String {
    format!("{job}-shard-")
}

/// The progress ConfigMap of shard `i`.
pub fn shard_name(job: &str, i: u32) -> String {
    format!("{}{i}", shard_prefix(job))
}

/// The agents' Indexed Job.
pub fn job_name(job: &str) -> String {
    format!("{job}-agents")
}

/// The agents' ServiceAccount, Role and RoleBinding.
pub fn agent_name(job: &str) -> String {
    format!("{job}-agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_start_with_the_prefix() {
        assert_eq!(shard_name("photos", 3), "photos-shard-3");
        assert!(shard_name("photos", 3).starts_with(&shard_prefix("photos")));
        assert_eq!(plan_path(), "/etc/ferry/plan/plan.json");
    }
}
