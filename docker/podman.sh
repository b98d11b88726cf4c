# Sourced by the smoke tests (docker/*smoke-test.sh): podman on a machine without a Docker engine or a container
# registry (this project's). Needs root, Debian's podman/runc/debootstrap and a Debian mirror.
#   source docker/podman.sh "$work"    # then: "${podman[@]}" ..., debian_image ..., build_image ...

podman_work=$1
mkdir -p "$podman_work"
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v buildah >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah runc debootstrap >/dev/null
fi
# crun fails here ("cgroups in hybrid mode not supported") and containers may not raise RLIMIT_NOFILE. vfs: the
# kernel here offers no overlay for podman; it keeps a full copy of every layer.
cat > "$podman_work/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$podman_work/storage.conf" <<'CONF'
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
export CONTAINERS_CONF=$podman_work/containers.conf CONTAINERS_STORAGE_CONF=$podman_work/storage.conf
podman=(podman --storage-driver vfs --runtime runc)

# debian_image NAME INCLUDE [APT_PACKAGES]: a Debian bookworm image named NAME, unless it exists. It stands in for
# a registry's image (python:3.11-slim, node:20-bookworm-slim). INCLUDE: debootstrap's comma-separated --include;
# APT_PACKAGES: installed by apt inside afterwards (npm's hundreds of small packages are more than --include
# resolves).
debian_image() {
    local name=$1 include=$2 packages=${3:-} rootfs=$podman_work/rootfs
    if "${podman[@]}" image exists "$name"; then
        echo "   $name: already built"
        return
    fi
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$include" bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    if [ -n "$packages" ]; then
        cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
        chroot "$rootfs" apt-get update -q >/dev/null
        # shellcheck disable=SC2086  # a space-separated list of package names
        DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -q --no-install-recommends $packages >/dev/null
    fi
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${podman[@]}" import - "$name" >/dev/null 2>&1
    rm -rf "$rootfs"
    echo "   $name: built with debootstrap"
}

# build_image TAG DOCKERFILE [BUILD OPTIONS...]: podman build of the repository, its log in $podman_work/build.log
# (the log's tail on failure, and exit 1), then the image's size, printed and left in $image_mb. The host's CA
# bundle is mounted into the build for pip's and npm's proxy, not copied into the image.
build_image() {
    local tag=$1 dockerfile=$2
    shift 2
    "${podman[@]}" build --pull=never -f "$dockerfile" -t "$tag" "$@" \
        -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro . >"$podman_work/build.log" 2>&1 \
        || { tail -30 "$podman_work/build.log"; exit 1; }
    image_mb=$(($("${podman[@]}" image inspect "$tag" --format '{{.Size}}') / 1000000))
    echo "   image size: $image_mb MB"
}
