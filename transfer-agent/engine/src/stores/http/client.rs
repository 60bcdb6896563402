//! Requests to the servers of a URL list: redirects followed by hand (at most
//! [`MAX_REDIRECTS`], never from https to http, each hop checked by the private-network
//! guard), the list's headers (values never logged, dropped when a redirect leaves the
//! origin), the per-host and per-shard request rates, and transport errors classified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::stores::{SideSecrets, UrlListConfig, URL_LIST_HEADER_PREFIX};
use ferry_core::FailureClass;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, Response};
use url::Url;

use super::classify::status_error;
use super::guard::{check_literal, GuardedResolver, Refused};
use super::keys::loggable;
use crate::error::TransferError;
use crate::limit::{Limits, TokenBucket};

/// Redirects followed at most, per request.
pub const MAX_REDIRECTS: usize = 5;
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a response (or the next bytes of a body) may keep us waiting.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client of one URL-list store.
pub struct Client {
    http: reqwest::Client,
    /// From the Secret: sent to the list's URLs, not to other origins a redirect leads to.
    headers: HeaderMap,
    per_host: u32,
    hosts: Mutex<HashMap<String, Arc<TokenBucket>>>,
    allow_private: bool,
    limits: Arc<Limits>,
}

impl Client {
    pub fn new(
        cfg: &UrlListConfig,
        secrets: &SideSecrets,
        limits: Arc<Limits>,
    ) -> Result<Self, TransferError> {
        let mut headers = HeaderMap::new();
        for (name, value) in secrets.with_prefix(URL_LIST_HEADER_PREFIX) {
            let bad = |what: &str| {
                TransferError::new(
                    FailureClass::InvalidRequest,
                    format!("headersSecretRef: the key {name:?} {what}"),
                )
                .fatal()
            };
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("is not a valid header name"))?;
            let mut v = HeaderValue::from_str(value)
                .map_err(|_| bad("has a value that is not a valid header value"))?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")));
        if !cfg.allow_private_networks {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let http = builder.build().map_err(|e| {
            TransferError::new(
                FailureClass::Internal,
                format!("cannot set up the HTTP client: {e}"),
            )
            .fatal()
        })?;
        Ok(Client {
            http,
            headers,
            per_host: cfg.requests_per_second_per_host,
            hosts: Mutex::new(HashMap::new()),
            allow_private: cfg.allow_private_networks,
            limits,
        })
    }

    /// Waits for the right to send one request to `url`'s host.
    async fn pace(&self, url: &Url) {
        self.limits.request().await;
        if self.per_host == 0 {
            return;
        }
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let bucket = self
            .hosts
            .lock()
            .unwrap()
            .entry(host)
            .or_insert_with(|| Arc::new(TokenBucket::new(self.per_host as f64)))
            .clone();
        bucket.take(1.0).await;
    }

    /// Sends `method` to `url` with `extra` headers, following redirects, and returns a
    /// successful (2xx) answer, or the error its status or the transport means.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        extra: &HeaderMap,
    ) -> Result<Response, TransferError> {
        let mut current = url.clone();
        for hop in 0..=MAX_REDIRECTS {
            let what = format!("{method} {}", loggable(&current));
            if !self.allow_private {
                check_literal(&current).map_err(|r| refused(&what, &r))?;
            }
            self.pace(&current).await;
            let mut req = self.http.request(method.clone(), current.clone());
            if current.origin() == url.origin() {
                req = req.headers(self.headers.clone());
            }
            let resp = req
                .headers(extra.clone())
                .send()
                .await
                .map_err(|e| transport_error(&what, &e))?;
            let status = resp.status();
            if status.is_redirection() {
                if let Some(loc) = resp.headers().get(LOCATION) {
                    let next = loc
                        .to_str()
                        .ok()
                        .and_then(|l| current.join(l).ok())
                        .ok_or_else(|| {
                            invalid(&what, "redirects to a Location that is not a URL")
                        })?;
                    if !matches!(next.scheme(), "http" | "https") {
                        return Err(invalid(&what, "redirects to a URL that is not http(s)"));
                    }
                    if current.scheme() == "https" && next.scheme() == "http" {
                        return Err(invalid(
                            &what,
                            &format!(
                                "redirects from https to http ({}); refused",
                                loggable(&next)
                            ),
                        ));
                    }
                    if hop == MAX_REDIRECTS {
                        return Err(invalid(
                            &what,
                            &format!("more than {MAX_REDIRECTS} redirects"),
                        ));
                    }
                    tracing::debug!(from = %loggable(&current), to = %loggable(&next), "redirect");
                    current = next;
                    continue;
                }
            }
            if !status.is_success() {
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                return Err(status_error(
                    status.as_u16(),
                    retry_after.as_deref(),
                    &what,
                    chrono::Utc::now(),
                ));
            }
            return Ok(resp);
        }
        unreachable!("the last hop returns")
    }
}

fn invalid(what: &str, why: &str) -> TransferError {
    TransferError::new(FailureClass::InvalidRequest, format!("{what}: {why}"))
        .with_code("BadRedirect")
        .retryable(false)
}

fn refused(what: &str, r: &Refused) -> TransferError {
    TransferError::new(FailureClass::InvalidRequest, format!("{what}: {r}"))
        .with_code("PrivateAddress")
        .retryable(false)
}

/// The TLS error `e` is or wraps (an io::Error's `source` skips the error it wraps, and
/// rustls's errors come wrapped in io::Errors, sometimes twice).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut e = e;
    loop {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// The error of a request that got no answer (or whose body broke off).
pub fn transport_error(what: &str, e: &reqwest::Error) -> TransferError {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return refused(what, r);
        }
        if let Some(t) = tls_error(s) {
            return TransferError::new(FailureClass::Network, format!("{what}: TLS failed: {t}"))
                .with_code("TlsError")
                .retryable(false);
        }
        chain.push(s.to_string());
        source = s.source();
    }
    let detail = chain.join(": ");
    let code = if e.is_timeout() {
        "Timeout"
    } else if e.is_connect() {
        "ConnectFailed"
    } else {
        "ConnectionReset"
    };
    TransferError::new(FailureClass::Network, format!("{what}: {detail}")).with_code(code)
}
