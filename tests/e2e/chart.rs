//! The Helm chart as Helm renders it (Helm v4's library through helm-python-sdk, with the
//! Python that FERRY_HELM_PYTHON names; tests/run.sh installs it): linted, the operator's pod
//! meets the restricted Pod Security Standard, and its ClusterRole grants nothing on Secrets.
//! Without FERRY_HELM_PYTHON the tests print a notice and pass.

use std::collections::BTreeMap;

use ferry_k8s::pss::restricted_violations;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde_json::{json, Value};

/// Every object the chart renders with `values`, as JSON.
fn render(values: Value) -> Option<Vec<Value>> {
    let Ok(python) = std::env::var("FERRY_HELM_PYTHON") else {
        eprintln!("notice: FERRY_HELM_PYTHON is not set; the chart is not rendered");
        return None;
    };
    let root = ferry_tests::workspace_root();
    let out = std::process::Command::new(python)
        .arg(root.join("tests/support/render_chart.py"))
        .arg(root.join("charts/ferry"))
        .arg(values.to_string())
        .output()
        .expect("the chart renderer runs");
    assert!(
        out.status.success(),
        "helm lint or render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    let mut objects = Vec::new();
    for text in files.values() {
        for doc in text.split("\n---") {
            let v: Value = serde_yaml::from_str(doc).unwrap();
            if !v.is_null() {
                objects.push(v);
            }
        }
    }
    Some(objects)
}

fn of_kind<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect()
}

/// With the default values and with every optional value set.
fn renders() -> Vec<(&'static str, Vec<Value>)> {
    let all = json!({
        "maxRunningPerNamespace": 2,
        "allowAmbientCredentials": true,
        "imagePullSecrets": ["regcred"],
        "agent": {"imagePullSecrets": ["regcred"],
                  "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/ferry"}}
    });
    [("defaults", json!({})), ("every value set", all)]
        .into_iter()
        .filter_map(|(name, values)| Some((name, render(values)?)))
        .collect()
}

#[test]
fn the_operator_pod_meets_the_restricted_pod_security_standard() {
    for (name, objects) in renders() {
        let deployments: Vec<Deployment> = of_kind(&objects, "Deployment");
        assert_eq!(deployments.len(), 1, "{name}");
        let pod = deployments[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(restricted_violations(pod), Vec::<String>::new(), "{name}");
        let env = pod.containers[0].env.as_ref().unwrap();
        let var = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        if name == "every value set" {
            assert_eq!(var("FERRY_MAX_RUNNING_PER_NAMESPACE").as_deref(), Some("2"));
            assert_eq!(
                var("FERRY_AGENT_IMAGE_PULL_SECRETS").as_deref(),
                Some("regcred")
            );
            let annotations: Value =
                serde_json::from_str(&var("FERRY_AGENT_SERVICE_ACCOUNT_ANNOTATIONS").unwrap())
                    .unwrap();
            assert_eq!(
                annotations["eks.amazonaws.com/role-arn"],
                "arn:aws:iam::1:role/ferry"
            );
            assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        } else {
            assert_eq!(
                var("FERRY_ALLOW_AMBIENT_CREDENTIALS").as_deref(),
                Some("false")
            );
            assert_eq!(var("FERRY_MAX_RUNNING_PER_NAMESPACE"), None);
        }
    }
}

#[test]
fn the_cluster_role_grants_nothing_on_secrets_and_no_wildcards() {
    for (name, objects) in renders() {
        let roles: Vec<ClusterRole> = of_kind(&objects, "ClusterRole");
        assert_eq!(roles.len(), 1, "{name}");
        for rule in roles[0].rules.iter().flatten() {
            let resources = rule.resources.clone().unwrap_or_default();
            assert!(
                !resources.iter().any(|r| r == "secrets" || r == "*"),
                "{name}: {rule:?}"
            );
            assert!(!rule.verbs.iter().any(|v| v == "*"), "{name}: {rule:?}");
            assert!(
                !rule.api_groups.iter().flatten().any(|g| g == "*"),
                "{name}: {rule:?}"
            );
        }
    }
}
