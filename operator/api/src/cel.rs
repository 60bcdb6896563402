//! CEL validation rules (`x-kubernetes-validations`) attached to the generated schema, so the
//! API server refuses bad specs at `kubectl apply` time with a clear message. They repeat the
//! checks of [`crate::validate`] that CEL can express; the operator runs those too.

use schemars::Schema;
use serde_json::json;

/// Appends `rules` to the schema's `x-kubernetes-validations` (a type's own rules, such as a
/// quantity's bound, stay).
pub(crate) fn add(schema: &mut Schema, rules: &[(&str, &str)]) {
    let list = schema
        .ensure_object()
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.extend(
            rules
                .iter()
                .map(|(rule, message)| json!({"rule": rule, "message": message})),
        );
    }
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
    "pricing",
    "mode",
    "inventory",
    "backupReplaced",
];

/// The rules of a MigrationJob's own fields (not a BucketSync's).
pub(crate) const JOB_RULES: &[(&str, &str)] = &[
    (
        "!has(self.mode) || self.mode != 'Check' || !has(self.dryRun) || !self.dryRun",
        "mode Check cannot be a dry run: a check writes nothing but its report already",
    ),
    (
        "!has(self.mode) || self.mode != 'Check' || !has(self.deletes) || !has(self.deletes.policy) || self.deletes.policy != 'Propagate'",
        "mode Check cannot be combined with deletes.policy Propagate: a check deletes nothing (extra destination keys are reported)",
    ),
    (
        "!has(self.inventory) || (has(self.dryRun) && self.dryRun)",
        "inventory is written by a dry run: set dryRun: true",
    ),
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
    ("!has(self.destination.urlList) && (!has(self.report) || !has(self.report.urlList))", "a URL list can only be a source"),
    ("!has(self.destination.database) && (!has(self.report) || !has(self.report.database))", "a database can only be a source"),
    (
        "!has(self.source.database) || !has(self.deletes) || !has(self.deletes.policy) || self.deletes.policy != 'Propagate'",
        "deletes.policy Propagate cannot be used with a database source: rows that leave the listing (writeBack.clearData, a where condition) would make their objects look deleted",
    ),
    (
        "!has(self.deletes) || !has(self.deletes.policy) || self.deletes.policy != 'Propagate' || !has(self.filters) || (!has(self.filters.modifiedAfter) && !has(self.filters.modifiedBefore))",
        "deletes.policy Propagate cannot be combined with filters.modifiedAfter or modifiedBefore: a time window makes every key outside it look deleted",
    ),
    (
        "!has(self.backupReplaced) || !self.backupReplaced || has(self.destination.s3)",
        "backupReplaced needs an S3 destination (backups are copies inside its bucket)",
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

/// Gives every 8-, 16- and 32-bit integer in `schema` (at any depth) the bounds of its Rust
/// type, where it has none: the API server does not enforce `format: uint32` and the like, and
/// one value that the type cannot hold makes kube-rs fail to decode the whole list of
/// resources. 64-bit integers need none: the API server refuses integers outside the int64
/// range by itself, which a u64 and an i64 hold (a u64 has `minimum: 0`). A `maximum` of
/// `i64::MAX` would even be harmful: as a float it is 2^63, outside int64, and the API server
/// then refuses every value of the field.
pub fn bound_integers(schema: &mut Schema) {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                let integer = match o.get("type") {
                    Some(serde_json::Value::String(t)) => t == "integer",
                    Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                    _ => false,
                };
                let bounds: Option<(i64, i64)> = match o.get("format").and_then(|f| f.as_str()) {
                    _ if !integer => None,
                    Some("uint8") => Some((0, u8::MAX.into())),
                    Some("uint16") => Some((0, u16::MAX.into())),
                    Some("uint32") => Some((0, u32::MAX.into())),
                    Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                    Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                    Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                    _ => None,
                };
                if let Some((min, max)) = bounds {
                    o.entry("minimum").or_insert(min.into());
                    o.entry("maximum").or_insert(max.into());
                }
                o.values_mut().for_each(walk);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(o) = schema.as_object_mut() {
        let mut whole = serde_json::Value::Object(std::mem::take(o));
        walk(&mut whole);
        if let serde_json::Value::Object(w) = whole {
            *o = w;
        }
    }
}

/// A spec field's value with its default when absent (the defaults of [`crate::Multipart`]
/// and [`crate::validate::DEFAULT_MEMORY_BUDGET`]; a test ties them together).
const PART_SIZE: &str =
    "(has(self.multipart) && has(self.multipart.partSize) ? self.multipart.partSize : '16Mi')";
const THRESHOLD: &str =
    "(has(self.multipart) && has(self.multipart.threshold) ? self.multipart.threshold : '64Mi')";
const MEMORY_BUDGET: &str = "(has(self.parallelism) && has(self.parallelism.memoryBudget) ? self.parallelism.memoryBudget : '256Mi')";

/// The rules that a part, and an object sent in one PUT, fit the in-flight memory budget (as
/// [`crate::validate`]'s check, which says why): rule, message, and a message expression that
/// names the values (defaults included).
pub(crate) fn memory_rules() -> Vec<(String, String, String)> {
    use crate::validate::{PART_IN_MEMORY, PUT_IN_MEMORY};
    let rule = |field: &str| format!("quantity({field}).compareTo(quantity({MEMORY_BUDGET})) <= 0");
    vec![
        (
            rule(PART_SIZE),
            format!("multipart.partSize must be at most parallelism.memoryBudget (default 256Mi): {PART_IN_MEMORY}"),
            format!("'multipart.partSize (' + {PART_SIZE} + ') must be at most parallelism.memoryBudget (' + {MEMORY_BUDGET} + '): {PART_IN_MEMORY}; lower partSize or raise memoryBudget'"),
        ),
        (
            rule(THRESHOLD),
            format!("multipart.threshold (default 64Mi) must be at most parallelism.memoryBudget (default 256Mi): {PUT_IN_MEMORY}"),
            format!("'multipart.threshold (' + {THRESHOLD} + ') must be at most parallelism.memoryBudget (' + {MEMORY_BUDGET} + '): {PUT_IN_MEMORY}; lower threshold (default 64Mi) or raise memoryBudget'"),
        ),
    ]
}

/// Appends [`memory_rules`] to the spec's rules.
fn add_memory_rules(schema: &mut Schema) {
    let list = schema
        .ensure_object()
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.extend(memory_rules().into_iter().map(|(rule, message, expr)| {
            json!({"rule": rule, "message": message, "messageExpression": expr})
        }));
    }
}

pub fn spec(schema: &mut Schema) {
    bound_integers(schema);
    let mut immutable: Vec<String> = IMMUTABLE_FIELDS.iter().map(|f| unchanged(f)).collect();
    immutable.push("(has(self.parallelism) && has(oldSelf.parallelism) ? self.parallelism.shards == oldSelf.parallelism.shards : true)".into());
    let immutable = immutable.join(" && ");
    let mut rules: Vec<(&str, &str)> = TRANSFER_RULES.to_vec();
    rules.extend_from_slice(JOB_RULES);
    rules.push((&immutable, "the spec is immutable once created, except suspend, cancel, bandwidthLimit, requestsPerSecond, parallelism.concurrency and parallelism.memoryBudget (delete and recreate the MigrationJob to change it)"));
    add(schema, &rules);
    add_memory_rules(schema);
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

/// `database.where`: one condition, not statements (the operator and the agents check the
/// rest: comments, parameter markers and parentheses outside string literals).
pub fn sql_condition(schema: &mut Schema) {
    add(
        schema,
        &[(
            "!self.contains(';')",
            "';' is not allowed (one condition, not statements)",
        )],
    );
}

/// `s3.endpoint`: an http(s) URL without userinfo (as [`crate::endpoint`]'s check).
pub fn http_url(schema: &mut Schema) {
    add(
        schema,
        &[
            (
                "self.startsWith('http://') || self.startsWith('https://')",
                "must start with http:// or https://",
            ),
            (
                "!self.contains('@')",
                "must not contain credentials (user@host); use credentialsSecretRef",
            ),
        ],
    );
}

/// The loopback endpoints plain `http://` is allowed for without `allowInsecureHttp`, as a
/// regular expression written inside a CEL string literal (backslashes doubled; `matches` is a
/// search, hence the anchors). [`crate::validate::is_loopback_http`] is the same test in Rust.
pub const LOOPBACK_HTTP: &str =
    "^http://(localhost|127[.][0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}|\\\\[::1\\\\])(:[0-9]+)?(/|$)";

pub fn s3_location(schema: &mut Schema) {
    let insecure = format!(
        "!has(self.endpoint) || !self.endpoint.startsWith('http://') || (has(self.anonymous) && self.anonymous) || (has(self.allowInsecureHttp) && self.allowInsecureHttp) || self.endpoint.matches('{LOOPBACK_HTTP}')"
    );
    add(
        schema,
        &[
            (
                "!(has(self.anonymous) && self.anonymous && has(self.credentialsSecretRef))",
                "set either anonymous or credentialsSecretRef, not both",
            ),
            (&insecure, INSECURE_HTTP_MESSAGE),
        ],
    );
}

/// `urlList`: exactly one place the list is, and a `stripPrefix` that is a path.
pub fn url_list(schema: &mut Schema) {
    add(
        schema,
        &[
            (
                "(has(self.path) ? 1 : 0) + (has(self.s3) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.collect) ? 1 : 0) == 1",
                "set exactly one of path, s3, configMapRef or collect",
            ),
            (
                "!has(self.stripPrefix) || self.stripPrefix.startsWith('/')",
                "stripPrefix must start with '/'",
            ),
        ],
    );
}

/// Why a signed request over plain http is refused (the CRD's and the operator's message).
pub const INSECURE_HTTP_MESSAGE: &str = "a plain http:// endpoint sends the access key ID, session token and data unencrypted: use https://, or set allowInsecureHttp: true (loopback addresses such as http://127.0.0.1 and http://localhost are allowed)";

/// A root rule: the resource's name is at most `max` characters (`why` says what adds to it).
pub fn name_length(kind: &str, max: usize, why: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.metadata.name.size() <= {max}"))
        .message(format!("a {kind} name is at most {max} characters: {why}").as_str())
}

/// A root rule: the resource's name has no dots (it prefixes pod host names, DNS labels).
pub fn name_without_dots(kind: &str) -> kube::core::Rule {
    let message = format!(
        "a {kind} name must not contain '.': it prefixes the names of its agents' pods, used as host names"
    );
    kube::core::Rule::new("!self.metadata.name.contains('.')").message(message.as_str())
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
    bound_integers(schema);
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
    add_memory_rules(schema);
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

/// The schema of `K`'s CRD (its only version), as JSON.
#[cfg(test)]
pub(crate) fn crd_schema<K: kube::CustomResourceExt>() -> serde_json::Value {
    let crd = serde_json::to_value(K::crd()).expect("the CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The root rules (`x-kubernetes-validations` of the whole object) of `K`'s CRD.
#[cfg(test)]
pub(crate) fn root_rules<K: kube::CustomResourceExt>() -> serde_json::Value {
    crd_schema::<K>()["x-kubernetes-validations"].clone()
}
