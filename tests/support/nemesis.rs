//! The nemesis suite's checker: one oracle run after every scenario, whatever fault the
//! scenario injected (agent kills, operator restarts, source churn, destination faults).
//!
//! Inputs: the source's history (every version each key had during the run: the snapshot at
//! start plus what the scenario wrote or deleted, [`SourceHistory`]), the destination bucket
//! after the run, the job's manifests and failure reports (`.ferry/reports/<ns>/<name>/`), the
//! final status, the foreign objects and uploads seeded beside the job's ([`Foreign`]), and
//! optionally what a counting proxy saw of the writes. Output: [`Figures`], a handful of counts
//! a scenario prints as `FIGURE nemesis_<scenario>_<figure>=<value>` lines and asserts zero.
//!
//! What is checked, and what the data allows:
//! - **lost**: a key present at the start and never deleted must be at the destination or in
//!   the failure report.
//! - **corrupt**: every destination object under the prefix that maps to a source key holds
//!   the bytes of one complete version of it (MD5 digests of whole bodies: the tests' data is
//!   not adversarial, and the `md-5` crate is already a dependency of this library).
//! - **duplicated**: each key appears at most once over the manifests and failure reports
//!   together (every segment of every shard and retry folder of the job).
//! - **unaccounted**: the reports do not list skipped or vanished keys, only counters do
//!   (`docs/contract.md` §2.1, §3.3). So a key neither in the manifest nor in the failures must
//!   be up to date at the destination (skipped) or deleted at the source during the run
//!   (vanished); there may be no more of the first kind than `objectsSkipped`, and
//!   `objectsVanished` no more than the keys deleted and unreported. Keys deleted during the run
//!   may also never have been listed, so they are in no set at all.
//! - **counter mismatches**: `objectsCopied` = manifest lines, `objectsFailed` +
//!   `objectsArchived` = failure lines, `objectsTotal` = copied + failed + skipped + vanished.
//! - **stuck**: the job did not reach a terminal phase within the scenario's bound after its
//!   agents exited (the scenario measures it and passes it in).
//! - **outside**: objects outside the destination prefix (reports and foreign seeds aside),
//!   and objects under it that are no source key (strays).
//! - **foreign touched**: a seeded foreign object changed or gone, a seeded foreign multipart
//!   upload gone or its part changed.
//! - **rework** (when a proxy counted the writes): keys whose object was completed more than
//!   once (PutObject or CompleteMultipartUpload answered 2xx), and bytes sent beyond one copy
//!   of each object written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::data::{md5_hex, Tree};
use crate::proxy::RequestRecord;
use crate::reports::{self, Kind};
use crate::s3::{is_ferry_key, S3};

/// How long after its agents exited a job may take to show a terminal phase before it counts
/// as stuck (the operator reconciles on the Job's change; polls are 0.3–0.5 s apart).
pub const TERMINAL_BOUND: Duration = Duration::from_secs(45);

