//! A small HTTP/1.1 file server for the URL-list tests, on tokio's TCP listener, written by
//! hand so that it can misbehave exactly as asked: a status (a number of times, with
//! `Retry-After`), a Content-Length that lies, a body cut short, a slow body, redirects, no
//! Range support. It serves GET and HEAD with keep-alive, answers ranges (`bytes=a-b`) with
//! 206 and honours `If-Match` against its ETag (the body's MD5), and logs every request.
//! Pages of a JSON API are served at a path with its query string ([`FileServer::put_page`]),
//! with the same faults.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How a file misbehaves.
#[derive(Clone, Debug, Default)]
pub enum Fault {
    #[default]
    None,
    /// Answers every request with this status.
    Status(u16),
    /// Answers the first `times` GETs with `status` (and `Retry-After: retry_after` seconds
    /// when given), then serves the file.
    StatusFirst {
        status: u16,
        times: usize,
        retry_after: Option<u64>,
    },
    /// Declares this Content-Length instead of the body's.
    ContentLength(u64),
    /// Sends half the body of the first `times` GETs, then closes the connection.
    CutShort { times: usize },
    /// Sends the body in 8 KiB pieces with this pause between them.
    Slow(Duration),
    /// Redirects (302) to this path (or absolute URL).
    Redirect(String),
}

/// A file served.
#[derive(Clone, Debug, Default)]
pub struct File {
    pub body: Vec<u8>,
    /// Extra response headers (Content-Type, Cache-Control...).
    pub headers: Vec<(String, String)>,
    pub fault: Fault,
    /// Ignore `Range` (always send the whole body with 200).
    pub no_ranges: bool,
}

impl File {
    pub fn new(body: Vec<u8>) -> File {
        File {
            body,
            ..Default::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> File {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn fault(mut self, fault: Fault) -> File {
        self.fault = fault;
        self
    }

    fn etag(&self) -> String {
        format!("\"{}\"", hex::encode(Md5::digest(&self.body)))
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// The decoded path.
    pub path: String,
    /// The request target as sent (path and query, not decoded).
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, File>,
    /// GETs per path so far (for faults of the first N).
    gets: BTreeMap<String, usize>,
    log: Vec<Logged>,
}

/// A running server; stops when dropped.
pub struct FileServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileServer {
    pub async fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, state).await;
                });
            }
        });
        FileServer { port, state, task }
    }

    /// `http://127.0.0.1:PORT` + `path` (as written into a list: not encoded here).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Serves `file` at `path` (decoded, starting with `/`).
    pub fn put(&self, path: &str, file: File) {
        self.state.lock().unwrap().files.insert(path.into(), file);
    }

    /// Serves `file` at exactly `target` (a path with its query string, as the client
    /// sends it): a page of a JSON API.
    pub fn put_page(&self, target: &str, file: File) {
        self.state.lock().unwrap().files.insert(target.into(), file);
    }

    /// Requests of exactly `target` logged.
    pub fn requests_of(&self, target: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.target == target)
            .collect()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// GETs of `path` logged.
    pub fn gets(&self, path: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method == "GET" && l.path == path)
            .collect()
    }
}

/// Percent-decodes a request path.
fn decode(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(conn: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            read.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let path = decode(target.split('?').next().unwrap_or_default());
        let (file, nth_get) = {
            let mut s = state.lock().unwrap();
            s.log.push(Logged {
                method: method.clone(),
                path: path.clone(),
                target: target.clone(),
                headers: headers.clone(),
                at: Instant::now(),
            });
            // A page served at its exact target first, else the file at the path.
            let key = if s.files.contains_key(&target) {
                target.clone()
            } else {
                path.clone()
            };
            let n = if method == "GET" {
                let n = s.gets.entry(key.clone()).or_default();
                *n += 1;
                *n
            } else {
                0
            };
            (s.files.get(&key).cloned(), n)
        };
        let Some(file) = file else {
            respond(&mut write, 404, &[], b"", true).await?;
            continue;
        };
        match &file.fault {
            Fault::Status(s) => {
                respond(&mut write, *s, &[], b"", method == "GET").await?;
                continue;
            }
            Fault::StatusFirst {
                status,
                times,
                retry_after,
            } if method == "GET" && nth_get <= *times => {
                let h: Vec<(String, String)> = retry_after
                    .iter()
                    .map(|s| ("Retry-After".to_string(), s.to_string()))
                    .collect();
                respond(&mut write, *status, &h, b"", true).await?;
                continue;
            }
            Fault::Redirect(to) => {
                let h = vec![("Location".to_string(), to.clone())];
                respond(&mut write, 302, &h, b"", true).await?;
                continue;
            }
            _ => {}
        }
        if let Some(want) = headers.get("if-match") {
            if *want != file.etag() {
                respond(&mut write, 412, &[], b"", true).await?;
                continue;
            }
        }
        let mut h = file.headers.clone();
        h.push(("ETag".into(), file.etag()));
        h.push((
            "Last-Modified".into(),
            "Mon, 01 Jan 2024 00:00:00 GMT".into(),
        ));
        let len = file.body.len();
        let range = headers
            .get("range")
            .filter(|_| !file.no_ranges)
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        let (status, body) = match range {
            Some((a, b)) if a < len => {
                let b = b.min(len - 1);
                h.push(("Content-Range".into(), format!("bytes {a}-{b}/{len}")));
                (206, &file.body[a..=b])
            }
            Some(_) => {
                respond(&mut write, 416, &[], b"", true).await?;
                continue;
            }
            None => (200, &file.body[..]),
        };
        if !file.no_ranges {
            h.push(("Accept-Ranges".into(), "bytes".into()));
        }
        let declared = match file.fault {
            Fault::ContentLength(n) => n as usize,
            _ => body.len(),
        };
        h.push(("Content-Length".into(), declared.to_string()));
        write_head(&mut write, status, &h).await?;
        if method == "HEAD" {
            continue;
        }
        match &file.fault {
            Fault::CutShort { times } if nth_get <= *times => {
                write.write_all(&body[..body.len() / 2]).await?;
                write.flush().await?;
                return Ok(());
            }
            Fault::Slow(pause) => {
                for piece in body.chunks(8 << 10) {
                    write.write_all(piece).await?;
                    write.flush().await?;
                    tokio::time::sleep(*pause).await;
                }
            }
            Fault::ContentLength(n) if (*n as usize) > body.len() => {
                write.write_all(body).await?;
                write.flush().await?;
                return Ok(());
            }
            Fault::ContentLength(n) => write.write_all(&body[..*n as usize]).await?,
            _ => write.write_all(body).await?,
        }
        write.flush().await?;
    }
}

async fn write_head(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await
}

async fn respond(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let mut h = headers.to_vec();
    h.push(("Content-Length".into(), body.len().to_string()));
    write_head(w, status, &h).await?;
    if with_body {
        w.write_all(body).await?;
    }
    w.flush().await
}
