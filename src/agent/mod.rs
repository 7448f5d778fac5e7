//! The daemon behind `scalr-agent run`: it joins the pool, takes tasks into its slots, runs
//! them through an [`Executor`], and reports them without losing anything.
//!
//! [`run`] registers (retrying outages; a rejected pool token, a name conflict or an unknown
//! protocol stop it), delivers whatever a previous process left in the spool (a task that was
//! running then is finished as errored, "agent restarted"), then runs three things until the
//! shutdown token fires: the heartbeat, the acquire loop (a long poll, only while a slot is
//! free) and the tasks (see `task`). Every spawned future lives in one `JoinSet` (the tasks'
//! in `slots`, the rest in `Background`), so dropping `run` stops everything.
//!
//! The parts, in the order [`run`] uses them: `registration` and `heartbeat`; `acquire` (the
//! loop) fills `slots`; `task` runs one task (`signals` relays its cancel signals, `steps`
//! reports its steps, `deliver` ships its spool); `stop` holds why the agent stops and the
//! stop sequence, written once.
//!
//! On shutdown it stops taking tasks and applies `SCALR_AGENT_WORKER_ON_STOP_ACTION`: drain
//! (wait up to the drain timeout), then terminate (SIGTERM to the tools, the job's
//! `cancel.terminate` token), then kill the whole trees after the grace timeout; grace-shutdown
//! starts at the terminate, force-shutdown at the kill. A task stopped this way is reported
//! `canceled`. The control plane's graceful cancel is a different signal (SIGINT, the job's
//! `cancel.graceful` token). A task counts as running (stop actions reach it, the stop waits
//! for it) from the moment it is acquired, before its `ack`. Once the tools stopped, one
//! report timeout covers the rest: delivering logs and final statuses, then deregistering
//! (when configured) with what remains of it, at most [`DEREGISTER_LIMIT`], one attempt; so
//! drain + grace + report bounds the whole stop. What is still undelivered stays in the spool
//! for the next start.

mod acquire;
mod deliver;
pub mod executor;
pub mod health;
mod heartbeat;
mod lease;
pub mod reaper;
mod registration;
pub mod runner_executor;
mod settings;
mod signals;
mod slots;
mod state;
mod steps;
mod stop;
mod task;
pub mod uptime;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::wire::{FinalStatus, Finish};
use crate::control::{ControlClient, ControlError, TaskApi};
use crate::http::{HttpClient, HttpError};
use crate::spool::{Spool, SpoolError};
use crate::task::log::{Masker, TaskLog};

