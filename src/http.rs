//! The one HTTP client of the process, with bounded, jittered retries.
//!
//! Every request the agent makes goes through [`HttpClient`]. It retries connection errors,
//! timeouts, 408, 429 and 5xx with exponential backoff and full jitter, honouring `Retry-After`;
//! it never retries other 4xx (a 404 is an answer, not a fault). There is no whole-request
//! timeout: a per-read idle timeout catches stalled transfers without failing slow links.
//! Redirects are followed; a retry starts again from the original URL (object-store redirect
//! targets expire).
#![allow(
    clippy::disallowed_methods,
    reason = "streams request bodies from the agent's spool and reads the system CA roots"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use sha2::{Digest, Sha256};
use url::Url;

use crate::config::HttpConfig;
use crate::retry;

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
    config: Arc<HttpConfig>,
    client: Arc<OnceLock<HttpClient>>,
}

impl SharedClient {
    /// A handle that builds the client from `config` the first time [`SharedClient::get`] is
    /// called.
    pub fn new(config: HttpConfig) -> SharedClient {
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

/// The result of a download to a file.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub size: u64,
    pub sha256: String,
}

impl HttpClient {
    /// Builds the client: extra CA bundle, explicit proxies (the environment is read by
    /// `config` only), timeouts.
    pub fn new(config: &HttpConfig) -> Result<HttpClient, HttpError> {
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
    /// retried. `idle`, when set, bounds the wait for the response head (counted from the
    /// request's start) and then each wait for a body chunk; without it only the caller's
    /// whole-request timeout applies (uploads whose answer comes after a long body). Bodies
    /// are not decompressed (no decompression feature is built), so `Content-Encoding` passes
    /// through untouched.
    pub fn streaming(config: &HttpConfig, idle: Option<Duration>) -> Result<HttpClient, HttpError> {
        let mut b = Self::builder(config)?
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64);
        if let Some(idle) = idle {
            b = b.read_timeout(idle);
        }
        let inner = b.build().map_err(|e| HttpError::Client(e.to_string()))?;
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
    fn builder(config: &HttpConfig) -> Result<reqwest::ClientBuilder, HttpError> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("scalr-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .no_proxy()
            .tls_built_in_root_certs(true);
        if let Some(bundle) = &config.ca_bundle {
            for cert in reqwest::Certificate::from_pem_bundle(&bundle.pem)
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

    /// GETs a small document into memory (checksum files, signatures), at most `limit` bytes.
    pub async fn get_bytes(&self, url: &Url, limit: u64) -> Result<Vec<u8>, HttpError> {
        let shown = redact(url);
        self.retrying(url, |resp, attempts| {
            let shown = shown.clone();
            async move {
                if resp.content_length().is_some_and(|n| n > limit) {
                    return Err(Attempt::Fatal(HttpError::TooLarge { url: shown, limit }));
                }
                let expected = resp.content_length();
                let mut body = Vec::new();
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        transport(&shown, &e, attempts, body.len() as u64, expected)
                    })?;
                    self.count(chunk.len());
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Err(Attempt::Fatal(HttpError::TooLarge { url: shown, limit }));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        })
        .await
    }

    /// Streams a GET into `path` (created or truncated), hashing with SHA256 in the same pass.
    /// Hashing and writing happen on a blocking thread fed through a small channel, so memory
    /// stays bounded whatever the file's size. A failed attempt starts again from byte zero.
    pub async fn download(
        &self,
        url: &Url,
        path: &Path,
        limit: u64,
    ) -> Result<Downloaded, HttpError> {
        let shown = redact(url);
        self.retrying(url, |resp, attempts| {
            let shown = shown.clone();
            let path = path.to_path_buf();
            async move {
                let expected = resp.content_length();
                if expected.is_some_and(|n| n > limit) {
                    return Err(Attempt::Fatal(HttpError::TooLarge { url: shown, limit }));
                }
                let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
                let write_path = path.clone();
                let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Downloaded> {
                    use std::io::Write;
                    let file = std::fs::File::create(&write_path)?;
                    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
                    let mut hasher = Sha256::new();
                    let mut size = 0u64;
                    while let Some(chunk) = rx.blocking_recv() {
                        hasher.update(&chunk);
                        out.write_all(&chunk)?;
                        size += chunk.len() as u64;
                    }
                    let file = out.into_inner().map_err(|e| e.into_error())?;
                    file.sync_all()?;
                    Ok(Downloaded {
                        size,
                        sha256: hex::encode(hasher.finalize()),
                    })
                });
                let mut received = 0u64;
                let mut stream = resp.bytes_stream();
                let mut failure = None;
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(chunk) => {
                            self.count(chunk.len());
                            received += chunk.len() as u64;
                            if received > limit {
                                failure = Some(Attempt::Fatal(HttpError::TooLarge {
                                    url: shown.clone(),
                                    limit,
                                }));
                                break;
                            }
                            if tx.send(chunk).await.is_err() {
                                break; // The writer failed; its error is reported below.
                            }
                        }
                        Err(e) => {
                            failure = Some(transport(&shown, &e, attempts, received, expected));
                            break;
                        }
                    }
                }
                drop(tx);
                let written = writer
                    .await
                    .map_err(|e| {
                        Attempt::Fatal(HttpError::Client(format!("download writer panicked: {e}")))
                    })?
                    .map_err(|source| {
                        Attempt::Fatal(HttpError::Write {
                            url: shown.clone(),
                            path,
                            source,
                        })
                    })?;
                if let Some(f) = failure {
                    return Err(f);
                }
                if let Some(expected) = expected
                    && written.size != expected
                {
                    return Err(Attempt::retry(HttpError::Truncated {
                        url: shown,
                        received: written.size,
                        expected,
                        attempts,
                    }));
                }
                Ok(written)
            }
        })
        .await
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

/// A URL as it may be shown: any password or token in it replaced by `***`.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    } else if !u.username().is_empty() {
        // `https://TOKEN@host/`: a user name alone is how many mirrors take a token.
        let _ = u.set_username("***");
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = [
                    "token",
                    "sig",
                    "signature",
                    "key",
                    "password",
                    "x-amz-signature",
                    "x-amz-credential",
                ]
                .iter()
                .any(|s| k.to_ascii_lowercase().contains(s));
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// [`redact`] for a string that may not even parse as a URL: whatever stands before an `@` in
/// its authority is hidden, and the scheme and the rest are kept so the reader sees the mistake.
pub fn redact_str(s: &str) -> String {
    if let Ok(u) = Url::parse(s)
        && s.contains("://")
    {
        return redact(&u);
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), s),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}{}", &rest[authority_end..]),
        None => s.to_string(),
    }
}

