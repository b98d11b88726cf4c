#!/usr/bin/env bash
# Build the MLflow server image of compose.yaml's `tracking` profile (docker/mlflow.Dockerfile), run it as compose
# does (non-root, read-only root filesystem, a volume at /mlflow), and log a short run of the job (from .venv, on
# the host) to it: the run must be logged and both models registered as `champion`. For machines without a Docker
# engine (this project's): root, Debian's podman/runc/debootstrap, PyPI and a Debian mirror. From the repo root,
# after `make setup`:   sudo docker/tracking-smoke-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=${SMOKE_WORK:-/var/tmp/lenet-tracking-smoke}
source docker/podman.sh "$work"

echo "== base image python:3.11-slim (registries are unreachable: built locally with debootstrap)"
debian_image python:3.11-slim python3,python3-venv,python-is-python3,ca-certificates

echo "== build docker/mlflow.Dockerfile"
build_image lenet-mnist-mlflow:latest docker/mlflow.Dockerfile

echo "== run it as compose.yaml's mlflow service, on 127.0.0.1:15000"
"${podman[@]}" rm -f lenet-mlflow-smoke >/dev/null 2>&1 || true
"${podman[@]}" volume rm -f lenet-mlflow-smoke >/dev/null 2>&1 || true
"${podman[@]}" run -d --name lenet-mlflow-smoke --read-only --tmpfs /tmp --cap-drop=ALL \
    --security-opt no-new-privileges -v lenet-mlflow-smoke:/mlflow -p 127.0.0.1:15000:5000 \
    lenet-mnist-mlflow:latest >/dev/null
trap '"${podman[@]}" rm -f lenet-mlflow-smoke >/dev/null 2>&1 || true; "${podman[@]}" volume rm -f lenet-mlflow-smoke >/dev/null 2>&1 || true' EXIT
for _ in $(seq 120); do curl -fs -o /dev/null http://127.0.0.1:15000/health && break; sleep 1; done
curl -fs -o /dev/null http://127.0.0.1:15000/health || { "${podman[@]}" logs lenet-mlflow-smoke | tail -20; exit 1; }
# The train service calls it by its compose name: that Host header must be allowed.
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: mlflow:5000' \
    'http://127.0.0.1:15000/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default')
echo "   Host: mlflow:5000 -> $code"
[ "$code" = 200 ] || { echo "tracking smoke test: the compose name is refused ($code)" >&2; exit 1; }

echo "== a short run of the job logged to it"
rm -rf "$work/job" && mkdir -p "$work/job"
(cd "$work/job" && MLFLOW_TRACKING_URI=http://127.0.0.1:15000 LENET_TRACKING_REQUIRED=true LENET_TRAIN_LIMIT=2000 \
    LENET_TEST_LIMIT=500 LENET_EPOCHS=1 LENET_MIN_TEST_ACCURACY=0 LENET_DEVICE=cpu "$OLDPWD/.venv/bin/python" -m job \
    | tail -3)
.venv/bin/python - <<'PY'
from mlflow import MlflowClient
client = MlflowClient("http://127.0.0.1:15000", "http://127.0.0.1:15000")
for variant in ("plain", "bn_dropout"):
    champion = client.get_model_version_by_alias(f"lenet-mnist-{variant}", "champion")
    run = client.get_run(champion.run_id)
    print(f"   lenet-mnist-{variant}@champion: version {champion.version}, run {run.info.run_name} {run.info.status}, "
          f"{len(client.get_metric_history(run.info.run_id, f'{variant}/test_accuracy'))} epoch(s) of test_accuracy")
PY
echo "tracking smoke test passed"
