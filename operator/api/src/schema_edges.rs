//! Tests that the CRDs admit nothing the Rust types cannot hold (issue 12, "poison resource"):
//! one object that kube-rs cannot decode stops the whole list, so every operator watch. The
//! schemas are walked as generated; every bounded leaf of a spec gets the edge values its
//! schema admits, and each must deserialize into `MigrationJob` or `BucketSync`.

use serde_json::{json, Value};

use crate::quantity::{BOUND_RULE, PATTERN as QUANTITY_PATTERN};
use crate::spec::TIME_PATTERN;
use crate::{BucketSync, ByteSize, MigrationJob};

/// A schema leaf worth testing, with its path below `spec`.
struct Leaf {
    path: Vec<String>,
    schema: Value,
}

/// Every leaf below `schema` (objects are walked through `properties`; arrays and maps are
/// reported as leaves of their own with a marker, so none is missed silently).
fn leaves(schema: &Value, path: &mut Vec<String>, out: &mut Vec<Leaf>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            path.push(k.clone());
            leaves(v, path, out);
            path.pop();
        }
        return;
    }
    if let Some(items) = schema.get("items") {
        path.push("[]".into());
        leaves(items, path, out);
        path.pop();
        return;
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        path.push("{}".into());
        leaves(values, path, out);
        path.pop();
        return;
    }
    out.push(Leaf {
        path: path.clone(),
        schema: schema.clone(),
    });
}

fn all_leaves(root: &Value) -> Vec<Leaf> {
    let mut out = Vec::new();
    leaves(root, &mut Vec::new(), &mut out);
    out
}

/// A resource that deserializes, with every kind of location set on every side, so a value can
/// be put anywhere below `spec`.
fn base(kind: &str) -> Value {
    // Every kind of location, each with its required fields, so a leaf below any of them has
    // a place to go.
    let side = json!({
        "s3": {"bucket": "abc"},
        "filesystem": {"path": "/data"},
        "database": {
            "connectionSecretRef": {"name": "db"},
            "table": "t", "idColumn": "id", "dataColumn": "d", "key": "{id}",
            "writeBack": {"column": "url", "value": "{key}"},
        },
        "urlList": {"collect": {
            "url": "https://h/", "fields": {"url": "/u"},
            "pagination": {"page": {"param": "p"}},
        }},
    });
    let mut spec = json!({"source": side, "destination": side, "report": side});
    if kind == "BucketSync" {
        spec["interval"] = json!("1h");
    }
    json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": spec,
    })
}

fn set(obj: &mut Value, path: &[String], value: Value) {
    let mut at = obj;
    for (i, key) in path.iter().enumerate() {
        if i + 1 == path.len() {
            at[key.as_str()] = value;
            return;
        }
        if at.get(key.as_str()).is_none_or(|v| !v.is_object()) {
            at[key.as_str()] = json!({});
        }
        at = &mut at[key.as_str()];
    }
}

/// Whether the resource with `value` at `path` (below `spec`) deserializes, and the value
/// read back is the one written.
fn decodes(kind: &str, path: &[String], value: Value) -> Result<(), String> {
    let mut obj = base(kind);
    set(&mut obj["spec"], path, value.clone());
    let r = match kind {
        "MigrationJob" => serde_json::from_value::<MigrationJob>(obj)
            .map(|o| serde_json::to_value(o).expect("serializes")),
        _ => serde_json::from_value::<BucketSync>(obj)
            .map(|o| serde_json::to_value(o).expect("serializes")),
    };
    let back = r.map_err(|e| format!("{kind} spec.{}: {value}: {e}", path.join(".")))?;
    let mut at = &back["spec"];
    for key in path {
        at = &at[key.as_str()];
    }
    if !same(at, &value) {
        return Err(format!(
            "{kind} spec.{}: wrote {value}, read back {at}",
            path.join(".")
        ));
    }
    Ok(())
}

/// Equal as written: numbers by value, times as instants, quantities by their text (a
/// default value may be left out when serialized).
fn same(read: &Value, written: &Value) -> bool {
    if read.is_null() {
        return true;
    }
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    match (time(read), time(written)) {
        (Some(a), Some(b)) => a == b,
        _ => read == written,
    }
}

/// The quantity texts at the top of the range the CRD admits, one per suffix (and zero).
fn largest_quantities() -> Vec<String> {
    let mut out = vec!["0".to_string(), u64::MAX.to_string()];
    for (suffix, mult) in crate::quantity::SUFFIXES {
        out.push(format!("{}{suffix}", u64::MAX / mult));
    }
    out.push(format!(
        "{}1",
        "0".repeat(crate::quantity::MAX_TEXT_LEN - 1)
    ));
    out
}

/// Times at the edges of [`TIME_PATTERN`]: every combination of the extreme values of each
/// part it admits.
fn edge_times() -> Vec<String> {
    let mut out = Vec::new();
    for date in [
        "1000-01-01",
        "2999-12-31",
        "2024-02-29",
        "2023-02-28",
        "2024-04-30",
    ] {
        for time in ["00:00:00", "23:59:59"] {
            for frac in ["", ".0", ".5", ".123456789"] {
                for zone in ["Z", "+00:00", "-00:00", "+23:59", "-23:59", "+05:30"] {
                    out.push(format!("{date}T{time}{frac}{zone}"));
                }
            }
        }
    }
    out
}

