//! The set-up most tests share, stated once: the two sides of a copy (a fresh bucket on a
//! server, or a fresh directory), what they hold before the run, fault proxies in front of the
//! buckets, a work directory, and the MigrationJob between the two sides.
//!
//! A test names the shape of its copy and only what is particular to it:
//!
//! ```text
//! // Build, run, and check exit 0, `Completed`, the count and the destination's contents:
//! let sc = Scenario::one_server("ssc")
//!     .one_proxy(FaultSchedule::none())
//!     .multipart()
//!     .copy_tree(&sample(), "destination after a server-side copy")
//!     .await;
//! assert!(sc.proxy().copies().len() >= sample().len());
//!
//! // Or build, change what the test is about, run, and check what it needs:
//! let sc = Scenario::s3_to_fs("dry-fs")
//!     .source_tree(&source())
//!     .destination_tree(&seeded())
//!     .with("dryRun", json!(true))
//!     .build()
//!     .await;
//! let run = sc.run().await;
//! sc.assert_destination_eq(&seeded(), "destination directory after a dry run").await;
//! ```
//!
//! Names follow the tests' habits: the job (and its Workdir) is called `name`, its buckets
//! `name-src` and `name-dst` (made unique per process), its directories `src/` and `dst/` in
//! the Workdir. Buckets on two different servers are reached with the Secrets `src-creds` and
//! `dst-creds`; everything else with the one Secret `creds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::data::{assert_trees_eq, read_tree, write_tree, Tree};
use crate::ferry::{Job, Run, Side, Workdir};
use crate::fixtures::{assert_bucket_eq, small_multipart};
use crate::proxy::{FaultProxy, FaultSchedule};
use crate::s3::{unique_bucket_name, S3};
use crate::server::{second_server, shared_server, S3Server};

/// Where one side of a scenario lives.
#[derive(Clone, Copy, Debug)]
pub enum Place<'a> {
    /// A fresh bucket on this server.
    Bucket(&'a S3Server),
    /// A bucket name on this server that no bucket has (for job-fatal errors).
    Missing(&'a S3Server),
    /// A fresh directory in the scenario's Workdir (`src/` or `dst/`).
    Dir,
}

impl<'a> Place<'a> {
    fn server(self) -> Option<&'a S3Server> {
        match self {
            Place::Bucket(s) | Place::Missing(s) => Some(s),
            Place::Dir => None,
        }
    }
}

type SideEdit<'a> = Box<dyn FnOnce(Side) -> Side + 'a>;

/// What a scenario will set up; [`ScenarioBuilder::build`] sets it up. Made by the
/// constructors of [`Scenario`].
pub struct ScenarioBuilder<'a> {
    name: String,
    source: Place<'a>,
    destination: Place<'a>,
    source_tree: Tree,
    source_in_parts: Vec<(String, Vec<u8>, usize)>,
    destination_tree: Tree,
    source_proxy: Option<FaultSchedule>,
    destination_proxy: Option<FaultSchedule>,
    one_proxy: Option<FaultSchedule>,
    source_edits: Vec<SideEdit<'a>>,
    destination_edits: Vec<SideEdit<'a>>,
    spec: Vec<(String, Value)>,
}

impl<'a> ScenarioBuilder<'a> {
    /// Put `tree` into the source before the run (objects, or files below `src/`).
    pub fn source_tree(mut self, tree: &Tree) -> Self {
        self.source_tree = tree.clone();
        self
    }

    /// Put one more object into the source: into a bucket by a multipart upload of
    /// `part_size` parts (so its ETag is not an MD5), into a directory as a plain file.
    pub fn source_uploaded_in_parts(mut self, key: &str, body: Vec<u8>, part_size: usize) -> Self {
        self.source_in_parts
            .push((key.to_string(), body, part_size));
        self
    }

    /// Put `tree` into the destination before the run (a pre-seeded destination).
    pub fn destination_tree(mut self, tree: &Tree) -> Self {
        self.destination_tree = tree.clone();
        self
    }

    /// Reach the source bucket through a [`FaultProxy`] with this schedule
    /// ([`Scenario::src_proxy`]).
    pub fn source_proxy(mut self, schedule: FaultSchedule) -> Self {
        self.source_proxy = Some(schedule);
        self
    }

