//! Benchmarks of `scalr-agent relay` (issue 13, see BENCHMARKS.md), the real binary between
//! the tests' fake gateway and a VCS of `git http-backend` plus the fake API, on 127.0.0.1:
//! - clone of a repository of about 100 MB (incompressible content) through the relay vs
//!   directly from the git server, alternating, best and median of the rounds;
//! - the relay's peak RSS (VmHWM of a fresh process) relaying a 1 MiB and a 1 GiB response;
//! - small API calls per second at parallelism 1, 4 and 16.
//!
//! `cargo bench --bench relay [-- ROUNDS]` (3 clone rounds by default).
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads its own fixtures and starts its own processes"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::gateway::{Gateway, Outcome};
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
        while let Some(c) = body.recv().await {
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

async fn rate_bench(gw: &Gateway, vcs: &GitServer) {
    let mut rates = Vec::new();
    for p in [1usize, 4, 16] {
        let ps = p.to_string();
        let mut r = relay(gw, vcs, &[("SCALR_AGENT_RELAY_PARALLELISM", ps.as_str())]).await;
        let calls = 400 * p.min(4);
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..p {
            let gw = gw.clone();
            tasks.spawn(async move {
                for _ in 0..calls / p {
                    let (status, _, _) = gw
                        .call("GET", "/api/v4/user", &[], None)
                        .await
                        .collect()
                        .await;
                    assert_eq!(status, 200, "worker {w}");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let rate = calls as f64 / t.elapsed().as_secs_f64();
        rates.push(rate);
        println!("parallelism {p:>2}: {calls} calls, {rate:.0} calls/s");
        r.stop(Duration::from_secs(30)).await;
    }
    println!("16 vs 1: {:.1}x", rates[2] / rates[0]);
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
    rate_bench(&gw, &vcs).await;
    rss_bench(&gw, &vcs).await;
    clone_bench(&gw, &vcs, dir.path(), rounds).await;
}
