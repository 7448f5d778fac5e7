//! The relay's side of the relay protocol (`docs/protocol.md`, "Relay protocol v1"): the only
//! code of the relay that speaks to the control plane, always through [`HttpClient`].
//!
//! JSON calls (register, acquire, cancellations, refused, failed, deregister) go through
//! `HttpClient::send` (retried when idempotent). A request's body is read from
//! `GET …/body` and its response is sent as one streamed `POST …/response` (a JSON head line,
//! then the body): neither is retried after a failure, so a request is never performed twice
//! by the relay. A `401` on any session call (the control plane restarted and forgot the session) registers
//! again once, serialized by a generation counter so that concurrent calls refused together
//! register once, and repeats the call once: a body download from the start, a response
//! upload with the same bytes (`upload`).

use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::upload::Upload;
use super::wire::Registered;
pub use super::wire::{Head, Hello, Incoming};
use crate::http::{Answer, HttpClient, HttpError, Request};
use crate::secret::Secret;

/// The header every call carries.
pub const PROTOCOL_HEADER: &str = "Scalr-Relay-Protocol";

/// What went wrong talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The pool token was refused: the relay stops.
    #[error(
        "the control plane refused the relay pool token (SCALR_AGENT_TOKEN): {status} {message}"
    )]
    TokenRejected { status: u16, message: String },
    #[error("the control plane at {url} does not speak relay protocol v1 (it answered {status})")]
    NotSpoken { url: String, status: u16 },
    #[error("{call}: the control plane is unreachable: {source}")]
    Unavailable {
        call: &'static str,
        source: HttpError,
    },
    #[error("{call}: the control plane answered {status}: {message}")]
    Status {
        call: &'static str,
        status: u16,
        message: String,
    },
    #[error("{call}: malformed answer: {reason}")]
    Malformed { call: &'static str, reason: String },
}

impl GatewayError {
    /// The relay cannot go on (bad token, wrong protocol).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            GatewayError::TokenRejected { .. } | GatewayError::NotSpoken { .. }
        )
    }
}

#[derive(Debug, Clone)]
struct Session {
    token: Secret,
    relay_id: String,
    poll_timeout: Duration,
    generation: u64,
}

/// The control-plane client of one relay.
#[derive(Debug)]
pub struct Gateway {
    http: HttpClient,
    /// For the streamed calls: no read timeout (a response upload is answered only after
    /// its whole body); bounded by the request's timeout instead.
    streams: HttpClient,
    base: Url,
    token: Secret,
    hello: Hello,
    session: tokio::sync::Mutex<Option<Session>>,
    last: Mutex<Option<Session>>,
}

impl Gateway {
    pub fn new(
        http: HttpClient,
        streams: HttpClient,
        url: &Url,
        token: Secret,
        hello: Hello,
    ) -> Gateway {
        let mut base = url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let base = base.join("api/relay/v1/").expect("a relative path joins");
        Gateway {
            http,
            streams,
            base,
            token,
            hello,
            session: tokio::sync::Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("protocol paths join")
    }

    fn headers(token: &Secret) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
        auth.set_sensitive(true);
        h.insert(AUTHORIZATION, auth);
        h.insert(PROTOCOL_HEADER, HeaderValue::from_static("1"));
        h
    }

