//! Shared test helpers, used by the `it` test binary and the benchmarks: the one way to start
//! the real agent ([`agent::AgentBuilder`], from a [`harness::Harness`]), traversable temporary
//! directories, `/proc` and condition waits, a fake control plane and a release mirror on
//! 127.0.0.1, OpenPGP test keys, release builders and the real Terraform 1.0.3 binary.
//! Test modules share nothing with each other: what two of them need lives here.
#![allow(dead_code)]

pub mod agent;
pub mod aws;
pub mod control_plane;
pub mod daemon;
pub mod dirs;
pub mod exec;
pub mod executor;
pub mod gateway;
pub mod git_server;
pub mod harness;
pub mod keys;
pub mod mirror;
pub mod procs;
pub mod providers;
pub mod queue_depth;
pub mod registry;
pub mod relay;
pub mod releases;
pub mod rss;
pub mod sessions;
pub mod sshd;
pub mod standins;
pub mod terraform;
pub mod wait;
