//! Validation of a spec, once, into a [`ValidatedSpec`] that carries every resolved value
//! ("parse, don't validate"): the operator and `ferry run` read shard counts, budgets and the
//! plan's transfer settings from it, never from the raw spec. The CRD's CEL rules repeat the
//! checks that the API server can enforce at `kubectl apply` time.

use ferry_core::plan::{DeleteSettings, FailureBudget, MultipartSettings, Transfer};
use ferry_core::select::{Selection, Selector};
use sha2::{Digest, Sha256};

use crate::endpoint::Side;
use crate::spec::{Endpoint, MigrationJobSpec, TransferSpec};

/// The longest label value, and so the longest name of anything whose name becomes a label
/// value or a host name (a Job's name is its pods' `job-name` label; an Indexed Job's pods are
/// named, and host-named, after it).
pub const LABEL_MAX: usize = 63;
/// The most shards a job may have (`parallelism.shards`).
pub const MAX_SHARDS: u32 = 1000;

const fn digits(mut n: u32) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The longest suffix the operator adds to a MigrationJob's name: the pods of its agents'
/// Indexed Job, `<name>-agents-<shard index>-<5 random characters>`. Every other derived name
/// is shorter: `-plan`, `-shard-<index>`, `-agent`, `-agents`, and a planner's
/// `-planner-<5 characters>` (room is kept for an 8-character suffix such as `-planner`).
pub const MAX_JOB_NAME_SUFFIX: usize = "-agents-".len() + digits(MAX_SHARDS - 1) + "-xxxxx".len();
/// The longest MigrationJob name (46): with [`MAX_JOB_NAME_SUFFIX`] it fits a label value.
pub const MAX_JOB_NAME: usize = LABEL_MAX - MAX_JOB_NAME_SUFFIX;
/// Why a MigrationJob name is bounded, in the CRD's message and the operator's.
pub const JOB_NAME_WHY: &str =
    "its agents' pods are named <name>-agents-<shard>-<5 characters>, which must fit 63 characters";

/// The problems of a resource name that the operator derives child names from: at most `max`
/// characters (`why` says why) and no dots (the names prefix pod host names, DNS labels).
pub fn name_problems(kind: &str, name: &str, max: usize, why: &str) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if name.len() > max {
        errors.push(err(
            "metadata.name",
            format!(
                "a {kind} name is at most {max} characters, not {}: {why}",
                name.len()
            ),
        ));
    }
    if name.contains('.') {
        errors.push(err(
            "metadata.name",
            format!("a {kind} name must not contain '.': it prefixes the names of its agents' pods, used as host names"),
        ));
    }
    errors
}

/// The problems of a MigrationJob's name (the CRD refuses them at apply time too).
pub fn job_name_problems(name: &str) -> Vec<SpecError> {
    name_problems("MigrationJob", name, MAX_JOB_NAME, JOB_NAME_WHY)
}

/// A DNS-1123 subdomain, the form of Secret and PersistentVolumeClaim names (the CRD's
/// pattern; [`dns_subdomain_problem`] is the same check).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Why `name` is not a DNS-1123 subdomain of at most 253 characters, or None.
pub fn dns_subdomain_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 253 {
        return Some("it must be 1 to 253 characters long");
    }
    for label in name.split('.') {
        let b = label.as_bytes();
        if b.is_empty() {
            return Some("it must not begin or end with '.' nor contain '..'");
        }
        if !b
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Some("only lowercase letters, digits, '-' and '.' are allowed");
        }
        if !(b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()) {
            return Some("each '.'-separated part must begin and end with a letter or digit");
        }
    }
    None
}

/// Whether `endpoint` is plain http to a loopback address (`localhost`, `127.x.x.x` or
/// `[::1]`, with an optional port), where requests never leave the machine or pod. The same
/// test as the CRD's regular expression [`crate::cel::LOOPBACK_HTTP`].
pub fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let port_ok = |tail: &str| {
        tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    };
    if let Some(tail) = authority
        .strip_prefix("localhost")
        .or_else(|| authority.strip_prefix("[::1]"))
    {
        return port_ok(tail);
    }
    let (host, tail) = match authority.find(':') {
        Some(i) => authority.split_at(i),
        None => (authority, ""),
    };
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts[0] == "127"
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()))
        && port_ok(tail)
}

/// One problem with a spec: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

pub(crate) fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The in-flight byte budget of a shard when `parallelism.memoryBudget` is absent.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 * MIB;

