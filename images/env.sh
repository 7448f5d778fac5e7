# Sourced by the images/ scripts: container tools' settings for this kind of machine, in a
# scratch directory, leaving the system's configuration alone (see images/README.md).
# - podman: runc (crun refuses hybrid cgroups), cgroupfs, and ulimits the VM can grant;
# - buildah and podman: overlay storage under $IMAGES_STATE (default /var/tmp/scalr-agent-images).
IMAGES_STATE=${IMAGES_STATE:-/var/tmp/scalr-agent-images}
mkdir -p "$IMAGES_STATE"
if [ ! -f "$IMAGES_STATE/containers.conf" ]; then
  printf '%s\n' '[containers]' 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' \
    '[engine]' 'runtime = "runc"' 'cgroup_manager = "cgroupfs"' > "$IMAGES_STATE/containers.conf"
fi
if [ ! -f "$IMAGES_STATE/storage.conf" ]; then
  printf '%s\n' '[storage]' 'driver = "overlay"' "graphroot = \"$IMAGES_STATE/storage\"" \
    "runroot = \"$IMAGES_STATE/run\"" > "$IMAGES_STATE/storage.conf"
fi
export CONTAINERS_CONF="$IMAGES_STATE/containers.conf"
export CONTAINERS_STORAGE_CONF="$IMAGES_STATE/storage.conf"
export BUILDAH_ISOLATION=chroot
