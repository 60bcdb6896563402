//! Writing MigrationJob YAML, running the `ferry` binary, and reading what it reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tempfile::TempDir;

use crate::server::{Creds, S3Server};

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `ferry` binary: `FERRY_BIN` if set; otherwise built once per test process (see
/// [`built_binaries`]).
pub fn ferry_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FERRY_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "FERRY_BIN={} does not exist", p.display());
            return p;
        }
        built_binaries().ferry.clone()
    })
}

/// The binaries the tests run.
pub struct Binaries {
    pub ferry: PathBuf,
    pub agent: PathBuf,
}

/// `ferry` and `transfer-agent`, built together once per test process with one
/// `$CARGO build --locked -p ferry-operator -p transfer-agent --bins` (one build: the two
/// packages share their dependencies' features, so neither pays for a second variant of
/// them, and the first test that needs one pays for both before any timer of its own runs),
/// from the target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn built_binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let root = workspace_root();
        let out = std::process::Command::new(&cargo)
            .args([
                "build",
                "--locked",
                "-p",
                "ferry-operator",
                "-p",
                "transfer-agent",
            ])
            .arg("--bins")
            .current_dir(&root)
            .stdout(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cargo:?} build: {e}"));
        assert!(
            out.status.success(),
            "building the binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let target = if target.is_relative() {
            root.join(target)
        } else {
            target
        };
        let path = |bin: &str| {
            let p = target
                .join("debug")
                .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
            assert!(
                p.is_file(),
                "{bin} is not at {} after the build",
                p.display()
            );
            p
        };
        Binaries {
            ferry: path("ferry"),
            agent: path("transfer-agent"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Job YAML

/// A credentials Secret referenced by an S3 side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSpec {
    pub name: String,
    pub creds: Creds,
}

/// One side of a job: an S3 location or a filesystem path.
#[derive(Clone, Debug)]
pub enum Side {
    S3 {
        /// The `s3:` mapping, camelCase, without credentials.
        fields: Map<String, Value>,
        secret: Option<SecretSpec>,
    },
    Fs(PathBuf),
}

impl Side {
    /// A bucket on `server` (endpoint, region, path style, and a Secret named `creds`).
    pub fn s3(server: &S3Server, bucket: &str) -> Side {
        Side::s3_at(&server.endpoint, &server.creds, bucket)
    }

    /// A bucket reached at `endpoint` (e.g. a proxy) with `creds`, Secret named `creds`.
    pub fn s3_at(endpoint: &str, creds: &Creds, bucket: &str) -> Side {
        let mut fields = Map::new();
        fields.insert("endpoint".into(), json!(endpoint));
        fields.insert("region".into(), json!("us-east-1"));
        fields.insert("bucket".into(), json!(bucket));
        fields.insert("prefix".into(), json!(""));
        fields.insert("forcePathStyle".into(), json!(true));
        Side::S3 {
            fields,
            secret: Some(SecretSpec {
                name: "creds".into(),
                creds: creds.clone(),
            }),
        }
    }

    pub fn fs(path: impl Into<PathBuf>) -> Side {
        Side::Fs(path.into())
    }

    /// Set the key prefix of an S3 side.
    pub fn prefix(self, prefix: &str) -> Side {
        self.set("prefix", json!(prefix))
    }

    /// Name the Secret this side refers to (default `creds`).
    pub fn secret_name(mut self, name: &str) -> Side {
        if let Side::S3 {
            secret: Some(s), ..
        } = &mut self
        {
            s.name = name.to_string();
        }
        self
    }

    /// Sign this side's requests with `creds` (in its Secret).
    pub fn creds(mut self, creds: Creds) -> Side {
        if let Side::S3 {
            secret: Some(s), ..
        } = &mut self
        {
            s.creds = creds;
        }
        self
    }

    /// Set any field of the `s3:` mapping (e.g. `storageClass`).
    pub fn set(mut self, field: &str, value: Value) -> Side {
        match &mut self {
            Side::S3 { fields, .. } => {
                fields.insert(field.to_string(), value);
            }
            Side::Fs(_) => panic!("{field} is an S3 field; this side is a filesystem"),
        }
        self
    }

    fn to_value(&self) -> Value {
        match self {
            Side::S3 { fields, secret } => {
                let mut f = fields.clone();
                if let Some(s) = secret {
                    f.insert("credentialsSecretRef".into(), json!({ "name": s.name }));
                }
                json!({ "s3": Value::Object(f) })
            }
            Side::Fs(p) => json!({ "filesystem": { "path": p.to_string_lossy() } }),
        }
    }
}

/// A MigrationJob plus the Secrets it refers to.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub namespace: String,
    pub spec: Map<String, Value>,
    secrets: Vec<SecretSpec>,
}

