//! A fault-injecting HTTP/1.1 proxy on raw tokio TCP.
//!
//! It listens on `127.0.0.1:0` and forwards each request to one upstream server: it reads the
//! request head and body (Content-Length or chunked), forwards them verbatim (the Host header
//! and every signed header untouched, so SigV4 signatures stay valid) with `Connection: close`,
//! reads the whole response and relays it to the client with `Connection: close`, or injects a
//! fault chosen deterministically by a [`FaultSchedule`] from the request's sequence number:
//!
//! - [`Fault::SlowDown`]: answer `503 SlowDown` with an S3 XML error body and `Retry-After: 0`
//!   (the request is not forwarded, as a throttling server would not have performed it);
//! - [`Fault::Reset`]: reset the connection without answering (before forwarding, or after the
//!   server performed the request when [`FaultSchedule::reset_after_forwarding`] is set);
//! - [`Fault::Truncate`]: for a GET with a body, send the headers with the real Content-Length
//!   but only half of the body, then close.
//!
//! Every request is recorded ([`RequestRecord`]): method, target, whether it had
//! `x-amz-copy-source` (server-side copy) or an aws-chunked body, and the fault injected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Which requests get which fault. Counters are 1-based; 0 disables a fault. When several
/// apply to the same request, SlowDown wins over Reset, Reset over Truncate.
#[derive(Clone, Debug, Default)]
pub struct FaultSchedule {
    /// Every n-th request (over all requests) is answered `503 SlowDown`.
    pub slowdown_every: u64,
    /// Every n-th request (over all requests) gets its connection reset.
    pub reset_every: u64,
    /// Reset after the upstream server has performed the request (the client cannot know
    /// whether it happened) instead of before forwarding it.
    pub reset_after_forwarding: bool,
    /// Every n-th GET that has a response body is truncated to half its body.
    pub truncate_get_every: u64,
    /// Only inject faults into requests whose target contains this string (e.g. a bucket name).
    pub only_targets_containing: Option<String>,
    /// The first n requests (that pass `only_targets_containing`) are answered `503 SlowDown`:
    /// more than the SDK's own retries, so only a caller that retries gets through.
    pub slowdown_first: u64,
    /// The first n requests (that pass the filters) get their connection reset (after
    /// forwarding when `reset_after_forwarding`).
    pub reset_first: u64,
    /// Only inject faults into requests with one of these methods (empty: any method).
    pub only_methods: Vec<String>,
    /// Pick the faulted requests by a hash of their sequence number (still deterministic,
    /// same rates: 1 in `slowdown_every`...) instead of every n-th one, so that a client whose
    /// retries come back at a regular stride cannot keep landing on the faulted slots.
    pub scrambled: bool,
    /// Requests for these object keys are answered `403 AccessDenied` (an object-level
    /// failure), whatever the schedule.
    pub deny_keys: Vec<String>,
    /// Requests whose target (path and query, as sent) contains one of these strings are
    /// answered `403 AccessDenied` (not retried), whatever the schedule: e.g. `start-after=`
    /// fails the listings of every shard but the first.
    pub deny_targets_containing: Vec<String>,
    /// Requests signed with one of these access key ids are answered `400 ExpiredToken`, as
    /// AWS answers a session token past its expiry (or a key rotated away), whatever the
    /// schedule.
    pub expired_access_keys: Vec<String>,
}

impl FaultSchedule {
    /// No faults: a counting proxy.
    pub fn none() -> FaultSchedule {
        FaultSchedule::default()
    }

    /// No faults but `403 AccessDenied` for requests of these keys ([`Self::deny_keys`]).
    pub fn deny(keys: &[&str]) -> FaultSchedule {
        FaultSchedule {
            deny_keys: keys.iter().map(|k| k.to_string()).collect(),
            ..FaultSchedule::default()
        }
    }
}

/// A fault injected into one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    Reset,
    Truncate,
    /// `403 AccessDenied` for a key in [`FaultSchedule::deny_keys`].
    Denied,
    /// `400 ExpiredToken` for a key in [`FaultSchedule::expired_access_keys`].
    Expired,
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// 1-based order of arrival.
    pub seq: u64,
    pub method: String,
    /// The request target as sent (path and query, percent-encoded).
    pub target: String,
    /// The request had an `x-amz-copy-source` header (CopyObject or UploadPartCopy).
    pub copy_source: bool,
    /// The body was aws-chunked (`Content-Encoding: aws-chunked` or a `STREAMING-*` payload hash).
    pub aws_chunked: bool,
    /// The request body length.
    pub body_len: usize,
    /// The status the upstream server answered, when it was asked.
    pub status: Option<u16>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
}

