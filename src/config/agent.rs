//! Fills the daemon's own part of `agent::Settings` (`scalr-agent run`): slots, single mode,
//! shutdown, state, health listener and spool bound. `parse` fills the shared parts (control
//! plane, name, data directory, HTTP, runtime hints).
//!
//! Shutdown defaults fit the common stop windows: drain 60 s + grace 30 s + report 10 s =
//! 100 s, inside Fargate's 120 s `stopTimeout`. On Cloud Run (`K_SERVICE` or `CLOUD_RUN_JOB`
//! set: services and jobs), whose window is 10 s, the defaults become drain 0 s + grace 4 s + report 4 s. Explicit values win.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::parse::{Parser, Raw, nonempty};
use crate::agent::{Settings, StopAction};

/// Fills the daemon's settings, variable by variable, in the order their problems are listed.
pub(super) fn parse(p: &mut Parser<'_>, raw: &Raw) -> Settings {
    let d = Settings::default();
    let concurrency = p
        .number(
            "SCALR_AGENT_CONCURRENCY",
            &raw.scalr_agent_concurrency,
            1,
            16,
        )
        .and_then(|n| NonZeroU32::new(n as u32))
        .unwrap_or(d.concurrency);
    let single = p
        .pick_bool(
            ("SCALR_AGENT_SINGLE", raw.scalr_agent_single.clone()),
            ("SCALR_SINGLE", raw.scalr_single.clone()),
        )
        .unwrap_or(false);
    check_driver(p, raw);
    let on_stop = on_stop(p, raw).unwrap_or(d.on_stop);
    let stop = stop_timeouts(p, raw, &d);
    let disconnect_on_stop = p
        .bool_of(
            "SCALR_AGENT_DISCONNECT_ON_STOP",
            &raw.scalr_agent_disconnect_on_stop,
        )
        .unwrap_or(d.disconnect_on_stop);
    let state_persistence = p
        .bool_of(
            "SCALR_AGENT_STATE_PERSISTENCE_ENABLED",
            &raw.scalr_agent_state_persistence_enabled,
        )
        .unwrap_or(d.state_persistence);
    let health_addr = health_addr(p, raw).or_else(|| cloud_run_port(p, raw));
    let spool_mb = p
        .number(
            "SCALR_AGENT_SPOOL_LIMIT_MB",
            &raw.scalr_agent_spool_limit_mb,
            1,
            1 << 20,
        )
        .unwrap_or(d.spool_limit_bytes >> 20);
    Settings {
        concurrency,
        single,
        single_wait: stop.single_wait,
        on_stop,
        drain_timeout: stop.drain,
        grace_timeout: stop.grace,
        report_timeout: stop.report,
        disconnect_on_stop,
        state_persistence,
        health_addr,
        spool_limit_bytes: spool_mb << 20,
        ..d
    }
}

/// `SCALR_AGENT_DRIVER` (legacy `SCALR_DRIVER`): accepted only as `local`, the one driver.
fn check_driver(p: &mut Parser<'_>, raw: &Raw) {
    if let Some((name, v)) = [
        ("SCALR_AGENT_DRIVER", raw.scalr_agent_driver.clone()),
        ("SCALR_DRIVER", raw.scalr_driver.clone()),
    ]
    .into_iter()
    .find_map(|(n, v)| nonempty(v).map(|v| (n, v)))
        && !v.trim().eq_ignore_ascii_case("local")
    {
        p.bad(name, &v, "`local` (the only driver of this agent)");
    }
}

/// `SCALR_AGENT_WORKER_ON_STOP_ACTION`; `None` when unset or bad (then reported).
fn on_stop(p: &mut Parser<'_>, raw: &Raw) -> Option<StopAction> {
    let v = nonempty(raw.scalr_agent_worker_on_stop_action.clone())?;
    match v.trim().to_ascii_lowercase().as_str() {
        "drain" => Some(StopAction::Drain),
        "grace-shutdown" => Some(StopAction::GraceShutdown),
        "force-shutdown" => Some(StopAction::ForceShutdown),
        _ => {
            p.bad(
                "SCALR_AGENT_WORKER_ON_STOP_ACTION",
                &v,
                "`drain`, `grace-shutdown` or `force-shutdown`",
            );
            None
        }
    }
}

/// The waits of single mode and of the stop sequence.
struct StopTimeouts {
    single_wait: Duration,
    drain: Duration,
    grace: Duration,
    report: Duration,
}

/// Cloud Run services and jobs share the 10 s window between SIGTERM and SIGKILL, which the
/// agent's and the relay's stop defaults fit in.
pub(super) fn on_cloud_run(raw: &Raw) -> bool {
    nonempty(raw.k_service.clone()).is_some() || nonempty(raw.cloud_run_job.clone()).is_some()
}

