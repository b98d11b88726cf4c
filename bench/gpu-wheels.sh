#!/usr/bin/env bash
# Download, on this machine (which reaches PyPI), the wheels that bench/gpu.sh installs on a lent GPU machine
# (Python 3.12, no network; it already has torch, torchvision, onnx, onnxruntime, numpy, matplotlib and pytest).
# They go to gpu-wheels/ (ignored by git), which the device tool's `carry` takes along:
#   bench/gpu-wheels.sh && du -sh gpu-wheels     # a few MB
# Versions are this project's pins (constraints.txt); --no-deps keeps out what the machine already has.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" constraints.txt; }
rm -rf gpu-wheels
python3 -m pip download --quiet --dest gpu-wheels --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    "$(pin pydantic)" "$(pin pydantic_core)" "$(pin pydantic-settings)" "$(pin python-dotenv)" \
    "$(pin annotated-types)" "$(pin typing-inspection)" "$(pin typing_extensions)" "$(pin torchinfo)" \
    "$(pin onnxscript)" "$(pin onnx-ir)" ml_dtypes "$(pin tqdm)" "$(pin filelock)" "$(pin hypothesis)" \
    "$(pin sortedcontainers)" attrs
ls gpu-wheels