/// The rounds of the longer mode: `FERRY_NEMESIS_ROUNDS` (default 1, the bounded CI form).
pub fn rounds() -> u64 {
    std::env::var("FERRY_NEMESIS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// The seed of a scenario: `FERRY_NEMESIS_SEED` when set (to replay a run), else random;
/// printed by the caller so a failure can be replayed.
pub fn seed() -> u64 {
    std::env::var("FERRY_NEMESIS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random)
}

/// A small seeded generator (SplitMix64), so a scenario's kill times and churn replay from
/// its printed seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A duration between `lo_ms` and `hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.below(hi_ms.saturating_sub(lo_ms) + 1))
    }
}

/// Every version each source key had during the run, keys relative to the source prefix.
#[derive(Clone, Debug, Default)]
pub struct SourceHistory {
    /// Keys at the start (the selected set, no filters in the nemesis scenarios).
    initial: BTreeSet<String>,
    /// Digests of every complete version each key had.
    versions: BTreeMap<String, BTreeSet<String>>,
    /// Keys deleted at least once during the run.
    deleted: BTreeSet<String>,
    /// Keys present when the run ended (as far as the scenario wrote them).
    present: BTreeSet<String>,
    /// Writes and deletes made during the run.
    pub mutations: u64,
}

impl SourceHistory {
    /// The source as it is at the start: `tree` (keys relative to the source prefix).
    pub fn of_tree(tree: &Tree) -> SourceHistory {
        let mut h = SourceHistory::default();
        for (k, v) in tree {
            h.initial.insert(k.clone());
            h.present.insert(k.clone());
            h.versions.entry(k.clone()).or_default().insert(md5_hex(v));
        }
        h
    }

    /// A write of `body` under `key` during the run.
    pub fn put(&mut self, key: &str, body: &[u8]) {
        self.versions
            .entry(key.to_string())
            .or_default()
            .insert(md5_hex(body));
        self.present.insert(key.to_string());
        self.mutations += 1;
    }

    /// A delete of `key` during the run.
    pub fn delete(&mut self, key: &str) {
        self.deleted.insert(key.to_string());
        self.present.remove(key);
        self.mutations += 1;
    }

    /// Keys that must be accounted for: present at the start and never deleted.
    fn must(&self) -> impl Iterator<Item = &String> {
        self.initial.iter().filter(|k| !self.deleted.contains(*k))
    }
}

/// Foreign objects and multipart uploads seeded in the destination bucket, under and beside
/// the job's prefix, before the run: none may be touched.
#[derive(Clone, Debug, Default)]
pub struct Foreign {
    objects: BTreeMap<String, Vec<u8>>,
    /// (key, upload id, part ETag, part size).
    uploads: Vec<(String, String, String, i64)>,
}

impl Foreign {
    /// Seeds, in `bucket`: an object and an open multipart upload (one part uploaded) under
    /// `dst_prefix` for keys the source does not hold (`zz-foreign-…`, which the source never
    /// writes), and the same beside the prefix (`<prefix>-sibling/…`) and at the root.
    pub async fn seed(s3: &S3, bucket: &str, dst_prefix: &str) -> Foreign {
        let stem = dst_prefix.trim_end_matches('/');
        let mut f = Foreign::default();
        for key in [
            format!("{dst_prefix}zz-foreign-object"),
            format!("{stem}-sibling/foreign-object"),
            "foreign-root-object".to_string(),
        ] {
            let body = crate::data::bytes(crate::data::seed_of(&key), 1500);
            s3.put(bucket, &key, body.clone()).await;
            f.objects.insert(key, body);
        }
        for key in [
            format!("{dst_prefix}zz-foreign-upload"),
            format!("{stem}-sibling/foreign-upload"),
        ] {
            let up = s3
                .client
                .create_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("create a foreign upload");
            let id = up.upload_id().expect("upload id").to_string();
            let body = crate::data::bytes(7, 4096);
            let part = s3
                .client
                .upload_part()
                .bucket(bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(1)
                .body(body.clone().into())
                .send()
                .await
                .expect("upload a foreign part");
            let etag = part.e_tag().unwrap_or_default().to_string();
            f.uploads.push((key, id, etag, body.len() as i64));
        }
        f
    }

    /// `tree`'s objects as they are in a bucket the job must not change (its source, or a
    /// bystander bucket): [`Self::touched`] then says which changed or are gone.
    pub fn of_tree(tree: &Tree) -> Foreign {
        Foreign {
            objects: tree.clone(),
            uploads: Vec::new(),
        }
    }

    fn is_foreign(&self, key: &str) -> bool {
        self.objects.contains_key(key)
    }

    /// What of the seeds was changed or removed. Completes the foreign uploads to read their
    /// part back (so call it once, after everything else is checked).
    pub async fn touched(&self, s3: &S3, bucket: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.objects {
            match s3.try_get(bucket, k).await {
                Some(b) if &b == v => {}
                Some(_) => out.push(format!("foreign object {k} changed")),
                None => out.push(format!("foreign object {k} gone")),
            }
        }
        // Each foreign upload still open (moto's ListParts answer does not parse in the SDK,
        // so the listing, then a completion of the one part and a read of it).
        let open = open_uploads(s3, bucket).await;
        for (k, id, etag, size) in &self.uploads {
            if !open
                .uploads()
                .iter()
                .any(|u| u.upload_id() == Some(id.as_str()) && u.key() == Some(k.as_str()))
            {
                out.push(format!("foreign upload {k} ({id}) gone"));
                continue;
            }
            let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(etag)
                        .build(),
                )
                .build();
            let done = s3
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(k)
                .upload_id(id)
                .multipart_upload(parts)
                .send()
                .await;
            match done {
                Ok(_) => match s3.try_get(bucket, k).await {
                    Some(b) if b.len() as i64 == *size && b == crate::data::bytes(7, 4096) => {}
                    other => out.push(format!(
                        "foreign upload {k} ({id}): its part changed ({:?} bytes)",
                        other.map(|b| b.len())
                    )),
                },
                Err(e) => out.push(format!(
                    "foreign upload {k} ({id}) cannot be completed: {e:?}"
                )),
            }
        }
        out
    }

    fn upload_ids(&self) -> BTreeSet<String> {
        self.uploads
            .iter()
            .map(|(_, id, _, _)| id.clone())
            .collect()
    }
}

/// The multipart uploads open in `bucket` (the first page: the scenarios leave few).
pub async fn open_uploads(
    s3: &S3,
    bucket: &str,
) -> aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput {
    s3.client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads")
}

/// What one scenario gives the checker.
pub struct Check<'a> {
    pub s3: &'a S3,
    /// The destination bucket.
    pub bucket: &'a str,
    pub src_prefix: &'a str,
    pub dst_prefix: &'a str,
    /// The job's namespace (`default` for `ferry run`) and name: its reports are found under
    /// `.ferry/reports/<namespace>/<name>/`.
    pub namespace: &'a str,
    pub name: &'a str,
    pub source: &'a SourceHistory,
    /// The final status: `phase` and `progress.<counter>` (a MigrationJob's `.status` as
    /// JSON, or `ferry run --output json`).
    pub status: &'a Value,
    /// How long after its agents exited the job showed a terminal phase; None: it never did
    /// within the scenario's wait (stuck).
    pub terminal_after: Option<Duration>,
    pub foreign: Option<&'a Foreign>,
    /// What a counting proxy in front of the destination saw (for rework), if there was one.
    pub writes: Option<&'a [RequestRecord]>,
    /// Faults injected (kills, restarts), for rework per kill.
    pub kills: u64,
}

