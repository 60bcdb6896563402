//! Ferry's transfer engine: copies one shard of a job plan, streaming, concurrent, verified,
//! resumable. Used in-process by `ferry run` and by the `transfer-agent` binary. It knows
//! nothing of Kubernetes or of the `MigrationJob` API: it reads a `ferry_core::JobPlan`.
//!
//! - [`stores`]: the `Source`/`Sink` traits and their kinds (S3, filesystem, memory);
//! - [`shard`]: listing, sorted-merge diff, dispatch and recording of one shard;
//! - [`copy`]: one object (single PUT, multipart, server-side), verified;
//! - [`db`]: database tables (SQLite, PostgreSQL) as sources, one object per row;
//! - [`job`]: opens a plan's stores and runs a shard;
//! - [`planner`]: the Secrets and endpoints checked, then the shard ranges of a plan;
//! - [`checkpoint`]: the watermark and the file progress store;
//! - [`report`]: the failure report and the manifest of written keys;
//! - [`audit`]: Check mode's classification and the dry run's inventory;
//! - [`error`], [`retry`], [`limit`], [`diff`]: classification, backoff, rate and memory
//!   limits, the overwrite policy.

pub mod audit;
pub mod checkpoint;
pub mod copy;
pub mod db;
pub mod diff;
pub mod error;
pub mod job;
pub mod limit;
pub mod planner;
pub mod report;
pub mod retry;
pub mod shard;
pub mod stores;

pub use error::TransferError;
pub use job::{run_shard, ShardInputs};
