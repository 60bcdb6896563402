//! `ferry report` (issue 16) on a real run: a URL list whose server answers 404 and 403 for
//! two files fails them; `ferry report` prints those failures from the bucket's report folder
//! (with the HTTP status and the time beside the class), filtered by class and key prefix,
//! as a table, JSON Lines and CSV, and the keys written.

use std::process::Command;

use ferry_tests::{bytes, ferry_bin, Run};
use serde_json::{json, Value};

use super::server::{Fault, File};
use super::Setup;

/// `ferry report -f JOB --state-dir STATE ARGS...` to its end.
fn report(s: &Setup, args: &[&str]) -> Run {
    let started = std::time::Instant::now();
    let out = Command::new(ferry_bin())
        .arg("report")
        .arg("-f")
        .arg(s.wd.path().join(format!("{}.yaml", s.name)))
        .arg("--state-dir")
        .arg(s.wd.state_dir())
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("ferry report runs");
    Run::from_output(out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_report_prints_failures_and_written_keys_with_filters() {
    let s = Setup::new("url-report").await;
    s.http.put("/img/ok.jpg", File::new(bytes(1, 3000)));
    s.http.put(
        "/img/gone.jpg",
        File::new(bytes(2, 10)).fault(Fault::Status(404)),
    );
    s.http.put(
        "/private/denied.jpg",
        File::new(bytes(3, 10)).fault(Fault::Status(403)),
    );
    let list: String = ["/img/ok.jpg", "/img/gone.jpg", "/private/denied.jpg"]
        .iter()
        .map(|p| format!("{}\n", s.http.url(p)))
        .collect();
    let job = s.job(&list, json!({}));
    s.run(&job).await.assert_exit(2);
    assert!(
        s.wd.path().join(format!("{}.yaml", s.name)).exists(),
        "the job file the run was given"
    );

    let jsonl = report(&s, &["--format", "jsonl"]);
    jsonl.assert_exit(0);
    let lines: Vec<Value> = jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let got: Vec<(String, String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().to_string(),
                l["class"].as_str().unwrap().to_string(),
                l["httpStatus"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "img/gone.jpg".to_string(),
                "SourceVanished".to_string(),
                404
            ),
            (
                "private/denied.jpg".to_string(),
                "AccessDenied".to_string(),
                403
            ),
        ],
        "{}",
        jsonl.describe()
    );
    for l in &lines {
        let at = l["at"].as_str().unwrap_or_else(|| panic!("no time: {l}"));
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    }

    let csv = report(&s, &["--class", "AccessDenied", "--format", "csv"]);
    csv.assert_exit(0);
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{}", csv.describe());
    assert_eq!(
        rows[0],
        "key,size,class,code,httpStatus,attempts,at,message"
    );
    assert!(rows[1].starts_with("private/denied.jpg,"), "{}", rows[1]);
    assert!(rows[1].contains(",403,"), "{}", rows[1]);

    let table = report(&s, &["--prefix", "img/"]);
    table.assert_exit(0);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{}", table.describe());
    assert!(rows[0].starts_with("KEY"), "{}", rows[0]);
    assert!(
        rows[1].starts_with("img/gone.jpg") && rows[1].contains("404"),
        "{}",
        rows[1]
    );

    let written = report(&s, &["--show", "written", "--format", "jsonl"]);
    written.assert_exit(0);
    let keys: Vec<String> = written
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(keys, ["img/ok.jpg"], "{}", written.describe());

    // No run of this spec under another state directory: said, exit 1.
    let none = Command::new(ferry_bin())
        .args(["report", "-f"])
        .arg(s.wd.path().join(format!("{}.yaml", s.name)))
        .arg("--state-dir")
        .arg(s.wd.path().join("elsewhere"))
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no report: no run of this spec"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}