/// What the checker found. Every count but the rework, `kills`, `mutations`, `leftover_uploads`
/// and the outcome counters must be 0 for a correct run.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub objects: u64,
    pub kills: u64,
    pub mutations: u64,
    pub lost: u64,
    pub corrupt: u64,
    pub duplicated: u64,
    pub unaccounted: u64,
    pub counter_mismatches: u64,
    pub stuck: u64,
    pub outside: u64,
    pub foreign_touched: u64,
    /// Keys whose object was written (completed) more than once.
    pub rework_objects: Option<u64>,
    /// Bytes sent beyond one copy of each object written.
    pub rework_bytes: Option<u64>,
    /// Multipart uploads of the job's own left open under the prefix (allowed after a kill:
    /// an upload created and not yet checkpointed is not found again, contract §3.4).
    pub leftover_uploads: u64,
    /// Keys a Failed or Cancelled job did not reach (not a loss: the job says it failed).
    pub unfinished: u64,
    pub copied: u64,
    pub failed: u64,
    pub skipped: u64,
    pub vanished: u64,
    /// Seconds from the agents' exit to the terminal phase.
    pub terminal_after_secs: Option<f64>,
    /// One line per problem found.
    pub problems: Vec<String>,
}

/// Adds a problem line (the first 40 are kept).
fn note(problems: &mut Vec<String>, s: String) {
    if problems.len() < 40 {
        problems.push(s);
    }
}

