//! A release mirror on 127.0.0.1 serving files from memory, with fault injection and a request
//! count per path. Tests publish releases into it in the vendors' exact layouts.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Response, StatusCode, Uri, header};
use url::Url;

/// Something the mirror does instead of (or while) serving a file.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and no body.
    Status(u16),
    /// Answer with this status and a `Retry-After: <secs>` header.
    RetryAfter(u16, u64),
    /// Declare the full length, send only this many bytes (the client receives them), then
    /// drop the connection.
    Truncate(usize),
    /// Wait this long before answering normally.
    Delay(Duration),
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, Vec<u8>>,
    next: HashMap<String, VecDeque<Fault>>,
    always: HashMap<String, Fault>,
    hits: HashMap<String, u32>,
}

#[derive(Clone)]
pub struct Mirror {
    pub url: Url,
    inner: Arc<Mutex<Inner>>,
}

impl Mirror {
    /// Starts the mirror on the current tokio runtime.
    pub async fn start() -> Mirror {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mirror {
            url: Url::parse(&format!("http://{addr}/")).unwrap(),
            inner,
        }
    }

    /// Serves `bytes` at `path` (no leading slash).
    pub fn put(&self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.inner
            .lock()
            .unwrap()
            .files
            .insert(format!("/{path}"), bytes.into());
    }

    /// The bytes served at `path`, if any.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.inner
            .lock()
            .unwrap()
            .files
            .get(&format!("/{path}"))
            .cloned()
    }

    pub fn remove(&self, path: &str) {
        self.inner.lock().unwrap().files.remove(&format!("/{path}"));
    }

    /// The next requests of `path` meet these faults, in order.
    pub fn fail_next(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        self.inner
            .lock()
            .unwrap()
            .next
            .entry(format!("/{path}"))
            .or_default()
            .extend(faults);
    }

    /// Every request of `path` meets this fault.
    pub fn fail_always(&self, path: &str, fault: Fault) {
        self.inner
            .lock()
            .unwrap()
            .always
            .insert(format!("/{path}"), fault);
    }

    /// How many requests the mirror received, all paths together.
    pub fn requests(&self) -> u32 {
        self.inner.lock().unwrap().hits.values().sum()
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> u32 {
        self.inner
            .lock()
            .unwrap()
            .hits
            .get(&format!("/{path}"))
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, uri: Uri) -> Response<Body> {
    let path = uri.path().to_string();
    let (fault, file) = {
        let mut i = inner.lock().unwrap();
        *i.hits.entry(path.clone()).or_default() += 1;
        let fault = i
            .next
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| i.always.get(&path).cloned());
        (fault, i.files.get(&path).cloned())
    };
    let status = |code: u16| {
        Response::builder()
            .status(code)
            .body(Body::empty())
            .unwrap()
    };
    match fault {
        Some(Fault::Status(code)) => return status(code),
        Some(Fault::RetryAfter(code, secs)) => {
            let mut r = status(code);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Truncate(_)) | None => {}
    }
    let Some(file) = file else {
        return status(StatusCode::NOT_FOUND.as_u16());
    };
    let len = file.len();
    let body = match fault {
        Some(Fault::Truncate(n)) => {
            use futures_util::StreamExt;
            let head = bytes::Bytes::copy_from_slice(&file[..n.min(len)]);
            // The pause lets the server flush the head: the client really receives it.
            let drop = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("injected connection drop"))
            });
            Body::from_stream(futures_util::stream::iter([Ok(head)]).chain(drop))
        }
        _ => Body::from(file),
    };
    Response::builder()
        .status(200)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap()
}
