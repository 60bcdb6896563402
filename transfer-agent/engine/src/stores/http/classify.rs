//! What an HTTP answer means for the object (`docs/contract.md` §2): pure.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::FailureClass;

use crate::error::TransferError;

/// The longest `Retry-After` honoured; longer asks wait this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The error of an answer with status `status` (not 2xx) to `what` (`GET https://h/a.jpg`).
pub fn status_error(
    status: u16,
    retry_after: Option<&str>,
    what: &str,
    now: DateTime<Utc>,
) -> TransferError {
    classified(status, retry_after, what, now).with_status(status)
}

fn classified(
    status: u16,
    retry_after: Option<&str>,
    what: &str,
    now: DateTime<Utc>,
) -> TransferError {
    let code = format!("HTTP {status}");
    let (class, retryable, text) = match status {
        404 | 410 => (
            FailureClass::SourceVanished,
            false,
            "the server has no such file",
        ),
        401 | 403 => (
            FailureClass::AccessDenied,
            false,
            "the server refused access",
        ),
        429 | 503 => (
            FailureClass::Throttled,
            true,
            "the server asks to slow down",
        ),
        412 => {
            return TransferError::new(
                FailureClass::SourceVanished,
                format!("{what}: {code}: the file changed while it was read"),
            )
            .with_code(code)
            .retryable(true)
            .changed()
        }
        416 => {
            return TransferError::new(
                FailureClass::SourceVanished,
                format!("{what}: {code}: the range is beyond the file's end (it shrank)"),
            )
            .with_code(code)
            .retryable(true)
            .changed()
        }
        500..=599 => (FailureClass::Internal, true, "server error"),
        300..=399 => (
            FailureClass::InvalidRequest,
            false,
            "a redirect without a Location",
        ),
        _ => (
            FailureClass::InvalidRequest,
            false,
            "the server refused the request",
        ),
    };
    let mut e = TransferError::new(class, format!("{what}: {code}: {text}"))
        .with_code(code)
        .retryable(retryable);
    if retryable {
        e.retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    }
    e
}

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let now = Utc::now();
        let e = |s| status_error(s, Some("2"), "GET x", now);
        assert_eq!(
            (e(404).class, e(404).retryable),
            (FailureClass::SourceVanished, false)
        );
        assert_eq!(e(410).class, FailureClass::SourceVanished);
        assert!(!e(404).changed);
        for s in [401, 403] {
            assert_eq!(
                (e(s).class, e(s).retryable, e(s).fatal),
                (FailureClass::AccessDenied, false, false)
            );
        }
        for s in [429, 503] {
            assert_eq!(e(s).class, FailureClass::Throttled);
            assert!(e(s).retryable);
            assert_eq!(e(s).retry_after, Some(Duration::from_secs(2)));
        }
        assert_eq!(
            (e(500).class, e(502).retryable),
            (FailureClass::Internal, true)
        );
        assert!(e(412).changed && e(416).changed);
        assert_eq!(
            (e(400).class, e(400).retryable),
            (FailureClass::InvalidRequest, false)
        );
        assert_eq!(e(404).code.as_deref(), Some("HTTP 404"));
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 00:00:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
