//! When a `BucketSync` runs: on a cron `schedule` (five fields, read in an IANA `timeZone`,
//! UTC by default) or every `interval` (a Go/Kubernetes duration such as `15m` or `1h30m`).
//!
//! [`Trigger::parse`] validates the spec fields into a [`Trigger`]; [`Trigger::last_tick`]
//! and [`Trigger::next_tick`] give the controller the run that is due now and the time to
//! requeue for. Every input and output instant is UTC; only the cron wall clock is zoned.
//!
//! Pure functions only: no clock is read here, the caller passes `now`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The shortest `interval` accepted by [`Trigger::parse`].
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The longest `interval` accepted by [`Trigger::parse`]: 366 days (`8784h`).
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 60 * 60);

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The five cron fields, in order, with the values each accepts (for error messages).
const CRON_FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
];

/// The `@` shortcuts accepted in place of five fields (all at minute 0, hour 0 where relevant).
const CRON_SHORTCUTS: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// When a `BucketSync`'s runs are due.
///
/// Built by [`Trigger::parse`], which guarantees a cron schedule that fires at least once
/// and an interval within [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Runs at the wall-clock times matched by a five-field cron `schedule`, read in `tz`.
    Cron {
        /// The parsed cron pattern (minute granularity: the seconds field is always 0).
        /// Boxed: a parsed pattern is about 300 bytes.
        schedule: Box<Cron>,
        /// The time zone whose wall clock the pattern is matched against.
        tz: Tz,
    },
    /// Runs at `anchor + k * interval` for k = 0, 1, 2, … (see [`Trigger::last_tick`]).
    Every(Duration),
}

/// Why the schedule fields of a `BucketSync` spec are invalid.
///
/// The messages are meant for the resource's status conditions and events, so each one
/// names the field and the value the user wrote.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// Both or neither of `schedule` and `interval` were set.
    #[error("set exactly one of schedule and interval")]
    ExactlyOne,
    /// `timeZone` was set together with `interval`, where it means nothing.
    #[error("timeZone can only be set together with schedule, not with interval")]
    TimeZoneWithInterval,
    /// `schedule` is not a five-field cron expression that fires.
    #[error("schedule \"{schedule}\": {reason}")]
    InvalidSchedule {
        /// The schedule as written (trimmed).
        schedule: String,
        /// What is wrong with it, e.g. `minute 61 is out of range 0-59`.
        reason: String,
    },
    /// `timeZone` is not a name in the IANA time zone database.
    #[error("timeZone \"{0}\" is not an IANA time zone name (such as UTC or Europe/Berlin)")]
    InvalidTimeZone(String),
    /// `interval` is not a Go/Kubernetes duration.
    #[error("interval \"{0}\" is not a duration such as 30s, 15m or 1h30m")]
    InvalidInterval(String),
    /// `interval` is below [`MIN_INTERVAL`].
    #[error("interval \"{0}\" is shorter than the minimum {min}", min = format_duration(MIN_INTERVAL))]
    IntervalTooShort(String),
    /// `interval` is above [`MAX_INTERVAL`].
    #[error("interval \"{0}\" is longer than the maximum {max} (366 days)", max = format_duration(MAX_INTERVAL))]
    IntervalTooLong(String),
}

impl Trigger {
    /// Parses a `BucketSync` spec's `schedule`, `timeZone` and `interval` fields.
    ///
    /// Exactly one of `schedule` and `interval` must be set; `timeZone` only with `schedule`
    /// (default UTC). A value that is empty or only whitespace counts as unset, and values
    /// are trimmed.
    ///
    /// * `schedule`: exactly five fields, `minute hour day-of-month month day-of-week`
    ///   (no seconds, no year), with the usual `*`, lists, ranges, `*/n` and `a-b/n` steps,
    ///   month and weekday names, plus croner's extensions (`L`, `W`, `#`, `?`, `+`). Or one
    ///   of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`. Day-of-month
    ///   and day-of-week combine with OR when both are restricted, as in Vixie cron. A
    ///   pattern that can never fire (such as `0 0 30 2 *`) is refused.
    /// * `timeZone`: an IANA name such as `Europe/Berlin` (case-sensitive, as in Go).
    /// * `interval`: see [`parse_duration`]; at least [`MIN_INTERVAL`], at most
    ///   [`MAX_INTERVAL`].
    pub fn parse(
        schedule: Option<&str>,
        time_zone: Option<&str>,
        interval: Option<&str>,
    ) -> Result<Trigger, ScheduleError> {
        match (set(schedule), set(time_zone), set(interval)) {
            (Some(schedule), time_zone, None) => {
                let schedule = parse_cron(schedule)?;
                let tz = match time_zone {
                    None => Tz::UTC,
                    Some(name) => Tz::from_str(name)
                        .map_err(|_| ScheduleError::InvalidTimeZone(name.to_string()))?,
                };
                Ok(Trigger::Cron {
                    schedule: Box::new(schedule),
                    tz,
                })
            }
            (None, None, Some(interval)) => {
                let every = parse_duration(interval)?;
                if every < MIN_INTERVAL {
                    return Err(ScheduleError::IntervalTooShort(interval.to_string()));
                }
                if every > MAX_INTERVAL {
                    return Err(ScheduleError::IntervalTooLong(interval.to_string()));
                }
                Ok(Trigger::Every(every))
            }
            (None, Some(_), Some(_)) => Err(ScheduleError::TimeZoneWithInterval),
            _ => Err(ScheduleError::ExactlyOne),
        }
    }

