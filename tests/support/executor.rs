//! A fake executor for daemon tests: per task id, it announces scripted steps, writes
//! scripted log bytes in chunks, sleeps, honours cancel, terminate and kill, and returns a
//! scripted status. It records what it saw.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scalr_agent::agent::executor::{Artifact, Executor, FinalStatus, Job, JobOutcome, StepEvent};
use scalr_agent::task::result::{StepKind, StepRecord, StepStatus, TaskResult};

/// What the fake does for one task.
#[derive(Clone, Debug)]
pub struct Script {
    /// Log chunks, written one after another with `pause` between them.
    pub chunks: Vec<Vec<u8>>,
    pub pause: Duration,
    /// Time spent after the log, before returning.
    pub work: Duration,
    pub status: FinalStatus,
    /// Time a graceful cancel (or a terminate) takes before the job returns `Canceled`.
    pub cancel_takes: Duration,
    /// Steps announced (started, then finished) before the log, in order.
    pub steps: Vec<(&'static str, StepKind, StepStatus)>,
    /// Artifacts the job reports (which, file), for the daemon to upload.
    pub artifacts: Vec<(Artifact, std::path::PathBuf)>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            chunks: vec![b"hello from the fake executor\n".to_vec()],
            pause: Duration::ZERO,
            work: Duration::from_millis(20),
            status: FinalStatus::Succeeded,
            cancel_takes: Duration::from_millis(10),
            steps: Vec::new(),
            artifacts: Vec::new(),
        }
    }
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub started: Vec<String>,
    pub canceled: Vec<String>,
    pub terminated: Vec<String>,
    pub killed: Vec<String>,
    pub inputs: HashMap<String, Vec<String>>,
    pub max_concurrent: usize,
}

#[derive(Clone, Default)]
pub struct FakeExecutor {
    pub scripts: Arc<Mutex<HashMap<String, Script>>>,
    pub default: Arc<Mutex<Script>>,
    pub seen: Arc<Mutex<Seen>>,
    running: Arc<AtomicUsize>,
}

impl FakeExecutor {
    pub fn script(&self, task: &str, s: Script) {
        self.scripts.lock().unwrap().insert(task.into(), s);
    }

    /// The full log a script writes.
    pub fn expected_log(s: &Script) -> Vec<u8> {
        s.chunks.concat()
    }
}

impl Executor for FakeExecutor {
    fn execute(&self, mut job: Job) -> Pin<Box<dyn Future<Output = JobOutcome> + Send>> {
        let id = job.task.id.clone();
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        let seen = self.seen.clone();
        let running = self.running.clone();
        Box::pin(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            {
                let mut s = seen.lock().unwrap();
                s.started.push(id.clone());
                s.max_concurrent = s.max_concurrent.max(now);
                let mut files: Vec<String> = std::fs::read_dir(&job.inputs_dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                files.sort();
                s.inputs.insert(id.clone(), files);
            }
            let mut records = Vec::new();
            for (index, &(name, kind, status)) in script.steps.iter().enumerate() {
                let _ = job.steps.send(StepEvent::Started {
                    index,
                    kind,
                    name: name.into(),
                });
                let record = StepRecord {
                    name: name.into(),
                    command: format!("fake {name}"),
                    status,
                    exit_code: Some(i32::from(status != StepStatus::Succeeded)),
                    signal: None,
                    duration_ms: 5,
                    leftovers_killed: 0,
                    kind,
                };
                records.push(record.clone());
                let _ = job.steps.send(StepEvent::Finished { index, record });
            }
            let body = async {
                for (n, chunk) in script.chunks.iter().enumerate() {
                    if n > 0 && !script.pause.is_zero() {
                        tokio::time::sleep(script.pause).await;
                    }
                    job.log.output(chunk);
                }
                tokio::time::sleep(script.work).await;
            };
            let status = tokio::select! {
                _ = body => script.status,
                _ = job.cancel.kill.cancelled() => {
                    seen.lock().unwrap().killed.push(id.clone());
                    FinalStatus::Canceled
                }
                _ = job.cancel.graceful.cancelled() => {
                    seen.lock().unwrap().canceled.push(id.clone());
                    tokio::select! {
                        _ = tokio::time::sleep(script.cancel_takes) => {}
                        _ = job.cancel.kill.cancelled() => seen.lock().unwrap().killed.push(id.clone()),
                    }
                    FinalStatus::Canceled
                }
                _ = job.cancel.terminate.cancelled() => {
                    seen.lock().unwrap().terminated.push(id.clone());
                    tokio::select! {
                        _ = tokio::time::sleep(script.cancel_takes) => {}
                        _ = job.cancel.kill.cancelled() => seen.lock().unwrap().killed.push(id.clone()),
                    }
                    FinalStatus::Canceled
                }
            };
            running.fetch_sub(1, Ordering::SeqCst);
            job.log.end_output();
            let mut result = TaskResult::new(&id, job.task.action, status, "1970-01-01T00:00:00Z");
            result.steps = records;
            JobOutcome {
                status,
                result: Some(result),
                artifacts: script.artifacts.clone(),
                error: None,
            }
        })
    }
}
