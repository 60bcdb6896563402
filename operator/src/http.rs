//! The operator's HTTP port: `/metrics` (Prometheus), `/healthz` (liveness) and `/readyz`
//! (readiness). A deliberately small HTTP/1.1 server (one GET per connection, then close):
//! probes and scrapes need nothing more, and it adds no server stack to the build.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// The largest request head read; longer ones are answered 431.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head (a stalled one does not hold a task).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong starting the server.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--http-addr): {source}")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Listens on `addr` and serves until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    tracing::info!(addr = %local, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, metrics.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

/// Reads one request head and writes the response.
async fn answer(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        _ => return,
    };
    let response = match head {
        Some(head) => route(&head, &metrics),
        None => Response::text(
            431,
            "Request Header Fields Too Large",
            "request too large\n",
        ),
    };
    let _ = stream.write_all(&response.to_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The request head (up to the blank line), or None when it is longer than [`MAX_HEAD`].
async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// An HTTP response.
#[derive(Debug, PartialEq)]
struct Response {
    code: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(code: u16, reason: &'static str, body: &str) -> Response {
        Response {
            code,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.code,
            self.reason,
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// The response to a request head (pure).
fn route(head: &str, metrics: &Metrics) -> Response {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return Response::text(405, "Method Not Allowed", "GET only\n");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => Response {
            code: 200,
            reason: "OK",
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: metrics.encode(),
        },
        "/healthz" => Response::text(200, "OK", "ok\n"),
        "/readyz" if metrics.is_ready() => Response::text(200, "OK", "ok\n"),
        "/readyz" => Response::text(503, "Service Unavailable", "not ready\n"),
        _ => Response::text(404, "Not Found", "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_probes_and_metrics() {
        let m = Metrics::new();
        let get = |p: &str| route(&format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"), &m);
        assert_eq!(get("/healthz").code, 200);
        assert_eq!(get("/readyz").code, 503, "not ready before set_ready");
        m.set_ready();
        assert_eq!(get("/readyz").code, 200);
        let metrics = get("/metrics?x=1");
        assert_eq!(metrics.code, 200);
        assert!(metrics.body.contains("ferry_leader 0"), "{}", metrics.body);
        assert!(metrics.body.ends_with("# EOF\n"));
        assert_eq!(get("/other").code, 404);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n", &m).code, 405);
        assert_eq!(route("", &m).code, 405);
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let m = Arc::new(Metrics::new());
        let addr = serve("127.0.0.1:0".parse().unwrap(), m).await.unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nok\n"), "{out}");
    }

    #[tokio::test]
    async fn a_head_is_read_to_its_blank_line_and_an_endless_one_is_refused() {
        let mut short: &[u8] = b"GET / HTTP/1.1\r\n\r\nbody";
        let head = read_head(&mut short).await.unwrap().unwrap();
        assert!(head.starts_with("GET / HTTP/1.1\r\n\r\n"));
        let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(read_head(&mut long.as_slice()).await.unwrap(), None);
    }
}
