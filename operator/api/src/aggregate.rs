//! Folds shard progress records into a job status (`docs/contract.md` §2). Pure: the operator and
//! `ferry run` call it with what they observed.

use std::collections::BTreeMap;

use ferry_core::plan::Transfer;

use crate::quantity::human_bytes;
use crate::status::{
    Counters, ErrorSample, MigrationJobStatus, Phase, Progress, ShardProgress, ShardState,
    ShardSummary, Totals, MAX_FIRST_ERRORS,
};
const MAX_KEY_IN_STATUS: usize = 256;

/// The phase the shards add up to, with a one-line message.
pub fn outcome(
    transfer: &Transfer,
    shards: &[ShardProgress],
    expected_shards: usize,
) -> (Phase, String) {
    let mut total = Counters::default();
    for s in shards {
        total.add(&s.counters);
    }
    // A shard paused because its credentials went stale has not failed: it goes on once
    // they are rotated (any other job-fatal error ends the job).
    if let Some(f) = shards
        .iter()
        .filter(|s| stale_credentials(s).is_none())
        .find_map(|s| s.fatal.as_ref())
    {
        return (
            Phase::Failed,
            format!(
                "stopped by a job-fatal error ({}): {}",
                f.class.as_str(),
                f.message
            ),
        );
    }
    if shards.iter().any(|s| s.state == ShardState::Cancelled) {
        return (Phase::Cancelled, "cancelled".into());
    }
    if let Some(f) = shards.iter().find_map(stale_credentials) {
        return (Phase::Paused, credentials_message(f));
    }
    let all_done =
        shards.len() == expected_shards && shards.iter().all(|s| s.state == ShardState::Completed);
    if !all_done {
        if shards.iter().any(|s| s.state == ShardState::Paused) {
            return (
                Phase::Paused,
                "paused; a new run resumes from the checkpoints".into(),
            );
        }
        return (Phase::Running, String::new());
    }
    if transfer.dry_run {
        return (
            Phase::Completed,
            format!(
                "dry run: {} objects ({}) would be copied, {} are up to date",
                total.objects_would_copy,
                human_bytes(total.bytes_would_copy),
                total.objects_skipped
            ),
        );
    }
    if transfer.mode == ferry_core::Mode::Check {
        return crate::check::outcome(transfer, &total);
    }
    if total.objects_failed == 0 {
        return (
            Phase::Completed,
            format!(
                "{} objects copied, {} up to date, {} vanished",
                total.objects_copied, total.objects_skipped, total.objects_vanished
            ),
        );
    }
    let budget = transfer.max_failures;
    let msg = format!(
        "{} of {} objects failed; see the failure report",
        total.objects_failed, total.objects_total
    );
    match budget {
        Some(b) if b.exceeded(total.objects_failed, total.objects_total) => {
            (Phase::Failed, format!("{msg} (more than maxFailures {b})"))
        }
        _ => (Phase::PartiallyCompleted, msg),
    }
}

/// The error of a shard paused because its credentials went stale (expired, rotated away).
pub fn stale_credentials(s: &ShardProgress) -> Option<&ErrorSample> {
    (s.state == ShardState::Paused)
        .then_some(s.fatal.as_ref())
        .flatten()
        .filter(|f| f.credentials_went_stale())
}

/// What a shard paused on stale credentials says (the reason of a `CredentialsExpired`
/// condition): the server's own code and message, and what to do.
pub fn credentials_message(f: &ErrorSample) -> String {
    format!(
        "the credentials no longer work ({}: {}): rotate them in the Secret; the shard goes on \
         from its checkpoint with the Secret's values when it runs again",
        f.code.as_deref().unwrap_or(f.class.as_str()),
        f.message
    )
}

/// The job status the shards add up to. `elapsed_secs` is the time since the job started
/// (for the ETA when no shard reports a rate).
pub fn aggregate(
    transfer: &Transfer,
    shards: &[ShardProgress],
    expected_shards: usize,
) -> MigrationJobStatus {
    let mut counters = Counters::default();
    let mut by_class = BTreeMap::new();
    let mut first_errors: Vec<ErrorSample> = Vec::new();
    let mut rate = 0;
    for s in shards {
        counters.add(&s.counters);
        for (c, n) in &s.failures_by_class {
            *by_class.entry(*c).or_insert(0) += n;
        }
        for e in s.first_errors.iter().chain(s.fatal.iter()) {
            if first_errors.len() < MAX_FIRST_ERRORS {
                let mut e = e.clone();
                truncate_key(&mut e.key);
                first_errors.push(e);
            }
        }
        if s.state == ShardState::Running {
            rate += s.bytes_per_second;
        }
    }
    let all_reported = shards.len() == expected_shards;
    let listing_complete = all_reported && shards.iter().all(|s| s.listing_complete);
    let expected = if all_reported {
        shards.iter().map(known_totals).sum::<Option<Totals>>()
    } else {
        None
    };
    let (phase, message) = outcome(transfer, shards, expected_shards);
    let check = (transfer.mode == ferry_core::Mode::Check)
        .then(|| crate::check::CheckStatus::of(&counters));
    let progress = progress(counters, rate, listing_complete, expected, phase);
    MigrationJobStatus {
        phase: Some(phase),
        progress,
        failures_by_class: by_class,
        first_errors,
        shards: shards
            .iter()
            .map(|s| ShardSummary {
                index: s.shard,
                state: s.state,
                objects_done: s.counters.objects_done(),
                objects_failed: s.counters.objects_failed,
            })
            .collect(),
        verified: Some(transfer.verify.reported().to_string()),
        transport: shards.iter().find_map(|s| s.transport),
        dry_run: transfer.dry_run,
        check,
        message: (!message.is_empty()).then_some(message),
        ..Default::default()
    }
}

