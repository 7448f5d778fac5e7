//! Fetching one provider package the way Terraform does, then verifying it independently.
//!
//! From a registry: service discovery (`/.well-known/terraform.json`, or an operator's
//! override), the download JSON, `SHA256SUMS` and its detached signature by a key the download
//! JSON names, the zip (its SHA-256, the `zh:`, must be the one the signed file lists).
//! From a network mirror: `<type>/<version>.json`, the zip, and one of the mirror's `zh:`/`h1:`
//! hashes (a mirror without hashes is refused: the store never holds unverified packages).
//! Nothing here writes into the store; see [`super::fill`].

use std::path::Path;

use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::FillError;
use super::addr::Package;
use super::settings::NetworkMirror;
use crate::http::{HttpClient, HttpError, Request, redact};
use crate::software::verify;

/// Largest JSON document, checksum file or signature accepted.
const SMALL: u64 = 1 << 20;

/// A zip fetched into the staging directory, with what it must hash to.
#[derive(Debug)]
pub struct Fetched {
    pub url: String,
    pub size: u64,
    pub sha256: String,
    /// `h1:` hashes the source vouches for (mirrors); the tree must match one when present.
    pub h1s: Vec<String>,
    pub origin: &'static str,
    pub verification: String,
}

#[derive(Deserialize)]
struct Download {
    filename: String,
    download_url: String,
    shasums_url: String,
    shasums_signature_url: String,
    shasum: Option<String>,
    signing_keys: SigningKeys,
}

#[derive(Deserialize)]
struct SigningKeys {
    #[serde(default)]
    gpg_public_keys: Vec<GpgKey>,
}

#[derive(Deserialize)]
struct GpgKey {
    #[serde(default)]
    key_id: String,
    ascii_armor: String,
}

fn http_err(e: HttpError) -> FillError {
    match e.status() {
        Some(StatusCode::NOT_FOUND) => FillError::NotFound(e.to_string()),
        _ => FillError::Http(e),
    }
}

fn join(base: &Url, rel: &str) -> Result<Url, FillError> {
    base.join(rel).map_err(|e| FillError::Protocol {
        url: redact(base),
        reason: format!("bad URL {rel:?}: {e}"),
    })
}

async fn json<T: serde::de::DeserializeOwned>(
    client: &HttpClient,
    url: &Url,
) -> Result<T, FillError> {
    let body = client.get_bytes(url, SMALL).await.map_err(http_err)?;
    serde_json::from_slice(&body).map_err(|e| FillError::Protocol {
        url: redact(url),
        reason: format!("invalid JSON: {e}"),
    })
}

/// The `providers.v1` base URL of a registry host.
pub async fn discover(
    client: &HttpClient,
    host: &str,
    overrides: &std::collections::BTreeMap<String, Url>,
) -> Result<Url, FillError> {
    if let Some(base) = overrides.get(host) {
        return Ok(base.clone());
    }
    let url = Url::parse(&format!("https://{host}/.well-known/terraform.json")).map_err(|e| {
        FillError::Protocol {
            url: host.into(),
            reason: e.to_string(),
        }
    })?;
    let doc: serde_json::Value = json(client, &url).await?;
    let rel = doc
        .get("providers.v1")
        .and_then(|v| v.as_str())
        .ok_or_else(|| FillError::Protocol {
            url: redact(&url),
            reason: "no \"providers.v1\" service".into(),
        })?;
    join(&url, rel)
}

