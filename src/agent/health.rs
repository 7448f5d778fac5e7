//! Readiness and Prometheus metrics: counters the daemon updates, and an optional minimal
//! HTTP/1.1 listener (`SCALR_AGENT_HEALTH_ADDR`) serving `/healthz`, `/readyz` and `/metrics`.
//!
//! The listener is deliberately tiny (one request per connection, `GET` only, 8 KiB request
//! head): it serves probes and scrapers on a private port, not the internet. Any other method
//! is answered `405`, any other path `404`.
//!
//! `/readyz` is `200` while the agent is registered, its last heartbeat is recent and it still
//! takes tasks; `503` before the registration, when heartbeats have failed for longer than the
//! server's offline threshold, and from the moment the agent starts stopping (drain included).
//! `/metrics` includes the software cache's counters when the executor has a cache
//! ([`Metrics::track_software_cache`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::software::{CacheStats, ToolStats};

/// A heartbeat older than this makes the agent not ready (the server's offline threshold).
const READY_WINDOW: Duration = Duration::from_secs(30);

/// The daemon's counters. Shared behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    slots_total: u64,
    slots_in_use: AtomicU64,
    heartbeat_failures: AtomicU64,
    upload_failures: AtomicU64,
    /// Milliseconds since `started` of the last successful heartbeat (0: none yet).
    last_heartbeat_ms: AtomicU64,
    registered: AtomicU64,
    /// (action, status) -> (count, total seconds).
    tasks: Mutex<BTreeMap<(String, String), (u64, f64)>>,
    steps: Mutex<StepDurations>,
    /// Set once the agent stops taking tasks: not ready any more.
    draining: AtomicBool,
    /// The software cache whose counters `/metrics` shows.
    software: OnceLock<Arc<CacheStats>>,
    /// The provider store whose counters `/metrics` shows.
    providers: OnceLock<Arc<crate::providers::ProviderStats>>,
    /// Where the listener is bound (the real port when `SCALR_AGENT_HEALTH_ADDR` asked for 0).
    health_addr: OnceLock<SocketAddr>,
}

/// (step kind, status) -> (count, total seconds). Kinds and statuses are closed sets, so the
/// label set stays small.
type StepDurations = BTreeMap<(&'static str, &'static str), (u64, f64)>;

impl Metrics {
    pub fn new(slots: u32) -> Metrics {
        Metrics {
            started: Instant::now(),
            slots_total: slots.into(),
            slots_in_use: AtomicU64::new(0),
            heartbeat_failures: AtomicU64::new(0),
            upload_failures: AtomicU64::new(0),
            last_heartbeat_ms: AtomicU64::new(0),
            registered: AtomicU64::new(0),
            tasks: Mutex::new(BTreeMap::new()),
            steps: Mutex::new(BTreeMap::new()),
            draining: AtomicBool::new(false),
            software: OnceLock::new(),
            health_addr: OnceLock::new(),
            providers: OnceLock::new(),
        }
    }

    /// Shows this provider store's counters at `/metrics` (the first store given wins).
    pub fn track_provider_cache(&self, stats: Arc<crate::providers::ProviderStats>) {
        let _ = self.providers.set(stats);
    }

    /// Shows this software cache's counters at `/metrics` (the first cache given wins).
    pub fn track_software_cache(&self, stats: Arc<CacheStats>) {
        let _ = self.software.set(stats);
    }

