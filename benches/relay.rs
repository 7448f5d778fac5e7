//! Benchmarks of `scalr-agent relay` (issue 13, see BENCHMARKS.md), the real binary between
//! the tests' fake gateway and a VCS of `git http-backend` plus the fake API, on 127.0.0.1:
//! - clone of a repository of about 100 MB (incompressible content) through the relay vs
//!   directly from the git server, alternating, best and median of the rounds;
//! - the relay's peak RSS (VmHWM of a fresh process) relaying a 1 MiB and a 1 GiB response;
//! - small API calls per second at parallelism 1, 4 and 16, against an API that answers at
//!   once and one that answers after 5 ms, with the CPU the relay and the harness used.
//!
//! `cargo bench --bench relay [-- ROUNDS]` (3 clone rounds by default).
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads its own fixtures and starts its own processes"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::gateway::{Gateway, Outcome, next_chunk};
use support::git_server::GitServer;
use support::relay::{RelayProc, git, make_repos};

async fn relay(gw: &Gateway, vcs: &GitServer, extra: &[(&str, &str)]) -> RelayProc {
    let before = gw.lock().registrations.len();
    let r = RelayProc::start(
        &gw.url,
        &vcs.base,
        "gitlab",
        &[&[("SCALR_AGENT_DEBUG", "false")], extra].concat(),
    );
    gw.wait_for(Duration::from_secs(60), "registration", |i| {
        i.registrations.len() > before
    })
    .await;
    r
}

fn clone(from: &str, to: &std::path::Path) -> Duration {
    let _ = std::fs::remove_dir_all(to);
    let t = Instant::now();
    git(
        to.parent().unwrap(),
        &["clone", "-q", "--bare", from, to.to_str().unwrap()],
    );
    t.elapsed()
}

async fn clone_bench(gw: &Gateway, vcs: &GitServer, dir: &std::path::Path, rounds: usize) {
    let mut r = relay(gw, vcs, &[]).await;
    let direct_url = format!("{}/acme/big.git", vcs.base);
    let relay_url = format!("{}acme/big.git", gw.front());
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    let dest = dir.join("clone.git");
    // One warm-up of each (page cache, packfile delta search).
    clone(&direct_url, &dest);
    clone(&relay_url, &dest);
    for _ in 0..rounds {
        direct.push(clone(&direct_url, &dest));
        via.push(clone(&relay_url, &dest));
    }
    let size = git(&dest, &["count-objects", "-vH"]);
    direct.sort();
    via.sort();
    let med = |v: &[Duration]| v[v.len() / 2];
    println!(
        "clone ({}):",
        size.lines()
            .find(|l| l.starts_with("size-pack"))
            .unwrap_or("")
    );
    println!(
        "  direct: best {:.2?}, median {:.2?}",
        direct[0],
        med(&direct)
    );
    println!("  relay:  best {:.2?}, median {:.2?}", via[0], med(&via));
    println!(
        "  ratio (median): {:.2}x, (best): {:.2}x; relay peak RSS {} KiB",
        med(&via).as_secs_f64() / med(&direct).as_secs_f64(),
        via[0].as_secs_f64() / direct[0].as_secs_f64(),
        r.peak_rss_kib()
    );
    r.stop(Duration::from_secs(30)).await;
}

async fn rss_bench(gw: &Gateway, vcs: &GitServer) {
    for size in [1u64 << 20, 1 << 30] {
        let mut r = relay(gw, vcs, &[]).await;
        let t = Instant::now();
        let o = gw
            .call(
                "GET",
                &format!("/api/v4/projects/acme%2Fbig/repository/archive?test=big&size={size}"),
                &[],
                None,
            )
            .await;
        let Outcome::Answered { mut body, .. } = o else {
            panic!("the body was not answered")
        };
        let mut n = 0u64;
        while let Some(c) = next_chunk(&mut body).await {
            n += c.unwrap().len() as u64;
        }
        assert_eq!(n, size);
        let took = t.elapsed();
        println!(
            "body of {} MiB: relay peak RSS {} KiB, {:.2?} ({:.0} MiB/s)",
            size >> 20,
            r.peak_rss_kib(),
            took,
            (size >> 20) as f64 / took.as_secs_f64()
        );
        r.stop(Duration::from_secs(30)).await;
    }
}

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name's closing parenthesis: state is the first, utime the
    // 12th and stime the 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|t| t.parse().unwrap())
        .collect();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_secs_f64((f[0] + f[1]) as f64 / hz as f64)
}

/// Small API calls per second through the relay at parallelism 1, 4 and 16, `path` on the
/// VCS (with `?test=wait&ms=N` the fake API answers after N ms), and the CPU the relay and
/// this process (gateway, VCS and callers) used meanwhile, in CPUs: near 2 on this 2-core
/// machine means the rate measures the CPUs, not the relay's concurrency.
async fn rate_bench(gw: &Gateway, vcs: &GitServer, path: &str, calls_at_1: usize) {
    println!("{path}:");
    let mut rates = Vec::new();
    for p in [1usize, 4, 16] {
        let ps = p.to_string();
        let mut r = relay(gw, vcs, &[("SCALR_AGENT_RELAY_PARALLELISM", ps.as_str())]).await;
        let relay_pid = r.child.id().unwrap().to_string();
        let calls = calls_at_1 * p.min(4);
        let (relay0, own0) = (cpu_time(&relay_pid), cpu_time("self"));
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..p {
            let gw = gw.clone();
            let path = path.to_string();
            tasks.spawn(async move {
                for _ in 0..calls / p {
                    let (status, _, _) = gw.call("GET", &path, &[], None).await.collect().await;
                    assert_eq!(status, 200, "worker {w}");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let took = t.elapsed();
        let rate = calls as f64 / took.as_secs_f64();
        let cpus = |used: Duration| used.as_secs_f64() / took.as_secs_f64();
        let relay_cpus = cpus(cpu_time(&relay_pid) - relay0);
        let own_cpus = cpus(cpu_time("self") - own0);
        rates.push(rate);
        println!(
            "  parallelism {p:>2}: {calls} calls, {rate:.0} calls/s; CPUs used: relay \
             {relay_cpus:.2}, gateway + VCS + callers {own_cpus:.2}"
        );
        r.stop(Duration::from_secs(30)).await;
    }
    println!("  16 vs 1: {:.1}x", rates[2] / rates[0]);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let dir = support::dirs::tempdir();
    let root = dir.path().join("repos");
    let t = Instant::now();
    // 2 commits x 50 files x 1 MiB of incompressible bytes: about 100 MB of pack.
    make_repos(&root, 2, 50, 1 << 20, &["acme/big.git"]);
    println!("repository built in {:.1?}", t.elapsed());
    let vcs = GitServer::start(&root).await;
    let gw = Gateway::start().await;
    rate_bench(&gw, &vcs, "/api/v4/user", 2000).await;
    rate_bench(&gw, &vcs, "/api/v4/user?test=wait&ms=5", 400).await;
    rss_bench(&gw, &vcs).await;
    clone_bench(&gw, &vcs, dir.path(), rounds).await;
}
