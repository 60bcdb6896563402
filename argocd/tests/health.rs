//! Runs the Argo CD health checks (`resource_customizations/ferry.dev/<Kind>/health.lua`) as
//! Argo CD does: Lua 5.1 with only the base, table and package libraries, the resource as the
//! global `obj` (JSON null and absent fields both nil), over the `testdata/` fixtures, and
//! checks each result against `health_test.yaml` (Argo CD's own test layout).
//!
//! The fixtures are built by this crate with Ferry's API types and status code; the committed
//! `testdata/*.yaml` must equal them (`FERRY_BLESS=1 cargo test -p ferry-argocd` rewrites
//! them, and `argocd-cm.yaml`, instead of comparing).

use std::path::{Path, PathBuf};

use ferry_argocd::Fixture;
use mlua::{Lua, LuaOptions, StdLib, Table};
use serde_json::Value;

const KINDS: [&str; 2] = ["MigrationJob", "BucketSync"];

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("resource_customizations/ferry.dev")
        .join(kind)
}

fn fixtures(kind: &str) -> Vec<Fixture> {
    match kind {
        "MigrationJob" => ferry_argocd::migration_jobs(),
        _ => ferry_argocd::bucket_syncs(),
    }
}

fn bless() -> bool {
    std::env::var_os("FERRY_BLESS").is_some()
}

/// Compares `path` with `want` (or writes it when blessing).
fn check_file(path: &Path, want: &str) {
    if bless() {
        std::fs::write(path, want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: run `FERRY_BLESS=1 cargo test -p ferry-argocd`",
        path.display()
    );
}

/// A JSON value as Lua sees it in Argo CD: objects and arrays as tables, null as nil.
fn to_lua(lua: &Lua, v: &Value) -> mlua::Value {
    match v {
        Value::Null => mlua::Value::Nil,
        Value::Bool(b) => mlua::Value::Boolean(*b),
        Value::Number(n) => mlua::Value::Number(n.as_f64().unwrap()),
        Value::String(s) => mlua::Value::String(lua.create_string(s).unwrap()),
        Value::Array(items) => {
            let t = lua.create_table().unwrap();
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)).unwrap();
            }
            mlua::Value::Table(t)
        }
        Value::Object(fields) => {
            let t = lua.create_table().unwrap();
            for (k, item) in fields {
                t.raw_set(k.as_str(), to_lua(lua, item)).unwrap();
            }
            mlua::Value::Table(t)
        }
    }
}

/// The (status, message) the script returns for `obj`.
fn health(script: &str, obj: &Value) -> (String, String) {
    // Argo CD opens only these libraries unless useOpenLibs is set (base is always open).
    let lua = Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::default()).unwrap();
    lua.globals().set("obj", to_lua(&lua, obj)).unwrap();
    let t: Table = lua
        .load(script)
        .eval()
        .unwrap_or_else(|e| panic!("the script fails: {e}"));
    let message: Option<String> = t.get("message").unwrap();
    (t.get("status").unwrap(), message.unwrap_or_default())
}

fn fixture_yaml(f: &Fixture) -> String {
    format!(
        "# Built by argocd/src/lib.rs with Ferry's API types; `FERRY_BLESS=1 cargo test -p \
         ferry-argocd` regenerates it. Do not edit.\n{}",
        serde_yaml::to_string(&f.object).unwrap()
    )
}

#[test]
fn the_fixtures_are_what_the_status_code_writes() {
    for kind in KINDS {
        let data = dir(kind).join("testdata");
        let mut names = Vec::new();
        for f in fixtures(kind) {
            check_file(&data.join(format!("{}.yaml", f.name)), &fixture_yaml(&f));
            names.push(format!("{}.yaml", f.name));
        }
        let mut files: Vec<String> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        names.sort();
        assert_eq!(files, names, "{kind}: testdata/ holds exactly the fixtures");
    }
}

