//! Benchmark of the software cache against a loopback mirror serving the real Terraform 1.0.3
//! zip (see BENCHMARKS.md for the figures and the bar).
//!
//! `cargo bench --bench software_install [-- ROUNDS]` measures, in one run:
//! - the floor: `curl` download + `sha256sum` + `unzip` of the same artifact from the same mirror;
//! - a cold `scalr-agent software install` (download, signature and checksum, extraction, fsync);
//! - a warm `scalr-agent software install` of the cached version (whole process);
//! - the peak RSS of the cold install (`getrusage(RUSAGE_CHILDREN)` in a fresh child process).
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benchmarks read their own fixtures"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::keys::TestKey;
use support::mirror::Mirror;
use support::releases::{self, Signing};

use support::agent::AgentBuilder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if support::rss::measure_if_asked(&args) {
        return;
    }
    let rounds: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mirror = rt.block_on(Mirror::start());
    let key = TestKey::generate("Bench Mirror <bench@example.test>");
    let zip = std::fs::read(support::terraform::real_terraform_zip()).unwrap();
    let zip_len = zip.len();
    releases::publish_terraform(
        &mirror,
        "1.0.3",
        &[("linux_amd64", zip)],
        Signing::With(&key, ".72D7468F.sig"),
    );
    let work = support::dirs::tempdir();
    let key_file = work.path().join("key.asc");
    key.write_public(&key_file);
    let artifact_url = format!(
        "{}terraform/1.0.3/terraform_1.0.3_linux_amd64.zip",
        mirror.url
    );

    let agent = |cache: &std::path::Path| {
        AgentBuilder::new(&[])
            .env("PATH", "/usr/bin:/bin")
            .env("SCALR_AGENT_CACHE_DIR", cache)
            .env("SCALR_AGENT_SOFTWARE_MIRROR_URL", mirror.url.as_str())
            .env("SCALR_AGENT_SOFTWARE_TRUSTED_KEYS", &key_file)
    };
    let install = ["software", "install", "terraform", "1.0.3"];

    let mut floor = Vec::new();
    let mut cold = Vec::new();
    let mut rss = Vec::new();
    for round in 0..rounds {
        // Alternate the order so neither side always runs with a warmer page cache.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let dir = work.path().join(format!("round-{round}-{which}"));
            std::fs::create_dir_all(&dir).unwrap();
            if which == 0 {
                let script = format!(
                    "curl -sSf -o t.zip '{artifact_url}' && sha256sum t.zip >/dev/null && unzip -q -o t.zip terraform -d out"
                );
                let t = Instant::now();
                let s = Command::new("sh")
                    .arg("-c")
                    .arg(&script)
                    .current_dir(&dir)
                    .status()
                    .unwrap();
                floor.push(t.elapsed());
                assert!(s.success());
            } else {
                let t = Instant::now();
                let s = agent(&dir).status_blocking(&install);
                cold.push(t.elapsed());
                assert!(s.success());
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // Peak RSS of a cold install, in a fresh process so no other child counts.
        let dir = work.path().join(format!("rss-{round}"));
        rss.push(support::rss::peak_kib(agent(&dir), &install));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    let warm_cache = work.path().join("warm");
    assert!(agent(&warm_cache).status_blocking(&install).success());
    let mut warm = Vec::new();
    for _ in 0..(rounds * 10) {
        let t = Instant::now();
        let s = agent(&warm_cache).status_blocking(&install);
        warm.push(t.elapsed());
        assert!(s.success());
    }

    let (f, c, w) = (median(&mut floor), median(&mut cold), median(&mut warm));
    rss.sort_unstable();
    let peak = *rss.last().unwrap();
    println!("artifact: terraform_1.0.3_linux_amd64.zip, {zip_len} bytes, {rounds} rounds");
    println!("| measure | median | min | max | bar |");
    println!("|---|---|---|---|---|");
    println!(
        "| floor: curl + sha256sum + unzip | {} | {} | {} | |",
        ms(f),
        ms(floor[0]),
        ms(*floor.last().unwrap())
    );
    println!(
        "| cold `software install` | {} | {} | {} | |",
        ms(c),
        ms(cold[0]),
        ms(*cold.last().unwrap())
    );
    println!(
        "| cold / floor | {:.2}x | | | at most 1.25x |",
        c.as_secs_f64() / f.as_secs_f64()
    );
    println!(
        "| warm `software install` (whole process) | {} | {} | {} | at most 15 ms |",
        ms(w),
        ms(warm[0]),
        ms(*warm.last().unwrap())
    );
    println!(
        "| peak RSS, cold install | {:.1} MB (max of {rounds}) | {:.1} MB | | at most 40 MB |",
        peak as f64 / 1024.0,
        rss[0] as f64 / 1024.0
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