impl RequestRecord {
    /// The path without the query, percent-decoded.
    pub fn path(&self) -> String {
        let raw = self.target.split('?').next().unwrap_or("");
        percent_decode(raw)
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// The bucket and key of a path-style request (`/bucket/key`); the key may be empty.
    pub fn bucket_and_key(&self) -> (String, String) {
        let path = self.path();
        let path = path.strip_prefix('/').unwrap_or(&path);
        match path.split_once('/') {
            Some((b, k)) => (b.to_string(), k.to_string()),
            None => (path.to_string(), String::new()),
        }
    }

    /// The request addresses an object (not a bucket).
    pub fn is_object_request(&self) -> bool {
        !self.bucket_and_key().1.is_empty()
    }

    /// A GET of an object's bytes (not a listing).
    pub fn is_object_get(&self) -> bool {
        self.method == "GET" && self.is_object_request() && !self.query().contains("uploadId")
    }

    /// A PUT that writes object bytes or a part (PutObject, UploadPart, CopyObject,
    /// UploadPartCopy) of a key outside Ferry's `.ferry/` reports.
    pub fn is_data_put(&self) -> bool {
        self.method == "PUT"
            && self.is_object_request()
            && !crate::s3::is_ferry_key(&self.bucket_and_key().1)
            && !self.query().contains("tagging")
            && !self.query().contains("acl")
    }
}

struct State {
    upstream: SocketAddr,
    schedule: Mutex<FaultSchedule>,
    enabled: AtomicBool,
    seq: AtomicU64,
    gets_with_body: AtomicU64,
    matched: AtomicU64,
    records: Mutex<Vec<RequestRecord>>,
    /// Connections being served (a request is recorded when its answer comes back).
    in_flight: AtomicU64,
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Start a proxy to the server at `upstream` (an `http://host:port` endpoint).
    pub async fn start(upstream_endpoint: &str, schedule: FaultSchedule) -> FaultProxy {
        let upstream = upstream_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| {
                panic!("proxy upstream {upstream_endpoint:?} is not http://ip:port: {e}")
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            schedule: Mutex::new(schedule),
            enabled: AtomicBool::new(true),
            seq: AtomicU64::new(0),
            gets_with_body: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            records: Mutex::new(Vec::new()),
            in_flight: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                st.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = handle(stream, st.clone()).await;
                    st.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Turn fault injection on or off (requests are counted either way).
    pub fn set_faults_enabled(&self, on: bool) {
        self.state.enabled.store(on, Ordering::SeqCst);
    }

    pub fn set_schedule(&self, schedule: FaultSchedule) {
        *self.state.schedule.lock().unwrap() = schedule;
    }

    /// Waits until no request is in flight, at most `limit`. A request a killed client sent is
    /// still forwarded, and recorded when the server answers: wait for it before
    /// [`FaultProxy::clear`], or it counts as the next run's (and the next run may not see
    /// what it wrote).
    pub async fn idle(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.state.in_flight.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy still serves {} requests after {limit:?}",
                self.state.in_flight.load(Ordering::SeqCst)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Forget the requests recorded so far (the fault counters keep running).
    pub fn clear(&self) {
        self.state.records.lock().unwrap().clear();
    }

    /// Every request recorded, in order of arrival.
    pub fn records(&self) -> Vec<RequestRecord> {
        let mut r = self.state.records.lock().unwrap().clone();
        r.sort_by_key(|r| r.seq);
        r
    }

    pub fn count_method(&self, method: &str) -> usize {
        self.records().iter().filter(|r| r.method == method).count()
    }

    /// The requests recorded that `keep` selects, in order of arrival.
    pub fn records_where(&self, keep: impl Fn(&RequestRecord) -> bool) -> Vec<RequestRecord> {
        self.records().into_iter().filter(|r| keep(r)).collect()
    }

    /// GETs of object bytes.
    pub fn object_gets(&self) -> Vec<RequestRecord> {
        self.records_where(RequestRecord::is_object_get)
    }

    /// The keys of the GETs of object bytes, in order of arrival.
    pub fn object_get_keys(&self) -> Vec<String> {
        self.object_gets()
            .iter()
            .map(|r| r.bucket_and_key().1)
            .collect()
    }

    /// Requests with `x-amz-copy-source` (server-side copies).
    pub fn copies(&self) -> Vec<RequestRecord> {
        self.records_where(|r| r.copy_source)
    }

    /// PUTs of object bytes or parts outside `.ferry/` (server-side copies included).
    pub fn data_puts(&self) -> Vec<RequestRecord> {
        self.records_where(RequestRecord::is_data_put)
    }

    /// Requests with an aws-chunked body.
    pub fn aws_chunked(&self) -> Vec<RequestRecord> {
        self.records_where(|r| r.aws_chunked)
    }

    /// How many faults of each kind were injected.
    pub fn faults(&self, kind: Fault) -> usize {
        self.records_where(|r| r.fault == Some(kind)).len()
    }

    /// A one-line-per-request summary, for assertion messages.
    pub fn summary(&self) -> String {
        let records = self.records();
        let mut s = String::new();
        for r in records.iter().take(400) {
            s.push_str(&format!(
                "{:>5} {} {} status={:?} fault={:?}{}{}\n",
                r.seq,
                r.method,
                r.target,
                r.status,
                r.fault,
                if r.copy_source { " copy-source" } else { "" },
                if r.aws_chunked { " aws-chunked" } else { "" }
            ));
        }
        if records.len() > 400 {
            s.push_str(&format!("... and {} more\n", records.len() - 400));
        }
        s
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------

struct Head {
    raw_lines: Vec<String>, // the start line, then header lines, without CRLF
}

impl Head {
    fn start_line(&self) -> &str {
        &self.raw_lines[0]
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.raw_lines[1..].iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    /// The status code of a response head (0 when unreadable).
    fn status(&self) -> u16 {
        self.start_line()
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false)
    }
    /// The head as bytes with `Connection: close` (replacing any Connection header).
    fn to_bytes_with_close(&self) -> Vec<u8> {
        let mut out = String::new();
        out.push_str(self.start_line());
        out.push_str("\r\n");
        for l in &self.raw_lines[1..] {
            let name = l.split(':').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Head>> {
    let mut lines = Vec::new();
    loop {
        let mut buf = Vec::new();
        let n = r.read_until(b'\n', &mut buf).await?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in head",
            ));
        }
        while matches!(buf.last(), Some(b'\n') | Some(b'\r')) {
            buf.pop();
        }
        if buf.is_empty() {
            if lines.is_empty() {
                continue; // stray CRLF between messages
            }
            return Ok(Some(Head { raw_lines: lines }));
        }
        lines.push(String::from_utf8_lossy(&buf).into_owned());
    }
}

/// Read a body framed by Content-Length or chunked encoding (kept raw, framing included), or
/// until end of file when `until_eof`.
async fn read_body<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    head: &Head,
    until_eof: bool,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.is_chunked() {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).await?;
            if line.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "eof in chunked body",
                ));
            }
            body.extend_from_slice(&line);
            let size_str = String::from_utf8_lossy(&line);
            let size_str = size_str.trim().split(';').next().unwrap_or("").to_string();
            let size = usize::from_str_radix(size_str.trim(), 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            if size == 0 {
                // trailers until an empty line
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t).await?;
                    body.extend_from_slice(&t);
                    if t.is_empty() || t == b"\r\n" || t == b"\n" {
                        return Ok(body);
                    }
                }
            }
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).await?;
            body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = head.content_length() {
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
        Ok(body)
    } else if until_eof {
        r.read_to_end(&mut body).await?;
        Ok(body)
    } else {
        Ok(body)
    }
}

