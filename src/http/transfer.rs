//! GETs: a small document into memory, or a download streamed to a file while hashing.

use std::path::Path;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use url::Url;

use super::{Attempt, HttpClient, HttpError, redact, transport};

/// The result of a download to a file.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub size: u64,
    pub sha256: String,
}

impl HttpClient {
    /// GETs a small document into memory (checksum files, signatures), at most `limit` bytes.
    pub async fn get_bytes(&self, url: &Url, limit: u64) -> Result<Vec<u8>, HttpError> {
        let shown = redact(url);
        self.retrying(url, |resp, attempts| {
            let shown = shown.clone();
            async move {
                if resp.content_length().is_some_and(|n| n > limit) {
                    return Err(Attempt::Fatal(HttpError::TooLarge { url: shown, limit }));
                }
                let expected = resp.content_length();
                let mut body = Vec::new();
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        transport(&shown, &e, attempts, body.len() as u64, expected)
                    })?;
                    self.count(chunk.len());
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Err(Attempt::Fatal(HttpError::TooLarge { url: shown, limit }));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        })
        .await
    }

    /// Streams a GET into `path` (created or truncated), hashing with SHA256 in the same pass.
    /// Hashing and writing happen on a blocking thread fed through a small channel, so memory
    /// stays bounded whatever the file's size. A failed attempt starts again from byte zero.
    #[expect(
        clippy::too_many_lines,
        reason = "one download attempt: the writer thread and the reading loop share its state"
    )]
    pub async fn download(
        &self,
        url: &Url,
        path: &Path,
        limit: u64,
    ) -> Result<Downloaded, HttpError> {
        let shown = redact(url);
        self.retrying(url, |resp, attempts| {
            let shown = shown.clone();
            let path = path.to_path_buf();
            async move {
                let expected = resp.content_length();
                if expected.is_some_and(|n| n > limit) {
                    return Err(Attempt::Fatal(HttpError::TooLarge { url: shown, limit }));
                }
                let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
                let write_path = path.clone();
                let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Downloaded> {
                    use std::io::Write;
                    let file = std::fs::File::create(&write_path)?;
                    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
                    let mut hasher = Sha256::new();
                    let mut size = 0u64;
                    while let Some(chunk) = rx.blocking_recv() {
                        hasher.update(&chunk);
                        out.write_all(&chunk)?;
                        size += chunk.len() as u64;
                    }
                    let file = out.into_inner().map_err(|e| e.into_error())?;
                    file.sync_all()?;
                    Ok(Downloaded {
                        size,
                        sha256: hex::encode(hasher.finalize()),
                    })
                });
                let mut received = 0u64;
                let mut stream = resp.bytes_stream();
                let mut failure = None;
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(chunk) => {
                            self.count(chunk.len());
                            received += chunk.len() as u64;
                            if received > limit {
                                failure = Some(Attempt::Fatal(HttpError::TooLarge {
                                    url: shown.clone(),
                                    limit,
                                }));
                                break;
                            }
                            if tx.send(chunk).await.is_err() {
                                break; // The writer failed; its error is reported below.
                            }
                        }
                        Err(e) => {
                            failure = Some(transport(&shown, &e, attempts, received, expected));
                            break;
                        }
                    }
                }
                drop(tx);
                let written = writer
                    .await
                    .map_err(|e| {
                        Attempt::Fatal(HttpError::Client(format!("download writer panicked: {e}")))
                    })?
                    .map_err(|source| {
                        Attempt::Fatal(HttpError::Write {
                            url: shown.clone(),
                            path,
                            source,
                        })
                    })?;
                if let Some(f) = failure {
                    return Err(f);
                }
                if let Some(expected) = expected
                    && written.size != expected
                {
                    return Err(Attempt::retry(HttpError::Truncated {
                        url: shown,
                        received: written.size,
                        expected,
                        attempts,
                    }));
                }
                Ok(written)
            }
        })
        .await
    }
}
