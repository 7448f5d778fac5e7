//! The daemon behind `scalr-agent run`: it joins the pool, takes tasks into its slots, runs
//! them through an [`Executor`], and reports them without losing anything.
//!
//! [`run`] registers (retrying outages; a rejected pool token, a name conflict or an unknown
//! protocol stop it), delivers whatever a previous process left in the spool (a task that was
//! running then is finished as errored, "agent restarted"), then runs three things until the
//! shutdown token fires: the heartbeat, the acquire loop (a long poll, only while a slot is
//! free) and the tasks (see `task`). Every spawned future lives in one `JoinSet`, so dropping
//! `run` stops everything.
//!
//! On shutdown it stops taking tasks and applies `SCALR_AGENT_WORKER_ON_STOP_ACTION`: drain
//! (wait up to the drain timeout), then terminate (SIGTERM to the tools, the job's `terminate`
//! token), then kill the whole trees after the grace timeout; grace-shutdown starts at the
//! terminate, force-shutdown at the kill. A task stopped this way is reported `canceled`. The
//! control plane's graceful cancel is a different signal (SIGINT, the job's `cancel` token).
//! A task counts as running (stop actions reach it, the stop waits for it) from the moment it
//! is acquired, before its `ack`. Once the tools stopped, one report timeout covers the rest:
//! delivering logs and final statuses, then deregistering (when configured) with what remains
//! of it, at most [`DEREGISTER_LIMIT`], one attempt; so drain + grace + report bounds the
//! whole stop. What is still undelivered stays in the spool for the next start.

mod deliver;
pub mod executor;
pub mod health;
pub mod reaper;
pub mod runner_executor;
mod settings;
mod state;
mod steps;
mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::wire::{AgentStatus, FinalStatus, Finish, Heartbeat, RegisterRequest};
use crate::control::{ControlClient, ControlError, TaskApi};
use crate::http::{HttpClient, HttpError};
use crate::spool::{Spool, SpoolError};

pub use executor::{Executor, Job, JobOutcome};
pub use health::Metrics;
pub use settings::{ControlPlane, Settings, StopAction};