/// A spec that passed every check, with the values downstream code needs resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSpec {
    /// Shards (agents), at least 1.
    pub shards: u32,
    /// What the plan carries: stores, selection, policies and limits, defaults resolved.
    pub transfer: Transfer,
    /// See [`spec_hash`].
    pub spec_hash: String,
}

/// Checks `spec` and resolves it, or says everything that is wrong with it.
pub fn validate(spec: &MigrationJobSpec) -> Result<ValidatedSpec, Vec<SpecError>> {
    let errors = problems(spec);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ValidatedSpec {
        shards: spec.parallelism.shards,
        spec_hash: spec_hash(spec),
        transfer: Transfer {
            mode: spec.mode,
            inventory: spec.inventory,
            ..resolve(&spec.transfer, spec.dry_run, spec.cancel)
        },
    })
}

/// The default guard of delete propagation: 10% of the destination's selected keys.
pub const DEFAULT_MAX_DELETES: &str = "10%";

/// The plan's transfer settings of a valid `TransferSpec` (checked by [`transfer_problems`]),
/// every default resolved.
pub fn resolve(spec: &TransferSpec, dry_run: bool, cancel: bool) -> Transfer {
    let location = |ep: &Endpoint| ep.location().expect("checked").store_config();
    let f = &spec.filters;
    Transfer {
        source: location(&spec.source),
        destination: location(&spec.destination),
        report: spec.report.as_ref().map(location),
        selection: Selection {
            include: f.include.clone(),
            exclude: f.exclude.clone(),
            case_insensitive: f.case_insensitive,
            min_size: f.min_size.as_ref().map(|q| q.bytes()),
            max_size: f.max_size.as_ref().map(|q| q.bytes()),
            modified_after: f.modified_after,
            modified_before: f.modified_before,
        },
        overwrite: spec.overwrite,
        verify: spec.verify,
        concurrency: spec.parallelism.concurrency,
        memory_budget: spec
            .parallelism
            .memory_budget
            .as_ref()
            .map_or(DEFAULT_MEMORY_BUDGET, |m| m.bytes()),
        bandwidth_limit: spec.bandwidth_limit.as_ref().map(|b| b.bytes()),
        requests_per_second: spec.requests_per_second,
        multipart: MultipartSettings {
            threshold: spec.multipart.threshold.bytes(),
            part_size: spec.multipart.part_size.bytes(),
        },
        max_failures: spec
            .max_failures
            .as_deref()
            .map(|m| FailureBudget::parse(m).expect("checked")),
        dry_run,
        cancel,
        deletes: spec.deletes.propagate().then(|| DeleteSettings {
            max: FailureBudget::parse(
                spec.deletes
                    .max_deletes
                    .as_deref()
                    .unwrap_or(DEFAULT_MAX_DELETES),
            )
            .expect("checked"),
            backup_prefix: spec.deletes.backup_prefix.clone(),
        }),
        backup_replaced: spec.backup_replaced,
        mode: ferry_core::Mode::Copy,
        inventory: None,
    }
}

/// A hash of every spec field that shapes what a run does, that is all but the runtime knobs
/// ([`RUNTIME_KNOBS`]). Checkpoints and progress records with another hash are stale.
pub fn spec_hash(spec: &MigrationJobSpec) -> String {
    let mut s = spec.clone();
    s.suspend = false;
    s.cancel = false;
    s.bandwidth_limit = None;
    s.requests_per_second = 0;
    s.parallelism.concurrency = 0;
    s.parallelism.memory_budget = None;
    let json = serde_json::to_vec(&s).expect("spec serializes");
    hex::encode(&Sha256::digest(&json)[..12])
}

/// The spec fields that may change while a job runs (camelCase paths): [`spec_hash`] leaves
/// them out and the CRD's immutability rule lets them change. A test ties the three together.
pub const RUNTIME_KNOBS: &[&str] = &[
    "suspend",
    "cancel",
    "bandwidthLimit",
    "requestsPerSecond",
    "parallelism.concurrency",
    "parallelism.memoryBudget",
];

/// Every problem found in `spec`; empty when it is valid.
pub fn problems(spec: &MigrationJobSpec) -> Vec<SpecError> {
    let mut errors = transfer_problems(&spec.transfer);
    errors.extend(mode_problems(spec));
    errors
}

