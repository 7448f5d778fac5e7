//! A fake control plane on 127.0.0.1 implementing `docs/protocol.md` (v1.1, or v1 when
//! [`Inner::version`] says so) in memory: a task queue with leases and acknowledgements,
//! idempotent acquisition by request id, long polls (signals held on a cursor), idempotent log
//! offsets, step reports (checked and kept in order), exactly-once finish checked against the
//! log's size and SHA-256, and fault injection (statuses, answers lost after the work was done,
//! delays, a lost log tail, token revocation, a restart that forgets sessions). Registration,
//! session binding and reclaim live in `sessions`. It counts everything it receives, per
//! endpoint and per task with the time of each request.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
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
    /// Forget the task's log past this many bytes (a failover lost its tail), then answer
    /// normally.
    LoseLogTail(usize),
}

/// The protocol version the fake speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    /// Announces nothing; signal polls answer the current signal at once; acquire ids are
    /// ignored.
    V1,
    #[default]
    V1_1,
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
    /// When the lease runs out unless a heartbeat of its agent renews it (v1.1).
    pub lease_until: Option<Instant>,
    /// The server ended the task itself (lease expired: `errored`, "agent lost").
    pub ended_by_server: Option<Instant>,
    pub log: Vec<u8>,
    /// Every accepted (first) finish; more than one would be a bug.
    pub finishes: Vec<Value>,
    pub finish_calls: u32,
    pub signal: Option<&'static str>,
    /// The cursor of the newest signal (0: none yet).
    pub signal_cursor: u64,
    /// `(offset, length)` of every log chunk received, in order.
    pub log_puts: Vec<(u64, usize)>,
    /// The `cursor` of every signal poll (`None`: sent without one).
    pub signal_cursors: Vec<Option<u64>>,
    /// Withdrawn: every call with its token answers 410.
    pub withdrawn: bool,
    /// The session holding the task (v1.1): its calls need this `Scalr-Agent-Session`.
    pub session: Option<String>,
    /// How many reclaims re-bound the task to a new session.
    pub rebound: u32,
    /// When the first call was refused because the task is over for its agent.
    pub refused_at: Option<Instant>,
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
    /// session token -> agent id
    pub sessions: HashMap<String, String>,
    /// name -> (agent id, last contact)
    pub names: HashMap<String, (String, Instant)>,
    /// A name is connected (a registration of another agent with it is a conflict) for this
    /// long after its agent's last contact.
    pub offline_after: Duration,
    /// agent id -> its reclaim secrets (v1.1); kept across [`ControlPlane::restart`].
    pub reclaim: HashMap<String, super::sessions::Reclaim>,
    /// How each registration was answered, in order.
    pub register_outcomes: Vec<super::sessions::RegisterOutcome>,
    /// Task calls answered `401 session_unknown`.
    pub session_unknown: u32,
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
    /// The task lease: an unacknowledged task goes back to the queue after it; with v1.1 an
    /// acknowledged task whose lease was not renewed by a heartbeat is ended `errored`
    /// ("agent lost") and its token revoked.
    pub lease: Duration,
    /// Bytes read of each upload that a `Fault::CutUpload` broke off.
    pub cut_uploads: Vec<usize>,
    /// The `Content-Length` declared by each artifact upload, in order (`None`: chunked).
    pub artifact_lengths: Vec<Option<u64>>,
    /// The version this server speaks.
    pub version: Version,
    /// Until then every request is received (and counted) but its connection breaks before
    /// an answer: a network cut.
    pub cut_until: Option<Instant>,
    /// Every acquire body, in order.
    pub acquires: Vec<Value>,
    /// Acquire request id -> the task handed out for it.
    pub acquire_ids: HashMap<String, String>,
    /// Every request naming a task (`/tasks/{id}/...`), by task id: endpoint and arrival.
    pub task_requests: HashMap<String, Vec<(String, Instant)>>,
    pub(super) next_id: u32,
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
            offline_after: Duration::from_secs(30),
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
        tokio::spawn(expire_leases(cp.clone()));
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
        self.enqueue_with_configuration(id, doc, b"config-archive");
    }

    /// Queues a task with this document and `archive` as its configuration input (what a
    /// document whose configuration URL is `{url}inputs/configuration` downloads).
    pub fn enqueue_with_configuration(&self, id: &str, doc: Value, archive: &[u8]) {
        let mut i = self.lock();
        i.next_id += 1;
        let token = format!("task-token-{id}-{}", i.next_id);
        let mut inputs = HashMap::new();
        inputs.insert("configuration".to_string(), archive.to_vec());
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
        let mut i = self.lock();
        let t = i.tasks.get_mut(task).unwrap();
        t.signal = Some(signal);
        t.signal_cursor += 1;
        drop(i);
        self.changed.notify_waiters();
    }

    /// How many `endpoint` requests naming `task` arrived.
    pub fn task_hits(&self, task: &str, endpoint: &str) -> usize {
        self.times(task, endpoint).len()
    }

    /// When each `endpoint` request naming `task` arrived.
    pub fn times(&self, task: &str, endpoint: &str) -> Vec<Instant> {
        self.lock()
            .task_requests
            .get(task)
            .into_iter()
            .flatten()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, at)| *at)
            .collect()
    }

    /// The most `endpoint` requests naming `task` that arrived within any `window`.
    pub fn max_in_window(&self, task: &str, endpoint: &str, window: Duration) -> usize {
        let times = self.times(task, endpoint);
        (0..times.len())
            .map(|a| {
                times[a..]
                    .iter()
                    .take_while(|t| **t - times[a] < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Cuts the network for `d`: requests arrive but get no answer (their connections break).
    pub fn cut(&self, d: Duration) {
        self.lock().cut_until = Some(Instant::now() + d);
    }

    /// Withdraws a task: every call with its token answers 410 from now on, and held signal
    /// polls end.
    pub fn withdraw(&self, task: &str) {
        self.lock().tasks.get_mut(task).unwrap().withdrawn = true;
        self.changed.notify_waiters();
    }

    /// Requests naming `task` that arrived more than `after` after its first refusal.
    pub fn requests_after_refusal(&self, task: &str, after: Duration) -> Vec<String> {
        let i = self.lock();
        let Some(at) = i.tasks.get(task).and_then(|t| t.refused_at) else {
            return Vec::new();
        };
        i.task_requests
            .get(task)
            .into_iter()
            .flatten()
            .filter(|(_, when)| *when > at + after)
            .map(|(e, _)| e.clone())
            .collect()
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

/// Renews the leases of the tasks a heartbeat of `session` names (`running` and
/// `delivering`) that this session holds; returns those it does not hold any more (ended,
/// withdrawn, handed to another agent or session).
fn renew_leases(i: &mut Inner, session: &str, beat: &Value) -> Vec<String> {
    let lease = i.lease;
    let named = ["running", "delivering"]
        .iter()
        .flat_map(|k| beat[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned));
    let mut ended = Vec::new();
    for id in named {
        match i.tasks.get_mut(&id) {
            Some(t)
                if t.session.as_deref() == Some(session)
                    && t.finishes.is_empty()
                    && !t.withdrawn =>
            {
                t.lease_until = Some(Instant::now() + lease);
            }
            Some(t) if !t.finishes.is_empty() && t.ended_by_server.is_none() => {
                // Finished by this agent; its heartbeat raced the finish.
            }
            _ => ended.push(id),
        }
    }
    ended
}

/// Ends the acknowledged tasks whose lease ran out (v1.1): `errored`, "agent lost", recorded
/// as their one final status; their tokens answer 410 from then on.
async fn expire_leases(cp: ControlPlane) {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut i = cp.lock();
        if i.version == Version::V1 {
            continue;
        }
        let mut any = false;
        for t in i.tasks.values_mut() {
            if t.acked_by.is_some()
                && t.finishes.is_empty()
                && t.lease_until.is_some_and(|at| at < Instant::now())
            {
                t.finishes.push(json!({"status": "errored", "result": null,
                    "error": "agent lost", "ended_by": "server"}));
                t.ended_by_server = Some(Instant::now());
                t.withdrawn = true;
                any = true;
            }
        }
        drop(i);
        if any {
            cp.changed.notify_waiters();
        }
    }
}

pub(super) fn respond(status: u16, body: Value) -> Response<Body> {
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
        if let ["tasks", id, ..] = parts.as_slice()
            && *id != "acquire"
        {
            i.task_requests
                .entry(id.to_string())
                .or_default()
                .push((endpoint.clone(), Instant::now()));
        }
        if endpoint == "artifacts" {
            let declared = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            i.artifact_lengths.push(declared);
        }
        if i.cut_until.is_some_and(|until| Instant::now() < until) {
            drop(i);
            return broken(empty(200));
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
        Some(Fault::LoseLogTail(keep)) => {
            let mut i = cp.lock();
            if let Some(t) = parts.get(1).and_then(|id| i.tasks.get_mut(*id)) {
                t.log.truncate(*keep);
            }
        }
        _ => {}
    }
    let token = bearer(&headers);
    let session = super::sessions::session_header(&headers);
    let resp = route(&cp, &method, &parts, uri.query(), (&token, session), body).await;
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
    (token, session): (&str, Option<String>),
    body: Bytes,
) -> Response<Body> {
    match (method.as_str(), parts) {
        ("POST", ["register"]) => super::sessions::register(cp, token, &body),
        ("POST", ["heartbeat"]) | ("POST", ["deregister"]) | ("POST", ["tasks", "acquire"]) => {
            let agent = cp.lock().sessions.get(token).cloned();
            let Some(agent) = agent else {
                return respond(
                    401,
                    json!({"error": "unauthorized", "message": "unknown session"}),
                );
            };
            super::sessions::confirm(&mut cp.lock(), token);
            match parts {
                ["heartbeat"] => {
                    let mut i = cp.lock();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    i.heartbeats.push(v.clone());
                    for (_, (id, seen)) in i.names.iter_mut() {
                        if *id == agent {
                            *seen = Instant::now();
                        }
                    }
                    if i.version == Version::V1 {
                        return empty(204);
                    }
                    let ended = renew_leases(&mut i, token, &v);
                    respond(200, json!({"ended": ended}))
                }
                ["deregister"] => {
                    let mut i = cp.lock();
                    i.deregistrations += 1;
                    i.sessions.retain(|_, a| *a != agent);
                    i.names.retain(|_, (a, _)| *a != agent);
                    empty(204)
                }
                _ => acquire(cp, &agent, token, &body).await,
            }
        }
        (m, ["tasks", id, rest @ ..]) => {
            task_call(cp, m, id, rest, query, (token, session.as_deref()), body).await
        }
        ("GET", ["queue"]) => super::queue_depth::answer(cp, token),
        _ => empty(404),
    }
}

async fn acquire(cp: &ControlPlane, agent: &str, session: &str, body: &[u8]) -> Response<Body> {
    let hold = Duration::from_millis(cp.lock().poll_ms);
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    cp.lock().acquires.push(req.clone());
    let request_id = req["request_id"]
        .as_str()
        .map(str::to_owned)
        .filter(|_| cp.lock().version == Version::V1_1);
    // A retried acquire whose answer was lost gets the same task again (v1.1).
    if let Some(rid) = &request_id {
        let mut i = cp.lock();
        let id = i.acquire_ids.get(rid).cloned().unwrap_or_default();
        if let Some(t) = i.tasks.get_mut(&id)
            && t.acked_by.is_none()
            && t.handed_to.last().map(String::as_str) == Some(agent)
        {
            t.session = Some(session.into());
            return respond(
                200,
                json!({"task_id": id, "task_token": t.token, "task": t.doc}),
            );
        }
    }
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
                t.session = Some(session.into());
                t.leased_at = Some(Instant::now());
                t.lease_until = Some(Instant::now() + lease);
                let answer = json!({"task_id": id, "task_token": t.token, "task": t.doc});
                if let Some(rid) = request_id {
                    i.acquire_ids.insert(rid, id);
                }
                return respond(200, answer);
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
    (token, session): (&str, Option<&str>),
    body: Bytes,
) -> Response<Body> {
    {
        let mut i = cp.lock();
        let refusal = match i.tasks.get(id) {
            Some(t) if t.token == token && t.withdrawn => Some(respond(
                410,
                json!({"error": "gone", "message": "task withdrawn"}),
            )),
            Some(t) if t.token == token && (t.finishes.is_empty() || rest == ["finish"]) => {
                super::sessions::check_task_call(&mut i, id, session)
            }
            Some(t) if t.token == token => Some(respond(
                410,
                json!({"error": "gone", "message": "task finished"}),
            )),
            _ => Some(respond(401, json!({"error": "unauthorized"}))),
        };
        if let Some(refusal) = refusal {
            if let Some(t) = i.tasks.get_mut(id) {
                t.refused_at.get_or_insert_with(Instant::now);
            }
            return refusal;
        }
    }
    if let (method, ["signal"]) = (method, rest) {
        assert_eq!(method, "GET");
        let (hold, version) = {
            let i = cp.lock();
            (Duration::from_millis(i.poll_ms), i.version)
        };
        // v1.1: held while the agent has the newest signal; v1: the current signal at once.
        let cursor = query
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("cursor=")))
            .and_then(|v| v.parse::<u64>().ok());
        cp.lock()
            .tasks
            .get_mut(id)
            .unwrap()
            .signal_cursors
            .push(cursor);
        let cursor = cursor.filter(|_| version == Version::V1_1);
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let notified = cp.changed.notified();
            let (signal, at, withdrawn) = {
                let i = cp.lock();
                let t = &i.tasks[id];
                (t.signal, t.signal_cursor, t.withdrawn)
            };
            if withdrawn {
                return respond(410, json!({"error": "gone", "message": "task withdrawn"}));
            }
            if let Some(s) = signal
                && cursor.is_none_or(|seen| at > seen)
            {
                return respond(200, json!({"signal": s, "cursor": at}));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return empty(204);
            }
        }
    }
    let mut i = cp.lock();
    let v1_1 = i.version == Version::V1_1;
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
            t.log_puts.push((offset, body.len()));
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
            if let Some(sum) = f["log_sha256"].as_str().filter(|_| v1_1)
                && sum != hex::encode(Sha256::digest(&t.log))
            {
                // What it assembled does not match: start over.
                t.log.clear();
                return respond(409, json!({"error": "log_incomplete", "committed": 0}));
            }
            t.finishes.push(f);
            t.steps_at_finish = Some(t.steps.len());
            empty(200)
        }
        _ => empty(404),
    }
}
