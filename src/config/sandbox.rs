//! Settings of the stage sandbox: the minimum isolation level, the dedicated uid range, the
//! rlimits, the test-only platform emulation, and the raw runtime-detection variables.

use std::ops::RangeInclusive;

use super::parse::{Parser, Raw, nonempty};
use crate::sandbox::probe::Verdict;

/// Settings of the stage sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// `SCALR_AGENT_MIN_ISOLATION`: tasks on a platform whose verdict is below it are refused.
    pub min_isolation: Verdict,
    /// `SCALR_AGENT_TASK_UID_RANGE`: one uid (and the gid of the same number) per running task.
    pub uid_range: RangeInclusive<u32>,
    pub rlimits: RlimitConfig,
    /// `SCALR_AGENT_SANDBOX_TEST_DENY`: test-only emulation of a weaker platform.
    pub test_deny: Vec<TestDeny>,
    pub runtime: RuntimeHints,
}

/// Resource limits applied to every stage process (`RLIMIT_CORE` is always 0, `RLIMIT_AS` is
/// never set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitConfig {
    pub nofile: u64,
    pub fsize_bytes: u64,
    /// Counted per uid: applied only when the task has a dedicated uid.
    pub nproc: u64,
}

/// A capability the agent pretends the platform lacks (tests only), by running itself behind a
/// seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestDeny {
    /// `landlock_*` system calls fail with `ENOSYS`, as on a kernel without Landlock (gVisor).
    Landlock,
    /// `setuid`, `setreuid` and `setresuid` fail with `EPERM`, as without `CAP_SETUID`.
    Setresuid,
    /// `openat2` fails with `ENOSYS`, as before Linux 5.6: `taskfs` walks paths instead.
    Openat2,
}

/// Raw values of the variables that platforms set, used only to guess where the agent runs.
#[derive(Debug, Clone, Default)]
pub struct RuntimeHints {
    /// `ECS_CONTAINER_METADATA_URI_V4` (AWS ECS / Fargate).
    pub ecs_metadata_uri: Option<String>,
    /// `K_SERVICE` (a Cloud Run service).
    pub k_service: Option<String>,
    /// `CLOUD_RUN_JOB` (a Cloud Run job).
    pub cloud_run_job: Option<String>,
    /// `CONTAINER_APP_NAME` (an Azure Container Apps app).
    pub container_app_name: Option<String>,
    /// `CONTAINER_APP_JOB_NAME` (an Azure Container Apps job).
    pub container_app_job_name: Option<String>,
    /// `KUBERNETES_SERVICE_HOST` (any Kubernetes pod).
    pub kubernetes_service_host: Option<String>,
}

/// Default `SCALR_AGENT_TASK_UID_RANGE`.
pub const DEFAULT_UID_RANGE: RangeInclusive<u32> = 20000..=20999;

