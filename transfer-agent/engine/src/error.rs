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
    /// The HTTP status of the answer that failed, when there was one.
    pub http_status: Option<u16>,
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
            message: clip(&redact(&message.into()), MAX_MESSAGE),
            retryable,
            fatal: false,
            retry_after: None,
            changed: false,
            attempts: 1,
            http_status: None,
        }
    }

    /// The HTTP status of the answer (0: none).
    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = (status != 0).then_some(status);
        self
    }

    /// The service's error code (redacted and bounded like any server text).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(server_text(&code.into(), MAX_CODE));
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

/// The most characters of an error message (status, Events and reports carry it).
pub const MAX_MESSAGE: usize = 1024;
/// The most characters of text a server supplied (its error message, a response it sent).
pub const MAX_SERVER_TEXT: usize = 512;
/// The most characters of an error code.
pub const MAX_CODE: usize = 64;
/// Longer input is cut (at a space) before it is redacted, to bound the work.
const MAX_SCANNED: usize = 16 * 1024;
const REDACTED: &str = "<redacted>";

/// Text a server supplied, made fit for an error message: redacted, control characters
/// replaced, and at most `max` characters (an ellipsis marks a cut).
pub fn server_text(text: &str, max: usize) -> String {
    clip(&redact(text), max)
}

/// At most `max` characters of `s` (cut anywhere: `s` is redacted already), with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// Removes anything that could be a credential from a message, and replaces control
/// characters (newlines, escapes: log injection) with spaces. Words (split at spaces) are
/// checked for URLs (query strings, where signed URLs carry their signature, and userinfo
/// are removed), for fields that name a secret (`Credential=`, `Signature=`,
/// `"aws_secret_access_key":`, `password=`, `token:`... their value is removed, or the next
/// word when the value follows a space), for `Bearer <token>` and `Authorization: <scheme>
/// <value>`; then every run of token characters in a word, wherever it stands (`key=AKIA…`,
/// `"AKIA…"`, `(ASIA…)`), for the shapes of keys: AWS access key ids (`AKIA`, `ASIA`... and
/// 16 more), GCS HMAC ids (`GOOG…`), 40-character AWS/GCS secret keys (mixed-case base64),
/// 32- and 64-digit hex (R2 key ids and secrets; not when it is an ETag, an MD5, a path
/// segment or a file name). Ordinary words, keys and paths stay readable. Input longer than
/// 16 KiB is cut at a space first (a cut word is never shown in part).
pub fn redact(msg: &str) -> String {
    let mut clean: String = msg
        .chars()
        .map(|c| if is_unsafe_char(c) { ' ' } else { c })
        .collect();
    if clean.len() > MAX_SCANNED {
        let mut cut = MAX_SCANNED;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut = clean[..cut].rfind(' ').unwrap_or(0);
        clean.truncate(cut);
        clean.push_str(" …");
    }
    let mut out = String::with_capacity(clean.len());
    let mut next = Next::Plain;
    let mut prev = "";
    for (i, word) in clean.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.is_empty() {
            continue;
        }
        let bare = word
            .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
            .to_ascii_lowercase();
        next = match next {
            Next::Secret => {
                out.push_str(REDACTED);
                Next::Plain
            }
            Next::Scheme if AUTH_SCHEMES.contains(&bare.as_str()) => {
                out.push_str(word);
                Next::Secret
            }
            Next::Scheme => {
                out.push_str(REDACTED);
                Next::Plain
            }
            Next::Plain => {
                let (w, n) = redact_word(word, prev);
                out.push_str(&w);
                if bare == "bearer" {
                    Next::Secret
                } else {
                    n
                }
            }
        };
        prev = word;
    }
    out
}

/// What the next word is, after this one.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Next {
    Plain,
    /// A secret value (after `password:`, `Bearer`...).
    Secret,
    /// After `Authorization:`: a scheme (kept, then a secret), or a secret.
    Scheme,
}

const AUTH_SCHEMES: [&str; 7] = [
    "bearer",
    "basic",
    "digest",
    "token",
    "negotiate",
    "aws",
    "aws4-hmac-sha256",
];

/// Names of fields whose value is a secret (compared in lower case, at a word boundary).
const SECRET_FIELDS: [&str; 24] = [
    "authorization",
    "credential",
    "signature",
    "sig",
    "x-amz-security-token",
    "security-token",
    "aws_secret_access_key",
    "aws_session_token",
    "secret_access_key",
    "secretaccesskey",
    "secret_key",
    "secretkey",
    "session_token",
    "sessiontoken",
    "client_secret",
    "private_key",
    "password",
    "passwd",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "x-api-key",
];

