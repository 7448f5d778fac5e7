//! Fills `sandbox::Settings` (the minimum isolation level, the dedicated uid range, the
//! rlimits, the test-only platform emulation) and `platform::RuntimeHints` (the raw
//! runtime-detection variables).

use std::ops::RangeInclusive;

use super::parse::{Parser, Raw, nonempty};
use crate::platform::RuntimeHints;
use crate::sandbox::probe::Verdict;
use crate::sandbox::{DEFAULT_UID_RANGE, RlimitSettings, Settings, TestDeny};

#[expect(
    clippy::too_many_lines,
    reason = "one setting per line: every variable the sandbox's settings take, read in one place"
)]
pub(super) fn parse(p: &mut Parser<'_>, raw: &Raw) -> Settings {
    let d = Settings::default();
    let min_isolation = match nonempty(raw.scalr_agent_min_isolation.clone()) {
        None => d.min_isolation,
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
        .unwrap_or(d.rlimits.nofile);
    let fsize_mb = p
        .number(
            "SCALR_AGENT_TASK_RLIMIT_FSIZE_MB",
            &raw.scalr_agent_task_rlimit_fsize_mb,
            1,
            1 << 30,
        )
        .unwrap_or(d.rlimits.fsize_bytes >> 20);
    let nproc = p
        .number(
            "SCALR_AGENT_TASK_RLIMIT_NPROC",
            &raw.scalr_agent_task_rlimit_nproc,
            16,
            1 << 22,
        )
        .unwrap_or(d.rlimits.nproc);
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
    Settings {
        min_isolation,
        uid_range,
        rlimits: RlimitSettings {
            nofile,
            fsize_bytes: fsize_mb << 20,
            nproc,
        },
        test_deny,
    }
}

/// The platforms' own variables, as given.
pub(super) fn runtime_hints(raw: &Raw) -> RuntimeHints {
    RuntimeHints {
        ecs_metadata_uri: nonempty(raw.ecs_container_metadata_uri_v4.clone()),
        k_service: nonempty(raw.k_service.clone()),
        cloud_run_job: nonempty(raw.cloud_run_job.clone()),
        container_app_name: nonempty(raw.container_app_name.clone()),
        container_app_job_name: nonempty(raw.container_app_job_name.clone()),
        kubernetes_service_host: nonempty(raw.kubernetes_service_host.clone()),
        metadata_host: nonempty(raw.gce_metadata_host.clone()),
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
            RlimitSettings {
                nofile: 8192,
                fsize_bytes: 10240 << 20,
                nproc: 4096
            }
        );
        assert!(s.test_deny.is_empty());
        assert!(load(&[]).unwrap().runtime.k_service.is_none());
    }

    #[test]
    fn values_and_runtime_hints() {
        let c = load(&[
            ("SCALR_AGENT_MIN_ISOLATION", "Isolated"),
            ("SCALR_AGENT_TASK_UID_RANGE", "30000-30009"),
            ("SCALR_AGENT_TASK_RLIMIT_NOFILE", "1024"),
            ("SCALR_AGENT_SANDBOX_TEST_DENY", "landlock, setresuid"),
            ("K_SERVICE", "agent"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/x"),
            ("CLOUD_RUN_JOB", "nightly"),
            ("CONTAINER_APP_NAME", "app"),
            ("CONTAINER_APP_JOB_NAME", "job"),
        ])
        .unwrap();
        let s = &c.sandbox;
        assert_eq!(s.min_isolation, Verdict::Isolated);
        assert_eq!(s.uid_range, 30000..=30009);
        assert_eq!(s.rlimits.nofile, 1024);
        assert_eq!(s.test_deny, [TestDeny::Landlock, TestDeny::Setresuid]);
        let r = &c.runtime;
        assert_eq!(r.k_service.as_deref(), Some("agent"));
        assert_eq!(r.kubernetes_service_host.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            r.ecs_metadata_uri.as_deref(),
            Some("http://169.254.170.2/v4/x")
        );
        assert_eq!(r.cloud_run_job.as_deref(), Some("nightly"));
        assert_eq!(r.container_app_name.as_deref(), Some("app"));
        assert_eq!(r.container_app_job_name.as_deref(), Some("job"));
        assert_eq!(c.agent.runtime.k_service.as_deref(), Some("agent"));
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
