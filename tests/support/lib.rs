//! Support code for Ferry's end-to-end tests.
//!
//! The tests drive the real `ferry` binary, black-box, through YAML files, against a real
//! S3 server: moto by default, or Garage when `FERRY_TEST_GARAGE=/path/to/garage` is set.
//!
//! - [`server`]: start moto or Garage (a shared instance per test process, or independent ones).
//! - [`s3`]: an aws-sdk-s3 client for setting up and inspecting buckets.
//! - [`proxy`]: a fault-injecting HTTP/1.1 proxy that also counts requests.
//! - [`ferry`]: write job YAML, run the `ferry` binary, read its JSON status and state files.
//! - [`reports`]: read the failure reports and manifests Ferry writes into the destination.
//! - [`data`]: deterministic pseudo-random data and filesystem trees.
//! - [`scenario`]: the set-up most tests share (two sides, their contents, proxies, a Workdir
//!   and the job between them), so a test states only what is particular to it.
//! - [`nemesis`]: the nemesis suite's checker (every key one complete source version, the
//!   reports a partition of the keys, counters, stuck jobs, foreign objects) and its figures.
//! - [`postgres`]: a real PostgreSQL server (initdb in a temporary directory) for the
//!   database-source tests, a database per test.
//! - [`cluster`]: the operator tests' Kubernetes API (a real one, or the kmock stand-in
//!   `kapi.py`) and a harness that plays kubelet and the Job controller.

pub mod cluster;
pub mod data;
pub mod ferry;
pub mod fixtures;
pub mod nemesis;
pub mod postgres;
pub mod proxy;
pub mod reports;
pub mod s3;
pub mod scenario;
pub mod server;

pub use data::{assert_trees_eq, bytes, read_tree, set_mtime, small_objects, write_tree, Tree};
pub use ferry::{ferry_bin, workspace_root, Job, Run, Side, Status, Workdir};
pub use fixtures::{assert_bucket_eq, bucket_with, small_multipart};
pub use proxy::{Fault, FaultProxy, FaultSchedule, RequestRecord};
pub use s3::{Meta, S3};
pub use scenario::{Place, Scenario, ScenarioBuilder};
pub use server::{
    second_server, shared_server, start_independent_server, Creds, S3Server, ServerKind,
};

/// One mebibyte (the multipart tests use parts of `5 * MI`, the smallest S3 allows).
pub const MI: usize = 1024 * 1024;
