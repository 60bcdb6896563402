//! The protocol between the operator and its agents in a cluster, in one place: the names of
//! the objects the operator creates for a job, their labels, the ConfigMap keys and mount
//! paths, the agent's environment variables, the ConfigMap progress store the agents write
//! and the operator reads, and the live limits the operator writes and the agents follow.
//! `docs/agent-protocol.md` describes it for people.

pub mod env;
pub mod limits_configmap;
pub mod names;
pub mod plan_configmap;
pub mod progress_configmap;
pub mod pss;

pub use progress_configmap::ConfigMapProgressStore;
