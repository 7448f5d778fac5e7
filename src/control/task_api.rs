//! The task-level calls, made with the task token: acknowledge, signals, log, artifacts,
//! inputs, steps, finish. With a v1.1 server each also carries the session holding the task
//! (`Scalr-Agent-Session`); a `401 session_unknown` registers again once (which re-binds the
//! agent's tasks to the new session) and repeats the call. Once any of them found the task
//! gone for this agent (any other 401, 403, 404, 410), the task's [`TaskApi`] sends nothing
//! more: every later call, and any call still waiting for its answer, returns
//! [`ControlError::TaskGone`] at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};

use tokio_util::sync::CancellationToken;

use super::answer::{error_code, error_message, parse, unexpected};
use super::wire::{ErrorBody, Finish, LogCommitted, SignalResponse, StepReport};
use super::{ControlClient, ControlError, POLL_SLACK, REQUEST_TIMEOUT, SESSION_HEADER, Session};
use crate::http::{Answer, HttpError, Request};
use crate::secret::Secret;
/// Largest input (configuration archive, plan artifact) downloaded.
pub const MAX_INPUT_BYTES: u64 = 2 << 30;
/// Slowest upload rate (bytes per second) an artifact upload is given time for before its
/// attempt times out: 256 KiB/s, so a 500 MB plan file has about 33 minutes.
pub const MIN_UPLOAD_RATE: u64 = 256 << 10;

/// The base of a log chunk's deadline (v1.1), to which one second per [`MIN_UPLOAD_RATE`]
/// bytes of the chunk is added.
pub const CHUNK_DEADLINE: Duration = Duration::from_secs(5);

/// The deadline of one attempt to send a log chunk of `len` bytes: [`CHUNK_DEADLINE`] plus one
/// second per [`MIN_UPLOAD_RATE`] bytes with a v1.1 server, the ordinary request timeout with
/// a v1 server.
pub fn chunk_deadline(len: usize, v1_1: bool) -> Duration {
    if v1_1 {
        CHUNK_DEADLINE + Duration::from_secs(len as u64 / MIN_UPLOAD_RATE)
    } else {
        REQUEST_TIMEOUT
    }
}

/// The task API for one task: its id and its token. Clones share the "gone" state.
#[derive(Debug, Clone)]
pub struct TaskApi {
    client: Arc<ControlClient>,
    task_id: String,
    token: Secret,
    /// Fired once the task is gone for this agent: nothing more is sent.
    gone: CancellationToken,
}

impl TaskApi {
    pub fn new(client: Arc<ControlClient>, task_id: String, token: Secret) -> TaskApi {
        TaskApi {
            client,
            task_id,
            token,
            gone: CancellationToken::new(),
        }
    }

    /// The same API, gone when `gone` fires (the daemon fires it when the server ended the
    /// task or its lease was lost).
    pub fn gone_with(mut self, gone: CancellationToken) -> TaskApi {
        self.gone = gone;
        self
    }

    /// The task is over for this agent (a refusal, or the server ended it): nothing more is
    /// sent for it, and calls waiting for an answer return at once.
    pub fn mark_gone(&self) {
        self.gone.cancel();
    }

    /// Whether the task is over for this agent.
    pub fn is_gone(&self) -> bool {
        self.gone.is_cancelled()
    }

    /// Resolves once the task is gone for this agent.
    pub async fn gone(&self) {
        self.gone.cancelled().await
    }

    /// The session speaks protocol v1.1.
    pub fn v1_1(&self) -> bool {
        self.client.session().is_some_and(|s| s.v1_1)
    }

    /// Sends one of this task's calls, unless the task is gone.
    async fn send(&self, req: &Request) -> Result<Answer, ControlError> {
        let gone = || ControlError::TaskGone {
            task_id: self.task_id.clone(),
            status: StatusCode::GONE,
            message: "the task is over for this agent; nothing more is sent for it".into(),
        };
        if self.is_gone() {
            return Err(gone());
        }
        tokio::select! {
            biased;
            () = self.gone.cancelled() => Err(gone()),
            r = self.send_bound(req) => r,
        }
    }

