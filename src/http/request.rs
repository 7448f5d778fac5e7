//! Requests of any method (the control-plane protocol): a body from memory or streamed from a
//! file, retried under the client's policy; statuses not worth retrying come back as an
//! [`Answer`] for the caller to interpret.
#![allow(
    clippy::disallowed_methods,
    reason = "streams request bodies from the agent's spool"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use url::Url;

use super::{Attempt, HttpClient, HttpError, chain, is_retryable, redact, retry_after};

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
