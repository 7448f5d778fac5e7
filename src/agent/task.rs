//! One task's life on this agent: acknowledge, spool, inputs, execute (with cancellation
//! relayed, the log shipped as it grows and step reports sent as steps start and end), then
//! record the final status and deliver it once the step reports are done.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::deliver::{append_error, deliver, ship_log};
use super::executor::{
    Artifact, CONFIGURATION_FILE, Cancel, FinalStatus, Job, JobOutcome, StepEvents,
};
use super::signals::watch_signals;
use super::steps::report_steps;
use crate::control::wire::{Acquired, Finish};
use crate::control::{ControlError, TaskApi};
use crate::spool::TaskSpool;
use crate::task::log::{Masker, TaskLog};
use crate::task::model::Task;
use crate::task::result::CONFIGURATION_INPUT;
use crate::task::sweep::DirLock;

/// Largest task document accepted.
const MAX_TASK_BYTES: usize = 1 << 20;

/// The stop controls of a running task are the runner's own [`Cancel`]: the daemon's stop
/// sequence and the signal watcher cancel the same tokens the steps wait on.
pub type Controls = Cancel;

/// Why a task did not reach the executor. Its text goes, masked, into the task's log and
/// the final report's error.
#[derive(Debug, thiserror::Error)]
enum NotRun {
    #[error("the task document is {size} bytes, larger than the {MAX_TASK_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("the control plane sent an {0}")]
    Invalid(#[from] crate::task::model::TaskError),
    #[error("the task document's id {document:?} differs from the task id {acquired:?}")]
    OtherId { document: String, acquired: String },
    #[error(transparent)]
    TasksDir(#[from] crate::datadir::DataDirError),
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("killed before it started")]
    Killed,
    #[error("canceled before it started")]
    Canceled,
    #[error("the agent stopped before the task started")]
    Stopped,
    #[error("cannot download the task's {name}: {source}")]
    Input {
        name: &'static str,
        source: ControlError,
    },
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
                status: FinalStatus::Errored,
                result: None,
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
        &ctx.stop.token,
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
        let finish = record_outcome(&ctx, &spool, outcome, inputs).await;
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

/// Keeps what is owed in the spool: the executor's copies of the artifacts and the final
/// status (the inputs are then no longer needed; the spool goes once delivered). Copying
/// artifacts, the fsync of the final status and the removal block: on the blocking pool.
async fn record_outcome(
    ctx: &Ctx,
    spool: &TaskSpool,
    outcome: JobOutcome,
    inputs: Option<DirLock>,
) -> Finish {
    let s = spool.clone();
    let keep_inputs = ctx.keep_task_dirs;
    tokio::task::spawn_blocking(move || {
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
    .expect("spooling the outcome does not panic")
}

/// Parses the task, fetches its inputs and runs the executor. Returns the action (for
/// metrics), the outcome and the task's directory of inputs (locked, for the caller to remove).
/// Every line the daemon writes into the task's log goes through the task's masker.
async fn execute(
    ctx: &Ctx,
    api: &TaskApi,
    acquired: &Acquired,
    spool: &TaskSpool,
    controls: &Controls,
    steps: StepEvents,
) -> (String, JobOutcome, Option<DirLock>) {
    let sink = match spool.writer() {
        Ok(w) => w,
        Err(e) => return ("unknown".into(), JobOutcome::errored(e.to_string()), None),
    };
    let task = match parse_task(acquired) {
        Ok(t) => t,
        Err(e) => {
            // Before the task is parsed, its token is the one secret the agent knows for sure.
            let masker = Masker::new([acquired.task_token.expose()]);
            let mut log = TaskLog::new(Arc::new(masker), vec![Box::new(sink)]);
            let reason = log.masker().mask(&e.to_string());
            log.line(&format!("[scalr-agent] {reason}"));
            tracing::warn!(task = %acquired.task_id, %reason, "task refused");
            return ("unknown".into(), JobOutcome::errored(reason), None);
        }
    };
    let mut log = TaskLog::new(Arc::new(Masker::for_task(&task)), vec![Box::new(sink)]);
    let action = task.action.to_string();
    let not_run = |log: &mut TaskLog, e: NotRun| {
        let reason = log.masker().mask(&e.to_string());
        log.line(&format!("[scalr-agent] {reason}"));
        JobOutcome::errored(reason)
    };
    let lock = match create_task_dir(ctx.tasks_dir.clone(), &acquired.task_id).await {
        Ok(l) => l,
        Err(e) => return (action, not_run(&mut log, e), None),
    };
    let inputs_dir = lock.path().join("inputs");
    // Biased: a task stopped before it got here (a stop right after its acquisition) is not
    // started at all.
    let fetched = tokio::select! {
        biased;
        _ = controls.kill.cancelled() => Err(NotRun::Killed),
        _ = controls.graceful.cancelled() => Err(NotRun::Canceled),
        _ = controls.terminate.cancelled() => Err(NotRun::Stopped),
        r = fetch_inputs(api, &task, &inputs_dir) => r,
    };
    if let Err(e) = fetched {
        let mut o = not_run(&mut log, e);
        if controls.is_cancelled() {
            o.status = FinalStatus::Canceled;
        }
        return (action, o, Some(lock));
    }
    let job = Job {
        task,
        inputs_dir,
        log,
        cancel: controls.clone(),
        steps,
    };
    let outcome = ctx.executor.execute(job).await;
    (action, outcome, Some(lock))
}

/// Creates the task's private directory under `tasks_dir`, locked (see `task::sweep`), named
/// by the task-id rule.
async fn create_task_dir(tasks_dir: PathBuf, task_id: &str) -> Result<DirLock, NotRun> {
    let name = crate::task::id::dir_name(task_id);
    tokio::task::spawn_blocking(move || {
        crate::datadir::ensure_dir(&tasks_dir, crate::datadir::TRAVERSE_ONLY)?;
        crate::task::sweep::create_locked(&tasks_dir, &name, crate::datadir::PRIVATE_DIR).map_err(
            |source| NotRun::Create {
                path: tasks_dir.join(&name),
                source,
            },
        )
    })
    .await
    .expect("creating a task directory does not panic")
}

/// The task document, strictly parsed. `task` may be the object or a string holding its JSON.
fn parse_task(acquired: &Acquired) -> Result<Task, NotRun> {
    let bytes = match &acquired.task {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        v => serde_json::to_vec(v).expect("a JSON value serializes"),
    };
    if bytes.len() > MAX_TASK_BYTES {
        return Err(NotRun::TooLarge { size: bytes.len() });
    }
    let task = Task::parse(&bytes)?;
    if task.id != acquired.task_id {
        return Err(NotRun::OtherId {
            document: task.id,
            acquired: acquired.task_id.clone(),
        });
    }
    Ok(task)
}

/// Downloads the configuration and the [`Artifact::INPUTS`] the task names into `dir`.
async fn fetch_inputs(api: &TaskApi, task: &Task, dir: &Path) -> Result<(), NotRun> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| NotRun::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    let mut inputs = vec![(CONFIGURATION_INPUT, CONFIGURATION_FILE)];
    if let Some(p) = &task.plan_artifacts {
        let mut p = p.clone();
        for artifact in Artifact::INPUTS {
            if artifact.input(&mut p).is_some_and(|f| f.is_some()) {
                inputs.push((artifact.name(), artifact.name()));
            }
        }
    }
    for (name, file) in inputs {
        api.get_input(name, &dir.join(file))
            .await
            .map_err(|source| NotRun::Input { name, source })?;
    }
    Ok(())
}

/// Copies the outcome's artifacts into the spool (the executor's files go away).
fn keep_artifacts(spool: &TaskSpool, mut outcome: JobOutcome) -> JobOutcome {
    for (artifact, path) in std::mem::take(&mut outcome.artifacts) {
        let name = artifact.name();
        if let Err(e) = spool.store_artifact(name, &path) {
            tracing::error!(task = %spool.task_id(), artifact = %name, error = %e, "artifact not kept");
            append_error(
                &mut outcome.error,
                format!("artifact {name} not uploaded: {e}"),
            );
        }
    }
    outcome
}
