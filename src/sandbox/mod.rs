//! Running stage processes: the stage helper (a single-threaded re-exec of the agent that sets
//! up each stage and owns its process tree) and the agent's side of it.
//!
//! This is the one module allowed `unsafe` (for `pre_exec` and raw descriptors in the helper);
//! every block carries a `// SAFETY:` comment.

pub mod helper;
pub mod layers;
pub mod policy;
pub mod stage;