    /// Sends with the session holding the task (v1.1); after a `401 session_unknown` (the
    /// server forgot the session) registers again once and repeats the call with the new one.
    async fn send_bound(&self, req: &Request) -> Result<Answer, ControlError> {
        let session = self.client.session();
        let answer = self.client.send(&bound(req, session.as_ref())).await?;
        if answer.status != StatusCode::UNAUTHORIZED || error_code(&answer) != "session_unknown" {
            return Ok(answer);
        }
        tracing::warn!(task = %self.task_id, "the control plane does not know this session (401 session_unknown); registering again");
        let fresh = self
            .client
            .register_once(session.map_or(0, |s| s.generation))
            .await?;
        self.client.send(&bound(req, Some(&fresh))).await
    }

    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    pub fn token(&self) -> &Secret {
        &self.token
    }

    fn path(&self, rest: &str) -> String {
        format!("tasks/{}/{rest}", encode(&self.task_id))
    }

    /// `POST /tasks/{id}/ack`: claims the task. A 409 means another agent has it.
    pub async fn ack(&self) -> Result<(), ControlError> {
        let req = self
            .client
            .json(Method::POST, &self.path("ack"), &self.token, b"{}".to_vec());
        let answer = self.send(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(ControlError::NotAcknowledged {
                task_id: self.task_id.clone(),
                message: error_message(&answer),
            }),
            s => Err(self.refusal("ack", s, &answer)),
        }
    }