    /// The relay id of the current session, once registered.
    pub fn relay_id(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.relay_id.clone())
    }

    /// The server's long-poll hold time.
    pub fn poll_timeout(&self) -> Duration {
        self.last
            .lock()
            .unwrap()
            .as_ref()
            .map_or(Duration::from_secs(25), |s| s.poll_timeout)
    }

    /// Registers (again, when `seen` is the generation that failed; otherwise another caller
    /// already did).
    pub async fn register(&self, seen: Option<u64>) -> Result<(), GatewayError> {
        let mut guard = self.session.lock().await;
        if let (Some(s), Some(seen)) = (guard.as_ref(), seen)
            && s.generation != seen
        {
            return Ok(());
        }
        let mut req = Request::new(Method::POST, self.url("register"));
        req.headers = Self::headers(&self.token);
        req.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.body = Some(
            serde_json::to_vec(&self.hello)
                .expect("serializable")
                .into(),
        );
        req.max_retries = Some(0);
        req.timeout = Some(Duration::from_secs(30));
        let a = self
            .http
            .send(&req)
            .await
            .map_err(|source| GatewayError::Unavailable {
                call: "register",
                source,
            })?;
        match a.status.as_u16() {
            200 | 201 => {}
            401 | 403 => {
                return Err(GatewayError::TokenRejected {
                    status: a.status.as_u16(),
                    message: message(&a),
                });
            }
            s @ (404 | 410 | 426) => {
                return Err(GatewayError::NotSpoken {
                    url: crate::http::redact(&self.base),
                    status: s,
                });
            }
            s => {
                return Err(GatewayError::Status {
                    call: "register",
                    status: s,
                    message: message(&a),
                });
            }
        }
        let r: Registered =
            serde_json::from_slice(&a.body).map_err(|e| GatewayError::Malformed {
                call: "register",
                reason: e.to_string(),
            })?;
        let generation = guard.as_ref().map_or(1, |s| s.generation + 1);
        let s = Session {
            token: Secret::new(r.session_token),
            relay_id: r.relay_id,
            poll_timeout: Duration::from_millis(r.poll_timeout_ms.clamp(1000, 60_000)),
            generation,
        };
        *self.last.lock().unwrap() = Some(s.clone());
        *guard = Some(s);
        Ok(())
    }

    async fn session(&self) -> Option<Session> {
        self.session.lock().await.clone()
    }

    /// A JSON call with the session token; a `401` registers again once and repeats it.
    async fn call(
        &self,
        call: &'static str,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
        retries: Option<u32>,
    ) -> Result<Answer, GatewayError> {
        for again in [false, true] {
            let s = self.current().await?;
            let mut req = Request::new(Method::POST, self.url(path));
            req.headers = Self::headers(&s.token);
            req.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            req.body = Some(body.to_string().into());
            req.timeout = Some(timeout);
            req.max_retries = retries;
            let a = self
                .http
                .send(&req)
                .await
                .map_err(|source| GatewayError::Unavailable { call, source })?;
            if a.status.as_u16() == 401 && !again {
                self.register(Some(s.generation)).await?;
                continue;
            }
            if a.status.is_success() {
                return Ok(a);
            }
            return Err(GatewayError::Status {
                call,
                status: a.status.as_u16(),
                message: message(&a),
            });
        }
        Err(refused_again(call))
    }

    /// Long-polls for a request; `None` when the server's hold time passed.
    pub async fn acquire(&self) -> Result<Option<Incoming>, GatewayError> {
        let wait = self.poll_timeout();
        let body = json!({"wait_ms": wait.as_millis() as u64});
        let a = self
            .call(
                "acquire",
                "requests/acquire",
                body,
                wait + Duration::from_secs(10),
                Some(0),
            )
            .await?;
        if a.status.as_u16() == 204 || a.body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&a.body)
            .map(Some)
            .map_err(|e| GatewayError::Malformed {
                call: "acquire",
                reason: e.to_string(),
            })
    }

    /// Long-polls for the ids of requests the server cancelled.
    pub async fn cancellations(&self) -> Result<Vec<String>, GatewayError> {
        #[derive(Deserialize)]
        struct Cancelled {
            #[serde(default)]
            request_ids: Vec<String>,
        }
        let wait = self.poll_timeout();
        let body = json!({"wait_ms": wait.as_millis() as u64});
        let a = self
            .call(
                "cancellations",
                "cancellations",
                body,
                wait + Duration::from_secs(10),
                Some(0),
            )
            .await?;
        if a.body.is_empty() {
            return Ok(Vec::new());
        }
        let c: Cancelled =
            serde_json::from_slice(&a.body).map_err(|e| GatewayError::Malformed {
                call: "cancellations",
                reason: e.to_string(),
            })?;
        Ok(c.request_ids)
    }

    /// The current session, registering first when there is none.
    async fn current(&self) -> Result<Session, GatewayError> {
        if let Some(s) = self.session().await {
            return Ok(s);
        }
        self.register(None).await?;
        self.session().await.ok_or(GatewayError::Status {
            call: "register",
            status: 401,
            message: "no session after registering".into(),
        })
    }

    /// Opens the request's body stream. A `401` registers again once and asks again
    /// (nothing reached the VCS yet).
    pub async fn body(&self, id: &str) -> Result<reqwest::Response, GatewayError> {
        let url = self.url(&format!("requests/{}/body", enc(id)));
        for again in [false, true] {
            let s = self.current().await?;
            let r = self
                .streams
                .stream(Method::GET, &url, Self::headers(&s.token), None, None)
                .await
                .map_err(|source| GatewayError::Unavailable {
                    call: "body",
                    source,
                })?;
            if r.status().as_u16() == 401 && !again {
                self.register(Some(s.generation)).await?;
                continue;
            }
            if !r.status().is_success() {
                return Err(GatewayError::Status {
                    call: "body",
                    status: r.status().as_u16(),
                    message: "the request body is not available".into(),
                });
            }
            return Ok(r);
        }
        Err(refused_again("body"))
    }

    /// Sends the response (head line, then body) as one streamed upload. A `401` registers
    /// again once and sends the same bytes again when [`Upload`] still has them; nothing else
    /// is repeated, and the VCS is never asked twice.
    pub async fn respond(&self, id: &str, upload: &Upload) -> Result<(), GatewayError> {
        let url = self.url(&format!("requests/{}/response", enc(id)));
        for again in [false, true] {
            let s = self.current().await?;
            let Some(body) = upload.next_attempt() else {
                return Err(GatewayError::Status {
                    call: "response",
                    status: 401,
                    message: format!(
                        "the session was refused after more than {} KiB of the response had \
                         been sent; it cannot be sent again",
                        super::upload::KEEP_LIMIT >> 10
                    ),
                });
            };
            let mut h = Self::headers(&s.token);
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let body = reqwest::Body::wrap_stream(body);
            let r = self
                .streams
                .stream(Method::POST, &url, h, Some(body), None)
                .await
                .map_err(|source| GatewayError::Unavailable {
                    call: "response",
                    source,
                })?;
            if r.status().as_u16() == 401 && !again {
                drop(r);
                self.register(Some(s.generation)).await?;
                continue;
            }
            if r.status().is_success() {
                return Ok(());
            }
            return Err(GatewayError::Status {
                call: "response",
                status: r.status().as_u16(),
                message: "the response was not accepted".into(),
            });
        }
        Err(refused_again("response"))
    }

    /// Reports a refusal (idempotent, retried).
    pub async fn refused(
        &self,
        id: &str,
        rule_set: &str,
        reason: &str,
    ) -> Result<(), GatewayError> {
        let body = json!({"rule_set": rule_set, "reason": reason});
        let path = format!("requests/{}/refused", enc(id));
        self.call("refused", &path, body, Duration::from_secs(30), None)
            .await
            .map(drop)
    }

    /// Reports a failure; `sent` says whether the request may have reached the VCS.
    pub async fn failed(&self, id: &str, reason: &str, sent: bool) -> Result<(), GatewayError> {
        let body = json!({"reason": reason, "sent": sent});
        let path = format!("requests/{}/failed", enc(id));
        self.call("failed", &path, body, Duration::from_secs(30), None)
            .await
            .map(drop)
    }

    /// Leaves the pool (one attempt).
    pub async fn deregister(&self) -> Result<(), GatewayError> {
        self.call(
            "deregister",
            "deregister",
            json!({}),
            Duration::from_secs(2),
            Some(0),
        )
        .await
        .map(drop)
    }
}

/// Characters of a request id that are escaped in a path segment (all but RFC 3986's
/// unreserved ones).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

fn refused_again(call: &'static str) -> GatewayError {
    GatewayError::Status {
        call,
        status: 401,
        message: "the session was refused again after registering".into(),
    }
}

fn message(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
}
