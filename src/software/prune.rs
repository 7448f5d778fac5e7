//! Listing the cache and removing from it: `software list`, `software prune`, and the eviction
//! that follows each download (damaged entries, unused ones, then least recently used while
//! above the size limit; never an entry being installed or leased).

use std::time::SystemTime;

use super::store::{self, Key, Layout};
use super::{Settings, SoftwareCache};

/// One row of `software list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub tool: String,
    pub version: String,
    pub platform: String,
    pub size: u64,
    #[serde(with = "rfc3339_opt")]
    pub last_used: Option<SystemTime>,
    pub verified: String,
    /// `None` when the entry is valid, else why it would be reinstalled.
    pub damage: Option<String>,
}

/// What a prune removed and kept.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub removed: Vec<String>,
    pub kept_in_use: Vec<String>,
    pub freed_bytes: u64,
    pub remaining_bytes: u64,
}

impl SoftwareCache {
    /// Every entry in the cache, with its state. Blocking: call from a blocking context.
    pub fn list(&self) -> std::io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for key in self.layout.scan()? {
            let dir = self.layout.entry(&key);
            let (verified, damage) = match store::check_entry(&dir, &key) {
                Ok(m) => (m.verification.summary(), None),
                Err(d) => (String::new(), Some(d.to_string())),
            };
            out.push(Listed {
                tool: key.tool.name().into(),
                version: key.version.to_string(),
                platform: key.platform.name().into(),
                size: store::dir_size(&dir),
                last_used: store::last_used(&dir),
                verified,
                damage,
            });
        }
        Ok(out)
    }

    /// Applies the eviction policy now. Blocking: call from a blocking context.
    pub fn prune(&self) -> std::io::Result<PruneReport> {
        evict(&self.layout, &self.config)
    }
}

/// Removes damaged entries, entries unused for longer than the threshold, then least recently
/// used entries while the cache is above its size limit. Entries being installed or leased by
/// a task are skipped.
pub(super) fn evict(layout: &Layout, config: &Settings) -> std::io::Result<PruneReport> {
    layout.sweep_leftovers(None);
    let mut report = PruneReport::default();
    let now = SystemTime::now();
    let mut live: Vec<(Key, SystemTime, u64)> = Vec::new();
    let mut doomed: Vec<(Key, u64, &'static str)> = Vec::new();
    for key in layout.scan()? {
        let dir = layout.entry(&key);
        let size = store::dir_size(&dir);
        let used = store::last_used(&dir).unwrap_or(SystemTime::UNIX_EPOCH);
        if store::check_entry(&dir, &key).is_err() {
            doomed.push((key, size, "damaged"));
        } else if now.duration_since(used).unwrap_or_default() > config.unused_threshold {
            doomed.push((key, size, "unused"));
        } else {
            live.push((key, used, size));
        }
    }
    let remove =
        |key: &Key, size: u64, why: &str, report: &mut PruneReport| -> std::io::Result<bool> {
            let name = format!("{} {} {}", key.tool, key.version, key.platform);
            match store::try_lock_for_removal(layout, key)? {
                None => {
                    report.kept_in_use.push(name);
                    Ok(false)
                }
                Some(_locks) => {
                    layout.remove_entry(key)?;
                    tracing::debug!(entry = %name, reason = why, "removed from the software cache");
                    report.removed.push(format!("{name} ({why})"));
                    report.freed_bytes += size;
                    Ok(true)
                }
            }
        };
    for (key, size, why) in doomed {
        remove(&key, size, why, &mut report)?;
    }
    // Least recently used first, skipping what is in use, until under the limit.
    let mut total: u64 = live.iter().map(|(_, _, s)| s).sum();
    live.sort_by_key(|(_, used, _)| *used);
    for (key, _, size) in live {
        if total <= config.size_limit_bytes {
            break;
        }
        if remove(&key, size, "over the size limit", &mut report)? {
            total -= size;
        }
    }
    report.remaining_bytes = layout
        .scan()?
        .iter()
        .map(|k| store::dir_size(&layout.entry(k)))
        .sum();
    Ok(report)
}

mod rfc3339_opt {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&humantime::format_rfc3339_seconds(*t).to_string()),
            None => s.serialize_none(),
        }
    }
}
