//! Step events: what the runner announces while a task runs, so a listener (the daemon) can
//! report steps as they happen instead of only in `result.json`.
//!
//! The events come from the one step recorder (`Run::step` in `stages`) that also fills
//! `result.json`'s `steps`, so the two never disagree. They carry only masked text: the step's
//! name goes through the task's masker, and the record's command is masked already.

use tokio::sync::mpsc::UnboundedSender;

use super::result::{StepKind, StepRecord};

/// One change of one step.
#[derive(Debug, Clone)]
pub enum StepEvent {
    /// The step is about to start its process.
    Started {
        /// The step's position in the task, from 0: its index in `result.json`'s `steps`.
        index: usize,
        kind: StepKind,
        /// Masked.
        name: String,
    },
    /// The step ended; `record` is the one `result.json` holds at `index`.
    Finished { index: usize, record: StepRecord },
}

/// Where step events go. Unbounded: sending never blocks the runner (a task has a handful of
/// steps), and a listener that went away is ignored.
pub type StepEvents = UnboundedSender<StepEvent>;