/// Control characters, line and paragraph separators, and bidirectional overrides (which
/// could make a log line read as something else).
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Redacts one word; says whether the word after it is a secret (a field name ending the
/// word, as in `password: hunter2`).
fn redact_word(w: &str, prev: &str) -> (String, Next) {
    let mut s = w.to_string();
    let mut next = Next::Plain;
    // URLs: userinfo and query string.
    if let Some(p) = s.find("://") {
        let auth_start = p + 3;
        let auth_end = s[auth_start..]
            .find(['/', '?', '#'])
            .map_or(s.len(), |i| auth_start + i);
        if let Some(at) = s[auth_start..auth_end].rfind('@') {
            s.replace_range(auth_start..auth_start + at, REDACTED);
        }
        if let Some(q) = s[auth_start..].find('?') {
            s.truncate(auth_start + q);
            s.push('?');
            s.push_str(REDACTED);
        }
    }
    // Fields that name a secret: `name=value`, `name: value`, `"name":"value"`.
    let mut from = 0;
    while let Some((name_end, value_start)) = secret_field(&s, from) {
        let value_end = s[value_start..]
            .find(['&', ',', ';', '"', '\'', ')', ']', '}', '>'])
            .map_or(s.len(), |i| value_start + i);
        if value_end == value_start {
            if value_end == s.len() {
                next = if is_auth(&s[..name_end]) {
                    Next::Scheme
                } else {
                    Next::Secret
                };
            }
            from = value_start.max(name_end);
            if from >= s.len() {
                break;
            }
            continue;
        }
        // `Authorization: Basic dXNl…`: the scheme, then the value after a space.
        let scheme =
            AUTH_SCHEMES.contains(&s[value_start..value_end].to_ascii_lowercase().as_str());
        if scheme && value_end == s.len() && is_auth(&s[..name_end]) {
            next = Next::Secret;
        }
        s.replace_range(value_start..value_end, REDACTED);
        from = value_start + REDACTED.len();
    }
    (redact_shapes(&s, prev), next)
}

fn is_auth(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with("authorization")
}

/// The next field naming a secret at or after `from`: where its name ends and where its
/// value starts (after `=` or `:` and any quotes).
fn secret_field(s: &str, from: usize) -> Option<(usize, usize)> {
    let lower = s.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut best: Option<(usize, usize, usize)> = None;
    for name in SECRET_FIELDS {
        let mut at = from;
        while let Some(i) = lower[at..].find(name) {
            let start = at + i;
            let end = start + name.len();
            at = start + 1;
            let boundary = start == 0 || !b[start - 1].is_ascii_alphanumeric();
            let mut v = end;
            while v < b.len() && matches!(b[v], b'"' | b'\'') {
                v += 1;
            }
            if !boundary || v >= b.len() || !matches!(b[v], b'=' | b':') {
                continue;
            }
            v += 1;
            // `https://` is no field; `name:` at the end of the word is.
            if b.get(v) == Some(&b'/') {
                continue;
            }
            while v < b.len() && matches!(b[v], b'"' | b'\'') {
                v += 1;
            }
            if best.is_none_or(|(bs, _, _)| start < bs) {
                best = Some((start, end, v));
            }
            break;
        }
    }
    best.map(|(_, end, v)| (end, v))
}

/// Replaces the key-shaped runs of `w` (see [`redact`]). `prev` is the word before.
fn redact_shapes(w: &str, prev: &str) -> String {
    let b = w.as_bytes();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    // Runs of ASCII letters and digits: key ids and hex secrets.
    for (start, end) in runs(b, |c| c.is_ascii_alphanumeric()) {
        let run = &b[start..end];
        if let Some((i, j)) = key_id(run) {
            cuts.push((start + i, start + j));
        } else if (run.len() == 32 || run.len() == 64)
            && run.iter().all(u8::is_ascii_hexdigit)
            && !checksum_context(w, start, end, prev)
        {
            cuts.push((start, end));
        }
    }
    // Runs of base64 characters: 40-character secret keys.
    for (mut start, mut end) in runs(b, |c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/') {
        while start < end && b[start] == b'/' {
            start += 1;
        }
        while end > start && b[end - 1] == b'/' {
            end -= 1;
        }
        let run = &b[start..end];
        if run.len() == 40
            && run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase)
            && run.iter().any(u8::is_ascii_digit)
            && run.iter().filter(|&&c| c == b'/').count() <= 3
        {
            cuts.push((start, end));
        }
    }
    if cuts.is_empty() {
        return w.to_string();
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(w.len());
    let mut at = 0;
    for (s, e) in cuts {
        if e <= at {
            continue;
        }
        out.push_str(&w[at..s.max(at)]);
        out.push_str(REDACTED);
        at = e;
    }
    out.push_str(&w[at..]);
    out
}

/// The maximal runs of bytes for which `keep` holds, as ranges.
fn runs(b: &[u8], keep: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &c) in b.iter().enumerate() {
        match (keep(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, b.len()));
    }
    out
}

