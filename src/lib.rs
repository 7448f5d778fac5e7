//! `scalr-agent`: a self-hosted agent that runs OpenTofu/Terraform stages as sandboxed child
//! processes inside its own container, on behalf of a control plane.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.
#![deny(unsafe_code)]
// Functions stay under 80 lines (clippy.toml) unless they say why (ARCHITECTURE.md, Invariants).
#![warn(clippy::too_many_lines)]
// Unit tests build their own fixtures (their crate root is this file under `cfg(test)`); the
// library itself is linted without this (ARCHITECTURE.md, Invariants).
#![cfg_attr(
    test,
    allow(
        clippy::disallowed_methods,
        reason = "unit tests read, write and remove their own fixtures"
    )
)]

pub mod agent;
pub mod archive;
pub mod cli;
pub mod config;
pub mod control;
pub mod datadir;
pub mod doctor;
pub mod exec;
pub mod http;
pub mod logging;
pub mod platform;
pub mod providers;
pub mod relay;
pub mod retry;
#[allow(unsafe_code)]
pub mod sandbox;
pub mod secret;
pub mod software;
pub mod spool;
pub mod task;
pub mod taskfs;
