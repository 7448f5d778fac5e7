//! The spool: what the agent owes the control plane, on disk before it is sent.
//!
//! Each task gets a directory `$SCALR_AGENT_DATA_DIR/spool/<task>/` holding `meta.json` (task id
//! and task token), `log` (every log byte, appended in order as the executor writes it),
//! `artifacts/` (copies of the files to upload) and, once the task ended, `final.json` (the
//! final status). The daemon ships from these files and removes the directory only after the
//! control plane accepted the finish. So an outage delays delivery but loses nothing, and after
//! a crash the next start finds every unfinished task here: one without `final.json` was
//! running when the agent died and is finished as errored ("agent restarted").
//!
//! Disk use is bounded (`SCALR_AGENT_SPOOL_LIMIT_MB`): past the bound, a task's log gets one
//! clear truncation line and later bytes are dropped (the task itself goes on); final statuses
//! are tiny and always written. Log writes are not fsynced one by one (a crashed process
//! loses nothing from the page cache); `final.json` is written by rename and fsynced.
#![allow(
    clippy::disallowed_methods,
    reason = "the spool is the agent's own directory; no task code runs there"
)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::control::wire::Finish;
use crate::secret::Secret;

/// A spool operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool {path}: unreadable {what}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error(
        "the spool is full ({limit} bytes, SCALR_AGENT_SPOOL_LIMIT_MB): cannot keep {what} until the control plane answers"
    )]
    Full { limit: u64, what: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spool directory and its disk budget. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    used: Arc<AtomicU64>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    task_id: String,
    task_token: String,
}

impl Spool {
    /// Opens (creating) `dir` and counts what it already holds against `limit` bytes.
    pub fn open(dir: PathBuf, limit: u64) -> Result<Spool, SpoolError> {
        crate::datadir::ensure_dir(&dir, crate::datadir::PRIVATE_DIR).map_err(|e| {
            SpoolError::Io {
                path: dir.clone(),
                source: e.source,
            }
        })?;
        let used = dir_size(&dir);
        Ok(Spool {
            dir,
            limit,
            used: Arc::new(AtomicU64::new(used)),
        })
    }

    /// Bytes on disk.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Starts the spool of a new task.
    pub fn create(&self, task_id: &str, token: &Secret) -> Result<TaskSpool, SpoolError> {
        let dir = self.dir.join(crate::task::id::dir_name(task_id));
        for d in [dir.clone(), dir.join("artifacts")] {
            crate::datadir::ensure_dir(&d, crate::datadir::PRIVATE_DIR).map_err(|e| {
                SpoolError::Io {
                    path: d.clone(),
                    source: e.source,
                }
            })?;
        }
        let meta = serde_json::to_vec(&Meta {
            task_id: task_id.into(),
            task_token: token.expose().into(),
        })
        .expect("serializes");
        write_atomic(&dir.join("meta.json"), &meta)?;
        crate::datadir::create_private(&dir.join("log")).map_err(io_err(&dir))?;
        self.used.fetch_add(meta.len() as u64, Ordering::Relaxed);
        Ok(self.task(dir, task_id.into(), token.clone(), 0))
    }

    /// Every task left in the spool (by an outage or a crash), oldest first.
    pub fn pending(&self) -> Result<Vec<TaskSpool>, SpoolError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let dir = entry.map_err(io_err(&self.dir))?.path();
            let meta_path = dir.join("meta.json");
            let Ok(bytes) = fs::read(&meta_path) else {
                tracing::warn!(dir = %dir.display(), "spool entry without meta.json removed");
                let _ = fs::remove_dir_all(&dir);
                continue;
            };
            let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
                path: meta_path.clone(),
                what: "meta.json",
                reason: e.to_string(),
            })?;
            let log_len = fs::metadata(dir.join("log")).map_or(0, |m| m.len());
            let mtime = fs::metadata(&meta_path).and_then(|m| m.modified()).ok();
            found.push((
                mtime,
                self.task(dir, meta.task_id, Secret::new(meta.task_token), log_len),
            ));
        }
        found.sort_by_key(|(t, _)| *t);
        Ok(found.into_iter().map(|(_, t)| t).collect())
    }

    fn task(&self, dir: PathBuf, task_id: String, token: Secret, log_len: u64) -> TaskSpool {
        TaskSpool {
            shared: Arc::new(Shared {
                dir,
                task_id,
                token,
                spool: self.clone(),
                written: AtomicU64::new(log_len),
                truncated: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                changed: Notify::new(),
            }),
        }
    }
}

