//! The relay protocol's JSON bodies (`docs/protocol.md`, "Relay protocol v1"): what the
//! relay says at registration, what it is told, and the response head it sends.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A request the control plane wants relayed.
#[derive(Clone, Deserialize)]
pub struct Incoming {
    pub request_id: String,
    pub method: String,
    /// Path and query relative to the VCS base URL.
    pub path: String,
    /// Header pairs in order; a name may repeat.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Whether the request has a body, read from `GET …/body`.
    #[serde(default)]
    pub body: bool,
}

/// Header values may carry VCS credentials: only names are shown.
impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Incoming")
            .field("request_id", &self.request_id)
            .field("method", &self.method)
            .field("headers", &names)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// The response head sent as the first line of `POST …/response`.
#[derive(Debug, Serialize)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// What the relay tells the server at registration.
#[derive(Debug, Clone, Serialize)]
pub struct Hello {
    pub name: String,
    pub version: &'static str,
    pub vendor: &'static str,
    pub parallelism: u32,
    pub preset: String,
    pub rules: usize,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub(super) struct Registered {
    pub relay_id: String,
    pub session_token: String,
    #[serde(default = "default_poll_ms")]
    pub poll_timeout_ms: u64,
}

fn default_poll_ms() -> u64 {
    25_000
}