impl Job {
    pub fn new(name: &str, source: Side, destination: Side) -> Job {
        let mut secrets: Vec<SecretSpec> = Vec::new();
        for side in [&source, &destination] {
            if let Side::S3 {
                secret: Some(s), ..
            } = side
            {
                match secrets.iter().find(|x| x.name == s.name) {
                    Some(existing) => assert_eq!(
                        existing.creds, s.creds,
                        "two sides name Secret {} with different credentials",
                        s.name
                    ),
                    None => secrets.push(s.clone()),
                }
            }
        }
        let mut spec = Map::new();
        spec.insert("source".into(), source.to_value());
        spec.insert("destination".into(), destination.to_value());
        Job {
            name: name.to_string(),
            namespace: "default".into(),
            spec,
            secrets,
        }
    }

    /// Set a top-level spec field (`overwrite`, `filters`, `dryRun`, `multipart`...).
    pub fn with(mut self, field: &str, value: Value) -> Job {
        self.spec.insert(field.to_string(), value);
        self
    }

    /// Remove a top-level spec field.
    pub fn without(mut self, field: &str) -> Job {
        self.spec.remove(field);
        self
    }

    /// Replace the spec as a whole (for invalid-spec tests).
    pub fn with_raw_spec(mut self, spec: Value) -> Job {
        self.spec = spec.as_object().expect("spec is a mapping").clone();
        self
    }

    /// The multi-document YAML: the MigrationJob, then one Secret per credentials reference.
    pub fn to_yaml(&self) -> String {
        let job = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "MigrationJob",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "spec": Value::Object(self.spec.clone()),
        });
        let mut docs = vec![serde_yaml::to_string(&job).expect("yaml")];
        for s in &self.secrets {
            let secret = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": s.name, "namespace": self.namespace },
                "type": "Opaque",
                "stringData": {
                    "AWS_ACCESS_KEY_ID": s.creds.access_key,
                    "AWS_SECRET_ACCESS_KEY": s.creds.secret_key,
                },
            });
            docs.push(serde_yaml::to_string(&secret).expect("yaml"));
        }
        docs.join("---\n")
    }

    /// Write the YAML to `dir/<name>.yaml` and return the path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.yaml", self.name));
        std::fs::write(&path, self.to_yaml()).expect("write job yaml");
        path
    }
}

// ---------------------------------------------------------------------------------------------
// Running ferry

/// A per-test working directory: job files and the state directory live here.
pub struct Workdir {
    dir: TempDir,
}

impl Workdir {
    pub fn new(test: &str) -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ferry-e2e-{test}-"))
            .tempdir()
            .expect("temp dir");
        Workdir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh subdirectory (created).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// The state directory used by [`Workdir::run`] (not created: ferry creates it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Write the job and run `ferry run -f JOB --state-dir STATE --output json [extra...]`.
    pub async fn run(&self, job: &Job, extra: &[&str]) -> Run {
        let file = job.write(self.path());
        run_ferry(&[&file], &self.state_dir(), extra, Duration::from_secs(240)).await
    }

    /// Like [`Workdir::run`] but returns the running process (for kill tests).
    pub fn spawn(&self, job: &Job, extra: &[&str]) -> tokio::process::Child {
        let file = job.write(self.path());
        spawn_ferry(&[&file], &self.state_dir(), extra)
    }

    /// Write the job and run `ferry rollback -f JOB --state-dir STATE --output json
    /// [extra...]` to its end: what the runs of [`Workdir::run`] wrote is taken back.
    pub async fn rollback(&self, job: &Job, extra: &[&str]) -> Run {
        self.rollback_with(job, &[], extra).await
    }

    /// [`Workdir::rollback`] with more files beside the job's (the Secrets it references).
    pub async fn rollback_with(&self, job: &Job, files: &[&Path], extra: &[&str]) -> Run {
        let file = job.write(self.path());
        let mut all: Vec<&Path> = vec![file.as_path()];
        all.extend_from_slice(files);
        let started = Instant::now();
        let child = ferry_subcommand("rollback", &all, &self.state_dir(), extra)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", ferry_bin().display()));
        let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
            .await
            .expect("ferry rollback did not finish within 240 s")
            .expect("wait for ferry rollback");
        Run::from_output(out, started.elapsed())
    }