    /// The newest tick in `(after, now]` that counts, or `None` when there is none: the run
    /// that is due at `now` when the last run handled was the tick `after`.
    ///
    /// Only the newest tick is returned: after an outage the missed ticks collapse into one
    /// run, as with a CronJob. `after = None` means no run has happened yet.
    ///
    /// Which ticks count depends on `anchor` (the resource's creation time):
    /// * `Every(d)`: the ticks are `anchor + k*d` for k ≥ 0, so the first run is due at
    ///   creation (`anchor` itself); computed arithmetically, whatever the gap.
    /// * `Cron`: the pattern's fire times strictly after `anchor` (a tick at or before
    ///   creation never counts, like a CronJob's first run). Found with croner's backward
    ///   search from `now`, which skips non-matching months, days, hours and minutes field by
    ///   field, so the cost does not grow with the length of an outage and there is no cap.
    pub fn last_tick(
        &self,
        anchor: DateTime<Utc>,
        after: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Cron { schedule, tz } => {
                let floor = after.map_or(anchor, |after| after.max(anchor));
                if now <= floor {
                    return None;
                }
                cron_at_or_before(schedule, tz, now).filter(|tick| *tick > floor)
            }
            Trigger::Every(every) => {
                if now < anchor {
                    return None;
                }
                let step = step_nanos(*every);
                let k = nanos_between(anchor, now) / step;
                let tick = add_nanos(anchor, k * step)?;
                match after {
                    Some(after) if tick <= after => None,
                    _ => Some(tick),
                }
            }
        }
    }

    /// The first tick strictly after `t` that counts (see [`Trigger::last_tick`] for which
    /// ticks count): the time to requeue for.
    ///
    /// For `Every(d)` and `t` before `anchor` this is `anchor`; for `Cron` it is the first
    /// fire time after both `t` and `anchor`. Falls back to [`DateTime::<Utc>::MAX_UTC`]
    /// ("never") only past the end of chrono's calendar, or for a never-firing pattern that
    /// [`Trigger::parse`] would have refused.
    pub fn next_tick(&self, anchor: DateTime<Utc>, t: DateTime<Utc>) -> DateTime<Utc> {
        let next = match self {
            Trigger::Cron { schedule, tz } => cron_after(schedule, tz, t.max(anchor)),
            Trigger::Every(every) => {
                if t < anchor {
                    Some(anchor)
                } else {
                    let step = step_nanos(*every);
                    let k = nanos_between(anchor, t) / step + 1;
                    k.checked_mul(step).and_then(|n| add_nanos(anchor, n))
                }
            }
        };
        next.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether run names should carry seconds rather than minutes: true for an interval
    /// under one minute. Two ticks at least a minute apart always fall in different
    /// minutes, and cron ticks are whole minutes, so minutes are unique otherwise.
    pub fn by_second(&self) -> bool {
        match self {
            Trigger::Cron { .. } => false,
            Trigger::Every(every) => *every < Duration::from_secs(60),
        }
    }
}

impl fmt::Display for Trigger {
    /// `cron "0 2 * * 1-5" in Europe/Berlin` or `every 1h30m`, for status and events. The
    /// pattern is croner's normalised form: names become numbers, shortcuts their fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Cron { schedule, tz } => {
                write!(f, "cron \"{}\" in {}", schedule.as_str(), tz.name())
            }
            Trigger::Every(every) => write!(f, "every {}", format_duration(*every)),
        }
    }
}

/// Parses a Go/Kubernetes duration (`time.ParseDuration`, as used by `metav1.Duration`):
/// one or more decimal numbers, each with a unit, such as `10s`, `15m`, `1h30m`, `90s`,
/// `1.5h` or `500ms`. Units: `h`, `m`, `s`, `ms`, `us` (or `µs`), `ns`; a bare `0` is zero.
///
/// Leading and trailing whitespace is ignored. Negative durations, days (`1d`) and spaces
/// inside are refused. The error is [`ScheduleError::InvalidInterval`], which names the
/// `interval` field.
pub fn parse_duration(s: &str) -> Result<Duration, ScheduleError> {
    let text = s.trim();
    parse_go_duration(text).ok_or_else(|| ScheduleError::InvalidInterval(text.to_string()))
}

/// Formats a duration the short Go way without zero parts, for status display: `45s`,
/// `2m5s`, `1h30m`, `8784h`, `10.5s`, `500ms`, `0s`. [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        return match nanos {
            0 => "0s".to_string(),
            1..=999 => format!("{nanos}ns"),
            1_000..=999_999 => format!("{}µs", decimal(u64::from(nanos), 1_000)),
            _ => format!("{}ms", decimal(u64::from(nanos), 1_000_000)),
        };
    }
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || nanos > 0 {
        let value = seconds * 1_000_000_000 + u64::from(nanos);
        out.push_str(&format!("{}s", decimal(value, 1_000_000_000)));
    }
    out
}

/// A spec field's value, trimmed, or `None` when it is unset, empty or whitespace.
fn set(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|s| !s.is_empty())
}

