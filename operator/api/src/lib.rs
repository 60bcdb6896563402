//! Ferry's `ferry.dev/v1alpha1` API: the `MigrationJob` resource, its validation, the job plan
//! handed to agents, and the status folded from shard progress.
//!
//! This crate sits under `operator/` and is used by both the engine (`transfer-agent`) and the
//! operator. It holds types and pure functions only (no client, no I/O), so the engine can
//! depend on it without pulling in the controller, and the operator can depend on the engine
//! without a cycle.

pub mod aggregate;
pub mod cel;
pub mod plan;
pub mod quantity;
pub mod select;
pub mod spec;
pub mod status;
pub mod validate;

pub use plan::{FailureBudget, JobPlan, ShardRange};
pub use quantity::ByteSize;
pub use select::Selector;
pub use spec::*;
pub use status::*;
