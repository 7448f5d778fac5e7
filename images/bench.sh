#!/usr/bin/env bash
# Measures the images for BENCHMARKS.md: compressed sizes of the amd64 agent image (gzip and
# zstd archives as `buildah push` writes them) with a per-package breakdown, the runner image's
# size per tool, and the start-up figures (benches/container_start.rs). Build the images first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
cd "$(dirname "$here")"
IMAGE=${IMAGE:-localhost/scalr-agent:dev-amd64}
BASE=${BASE:-localhost/debian-base:trixie-slim}
RUNNER_IMAGE=${RUNNER_IMAGE:-localhost/scalr-agent-runner:dev}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT

echo "## agent image $IMAGE"
buildah push --quiet --compression-format gzip "$IMAGE" "oci-archive:$out/agent-gzip.tar" >/dev/null
buildah push --quiet --compression-format zstd "$IMAGE" "oci-archive:$out/agent-zstd.tar" >/dev/null
ctr=$(buildah from --pull-never "$IMAGE"); mnt=$(buildah mount "$ctr")
bctr=$(buildah from --pull-never "$BASE"); bmnt=$(buildah mount "$bctr")
python3 "$here/image_sizes.py" "$mnt" "$out/agent-gzip.tar" "$out/agent-zstd.tar" "$bmnt"
echo "uncompressed: $(du -sm --apparent-size "$mnt" | cut -f1) MB; agent binary: $(( $(stat -c %s "$mnt/usr/local/bin/scalr-agent") / 1000 )) kB"
buildah umount "$ctr" "$bctr" >/dev/null; buildah rm "$ctr" "$bctr" >/dev/null

if podman image exists "$RUNNER_IMAGE"; then
  echo; echo "## runner image $RUNNER_IMAGE: size per tool"
  buildah push --quiet --compression-format zstd "$RUNNER_IMAGE" "oci-archive:$out/runner-zstd.tar" >/dev/null
  buildah push --quiet --compression-format gzip "$RUNNER_IMAGE" "oci-archive:$out/runner-gzip.tar" >/dev/null
  echo "runner archives: gzip $(( $(stat -c %s "$out/runner-gzip.tar") / 1000000 )) MB, zstd $(( $(stat -c %s "$out/runner-zstd.tar") / 1000000 )) MB"
  # Each tool's share: the packages it pulled in (beyond the agent image), installed size.
  podman run --rm --entrypoint /bin/sh "$RUNNER_IMAGE" -c '
    for t in python3 awscli kubernetes-client; do
      apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "$t" 2>/dev/null | grep "^[a-z]" | sort -u > /tmp/$t.deps || true
    done
    dpkg-query -W -f "\${Package} \${Installed-Size}\n" > /tmp/sizes
    for t in python3 awscli kubernetes-client; do
      kb=$(awk "NR==FNR{d[\$1]=1; next} (\$1 in d){s+=\$2} END{print s+0}" /tmp/$t.deps /tmp/sizes)
      echo "$t (with its dependencies, shared ones counted in each): $((kb / 1024)) MB installed"
    done
    for d in /opt/azure-cli /opt/google-cloud-sdk; do [ -d "$d" ] && echo "$d: $(du -sm "$d" | cut -f1) MB" || echo "$d: not in this build"; done'
fi

echo; echo "## start-up"
IMAGE="$IMAGE" cargo bench --bench container_start