/// The longest the deregistration may take at the end of the stop window.
pub const DEREGISTER_LIMIT: Duration = Duration::from_secs(2);

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("`run` needs SCALR_URL and SCALR_AGENT_TOKEN")]
    NoControlPlane,
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot listen on SCALR_AGENT_HEALTH_ADDR {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What the daemon's parts share.
pub(crate) struct Ctx {
    client: Arc<ControlClient>,
    executor: Arc<dyn Executor>,
    spool: Spool,
    tasks_dir: PathBuf,
    /// `SCALR_AGENT_KEEP_TASK_DIRS`: keep each task's inputs after it ended.
    keep_task_dirs: bool,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<String, task::Controls>>,
    running_count: watch::Sender<usize>,
    /// Fired when the agent starts stopping (a stop signal or a fatal refusal).
    stop: CancellationToken,
    /// How long step reports left when a task ends may take (see `steps`).
    flush_limit: Duration,
}

impl Ctx {
    fn add_running(&self, id: &str, c: task::Controls) {
        let mut r = self.running.lock().unwrap();
        r.insert(id.into(), c);
        self.running_count.send_replace(r.len());
        self.metrics.set_slots_in_use(r.len());
    }

    fn remove_running(&self, id: &str) {
        let mut r = self.running.lock().unwrap();
        r.remove(id);
        self.running_count.send_replace(r.len());
        self.metrics.set_slots_in_use(r.len());
    }

    fn each_running(&self, f: impl Fn(&task::Controls)) {
        self.running.lock().unwrap().values().for_each(f);
    }
}

/// Runs the daemon until `shutdown` fires (or, in single mode, until its one task is
/// reported). Returns an error only for what stops the agent: a rejected pool token, a name
/// conflict, a protocol mismatch, an unusable data directory.
pub async fn run(
    settings: Settings,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let metrics = Arc::new(Metrics::new(settings.concurrency.get()));
    run_with_metrics(settings, executor, shutdown, metrics).await
}

/// [`run`], with metrics the caller keeps (tests and embedders read them); build them with
/// `Metrics::new(concurrency)`.
pub async fn run_with_metrics(
    settings: Settings,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<(), AgentError> {
    let cp = settings
        .control_plane
        .clone()
        .ok_or(AgentError::NoControlPlane)?;
    let slots = settings.concurrency.get();
    let http = HttpClient::new(&settings.http)?;
    let previous = settings
        .state_persistence
        .then(|| state::load(&settings.data_dir))
        .flatten()
        .filter(|s| s.name == settings.name);
    let client = Arc::new(ControlClient::new(
        http,
        &cp.url,
        cp.token.clone(),
        registration(&settings, executor.as_ref(), previous.map(|s| s.agent_id)),
    ));
    let spool = Spool::open(settings.data_dir.join("spool"), settings.spool_limit_bytes)?;
    let (running_count, mut running_rx) = watch::channel(0usize);
    let stop = shutdown.child_token();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        executor,
        spool: spool.clone(),
        tasks_dir: settings.data_dir.join("tasks"),
        keep_task_dirs: settings.keep_task_dirs,
        metrics: metrics.clone(),
        running: Mutex::new(HashMap::new()),
        running_count,
        stop: stop.clone(),
        flush_limit: settings
            .step_flush_limit
            .unwrap_or_else(|| steps::flush_limit(settings.report_timeout)),
    });
    let mut work = JoinSet::new();
    let background = CancellationToken::new();
    if let Some(stats) = ctx.executor.software_cache_stats() {
        metrics.track_software_cache(stats);
    }
    if let Some(stats) = ctx.executor.provider_cache_stats() {
        metrics.track_provider_cache(stats);
    }
    if reaper::is_pid1() {
        work.spawn(reaper::run(background.clone()));
    }
    if let Some(addr) = settings.health_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Health { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| AgentError::Health { addr, source })?;
        metrics.set_health_addr(bound);
        tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
        work.spawn(health::serve(listener, metrics.clone(), background.clone()));
    }
    recover(&ctx, &mut work)?;

    let session = tokio::select! {
        s = register(&client) => s?,
        _ = shutdown.cancelled() => {
            let deadline = Instant::now() + settings.report_timeout;
            return finish_delivery(&mut work, &background, deadline).await;
        }
    };
    metrics.set_registered(true);
    if settings.state_persistence {
        let s = state::State {
            agent_id: session.agent_id.clone(),
            name: settings.name.clone(),
        };
        if let Err(e) = state::save(&settings.data_dir, &s) {
            tracing::warn!(error = %e, "cannot write the state file");
        }
    }
    tracing::info!(agent_id = %session.agent_id, agent_name = %settings.name, slots, single = settings.single, "ready to receive tasks");

    let fatal: Arc<Mutex<Option<ControlError>>> = Arc::default();
    let draining = CancellationToken::new();
    work.spawn(heartbeat(
        ctx.clone(),
        slots,
        draining.clone(),
        fatal.clone(),
        stop.clone(),
        background.clone(),
    ));

    // The acquire loop, in this future: it owns the task set.
    let sem = Arc::new(Semaphore::new(slots as usize));
    let mut tasks = JoinSet::new();
    let single_deadline = tokio::time::Instant::now() + settings.single_wait;
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = sem.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let acquired = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(single_deadline), if settings.single => {
                tracing::warn!(waited = ?settings.single_wait, "single mode: no task arrived; exiting");
                break;
            }
            a = client.acquire(sem.available_permits() as u32 + 1) => a,
        };
        match acquired {
            Ok(Some(a)) => {
                tracing::info!(task = %a.task_id, "task acquired");
                // Registered before it is spawned: a stop from now on reaches it.
                let controls = task::Controls::default();
                ctx.add_running(&a.task_id, controls.clone());
                tasks.spawn(task::run(ctx.clone(), a, permit, controls));
                if settings.single {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) if e.is_fatal() => {
                *fatal.lock().unwrap() = Some(e);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "task acquisition failed; trying again");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    draining.cancel();
    metrics.set_draining();

    // Stop the tasks per the stop action (single mode just lets its task finish).
    let all_done = |rx: &mut watch::Receiver<usize>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|n| *n == 0).await;
        }
    };
    let stopping = shutdown.is_cancelled() || fatal.lock().unwrap().is_some();
    let deadline = if stopping {
        // A fatal acquire answer stops the agent without the signal: tell the tasks too.
        stop.cancel();
        let action = if fatal.lock().unwrap().is_some() {
            StopAction::GraceShutdown
        } else {
            settings.on_stop
        };
        tracing::info!(?action, running = *running_rx.borrow(), "stopping");
        let mut phase = action;
        if phase == StopAction::Drain
            && tokio::time::timeout(settings.drain_timeout, all_done(&mut running_rx))
                .await
                .is_err()
        {
            tracing::warn!("drain timeout: cancelling the running tasks");
            phase = StopAction::GraceShutdown;
        }
        if phase == StopAction::GraceShutdown {
            ctx.each_running(|c| c.terminate.cancel());
            if tokio::time::timeout(settings.grace_timeout, all_done(&mut running_rx))
                .await
                .is_err()
            {
                tracing::warn!("grace timeout: killing the running tasks");
                phase = StopAction::ForceShutdown;
            }
        }
        if phase == StopAction::ForceShutdown {
            // Kill first: a step woken by either token then sees the kill and sends no
            // SIGTERM before the SIGKILL.
            ctx.each_running(|c| {
                c.kill.cancel();
                c.terminate.cancel();
            });
        }
        // The tools stopped (or are being killed: executors return soon after a kill). One
        // report timeout from here covers the reports and the deregistration.
        let deadline = Instant::now() + settings.report_timeout;
        if tokio::time::timeout_at(deadline, join_all(&mut tasks))
            .await
            .is_err()
        {
            tracing::warn!(
                "report timeout: undelivered reports stay in the spool for the next start"
            );
        }
        deadline
    } else {
        // Single mode: the task runs to its end and is delivered; a stop signal meanwhile
        // is a grace-shutdown.
        let stopped = tokio::select! {
            _ = join_all(&mut tasks) => false,
            _ = shutdown.cancelled() => true,
        };
        if stopped {
            ctx.each_running(|c| c.terminate.cancel());
            if tokio::time::timeout(settings.grace_timeout, join_all(&mut tasks))
                .await
                .is_err()
            {
                tracing::warn!("grace timeout: killing the running task");
                ctx.each_running(|c| c.kill.cancel());
                let deadline = Instant::now() + settings.report_timeout;
                let _ = tokio::time::timeout_at(deadline, join_all(&mut tasks)).await;
                deadline
            } else {
                Instant::now() + settings.report_timeout
            }
        } else {
            Instant::now() + settings.report_timeout
        }
    };
    tasks.shutdown().await;
    let result = finish_delivery(&mut work, &background, deadline).await;
    if settings.disconnect_on_stop || settings.single {
        deregister(&client, deadline, &settings.data_dir).await;
    }
    metrics.set_registered(false);
    match fatal.lock().unwrap().take() {
        Some(e) => Err(e.into()),
        None => result,
    }
}