/// The combinations of `mode`, `inventory`, `dryRun` and `deletes` that make no sense (the
/// CEL rules `crate::cel::JOB_RULES` say the same).
fn mode_problems(spec: &MigrationJobSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if spec.mode == ferry_core::Mode::Check {
        if spec.dry_run {
            errors.push(err(
                "spec.dryRun",
                "mode Check cannot be a dry run: a check writes nothing but its report already",
            ));
        }
        if spec.deletes.propagate() {
            errors.push(err(
                "spec.deletes.policy",
                "mode Check cannot be combined with deletes.policy Propagate: a check deletes nothing (extra destination keys are reported)",
            ));
        }
    }
    if spec.inventory.is_some() && !spec.dry_run {
        errors.push(err(
            "spec.inventory",
            "inventory is written by a dry run: set dryRun: true",
        ));
    }
    errors
}

/// Every problem found in the transfer fields (shared by MigrationJob and BucketSync).
pub fn transfer_problems(spec: &TransferSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    check_deletes(spec, &mut errors);
    check_endpoint(&spec.source, Side::Source, &mut errors);
    check_endpoint(&spec.destination, Side::Destination, &mut errors);
    if let Some(report) = &spec.report {
        check_endpoint(report, Side::Report, &mut errors);
    }
    check_overlap(spec, &mut errors);

    let f = &spec.filters;
    let selection = Selection {
        include: f.include.clone(),
        exclude: f.exclude.clone(),
        case_insensitive: f.case_insensitive,
        ..Default::default()
    };
    if let Err(e) = Selector::new(&selection) {
        errors.push(err(
            format!("spec.filters.{}[{}]", e.field, e.index),
            format!("{:?} is not a valid glob: {}", e.pattern, e.reason),
        ));
    }
    if let (Some(min), Some(max)) = (&f.min_size, &f.max_size) {
        if min.bytes() > max.bytes() {
            errors.push(err(
                "spec.filters.minSize",
                format!("minSize ({min}) is larger than maxSize ({max})"),
            ));
        }
    }
    if let (Some(a), Some(b)) = (f.modified_after, f.modified_before) {
        if a >= b {
            errors.push(err(
                "spec.filters.modifiedAfter",
                "modifiedAfter must be earlier than modifiedBefore",
            ));
        }
    }

    let p = &spec.parallelism;
    if !(1..=MAX_SHARDS).contains(&p.shards) {
        errors.push(err(
            "spec.parallelism.shards",
            format!("must be between 1 and {MAX_SHARDS}, not {}", p.shards),
        ));
    }
    if !(1..=4096).contains(&p.concurrency) {
        errors.push(err(
            "spec.parallelism.concurrency",
            format!("must be between 1 and 4096, not {}", p.concurrency),
        ));
    }
    if let Some(m) = &p.memory_budget {
        if m.bytes() < 16 * MIB {
            errors.push(err(
                "spec.parallelism.memoryBudget",
                format!("must be at least 16Mi, not {m}"),
            ));
        }
    }
    let m = &spec.multipart;
    if m.part_size.bytes() < 5 * MIB {
        errors.push(err(
            "spec.multipart.partSize",
            format!("must be at least 5Mi (the S3 minimum), not {}", m.part_size),
        ));
    }
    if m.part_size.bytes() > 5 * GIB {
        errors.push(err(
            "spec.multipart.partSize",
            format!("must be at most 5Gi (the S3 maximum), not {}", m.part_size),
        ));
    }
    if m.threshold.bytes() > 5 * GIB {
        errors.push(err(
            "spec.multipart.threshold",
            format!(
                "must be at most 5Gi (the largest single PUT), not {}",
                m.threshold
            ),
        ));
    }
    check_memory(spec, &mut errors);
    if let Some(b) = &spec.bandwidth_limit {
        if b.bytes() < 1024 {
            errors.push(err(
                "spec.bandwidthLimit",
                format!("must be at least 1Ki per second, not {b}"),
            ));
        }
    }
    if let Some(mf) = &spec.max_failures {
        if let Err(e) = FailureBudget::parse(mf) {
            errors.push(err("spec.maxFailures", e));
        }
    }
    errors
}

