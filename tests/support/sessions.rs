//! Registration, session binding and reclaim in the fake control plane (docs/protocol.md
//! "Registration", "Session binding", "Restart and reclaim"; v1.1): every task is held by one
//! session, a task call needs the task's token *and* that session (`Scalr-Agent-Session`), and
//! a registration with `previous_agent_id` plus the agent's reclaim secret re-binds the
//! agent's unfinished tasks to the new session. The secret rotates at each registration; the
//! previous one stays good until the new session's first call. A v1 server does none of it.

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Response};
use serde_json::{Value, json};

use super::control_plane::{ControlPlane, Inner, Version, respond};

/// The header carrying the session token on task calls (v1.1).
pub const SESSION_HEADER: &str = "scalr-agent-session";

/// An agent id's reclaim secrets.
#[derive(Debug, Clone, Default)]
pub struct Reclaim {
    /// The secret of the agent's last session that made a call (empty: none yet).
    pub confirmed: String,
    /// The secret the last registration answer minted, with that registration's session:
    /// it replaces `confirmed` at that session's first call.
    pub pending: Option<(String, String)>,
}

/// How one registration was answered (for the tests' assertions).
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    pub status: u16,
    /// The agent id answered (none for a refusal).
    pub agent_id: Option<String>,
    /// It re-bound a previous agent's tasks (a reclaim).
    pub reclaimed: bool,
}

/// The value of the `Scalr-Agent-Session` header, if any.
pub fn session_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A session made a call: its agent's pending secret (if minted for this session) is now the
/// only good one.
pub fn confirm(i: &mut Inner, session: &str) {
    let Some(agent) = i.sessions.get(session).cloned() else {
        return;
    };
    if let Some(r) = i.reclaim.get_mut(&agent)
        && let Some((secret, s)) = r.pending.take()
    {
        if s == session {
            r.confirmed = secret;
        } else {
            r.pending = Some((secret, s));
        }
    }
}

/// Checks the session of a task call whose task token was already accepted (v1.1): `None`
/// when the call may go on, else the refusal. Confirms the session's secret.
pub fn check_task_call(i: &mut Inner, task: &str, session: Option<&str>) -> Option<Response<Body>> {
    if i.version == Version::V1 {
        return None;
    }
    let holder = i.tasks.get(task).and_then(|t| t.session.clone());
    let Some(session) = session else {
        return Some(respond(
            403,
            json!({"error": "wrong_session", "message": "no Scalr-Agent-Session"}),
        ));
    };
    if !i.sessions.contains_key(session) {
        i.session_unknown += 1;
        return Some(respond(
            401,
            json!({"error": "session_unknown", "message": "no such session"}),
        ));
    }
    confirm(i, session);
    if holder.as_deref() != Some(session) {
        return Some(respond(
            403,
            json!({"error": "wrong_session", "message": "another session holds this task"}),
        ));
    }
    None
}

/// Refuses a registration with `status` and `body`, recording the outcome.
fn refuse(i: &mut Inner, status: u16, body: Value) -> Response<Body> {
    i.register_outcomes.push(RegisterOutcome {
        status,
        agent_id: None,
        reclaimed: false,
    });
    respond(status, body)
}

/// `POST /register`: checks the pool token; a reclaim (v1.1: the previous id with its secret)
/// gives the id back and re-binds its tasks; a wrong secret is refused `403 reclaim_refused`;
/// otherwise a new agent, unless its name is connected (409).
pub fn register(cp: &ControlPlane, token: &str, body: &[u8]) -> Response<Body> {
    let mut i = cp.lock();
    if token != i.pool_token || i.pool_revoked {
        return respond(
            401,
            json!({"error": "unauthorized", "message": "bad pool token"}),
        );
    }
    let req: Value = serde_json::from_slice(body).unwrap();
    i.registrations.push(req.clone());
    i.registered_at.push(std::time::SystemTime::now());
    let name = req["name"].as_str().unwrap().to_string();
    let previous = req["previous_agent_id"].as_str().map(str::to_owned);
    let secret = req["reclaim_secret"].as_str().map(str::to_owned);
    let v1_1 = i.version == Version::V1_1;
    // v1.1: the id comes back only with its secret; v1: with the id alone.
    let reclaim = match (&previous, v1_1) {
        (Some(p), false) => Some(p.clone()),
        (Some(p), true) => match (i.reclaim.get(p), &secret) {
            (Some(r), Some(s)) => {
                let good = *s == r.confirmed
                    || r.pending.as_ref().is_some_and(|(pending, _)| pending == s);
                if !good {
                    return refuse(
                        &mut i,
                        403,
                        json!({"error": "reclaim_refused", "message": format!("the reclaim secret of {p} does not match")}),
                    );
                }
                Some(p.clone())
            }
            _ => None,
        },
        (None, _) => None,
    };
    if let Some((id, seen)) = i.names.get(&name)
        && seen.elapsed() < i.offline_after
        && reclaim.as_deref() != Some(id.as_str())
    {
        return refuse(
            &mut i,
            409,
            json!({"error": "name_conflict", "message": format!("{name} is connected")}),
        );
    }
    i.next_id += 1;
    let n = i.next_id;
    let id = reclaim.clone().unwrap_or_else(|| format!("agt-{n}"));
    let session = format!("session-{n}-{:016x}", rand::random::<u64>());
    i.sessions.retain(|_, a| *a != id);
    i.sessions.insert(session.clone(), id.clone());
    i.names.insert(name, (id.clone(), Instant::now()));
    let reclaimed = reclaim.is_some();
    if v1_1 && reclaimed {
        rebind(&mut i, &id, &session);
    }
    i.register_outcomes.push(RegisterOutcome {
        status: 201,
        agent_id: Some(id.clone()),
        reclaimed,
    });
    let mut answer = json!({"agent_id": id, "session_token": session, "heartbeat_interval_ms": i.heartbeat_ms, "poll_timeout_ms": i.poll_ms, "pool": {"id": "apool-1", "name": "test-pool"}});
    if v1_1 {
        let fresh = format!("reclaim-{n}-{:032x}", rand::random::<u128>());
        i.reclaim.entry(id.clone()).or_default().pending = Some((fresh.clone(), session));
        answer["protocol"] = json!("1.1");
        answer["lease_ms"] = json!(i.lease.as_millis() as u64);
        answer["reclaim_secret"] = json!(fresh);
    }
    respond(201, answer)
}

/// Binds every unfinished task `agent` was handed last to `session`, renewing its lease.
fn rebind(i: &mut Inner, agent: &str, session: &str) {
    let lease = i.lease;
    for t in i.tasks.values_mut() {
        if t.handed_to.last().map(String::as_str) == Some(agent)
            && t.finishes.is_empty()
            && !t.withdrawn
        {
            t.session = Some(session.to_string());
            t.lease_until = Some(Instant::now() + lease);
            t.rebound += 1;
        }
    }
}
