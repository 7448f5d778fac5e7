//! `scalr-agent`: a self-hosted agent that runs OpenTofu/Terraform stages as sandboxed child
//! processes inside its own container, on behalf of a control plane.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod secret;
pub mod software;