/// An AWS access key id (`AKIA`, `ASIA`... then 16 upper-case letters or digits) or a GCS
/// HMAC id (`GOOG` then at least 10) anywhere in `run`: its range.
fn key_id(run: &[u8]) -> Option<(usize, usize)> {
    const AWS: [&[u8; 4]; 12] = [
        b"AKIA", b"ASIA", b"AIDA", b"AROA", b"AGPA", b"ANPA", b"ANVA", b"AIPA", b"APKA", b"ABIA",
        b"ACCA", b"ASCA",
    ];
    let upper = |c: &u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    for i in 0..run.len().saturating_sub(3) {
        let head = &run[i..i + 4];
        let need = if AWS.iter().any(|p| &p[..] == head) {
            16
        } else if head == b"GOOG" {
            10
        } else {
            continue;
        };
        let tail = run[i + 4..].iter().take_while(|c| upper(c)).count();
        if tail >= need {
            return Some((i, i + 4 + tail));
        }
    }
    None
}

/// Whether the hex run `start..end` of `w` is a checksum or part of a name, not a secret:
/// after `ETag`, `MD5`, `checksum` or `digest` (this word or the one before), an ETag of a
/// multipart upload (`…-3`), a path segment (`…/<hex>`) or a file name (`<hex>.jpg`).
fn checksum_context(w: &str, start: usize, end: usize, prev: &str) -> bool {
    let b = w.as_bytes();
    let named = |s: &str| {
        let s = s
            .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_ascii_lowercase();
        ["etag", "md5", "checksum", "digest", "content-md5"]
            .iter()
            .any(|n| s.ends_with(n))
    };
    named(&w[..start])
        || (start == 0 && named(prev))
        || (start > 0 && b[start - 1] == b'/')
        || (b.get(end) == Some(&b'-') && b.get(end + 1).is_some_and(u8::is_ascii_digit))
        || (b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_alphabetic))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Example credentials (AWS's documented ones and made-up shapes), assembled so no
    // key-shaped literal sits in the source.
    fn akid() -> String {
        format!("{}{}", "AKIA", "IOSFODNN7EXAMPLE")
    }
    fn secret() -> String {
        format!("{}{}", "wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY")
    }
    fn hex(n: usize) -> String {
        "0123456789abcdef".repeat(8)[..n].to_string()
    }

    fn assert_hidden(msg: &str, secret: &str) {
        let m = redact(msg);
        assert!(!m.contains(secret), "{secret:?} left in {m:?}");
        assert!(m.contains(REDACTED), "{m:?}");
    }

    #[test]
    fn redaction_removes_signatures_and_keys() {
        let key = akid();
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

    /// S2: key ids are found wherever they stand in a word, not only at its start.
    #[test]
    fn key_ids_are_found_inside_words() {
        let key = akid();
        let asia = format!("{}{}", "ASIA", "Y34FZKBOKMUTVV7A");
        for msg in [
            format!("key={key}"),
            format!("\"{key}\""),
            format!("({asia})"),
            format!("id:{key},"),
            format!("prefix{key}"),
            format!("<AccessKeyId>{key}</AccessKeyId>"),
        ] {
            assert_hidden(&msg, &key[4..]);
        }
        assert_hidden(&format!("({asia})"), &asia);
        let goog = format!("{}{}", "GOOG1E", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        assert_hidden(&format!("HMAC key {goog} is not valid"), &goog);
    }

    /// S2: the shapes of secret keys: 40-character AWS/GCS secrets, 32- and 64-digit hex
    /// (R2 key ids and secrets).
    #[test]
    fn secret_shapes_are_removed() {
        let s = secret();
        assert_hidden(&format!("secret {s}."), &s);
        assert_hidden(&format!("aws_secret_access_key={s}"), &s);
        assert_hidden(&format!("{{\"SecretAccessKey\": \"{s}\"}}"), &s);
        assert_hidden(&format!("r2 id {} secret {}", hex(32), hex(64)), &hex(32));
        assert_hidden(&format!("r2 secret={}", hex(64)), &hex(64));
        assert_hidden(&format!("('{}')", hex(64)), &hex(64));
    }

    /// S2: fields that name a secret, bearer tokens, Authorization values, URL userinfo
    /// and query strings.
    #[test]
    fn secret_fields_tokens_and_urls_are_removed() {
        for (msg, hidden) in [
            ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi"),
            ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
            ("sent bearer tok3n-value along", "tok3n-value"),
            ("password: hunter2", "hunter2"),
            (
                "\"aws_session_token\":\"FQoGZXIvYXdzEBY\"",
                "FQoGZXIvYXdzEBY",
            ),
            ("x-amz-security-token: FQoGZXIvYXdzEBY", "FQoGZXIvYXdzEBY"),
            (
                "connect https://admin:s3cr3t@minio.local:9000/b failed",
                "s3cr3t",
            ),
            ("GET http://h/k?token=abc&x=1", "token=abc"),
        ] {
            assert_hidden(msg, hidden);
        }
        let m = redact("connect https://admin:s3cr3t@minio.local:9000/b failed");
        assert_eq!(m, "connect https://<redacted>@minio.local:9000/b failed");
    }

    /// Real S3 and filesystem error texts keep every word: codes, keys, paths, ETags, sizes.
    #[test]
    fn ordinary_messages_stay_legible() {
        let etag = hex(32);
        for msg in [
            "GetObject: NoSuchKey: The specified key does not exist.".to_string(),
            "PutObject: AccessDenied: Access Denied".to_string(),
            "HeadBucket: SignatureDoesNotMatch: The request signature we calculated does not \
             match the signature you provided. Check your key and signing method."
                .to_string(),
            "GetObject: ExpiredToken: The provided token has expired.".to_string(),
            "ListObjectsV2: connection failed: error trying to connect: tcp connect error: \
             Connection refused (os error 111)"
                .to_string(),
            "stat photos/2024/IMG_0001.JPG: Permission denied (os error 13)".to_string(),
            "GetObject: the object is 1048576 bytes now, the listing said 524288".to_string(),
            format!("server-side copy produced ETag {etag}, the source has {etag}-3"),
            format!("the completed upload's ETag {etag}-2 is not the MD5 of the parts sent"),
            format!("open cas/{etag}: No such file or directory"),
            format!("open objects/{}.bin failed", hex(64)),
            "bucket \"logs-2024-archive\" does not exist (HeadBucket: HTTP 404)".to_string(),
            "s3://media-prod/Photos/2024/Summer/BeachDay/Family/IMG01 at https://s3.amazonaws.com"
                .to_string(),
        ] {
            assert_eq!(redact(&msg), msg);
        }
    }

    /// S2: control characters and newlines (log injection), and the length of what a server
    /// says.
    #[test]
    fn messages_are_one_line_and_bounded() {
        let m = redact("NoSuchKey\nlevel=error msg=\"forged\"\r\x1b[31mred\u{202e}x");
        assert!(!m.chars().any(is_unsafe_char), "{m:?}");
        let e = crate::stores::s3::classify(
            "GetObject",
            500,
            Some("InternalError"),
            Some(&"spam ".repeat(100_000)),
        );
        assert!(
            e.message.chars().count() <= MAX_SERVER_TEXT + 40,
            "{}",
            e.message.len()
        );
        assert!(e.message.ends_with('…'));
        let e = TransferError::new(FailureClass::Internal, "x".repeat(10_000));
        assert_eq!(e.message.chars().count(), MAX_MESSAGE + 1);
        let e = TransferError::new(FailureClass::Internal, "e").with_code("C\n".repeat(100));
        assert!(e.code.unwrap().chars().count() <= MAX_CODE + 1);
        // A secret at the cut is never shown in part.
        let key = akid();
        let msg = format!("{} {key} tail", "a".repeat(MAX_SERVER_TEXT - 8));
        let t = server_text(&msg, MAX_SERVER_TEXT);
        assert!(!t.contains("AKIA") && !t.contains("IOSF"), "{t}");
        let huge = format!("{} {key}{}", "w ".repeat(8190), "z".repeat(20_000));
        assert!(!redact(&huge).contains("AKIA"));
    }
}