/// Why a part, or an object sent in one PUT, must fit the in-flight budget: the agent holds
/// each whole in memory while it is read, sent and (on a retry) sent again. The budget clamps
/// a larger request to the whole budget instead of waiting forever, but the buffer is still
/// allocated whole, so such a spec would make the agent use more memory than its pod is given
/// and be OOM-killed on the same object at every retry (issue 13, mode 6). The CRD's rules
/// ([`crate::cel::memory_rules`]) say the same at `kubectl apply` time.
pub const PART_IN_MEMORY: &str = "each part is held whole in memory while it is sent";
/// See [`PART_IN_MEMORY`].
pub const PUT_IN_MEMORY: &str =
    "an object up to the threshold is sent in one PUT, held whole in memory";

/// `multipart.partSize` and `multipart.threshold` (defaults included) fit
/// `parallelism.memoryBudget` (default included).
fn check_memory(spec: &TransferSpec, errors: &mut Vec<SpecError>) {
    let budget = spec
        .parallelism
        .memory_budget
        .as_ref()
        .map_or(DEFAULT_MEMORY_BUDGET, |b| b.bytes());
    let budget_text = match &spec.parallelism.memory_budget {
        Some(b) => b.to_string(),
        None => "256Mi, the default".to_string(),
    };
    let m = &spec.multipart;
    if m.part_size.bytes() > budget {
        errors.push(err(
            "spec.multipart.partSize",
            format!(
                "multipart.partSize ({}) must be at most parallelism.memoryBudget ({budget_text}): \
                 {PART_IN_MEMORY}; lower partSize or raise memoryBudget",
                m.part_size
            ),
        ));
    }
    if m.threshold.bytes() > budget {
        errors.push(err(
            "spec.multipart.threshold",
            format!(
                "multipart.threshold ({}) must be at most parallelism.memoryBudget ({budget_text}): \
                 {PUT_IN_MEMORY}; lower threshold (default 64Mi) or raise memoryBudget",
                m.threshold
            ),
        ));
    }
}

fn check_deletes(spec: &TransferSpec, errors: &mut Vec<SpecError>) {
    if spec.backup_replaced && spec.destination.s3.is_none() {
        errors.push(err(
            "spec.backupReplaced",
            "needs an S3 destination (backups are copies inside its bucket)",
        ));
    }
    let d = &spec.deletes;
    if !d.propagate() {
        if d.max_deletes.is_some() || d.backup_prefix.is_some() {
            errors.push(err(
                "spec.deletes",
                "maxDeletes and backupPrefix only apply with policy Propagate",
            ));
        }
        return;
    }
    if spec.source.database.is_some() {
        errors.push(err(
            "spec.deletes.policy",
            "Propagate cannot be used with a database source: rows that leave the listing \
             (writeBack.clearData, a where condition) would make their objects look deleted",
        ));
    }
    if let Some(m) = &d.max_deletes {
        if let Err(e) = FailureBudget::parse(m) {
            errors.push(err("spec.deletes.maxDeletes", e));
        }
    }
    let f = &spec.filters;
    if f.modified_after.is_some() || f.modified_before.is_some() {
        errors.push(err(
            "spec.deletes.policy",
            "Propagate cannot be combined with filters.modifiedAfter or modifiedBefore: a time \
             window makes every key outside it look deleted",
        ));
    }
    if let Some(b) = &d.backup_prefix {
        if spec.destination.s3.is_none() {
            errors.push(err(
                "spec.deletes.backupPrefix",
                "needs an S3 destination (backups are copies inside its bucket)",
            ));
        }
        if b.is_empty() || has_dot_segment(b) || b.starts_with(".ferry/") {
            errors.push(err(
                "spec.deletes.backupPrefix",
                "must be a non-empty key prefix without '..' segments, not under .ferry/",
            ));
        }
    }
}

fn check_endpoint(ep: &Endpoint, side: Side, errors: &mut Vec<SpecError>) {
    let path = format!("spec.{}", side.field());
    match ep.location() {
        Ok(l) => l.check(&path, side, errors),
        Err(why) => errors.push(err(&path, why)),
    }
    check_names_and_transport(ep, &path, errors);
}

