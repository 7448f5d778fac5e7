//! Integration tests: one binary, one module per capability, shared helpers in `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod control;
mod harness;
mod sandbox;
mod software;
mod stage;
