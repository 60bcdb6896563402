//! Reads the YAML a user would `kubectl apply`: MigrationJobs and the Secrets they reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use ferry_api::{BucketSync, MigrationJob};
use serde::Deserialize;

/// A Secret's decoded values, by key.
#[derive(Clone, Default)]
pub struct SecretData(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretData(keys: {:?})",
            self.0.keys().collect::<Vec<_>>()
        )
    }
}

/// A MigrationJob with the directory of the file it came from (relative paths resolve there).
#[derive(Debug, Clone)]
pub struct LoadedJob {
    pub job: MigrationJob,
    pub dir: PathBuf,
    pub file: PathBuf,
}

/// A BucketSync with the directory of the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedSync {
    pub sync: BucketSync,
    pub dir: PathBuf,
    pub file: PathBuf,
}

#[derive(Debug, Default)]
pub struct Manifests {
    pub jobs: Vec<LoadedJob>,
    pub syncs: Vec<LoadedSync>,
    /// By (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretData>,
    /// The `data` of ConfigMaps (price tables, `spec.pricing.configMapRef`), by (namespace,
    /// name).
    pub config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: document {index}: {message}")]
    Parse {
        path: String,
        index: usize,
        message: String,
    },
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
struct SecretDoc {
    metadata: Meta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ConfigMapDoc {
    metadata: Meta,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

pub const DEFAULT_NAMESPACE: &str = "default";

/// Loads every `.yaml`/`.yml` file given, or found in a given directory (not recursive).
pub fn load(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| ManifestError::Read {
                    path: p.display().to_string(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            for f in files {
                load_file(&f, &mut out)?;
            }
        } else {
            load_file(p, &mut out)?;
        }
    }
    Ok(out)
}

fn load_file(path: &Path, out: &mut Manifests) -> Result<(), ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
        path: path.display().to_string(),
        source: e,
    })?;
    let shown = path.display().to_string();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Parse {
            path: shown.clone(),
            index: index + 1,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let perr = |m: String| ManifestError::Parse {
            path: shown.clone(),
            index: index + 1,
            message: m,
        };
        let head: Head = serde_yaml::from_value(value.clone()).map_err(|e| perr(e.to_string()))?;
        match (head.api_version.as_str(), head.kind.as_str()) {
            ("ferry.dev/v1alpha1", "MigrationJob") => {
                let job: MigrationJob = serde_yaml::from_value(value)
                    .map_err(|e| perr(format!("invalid MigrationJob: {e}")))?;
                out.jobs.push(LoadedJob {
                    job,
                    dir: dir.clone(),
                    file: path.to_path_buf(),
                });
            }
            ("ferry.dev/v1alpha1", "BucketSync") => {
                let sync: BucketSync = serde_yaml::from_value(value)
                    .map_err(|e| perr(format!("invalid BucketSync: {e}")))?;
                out.syncs.push(LoadedSync {
                    sync,
                    dir: dir.clone(),
                    file: path.to_path_buf(),
                });
            }
            ("v1", "Secret") => {
                let s: SecretDoc = serde_yaml::from_value(value)
                    .map_err(|e| perr(format!("invalid Secret: {e}")))?;
                let mut data = BTreeMap::new();
                for (k, v) in s.data {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .map_err(|_| {
                            perr(format!(
                                "Secret {}: data.{k} is not base64",
                                s.metadata.name
                            ))
                        })?;
                    let text = String::from_utf8(bytes).map_err(|_| {
                        perr(format!("Secret {}: data.{k} is not UTF-8", s.metadata.name))
                    })?;
                    data.insert(k, text);
                }
                data.extend(s.string_data);
                let ns = s
                    .metadata
                    .namespace
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
                out.secrets.insert((ns, s.metadata.name), SecretData(data));
            }
            ("v1", "ConfigMap") => {
                let c: ConfigMapDoc = serde_yaml::from_value(value)
                    .map_err(|e| perr(format!("invalid ConfigMap: {e}")))?;
                let ns = c
                    .metadata
                    .namespace
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
                out.config_maps.insert((ns, c.metadata.name), c.data);
            }
            (_, kind) => tracing::debug!(
                kind,
                "ignoring a document that is not a MigrationJob, a BucketSync, a Secret or a ConfigMap"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_jobs_and_secrets_with_data_or_string_data() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("job.yaml");
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: media}\ndata: {AWS_ACCESS_KEY_ID: QUtJRA==}\nstringData: {AWS_SECRET_ACCESS_KEY: s3cr3t}\n---\n\
             apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: j, namespace: media}\nspec:\n  source: {filesystem: {path: src}}\n  destination: {filesystem: {path: dst}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: prices}\ndata: {prices.yaml: 'free: {}'}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: ignored}\n",
        )
        .unwrap();
        let m = load(&[d.path().to_path_buf()]).unwrap();
        assert_eq!(m.jobs.len(), 1);
        assert_eq!(m.jobs[0].dir, d.path());
        let s = &m.secrets[&("media".to_string(), "a".to_string())];
        assert_eq!(s.0["AWS_ACCESS_KEY_ID"], "AKID");
        assert_eq!(s.0["AWS_SECRET_ACCESS_KEY"], "s3cr3t");
        let prices = &m.config_maps[&("default".to_string(), "prices".to_string())];
        assert_eq!(prices["prices.yaml"], "free: {}");
        assert!(
            !format!("{s:?}").contains("s3cr3t"),
            "Debug must not show secret values"
        );
    }

    /// Every example loads, passes validation, and has the Secrets it references (a
    /// BucketSync through the MigrationJob of one of its runs).
    #[test]
    fn every_example_is_a_valid_job_with_its_secrets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut files = vec![root.join("quickstart/job.yaml")];
        files.extend(
            std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml")),
        );
        assert!(files.len() >= 5, "{files:?}");
        for f in files {
            let mut m = load(std::slice::from_ref(&f)).unwrap();
            assert_eq!(m.jobs.len() + m.syncs.len(), 1, "{}", f.display());
            if let Some(s) = m.syncs.first() {
                let name = s.sync.metadata.name.clone().unwrap_or_default();
                let problems = ferry_api::bucketsync::sync_problems(&name, &s.sync.spec);
                assert!(problems.is_empty(), "{}: {problems:?}", f.display());
                let mut job = crate::bucketsync::run_job(&s.sync, "run", chrono::Utc::now(), false);
                job.metadata.namespace = s.sync.metadata.namespace.clone();
                let loaded = LoadedJob {
                    job,
                    dir: s.dir.clone(),
                    file: s.file.clone(),
                };
                m.jobs.push(loaded);
            }
            let job = &m.jobs[0].job;
            let mut spec = job.spec.clone();
            // As `ferry run` does: relative paths are relative to the file.
            crate::run_cmd::resolve_paths(&mut spec, &m.jobs[0].dir);
            let problems = ferry_api::validate::problems(&spec);
            assert!(problems.is_empty(), "{}: {problems:?}", f.display());
            let ns = job
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(DEFAULT_NAMESPACE);
            crate::credentials::job_credentials(&job.spec, ns, &|n| {
                m.secrets.get(&(ns.to_string(), n.to_string()))
            })
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }

    #[test]
    fn a_bad_document_names_file_and_position() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bad.yaml");
        std::fs::write(&f, "apiVersion: ferry.dev/v1alpha1\nkind: MigrationJob\nmetadata: {name: j}\nspec: {source: 3}\n").unwrap();
        let e = load(&[f]).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("document 1"), "{e}");
    }
}
