//! Ferry's `ferry.dev/v1alpha1` API: the `MigrationJob` resource, its validation into a
//! [`ValidatedSpec`] (the plan's transfer settings, every default resolved), and the status
//! folded from shard progress.
//!
//! Types and pure functions only (no client, no I/O). The types the engine shares
//! (progress records, counters, failure classes, policies) come from `ferry-core` and are
//! re-exported here, so the engine never depends on this crate.

pub mod aggregate;
pub mod cel;
pub mod conditions;
pub mod endpoint;
pub mod quantity;
pub mod spec;
pub mod status;
pub mod validate;

pub use conditions::{ConditionType, Conditions, Reason};
pub use endpoint::{Location, Side};
pub use ferry_core::plan::{FailureBudget, JobPlan, ShardRange};
pub use ferry_core::select::Selector;
pub use quantity::ByteSize;
pub use spec::*;
pub use status::*;
pub use validate::{spec_hash, validate, SpecError, ValidatedSpec};