    /// Reach the destination bucket through a [`FaultProxy`] with this schedule
    /// ([`Scenario::dst_proxy`]).
    pub fn destination_proxy(mut self, schedule: FaultSchedule) -> Self {
        self.destination_proxy = Some(schedule);
        self
    }

    /// Reach both buckets (on one server) through a single [`FaultProxy`]: one endpoint
    /// string, region and Secret name, so Ferry may copy inside the server
    /// ([`Scenario::proxy`]).
    pub fn one_proxy(mut self, schedule: FaultSchedule) -> Self {
        self.one_proxy = Some(schedule);
        self
    }

    /// Change the source side of the job (e.g. `|s| s.prefix("photos")`).
    pub fn source_side(mut self, edit: impl FnOnce(Side) -> Side + 'a) -> Self {
        self.source_edits.push(Box::new(edit));
        self
    }

    /// Change the destination side of the job (e.g. `|s| s.set("storageClass", ...)`).
    pub fn destination_side(mut self, edit: impl FnOnce(Side) -> Side + 'a) -> Self {
        self.destination_edits.push(Box::new(edit));
        self
    }

    /// Set a top-level spec field of the job (`overwrite`, `filters`, `dryRun`...).
    pub fn with(mut self, field: &str, value: Value) -> Self {
        self.spec.push((field.to_string(), value));
        self
    }

    /// `multipart:` with the small threshold and part size of [`small_multipart`].
    pub fn multipart(self) -> Self {
        self.with("multipart", small_multipart())
    }

    /// Create the buckets and directories, fill them, start the proxies, and write the job
    /// (not run yet).
    pub async fn build(self) -> Scenario<'a> {
        let wd = Workdir::new(&self.name);
        let (source_proxy, destination_proxy) = match self.one_proxy {
            Some(schedule) => {
                let (Place::Bucket(a), Place::Bucket(b)) = (self.source, self.destination) else {
                    panic!("{}: one proxy needs a bucket on each side", self.name);
                };
                assert_eq!(
                    a.endpoint, b.endpoint,
                    "{}: one proxy needs both buckets on one server",
                    self.name
                );
                let proxy = Arc::new(FaultProxy::start(&a.endpoint, schedule).await);
                (Some(proxy.clone()), Some(proxy))
            }
            None => (
                start_proxy(self.source, self.source_proxy).await,
                start_proxy(self.destination, self.destination_proxy).await,
            ),
        };
        let two_servers = match (self.source.server(), self.destination.server()) {
            (Some(a), Some(b)) => a.endpoint != b.endpoint,
            _ => false,
        };
        let source = End::make(&wd, &self.name, "src", self.source, source_proxy).await;
        let destination =
            End::make(&wd, &self.name, "dst", self.destination, destination_proxy).await;
        source.fill(&self.source_tree).await;
        for (key, body, part_size) in &self.source_in_parts {
            source.put_in_parts(key, body, *part_size).await;
        }
        destination.fill(&self.destination_tree).await;

        let mut src_side = source.side();
        let mut dst_side = destination.side();
        if two_servers {
            src_side = src_side.secret_name("src-creds");
            dst_side = dst_side.secret_name("dst-creds");
        }
        for edit in self.source_edits {
            src_side = edit(src_side);
        }
        for edit in self.destination_edits {
            dst_side = edit(dst_side);
        }
        let mut job = Job::new(&self.name, src_side, dst_side);
        for (field, value) in self.spec {
            job = job.with(&field, value);
        }
        Scenario {
            name: self.name,
            wd,
            source,
            destination,
            job,
        }
    }

    /// Build with `tree` in the source, run, and assert the common good outcome (see
    /// [`Scenario::copy_and_compare`]); returns the scenario for further checks.
    pub async fn copy_tree(self, tree: &Tree, what: &str) -> Scenario<'a> {
        let sc = self.source_tree(tree).build().await;
        sc.copy_and_compare(tree, what).await;
        sc
    }
}

async fn start_proxy(place: Place<'_>, schedule: Option<FaultSchedule>) -> Option<Arc<FaultProxy>> {
    match (place, schedule) {
        (Place::Bucket(server), Some(schedule)) => Some(Arc::new(
            FaultProxy::start(&server.endpoint, schedule).await,
        )),
        (_, Some(_)) => panic!("only a bucket can be behind a proxy"),
        (_, None) => None,
    }
}

