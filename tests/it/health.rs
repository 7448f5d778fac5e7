//! The daemon's health listener (`SCALR_AGENT_HEALTH_ADDR`): `/healthz`, `/readyz` through the
//! agent's life (registering, registered, draining, stopped), `/metrics` as valid Prometheus
//! text with the task, slot and software cache counters, and the answers to anything else.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalr_agent::agent::{self, AgentError, Metrics};
use scalr_agent::config::Config;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::control_plane::{ControlPlane, Fault};
use crate::support::daemon::{Rig, get};
use crate::support::exec::Exec;
use crate::support::executor::Script;
use crate::support::releases;

const LONG: Duration = Duration::from_secs(60);

/// A daemon started with metrics the test keeps.
struct Agent {
    handle: JoinHandle<Result<(), AgentError>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Agent {
    fn start(config: Config, executor: Arc<dyn agent::Executor>) -> Agent {
        let metrics = Arc::new(Metrics::new(config.agent.concurrency.get()));
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(agent::run_with_metrics(
            config.agent,
            executor,
            shutdown.clone(),
            metrics.clone(),
        ));
        Agent {
            handle,
            shutdown,
            metrics,
        }
    }

    /// The listener's address: the configuration asks for port 0, the agent reports the real one.
    async fn health_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(a) = self.metrics.health_addr() {
                assert!(a.ip().is_loopback() && a.port() != 0, "{a}");
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "the health listener never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(LONG, self.handle)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Polls `path` until it answers `status` (bounded).
async fn wait_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = Instant::now() + LONG;
    loop {
        if get(addr, path).await.0 == status {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/metrics`, checked against the Prometheus text exposition format: every sample belongs
/// to a family declared by one `# HELP` and one `# TYPE` line before it, names and labels are
/// well formed, values are numbers. Returns each series (`name{labels}`) with its value.
async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let r = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4",
        "the exposition format's content type"
    );
    let text = r.text().await.unwrap();
    parse_exposition(&text)
}

fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    assert!(text.ends_with('\n'), "the text must end with a newline");
    let mut help: Vec<String> = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP has a text");
            assert!(valid_name(name) && !doc.is_empty(), "{line}");
            assert!(!help.contains(&name.to_string()), "two HELP for {name}");
            help.push(name.into());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(help.contains(&name.to_string()), "TYPE before HELP: {line}");
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "two TYPE for {name}"
            );
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (key, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let name = match key.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end with }");
                    for pair in labels.split(',') {
                        let (l, v) = pair.split_once('=').expect("label=value");
                        assert!(valid_name(l), "{line}");
                        assert!(
                            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "{line}"
                        );
                    }
                    name
                }
                None => key,
            };
            assert!(valid_name(name), "{line}");
            let family = types.get(name).map(|_| name).or_else(|| {
                ["_sum", "_count", "_bucket"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s))
                    .find(|f| {
                        types
                            .get(*f)
                            .is_some_and(|k| k == "summary" || k == "histogram")
                    })
            });
            assert!(family.is_some(), "a sample without TYPE: {line}");
            if types[family.unwrap()] == "counter" {
                assert!(name.ends_with("_total") && value >= 0.0, "{line}");
            }
            assert!(
                series.insert(key.to_string(), value).is_none(),
                "a repeated series: {line}"
            );
        }
    }
    series
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_agent_from_registration_to_stop_and_metrics_count_tasks() {
    let rig = Rig::new().await;
    // The control plane takes its time to answer the registration: the agent is up, not ready.
    rig.cp
        .fail_next("register", [Fault::Delay(Duration::from_millis(1500))]);
    let config = rig.config(
        "agent-h",
        &[
            ("SCALR_AGENT_HEALTH_ADDR", "127.0.0.1:0"),
            ("SCALR_AGENT_CONCURRENCY", "2"),
            ("SCALR_AGENT_WORKER_DRAIN_TIMEOUT", "3s"),
        ],
    );
    let a = Agent::start(config, Arc::new(rig.exec.clone()));
    let addr = a.health_addr().await;

    assert_eq!(get(addr, "/readyz").await, (503, "not ready\n".into()));
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    let m = scrape(addr).await;
    assert_eq!(m["scalr_agent_ready"], 0.0);
    assert!(
        rig.cp.lock().registrations.is_empty(),
        "the registration was still pending"
    );

    wait_status(addr, "/readyz", 200).await;
    assert_eq!(get(addr, "/readyz").await.1, "ready\n");
    rig.cp.enqueue("t1");
    rig.queue(
        "t2",
        Script {
            status: scalr_agent::agent::executor::FinalStatus::Failed,
            ..Script::default()
        },
    );
    assert_eq!(
        rig.cp.wait_finished("t1", LONG).await["status"],
        "succeeded"
    );
    assert_eq!(rig.cp.wait_finished("t2", LONG).await["status"], "failed");

    let m = scrape(addr).await;
    assert_eq!(
        m[r#"scalr_agent_tasks_total{action="plan",status="succeeded"}"#],
        1.0
    );
    assert_eq!(
        m[r#"scalr_agent_tasks_total{action="plan",status="failed"}"#],
        1.0
    );
    assert_eq!(
        m[r#"scalr_agent_task_duration_seconds_count{action="plan",status="succeeded"}"#],
        1.0
    );
    assert!(m[r#"scalr_agent_task_duration_seconds_sum{action="plan",status="succeeded"}"#] > 0.0);
    assert_eq!(m["scalr_agent_slots"], 2.0);
    assert_eq!(m["scalr_agent_slots_in_use"], 0.0);
    assert_eq!(m["scalr_agent_ready"], 1.0);
    assert_eq!(m["scalr_agent_heartbeat_failures_total"], 0.0);
    // The fake executor has no software cache: no cache series at all.
    assert!(!m.keys().any(|k| k.contains("software_cache")), "{m:?}");

    // Anything but GET of the three paths.
    assert_eq!(get(addr, "/").await.0, 404);
    assert_eq!(get(addr, "/metrics/extra").await.0, 404);
    let r = client()
        .post(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    let r = client()
        .delete(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // A query string does not change the path.
    assert_eq!(get(addr, "/healthz?verbose=1").await.0, 200);

    // Stopping: while the running task drains the agent is alive but no longer ready.
    rig.queue(
        "slow",
        Script {
            work: Duration::from_secs(60),
            ..Script::default()
        },
    );
    rig.wait_seen("slow started", LONG, |s| {
        s.started.contains(&"slow".to_string())
    })
    .await;
    assert_eq!(get(addr, "/readyz").await.0, 200);
    a.shutdown.cancel();
    wait_status(addr, "/readyz", 503).await;
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let m = scrape(addr).await;
    assert_eq!(m["scalr_agent_ready"], 0.0);
    assert_eq!(m["scalr_agent_slots_in_use"], 1.0);
    assert!(
        rig.cp.task("slow").finishes.is_empty(),
        "the draining task is still running"
    );

    a.stop().await;
    assert_eq!(rig.cp.task("slow").finishes[0]["status"], "canceled");
    // The listener stops with the agent (its task ends just after the agent's: wait for it).
    crate::support::wait::until(
        "the health listener to close with the agent",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(addr).is_err(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_software_cache_of_the_real_runner() {
    let e = Exec::new().await;
    let cp = ControlPlane::start().await;
    let release: u64 = [
        "terraform/1.0.3/terraform_1.0.3_linux_amd64.zip",
        "terraform/1.0.3/terraform_1.0.3_SHA256SUMS",
        "terraform/1.0.3/terraform_1.0.3_SHA256SUMS.sig",
    ]
    .iter()
    .map(|f| e.h.mirror.file(f).expect(f).len() as u64)
    .sum();

    let mut a =
        e.h.agent()
            .control_plane(&cp, "agent-m")
            .env("SCALR_AGENT_HEALTH_ADDR", "127.0.0.1:0")
            .data_dir(&e.dir.join("agent-m"))
            .run();
    let addr = a.health_addr().await;
    a.ready().await;
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));

    // Before any task: every tool's series, at zero.
    let m = scrape(addr).await;
    for tool in ["opentofu", "terraform", "opa", "infracost"] {
        for family in ["hits", "misses", "failures", "downloaded_bytes"] {
            let series = format!("scalr_agent_software_cache_{family}_total{{tool=\"{tool}\"}}");
            assert_eq!(m.get(&series), Some(&0.0), "{series}");
        }
    }

    let archive = releases::tar_gz(&[releases::Entry::File(
        "main.tf",
        include_bytes!("../../examples/hello/main.tf"),
    )]);
    let plan = |id: &str| {
        let mut doc = e.task(id);
        doc["configuration"] = json!({"archive": {"url": format!("{}inputs/configuration", cp.url), "sha256": releases::sha256_hex(&archive)}});
        cp.enqueue_with_configuration(id, doc, &archive);
    };
    let cache = |m: &BTreeMap<String, f64>, family: &str| {
        m[&format!("scalr_agent_software_cache_{family}_total{{tool=\"terraform\"}}")]
    };

    // The first task downloads Terraform: a miss, and the release's bytes.
    plan("m-1");
    let finish = cp.wait_finished("m-1", LONG).await;
    assert_eq!(
        finish["status"],
        "succeeded",
        "{}",
        String::from_utf8_lossy(&cp.task("m-1").log)
    );
    let m = scrape(addr).await;
    assert_eq!(cache(&m, "misses"), 1.0);
    assert_eq!(cache(&m, "hits"), 0.0);
    assert_eq!(cache(&m, "failures"), 0.0);
    assert_eq!(cache(&m, "downloaded_bytes"), release as f64);

    // The second finds it in the cache: a hit, nothing more downloaded.
    plan("m-2");
    assert_eq!(cp.wait_finished("m-2", LONG).await["status"], "succeeded");
    let m = scrape(addr).await;
    assert_eq!(cache(&m, "misses"), 1.0);
    assert_eq!(cache(&m, "hits"), 1.0);
    assert_eq!(cache(&m, "downloaded_bytes"), release as f64);
    assert_eq!(
        m[r#"scalr_agent_tasks_total{action="plan",status="succeeded"}"#],
        2.0
    );
    let status = a.stop().await;
    assert!(status.success(), "{status:?}\n{}", a.stderr());
}

#[test]
fn the_exposition_checker_rejects_what_scrapers_reject() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert_eq!(parse_exposition(ok)[r#"a_total{x="1"}"#], 2.0);
    for bad in [
        "a_total 1\n",                                            // no TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total x\n", // not a number
        "# HELP a A.\n# TYPE a counter\na 1\n",                   // a counter without _total
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1",   // no final newline
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(bad)).is_err(),
            "accepted: {bad:?}"
        );
    }
}
