//! Ferry's `ferry.dev/v1alpha1` API: the `MigrationJob` resource, its validation into a
//! [`ValidatedSpec`] (the plan's transfer settings, every default resolved), and the status
//! folded from shard progress.
//!
//! Types and pure functions only (no client, no I/O). The types the engine shares
//! (progress records, counters, failure classes, policies) come from `ferry-core` and are
//! re-exported here, so the engine never depends on this crate.

pub mod aggregate;
pub mod bucketsync;
pub mod cel;
pub mod check;
pub mod conditions;
pub mod database;
pub mod deletes;
pub mod endpoint;
pub mod estimate;
pub mod pricing;
pub mod quantity;
pub mod rollback;
pub mod schedule;
#[cfg(test)]
mod schema_edges;
pub mod spec;
pub mod status;
pub mod url_list;
pub mod validate;

pub use bucketsync::{
    BucketSync, BucketSyncSpec, BucketSyncStatus, ConcurrencyPolicy, RunSummary, SyncPhase,
};
pub use check::CheckStatus;
pub use conditions::{ConditionType, Conditions, Reason};
pub use database::DatabaseSource;
pub use deletes::{DeletesState, DeletesStatus, APPROVE_DELETES_ANNOTATION};
pub use endpoint::{Location, Side};
pub use ferry_core::plan::{DeleteSettings, FailureBudget, JobPlan, ShardRange, Stage};
pub use ferry_core::select::Selector;
pub use quantity::ByteSize;
pub use rollback::{RollbackCounts, RollbackState, RollbackStatus, ROLLBACK_ANNOTATION};
pub use spec::*;
pub use status::*;
pub use url_list::{ConfigMapKeyRef, UrlListObject, UrlListSource};
pub use validate::{
    job_name_problems, resolve, spec_hash, transfer_problems, validate, SpecError, ValidatedSpec,
    DEFAULT_MAX_DELETES, MAX_JOB_NAME,
};
