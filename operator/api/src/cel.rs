//! CEL validation rules (`x-kubernetes-validations`) attached to the generated schema, so the
//! API server refuses bad specs at `kubectl apply` time with a clear message. They repeat the
//! checks of [`crate::validate`] that CEL can express; the operator runs those too.

use schemars::Schema;
use serde_json::json;

fn add(schema: &mut Schema, rules: &[(&str, &str)]) {
    let list: Vec<serde_json::Value> = rules
        .iter()
        .map(|(rule, message)| json!({"rule": rule, "message": message}))
        .collect();
    schema
        .ensure_object()
        .insert("x-kubernetes-validations".into(), json!(list));
}

/// Fields fixed once the job is created: all but the runtime knobs
/// ([`crate::validate::RUNTIME_KNOBS`]); `parallelism.shards` is frozen on its own.
pub(crate) const IMMUTABLE_FIELDS: &[&str] = &[
    "source",
    "destination",
    "filters",
    "overwrite",
    "verify",
    "multipart",
    "maxFailures",
    "dryRun",
    "report",
];

fn unchanged(field: &str) -> String {
    format!("(has(self.{field}) ? (has(oldSelf.{field}) && self.{field} == oldSelf.{field}) : !has(oldSelf.{field}))")
}

pub fn spec(schema: &mut Schema) {
    let mut immutable: Vec<String> = IMMUTABLE_FIELDS.iter().map(|f| unchanged(f)).collect();
    immutable.push("(has(self.parallelism) && has(oldSelf.parallelism) ? self.parallelism.shards == oldSelf.parallelism.shards : true)".into());
    let immutable = immutable.join(" && ");
    add(
        schema,
        &[
            (
                "!has(self.source.s3) || (!has(self.source.s3.storageClass) && !has(self.source.s3.serverSideEncryption) && !has(self.source.s3.kmsKeyId) && !has(self.source.s3.cannedAcl))",
                "storageClass, serverSideEncryption, kmsKeyId and cannedAcl are destination-only options",
            ),
            ("!has(self.destination.s3) || !has(self.destination.s3.anonymous) || !self.destination.s3.anonymous", "anonymous access is only for sources"),
            (&immutable, "the spec is immutable once created, except suspend, cancel, bandwidthLimit, requestsPerSecond, parallelism.concurrency and parallelism.memoryBudget (delete and recreate the MigrationJob to change it)"),
        ],
    );
}

/// Exactly one of the endpoint's kinds ([`crate::Endpoint::KINDS`]) is set.
pub fn endpoint(schema: &mut Schema) {
    let kinds = crate::Endpoint::KINDS;
    let count: Vec<String> = kinds
        .iter()
        .map(|k| format!("(has(self.{k}) ? 1 : 0)"))
        .collect();
    let rule = format!("{} == 1", count.join(" + "));
    let message = format!("set exactly one of {}", kinds.join(" or "));
    add(schema, &[(&rule, &message)]);
}

const NO_DOTDOT: &str =
    "!(self == '..' || self.startsWith('../') || self.endsWith('/..') || self.contains('/../'))";

pub fn no_dotdot(schema: &mut Schema) {
    add(schema, &[(NO_DOTDOT, "must not contain '..' segments")]);
}

pub fn http_url(schema: &mut Schema) {
    add(
        schema,
        &[(
            "self.startsWith('http://') || self.startsWith('https://')",
            "must start with http:// or https://",
        )],
    );
}

pub fn s3_location(schema: &mut Schema) {
    add(
        schema,
        &[(
            "!(has(self.anonymous) && self.anonymous && has(self.credentialsSecretRef))",
            "set either anonymous or credentialsSecretRef, not both",
        )],
    );
}

pub fn filters(schema: &mut Schema) {
    add(
        schema,
        &[
            ("!has(self.minSize) || !has(self.maxSize) || quantity(self.minSize).compareTo(quantity(self.maxSize)) <= 0", "minSize must not be larger than maxSize"),
            ("!has(self.modifiedAfter) || !has(self.modifiedBefore) || timestamp(self.modifiedAfter) < timestamp(self.modifiedBefore)", "modifiedAfter must be earlier than modifiedBefore"),
        ],
    );
}

pub fn multipart(schema: &mut Schema) {
    add(
        schema,
        &[
            (
                "!has(self.partSize) || quantity(self.partSize).compareTo(quantity('5Mi')) >= 0",
                "partSize must be at least 5Mi (the S3 minimum)",
            ),
            (
                "!has(self.partSize) || quantity(self.partSize).compareTo(quantity('5Gi')) <= 0",
                "partSize must be at most 5Gi (the S3 maximum)",
            ),
            (
                "!has(self.threshold) || quantity(self.threshold).compareTo(quantity('5Gi')) <= 0",
                "threshold must be at most 5Gi (the largest single PUT)",
            ),
        ],
    );
}

pub fn memory_budget(schema: &mut Schema) {
    add(
        schema,
        &[(
            "quantity(self).compareTo(quantity('16Mi')) >= 0",
            "must be at least 16Mi",
        )],
    );
}
