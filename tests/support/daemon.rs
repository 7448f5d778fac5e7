//! The daemon's fixture: a harness whose mirror serves a stand-in Terraform (1.9.9, which does
//! nothing), the fake control plane, and tasks whose work is a pre-init hook over a trivial
//! configuration; real `scalr-agent run` processes started against them through the builder;
//! waits on what the control plane received. Also the in-process daemon (`agent::run` with the
//! fake executor, started from a [`Rig`]) and a GET for the health listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use scalr_agent::agent::{self as daemon, AgentError};
use scalr_agent::config::{Config, Needs};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::agent::{Agent, AgentBuilder};
use super::control_plane::ControlPlane;
use super::executor::{FakeExecutor, Script, Seen};
use super::harness::Harness;
use super::releases::{self, Entry, Signing};

/// A Terraform stand-in that does nothing: `show -json` prints an empty plan.
pub const TRIVIAL_TOOL: &str = "#!/bin/sh\n[ \"$1\" = show ] && echo '{}'\nexit 0\n";
/// The stand-in's version.
pub const VERSION: &str = "1.9.9";

/// A mirror with the stand-in Terraform, a fake control plane, and the agents' output files.
pub struct Daemon {
    pub h: Harness,
    pub cp: ControlPlane,
    pub archive: Vec<u8>,
}

impl Daemon {
    pub async fn new() -> Daemon {
        let h = Harness::new().await;
        let zip = releases::zip(&[Entry::File("terraform", TRIVIAL_TOOL.as_bytes())]);
        releases::publish_terraform(
            &h.mirror,
            VERSION,
            &[("linux_amd64", zip)],
            Signing::With(&h.key, ".sig"),
        );
        let archive = releases::tar_gz(&[Entry::File("main.tf", b"output \"x\" { value = 1 }\n")]);
        Daemon {
            h,
            cp: ControlPlane::start().await,
            archive,
        }
    }

    /// A plan task whose pre-init hook is `hook`, in a workspace named `workspace`.
    pub fn doc(&self, id: &str, workspace: &str, hook: &str) -> Value {
        json!({
            "id": id, "action": "plan",
            "run": {"id": format!("run-{id}"), "mode": "apply", "source": "api"},
            "workspace": {"id": "ws", "name": workspace, "iac_platform": "terraform",
                          "iac_version": VERSION, "hooks": {"pre_init": hook}},
            "environment": {"id": "env", "name": "test"},
            "control_plane": {"hostname": "scalr.example.test", "run_token": "run-token"},
            "configuration": {"archive": {"url": format!("{}inputs/configuration", self.cp.url),
                                          "sha256": releases::sha256_hex(&self.archive)}},
        })
    }

    /// Queues `doc` with the trivial configuration as its input.
    pub fn enqueue_doc(&self, id: &str, doc: Value) {
        self.cp.enqueue_with_configuration(id, doc, &self.archive);
    }

    /// Queues a plan task whose pre-init hook is `hook`.
    pub fn enqueue(&self, id: &str, hook: &str) {
        self.enqueue_doc(id, self.doc(id, "shutdown", hook));
    }

    /// `scalr-agent run` named `name`, registered with this control plane.
    pub fn agent(&self, name: &str) -> AgentBuilder {
        self.h.agent().control_plane(&self.cp, name)
    }

    /// Starts `scalr-agent run` with these extra variables; reports wait 60 s and a
    /// cancellation's grace is 600 s (a signal, not the clock, must end a task).
    pub fn start(&self, name: &str, extra: &[(&str, &str)]) -> Agent {
        self.agent(name)
            .env("SCALR_AGENT_WORKER_REPORT_TIMEOUT", "60s")
            .env("SCALR_AGENT_CANCEL_GRACE", "600s")
            .envs(extra)
            .run()
    }

    pub fn log(&self, id: &str) -> String {
        String::from_utf8_lossy(&self.cp.task(id).log).into_owned()
    }

    /// Waits until the task's log contains `text`.
    pub async fn wait_log(&self, agent: &Agent, id: &str, text: &str) {
        agent
            .until(&format!("{text:?} in the log of {id}"), || {
                self.log(id).contains(text)
            })
            .await;
    }

    /// Waits for the task's one finish; returns it after checking it is the only one.
    pub async fn finished(&self, agent: &Agent, id: &str) -> Value {
        agent
            .until(&format!("{id} finished"), || {
                !self.cp.task(id).finishes.is_empty()
            })
            .await;
        let t = self.cp.task(id);
        assert_eq!(t.finishes.len(), 1, "{:#?}", t.finishes);
        assert_eq!(
            t.finishes[0]["log_size"].as_u64(),
            Some(t.log.len() as u64),
            "the whole log arrived"
        );
        t.finishes[0].clone()
    }