/// One side of a built scenario.
pub enum End<'a> {
    /// A bucket: its server, a client for it (direct, not through the proxy), its name, and
    /// the proxy the job reaches it through, if any.
    Bucket {
        server: &'a S3Server,
        s3: S3,
        bucket: String,
        proxy: Option<Arc<FaultProxy>>,
    },
    /// A directory below the Workdir.
    Dir(PathBuf),
}

impl<'a> End<'a> {
    async fn make(
        wd: &Workdir,
        name: &str,
        role: &str,
        place: Place<'a>,
        proxy: Option<Arc<FaultProxy>>,
    ) -> End<'a> {
        match place {
            Place::Bucket(server) => {
                let s3 = S3::for_server(server);
                let bucket = s3.create_bucket(&format!("{name}-{role}")).await;
                End::Bucket {
                    server,
                    s3,
                    bucket,
                    proxy,
                }
            }
            Place::Missing(server) => End::Bucket {
                server,
                s3: S3::for_server(server),
                bucket: unique_bucket_name(&format!("no-such-{name}-{role}")),
                proxy,
            },
            Place::Dir => End::Dir(wd.subdir(role)),
        }
    }

    /// The job's side: the bucket (through the proxy when there is one) or the directory.
    pub fn side(&self) -> Side {
        match self {
            End::Bucket {
                server,
                bucket,
                proxy: Some(proxy),
                ..
            } => Side::s3_at(&proxy.endpoint(), &server.creds, bucket),
            End::Bucket { server, bucket, .. } => Side::s3(server, bucket),
            End::Dir(path) => Side::fs(path),
        }
    }

    /// Put `tree` into the bucket or below the directory.
    pub async fn fill(&self, tree: &Tree) {
        if tree.is_empty() {
            return;
        }
        match self {
            End::Bucket { s3, bucket, .. } => s3.put_all(bucket, tree).await,
            End::Dir(path) => write_tree(path, tree),
        }
    }

    /// Put one object: into a bucket by a multipart upload of `part_size` parts, into a
    /// directory as a file.
    pub async fn put_in_parts(&self, key: &str, body: &[u8], part_size: usize) {
        match self {
            End::Bucket { s3, bucket, .. } => s3.put_multipart(bucket, key, body, part_size).await,
            End::Dir(path) => write_tree(path, &Tree::from([(key.to_string(), body.to_vec())])),
        }
    }

    /// Assert that the side holds exactly `expected`, naming `what` (and the bucket) otherwise.
    pub async fn assert_eq(&self, expected: &Tree, what: &str) {
        match self {
            End::Bucket { s3, bucket, .. } => assert_bucket_eq(s3, bucket, expected, what).await,
            End::Dir(path) => assert_trees_eq(expected, &read_tree(path), what),
        }
    }

    /// A client for the bucket's server (direct, not through the proxy).
    pub fn s3(&self) -> &S3 {
        match self {
            End::Bucket { s3, .. } => s3,
            End::Dir(p) => panic!("{} is a directory, not a bucket", p.display()),
        }
    }

    pub fn bucket(&self) -> &str {
        match self {
            End::Bucket { bucket, .. } => bucket,
            End::Dir(p) => panic!("{} is a directory, not a bucket", p.display()),
        }
    }

    pub fn dir(&self) -> &Path {
        match self {
            End::Dir(p) => p,
            End::Bucket { bucket, .. } => panic!("{bucket} is a bucket, not a directory"),
        }
    }

    /// The proxy in front of the bucket.
    pub fn proxy(&self) -> &FaultProxy {
        match self {
            End::Bucket {
                proxy: Some(proxy), ..
            } => proxy,
            End::Bucket { bucket, .. } => panic!("{bucket} is not behind a proxy"),
            End::Dir(p) => panic!("{} is a directory, not behind a proxy", p.display()),
        }
    }
}

