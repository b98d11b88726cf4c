#!/usr/bin/env bash
# Build the browser app's image (docker/web.Dockerfile) and run it as compose.yaml's `web` service does: non-root,
# read-only root filesystem, no capabilities, the outputs mounted read-only; then fetch the page, onnxruntime-web
# and the published model through it. For machines without a Docker engine (this project's): root, Debian's
# podman/runc/debootstrap, npm's registry and a Debian mirror, ~2 GB of disk. From the repo root, after `make run`:
#   sudo docker/web-smoke-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=${SMOKE_WORK:-/var/tmp/lenet-web-smoke}
base=localhost/debian-nodejs:bookworm  # stands in for node:20-bookworm-slim (no container registry here)
[ -f outputs/latest.json ] || { echo "web smoke test: no outputs/latest.json (run \`make run\` first)" >&2; exit 1; }
source docker/podman.sh "$work"

echo "== base image $base (debootstrap: Debian's nodejs and npm)"
debian_image "$base" ca-certificates "nodejs npm"

echo "== build"
build_image lenet-mnist-web:latest docker/web.Dockerfile --build-arg NODE_IMAGE="$base"

echo "== run as compose.yaml's web service, on 127.0.0.1:18080"
"${podman[@]}" rm -f lenet-web-smoke >/dev/null 2>&1 || true
"${podman[@]}" run -d --name lenet-web-smoke --read-only --cap-drop=ALL --security-opt no-new-privileges \
    -v "$PWD/outputs:/outputs:ro" -p 127.0.0.1:18080:8080 lenet-mnist-web:latest >/dev/null
trap '"${podman[@]}" rm -f lenet-web-smoke >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.2; done
"${podman[@]}" logs lenet-web-smoke
model=$(python3 -c 'import json; print(json.load(open("outputs/latest.json"))["models"]["plain"]["onnx"])')
for path in "" app.js preprocess.js ort/ort.wasm.min.mjs ort/ort-wasm-simd-threaded.wasm outputs/latest.json "outputs/$model"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18080/$path")
    echo "   GET /$path: $code"
    [ "$code" = 200 ] || { echo "web smoke test: /$path answered $code" >&2; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data x http://127.0.0.1:18080/outputs/latest.json)
[ "$code" = 405 ] || { echo "web smoke test: PUT answered $code" >&2; exit 1; }
echo "web smoke test passed"
