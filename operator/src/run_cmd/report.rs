//! `ferry report`: prints what a job wrote in its report folder (the failures, the keys
//! written, a Check's differences, what a rollback kept) as a table, JSON Lines or CSV,
//! filtered by class and key prefix, so nobody needs an S3 client to see what went wrong. A job
//! run by `ferry run` is given by its files (`-f`), one the operator ran by its name
//! (`--namespace/--name`, read from the cluster). The lines are read from the report location
//! (`spec.report`, else the destination) with the job's own credentials.

use std::path::PathBuf;

use ferry_api::ValidatedSpec;
use ferry_core::plan::shard_folder;
use ferry_core::stores::JobCredentials;
use ferry_core::JobPlan;
use ferry_engine::report;
use ferry_engine::stores::Sink;
use ferry_engine::TransferError;
use serde_json::Value;

use super::{in_cluster, stored};

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// YAML files or directories with the MigrationJob and the Secrets it references (the
    /// same files `ferry run` was given).
    #[arg(short = 'f', long = "filename", required_unless_present = "name")]
    pub files: Vec<PathBuf>,
    /// Where `ferry run` kept the job's state (default: ./.ferry/<namespace>/<name>/).
    #[arg(long, conflicts_with = "name")]
    pub state_dir: Option<PathBuf>,
    /// A MigrationJob the operator ran, instead of files: its name. The job, its stored plan
    /// and the Secrets of its report location are read from the cluster of the kubeconfig
    /// (as kubectl finds it), with the user's own permissions.
    #[arg(long, conflicts_with = "files")]
    pub name: Option<String>,
    /// The namespace of `--name` (default: the kubeconfig's).
    #[arg(short = 'n', long, requires = "name")]
    pub namespace: Option<String>,
    /// Which lines.
    #[arg(long, value_enum, default_value_t = Show::Failures)]
    pub show: Show,
    /// Only lines of these classes (`AccessDenied`, ...; for `check`: the difference,
    /// `Missing`, `Size`, `Etag`, `Content`, `Extra`). Repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub class: Vec<String>,
    /// Only keys that start with this.
    #[arg(long)]
    pub prefix: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The lines `ferry report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Show {
    /// The objects that failed in the last attempt (what is still failed).
    Failures,
    /// The deletes that failed (delete propagation's delete stage, which only the first
    /// attempt has).
    DeleteFailures,
    /// Every key written (or deleted by delete propagation), of every attempt.
    Written,
    /// Check mode: every key that is not identical on both sides.
    Check,
    /// What a rollback (`ferry rollback`, `ferry.dev/rollback`) kept, and why.
    Rollback,
    /// A dry run's inventory (`spec.inventory`): every selected object with what a real run
    /// would do, the shards' segment files joined into one list in key order
    /// (`--format csv > inventory.csv` for a spreadsheet).
    Inventory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (long messages cut).
    Table,
    /// One JSON object per line, as the report files hold them.
    Jsonl,
    /// Comma-separated, a header line first (RFC 4180 quoting).
    Csv,
}

impl Show {
    /// The columns of the table and the CSV, as the report lines name their fields.
    fn columns(self) -> &'static [&'static str] {
        match self {
            Show::Failures | Show::DeleteFailures => &[
                "key",
                "size",
                "class",
                "code",
                "httpStatus",
                "attempts",
                "at",
                "message",
            ],
            Show::Written => &["key", "size", "checksum", "replaced", "deleted"],
            Show::Check => &[
                "key",
                "difference",
                "sourceSize",
                "destinationSize",
                "sourceEtag",
                "destinationEtag",
            ],
            Show::Rollback => &["key", "size", "class", "at", "message"],
            Show::Inventory => &[
                "key",
                "size",
                "etag",
                "modified",
                "storageClass",
                "action",
                "sha256",
            ],
        }
    }

    /// The field `--class` filters on.
    fn class_field(self) -> &'static str {
        match self {
            Show::Check => "difference",
            Show::Inventory => "action",
            _ => "class",
        }
    }
}

/// A job whose report is read: from files and a state directory, or from the cluster.
struct Reported {
    /// `namespace/name`.
    id: String,
    validated: ValidatedSpec,
    /// The report location's credentials, at least.
    credentials: JobCredentials,
    /// The plan of its last run (of any attempt or stage): its shards and report folders.
    plan: JobPlan,
}

impl From<stored::StoredJob> for Reported {
    fn from(j: stored::StoredJob) -> Self {
        Reported {
            id: j.id(),
            validated: j.validated,
            credentials: j.credentials,
            plan: j.plan,
        }
    }
}

impl From<in_cluster::ClusterJob> for Reported {
    fn from(j: in_cluster::ClusterJob) -> Self {
        Reported {
            id: format!("{}/{}", j.namespace, j.name),
            validated: j.validated,
            credentials: j.credentials,
            plan: j.plan,
        }
    }
}

/// The jobs `args` name: each, or why it cannot be read. None, the error printed, when the
/// files hold no job.
async fn jobs(args: &ReportArgs) -> Option<Vec<Result<Reported, String>>> {
    if let Some(name) = &args.name {
        let job = in_cluster::load(args.namespace.as_deref(), name).await;
        return Some(vec![job.map(Reported::from)]);
    }
    let loaded = stored::jobs_of(&args.files)?;
    Some(
        loaded
            .jobs
            .iter()
            .map(|job| {
                stored::load(job, &loaded, args.state_dir.as_deref(), "no report")
                    .map(Reported::from)
            })
            .collect(),
    )
}

/// Prints the report lines of every MigrationJob given; 0, or 1 on an error.
pub async fn report(args: ReportArgs) -> i32 {
    let Some(jobs) = jobs(&args).await else {
        return 1;
    };
    let mut code = 0;
    for job in jobs {
        let job = match job {
            Ok(j) => j,
            Err(e) => {
                eprintln!("error: {e}");
                code = 1;
                continue;
            }
        };
        let lines = match read(&job, args.show).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {}: reading the report: {e}", job.id);
                code = 1;
                continue;
            }
        };
        let lines = select(lines, args.show, &args.class, args.prefix.as_deref());
        eprintln!(
            "{}: {} line(s) under {}",
            job.id,
            lines.len(),
            job.plan
                .transfer
                .report_store()
                .location_of(&job.plan.job_report_prefix())
        );
        print!("{}", render(&lines, args.show, args.format));
    }
    code
}

/// The report folders to read for `show`: the last attempt's (failures, check), every
/// attempt's (written), or the rollback's; each shard's.
fn folders(plan: &JobPlan, show: Show) -> Vec<String> {
    let shards: Vec<u32> = plan.shards.iter().map(|s| s.index).collect();
    // The last rollback's folder: the stored plan's own when it is a rollback's (in a cluster,
    // the n-th rollback has `rollback-<n>/`).
    let rollback = if plan.stage == ferry_core::Stage::Rollback {
        plan.report_prefix.clone()
    } else {
        plan.rollback().report_prefix
    };
    shard_folders(&plan.attempt_report_prefixes(), &rollback, &shards, show)
}

/// [`folders`] from the attempts' report prefixes (first to last), the rollback's, and the
/// shard indexes (pure).
fn shard_folders(attempts: &[String], rollback: &str, shards: &[u32], show: Show) -> Vec<String> {
    let prefixes: Vec<&str> = match show {
        Show::Failures | Show::Check | Show::Inventory => {
            attempts.last().map(String::as_str).into_iter().collect()
        }
        Show::Written => attempts.iter().map(String::as_str).collect(),
        Show::DeleteFailures => attempts.first().map(String::as_str).into_iter().collect(),
        Show::Rollback => vec![rollback],
    };
    prefixes
        .iter()
        .flat_map(|p| shards.iter().map(move |i| shard_folder(p, *i)))
        .collect()
}

/// Reads the lines of `show` of every shard, as the report files hold them.
async fn read(job: &Reported, show: Show) -> Result<Vec<Value>, TransferError> {
    let root = report::open_root(&job.validated.transfer, &job.credentials).await?;
    let mut out = Vec::new();
    for folder in folders(&job.plan, show) {
        let dir = root.folder(&folder);
        let dir: &dyn Sink = dir.as_ref();
        let values = match show {
            Show::Failures => to_values(report::read_failures(dir).await?),
            Show::DeleteFailures => to_values(report::read_delete_failures(dir).await?),
            Show::Written => to_values(report::read_manifest(dir).await?),
            Show::Check => to_values(report::read_checks(dir).await?),
            Show::Rollback => to_values(report::read_rollback_kept(dir).await?),
            Show::Inventory => to_values(report::read_inventory(dir).await?),
        };
        out.extend(values);
    }
    Ok(out)
}

fn to_values<T: serde::Serialize>(lines: Vec<T>) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::to_value(l).expect("serializes"))
        .collect()
}

/// The lines of the classes asked for (any, when none is) whose key starts with `prefix`,
/// in key order.
fn select(lines: Vec<Value>, show: Show, classes: &[String], prefix: Option<&str>) -> Vec<Value> {
    let field = show.class_field();
    let mut out: Vec<Value> = lines
        .into_iter()
        .filter(|l| {
            classes.is_empty()
                || classes
                    .iter()
                    .any(|c| l[field].as_str().is_some_and(|v| v.eq_ignore_ascii_case(c)))
        })
        .filter(|l| prefix.is_none_or(|p| l["key"].as_str().is_some_and(|k| k.starts_with(p))))
        .collect();
    out.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    out
}

/// A field as a cell: text as it is, numbers and booleans as JSON, absent as empty.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The widest a table's message column gets, in characters.
const MESSAGE_WIDTH: usize = 80;

/// `lines` in `format` (pure).
fn render(lines: &[Value], show: Show, format: Format) -> String {
    let columns = show.columns();
    match format {
        Format::Jsonl => lines.iter().map(|l| format!("{l}\n")).collect(),
        Format::Csv => {
            let mut out = csv_row(columns.iter().map(|c| c.to_string()));
            for l in lines {
                out.push_str(&csv_row(columns.iter().map(|c| cell(&l[*c]))));
            }
            out
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = lines
                .iter()
                .map(|l| {
                    columns
                        .iter()
                        .map(|c| {
                            let s = cell(&l[*c]).replace(['\n', '\t'], " ");
                            if *c == "message" && s.chars().count() > MESSAGE_WIDTH {
                                let cut: String = s.chars().take(MESSAGE_WIDTH - 1).collect();
                                format!("{cut}…")
                            } else {
                                s
                            }
                        })
                        .collect()
                })
                .collect();
            let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
            let widths: Vec<usize> = (0..columns.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                format!("{}\n", padded.join("  ").trim_end())
            };
            let mut out = line(&header);
            for r in &rows {
                out.push_str(&line(r));
            }
            out
        }
    }
}

/// One CSV record: fields with a comma, quote or line break quoted, quotes doubled.
fn csv_row(fields: impl Iterator<Item = String>) -> String {
    let cells: Vec<String> = fields
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect();
    format!("{}\n", cells.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failures() -> Vec<Value> {
        vec![
            json!({"key": "b/2", "size": 5, "class": "AccessDenied", "code": "AccessDenied",
                   "httpStatus": 403, "attempts": 1, "at": "2026-12-03T10:00:00.000Z",
                   "message": "GetObject: AccessDenied: no"}),
            json!({"key": "a/1", "size": 3, "class": "Throttled", "code": "SlowDown",
                   "httpStatus": 503, "attempts": 6, "message": "PutObject: SlowDown, \"again\""}),
            json!({"key": "a/3", "size": 0, "class": "InvalidData", "attempts": 1,
                   "message": "not base64"}),
        ]
    }

    #[test]
    fn filters_by_class_and_prefix_in_key_order() {
        let keys = |v: Vec<Value>| -> Vec<String> {
            v.iter()
                .map(|l| l["key"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            keys(select(failures(), Show::Failures, &[], None)),
            ["a/1", "a/3", "b/2"]
        );
        let classes = ["accessdenied".to_string(), "Throttled".to_string()];
        assert_eq!(
            keys(select(failures(), Show::Failures, &classes, None)),
            ["a/1", "b/2"]
        );
        assert_eq!(
            keys(select(failures(), Show::Failures, &[], Some("a/"))),
            ["a/1", "a/3"]
        );
        let checks = vec![
            json!({"key": "x", "difference": "Missing"}),
            json!({"key": "y", "difference": "Size"}),
        ];
        assert_eq!(
            keys(select(checks, Show::Check, &["Size".into()], None)),
            ["y"]
        );
        let inventory = vec![
            json!({"key": "b", "action": "copy"}),
            json!({"key": "a", "action": "skip"}),
            json!({"key": "c", "action": "copy"}),
        ];
        assert_eq!(
            keys(select(inventory, Show::Inventory, &["copy".into()], None)),
            ["b", "c"],
            "an inventory is filtered by its action"
        );
    }

    #[test]
    fn a_table_has_aligned_columns_and_empty_cells_for_absent_fields() {
        let lines = select(failures(), Show::Failures, &[], None);
        let t = render(&lines, Show::Failures, Format::Table);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 4, "{t}");
        assert!(rows[0].starts_with("KEY  SIZE  CLASS"), "{t}");
        let col = rows[0].find("HTTPSTATUS").unwrap();
        assert_eq!(&rows[1][col..col + 3], "503", "{t}");
        assert_eq!(&rows[3][col..col + 3], "403", "{t}");
        assert!(rows[2].contains("InvalidData"), "{t}");
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_jsonl_keeps_each_line() {
        let lines = select(failures(), Show::Failures, &[], None);
        let csv = render(&lines, Show::Failures, Format::Csv);
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(
            rows[0],
            "key,size,class,code,httpStatus,attempts,at,message"
        );
        assert_eq!(
            rows[1],
            "a/1,3,Throttled,SlowDown,503,6,,\"PutObject: SlowDown, \"\"again\"\"\""
        );
        let jsonl = render(&lines, Show::Failures, Format::Jsonl);
        let back: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, lines);
    }

    #[test]
    fn failures_are_the_last_attempts_and_written_keys_every_attempts() {
        let attempts = ["r/".to_string(), "r/retry-1/".to_string()];
        let f = |show| shard_folders(&attempts, "r/rollback/", &[0, 1], show);
        assert_eq!(
            f(Show::Failures),
            ["r/retry-1/shard-0/", "r/retry-1/shard-1/"]
        );
        assert_eq!(
            f(Show::Written),
            [
                "r/shard-0/",
                "r/shard-1/",
                "r/retry-1/shard-0/",
                "r/retry-1/shard-1/"
            ]
        );
        assert_eq!(
            f(Show::Rollback),
            ["r/rollback/shard-0/", "r/rollback/shard-1/"]
        );
        assert_eq!(f(Show::Inventory), f(Show::Failures));
        assert_eq!(
            f(Show::DeleteFailures),
            ["r/shard-0/", "r/shard-1/"],
            "the delete stage is the first attempt's"
        );
    }
}
