#!/usr/bin/env bash
# Runs the smoke tests of the built images (tests/images, `cargo test --test images`) with
# podman configured for this kind of machine (images/env.sh). Build the images first
# (images/build.sh, RUNNER=1 for the runner). Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
cd "$(dirname "$here")"
export SCALR_AGENT_TEST_IMAGE=${SCALR_AGENT_TEST_IMAGE:-localhost/scalr-agent:dev-amd64}
export SCALR_AGENT_TEST_IMAGE_ARM64=${SCALR_AGENT_TEST_IMAGE_ARM64:-localhost/scalr-agent:dev-arm64}
export SCALR_AGENT_TEST_RUNNER_IMAGE=${SCALR_AGENT_TEST_RUNNER_IMAGE:-localhost/scalr-agent-runner:dev}
cargo test --locked --test images -- --test-threads=2 "$@"
