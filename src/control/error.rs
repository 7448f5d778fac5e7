//! Errors of the control-plane client.

use reqwest::StatusCode;

use crate::http::HttpError;

/// What went wrong talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Transport errors, timeouts or 5xx that outlasted the HTTP client's retries.
    #[error("the control plane is unreachable: {0}")]
    Unreachable(#[source] HttpError),
    #[error(
        "the control plane rejected the pool token (SCALR_AGENT_TOKEN) with {status}: it is invalid or was revoked; the agent stops"
    )]
    PoolTokenRejected { status: StatusCode },
    #[error(
        "the control plane rejected the session again (401) right after a new registration; the agent stops"
    )]
    SessionRejected,
    /// The reclaim of a previous agent id was refused (v1.1): the secret does not match.
    #[error(
        "the control plane refused to give agent id {agent_id} back to this agent (403 reclaim_refused: {message}): the reclaim secret from the state file does not match"
    )]
    ReclaimRefused { agent_id: String, message: String },
    #[error(
        "an agent named {name:?} is already connected to this pool ({message}); set a unique SCALR_AGENT_NAME or stop the other agent"
    )]
    NameConflict { name: String, message: String },
    #[error(
        "the control plane at {url} does not speak agent protocol v{version} ({detail}); upgrade the agent or the control plane"
    )]
    UnsupportedProtocol {
        url: String,
        version: u32,
        detail: String,
    },
    /// The task token was refused (401/403) or the task is gone (404/410): the task is over
    /// for this agent.
    #[error("task {task_id}: the control plane no longer accepts this task ({status}: {message})")]
    TaskGone {
        task_id: String,
        status: StatusCode,
        message: String,
    },
    /// The acknowledgement was refused: the task went to another agent or was withdrawn.
    #[error("task {task_id}: acknowledgement refused ({message}); it is not run here")]
    NotAcknowledged { task_id: String, message: String },
    /// The finish was refused because the server holds less of the log than `log_size` (or
    /// a copy that does not match `log_sha256`): the log goes again from `committed`.
    #[error("task {task_id}: the control plane holds only {committed} bytes of the log")]
    LogIncomplete { task_id: String, committed: u64 },
    /// A different final status was recorded first (never retried).
    #[error("task {task_id}: the control plane already recorded another final status ({message})")]
    AlreadyFinished { task_id: String, message: String },
    #[error("{what}: malformed answer from the control plane: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what}: unexpected answer {status} from the control plane: {message}")]
    Unexpected {
        what: String,
        status: StatusCode,
        message: String,
    },
}

impl ControlError {
    /// Worth trying again later (the control plane was unreachable or overloaded).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ControlError::Unreachable(_))
    }

    /// The agent cannot go on: it must stop (with this message).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ControlError::PoolTokenRejected { .. }
                | ControlError::SessionRejected
                | ControlError::NameConflict { .. }
                | ControlError::UnsupportedProtocol { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let unreachable = ControlError::Unreachable(HttpError::Client("x".into()));
        assert!(unreachable.is_retryable() && !unreachable.is_fatal());
        let forbidden = ControlError::PoolTokenRejected {
            status: StatusCode::FORBIDDEN,
        };
        assert!(forbidden.is_fatal() && !forbidden.is_retryable());
        assert!(
            forbidden.to_string().contains("403 Forbidden"),
            "{forbidden}"
        );
        assert!(!forbidden.to_string().contains("401"), "{forbidden}");
        let gone = ControlError::TaskGone {
            task_id: "t".into(),
            status: StatusCode::GONE,
            message: String::new(),
        };
        assert!(!gone.is_fatal() && !gone.is_retryable());
        assert!(forbidden.to_string().contains("SCALR_AGENT_TOKEN"));
    }
}
