//! The relay's counters, shown at `/metrics` and `/readyz` by the shared health listener
//! (`agent::health::serve`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::agent::health::Probe;

/// Counters of one relay process. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    registered: AtomicBool,
    stopping: AtomicBool,
    in_flight: AtomicU64,
    bytes_to_vcs: AtomicU64,
    bytes_from_vcs: AtomicU64,
    /// (rule, status) -> relayed requests.
    relayed: Mutex<BTreeMap<(String, u16), u64>>,
    /// rule set -> refusals.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests that failed after being allowed (VCS unreachable, timeout, cancelled...).
    failed: AtomicU64,
    health_addr: OnceLock<SocketAddr>,
}

impl RelayMetrics {
    pub fn set_registered(&self, yes: bool) {
        self.registered.store(yes, Ordering::Relaxed);
    }

    /// The relay takes no new request from now on: `/readyz` answers 503.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn in_flight_add(&self, d: i64) {
        if d >= 0 {
            self.in_flight.fetch_add(d as u64, Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn relayed(&self, rule: &str, status: u16, to_vcs: u64, from_vcs: u64) {
        *self
            .relayed
            .lock()
            .unwrap()
            .entry((rule.into(), status))
            .or_default() += 1;
        self.bytes_to_vcs.fetch_add(to_vcs, Ordering::Relaxed);
        self.bytes_from_vcs.fetch_add(from_vcs, Ordering::Relaxed);
    }

    pub fn refused(&self, rule_set: &'static str) {
        *self.refused.lock().unwrap().entry(rule_set).or_default() += 1;
    }

    pub fn failed(&self, to_vcs: u64, from_vcs: u64) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.bytes_to_vcs.fetch_add(to_vcs, Ordering::Relaxed);
        self.bytes_from_vcs.fetch_add(from_vcs, Ordering::Relaxed);
    }

    pub fn set_health_addr(&self, addr: SocketAddr) {
        let _ = self.health_addr.set(addr);
    }

    /// Where the health listener is bound, once it is.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr.get().copied()
    }
}

impl Probe for RelayMetrics {
    fn ready(&self) -> bool {
        self.registered.load(Ordering::Relaxed) && !self.stopping.load(Ordering::Relaxed)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "scalr_agent_relay_ready",
            "1 when registered and not stopping.",
            "gauge",
            self.ready().into(),
        );
        one(
            "scalr_agent_relay_in_flight",
            "Requests being relayed.",
            "gauge",
            self.in_flight(),
        );
        one(
            "scalr_agent_relay_bytes_to_vcs_total",
            "Request body bytes sent to the VCS.",
            "counter",
            self.bytes_to_vcs.load(Ordering::Relaxed),
        );
        one(
            "scalr_agent_relay_bytes_from_vcs_total",
            "Response body bytes received from the VCS.",
            "counter",
            self.bytes_from_vcs.load(Ordering::Relaxed),
        );
        one(
            "scalr_agent_relay_failed_total",
            "Allowed requests that failed (VCS unreachable, timeout, cancelled, size limit).",
            "counter",
            self.failed.load(Ordering::Relaxed),
        );
        out.push_str("# HELP scalr_agent_relay_requests_total Relayed requests, by rule and status.\n# TYPE scalr_agent_relay_requests_total counter\n");
        for ((rule, status), n) in self.relayed.lock().unwrap().iter() {
            let rule = rule.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "scalr_agent_relay_requests_total{{rule=\"{rule}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP scalr_agent_relay_refusals_total Refused requests, by rule set.\n# TYPE scalr_agent_relay_refusals_total counter\n");
        for (set, n) in self.refused.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "scalr_agent_relay_refusals_total{{rule_set=\"{set}\"}} {n}"
            );
        }
        out
    }
}
