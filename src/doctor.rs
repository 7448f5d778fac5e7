//! `scalr-agent doctor`: what isolation this platform gives to stages, why, and what to change.
//!
//! The report gathers configuration problems, the platform the agent believes it runs on
//! (from variables the platforms set, read by `config`, and the engines' marker files, with
//! the evidence), whether stage uids resolve to user entries, every probe with
//! the reason for a failure, the verdict against `SCALR_AGENT_MIN_ISOLATION`, and advice.
//! The command exits non-zero when tasks would be refused. `reach` adds what a stage reaches
//! of the platform's identity endpoints and metadata server.

pub mod reach;

use std::fmt::Write as _;

use serde::Serialize;

pub use crate::platform::Platform;
use crate::platform::RuntimeHints;
use crate::sandbox::TestDeny;
use crate::sandbox::probe::{Decision, ProbeResult, Probes, Verdict, decide, verdict};

/// What `doctor` reports on, filled in by `config`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub sandbox: crate::sandbox::Settings,
    /// The runner's settings: `libnss-wrapper`, the memory and log limits.
    pub task: crate::task::Settings,
    /// Where the agent runs, from the platforms' variables.
    pub runtime: RuntimeHints,
    /// `SCALR_*` variables that are set but unknown (likely typos): reported as problems.
    pub unknown_variables: Vec<String>,
}

/// One probe, named, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeLine {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Everything `doctor` prints (`--json` prints this structure).
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub platform: Platform,
    pub platform_evidence: String,
    pub agent_uid: u32,
    pub problems: Vec<String>,
    pub probes: Vec<ProbeLine>,
    pub landlock_abi: Option<u32>,
    pub verdict: Verdict,
    pub min_isolation: Verdict,
    pub decision: Decision,
    /// Tasks would be refused: the command exits non-zero.
    pub refused: bool,
    pub advice: Vec<String>,
    pub test_deny: Vec<TestDeny>,
    /// What bounds a task's memory (`SCALR_AGENT_TASK_MEMORY_LIMIT_MB`, or
    /// [`MEMORY_UNBOUNDED`]).
    pub memory: String,
    /// `SCALR_AGENT_TASK_LOG_LIMIT_MB`.
    pub task_log_limit_mb: u64,
    /// How stages get a user entry: `libnss-wrapper` (its path), the image's `/etc/passwd`, or
    /// not at all (a warning).
    pub user_entries: String,
    /// Whether task uids reach the data and cache directories ([`DoctorReport::with_reach`]).
    pub data_dir: String,
    /// They cannot: every task would fail, and the command exits 64 like `exec` and `run`.
    pub unreachable: bool,
    /// The identity endpoints and metadata server as a stage reaches them ([`reach`]).
    pub identity_endpoints: Vec<reach::Reach>,
}

/// The memory line of the report without `SCALR_AGENT_TASK_MEMORY_LIMIT_MB`; stages are the
/// kernel's first choice when memory runs out.
pub const MEMORY_UNBOUNDED: &str = "unbounded per task: no per-task memory limit is applied; every stage has oom_score_adj 1000, so when the agent's container runs out of memory the kernel kills a stage, not the agent (bound the container's memory)";

/// Guesses the platform from the runtime hints in the configuration and the engines' marker
/// files (see `crate::platform`).
pub fn detect_platform(config: &Settings) -> (Platform, String) {
    let d = crate::platform::detect(&config.runtime);
    (d.platform, d.evidence)
}

/// Builds the report from the configuration and the probes.
pub fn report(config: &Settings, probes: &Probes) -> DoctorReport {
    let (platform, platform_evidence) = detect_platform(config);
    let v = verdict(probes);
    let min = config.sandbox.min_isolation;
    let decision = decide(v, min);
    let refused = matches!(decision, Decision::Refuse(_));
    let mut problems: Vec<String> = config
        .unknown_variables
        .iter()
        .map(|n| format!("{n} is set but unknown (a typo?)"))
        .collect();
    if config.sandbox.uid_range.contains(&probes.agent_uid) {
        problems.push(format!(
            "SCALR_AGENT_TASK_UID_RANGE {}-{} contains the agent's own uid {}; it is skipped",
            config.sandbox.uid_range.start(),
            config.sandbox.uid_range.end(),
            probes.agent_uid
        ));
    }
    let user_entries = match user_entries(config, probes) {
        Ok(how) => how,
        Err(warning) => {
            problems.push(warning.clone());
            warning
        }
    };
    let lines = probe_lines(probes);
    let advice = advise(config, probes, platform, v, refused);
    DoctorReport {
        platform,
        platform_evidence,
        agent_uid: probes.agent_uid,
        problems,
        probes: lines,
        landlock_abi: probes.landlock_abi,
        verdict: v,
        min_isolation: min,
        decision,
        refused,
        advice,
        test_deny: config.sandbox.test_deny.clone(),
        memory: memory_line(config),
        task_log_limit_mb: config.task.log_limit_bytes >> 20,
        user_entries,
        data_dir: "not checked".into(),
        unreachable: false,
        identity_endpoints: Vec::new(),
    }
}

