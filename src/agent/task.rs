//! One task's life on this agent: acknowledge, spool, inputs, execute (with cancellation
//! relayed, the log shipped as it grows and step reports sent as steps start and end), then
//! record the final status and deliver it once the step reports are done.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::deliver::{append_error, deliver, ship_log};
use super::executor::{Job, JobOutcome, StepEvents};
use super::signals::watch_signals;
use super::steps::report_steps;
use crate::control::TaskApi;
use crate::control::wire::{Acquired, Finish};
use crate::spool::TaskSpool;
use crate::task::model::Task;
use crate::task::sweep::DirLock;

/// Largest task document accepted.
const MAX_TASK_BYTES: usize = 1 << 20;

/// The controls of a running task, for cancellation and shutdown (see [`Job`]).
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// The control plane's graceful cancel (SIGINT).
    pub cancel: CancellationToken,
    /// The agent's grace-shutdown (SIGTERM).
    pub terminate: CancellationToken,
    /// Kill the whole tree now.
    pub kill: CancellationToken,
}

impl Controls {
    /// Kills now, and marks the task canceled. `kill` goes first: a step woken by either
    /// token then sees the kill and sends no SIGINT before the SIGKILL.
    pub(super) fn force_cancel(&self) {
        self.kill.cancel();
        self.cancel.cancel();
    }

    fn stopped(&self) -> bool {
        self.cancel.is_cancelled() || self.terminate.is_cancelled() || self.kill.is_cancelled()
    }
}

/// Runs one acquired task to its delivered final status. The caller registered `controls`
/// as running (`Ctx::add_running`) before spawning this, so the stop actions reach the task
/// from its acquisition on; it is unregistered as soon as the executor returns (or the task
/// is not run), and the slot (`permit`) released with it; delivery may go on after it.
pub async fn run(
    ctx: Arc<Ctx>,
    acquired: Acquired,
    permit: OwnedSemaphorePermit,
    controls: Controls,
) {
    // Held (its lease renewed by the heartbeats) until its delivery ended.
    let held = ctx.leases.guard(&acquired.task_id);
    let api = TaskApi::new(
        ctx.client.clone(),
        acquired.task_id.clone(),
        acquired.task_token.clone(),
    )
    .gone_with(held.lost.clone());
    let id = acquired.task_id.clone();
    if let Err(e) = api.ack().await {
        tracing::warn!(task = %id, error = %e, "task not acknowledged; not running it");
        ctx.remove_running(&id);
        return;
    }
    let spool = match ctx.spool.create(&id, api.token()) {
        Ok(s) => s,
        Err(e) => {
            ctx.remove_running(&id);
            tracing::error!(task = %id, error = %e, "cannot spool the task; reporting it errored");
            let finish = Finish {
                status: super::executor::FinalStatus::Errored,
                result: serde_json::Value::Null,
                error: Some(format!("the agent cannot spool the task: {e}")),
                log_size: 0,
                log_sha256: None,
            };
            if let Err(e) = api.finish(&finish).await {
                tracing::error!(task = %id, error = %e, "cannot report the task");
            }
            return;
        }
    };
    let started = Instant::now();
    let done = CancellationToken::new();
    let (steps, step_events) = tokio::sync::mpsc::unbounded_channel();
    let watcher = watch_signals(&ctx, &api, &controls, &done);
    let reporter = report_steps(
        &api,
        step_events,
        &ctx.metrics,
        &done,
        &ctx.stop,
        ctx.flush_limit,
    );
    let shipper = async {
        // Errors that end the task for this agent stop the execution too.
        match ship_log(&api, &spool, &ctx.metrics, 0).await {
            Ok(committed) => Some(committed),
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "log shipping stopped");
                if !e.is_retryable() {
                    controls.kill.cancel();
                }
                None
            }
        }
    };
    let execution = async {
        let (action, outcome, inputs) =
            execute(&ctx, &api, &acquired, &spool, &controls, steps).await;
        // The inputs and the executor's copies of the artifacts are no longer needed (the
        // spool holds what is owed); the spool goes once delivered. Copying artifacts, the
        // fsync of the final status and the removal block: on the blocking pool.
        let s = spool.clone();
        let keep_inputs = ctx.keep_task_dirs;
        let finish = tokio::task::spawn_blocking(move || {
            let outcome = keep_artifacts(&s, outcome);
            if let Some(inputs) = inputs
                && !keep_inputs
            {
                inputs.remove();
            }
            let log_sha256 = s
                .log_sha256()
                .inspect_err(|e| tracing::warn!(task = %s.task_id(), error = %e, "cannot hash the spooled log"))
                .ok();
            let finish = Finish {
                status: outcome.status,
                result: outcome.result,
                error: outcome.error,
                log_size: s.log_len(),
                log_sha256,
            };
            if let Err(e) = s.write_final(&finish) {
                tracing::error!(task = %s.task_id(), error = %e, "cannot record the final status in the spool");
            }
            finish
        })
        .await
        .expect("spooling the outcome does not panic");
        spool.close_log();
        ctx.remove_running(&id);
        ctx.metrics
            .task_done(&action, finish.status.as_str(), started.elapsed());
        tracing::info!(task = %id, action = %action, status = finish.status.as_str(), "task ended");
        done.cancel();
        drop(permit);
    };
    // The finish goes out only after the step reports: the server sees steps first.
    let ((), committed, (), ()) = tokio::join!(watcher, shipper, execution, reporter);
    deliver(&api, &spool, &ctx.metrics, committed).await;
    drop(held);
}

