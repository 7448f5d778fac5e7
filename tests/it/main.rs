//! Integration tests: one binary, one module per capability, shared helpers in `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod control;
mod crash;
mod daemon;
mod exec;
mod harness;
mod health;
mod isolation;
mod sandbox;
mod shutdown;
mod software;
mod stage;
mod users;
