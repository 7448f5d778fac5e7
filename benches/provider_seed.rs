//! Benchmark of the provider store's per-run work (see BENCHMARKS.md): the agent's seeding of a
//! run's plugin cache for 5 stored providers (real null provider packages under 5 names, filled
//! from a loopback registry), the disk each run's seeded plugin cache adds, and a cold fill of
//! one provider against the `curl` + `sha256sum` + `unzip` floor of the same zip.
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

#[tokio::main]
async fn main() {
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

    // Cold fill of one provider vs the shell floor, alternating, 3 times each.
    let zip_url = reg
        .server
        .url
        .join(&Registry::zip_path("hashicorp", "null1", "2.1.2"))
        .unwrap();
    let (mut fills, mut floors) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let s = store(&reg, &dir.path().join(format!("cold{i}")));
        let t = Instant::now();
        s.ensure(&pkg("null1")).await.unwrap();
        fills.push(t.elapsed());
        let work = dir.path().join(format!("floor{i}"));
        std::fs::create_dir(&work).unwrap();
        let t = Instant::now();
        let script = format!(
            "curl -sf -o p.zip '{zip_url}' && sha256sum p.zip >/dev/null && unzip -q p.zip -d out && sync -f out"
        );
        let ok = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&work)
            .status()
            .unwrap();
        assert!(ok.success());
        floors.push(t.elapsed());
    }
    let (fill, floor) = (percentile(&mut fills, 0.5), percentile(&mut floors, 0.5));
    println!(
        "cold fill of one provider: {:.3} s; curl+sha256sum+unzip: {:.3} s; ratio {:.2}",
        fill.as_secs_f64(),
        floor.as_secs_f64(),
        fill.as_secs_f64() / floor.as_secs_f64()
    );

    // Seeding of 5 stored providers into fresh plugin caches.
    let s = store(&reg, &dir.path().join("warm"));
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
