//! `doctor`'s identity reach: whether a stage, sandboxed exactly like a run's (its own task
//! directory, a task uid, every layer the platform allows), reaches the platform's identity
//! endpoints: the ECS / EKS Pod Identity container-credentials endpoint, Azure's managed
//! identity endpoint (`IDENTITY_ENDPOINT`, `MSI_ENDPOINT`) and, on a cloud platform, the
//! metadata server (169.254.169.254: GCE / Cloud Run / GKE, EC2 IMDS, Azure IMDS; or
//! `GCE_METADATA_HOST`). A metadata server needs no secret, so turning identity inheritance off
//! does not hide it: this is how an operator sees what job code can reach.
//!
//! Each endpoint is one stage running `curl` (in the images; not probed without it) with no
//! proxy and a 3 s bound; no credential is sent, any HTTP answer counts as reachable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::platform::Platform;
use crate::sandbox::helper::HelperSpec;
use crate::sandbox::policy::Policy;
use crate::sandbox::probe::Probes;
use crate::sandbox::stage::Launcher;
use crate::sandbox::uid::{UidLease, UidPool};
use crate::task::prepare::TaskDirs;

/// The link-local address of the cloud metadata servers.
pub const METADATA_HOST: &str = "169.254.169.254";
/// The ECS container-credentials host of `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_CREDENTIALS_HOST: &str = "169.254.170.2";
/// Where `curl` is looked for (the stage's PATH holds the system directories only).
const CURL: &[&str] = &["/usr/bin/curl", "/bin/curl"];

/// One endpoint to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: &'static str,
    pub url: String,
}

/// What the stage saw.
#[derive(Debug, Clone, Serialize)]
pub struct Reach {
    pub name: &'static str,
    /// The URL without its query (a signed query could carry a credential).
    pub url: String,
    /// `Some(true)`: an HTTP answer; `Some(false)`: no connection; `None`: not probed.
    pub reachable: Option<bool>,
    pub detail: String,
}

/// The endpoints of the identity the agent's environment names (`inherited`: the identity
/// variables, `task::identity::Settings::inherited`), plus the metadata server on a platform
/// that may have one (`metadata_host`, else [`METADATA_HOST`]).
pub fn endpoints(
    inherited: &std::collections::BTreeMap<String, String>,
    platform: Platform,
    metadata_host: Option<&str>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let get = |k: &str| inherited.get(k).filter(|v| !v.trim().is_empty());
    if let Some(url) = get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        out.push(("AWS container credentials", url.clone()));
    } else if let Some(rel) = get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        out.push((
            "AWS container credentials",
            format!("http://{ECS_CREDENTIALS_HOST}{rel}"),
        ));
    }
    if let Some(url) = get("IDENTITY_ENDPOINT").or_else(|| get("MSI_ENDPOINT")) {
        out.push(("Azure managed identity", url.clone()));
    }
    let cloud = matches!(
        platform,
        Platform::Fargate
            | Platform::CloudRun
            | Platform::CloudRunJob
            | Platform::ContainerApps
            | Platform::ContainerAppsJob
            | Platform::Kubernetes
    );
    if cloud || metadata_host.is_some() {
        let host = metadata_host.unwrap_or(METADATA_HOST);
        out.push(("cloud metadata server", format!("http://{host}/")));
    }
    out.into_iter()
        .map(|(name, url)| Endpoint { name, url })
        .collect()
}

/// The probe could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("curl is not installed ({}): the identity endpoints were not probed", CURL.join(", "))]
    NoCurl,
    #[error("preparing the probe's task directory: {0}")]
    Dirs(#[from] crate::task::prepare::PrepareError),
    #[error("leasing a task uid for the probe: {0}")]
    Lease(#[from] crate::sandbox::uid::LeaseError),
    #[error("giving the probe's directory to its uid: {0}")]
    Chown(std::io::Error),
    #[error("starting the probe's stage: {0}")]
    Spawn(#[from] crate::sandbox::stage::SpawnError),
    #[error("locating the agent's executable: {0}")]
    Launcher(std::io::Error),
}

/// What the probe needs from the configuration.
pub struct ReachSettings<'a> {
    pub data_dir: &'a Path,
    pub sandbox: &'a crate::sandbox::Settings,
    pub probes: &'a Probes,
}

/// Probes every endpoint from one stage each, in a task directory of its own under a task uid
/// (when the platform can switch uids), removed afterwards.
pub async fn probe(
    s: &ReachSettings<'_>,
    endpoints: &[Endpoint],
) -> Result<Vec<Reach>, ReachError> {
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let curl = CURL
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(ReachError::NoCurl)?;
    let launcher = Launcher::current().map_err(ReachError::Launcher)?;
    let (data_dir, sandbox) = (s.data_dir.to_path_buf(), s.sandbox.clone());
    let agent_uid = s.probes.agent_uid;
    let switch = s.probes.uid_switch.ok;
    let (dirs, lease) =
        tokio::task::spawn_blocking(move || prepare(&data_dir, &sandbox, agent_uid, switch))
            .await
            .expect("preparing the probe does not panic")?;
    let policy = Policy::for_task(
        s.probes,
        s.sandbox,
        lease.as_ref().map(UidLease::ids),
        &dirs.root,
        &[],
    );
    let mut out = Vec::new();
    for e in endpoints {
        out.push(probe_one(&launcher, &curl, &dirs, &policy, e).await);
    }
    tokio::task::spawn_blocking(move || {
        dirs.remove();
        if let Some(l) = lease {
            l.release();
        }
    })
    .await
    .expect("cleaning up the probe does not panic");
    Ok(out)
}

fn prepare(
    data_dir: &Path,
    sandbox: &crate::sandbox::Settings,
    agent_uid: u32,
    switch: bool,
) -> Result<(TaskDirs, Option<UidLease>), ReachError> {
    let dirs = TaskDirs::create(data_dir, "doctor-reach")?;
    let lease = if switch {
        let lease = UidPool::new(sandbox.uid_range.clone(), &[agent_uid], data_dir).lease();
        let lease = match lease {
            Ok(l) => l,
            Err(e) => {
                dirs.remove();
                return Err(e.into());
            }
        };
        if let Err(e) = lease.own_tree(&dirs.root) {
            dirs.remove();
            lease.release();
            return Err(ReachError::Chown(e));
        }
        Some(lease)
    } else {
        None
    };
    Ok((dirs, lease))
}

/// `url` as the report shows it: no query, no password.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            crate::http::redact(&u)
        }
        Err(_) => crate::http::redact_str(url),
    }
}