fn slowdown_response() -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
<Message>Please reduce your request rate. (injected by the ferry test proxy)</Message>\
<RequestId>ferry-proxy</RequestId></Error>";
    format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nRetry-After: 0\r\nx-amz-request-id: ferry-proxy\r\nConnection: close\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

fn denied_response(head: bool) -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
<Message>Access Denied (injected by the ferry test proxy)</Message><RequestId>ferry-proxy</RequestId></Error>";
    let mut out = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: ferry-proxy\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head {
        out.push_str(body);
    }
    out.into_bytes()
}

fn expired_response(head: bool) -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ExpiredToken</Code>\
<Message>The provided token has expired. (injected by the ferry test proxy)</Message><RequestId>ferry-proxy</RequestId></Error>";
    let mut out = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: ferry-proxy\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head {
        out.push_str(body);
    }
    out.into_bytes()
}

/// The access key id a SigV4 `Authorization` header names (`Credential=<key>/<date>/...`).
fn access_key_of(authorization: &str) -> Option<&str> {
    let rest = authorization.split("Credential=").nth(1)?;
    rest.split('/').next()
}

/// Records `fault` and answers the client with `response` instead of forwarding the request.
async fn answer_instead(
    client: BufReader<TcpStream>,
    st: &State,
    mut record: RequestRecord,
    fault: Fault,
    response: &[u8],
) -> std::io::Result<()> {
    record.fault = Some(fault);
    push(st, record);
    let mut c = client.into_inner();
    c.write_all(response).await?;
    c.shutdown().await
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn handle(client: TcpStream, st: Arc<State>) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let Some(req_head) = read_head(&mut client).await? else {
        return Ok(());
    };
    if req_head
        .header("expect")
        .map(|v| v.eq_ignore_ascii_case("100-continue"))
        .unwrap_or(false)
    {
        client
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let req_body = read_body(&mut client, &req_head, false).await?;

    let mut parts = req_head.start_line().split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let seq = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let aws_chunked = req_head
        .header("content-encoding")
        .map(|v| v.to_ascii_lowercase().contains("aws-chunked"))
        .unwrap_or(false)
        || req_head
            .header("x-amz-content-sha256")
            .map(|v| v.starts_with("STREAMING-"))
            .unwrap_or(false);
    let mut record = RequestRecord {
        seq,
        method: method.clone(),
        target: target.clone(),
        copy_source: req_head.header("x-amz-copy-source").is_some(),
        aws_chunked,
        body_len: req_body.len(),
        status: None,
        fault: None,
    };

    let schedule = st.schedule.lock().unwrap().clone();
    let faults_on = st.enabled.load(Ordering::SeqCst)
        && schedule
            .only_targets_containing
            .as_deref()
            .map(|s| target.contains(s))
            .unwrap_or(true)
        && (schedule.only_methods.is_empty() || schedule.only_methods.contains(&method));
    let hits = |every: u64, n: u64| {
        let n = if schedule.scrambled {
            scramble(n ^ every.wrapping_mul(0x9E37_79B9))
        } else {
            n
        };
        faults_on && every > 0 && n.is_multiple_of(every)
    };
    let matched = if faults_on {
        st.matched.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };

    let denied_target = schedule
        .deny_targets_containing
        .iter()
        .any(|s| target.contains(s.as_str()));
    if denied_target
        || (!schedule.deny_keys.is_empty()
            && schedule.deny_keys.contains(&record.bucket_and_key().1))
    {
        let response = denied_response(method == "HEAD");
        return answer_instead(client, &st, record, Fault::Denied, &response).await;
    }
    if !schedule.expired_access_keys.is_empty()
        && req_head
            .header("authorization")
            .and_then(access_key_of)
            .is_some_and(|k| schedule.expired_access_keys.iter().any(|e| e == k))
    {
        let response = expired_response(method == "HEAD");
        return answer_instead(client, &st, record, Fault::Expired, &response).await;
    }
    if (faults_on && matched <= schedule.slowdown_first) || hits(schedule.slowdown_every, seq) {
        return answer_instead(client, &st, record, Fault::SlowDown, &slowdown_response()).await;
    }
    let reset_this =
        hits(schedule.reset_every, seq) || (faults_on && matched <= schedule.reset_first);
    if reset_this && !schedule.reset_after_forwarding {
        record.fault = Some(Fault::Reset);
        push(&st, record);
        reset(client.into_inner());
        return Ok(());
    }

    // Forward.
    let upstream = match tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect(st.upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            push(&st, record);
            reset(client.into_inner());
            return Ok(());
        }
    };
    let mut upstream = BufReader::new(upstream);
    upstream
        .get_mut()
        .write_all(&req_head.to_bytes_with_close())
        .await?;
    upstream.get_mut().write_all(&req_body).await?;
    upstream.get_mut().flush().await?;

    // Read the response, skipping interim 1xx answers.
    let resp_head = loop {
        let Some(h) = read_head(&mut upstream).await? else {
            push(&st, record);
            reset(client.into_inner());
            return Ok(());
        };
        if (100..200).contains(&h.status()) {
            continue;
        }
        break h;
    };
    let status = resp_head.status();
    record.status = Some(status);
    let has_body = method != "HEAD" && status != 204 && status != 304;
    let resp_body = if has_body {
        read_body(&mut upstream, &resp_head, true).await?
    } else {
        Vec::new()
    };

    if reset_this {
        record.fault = Some(Fault::Reset);
        push(&st, record);
        reset(client.into_inner());
        return Ok(());
    }

    let mut c = client.into_inner();
    if method == "GET" && has_body && resp_body.len() > 1 && !resp_head.is_chunked() {
        let n = st.gets_with_body.fetch_add(1, Ordering::SeqCst) + 1;
        if hits(schedule.truncate_get_every, n) {
            record.fault = Some(Fault::Truncate);
            push(&st, record);
            c.write_all(&resp_head.to_bytes_with_close()).await?;
            c.write_all(&resp_body[..resp_body.len() / 2]).await?;
            c.flush().await?;
            c.shutdown().await?;
            return Ok(());
        }
    }
    push(&st, record);
    c.write_all(&resp_head.to_bytes_with_close()).await?;
    c.write_all(&resp_body).await?;
    c.flush().await?;
    c.shutdown().await?;
    Ok(())
}

/// A bijective mix of a 64-bit number (SplitMix64's finalizer).
fn scramble(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn push(st: &State, record: RequestRecord) {
    st.records.lock().unwrap().push(record);
}

/// Decode `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
