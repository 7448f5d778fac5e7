//! Container start to registered (issue 11, see BENCHMARKS.md): the agent image started with
//! `podman run --network host` against the tests' fake control plane on 127.0.0.1, measured
//! from the agent process's start by the agent itself (`process_age_ms` in its "ready to receive
//! tasks" line: the kernel's start time against the boot clock), from podman's `State.StartedAt`
//! and from the `podman run` invocation to the registration's arrival at the control plane.
//!
//! `IMAGE=localhost/scalr-agent:dev-amd64 cargo bench --bench container_start [-- ROUNDS]`,
//! with podman configured by `images/env.sh` (`images/bench.sh` does both).
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads its own fixtures and starts its own processes"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::control_plane::ControlPlane;

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().expect("podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The agent's own measures of its start-up, `startup_ms` (since `main`) and `process_age_ms`
/// (since the kernel made the process: in a container, the runtime's fork before `exec`) of its
/// "ready to receive tasks" line (see `agent::uptime`).
async fn ready_age_ms(name: &str) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = Command::new("podman")
            .args(["logs", name])
            .output()
            .expect("podman logs");
        let text = String::from_utf8_lossy(&logs.stdout).into_owned()
            + &String::from_utf8_lossy(&logs.stderr);
        let ready = text
            .lines()
            .filter(|l| l.contains("ready to receive tasks"))
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        let field = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        if let Some(v) = ready {
            let both = field(&v, "startup_ms").zip(field(&v, "process_age_ms"));
            return both.unwrap_or_else(|| panic!("no startup_ms/process_age_ms in {v}"));
        }
        assert!(
            Instant::now() < deadline,
            "no process_age_ms in {name}'s log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nanos(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{name}: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} rounds)",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

// The bench is not the agent: it takes its image name from the environment like its script.
#[allow(clippy::disallowed_methods)]
#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    let image = std::env::var("IMAGE").unwrap_or_else(|_| "localhost/scalr-agent:dev-amd64".into());
    let cp = ControlPlane::start().await;
    let (mut main, mut own, mut inside, mut whole) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let name = format!("scalr-agent-bench-{}-{round}", std::process::id());
        let url = format!("SCALR_URL={}", cp.url);
        let agent_name = format!("SCALR_AGENT_NAME={name}");
        let invoked = SystemTime::now();
        podman(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "-e",
            &url,
            "-e",
            "SCALR_AGENT_TOKEN=pool-token",
            "-e",
            &agent_name,
            "-e",
            "SCALR_AGENT_STATE_PERSISTENCE_ENABLED=false",
            "-e",
            "SCALR_AGENT_LOG_FORMAT=json",
            &image,
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let arrived = loop {
            if let Some(t) = cp.lock().registered_at.get(round).copied() {
                break t;
            }
            assert!(Instant::now() < deadline, "no registration from {name}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let started: i128 = podman(&[
            "inspect",
            "--format",
            "{{.State.StartedAt.UnixNano}}",
            &name,
        ])
        .parse()
        .unwrap();
        let (startup_ms, age_ms) = ready_age_ms(&name).await;
        podman(&["rm", "-f", "-t", "10", &name]);
        if round == 0 {
            continue; // The first start warms the page cache and podman's state.
        }
        main.push(startup_ms);
        own.push(age_ms);
        inside.push((nanos(arrived) - started) as f64 / 1e6);
        whole.push((nanos(arrived) - nanos(invoked)) as f64 / 1e6);
    }
    summary(
        "main -> registered, the agent's own clock (startup_ms)",
        main,
    );
    summary("runtime's fork -> registered (process_age_ms)", own);
    summary("podman's StartedAt -> registration received", inside);
    summary("`podman run` -> registered", whole);
}
