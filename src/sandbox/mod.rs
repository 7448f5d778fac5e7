//! The stage sandbox: isolating job code (Terraform providers, hooks) from the agent and from
//! other tasks inside one container, without a container engine. See isolation.md for the
//! threat model.
//!
//! - `probe`: what the platform allows (each check in a throwaway child), the verdict, the
//!   per-task decision, and `harden_agent` for the agent itself;
//! - `policy`: what to apply to one stage, built from the probes and the configuration;
//! - `layers`: applying a policy in the helper's child right before `execve`;
//! - `filter`: the seccomp programs; `sys`: raw system calls; `uid`: the dedicated uid pool,
//!   leased across processes; `leftovers`: what a task uid left (IPC objects, temporary files);
//! - `selftest`: the hidden `__sandbox-selftest`; `settings`: [`Settings`], filled in by
//!   `config`;
//! - `helper`: the per-stage helper process (`__stage`): forks the stage, applies the layers,
//!   forwards signals, kills and reaps the whole tree; `stage`: the agent's side of it, the one
//!   place that spawns child processes.
//!
//! This is the only module allowed `unsafe`; every block carries a `// SAFETY:` comment.

pub mod cgroup;
mod error;
pub mod filter;
mod fork;
pub mod helper;
pub mod layers;
pub mod leftovers;
pub mod policy;
pub mod probe;
pub mod selftest;
mod settings;
pub mod stage;
pub mod sys;
pub mod uid;

pub use settings::{DEFAULT_UID_RANGE, RlimitSettings, Settings, TestDeny};
