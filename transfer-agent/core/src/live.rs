//! The settings of a job that may change while it runs (`bandwidthLimit`,
//! `requestsPerSecond`, `parallelism.concurrency`, `parallelism.memoryBudget`): in a cluster
//! the operator writes them into the job's limits ConfigMap and the agents follow it
//! (`docs/agent-protocol.md`); `ferry run` hands them to its tasks directly.

use serde::{Deserialize, Serialize};

use crate::plan::Transfer;

/// The most objects in flight per shard (as the CRD allows).
pub const MAX_CONCURRENCY: u32 = 4096;
/// The smallest memory budget an agent accepts, in bytes (as the CRD allows).
pub const MIN_MEMORY_BUDGET: u64 = 16 << 20;

/// The live settings of a whole job. Rates are for the whole job (each shard takes an even
/// share); concurrency and the memory budget are per shard.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LiveLimits {
    /// Bytes per second for the whole job; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    /// Requests per second for the whole job; 0 is unlimited.
    #[serde(default)]
    pub requests_per_second: u32,
    /// Objects in flight per shard.
    pub concurrency: u32,
    /// Bytes buffered per shard at most.
    pub memory_budget: u64,
}

impl LiveLimits {
    /// The live settings a transfer's settings hold.
    pub fn of(t: &Transfer) -> Self {
        LiveLimits {
            bandwidth_limit: t.bandwidth_limit,
            requests_per_second: t.requests_per_second,
            concurrency: t.concurrency,
            memory_budget: t.memory_budget,
        }
    }

    /// These values within what an agent can take: concurrency between 1 and
    /// [`MAX_CONCURRENCY`], a memory budget of at least [`MIN_MEMORY_BUDGET`] and at most
    /// `memory_ceiling` (what its pod's memory limit was made for: a budget above it would
    /// get the pod killed). Returns the values taken and, when any was changed, why.
    pub fn bounded(self, memory_ceiling: u64) -> (LiveLimits, Option<String>) {
        let mut out = self;
        let mut notes = Vec::new();
        out.concurrency = self.concurrency.clamp(1, MAX_CONCURRENCY);
        if out.concurrency != self.concurrency {
            notes.push(format!(
                "concurrency {} is outside 1..={MAX_CONCURRENCY}: using {}",
                self.concurrency, out.concurrency
            ));
        }
        let floor = MIN_MEMORY_BUDGET.min(memory_ceiling);
        out.memory_budget = self.memory_budget.clamp(floor, memory_ceiling.max(floor));
        if out.memory_budget > self.memory_budget {
            notes.push(format!(
                "memoryBudget {} is below the least of {floor} bytes: using {floor}",
                self.memory_budget
            ));
        } else if out.memory_budget < self.memory_budget {
            notes.push(format!(
                "memoryBudget {} is above the {memory_ceiling} bytes this pod's memory limit \
                 was made for: using {memory_ceiling} (a higher budget takes effect on agents \
                 started with it: a new job, or a retry)",
                self.memory_budget
            ));
        }
        (out, (!notes.is_empty()).then(|| notes.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrency: u32, memory_budget: u64) -> LiveLimits {
        LiveLimits {
            bandwidth_limit: Some(1000),
            requests_per_second: 4,
            concurrency,
            memory_budget,
        }
    }

    #[test]
    fn the_json_is_camel_case_and_an_absent_bandwidth_is_unlimited() {
        let l: LiveLimits = serde_json::from_str(
            r#"{"requestsPerSecond": 200, "concurrency": 8, "memoryBudget": 67108864}"#,
        )
        .unwrap();
        assert_eq!(l.bandwidth_limit, None);
        assert_eq!(l.requests_per_second, 200);
        let text = serde_json::to_string(&limits(8, 1 << 26)).unwrap();
        assert!(text.contains("\"bandwidthLimit\":1000"), "{text}");
    }

    #[test]
    fn values_within_bounds_are_taken_as_they_are() {
        let l = limits(256, 64 << 20);
        assert_eq!(l.bounded(256 << 20), (l, None));
    }

    #[test]
    fn a_budget_above_the_pods_is_clamped_and_said() {
        let (l, note) = limits(256, 1 << 30).bounded(256 << 20);
        assert_eq!(l.memory_budget, 256 << 20);
        assert!(note.unwrap().contains("memory limit"));
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let (l, note) = limits(0, 1).bounded(256 << 20);
        assert_eq!((l.concurrency, l.memory_budget), (1, MIN_MEMORY_BUDGET));
        assert!(note.is_some());
        let (l, _) = limits(1 << 20, 1).bounded(1 << 20);
        assert_eq!((l.concurrency, l.memory_budget), (MAX_CONCURRENCY, 1 << 20));
    }
}
