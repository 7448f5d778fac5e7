//! The JSON bodies of protocol v1.1, exactly as `docs/protocol.md` shows them.
//!
//! Requests are `Serialize`, answers `Deserialize`. Answers ignore unknown fields (a newer
//! server may add some); a missing field is a malformed answer, except the fields v1.1 added
//! to answers, which a v1 server does not send.

use serde::{Deserialize, Serialize};

use crate::task::result::{StepKind, StepStatus, TaskResult};

/// `POST /register`.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterRequest {
    pub name: String,
    pub version: String,
    /// The highest protocol version the agent speaks ([`PROTOCOL_V1_1`]).
    pub protocol: String,
    pub os: String,
    /// `linux_amd64` or `linux_arm64`.
    pub cpu_platform: String,
    /// Always `local`.
    pub driver: String,
    /// `fargate`, `cloud-run`, `container-apps`, `kubernetes`, `docker` or `vm`.
    pub runtime: String,
    pub concurrency: u32,
    /// The isolation verdict and layers, as the sandbox reports them (opaque to the protocol).
    pub isolation: serde_json::Value,
    /// The id this agent had before a restart, so the server may let it take its name back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_agent_id: Option<String>,
    /// The reclaim secret the last registration answer minted for `previous_agent_id`
    /// (v1.1): with it the server gives the id back and re-binds the agent's tasks.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_secret"
    )]
    pub reclaim_secret: Option<crate::secret::Secret>,
}

/// Writes a secret's value into a request body (the only place it leaves its wrapper on the
/// wire).
fn expose_secret<S: serde::Serializer>(
    secret: &Option<crate::secret::Secret>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(v) => s.serialize_str(v.expose()),
        None => s.serialize_none(),
    }
}

/// The answer to `POST /register`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterResponse {
    pub agent_id: String,
    pub session_token: crate::secret::Secret,
    pub heartbeat_interval_ms: u64,
    /// The pool the pool token belongs to (optional: older servers may not say).
    #[serde(default)]
    pub pool: Option<Pool>,
    /// How long the server holds a long poll (`/tasks/acquire`, `/tasks/{id}/signal`).
    #[serde(default = "default_poll_ms")]
    pub poll_timeout_ms: u64,
    /// The version the server speaks for this session (v1.1); absent from a v1 server.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The task lease (v1.1): a task whose lease the heartbeats do not renew for this long
    /// is ended by the server. Absent: no leases.
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// The secret for the next reclaim of this agent id (v1.1), kept in the state file.
    #[serde(default)]
    pub reclaim_secret: Option<crate::secret::Secret>,
}

/// The minor version this agent speaks, in the registration and its answer.
pub const PROTOCOL_V1_1: &str = "1.1";

/// A pool, as the registration answer names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pool {
    pub id: String,
    pub name: String,
}

fn default_poll_ms() -> u64 {
    25_000
}

/// What the agent is doing, in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Idle,
    Busy,
    Draining,
}

/// `POST /heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub status: AgentStatus,
    /// The tasks whose tool runs (from their acquisition until the tool ended).
    pub running: Vec<String>,
    pub free_slots: u32,
    /// The tasks whose tool ended and whose finish was not accepted yet (v1.1); with
    /// `running`, the leases this beat renews.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivering: Vec<String>,
}

/// The answer to `POST /heartbeat` (v1.1; a v1 server answers 204).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// Tasks named in the beat that this agent holds no more (the server ended them, e.g. a
    /// lease expired, or withdrew them): killed at once, nothing more sent for them.
    #[serde(default)]
    pub ended: Vec<String>,
}

/// `POST /tasks/acquire`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcquireRequest {
    pub free_slots: u32,
    pub wait_ms: u64,
    /// The same for every attempt until an answer arrived (v1.1), so a retry after a lost
    /// answer gets the same task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The answer to `POST /tasks/acquire` (status 200). `task` is kept raw: the agent parses it
/// with the task model's strict parser, so a bad task fails that task, not the agent.
#[derive(Debug, Clone, Deserialize)]
pub struct Acquired {
    pub task_id: String,
    pub task_token: crate::secret::Secret,
    pub task: serde_json::Value,
}

