//! The `MigrationJob` resource (group `ferry.dev`, version `v1alpha1`) as users write it.

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::ByteSize;
use crate::status::MigrationJobStatus;

pub use ferry_core::stores::ServerSideEncryption;
pub use ferry_core::{Inventory, InventoryChecksums, Mode, OverwritePolicy, VerifyMode};

/// One bulk copy of objects from a source to a destination. Its name is at most 46 characters
/// and has no dots: the names of the objects the operator makes for it add to it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "MigrationJob",
    namespaced,
    status = "MigrationJobStatus",
    shortname = "mj",
    category = "ferry",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.percent"}"#,
    printcolumn = r#"{"name":"Objects","type":"string","jsonPath":".status.progress.summary"}"#,
    printcolumn = r#"{"name":"Bytes","type":"string","jsonPath":".status.progress.bytesHuman"}"#,
    printcolumn = r#"{"name":"Rate","type":"string","jsonPath":".status.progress.rate"}"#,
    printcolumn = r#"{"name":"ETA","type":"string","jsonPath":".status.progress.eta"}"#,
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".status.transport","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = crate::cel::name_length("MigrationJob", crate::validate::MAX_JOB_NAME, crate::validate::JOB_NAME_WHY),
    validation = crate::cel::name_without_dots("MigrationJob")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::spec)]
pub struct MigrationJobSpec {
    /// What is copied and how (the fields a BucketSync shares).
    #[serde(flatten)]
    pub transfer: TransferSpec,
    /// Plan, list and compare, report what would be copied (and deleted), and write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Pause the job: agents stop and resume from their checkpoints when set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// End the job for good (`Cancelled`); multipart uploads in flight are aborted.
    #[serde(default)]
    pub cancel: bool,
    /// The price tables a dry run's cost estimate (`status.estimate.cost`) uses, by name for
    /// each side (`aws-s3`, `cloudflare-r2`, `google-cloud-storage`, `free`), and a ConfigMap
    /// of tables that replace or add to the built-in ones. Default: each side's table follows
    /// from its endpoint. Only read in a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<crate::pricing::Pricing>,
    /// `Copy` (the default) or `Check`: audit the destination against the source, writing
    /// nothing but the report (`check-NNNNNN.jsonl`: every key that is not identical, with
    /// the difference). Each selected key is identical, missing at the destination, different
    /// (size; ETag where both are MD5s; with `verify: ReRead` the bytes of both sides, read
    /// and hashed) or extra at the destination; counted in `status.check`. Ends `Completed`
    /// when all are identical, `PartiallyCompleted` when any differs. Not with `dryRun`
    /// (a check writes nothing already) nor with `deletes.policy: Propagate` (a check
    /// deletes nothing: extra keys are reported).
    #[serde(default, skip_serializing_if = "Mode::is_copy")]
    pub mode: Mode,
    /// A dry run's inventory: every selected source object (key, size, ETag, modification
    /// time, storage class, planned action `copy`, `skip`, `delete` or `archived`) in the
    /// report folder, `inventory-NNNNNN.jsonl` and `.csv` per shard; `checksums: Sha256`
    /// also reads every object and records its SHA-256. Only with `dryRun: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
}

impl std::ops::Deref for MigrationJobSpec {
    type Target = TransferSpec;
    fn deref(&self) -> &TransferSpec {
        &self.transfer
    }
}

impl std::ops::DerefMut for MigrationJobSpec {
    fn deref_mut(&mut self) -> &mut TransferSpec {
        &mut self.transfer
    }
}

