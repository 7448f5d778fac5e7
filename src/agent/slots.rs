//! The task slots: at most `SCALR_AGENT_CONCURRENCY` tasks at once, and the one set that owns
//! every task's future.
//!
//! A slot is taken (a permit) before the agent asks for a task, so it never acquires one it
//! has no room for; the task gives it back as soon as its executor returned, while its
//! delivery may go on in the set. Dropping [`Slots`] aborts whatever still runs in it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// The slots and the tasks in them.
pub(super) struct Slots {
    free: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

impl Slots {
    pub(super) fn new(count: u32) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(count as usize)),
            tasks: JoinSet::new(),
        }
    }

    /// Waits for a free slot; the permit holds it until dropped.
    pub(super) async fn take(&self) -> OwnedSemaphorePermit {
        self.free
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// How many slots are free now.
    pub(super) fn free(&self) -> u32 {
        self.free.available_permits() as u32
    }

    /// Runs a task (holding its permit) in the set.
    pub(super) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Forgets the tasks that ended (delivery included).
    pub(super) fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Waits for every task, delivery included.
    pub(super) async fn join_all(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Aborts what still runs (undelivered reports stay in the spool) and waits for it.
    pub(super) async fn shutdown(&mut self) {
        self.tasks.shutdown().await;
    }
}