/// The stop's timeouts: explicit values, else the platform's defaults (see the module's
/// documentation for Cloud Run's).
fn stop_timeouts(p: &mut Parser<'_>, raw: &Raw, d: &Settings) -> StopTimeouts {
    let (drain_default, grace_default, report_default) = if on_cloud_run(raw) {
        (
            Duration::ZERO,
            Duration::from_secs(4),
            Duration::from_secs(4),
        )
    } else {
        (d.drain_timeout, d.grace_timeout, d.report_timeout)
    };
    let mut dur = |name: &'static str, v: &Option<String>, default: Duration| {
        p.duration(name, v).unwrap_or(default)
    };
    StopTimeouts {
        single_wait: dur(
            "SCALR_AGENT_SINGLE_WAIT_TIMEOUT",
            &raw.scalr_agent_single_wait_timeout,
            d.single_wait,
        ),
        drain: dur(
            "SCALR_AGENT_WORKER_DRAIN_TIMEOUT",
            &raw.scalr_agent_worker_drain_timeout,
            drain_default,
        ),
        grace: dur(
            "SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT",
            &raw.scalr_agent_worker_grace_shutdown_timeout,
            grace_default,
        ),
        report: dur(
            "SCALR_AGENT_WORKER_REPORT_TIMEOUT",
            &raw.scalr_agent_worker_report_timeout,
            report_default,
        ),
    }
}

/// `SCALR_AGENT_HEALTH_ADDR`: the health listener's address; `None` when unset or bad.
fn health_addr(p: &mut Parser<'_>, raw: &Raw) -> Option<SocketAddr> {
    let v = nonempty(raw.scalr_agent_health_addr.clone())?;
    match v.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.bad(
                "SCALR_AGENT_HEALTH_ADDR",
                &v,
                "an IP address and port, e.g. `0.0.0.0:9090`",
            );
            None
        }
    }
}

/// A Cloud Run service routes and probes the port it sets in `PORT`: without
/// `SCALR_AGENT_HEALTH_ADDR`, the health listener binds `0.0.0.0:$PORT` there (`K_SERVICE`
/// set). Jobs (`CLOUD_RUN_JOB`) get no `PORT` and need no listener.
fn cloud_run_port(p: &mut Parser<'_>, raw: &Raw) -> Option<SocketAddr> {
    nonempty(raw.k_service.clone())?;
    let port = nonempty(raw.port.clone())?;
    match port.trim().parse::<u16>() {
        Ok(n) if n > 0 => Some(SocketAddr::from(([0, 0, 0, 0], n))),
        _ => {
            p.bad(
                "PORT",
                &port,
                "a TCP port from 1 to 65535 (set by Cloud Run)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, Needs};

    fn stop(vars: &[(&str, &str)]) -> (Duration, Duration, Duration) {
        let a = Config::from_vars(
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Needs::Local,
        )
        .unwrap()
        .agent;
        (a.drain_timeout, a.grace_timeout, a.report_timeout)
    }

    #[test]
    fn stop_defaults_follow_the_platform() {
        let s = Duration::from_secs;
        assert_eq!(stop(&[]), (s(60), s(30), s(10)));
        // Cloud Run services and jobs: 0 + 4 + 4 s inside the 10 s window.
        assert_eq!(stop(&[("K_SERVICE", "svc")]), (s(0), s(4), s(4)));
        assert_eq!(stop(&[("CLOUD_RUN_JOB", "nightly")]), (s(0), s(4), s(4)));
        // Container Apps jobs stop by `replicaTimeout`: the general defaults.
        assert_eq!(
            stop(&[("CONTAINER_APP_JOB_NAME", "j")]),
            (s(60), s(30), s(10))
        );
        // Explicit values win.
        assert_eq!(
            stop(&[
                ("CLOUD_RUN_JOB", "nightly"),
                ("SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT", "6s")
            ]),
            (s(0), s(6), s(4))
        );
    }

    #[test]
    fn a_cloud_run_service_serves_health_on_port() {
        let health = |vars: &[(&str, &str)]| {
            Config::from_vars(
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
                Needs::Local,
            )
            .map(|c| c.agent.health_addr.map(|a| a.to_string()))
        };
        let svc = ("K_SERVICE", "agents");
        assert_eq!(
            health(&[svc, ("PORT", "8080")]).unwrap().as_deref(),
            Some("0.0.0.0:8080")
        );
        // An explicit address wins; no service, no listener; a job gets no `PORT` anyway.
        let explicit = ("SCALR_AGENT_HEALTH_ADDR", "127.0.0.1:9090");
        assert_eq!(
            health(&[svc, ("PORT", "8080"), explicit])
                .unwrap()
                .as_deref(),
            Some("127.0.0.1:9090")
        );
        assert_eq!(health(&[("PORT", "8080")]).unwrap(), None);
        assert_eq!(health(&[svc]).unwrap(), None);
        let err = health(&[svc, ("PORT", "http")]).unwrap_err();
        assert_eq!(err.problems[0].variable, "PORT");
        assert!(
            err.to_string()
                .contains("PORT=\"http\": expected a TCP port"),
            "{err}"
        );
    }
}