    /// Write the job and run `ferry report -f JOB --state-dir STATE [args...]` (what the runs of
    /// [`Workdir::run`] wrote in their report folders) to its end.
    pub fn report(&self, job: &Job, args: &[&str]) -> Run {
        let file = job.write(self.path());
        let started = Instant::now();
        let mut cmd = std::process::Command::new(ferry_bin());
        cmd.arg("report")
            .arg("-f")
            .arg(&file)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args);
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"] {
            cmd.env_remove(var);
        }
        let out = cmd.output().expect("ferry report runs");
        Run::from_output(out, started.elapsed())
    }

    /// Read `shard-<i>.json` from the state directory, if it exists and parses.
    pub fn shard_state(&self, shard: u32) -> Option<Value> {
        let p = self.state_dir().join(format!("shard-{shard}.json"));
        let text = std::fs::read_to_string(p).ok()?;
        serde_json::from_str(&text).ok()
    }
}

fn ferry_command(files: &[&Path], state_dir: &Path, extra: &[&str]) -> tokio::process::Command {
    ferry_subcommand("run", files, state_dir, extra)
}

/// `ferry <sub> -f FILES --state-dir STATE --output json [extra...]`, with no cloud
/// credentials from the environment.
fn ferry_subcommand(
    sub: &str,
    files: &[&Path],
    state_dir: &Path,
    extra: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(ferry_bin());
    cmd.arg(sub);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(["--output", "json"])
        .args(extra);
    // Ferry must not pick credentials up from the environment of whoever runs the tests.
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    // FERRY_LOG (ferry's log filter) is inherited: set it to see more on stderr.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Start `ferry <sub>` (`rollback`...) with the arguments of [`spawn_ferry`], without
/// waiting for it.
pub fn spawn_ferry_sub(
    sub: &str,
    files: &[&Path],
    state_dir: &Path,
    extra: &[&str],
) -> tokio::process::Child {
    ferry_subcommand(sub, files, state_dir, extra)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", ferry_bin().display()))
}

/// Start `ferry run` without waiting for it.
pub fn spawn_ferry(files: &[&Path], state_dir: &Path, extra: &[&str]) -> tokio::process::Child {
    ferry_command(files, state_dir, extra)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", ferry_bin().display()))
}

/// Run `ferry run` to its end (killed and failed after `timeout`).
pub async fn run_ferry(
    files: &[&Path],
    state_dir: &Path,
    extra: &[&str],
    timeout: Duration,
) -> Run {
    let started = Instant::now();
    let child = spawn_ferry(files, state_dir, extra);
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.expect("wait for ferry"),
        Err(_) => panic!("ferry run did not finish within {timeout:?} (files: {files:?})"),
    };
    Run::from_output(out, started.elapsed())
}

/// What one `ferry run` did.
#[derive(Clone, Debug)]
pub struct Run {
    /// The exit code; None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The final status (the last JSON object on stdout), when there was one.
    pub status: Option<Status>,
    pub elapsed: Duration,
}

impl Run {
    pub fn from_output(out: std::process::Output, elapsed: Duration) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let status = last_json_object(&stdout).map(Status);
        Run {
            code: out.status.code(),
            stdout,
            stderr,
            status,
            elapsed,
        }
    }

    /// Everything ferry printed, for assertion messages (stderr shortened).
    pub fn describe(&self) -> String {
        format!(
            "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            last_chars(&self.stdout, 6000),
            last_chars(&self.stderr, 6000)
        )
    }

    /// Assert the exit code, showing the output otherwise.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "ferry run exited with {:?}, expected {code}\n{}",
            self.code,
            self.describe()
        );
        self
    }

    /// The final status; panics (with the output) when stdout had none.
    #[track_caller]
    pub fn status(&self) -> &Status {
        self.status.as_ref().unwrap_or_else(|| {
            panic!(
                "ferry run printed no JSON status on stdout\n{}",
                self.describe()
            )
        })
    }

    /// Assert the phase of the final status.
    #[track_caller]
    pub fn assert_phase(&self, phase: &str) -> &Run {
        let got = self.status().phase();
        assert_eq!(
            got,
            phase,
            "final phase is {got:?}, expected {phase:?}\n{}",
            self.describe()
        );
        self
    }

    /// A progress counter of the final status (absent = 0).
    #[track_caller]
    pub fn counter(&self, name: &str) -> u64 {
        self.status().counter(name)
    }

    /// Assert a progress counter.
    #[track_caller]
    pub fn assert_counter(&self, name: &str, expected: u64) -> &Run {
        let got = self.counter(name);
        assert_eq!(
            got,
            expected,
            "progress.{name} is {got}, expected {expected}\n{}",
            self.describe()
        );
        self
    }
}