    /// `GET /tasks/{id}/signal?cursor=N`: a long poll, held by a v1.1 server until a signal
    /// newer than `cursor` exists; `Ok(None)` when the server's hold time passed. Without a
    /// cursor (a v1 server) the server answers the current signal at once. One attempt: the
    /// caller paces the polls (the signal budget).
    pub async fn signal(
        &self,
        hold: Duration,
        cursor: Option<u64>,
    ) -> Result<Option<SignalResponse>, ControlError> {
        let path = match cursor {
            Some(n) => format!("{}?cursor={n}", self.path("signal")),
            None => self.path("signal"),
        };
        let mut req = self.client.request(Method::GET, &path, &self.token);
        req.timeout = Some(hold + POLL_SLACK);
        req.max_retries = Some(0);
        let answer = self.send(&req).await?;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => parse::<SignalResponse>("signal", &answer).map(Some),
            s => Err(self.refusal("signal", s, &answer)),
        }
    }

    /// `PUT /tasks/{id}/log?offset=N`: appends `bytes` at `offset`; returns the server's
    /// committed offset (which may be behind `offset`: the caller resends from there).
    pub async fn put_log(&self, offset: u64, bytes: bytes::Bytes) -> Result<u64, ControlError> {
        let mut req = self.client.request(
            Method::PUT,
            &format!("{}?offset={offset}", self.path("log")),
            &self.token,
        );
        req.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        req.timeout = Some(chunk_deadline(bytes.len(), self.v1_1()));
        req.body = Some(bytes);
        let answer = self.send(&req).await?;
        match answer.status {
            StatusCode::OK => parse::<LogCommitted>("log", &answer).map(|c| c.committed),
            StatusCode::CONFLICT => {
                let body: ErrorBody = parse("log", &answer)?;
                body.committed.ok_or_else(|| ControlError::Malformed {
                    what: "log".into(),
                    reason: "a 409 without `committed`".into(),
                })
            }
            s => Err(self.refusal("log", s, &answer)),
        }
    }

    /// `PUT /tasks/{id}/artifacts/{name}`: uploads a file (replacing any earlier upload).
    /// The file is streamed from disk with its `Content-Length`, never read into memory (plan
    /// files can be hundreds of MB); a retried attempt reopens it from the start. One attempt
    /// may take the usual 30 s plus one second per [`MIN_UPLOAD_RATE`] bytes.
    pub async fn put_artifact(&self, name: &str, file: &Path) -> Result<(), ControlError> {
        let unreadable = |e: &dyn std::fmt::Display| ControlError::Malformed {
            what: format!("artifact {name}"),
            reason: format!("cannot read {}: {e}", file.display()),
        };
        let size = tokio::fs::metadata(file)
            .await
            .map_err(|e| unreadable(&e))?
            .len();
        let mut req = self.client.request(
            Method::PUT,
            &self.path(&format!("artifacts/{}", encode(name))),
            &self.token,
        );
        req.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        req.body_file = Some(file.to_path_buf());
        req.timeout = Some(REQUEST_TIMEOUT + Duration::from_secs(size / MIN_UPLOAD_RATE));
        let answer = match self.send(&req).await {
            Err(ControlError::Unreachable(e @ HttpError::ReadBody { .. })) => {
                return Err(unreadable(&e));
            }
            r => r?,
        };
        match answer.status {
            s if s.is_success() => Ok(()),
            s => Err(self.refusal("artifact upload", s, &answer)),
        }
    }

    /// `GET /tasks/{id}/inputs/{name}` into `dest` (`configuration`, `plan-file`, ...).
    pub async fn get_input(&self, name: &str, dest: &Path) -> Result<(), ControlError> {
        let mut req = self.client.request(
            Method::GET,
            &self.path(&format!("inputs/{}", encode(name))),
            &self.token,
        );
        req.timeout = None;
        req.limit = MAX_INPUT_BYTES;
        req.save_to = Some(dest.to_path_buf());
        let answer = self.send(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            s => Err(self.refusal(&format!("input {name}"), s, &answer)),
        }
    }

    /// `POST /tasks/{id}/steps`.
    pub async fn step(&self, step: &StepReport) -> Result<(), ControlError> {
        let body = serde_json::to_vec(step).expect("serializes");
        let req = self
            .client
            .json(Method::POST, &self.path("steps"), &self.token, body);
        let answer = self.send(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            s => Err(self.refusal("step", s, &answer)),
        }
    }

    /// `POST /tasks/{id}/finish`: idempotent. A `409 log_incomplete` is
    /// [`ControlError::LogIncomplete`] with the server's committed offset (absent: 0), any
    /// other 409 [`ControlError::AlreadyFinished`] (never retried).
    pub async fn finish(&self, finish: &Finish) -> Result<(), ControlError> {
        let body = serde_json::to_vec(finish).expect("serializes");
        let req = self
            .client
            .json(Method::POST, &self.path("finish"), &self.token, body);
        let answer = self.send(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => {
                let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
                Err(if body.error == "log_incomplete" {
                    ControlError::LogIncomplete {
                        task_id: self.task_id.clone(),
                        committed: body.committed.unwrap_or(0),
                    }
                } else {
                    ControlError::AlreadyFinished {
                        task_id: self.task_id.clone(),
                        message: error_message(&answer),
                    }
                })
            }
            s => Err(self.refusal("finish", s, &answer)),
        }
    }

    /// The error for a refusal; a task gone for this agent marks it so.
    fn refusal(&self, what: &str, status: StatusCode, answer: &Answer) -> ControlError {
        match status {
            StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::GONE => {
                self.mark_gone();
                ControlError::TaskGone {
                    task_id: self.task_id.clone(),
                    status,
                    message: error_message(answer),
                }
            }
            _ => unexpected(&format!("task {} {what}", self.task_id), status, answer),
        }
    }
}

/// `req` with the session's token in `Scalr-Agent-Session`, when the session speaks v1.1
/// (a v1 server binds nothing).
fn bound(req: &Request, session: Option<&Session>) -> Request {
    let mut req = req.clone();
    if let Some(s) = session.filter(|s| s.v1_1)
        && let Ok(mut v) = HeaderValue::from_str(s.token.expose())
    {
        v.set_sensitive(true);
        req.headers.insert(SESSION_HEADER, v);
    }
    req
}

/// Percent-encodes a path segment (ids and names come from the server).
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}