/// What a copy moves and how: the fields a MigrationJob and a BucketSync share (one type, so
/// a BucketSync's runs are MigrationJobs carrying exactly its transfer).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferSpec {
    /// Where the objects are read from. Set exactly one of `s3` or `filesystem`.
    pub source: Endpoint,
    /// Where the objects are written to. Set exactly one of `s3` or `filesystem`.
    pub destination: Endpoint,
    /// Which source objects are selected. Objects filtered out are not counted at all (and,
    /// with delete propagation, destination keys filtered out are never deleted).
    #[serde(default)]
    pub filters: Filters,
    /// What to do when the destination already holds a key: `Skip` (copy only absent keys),
    /// `Always`, `IfNewer` (source modified after the destination object) or `IfDifferent`
    /// (sizes or known checksums differ; the default).
    #[serde(default)]
    pub overwrite: OverwritePolicy,
    /// How a copy is verified: `Checksum` (the destination checks a checksum of the bytes read;
    /// the default), `ReRead` (additionally re-read the destination and compare) or `Size`
    /// (sizes only, an explicit opt-out reported as `verified: SizeOnly`).
    #[serde(default)]
    pub verify: VerifyMode,
    /// How the work is spread: `shards` agents, each with `concurrency` objects in flight.
    #[serde(default)]
    pub parallelism: Parallelism,
    /// Bytes per second for the whole job, as a quantity (`200Mi`); divided evenly across
    /// shards. Unlimited when absent. May be changed while the job runs: its agents take the
    /// new value within seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<ByteSize>,
    /// Requests per second for the whole job, divided evenly across shards. 0 means unlimited;
    /// at most 4294967295. May be changed while the job runs: its agents take the new value
    /// within seconds.
    #[serde(default)]
    #[schemars(range(max = 4_294_967_295u32))]
    pub requests_per_second: u32,
    /// When and how objects are uploaded in parts.
    #[serde(default)]
    pub multipart: Multipart,
    /// How many failed objects are tolerated: a count (`"100"`) or a percentage of the
    /// selected objects (`"0.1%"`). Beyond it the job ends `Failed` instead of
    /// `PartiallyCompleted`. Absent means any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(\.[0-9]+)?%?$"))]
    pub max_failures: Option<String>,
    /// Where the failure report and the manifest of written keys go. Default: the destination,
    /// under `.ferry/reports/<namespace>/<name>/<uid>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Endpoint>,
    /// Whether destination keys absent at the source are deleted (`policy: Propagate`), and
    /// the guard on how many. Default: `Keep` (never delete).
    #[serde(default, skip_serializing_if = "Deletes::is_default")]
    pub deletes: Deletes,
    /// S3 destinations only: before an existing destination object is overwritten (or, with
    /// delete propagation, deleted), copy it inside the bucket to
    /// `.ferry/backups/<namespace>/<name>/<uid>/<key>`, so that a rollback
    /// (`ferry.dev/rollback`, `ferry rollback`) can put it back. Costs one CopyObject per
    /// replaced object and the storage of the copies. Without it a rollback reports replaced
    /// objects as `NotRestorable` and keeps them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup_replaced: bool,
}

/// Delete propagation: what happens to destination keys that the source does not hold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deletes {
    /// `Keep` (the default) never deletes. `Propagate` deletes destination keys absent at the
    /// source, after every copy succeeded and within `maxDeletes`. Only keys the filters
    /// select are candidates, never anything under `.ferry/`.
    #[serde(default)]
    pub policy: DeletePolicy,
    /// The guard, decided before anything is deleted: a count (`"100"`, `"0"` allowed) or a
    /// percentage of the destination's selected keys (`"10%"`, the default). A run with more
    /// candidates deletes none of them and says so (condition `DeletesHeld`) until the limit
    /// is raised, the source comes back, or the run is approved with the annotation
    /// `ferry.dev/approve-deletes: <run name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(\.[0-9]+)?%?$"), transform = crate::cel::max_deletes)]
    pub max_deletes: Option<String>,
    /// S3 destinations only: copy each object to `<backupPrefix><key>` in the destination's
    /// bucket before deleting it (like `rclone --backup-dir`). Keys under it are never
    /// candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), transform = crate::cel::backup_prefix)]
    pub backup_prefix: Option<String>,
}

impl Deletes {
    fn is_default(&self) -> bool {
        *self == Deletes::default()
    }

    /// Whether destination keys absent at the source are deleted.
    pub fn propagate(&self) -> bool {
        self.policy == DeletePolicy::Propagate
    }
}

/// Whether deletions at the source are propagated to the destination.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletePolicy {
    /// Never delete at the destination.
    #[default]
    Keep,
    /// Delete destination keys absent at the source, within the guard.
    Propagate,
}

/// One side of a copy. Exactly one of the fields is set (see [`Endpoint::KINDS`]).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::endpoint)]
pub struct Endpoint {
    /// An S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Garage, GCS interoperability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    /// A directory tree on a local disk or a mounted volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemLocation>,
    /// Sources only: files on http(s) servers (a CDN, a web server), named by a list of URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_list: Option<crate::url_list::UrlListSource>,
    /// Sources only: images stored in the rows of a SQLite or PostgreSQL table (base64 text,
    /// data URIs, binary blobs), one object per row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<crate::database::DatabaseSource>,
}

/// A bucket (and a key prefix in it) on an S3-compatible service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::s3_location)]
pub struct S3Location {
    /// The service URL, for example `https://ACCOUNT.r2.cloudflarestorage.com` or
    /// `http://minio.storage:9000`, without credentials in it. Omit for AWS S3. Plain `http://`
    /// with signed requests (not `anonymous`) needs `allowInsecureHttp: true`, except on a
    /// loopback address (`localhost`, `127.x.x.x`, `[::1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), transform = crate::cel::http_url)]
    pub endpoint: Option<String>,
    /// The region to sign requests for (`us-east-1`; `auto` for R2). Defaults to `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// The bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// A raw key prefix (not a directory): only keys that start with it are read (source), and
    /// it is prepended to every written key (destination).
    #[serde(default)]
    #[schemars(length(max = 1024), transform = crate::cel::no_dotdot)]
    pub prefix: String,
    /// Address the bucket as `endpoint/bucket` instead of `bucket.endpoint` (MinIO, Garage,
    /// most self-hosted services need it).
    #[serde(default)]
    pub force_path_style: bool,
    /// A Secret in the same namespace with the keys `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`. Absent: the default AWS
    /// provider chain (IRSA, Pod Identity, instance role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Send unsigned requests (public buckets). Only for sources.
    #[serde(default)]
    pub anonymous: bool,
    /// Accept a plain `http://` endpoint for signed requests. Without TLS the access key ID,
    /// the session token and every object travel unencrypted and can be altered on the way
    /// (the secret key itself is never sent). Not needed for `https://`, anonymous sources or
    /// loopback addresses. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_insecure_http: bool,
    /// Destination only: the storage class of written objects (`STANDARD`, `STANDARD_IA`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub storage_class: Option<String>,
    /// Destination only: server-side encryption, `AES256` or `aws:kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// Destination only: the KMS key for `aws:kms` encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub kms_key_id: Option<String>,
    /// Destination only: a canned ACL for written objects (`private`, `bucket-owner-full-control`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub canned_acl: Option<String>,
}

