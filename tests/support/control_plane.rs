//! A fake control plane on 127.0.0.1 implementing `docs/protocol.md` (v1) in memory: a task
//! queue with leases and acknowledgements, long polls, idempotent log offsets, step reports
//! (checked and kept in order), exactly-once finish, and fault injection (statuses, answers
//! lost after the work was done, delays, token revocation, a restart that forgets sessions).
//! It counts everything it receives.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use url::Url;

/// Something the server does instead of (or besides) answering normally.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status, doing nothing.
    Status(u16),
    /// Do the work, then break the connection before the answer's body arrives.
    DropAfter,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Answer 200 with this raw body, doing nothing (malformed answers).
    Raw(String),
    /// Read this many bytes of the request body (or all of it, if shorter), then break the
    /// connection without answering: an upload cut off midway. Records the bytes read in
    /// `Inner::cut_uploads`.
    CutUpload(usize),
}

/// A task as the server keeps it.
#[derive(Debug, Clone, Default)]
pub struct TaskRec {
    pub doc: Value,
    pub token: String,
    /// Agent ids the task was handed to, in order.
    pub handed_to: Vec<String>,
    pub acked_by: Option<String>,
    pub leased_at: Option<Instant>,
    pub log: Vec<u8>,
    /// Every accepted (first) finish; more than one would be a bug.
    pub finishes: Vec<Value>,
    pub finish_calls: u32,
    pub signal: Option<&'static str>,
    pub artifacts: HashMap<String, Vec<u8>>,
    pub inputs: HashMap<String, Vec<u8>>,
    /// Every step report accepted, in the order received (a repeat would appear twice).
    pub steps: Vec<Value>,
    /// How many step reports had arrived when the first finish was accepted.
    pub steps_at_finish: Option<usize>,
}

#[derive(Default)]
pub struct Inner {
    pub pool_token: String,
    pub pool_revoked: bool,
    pub sessions: HashMap<String, String>,
    /// name -> (agent id, last contact)
    pub names: HashMap<String, (String, Instant)>,
    pub registrations: Vec<Value>,
    /// When each registration arrived (wall clock, for start-up benchmarks).
    pub registered_at: Vec<std::time::SystemTime>,
    pub deregistrations: u32,
    pub heartbeats: Vec<Value>,
    pub queue: VecDeque<String>,
    pub tasks: HashMap<String, TaskRec>,
    pub faults: HashMap<String, VecDeque<Fault>>,
    pub hits: HashMap<String, u32>,
    pub heartbeat_ms: u64,
    pub poll_ms: u64,
    pub lease: Duration,
    /// Bytes read of each upload that a `Fault::CutUpload` broke off.
    pub cut_uploads: Vec<usize>,
    /// The `Content-Length` declared by each artifact upload, in order (`None`: chunked).
    pub artifact_lengths: Vec<Option<u64>>,
    next_id: u32,
}

