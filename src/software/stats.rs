//! Counters of one software cache, per tool: how many installs were answered from the cache,
//! how many downloaded, how many failed, and how many bytes came over HTTP. The daemon renders
//! them at `/metrics`; nothing here knows a metrics format.
//!
//! Each [`super::SoftwareCache::install`] call counts exactly once, by its outcome:
//! - a **hit** returned an entry that was already installed, including one that a concurrent
//!   install (another task of this agent, or another agent sharing the cache directory)
//!   finished while this call waited on the install lock: this call downloaded nothing;
//! - a **miss** downloaded, verified and installed the entry itself;
//! - a **failure** returned an error (whatever the stage: lock, download, verification).
//!
//! So hits + misses + failures is the number of calls, and misses count downloads exactly
//! (one per installed entry, whichever process did it).
//!
//! **Downloaded bytes** are the body bytes the cache's installs received over HTTP: the
//! artifact, the checksum file and the signature, on every attempt (a transfer cut off and
//! retried counts the bytes of both attempts). It is the traffic the cache caused, not the
//! size of what it keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::catalog::Tool;

/// The counters of one [`super::SoftwareCache`], shared with whoever reports them.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Indexed like [`Tool::ALL`].
    tools: [Counters; Tool::ALL.len()],
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    failures: AtomicU64,
    /// Shared with the HTTP client handle of this tool's installs (`HttpClient::counting`).
    downloaded: Arc<AtomicU64>,
}

/// The counters of one tool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolStats {
    pub tool: Tool,
    pub hits: u64,
    pub misses: u64,
    pub failures: u64,
    pub downloaded_bytes: u64,
}

impl CacheStats {
    /// Every tool's counters, in [`Tool::ALL`] order (zeros included, so a scraper sees each
    /// series from the start).
    pub fn snapshot(&self) -> Vec<ToolStats> {
        Tool::ALL.iter().map(|&t| self.get(t)).collect()
    }

    /// One tool's counters.
    pub fn get(&self, tool: Tool) -> ToolStats {
        let c = self.counters(tool);
        ToolStats {
            tool,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            downloaded_bytes: c.downloaded.load(Ordering::Relaxed),
        }
    }

    pub(super) fn hit(&self, tool: Tool) {
        self.counters(tool).hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn miss(&self, tool: Tool) {
        self.counters(tool).misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn failure(&self, tool: Tool) {
        self.counters(tool).failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The byte counter that the HTTP client adds this tool's downloads to.
    pub(super) fn downloaded(&self, tool: Tool) -> Arc<AtomicU64> {
        self.counters(tool).downloaded.clone()
    }

    fn counters(&self, tool: Tool) -> &Counters {
        let i = Tool::ALL
            .iter()
            .position(|&t| t == tool)
            .expect("Tool::ALL lists every tool");
        &self.tools[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_tool() {
        let s = CacheStats::default();
        s.hit(Tool::Terraform);
        s.hit(Tool::Terraform);
        s.miss(Tool::Terraform);
        s.failure(Tool::Opa);
        s.downloaded(Tool::Terraform)
            .fetch_add(1000, Ordering::Relaxed);
        assert_eq!(
            s.get(Tool::Terraform),
            ToolStats {
                tool: Tool::Terraform,
                hits: 2,
                misses: 1,
                failures: 0,
                downloaded_bytes: 1000
            }
        );
        assert_eq!(s.get(Tool::Opa).failures, 1);
        let all = s.snapshot();
        assert_eq!(
            all.iter().map(|t| t.tool).collect::<Vec<_>>(),
            Tool::ALL.to_vec()
        );
        assert_eq!(all.iter().map(|t| t.hits).sum::<u64>(), 2);
    }
}
