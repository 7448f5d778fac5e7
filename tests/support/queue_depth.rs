//! The queue-depth endpoint of the fake control plane (`GET /api/agent/v1/queue`,
//! docs/protocol.md "Queue depth"): a pool's pending and running task counts, readable only with
//! the pool's queue token, which cannot register an agent and so cannot take a task.

use std::time::Instant;

use axum::body::Body;
use axum::http::Response;
use serde_json::json;

use super::control_plane::{ControlPlane, Inner};

/// The fake pool's queue token.
pub const QUEUE_TOKEN: &str = "queue-token";

/// `(pending, running)`: tasks waiting for an agent (queued, or leased and not acknowledged in
/// time, which go back to the queue), and tasks an agent holds (leased within the lease or
/// acknowledged) that have not finished.
pub fn counts(i: &Inner) -> (usize, usize) {
    let (mut pending, mut running) = (i.queue.len(), 0);
    for (id, t) in &i.tasks {
        if !t.finishes.is_empty() || i.queue.contains(id) {
            continue;
        }
        let lease_live = t
            .leased_at
            .is_some_and(|at| Instant::now().duration_since(at) <= i.lease);
        if t.acked_by.is_some() || lease_live {
            running += 1;
        } else if t.leased_at.is_some() {
            pending += 1;
        }
    }
    (pending, running)
}

/// Answers `GET /api/agent/v1/queue`.
pub fn answer(cp: &ControlPlane, token: &str) -> Response<Body> {
    let (status, body) = if token == QUEUE_TOKEN {
        let (pending, running) = counts(&cp.lock());
        (
            200,
            json!({"pool": {"id": "apool-1", "name": "test-pool"}, "pending": pending, "running": running}),
        )
    } else {
        (
            401,
            json!({"error": "unauthorized", "message": "the queue needs the pool's queue token"}),
        )
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Body::from(body.to_string()))
        .unwrap()
}
