//! Running one task end to end: the task model, its directory, its environment, its stages and
//! hooks as child processes (through `sandbox::stage`), masked logs and structured results.

pub mod log;
pub mod model;
