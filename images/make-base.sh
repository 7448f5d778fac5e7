#!/usr/bin/env bash
# Makes a Debian trixie base image offline from Debian's own packages (no registry needed), for
# CI and air-gapped builds: `make-base.sh ARCH TAG [PACKAGE...]`.
#
# ARCH is amd64 or arm64 (arm64 on an amd64 host needs qemu-user-static + binfmt-support: the
# packages' maintainer scripts run under emulation). Extra PACKAGEs are installed into the base
# (CI puts the agent image's packages into the arm64 base so that no apt run is emulated twice).
# The result matches debian:trixie-slim's conventions: no man pages, docs (copyright files kept)
# or locales, no apt lists; the dpkg excludes stay in /etc/dpkg/dpkg.cfg.d/99mmdebstrap so later
# `apt-get install`s keep them too. Mirrors are taken from the machine's apt sources
# (DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR override them).
set -euo pipefail

arch=${1:?usage: make-base.sh amd64|arm64 TAG [PACKAGE...]}
tag=${2:?usage: make-base.sh amd64|arm64 TAG [PACKAGE...]}
shift 2
case "$arch" in amd64|arm64) ;; *) echo "make-base.sh: ARCH must be amd64 or arm64, got '$arch'" >&2; exit 2;; esac

sources=/etc/apt/sources.list.d/debian.sources
mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2}' "$sources" 2>/dev/null | grep -v security | head -n1 || true)}
security=${DEBIAN_SECURITY_MIRROR:-$(awk '/^URIs:/{print $2}' "$sources" 2>/dev/null | grep security | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${security:-http://deb.debian.org/debian-security}

if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  # Foreign maintainer scripts run through binfmt_misc + qemu-user-static.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "make-base.sh: qemu-aarch64 is not registered with binfmt_misc (install qemu-user-static binfmt-support)" >&2; exit 1; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
include=ca-certificates
for p in "$@"; do include="$include,$p"; done

mmdebstrap --quiet --variant=minbase --architectures="$arch" --format=tar --include="$include" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --aptopt='Acquire::Languages "none"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb "$1"/var/log/*.log "$1"/var/log/apt/*' \
  trixie "$work/base.tar" \
  "deb $mirror trixie main" \
  "deb $mirror trixie-updates main" \
  "deb $security trixie-security main"

ctr=$(buildah from --arch "$arch" scratch)
buildah add "$ctr" "$work/base.tar" / >/dev/null
buildah config --arch "$arch" --os linux --cmd '["/bin/bash"]' \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --label org.opencontainers.image.description="Debian trixie minbase made by images/make-base.sh" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
echo "made $tag ($arch, packages: $include)"
