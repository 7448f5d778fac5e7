//! Integration tests: one binary, one module per capability, shared helpers in `tests/support`.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benchmarks read their own fixtures"
)]

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod control;
mod crash;
mod daemon;
mod exec;
mod first_hour;
mod health;
mod identity;
mod isolation;
mod layers;
mod lints;
mod platform;
mod private;
mod protocol;
mod providers;
mod providers_daemon;
mod reclaim;
mod relay;
mod sandbox;
mod scale_out;
mod shutdown;
mod software;
mod stage;
mod trust;
mod users;
