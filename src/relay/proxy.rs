//! One relayed request: check it, perform it against the VCS, stream the answer back.
//!
//! Bodies flow as streams in both directions, chunk by chunk: the request body from the
//! server's `GET …/body` into the VCS request, the VCS's response body into the server's
//! `POST …/response`. Each side pulls only when the other can take more (hyper's write
//! readiness), so memory stays flat whatever the size. Both pass through `flow::watched`
//! (counting, size cap, the idle timer); the whole request is bounded by its own timeout. A
//! request is sent to the VCS at most once: nothing here retries.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::audit::{self, Record};
use super::flow::{Activity, Direction, Phase, watched};
use super::gateway::{Gateway, Head, Incoming};
use super::metrics::RelayMetrics;
use super::rules::{Allowed, Refusal, RuleSet};
use super::target::{check_path, target_url};
use super::upload::Upload;
use crate::http::HttpClient;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What every relayed request shares.
#[derive(Debug)]
pub struct Ctx {
    pub gateway: Arc<Gateway>,
    pub upstream: HttpClient,
    pub rules: Arc<RuleSet>,
    pub base: Url,
    pub request_timeout: Duration,
    /// No byte moved for this long: the request fails (`flow`).
    pub idle_timeout: Duration,
    pub max_body_bytes: u64,
    pub metrics: Arc<RelayMetrics>,
    pub debug: bool,
    /// Requests whose refusal or failure could not be reported: the relay then must not
    /// deregister (docs/protocol.md, "Deregistration and stop").
    pub unreported: AtomicUsize,
}

/// Why an allowed request did not complete.
struct Failure {
    reason: String,
    /// Whether the request may have reached the VCS.
    sent: bool,
}

/// Checks a request against the path rules, the allowlist and the target; the refusal says
/// which rule set refused it and why.
pub fn check(
    rules: &RuleSet,
    base: &Url,
    inc: &Incoming,
) -> Result<(Method, Url, Allowed), Refusal> {
    let method = Method::from_bytes(inc.method.as_bytes()).map_err(|_| {
        Refusal::new(
            "allowlist",
            format!("{:?} is not an HTTP method", inc.method),
        )
    })?;
    let checked = check_path(&inc.path)?;
    let allowed = rules.judge(&method, &checked)?;
    let url = target_url(base, &checked)?;
    Ok((method, url, allowed))
}

/// The headers sent to the VCS: the server's, in order and with repeats, minus `Host` (set
/// from the base URL), hop-by-hop headers (and those `Connection` names), `Proxy-*`,
/// `Forwarded` and `X-Forwarded-*`.
pub fn request_headers(pairs: &[(String, String)]) -> Result<HeaderMap, Refusal> {
    let named: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::new();
    for (k, v) in pairs {
        let lower = k.to_ascii_lowercase();
        if lower == "host"
            || HOP_BY_HOP.contains(&lower.as_str())
            || named.contains(&lower)
            || lower.starts_with("proxy-")
            || lower == "forwarded"
            || lower.starts_with("x-forwarded-")
        {
            continue;
        }
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Refusal::new("headers", format!("{k:?} is not a header name")))?;
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            Refusal::new(
                "headers",
                format!("the value of {k} is not a valid header value"),
            )
        })?;
        if lower == "authorization" || lower == "cookie" || lower.contains("token") {
            value.set_sensitive(true);
        }
        out.append(name, value);
    }
    Ok(out)
}

/// The VCS's response headers as sent back: repeats kept, hop-by-hop headers dropped,
/// everything else (`Content-Encoding`, `Content-Length`, `Link`, `Set-Cookie`) untouched.
pub fn response_headers(h: &HeaderMap) -> Vec<(String, String)> {
    let named: Vec<String> = h
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    h.iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !HOP_BY_HOP.contains(&k) && !named.iter().any(|n| n == k) && k != "proxy-authenticate"
        })
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Counts, logs and reports a refusal.
async fn refuse(
    ctx: &Ctx,
    inc: &Incoming,
    refusal: &Refusal,
    mut rec: Record<'_>,
    started: Instant,
) {
    ctx.metrics.refused(refusal.rule_set);
    let reason = refusal.to_string();
    rec.outcome = "refused";
    rec.reason = Some(&reason);
    rec.duration = started.elapsed();
    audit::log(&rec);
    if let Err(e) = ctx
        .gateway
        .refused(&inc.request_id, refusal.rule_set, &reason)
        .await
    {
        ctx.unreported.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(request_id = %inc.request_id, error = %e, "cannot report a refusal");
    }
}