use acquire::acquire;
pub use executor::{Executor, Job, JobOutcome};
pub use health::Metrics;
use heartbeat::heartbeat;
use registration::{register, registration};
pub use settings::{ControlPlane, Settings, StopAction};
use slots::Slots;
use stop::Stop;

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
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot listen on SCALR_AGENT_HEALTH_ADDR {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The stop sequence's timeouts (see `stop`).
pub(crate) struct Timeouts {
    drain: Duration,
    grace: Duration,
    /// Covers the reports once the tools stopped, and the deregistration.
    report: Duration,
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
    /// Why and when the agent stops (a stop signal or a fatal refusal).
    stop: Stop,
    timeouts: Timeouts,
    /// How long step reports left when a task ends may take (see `steps`).
    flush_limit: Duration,
    /// The tasks this agent holds, and when their leases were last renewed.
    leases: lease::Leases,
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

    fn running_now(&self) -> usize {
        *self.running_count.borrow()
    }

    /// Resolves once no task runs (each executor returned, or the task was not run).
    async fn none_running(&self) {
        let _ = self.running_count.subscribe().wait_for(|n| *n == 0).await;
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
/// `Metrics::new(concurrency)`. In order: the shared parts, the background work (health,
/// reaper, recovered deliveries), registration, the heartbeat, acquisition into the slots
/// until the stop, the stop sequence, the last deliveries and the deregistration.
pub async fn run_with_metrics(
    settings: Settings,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<(), AgentError> {
    let previous = previous_identity(&settings).await?;
    let ctx = Arc::new(shared(&settings, executor, &shutdown, metrics, previous)?);
    let mut background = Background::start(&ctx, settings.health_addr).await?;
    let session = tokio::select! {
        s = register(&ctx.client) => s?,
        _ = shutdown.cancelled() => {
            background.finish(Instant::now() + settings.report_timeout).await;
            return Ok(());
        }
    };
    ready(&ctx, &settings, &session);
    // After the registration: with v1.1 the spooled tasks' calls need the session that
    // reclaimed them.
    recover(&ctx, &mut background.set)?;
    let slots_count = settings.concurrency.get();
    let draining = CancellationToken::new();
    background.set.spawn(heartbeat(
        ctx.clone(),
        slots_count,
        draining.clone(),
        ctx.stop.fatal.clone(),
        ctx.stop.token.clone(),
        background.token.clone(),
    ));
    background
        .set
        .spawn(lease::fence(ctx.clone(), background.token.clone()));

    let mut slots = Slots::new(slots_count);
    acquire(
        &ctx,
        &mut slots,
        settings.single.then_some(settings.single_wait),
    )
    .await;
    draining.cancel();
    ctx.metrics.set_draining();
    let deadline = stop::wind_down(&ctx, &mut slots, &shutdown, settings.on_stop).await;
    slots.shutdown().await;
    background.finish(deadline).await;
    if settings.disconnect_on_stop || settings.single {
        deregister(&ctx.client, deadline, &settings.data_dir).await;
    }
    ctx.metrics.set_registered(false);
    match ctx.stop.take_fatal() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The identity a previous process saved under this agent's name (none when state
/// persistence is off); a state file that cannot be trusted stops the agent.
async fn previous_identity(settings: &Settings) -> Result<Option<state::State>, AgentError> {
    if !settings.state_persistence {
        return Ok(None);
    }
    let dir = settings.data_dir.clone();
    let loaded = tokio::task::spawn_blocking(move || state::load(&dir))
        .await
        .expect("reading the state file does not panic")?;
    Ok(loaded.filter(|s| s.name == settings.name))
}

/// The parts the daemon's pieces share: the control-plane client (registering with the id and
/// reclaim secret a previous process saved, saving each new one), the spool, the running
/// tasks, the stop.
fn shared(
    settings: &Settings,
    executor: Arc<dyn Executor>,
    shutdown: &CancellationToken,
    metrics: Arc<Metrics>,
    previous: Option<state::State>,
) -> Result<Ctx, AgentError> {
    let cp = settings
        .control_plane
        .clone()
        .ok_or(AgentError::NoControlPlane)?;
    let http = HttpClient::new(&settings.http)?;
    let mut client = ControlClient::new(
        http,
        &cp.url,
        cp.token.clone(),
        registration(settings, executor.as_ref()),
    );
    if let Some(p) = previous {
        client.resume(p.agent_id, p.reclaim_secret);
    }
    if settings.state_persistence {
        client = client.with_store(state::StateFile::new(&settings.data_dir, &settings.name));
    }
    let client = Arc::new(client);
    let spool = Spool::open(settings.data_dir.join("spool"), settings.spool_limit_bytes)?;
    if let Some(stats) = executor.software_cache_stats() {
        metrics.track_software_cache(stats);
    }
    if let Some(stats) = executor.provider_cache_stats() {
        metrics.track_provider_cache(stats);
    }
    Ok(Ctx {
        client,
        executor,
        spool,
        tasks_dir: settings.data_dir.join("tasks"),
        keep_task_dirs: settings.keep_task_dirs,
        metrics,
        running: Mutex::new(HashMap::new()),
        running_count: watch::channel(0usize).0,
        stop: Stop::new(shutdown),
        timeouts: Timeouts {
            drain: settings.drain_timeout,
            grace: settings.grace_timeout,
            report: settings.report_timeout,
        },
        flush_limit: settings
            .step_flush_limit
            .unwrap_or_else(|| steps::flush_limit(settings.report_timeout)),
        leases: lease::Leases::default(),
    })
}

/// Registered: says so (metrics, log). The client already saved the agent's id and reclaim
/// secret for the next start.
fn ready(ctx: &Ctx, settings: &Settings, session: &crate::control::Session) {
    ctx.metrics.set_registered(true);
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).ok();
    let (startup_ms, process_age_ms) = (
        uptime::since_start().and_then(ms),
        uptime::age().and_then(ms),
    );
    tracing::info!(agent_id = %session.agent_id, agent_name = %settings.name, slots = settings.concurrency.get(), single = settings.single, startup_ms, process_age_ms, "ready to receive tasks");
}

/// What runs beside the tasks until the very end: the health server, the reaper (as PID 1),
/// the heartbeat and the deliveries recovered from the spool. One set owns them all.
struct Background {
    set: JoinSet<()>,
    /// Stops them (at the end of the stop window).
    token: CancellationToken,
}

impl Background {
    /// Starts the reaper (as PID 1) and the health server (when configured).
    async fn start(
        ctx: &Ctx,
        health_addr: Option<std::net::SocketAddr>,
    ) -> Result<Background, AgentError> {
        let mut b = Background {
            set: JoinSet::new(),
            token: CancellationToken::new(),
        };
        if reaper::is_pid1() {
            b.set.spawn(reaper::run(b.token.clone()));
        }
        if let Some(addr) = health_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Health { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| AgentError::Health { addr, source })?;
            ctx.metrics.set_health_addr(bound);
            tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
            let serve = health::serve(listener, ctx.metrics.clone(), b.token.clone());
            b.set.spawn(serve);
        }
        Ok(b)
    }

    /// Gives recovered deliveries until `deadline`, then stops everything in the set.
    async fn finish(mut self, deadline: Instant) {
        self.token.cancel();
        let _ = tokio::time::timeout_at(deadline, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        self.set.shutdown().await;
    }
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

/// Finds what a previous process left in the spool and delivers it in the background: a
/// task without a final status was running when that process died.
fn recover(ctx: &Arc<Ctx>, work: &mut JoinSet<()>) -> Result<(), AgentError> {
    for spooled in ctx.spool.pending()? {
        if spooled.final_report()?.is_none() {
            tracing::warn!(task = %spooled.task_id(), "the agent restarted while this task ran; reporting it errored");
            if let Ok(w) = spooled.writer() {
                // Through a masker like every line of a task's log (the task's token is the
                // one secret known here; the line holds none).
                let masker = Masker::new([spooled.token().expose()]);
                let mut log = TaskLog::new(Arc::new(masker), vec![Box::new(w)]);
                log.line("\n[scalr-agent] the agent restarted while this task was running");
            }
            spooled.write_final(&Finish {
                status: FinalStatus::Errored,
                result: None,
                error: Some("agent restarted".into()),
                log_size: spooled.log_len(),
                log_sha256: spooled.log_sha256().ok(),
            })?;
        }
        let lost = ctx.leases.hold(spooled.task_id());
        let api = TaskApi::new(
            ctx.client.clone(),
            spooled.task_id().into(),
            spooled.token().clone(),
        )
        .gone_with(lost);
        let ctx = ctx.clone();
        work.spawn(async move {
            deliver::deliver(&api, &spooled, &ctx.metrics, None).await;
            ctx.leases.release(spooled.task_id());
        });
    }
    Ok(())
}