/// The last `max` bytes of `s` (from a character boundary), marked with `...` when cut.
fn last_chars(s: &str, max: usize) -> String {
    if s.len() > max {
        format!("...{}", &s[floor_char(s, s.len() - max)..])
    } else {
        s.to_string()
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The last JSON object printed on stdout (single-line or pretty-printed).
pub fn last_json_object(stdout: &str) -> Option<Value> {
    let trimmed = stdout.trim();
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(trimmed) {
        return Some(v);
    }
    // Candidate starts: '{' at the beginning of a line, latest first.
    let mut starts: Vec<usize> = Vec::new();
    for (i, c) in trimmed.char_indices() {
        if c == '{' && (i == 0 || trimmed.as_bytes()[i - 1] == b'\n') {
            starts.push(i);
        }
    }
    for &i in starts.iter().rev() {
        let mut de = serde_json::Deserializer::from_str(&trimmed[i..]).into_iter::<Value>();
        if let Some(Ok(v @ Value::Object(_))) = de.next() {
            if trimmed[i + de.byte_offset()..].trim().is_empty() {
                return Some(v);
            }
        }
    }
    None
}

/// The final status object of a run.
#[derive(Clone, Debug)]
pub struct Status(pub Value);

impl Status {
    pub fn phase(&self) -> &str {
        self.0.get("phase").and_then(Value::as_str).unwrap_or("")
    }

    /// `progress.<name>` as an integer; absent or null counts as 0.
    pub fn counter(&self, name: &str) -> u64 {
        match self.0.get("progress").and_then(|p| p.get(name)) {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .unwrap_or_else(|| panic!("progress.{name} is not an unsigned integer: {v}")),
        }
    }

    pub fn listing_complete(&self) -> bool {
        self.0
            .get("progress")
            .and_then(|p| p.get("listingComplete"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// `failuresByClass.<class>` (absent = 0).
    pub fn failures_of(&self, class: &str) -> u64 {
        self.0
            .get("failuresByClass")
            .and_then(|f| f.get(class))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    pub fn failures_by_class(&self) -> BTreeMap<String, u64> {
        self.0
            .get("failuresByClass")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn first_errors(&self) -> Vec<Value> {
        self.0
            .get("firstErrors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    pub fn message(&self) -> String {
        self.0
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    pub fn dry_run(&self) -> bool {
        self.0
            .get("dryRun")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn report(&self) -> Option<String> {
        self.0
            .get("report")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn finds_the_last_json_object() {
        let out = "progress line\n{\"phase\":\"Running\"}\n{\n  \"phase\": \"Completed\",\n  \"progress\": {\"objectsCopied\": 3}\n}\n";
        let v = last_json_object(out).unwrap();
        assert_eq!(v["phase"], "Completed");
        assert_eq!(Status(v).counter("objectsCopied"), 3);
        assert_eq!(
            last_json_object("{\"phase\":\"Failed\"}").unwrap()["phase"],
            "Failed"
        );
        assert!(last_json_object("no json here").is_none());
    }

    #[test]
    fn job_yaml_has_the_job_and_one_secret_per_name() {
        let creds = Creds {
            access_key: "ak".into(),
            secret_key: "sk".into(),
        };
        let job = Job::new(
            "j",
            Side::s3_at("http://127.0.0.1:1", &creds, "src"),
            Side::s3_at("http://127.0.0.1:1", &creds, "dst"),
        )
        .with("overwrite", json!("Skip"));
        let yaml = job.to_yaml();
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
            .collect();
        assert_eq!(docs.len(), 2, "{yaml}");
        assert_eq!(docs[0]["kind"], "MigrationJob");
        assert_eq!(
            docs[0]["spec"]["source"]["s3"]["credentialsSecretRef"]["name"],
            "creds"
        );
        assert_eq!(docs[0]["spec"]["overwrite"], "Skip");
        assert_eq!(docs[1]["kind"], "Secret");
        assert_eq!(docs[1]["stringData"]["AWS_ACCESS_KEY_ID"], "ak");
    }
}
