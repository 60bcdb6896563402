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
    "deletes",
];

fn unchanged(field: &str) -> String {
    format!("(has(self.{field}) ? (has(oldSelf.{field}) && self.{field} == oldSelf.{field}) : !has(oldSelf.{field}))")
}

/// The rules on the transfer fields that a MigrationJob and a BucketSync share (CEL on the
/// spec object, since they relate several fields).
pub(crate) const TRANSFER_RULES: &[(&str, &str)] = &[
    (
        "!has(self.source.s3) || (!has(self.source.s3.storageClass) && !has(self.source.s3.serverSideEncryption) && !has(self.source.s3.kmsKeyId) && !has(self.source.s3.cannedAcl))",
        "storageClass, serverSideEncryption, kmsKeyId and cannedAcl are destination-only options",
    ),
    ("!has(self.destination.s3) || !has(self.destination.s3.anonymous) || !self.destination.s3.anonymous", "anonymous access is only for sources"),
    (
        "!has(self.deletes) || !has(self.deletes.policy) || self.deletes.policy != 'Propagate' || !has(self.filters) || (!has(self.filters.modifiedAfter) && !has(self.filters.modifiedBefore))",
        "deletes.policy Propagate cannot be combined with filters.modifiedAfter or modifiedBefore: a time window makes every key outside it look deleted",
    ),
    (
        "!has(self.deletes) || !has(self.deletes.backupPrefix) || has(self.destination.s3)",
        "deletes.backupPrefix needs an S3 destination (backups are copies inside its bucket)",
    ),
    (
        "!has(self.deletes) || (has(self.deletes.policy) && self.deletes.policy == 'Propagate') || (!has(self.deletes.maxDeletes) && !has(self.deletes.backupPrefix))",
        "deletes.maxDeletes and deletes.backupPrefix only apply with deletes.policy Propagate",
    ),
];

pub fn spec(schema: &mut Schema) {
    let mut immutable: Vec<String> = IMMUTABLE_FIELDS.iter().map(|f| unchanged(f)).collect();
    immutable.push("(has(self.parallelism) && has(oldSelf.parallelism) ? self.parallelism.shards == oldSelf.parallelism.shards : true)".into());
    let immutable = immutable.join(" && ");
    let mut rules: Vec<(&str, &str)> = TRANSFER_RULES.to_vec();
    rules.push((&immutable, "the spec is immutable once created, except suspend, cancel, bandwidthLimit, requestsPerSecond, parallelism.concurrency and parallelism.memoryBudget (delete and recreate the MigrationJob to change it)"));
    add(schema, &rules);
}

/// `deletes.maxDeletes`: a percentage is at most 100%.
pub fn max_deletes(schema: &mut Schema) {
    add(
        schema,
        &[(
            "!self.endsWith('%') || double(self.substring(0, self.size() - 1)) <= 100.0",
            "a percentage must be at most 100%",
        )],
    );
}

/// `deletes.backupPrefix`: no `..` segments, not inside Ferry's own folder.
pub fn backup_prefix(schema: &mut Schema) {
    add(
        schema,
        &[
            (NO_DOTDOT, "must not contain '..' segments"),
            (
                "!self.startsWith('.ferry/')",
                "must not be under .ferry/ (Ferry's own reports)",
            ),
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

/// BucketSync: the shared transfer rules, and exactly one of `schedule` and `interval`.
pub fn sync_spec(schema: &mut Schema) {
    let mut rules: Vec<(&str, &str)> = TRANSFER_RULES.to_vec();
    rules.push((
        "(has(self.schedule) ? 1 : 0) + (has(self.interval) ? 1 : 0) == 1",
        "set exactly one of schedule and interval",
    ));
    rules.push((
        "!has(self.timeZone) || has(self.schedule)",
        "timeZone applies to schedule only",
    ));
    add(schema, &rules);
}

/// `schedule`: five fields (or a shortcut such as `@daily`); the operator parses the rest.
pub fn cron(schema: &mut Schema) {
    add(
        schema,
        &[(
            "self.matches('^@(yearly|annually|monthly|weekly|daily|hourly)$') || self.matches('^\\\\S+( +\\\\S+){4}$')",
            "must be a 5-field cron expression (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly",
        )],
    );
}

/// `interval`: a duration of at least 10s.
pub fn interval(schema: &mut Schema) {
    add(
        schema,
        &[("duration(self) >= duration('10s')", "must be at least 10s")],
    );
}