/// `value / unit` as a decimal without trailing zeros (`unit` a power of ten).
fn decimal(value: u64, unit: u64) -> String {
    let (whole, frac) = (value / unit, value % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let leading_digits = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = rest.split_at(leading_digits(rest));
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(leading_digits(after)),
            None => ("", after),
        };
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut value = whole.checked_mul(unit_nanos)?;
        if !frac.is_empty() {
            // Digits past the 18th are worth less than a nanosecond even for hours.
            let digits = &frac[..frac.len().min(18)];
            let scale = 10u128.pow(u32::try_from(digits.len()).ok()?);
            value = value.checked_add(digits.parse::<u128>().ok()? * unit_nanos / scale)?;
        }
        total = total.checked_add(value)?;
        rest = after;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).ok()?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, nanos))
}

/// The cron parser: five fields exactly (croner fills in second 0), no year.
fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

fn parse_cron(schedule: &str) -> Result<Cron, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidSchedule {
        schedule: schedule.to_string(),
        reason,
    };
    let upper = schedule.to_ascii_uppercase();
    if upper.starts_with("TZ=") || upper.starts_with("CRON_TZ=") {
        return Err(invalid(
            "set the time zone with the timeZone field, not a TZ= or CRON_TZ= prefix".to_string(),
        ));
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if schedule.starts_with('@') {
        let shortcut = schedule.to_ascii_lowercase();
        if shortcut.starts_with("@every") {
            return Err(invalid(
                "@every is not supported; use the interval field instead".to_string(),
            ));
        }
        if !CRON_SHORTCUTS.contains(&shortcut.as_str()) {
            return Err(invalid(format!(
                "unknown shortcut; use five fields or one of {}",
                CRON_SHORTCUTS.join(", ")
            )));
        }
    } else if fields.len() != CRON_FIELDS.len() {
        let hint = if fields.len() > CRON_FIELDS.len() {
            "; seconds and year fields are not supported"
        } else {
            ""
        };
        return Err(invalid(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}{hint}",
            fields.len()
        )));
    }
    let parser = cron_parser();
    let cron = parser
        .parse(schedule)
        .map_err(|err| invalid(explain_cron_error(&parser, &fields, &err)))?;
    // Every five-field pattern repeats within the 400-year Gregorian cycle, so one fire time
    // after any reference means it fires forever; none means it never does.
    if cron
        .find_next_occurrence(&DateTime::<Utc>::UNIX_EPOCH, false)
        .is_err()
    {
        return Err(invalid(
            "never fires: no date matches its day-of-month and month fields".to_string(),
        ));
    }
    Ok(cron)
}

/// Names the field croner tripped on: croner's messages (`Number out of bounds.`) do not
/// say which field, so each field is parsed again alone, the others set to `*`.
fn explain_cron_error(parser: &CronParser, fields: &[&str], err: &CronError) -> String {
    if fields.len() == CRON_FIELDS.len() {
        for (i, field) in fields.iter().enumerate() {
            let mut probe = ["*"; 5];
            probe[i] = field;
            let Err(field_err) = parser.parse(&probe.join(" ")) else {
                continue;
            };
            let (name, range) = CRON_FIELDS[i];
            return match &field_err {
                CronError::ComponentError(msg) if msg.contains("out of bounds") => {
                    format!("{name} {field} is out of range {range}")
                }
                CronError::IllegalCharacters(_) => format!(
                    "{name} {field} is not valid (expected {range}, *, a list a,b, a range a-b or a step */n)"
                ),
                other => format!("{name} {field}: {}", croner_reason(other)),
            };
        }
    }
    croner_reason(err)
}

