//! The Helm chart as Helm renders it (Helm v4's library through helm-python-sdk, with the
//! Python that FERRY_HELM_PYTHON names; tests/run.sh installs it and kubernetes-validate in
//! it): linted; a wrong value refused by values.schema.json; every object valid against the
//! Kubernetes OpenAPI schemas; the operator's pod meeting the restricted Pod Security Standard;
//! RBAC without Secrets or wildcards; and the static install manifest (deploy/install.yaml)
//! equal to the chart's objects for the default values.
//!
//! Without FERRY_HELM_PYTHON the rendering tests print a notice and pass;
//! `every_rbac_rule_is_explained` needs no renderer. `FERRY_BLESS=1` rewrites
//! deploy/install.yaml from the chart instead of comparing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_k8s::pss::restricted_violations;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde_json::{json, Value};

/// The Kubernetes versions the objects are validated against: the chart's lowest
/// (`kubeVersion` in Chart.yaml) and the one the operator's API types are built for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.33.0"];
/// Kinds without a built-in schema (their CRDs are not Kubernetes').
const CUSTOM_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];
/// The install manifest's release and namespace (the chart's documented defaults).
const RELEASE: &str = "ferry";
const NAMESPACE: &str = "ferry-system";

fn helm_python() -> Option<String> {
    let python = std::env::var("FERRY_HELM_PYTHON").ok();
    if python.is_none() {
        eprintln!("notice: FERRY_HELM_PYTHON is not set; the chart is not rendered");
    }
    python
}

fn root() -> PathBuf {
    ferry_tests::workspace_root()
}

/// Runs the renderer with `values`: Ok(template path -> YAML text) or Err(lint errors).
fn try_render(python: &str, values: &Value) -> Result<BTreeMap<String, String>, String> {
    let out = std::process::Command::new(python)
        .arg(root().join("tests/support/render_chart.py"))
        .arg(root().join("charts/ferry"))
        .arg(values.to_string())
        .output()
        .expect("the chart renderer runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// The YAML documents of the rendered templates, in template order, trimmed; empty ones left
/// out.
fn documents(files: &BTreeMap<String, String>) -> Vec<String> {
    files
        .iter()
        .filter(|(path, _)| path.ends_with(".yaml"))
        .flat_map(|(_, text)| text.split("\n---"))
        .map(|doc| doc.trim().to_string())
        .filter(|doc| !serde_yaml::from_str::<Value>(doc).unwrap().is_null())
        .collect()
}

fn parse(docs: &[String]) -> Vec<Value> {
    docs.iter()
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

/// Every object the chart renders with `values`, as JSON.
fn render(values: Value) -> Option<Vec<Value>> {
    let python = helm_python()?;
    let files =
        try_render(&python, &values).unwrap_or_else(|e| panic!("helm lint or render failed: {e}"));
    Some(parse(&documents(&files)))
}

fn of_kind<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect()
}

/// Every value the chart has, set to something other than its default.
fn every_value() -> Value {
    json!({
        "maxRunningPerNamespace": 2,
        "allowAmbientCredentials": true,
        "imagePullSecrets": ["regcred"],
        "agent": {"imagePullSecrets": ["regcred"],
                  "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/ferry"},
                  "nodeSelector": {"pool": "transfer"},
                  "tolerations": [{"key": "transfer", "operator": "Exists", "effect": "NoSchedule"}],
                  "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                      "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                  "priorityClassName": "batch-low"},
        "http": {"port": 9090, "bindAddress": "::"},
        "logFormat": "json",
        "logLevel": "info,kube=debug",
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
             "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "ferry"}}}}]}},
        "commonLabels": {"team": "data"},
        "commonAnnotations": {"owner": "data@example.com"},
        "podLabels": {"sidecar.istio.io/inject": "false"},
        "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
        "podDisruptionBudget": {"enabled": true, "maxUnavailable": 0},
        "serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prom"}},
        "grafanaDashboard": {"enabled": true, "annotations": {"grafana_folder": "Ferry"}},
        "prometheusRule": {"enabled": true, "labels": {"release": "prom"}, "bucketSyncMaxAgeSeconds": 3600},
    })
}

