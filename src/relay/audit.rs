//! One audit line per request, in the agent's log format (JSON lines with
//! `SCALR_AGENT_LOG_FORMAT=json`): method, path with query values redacted, the rule that
//! matched or the refusal, project, status, bytes each way, duration. Header values and bodies
//! are never logged.

use std::time::Duration;

/// Query keys whose values are shown; every other value is replaced by `***` (tokens such as
/// GitLab's `private_token` travel in queries).
const SHOWN_KEYS: &[&str] = &[
    "service",
    "api-version",
    "ref",
    "sha",
    "from",
    "to",
    "page",
    "per_page",
    "limit",
    "start",
    "state",
    "format",
    "at",
    "path",
];

/// The path as it may be logged: query values redacted unless their key is in a short list.
pub fn shown_path(raw: &str) -> String {
    let Some((path, query)) = raw.split_once('?') else {
        return raw.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if SHOWN_KEYS.contains(&k) => format!("{k}={v}"),
            Some((k, _)) => format!("{k}=***"),
            None => kv.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// What happened to one request.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub rule: Option<&'a str>,
    pub project: Option<&'a str>,
    /// `relayed`, `refused` or `failed`.
    pub outcome: &'static str,
    pub status: Option<u16>,
    pub reason: Option<&'a str>,
    pub bytes_to_vcs: u64,
    pub bytes_from_vcs: u64,
    pub duration: Duration,
}

/// Writes the audit line.
pub fn log(r: &Record<'_>) {
    tracing::info!(
        target: "scalr_agent::relay::audit",
        request_id = r.request_id,
        method = r.method,
        path = %shown_path(r.path),
        rule = r.rule.unwrap_or("-"),
        project = r.project.unwrap_or("-"),
        outcome = r.outcome,
        status = r.status.unwrap_or(0),
        reason = r.reason.unwrap_or(""),
        bytes_to_vcs = r.bytes_to_vcs,
        bytes_from_vcs = r.bytes_from_vcs,
        duration_ms = r.duration.as_millis() as u64,
        "relay request"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_redacted_unless_listed() {
        assert_eq!(
            super::shown_path("/a/info/refs?service=git-upload-pack&private_token=s3cr3t&x"),
            "/a/info/refs?service=git-upload-pack&private_token=***&x"
        );
    }
}