/// Croner's message without its `Component error:`-style prefix and trailing period,
/// starting lowercase.
fn croner_reason(err: &CronError) -> String {
    let msg = match err {
        CronError::InvalidPattern(msg)
        | CronError::IllegalCharacters(msg)
        | CronError::ComponentError(msg) => msg.clone(),
        other => other.to_string(),
    };
    let msg = msg.trim_end_matches('.');
    let mut chars = msg.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The first fire time strictly after `t`. Croner works on whole seconds of the zoned wall
/// clock, so the result is re-checked against `t` (and the search resumed) to stay exact
/// for sub-second inputs.
fn cron_after(cron: &Cron, tz: &Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut from = t.with_timezone(tz);
    for _ in 0..3 {
        let found = cron.find_next_occurrence(&from, false).ok()?;
        let utc = found.with_timezone(&Utc);
        if utc > t {
            return Some(utc);
        }
        from = found;
    }
    None
}

/// The newest fire time at or before `t` (see [`cron_after`] on re-checking).
fn cron_at_or_before(cron: &Cron, tz: &Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut from = t.with_timezone(tz);
    let mut inclusive = true;
    for _ in 0..3 {
        let found = cron.find_previous_occurrence(&from, inclusive).ok()?;
        let utc = found.with_timezone(&Utc);
        if utc <= t {
            return Some(utc);
        }
        from = found;
        inclusive = false;
    }
    None
}

/// An interval in nanoseconds, at least 1 so that a hand-built `Every(Duration::ZERO)`
/// cannot divide by zero ([`Trigger::parse`] never builds one).
fn step_nanos(every: Duration) -> i128 {
    i128::try_from(every.as_nanos()).unwrap_or(i128::MAX).max(1)
}

/// `to - from` in nanoseconds (exact: chrono's range is far inside `i128`).
fn nanos_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i128 {
    let delta = to.signed_duration_since(from);
    i128::from(delta.num_seconds()) * 1_000_000_000 + i128::from(delta.subsec_nanos())
}

/// `t + nanos`, or `None` past the end of chrono's calendar.
fn add_nanos(t: DateTime<Utc>, nanos: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    t.checked_add_signed(TimeDelta::new(secs, subsec)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
            .with_timezone(&Utc)
    }

    fn cron(schedule: &str, tz: Option<&str>) -> Trigger {
        Trigger::parse(Some(schedule), tz, None)
            .unwrap_or_else(|e| panic!("{schedule} ({tz:?}): {e}"))
    }

    fn every(interval: &str) -> Trigger {
        Trigger::parse(None, None, Some(interval)).unwrap_or_else(|e| panic!("{interval}: {e}"))
    }

    fn schedule_err(schedule: &str, reason: &str) -> ScheduleError {
        ScheduleError::InvalidSchedule {
            schedule: schedule.to_string(),
            reason: reason.to_string(),
        }
    }

    /// `(schedule, timeZone, interval)` as in a spec.
    type Spec<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

    /// `(schedule, timeZone)` of a cron trigger.
    type Zoned<'a> = (&'a str, Option<&'a str>);

    /// `((schedule, timeZone), anchor, after, now, want)` for `last_tick`.
    type LastCase<'a> = (
        Zoned<'a>,
        &'a str,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
    );

    /// An anchor long before every test clock, so it never hides a cron tick.
    const OLD: &str = "2000-01-01T00:00:00Z";

    #[test]
    fn parse_accepts() {
        let cases: &[(Spec, &str)] = &[
            (
                (Some("*/15 * * * *"), None, None),
                "cron \"*/15 * * * *\" in UTC",
            ),
            (
                (Some(" 0 2 * * * "), Some("Europe/Berlin"), None),
                "cron \"0 2 * * *\" in Europe/Berlin",
            ),
            (
                (Some("0 2 * * mon-fri"), Some("UTC"), None),
                "cron \"0 2 * * 1-5\" in UTC",
            ),
            (
                (Some("30 4 1,15 jan,jul *"), None, None),
                "cron \"30 4 1,15 1,7 *\" in UTC",
            ),
            ((Some("@hourly"), None, None), "cron \"0 * * * *\" in UTC"),
            (
                (Some("@daily"), Some("America/New_York"), None),
                "cron \"0 0 * * *\" in America/New_York",
            ),
            ((Some("@Weekly"), None, None), "cron \"0 0 * * 0\" in UTC"),
            ((Some("@monthly"), None, None), "cron \"0 0 1 * *\" in UTC"),
            ((Some("@yearly"), None, None), "cron \"0 0 1 1 *\" in UTC"),
            (
                (Some("0 0 29 2 *"), None, None),
                "cron \"0 0 29 2 *\" in UTC",
            ),
            (
                (Some("0 0 * * *"), Some(""), None),
                "cron \"0 0 * * *\" in UTC",
            ),
            (
                (Some("0 0 * * *"), None, Some("  ")),
                "cron \"0 0 * * *\" in UTC",
            ),
            ((None, None, Some("10s")), "every 10s"),
            ((None, None, Some("15m")), "every 15m"),
            ((None, None, Some("1h30m")), "every 1h30m"),
            ((None, None, Some("90s")), "every 1m30s"),
            ((None, Some(""), Some("2h")), "every 2h"),
            ((None, None, Some("8784h")), "every 8784h"),
        ];
        for ((schedule, tz, interval), shown) in cases {
            let trigger = Trigger::parse(*schedule, *tz, *interval)
                .unwrap_or_else(|e| panic!("{schedule:?} {tz:?} {interval:?}: {e}"));
            assert_eq!(
                trigger.to_string(),
                *shown,
                "{schedule:?} {tz:?} {interval:?}"
            );
        }
        assert_eq!(every("1h30m"), Trigger::Every(Duration::from_secs(5400)));
        assert_eq!(every("10s"), Trigger::Every(MIN_INTERVAL));
        assert_eq!(
            cron("0 2 * * *", Some("Europe/Berlin")),
            Trigger::Cron {
                schedule: Box::new(cron_parser().parse("0 2 * * *").expect("valid")),
                tz: chrono_tz::Europe::Berlin,
            }
        );
    }

    #[test]
    fn parse_refuses() {
        use ScheduleError::*;
        let fields5 = "expected 5 fields (minute hour day-of-month month day-of-week), found";
        let cases: Vec<(Spec, ScheduleError)> = vec![
            ((None, None, None), ExactlyOne),
            ((Some(""), None, Some(" ")), ExactlyOne),
            ((None, Some("UTC"), None), ExactlyOne),
            ((Some("* * * * *"), None, Some("5m")), ExactlyOne),
            ((Some("* * * * *"), Some("UTC"), Some("5m")), ExactlyOne),
            ((None, Some("UTC"), Some("5m")), TimeZoneWithInterval),
            ((Some("0 * * * * *"), None, None), schedule_err("0 * * * * *", &format!("{fields5} 6; seconds and year fields are not supported"))),
            ((Some("0 0 * * * * 2030"), None, None), schedule_err("0 0 * * * * 2030", &format!("{fields5} 7; seconds and year fields are not supported"))),
            ((Some("* * * *"), None, None), schedule_err("* * * *", &format!("{fields5} 4"))),
            ((Some("61 * * * *"), None, None), schedule_err("61 * * * *", "minute 61 is out of range 0-59")),
            ((Some("0 24 * * *"), None, None), schedule_err("0 24 * * *", "hour 24 is out of range 0-23")),
            ((Some("0 0 32 * *"), None, None), schedule_err("0 0 32 * *", "day-of-month 32 is out of range 1-31")),
            ((Some("0 0 0 * *"), None, None), schedule_err("0 0 0 * *", "day-of-month 0 is out of range 1-31")),
            ((Some("0 0 * 13 *"), None, None), schedule_err("0 0 * 13 *", "month 13 is out of range 1-12 or JAN-DEC")),
            ((Some("0 0 * * 8"), None, None), schedule_err("0 0 * * 8", "day-of-week 8 is out of range 0-7 or SUN-SAT")),
            ((Some("50-70 * * * *"), None, None), schedule_err("50-70 * * * *", "minute 50-70 is out of range 0-59")),
            ((Some("abc * * * *"), None, None), schedule_err("abc * * * *", "minute abc is not valid (expected 0-59, *, a list a,b, a range a-b or a step */n)")),
            ((Some("*/0 * * * *"), None, None), schedule_err("*/0 * * * *", "minute */0: step cannot be zero")),
            ((Some("0 0 30 2 *"), None, None), schedule_err("0 0 30 2 *", "never fires: no date matches its day-of-month and month fields")),
            ((Some("@reboot"), None, None), schedule_err("@reboot", "unknown shortcut; use five fields or one of @yearly, @annually, @monthly, @weekly, @daily, @hourly")),
            ((Some("@every 5m"), None, None), schedule_err("@every 5m", "@every is not supported; use the interval field instead")),
            ((Some("CRON_TZ=UTC 0 * * * *"), None, None), schedule_err("CRON_TZ=UTC 0 * * * *", "set the time zone with the timeZone field, not a TZ= or CRON_TZ= prefix")),
            ((Some("0 2 * * *"), Some("Mars/Base"), None), InvalidTimeZone("Mars/Base".into())),
            ((Some("0 2 * * *"), Some("europe/berlin"), None), InvalidTimeZone("europe/berlin".into())),
            ((Some("0 2 * * *"), Some("Local"), None), InvalidTimeZone("Local".into())),
            ((None, None, Some("9s")), IntervalTooShort("9s".into())),
            ((None, None, Some("9999ms")), IntervalTooShort("9999ms".into())),
            ((None, None, Some("0")), IntervalTooShort("0".into())),
            ((None, None, Some("8784h1s")), IntervalTooLong("8784h1s".into())),
            ((None, None, Some("abc")), InvalidInterval("abc".into())),
            ((None, None, Some("1d")), InvalidInterval("1d".into())),
            ((None, None, Some("-5m")), InvalidInterval("-5m".into())),
        ];
        for ((schedule, tz, interval), want) in cases {
            assert_eq!(
                Trigger::parse(schedule, tz, interval),
                Err(want),
                "{schedule:?} {tz:?} {interval:?}"
            );
        }
    }

    #[test]
    fn error_messages() {
        let cases: &[(Spec, &str)] = &[
            ((Some("61 * * * *"), None, None), "schedule \"61 * * * *\": minute 61 is out of range 0-59"),
            ((Some("0 2 * * *"), Some("Mars/Base"), None), "timeZone \"Mars/Base\" is not an IANA time zone name (such as UTC or Europe/Berlin)"),
            ((None, None, Some("5s")), "interval \"5s\" is shorter than the minimum 10s"),
            ((None, None, Some("9000h")), "interval \"9000h\" is longer than the maximum 8784h (366 days)"),
            ((None, None, Some("abc")), "interval \"abc\" is not a duration such as 30s, 15m or 1h30m"),
            ((None, None, None), "set exactly one of schedule and interval"),
            ((None, Some("UTC"), Some("1m")), "timeZone can only be set together with schedule, not with interval"),
        ];
        for ((schedule, tz, interval), want) in cases {
            match Trigger::parse(*schedule, *tz, *interval) {
                Err(err) => assert_eq!(err.to_string(), *want),
                Ok(t) => panic!("{schedule:?} {tz:?} {interval:?} parsed as {t}"),
            }
        }
    }

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("10s", Duration::from_secs(10)),
            ("15m", Duration::from_secs(900)),
            ("1h30m", Duration::from_secs(5400)),
            ("90s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1h0m0s", Duration::from_secs(3600)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("500ms", Duration::from_millis(500)),
            ("1m30.25s", Duration::from_millis(90_250)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("7ns", Duration::from_nanos(7)),
            ("+5m", Duration::from_secs(300)),
            (" 45s ", Duration::from_secs(45)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30m30m", Duration::from_secs(3600)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
        for text in [
            "",
            "abc",
            "5",
            "s",
            ".",
            ".s",
            "-5s",
            "1d",
            "1h 30m",
            "1H",
            "5 m",
            "1.5.5s",
            "1e3s",
            "99999999999999999999999999999999999999999h",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(ScheduleError::InvalidInterval(text.trim().to_string())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn format_durations() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(125), "2m5s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(3661), "1h1m1s"),
            (MAX_INTERVAL, "8784h"),
            (Duration::from_millis(10_500), "10.5s"),
            (Duration::from_millis(3_600_250), "1h0.25s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_micros(2), "2µs"),
            (Duration::from_nanos(7), "7ns"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(*d), *want);
            assert_eq!(parse_duration(want), Ok(*d), "round trip of {want}");
        }
    }

    /// `next_tick` walked from `start`: each tick strictly after the one before.
    fn walk(trigger: &Trigger, anchor: &str, start: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut t = utc(start);
        (0..n)
            .map(|_| {
                t = trigger.next_tick(utc(anchor), t);
                t
            })
            .collect()
    }

    #[test]
    fn next_tick_cron() {
        let cases: &[(&str, Option<&str>, &str, &[&str])] = &[
            // Every 15 minutes, UTC; a tick exactly at `t` is not "after" it.
            (
                "*/15 * * * *",
                None,
                "2025-01-01T12:07:30Z",
                &[
                    "2025-01-01T12:15:00Z",
                    "2025-01-01T12:30:00Z",
                    "2025-01-01T12:45:00Z",
                    "2025-01-01T13:00:00Z",
                ],
            ),
            (
                "*/15 * * * *",
                None,
                "2025-01-01T12:15:00Z",
                &["2025-01-01T12:30:00Z"],
            ),
            (
                "*/15 * * * *",
                None,
                "2025-01-01T12:14:59.999Z",
                &["2025-01-01T12:15:00Z"],
            ),
            (
                "*/15 * * * *",
                None,
                "2025-01-01T12:15:00.001Z",
                &["2025-01-01T12:30:00Z"],
            ),
            // Daily at 02:00 UTC, across the end of a year.
            (
                "0 2 * * *",
                None,
                "2025-12-30T02:00:00Z",
                &[
                    "2025-12-31T02:00:00Z",
                    "2026-01-01T02:00:00Z",
                    "2026-01-02T02:00:00Z",
                ],
            ),
            // Berlin, spring forward on 2025-03-30: 02:00 CET jumps to 03:00 CEST (01:00Z).
            // Every 15 minutes keeps a 15-minute rhythm in UTC: the skipped hour has no ticks.
            (
                "*/15 * * * *",
                Some("Europe/Berlin"),
                "2025-03-30T00:30:00Z",
                &[
                    "2025-03-30T00:45:00Z",
                    "2025-03-30T01:00:00Z",
                    "2025-03-30T01:15:00Z",
                ],
            ),
            // Daily 02:00 Berlin: 01:00Z in winter; on the change day 02:00 does not exist and
            // the run happens at the first instant after the gap (03:00 CEST = 01:00Z);
            // then 02:00 CEST = 00:00Z.
            (
                "0 2 * * *",
                Some("Europe/Berlin"),
                "2025-03-28T12:00:00Z",
                &[
                    "2025-03-29T01:00:00Z",
                    "2025-03-30T01:00:00Z",
                    "2025-03-31T00:00:00Z",
                    "2025-04-01T00:00:00Z",
                ],
            ),
            (
                "30 2 * * *",
                Some("Europe/Berlin"),
                "2025-03-29T12:00:00Z",
                &["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"],
            ),
            // Berlin, fall back on 2025-10-26: 03:00 CEST goes back to 02:00 CET (01:00Z).
            // A fixed-time job runs once, at the first 02:30 (CEST, 00:30Z).
            (
                "30 2 * * *",
                Some("Europe/Berlin"),
                "2025-10-25T12:00:00Z",
                &["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"],
            ),
            // A wildcard job runs in both copies of the repeated hour.
            (
                "*/30 * * * *",
                Some("Europe/Berlin"),
                "2025-10-25T23:45:00Z",
                &[
                    "2025-10-26T00:00:00Z",
                    "2025-10-26T00:30:00Z",
                    "2025-10-26T01:00:00Z",
                    "2025-10-26T01:30:00Z",
                    "2025-10-26T02:00:00Z",
                ],
            ),
            (
                "0 9 * * mon",
                Some("America/New_York"),
                "2025-01-01T00:00:00Z",
                &["2025-01-06T14:00:00Z", "2025-01-13T14:00:00Z"],
            ),
        ];
        for (schedule, tz, start, want) in cases {
            let trigger = cron(schedule, *tz);
            let want: Vec<_> = want.iter().map(|w| utc(w)).collect();
            assert_eq!(
                walk(&trigger, OLD, start, want.len()),
                want,
                "{schedule} {tz:?} from {start}"
            );
        }
    }

    #[test]
    fn next_tick_cron_skips_ticks_up_to_anchor() {
        let trigger = cron("*/15 * * * *", None);
        let anchor = utc("2025-01-01T12:15:00Z");
        // A tick exactly at creation does not count; neither do earlier ones.
        assert_eq!(
            trigger.next_tick(anchor, utc("2025-01-01T11:00:00Z")),
            utc("2025-01-01T12:30:00Z")
        );
        assert_eq!(
            trigger.next_tick(anchor, anchor),
            utc("2025-01-01T12:30:00Z")
        );
    }

    #[test]
    fn last_tick_cron() {
        let q = "*/15 * * * *";
        let cases: &[LastCase] = &[
            // ((schedule, tz), anchor, after, now, want)
            // Never run: the newest tick after creation.
            (
                (q, None),
                "2025-01-01T10:07:00Z",
                None,
                "2025-01-01T10:14:59Z",
                None,
            ),
            (
                (q, None),
                "2025-01-01T10:07:00Z",
                None,
                "2025-01-01T10:15:00Z",
                Some("2025-01-01T10:15:00Z"),
            ),
            (
                (q, None),
                "2025-01-01T10:07:00Z",
                None,
                "2025-01-01T10:15:00.5Z",
                Some("2025-01-01T10:15:00Z"),
            ),
            (
                (q, None),
                "2025-01-01T10:07:00Z",
                None,
                "2025-01-01T11:20:00Z",
                Some("2025-01-01T11:15:00Z"),
            ),
            // A tick at the creation instant does not count.
            (
                (q, None),
                "2025-01-01T10:15:00Z",
                None,
                "2025-01-01T10:20:00Z",
                None,
            ),
            (
                (q, None),
                "2025-01-01T10:15:00Z",
                None,
                "2025-01-01T10:00:00Z",
                None,
            ),
            // Ran at 10:15: nothing due until 10:30, then the newest missed tick only.
            (
                (q, None),
                OLD,
                Some("2025-01-01T10:15:00Z"),
                "2025-01-01T10:15:00Z",
                None,
            ),
            (
                (q, None),
                OLD,
                Some("2025-01-01T10:15:00Z"),
                "2025-01-01T10:29:59Z",
                None,
            ),
            (
                (q, None),
                OLD,
                Some("2025-01-01T10:15:00Z"),
                "2025-01-01T10:31:00Z",
                Some("2025-01-01T10:30:00Z"),
            ),
            (
                (q, None),
                OLD,
                Some("2025-01-01T10:15:00Z"),
                "2025-01-01T11:52:00Z",
                Some("2025-01-01T11:45:00Z"),
            ),
            // `after` in the future of `now` (clock skew): nothing due.
            (
                (q, None),
                OLD,
                Some("2025-01-01T12:00:00Z"),
                "2025-01-01T11:52:00Z",
                None,
            ),
            // A month of a per-minute cron missed: one answer, found backwards from `now`.
            (
                ("* * * * *", None),
                OLD,
                Some("2025-01-01T00:00:00Z"),
                "2025-02-01T12:34:56Z",
                Some("2025-02-01T12:34:00Z"),
            ),
            // Yearly, operator down for three years.
            (
                ("@yearly", None),
                OLD,
                Some("2021-01-01T00:00:00Z"),
                "2024-06-01T00:00:00Z",
                Some("2024-01-01T00:00:00Z"),
            ),
            // Daily at 02:00 Berlin over a month that includes the spring change.
            (
                ("0 2 * * *", Some("Europe/Berlin")),
                OLD,
                Some("2025-03-01T01:00:00Z"),
                "2025-03-31T06:00:00Z",
                Some("2025-03-31T00:00:00Z"),
            ),
            (
                ("0 2 * * *", Some("Europe/Berlin")),
                OLD,
                Some("2025-03-29T01:00:00Z"),
                "2025-03-30T01:30:00Z",
                Some("2025-03-30T01:00:00Z"),
            ),
            (
                ("0 2 * * *", Some("Europe/Berlin")),
                OLD,
                Some("2025-03-30T01:00:00Z"),
                "2025-03-30T23:59:59Z",
                None,
            ),
            // Fall back: the second 02:30 (01:30Z) is not a tick of a fixed-time job.
            (
                ("30 2 * * *", Some("Europe/Berlin")),
                OLD,
                Some("2025-10-26T00:30:00Z"),
                "2025-10-26T01:45:00Z",
                None,
            ),
            (
                ("30 2 * * *", Some("Europe/Berlin")),
                OLD,
                None,
                "2025-10-26T01:45:00Z",
                Some("2025-10-26T00:30:00Z"),
            ),
        ];
        for ((schedule, tz), anchor, after, now, want) in cases {
            let trigger = cron(schedule, *tz);
            let got = trigger.last_tick(utc(anchor), after.map(utc), utc(now));
            assert_eq!(
                got,
                want.map(utc),
                "{schedule} {tz:?} anchor={anchor} after={after:?} now={now}"
            );
        }
    }

    /// `last_tick` (backward search) and `next_tick` (forward search) agree on the ticks,
    /// including across both DST changes.
    #[test]
    fn cron_forward_and_backward_agree() {
        let cases: &[(&str, Option<&str>, &str, usize)] = &[
            (
                "*/15 * * * *",
                Some("Europe/Berlin"),
                "2025-03-29T23:00:00Z",
                20,
            ),
            (
                "*/15 * * * *",
                Some("Europe/Berlin"),
                "2025-10-25T23:00:00Z",
                20,
            ),
            (
                "0 2 * * *",
                Some("Europe/Berlin"),
                "2025-03-25T00:00:00Z",
                10,
            ),
            (
                "30 2 * * *",
                Some("Europe/Berlin"),
                "2025-10-20T00:00:00Z",
                10,
            ),
            (
                "0 */7 * * *",
                Some("America/New_York"),
                "2025-03-08T00:00:00Z",
                12,
            ),
            ("0 9 1 * *", None, "2025-01-15T00:00:00Z", 6),
        ];
        for (schedule, tz, start, n) in cases {
            let trigger = cron(schedule, *tz);
            let anchor = utc(OLD);
            let ticks = walk(&trigger, OLD, start, *n);
            let one = TimeDelta::seconds(1);
            for (i, tick) in ticks.iter().enumerate() {
                let ctx = format!("{schedule} {tz:?} tick {tick}");
                assert_eq!(trigger.last_tick(anchor, None, *tick), Some(*tick), "{ctx}");
                assert_eq!(
                    trigger.last_tick(anchor, None, *tick + one),
                    Some(*tick),
                    "{ctx}"
                );
                if i > 0 {
                    let prev = ticks[i - 1];
                    assert_eq!(
                        trigger.last_tick(anchor, None, *tick - one),
                        Some(prev),
                        "{ctx}"
                    );
                    assert_eq!(
                        trigger.last_tick(anchor, Some(prev), *tick - one),
                        None,
                        "{ctx}"
                    );
                    assert_eq!(trigger.next_tick(anchor, *tick - one), *tick, "{ctx}");
                }
            }
        }
    }

    #[test]
    fn interval_ticks() {
        let trigger = every("10m");
        let anchor = utc("2025-01-01T10:00:00Z");
        // (after, now, want)
        let last: &[(Option<&str>, &str, Option<&str>)] = &[
            // Created: the first run is due at once (k = 0).
            (None, "2025-01-01T10:00:00Z", Some("2025-01-01T10:00:00Z")),
            (None, "2025-01-01T09:59:59Z", None),
            (None, "2025-01-01T10:25:00Z", Some("2025-01-01T10:20:00Z")),
            (Some("2025-01-01T10:00:00Z"), "2025-01-01T10:05:00Z", None),
            (
                Some("2025-01-01T10:00:00Z"),
                "2025-01-01T10:09:59.999Z",
                None,
            ),
            (
                Some("2025-01-01T10:00:00Z"),
                "2025-01-01T10:10:00Z",
                Some("2025-01-01T10:10:00Z"),
            ),
            (
                Some("2025-01-01T10:00:00Z"),
                "2025-01-01T10:10:00.5Z",
                Some("2025-01-01T10:10:00Z"),
            ),
            // Thirty days down: only the newest tick.
            (
                Some("2025-01-01T10:10:00Z"),
                "2025-01-31T10:03:00Z",
                Some("2025-01-31T10:00:00Z"),
            ),
            // `after` not on the grid (e.g. the interval was edited): the grid still rules.
            (Some("2025-01-01T10:13:00Z"), "2025-01-01T10:19:00Z", None),
            (
                Some("2025-01-01T10:13:00Z"),
                "2025-01-01T10:21:00Z",
                Some("2025-01-01T10:20:00Z"),
            ),
        ];
        for (after, now, want) in last {
            assert_eq!(
                trigger.last_tick(anchor, after.map(utc), utc(now)),
                want.map(utc),
                "after={after:?} now={now}"
            );
        }
        let next: &[(&str, &str)] = &[
            ("2025-01-01T09:00:00Z", "2025-01-01T10:00:00Z"),
            ("2025-01-01T09:59:59.999Z", "2025-01-01T10:00:00Z"),
            ("2025-01-01T10:00:00Z", "2025-01-01T10:10:00Z"),
            ("2025-01-01T10:25:00Z", "2025-01-01T10:30:00Z"),
            ("2025-01-01T10:30:00Z", "2025-01-01T10:40:00Z"),
            ("2026-01-01T10:00:00.001Z", "2026-01-01T10:10:00Z"),
        ];
        for (t, want) in next {
            assert_eq!(trigger.next_tick(anchor, utc(t)), utc(want), "t={t}");
        }
    }

    #[test]
    fn interval_keeps_the_anchor_phase() {
        // Sub-second creation time and an interval that does not divide a minute.
        let trigger = every("1h30m");
        let anchor = utc("2025-06-01T08:17:42.250Z");
        assert_eq!(
            walk(
                &trigger,
                "2025-06-01T08:17:42.250Z",
                "2025-06-01T00:00:00Z",
                4
            ),
            [
                "2025-06-01T08:17:42.250Z",
                "2025-06-01T09:47:42.250Z",
                "2025-06-01T11:17:42.250Z",
                "2025-06-01T12:47:42.250Z"
            ]
            .map(utc)
        );
        assert_eq!(
            trigger.last_tick(anchor, Some(anchor), utc("2026-06-01T00:00:00Z")),
            Some(utc("2026-05-31T23:17:42.250Z"))
        );
        // Daylight saving is irrelevant to intervals: plain UTC arithmetic.
        let trigger = every("24h");
        let anchor = utc("2025-03-29T01:00:00Z");
        assert_eq!(
            trigger.next_tick(anchor, anchor),
            utc("2025-03-30T01:00:00Z")
        );
    }

    #[test]
    fn interval_far_future_saturates() {
        let trigger = Trigger::Every(MAX_INTERVAL);
        let anchor = utc("2025-01-01T00:00:00Z");
        assert_eq!(
            trigger.next_tick(anchor, DateTime::<Utc>::MAX_UTC),
            DateTime::<Utc>::MAX_UTC
        );
        // A hand-built zero interval does not panic.
        let zero = Trigger::Every(Duration::ZERO);
        assert_eq!(zero.last_tick(anchor, None, anchor), Some(anchor));
        assert!(zero.next_tick(anchor, anchor) > anchor);
    }

    #[test]
    fn by_second() {
        let cases: &[(Trigger, bool)] = &[
            (every("10s"), true),
            (every("59s"), true),
            (every("59.9s"), true),
            (every("1m"), false),
            (every("90s"), false),
            (every("1h"), false),
            (cron("* * * * *", None), false),
            (cron("@daily", Some("Asia/Tokyo")), false),
        ];
        for (trigger, want) in cases {
            assert_eq!(trigger.by_second(), *want, "{trigger}");
        }
    }
}
