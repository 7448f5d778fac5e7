//! Benchmarks of the task runner's own cost (see BENCHMARKS.md):
//! - agent overhead per task: `scalr-agent exec` of a plan task whose tool is a stand-in that
//!   exits at once, minus the time the same child commands take when run directly;
//! - sandbox cost per stage: a trivial command through the stage helper with every isolation
//!   layer this machine allows, against a plain spawn of the same command.
//!
//! `cargo bench --bench task_overhead [-- ROUNDS]`. Run as root to measure the full sandbox.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benchmarks read their own fixtures"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scalr_agent::sandbox::helper::HelperSpec;
use scalr_agent::sandbox::policy::Policy;
use scalr_agent::sandbox::stage::Launcher;
use support::keys::TestKey;
use support::mirror::Mirror;
use support::releases::{self, Entry, Signing};

use support::agent::{AgentBuilder, BIN as AGENT};
/// A Terraform stand-in that does nothing: `show -json` prints an empty plan.
const TRIVIAL_TOOL: &str = "#!/bin/sh\n[ \"$1\" = show ] && echo '{}'\nexit 0\n";

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = support::dirs::tempdir();
    use std::os::unix::fs::PermissionsExt;

    // --- Agent overhead per task ------------------------------------------------------------
    let mirror = rt.block_on(Mirror::start());
    let key = TestKey::generate("Bench <bench@example.test>");
    let zip = releases::zip(&[Entry::File("terraform", TRIVIAL_TOOL.as_bytes())]);
    releases::publish_terraform(
        &mirror,
        "1.9.9",
        &[("linux_amd64", zip)],
        Signing::With(&key, ".sig"),
    );
    let key_file = work.path().join("key.asc");
    key.write_public(&key_file);
    let config = work.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("main.tf"), "output \"x\" { value = 1 }\n").unwrap();
    let task = serde_json::json!({
        "id": "bench", "action": "plan",
        "run": {"id": "run-b", "mode": "apply", "source": "cli"},
        "workspace": {"id": "ws", "name": "bench", "iac_platform": "terraform", "iac_version": "1.9.9"},
        "environment": {"id": "env", "name": "bench"},
        "control_plane": {"hostname": "scalr.example.test", "run_token": "bench-token"},
        "configuration": {"directory": "config"},
    });
    let task_file = work.path().join("task.json");
    std::fs::write(&task_file, task.to_string()).unwrap();
    let agent = AgentBuilder::new(&[])
        .env("PATH", "/usr/bin:/bin")
        .env("SCALR_AGENT_DATA_DIR", work.path().join("data"))
        .env("SCALR_AGENT_SOFTWARE_MIRROR_URL", mirror.url.as_str())
        .env("SCALR_AGENT_SOFTWARE_TRUSTED_KEYS", &key_file);
    let exec = |out: &Path| {
        let args = [
            "exec".as_ref(),
            task_file.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        agent.clone().status_blocking(&args)
    };
    assert!(
        exec(&work.path().join("warmup")).success(),
        "warm-up exec failed"
    );
    let tool = work.path().join("terraform");
    std::fs::write(&tool, TRIVIAL_TOOL).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut exec_wall = Vec::new();
    let mut children = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        let ok = exec(&work.path().join(format!("out-{round}"))).success();
        exec_wall.push(t.elapsed());
        assert!(ok);
        // The same three child commands (init, plan, show), run directly.
        let t = Instant::now();
        for args in [
            &["init", "-input=false"][..],
            &["plan", "-input=false"],
            &["show", "-json", "plan"],
        ] {
            assert!(
                Command::new(&tool)
                    .args(args)
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        children.push(t.elapsed());
    }

    // --- Sandbox cost per stage --------------------------------------------------------------
    let launcher = Launcher::new(AGENT);
    let isolation = scalr_agent::task::runner::IsolationContext::probe(
        scalr_agent::config::Config::from_vars(
            Vec::<(String, String)>::new(),
            scalr_agent::config::Needs::Local,
        )
        .unwrap()
        .sandbox,
        work.path(),
    );
    let stage_dir = work.path().join("stage");
    std::fs::create_dir_all(&stage_dir).unwrap();
    let lease = isolation
        .uids
        .lease()
        .ok()
        .filter(|_| isolation.probes.uid_switch.ok);
    if let Some(l) = &lease {
        l.own_tree(&stage_dir).unwrap();
    }
    let policy = Policy::for_task(
        &isolation.probes,
        &isolation.config,
        lease.as_ref().map(|l| l.ids()),
        &stage_dir,
        &[],
    );
    let spec = HelperSpec {
        program: "/bin/true".into(),
        args: vec![],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: stage_dir.clone(),
        stdout_file: None,
        policy,
    };
    let mut sandboxed = Vec::new();
    let mut plain = Vec::new();
    let mut layers = Vec::new();
    rt.block_on(async {
        for _ in 0..(rounds * 3) {
            let t = Instant::now();
            let mut stage = launcher.spawn(&spec).await.unwrap();
            let exit = stage.wait().await.unwrap();
            sandboxed.push(t.elapsed());
            assert!(exit.success());
            layers = stage
                .layers
                .iter()
                .filter(|l| l.applied)
                .map(|l| l.name.clone())
                .collect();
            let t = Instant::now();
            let status = tokio::process::Command::new("/bin/true")
                .env_clear()
                .current_dir(&stage_dir)
                .status()
                .await
                .unwrap();
            plain.push(t.elapsed());
            assert!(status.success());
        }
    });

    let (w, c) = (median(&mut exec_wall), median(&mut children));
    let (s, p) = (median(&mut sandboxed), median(&mut plain));
    println!(
        "verdict: {}, layers applied: {}",
        isolation.verdict,
        layers.join(", ")
    );
    println!("| measure | median | bar |");
    println!("|---|---|---|");
    println!(
        "| `exec` of a trivial plan task (init, plan, show), whole process | {} | |",
        ms(w)
    );
    println!(
        "| the same three child commands run directly | {} | |",
        ms(c)
    );
    println!(
        "| agent overhead per task (difference) | {} | at most 50 ms |",
        ms(w.saturating_sub(c))
    );
    println!(
        "| `/bin/true` through the stage helper, all layers | {} | |",
        ms(s)
    );
    println!("| `/bin/true` spawned directly | {} | |", ms(p));
    println!(
        "| sandbox cost per stage (difference) | {} | at most 5 ms |",
        ms(s.saturating_sub(p))
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