/// What each kind of bounded leaf must hold, and its edge values.
fn edges(leaf: &Leaf) -> Option<Vec<Value>> {
    let s = &leaf.schema;
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let path = leaf.path.join(".");
    if types.contains(&"integer") {
        let format = s["format"].as_str().unwrap_or("");
        let (min, max) = (s["minimum"].as_f64(), s["maximum"].as_f64());
        match format {
            "int64" | "uint64" => {
                // The API server itself refuses integers outside int64; a u64 needs minimum 0.
                if format == "uint64" {
                    assert_eq!(min, Some(0.0), "{path}: a uint64 needs minimum 0");
                }
            }
            _ => {
                let (Some(_), Some(max)) = (min, max) else {
                    panic!("{path}: integer ({format}) without minimum and maximum: {s}");
                };
                let type_max = match format {
                    "uint32" => u32::MAX as f64,
                    "int32" => i32::MAX as f64,
                    other => panic!("{path}: integer format {other:?} not covered by this test"),
                };
                assert!(
                    max <= type_max,
                    "{path}: maximum {max} above its type's {type_max}"
                );
            }
        }
        // A bound the API server reads as outside int64 makes it refuse every value.
        for b in [min, max].into_iter().flatten() {
            assert!(
                (i64::MIN as f64..-(i64::MIN as f64)).contains(&b),
                "{path}: bound {b} is outside int64 as a float"
            );
        }
        let mut values = vec![];
        values.extend(min.map(|m| json!(m as i64)));
        values.extend(max.map(|m| json!(m as i64)));
        return Some(values);
    }
    if s["pattern"] == QUANTITY_PATTERN {
        let rules = s["x-kubernetes-validations"].as_array();
        assert!(
            rules.is_some_and(|r| r.iter().any(|r| r["rule"] == BOUND_RULE)),
            "{path}: a quantity without the 16Ei bound: {s}"
        );
        return Some(largest_quantities().into_iter().map(Value::from).collect());
    }
    if s["format"] == "date-time" {
        assert_eq!(
            s["pattern"], TIME_PATTERN,
            "{path}: a time without the pattern"
        );
        return Some(edge_times().into_iter().map(Value::from).collect());
    }
    if let Some(values) = s["enum"].as_array() {
        return Some(values.clone());
    }
    if types.contains(&"number") {
        panic!("{path}: a floating-point field is not covered by this test");
    }
    None
}

fn check_kind(kind: &str, root: &Value) -> usize {
    let spec = &root["properties"]["spec"];
    let mut tested = 0;
    for leaf in all_leaves(spec) {
        if let Some(values) = edges(&leaf) {
            for v in values {
                decodes(kind, &leaf.path, v).unwrap();
                tested += 1;
            }
        }
    }
    // The status is written by the operator only, but is decoded with the rest: its integers
    // are bounded the same way.
    for leaf in all_leaves(&root["properties"]["status"]) {
        let _ = edges(&leaf);
    }
    tested
}

#[test]
fn every_edge_value_the_migrationjob_crd_admits_decodes() {
    let tested = check_kind("MigrationJob", &crate::cel::crd_schema::<MigrationJob>());
    assert!(tested > 100, "only {tested} values tried");
}

#[test]
fn every_edge_value_the_bucketsync_crd_admits_decodes() {
    let tested = check_kind("BucketSync", &crate::cel::crd_schema::<BucketSync>());
    assert!(tested > 100, "only {tested} values tried");
}

/// The poison values of the review are refused by the schema now (by the bound, by the
/// maximum): and they are indeed values the types cannot hold.
#[test]
fn the_reviews_poison_values_are_ones_the_types_cannot_hold() {
    let root = crate::cel::crd_schema::<MigrationJob>();
    let spec = &root["properties"]["spec"]["properties"];
    assert_eq!(spec["requestsPerSecond"]["maximum"], json!(4294967295.0));
    let rps = vec!["requestsPerSecond".to_string()];
    assert!(decodes("MigrationJob", &rps, json!(4294967295u64)).is_ok());
    assert!(decodes("MigrationJob", &rps, json!(4294967296u64)).is_err());
    let bw = vec!["bandwidthLimit".to_string()];
    assert!(decodes("MigrationJob", &bw, json!("99999999999999999999")).is_err());
    assert!(ByteSize::parse("99999999999999999999").is_err());
}

/// Forms a looser `date-time` check could let through, each one the Rust type refuses, and
/// none of them admitted by [`TIME_PATTERN`] (which requires `T`, seconds, a zone, a `.` before
/// the fraction and an offset under 24 hours). A day the month does not have
/// (`2024-04-31`) fits the pattern; the API server's `date-time` format refuses it.
#[test]
fn time_forms_the_type_cannot_read_are_outside_the_pattern() {
    let refused_by_chrono = [
        "2024-01-01T10:00Z",
        "2024-01-01T10:00",
        "2024-01-01T10:00:00",
        "2024-01-01",
        "2024-01-01T10:00:00x5Z",
        "2024-01-01T10:00:00+24:00",
        "2024-01-01T10:00:00+99:99",
    ];
    let path = vec!["filters".to_string(), "modifiedAfter".to_string()];
    for t in refused_by_chrono {
        assert!(decodes("MigrationJob", &path, json!(t)).is_err(), "{t}");
    }
}

/// Every admitted time survives the trip the plan makes (serialized, read back by an agent).
#[test]
fn edge_times_round_trip() {
    for t in edge_times() {
        let parsed: chrono::DateTime<chrono::Utc> = serde_json::from_value(json!(t)).unwrap();
        let back: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(serde_json::to_value(parsed).unwrap()).unwrap();
        assert_eq!(parsed, back, "{t}");
    }
}
