//! Where the agent runs: the container platform, guessed from the variables each platform sets
//! (read by `config` into [`RuntimeHints`]) and from the marker files container engines create.
//!
//! The answer feeds `doctor` (with the evidence: which variable or file), the registration's
//! `runtime`, and advice. The stop defaults that depend on the platform are chosen in `config`
//! from the same variables (Cloud Run services and jobs: a 10 s window).
//!
//! Order matters: a managed platform's variable wins over an engine's marker file (Cloud Run,
//! Container Apps and Fargate run containers whose engine may leave its own marker), jobs are
//! checked before services of the same platform, and Kubernetes before the engines.
#![allow(
    clippy::disallowed_methods,
    reason = "the container engine's marker files, which job code cannot write"
)]

use std::path::Path;

use serde::Serialize;

/// Raw values of the variables that platforms set, used only to guess where the agent runs;
/// filled in by `config`.
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
    /// `GCE_METADATA_HOST`: where the metadata server answers when not at 169.254.169.254
    /// (Google's client libraries read it too); `doctor` probes it.
    pub metadata_host: Option<String>,
}

/// Where the agent believes it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// AWS ECS or Fargate (`ECS_CONTAINER_METADATA_URI_V4`).
    Fargate,
    /// A Cloud Run service (`K_SERVICE`).
    CloudRun,
    /// A Cloud Run job (`CLOUD_RUN_JOB`).
    CloudRunJob,
    /// An Azure Container Apps app (`CONTAINER_APP_NAME`).
    ContainerApps,
    /// An Azure Container Apps job (`CONTAINER_APP_JOB_NAME`).
    ContainerAppsJob,
    /// A Kubernetes pod (`KUBERNETES_SERVICE_HOST`).
    Kubernetes,
    /// A podman or buildah container (`/run/.containerenv`).
    Podman,
    /// A Docker container (`/.dockerenv`).
    Docker,
    /// None of the above: a machine or an unknown engine.
    Vm,
}

impl Platform {
    /// The platform's stop window when it is fixed by the platform (not configurable there).
    pub fn fixed_stop_window_secs(self) -> Option<u64> {
        matches!(self, Platform::CloudRun | Platform::CloudRunJob).then_some(10)
    }

    /// A Cloud Run service or job.
    pub fn is_cloud_run(self) -> bool {
        matches!(self, Platform::CloudRun | Platform::CloudRunJob)
    }
}

/// The platform and the evidence for it, e.g. `CLOUD_RUN_JOB=nightly is set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    pub platform: Platform,
    pub evidence: String,
}

/// Detects the platform from the hints and the marker files under `/`.
pub fn detect(hints: &RuntimeHints) -> Detected {
    detect_in(hints, Path::new("/"))
}

/// Detects the platform from the hints and the marker files under `root` (tests pass a
/// directory of their own).
pub fn detect_in(hints: &RuntimeHints, root: &Path) -> Detected {
    let vars: [(Platform, &str, &Option<String>); 6] = [
        (
            Platform::Fargate,
            "ECS_CONTAINER_METADATA_URI_V4",
            &hints.ecs_metadata_uri,
        ),
        (Platform::CloudRunJob, "CLOUD_RUN_JOB", &hints.cloud_run_job),
        (Platform::CloudRun, "K_SERVICE", &hints.k_service),
        (
            Platform::ContainerAppsJob,
            "CONTAINER_APP_JOB_NAME",
            &hints.container_app_job_name,
        ),
        (
            Platform::ContainerApps,
            "CONTAINER_APP_NAME",
            &hints.container_app_name,
        ),
        (
            Platform::Kubernetes,
            "KUBERNETES_SERVICE_HOST",
            &hints.kubernetes_service_host,
        ),
    ];
    for (platform, name, value) in vars {
        if let Some(v) = value {
            return Detected {
                platform,
                evidence: format!("{name}={} is set", shorten(v)),
            };
        }
    }
    let containerenv = root.join("run/.containerenv");
    // The marker is created by the engine, not by job code (tasks cannot write to /run).
    if let Ok(text) = std::fs::read_to_string(&containerenv) {
        let engine = text
            .lines()
            .find_map(|l| l.strip_prefix("engine="))
            .map(|e| e.trim_matches('"').to_string());
        let evidence = match engine {
            Some(e) => format!("/run/.containerenv exists (engine {e})"),
            None => "/run/.containerenv exists".to_string(),
        };
        return Detected {
            platform: Platform::Podman,
            evidence,
        };
    }
    if containerenv.exists() {
        return Detected {
            platform: Platform::Podman,
            evidence: "/run/.containerenv exists (unreadable)".into(),
        };
    }
    if root.join(".dockerenv").exists() {
        return Detected {
            platform: Platform::Docker,
            evidence: "/.dockerenv exists".into(),
        };
    }
    Detected {
        platform: Platform::Vm,
        evidence: "no platform variable or container marker file found".into(),
    }
}

