#!/usr/bin/env bash
# Everything a lent GPU machine's few minutes should measure, in one call, each step with its own time limit and
# everything kept under $OUT (./gpu-out when $OUT is unset). On a machine without CUDA the CUDA steps say so and are
# skipped, so this runs (and is tested) on a CPU too. With the device tool, after bench/gpu-wheels.sh here:
#   run(command="bench/gpu.sh", carry=["gpu-wheels"], timeout_s=540)
# Steps: 1 install the carried wheels; 2 nvidia-smi and versions; 3 the tests that can use CUDA; 4 the full default
# job with LENET_DEVICE=auto (report and log kept); 5 a torch.profiler summary of one epoch per variant.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/client${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
PYTHON=${PYTHON:-python3}
step() { echo "== $1 (limit $2 s)" | tee -a "$OUT/steps.log"; }
finish() { echo "   exit $1" | tee -a "$OUT/steps.log"; }

step "install carried wheels" 120
if [ -d gpu-wheels ]; then
    # by name, so that pip takes the wheels that fit this Python and keeps what is already installed
    names=$(ls gpu-wheels | sed 's/-[0-9].*//' | tr '\n' ' ')
    timeout 120 "$PYTHON" -m pip install --no-index --find-links gpu-wheels --no-deps $names \
        > "$OUT/install.log" 2>&1; finish $?
else
    echo "   no gpu-wheels/ folder: using what is installed" | tee -a "$OUT/steps.log"
fi

step "machine and versions" 60
{ if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi; timeout 60 "$PYTHON" -c '
import platform, torch, onnxruntime
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| onnxruntime", onnxruntime.__version__, "| cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0), "|", torch.cuda.device_count(), "device(s)")'; } \
    2>&1 | tee "$OUT/machine.txt"
CUDA=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)

step "tests that can use CUDA (device selection, model, export)" 240
# GPU_TESTS: other test files (tests/test_bench.py's dry run takes one: the suite runs them all anyway).
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not slow" \
    ${GPU_TESTS:-tests/test_device.py tests/test_model.py tests/test_export.py} > "$OUT/tests.log" 2>&1; finish $?
tail -1 "$OUT/tests.log"

if [ "$CUDA" != 1 ]; then
    echo "== no CUDA device: the job on the GPU and the profile are skipped" | tee -a "$OUT/steps.log"
    exit 0
fi

step "the full default job, LENET_DEVICE=auto" 300
START=$(date +%s.%N)
LENET_DEVICE=auto LENET_OUTPUT_DIR="$OUT/outputs" LENET_DATA_DIR="$OUT/data" timeout 300 "$PYTHON" -m job \
    > "$OUT/job.log" 2>&1; finish $?
echo "   wall $(echo "$(date +%s.%N) - $START" | bc) s, process start to exit" | tee -a "$OUT/steps.log"
tail -6 "$OUT/job.log"
cp "$OUT"/outputs/runs/*/report.json "$OUT/report.json" 2>/dev/null

step "torch.profiler: one epoch per variant on the GPU" 180
timeout 180 "$PYTHON" - "$OUT" > "$OUT/profile.txt" 2>&1 <<'PY'; finish $?
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from job.training.data import load_mnist
from job.training.model import build_model
from job.settings import RECIPES
from job.training.train import train_model

device, recipe = torch.device("cuda"), replace(RECIPES["default"], epochs=1)
data = load_mnist(Path(sys.argv[1]) / "data", download=False, normalize=True).to(device)
for variant in ("plain", "bn_dropout"):
    model = build_model(variant, recipe.dropout).to(device)
    train_model(model, data.train, data.test, replace(recipe, epochs=1), device=device, seed=0, eval_batch_size=512)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        history, _ = train_model(build_model(variant, recipe.dropout).to(device), data.train, data.test, recipe,
                                 device=device, seed=0, eval_batch_size=512)
    print(f"== {variant}: one epoch {history[0].seconds:.2f} s, test accuracy {100 * history[0].test_accuracy:.2f} %")
    print(trace.key_averages().table(sort_by="cuda_time_total", row_limit=15))
PY
grep "^==" "$OUT/profile.txt"
