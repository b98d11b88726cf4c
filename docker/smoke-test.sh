#!/usr/bin/env bash
# Build the image and run `compose run train` for real with podman, then check the outputs on the host.
# For machines without a Docker engine (this project's): needs root, Debian's podman/buildah/runc/debootstrap,
# PyPI and a Debian mirror, and ~25 GB of free disk (vfs storage keeps a full copy of every layer and of every
# RUN step's container: --layers=false keeps the peak near 3 copies of the 6 GB venv). From the repo root:
#   sudo docker/smoke-test.sh            # add KEEP_IMAGE=1 to keep the image afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=${SMOKE_WORK:-/var/tmp/lenet-smoke}
step() { printf '\n== %s\n' "$*"; step_started=$SECONDS; }
took() { printf '   %s: %ss\n' "$1" "$((SECONDS - step_started))"; timings+=("$1: $((SECONDS - step_started))s"); }
timings=()
cleanup() {
    [ -n "${KEEP_IMAGE:-}" ] && return
    podman --storage-driver vfs --runtime runc rmi -f lenet-mnist:latest >/dev/null 2>&1 || true
    podman --storage-driver vfs --runtime runc volume rm -f project_mnist-cache >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "tools and disk"
df -h /var/lib | tail -1
free_gb=$(df --output=avail -BG /var/lib | tail -1 | tr -dc 0-9)
[ "$free_gb" -ge 25 ] || { echo "smoke test: needs 25 GB free under /var/lib, has ${free_gb} GB" >&2; exit 1; }
source docker/podman.sh "$work"
if [ ! -x "$work/venv/bin/podman-compose" ]; then
    python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q 'podman-compose==1.6.*'
fi

step "base image python:3.11-slim (registries are unreachable: built locally with debootstrap)"
debian_image python:3.11-slim python3,python3-venv,python-is-python3,ca-certificates
took "base image"

step "build (PyPI torch; the proxy's CA is mounted into the build, not copied into the image)"
build_image lenet-mnist:latest docker/Dockerfile --layers=false \
    --build-arg SOURCE_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
took "build"
timings+=("image size: $image_mb MB")

step "compose run train (a subset, one epoch) as a non-root host user, read-only root filesystem (compose.yaml)"
# Root on this machine: run as another UID to prove the outputs are owned by whoever HOST_UID names.
host_uid=${HOST_UID:-$(id -u)}; host_gid=${HOST_GID:-$(id -g)}
[ "$host_uid" != 0 ] || { host_uid=4321; host_gid=4321; }
outputs=$work/project/outputs
rm -rf "$work/project" && mkdir -p "$outputs"
cp compose.yaml "$work/project/" && mkdir -p "$work/project/docker" && cp docker/Dockerfile "$work/project/docker/"
chown "$host_uid:$host_gid" "$outputs"
(cd "$work/project" && HOST_UID=$host_uid HOST_GID=$host_gid "$work/venv/bin/podman-compose" \
    --podman-args="--storage-driver vfs --runtime runc" run --rm -T \
    -e LENET_TRAIN_LIMIT=5000 -e LENET_TEST_LIMIT=1000 -e LENET_EPOCHS=1 -e LENET_MIN_TEST_ACCURACY=0.5 train) \
    2>&1 | grep -v -E '│|├|^=+$' | tail -25
took "compose run"

step "read-only root filesystem without a tmpfs on /tmp: one line, exit 6, nothing written"
set +e
message=$("${podman[@]}" run --rm --read-only --read-only-tmpfs=false --cap-drop=ALL \
    --security-opt no-new-privileges --user "$host_uid:$host_gid" -v "$outputs:/outputs" lenet-mnist:latest 2>&1)
code=$?
set -e
echo "   exit $code: $message"
[ "$code" = 6 ] && [ "$(printf '%s\n' "$message" | wc -l)" = 1 ] && [[ "$message" == *"no writable temporary folder"* ]] \
    || { echo "smoke test: expected exit 6 and one line" >&2; exit 1; }
took "read-only without /tmp"

step "outputs on the host"
latest=$outputs/latest.json
[ -f "$latest" ] || { echo "smoke test: no $latest" >&2; exit 1; }
run_dir=$outputs/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_dir"])' "$latest")
find "$outputs" -type f -printf '   %u:%g %6s %P\n' | sort -k3
python3 - "$run_dir" "$host_uid" <<'PY'
import json, os, struct, sys
from pathlib import Path
run_dir, uid = Path(sys.argv[1]), int(sys.argv[2])
report = json.loads((run_dir / "report.json").read_text())
assert report["status"] == "succeeded", report["status"]
print(f"   report: {report['status']}, device {report['device']['spec']} ({report['device']['name']}), "
      + ", ".join(f"{v['variant']} {100 * v['final_test_accuracy']:.2f}%" for v in report["variants"]))
for plot in report["plots"].values():
    header = (run_dir / plot["path"]).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", plot["path"]
for variant in report["variants"]:
    for artifact in variant["artifacts"].values():
        assert (run_dir / artifact["path"]).stat().st_size == artifact["bytes"], artifact["path"]
owners = {p.stat().st_uid for p in run_dir.rglob("*")}
assert owners == {uid}, f"files owned by {owners}, expected {uid}"
print(f"   every file readable, owned by uid {uid}")
PY
took "checks"

printf '\nsmoke test passed:'; printf ' %s;' "${timings[@]}"; echo
