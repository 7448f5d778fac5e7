//! Smoke tests of the built container images, with podman and buildah: `version` on both
//! architectures, `doctor` as root and as uid 1000 without capabilities on a read-only root,
//! the real `run` command against the tests' fake control plane on the host's loopback (a real
//! Terraform 1.0.3 plan from the tests' mirror, a `git clone` over ssh from a stage), `podman
//! stop` inside the stop window, the extension example, and a runner build that refuses a
//! download whose SHA-256 does not match.
//!
//! Not part of a plain `cargo test` (`test = false`): the images must be built first.
//! `images/smoke.sh` builds nothing and runs `cargo test --test images` with the images named
//! by `SCALR_AGENT_TEST_IMAGE` (amd64) and `SCALR_AGENT_TEST_IMAGE_ARM64`, podman configured
//! by `images/env.sh`. Needs root, podman, buildah and qemu-user-static; fails, never skips.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benchmarks read their own fixtures and start their own processes"
)]

#[path = "../support/mod.rs"]
mod support;

mod build;
mod podman;
mod run;