/// What a shard will hold in all, if known: its listing's totals once the listing is complete,
/// before that its count-only listing's (never less than what it has already listed).
fn known_totals(s: &ShardProgress) -> Option<Totals> {
    let listed = s.counters.totals();
    if s.listing_complete {
        return Some(listed);
    }
    s.expected.map(|e| Totals {
        objects: e.objects.max(listed.objects),
        bytes: e.bytes.max(listed.bytes),
    })
}

fn progress(
    counters: Counters,
    rate: u64,
    listing_complete: bool,
    expected: Option<Totals>,
    phase: Phase,
) -> Progress {
    let done = counters.bytes_done();
    let (eta_seconds, percent) = if let Some(total) = expected {
        let left = total.bytes.saturating_sub(done);
        // Nothing is left to wait for once the job has ended.
        let eta = if phase.is_terminal() {
            None
        } else if rate > 0 {
            Some(left.div_ceil(rate))
        } else {
            None
        };
        // With no bytes to move (empty objects only), count objects.
        let pct = match done.saturating_mul(100).checked_div(total.bytes) {
            Some(p) => p.min(100),
            None if counters.objects_done() >= total.objects => 100,
            None => 0,
        };
        (eta, Some(format!("{pct}%")))
    } else {
        (None, None)
    };
    Progress {
        summary: format!(
            "{}/{}",
            counters.objects_done(),
            expected.map_or(counters.objects_total, |t| t.objects)
        ),
        bytes_human: human_bytes(done),
        rate: format!("{}/s", human_bytes(rate)),
        eta: eta_seconds.map(human_duration),
        eta_seconds,
        percent,
        bytes_per_second: rate,
        listing_complete,
        expected,
        counters,
    }
}

fn truncate_key(key: &mut String) {
    if key.len() > MAX_KEY_IN_STATUS {
        let mut cut = MAX_KEY_IN_STATUS;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
        key.push('…');
    }
}

