//! The control-plane client: the only code that speaks to the control plane.
//!
//! It implements protocol v1.1 (`docs/protocol.md`; v1 when the server does not announce
//! v1.1): registration with the pool token, then
//! everything else with the session token (heartbeat, long-poll acquisition, deregistration)
//! or with a per-task token ([`TaskApi`]: acknowledge, cancellation signals, log chunks at
//! byte offsets, artifacts, inputs, steps, finish). Requests go through the process's one
//! [`HttpClient`](crate::http::HttpClient), which retries transport errors, 408, 429 and 5xx;
//! this module interprets every other status into a [`ControlError`] that says whether it is
//! worth retrying later and whether the agent must stop.
//!
//! A 401 on a session call (or a `401 session_unknown` on a task call) registers again once
//! (the server may have restarted and lost its sessions) and repeats the call; a 401 on
//! registration means the pool token was revoked. Registration sends the previous agent id
//! with its reclaim secret (v1.1), so a restarted agent gets its unfinished tasks back; every
//! answer's new secret goes to the [`IdentityStore`] before the session is used. Tokens and
//! secrets live in [`Secret`](crate::secret::Secret) and are never logged.

mod answer;
mod client;
mod error;
mod task_api;
pub mod wire;

pub use client::{ControlClient, IdentityStore, MAX_ACQUIRE_BYTES, Session};
pub use error::ControlError;
pub use task_api::TaskApi;

/// The protocol version this agent speaks: in the path (`/api/agent/v1/`) and in the
/// `Scalr-Agent-Protocol` header of every request.
pub const PROTOCOL_VERSION: u32 = 1;
/// Path of the protocol under `SCALR_URL`.
pub const API_PREFIX: &str = "api/agent/v1/";
/// Header carrying the protocol version.
pub const PROTOCOL_HEADER: &str = "scalr-agent-protocol";
/// Header carrying, on every task call, the token of the session holding the task (v1.1).
pub const SESSION_HEADER: &str = "scalr-agent-session";

/// Timeout of one ordinary request attempt.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Added to the server's hold time to time out a long poll.
const POLL_SLACK: std::time::Duration = std::time::Duration::from_secs(10);
