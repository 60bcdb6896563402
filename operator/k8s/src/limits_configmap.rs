//! The live limits of a job in a cluster: the ConfigMap `<job>-limits` (key `limits.json`, a
//! [`LiveLimits`]) that the operator keeps equal to the spec's `bandwidthLimit`,
//! `requestsPerSecond`, `parallelism.concurrency` and `parallelism.memoryBudget`, and that
//! each agent watches ([`follow`]) so that a change reaches running agents within seconds.
//! The agent may only get, list and watch exactly that object.

use std::collections::BTreeMap;

use ferry_core::LiveLimits;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::names::LIMITS_KEY;

/// The limits a limits ConfigMap holds, if it holds some that parse.
pub fn limits_of(cm: &ConfigMap) -> Option<LiveLimits> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(LIMITS_KEY))
        .and_then(|j| serde_json::from_str(j).ok())
}

/// The data of a limits ConfigMap holding `limits`.
pub fn limits_data(limits: &LiveLimits) -> BTreeMap<String, String> {
    BTreeMap::from([(
        LIMITS_KEY.to_string(),
        serde_json::to_string(limits).expect("serializes"),
    )])
}

/// What one look at the ConfigMap means for the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// New limits to apply (already within bounds), and why they differ from what the
    /// ConfigMap asks, if they do.
    Changed(LiveLimits, Option<String>),
    /// Nothing to change.
    Same,
    /// The ConfigMap is absent or holds nothing readable: the last limits stay.
    Unreadable,
}

/// What the ConfigMap `cm` (None: absent) means for an agent running with `current`, whose
/// pod was made for a memory budget of `ceiling` bytes at most.
pub fn judge(cm: Option<&ConfigMap>, current: &LiveLimits, ceiling: u64) -> Seen {
    let Some(asked) = cm.and_then(limits_of) else {
        return Seen::Unreadable;
    };
    let (taken, note) = asked.bounded(ceiling);
    if taken == *current {
        Seen::Same
    } else {
        Seen::Changed(taken, note)
    }
}

/// Follows the ConfigMap `name` of `namespace` for as long as the agent runs, sending each
/// new value to `tx` (bounded: a memory budget at most `ceiling`, what the pod's memory limit
/// was made for). Through a watch of that one object (a `metadata.name` field selector).
/// When the API cannot be reached, or the ConfigMap is deleted, the last values stay and the
/// watch is made again (with a backoff of up to 30 s).
pub async fn follow(
    client: Client,
    namespace: &str,
    name: &str,
    tx: watch::Sender<LiveLimits>,
    ceiling: u64,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let mut stream = watcher::watch_object(api, name).default_backoff().boxed();
    // Said once until the next success, not on every retry.
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let cm = match event {
            Ok(cm) => {
                failing = false;
                cm
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(configmap = %name, error = %e, "cannot watch the live limits; keeping the current ones");
                }
                failing = true;
                continue;
            }
        };
        let current = *tx.borrow();
        match judge(cm.as_ref(), &current, ceiling) {
            Seen::Changed(limits, note) => {
                if let Some(note) = note {
                    tracing::warn!(configmap = %name, "{note}");
                }
                tracing::info!(
                    requests_per_second = limits.requests_per_second,
                    bandwidth_limit = ?limits.bandwidth_limit,
                    concurrency = limits.concurrency,
                    memory_budget = limits.memory_budget,
                    "live limits changed (whole job; this shard takes its share)"
                );
                tx.send_replace(limits);
            }
            Seen::Same => {}
            Seen::Unreadable => {
                tracing::debug!(configmap = %name, "no live limits to read; keeping the current ones")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: u32, memory_budget: u64) -> LiveLimits {
        LiveLimits {
            bandwidth_limit: None,
            requests_per_second: rps,
            concurrency: 16,
            memory_budget,
        }
    }

    fn cm(data: BTreeMap<String, String>) -> ConfigMap {
        ConfigMap {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn a_change_is_taken_and_the_same_values_are_not() {
        let now = limits(4, 64 << 20);
        let asked = limits(200, 64 << 20);
        let c = cm(limits_data(&asked));
        assert_eq!(limits_of(&c), Some(asked));
        assert_eq!(judge(Some(&c), &now, 256 << 20), Seen::Changed(asked, None));
        assert_eq!(judge(Some(&c), &asked, 256 << 20), Seen::Same);
    }

    #[test]
    fn a_budget_above_the_pods_is_clamped_with_a_note() {
        let now = limits(4, 64 << 20);
        let c = cm(limits_data(&limits(4, 1 << 30)));
        match judge(Some(&c), &now, 256 << 20) {
            Seen::Changed(l, Some(note)) => {
                assert_eq!(l.memory_budget, 256 << 20);
                assert!(note.contains("memory limit"), "{note}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_absent_or_unreadable_configmap_keeps_the_current_limits() {
        let now = limits(4, 64 << 20);
        assert_eq!(judge(None, &now, 256 << 20), Seen::Unreadable);
        let garbage = cm(BTreeMap::from([(LIMITS_KEY.into(), "{".into())]));
        assert_eq!(judge(Some(&garbage), &now, 256 << 20), Seen::Unreadable);
    }
}
