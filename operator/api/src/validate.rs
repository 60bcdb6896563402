//! Checks of a spec that need no I/O. The operator and `ferry run` run the same checks, and
//! the CRD's CEL rules repeat those that the API server can enforce at `kubectl apply` time.

use crate::plan::FailureBudget;
use crate::select::Selector;
use crate::spec::{Endpoint, MigrationJobSpec};

/// One problem with a spec: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Every problem found in `spec`; empty when it is valid.
pub fn validate(spec: &MigrationJobSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    check_endpoint("spec.source", &spec.source, Side::Source, &mut errors);
    check_endpoint(
        "spec.destination",
        &spec.destination,
        Side::Destination,
        &mut errors,
    );
    if let Some(report) = &spec.report {
        check_endpoint("spec.report", report, Side::Destination, &mut errors);
    }
    check_overlap(spec, &mut errors);

    let f = &spec.filters;
    if let Err(e) = Selector::new(f) {
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

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Source,
    Destination,
}

fn check_endpoint(path: &str, ep: &Endpoint, side: Side, errors: &mut Vec<SpecError>) {
    match (&ep.s3, &ep.filesystem) {
        (Some(_), Some(_)) => {
            errors.push(err(path, "set exactly one of s3 or filesystem, not both"))
        }
        (None, None) => errors.push(err(path, "set exactly one of s3 or filesystem")),
        (Some(s3), None) => {
            let p = format!("{path}.s3");
            if let Some(bad) = bucket_name_problem(&s3.bucket) {
                errors.push(err(
                    format!("{p}.bucket"),
                    format!("{:?} is not a valid bucket name: {bad}", s3.bucket),
                ));
            }
            if has_dot_segment(&s3.prefix) {
                errors.push(err(
                    format!("{p}.prefix"),
                    "must not contain '.' or '..' path segments",
                ));
            }
            if let Some(e) = &s3.endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    errors.push(err(
                        format!("{p}.endpoint"),
                        format!("{e:?} must start with http:// or https://"),
                    ));
                }
                if e.contains('@') {
                    errors.push(err(
                        format!("{p}.endpoint"),
                        "must not contain credentials; use credentialsSecretRef",
                    ));
                }
            }
            if s3.anonymous && side == Side::Destination {
                errors.push(err(
                    format!("{p}.anonymous"),
                    "anonymous access is only for sources",
                ));
            }
            if s3.anonymous && s3.credentials_secret_ref.is_some() {
                errors.push(err(
                    format!("{p}.anonymous"),
                    "set either anonymous or credentialsSecretRef, not both",
                ));
            }
            if side == Side::Source {
                for (set, field) in [
                    (s3.storage_class.is_some(), "storageClass"),
                    (s3.server_side_encryption.is_some(), "serverSideEncryption"),
                    (s3.kms_key_id.is_some(), "kmsKeyId"),
                    (s3.canned_acl.is_some(), "cannedAcl"),
                ] {
                    if set {
                        errors.push(err(format!("{p}.{field}"), "is a destination-only option"));
                    }
                }
            }
        }
        (None, Some(fs)) => {
            if fs.path.is_empty() {
                errors.push(err(format!("{path}.filesystem.path"), "must not be empty"));
            }
            if has_dot_segment(&fs.path) {
                errors.push(err(
                    format!("{path}.filesystem.path"),
                    "must not contain '..' segments",
                ));
            }
        }
    }
}

/// Refuses a copy of a tree into itself (the destination inside the source or the reverse).
fn check_overlap(spec: &MigrationJobSpec, errors: &mut Vec<SpecError>) {
    let nested = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
    match (&spec.source, &spec.destination) {
        (Endpoint { s3: Some(s), .. }, Endpoint { s3: Some(d), .. })
            if s.bucket == d.bucket && s.endpoint == d.endpoint && nested(&s.prefix, &d.prefix) =>
        {
            errors.push(err("spec.destination.s3.prefix", "source and destination overlap in the same bucket: the job would copy into its own source"));
        }
        (
            Endpoint {
                filesystem: Some(s),
                ..
            },
            Endpoint {
                filesystem: Some(d),
                ..
            },
        ) => {
            let norm = |p: &str| format!("{}/", p.trim_end_matches('/'));
            if nested(&norm(&s.path), &norm(&d.path)) {
                errors.push(err(
                    "spec.destination.filesystem.path",
                    "source and destination directories overlap",
                ));
            }
        }
        _ => {}
    }
}

fn has_dot_segment(p: &str) -> bool {
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
        assert_eq!(validate(&spec(OK)), vec![]);
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
            let errors = validate(&spec(yaml));
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
}
