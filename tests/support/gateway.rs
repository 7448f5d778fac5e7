//! A fake control plane for relays on 127.0.0.1, implementing the relay protocol v1 of
//! `docs/protocol.md`: registration (pool token), sessions, long-polled acquisition and
//! cancellations, request bodies streamed out, responses (head line + body) streamed in,
//! refusals and failures recorded. `submit` hands a request to the relays and returns its
//! outcome; a front door (`/front/...`) turns any HTTP request into a relayed one and streams
//! the answer back, so a real `git` can clone through it. `restart` stops listening, forgets
//! every session and listens again on the same port.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Response, StatusCode};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use url::Url;

/// What became of a relayed request.
#[derive(Debug)]
pub enum Outcome {
    /// The relay answered with the VCS's response; the body arrives on `body`.
    Answered {
        status: u16,
        headers: Vec<(String, String)>,
        body: mpsc::Receiver<Result<Bytes, String>>,
    },
    Refused {
        rule_set: String,
        reason: String,
    },
    Failed {
        reason: String,
        sent: bool,
    },
}

impl Outcome {
    /// The whole body of an answer (status, headers, bytes); panics on other outcomes.
    pub async fn collect(self) -> (u16, Vec<(String, String)>, Result<Vec<u8>, String>) {
        match self {
            Outcome::Answered {
                status,
                headers,
                mut body,
            } => {
                let mut all = Vec::new();
                while let Some(c) = next_chunk(&mut body).await {
                    match c {
                        Ok(b) => all.extend_from_slice(&b),
                        Err(e) => return (status, headers, Err(e)),
                    }
                }
                (status, headers, Ok(all))
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

/// How long a test waits for a relayed request's outcome or for the next chunk of its body
/// before it fails, naming what it waited for, instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The next chunk of an answer's body (`None` at its end), within [`PATIENCE`].
pub async fn next_chunk(
    body: &mut mpsc::Receiver<Result<Bytes, String>>,
) -> Option<Result<Bytes, String>> {
    match tokio::time::timeout(PATIENCE, body.recv()).await {
        Ok(c) => c,
        Err(_) => panic!("no chunk of the answer's body and no end within {PATIENCE:?}"),
    }
}

/// The outcome of a request from [`Gateway::submit`], within [`PATIENCE`].
pub async fn outcome(id: &str, rx: oneshot::Receiver<Outcome>) -> Outcome {
    match tokio::time::timeout(PATIENCE, rx).await {
        Ok(Ok(o)) => o,
        Ok(Err(_)) => panic!("{id}: the gateway dropped the request without an outcome"),
        Err(_) => panic!("{id}: no outcome within {PATIENCE:?}"),
    }
}

/// A request waiting for a relay.
pub struct Pending {
    pub id: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    body: Option<Body>,
    done: Option<oneshot::Sender<Outcome>>,
    /// The session whose acquire took it last.
    holder: Option<String>,
}

#[derive(Default)]
pub struct Inner {
    pub pool_token: String,
    pub sessions: Vec<String>,
    pub registrations: Vec<Value>,
    pub deregistrations: u32,
    queue: VecDeque<String>,
    requests: HashMap<String, Pending>,
    cancelled: Vec<String>,
    pub poll_ms: u64,
    next: u64,
    /// Every request the relays acquired, by id.
    pub acquired: Vec<String>,
    /// Every failure reported, `(request id, reason)`, also for requests already answered
    /// (a response upload that broke).
    pub failures: Vec<(String, String)>,
    /// Forget every session right after the next acquisition (once), as a restart between
    /// the acquisition and the request's next call would.
    pub forget_sessions_on_acquire: bool,
    /// Hold each acquire's answer this long after taking its request off the queue, as a
    /// network would: a relay that stops meanwhile never reads it.
    pub answer_delay: Duration,
    /// Requests handed out again because the session that acquired them deregistered
    /// without reporting them (docs/protocol.md, "Deregistration and stop").
    pub handed_back: Vec<String>,
    /// Answer every `refused` and `failed` report with 503.
    pub reports_unavailable: bool,
}

#[derive(Clone)]
pub struct Gateway {
    pub url: Url,
    pub inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    /// One `notify_one` per queued request: it wakes one held acquire, not all of them (a
    /// `notify_waiters` would wake every relay slot's poll for each request).
    queued: Arc<Notify>,
    server: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Incremented by each restart: connections kept alive from before it are answered 503
    /// with `Connection: close`, as a restarted server would have reset them.
    epoch: Arc<std::sync::atomic::AtomicU64>,
}

fn err(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"error": "e", "message": msg}).to_string(),
        ))
        .unwrap()
}

