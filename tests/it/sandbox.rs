//! The sandbox on this machine. CI runs these as root on a kernel with Landlock: every layer
//! must be there, so a missing one fails the test instead of skipping it.
//!
//! Stages are played by the agent binary's hidden `__sandbox-selftest`, which applies a policy
//! in a single-threaded process and execs a command, just as the stage helper's child does.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use scalr_agent::config::{Config, Needs};
use scalr_agent::sandbox::policy::{LayerReport, Policy};
use scalr_agent::sandbox::probe::{self, Probes, Verdict};
use serde_json::Value;

use crate::support::agent::{AgentBuilder, BIN};

fn assert_root() {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(uid, 0, "the sandbox tests must run as root (as in CI)");
}

fn probes() -> Probes {
    assert_root();
    probe::probe()
}

fn policy(probes: &Probes, ids: Option<(u32, u32)>, dir: &Path) -> Policy {
    let config = Config::from_vars(Vec::<(String, String)>::new(), Needs::Local).unwrap();
    Policy::for_task(probes, &config.sandbox, ids, dir, &[])
}

/// A task directory owned by `uid` (root when `None`), mode 0700.
fn task_dir(uid: Option<u32>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if let Some(uid) = uid {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    }
    dir
}

fn selftest(policy: &Policy, argv: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("__sandbox-selftest")
        .args(argv)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let json = serde_json::to_vec(policy).unwrap();
    child.stdin.take().unwrap().write_all(&json).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The layer reports the self-test printed before exec.
fn reports(out: &Output) -> Vec<LayerReport> {
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("{\"layers\""))
        .unwrap_or_else(|| panic!("no layer report in stderr: {err}"));
    let v: Value = serde_json::from_str(line).unwrap();
    serde_json::from_value(v["layers"].clone()).unwrap()
}

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} missing from {status}"))
        .trim()
}

#[test]
fn probes_find_every_layer_as_root() {
    let p = probes();
    for (name, r) in [
        ("uid_switch", &p.uid_switch),
        ("capability_drop", &p.capability_drop),
        ("non_dumpable", &p.non_dumpable),
        ("no_new_privs", &p.no_new_privs),
        ("landlock", &p.landlock),
        ("seccomp", &p.seccomp),
        ("no_sys_ptrace", &p.no_sys_ptrace),
    ] {
        assert!(r.ok, "{name}: {}", r.detail);
    }
    assert!(p.landlock_abi.unwrap() >= 1);
    assert_eq!(probe::verdict(&p), Verdict::Isolated);
}

#[test]
fn stage_status_shows_every_layer() {
    let p = probes();
    let dir = task_dir(Some(20101));
    let pol = policy(&p, Some((20101, 20101)), dir.path());
    let out = selftest(&pol, &["/bin/cat", "/proc/self/status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    assert_eq!(status_field(&status, "Uid"), "20101\t20101\t20101\t20101");
    assert_eq!(status_field(&status, "Gid"), "20101\t20101\t20101\t20101");
    assert_eq!(status_field(&status, "Groups"), "");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    let reports = reports(&out);
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "session",
            "workdir",
            "signals",
            "rlimits",
            "capabilities",
            "uid",
            "pdeathsig",
            "no_new_privs",
            "fds",
            "landlock",
            "seccomp"
        ]
    );
    for r in &reports {
        assert!(r.applied, "{r:?}");
    }
    let landlock = reports.iter().find(|r| r.name == "landlock").unwrap();
    assert!(
        landlock.detail.starts_with("fully enforced"),
        "{landlock:?}"
    );
    let rlimits = reports.iter().find(|r| r.name == "rlimits").unwrap();
    assert!(rlimits.detail.contains("core=0"), "{rlimits:?}");
}

