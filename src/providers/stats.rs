//! Counters of the provider store, rendered by the daemon at `/metrics`.
//!
//! - **hits**: store entries linked into a run's plugin cache;
//! - **misses**: providers a run's Terraform downloaded itself (the store lacked them, or the
//!   run's lock file did not accept the stored package);
//! - **fills** / **fill failures**: store fills this process completed / that failed (a fill
//!   that found the entry already made by a concurrent fill counts as neither);
//! - **downloaded bytes**: body bytes the fills received over HTTP (JSON, checksums,
//!   signatures, zips; retried attempts included);
//! - **fill seconds**: total wall time of completed fills.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct ProviderStats {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    fill_failures: AtomicU64,
    fill_micros: AtomicU64,
    downloaded: Arc<AtomicU64>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    pub hits: u64,
    pub misses: u64,
    pub fills: u64,
    pub fill_failures: u64,
    pub fill_seconds: f64,
    pub downloaded_bytes: u64,
}

impl ProviderStats {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
    pub fn filled(&self, took: Duration) {
        self.fills.fetch_add(1, Ordering::Relaxed);
        self.fill_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
    pub fn fill_failed(&self) {
        self.fill_failures.fetch_add(1, Ordering::Relaxed);
    }
    /// The counter the fills' HTTP client adds received bytes to.
    pub fn downloaded(&self) -> Arc<AtomicU64> {
        self.downloaded.clone()
    }
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
            fill_failures: self.fill_failures.load(Ordering::Relaxed),
            fill_seconds: self.fill_micros.load(Ordering::Relaxed) as f64 / 1e6,
            downloaded_bytes: self.downloaded.load(Ordering::Relaxed),
        }
    }
}