/// One task's spool. Clones share it.
#[derive(Debug, Clone)]
pub struct TaskSpool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    task_id: String,
    token: Secret,
    spool: Spool,
    written: AtomicU64,
    truncated: AtomicBool,
    closed: AtomicBool,
    changed: Notify,
}

impl TaskSpool {
    pub fn task_id(&self) -> &str {
        &self.shared.task_id
    }

    pub fn token(&self) -> &Secret {
        &self.shared.token
    }

    /// A writer appending to the log; hand it to the executor.
    pub fn writer(&self) -> Result<SpoolWriter, SpoolError> {
        let path = self.shared.dir.join("log");
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(SpoolWriter {
            file,
            task: self.clone(),
        })
    }

    /// Log bytes written so far.
    pub fn log_len(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Marks the log complete (no writer will append any more) and wakes the shipper.
    pub fn close_log(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.changed.notify_one();
    }

    pub fn log_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Resolves when the log grew or was closed since the last call.
    pub async fn changed(&self) {
        self.shared.changed.notified().await
    }

    /// Reads up to `max` log bytes from `offset` (blocking: call from a blocking thread).
    pub fn read_log(&self, offset: u64, max: usize) -> Result<Vec<u8>, SpoolError> {
        let path = self.shared.dir.join("log");
        let mut f = File::open(&path).map_err(io_err(&path))?;
        f.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
        let mut buf = Vec::with_capacity(max.min(1 << 20));
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(io_err(&path))?;
        Ok(buf)
    }

    /// The hex SHA-256 of the log's bytes so far (blocking: call from a blocking thread), for
    /// the finish's `log_sha256`.
    pub fn log_sha256(&self) -> Result<String, SpoolError> {
        use sha2::Digest;
        let path = self.shared.dir.join("log");
        let f = File::open(&path).map_err(io_err(&path))?;
        let mut hasher = sha2::Sha256::new();
        io::copy(&mut f.take(self.log_len()), &mut hasher).map_err(io_err(&path))?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Copies an artifact into the spool; returns the copy's path.
    pub fn store_artifact(&self, name: &str, src: &Path) -> Result<PathBuf, SpoolError> {
        let size = fs::metadata(src).map_err(io_err(src))?.len();
        let spool = &self.shared.spool;
        if spool.used() + size > spool.limit {
            return Err(SpoolError::Full {
                limit: spool.limit,
                what: format!("artifact {name} of task {}", self.task_id()),
            });
        }
        let dest = self
            .shared
            .dir
            .join("artifacts")
            .join(crate::task::id::dir_name(name));
        let mut from = File::open(src).map_err(io_err(src))?;
        let mut to = crate::datadir::create_private(&dest).map_err(io_err(&dest))?;
        io::copy(&mut from, &mut to).map_err(io_err(&dest))?;
        spool.used.fetch_add(size, Ordering::Relaxed);
        Ok(dest)
    }

    /// The artifacts stored so far, by name.
    pub fn artifacts(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = fs::read_dir(self.shared.dir.join("artifacts"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        out.sort();
        out
    }

    /// Deletes a stored artifact (one the control plane refused: it is not sent again).
    pub fn drop_artifact(&self, name: &str) {
        let path = self
            .shared
            .dir
            .join("artifacts")
            .join(crate::task::id::dir_name(name));
        let size = fs::metadata(&path).map_or(0, |m| m.len());
        match fs::remove_file(&path) {
            Ok(()) => {
                let used = &self.shared.spool.used;
                let _ = used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(size))
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(task = %self.task_id(), artifact = name, error = %e, "cannot remove the artifact from the spool")
            }
        }
    }

    /// Records the final status (durably) before it is sent.
    pub fn write_final(&self, finish: &Finish) -> Result<(), SpoolError> {
        let log = self.shared.dir.join("log");
        if let Ok(f) = File::open(&log) {
            let _ = f.sync_all();
        }
        let bytes = serde_json::to_vec(finish).expect("serializes");
        self.shared
            .spool
            .used
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        write_atomic(&self.shared.dir.join("final.json"), &bytes)
    }

    /// The recorded final status, if the task ended.
    pub fn final_report(&self) -> Result<Option<Finish>, SpoolError> {
        let path = self.shared.dir.join("final.json");
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| SpoolError::Corrupt {
                    path,
                    what: "final.json",
                    reason: e.to_string(),
                }),
        }
    }

    /// Deletes the task's spool (after the control plane accepted the finish, or refused
    /// the task for good).
    pub fn remove(&self) {
        let size = dir_size(&self.shared.dir);
        if let Err(e) = fs::remove_dir_all(&self.shared.dir) {
            tracing::warn!(task = %self.task_id(), error = %e, "cannot remove the task's spool");
            return;
        }
        let used = &self.shared.spool.used;
        let _ = used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
            Some(u.saturating_sub(size))
        });
    }
}

