//! Ferry's end-to-end tests: one test binary, one module per area.
//!
//! Run one area with a filter on the module path, e.g.
//! `cargo test -p ferry-tests --test e2e faults::` or `... --test e2e operator_cluster::`.
//!
//! All modules run in one process, so they share one S3 server and one second server
//! (`ferry_tests::shared_server`, `second_server`: every test makes its own uniquely named
//! buckets) and one build of the `ferry` and `transfer-agent` binaries. Nothing here may rely on
//! a fresh process: no test changes the environment or stops a shared server, and servers
//! with special settings (Garage, a moto that checks credentials) and the operator tests'
//! API stand-in are started per test.

mod audit_garage;
mod bucketsync_cluster;
mod chart;
mod check;
mod containment;
mod copy_paths;
mod credentials;
mod database;
mod database_cluster;
mod database_postgres;
mod database_resume;
mod database_rollback;
mod deletes;
mod dry_run;
mod failures;
mod faults;
mod filters;
mod integrity;
mod keys;
mod layering;
mod live_limits;
mod metadata;
mod metrics;
mod nemesis;
mod operator_cluster;
mod overwrite;
mod preflight;
mod progress;
mod resume;
mod rollback;
mod sizes;
mod support_selftest;
mod sync_local;
mod tenancy;
mod url_list;
