#!/usr/bin/env bash
# Builds the agent image for linux/amd64 and linux/arm64 and a multi-arch manifest list, and
# optionally the runner image. Run from anywhere, as root, with buildah installed.
#
#   images/build.sh                    # binaries (amd64 native, arm64 cross-compiled) + images
#
# Environment (all optional):
#   TAG            manifest list name            (default localhost/scalr-agent:dev)
#   ARCHES         architectures to build        (default "amd64 arm64")
#   BASE_amd64, BASE_arm64
#                  base image per architecture   (default docker.io/library/debian:trixie-slim;
#                  CI passes bases made offline by images/make-base.sh)
#   PROFILE        cargo profile of the binary   (default image: release without LTO)
#   SKIP_BINARIES  1: use images/dist/<arch>/scalr-agent as it is
#   RUNNER         1: also build Dockerfile.agent-runner as $RUNNER_TAG (amd64) from $TAG-amd64
#   RUNNER_ARGS    extra `--build-arg`s for the runner (e.g. SKIP_VENDOR_DOWNLOADS=gcloud)
#   RUNNER_ONLY    1: build only the runner (the agent image exists)
# `build.sh binaries-only` builds the binaries into images/dist/ and stops.
# Each architecture's image is also tagged $TAG-<arch>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
. "$here/env.sh"
cd "$root"

TAG=${TAG:-localhost/scalr-agent:dev}
ARCHES=${ARCHES:-amd64 arm64}
PROFILE=${PROFILE:-image}
VERSION=$(awk -F'"' '/^version *=/{print $2; exit}' Cargo.toml)
REVISION=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

build_binary() {
  local arch=$1 out="images/dist/$1/scalr-agent" dir
  mkdir -p "images/dist/$arch"
  case "$arch" in
    amd64)
      cargo build --locked --profile "$PROFILE" --bin scalr-agent
      dir=target/$PROFILE ;;
    arm64)
      rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
        || rustup target add aarch64-unknown-linux-gnu
      command -v aarch64-linux-gnu-gcc >/dev/null \
        || { echo "build.sh: aarch64-linux-gnu-gcc is missing: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2; exit 1; }
      CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
      CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        cargo build --locked --profile "$PROFILE" --bin scalr-agent --target aarch64-unknown-linux-gnu
      dir=target/aarch64-unknown-linux-gnu/$PROFILE ;;
    *) echo "build.sh: unknown architecture $arch" >&2; exit 2 ;;
  esac
  install -m 0755 "$dir/scalr-agent" "$out"
}

if [ "${SKIP_BINARIES:-0}" != 1 ]; then
  for arch in $ARCHES; do build_binary "$arch"; done
fi
[ "${1:-}" != binaries-only ] || exit 0

# arm64 images run their RUN steps under qemu-user-static through binfmt_misc.
case " $ARCHES " in *" arm64 "*)
  if [ "$(uname -m)" != aarch64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64
  fi ;;
esac

[ "${RUNNER_ONLY:-0}" = 1 ] || {
buildah manifest rm "$TAG" >/dev/null 2>&1 || true
buildah manifest create "$TAG" >/dev/null
for arch in $ARCHES; do
  base_var=BASE_$arch
  base=${!base_var:-docker.io/library/debian:trixie-slim}
  echo "== agent image $TAG-$arch (base $base)"
  start=$(date +%s)
  buildah bud --isolation chroot --platform "linux/$arch" --layers=false \
    --build-arg BASE="$base" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    -f Dockerfile.agent -t "$TAG-$arch" .
  buildah manifest add "$TAG" "$TAG-$arch" >/dev/null
  echo "== $TAG-$arch built in $(( $(date +%s) - start )) s"
done
buildah manifest inspect "$TAG" | grep -E '"architecture"' | sed 's/^ */manifest: /'
}

if [ "${RUNNER:-0}" = 1 ]; then
  RUNNER_TAG=${RUNNER_TAG:-localhost/scalr-agent-runner:dev}
  args=()
  for a in ${RUNNER_ARGS:-}; do args+=(--build-arg "$a"); done
  echo "== runner image $RUNNER_TAG (from $TAG-amd64)"
  buildah bud --isolation chroot --platform linux/amd64 --layers=false \
    --build-arg AGENT_IMAGE="$TAG-amd64" "${args[@]}" -f Dockerfile.agent-runner -t "$RUNNER_TAG" .
fi
