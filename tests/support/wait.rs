//! Waiting on conditions instead of the clock: every wait polls a condition and fails after a
//! bound with what it waited for, never sleeps a fixed time and hopes.

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds; fails after `timeout` with `what` and `context()` (such as
/// the agent's log).
pub async fn until_with(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` until it holds; fails after `timeout` naming `what`.
pub async fn until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    until_with(what, timeout, String::new, cond).await
}

/// The blocking form of [`until`], for synchronous tests and benchmarks.
pub fn until_blocking(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}