/// A built scenario: its Workdir, its two sides and the job between them.
pub struct Scenario<'a> {
    /// The job's name (also the Workdir's and the buckets' prefix).
    pub name: String,
    pub wd: Workdir,
    pub source: End<'a>,
    pub destination: End<'a>,
    /// The job between the two sides, as configured; tests may clone and change it.
    pub job: Job,
}

impl<'a> Scenario<'a> {
    /// A scenario between any two places.
    pub fn between(name: &str, source: Place<'a>, destination: Place<'a>) -> ScenarioBuilder<'a> {
        ScenarioBuilder {
            name: name.to_string(),
            source,
            destination,
            source_tree: Tree::new(),
            source_in_parts: Vec::new(),
            destination_tree: Tree::new(),
            source_proxy: None,
            destination_proxy: None,
            one_proxy: None,
            source_edits: Vec::new(),
            destination_edits: Vec::new(),
            spec: Vec::new(),
        }
    }
}

impl Scenario<'static> {
    /// S3→S3, both buckets on the shared server (Ferry may copy inside the server).
    pub fn one_server(name: &str) -> ScenarioBuilder<'static> {
        let server = shared_server();
        Scenario::between(name, Place::Bucket(server), Place::Bucket(server))
    }

    /// S3→S3 from the shared server to the second one (Ferry streams: GET, then PUT).
    pub fn two_servers(name: &str) -> ScenarioBuilder<'static> {
        Scenario::between(
            name,
            Place::Bucket(shared_server()),
            Place::Bucket(second_server()),
        )
    }

    /// Files below `src/` to a bucket on the shared server.
    pub fn fs_to_s3(name: &str) -> ScenarioBuilder<'static> {
        Scenario::between(name, Place::Dir, Place::Bucket(shared_server()))
    }

    /// A bucket on the shared server to files below `dst/`.
    pub fn s3_to_fs(name: &str) -> ScenarioBuilder<'static> {
        Scenario::between(name, Place::Bucket(shared_server()), Place::Dir)
    }

    /// Files below `src/` to files below `dst/`.
    pub fn fs_to_fs(name: &str) -> ScenarioBuilder<'static> {
        Scenario::between(name, Place::Dir, Place::Dir)
    }
}

impl<'a> Scenario<'a> {
    /// Run the job (`ferry run`, no extra arguments) to its end.
    pub async fn run(&self) -> Run {
        self.wd.run(&self.job, &[]).await
    }

    /// Run the job with extra command-line arguments (e.g. `--retry-failed`).
    pub async fn run_with(&self, extra: &[&str]) -> Run {
        self.wd.run(&self.job, extra).await
    }

    /// Run the job and assert the common good outcome: exit 0, phase `Completed`,
    /// `objectsCopied` equal to the size of `expected`, and a destination holding exactly
    /// `expected` (`what` names the check).
    pub async fn copy_and_compare(&self, expected: &Tree, what: &str) -> Run {
        let run = self.run().await;
        run.assert_exit(0)
            .assert_phase("Completed")
            .assert_counter("objectsCopied", expected.len() as u64);
        self.destination.assert_eq(expected, what).await;
        run
    }

    /// Assert that the destination holds exactly `expected` (see [`End::assert_eq`]).
    pub async fn assert_destination_eq(&self, expected: &Tree, what: &str) {
        self.destination.assert_eq(expected, what).await
    }

    /// The source bucket's client (direct). Panics when the source is a directory.
    pub fn src_s3(&self) -> &S3 {
        self.source.s3()
    }

    /// The destination bucket's client (direct). Panics when the destination is a directory.
    pub fn dst_s3(&self) -> &S3 {
        self.destination.s3()
    }

    pub fn src_bucket(&self) -> &str {
        self.source.bucket()
    }

    pub fn dst_bucket(&self) -> &str {
        self.destination.bucket()
    }

    pub fn src_dir(&self) -> &Path {
        self.source.dir()
    }

    pub fn dst_dir(&self) -> &Path {
        self.destination.dir()
    }

    pub fn src_proxy(&self) -> &FaultProxy {
        self.source.proxy()
    }

    pub fn dst_proxy(&self) -> &FaultProxy {
        self.destination.proxy()
    }

    /// The proxy of [`ScenarioBuilder::one_proxy`] (in front of both buckets).
    pub fn proxy(&self) -> &FaultProxy {
        self.source.proxy()
    }
}