/// Parses the task, fetches its inputs and runs the executor. Returns the action (for
/// metrics), the outcome and the task's directory of inputs (locked, for the caller to remove).
async fn execute(
    ctx: &Ctx,
    api: &TaskApi,
    acquired: &Acquired,
    spool: &TaskSpool,
    controls: &Controls,
    steps: StepEvents,
) -> (String, JobOutcome, Option<DirLock>) {
    let mut log = match spool.writer() {
        Ok(w) => w,
        Err(e) => return ("unknown".into(), JobOutcome::errored(e.to_string()), None),
    };
    let task = match parse_task(acquired) {
        Ok(t) => t,
        Err(reason) => {
            let _ = writeln!(log, "[scalr-agent] {reason}");
            tracing::warn!(task = %acquired.task_id, %reason, "task refused");
            return ("unknown".into(), JobOutcome::errored(reason), None);
        }
    };
    let action = task.action.to_string();
    let (tasks_dir, name) = (ctx.tasks_dir.clone(), spool_dir_name(&acquired.task_id));
    let created = tokio::task::spawn_blocking(move || {
        crate::datadir::ensure_dir(&tasks_dir, crate::datadir::TRAVERSE_ONLY)
            .map_err(|e| e.to_string())?;
        crate::task::sweep::create_locked(&tasks_dir, &name, crate::datadir::PRIVATE_DIR)
            .map_err(|e| format!("cannot create {}: {e}", tasks_dir.join(&name).display()))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let lock = match created {
        Ok(l) => l,
        Err(reason) => {
            let _ = writeln!(log, "[scalr-agent] {reason}");
            return (action, JobOutcome::errored(reason), None);
        }
    };
    let inputs_dir = lock.path().join("inputs");
    // Biased: a task stopped before it got here (a stop right after its acquisition) is not
    // started at all.
    let fetched = tokio::select! {
        biased;
        _ = controls.kill.cancelled() => Err("killed before it started".to_string()),
        _ = controls.cancel.cancelled() => Err("canceled before it started".to_string()),
        _ = controls.terminate.cancelled() => Err("the agent stopped before the task started".to_string()),
        r = fetch_inputs(api, &task, &inputs_dir) => r,
    };
    if let Err(reason) = fetched {
        let _ = writeln!(log, "[scalr-agent] {reason}");
        let mut o = JobOutcome::errored(reason);
        if controls.stopped() {
            o.status = super::executor::FinalStatus::Canceled;
        }
        return (action, o, Some(lock));
    }
    let job = Job {
        task,
        inputs_dir: inputs_dir.clone(),
        log: Box::new(log),
        cancel: controls.cancel.clone(),
        terminate: controls.terminate.clone(),
        kill: controls.kill.clone(),
        steps,
    };
    let outcome = ctx.executor.execute(job).await;
    (action, outcome, Some(lock))
}

/// The task document, strictly parsed. `task` may be the object or a string holding its JSON.
fn parse_task(acquired: &Acquired) -> Result<Task, String> {
    let bytes = match &acquired.task {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        v => serde_json::to_vec(v).expect("a JSON value serializes"),
    };
    if bytes.len() > MAX_TASK_BYTES {
        return Err(format!(
            "the task document is {} bytes, larger than the {MAX_TASK_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let task = Task::parse(&bytes).map_err(|e| format!("the control plane sent an {e}"))?;
    if task.id != acquired.task_id {
        return Err(format!(
            "the task document's id {:?} differs from the task id {:?}",
            task.id, acquired.task_id
        ));
    }
    Ok(task)
}

async fn fetch_inputs(api: &TaskApi, task: &Task, dir: &std::path::Path) -> Result<(), String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut names = vec!["configuration"];
    if let Some(p) = &task.plan_artifacts {
        for (present, name) in [
            (p.plan_file.is_some(), "plan-file"),
            (p.plan_json.is_some(), "plan-json"),
            (p.lock_file.is_some(), "lock-file"),
        ] {
            if present {
                names.push(name);
            }
        }
    }
    for name in names {
        let file = if name == "configuration" {
            "configuration.tar.gz"
        } else {
            name
        };
        api.get_input(name, &dir.join(file))
            .await
            .map_err(|e| format!("cannot download the task's {name}: {e}"))?;
    }
    Ok(())
}

/// Copies the outcome's artifacts into the spool (the executor's files go away).
fn keep_artifacts(spool: &TaskSpool, mut outcome: JobOutcome) -> JobOutcome {
    for (name, path) in std::mem::take(&mut outcome.artifacts) {
        if let Err(e) = spool.store_artifact(&name, &path) {
            tracing::error!(task = %spool.task_id(), artifact = %name, error = %e, "artifact not kept");
            append_error(
                &mut outcome.error,
                format!("artifact {name} not uploaded: {e}"),
            );
        }
    }
    outcome
}

fn spool_dir_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}