/// Secret and claim names are DNS names (they go into API paths), and signed requests over
/// plain http need the explicit opt-in unless they stay on a loopback address.
fn check_names_and_transport(ep: &Endpoint, path: &str, errors: &mut Vec<SpecError>) {
    if let Some(s3) = &ep.s3 {
        if let Some(r) = &s3.credentials_secret_ref {
            if let Some(why) = dns_subdomain_problem(&r.name) {
                errors.push(err(
                    format!("{path}.s3.credentialsSecretRef.name"),
                    format!("{:?} is not a valid Secret name: {why}", r.name),
                ));
            }
        }
        if let Some(e) = &s3.endpoint {
            if e.starts_with("http://")
                && !s3.anonymous
                && !s3.allow_insecure_http
                && !is_loopback_http(e)
            {
                errors.push(err(
                    format!("{path}.s3.endpoint"),
                    crate::cel::INSECURE_HTTP_MESSAGE,
                ));
            }
        }
    }
    if let Some(claim) = ep
        .filesystem
        .as_ref()
        .and_then(|f| f.persistent_volume_claim.as_ref())
    {
        if let Some(why) = dns_subdomain_problem(&claim.claim_name) {
            errors.push(err(
                format!("{path}.filesystem.persistentVolumeClaim.claimName"),
                format!(
                    "{:?} is not a valid PersistentVolumeClaim name: {why}",
                    claim.claim_name
                ),
            ));
        }
    }
}

/// Refuses a copy of a tree into itself (the destination inside the source or the reverse).
fn check_overlap(spec: &TransferSpec, errors: &mut Vec<SpecError>) {
    let (Ok(src), Ok(dst)) = (spec.source.location(), spec.destination.location()) else {
        return;
    };
    let (s, d) = (src.scope(), dst.scope());
    if s.space == d.space && (s.prefix.starts_with(&d.prefix) || d.prefix.starts_with(&s.prefix)) {
        errors.push(err(
            format!("spec.destination.{}", d.field),
            "source and destination overlap: the job would copy into its own source",
        ));
    }
}

pub(crate) fn has_dot_segment(p: &str) -> bool {
    p.split('/').any(|s| s == "..") || p.split('/').skip(1).any(|s| s == ".")
}

