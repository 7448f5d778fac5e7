//! `scalr-agent`: a self-hosted agent that runs OpenTofu/Terraform stages as sandboxed child
//! processes inside its own container, on behalf of a control plane.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.
#![deny(unsafe_code)]

pub mod agent;
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
#[allow(unsafe_code)]
pub mod sandbox;
pub mod secret;
pub mod software;
pub mod spool;
pub mod task;
pub mod taskfs;
