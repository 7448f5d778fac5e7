//! Fills `http::Settings` from `SCALR_AGENT_CA_CERT`, the proxy variables and
//! `SCALR_AGENT_HTTP_*`; reads CA bundles (also the stages' one, for `task::Settings`).

use std::path::Path;

use base64::Engine as _;
use url::Url;

use super::Problem;
use super::parse::{Parser, Raw, nonempty, pick, read_named_file};
use crate::http::{CaBundle, Settings};

pub(super) fn parse(p: &mut Parser<'_>, raw: &Raw) -> Settings {
    let d = Settings::default();
    let ca_bundle = pick(
        ("SCALR_AGENT_CA_CERT", raw.scalr_agent_ca_cert.clone()),
        &[("SCALR_CA_CERT", raw.scalr_ca_cert.clone())],
    )
    .and_then(|(name, v)| ca_bundle(p, name, &v));
    let http_proxy = nonempty(raw.http_proxy.clone()).and_then(|v| proxy(p, "HTTP_PROXY", &v));
    let https_proxy = nonempty(raw.https_proxy.clone()).and_then(|v| proxy(p, "HTTPS_PROXY", &v));
    Settings {
        ca_bundle,
        http_proxy,
        https_proxy,
        no_proxy: nonempty(raw.no_proxy.clone()),
        read_timeout: p
            .duration(
                "SCALR_AGENT_HTTP_READ_TIMEOUT",
                &raw.scalr_agent_http_read_timeout,
            )
            .unwrap_or(d.read_timeout),
        connect_timeout: p
            .duration(
                "SCALR_AGENT_HTTP_CONNECT_TIMEOUT",
                &raw.scalr_agent_http_connect_timeout,
            )
            .unwrap_or(d.connect_timeout),
        max_retries: p
            .number(
                "SCALR_AGENT_HTTP_MAX_RETRIES",
                &raw.scalr_agent_http_max_retries,
                0,
                20,
            )
            .map(|n| n as u32)
            .unwrap_or(d.max_retries),
        initial_backoff: p
            .duration("SCALR_AGENT_HTTP_BACKOFF", &raw.scalr_agent_http_backoff)
            .unwrap_or(d.initial_backoff),
    }
}

/// A CA bundle given as a file path, inline PEM, or base64 of a PEM bundle.
pub(super) fn ca_bundle(p: &mut Parser<'_>, name: &'static str, value: &str) -> Option<CaBundle> {
    let trimmed = value.trim();
    let pem: Vec<u8> = if trimmed.starts_with("-----BEGIN") {
        trimmed.as_bytes().to_vec()
    } else if Path::new(trimmed).is_absolute() || Path::new(trimmed).exists() {
        match read_named_file(trimmed) {
            Ok(b) => b,
            Err(e) => {
                p.bad(name, value, &format!("a readable PEM file ({e})"));
                return None;
            }
        }
    } else {
        let compact: String = trimmed.split_whitespace().collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(b) => b,
            Err(_) => {
                p.bad(
                    name,
                    value,
                    "a PEM file path, inline PEM, or base64 of a PEM bundle",
                );
                return None;
            }
        }
    };
    let bundle = CaBundle::from_pem(pem);
    if bundle.is_none() {
        p.bad(
            name,
            value,
            "a bundle of PEM certificates (none could be parsed)",
        );
    }
    bundle
}

fn proxy(p: &mut Parser<'_>, name: &'static str, value: &str) -> Option<Url> {
    // `host:port` without a scheme is common in the wild and means http.
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    match Url::parse(&with_scheme) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h")
                && u.host().is_some() =>
        {
            Some(u)
        }
        _ => {
            p.problems.push(Problem {
                variable: name,
                value: Some(crate::http::redact_str(value)),
                expected: "a proxy URL such as http://proxy.internal:3128".into(),
            });
            None
        }
    }
}
