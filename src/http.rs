//! The one HTTP client of the process, with bounded, jittered retries.
//!
//! Every request the agent makes goes through [`HttpClient`]. It retries connection errors,
//! timeouts, 408, 429 and 5xx with exponential backoff and full jitter, honouring `Retry-After`;
//! it never retries other 4xx (a 404 is an answer, not a fault). There is no whole-request
//! timeout: a per-read idle timeout catches stalled transfers without failing slow links.
//! Redirects are followed; a retry starts again from the original URL (object-store redirect
//! targets expire).
//!
//! `transfer` holds the GETs (a small document, a download to a file), `request` any method
//! with its body from memory or a file, `redact` how URLs are shown.
#![allow(
    clippy::disallowed_methods,
    reason = "builds every HTTP client of the process; reads the system CA roots"
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use url::Url;

use crate::retry;

mod redact;
mod request;
mod settings;
mod transfer;

pub use redact::{redact, redact_str};
pub use request::{Answer, Request};
pub use settings::{CaBundle, Settings};
pub use transfer::Downloaded;

/// Largest `Retry-After` honoured; a server asking for more gets this much.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// What went wrong with a request, after retries.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {url}: the server answered {status} (after {attempts} attempt(s))")]
    Status {
        url: String,
        status: StatusCode,
        attempts: u32,
    },
    #[error("GET {url}: {reason} (after {attempts} attempt(s))")]
    Transport {
        url: String,
        reason: String,
        attempts: u32,
    },
    #[error("GET {url}: the body is larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error(
        "GET {url}: the connection closed after {received} of {expected} bytes (after {attempts} attempt(s))"
    )]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
        attempts: u32,
    },
    #[error("writing the download of {url} to {path}: {source}")]
    Write {
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// The file to send as a request body ([`Request::body_file`]) could not be opened.
    #[error("{method} {url}: reading the body from {path}: {source}")]
    ReadBody {
        method: String,
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A [`Request`] (any method) that failed after retries.
    #[error("{method} {url}: {reason} (after {attempts} attempt(s))")]
    Request {
        method: String,
        url: String,
        reason: String,
        /// The last status, when the server answered.
        status: Option<StatusCode>,
        attempts: u32,
    },
}

impl HttpError {
    /// The HTTP status, when the server answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            HttpError::Request { status, .. } => *status,
            _ => None,
        }
    }
}

/// The agent's HTTP client. Cheap to clone (it shares one connection pool).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    max_retries: u32,
    initial_backoff: Duration,
    /// Where this handle adds the size of every response body chunk it reads (see
    /// [`HttpClient::counting`]).
    received: Option<Arc<AtomicU64>>,
}

/// The process's one HTTP client, built on first use (a run that never downloads pays no TLS
/// setup). Clones share it: the software cache, the provider store and the tasks' downloads of
/// one runner hold clones of the same handle.
#[derive(Clone, Debug)]
pub struct SharedClient {
    config: Arc<Settings>,
    client: Arc<OnceLock<HttpClient>>,
}

impl SharedClient {
    /// A handle that builds the client from `config` the first time [`SharedClient::get`] is
    /// called.
    pub fn new(config: Settings) -> SharedClient {
        SharedClient {
            config: Arc::new(config),
            client: Arc::default(),
        }
    }

    /// The client, built now if this is the first call.
    pub fn get(&self) -> Result<&HttpClient, HttpError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = HttpClient::new(&self.config)?;
        Ok(self.client.get_or_init(|| c))
    }
}

impl HttpClient {
    /// Builds the client: extra CA bundle, explicit proxies (the environment is read by
    /// `config` only), timeouts.
    pub fn new(config: &Settings) -> Result<HttpClient, HttpError> {
        let inner = Self::builder(config)?
            .read_timeout(config.read_timeout)
            .build()
            .map_err(|e| HttpError::Client(e.to_string()))?;
        Ok(HttpClient {
            inner,
            max_retries: config.max_retries,
            initial_backoff: config.initial_backoff,
            received: None,
        })
    }