async fn probe_one(
    launcher: &Launcher,
    curl: &Path,
    dirs: &TaskDirs,
    policy: &Policy,
    e: &Endpoint,
) -> Reach {
    let shown = shown(&e.url);
    let reach = |reachable, detail: String| Reach {
        name: e.name,
        url: shown.clone(),
        reachable,
        detail,
    };
    let spec = HelperSpec {
        program: curl.to_path_buf(),
        args: [
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "HTTP %{http_code}\n",
            "--max-time",
            "3",
            "--noproxy",
            "*",
            &e.url,
        ]
        .map(String::from)
        .to_vec(),
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), dirs.home.display().to_string()),
            ("TMPDIR".into(), dirs.tmp.display().to_string()),
        ],
        cwd: dirs.root.clone(),
        stdout_file: None,
        policy: policy.clone(),
    };
    let mut stage = match launcher.spawn(&spec).await {
        Ok(s) => s,
        Err(err) => return reach(None, format!("the probe's stage did not start: {err}")),
    };
    let mut text = String::new();
    if let Some(mut output) = stage.take_output() {
        let read = output.read_to_string(&mut text);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), stage.wait()).await;
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let code = last.strip_prefix("HTTP ").unwrap_or("000");
    match exit {
        Ok(Ok(x)) if x.success() && code != "000" => {
            reach(Some(true), format!("answers a stage (HTTP {code})"))
        }
        Ok(Ok(_)) => {
            let why = text
                .lines()
                .find(|l| l.starts_with("curl:"))
                .unwrap_or(last)
                .to_string();
            reach(Some(false), format!("not reachable from a stage: {why}"))
        }
        Ok(Err(err)) => reach(None, format!("the probe's stage failed: {err}")),
        Err(_) => reach(None, "the probe's stage did not end within 10 s".into()),
    }
}

impl super::DoctorReport {
    /// Probes the identity endpoints from stages and adds what they reached. `doctor` runs
    /// before the agent's runtime exists: the probe gets a current-thread runtime of its own,
    /// whose thread lives until the stages ended (their helpers' parent-death signal). A probe
    /// that cannot run at all is one line saying why.
    pub fn with_identity(
        mut self,
        config: &super::Settings,
        data_dir: &Path,
        probes: &Probes,
    ) -> super::DoctorReport {
        let list = endpoints(
            &config.task.identity.inherited,
            self.platform,
            config.runtime.metadata_host.as_deref(),
        );
        if list.is_empty() {
            return self;
        }
        let settings = ReachSettings {
            data_dir,
            sandbox: &config.sandbox,
            probes,
        };
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ReachError::Launcher)
            .and_then(|rt| rt.block_on(probe(&settings, &list)));
        self.identity_endpoints = match result {
            Ok(r) => r,
            Err(e) => list
                .iter()
                .map(|ep| Reach {
                    name: ep.name,
                    url: shown(&ep.url),
                    reachable: None,
                    detail: format!("not probed: {e}"),
                })
                .collect(),
        };
        if self
            .identity_endpoints
            .iter()
            .any(|r| r.reachable == Some(true))
        {
            self.advice.push(
                "stages reach an identity endpoint or metadata server (see above): job code can \
                 act with the identity behind it, whatever SCALR_AGENT_TASK_INHERIT_IDENTITY \
                 says; scope that role to what runs may change (README, Identity of runs)"
                    .into(),
            );
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_carry_no_query_or_password() {
        assert_eq!(
            shown("http://user:pw@127.0.0.1:9/token?api-version=1&sig=secret"),
            "http://user:***@127.0.0.1:9/token"
        );
    }

    #[test]
    fn endpoints_follow_the_identity_and_the_platform() {
        let vars = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ecs = vars(&[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        )]);
        assert_eq!(
            endpoints(&ecs, Platform::Fargate, None),
            [
                Endpoint {
                    name: "AWS container credentials",
                    url: "http://169.254.170.2/v2/credentials/x".into()
                },
                Endpoint {
                    name: "cloud metadata server",
                    url: "http://169.254.169.254/".into()
                }
            ]
        );
        // Outside a cloud platform nothing is probed unless configured.
        assert!(endpoints(&vars(&[]), Platform::Vm, None).is_empty());
        assert!(endpoints(&vars(&[]), Platform::Docker, None).is_empty());
        let aca = vars(&[
            ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/c"),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/ignored"),
        ]);
        let urls: Vec<_> = endpoints(&aca, Platform::Vm, Some("127.0.0.1:9"))
            .into_iter()
            .map(|e| e.url)
            .collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:1/c",
                "http://localhost:42356/msi/token",
                "http://127.0.0.1:9/"
            ]
        );
    }
}
