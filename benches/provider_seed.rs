//! Benchmark of the provider store's per-run work (see BENCHMARKS.md): the agent's seeding of a
//! run's plugin cache for 5 stored providers (real null provider packages under 5 names, filled
//! from a loopback registry), the disk each run's seeded plugin cache adds, and a cold fill of
//! one provider by the agent binary (`scalr-agent software providers --add`, whole process)
//! against the `curl` + `sha256sum` + `unzip` (+ `sync`) floor of the same zip, with the
//! agent's peak RSS during the fill (`getrusage(RUSAGE_CHILDREN)` in a fresh wrapper process).
//!
//! `cargo bench --bench provider_seed [-- ROUNDS]`
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads its own fixtures and starts its own processes"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use scalr_agent::providers::addr::Package;
use scalr_agent::providers::seed::{self, CachePolicy};
use scalr_agent::providers::{ProviderStore, Settings};
use support::agent::AgentBuilder;
use support::providers::null_zip;
use support::registry::{HOST, Publish, Registry};

fn store(reg: &Registry, root: &Path) -> ProviderStore {
    let mut s = Settings::new(root.to_path_buf());
    s.registry_hosts = [(
        HOST.to_string(),
        reg.server.url.join("v1/providers/").unwrap(),
    )]
    .into();
    ProviderStore::new(s, scalr_agent::http::Settings::default())
}

fn pkg(kind: &str) -> Package {
    Package::new(
        format!("{HOST}/hashicorp/{kind}").parse().unwrap(),
        "2.1.2",
        "linux_amd64",
    )
    .unwrap()
}

/// Bytes allocated on disk under `dir`, not following links.
fn disk(dir: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            total += disk(&e.path());
        }
    }
    total
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if support::rss::measure_if_asked(&args) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let reg = Registry::start().await;
    let kinds: Vec<String> = (1..=5).map(|i| format!("null{i}")).collect();
    for k in &kinds {
        reg.publish(
            "hashicorp",
            k,
            "2.1.2",
            &null_zip(k, "2.1.2"),
            Publish::default(),
        );
    }
    let dir = support::dirs::tempdir();

    // Cold fill of one provider by the agent binary vs the shell floor, alternating which goes
    // first, 5 times each; then the fill's peak RSS, 3 times in fresh wrapper processes.
    let zip_url = reg
        .server
        .url
        .join(&Registry::zip_path("hashicorp", "null1", "2.1.2"))
        .unwrap();
    let hosts = reg.hosts_var();
    let agent = |cache: &Path| {
        AgentBuilder::new(&[])
            .env("SCALR_AGENT_CACHE_DIR", cache)
            .env("SCALR_AGENT_DATA_DIR", dir.path().join("data"))
            .env("SCALR_AGENT_PROVIDER_REGISTRY_HOSTS", &hosts)
    };
    let add = [
        "software",
        "providers",
        "--add",
        &format!("{HOST}/hashicorp/null1@2.1.2"),
        "--json",
    ];
    let (mut fills, mut floors) = (Vec::new(), Vec::new());
    for i in 0..5 {
        for step in 0..2 {
            if (i + step) % 2 == 0 {
                let cache = dir.path().join(format!("cold{i}"));
                let t = Instant::now();
                let out = agent(&cache).output_blocking(&add);
                fills.push(t.elapsed());
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::remove_dir_all(&cache).unwrap();
            } else {
                let work = dir.path().join(format!("floor{i}"));
                std::fs::create_dir(&work).unwrap();
                let script = format!(
                    "curl -sf -o p.zip '{zip_url}' && sha256sum p.zip >/dev/null && unzip -q p.zip -d out && sync -f out"
                );
                let t = Instant::now();
                let ok = Command::new("sh")
                    .args(["-c", &script])
                    .current_dir(&work)
                    .status()
                    .unwrap();
                floors.push(t.elapsed());
                assert!(ok.success());
                std::fs::remove_dir_all(&work).unwrap();
            }
        }
    }
    let mut rss = Vec::new();
    for i in 0..3 {
        let cache = dir.path().join(format!("rss{i}"));
        rss.push(support::rss::peak_kib(agent(&cache), &add));
        std::fs::remove_dir_all(&cache).unwrap();
    }
    let (fill, floor) = (percentile(&mut fills, 0.5), percentile(&mut floors, 0.5));
    println!(
        "cold fill of one provider (agent process): median {:.3} s (min {:.3}, max {:.3}); curl+sha256sum+unzip+sync: median {:.3} s (min {:.3}, max {:.3}); ratio {:.2}",
        fill.as_secs_f64(),
        fills[0].as_secs_f64(),
        fills[fills.len() - 1].as_secs_f64(),
        floor.as_secs_f64(),
        floors[0].as_secs_f64(),
        floors[floors.len() - 1].as_secs_f64(),
        fill.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "peak RSS of the agent during a cold fill: max {:.1} MB of {:?} KiB",
        *rss.iter().max().unwrap() as f64 / 1024.0,
        rss
    );

    // Seeding of 5 stored providers into fresh plugin caches.
    // A store path of 60 bytes or more (as deep deployments have): the run's one link to it
    // then takes a disk block of its own, the worst case.
    let deep = dir
        .path()
        .join("a-deep-cache-directory-path-for-the-worst-case/providers");
    let s = store(&reg, &deep);
    for k in &kinds {
        s.ensure(&pkg(k)).await.unwrap();
    }
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let mut times = Vec::new();
    let mut disks = Vec::new();
    for i in 0..rounds {
        let plugin = runs.join(i.to_string());
        std::fs::create_dir(&plugin).unwrap();
        let before = disk(&plugin);
        let t = Instant::now();
        let seeded =
            seed::seed(&s, &plugin, None, CachePolicy::Lenient, "linux_amd64", None).unwrap();
        times.push(t.elapsed());
        assert_eq!(seeded.offered.len(), 5);
        disks.push(disk(&plugin) - before);
    }
    println!(
        "seeding 5 providers ({rounds} runs): median {:.3} ms, p95 {:.3} ms; disk per run {} bytes",
        percentile(&mut times, 0.5).as_secs_f64() * 1e3,
        percentile(&mut times, 0.95).as_secs_f64() * 1e3,
        disks.iter().max().unwrap()
    );
}