/// Relays one request to its end: refused, failed or answered. Never panics on input;
/// reports the outcome to the server and writes the audit line.
pub async fn relay(ctx: &Ctx, inc: Incoming, cancel: CancellationToken) {
    let started = Instant::now();
    let mut rec = Record {
        request_id: &inc.request_id,
        method: &inc.method,
        path: &inc.path,
        ..Record::default()
    };
    let checked = check(&ctx.rules, &ctx.base, &inc)
        .and_then(|ok| request_headers(&inc.headers).map(|h| (ok, h)));
    let ((method, url, allowed), headers) = match checked {
        Ok(v) => v,
        Err(refusal) => return refuse(ctx, &inc, &refusal, rec, started).await,
    };
    if ctx.debug {
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        tracing::debug!(request_id = %inc.request_id, rule = %allowed.rule, headers = ?names, "relaying");
    }
    rec.rule = Some(&allowed.rule);
    rec.project = allowed.project.as_deref();
    let first = if inc.body {
        Phase::BodyHead
    } else {
        Phase::VcsAnswer
    };
    let activity = Arc::new(Activity::new(ctx.idle_timeout, first));
    let sent = AtomicBool::new(false);
    ctx.metrics.in_flight_add(1);
    let work = perform(ctx, &inc, method, url, headers, &activity, &sent);
    let outcome = tokio::select! {
        r = tokio::time::timeout(ctx.request_timeout, work) => match r {
            Ok(r) => r,
            Err(_) => Err(Failure {
                reason: format!("timed out after {:?} (SCALR_AGENT_RELAY_REQUEST_TIMEOUT)", ctx.request_timeout),
                sent: sent.load(Ordering::Relaxed),
            }),
        },
        reason = activity.expired() => Err(Failure {
            reason,
            sent: sent.load(Ordering::Relaxed),
        }),
        () = cancel.cancelled() => Err(Failure {
            reason: "cancelled (by the server, or the relay's stop window ended)".into(),
            sent: sent.load(Ordering::Relaxed),
        }),
    };
    ctx.metrics.in_flight_add(-1);
    rec.bytes_to_vcs = activity.to_vcs.load(Ordering::Relaxed);
    rec.bytes_from_vcs = activity.from_vcs.load(Ordering::Relaxed);
    rec.duration = started.elapsed();
    match outcome {
        Ok(status) => {
            ctx.metrics
                .relayed(&allowed.rule, status, rec.bytes_to_vcs, rec.bytes_from_vcs);
            rec.outcome = "relayed";
            rec.status = Some(status);
            audit::log(&rec);
        }
        Err(f) => {
            ctx.metrics.failed(rec.bytes_to_vcs, rec.bytes_from_vcs);
            rec.outcome = "failed";
            rec.reason = Some(&f.reason);
            audit::log(&rec);
            if let Err(e) = ctx.gateway.failed(&inc.request_id, &f.reason, f.sent).await {
                ctx.unreported.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(request_id = %inc.request_id, error = %e, "cannot report a failure");
            }
        }
    }
}

/// Performs an allowed request and streams its answer to the server; the response's status.
async fn perform(
    ctx: &Ctx,
    inc: &Incoming,
    method: Method,
    url: Url,
    headers: HeaderMap,
    activity: &Arc<Activity>,
    sent: &AtomicBool,
) -> Result<u16, Failure> {
    let body = if inc.body {
        let r = ctx
            .gateway
            .body(&inc.request_id)
            .await
            .map_err(|e| Failure {
                reason: e.to_string(),
                sent: false,
            })?;
        activity.touch();
        activity.set_phase(Phase::BodyToVcs);
        let s = watched(
            r.bytes_stream(),
            activity.clone(),
            Direction::Request,
            ctx.max_body_bytes,
        );
        Some(reqwest::Body::wrap_stream(s))
    } else {
        None
    };
    sent.store(true, Ordering::Relaxed);
    let why = |e: String| activity.broke().unwrap_or(e);
    let resp = ctx
        .upstream
        .stream(method, &url, headers, body, None)
        .await
        .map_err(|e| Failure {
            reason: why(format!("the VCS did not answer: {e}")),
            sent: true,
        })?;
    activity.touch();
    activity.set_phase(Phase::ResponseToControl);
    let status = resp.status().as_u16();
    let head = Head {
        status,
        headers: response_headers(resp.headers()),
    };
    let mut line = serde_json::to_vec(&head).expect("serializable");
    line.push(b'\n');
    let first = futures_util::stream::once(async move { Ok::<_, io::Error>(Bytes::from(line)) });
    let rest = watched(
        resp.bytes_stream(),
        activity.clone(),
        Direction::Response,
        ctx.max_body_bytes,
    );
    let upload = Upload::new(first.chain(rest));
    ctx.gateway
        .respond(&inc.request_id, &upload)
        .await
        .map_err(|e| Failure {
            reason: why(e.to_string()),
            sent: true,
        })?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_and_hop_by_hop_are_dropped_repeats_kept() {
        let pairs: Vec<(String, String)> = [
            ("Host", "evil"),
            ("Connection", "close, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Proxy-Authorization", "Basic x"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("Transfer-Encoding", "chunked"),
            ("Accept", "a"),
            ("Accept", "b"),
            ("Git-Protocol", "version=2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let h = request_headers(&pairs).unwrap();
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "git-protocol"]);
        assert_eq!(h.get_all("accept").iter().count(), 2);
    }
}