/// A cancellation pushed by `GET /tasks/{id}/signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// SIGINT to the tool, then SIGKILL after a grace period.
    Cancel,
    /// SIGKILL to the whole process tree now.
    ForceCancel,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SignalResponse {
    pub signal: Signal,
    /// The signal's number for the held poll's `?cursor=` (v1.1; absent from a v1 server).
    #[serde(default)]
    pub cursor: Option<u64>,
}

/// The answer to `PUT /tasks/{id}/log?offset=N` (200) and its 409 (gap).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LogCommitted {
    pub committed: u64,
}

/// One step's state (`POST /tasks/{id}/steps`): sent when the step starts (`running`) and
/// again when it ends. The fields after `status` are the step's record in `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step's name (`init`, `plan`, `pre-plan hook`, `policy <name>`, ...), masked.
    pub step: String,
    pub status: StepState,
    /// The step's position in the task, from 0; a later report with the same index
    /// overwrites an earlier one.
    pub index: u32,
    pub kind: StepKind,
    /// The masked command line; `null` while running.
    pub command: Option<String>,
    pub exit_code: Option<i32>,
    /// The signal that ended the step's process, if one did.
    pub signal: Option<i32>,
    /// `null` while running.
    pub duration_ms: Option<u64>,
}

/// The status in a [`StepReport`]: `running`, then how the step ended (as in `result.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Canceled,
    Errored,
}

impl From<StepStatus> for StepState {
    fn from(s: StepStatus) -> StepState {
        match s {
            StepStatus::Succeeded => StepState::Succeeded,
            StepStatus::Failed => StepState::Failed,
            StepStatus::TimedOut => StepState::TimedOut,
            StepStatus::Canceled => StepState::Canceled,
            StepStatus::Errored => StepState::Errored,
        }
    }
}

/// The final status of a task: the runner's own status, sent as is (no second enum to map).
pub use crate::task::result::TaskStatus as FinalStatus;

/// `POST /tasks/{id}/finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub status: FinalStatus,
    /// The task's `result.json`, typed from the runner to the wire; `null` for a task that
    /// did not run.
    pub result: Option<TaskResult>,
    pub error: Option<String>,
    /// Total log bytes; the server checks it has them all committed.
    pub log_size: u64,
    /// Hex SHA-256 of the whole log (v1.1), so the server can verify what it assembled.
    /// Absent from spools written before v1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_sha256: Option<String>,
}

/// Error bodies: `{"error": "...", "message": "..."}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    /// On a 409 from `PUT /log`: the committed offset.
    #[serde(default)]
    pub committed: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_answers_never_print() {
        let r: RegisterResponse = serde_json::from_str(
            r#"{"agent_id": "agt-1", "session_token": "sess-SECRET", "heartbeat_interval_ms": 5000}"#,
        )
        .unwrap();
        assert_eq!(r.session_token.expose(), "sess-SECRET");
        assert!(r.pool.is_none(), "the pool is optional");
        assert!(!format!("{r:?}").contains("sess-SECRET"));
        let r: RegisterResponse = serde_json::from_str(
            r#"{"agent_id": "agt-1", "session_token": "s", "heartbeat_interval_ms": 5000, "reclaim_secret": "rec-SECRET"}"#,
        )
        .unwrap();
        assert!(!format!("{r:?}").contains("rec-SECRET"));
        let req = RegisterRequest {
            name: "a".into(),
            version: "0".into(),
            protocol: PROTOCOL_V1_1.into(),
            os: "linux".into(),
            cpu_platform: "linux_amd64".into(),
            driver: "local".into(),
            runtime: "vm".into(),
            concurrency: 1,
            isolation: serde_json::Value::Null,
            previous_agent_id: Some("agt-1".into()),
            reclaim_secret: r.reclaim_secret,
        };
        assert!(!format!("{req:?}").contains("rec-SECRET"));
        let body = serde_json::to_value(&req).unwrap();
        assert_eq!(body["reclaim_secret"], "rec-SECRET", "sent in the body");
        let a: Acquired =
            serde_json::from_str(r#"{"task_id": "t1", "task_token": "task-SECRET", "task": {}}"#)
                .unwrap();
        assert!(!format!("{a:?}").contains("task-SECRET"));
    }
}
