//! A MigrationJob given to `ferry rollback` or `ferry report` (the files `ferry run` was
//! given), with the plan `ferry run` stored of it under the state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_api::{validate, ValidatedSpec};
use ferry_core::stores::JobCredentials;
use ferry_core::JobPlan;

use super::executor::Local;
use super::resolve_paths;
use crate::credentials::job_credentials;
use crate::manifests::{LoadedJob, Manifests, DEFAULT_NAMESPACE};

/// A job and what `ferry run` stored of it.
pub struct StoredJob {
    pub namespace: String,
    pub name: String,
    pub validated: ValidatedSpec,
    pub credentials: JobCredentials,
    /// The plan of its last run (of any attempt).
    pub plan: JobPlan,
    pub state_dir: PathBuf,
}

impl StoredJob {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The MigrationJobs (and Secrets) of `files`; None, the error printed, when there is none.
pub fn jobs_of(files: &[PathBuf]) -> Option<Manifests> {
    let loaded = match crate::manifests::load(files) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    if loaded.jobs.is_empty() {
        eprintln!(
            "error: no MigrationJob (apiVersion ferry.dev/v1alpha1) found in the given files"
        );
        return None;
    }
    Some(loaded)
}

/// The namespace (default `default`) and name of a loaded job.
pub fn identity(loaded: &LoadedJob) -> Result<(String, String), String> {
    let m = &loaded.job.metadata;
    let namespace = m
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let name = m.name.clone().ok_or_else(|| {
        format!(
            "{}: the MigrationJob has no metadata.name",
            loaded.file.display()
        )
    })?;
    Ok((namespace, name))
}

/// Loads `loaded` (its Secrets from `all`) and the plan stored under `state_dir` (default
/// `./.ferry/<namespace>/<name>/`); `nothing` says what is missing without a stored run
/// ("nothing to roll back"). The error is a message for people.
pub fn load(
    loaded: &LoadedJob,
    all: &Manifests,
    state_dir: Option<&Path>,
    nothing: &str,
) -> Result<StoredJob, String> {
    let (namespace, name) = identity(loaded)?;
    let mut job = loaded.job.clone();
    resolve_paths(&mut job.spec, &loaded.dir);
    let validated = validate(&job.spec).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "{namespace}/{name}: the spec is not valid: {}",
            all.join("; ")
        )
    })?;
    let lookup = |n: &str| all.secrets.get(&(namespace.clone(), n.to_string()));
    let credentials = job_credentials(&job.spec, &namespace, &lookup)
        .map_err(|e| format!("{namespace}/{name}: {e}"))?;
    let state_dir = state_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".ferry").join(&namespace).join(&name));
    let uid = job.metadata.uid.clone().unwrap_or_else(|| "local".into());
    let local = Local::new(
        namespace.clone(),
        name.clone(),
        uid,
        state_dir.clone(),
        Duration::ZERO,
        Err(String::new()),
    );
    let Some(plan) = local.stored_plan(&validated) else {
        return Err(format!(
            "{namespace}/{name}: {nothing}: no run of this spec under {}",
            state_dir.display()
        ));
    };
    Ok(StoredJob {
        namespace,
        name,
        validated,
        credentials,
        plan,
        state_dir,
    })
}
