//! The task-level calls, made with the task token: acknowledge, signals, log, artifacts,
//! inputs, steps, finish.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};

use super::client::{POLL_SLACK, REQUEST_TIMEOUT, error_message, parse, unexpected};
use super::wire::{ErrorBody, Finish, LogCommitted, Signal, SignalResponse, StepReport};
use super::{ControlClient, ControlError};
use crate::http::{Answer, HttpError};
use crate::secret::Secret;

/// Largest `/tasks/acquire` answer read; the task document inside is limited to 1 MiB by the
/// daemon, which fails an oversized task by its id (so the envelope may be larger).
pub const MAX_ACQUIRE_BYTES: u64 = 8 << 20;
/// Largest input (configuration archive, plan artifact) downloaded.
pub const MAX_INPUT_BYTES: u64 = 2 << 30;
/// Slowest upload rate (bytes per second) an artifact upload is given time for before its
/// attempt times out: 256 KiB/s, so a 500 MB plan file has about 33 minutes.
pub const MIN_UPLOAD_RATE: u64 = 256 << 10;

/// The task API for one task: its id and its token.
#[derive(Debug, Clone)]
pub struct TaskApi {
    client: Arc<ControlClient>,
    task_id: String,
    token: Secret,
}

impl TaskApi {
    pub fn new(client: Arc<ControlClient>, task_id: String, token: Secret) -> TaskApi {
        TaskApi {
            client,
            task_id,
            token,
        }
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
        let answer = self.client.send(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(ControlError::NotAcknowledged {
                task_id: self.task_id.clone(),
                message: error_message(&answer),
            }),
            s => Err(self.refusal("ack", s, &answer)),
        }
    }

    /// `GET /tasks/{id}/signal`: a long poll; `Ok(None)` when the server's hold time passed.
    pub async fn signal(&self, hold: std::time::Duration) -> Result<Option<Signal>, ControlError> {
        let mut req = self
            .client
            .request(Method::GET, &self.path("signal"), &self.token);
        req.timeout = Some(hold + POLL_SLACK);
        let answer = self.client.send(&req).await?;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => parse::<SignalResponse>("signal", &answer).map(|s| Some(s.signal)),
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
        req.body = Some(bytes);
        let answer = self.client.send(&req).await?;
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
        let answer = match self.client.send(&req).await {
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
        let answer = self.client.send(&req).await?;
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
        let answer = self.client.send(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            s => Err(self.refusal("step", s, &answer)),
        }
    }

    /// `POST /tasks/{id}/finish`: idempotent; a 409 means a different final status was
    /// already recorded (reported as `Unexpected`, never retried).
    pub async fn finish(&self, finish: &Finish) -> Result<(), ControlError> {
        let body = serde_json::to_vec(finish).expect("serializes");
        let req = self
            .client
            .json(Method::POST, &self.path("finish"), &self.token, body);
        let answer = self.client.send(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            s => Err(self.refusal("finish", s, &answer)),
        }
    }

    fn refusal(&self, what: &str, status: StatusCode, answer: &Answer) -> ControlError {
        match status {
            StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::GONE => ControlError::TaskGone {
                task_id: self.task_id.clone(),
                status,
                message: error_message(answer),
            },
            _ => unexpected(&format!("task {} {what}", self.task_id), status, answer),
        }
    }
}

/// Percent-encodes a path segment (ids and names come from the server).
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}