/// Whether stage uids resolve to user entries (`ssh` and `git` over ssh refuse to run without
/// one): `Ok` says how, `Err` is the warning.
fn user_entries(config: &Settings, probes: &Probes) -> Result<String, String> {
    if let Some(lib) = crate::task::users::find_library(config.task.nss_wrapper_lib.as_deref()) {
        return Ok(format!(
            "each stage gets its own passwd entry through {}",
            lib.display()
        ));
    }
    let (passwd, _) = crate::task::users::system_databases();
    let range = &config.sandbox.uid_range;
    let missing: Vec<u32> = if probes.uid_switch.ok {
        range
            .clone()
            .filter(|u| !crate::task::users::has_entry(&passwd, *u))
            .take(1)
            .collect()
    } else {
        Some(probes.agent_uid)
            .filter(|u| !crate::task::users::has_entry(&passwd, *u))
            .into_iter()
            .collect()
    };
    let wanted = match &config.task.nss_wrapper_lib {
        Some(p) => format!("SCALR_AGENT_NSS_WRAPPER_LIB={} does not exist", p.display()),
        None => "libnss_wrapper.so was not found".to_string(),
    };
    match missing.first() {
        None => Ok("stage uids have entries in /etc/passwd".into()),
        Some(uid) => Err(format!(
            "stage uid {uid} has no user entry ({wanted}): ssh, git over ssh and whoami fail in stages; install libnss-wrapper (Debian) or set SCALR_AGENT_NSS_WRAPPER_LIB"
        )),
    }
}

fn memory_line(config: &Settings) -> String {
    let Some(limit) = config.task.task_memory_limit_bytes else {
        return MEMORY_UNBOUNDED.into();
    };
    match crate::sandbox::cgroup::own_memory_cgroup() {
        Ok((dir, v2)) => format!(
            "{} MiB per task: a memory cgroup per task under {} (cgroup {})",
            limit >> 20,
            dir.display(),
            if v2 { "v2" } else { "v1" }
        ),
        Err(e) => format!("unbounded: tasks FAIL: {e}"),
    }
}

fn probe_lines(p: &Probes) -> Vec<ProbeLine> {
    let line = |name, r: &ProbeResult| ProbeLine {
        name,
        ok: r.ok,
        detail: r.detail.clone(),
    };
    vec![
        line("uid_switch", &p.uid_switch),
        line("capability_drop", &p.capability_drop),
        line("non_dumpable", &p.non_dumpable),
        line("no_new_privs", &p.no_new_privs),
        line("landlock", &p.landlock),
        line("seccomp", &p.seccomp),
        line("no_sys_ptrace", &p.no_sys_ptrace),
        line("user_namespaces", &p.user_namespaces),
        line("cgroup_v2", &p.cgroup_v2),
    ]
}

fn advise(
    config: &Settings,
    p: &Probes,
    platform: Platform,
    v: Verdict,
    refused: bool,
) -> Vec<String> {
    let mut a = Vec::new();
    if !config.sandbox.test_deny.is_empty() {
        a.push("SCALR_AGENT_SANDBOX_TEST_DENY is set: a weaker platform is being emulated for tests; never set it in production".into());
    }
    if !p.uid_switch.ok {
        if p.agent_uid != 0 {
            let how = match platform {
                Platform::Kubernetes => {
                    " (securityContext.runAsUser: 0, keep the SETUID, SETGID and SETPCAP capabilities; the `restricted` pod security level forbids this)"
                }
                Platform::Docker | Platform::Podman => {
                    " (do not pass --user; the image's USER must be root)"
                }
                _ => "",
            };
            a.push(format!("run the container as root so tasks can get their own uid{how}; the agent drops every privilege for stages"));
        } else {
            a.push("give the container the SETUID and SETGID capabilities (they are in Docker's default set; do not drop them) so tasks can get their own uid".into());
        }
    }
    if p.uid_switch.ok && !p.capability_drop.ok {
        a.push(
            "keep the SETPCAP capability so stages also lose the capability bounding set".into(),
        );
    }
    if p.sys_ptrace_granted || !p.no_sys_ptrace.ok {
        a.push("do not add SYS_PTRACE to the container: with it a process can read the agent's memory and environment despite non-dumpable".into());
    }
    if !p.non_dumpable.ok {
        a.push("the platform refuses PR_SET_DUMPABLE: the agent's token is readable from /proc; run on a standard Linux kernel".into());
    }
    if !p.landlock.ok {
        let extra = if platform.is_cloud_run() {
            "; on Cloud Run use the second-generation execution environment (gVisor has no Landlock)"
        } else {
            ""
        };
        a.push(format!("use a kernel with Landlock (5.13 or later, `landlock` in the `lsm=` boot list) so stages cannot read files outside their task{extra}"));
    }
    if !p.no_new_privs.ok || !p.seccomp.ok {
        a.push("allow seccomp filters and no_new_privs (Docker's default seccomp profile does; do not use a profile that blocks seccomp(2) or prctl)".into());
    }
    if refused {
        a.push(format!(
            "tasks are refused: fix the above, or lower SCALR_AGENT_MIN_ISOLATION (now `{}`) to `{v}` accepting the risk",
            config.sandbox.min_isolation
        ));
    }
    if a.is_empty() {
        a.push("nothing to change: stages are fully isolated".into());
    }
    a
}

