//! Benchmarks of `scalr-agent run` (issue 5, see BENCHMARKS.md), the real binary against the
//! tests' fake control plane and a loopback release mirror serving a stand-in Terraform:
//! - pickup latency: task enqueued -> its first child process started (a `pre_init` hook that
//!   prints `PICKUP <epoch nanos>` as its first line), tools cached, one task at a time;
//! - idle agent: RSS and CPU (utime + stime) sampled from `/proc` while registered and idle;
//! - five concurrent tasks each writing 20 MB of log: the agent's peak RSS and the log shipping
//!   throughput as received by the control plane.
//!
//! `cargo bench --bench daemon [-- PICKUP_ROUNDS]`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benchmarks read their own fixtures"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::agent::Agent;
use support::control_plane::ControlPlane;
use support::daemon::Daemon;

const LONG: Duration = Duration::from_secs(120);
/// 200,000 lines of 99 `x` and a newline: 20,000,000 bytes.
const LOG_LINES: usize = 200_000;
const LOG_BYTES_PER_TASK: usize = LOG_LINES * 100;
const WRITERS: usize = 5;

/// `scalr-agent run` named `name` with `concurrency` slots and a data directory of its own.
fn start(d: &Daemon, name: &str, concurrency: usize) -> Agent {
    d.agent(name)
        .data_dir(&d.h.dir.path().join(name))
        .env("SCALR_AGENT_CONCURRENCY", concurrency.to_string())
        .run()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let s = rt.block_on(Daemon::new());
    let cp = s.cp.clone();
    // The intervals the protocol's example gives (the test defaults, 200 ms heartbeats and
    // 500 ms polls, would make any idle agent busy).
    cp.lock().heartbeat_ms = 5000;
    cp.lock().poll_ms = 25000;

    // --- Pickup latency and idle agent --------------------------------------------------------
    let mut agent = start(&s, "agent-a", 1);
    let pid = agent.pid();
    let pickup_hook = "echo PICKUP $(date +%s%N)";
    s.enqueue("warm", pickup_hook);
    let f = rt.block_on(cp.wait_finished("warm", LONG));
    assert_eq!(
        f["status"],
        "succeeded",
        "{f:#}\n{}",
        String::from_utf8_lossy(&cp.task("warm").log)
    );
    let mut pickups = Vec::new();
    for n in 0..rounds {
        let id = format!("p{n}");
        let enqueued = epoch_nanos();
        s.enqueue(&id, pickup_hook);
        let f = rt.block_on(cp.wait_finished(&id, LONG));
        assert_eq!(f["status"], "succeeded", "{f:#}");
        let log = String::from_utf8_lossy(&cp.task(&id).log).into_owned();
        let started: u128 = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("PICKUP "))
            .unwrap_or_else(|| panic!("no PICKUP line in {log}"))
            .trim()
            .parse()
            .unwrap();
        pickups.push(Duration::from_nanos((started - enqueued) as u64));
    }

    // Idle: let the last task's stragglers settle, then sample.
    std::thread::sleep(Duration::from_secs(1));
    let idle_secs = 10;
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    let mut idle_rss = Vec::new();
    for _ in 0..(idle_secs * 10) {
        idle_rss.push(status_kb(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cpu1, wall) = (cpu_ticks(pid), t0.elapsed());
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let idle_cpu_pct = (cpu1 - cpu0) as f64 / tick / wall.as_secs_f64() * 100.0;
    let idle_rss_max = *idle_rss.iter().max().unwrap();
    idle_rss.sort_unstable();
    let idle_rss_median = idle_rss[idle_rss.len() / 2];
    assert!(rt.block_on(agent.stop()).success());

    // --- Five concurrent tasks each writing 20 MB of log --------------------------------------
    let x99 = "x".repeat(99);
    let writer_hook = format!("yes {x99} | head -n {LOG_LINES}");
    // The floor: the same writers alone, output thrown away.
    let t = Instant::now();
    let floor: Vec<Child> = (0..WRITERS)
        .map(|_| {
            Command::new("/bin/sh")
                .args(["-c", &writer_hook])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in floor {
        assert!(c.wait().unwrap().success());
    }
    let floor_time = t.elapsed();

    let mut agent = start(&s, "agent-b", WRITERS);
    let pid = agent.pid();
    s.enqueue("warm-b", pickup_hook);
    rt.block_on(cp.wait_finished("warm-b", LONG));
    let ids: Vec<String> = (0..WRITERS).map(|n| format!("w{n}")).collect();
    let total = |cp: &ControlPlane| -> usize {
        let i = cp.lock();
        ids.iter()
            .map(|id| i.tasks.get(id).map_or(0, |t| t.log.len()))
            .sum()
    };
    let finished = |cp: &ControlPlane| -> bool {
        let i = cp.lock();
        ids.iter()
            .all(|id| i.tasks.get(id).is_some_and(|t| !t.finishes.is_empty()))
    };
    for id in &ids {
        s.enqueue(id, &writer_hook);
    }
    let t0 = Instant::now();
    let (mut first, mut last, mut last_total) = (None, t0, 0);
    let mut rss_max = 0;
    while !finished(&cp) {
        assert!(t0.elapsed() < LONG, "the writers did not finish");
        let n = total(&cp);
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n > last_total {
            last_total = n;
            last = Instant::now();
        }
        rss_max = rss_max.max(status_kb(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(2));
    }
    let n = total(&cp);
    if n > last_total {
        last = Instant::now();
    }
    let hwm = status_kb(pid, "VmHWM");
    let first = first.unwrap_or(t0);
    let mut hook_bytes = 0;
    for id in &ids {
        let t = cp.task(id);
        assert_eq!(t.finishes[0]["status"], "succeeded", "{:#}", t.finishes[0]);
        let lines = t
            .log
            .split(|b| *b == b'\n')
            .filter(|l| *l == x99.as_bytes())
            .count();
        assert_eq!(lines, LOG_LINES, "task {id}: hook lines received");
        assert_eq!(
            t.log.iter().filter(|b| **b == b'x').count(),
            LOG_BYTES_PER_TASK - LOG_LINES,
            "task {id}: `x` bytes received"
        );
        hook_bytes += lines * 100;
    }
    assert!(rt.block_on(agent.stop()).success());
    let ship = last.duration_since(first);
    let mbps = |bytes: usize, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();

    let mut p = pickups.clone();
    p.sort_unstable();
    let median = p[p.len() / 2];
    let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
    println!("| measure | value | bar |");
    println!("|---|---|---|");
    println!(
        "| pickup latency, enqueue -> first hook process running ({} tasks) | median {}, min {}, max {} | at most 50 ms median |",
        p.len(),
        ms(median),
        ms(p[0]),
        ms(p[p.len() - 1])
    );
    println!(
        "| idle agent RSS ({idle_secs} s after warm-up) | median {}, max {} | at most 15 MB |",
        mb(idle_rss_median),
        mb(idle_rss_max)
    );
    println!(
        "| idle agent CPU ({} ticks over {:.1} s) | {:.2} % of a core | under 1 % |",
        cpu1 - cpu0,
        wall.as_secs_f64(),
        idle_cpu_pct
    );
    println!(
        "| {WRITERS} concurrent tasks x 20 MB log: agent peak RSS | VmHWM {}, max sampled VmRSS {} | at most 60 MB |",
        mb(hwm),
        mb(rss_max)
    );
    println!(
        "| log bytes received (all {WRITERS} tasks) | {n} ({hook_bytes} hook bytes, all lines intact) | = produced |"
    );
    println!(
        "| log shipping, first to last byte received | {:.0} MB/s ({} over {}) | at least 100 MB/s |",
        mbps(n, ship),
        n,
        ms(ship)
    );
    println!(
        "| enqueue -> all {WRITERS} tasks finished | {} | |",
        ms(last.duration_since(t0))
    );
    println!(
        "| floor: the {WRITERS} writers alone into /dev/null | {} ({:.0} MB/s) | |",
        ms(floor_time),
        mbps(WRITERS * LOG_BYTES_PER_TASK, floor_time)
    );
}

fn epoch_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may contain spaces) in parentheses.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
