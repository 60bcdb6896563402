//! Ferry's transfer engine: copies one shard of a MigrationJob, streaming, concurrent,
//! verified, resumable. Used in-process by `ferry run` and by the `transfer-agent` binary.
//!
//! - [`store`]: S3-compatible buckets and filesystem trees behind one interface;
//! - [`shard`]: listing, sorted-merge diff, dispatch and recording of one shard;
//! - [`copy`]: one object (single PUT, multipart, server-side), verified;
//! - [`checkpoint`]: the watermark and where progress records live;
//! - [`report`]: the failure report and the manifest of written keys;
//! - [`error`], [`retry`], [`limit`], [`diff`]: classification, backoff, rate and memory
//!   limits, the overwrite policy.

pub mod checkpoint;
pub mod cluster;
pub mod connect;
pub mod copy;
pub mod diff;
pub mod error;
pub mod limit;
pub mod report;
pub mod retry;
pub mod shard;
pub mod store;

pub use connect::{run_shard, JobCredentials, ShardInputs};
pub use error::TransferError;
