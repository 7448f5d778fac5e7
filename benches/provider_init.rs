//! Benchmark of a warm `terraform init` of a 5-provider configuration (see BENCHMARKS.md), the
//! real Terraform 1.0.3 with every provider available locally, three ways, alternating within
//! each round:
//!
//! - linked: the agent's seeding (lock file parsed, leases, links into the provider store) of
//!   a fresh plugin cache directory, then `init` with it: what every run with the store does;
//! - stock: `init` with one warm, shared stock `plugin_cache_dir` (what is unsafe under
//!   concurrency, the speed to match);
//! - extracted: `init` with no plugin cache, every package extracted from a packed
//!   `filesystem_mirror` into the run (what a run without any cache does at best).
//!
//! Providers: a large realistic stand-in (`big`: the real null provider with the real
//! Terraform executable appended twice, 189 MB, zipped at a realistic ratio) and four real
//! null 2.1.2 packages (20 MB each) under other names; the store is filled from a loopback
//! registry. Each configuration has a lock file with the packages' `h1:` and `zh:`.
//!
//! `cargo bench --bench provider_init [-- ROUNDS]` (5 rounds by default).
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads its own fixtures and starts its own processes"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scalr_agent::providers::addr::Package;
use scalr_agent::providers::seed::{self, CachePolicy};
use scalr_agent::providers::{ProviderStore, Settings, lockfile};
use support::providers::{big_zip, null_zip};
use support::registry::{HOST, Publish, Registry};

const VERSION: &str = "2.1.2";
const KINDS: [&str; 5] = ["big", "null1", "null2", "null3", "null4"];

fn pkg(kind: &str) -> Package {
    Package::new(
        format!("{HOST}/hashicorp/{kind}").parse().unwrap(),
        VERSION,
        "linux_amd64",
    )
    .unwrap()
}

fn zip_of(kind: &str) -> Vec<u8> {
    match kind {
        "big" => std::fs::read(big_zip("big", VERSION, 2)).unwrap(),
        k => null_zip(k, VERSION),
    }
}

fn main_tf() -> String {
    let list: String = KINDS
        .iter()
        .map(|k| {
            format!("    {k} = {{ source = \"{HOST}/hashicorp/{k}\", version = \"{VERSION}\" }}\n")
        })
        .collect();
    format!("terraform {{\n  required_providers {{\n{list}  }}\n}}\n")
}

/// `terraform init` in `work` with `plugin_cache` (or none); returns its wall time.
fn init(tf: &Path, cli: &Path, home: &Path, work: &Path, plugin_cache: Option<&Path>) -> Duration {
    let mut cmd = Command::new(tf);
    cmd.args(["init", "-input=false", "-no-color", "-backend=false"])
        .current_dir(work)
        .env_clear()
        .env("PATH", support::agent::PATH)
        .env("HOME", home)
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_CLI_CONFIG_FILE", cli);
    if let Some(dir) = plugin_cache {
        cmd.env("TF_PLUGIN_CACHE_DIR", dir);
    }
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "terraform init failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let tf = support::terraform::real_terraform();
    let dir = support::dirs::tempdir();
    let root = dir.path();

    // The packed mirror, and the registry the store is filled from.
    let reg = Registry::start().await;
    let packed = root.join("packed");
    for k in KINDS {
        let zip = zip_of(k);
        let d = packed.join(HOST).join("hashicorp").join(k);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("terraform-provider-{k}_{VERSION}_linux_amd64.zip")),
            &zip,
        )
        .unwrap();
        reg.publish("hashicorp", k, VERSION, &zip, Publish::default());
    }
    let cli = root.join("cli.tfrc");
    std::fs::write(
        &cli,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n  }}\n}}\n",
            packed.display()
        ),
    )
    .unwrap();
    let home = root.join("home");
    std::fs::create_dir(&home).unwrap();

    // The store, filled by the agent's own code.
    let mut settings = Settings::new(root.join("store"));
    settings.registry_hosts = [(
        HOST.to_string(),
        reg.server.url.join("v1/providers/").unwrap(),
    )]
    .into();
    let store = ProviderStore::new(settings, scalr_agent::http::Settings::default());
    let mut lock = String::new();
    let mut unpacked = 0;
    for k in KINDS {
        let m = store.ensure(&pkg(k)).await.unwrap().manifest;
        unpacked += m.size();
        lock += &format!(
            "provider \"{HOST}/hashicorp/{k}\" {{\n  version = \"{VERSION}\"\n  hashes = [\"{}\", \"{}\"]\n}}\n",
            m.h1, m.zh
        );
    }
    let config = root.join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("main.tf"), main_tf()).unwrap();
    std::fs::write(config.join(".terraform.lock.hcl"), &lock).unwrap();
    let fresh = |name: String| -> PathBuf {
        let w = root.join("runs").join(name);
        std::fs::create_dir_all(&w).unwrap();
        for f in ["main.tf", ".terraform.lock.hcl"] {
            std::fs::copy(config.join(f), w.join(f)).unwrap();
        }
        w
    };

    // Warm the stock cache with one init; warm the page cache for every variant once.
    let stock = root.join("stock-cache");
    std::fs::create_dir(&stock).unwrap();
    init(tf, &cli, &home, &fresh("warm-stock".into()), Some(&stock));
    init(tf, &cli, &home, &fresh("warm-extract".into()), None);

    let (mut linked, mut stocked, mut extracted, mut seeding) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for step in 0..3 {
            let which = (round + step) % 3;
            let work = fresh(format!("{round}-{which}"));
            match which {
                0 => {
                    let t = Instant::now();
                    let text = std::fs::read_to_string(work.join(".terraform.lock.hcl")).unwrap();
                    let parsed = lockfile::parse(&text, Path::new("lock")).unwrap();
                    let plugin = work.join("plugin-cache");
                    std::fs::create_dir(&plugin).unwrap();
                    let seeded = seed::seed(
                        &store,
                        &plugin,
                        Some(&parsed),
                        CachePolicy::Lenient,
                        "linux_amd64",
                        None,
                    )
                    .unwrap();
                    assert_eq!(seeded.offered.len(), KINDS.len(), "{:?}", seeded.withheld);
                    let seeded_in = t.elapsed();
                    let took = init(tf, &cli, &home, &work, Some(&plugin));
                    seeding.push(seeded_in);
                    linked.push(seeded_in + took);
                }
                1 => stocked.push(init(tf, &cli, &home, &work, Some(&stock))),
                _ => extracted.push(init(tf, &cli, &home, &work, None)),
            }
            std::fs::remove_dir_all(&work).unwrap();
        }
    }
    let (l, s, e) = (
        median(&mut linked),
        median(&mut stocked),
        median(&mut extracted),
    );
    println!(
        "5 providers, {:.1} MB unpacked, {rounds} rounds, medians:",
        unpacked as f64 / 1e6
    );
    println!(
        "  linked from the store (seeding {} + init): {}",
        ms(median(&mut seeding)),
        ms(l)
    );
    println!("  warm stock plugin_cache_dir: {}", ms(s));
    println!("  extracted per run from a packed mirror: {}", ms(e));
    println!(
        "  linked / stock = {:.2}x (bar 1.2x); linked / extracted = {:.2}x (bar 0.6x)",
        l.as_secs_f64() / s.as_secs_f64(),
        l.as_secs_f64() / e.as_secs_f64()
    );
    println!(
        "  all linked: {:?}\n  all stock: {:?}\n  all extracted: {:?}",
        linked.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        stocked.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        extracted.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
}