/// A request of any method, for APIs (the control-plane protocol). Cloned for each attempt.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: Url,
    /// Extra headers (e.g. `Authorization`); a sensitive value must be marked so by the caller.
    pub headers: reqwest::header::HeaderMap,
    pub body: Option<bytes::Bytes>,
    /// Whole-request timeout of one attempt (long polls set it above the server's hold time).
    pub timeout: Option<Duration>,
    /// Largest response body kept in memory.
    pub limit: u64,
    /// Overrides the client's retry count for this request (0: one attempt only).
    pub max_retries: Option<u32>,
    /// Stream a successful (2xx) body into this file instead of memory (`limit` still applies).
    pub save_to: Option<PathBuf>,
    /// Send this file as the body instead of `body`: streamed from disk (memory stays bounded
    /// whatever its size), reopened from its start on every attempt, with `Content-Length`
    /// set to its size so the server can refuse an oversized upload before it arrives.
    pub body_file: Option<PathBuf>,
}

impl Request {
    /// A request with no body, no extra headers, a 1 MiB response limit and default retries.
    pub fn new(method: reqwest::Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: reqwest::header::HeaderMap::new(),
            body: None,
            timeout: None,
            limit: 1 << 20,
            max_retries: None,
            save_to: None,
            body_file: None,
        }
    }
}

/// A response that is not worth retrying: any 1xx-4xx except 408 and 429, with its body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// Empty when the body was saved to a file.
    pub body: bytes::Bytes,
}

impl HttpClient {
    /// Sends `req`, retrying connection errors, timeouts, truncated bodies, 408, 429 and 5xx
    /// with the same jittered backoff and `Retry-After` rule as GETs. Any other status is an
    /// answer for the caller to interpret, with its body (up to `req.limit`). Only idempotent
    /// requests may be sent this way: a retry repeats the request as it was.
    pub async fn send(&self, req: &Request) -> Result<Answer, HttpError> {
        let shown = &redact(&req.url);
        let max_retries = req.max_retries.unwrap_or(self.max_retries);
        self.policy(max_retries)
            .run(
                |attempt| self.send_once(req, shown, attempt),
                |error, attempt, delay| {
                    tracing::debug!(method = %req.method, url = %shown, attempt, delay_ms = delay.as_millis() as u64, error = %error, "request failed; retrying");
                },
            )
            .await
    }

