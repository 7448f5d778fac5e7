//! Shared test helpers: a release mirror on 127.0.0.1, OpenPGP test keys, release builders and
//! the real Terraform 1.0.3 binary. Used by the `it` test binary and the benchmarks.
#![allow(dead_code)]

pub mod control_plane;
pub mod executor;
pub mod gateway;
pub mod git_server;
pub mod keys;
pub mod mirror;
pub mod providers;
pub mod queue_depth;
pub mod registry;
pub mod relay;
pub mod releases;
pub mod sshd;
pub mod standins;
pub mod terraform;