/// Appends the executor's log bytes to the spool, within the disk bound.
pub struct SpoolWriter {
    file: File,
    task: TaskSpool,
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = &self.task.shared;
        if shared.truncated.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        let spool = &shared.spool;
        if spool.used() + buf.len() as u64 > spool.limit {
            shared.truncated.store(true, Ordering::Relaxed);
            let line = format!(
                "\n[scalr-agent] log truncated: the agent's spool is full ({} bytes, SCALR_AGENT_SPOOL_LIMIT_MB); the control plane has been unreachable for too long\n",
                spool.limit
            );
            tracing::error!(task = %shared.task_id, limit = spool.limit, "spool full: the task's log is truncated");
            self.append(line.as_bytes())?;
            return Ok(buf.len());
        }
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SpoolWriter {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        let shared = &self.task.shared;
        shared
            .spool
            .used
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        shared.written.fetch_add(buf.len() as u64, Ordering::AcqRel);
        shared.changed.notify_one();
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    let mut f = crate::datadir::create_private(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::wire::FinalStatus;

    #[test]
    fn log_final_and_recovery() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path().join("spool"), 1 << 20).unwrap();
        let t = spool.create("task/1", &Secret::new("tok")).unwrap();
        let mut w = t.writer().unwrap();
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(t.log_len(), 11);
        assert_eq!(t.read_log(6, 100).unwrap(), b"world");
        assert!(t.final_report().unwrap().is_none());
        let finish = Finish {
            status: FinalStatus::Failed,
            result: Some(crate::task::result::TaskResult::new(
                "task/1",
                crate::task::model::Action::Plan,
                FinalStatus::Failed,
                "2026-01-01T00:00:00.000Z",
            )),
            error: None,
            log_size: 11,
            log_sha256: None,
        };
        t.write_final(&finish).unwrap();
        let again = Spool::open(d.path().join("spool"), 1 << 20).unwrap();
        let pending = again.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].task_id(), "task/1");
        assert_eq!(pending[0].token().expose(), "tok");
        assert_eq!(pending[0].log_len(), 11);
        assert_eq!(pending[0].final_report().unwrap(), Some(finish));
        pending[0].remove();
        assert!(again.pending().unwrap().is_empty());
        assert_eq!(again.used(), 0);
    }

    #[test]
    fn the_bound_truncates_with_a_clear_line() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path().to_path_buf(), 200).unwrap();
        let t = spool.create("t", &Secret::new("x")).unwrap();
        let mut w = t.writer().unwrap();
        w.write_all(&[b'a'; 100]).unwrap();
        w.write_all(&[b'b'; 100]).unwrap();
        w.write_all(b"more").unwrap();
        let log = t.read_log(0, 10_000).unwrap();
        let text = String::from_utf8_lossy(&log);
        assert!(text.starts_with(&"a".repeat(100)), "{text}");
        assert!(text.contains("log truncated") && !text.contains("bb") && !text.ends_with("more"));
        let big = d.path().join("big");
        fs::write(&big, vec![0u8; 500]).unwrap();
        let err = t.store_artifact("plan-file", &big).unwrap_err();
        assert!(err.to_string().contains("spool is full"), "{err}");
    }
}