impl DoctorReport {
    /// Adds the start-up check of the data and cache directories (`datadir::check_reach`):
    /// a directory task uids cannot traverse is a problem, and tasks fail.
    pub fn with_reach(
        mut self,
        reach: &Result<crate::datadir::Reach, crate::datadir::ReachError>,
    ) -> DoctorReport {
        use crate::datadir::Reach;
        self.data_dir = match reach {
            Ok(Reach::Reachable) => {
                "task uids can traverse to the task directories and the software cache".into()
            }
            Ok(Reach::Skipped) => "not checked: the agent cannot switch uids, so stages run as \
                                   its own uid"
                .into(),
            Err(e) => {
                self.problems.push(e.to_string());
                self.unreachable = true;
                "task uids CANNOT reach it (see the configuration problems)".into()
            }
        };
        self
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "platform: {:?} ({})",
            self.platform, self.platform_evidence
        );
        let _ = writeln!(s, "agent uid: {}", self.agent_uid);
        let _ = writeln!(s, "user entries: {}", self.user_entries);
        let _ = writeln!(s, "data directory: {}", self.data_dir);
        for r in &self.identity_endpoints {
            let _ = writeln!(s, "identity endpoint: {} {}: {}", r.name, r.url, r.detail);
        }
        if self.problems.is_empty() {
            let _ = writeln!(s, "configuration: no problems");
        } else {
            let _ = writeln!(s, "configuration problems:");
            for p in &self.problems {
                let _ = writeln!(s, "  - {p}");
            }
        }
        let _ = writeln!(s, "probes:");
        for p in &self.probes {
            let mark = if p.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(s, "  [{mark}] {:<16} {}", p.name, p.detail);
        }
        let outcome = match &self.decision {
            _ if self.unreachable => {
                "tasks FAIL: task uids cannot reach the data directory".to_string()
            }
            Decision::Run => "tasks run".to_string(),
            Decision::Warn(_) => "tasks run with a warning in their log".to_string(),
            Decision::Refuse(_) => "tasks are REFUSED".to_string(),
        };
        let _ = writeln!(
            s,
            "verdict: {} (minimum: {}): {outcome}",
            self.verdict, self.min_isolation
        );
        let _ = writeln!(s, "memory: {}", self.memory);
        let _ = writeln!(s, "task log limit: {} MiB", self.task_log_limit_mb);
        let _ = writeln!(s, "advice:");
        for a in &self.advice {
            let _ = writeln!(s, "  - {a}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings `config` fills from these variables (its own tests check the parsing).
    fn config(vars: &[(&str, &str)]) -> Settings {
        let mut s = Settings::default();
        for (name, value) in vars {
            let v = Some(value.to_string());
            match *name {
                "K_SERVICE" => s.runtime.k_service = v,
                "KUBERNETES_SERVICE_HOST" => s.runtime.kubernetes_service_host = v,
                "ECS_CONTAINER_METADATA_URI_V4" => s.runtime.ecs_metadata_uri = v,
                "CONTAINER_APP_NAME" => s.runtime.container_app_name = v,
                "CLOUD_RUN_JOB" => s.runtime.cloud_run_job = v,
                "SCALR_AGENT_MIN_ISOLATION" => {
                    assert_eq!(*value, "isolated");
                    s.sandbox.min_isolation = Verdict::Isolated;
                }
                "SCALR_AGENT_NSS_WRAPPER_LIB" => s.task.nss_wrapper_lib = Some(value.into()),
                "SCALR_AGENT_TASK_UID_RANGE" => {
                    let (a, b) = value.split_once('-').unwrap();
                    s.sandbox.uid_range = a.parse().unwrap()..=b.parse().unwrap();
                }
                other => panic!("no test mapping for {other}"),
            }
        }
        s
    }

    fn probes(uid_ok: bool, agent_uid: u32, landlock: bool) -> Probes {
        let r = |ok: bool| ProbeResult {
            ok,
            detail: String::new(),
        };
        Probes {
            uid_switch: r(uid_ok),
            capability_drop: r(uid_ok),
            non_dumpable: r(true),
            no_new_privs: r(true),
            landlock: r(landlock),
            landlock_abi: landlock.then_some(6),
            seccomp: r(true),
            user_namespaces: r(false),
            cgroup_v2: r(false),
            no_sys_ptrace: r(true),
            sys_ptrace_granted: false,
            agent_uid,
        }
    }

    #[test]
    fn platform_detection_order() {
        let c = config(&[
            ("K_SERVICE", "svc"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]);
        assert_eq!(detect_platform(&c).0, Platform::CloudRun);
        let c = config(&[("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/x")]);
        assert_eq!(detect_platform(&c).0, Platform::Fargate);
        let c = config(&[("CONTAINER_APP_NAME", "agent")]);
        assert_eq!(detect_platform(&c).0, Platform::ContainerApps);
        let c = config(&[("CLOUD_RUN_JOB", "nightly")]);
        let (p, evidence) = detect_platform(&c);
        assert_eq!(p, Platform::CloudRunJob);
        assert_eq!(evidence, "CLOUD_RUN_JOB=nightly is set");
        assert!(
            report(&c, &probes(true, 0, true))
                .to_text()
                .contains("platform: CloudRunJob (CLOUD_RUN_JOB=nightly is set)")
        );
    }

    #[test]
    fn non_root_gets_root_advice_and_degraded() {
        let r = report(&config(&[]), &probes(false, 1000, true));
        assert_eq!(r.verdict, Verdict::Degraded);
        assert!(!r.refused);
        assert!(
            r.advice
                .iter()
                .any(|a| a.contains("run the container as root"))
        );
        assert!(
            r.to_text()
                .contains("verdict: degraded (minimum: degraded)")
        );
        let text = r.to_text();
        assert!(text.contains("memory: unbounded per task"), "{text}");
        assert!(text.contains("task log limit: 100 MiB"), "{text}");
    }

    #[test]
    fn refusal_is_explained() {
        let c = config(&[("SCALR_AGENT_MIN_ISOLATION", "isolated")]);
        let r = report(&c, &probes(false, 1000, false));
        assert_eq!(r.verdict, Verdict::Unisolated);
        assert!(r.refused);
        assert!(r.advice.iter().any(|a| a.contains("Landlock")));
        assert!(
            r.advice
                .iter()
                .any(|a| a.contains("lower SCALR_AGENT_MIN_ISOLATION"))
        );
    }

    #[test]
    fn unresolvable_stage_uids_are_warned_about() {
        let c = config(&[(
            "SCALR_AGENT_NSS_WRAPPER_LIB",
            "/nonexistent/libnss_wrapper.so",
        )]);
        let r = report(&c, &probes(true, 0, true));
        assert!(
            r.problems.iter().any(|p| p.starts_with("stage uid 20000 has no user entry (SCALR_AGENT_NSS_WRAPPER_LIB=/nonexistent/libnss_wrapper.so does not exist)")),
            "{:?}",
            r.problems
        );
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libnss_wrapper.so");
        std::fs::write(&lib, b"").unwrap();
        let c = config(&[("SCALR_AGENT_NSS_WRAPPER_LIB", lib.to_str().unwrap())]);
        let r = report(&c, &probes(true, 0, true));
        assert!(
            r.user_entries.contains("own passwd entry"),
            "{}",
            r.user_entries
        );
        assert!(r.to_text().contains("user entries: each stage gets"));
    }

    #[test]
    fn uid_range_containing_the_agent_is_a_problem() {
        let c = config(&[("SCALR_AGENT_TASK_UID_RANGE", "1000-1999")]);
        let r = report(&c, &probes(true, 1000, true));
        let own: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.contains("contains the agent's own uid"))
            .collect();
        assert_eq!(own.len(), 1, "{:?}", r.problems);
        assert_eq!(r.advice, ["nothing to change: stages are fully isolated"]);
    }
}