/// A reference to a Secret in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// The Secret's name (a DNS-1123 subdomain: lowercase letters, digits, `-` and `.`).
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::validate::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A directory tree. Keys are the `/`-separated paths of the files below `path`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemLocation {
    /// The directory, as seen by the agent (in a cluster: the mount path of the volume).
    #[schemars(length(min = 1, max = 4096), transform = crate::cel::no_dotdot)]
    pub path: String,
    /// In a cluster: a PersistentVolumeClaim mounted at `path` (ReadWriteMany when shards > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcRef>,
}

/// A PersistentVolumeClaim in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRef {
    /// The claim's name (a DNS-1123 subdomain: lowercase letters, digits, `-` and `.`).
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::validate::DNS_SUBDOMAIN_PATTERN))]
    pub claim_name: String,
    /// Mount the claim read-only (recommended for sources).
    #[serde(default)]
    pub read_only: bool,
}

/// The CRD's pattern for `modifiedAfter` and `modifiedBefore`: RFC 3339 with seconds and a
/// zone, years 1000 to 2999 (so the UTC time keeps four digits), hours below 24 in the time and
/// the offset. The API server's `date-time` format check is looser than the Rust type (which
/// needs seconds and a zone, and an offset under 24 hours); a test checks that the forms this
/// pattern admits deserialize and round-trip.
pub const TIME_PATTERN: &str = r"^[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// Which source objects are selected.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::filters)]
pub struct Filters {
    /// Glob patterns matched against the key relative to the source prefix; `*` does not
    /// cross `/`, `**` does. An object is selected when it matches one (or the list is empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 1024)))]
    pub include: Vec<String>,
    /// Glob patterns; an object matching any of them is not selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 1024)))]
    pub exclude: Vec<String>,
    /// Match the patterns ignoring case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Only objects at least this large (a quantity such as `1Ki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<ByteSize>,
    /// Only objects at most this large (a quantity such as `5Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// Only objects modified at or after this time: RFC 3339 with seconds and a zone
    /// (`2024-01-01T00:00:00Z`, `2024-01-01T02:00:00.5+02:00`), years 1000 to 2999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TIME_PATTERN))]
    pub modified_after: Option<DateTime<Utc>>,
    /// Only objects modified before this time, written as `modifiedAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TIME_PATTERN))]
    pub modified_before: Option<DateTime<Utc>>,
}

/// How the work is spread.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parallelism {
    /// Agents (pods), each copying one contiguous range of the keyspace. 1 to 1000.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 1000))]
    pub shards: u32,
    /// Objects in flight per shard. 1 to 4096. Default 256: small objects cost a request's
    /// round trip each, so many in flight is what makes them fast; the memory budget bounds
    /// the bytes in flight whatever this is. May be changed while the job runs: its agents
    /// take the new value within seconds.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 4096))]
    pub concurrency: u32,
    /// Bytes buffered in memory per shard at most, whatever the object sizes (a quantity).
    /// Default 256Mi. May be changed while the job runs: its agents take a lower value within
    /// seconds; in a cluster a higher one only up to the budget the job was planned with,
    /// which its pods' memory limit is made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::cel::memory_budget)]
    pub memory_budget: Option<ByteSize>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_shards() -> u32 {
    1
}
fn default_concurrency() -> u32 {
    256
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism {
            shards: default_shards(),
            concurrency: default_concurrency(),
            memory_budget: None,
        }
    }
}

/// When and how objects are uploaded in parts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::multipart)]
pub struct Multipart {
    /// Objects larger than this are uploaded in parts (at most 5Gi). Default 64Mi.
    #[serde(default = "default_threshold")]
    pub threshold: ByteSize,
    /// The size of each part but the last (at least 5Mi). Raised automatically so that no
    /// object needs more than 10,000 parts. Default 16Mi.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
}

fn default_threshold() -> ByteSize {
    ByteSize::parse("64Mi").expect("valid")
}
fn default_part_size() -> ByteSize {
    ByteSize::parse("16Mi").expect("valid")
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart {
            threshold: default_threshold(),
            part_size: default_part_size(),
        }
    }
}