#[derive(Clone)]
pub struct ControlPlane {
    pub url: Url,
    pub inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// A minimal valid task document (the task model) with this id.
pub fn task_doc(id: &str) -> Value {
    json!({
        "id": id,
        "action": "plan",
        "run": {"id": format!("run-{id}"), "mode": "apply", "source": "api"},
        "workspace": {"id": "ws-1", "name": "ws", "iac_platform": "terraform", "iac_version": "1.0.3"},
        "environment": {"id": "env-1", "name": "env"},
        "control_plane": {"hostname": "localhost", "run_token": "run-token"},
        "configuration": {"archive": {"url": "https://cp.invalid/cv.tar.gz", "sha256": "0".repeat(64)}}
    })
}

impl ControlPlane {
    pub async fn start() -> ControlPlane {
        let inner = Arc::new(Mutex::new(Inner {
            pool_token: "pool-token".into(),
            heartbeat_ms: 200,
            poll_ms: 500,
            lease: Duration::from_secs(30),
            ..Inner::default()
        }));
        let changed = Arc::new(Notify::new());
        let cp = ControlPlane {
            url: Url::parse("http://127.0.0.1/").unwrap(),
            inner,
            changed,
        };
        let app = axum::Router::new().fallback(handle).with_state(cp.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ControlPlane {
            url: Url::parse(&format!("http://{addr}/")).unwrap(),
            ..cp
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// Queues a task with this document (its configuration input is a few bytes).
    pub fn enqueue_doc(&self, id: &str, doc: Value) {
        let mut i = self.lock();
        i.next_id += 1;
        let token = format!("task-token-{id}-{}", i.next_id);
        let mut inputs = HashMap::new();
        inputs.insert("configuration".to_string(), b"config-archive".to_vec());
        i.tasks.insert(
            id.into(),
            TaskRec {
                doc,
                token,
                inputs,
                ..TaskRec::default()
            },
        );
        i.queue.push_back(id.into());
        drop(i);
        self.changed.notify_waiters();
    }

    pub fn enqueue(&self, id: &str) {
        self.enqueue_doc(id, task_doc(id));
    }

    /// The next requests whose endpoint is `endpoint` (`register`, `heartbeat`, `acquire`,
    /// `ack`, `signal`, `log`, `artifacts`, `inputs`, `steps`, `finish`, `deregister`) meet
    /// these faults.
    pub fn fail_next(&self, endpoint: &str, faults: impl IntoIterator<Item = Fault>) {
        self.lock()
            .faults
            .entry(endpoint.into())
            .or_default()
            .extend(faults);
    }

    pub fn signal(&self, task: &str, signal: &'static str) {
        self.lock().tasks.get_mut(task).unwrap().signal = Some(signal);
        self.changed.notify_waiters();
    }

    /// Forgets every session, as a restarted server with in-memory sessions would.
    pub fn restart(&self) {
        let mut i = self.lock();
        i.sessions.clear();
        i.names.clear();
    }

    pub fn revoke_sessions(&self) {
        self.lock().sessions.clear();
    }

    pub fn revoke_pool_token(&self) {
        self.lock().pool_revoked = true;
    }

    pub fn hits(&self, endpoint: &str) -> u32 {
        self.lock().hits.get(endpoint).copied().unwrap_or(0)
    }

    pub fn task(&self, id: &str) -> TaskRec {
        self.lock().tasks.get(id).cloned().unwrap()
    }

    /// Waits (bounded) until `cond` holds.
    pub async fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&Inner) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(&self.lock()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_finished(&self, id: &str, timeout: Duration) -> Value {
        self.wait_for(&format!("task {id} finished"), timeout, |i| {
            i.tasks.get(id).is_some_and(|t| !t.finishes.is_empty())
        })
        .await;
        self.task(id).finishes[0].clone()
    }
}

fn respond(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn empty(status: u16) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap()
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

async fn handle(
    State(cp): State<ControlPlane>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let Some(path) = uri.path().strip_prefix("/api/agent/v1/") else {
        return empty(404);
    };
    let parts: Vec<&str> = path.split('/').collect();
    let endpoint = match parts.as_slice() {
        ["tasks", "acquire"] => "acquire",
        ["tasks", _, e, ..] => e,
        [e] => e,
        _ => return empty(404),
    }
    .to_string();
    let fault = {
        let mut i = cp.lock();
        *i.hits.entry(endpoint.clone()).or_default() += 1;
        if endpoint == "artifacts" {
            let declared = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            i.artifact_lengths.push(declared);
        }
        i.faults.get_mut(&endpoint).and_then(VecDeque::pop_front)
    };
    if let Some(Fault::CutUpload(n)) = fault {
        let mut stream = body.into_data_stream();
        let mut read = 0;
        while read < n {
            match stream.next().await {
                Some(Ok(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        cp.lock().cut_uploads.push(read);
        return broken(Response::builder().status(200).body(Body::empty()).unwrap());
    }
    // Unlimited: artifacts can be large (axum's `Bytes` extractor would stop at 2 MB).
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return empty(400);
    };
    match &fault {
        Some(Fault::Status(s)) => return empty(*s),
        Some(Fault::Raw(b)) => {
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(b.clone()))
                .unwrap();
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let token = bearer(&headers);
    let resp = route(&cp, &method, &parts, uri.query(), &token, body).await;
    if let Some(Fault::DropAfter) = fault {
        return broken(resp);
    }
    resp
}

/// `resp` with a body that fails after its head is sent: the connection breaks.
fn broken(resp: Response<Body>) -> Response<Body> {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        vec![Err(std::io::Error::other("injected connection drop"))];
    let (parts, _) = resp.into_parts();
    let mut r = Response::from_parts(parts, Body::from_stream(futures_util::stream::iter(chunks)));
    r.headers_mut().insert("content-length", 100.into());
    r
}

async fn route(
    cp: &ControlPlane,
    method: &Method,
    parts: &[&str],
    query: Option<&str>,
    token: &str,
    body: Bytes,
) -> Response<Body> {
    match (method.as_str(), parts) {
        ("POST", ["register"]) => register(cp, token, &body),
        ("POST", ["heartbeat"]) | ("POST", ["deregister"]) | ("POST", ["tasks", "acquire"]) => {
            let agent = cp.lock().sessions.get(token).cloned();
            let Some(agent) = agent else {
                return respond(
                    401,
                    json!({"error": "unauthorized", "message": "unknown session"}),
                );
            };
            match parts {
                ["heartbeat"] => {
                    let mut i = cp.lock();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    i.heartbeats.push(v);
                    for (_, (id, seen)) in i.names.iter_mut() {
                        if *id == agent {
                            *seen = Instant::now();
                        }
                    }
                    empty(204)
                }
                ["deregister"] => {
                    let mut i = cp.lock();
                    i.deregistrations += 1;
                    i.sessions.retain(|_, a| *a != agent);
                    i.names.retain(|_, (a, _)| *a != agent);
                    empty(204)
                }
                _ => acquire(cp, &agent).await,
            }
        }
        (m, ["tasks", id, rest @ ..]) => task_call(cp, m, id, rest, query, token, body).await,
        ("GET", ["queue"]) => super::queue_depth::answer(cp, token),
        _ => empty(404),
    }
}

fn register(cp: &ControlPlane, token: &str, body: &[u8]) -> Response<Body> {
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
    if let Some((id, seen)) = i.names.get(&name)
        && seen.elapsed() < Duration::from_secs(30)
        && previous.as_deref() != Some(id.as_str())
    {
        return respond(
            409,
            json!({"error": "name_conflict", "message": format!("{name} is connected")}),
        );
    }
    i.next_id += 1;
    let id = previous.unwrap_or_else(|| format!("agt-{}", i.next_id));
    let session = format!("session-{}", i.next_id);
    i.sessions.retain(|_, a| *a != id);
    i.sessions.insert(session.clone(), id.clone());
    i.names.insert(name, (id.clone(), Instant::now()));
    respond(
        201,
        json!({"agent_id": id, "session_token": session, "heartbeat_interval_ms": i.heartbeat_ms, "poll_timeout_ms": i.poll_ms, "pool": {"id": "apool-1", "name": "test-pool"}}),
    )
}

async fn acquire(cp: &ControlPlane, agent: &str) -> Response<Body> {
    let hold = Duration::from_millis(cp.lock().poll_ms);
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let notified = cp.changed.notified();
        {
            let mut i = cp.lock();
            // Leases not acknowledged in time go back to the queue.
            let lease = i.lease;
            let expired: Vec<String> = i
                .tasks
                .iter()
                .filter(|(_, t)| {
                    t.acked_by.is_none() && t.leased_at.is_some_and(|at| at.elapsed() > lease)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                i.tasks.get_mut(&id).unwrap().leased_at = None;
                i.queue.push_back(id);
            }
            if let Some(id) = i.queue.pop_front() {
                let t = i.tasks.get_mut(&id).unwrap();
                t.handed_to.push(agent.into());
                t.leased_at = Some(Instant::now());
                return respond(
                    200,
                    json!({"task_id": id, "task_token": t.token, "task": t.doc}),
                );
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return empty(204);
        }
    }
}

async fn task_call(
    cp: &ControlPlane,
    method: &str,
    id: &str,
    rest: &[&str],
    query: Option<&str>,
    token: &str,
    body: Bytes,
) -> Response<Body> {
    {
        let i = cp.lock();
        match i.tasks.get(id) {
            Some(t) if t.token == token && t.finishes.is_empty() => {}
            Some(t) if t.token == token && rest == ["finish"] => {}
            _ => return respond(401, json!({"error": "unauthorized"})),
        }
    }
    if let (method, ["signal"]) = (method, rest) {
        assert_eq!(method, "GET");
        let hold = Duration::from_millis(cp.lock().poll_ms);
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let notified = cp.changed.notified();
            if let Some(s) = cp.lock().tasks[id].signal {
                return respond(200, json!({"signal": s}));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return empty(204);
            }
        }
    }
    let mut i = cp.lock();
    let t = i.tasks.get_mut(id).unwrap();
    match (method, rest) {
        ("POST", ["ack"]) => match &t.acked_by {
            Some(_) => empty(204),
            None if t.leased_at.is_some() => {
                t.acked_by = t.handed_to.last().cloned();
                empty(204)
            }
            None => respond(409, json!({"error": "lease_expired"})),
        },
        ("GET", ["inputs", name]) => match t.inputs.get(*name) {
            Some(b) => Response::new(Body::from(b.clone())),
            None => empty(404),
        },
        ("PUT", ["log"]) => {
            let offset: u64 = query
                .and_then(|q| q.strip_prefix("offset="))
                .and_then(|v| v.parse().ok())
                .unwrap();
            let committed = t.log.len() as u64;
            if offset > committed {
                return respond(409, json!({"error": "gap", "committed": committed}));
            }
            let skip = (committed - offset) as usize;
            if skip < body.len() {
                assert_eq!(
                    &t.log[offset as usize..],
                    &body[..skip],
                    "re-sent bytes differ"
                );
                t.log.extend_from_slice(&body[skip..]);
            }
            respond(200, json!({"committed": t.log.len()}))
        }
        ("PUT", ["artifacts", name]) => {
            t.artifacts.insert(name.to_string(), body.to_vec());
            empty(204)
        }
        ("POST", ["steps"]) => {
            let report: Value = serde_json::from_slice(&body).unwrap();
            let well_formed = report["step"].is_string()
                && report["index"].is_u64()
                && report["kind"].is_string()
                && matches!(
                    report["status"].as_str(),
                    Some("running" | "succeeded" | "failed" | "timed_out" | "canceled" | "errored")
                );
            if !well_formed {
                return respond(
                    400,
                    json!({"error": "bad_step", "message": report.to_string()}),
                );
            }
            t.steps.push(report);
            empty(204)
        }
        ("POST", ["finish"]) => {
            t.finish_calls += 1;
            let f: Value = serde_json::from_slice(&body).unwrap();
            if let Some(first) = t.finishes.first() {
                return if *first == f {
                    empty(200)
                } else {
                    respond(409, json!({"error": "already_finished"}))
                };
            }
            if f["log_size"].as_u64() != Some(t.log.len() as u64) {
                return respond(
                    409,
                    json!({"error": "log_incomplete", "committed": t.log.len()}),
                );
            }
            t.finishes.push(f);
            t.steps_at_finish = Some(t.steps.len());
            empty(200)
        }
        _ => empty(404),
    }
}
