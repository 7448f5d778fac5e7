#!/usr/bin/env python3
"""Compressed size of an image and of each Debian package in it (images/bench.sh).

usage: image_sizes.py ROOTFS GZIP_ARCHIVE ZSTD_ARCHIVE [BASE_ROOTFS]

ROOTFS is the image's mounted root (`buildah mount`). Each package's files (from
/var/lib/dpkg/info/<pkg>.list) are put in one tar and compressed with gzip -6 and zstd -3
(the levels `buildah push` uses), which approximates the package's share of the compressed
layers; files no package owns (the agent binary, generated files) are one more line. With
BASE_ROOTFS, packages also present there are marked `base`.
"""
import gzip
import io
import os
import subprocess
import sys
import tarfile


def packages(root):
    info = os.path.join(root, "var/lib/dpkg/info")
    out = {}
    for name in sorted(os.listdir(info)):
        if not name.endswith(".list"):
            continue
        pkg = name[: -len(".list")].split(":")[0]
        with open(os.path.join(info, name), encoding="utf-8", errors="replace") as f:
            paths = [l.rstrip("\n") for l in f if l.strip() and l.strip() != "/."]
        out.setdefault(pkg, []).extend(paths)
    return out


def regular_files(root, paths):
    for p in paths:
        full = os.path.join(root, p.lstrip("/"))
        if os.path.isfile(full) and not os.path.islink(full):
            yield p, full


def compressed(root, paths):
    buf = io.BytesIO()
    raw = 0
    with tarfile.open(fileobj=buf, mode="w") as t:
        for p, full in regular_files(root, paths):
            raw += os.path.getsize(full)
            t.add(full, arcname=p.lstrip("/"), recursive=False)
    data = buf.getvalue()
    gz = len(gzip.compress(data, 6))
    zs = len(subprocess.run(["zstd", "-3", "-q", "-c"], input=data, capture_output=True, check=True).stdout)
    return raw, gz, zs


def main():
    root, gz_archive, zs_archive = sys.argv[1:4]
    base = packages(sys.argv[4]) if len(sys.argv) > 4 else {}
    pk = packages(root)
    owned = set()
    rows = []
    for name, paths in pk.items():
        owned.update(p.lstrip("/") for p in paths)
        raw, gz, zs = compressed(root, paths)
        rows.append((zs, gz, raw, name, "base" if name in base else "added"))
    others = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            if rel not in owned and not rel.startswith(("proc/", "sys/", "dev/")):
                others.append("/" + rel)
    raw, gz, zs = compressed(root, others)
    rows.append((zs, gz, raw, "(files of no package: agent binary, generated)", "-"))
    rows.sort(reverse=True)
    mb = lambda n: f"{n / 1e6:.2f}"
    print(f"image archives: gzip {mb(os.path.getsize(gz_archive))} MB, zstd {mb(os.path.getsize(zs_archive))} MB")
    print()
    print("| package | origin | files MB | gzip MB | zstd MB |")
    print("|---|---|---:|---:|---:|")
    for zs, gz, raw, name, origin in rows:
        if zs >= 200_000:
            print(f"| {name} | {origin} | {mb(raw)} | {mb(gz)} | {mb(zs)} |")
    small = [r for r in rows if r[0] < 200_000]
    print(f"| {len(small)} smaller packages | | {mb(sum(r[2] for r in small))} | {mb(sum(r[1] for r in small))} | {mb(sum(r[0] for r in small))} |")
    print(f"| **sum of the lines** | | {mb(sum(r[2] for r in rows))} | {mb(sum(r[1] for r in rows))} | {mb(sum(r[0] for r in rows))} |")


if __name__ == "__main__":
    main()