/// Downloads and verifies a package from its origin registry into `zip`.
pub async fn from_registry(
    client: &HttpClient,
    base: &Url,
    pkg: &Package,
    zip: &Path,
    max_size: u64,
) -> Result<Fetched, FillError> {
    let (os, arch) = pkg.os_arch();
    let p = &pkg.provider;
    let url = join(
        base,
        &format!(
            "{}/{}/{}/download/{os}/{arch}",
            p.namespace, p.kind, pkg.version
        ),
    )?;
    let d: Download = json(client, &url).await?;
    let sums_url = join(&url, &d.shasums_url)?;
    let sig_url = join(&url, &d.shasums_signature_url)?;
    let zip_url = join(&url, &d.download_url)?;
    let sums = client.get_bytes(&sums_url, SMALL).await.map_err(http_err)?;
    let sig = client.get_bytes(&sig_url, SMALL).await.map_err(http_err)?;
    let mut keys = Vec::new();
    for k in &d.signing_keys.gpg_public_keys {
        let origin = format!("{} key {}", p.host, k.key_id);
        keys.extend(
            verify::parse_armored_keys(&k.ascii_armor, &origin).map_err(|reason| {
                FillError::Protocol {
                    url: redact(&url),
                    reason: format!("signing key {}: {reason}", k.key_id),
                }
            })?,
        );
    }
    let signer =
        verify::verify_detached(&sums, &sig, &keys).map_err(|reason| FillError::Signature {
            url: redact(&sig_url),
            reason,
        })?;
    let listed = verify::Checksums::parse(&String::from_utf8_lossy(&sums))
        .ok()
        .and_then(|c| c.find(&d.filename, false).map(str::to_string))
        .ok_or_else(|| FillError::Protocol {
            url: redact(&sums_url),
            reason: format!("does not list {}", d.filename),
        })?;
    if let Some(shasum) = &d.shasum
        && !shasum.eq_ignore_ascii_case(&listed)
    {
        return Err(FillError::Protocol {
            url: redact(&url),
            reason: format!("shasum {shasum} differs from the signed SHA256SUMS ({listed})"),
        });
    }
    let got = client
        .download(&zip_url, zip, max_size)
        .await
        .map_err(http_err)?;
    if !got.sha256.eq_ignore_ascii_case(&listed) {
        return Err(FillError::Hash {
            what: format!("zh: of {}", redact(&zip_url)),
            expected: format!("zh:{listed} (signed SHA256SUMS)"),
            found: format!("zh:{}", got.sha256),
        });
    }
    Ok(Fetched {
        url: redact(&zip_url),
        size: got.size,
        sha256: got.sha256,
        h1s: Vec::new(),
        origin: "registry",
        verification: format!(
            "zh: listed in SHA256SUMS signed by {} ({})",
            signer.fingerprint, signer.origin
        ),
    })
}

#[derive(Deserialize)]
struct MirrorVersion {
    archives: std::collections::BTreeMap<String, MirrorArchive>,
}

#[derive(Deserialize)]
struct MirrorArchive {
    url: String,
    #[serde(default)]
    hashes: Vec<String>,
}

/// Downloads a package from a network mirror into `zip`. `Ok(None)`: the mirror does not have
/// it (404), try the next source.
#[expect(
    clippy::too_many_lines,
    reason = "the registry protocol's fetch, step by step in the order the protocol gives"
)]
pub async fn from_mirror(
    client: &HttpClient,
    mirror: &NetworkMirror,
    pkg: &Package,
    zip: &Path,
    max_size: u64,
) -> Result<Option<Fetched>, FillError> {
    let p = &pkg.provider;
    let url = join(
        &mirror.url,
        &format!("{}/{}/{}/{}.json", p.host, p.namespace, p.kind, pkg.version),
    )?;
    let mut req = Request::new(reqwest::Method::GET, url.clone());
    req.limit = SMALL;
    if let Some(token) = &mirror.token {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(
                |_| FillError::Protocol {
                    url: redact(&mirror.url),
                    reason: "the token is not a valid header value".into(),
                },
            )?;
        value.set_sensitive(true);
        req.headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let answer = client.send(&req).await.map_err(FillError::Http)?;
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !answer.status.is_success() {
        return Err(FillError::Protocol {
            url: redact(&url),
            reason: format!("answered {}", answer.status),
        });
    }
    let doc: MirrorVersion =
        serde_json::from_slice(&answer.body).map_err(|e| FillError::Protocol {
            url: redact(&url),
            reason: format!("invalid JSON: {e}"),
        })?;
    let Some(archive) = doc.archives.get(&pkg.target) else {
        return Ok(None);
    };
    if archive.hashes.is_empty() {
        return Err(FillError::Protocol {
            url: redact(&url),
            reason: format!(
                "lists no hashes for {}: refusing an unverifiable package",
                pkg.target
            ),
        });
    }
    let zip_url = join(&url, &archive.url)?;
    let got = client
        .download(&zip_url, zip, max_size)
        .await
        .map_err(http_err)?;
    let zhs: Vec<&String> = archive
        .hashes
        .iter()
        .filter(|h| h.starts_with("zh:"))
        .collect();
    let h1s: Vec<String> = archive
        .hashes
        .iter()
        .filter(|h| h.starts_with("h1:"))
        .cloned()
        .collect();
    let zh = super::hash::zh(&got.sha256);
    if !zhs.is_empty() && !zhs.iter().any(|h| **h == zh) {
        return Err(FillError::Hash {
            what: format!("zh: of {}", redact(&zip_url)),
            expected: zhs
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            found: zh,
        });
    }
    Ok(Some(Fetched {
        url: redact(&zip_url),
        size: got.size,
        sha256: got.sha256,
        h1s,
        origin: "mirror",
        verification: format!("hashes from network mirror {}", redact(&mirror.url)),
    }))
}
