//! The agent-level calls: register, heartbeat, acquire, deregister; and the request
//! building that the task-level calls (`task_api`) share.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::answer::{error_code, error_message, parse, unexpected};
use super::wire::{
    AcquireRequest, Acquired, Heartbeat, HeartbeatAnswer, PROTOCOL_V1_1, RegisterRequest,
    RegisterResponse,
};
use super::{
    API_PREFIX, ControlError, POLL_SLACK, PROTOCOL_HEADER, PROTOCOL_VERSION, REQUEST_TIMEOUT,
};
use crate::http::{Answer, HttpClient, Request};
use crate::secret::Secret;

/// The heartbeat interval never exceeds this, whatever the server says.
const MAX_HEARTBEAT: Duration = Duration::from_secs(10);
/// Largest `/tasks/acquire` answer read; the task document inside is limited to 1 MiB by the
/// daemon, which fails an oversized task by its id (so the envelope may be larger).
pub const MAX_ACQUIRE_BYTES: u64 = 8 << 20;

/// The session the control plane gave at registration.
#[derive(Debug, Clone)]
pub struct Session {
    pub agent_id: String,
    pub token: Secret,
    pub heartbeat_interval: Duration,
    pub poll_timeout: Duration,
    /// The server announced protocol v1.1 (cursors, acquire ids, the short chunk deadline);
    /// otherwise the agent keeps the v1 behaviour.
    pub v1_1: bool,
    /// The task lease the server announced (v1.1), at least three heartbeat intervals;
    /// `None`: no leases (the agent never fences its tasks).
    pub lease: Option<Duration>,
    /// Counts registrations, so concurrent 401s re-register only once.
    pub(super) generation: u64,
}

/// Where the agent keeps its identity between processes (the state file): the agent id and
/// the reclaim secret of its last registration. [`ControlClient::register`] saves there after
/// every registration, before the new session's first call, so a crash loses no secret the
/// server still expects. Blocking (it writes a file): called on a blocking thread.
pub trait IdentityStore: Send + Sync + std::fmt::Debug {
    fn save(&self, agent_id: &str, reclaim_secret: Option<&Secret>) -> std::io::Result<()>;
}

/// The client of protocol v1. Shared by the daemon's tasks behind an `Arc`.
#[derive(Debug)]
pub struct ControlClient {
    pub(super) http: HttpClient,
    pub(super) base: Url,
    pool_token: Secret,
    registration: Mutex<RegisterRequest>,
    session: Mutex<Option<Session>>,
    reregister: tokio::sync::Mutex<()>,
    /// The request id of an acquire whose answer has not arrived yet: sent again by the next
    /// attempt, so a lost answer costs nothing (v1.1).
    pending_acquire: Mutex<Option<String>>,
    /// Keeps the agent id and reclaim secret for the next process (none: not kept).
    store: Option<std::sync::Arc<dyn IdentityStore>>,
}

impl ControlClient {
    /// A client for the control plane at `scalr_url` (the protocol lives under
    /// `api/agent/v1/`). `registration` is what the agent says about itself.
    pub fn new(
        http: HttpClient,
        scalr_url: &Url,
        pool_token: Secret,
        mut registration: RegisterRequest,
    ) -> ControlClient {
        registration.protocol = PROTOCOL_V1_1.into();
        let mut base = scalr_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let base = base
            .join(API_PREFIX)
            .expect("a constant relative path joins");
        ControlClient {
            http,
            base,
            pool_token,
            registration: Mutex::new(registration),
            session: Mutex::new(None),
            reregister: tokio::sync::Mutex::new(()),
            pending_acquire: Mutex::new(None),
            store: None,
        }
    }

    /// The same client, saving its identity to `store` after every registration.
    pub fn with_store(mut self, store: std::sync::Arc<dyn IdentityStore>) -> ControlClient {
        self.store = Some(store);
        self
    }

    /// The current session, if registered.
    pub fn session(&self) -> Option<Session> {
        self.session.lock().unwrap().clone()
    }

    /// Resumes the identity a previous process saved (the state file): the next registration
    /// sends `previous_agent_id` and, when known, the reclaim secret, so a v1.1 server gives
    /// the id back and re-binds that agent's unfinished tasks to the new session.
    pub fn resume(&self, agent_id: String, reclaim_secret: Option<Secret>) {
        let mut r = self.registration.lock().unwrap();
        r.previous_agent_id = Some(agent_id);
        r.reclaim_secret = reclaim_secret;
    }