    /// One attempt of [`HttpClient::send`].
    async fn send_once(&self, req: &Request, shown: &str, attempt: u32) -> Result<Answer, Attempt> {
        let fail = |reason: String, status: Option<StatusCode>| HttpError::Request {
            method: req.method.to_string(),
            url: shown.to_string(),
            reason,
            status,
            attempts: attempt,
        };
        let mut b = self
            .inner
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(path) = &req.body_file {
            let (body, len) = file_body(path).await.map_err(|source| {
                Attempt::Fatal(HttpError::ReadBody {
                    method: req.method.to_string(),
                    url: shown.to_string(),
                    path: path.clone(),
                    source,
                })
            })?;
            b = b.header(reqwest::header::CONTENT_LENGTH, len).body(body);
        } else if let Some(body) = &req.body {
            b = b.body(body.clone());
        }
        if let Some(t) = req.timeout {
            b = b.timeout(t);
        }
        let resp = match b.send().await {
            Err(e) => return Err(Attempt::retry(fail(chain(&e).replace(shown, ""), None))),
            Ok(resp) => resp,
        };
        let status = resp.status();
        if is_retryable(status) {
            return Err(Attempt::Retry {
                after: retry_after(&resp),
                error: fail(format!("the server answered {status}"), Some(status)),
            });
        }
        read_answer(resp, req, self).await.map_err(|e| match e {
            AnswerError::TooLarge => Attempt::Fatal(fail(
                format!("the body is larger than the {}-byte limit", req.limit),
                Some(status),
            )),
            AnswerError::Write(e) => {
                Attempt::Fatal(fail(format!("writing the body: {e}"), Some(status)))
            }
            AnswerError::Read(reason) => Attempt::retry(fail(reason, Some(status))),
        })
    }
}

enum AnswerError {
    TooLarge,
    Read(String),
    Write(std::io::Error),
}

/// A file as a streamed request body (read in 64 KiB chunks as the connection takes them),
/// with its size.
async fn file_body(path: &Path) -> std::io::Result<(reqwest::Body, u64)> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    Ok((reqwest::Body::wrap_stream(stream), len))
}

async fn read_answer(
    resp: reqwest::Response,
    req: &Request,
    client: &HttpClient,
) -> Result<Answer, AnswerError> {
    use tokio::io::AsyncWriteExt;
    let status = resp.status();
    let headers = resp.headers().clone();
    if resp.content_length().is_some_and(|n| n > req.limit) {
        return Err(AnswerError::TooLarge);
    }
    let mut file = match (&req.save_to, status.is_success()) {
        (Some(path), true) => Some(
            tokio::fs::File::create(path)
                .await
                .map_err(AnswerError::Write)?,
        ),
        _ => None,
    };
    let mut body = Vec::new();
    let mut received = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AnswerError::Read(chain(&e)))?;
        client.count(chunk.len());
        received += chunk.len() as u64;
        if received > req.limit {
            return Err(AnswerError::TooLarge);
        }
        match &mut file {
            Some(f) => f.write_all(&chunk).await.map_err(AnswerError::Write)?,
            None => body.extend_from_slice(&chunk),
        }
    }
    if let Some(mut f) = file {
        f.flush().await.map_err(AnswerError::Write)?;
        f.sync_all().await.map_err(AnswerError::Write)?;
    }
    Ok(Answer {
        status,
        headers,
        body: body.into(),
    })
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
    fn redaction_hides_credentials() {
        let u =
            Url::parse("https://user:pa55@mirror.internal/tf/?X-Amz-Signature=abc&v=1").unwrap();
        let shown = redact(&u);
        assert!(!shown.contains("pa55") && !shown.contains("abc"), "{shown}");
        assert!(
            shown.contains("user:***@") && shown.contains("v=1"),
            "{shown}"
        );
        assert_eq!(redact_str("u:p@proxy:3128"), "***@proxy:3128");
        // A token as the user name, with no password.
        let shown = redact(&Url::parse("https://TOKEN123@mirror.internal/tf/").unwrap());
        assert_eq!(shown, "https://***@mirror.internal/tf/");
        // A URL that does not parse keeps its scheme and loses its credentials.
        assert_eq!(
            redact_str("http://user:pw@127.0.0.1:99999/terraform"),
            "http://***@127.0.0.1:99999/terraform"
        );
        assert_eq!(redact_str("http://a@b@host:1/x@y"), "http://***@host:1/x@y");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = HttpClient::new(&HttpConfig {
            initial_backoff: Duration::from_millis(100),
            ..HttpConfig::default()
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