/// Waits for every task, delivery included.
async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Gives recovered deliveries until `deadline`, then stops the background work.
async fn finish_delivery(
    work: &mut JoinSet<()>,
    background: &CancellationToken,
    deadline: Instant,
) -> Result<(), AgentError> {
    background.cancel();
    let _ = tokio::time::timeout_at(deadline, async {
        while work.join_next().await.is_some() {}
    })
    .await;
    work.shutdown().await;
    Ok(())
}

/// Deregisters with what remains until `deadline` (at most [`DEREGISTER_LIMIT`], one
/// attempt); with nothing left, the server notices the silence instead.
async fn deregister(client: &ControlClient, deadline: Instant, data_dir: &std::path::Path) {
    let limit = deadline
        .saturating_duration_since(Instant::now())
        .min(DEREGISTER_LIMIT);
    if limit < Duration::from_millis(50) {
        tracing::warn!("no time left in the report timeout to deregister");
        return;
    }
    match tokio::time::timeout(limit, client.deregister(limit)).await {
        Ok(Ok(())) => {
            tracing::info!("deregistered");
            state::remove(data_dir);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "deregistration failed"),
        Err(_) => tracing::warn!(?limit, "deregistration timed out"),
    }
}

/// Registers, retrying outages with backoff; fatal refusals end the agent.
async fn register(client: &ControlClient) -> Result<crate::control::Session, ControlError> {
    let mut pause = Duration::from_millis(500);
    loop {
        match client.register().await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "registration failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Finds what a previous process left in the spool and delivers it in the background: a
/// task without a final status was running when that process died.
fn recover(ctx: &Arc<Ctx>, work: &mut JoinSet<()>) -> Result<(), AgentError> {
    for spooled in ctx.spool.pending()? {
        if spooled.final_report()?.is_none() {
            tracing::warn!(task = %spooled.task_id(), "the agent restarted while this task ran; reporting it errored");
            if let Ok(mut w) = spooled.writer() {
                use std::io::Write;
                let _ = writeln!(
                    w,
                    "\n[scalr-agent] the agent restarted while this task was running"
                );
            }
            spooled.write_final(&Finish {
                status: FinalStatus::Errored,
                result: serde_json::Value::Null,
                error: Some("agent restarted".into()),
                log_size: spooled.log_len(),
            })?;
        }
        let api = TaskApi::new(
            ctx.client.clone(),
            spooled.task_id().into(),
            spooled.token().clone(),
        );
        let metrics = ctx.metrics.clone();
        work.spawn(async move { deliver::deliver(&api, &spooled, &metrics).await });
    }
    Ok(())
}

/// Beats every interval until stopped; a fatal answer stops the agent.
async fn heartbeat(
    ctx: Arc<Ctx>,
    slots: u32,
    draining: CancellationToken,
    fatal: Arc<Mutex<Option<ControlError>>>,
    stop: CancellationToken,
    background: CancellationToken,
) {
    loop {
        let interval = ctx
            .client
            .session()
            .map_or(Duration::from_secs(10), |s| s.heartbeat_interval);
        tokio::select! {
            _ = background.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let running: Vec<String> = ctx.running.lock().unwrap().keys().cloned().collect();
        let beat = Heartbeat {
            status: if draining.is_cancelled() {
                AgentStatus::Draining
            } else if running.is_empty() {
                AgentStatus::Idle
            } else {
                AgentStatus::Busy
            },
            free_slots: slots.saturating_sub(running.len() as u32),
            running,
        };
        let result = tokio::select! {
            _ = background.cancelled() => return,
            r = ctx.client.heartbeat(&beat) => r,
        };
        match result {
            Ok(()) => ctx.metrics.heartbeat_ok(),
            Err(e) if e.is_fatal() => {
                tracing::error!(error = %e, "heartbeat refused; stopping");
                ctx.metrics.heartbeat_failure();
                *fatal.lock().unwrap() = Some(e);
                stop.cancel();
            }
            Err(e) => {
                ctx.metrics.heartbeat_failure();
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}

/// What the agent says about itself at registration.
fn registration(
    settings: &Settings,
    executor: &dyn Executor,
    previous: Option<String>,
) -> RegisterRequest {
    let runtime = crate::platform::detect(&settings.runtime).platform;
    let runtime = serde_json::to_value(runtime)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "vm".into());
    RegisterRequest {
        name: settings.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        os: std::env::consts::OS.into(),
        cpu_platform: crate::software::catalog::Platform::host()
            .map_or("unsupported", |p| p.name())
            .into(),
        driver: "local".into(),
        runtime,
        concurrency: settings.concurrency.get(),
        isolation: executor.isolation(),
        previous_agent_id: previous,
    }
}