    /// A client for streamed relaying (`relay`): the same trust anchors and proxies, but
    /// redirects are never followed (a 3xx goes back to the caller as an answer) and nothing is
    /// retried, and no read timeout is set: the caller times its streams (the relay's idle
    /// timer counts bytes moved both ways, which a read timeout cannot). Bodies are not
    /// decompressed (no decompression feature is built), so `Content-Encoding` passes
    /// through untouched.
    pub fn streaming(config: &Settings) -> Result<HttpClient, HttpError> {
        let inner = Self::builder(config)?
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| HttpError::Client(e.to_string()))?;
        Ok(HttpClient {
            inner,
            max_retries: 0,
            initial_backoff: config.initial_backoff,
            received: None,
        })
    }

    /// One attempt of any request with a streamed body, answered with the raw response (any
    /// status) for the caller to stream. Nothing is retried: the body is a stream that cannot
    /// be replayed, and the caller decides whether a request may be repeated.
    pub async fn stream(
        &self,
        method: reqwest::Method,
        url: &Url,
        headers: reqwest::header::HeaderMap,
        body: Option<reqwest::Body>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, HttpError> {
        let mut b = self
            .inner
            .request(method.clone(), url.clone())
            .headers(headers);
        if let Some(body) = body {
            b = b.body(body);
        }
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.send().await.map_err(|e| {
            let shown = redact(url);
            HttpError::Request {
                method: method.to_string(),
                reason: chain(&e).replace(&shown, "").replace(url.as_str(), ""),
                url: shown,
                status: None,
                attempts: 1,
            }
        })
    }

    /// The builder every client of the process starts from.
    fn builder(config: &Settings) -> Result<reqwest::ClientBuilder, HttpError> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("scalr-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .no_proxy()
            .tls_built_in_root_certs(true);
        if let Some(bundle) = &config.ca_bundle {
            for cert in reqwest::Certificate::from_pem_bundle(bundle.pem())
                .map_err(|e| HttpError::Client(format!("CA bundle: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let no_proxy = config
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        if let Some(p) = &config.http_proxy {
            b = b.proxy(
                reqwest::Proxy::http(p.as_str())
                    .map_err(|e| HttpError::Client(format!("HTTP_PROXY: {e}")))?
                    .no_proxy(no_proxy.clone()),
            );
        }
        if let Some(p) = &config.https_proxy {
            b = b.proxy(
                reqwest::Proxy::https(p.as_str())
                    .map_err(|e| HttpError::Client(format!("HTTPS_PROXY: {e}")))?
                    .no_proxy(no_proxy),
            );
        }
        Ok(b)
    }

    /// A handle on the same connection pool that adds the size of every response body chunk
    /// it reads to `counter`, on every attempt (bytes of an attempt that failed and was
    /// retried count too): the traffic its requests caused. The software cache counts its
    /// downloads this way.
    pub fn counting(&self, counter: Arc<AtomicU64>) -> HttpClient {
        HttpClient {
            received: Some(counter),
            ..self.clone()
        }
    }

    fn count(&self, bytes: usize) {
        if let Some(c) = &self.received {
            c.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// The retry policy of this client for a request allowing `max_retries` retries.
    fn policy(&self, max_retries: u32) -> retry::Policy {
        retry::Policy::bounded(self.initial_backoff, max_retries)
    }

    /// Runs `body` on each successful response, retrying the whole request (status and body)
    /// on retryable failures.
    async fn retrying<T, F, Fut>(&self, url: &Url, body: F) -> Result<T, HttpError>
    where
        F: Fn(reqwest::Response, u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let shown = &redact(url);
        let body = &body;
        let once = move |attempt: u32| async move {
            match self.inner.get(url.clone()).send().await {
                Err(e) => Err(transport(shown, &e, attempt, 0, None)),
                Ok(resp) if resp.status().is_success() => body(resp, attempt).await,
                Ok(resp) => {
                    let status = resp.status();
                    let error = HttpError::Status {
                        url: shown.clone(),
                        status,
                        attempts: attempt,
                    };
                    if is_retryable(status) {
                        let after = retry_after(&resp);
                        Err(Attempt::Retry { error, after })
                    } else {
                        Err(Attempt::Fatal(error))
                    }
                }
            }
        };
        self.policy(self.max_retries)
            .run(once, |error, attempt, delay| {
                tracing::warn!(url = %shown, attempt, delay_ms = delay.as_millis() as u64, error = %error, "request failed; retrying");
            })
            .await
    }
}

/// One attempt's failure: worth another try, or final.
type Attempt = retry::Attempt<HttpError>;

fn transport(
    url: &str,
    e: &reqwest::Error,
    attempts: u32,
    received: u64,
    expected: Option<u64>,
) -> Attempt {
    if let Some(expected) = expected.filter(|_| e.is_body() || e.is_decode())
        && received < expected
    {
        return Attempt::retry(HttpError::Truncated {
            url: url.to_string(),
            received,
            expected,
            attempts,
        });
    }
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    let reason = reason.replace(url, "");
    Attempt::retry(HttpError::Transport {
        url: url.to_string(),
        reason,
        attempts,
    })
}

fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// An error with its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    chain(e)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut reason = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    reason
}

/// The system's CA bundle (Debian's path), empty when absent: what tasks trust besides an
/// operator's extra bundle.
pub fn system_roots_pem() -> Vec<u8> {
    std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = HttpClient::new(&Settings {
            initial_backoff: Duration::from_millis(100),
            ..Settings::default()
        })
        .unwrap();
        for _ in 0..50 {
            let d1 = c.policy(3).delay(1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d4 = c.policy(3).delay(4);
            assert!(
                d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800),
                "{d4:?}"
            );
            assert!(c.policy(3).delay(30) <= retry::MAX_BACKOFF);
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 410] {
            assert!(!is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
