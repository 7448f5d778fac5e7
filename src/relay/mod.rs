//! `scalr-agent relay`: the VCS agent mode. Relays a control plane's requests to a private
//! VCS, connecting outbound only, refusing everything its allowlist does not name, streaming
//! bodies of any size in flat memory, and logging one audit line per request.
//!
//! - `settings`: what the relay is configured with (filled by `config`).
//! - `target`: path checks and the target URL (the relay, never the server, builds it).
//! - `rules` and `presets`: the default-deny allowlist and each vendor's built-in rules.
//! - `gateway`: the relay protocol's client (`docs/protocol.md`, "Relay protocol v1").
//! - `proxy`: one request end to end; `audit`: its log line; `metrics`: counters for
//!   `/metrics` and `/readyz` through the shared health listener.
//!
//! [`run`] owns every task it starts (a `JoinSet`): `parallelism` workers, each taking one
//! request at a time by long poll, and a cancellation poller. On `shutdown` the workers stop
//! taking requests, in-flight ones get `stop_timeout` to finish, then are cancelled and
//! reported failed; the relay then deregisters, only when every request it received ended and
//! was reported (the server hands the unreported ones of a deregistered relay out again).

pub mod audit;
pub mod flow;
pub mod gateway;
pub mod metrics;
pub mod presets;
pub mod proxy;
pub mod rules;
pub mod settings;
pub mod target;
pub mod upload;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use settings::{Settings, Vendor};

use crate::http::{HttpClient, HttpError, redact};
use crate::retry::{Attempt, Policy};
use gateway::{Gateway, GatewayError, Hello};
use metrics::RelayMetrics;
use rules::{Rule, RuleError, RuleSet};

/// After the stop window, how long cancelled requests get to end and be reported `failed`.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Why the relay could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("health listener on {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The effective rules: the operator's file (read here, on a blocking thread; an empty or
/// unreadable file is an error), then the vendor's preset.
pub async fn rule_set(settings: &Settings) -> Result<RuleSet, RelayError> {
    let mut rules: Vec<Rule> = match settings.rules_file.clone() {
        Some(path) => tokio::task::spawn_blocking(move || rules::read_file(&path))
            .await
            .expect("reading the rules file does not panic")?,
        None => Vec::new(),
    };
    let additions = rules.len();
    // GitLab names a project in API paths as one `%2F`-encoded segment: the operator's `p1`
    // may carry it like the preset's.
    for r in &mut rules {
        r.encoded_project = settings.vendor == Vendor::Gitlab;
    }
    rules.extend(presets::rules(settings.vendor)?);
    let set = RuleSet {
        rules,
        projects: settings.allowed_projects.clone(),
        preset: format!("{}/{}", settings.vendor.name(), presets::PRESET_VERSION),
    };
    tracing::info!(
        vendor = settings.vendor.name(),
        preset = %set.preset,
        additions,
        rules = set.rules.len(),
        projects = settings.allowed_projects.as_ref().map_or("(all)", |r| r.as_str()),
        vcs = %redact(&settings.vcs_url),
        "relay rules in effect (default deny)"
    );
    Ok(set)
}

/// The retry verdict for a failed call to the control plane: a refused token or protocol ends
/// the relay; anything else (an outage, a restart) is tried again.
fn verdict(e: GatewayError) -> Attempt<GatewayError> {
    if e.is_fatal() {
        Attempt::Fatal(e)
    } else {
        Attempt::retry(e)
    }
}

/// Runs the relay until `shutdown` (then stops as the module docs say) or a fatal error.
#[expect(
    clippy::too_many_lines,
    reason = "the relay's start and stop sequence, in order"
)]
pub async fn run(
    settings: Settings,
    metrics: Arc<RelayMetrics>,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let rules = Arc::new(rule_set(&settings).await?);
    let hello = Hello {
        name: settings.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        vendor: settings.vendor.name(),
        parallelism: settings.parallelism.get(),
        preset: rules.preset.clone(),
        rules: rules.rules.len(),
        metadata: settings.metadata.clone(),
    };
    let gateway = Arc::new(Gateway::new(
        HttpClient::new(&settings.http)?,
        HttpClient::streaming(&settings.http)?,
        &settings.url,
        settings.token.clone(),
        hello,
    ));
    let background = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if let Some(addr) = settings.health_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RelayError::Health { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| RelayError::Health { addr, source })?;
        metrics.set_health_addr(bound);
        tracing::info!(addr = %bound, "health listener started");
        tasks.spawn(crate::agent::health::serve(
            listener,
            metrics.clone(),
            background.clone(),
        ));
    }
    if !connect(&gateway, &metrics, &settings, &shutdown).await? {
        background.cancel();
        return Ok(());
    }
    let ctx = Arc::new(proxy::Ctx {
        gateway: gateway.clone(),
        upstream: HttpClient::streaming(&settings.http)?,
        rules,
        base: settings.vcs_url.clone(),
        request_timeout: settings.request_timeout,
        idle_timeout: settings.idle_timeout,
        max_body_bytes: settings.max_body_bytes,
        metrics: metrics.clone(),
        debug: settings.debug,
        unreported: AtomicUsize::new(0),
    });
    let in_flight: InFlight = Arc::default();
    let hard_stop = CancellationToken::new();
    tasks.spawn(cancellations(
        gateway.clone(),
        in_flight.clone(),
        background.clone(),
    ));
    let mut workers = JoinSet::new();
    for _ in 0..settings.parallelism.get() {
        workers.spawn(worker(
            ctx.clone(),
            in_flight.clone(),
            settings.http.initial_backoff,
            shutdown.clone(),
            hard_stop.clone(),
        ));
    }
    let first_error = tokio::select! {
        e = first_fatal(&mut workers) => e,
        _ = shutdown.cancelled() => None,
    };
    metrics.set_stopping();
    shutdown.cancel();
    let n = metrics.in_flight();
    if n > 0 {
        tracing::info!(in_flight = n, window = ?settings.stop_timeout, "stopping: finishing in-flight requests");
    }
    let drained = tokio::time::timeout(settings.stop_timeout, drain(&mut workers)).await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = metrics.in_flight(),
            "stop window over: cancelling in-flight requests"
        );
        hard_stop.cancel();
    }
    let ended = drained.is_ok()
        || tokio::time::timeout(CANCEL_GRACE, drain(&mut workers))
            .await
            .is_ok();
    background.cancel();
    // Deregistering tells the server that every request this session acquired and did not
    // report never reached the relay, so it may hand them out again (docs/protocol.md,
    // "Deregistration and stop"): only true when every worker ended and every report went.
    let unreported = ctx.unreported.load(Ordering::Relaxed);
    if !ended || unreported > 0 {
        tracing::warn!(
            in_flight = metrics.in_flight(),
            unreported,
            "requests did not end after cancelling, or their end could not be reported; \
             leaving without deregistering, so the control plane ends them as a lost relay's"
        );
    } else if let Err(e) = gateway.deregister().await {
        tracing::warn!(error = %e, "cannot deregister the relay");
    }
    metrics.set_registered(false);
    tasks.shutdown().await;
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