    /// Waits until the agent reports itself draining.
    pub async fn wait_draining(&self, agent: &Agent) {
        agent
            .until("a draining heartbeat", || {
                self.cp
                    .lock()
                    .heartbeats
                    .iter()
                    .any(|h| h["status"] == "draining")
            })
            .await;
    }
}

/// How long an in-process daemon may take to return once stopped: a bound against a hang, not
/// a measurement (tests that time the stop measure it themselves).
pub const STOP_WITHIN: Duration = Duration::from_secs(60);

/// The daemon run in the test's own process (`agent::run`), with the fake executor. Dropping
/// `handle` without `stop` leaves it running; aborting it plays a crash.
pub struct InProcess {
    pub handle: JoinHandle<Result<(), AgentError>>,
    pub shutdown: CancellationToken,
}

/// What an in-process daemon test starts from: the fake control plane, a data directory and
/// the fake executor. A test scripts and queues its tasks ([`Rig::queue`]), then starts
/// daemons against them ([`Rig::start`]).
pub struct Rig {
    pub cp: ControlPlane,
    /// The data directory of [`Rig::start`]'s daemon.
    pub dir: tempfile::TempDir,
    pub exec: FakeExecutor,
}

impl Rig {
    pub async fn new() -> Rig {
        Rig {
            cp: ControlPlane::start().await,
            dir: super::dirs::tempdir(),
            exec: FakeExecutor::default(),
        }
    }

    /// Gives task `id` its script and queues it.
    pub fn queue(&self, id: &str, script: Script) {
        self.exec.script(id, script);
        self.cp.enqueue(id);
    }

    /// Waits (at most `timeout`) until what the executor saw meets `cond`.
    pub async fn wait_seen(&self, what: &str, timeout: Duration, cond: impl Fn(&Seen) -> bool) {
        self.cp
            .wait_for(what, timeout, |_| cond(&self.exec.seen.lock().unwrap()))
            .await;
    }

    /// Starts an in-process daemon named `name` with data in [`Rig::dir`], plus `extra`
    /// variables (see [`Rig::config`]).
    pub fn start(&self, name: &str, extra: &[(&str, &str)]) -> InProcess {
        self.start_in(self.dir.path(), name, extra)
    }

    /// Starts an in-process daemon as [`Rig::start`] does, with data in `data`.
    pub fn start_in(&self, data: &Path, name: &str, extra: &[(&str, &str)]) -> InProcess {
        self.run(self.config_in(data, name, extra))
    }

    /// Starts `n` in-process daemons named `agent-0`, `agent-1`..., each with data in its own
    /// directory under [`Rig::dir`] and `extra` variables.
    pub fn start_several(&self, n: usize, extra: &[(&str, &str)]) -> Vec<InProcess> {
        (0..n)
            .map(|i| {
                let name = format!("agent-{i}");
                self.start_in(&self.dir.path().join(&name), &name, extra)
            })
            .collect()
    }

    /// The configuration of an in-process daemon named `name` with data in [`Rig::dir`],
    /// registered with this control plane, plus `extra` variables; a test may adjust it before
    /// [`Rig::run`].
    pub fn config(&self, name: &str, extra: &[(&str, &str)]) -> Config {
        self.config_in(self.dir.path(), name, extra)
    }

    fn config_in(&self, data: &Path, name: &str, extra: &[(&str, &str)]) -> Config {
        let mut vars: Vec<(String, String)> = vec![
            ("SCALR_URL".into(), self.cp.url.to_string()),
            ("SCALR_AGENT_TOKEN".into(), "pool-token".into()),
            ("SCALR_AGENT_NAME".into(), name.into()),
            ("SCALR_AGENT_DATA_DIR".into(), data.display().to_string()),
            ("SCALR_AGENT_HTTP_BACKOFF".into(), "10ms".into()),
            ("SCALR_AGENT_HTTP_MAX_RETRIES".into(), "3".into()),
            ("SCALR_AGENT_WORKER_REPORT_TIMEOUT".into(), "5s".into()),
        ];
        for (k, v) in extra {
            vars.retain(|(n, _)| n != k);
            vars.push((k.to_string(), v.to_string()));
        }
        Config::from_vars(vars, Needs::ControlPlane).unwrap()
    }

    /// Starts `agent::run` with `config`'s agent settings and this rig's executor.
    pub fn run(&self, config: Config) -> InProcess {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(daemon::run(
            config.agent,
            Arc::new(self.exec.clone()),
            shutdown.clone(),
        ));
        InProcess { handle, shutdown }
    }
}

impl InProcess {
    /// Fires the shutdown token and returns what `run` returned (at most [`STOP_WITHIN`]).
    pub async fn stop(self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        tokio::time::timeout(STOP_WITHIN, self.handle)
            .await
            .expect("the daemon stops in time")
            .expect("the daemon does not panic")
    }
}

/// `GET path` from a health listener: the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