#[test]
fn landlock_allows_the_task_dir_and_denies_the_rest() {
    let p = probes();
    // As root (no dedicated uid), so a refused write can only come from Landlock, not DAC.
    let dir = task_dir(None);
    let outside = crate::support::dirs::tempdir();
    let pol = policy(&p, None, dir.path());
    assert_eq!(pol.uid, None);
    let script = format!(
        "echo in > inside.txt && echo wrote-inside; echo out > {}/x.txt; cat {}/x.txt",
        outside.path().display(),
        outside.path().display()
    );
    std::fs::write(outside.path().join("secret.txt"), "s").unwrap();
    let out = selftest(&pol, &["/bin/sh", "-c", &script]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains("wrote-inside"), "{stdout} {stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("inside.txt")).unwrap(),
        "in\n"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!outside.path().join("x.txt").exists());
    // Reading outside is denied too.
    let secret = outside.path().join("secret.txt").display().to_string();
    let out = selftest(&pol, &["/bin/cat", &secret]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Permission denied"));
}

#[test]
fn seccomp_denies_ptrace_and_namespaces() {
    let p = probes();
    let dir = task_dir(Some(20103));
    let mut pol = policy(&p, Some((20103, 20103)), dir.path());
    let script = "/usr/bin/strace -qq -e trace=none /bin/true && echo traced; \
                  /usr/bin/unshare --user /bin/true && echo unshared; echo done";
    let out = selftest(&pol, &["/bin/sh", "-c", script]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains("done"), "{stdout} {stderr}");
    assert!(!stdout.contains("traced"), "{stdout} {stderr}");
    assert!(!stdout.contains("unshared"), "{stdout} {stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    // The same commands without the filter: ptrace of one's own child works, so the refusal
    // above came from seccomp.
    pol.seccomp = false;
    let out = selftest(&pol, &["/bin/sh", "-c", script]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("traced"), "{stdout} {}", text(&out.stderr));
}

#[test]
fn a_failed_layer_is_an_error_naming_it() {
    let p = probes();
    let pol = policy(&p, None, Path::new("/nonexistent/task"));
    let out = selftest(&pol, &["/bin/true"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(err["layer"], "workdir");
    assert_eq!(err["errno"], libc::ENOENT);
}

/// Runs `doctor --json` with exactly `vars`, optionally as nobody via `setpriv`.
fn doctor(as_nobody: bool, vars: &[(&str, &str)]) -> (Option<i32>, Value) {
    assert_root();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut agent = AgentBuilder::new(&vars);
    if as_nobody {
        agent = agent.wrapped(
            "/usr/bin/setpriv",
            &["--reuid=65534", "--regid=65534", "--clear-groups"],
        );
    }
    let out = agent.output_blocking(&["doctor", "--json"]);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), json)
}

fn probe_ok(report: &Value, name: &str) -> bool {
    report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no probe {name}"))["ok"]
        .as_bool()
        .unwrap()
}

fn advice(report: &Value) -> String {
    report["advice"].to_string()
}

#[test]
fn doctor_json_as_root_is_isolated() {
    let (code, r) = doctor(false, &[]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "isolated");
    assert_eq!(r["min_isolation"], "degraded");
    assert_eq!(r["decision"]["decision"], "run");
    assert_eq!(r["refused"], false);
    assert_eq!(r["agent_uid"], 0);
    assert!(r["platform"].is_string() && r["platform_evidence"].is_string());
    assert!(r["problems"].as_array().unwrap().is_empty(), "{r:#}");
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 9);
    for p in probes {
        assert!(p["name"].is_string() && p["ok"].is_boolean() && p["detail"].is_string());
    }
    assert!(r["landlock_abi"].as_u64().unwrap() >= 1);
    assert!(!r["advice"].as_array().unwrap().is_empty());
}

#[test]
fn doctor_text_names_verdict_and_probes() {
    assert_root();
    let out = AgentBuilder::new(&[]).output_blocking(&["doctor"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(
        s.contains("verdict: isolated (minimum: degraded): tasks run"),
        "{s}"
    );
    assert!(s.contains("[ok  ] landlock"), "{s}");
}

#[test]
fn non_root_agent_is_degraded_and_told_to_run_as_root() {
    let (code, r) = doctor(true, &[]);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["agent_uid"], 65534);
    assert!(!probe_ok(&r, "uid_switch"));
    assert!(probe_ok(&r, "landlock") && probe_ok(&r, "seccomp"));
    assert_eq!(r["verdict"], "degraded");
    assert_eq!(r["decision"]["decision"], "warn");
    assert!(advice(&r).contains("run the container as root"), "{r:#}");
    let (code, r) = doctor(true, &[("SCALR_AGENT_MIN_ISOLATION", "isolated")]);
    assert_eq!(code, Some(1));
    assert_eq!(r["refused"], true);
    assert!(
        advice(&r).contains("lower SCALR_AGENT_MIN_ISOLATION"),
        "{r:#}"
    );
}

#[test]
fn emulated_missing_landlock_keeps_isolated_but_advises() {
    let (code, r) = doctor(false, &[("SCALR_AGENT_SANDBOX_TEST_DENY", "landlock")]);
    assert_eq!(code, Some(0), "{r:#}");
    assert!(!probe_ok(&r, "landlock"));
    let detail = r["probes"][4]["detail"].as_str().unwrap();
    assert!(detail.contains("Function not implemented"), "{detail}");
    assert_eq!(r["verdict"], "isolated");
    assert!(advice(&r).contains("Landlock"));
    assert!(advice(&r).contains("SCALR_AGENT_SANDBOX_TEST_DENY"));
}

#[test]
fn emulated_setresuid_denial_is_degraded() {
    let (code, r) = doctor(false, &[("SCALR_AGENT_SANDBOX_TEST_DENY", "setresuid")]);
    assert_eq!(code, Some(0), "{r:#}");
    assert!(!probe_ok(&r, "uid_switch"));
    assert_eq!(r["verdict"], "degraded");
    assert!(advice(&r).contains("SETUID and SETGID"), "{r:#}");
}

#[test]
fn emulated_weakest_platform_is_refused_by_default() {
    let deny = [("SCALR_AGENT_SANDBOX_TEST_DENY", "landlock,setresuid")];
    let (code, r) = doctor(false, &deny);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["verdict"], "unisolated");
    assert_eq!(r["decision"]["decision"], "refuse");
    assert!(advice(&r).contains("lower SCALR_AGENT_MIN_ISOLATION"));
    // Accepting the risk explicitly runs tasks with a warning.
    let (code, r) = doctor(
        false,
        &[deny[0], ("SCALR_AGENT_MIN_ISOLATION", "unisolated")],
    );
    assert_eq!(code, Some(0));
    assert_eq!(r["decision"]["decision"], "warn");
    // Non-root without Landlock: unisolated as well.
    let (code, r) = doctor(true, &[("SCALR_AGENT_SANDBOX_TEST_DENY", "landlock")]);
    assert_eq!(code, Some(1));
    assert_eq!(r["verdict"], "unisolated");
}