type InFlight = Arc<Mutex<HashMap<String, CancellationToken>>>;

/// Registers, retrying outages with backoff (`retry::Policy`); `false` when stopped first.
async fn connect(
    gateway: &Gateway,
    metrics: &RelayMetrics,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<bool, GatewayError> {
    let policy = Policy::unbounded(settings.http.initial_backoff);
    let register = policy.run(
        |_| async { gateway.register(None).await.map_err(verdict) },
        |e, attempt, delay| {
            tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "cannot register the relay; retrying");
        },
    );
    tokio::select! {
        r = register => r?,
        () = shutdown.cancelled() => return Ok(false),
    }
    metrics.set_registered(true);
    tracing::info!(
        relay_id = gateway.relay_id().unwrap_or_default(),
        "relay registered; ready to relay requests"
    );
    Ok(true)
}

async fn first_fatal(workers: &mut JoinSet<Result<(), GatewayError>>) -> Option<GatewayError> {
    while let Some(r) = workers.join_next().await {
        if let Ok(Err(e)) = r {
            return Some(e);
        }
    }
    std::future::pending().await
}

async fn drain(workers: &mut JoinSet<Result<(), GatewayError>>) {
    while workers.join_next().await.is_some() {}
}

/// One slot: long-polls for a request, relays it, again, until stopped. Outages of the
/// control plane are retried with jittered backoff (`retry::Policy`, from its first wait again
/// after each answer); only fatal errors end it early.
async fn worker(
    ctx: Arc<proxy::Ctx>,
    in_flight: InFlight,
    initial: Duration,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<(), GatewayError> {
    let policy = Policy::unbounded(initial);
    loop {
        let acquire = policy.run(
            |_| async { ctx.gateway.acquire().await.map_err(verdict) },
            |e, _, delay| {
                ctx.metrics.set_registered(false);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach the control plane; retrying");
            },
        );
        // A request that arrived as the stop began is taken (it gets the stop window); a poll
        // still held is dropped: the server keeps what it did not hand out, and hands out
        // again what it handed out to a poll that never read it once the relay deregisters.
        let got = tokio::select! {
            biased;
            r = acquire => r?,
            () = shutdown.cancelled() => return Ok(()),
        };
        ctx.metrics.set_registered(true);
        if let Some(inc) = got {
            let cancel = hard_stop.child_token();
            in_flight
                .lock()
                .unwrap()
                .insert(inc.request_id.clone(), cancel.clone());
            let id = inc.request_id.clone();
            proxy::relay(&ctx, inc, cancel).await;
            in_flight.lock().unwrap().remove(&id);
        }
    }
}

/// Long-polls for the server's cancellations and cancels those requests; failed polls are
/// retried with backoff (`retry::Policy`) until `stop`.
async fn cancellations(gateway: Arc<Gateway>, in_flight: InFlight, stop: CancellationToken) {
    let policy = Policy::unbounded(Duration::from_millis(500));
    loop {
        let poll = policy.run(
            |_| async { gateway.cancellations().await.map_err(Attempt::retry) },
            |e, _, _| tracing::debug!(error = %e, "cancellation poll failed"),
        );
        let ids = tokio::select! {
            () = stop.cancelled() => return,
            r = poll => r.unwrap_or_default(),
        };
        for id in ids {
            if let Some(t) = in_flight.lock().unwrap().get(&id) {
                tracing::info!(request_id = %id, "the server cancelled a request");
                t.cancel();
            }
        }
    }
}
