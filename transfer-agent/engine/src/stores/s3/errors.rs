//! S3 errors into failure classes: by the service's error code, not by HTTP status alone
//! (`docs/contract.md` §2).

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use ferry_core::FailureClass;

use crate::error::{server_text, TransferError, MAX_CODE, MAX_SERVER_TEXT};

impl TransferError {
    /// Classifies an S3 SDK error by its error code (not by HTTP status alone).
    pub(crate) fn from_sdk<E>(op: &str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match err {
            SdkError::TimeoutError(_) => {
                TransferError::new(FailureClass::Network, format!("{op}: timed out"))
                    .with_code("Timeout")
            }
            SdkError::DispatchFailure(d) => {
                let what = if d.is_timeout() {
                    "timed out"
                } else if d.is_io() {
                    "connection failed"
                } else {
                    "request could not be sent"
                };
                let detail = source_chain(err);
                let mut e =
                    TransferError::new(FailureClass::Network, format!("{op}: {what}: {detail}"))
                        .with_code("Network");
                // A bad endpoint URL or TLS setup will not heal by retrying.
                e.retryable = d.is_timeout() || d.is_io() || d.is_other();
                e
            }
            SdkError::ResponseError(_) => TransferError::new(
                FailureClass::Network,
                format!("{op}: invalid or truncated response: {}", source_chain(err)),
            )
            .with_code("IncompleteBody"),
            SdkError::ConstructionFailure(_) => TransferError::new(
                FailureClass::InvalidRequest,
                format!("{op}: could not build the request: {}", source_chain(err)),
            )
            .retryable(false),
            _ => {
                let raw = err.raw_response();
                let status = raw.map(|r| r.status().as_u16()).unwrap_or(0);
                let retry_after = raw
                    .and_then(|r| r.headers().get("retry-after"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(60)));
                let code = err.code().map(str::to_string);
                // Without a code or message from the service, say what the SDK saw.
                let msg = err
                    .message()
                    .map(str::to_string)
                    .or_else(|| code.is_none().then(|| source_chain(err)));
                let mut e = classify(op, status, code.as_deref(), msg.as_deref());
                e.retry_after = retry_after;
                e
            }
        }
    }
}

/// The mapping from S3 error code (or HTTP status when there is no code) to a
/// failure class and its consequences.
pub fn classify(op: &str, status: u16, code: Option<&str>, message: Option<&str>) -> TransferError {
    use FailureClass::*;
    let code_str = code.unwrap_or("");
    let (class, retryable, fatal) = match code_str {
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidToken"
        | "AuthorizationHeaderMalformed" => (AccessDenied, false, true),
        "ExpiredToken"
        | "TokenRefreshRequired"
        | "RequestTimeTooSkewed"
        | "ExpiredTokenException" => (AuthExpired, false, true),
        "NoSuchBucket" => (NoSuchBucket, false, true),
        "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => (AccessDenied, false, false),
        "NoSuchKey" | "NoSuchVersion" => (SourceVanished, false, false),
        "NoSuchUpload" => (InvalidRequest, false, false),
        "InvalidObjectState" => (Archived, false, false),
        "EntityTooLarge" => (TooLarge, false, false),
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequests"
        | "ServiceUnavailable"
        | "Busy" => (Throttled, true, false),
        "InternalError" | "InternalFailure" | "ServiceFailure" | "OperationAborted" => {
            (Internal, true, false)
        }
        "RequestTimeout" | "IncompleteBody" => (Network, true, false),
        "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "InvalidChecksum" => {
            (ChecksumMismatch, true, false)
        }
        // The object is not the version listed (If-Match): asking again with the same ETag
        // cannot succeed; the copier looks it up and copies the version it finds.
        "PreconditionFailed" => (SourceVanished, false, false),
        _ => match status {
            404 => (SourceVanished, false, false),
            401 => (AccessDenied, false, true),
            403 => (AccessDenied, false, false),
            412 => (SourceVanished, false, false),
            429 | 503 => (Throttled, true, false),
            408 => (Network, true, false),
            500..=599 => (Internal, true, false),
            _ => (InvalidRequest, false, false),
        },
    };
    // The code and message come from the server: redacted, one line, bounded.
    let shown_code = if code_str.is_empty() {
        format!("HTTP {status}")
    } else {
        server_text(code_str, MAX_CODE)
    };
    let message = message.map(|m| server_text(m, MAX_SERVER_TEXT));
    let text = match message.as_deref() {
        Some(m) if !m.is_empty() => format!("{op}: {shown_code}: {m}"),
        _ => format!("{op}: {shown_code}"),
    };
    let mut e = TransferError::new(class, text)
        .with_code(shown_code)
        .with_status(status);
    e.retryable = retryable;
    e.fatal = fatal;
    e.changed = status == 412 || code_str == "PreconditionFailed";
    e
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    let chain = if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    };
    // It may quote what the server sent.
    server_text(&chain, MAX_SERVER_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_line_keeps_the_http_status_and_the_time() {
        let e = classify("GetObject", 403, Some("AccessDenied"), Some("no"));
        let line = crate::report::FailureLine::of("k".into(), 3, &e);
        assert_eq!(
            (line.http_status, line.code.as_deref()),
            (Some(403), Some("AccessDenied"))
        );
        let at = line.at.clone().expect("a time");
        assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["httpStatus"], 403, "{json}");
        // A failure with no answer (a timeout) has no status.
        let e = TransferError::new(FailureClass::Network, "timed out");
        assert_eq!(
            crate::report::FailureLine::of("k".into(), 3, &e).http_status,
            None
        );
    }

    #[test]
    fn codes_decide_class_and_consequence() {
        let e = classify("GetObject", 503, Some("SlowDown"), None);
        assert_eq!(
            (e.class, e.retryable, e.fatal),
            (FailureClass::Throttled, true, false)
        );
        let e = classify("GetObject", 403, Some("InvalidAccessKeyId"), Some("nope"));
        assert_eq!(
            (e.class, e.retryable, e.fatal),
            (FailureClass::AccessDenied, false, true)
        );
        let e = classify("PutObject", 400, Some("RequestTimeout"), None);
        assert!(e.retryable, "400 RequestTimeout must be retried");
        let e = classify("PutObject", 400, Some("BadDigest"), None);
        assert_eq!(
            (e.class, e.retryable),
            (FailureClass::ChecksumMismatch, true)
        );
        let e = classify("ListObjectsV2", 404, Some("NoSuchBucket"), None);
        assert_eq!((e.class, e.fatal), (FailureClass::NoSuchBucket, true));
        let e = classify("GetObject", 412, None, None);
        assert!(e.changed && !e.retryable);
        let e = classify("GetObject", 403, Some("InvalidObjectState"), None);
        assert_eq!(e.class, FailureClass::Archived);
        let e = classify("PutObject", 400, Some("Weird"), None);
        assert_eq!(
            (e.class, e.retryable),
            (FailureClass::InvalidRequest, false)
        );
        let e = classify("GetObject", 502, None, None);
        assert_eq!((e.class, e.retryable), (FailureClass::Internal, true));
    }
}