impl Gateway {
    pub async fn start() -> Gateway {
        let g = Gateway {
            url: Url::parse("http://127.0.0.1/").unwrap(),
            inner: Arc::new(Mutex::new(Inner {
                pool_token: "relay-pool-token".into(),
                poll_ms: 1000,
                ..Inner::default()
            })),
            changed: Arc::new(Notify::new()),
            queued: Arc::new(Notify::new()),
            server: Arc::default(),
            epoch: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let g = Gateway {
            url: Url::parse(&format!("http://{addr}/")).unwrap(),
            ..g
        };
        g.serve(listener);
        g
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((self.clone(), epoch));
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        *self.server.lock().unwrap() = Some(task);
    }

    /// Stops listening for `down`, forgets every session (the relay must register again),
    /// then listens on the same port again.
    pub async fn restart(&self, down: Duration) {
        if let Some(t) = self.server.lock().unwrap().take() {
            t.abort();
        }
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
        self.inner.lock().unwrap().sessions.clear();
        tokio::time::sleep(down).await;
        let addr: SocketAddr = format!("127.0.0.1:{}", self.url.port().unwrap())
            .parse()
            .unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        self.serve(listener);
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// Queues a request for the relays; the outcome arrives on the receiver.
    pub fn submit(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> (String, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let mut i = self.lock();
        i.next += 1;
        let id = format!("req-{}", i.next);
        i.requests.insert(
            id.clone(),
            Pending {
                id: id.clone(),
                method: method.into(),
                path: path.into(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body,
                done: Some(tx),
                holder: None,
            },
        );
        i.queue.push_back(id.clone());
        drop(i);
        self.queued.notify_one();
        (id, rx)
    }

    /// Submits and waits for the outcome (at most `within`).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> Outcome {
        let (id, rx) = self.submit(method, path, headers, body);
        outcome(&format!("{method} {path} ({id})"), rx).await
    }

    /// Cancels a request (delivered to the relay by its cancellation poll).
    pub fn cancel(&self, id: &str) {
        self.lock().cancelled.push(id.to_string());
        self.changed.notify_waiters();
    }

    /// The URL of the front door: requests under it are relayed to the VCS path after it.
    pub fn front(&self) -> Url {
        self.url.join("front/").unwrap()
    }

    /// Waits until `check` holds (polled on every change and every 50 ms), at most `within`.
    pub async fn wait_for(&self, within: Duration, what: &str, check: impl Fn(&Inner) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if check(&self.lock()) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("gateway: timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A session's deregistration: every request it acquired and never reported (no outcome
    /// yet) never reached the relay, so it goes back to the front of the queue.
    fn deregister(&self, session: &str) {
        let mut i = self.lock();
        i.deregistrations += 1;
        let mut back: Vec<String> = i
            .requests
            .values()
            .filter(|p| p.done.is_some() && p.holder.as_deref() == Some(session))
            .map(|p| p.id.clone())
            .collect();
        back.sort();
        for id in back.iter().rev() {
            i.requests.get_mut(id).unwrap().holder = None;
            i.queue.push_front(id.clone());
        }
        let n = back.len();
        i.handed_back.extend(back);
        drop(i);
        for _ in 0..n {
            self.queued.notify_one();
        }
    }

    fn finish(&self, id: &str, outcome: Outcome) -> bool {
        let tx = self.lock().requests.get_mut(id).and_then(|p| p.done.take());
        match tx {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }
}

/// The bearer token of a call ("" when there is none).
fn bearer(h: &HeaderMap) -> String {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start_matches("Bearer ")
        .to_string()
}

fn session_ok(g: &Gateway, h: &HeaderMap) -> bool {
    let tok = bearer(h);
    !tok.is_empty() && g.lock().sessions.contains(&tok)
}

async fn json_body(req: Request) -> Value {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

async fn handle(State((g, epoch)): State<(Gateway, u64)>, req: Request) -> Response<Body> {
    if epoch != g.epoch.load(std::sync::atomic::Ordering::SeqCst) {
        return Response::builder()
            .status(503)
            .header("connection", "close")
            .body(Body::from("restarting"))
            .unwrap();
    }
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/front/") {
        let q = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        return front(g, format!("/{rest}{q}"), req).await;
    }
    let Some(call) = path.strip_prefix("/api/relay/v1/") else {
        return err(StatusCode::NOT_FOUND, "not found");
    };
    if req
        .headers()
        .get("scalr-relay-protocol")
        .map(|v| v.as_bytes())
        != Some(b"1")
    {
        return err(StatusCode::BAD_REQUEST, "missing Scalr-Relay-Protocol: 1");
    }
    if call == "register" {
        let tok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if tok != format!("Bearer {}", g.lock().pool_token) {
            return err(StatusCode::UNAUTHORIZED, "bad pool token");
        }
        let body = json_body(req).await;
        let mut i = g.lock();
        i.next += 1;
        let session = format!("relay-session-{}", i.next);
        i.sessions.push(session.clone());
        i.registrations.push(body);
        let poll = i.poll_ms;
        return Response::builder()
            .status(201)
            .body(Body::from(json!({"relay_id": format!("relay-{}", i.next), "session_token": session, "poll_timeout_ms": poll}).to_string()))
            .unwrap();
    }
    if !session_ok(&g, req.headers()) {
        return err(StatusCode::UNAUTHORIZED, "unknown session");
    }
    let parts: Vec<&str> = call.split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::POST, ["requests", "acquire"]) => acquire(g, bearer(req.headers())).await,
        (Method::POST, ["cancellations"]) => cancellations(g).await,
        (Method::POST, ["deregister"]) => {
            g.deregister(&bearer(req.headers()));
            Response::builder().status(204).body(Body::empty()).unwrap()
        }
        (Method::GET, ["requests", id, "body"]) => {
            let body = g.lock().requests.get_mut(*id).and_then(|p| p.body.take());
            match body {
                Some(b) => Response::new(b),
                None => err(StatusCode::GONE, "no body"),
            }
        }
        (Method::POST, ["requests", id, "response"]) => response(g, id.to_string(), req).await,
        (Method::POST, ["requests", _, "refused" | "failed"]) if g.lock().reports_unavailable => {
            err(StatusCode::SERVICE_UNAVAILABLE, "reports are unavailable")
        }
        (Method::POST, ["requests", id, "refused"]) => {
            let v = json_body(req).await;
            g.finish(
                id,
                Outcome::Refused {
                    rule_set: v["rule_set"].as_str().unwrap_or("").into(),
                    reason: v["reason"].as_str().unwrap_or("").into(),
                },
            );
            Response::builder().status(204).body(Body::empty()).unwrap()
        }
        (Method::POST, ["requests", id, "failed"]) => {
            let v = json_body(req).await;
            g.lock()
                .failures
                .push((id.to_string(), v["reason"].as_str().unwrap_or("").into()));
            g.finish(
                id,
                Outcome::Failed {
                    reason: v["reason"].as_str().unwrap_or("").into(),
                    sent: v["sent"].as_bool().unwrap_or(true),
                },
            );
            Response::builder().status(204).body(Body::empty()).unwrap()
        }
        _ => err(StatusCode::NOT_FOUND, "no such call"),
    }
}

/// Takes the next queued request for `session`'s poll: its description and how long to hold
/// the answer ([`Inner::answer_delay`]).
fn take_next(g: &Gateway, session: &str) -> Option<(Value, Duration)> {
    let mut i = g.lock();
    let id = i.queue.pop_front()?;
    i.acquired.push(id.clone());
    if std::mem::take(&mut i.forget_sessions_on_acquire) {
        i.sessions.clear();
    }
    let delay = i.answer_delay;
    let p = i.requests.get_mut(&id).unwrap();
    p.holder = Some(session.to_string());
    let body = json!({"request_id": id, "method": p.method, "path": p.path, "headers": p.headers, "body": p.body.is_some()});
    Some((body, delay))
}

async fn acquire(g: Gateway, session: String) -> Response<Body> {
    let wait = Duration::from_millis(g.lock().poll_ms);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = g.queued.notified();
        let handed = take_next(&g, &session);
        if let Some((body, delay)) = handed {
            tokio::time::sleep(delay).await;
            return Response::new(Body::from(body.to_string()));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Response::builder().status(204).body(Body::empty()).unwrap();
        }
    }
}

async fn cancellations(g: Gateway) -> Response<Body> {
    let wait = Duration::from_millis(g.lock().poll_ms);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = g.changed.notified();
        let ids: Vec<String> = std::mem::take(&mut g.lock().cancelled);
        if !ids.is_empty() {
            return Response::new(Body::from(json!({"request_ids": ids}).to_string()));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Response::builder().status(204).body(Body::empty()).unwrap();
        }
    }
}

/// Reads the head line, hands the rest of the stream to the waiting caller chunk by chunk
/// (bounded channel: the caller's pace is the relay's pace), answers 204 at the end.
async fn response(g: Gateway, id: String, req: Request) -> Response<Body> {
    let mut stream = req.into_body().into_data_stream();
    let mut head = Vec::new();
    let mut rest = Bytes::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return err(StatusCode::BAD_REQUEST, "broken before the head");
        };
        head.extend_from_slice(&chunk);
        if let Some(n) = head.iter().position(|b| *b == b'\n') {
            rest = Bytes::copy_from_slice(&head[n + 1..]);
            head.truncate(n);
            break;
        }
        assert!(head.len() < 1 << 20, "head line too long");
    }
    let head: Value = match serde_json::from_slice(&head) {
        Ok(v) => v,
        Err(_) => return err(StatusCode::BAD_REQUEST, "bad head line"),
    };
    let headers = head["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap_or("").to_string(),
                        p[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let (tx, rx) = mpsc::channel(4);
    let status = head["status"].as_u64().unwrap_or(0) as u16;
    if !g.finish(
        &id,
        Outcome::Answered {
            status,
            headers,
            body: rx,
        },
    ) {
        return err(StatusCode::GONE, "nobody waits for this request");
    }
    if !rest.is_empty() && tx.send(Ok(rest)).await.is_err() {
        return err(StatusCode::GONE, "the caller went away");
    }
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(Ok(c)).await.is_err() {
                    return err(StatusCode::GONE, "the caller went away");
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("the relay's upload broke: {e}"))).await;
                return err(StatusCode::BAD_REQUEST, "broken upload");
            }
        }
    }
    Response::builder().status(204).body(Body::empty()).unwrap()
}

/// The front door: relays `req` and answers with the VCS's answer (403 for a refusal, 502 for
/// a failure, with the reason as the body).
async fn front(g: Gateway, path: String, req: Request) -> Response<Body> {
    let method = req.method().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let has_body = method == "POST" || method == "PUT" || method == "PATCH";
    let body = has_body.then(|| req.into_body());
    let hdrs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (_, rx) = g.submit(&method, &path, &hdrs, body);
    match rx.await {
        Ok(Outcome::Answered {
            status,
            headers,
            body,
        }) => {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                if k.eq_ignore_ascii_case("content-length") {
                    continue;
                }
                b = b.header(k, v);
            }
            let stream = tokio_stream_from(body);
            b.body(Body::from_stream(stream)).unwrap()
        }
        Ok(Outcome::Refused { rule_set, reason }) => Response::builder()
            .status(403)
            .body(Body::from(format!("{rule_set}: {reason}")))
            .unwrap(),
        Ok(Outcome::Failed { reason, .. }) => Response::builder()
            .status(502)
            .body(Body::from(reason))
            .unwrap(),
        Err(_) => Response::builder()
            .status(500)
            .body(Body::from("dropped"))
            .unwrap(),
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, String>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|r| r.map_err(std::io::Error::other)))
    })
}
