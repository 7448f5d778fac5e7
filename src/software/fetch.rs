//! Fetching a release's checksum file and checking its OpenPGP signature, then downloading
//! the artifact and checking its hash, for [`SoftwareCache::install`](super::SoftwareCache::install).

use super::*;

impl SoftwareCache {
    /// The artifact's SHA-256 as the release's checksum file lists it, after the file's
    /// signature is checked; and how it was verified.
    pub(super) async fn expected_sha256(
        &self,
        client: &HttpClient,
        release: &Release,
    ) -> Result<(String, Verification), ErrorKind> {
        let checksums_text = self.fetch_checksums(client, release).await?;
        let verification = self
            .verify_signature(client, release, &checksums_text)
            .await?;
        let checksums = verify::Checksums::parse(&String::from_utf8_lossy(&checksums_text))
            .map_err(|reason| ErrorKind::ChecksumFile {
                url: redact(&release.checksums_url),
                reason,
            })?;
        let per_file = release.signature_urls.is_empty();
        let expected = checksums
            .find(&release.file_name, per_file)
            .ok_or_else(|| ErrorKind::NoBuild {
                tool: release.tool,
                version: release.version.to_string(),
                platform: release.platform,
                reason: format!(
                    "{} does not list {} (it lists: {})",
                    redact(&release.checksums_url),
                    release.file_name,
                    checksums.names().collect::<Vec<_>>().join(", ")
                ),
            })?;
        Ok((expected.to_string(), verification))
    }

    /// Downloads the artifact into `path` (at most the size limit), and checks its SHA-256
    /// against `expected`.
    pub(super) async fn download_artifact(
        &self,
        client: &HttpClient,
        release: &Release,
        path: &std::path::Path,
        expected: String,
    ) -> Result<Downloaded, ErrorKind> {
        let downloaded = client
            .download(&release.artifact_url, path, self.config.max_size_bytes)
            .await
            .map_err(|e| match e.status() {
                Some(StatusCode::NOT_FOUND) => ErrorKind::NoBuild {
                    tool: release.tool,
                    version: release.version.to_string(),
                    platform: release.platform,
                    reason: format!("{} answered 404 Not Found", redact(&release.artifact_url)),
                },
                _ => ErrorKind::Http(e),
            })?;
        if downloaded.sha256 != expected {
            return Err(ErrorKind::ChecksumMismatch {
                file: release.file_name.clone(),
                url: redact(&release.artifact_url),
                checksums_url: redact(&release.checksums_url),
                expected,
                found: downloaded.sha256,
            });
        }
        Ok(downloaded)
    }

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