    /// The agent stopped taking tasks (stopping, draining, or single mode's one task taken):
    /// `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The address the health listener is bound to, once it is (with the real port when the
    /// configuration asked for port 0).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr.get().copied()
    }

    pub(super) fn set_health_addr(&self, addr: SocketAddr) {
        let _ = self.health_addr.set(addr);
    }

    pub fn set_registered(&self, yes: bool) {
        self.registered.store(yes.into(), Ordering::Relaxed);
        if yes {
            self.heartbeat_ok();
        }
    }

    pub fn heartbeat_ok(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_heartbeat_ms.store(ms.max(1), Ordering::Relaxed);
    }

    pub fn heartbeat_failure(&self) {
        self.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upload_failure(&self) {
        self.upload_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_slots_in_use(&self, n: usize) {
        self.slots_in_use.store(n as u64, Ordering::Relaxed);
    }

    pub fn task_done(&self, action: &str, status: &str, took: Duration) {
        let mut t = self.tasks.lock().unwrap();
        let e = t.entry((action.into(), status.into())).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }

    /// A step ended: `kind` is the step's kind (`init`, `plan`, `hook`, ...), never its name.
    pub fn step_done(&self, kind: &'static str, status: &'static str, took: Duration) {
        let mut s = self.steps.lock().unwrap();
        let e = s.entry((kind, status)).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }

    /// Registered, the last heartbeat is recent, and still taking tasks.
    pub fn ready(&self) -> bool {
        let last = self.last_heartbeat_ms.load(Ordering::Relaxed);
        self.registered.load(Ordering::Relaxed) == 1
            && !self.draining.load(Ordering::Relaxed)
            && last > 0
            // Saturating: a heartbeat in the first millisecond is stored as 1 ms.
            && (self.started.elapsed().as_millis() as u64).saturating_sub(last)
                < READY_WINDOW.as_millis() as u64
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            "scalr_agent_slots",
            "Task slots.",
            "gauge",
            self.slots_total,
        );
        gauge(
            "scalr_agent_slots_in_use",
            "Task slots in use.",
            "gauge",
            self.slots_in_use.load(Ordering::Relaxed),
        );
        gauge(
            "scalr_agent_heartbeat_failures_total",
            "Heartbeats that failed.",
            "counter",
            self.heartbeat_failures.load(Ordering::Relaxed),
        );
        gauge(
            "scalr_agent_upload_failures_total",
            "Uploads to the control plane that failed (and were retried): log chunks, artifacts, step reports and final statuses.",
            "counter",
            self.upload_failures.load(Ordering::Relaxed),
        );
        gauge(
            "scalr_agent_ready",
            "1 when registered with a recent heartbeat.",
            "gauge",
            self.ready().into(),
        );
        out.push_str("# HELP scalr_agent_tasks_total Tasks finished, by action and status.\n# TYPE scalr_agent_tasks_total counter\n");
        let tasks = self.tasks.lock().unwrap();
        for ((action, status), (n, _)) in tasks.iter() {
            let _ = writeln!(
                out,
                "scalr_agent_tasks_total{{action=\"{action}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP scalr_agent_task_duration_seconds Task durations.\n# TYPE scalr_agent_task_duration_seconds summary\n");
        for ((action, status), (n, secs)) in tasks.iter() {
            let labels = format!("action=\"{action}\",status=\"{status}\"");
            let _ = writeln!(
                out,
                "scalr_agent_task_duration_seconds_sum{{{labels}}} {secs:.3}\nscalr_agent_task_duration_seconds_count{{{labels}}} {n}"
            );
        }
        drop(tasks);
        out.push_str("# HELP scalr_agent_step_duration_seconds Step durations, by step kind and status.\n# TYPE scalr_agent_step_duration_seconds summary\n");
        for ((kind, status), (n, secs)) in self.steps.lock().unwrap().iter() {
            let labels = format!("kind=\"{kind}\",status=\"{status}\"");
            let _ = writeln!(
                out,
                "scalr_agent_step_duration_seconds_sum{{{labels}}} {secs:.3}\nscalr_agent_step_duration_seconds_count{{{labels}}} {n}"
            );
        }
        self.render_software_cache(&mut out);
        self.render_provider_cache(&mut out);
        out
    }

    /// The provider store's counters (see `providers::stats` for what each counts).
    fn render_provider_cache(&self, out: &mut String) {
        let Some(stats) = self.providers.get() else {
            return;
        };
        let s = stats.snapshot();
        let families: [(&str, &str, String); 6] = [
            (
                "hits_total",
                "Provider store entries linked into runs.",
                s.hits.to_string(),
            ),
            (
                "misses_total",
                "Providers a run downloaded itself (not in the store, or not accepted by its lock file).",
                s.misses.to_string(),
            ),
            (
                "fills_total",
                "Provider store fills completed by this agent.",
                s.fills.to_string(),
            ),
            (
                "fill_failures_total",
                "Provider store fills that failed.",
                s.fill_failures.to_string(),
            ),
            (
                "fill_seconds_total",
                "Wall time of completed provider store fills.",
                format!("{:.3}", s.fill_seconds),
            ),
            (
                "downloaded_bytes_total",
                "Bytes received over HTTP by provider store fills, retried attempts included.",
                s.downloaded_bytes.to_string(),
            ),
        ];
        for (suffix, help, value) in families {
            let name = format!("scalr_agent_provider_cache_{suffix}");
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }

    /// The software cache's counters, one series per tool (see `software::stats` for what
    /// each counts).
    fn render_software_cache(&self, out: &mut String) {
        let Some(stats) = self.software.get() else {
            return;
        };
        let tools = stats.snapshot();
        /// Name, help text, and the counter it shows.
        type Family = (&'static str, &'static str, fn(&ToolStats) -> u64);
        let families: [Family; 4] = [
            (
                "scalr_agent_software_cache_hits_total",
                "Tool installs answered from the software cache, including after waiting for a concurrent install of the same tool.",
                |t| t.hits,
            ),
            (
                "scalr_agent_software_cache_misses_total",
                "Tool installs that downloaded, verified and installed the tool.",
                |t| t.misses,
            ),
            (
                "scalr_agent_software_cache_failures_total",
                "Tool installs that failed.",
                |t| t.failures,
            ),
            (
                "scalr_agent_software_cache_downloaded_bytes_total",
                "Bytes received over HTTP by tool installs: artifacts, checksum files and signatures, retried attempts included.",
                |t| t.downloaded_bytes,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for t in &tools {
                let _ = writeln!(out, "{name}{{tool=\"{}\"}} {}", t.tool.name(), value(t));
            }
        }
    }
}

/// What the listener asks of the process it reports on: the run agent's [`Metrics`] and the
/// relay's metrics (`relay::metrics`) share the one listener.
pub trait Probe: Send + Sync + 'static {
    /// `/readyz` answers 200 when true.
    fn ready(&self) -> bool;
    /// `/metrics`, in the Prometheus text format.
    fn render(&self) -> String;
}

impl Probe for Metrics {
    fn ready(&self) -> bool {
        Metrics::ready(self)
    }

    fn render(&self) -> String {
        Metrics::render(self)
    }
}

/// Serves probes and metrics on `listener` until `shutdown`.
pub async fn serve<P: Probe>(listener: TcpListener, metrics: Arc<P>, shutdown: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut conn, _)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        // One short-lived request per connection, bounded by a timeout.
        conns.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut head = vec![0u8; 8192];
                let mut n = 0;
                while n < head.len() {
                    let r = conn.read(&mut head[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let line = String::from_utf8_lossy(&head[..n]);
                let mut words = line.split_whitespace();
                let method = words.next().unwrap_or("");
                let target = words.next().unwrap_or("/");
                let path = target.split_once('?').map_or(target, |(p, _)| p);
                let get = method == "GET";
                let (status, body, ctype) = match path {
                    _ if !get => (
                        "405 Method Not Allowed",
                        "method not allowed\n".to_string(),
                        "text/plain",
                    ),
                    "/healthz" => ("200 OK", "ok\n".to_string(), "text/plain"),
                    "/readyz" if metrics.ready() => ("200 OK", "ready\n".into(), "text/plain"),
                    "/readyz" => ("503 Service Unavailable", "not ready\n".into(), "text/plain"),
                    "/metrics" => ("200 OK", metrics.render(), "text/plain; version=0.0.4"),
                    _ => ("404 Not Found", "not found\n".into(), "text/plain"),
                };
                let allow = if get { "" } else { "Allow: GET\r\n" };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{allow}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(resp.as_bytes()).await?;
                conn.shutdown().await
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of one metric family: from its `# HELP` to the next family.
    fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let help = format!("# HELP {name} ");
        text.lines()
            .skip_while(|l| !l.starts_with(&help))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !l.starts_with("# HELP "))
            .map(|(_, l)| l)
            .collect()
    }

    #[test]
    fn step_durations_are_summed_by_kind_and_status() {
        let m = Metrics::new(1);
        m.step_done("plan", "succeeded", Duration::from_millis(1500));
        m.step_done("plan", "succeeded", Duration::from_millis(500));
        m.step_done("hook", "failed", Duration::from_millis(250));
        assert_eq!(
            family(&m.render(), "scalr_agent_step_duration_seconds"),
            [
                "# HELP scalr_agent_step_duration_seconds Step durations, by step kind and status.",
                "# TYPE scalr_agent_step_duration_seconds summary",
                r#"scalr_agent_step_duration_seconds_sum{kind="hook",status="failed"} 0.250"#,
                r#"scalr_agent_step_duration_seconds_count{kind="hook",status="failed"} 1"#,
                r#"scalr_agent_step_duration_seconds_sum{kind="plan",status="succeeded"} 2.000"#,
                r#"scalr_agent_step_duration_seconds_count{kind="plan",status="succeeded"} 2"#,
            ]
        );
    }

    #[test]
    fn without_steps_only_the_family_header_is_rendered() {
        assert_eq!(
            family(
                &Metrics::new(1).render(),
                "scalr_agent_step_duration_seconds"
            ),
            [
                "# HELP scalr_agent_step_duration_seconds Step durations, by step kind and status.",
                "# TYPE scalr_agent_step_duration_seconds summary",
            ]
        );
    }

    #[test]
    fn ready_needs_registration_and_ends_with_draining() {
        let m = Metrics::new(2);
        assert!(!m.ready());
        m.set_registered(true);
        assert!(m.ready());
        m.set_draining();
        assert!(!m.ready());
    }

    #[test]
    fn software_cache_counters_appear_once_tracked() {
        let m = Metrics::new(1);
        assert!(!m.render().contains("software_cache"));
        m.track_software_cache(Arc::default());
        let text = m.render();
        for tool in crate::software::catalog::Tool::ALL {
            for family in ["hits", "misses", "failures", "downloaded_bytes"] {
                let series = format!(
                    "scalr_agent_software_cache_{family}_total{{tool=\"{}\"}} 0\n",
                    tool.name()
                );
                assert!(text.contains(&series), "{series} missing from:\n{text}");
            }
        }
        assert!(text.contains("# TYPE scalr_agent_software_cache_misses_total counter\n"));
    }
}
