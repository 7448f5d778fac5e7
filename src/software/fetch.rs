//! Fetching a release's checksum file and checking its OpenPGP signature, for
//! [`SoftwareCache::install`](super::SoftwareCache::install).

use super::*;

impl SoftwareCache {
    pub(super) async fn fetch_checksums(
        &self,
        client: &HttpClient,
        release: &Release,
    ) -> Result<Vec<u8>, ErrorKind> {
        client
            .get_bytes(&release.checksums_url, SMALL_FILE_LIMIT)
            .await
            .map_err(|e| match e.status() {
                Some(StatusCode::NOT_FOUND) if release.tool.is_signed() => {
                    ErrorKind::NoSuchVersion {
                        tool: release.tool,
                        version: release.version.to_string(),
                        url: redact(&release.checksums_url),
                    }
                }
                // OPA and Infracost publish one checksum file per artifact: its absence means no
                // build for this platform (or no such version).
                Some(StatusCode::NOT_FOUND) => ErrorKind::NoBuild {
                    tool: release.tool,
                    version: release.version.to_string(),
                    platform: release.platform,
                    reason: format!("{} answered 404 Not Found", redact(&release.checksums_url)),
                },
                _ => ErrorKind::Http(e),
            })
    }

    pub(super) async fn verify_signature(
        &self,
        client: &HttpClient,
        release: &Release,
        checksums: &[u8],
    ) -> Result<Verification, ErrorKind> {
        let unsigned = |method: &str| Verification {
            method: method.into(),
            signature_url: None,
            key_fingerprint: None,
            signing_key: None,
            key_user_id: None,
            key_origin: None,
        };
        if !release.tool.is_signed() {
            return Ok(unsigned("sha256"));
        }
        if self.config.signature_check == SignatureCheck::Disabled {
            tracing::warn!(tool = %release.tool, version = %release.version, "OpenPGP signature check disabled by SCALR_AGENT_SOFTWARE_SIGNATURE_CHECK; trusting the checksum file unsigned");
            return Ok(unsigned("sha256 (signature check disabled)"));
        }
        let mut keys: Vec<verify::TrustedKey> =
            verify::vendor_key(release.tool).into_iter().collect();
        keys.extend(self.config.trusted_keys.iter().cloned());
        let mut tried = Vec::new();
        for url in &release.signature_urls {
            let sig = match client.get_bytes(url, SMALL_FILE_LIMIT).await {
                Ok(sig) => sig,
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                    tried.push(redact(url));
                    continue;
                }
                Err(e) => return Err(ErrorKind::Http(e)),
            };
            let signer = verify::verify_detached(checksums, &sig, &keys).map_err(|reason| {
                ErrorKind::SignatureInvalid {
                    url: redact(url),
                    checksums_url: redact(&release.checksums_url),
                    reason,
                }
            })?;
            return Ok(Verification {
                method: "sha256+openpgp".into(),
                signature_url: Some(redact(url)),
                key_fingerprint: Some(signer.fingerprint),
                signing_key: Some(signer.signing_key),
                key_user_id: Some(signer.user_id),
                key_origin: Some(signer.origin),
            });
        }
        Err(ErrorKind::SignatureMissing {
            checksums_url: redact(&release.checksums_url),
            tried: tried.join(", "),
        })
    }
}
