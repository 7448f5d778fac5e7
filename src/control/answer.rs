//! Reading the control plane's answers: JSON bodies, error messages and unexpected statuses,
//! shared by the agent-level calls (`client`) and the task-level calls (`task_api`).

use reqwest::StatusCode;

use super::ControlError;
use super::wire::ErrorBody;
use crate::http::Answer;

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    answer: &Answer,
) -> Result<T, ControlError> {
    serde_json::from_slice(&answer.body).map_err(|e| ControlError::Malformed {
        what: what.into(),
        reason: e.to_string(),
    })
}

pub(super) fn error_message(answer: &Answer) -> String {
    let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
    let text = if body.message.is_empty() {
        body.error
    } else {
        body.message
    };
    if text.is_empty() {
        String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).into_owned()
    } else {
        text
    }
}

/// The `error` code of an error body (empty when there is none).
pub(super) fn error_code(answer: &Answer) -> String {
    serde_json::from_slice::<ErrorBody>(&answer.body)
        .unwrap_or_default()
        .error
}

pub(super) fn unexpected(what: &str, status: StatusCode, answer: &Answer) -> ControlError {
    ControlError::Unexpected {
        what: what.into(),
        status,
        message: error_message(answer),
    }
}
