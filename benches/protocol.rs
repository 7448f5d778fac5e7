//! Benchmarks of protocol v1.1 (issue 10, see BENCHMARKS.md), the real `scalr-agent run` binary
//! against the tests' fake control plane with the protocol's example intervals (heartbeat 5 s,
//! long poll 25 s):
//! - control-plane requests per canceled task: 16 tasks on one agent (16 slots), each a hook
//!   that ignores SIGINT, canceled at once; the grace (`SCALR_AGENT_CANCEL_GRACE`, 10 s) runs
//!   out and the agent kills them. Counted per task from the cancel to the finish: signal polls
//!   and all requests; against a v1.1 server (held polls on a cursor) and a v1 server (the
//!   current signal answered at once).
//! - time from agent death to the run ended: an agent running a task is killed with SIGKILL
//!   and its data directory deleted; the fake control plane ends the run when the lease
//!   (15 s here, three heartbeats) runs out. Bound: lease + one heartbeat.
//!
//! `cargo bench --bench protocol [-- DEATH_ROUNDS]`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benchmarks read their own fixtures"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::agent::Agent;
use support::control_plane::Version;
use support::daemon::Daemon;
use support::procs::{marker, processes_with};

const LONG: Duration = Duration::from_secs(180);
const TASKS: usize = 16;
const GRACE: Duration = Duration::from_secs(10);
const LEASE: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_secs(5);

fn start(d: &Daemon, name: &str, extra: &[(&str, &str)]) -> Agent {
    d.agent(name)
        .data_dir(&d.h.dir.path().join(name))
        .env("SCALR_AGENT_WORKER_REPORT_TIMEOUT", "60s")
        .envs(extra)
        .run()
}

async fn fixture(version: Version) -> Daemon {
    let d = Daemon::new().await;
    {
        let mut i = d.cp.lock();
        i.heartbeat_ms = HEARTBEAT.as_millis() as u64;
        i.poll_ms = 25_000;
        i.lease = LEASE;
        i.version = version;
    }
    d
}

/// Cancels 16 tasks whose tools ignore SIGINT; prints the requests per task.
async fn canceled_tasks(version: Version) {
    let d = fixture(version).await;
    let m = marker();
    let ids: Vec<String> = (0..TASKS).map(|n| format!("c{n}")).collect();
    for id in &ids {
        d.enqueue(id, &format!("trap '' INT; echo hook-started; sleep {m}"));
    }
    let grace = format!("{}s", GRACE.as_secs());
    let mut agent = start(
        &d,
        "cancel-bench",
        &[
            ("SCALR_AGENT_CONCURRENCY", "16"),
            ("SCALR_AGENT_CANCEL_GRACE", &grace),
        ],
    );
    for id in &ids {
        d.wait_log(&agent, id, "hook-started").await;
    }
    let canceled = Instant::now();
    for id in &ids {
        d.cp.signal(id, "cancel");
    }
    for id in &ids {
        let f = d.finished(&agent, id).await;
        assert_eq!(f["status"], "canceled", "{f:#}");
    }
    let took = canceled.elapsed();
    let (mut signal, mut all, mut worst) = (Vec::new(), Vec::new(), 0);
    {
        let i = d.cp.lock();
        for id in &ids {
            let after: Vec<&String> = i.task_requests[id]
                .iter()
                .filter(|(_, at)| *at >= canceled)
                .map(|(e, _)| e)
                .collect();
            signal.push(after.iter().filter(|e| **e == "signal").count());
            all.push(after.len());
        }
    }
    for id in &ids {
        worst = worst.max(d.cp.max_in_window(id, "signal", Duration::from_secs(5)));
    }
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    println!(
        "{version:?}: {TASKS} tasks canceled, grace {GRACE:?}, all finished after {took:.1?}: \
         signal polls per task from the cancel {:.1} (min {}, max {}), all requests per task \
         {:.1} (max {}), worst 5 s window {worst} polls",
        mean(&signal),
        signal.iter().min().unwrap(),
        signal.iter().max().unwrap(),
        mean(&all),
        all.iter().max().unwrap(),
    );
    agent.stop().await;
    assert!(processes_with(&m).is_empty());
}

/// Kills an agent running a task; prints the time until the server ended the run.
async fn agent_death(round: usize) -> Duration {
    let d = fixture(Version::V1_1).await;
    let m = marker();
    let id = format!("d{round}");
    d.enqueue(&id, &format!("echo hook-started; sleep {m}"));
    let name = format!("death-bench-{round}");
    let mut agent = start(&d, &name, &[]);
    d.wait_log(&agent, &id, "hook-started").await;
    agent.kill().await;
    let died = Instant::now();
    std::fs::remove_dir_all(d.h.dir.path().join(&name)).unwrap();
    d.cp.wait_for("the run ended by the server", LONG, |i| {
        i.tasks[&id].ended_by_server.is_some()
    })
    .await;
    let took = d.cp.task(&id).ended_by_server.unwrap() - died;
    assert_eq!(d.cp.task(&id).finish_calls, 0);
    for (pid, _) in processes_with(&m) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    took
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        canceled_tasks(Version::V1_1).await;
        canceled_tasks(Version::V1).await;
        let mut deaths = Vec::new();
        for round in 0..rounds {
            deaths.push(agent_death(round).await);
        }
        deaths.sort();
        println!(
            "agent death -> run ended (lease {LEASE:?}, heartbeat {HEARTBEAT:?}), {rounds} rounds: \
             {deaths:.2?}; bound lease + one heartbeat = {:?}",
            LEASE + HEARTBEAT
        );
    });
}