/// A platform variable's value as shown in the evidence: printable and short.
fn shorten(v: &str) -> String {
    let clean: String = v.chars().filter(|c| !c.is_control()).take(60).collect();
    if clean.len() < v.len() {
        format!("{clean}…")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hints `config` fills from these variables (its own tests check the names).
    pub(crate) fn hints(vars: &[(&str, &str)]) -> RuntimeHints {
        let get = |name: &str| {
            vars.iter()
                .find(|(k, v)| *k == name && !v.trim().is_empty())
                .map(|(_, v)| v.to_string())
        };
        RuntimeHints {
            ecs_metadata_uri: get("ECS_CONTAINER_METADATA_URI_V4"),
            k_service: get("K_SERVICE"),
            cloud_run_job: get("CLOUD_RUN_JOB"),
            container_app_name: get("CONTAINER_APP_NAME"),
            container_app_job_name: get("CONTAINER_APP_JOB_NAME"),
            kubernetes_service_host: get("KUBERNETES_SERVICE_HOST"),
            metadata_host: get("GCE_METADATA_HOST"),
        }
    }

    fn detect_vars(vars: &[(&str, &str)], root: &Path) -> Detected {
        detect_in(&hints(vars), root)
    }

    /// Variables set, the platform expected, the evidence expected.
    type Case<'a> = (&'a [(&'a str, &'a str)], Platform, &'a str);

    #[test]
    fn variables_in_order() {
        let empty = tempfile::tempdir().unwrap();
        let root = empty.path();
        let cases: &[Case<'_>] = &[
            (
                &[("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/x")],
                Platform::Fargate,
                "ECS_CONTAINER_METADATA_URI_V4=http://169.254.170.2/v4/x is set",
            ),
            (
                &[("CLOUD_RUN_JOB", "nightly"), ("K_SERVICE", "svc")],
                Platform::CloudRunJob,
                "CLOUD_RUN_JOB=nightly is set",
            ),
            (
                &[
                    ("K_SERVICE", "svc"),
                    ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
                ],
                Platform::CloudRun,
                "K_SERVICE=svc is set",
            ),
            (
                &[
                    ("CONTAINER_APP_JOB_NAME", "agent-job"),
                    ("CONTAINER_APP_NAME", "x"),
                ],
                Platform::ContainerAppsJob,
                "CONTAINER_APP_JOB_NAME=agent-job is set",
            ),
            (
                &[("CONTAINER_APP_NAME", "agent")],
                Platform::ContainerApps,
                "CONTAINER_APP_NAME=agent is set",
            ),
            (
                &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
                Platform::Kubernetes,
                "KUBERNETES_SERVICE_HOST=10.0.0.1 is set",
            ),
            (
                &[],
                Platform::Vm,
                "no platform variable or container marker file found",
            ),
        ];
        for (vars, platform, evidence) in cases {
            let d = detect_vars(vars, root);
            assert_eq!(d.platform, *platform, "{vars:?}");
            assert_eq!(d.evidence, *evidence);
        }
    }

    #[test]
    fn engine_marker_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".dockerenv"), "").unwrap();
        assert_eq!(detect_vars(&[], dir.path()).platform, Platform::Docker);
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::write(
            dir.path().join("run/.containerenv"),
            "engine=\"buildah-1.28.2\"\nname=\"x\"\n",
        )
        .unwrap();
        let d = detect_vars(&[], dir.path());
        assert_eq!(d.platform, Platform::Podman);
        assert_eq!(
            d.evidence,
            "/run/.containerenv exists (engine buildah-1.28.2)"
        );
        // A platform variable wins over the engine's marker.
        let d = detect_vars(&[("CONTAINER_APP_JOB_NAME", "j")], dir.path());
        assert_eq!(d.platform, Platform::ContainerAppsJob);
    }

    #[test]
    fn stop_windows_and_long_values() {
        assert_eq!(Platform::CloudRunJob.fixed_stop_window_secs(), Some(10));
        assert_eq!(Platform::CloudRun.fixed_stop_window_secs(), Some(10));
        assert_eq!(Platform::Fargate.fixed_stop_window_secs(), None);
        let long = "x".repeat(100);
        let dir = tempfile::tempdir().unwrap();
        let d = detect_vars(&[("K_SERVICE", long.as_str())], dir.path());
        assert!(d.evidence.ends_with("… is set"), "{}", d.evidence);
    }
}
