//! `examples/argocd/`: the Applications and the resources they sync. The MigrationJob and the
//! BucketSync pass Ferry's own validation, every Secret they reference is there, and the sync
//! waves apply the Secrets before them.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_api::{BucketSync, MigrationJob};
use serde_json::Value;

fn example(rel: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/argocd")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn wave(obj: &Value) -> i64 {
    obj["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        .as_str()
        .map_or(0, |w| w.parse().unwrap())
}

/// The Secret names a transfer spec references.
fn secret_refs(spec: &Value) -> Vec<String> {
    ["source", "destination"]
        .iter()
        .filter_map(|side| spec[side]["s3"]["credentialsSecretRef"]["name"].as_str())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_resources_are_valid_and_their_secrets_come_first() {
    let mut objects = Vec::new();
    for file in ["secrets.yaml", "migrationjob.yaml", "bucketsync.yaml"] {
        objects.extend(example(&format!("media/{file}")));
    }
    let secrets: BTreeMap<String, i64> = objects
        .iter()
        .filter(|o| o["kind"] == "Secret")
        .map(|o| (o["metadata"]["name"].as_str().unwrap().to_string(), wave(o)))
        .collect();
    let mut jobs = 0;
    for o in &objects {
        let name = o["metadata"]["name"].as_str().unwrap();
        match o["kind"].as_str().unwrap() {
            "MigrationJob" => {
                let mj: MigrationJob = serde_json::from_value(o.clone()).unwrap();
                let problems = ferry_api::validate::problems(&mj.spec);
                assert!(problems.is_empty(), "{name}: {problems:?}");
            }
            "BucketSync" => {
                let bs: BucketSync = serde_json::from_value(o.clone()).unwrap();
                let problems = ferry_api::bucketsync::sync_problems(name, &bs.spec);
                assert!(problems.is_empty(), "{name}: {problems:?}");
            }
            "Secret" => continue,
            other => panic!("unexpected {other}"),
        }
        jobs += 1;
        let refs = secret_refs(&o["spec"]);
        assert!(!refs.is_empty(), "{name}");
        for secret in refs {
            let secret_wave = secrets
                .get(&secret)
                .unwrap_or_else(|| panic!("{name}: no Secret {secret}"));
            assert!(
                *secret_wave < wave(o),
                "{name} (wave {}) before its Secret {secret} (wave {secret_wave})",
                wave(o)
            );
        }
    }
    assert_eq!(jobs, 2);
}

#[test]
fn the_applications_deploy_the_chart_first_and_then_the_resources() {
    let ferry = &example("ferry.yaml")[0];
    let media = &example("media.yaml")[0];
    for app in [ferry, media] {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(app["kind"], "Application");
    }
    assert_eq!(ferry["spec"]["source"]["path"], "charts/ferry");
    assert!(wave(ferry) < wave(media));
    assert_eq!(media["spec"]["source"]["path"], "examples/argocd/media");
    // The chart's values in the Application are ones the chart has.
    let values = &ferry["spec"]["source"]["helm"]["valuesObject"];
    let chart_values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferry/values.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    for (k, v) in values.as_object().unwrap() {
        for field in v.as_object().unwrap().keys() {
            assert!(
                !chart_values[k][field].is_null(),
                "the chart has no value {k}.{field}"
            );
        }
    }
    // The namespaces the operator's pods run in enforce the restricted Pod Security Standard.
    for app in [ferry, media] {
        let labels = &app["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"];
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    }
}
