//! Validation of a spec, once, into a [`ValidatedSpec`] that carries every resolved value
//! ("parse, don't validate"): the operator and `ferry run` read shard counts, budgets and the
//! plan's transfer settings from it, never from the raw spec. The CRD's CEL rules repeat the
//! checks that the API server can enforce at `kubectl apply` time.

use ferry_core::plan::{DeleteSettings, FailureBudget, MultipartSettings, Transfer};
use ferry_core::select::{Selection, Selector};
use sha2::{Digest, Sha256};

use crate::endpoint::Side;
use crate::spec::{Endpoint, MigrationJobSpec, TransferSpec};

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
        transfer: resolve(&spec.transfer, spec.dry_run, spec.cancel),
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
    transfer_problems(&spec.transfer)
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
    if !(1..=1000).contains(&p.shards) {
        errors.push(err(
            "spec.parallelism.shards",
            format!("must be between 1 and 1000, not {}", p.shards),
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

fn check_deletes(spec: &TransferSpec, errors: &mut Vec<SpecError>) {
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
        Err(why) => errors.push(err(path, why)),
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
        ];
        for (yaml, field) in cases {
            let errors = problems(&spec(yaml));
            assert!(
                errors.iter().any(|e| e.field == field),
                "{yaml}: expected an error on {field}, got {errors:?}"
            );
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