#[expect(
    clippy::too_many_lines,
    reason = "one setting per line: every variable the sandbox's settings take, read in one place"
)]
pub(super) fn parse(p: &mut Parser<'_>, raw: &Raw) -> SandboxConfig {
    let min_isolation = match nonempty(raw.scalr_agent_min_isolation.clone()) {
        None => Verdict::Degraded,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "isolated" => Verdict::Isolated,
            "degraded" => Verdict::Degraded,
            "unisolated" => Verdict::Unisolated,
            _ => {
                p.bad(
                    "SCALR_AGENT_MIN_ISOLATION",
                    &v,
                    "`isolated`, `degraded` or `unisolated`",
                );
                Verdict::Degraded
            }
        },
    };
    let uid_range = match nonempty(raw.scalr_agent_task_uid_range.clone()) {
        None => DEFAULT_UID_RANGE,
        Some(v) => match parse_range(&v) {
            Some(r) => r,
            None => {
                p.bad(
                    "SCALR_AGENT_TASK_UID_RANGE",
                    &v,
                    "`FIRST-LAST` with 1 <= FIRST <= LAST < 4294967295 and at most 65536 ids, e.g. `20000-20999`",
                );
                DEFAULT_UID_RANGE
            }
        },
    };
    let nofile = p
        .number(
            "SCALR_AGENT_TASK_RLIMIT_NOFILE",
            &raw.scalr_agent_task_rlimit_nofile,
            64,
            1 << 20,
        )
        .unwrap_or(8192);
    let fsize_mb = p
        .number(
            "SCALR_AGENT_TASK_RLIMIT_FSIZE_MB",
            &raw.scalr_agent_task_rlimit_fsize_mb,
            1,
            1 << 30,
        )
        .unwrap_or(10240);
    let nproc = p
        .number(
            "SCALR_AGENT_TASK_RLIMIT_NPROC",
            &raw.scalr_agent_task_rlimit_nproc,
            16,
            1 << 22,
        )
        .unwrap_or(4096);
    let mut test_deny = Vec::new();
    if let Some(v) = nonempty(raw.scalr_agent_sandbox_test_deny.clone()) {
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "landlock" => test_deny.push(TestDeny::Landlock),
                "setresuid" => test_deny.push(TestDeny::Setresuid),
                "openat2" => test_deny.push(TestDeny::Openat2),
                _ => p.bad(
                    "SCALR_AGENT_SANDBOX_TEST_DENY",
                    &v,
                    "a comma-separated list of `landlock`, `setresuid` and `openat2`",
                ),
            }
        }
        test_deny.dedup();
    }
    SandboxConfig {
        min_isolation,
        uid_range,
        rlimits: RlimitConfig {
            nofile,
            fsize_bytes: fsize_mb << 20,
            nproc,
        },
        test_deny,
        runtime: RuntimeHints {
            ecs_metadata_uri: nonempty(raw.ecs_container_metadata_uri_v4.clone()),
            k_service: nonempty(raw.k_service.clone()),
            cloud_run_job: nonempty(raw.cloud_run_job.clone()),
            container_app_name: nonempty(raw.container_app_name.clone()),
            container_app_job_name: nonempty(raw.container_app_job_name.clone()),
            kubernetes_service_host: nonempty(raw.kubernetes_service_host.clone()),
        },
    }
}

fn parse_range(v: &str) -> Option<RangeInclusive<u32>> {
    let (a, b) = v.trim().split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a >= 1 && a <= b && b < u32::MAX && b - a < 65536).then_some(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Needs};

    fn load(vars: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        Config::from_vars(
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Needs::Local,
        )
    }

    #[test]
    fn defaults() {
        let s = load(&[]).unwrap().sandbox;
        assert_eq!(s.min_isolation, Verdict::Degraded);
        assert_eq!(s.uid_range, 20000..=20999);
        assert_eq!(
            s.rlimits,
            RlimitConfig {
                nofile: 8192,
                fsize_bytes: 10240 << 20,
                nproc: 4096
            }
        );
        assert!(s.test_deny.is_empty());
        assert!(s.runtime.k_service.is_none());
    }

    #[test]
    fn values_and_runtime_hints() {
        let s = load(&[
            ("SCALR_AGENT_MIN_ISOLATION", "Isolated"),
            ("SCALR_AGENT_TASK_UID_RANGE", "30000-30009"),
            ("SCALR_AGENT_TASK_RLIMIT_NOFILE", "1024"),
            ("SCALR_AGENT_SANDBOX_TEST_DENY", "landlock, setresuid"),
            ("K_SERVICE", "agent"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ])
        .unwrap()
        .sandbox;
        assert_eq!(s.min_isolation, Verdict::Isolated);
        assert_eq!(s.uid_range, 30000..=30009);
        assert_eq!(s.rlimits.nofile, 1024);
        assert_eq!(s.test_deny, [TestDeny::Landlock, TestDeny::Setresuid]);
        assert_eq!(s.runtime.k_service.as_deref(), Some("agent"));
        assert_eq!(
            s.runtime.kubernetes_service_host.as_deref(),
            Some("10.0.0.1")
        );
    }

    #[test]
    fn bad_values_are_reported_together() {
        let err = load(&[
            ("SCALR_AGENT_MIN_ISOLATION", "paranoid"),
            ("SCALR_AGENT_TASK_UID_RANGE", "0-10"),
            ("SCALR_AGENT_TASK_RLIMIT_NPROC", "1"),
            ("SCALR_AGENT_SANDBOX_TEST_DENY", "seccomp"),
        ])
        .unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            names,
            [
                "SCALR_AGENT_MIN_ISOLATION",
                "SCALR_AGENT_SANDBOX_TEST_DENY",
                "SCALR_AGENT_TASK_RLIMIT_NPROC",
                "SCALR_AGENT_TASK_UID_RANGE",
            ]
        );
        assert_eq!(parse_range("5-4"), None);
        assert_eq!(parse_range("1-65536"), Some(1..=65536));
        assert_eq!(parse_range("1-65537"), None);
    }
}