fn counter(status: &Value, name: &str) -> u64 {
    status
        .get("progress")
        .and_then(|p| p.get(name))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

impl Check<'_> {
    /// Runs every check; never panics on what it finds (see [`Figures::assert_clean`]).
    pub async fn run(&self) -> Figures {
        let mut f = Figures {
            kills: self.kills,
            mutations: self.source.mutations,
            objects: self.source.versions.len() as u64,
            copied: counter(self.status, "objectsCopied"),
            failed: counter(self.status, "objectsFailed"),
            skipped: counter(self.status, "objectsSkipped"),
            vanished: counter(self.status, "objectsVanished"),
            terminal_after_secs: self.terminal_after.map(|d| d.as_secs_f64()),
            ..Default::default()
        };

        // The reports: manifest lines (destination keys) and failure lines (source keys).
        let manifest: Vec<Value> = reports::s3_report_lines(
            self.s3,
            self.bucket,
            self.namespace,
            self.name,
            Kind::Manifest,
        )
        .await
        .into_iter()
        .filter(|l| l.get("deleted").and_then(Value::as_bool) != Some(true))
        .collect();
        let failures = reports::s3_report_lines(
            self.s3,
            self.bucket,
            self.namespace,
            self.name,
            Kind::Failures,
        )
        .await;
        let mut listed: BTreeMap<String, u64> = BTreeMap::new();
        let mut in_manifest = BTreeSet::new();
        let mut in_failures = BTreeSet::new();
        for k in reports::keys(&manifest) {
            match k.strip_prefix(self.dst_prefix) {
                Some(rel) => {
                    *listed.entry(rel.to_string()).or_default() += 1;
                    in_manifest.insert(rel.to_string());
                }
                None => note(
                    &mut f.problems,
                    format!("manifest key {k} outside the prefix"),
                ),
            }
        }
        for k in reports::keys(&failures) {
            match k.strip_prefix(self.src_prefix) {
                Some(rel) => {
                    *listed.entry(rel.to_string()).or_default() += 1;
                    in_failures.insert(rel.to_string());
                }
                None => note(
                    &mut f.problems,
                    format!("failure key {k} outside the source prefix"),
                ),
            }
        }
        for (k, n) in &listed {
            if *n > 1 {
                f.duplicated += 1;
                note(
                    &mut f.problems,
                    format!("{k} is listed {n} times in the reports"),
                );
            }
            if !self.source.versions.contains_key(k) {
                f.outside += 1;
                note(
                    &mut f.problems,
                    format!("the reports list {k}, which the source never had"),
                );
            }
        }

        // The destination: every object under the prefix is one complete source version.
        let foreign = self.foreign.cloned().unwrap_or_default();
        let mut at_destination = BTreeSet::new();
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for o in self.s3.list_all(self.bucket, "").await {
            if is_ferry_key(&o.key) || foreign.is_foreign(&o.key) {
                continue;
            }
            let Some(rel) = o.key.strip_prefix(self.dst_prefix) else {
                f.outside += 1;
                note(
                    &mut f.problems,
                    format!("{} written outside the prefix", o.key),
                );
                continue;
            };
            let Some(versions) = self.source.versions.get(rel) else {
                f.outside += 1;
                note(&mut f.problems, format!("{} is no source key", o.key));
                continue;
            };
            let Some(body) = self.s3.try_get(self.bucket, &o.key).await else {
                continue; // listed, then gone: counted below if it is a key that must be there
            };
            if !versions.contains(&md5_hex(&body)) {
                f.corrupt += 1;
                note(
                    &mut f.problems,
                    format!(
                        "{} ({} bytes) equals no version of the source key",
                        o.key,
                        body.len()
                    ),
                );
            }
            sizes.insert(rel.to_string(), body.len() as u64);
            at_destination.insert(rel.to_string());
        }

        // Lost, and the keys no report lists (skipped or vanished: only counted). A job that
        // ended Failed or Cancelled promises no more than what it reported: the keys it did
        // not reach are `unfinished`, and its counters are those of its last checkpoints.
        let phase = self
            .status
            .get("phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let promised = matches!(phase, "Completed" | "PartiallyCompleted");
        let mut unreported_present = 0u64;
        for k in self.source.must() {
            let reported = in_manifest.contains(k) || in_failures.contains(k);
            if !promised {
                if !reported {
                    f.unfinished += 1;
                }
                if in_manifest.contains(k) && !at_destination.contains(k) {
                    f.lost += 1;
                    note(
                        &mut f.problems,
                        format!("{k} in the manifest but not at the destination"),
                    );
                }
                continue;
            }
            if !at_destination.contains(k) && !in_failures.contains(k) {
                f.lost += 1;
                let why = if in_manifest.contains(k) {
                    "in the manifest but not at the destination"
                } else {
                    "neither at the destination nor in the failure report"
                };
                note(&mut f.problems, format!("{k} lost: {why}"));
            } else if !reported {
                unreported_present += 1;
            }
        }
        for k in &in_manifest {
            if !at_destination.contains(k) && !self.source.deleted.contains(k) {
                // A must-key: counted as lost above. (A deleted key's copy may be gone only
                // if something deleted it, which nothing does: say so too.)
                continue;
            }
            if !at_destination.contains(k) {
                f.lost += 1;
                note(
                    &mut f.problems,
                    format!("{k} in the manifest but not at the destination"),
                );
            }
        }
        let unreported_deleted = self
            .source
            .deleted
            .iter()
            .filter(|k| !in_manifest.contains(*k) && !in_failures.contains(*k))
            .count() as u64;
        if promised && unreported_present > f.skipped {
            f.unaccounted += unreported_present - f.skipped;
            note(&mut f.problems,
                format!(
                    "{unreported_present} keys at the destination are in no report, but objectsSkipped is {}",
                    f.skipped
                ),
            );
        }
        if promised && f.vanished > unreported_deleted {
            f.unaccounted += f.vanished - unreported_deleted;
            note(&mut f.problems,
                format!(
                    "objectsVanished is {}, but only {unreported_deleted} deleted keys are in no report",
                    f.vanished
                ),
            );
        }

        // Counters against the reports.
        let total = counter(self.status, "objectsTotal");
        let archived = counter(self.status, "objectsArchived");
        for (what, have, want) in [
            (
                "objectsCopied vs manifest lines",
                f.copied,
                manifest.len() as u64,
            ),
            (
                "objectsFailed + objectsArchived vs failure lines",
                f.failed + archived,
                failures.len() as u64,
            ),
            (
                "objectsTotal vs copied + failed + skipped + vanished",
                total,
                f.copied + f.failed + f.skipped + f.vanished,
            ),
        ] {
            if promised && have != want {
                f.counter_mismatches += 1;
                note(&mut f.problems, format!("{what}: {have} != {want}"));
            }
        }

        // Terminal within the bound after the agents exited.
        if let Some(p) = stuck(phase, self.terminal_after) {
            f.stuck = 1;
            note(&mut f.problems, p);
        }

        // Foreign objects and uploads, and the job's own uploads left open.
        if let Some(fr) = self.foreign {
            for t in fr.touched(self.s3, self.bucket).await {
                f.foreign_touched += 1;
                note(&mut f.problems, t);
            }
        }
        let ours = foreign.upload_ids();
        f.leftover_uploads = open_uploads(self.s3, self.bucket)
            .await
            .uploads()
            .iter()
            .filter(|u| !ours.contains(u.upload_id().unwrap_or_default()))
            .count() as u64;

        // Rework: whole-object writes per key, and bytes beyond one copy of each.
        if let Some(writes) = self.writes {
            let mut completions: BTreeMap<String, u64> = BTreeMap::new();
            let mut sent = 0u64;
            for r in writes {
                let (_, key) = r.bucket_and_key();
                let ok = r.status.is_some_and(|s| (200..300).contains(&s));
                if !ok || key.is_empty() || is_ferry_key(&key) || foreign.is_foreign(&key) {
                    continue;
                }
                let q = r.query();
                if r.method == "PUT" && r.is_data_put() {
                    sent += r.body_len as u64;
                    if !q.contains("uploadId") {
                        *completions.entry(key).or_default() += 1;
                    }
                } else if r.method == "POST" && q.contains("uploadId") {
                    *completions.entry(key).or_default() += 1;
                }
            }
            let once: u64 = sizes.values().sum();
            f.rework_objects = Some(completions.values().filter(|n| **n > 1).count() as u64);
            f.rework_bytes = Some(sent.saturating_sub(once));
        }
        f
    }
}

/// Why a job in `phase`, seen terminal `terminal_after` its agents exited (None: never), counts
/// as stuck; None when it does not (terminal within [`TERMINAL_BOUND`]).
pub fn stuck(phase: &str, terminal_after: Option<Duration>) -> Option<String> {
    let terminal = matches!(
        phase,
        "Completed" | "PartiallyCompleted" | "Failed" | "Cancelled"
    );
    match terminal_after {
        Some(d) if terminal && d <= TERMINAL_BOUND => None,
        _ => Some(format!(
            "phase {phase:?}, terminal {terminal_after:?} after the agents exited (bound {TERMINAL_BOUND:?})"
        )),
    }
}

/// Totals over the scenarios this test process ran (tests of a module run in parallel: each
/// scenario adds its figures and prints the totals so far; the last line printed is the run's).
#[derive(Default)]
struct Totals {
    scenarios: u64,
    kills: u64,
    mutations: u64,
    lost: u64,
    corrupt: u64,
    duplicated: u64,
    unaccounted: u64,
    counter_mismatches: u64,
    stuck: u64,
    outside: u64,
    foreign_touched: u64,
    rework_objects: u64,
    rework_bytes: u64,
    /// Kills in scenarios where rework was measured.
    measured_kills: u64,
}

static TOTALS: Mutex<Option<Totals>> = Mutex::new(None);

impl Figures {
    /// Prints `FIGURE nemesis_<scenario>_<figure>=<value>` lines, adds them to the process's
    /// totals and prints those (`FIGURE nemesis_total_…`).
    pub fn print(&self, scenario: &str) {
        let mut lines = vec![
            ("objects", self.objects.to_string()),
            ("kills", self.kills.to_string()),
            ("source_mutations", self.mutations.to_string()),
            ("lost", self.lost.to_string()),
            ("corrupt", self.corrupt.to_string()),
            ("duplicated", self.duplicated.to_string()),
            ("unaccounted", self.unaccounted.to_string()),
            ("counter_mismatches", self.counter_mismatches.to_string()),
            ("stuck", self.stuck.to_string()),
            ("outside_prefix", self.outside.to_string()),
            ("foreign_touched", self.foreign_touched.to_string()),
            ("leftover_uploads", self.leftover_uploads.to_string()),
            ("unfinished", self.unfinished.to_string()),
            ("copied", self.copied.to_string()),
            ("failed", self.failed.to_string()),
            ("skipped", self.skipped.to_string()),
            ("vanished", self.vanished.to_string()),
        ];
        if let Some(s) = self.terminal_after_secs {
            lines.push(("terminal_after_agents_s", format!("{s:.1}")));
        }
        if let (Some(o), Some(b)) = (self.rework_objects, self.rework_bytes) {
            lines.push(("rework_objects", o.to_string()));
            lines.push(("rework_bytes", b.to_string()));
            if self.kills > 0 {
                lines.push((
                    "rework_objects_per_kill",
                    format!("{:.1}", o as f64 / self.kills as f64),
                ));
                lines.push(("rework_bytes_per_kill", (b / self.kills).to_string()));
            }
        }
        for (k, v) in lines {
            eprintln!("FIGURE nemesis_{scenario}_{k}={v}");
        }
        let mut guard = TOTALS.lock().unwrap();
        let t = guard.get_or_insert_with(Totals::default);
        t.scenarios += 1;
        t.kills += self.kills;
        t.mutations += self.mutations;
        t.lost += self.lost;
        t.corrupt += self.corrupt;
        t.duplicated += self.duplicated;
        t.unaccounted += self.unaccounted;
        t.counter_mismatches += self.counter_mismatches;
        t.stuck += self.stuck;
        t.outside += self.outside;
        t.foreign_touched += self.foreign_touched;
        if let (Some(o), Some(b)) = (self.rework_objects, self.rework_bytes) {
            t.rework_objects += o;
            t.rework_bytes += b;
            t.measured_kills += self.kills;
        }
        let per_kill = |n: u64| {
            if t.measured_kills == 0 {
                "n/a".to_string()
            } else {
                format!("{:.1}", n as f64 / t.measured_kills as f64)
            }
        };
        eprintln!(
            "FIGURE nemesis_total scenarios={} kills={} source_mutations={} lost={} corrupt={} duplicated={} \
             unaccounted={} counter_mismatches={} stuck={} outside_prefix={} foreign_touched={} \
             rework_objects_per_kill={} rework_bytes_per_kill={}",
            t.scenarios,
            t.kills,
            t.mutations,
            t.lost,
            t.corrupt,
            t.duplicated,
            t.unaccounted,
            t.counter_mismatches,
            t.stuck,
            t.outside,
            t.foreign_touched,
            per_kill(t.rework_objects),
            per_kill(t.rework_bytes),
        );
    }

    /// Whether every must-be-zero figure is zero.
    pub fn is_clean(&self) -> bool {
        self.lost
            + self.corrupt
            + self.duplicated
            + self.unaccounted
            + self.counter_mismatches
            + self.stuck
            + self.outside
            + self.foreign_touched
            == 0
    }

    /// Panics with every problem found unless [`Self::is_clean`]; `context` says what ran
    /// (the seed, the kills) so it can be replayed.
    pub fn assert_clean(&self, scenario: &str, context: &str) {
        assert!(
            self.is_clean(),
            "nemesis {scenario}: the checker found problems ({context}):\n  {}\n{self:?}",
            self.problems.join("\n  ")
        );
    }
}
