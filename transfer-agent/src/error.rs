//! Errors of the engine, classified into the contract's failure classes (§2), with the
//! decisions that hang on them: retry or not, job-fatal or not.

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use ferry_api::FailureClass;

/// An error of one operation on one object (or on the job).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransferError {
    pub class: FailureClass,
    /// The service's error code (`SlowDown`, `NoSuchKey`...) when there was one.
    pub code: Option<String>,
    /// Sanitized: no credentials, no signed URLs.
    pub message: String,
    /// Worth trying again.
    pub retryable: bool,
    /// Stops the whole job (bad credentials, missing bucket...).
    pub fatal: bool,
    /// The server asked us to wait this long (Retry-After).
    pub retry_after: Option<Duration>,
    /// The source object changed under us (412 on If-Match): list it again.
    pub changed: bool,
    /// How many attempts were made.
    pub attempts: u32,
}

impl TransferError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        let retryable = matches!(
            class,
            FailureClass::Throttled
                | FailureClass::Network
                | FailureClass::Internal
                | FailureClass::ChecksumMismatch
        );
        TransferError {
            class,
            code: None,
            message: redact(&message.into()),
            retryable,
            fatal: false,
            retry_after: None,
            changed: false,
            attempts: 1,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn fatal(mut self) -> Self {
        self.fatal = true;
        self.retryable = false;
        self
    }

    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }

    /// A body shorter (or longer) than announced.
    pub fn short_body(expected: u64, got: u64) -> Self {
        TransferError::new(
            FailureClass::Network,
            format!("body was {got} bytes, expected {expected}"),
        )
        .with_code("IncompleteBody")
    }

    pub fn io(context: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let class = match e.kind() {
            PermissionDenied => FailureClass::AccessDenied,
            NotFound => FailureClass::SourceVanished,
            InvalidInput | InvalidData | NotADirectory | IsADirectory | InvalidFilename
            | AlreadyExists | DirectoryNotEmpty => FailureClass::Unrepresentable,
            StorageFull | QuotaExceeded | FileTooLarge => FailureClass::TooLarge,
            Interrupted | TimedOut | WouldBlock => FailureClass::Network,
            _ => FailureClass::Internal,
        };
        let mut err = TransferError::new(class, format!("{context}: {e}"));
        err.retryable = matches!(e.kind(), Interrupted | TimedOut | WouldBlock);
        err
    }

    /// Classifies an S3 SDK error by its error code (not by HTTP status alone).
    pub fn from_sdk<E>(op: &str, err: &SdkError<E, HttpResponse>) -> Self
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
                let msg = err.message().map(str::to_string);
                let mut e = classify(op, status, code.as_deref(), msg.as_deref());
                e.retry_after = retry_after;
                e
            }
        }
    }
}

/// The contract's mapping from S3 error code (or HTTP status when there is no code) to a
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
        "PreconditionFailed" => (SourceVanished, true, false),
        _ => match status {
            404 => (SourceVanished, false, false),
            401 => (AccessDenied, false, true),
            403 => (AccessDenied, false, false),
            412 => (SourceVanished, true, false),
            429 | 503 => (Throttled, true, false),
            408 => (Network, true, false),
            500..=599 => (Internal, true, false),
            _ => (InvalidRequest, false, false),
        },
    };
    let shown_code = if code_str.is_empty() {
        format!("HTTP {status}")
    } else {
        code_str.to_string()
    };
    let text = match message {
        Some(m) if !m.is_empty() => format!("{op}: {shown_code}: {m}"),
        _ => format!("{op}: {shown_code}"),
    };
    let mut e = TransferError::new(class, text).with_code(shown_code);
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
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// Removes anything that could be a credential from a message: query strings of URLs (signed
/// URLs carry their signature there), `Credential=`/`Signature=` fields, and AWS-shaped keys.
pub fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for (i, word) in msg.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&redact_word(word));
    }
    out
}

fn redact_word(w: &str) -> String {
    let lower = w.to_ascii_lowercase();
    if (lower.contains("http://") || lower.contains("https://")) && w.contains('?') {
        let cut = w.find('?').unwrap();
        return format!("{}?<redacted>", &w[..cut]);
    }
    for marker in [
        "credential=",
        "signature=",
        "x-amz-security-token=",
        "x-amz-signature=",
        "aws_secret_access_key=",
        "aws_session_token=",
    ] {
        if let Some(pos) = lower.find(marker) {
            return format!("{}<redacted>", &w[..pos + marker.len()]);
        }
    }
    let alnum: String = w.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if (alnum.starts_with("AKIA") || alnum.starts_with("ASIA")) && alnum.len() >= 20 {
        return "<redacted>".to_string();
    }
    w.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(e.changed);
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

    #[test]
    fn redaction_removes_signatures_and_keys() {
        // AWS's documented example key id, assembled so no key-shaped literal sits in the source.
        let key = format!("{}{}", "AKIA", "IOSFODNN7EXAMPLE");
        let m = redact(&format!(
            "GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Credential={key} failed"
        ));
        assert!(!m.contains("abc") && !m.contains("AKIA"), "{m}");
        let m = redact(&format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={key}/2024, Signature=deadbeef"
        ));
        assert!(!m.contains(&key) && !m.contains("deadbeef"), "{m}");
        let m = redact(&format!("key {key} leaked"));
        assert!(!m.contains(&key), "{m}");
        assert_eq!(redact("plain words stay"), "plain words stay");
    }
}
