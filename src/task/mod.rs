//! Running one task end to end: the task model, its directory, its environment, its stages and
//! hooks as child processes (through `sandbox::stage`), masked logs and structured results.
//!
//! - `model`: the task JSON (strict, errors with JSON paths); `id`: the task-id rule;
//! - `prepare`: the task directory, configuration extraction, working directory;
//! - `env`: the allow-listed environment and the CLI configuration file;
//! - `step`: one command through the stage helper, with timeout and cancellation;
//! - `setup`: getting a task ready, its own input checked before any tool download;
//! - `stages`: the steps of plan, apply and policy-check;
//! - `hooks`: hook syntax checks, running a phase's hooks, `SCALR_AGENT_ENV`;
//! - `checks`: Infracost and OPA;
//! - `log`: the masked task log; `result`: `result.json`; `events`: steps announced as they
//!   happen;
//! - `providers`: seeding the run's plugin cache from the provider store, and filling the
//!   store after the run;
//! - `identity`: the platform's identity variables and token files stages inherit;
//! - `users`: the stage's user entry (`passwd`/`group` through `libnss-wrapper`);
//! - `runner`: the entry point shared by `exec` and the daemon; `cancel`: the three ways to
//!   stop a task, shared from the daemon down to each step; `settings`: [`Settings`], filled
//!   in by `config`.

pub mod cancel;
mod checks;
pub mod env;
mod error;
pub mod events;
mod hooks;
pub mod id;
pub mod identity;
pub mod log;
pub mod model;
pub mod prepare;
mod providers;
pub mod result;
pub mod runner;
mod settings;
mod setup;
mod stages;
pub mod step;
pub mod sweep;
pub mod users;

pub use checks::{deny_messages, parse_cost, parse_policy_file};
pub use settings::Settings;