/// With the default values and with every value set.
fn renders() -> Vec<(&'static str, Vec<Value>)> {
    [("defaults", json!({})), ("every value set", every_value())]
        .into_iter()
        .filter_map(|(name, values)| Some((name, render(values)?)))
        .collect()
}

/// The pod specs of the objects that hold pods.
fn pods(objects: &[Value]) -> Vec<PodSpec> {
    of_kind::<Deployment>(objects, "Deployment")
        .into_iter()
        .map(|d| d.spec.unwrap().template.spec.unwrap())
        .collect()
}

#[test]
fn the_operator_pod_meets_the_restricted_pod_security_standard() {
    for (name, objects) in renders() {
        let pods = pods(&objects);
        assert_eq!(pods.len(), 1, "{name}");
        let pod = &pods[0];
        assert_eq!(restricted_violations(pod), Vec::<String>::new(), "{name}");
        let container = &pod.containers[0];
        let env = container.env.as_ref().unwrap();
        let var = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        // The probes ask the operator's HTTP port, the one it is told to serve on.
        let port = container.ports.as_ref().unwrap()[0].container_port;
        assert!(
            var("FERRY_HTTP_ADDR")
                .unwrap()
                .ends_with(&format!("]:{port}"))
                || var("FERRY_HTTP_ADDR")
                    .unwrap()
                    .ends_with(&format!("0:{port}")),
            "{name}: {:?} vs port {port}",
            var("FERRY_HTTP_ADDR")
        );
        for (probe, path) in [
            (&container.liveness_probe, "/healthz"),
            (&container.readiness_probe, "/readyz"),
        ] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(
                get.port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into())
            );
        }
        assert_eq!(
            container.ports.as_ref().unwrap()[0].name.as_deref(),
            Some("http")
        );
        if name == "every value set" {
            assert_eq!(port, 9090);
            assert_eq!(var("FERRY_HTTP_ADDR").as_deref(), Some("[::]:9090"));
            assert_eq!(var("FERRY_LOG_FORMAT").as_deref(), Some("json"));
            assert_eq!(var("FERRY_LOG").as_deref(), Some("info,kube=debug"));
            assert_eq!(var("FERRY_MAX_RUNNING_PER_NAMESPACE").as_deref(), Some("2"));
            assert_eq!(
                var("FERRY_AGENT_IMAGE_PULL_SECRETS").as_deref(),
                Some("regcred")
            );
            // The agents' scheduling, as the operator reads it (its parser refuses unknown
            // fields).
            let scheduling: Value =
                serde_json::from_str(&var("FERRY_AGENT_SCHEDULING").unwrap()).unwrap();
            assert_eq!(scheduling["nodeSelector"]["pool"], "transfer");
            assert_eq!(scheduling["tolerations"][0]["key"], "transfer");
            assert_eq!(scheduling["priorityClassName"], "batch-low");
            assert!(scheduling["affinity"]["nodeAffinity"].is_object());
            let annotations: Value =
                serde_json::from_str(&var("FERRY_AGENT_SERVICE_ACCOUNT_ANNOTATIONS").unwrap())
                    .unwrap();
            assert_eq!(
                annotations["eks.amazonaws.com/role-arn"],
                "arn:aws:iam::1:role/ferry"
            );
            assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
            assert_eq!(
                pod.priority_class_name.as_deref(),
                Some("system-cluster-critical")
            );
            assert_eq!(
                pod.node_selector.as_ref().unwrap()["kubernetes.io/os"],
                "linux"
            );
            assert_eq!(
                pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
                Some("dedicated")
            );
            assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
            // Extra labels and annotations: common ones on every object, pod ones on the pod.
            for o in &objects {
                assert_eq!(o["metadata"]["labels"]["team"], "data", "{o}");
                assert_eq!(
                    o["metadata"]["annotations"]["owner"], "data@example.com",
                    "{o}"
                );
            }
            let deployment = &of_kind::<Value>(&objects, "Deployment")[0];
            let template = &deployment["spec"]["template"]["metadata"];
            assert_eq!(template["labels"]["sidecar.istio.io/inject"], "false");
            assert_eq!(
                template["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"],
                "true"
            );
            // The dashboard, as the file, in a ConfigMap that Grafana's sidecar picks up.
            let dashboards = of_kind::<Value>(&objects, "ConfigMap");
            assert_eq!(dashboards.len(), 1, "{name}");
            assert_eq!(
                dashboards[0]["metadata"]["labels"]["grafana_dashboard"],
                "1"
            );
            assert_eq!(
                dashboards[0]["metadata"]["annotations"]["grafana_folder"],
                "Ferry"
            );
            let file =
                std::fs::read_to_string(root().join("charts/ferry/dashboards/ferry.json")).unwrap();
            let shipped: Value =
                serde_json::from_str(dashboards[0]["data"]["ferry.json"].as_str().unwrap())
                    .unwrap();
            assert_eq!(shipped, serde_json::from_str::<Value>(&file).unwrap());
            let rules = of_kind::<Value>(&objects, "PrometheusRule");
            assert_eq!(rules.len(), 1, "{name}");
            assert_eq!(rules[0]["metadata"]["labels"]["release"], "prom");
            let alerts = rules[0]["spec"]["groups"][0]["rules"].as_array().unwrap();
            let stale = alerts
                .iter()
                .find(|r| r["alert"] == "FerryBucketSyncStale")
                .unwrap();
            assert!(
                stale["expr"].as_str().unwrap().ends_with("> 3600"),
                "{stale}"
            );
            // Prometheus's own templates reach the rule unrendered by Helm.
            assert!(stale["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("{{ $labels.namespace }}"));
            let monitors = of_kind::<Value>(&objects, "ServiceMonitor");
            assert_eq!(monitors.len(), 1, "{name}");
            assert_eq!(monitors[0]["metadata"]["labels"]["release"], "prom");
            assert_eq!(monitors[0]["spec"]["endpoints"][0]["port"], "http");
            assert_eq!(monitors[0]["spec"]["endpoints"][0]["interval"], "15s");
        } else {
            assert_eq!(
                var("FERRY_ALLOW_AMBIENT_CREDENTIALS").as_deref(),
                Some("false")
            );
            assert_eq!(var("FERRY_MAX_RUNNING_PER_NAMESPACE"), None);
            assert!(pod.priority_class_name.is_none() && pod.node_selector.is_none());
            assert!(of_kind::<Value>(&objects, "ServiceMonitor").is_empty());
            assert!(of_kind::<Value>(&objects, "ConfigMap").is_empty());
            assert!(of_kind::<Value>(&objects, "PrometheusRule").is_empty());
        }
        // A PodDisruptionBudget and a Service select exactly the operator's pods.
        let labels =
            &of_kind::<Value>(&objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"];
        for kind in ["PodDisruptionBudget", "Service"] {
            let objs = of_kind::<Value>(&objects, kind);
            assert_eq!(objs.len(), 1, "{name}: {kind}");
            let selector = objs[0]["spec"]["selector"]
                .get("matchLabels")
                .unwrap_or(&objs[0]["spec"]["selector"]);
            for (k, v) in selector.as_object().unwrap() {
                assert_eq!(&labels[k], v, "{name}: {kind} selects {k}={v}");
            }
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

/// Each rule of a Role or ClusterRole in the chart comes right after a comment saying why.
#[test]
fn every_rbac_rule_is_explained() {
    let text = std::fs::read_to_string(root().join("charts/ferry/templates/rbac.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let rules: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("- apiGroups:"))
        .collect();
    assert!(rules.len() >= 10, "{} rules found", rules.len());
    for i in rules {
        assert!(
            lines[i - 1].trim_start().starts_with('#'),
            "rbac.yaml line {}: a rule without a comment before it",
            i + 1
        );
    }
}

/// Runs tests/support/validate_objects.py: (errors, kinds without a schema).
fn validate(python: &str, version: &str, objects: &[Value]) -> (Vec<String>, Vec<String>) {
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .arg(root().join("tests/support/validate_objects.py"))
        .arg(version)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the validator runs");
    let input = serde_json::to_vec(objects).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the validator failed (is kubernetes-validate installed? tests/run.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let strings = |k: &str| -> Vec<String> { serde_json::from_value(v[k].clone()).unwrap() };
    (strings("errors"), strings("skipped"))
}

#[test]
fn every_object_is_valid_against_the_kubernetes_schemas() {
    let Some(python) = helm_python() else { return };
    let mut sets = renders();
    sets.push(("deploy/install.yaml", install_manifest_objects()));
    for (name, objects) in sets {
        for version in KUBERNETES_VERSIONS {
            let (errors, skipped) = validate(&python, version, &objects);
            assert_eq!(errors, Vec::<String>::new(), "{name}, Kubernetes {version}");
            assert!(
                skipped.iter().all(|k| CUSTOM_KINDS.contains(&k.as_str())),
                "{name}: no schema for {skipped:?}"
            );
        }
        for pod in pods(&objects) {
            assert_eq!(restricted_violations(&pod), Vec::<String>::new(), "{name}");
        }
    }
    // The validator does find errors (a test that cannot fail proves nothing).
    let bad = json!([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                      "spec": {"ports": [{"port": 80}], "selectr": {}}}]);
    let (errors, _) = validate(&python, "1.33.0", bad.as_array().unwrap());
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn a_wrong_value_is_refused_by_the_schema() {
    let Some(python) = helm_python() else { return };
    for (values, says) in [
        (json!({"replicas": "two"}), "/replicas"),
        (json!({"replikas": 2}), "replikas"),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "/image/pullPolicy",
        ),
        (json!({"http": {"port": 80}}), "/http/port"),
        (
            json!({"imagePullSecrets": [{"name": "regcred"}]}),
            "/imagePullSecrets/0",
        ),
        (
            json!({"serviceMonitor": {"enabled": "yes"}}),
            "/serviceMonitor/enabled",
        ),
        (
            json!({"resources": {"limits": {"memory": "lots"}}}),
            "/resources/limits/memory",
        ),
        (
            json!({"tolerations": [{"key": "a", "operater": "Exists"}]}),
            "/tolerations/0",
        ),
        (json!({"podLabels": {"tier": 1}}), "/podLabels/tier"),
        (json!({"logFormat": "yaml"}), "/logFormat"),
    ] {
        let err = try_render(&python, &values).expect_err(&format!("{values} was accepted"));
        assert!(err.contains(says), "{values}: {err}");
    }
}

/// The install manifest as generated from the chart: a restricted Namespace and the chart's
/// templates rendered with the default values. The CRDs stay in crds/ (applied first), so
/// regenerating them does not touch this file.
fn generate_install_manifest(python: &str) -> String {
    let files = try_render(python, &json!({})).unwrap();
    let mut docs = vec![format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted"
    )];
    docs.extend(documents(&files));
    format!(
        "# Ferry's install manifest: the namespace {NAMESPACE} and the Helm chart charts/ferry\n\
         # rendered with its default values (release \"{RELEASE}\"). Install the CRDs first:\n\
         #   kubectl apply --server-side -f crds/\n\
         #   kubectl apply --server-side -f deploy/install.yaml\n\
         # Generated by `FERRY_BLESS=1 cargo test -p ferry-tests --test e2e chart::`\n\
         # (tests/e2e/chart.rs), which fails while this file and the chart differ; do not edit.\n\
         ---\n{}\n",
        docs.join("\n---\n")
    )
}

fn install_manifest_objects() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy/install.yaml")).unwrap();
    let docs: Vec<String> = text.split("\n---\n").map(str::to_string).collect();
    parse(&docs).into_iter().filter(|v| !v.is_null()).collect()
}

#[test]
fn the_install_manifest_is_the_chart_with_default_values() {
    let Some(python) = helm_python() else { return };
    let path = root().join("deploy/install.yaml");
    let generated = generate_install_manifest(&python);
    if std::env::var_os("FERRY_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == generated,
        "deploy/install.yaml differs from the chart: run \
         `FERRY_BLESS=1 cargo test -p ferry-tests --test e2e chart::`"
    );
    // Object for object: the manifest is the Namespace and the chart's objects for the
    // default values.
    let objects = install_manifest_objects();
    let name = |o: &Value| format!("{}/{}", o["kind"], o["metadata"]["name"]);
    assert_eq!(name(&objects[0]), "\"Namespace\"/\"ferry-system\"");
    let chart = render(json!({})).unwrap();
    assert_eq!(
        &objects[1..],
        chart.as_slice(),
        "{:?} vs {:?}",
        objects[1..].iter().map(name).collect::<Vec<_>>(),
        chart.iter().map(name).collect::<Vec<_>>()
    );
}
