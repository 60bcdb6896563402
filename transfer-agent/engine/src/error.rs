//! Errors of the engine, classified into failure classes (`docs/contract.md` §2), with the
//! decisions that hang on them: retry or not, job-fatal or not. Each kind of store maps its
//! own errors into these (S3: `stores::s3::errors`).

use std::time::Duration;

use ferry_core::FailureClass;

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

    /// The source object changed under us: it is looked up and listed again.
    pub fn changed(mut self) -> Self {
        self.changed = true;
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