/// Why `b` is not a valid S3 bucket name (DNS-compatible rules), or None.
pub fn bucket_name_problem(b: &str) -> Option<&'static str> {
    if b.len() < 3 || b.len() > 63 {
        return Some("it must be 3 to 63 characters long");
    }
    if !b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
    {
        return Some("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let first = b.as_bytes()[0];
    let last = b.as_bytes()[b.len() - 1];
    if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
        return Some("it must begin and end with a letter or digit");
    }
    if b.contains("..") {
        return Some("it must not contain two adjacent periods");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> MigrationJobSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const OK: &str = "source: {s3: {bucket: src-bucket, prefix: a/}}\ndestination: {filesystem: {path: /backup}}\n";

    #[test]
    fn a_minimal_spec_is_valid() {
        assert_eq!(problems(&spec(OK)), vec![]);
        let v = validate(&spec(OK)).unwrap();
        assert_eq!(v.shards, 1);
        assert_eq!(v.transfer.memory_budget, DEFAULT_MEMORY_BUDGET);
        assert_eq!(v.transfer.multipart.part_size, 16 * MIB);
    }

    #[test]
    fn each_rule_reports_its_field() {
        let cases = [
            ("source: {}\ndestination: {filesystem: {path: /b}}", "spec.source"),
            ("source: {s3: {bucket: b1x}, filesystem: {path: /a}}\ndestination: {filesystem: {path: /b}}", "spec.source"),
            ("source: {s3: {bucket: Bad_Bucket}}\ndestination: {filesystem: {path: /b}}", "spec.source.s3.bucket"),
            ("source: {s3: {bucket: abc, prefix: 'x/../y'}}\ndestination: {filesystem: {path: /b}}", "spec.source.s3.prefix"),
            ("source: {s3: {bucket: abc, endpoint: 'minio:9000'}}\ndestination: {filesystem: {path: /b}}", "spec.source.s3.endpoint"),
            ("source: {s3: {bucket: abc, storageClass: GLACIER}}\ndestination: {filesystem: {path: /b}}", "spec.source.s3.storageClass"),
            ("source: {filesystem: {path: /a}}\ndestination: {s3: {bucket: abc, anonymous: true}}", "spec.destination.s3.anonymous"),
            ("source: {filesystem: {path: /a}}\ndestination: {filesystem: {path: /a/b}}", "spec.destination.filesystem.path"),
            ("source: {s3: {bucket: abc, prefix: x/}}\ndestination: {s3: {bucket: abc, prefix: x/y/}}", "spec.destination.s3.prefix"),
            (&format!("{OK}filters: {{minSize: 2Ki, maxSize: 1Ki}}"), "spec.filters.minSize"),
            (&format!("{OK}filters: {{modifiedAfter: '2024-02-01T00:00:00Z', modifiedBefore: '2024-01-01T00:00:00Z'}}"), "spec.filters.modifiedAfter"),
            (&format!("{OK}filters: {{include: ['a[']}}"), "spec.filters.include[0]"),
            (&format!("{OK}parallelism: {{shards: 0}}"), "spec.parallelism.shards"),
            (&format!("{OK}parallelism: {{concurrency: 5000}}"), "spec.parallelism.concurrency"),
            (&format!("{OK}multipart: {{partSize: 4Mi}}"), "spec.multipart.partSize"),
            (&format!("{OK}multipart: {{threshold: 6Gi}}"), "spec.multipart.threshold"),
            (&format!("{OK}maxFailures: 'lots'"), "spec.maxFailures"),
            ("source: {s3: {bucket: abc, credentialsSecretRef: {name: '../../kube-system/secrets/x'}}}\ndestination: {filesystem: {path: /b}}", "spec.source.s3.credentialsSecretRef.name"),
            ("source: {s3: {bucket: abc}}\ndestination: {filesystem: {path: /b, persistentVolumeClaim: {claimName: Data_1}}}", "spec.destination.filesystem.persistentVolumeClaim.claimName"),
        ];
        for (yaml, field) in cases {
            let errors = problems(&spec(yaml));
            assert!(
                errors.iter().any(|e| e.field == field),
                "{yaml}: expected an error on {field}, got {errors:?}"
            );
        }
    }

    /// Issue 13, mode 6: a part, or an object sent in one PUT, larger than the in-flight
    /// budget is refused with the sizes and why; defaults and parts that fit are accepted.
    #[test]
    fn parts_and_single_puts_larger_than_the_memory_budget_are_refused() {
        let case = |extra: &str| problems(&spec(&format!("{OK}{extra}")));
        let part =
            case("multipart: {partSize: 5Gi, threshold: 16Mi}\nparallelism: {memoryBudget: 256Mi}");
        assert_eq!(part.len(), 1, "{part:?}");
        assert_eq!(part[0].field, "spec.multipart.partSize");
        assert_eq!(
            part[0].message,
            "multipart.partSize (5Gi) must be at most parallelism.memoryBudget (256Mi): each \
             part is held whole in memory while it is sent; lower partSize or raise memoryBudget"
        );
        // The default budget, named as such.
        let put = case("multipart: {threshold: 5Gi}");
        assert_eq!(put.len(), 1, "{put:?}");
        assert_eq!(put[0].field, "spec.multipart.threshold");
        assert!(
            put[0]
                .message
                .starts_with("multipart.threshold (5Gi) must be at most parallelism.memoryBudget (256Mi, the default): an object up to the threshold is sent in one PUT"),
            "{put:?}"
        );
        // The default threshold (64Mi) against the smallest budget.
        let small = case("parallelism: {memoryBudget: 16Mi}");
        assert_eq!(small.len(), 1, "{small:?}");
        assert_eq!(small[0].field, "spec.multipart.threshold");
        assert!(small[0]
            .message
            .contains("(64Mi) must be at most parallelism.memoryBudget (16Mi)"));
        // Accepted: the defaults, equal sizes, the smallest budget with a threshold to fit.
        for ok in [
            "",
            "parallelism: {memoryBudget: 64Mi}",
            "multipart: {partSize: 256Mi, threshold: 256Mi}",
            "multipart: {partSize: 1Gi, threshold: 1Gi}\nparallelism: {memoryBudget: 1Gi}",
            "multipart: {partSize: 8Mi, threshold: 16Mi}\nparallelism: {memoryBudget: 16Mi}",
        ] {
            assert_eq!(case(ok), vec![], "{ok:?}");
        }
        let d = crate::spec::Multipart::default();
        assert!(d.part_size.bytes() <= DEFAULT_MEMORY_BUDGET);
        assert!(d.threshold.bytes() <= DEFAULT_MEMORY_BUDGET);
    }

    /// The CRD carries the same rules, with the defaults the Rust types have.
    #[test]
    fn the_crd_refuses_parts_larger_than_the_memory_budget() {
        let d = crate::spec::Multipart::default();
        assert_eq!(d.part_size, crate::ByteSize::parse("16Mi").unwrap());
        assert_eq!(d.threshold, crate::ByteSize::parse("64Mi").unwrap());
        assert_eq!(DEFAULT_MEMORY_BUDGET, 256 * MIB);
        for schema in [
            crate::cel::crd_schema::<crate::MigrationJob>(),
            crate::cel::crd_schema::<crate::BucketSync>(),
        ] {
            let rules = schema["properties"]["spec"]["x-kubernetes-validations"]
                .as_array()
                .unwrap()
                .clone();
            for (rule, message, expr) in crate::cel::memory_rules() {
                let found = rules
                    .iter()
                    .find(|r| r["rule"] == rule.as_str())
                    .unwrap_or_else(|| panic!("{rule} is not among {rules:?}"));
                assert_eq!(found["message"], message.as_str());
                assert_eq!(found["messageExpression"], expr.as_str());
            }
            let text = serde_json::to_string(&rules).unwrap();
            assert!(text.contains("quantity((has(self.multipart) && has(self.multipart.partSize) ? self.multipart.partSize : '16Mi')).compareTo(quantity((has(self.parallelism) && has(self.parallelism.memoryBudget) ? self.parallelism.memoryBudget : '256Mi'))) <= 0"), "{text}");
            assert!(text.contains("self.multipart.threshold : '64Mi'"));
        }
    }

    #[test]
    fn bucket_names() {
        for good in ["abc", "my-bucket.v2", "0bucket9"] {
            assert_eq!(bucket_name_problem(good), None, "{good}");
        }
        for bad in ["ab", "-abc", "abc-", "a..b", "ABC", "a_b", &"x".repeat(64)] {
            assert!(bucket_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn spec_hash_ignores_only_the_runtime_knobs() {
        let base = spec("source: {s3: {bucket: abc}}\ndestination: {filesystem: {path: /b}}");
        let mut knobs = base.clone();
        knobs.suspend = true;
        knobs.cancel = true;
        knobs.parallelism.concurrency = 7;
        knobs.parallelism.memory_budget = Some(crate::ByteSize::parse("64Mi").unwrap());
        knobs.requests_per_second = 9;
        knobs.bandwidth_limit = Some(crate::ByteSize::parse("1Mi").unwrap());
        assert_eq!(spec_hash(&base), spec_hash(&knobs));
        let mut shaped = base.clone();
        shaped.filters.include = vec!["*.jpg".into()];
        assert_ne!(spec_hash(&base), spec_hash(&shaped));
        let mut sharded = base.clone();
        sharded.parallelism.shards = 2;
        assert_ne!(spec_hash(&base), spec_hash(&sharded));
    }

    /// Every name the operator derives from a MigrationJob name of [`MAX_JOB_NAME`] characters
    /// (the forms of `operator/k8s/src/names.rs`, a planner's, and the pods of Jobs) fits a
    /// label value, with the largest shard index; one character more does not.
    #[test]
    fn the_longest_job_name_fits_every_derived_name() {
        assert_eq!(MAX_JOB_NAME, 46);
        let last = MAX_SHARDS - 1;
        let derived = |name: &str| {
            vec![
                format!("{name}-plan"),
                format!("{name}-shard-{last}"),
                format!("{name}-agent"),
                format!("{name}-agents"),
                format!("{name}-agents-{last}"),
                format!("{name}-agents-{last}-x7k2q"),
                format!("{name}-planner"),
                format!("{name}-planner-x7k2q"),
            ]
        };
        let longest = "j".repeat(MAX_JOB_NAME);
        for d in derived(&longest) {
            assert!(d.len() <= LABEL_MAX, "{d} ({} characters)", d.len());
        }
        let over = "j".repeat(MAX_JOB_NAME + 1);
        assert!(derived(&over).iter().any(|d| d.len() > LABEL_MAX));
    }

    #[test]
    fn job_names_too_long_or_with_dots_are_refused_with_the_limit() {
        assert_eq!(job_name_problems(&"j".repeat(MAX_JOB_NAME)), vec![]);
        let long = job_name_problems(&"j".repeat(MAX_JOB_NAME + 1));
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].field, "metadata.name");
        assert!(
            long[0].message.contains("at most 46 characters, not 47"),
            "{long:?}"
        );
        assert_eq!(job_name_problems("photos.v2").len(), 1);

        let rules = crate::cel::root_rules::<crate::MigrationJob>();
        assert_eq!(rules[0]["rule"], "self.metadata.name.size() <= 46");
        assert!(rules[0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 46 characters"));
        assert_eq!(rules[1]["rule"], "!self.metadata.name.contains('.')");
    }

    #[test]
    fn secret_and_claim_names_are_dns_subdomains() {
        for good in ["a", "aws-creds", "creds.v2", "0x", &"a".repeat(253)] {
            assert_eq!(dns_subdomain_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "../../kube-system/secrets/x",
            "a/b",
            "Creds",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a.-b",
            &"a".repeat(254),
        ] {
            assert!(dns_subdomain_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_http_endpoints() {
        for yes in [
            "http://127.0.0.1:9000",
            "http://127.0.0.1",
            "http://127.1.2.3:1/x",
            "http://localhost",
            "http://localhost:80/x",
            "http://[::1]:9000/",
            "http://[::1]",
        ] {
            assert!(is_loopback_http(yes), "{yes}");
        }
        for no in [
            "https://127.0.0.1",
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
            "http://10.0.0.1",
            "http://127.0.0.1:",
            "http://127.0.0.1:9000?x",
            "http://127.1",
            "http://1270.0.0.1",
            "http://127.0.0.1234",
            "http://minio:9000",
            "http://LOCALHOST",
            "http://[::1]x",
        ] {
            assert!(!is_loopback_http(no), "{no}");
        }
    }

    /// Signed requests over plain http need `allowInsecureHttp` unless they stay on loopback;
    /// https, anonymous sources and the opt-in pass.
    #[test]
    fn plain_http_with_credentials_needs_the_opt_in() {
        let side = |s3: &str| {
            format!(
                "source: {{s3: {{bucket: src, {s3}}}}}\ndestination: {{filesystem: {{path: /b}}}}"
            )
        };
        let refused = [
            "endpoint: 'http://minio.storage:9000', credentialsSecretRef: {name: c}",
            "endpoint: 'http://10.0.0.5:9000'",
        ];
        for s3 in refused {
            let errors = problems(&spec(&side(s3)));
            assert!(
                errors.iter().any(|e| e.field == "spec.source.s3.endpoint"
                    && e.message.contains("allowInsecureHttp")),
                "{s3}: {errors:?}"
            );
        }
        let accepted = [
            "endpoint: 'http://minio.storage:9000', credentialsSecretRef: {name: c}, allowInsecureHttp: true",
            "endpoint: 'https://minio.storage:9000', credentialsSecretRef: {name: c}",
            "endpoint: 'http://minio.storage:9000', anonymous: true",
            "endpoint: 'http://127.0.0.1:9000', credentialsSecretRef: {name: c}",
            "endpoint: 'http://localhost:9000', credentialsSecretRef: {name: c}",
        ];
        for s3 in accepted {
            assert_eq!(problems(&spec(&side(s3))), vec![], "{s3}");
        }
        // The report side too.
        let report = format!(
            "{OK}report: {{s3: {{bucket: rep, endpoint: 'http://minio:9000', credentialsSecretRef: {{name: c}}}}}}"
        );
        assert!(problems(&spec(&report))
            .iter()
            .any(|e| e.field == "spec.report.s3.endpoint"));
    }

    /// A spec without the new field serializes as before, so the hash of existing jobs (and
    /// their checkpoints) does not change.
    #[test]
    fn allow_insecure_http_false_is_not_serialized() {
        let s = spec("source: {s3: {bucket: abc, endpoint: 'https://x'}}\ndestination: {filesystem: {path: /b}}");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("allowInsecureHttp"), "{json}");
        let mut opted = s.clone();
        opted.source.s3.as_mut().unwrap().allow_insecure_http = true;
        assert!(serde_json::to_string(&opted)
            .unwrap()
            .contains("\"allowInsecureHttp\":true"));
    }

    /// The runtime knobs are the fields that neither the spec hash nor the CEL immutability
    /// rule covers, and every other top-level field is frozen by CEL.
    #[test]
    fn runtime_knobs_are_the_fields_cel_lets_change() {
        let schema = serde_json::to_value(schemars::schema_for!(MigrationJobSpec)).unwrap();
        let fields: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for f in &fields {
            let knob = RUNTIME_KNOBS.contains(&f.as_str());
            let frozen = crate::cel::IMMUTABLE_FIELDS.contains(&f.as_str());
            let nested = f == "parallelism";
            assert!(
                knob ^ frozen || nested,
                "spec.{f} must be either a runtime knob or frozen by CEL"
            );
        }
        assert!(RUNTIME_KNOBS
            .iter()
            .filter(|k| !k.contains('.'))
            .all(|k| fields.iter().any(|f| f == k)));
    }
}