#[test]
fn each_fixture_gets_the_health_its_test_expects() {
    let mut seen = std::collections::BTreeSet::new();
    for kind in KINDS {
        let script = std::fs::read_to_string(dir(kind).join("health.lua")).unwrap();
        let tests: Value = serde_yaml::from_str(
            &std::fs::read_to_string(dir(kind).join("health_test.yaml")).unwrap(),
        )
        .unwrap();
        let tests = tests["tests"].as_array().unwrap();
        for f in fixtures(kind) {
            let input = format!("testdata/{}.yaml", f.name);
            let case = tests
                .iter()
                .find(|t| t["inputPath"] == input.as_str())
                .unwrap_or_else(|| panic!("{kind}: no test in health_test.yaml for {input}"));
            let want = &case["healthStatus"];
            let (status, message) = health(&script, &f.object);
            assert_eq!(
                (status.as_str(), message.as_str()),
                (
                    want["status"].as_str().unwrap(),
                    want["message"].as_str().unwrap()
                ),
                "{kind} {input}"
            );
            seen.insert(status);
        }
        assert_eq!(
            tests.len(),
            fixtures(kind).len(),
            "{kind}: a test per fixture"
        );
    }
    let all = ["Degraded", "Healthy", "Progressing", "Suspended"];
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), all);
}

/// A status with only some of its fields (an older operator's, or one being written) gets a
/// health too, never a script error: every phase, with and without the optional parts.
#[test]
fn a_partial_status_never_fails_the_script() {
    use serde_json::json;
    let phases = json!({
        "MigrationJob": ["Pending", "Running", "Paused", "Completed", "PartiallyCompleted",
                         "Failed", "Cancelled", "Unknown"],
        "BucketSync": ["Idle", "Syncing", "Suspended", "Failed", "Unknown"],
    });
    let run_phases = [
        None,
        Some("Completed"),
        Some("Failed"),
        Some("PartiallyCompleted"),
    ];
    for kind in KINDS {
        let script = std::fs::read_to_string(dir(kind).join("health.lua")).unwrap();
        for phase in phases[kind].as_array().unwrap() {
            for run in run_phases {
                let mut status = json!({"phase": phase, "observedGeneration": 1,
                                        "progress": {}, "deletes": {"state": "Held"},
                                        "conditions": [{"type": "Stalled", "status": "False"}]});
                if let Some(r) = run {
                    status["lastRun"] = json!({"phase": r, "deletesHeld": true});
                }
                let obj = json!({"metadata": {"generation": 1}, "spec": {}, "status": status});
                let (health, _) = health(&script, &obj);
                assert!(
                    ["Healthy", "Progressing", "Degraded", "Suspended"].contains(&health.as_str()),
                    "{kind} {phase} {run:?}: {health}"
                );
            }
        }
    }
}

/// The script does not lean on a library Argo CD leaves closed: `string.format` fails here.
#[test]
fn a_closed_library_fails_the_run() {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::default()).unwrap();
    assert!(lua.load("return string.format('%d', 1)").exec().is_err());
}

/// `argocd-cm.yaml`: the snippet that installs both checks in Argo CD.
#[test]
fn the_argocd_cm_snippet_holds_the_scripts() {
    let mut text = String::from(
        "# Argo CD health checks for Ferry's resources: merge into the argocd-cm ConfigMap\n\
         # (kubectl -n argocd patch configmap argocd-cm --patch-file argocd/argocd-cm.yaml).\n\
         # The scripts are argocd/resource_customizations/ferry.dev/*/health.lua; generated by\n\
         # `FERRY_BLESS=1 cargo test -p ferry-argocd`, do not edit.\n\
         data:\n",
    );
    for kind in KINDS {
        let script = std::fs::read_to_string(dir(kind).join("health.lua")).unwrap();
        text.push_str(&format!(
            "  resource.customizations.health.ferry.dev_{kind}: |\n"
        ));
        for line in script.lines() {
            if line.is_empty() {
                text.push('\n');
            } else {
                text.push_str(&format!("    {line}\n"));
            }
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("argocd-cm.yaml");
    check_file(&path, &text);
    // The snippet is YAML whose values are the scripts, byte for byte.
    let parsed: Value = serde_yaml::from_str(&text).unwrap();
    for kind in KINDS {
        let script = std::fs::read_to_string(dir(kind).join("health.lua")).unwrap();
        let key = format!("resource.customizations.health.ferry.dev_{kind}");
        assert_eq!(parsed["data"][key.as_str()].as_str(), Some(script.as_str()));
    }
}