    /// `POST /register` with the pool token. Retries nothing beyond the HTTP client's rules.
    /// A refused reclaim (`403 reclaim_refused`) is logged, forgotten, and followed at once
    /// by a registration as a new agent.
    pub async fn register(&self) -> Result<Session, ControlError> {
        match self.register_as_is().await {
            Err(e @ ControlError::ReclaimRefused { .. }) => {
                tracing::error!(error = %e, "registering as a new agent; the tasks the former agent held end by their lease");
                {
                    let mut r = self.registration.lock().unwrap();
                    r.previous_agent_id = None;
                    r.reclaim_secret = None;
                }
                self.register_as_is().await
            }
            r => r,
        }
    }

    /// One registration with what the client knows of itself.
    async fn register_as_is(&self) -> Result<Session, ControlError> {
        let body = serde_json::to_vec(&*self.registration.lock().unwrap())
            .expect("the registration serializes");
        let req = self.json(Method::POST, "register", &self.pool_token, body);
        let answer = self.send(&req).await?;
        let url = crate::http::redact(&req.url);
        match answer.status {
            StatusCode::OK | StatusCode::CREATED => {}
            StatusCode::FORBIDDEN if error_code(&answer) == "reclaim_refused" => {
                let agent_id = self.registration.lock().unwrap().previous_agent_id.clone();
                return Err(ControlError::ReclaimRefused {
                    agent_id: agent_id.unwrap_or_default(),
                    message: error_message(&answer),
                });
            }
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                return Err(ControlError::PoolTokenRejected { status });
            }
            StatusCode::CONFLICT => {
                let name = self.registration.lock().unwrap().name.clone();
                return Err(ControlError::NameConflict {
                    name,
                    message: error_message(&answer),
                });
            }
            StatusCode::NOT_FOUND | StatusCode::UPGRADE_REQUIRED | StatusCode::GONE => {
                return Err(ControlError::UnsupportedProtocol {
                    url,
                    version: PROTOCOL_VERSION,
                    detail: format!("{}: {}", answer.status, error_message(&answer)),
                });
            }
            other => return Err(unexpected("register", other, &answer)),
        }
        let r: RegisterResponse = parse("register", &answer)?;
        if r.agent_id.is_empty() || r.session_token.expose().is_empty() {
            return Err(ControlError::Malformed {
                what: "register".into(),
                reason: "empty agent_id or session_token".into(),
            });
        }
        self.keep_identity(&r.agent_id, r.reclaim_secret.clone())
            .await;
        let mut slot = self.session.lock().unwrap();
        let generation = slot.as_ref().map_or(0, |s| s.generation) + 1;
        let heartbeat_interval =
            Duration::from_millis(r.heartbeat_interval_ms.max(100)).min(MAX_HEARTBEAT);
        let v1_1 = r.protocol.as_deref() == Some(PROTOCOL_V1_1);
        let session = Session {
            agent_id: r.agent_id.clone(),
            token: r.session_token,
            heartbeat_interval,
            poll_timeout: Duration::from_millis(r.poll_timeout_ms.clamp(100, 60_000)),
            v1_1,
            lease: r
                .lease_ms
                .filter(|_| v1_1)
                .map(|ms| Duration::from_millis(ms).max(heartbeat_interval * 3)),
            generation,
        };
        *slot = Some(session.clone());
        crate::logging::set_identity(crate::logging::Identity {
            agent_id: r.agent_id.clone(),
            pool: r.pool.map(|p| crate::logging::Pool {
                id: p.id,
                name: p.name,
            }),
        });
        Ok(session)
    }

    /// Remembers the registration's agent id and reclaim secret for the next registration
    /// (a 401 re-registration reclaims with them) and saves them to the store, before the
    /// session is used. A failed save is logged: the server still accepts the previous secret
    /// until the new session's first call, so only a crash after that loses the reclaim.
    async fn keep_identity(&self, agent_id: &str, secret: Option<Secret>) {
        {
            let mut r = self.registration.lock().unwrap();
            r.previous_agent_id = Some(agent_id.to_owned());
            r.reclaim_secret = secret.clone();
        }
        let Some(store) = self.store.clone() else {
            return;
        };
        let id = agent_id.to_owned();
        let saved = tokio::task::spawn_blocking(move || store.save(&id, secret.as_ref()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = saved {
            tracing::error!(error = %e, "cannot save the agent's id and reclaim secret in its state file; a restart will register a new agent");
        }
    }

    /// `POST /heartbeat`. One attempt: the next beat is the retry. Returns the tasks the
    /// server says this agent holds no more (v1.1; empty from a v1 server).
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<Vec<String>, ControlError> {
        let body = serde_json::to_vec(beat).expect("serializes");
        let answer = self
            .with_session(|token| {
                let mut r = self.json(Method::POST, "heartbeat", token, body.clone());
                r.max_retries = Some(0);
                r
            })
            .await?;
        match answer.status {
            StatusCode::OK if !answer.body.is_empty() => {
                parse::<HeartbeatAnswer>("heartbeat", &answer).map(|a| a.ended)
            }
            s if s.is_success() => Ok(Vec::new()),
            s => Err(unexpected("heartbeat", s, &answer)),
        }
    }

    /// `POST /tasks/acquire`: a long poll held by the server until a task is available or
    /// its poll timeout passes (`Ok(None)`).
    pub async fn acquire(&self, free_slots: u32) -> Result<Option<Acquired>, ControlError> {
        let session = self.session();
        let poll = session
            .as_ref()
            .map_or(Duration::from_secs(25), |s| s.poll_timeout);
        let request_id = session.as_ref().filter(|s| s.v1_1).map(|_| {
            self.pending_acquire
                .lock()
                .unwrap()
                .get_or_insert_with(new_request_id)
                .clone()
        });
        let body = serde_json::to_vec(&AcquireRequest {
            free_slots,
            wait_ms: poll.as_millis() as u64,
            request_id,
        })
        .expect("serializes");
        let answer = self
            .with_session(|token| {
                let mut r = self.json(Method::POST, "tasks/acquire", token, body.clone());
                r.timeout = Some(poll + POLL_SLACK);
                r.limit = MAX_ACQUIRE_BYTES;
                r
            })
            .await?;
        // An answer arrived: the next acquire is a new request.
        *self.pending_acquire.lock().unwrap() = None;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => parse("acquire", &answer).map(Some),
            s => Err(unexpected("acquire", s, &answer)),
        }
    }

    /// `POST /deregister`: one attempt, no retry, within `limit` (it is sent at the end of the
    /// stop window, which must not overrun). A 401 or 404 means the session is already gone:
    /// fine.
    pub async fn deregister(&self, limit: Duration) -> Result<(), ControlError> {
        let Some(session) = self.session() else {
            return Ok(());
        };
        let mut req = self.json(Method::POST, "deregister", &session.token, b"{}".to_vec());
        req.max_retries = Some(0);
        req.timeout = Some(limit);
        let answer = self.send(&req).await?;
        match answer.status {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED || s == StatusCode::NOT_FOUND => {
                *self.session.lock().unwrap() = None;
                Ok(())
            }
            s => Err(unexpected("deregister", s, &answer)),
        }
    }

    /// Sends a session call; on 401 registers again once (unless another call already did)
    /// and repeats it.
    async fn with_session(
        &self,
        build: impl Fn(&Secret) -> Request,
    ) -> Result<Answer, ControlError> {
        let session = match self.session() {
            Some(s) => s,
            None => self.register_once(0).await?,
        };
        let answer = self.send(&build(&session.token)).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        tracing::warn!("the control plane rejected the session (401); registering again");
        let fresh = self.register_once(session.generation).await?;
        let answer = self.send(&build(&fresh.token)).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            return Err(ControlError::SessionRejected);
        }
        Ok(answer)
    }

    /// Registers unless the session already moved past `seen` (another task re-registered).
    pub(super) async fn register_once(&self, seen: u64) -> Result<Session, ControlError> {
        let _guard = self.reregister.lock().await;
        if let Some(s) = self.session()
            && s.generation > seen
        {
            return Ok(s);
        }
        self.register().await
    }

    pub(super) fn json(
        &self,
        method: Method,
        path: &str,
        token: &Secret,
        body: Vec<u8>,
    ) -> Request {
        let mut r = self.request(method, path, token);
        r.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.body = Some(body.into());
        r
    }

    pub(super) fn request(&self, method: Method, path: &str, token: &Secret) -> Request {
        let url = self
            .base
            .join(path)
            .expect("paths are built from safe parts");
        let mut r = Request::new(method, url);
        r.headers = auth_headers(token);
        r.timeout = Some(REQUEST_TIMEOUT);
        r
    }

    pub(super) async fn send(&self, req: &Request) -> Result<Answer, ControlError> {
        self.http.send(req).await.map_err(ControlError::Unreachable)
    }
}

fn auth_headers(token: &Secret) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    v.set_sensitive(true);
    h.insert(AUTHORIZATION, v);
    h.insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    h
}

/// A random acquire request id (128 bits, hex).
fn new_request_id() -> String {
    format!("acq-{:032x}", rand::random::<u128>())
}