/// `3h04m`, `5m20s`, `42s`.
pub fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::FailureClass;

    fn spec(extra: &str) -> Transfer {
        let spec: crate::MigrationJobSpec = serde_yaml::from_str(&format!(
            "source: {{s3: {{bucket: abc}}}}\ndestination: {{filesystem: {{path: /b}}}}\n{extra}"
        ))
        .unwrap();
        crate::validate(&spec).unwrap().transfer
    }

    fn shard(i: u32, state: ShardState, copied: u64, failed: u64) -> ShardProgress {
        ShardProgress {
            shard: i,
            state,
            listing_complete: state == ShardState::Completed,
            counters: Counters {
                objects_total: copied + failed,
                objects_copied: copied,
                objects_failed: failed,
                bytes_total: (copied + failed) * 10,
                bytes_copied: copied * 10,
                bytes_failed: failed * 10,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn completed_only_when_every_expected_shard_completed() {
        let s = spec("");
        assert_eq!(
            outcome(&s, &[shard(0, ShardState::Completed, 5, 0)], 2).0,
            Phase::Running
        );
        let both = [
            shard(0, ShardState::Completed, 5, 0),
            shard(1, ShardState::Completed, 3, 0),
        ];
        assert_eq!(outcome(&s, &both, 2).0, Phase::Completed);
        let st = aggregate(&s, &both, 2);
        assert_eq!(st.progress.counters.objects_copied, 8);
        assert_eq!(st.progress.percent.as_deref(), Some("100%"));
        assert_eq!(st.progress.summary, "8/8");
    }

    #[test]
    fn failures_within_and_beyond_budget() {
        let done = [shard(0, ShardState::Completed, 999, 1)];
        assert_eq!(outcome(&spec(""), &done, 1).0, Phase::PartiallyCompleted);
        assert_eq!(
            outcome(&spec("maxFailures: '0.1%'"), &done, 1).0,
            Phase::PartiallyCompleted
        );
        assert_eq!(
            outcome(&spec("maxFailures: '0'"), &done, 1).0,
            Phase::Failed
        );
    }

    #[test]
    fn fatal_and_paused() {
        let mut f = shard(0, ShardState::Failed, 1, 0);
        f.fatal = Some(ErrorSample {
            key: String::new(),
            class: FailureClass::AccessDenied,
            code: Some("InvalidAccessKeyId".into()),
            message: "bad key".into(),
        });
        let (p, m) = outcome(&spec(""), &[f, shard(1, ShardState::Running, 1, 0)], 2);
        assert_eq!(p, Phase::Failed);
        assert!(m.contains("AccessDenied"), "{m}");
        assert_eq!(
            outcome(&spec(""), &[shard(0, ShardState::Paused, 1, 0)], 1).0,
            Phase::Paused
        );
        // Paused on credentials that expired: not failed, and said.
        let mut expired = shard(0, ShardState::Paused, 1, 0);
        expired.fatal = Some(ErrorSample {
            key: String::new(),
            class: FailureClass::AuthExpired,
            code: Some("ExpiredToken".into()),
            message: "GetObject: ExpiredToken: The provided token has expired.".into(),
        });
        let running = shard(1, ShardState::Running, 1, 0);
        let (p, m) = outcome(&spec(""), &[expired.clone(), running], 2);
        assert_eq!(p, Phase::Paused);
        assert!(m.contains("ExpiredToken") && m.contains("rotate"), "{m}");
        // Another shard's real job-fatal error still ends the job.
        let mut f = shard(1, ShardState::Failed, 1, 0);
        f.fatal = Some(ErrorSample {
            key: String::new(),
            class: FailureClass::NoSuchBucket,
            code: None,
            message: "gone".into(),
        });
        assert_eq!(outcome(&spec(""), &[expired, f], 2).0, Phase::Failed);
    }

    #[test]
    fn percent_and_eta_from_count_only_listings_before_the_listings_end() {
        let spec = spec("");
        // Shard 0 has listed 4 of its 10 objects (40 bytes of 100) and copied 1.
        let mut a = shard(0, ShardState::Running, 1, 0);
        a.counters.objects_total = 4;
        a.counters.bytes_total = 40;
        a.bytes_per_second = 10;
        let b = shard(1, ShardState::Completed, 5, 0); // 5 objects, 50 bytes, listed in full
        let st = aggregate(&spec, &[a.clone(), b.clone()], 2);
        assert_eq!(
            st.progress.expected, None,
            "shard 0's total is not known yet"
        );
        assert_eq!((st.progress.percent, st.progress.eta_seconds), (None, None));
        assert_eq!(st.progress.summary, "6/9");

        a.expected = Some(Totals {
            objects: 10,
            bytes: 100,
        });
        let st = aggregate(&spec, &[a.clone(), b.clone()], 2);
        assert!(!st.progress.listing_complete);
        assert_eq!(
            st.progress.expected,
            Some(Totals {
                objects: 15,
                bytes: 150
            })
        );
        // 60 of 150 bytes done; 90 left at 10 B/s.
        assert_eq!(st.progress.percent.as_deref(), Some("40%"));
        assert_eq!(st.progress.eta_seconds, Some(9));
        assert_eq!(st.progress.summary, "6/15");
        // Counters stay what was listed; only the derived figures use the count.
        assert_eq!(st.progress.counters.objects_total, 9);

        // The source grew after the count: what was listed wins over the count.
        a.counters.objects_total = 12;
        a.counters.bytes_total = 120;
        let st = aggregate(&spec, &[a.clone(), b.clone()], 2);
        assert_eq!(st.progress.expected.map(|t| t.objects), Some(17));
        // A shard that has reported nothing yet leaves the total unknown.
        assert_eq!(aggregate(&spec, &[a], 3).progress.expected, None);
    }

    #[test]
    fn eta_only_after_listing() {
        let mut s = shard(0, ShardState::Running, 1, 0);
        s.counters.bytes_total = 100;
        s.bytes_per_second = 10;
        let st = aggregate(&spec(""), std::slice::from_ref(&s), 1);
        assert_eq!(st.progress.eta_seconds, None);
        s.listing_complete = true;
        let st = aggregate(&spec(""), &[s], 1);
        assert_eq!(st.progress.eta_seconds, Some(9));
        assert_eq!(st.progress.percent.as_deref(), Some("10%"));
        // A finished job has nothing left to wait for.
        let st = aggregate(&spec(""), &[shard(0, ShardState::Completed, 3, 0)], 1);
        assert_eq!((st.progress.eta_seconds, st.progress.eta), (None, None));
        assert_eq!(st.progress.percent.as_deref(), Some("100%"));
    }

    #[test]
    fn long_keys_are_truncated_in_status() {
        let mut s = shard(0, ShardState::Completed, 0, 1);
        s.first_errors.push(ErrorSample {
            key: "é".repeat(300),
            class: FailureClass::Internal,
            code: None,
            message: "x".into(),
        });
        let st = aggregate(&spec(""), &[s], 1);
        assert!(st.first_errors[0].key.len() <= MAX_KEY_IN_STATUS + 3);
    }
}
