//! What `ferry run` shows: a progress bar on a terminal (a log line every few seconds
//! otherwise) and a summary at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ferry_api::aggregate::human_duration;
use ferry_api::estimate::Estimate;
use ferry_api::quantity::human_bytes;
use ferry_api::{MigrationJobStatus, Transport};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on a terminal, a log line every few seconds otherwise.
pub struct Ui {
    bar: Option<ProgressBar>,
    last_line: Instant,
    dry_run: bool,
}

impl Ui {
    pub fn new(dry_run: bool) -> Ui {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Ui {
            bar,
            last_line: Instant::now(),
            dry_run,
        }
    }

    pub fn update(&mut self, s: &MigrationJobStatus) {
        let p = &s.progress;
        let c = &p.counters;
        // Totals: the expected ones once counted, else what is listed so far.
        let total = p.expected.unwrap_or(c.totals());
        let eta = match (&p.expected, &p.eta) {
            (Some(_), Some(eta)) => eta.clone(),
            (Some(_), None) => "-".into(),
            (None, _) => "(listing)".into(),
        };
        let verb = if self.dry_run { "checked" } else { "done" };
        let msg = format!(
            "{eta} · {}/{} objects {verb}{}",
            c.objects_done(),
            total.objects,
            if c.objects_failed > 0 {
                format!(", {} failed", c.objects_failed)
            } else {
                String::new()
            }
        );
        if let Some(b) = &self.bar {
            b.set_length(total.bytes);
            b.set_position(c.bytes_done());
            b.set_message(msg);
        } else if self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!(
                "progress: {} of {} · {}/s · ETA {msg}",
                human_bytes(c.bytes_done()),
                human_bytes(total.bytes),
                human_bytes(p.bytes_per_second)
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// What `ferry run` shows while the planner collects a URL list (`collect`): a spinner with
/// the pages and URLs so far on a terminal, a line every few seconds otherwise, and a line
/// when it ends.
pub struct CollectUi {
    bar: Option<ProgressBar>,
    last_line: std::sync::Mutex<Instant>,
}

impl CollectUi {
    pub fn new() -> CollectUi {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} [{elapsed_precise}] collecting the URL list: {msg}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        CollectUi {
            bar,
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn update(&self, p: &ferry_core::collect::CollectProgress) {
        let msg = format!("{} pages, {} URLs", p.pages, p.urls);
        if p.done {
            if let Some(b) = &self.bar {
                b.finish_and_clear();
            }
            eprintln!(
                "collected the URL list: {msg}{}",
                p.stopped
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
        } else if let Some(b) = &self.bar {
            b.set_message(msg);
        } else {
            let mut last = self.last_line.lock().unwrap();
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!("collecting the URL list: {msg}");
            }
        }
    }
}

/// The summary of a job that ran (or had run to its end before).
pub fn summary(s: &MigrationJobStatus, started: Instant) {
    let c = &s.progress.counters;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let phase = s.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    eprintln!("{phase}: {}", s.message.clone().unwrap_or_default());
    eprintln!(
        "  objects: {} selected, {} copied, {} up to date, {} vanished, {} failed{}",
        c.objects_total,
        c.objects_copied,
        c.objects_skipped,
        c.objects_vanished,
        c.objects_failed,
        if s.dry_run {
            format!(", {} would be copied", c.objects_would_copy)
        } else {
            String::new()
        }
    );
    eprintln!(
        "  bytes:   {} copied of {} in {} ({}/s), verified: {}",
        human_bytes(c.bytes_copied),
        human_bytes(c.bytes_total),
        human_duration(secs as u64),
        human_bytes((c.bytes_copied as f64 / secs) as u64),
        s.verified.clone().unwrap_or_default()
    );
    match s.transport {
        Some(Transport::ServerSide) => {
            eprintln!("  copied inside the service (one service and account: server-side copy)")
        }
        Some(Transport::Streamed) => eprintln!("  streamed through Ferry (read, then written)"),
        None => {}
    }
    for (class, n) in &s.failures_by_class {
        eprintln!("  {}: {n}", class.as_str());
    }
    for e in &s.first_errors {
        eprintln!("  failed {:?}: {}", e.key, e.message);
    }
    if let Some(r) = &s.report {
        eprintln!("  report: {r}");
    }
    if let Some(e) = &s.estimate {
        eprint!("{}", estimate_table(e));
    }
    if let Some(c) = &s.cost {
        eprint!(
            "  what the run cost (docs/estimates.md):\n{}",
            cost_lines(c, "    ")
        );
    }
    if let Some(ch) = &s.check {
        eprint!("{}", check_table(ch, s.report.as_deref()));
    }
}

/// A check's counts as a table, for the summary, with where its differences are listed.
pub fn check_table(ch: &ferry_api::CheckStatus, report: Option<&str>) -> String {
    let mut out = String::from(
        "  check:
",
    );
    for (what, n) in [
        ("identical", ch.identical),
        ("missing at destination", ch.missing),
        ("different", ch.different),
        ("extra at destination", ch.extra),
        ("not compared (failed)", ch.failed),
    ] {
        out.push_str(&format!(
            "    {what:<24}{n:>12}
"
        ));
    }
    if ch.differences() > 0 {
        if let Some(r) = report {
            out.push_str(&format!(
                "  differences: {r}shard-*/check-*.jsonl
"
            ));
        }
    }
    out
}

/// A dry run's estimate as a table, for the summary.
pub fn estimate_table(e: &Estimate) -> String {
    let mut out = String::from("  estimate of a real run (docs/estimates.md):\n");
    let mut line = |s: String| {
        out.push_str("    ");
        out.push_str(&s);
        out.push('\n');
    };
    for (what, objects, bytes) in [
        ("copy", e.objects_to_copy, e.bytes_to_copy),
        ("skip", e.objects_to_skip, e.bytes_to_skip),
        ("delete", e.objects_to_delete, e.bytes_to_delete),
    ] {
        line(format!(
            "{what:<7}{objects:>12} objects {:>12}",
            human_bytes(bytes)
        ));
    }
    if e.objects_in_parts > 0 {
        line(format!(
            "in parts: {} objects, {} parts",
            e.objects_in_parts, e.parts
        ));
    }
    line(format!(
        "{:<13}{:>8}{:>8}{:>10}{:>10}{:>8}{:>8}{:>10}{:>8}{:>8}",
        "requests", "LIST", "HEAD", "GET", "PUT", "CREATE", "PART", "COMPLETE", "COPY", "DELETE"
    ));
    for (side, r) in [
        ("source", &e.source_requests),
        ("destination", &e.destination_requests),
    ] {
        line(format!(
            "{side:<13}{:>8}{:>8}{:>10}{:>10}{:>8}{:>8}{:>10}{:>8}{:>8}",
            r.list,
            r.head,
            r.get,
            r.put,
            r.create_multipart,
            r.upload_part,
            r.complete_multipart,
            r.copy_object,
            r.delete
        ));
    }
    let transport = match e.transport {
        Some(Transport::ServerSide) => " (server-side copy)",
        _ => "",
    };
    line(format!(
        "egress: {} from the source{transport}{}",
        human_bytes(e.egress_bytes),
        if e.destination_egress_bytes > 0 {
            format!(
                ", {} read back from the destination",
                human_bytes(e.destination_egress_bytes)
            )
        } else {
            String::new()
        }
    ));
    line(format!("duration: {} at {}", e.duration, e.assumption));
    if let Some(c) = &e.cost {
        out.push_str(&cost_lines(c, "    "));
    }
    for n in &e.notes {
        out.push_str(&format!("    note: {n}\n"));
    }
    out
}

/// A cost's lines, each after `indent`.
fn cost_lines(c: &ferry_api::pricing::Cost, indent: &str) -> String {
    let mut out = format!("{indent}cost ({}):\n", c.currency);
    let mut line = |s: String| out.push_str(&format!("{indent}  {s}\n"));
    for l in &c.lines {
        line(format!(
            "{:<31}{:<36}{:<22}{:>12}",
            l.item, l.quantity, l.table, l.usd
        ));
    }
    line(format!("{:<89}{:>12}", "total, one time", c.total));
    line(format!(
        "{:<89}{:>12}",
        "storage, per month", c.storage_per_month
    ));
    line(format!("prices: {}", c.tables.join(", ")));
    for n in &c.notes {
        line(format!("note: {n}"));
    }
    out
}
