"""Where a run and its models came from: the metadata written into every exported model (the keys of
lenet_client.contract.METADATA_KEYS) and the versions (libraries, source commit) recorded in the report."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from job.settings import Recipe
from lenet_client.contract import CLASS_LABELS
from lenet_client.preprocess import METHOD as PICTURE_METHOD


@functools.cache
def source_commit() -> str:
    """The checkout's git commit, else the image's SOURCE_COMMIT (docker/Dockerfile), else "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SOURCE_COMMIT", "unknown")


def library_versions() -> dict[str, str]:
    """From the installed distributions' metadata: importing torchvision and onnx only to read their versions
    cost the job ~1 s of start-up."""
    import torch  # here, not at the top: job.cli imports this module before torch may be imported

    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "source_commit": source_commit()}
    for name, distributions in (("torchvision", ["torchvision"]), ("onnx", ["onnx"]),
                                ("onnxruntime", ["onnxruntime", "onnxruntime-gpu"]), ("pydantic", ["pydantic"]),
                                ("matplotlib", ["matplotlib"])):
        versions[name] = next((found for found in map(installed_version, distributions) if found), "not installed")
    return versions


def project_version() -> str:
    """The installed lenet-mnist version, for --version."""
    return installed_version("lenet-mnist") or "unknown (not installed)"


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_metadata(variant: str, recipe: Recipe, accuracy: float, temperature: float, min_confidence: float,
                   run_id: str, trained_at: datetime) -> dict:
    import torch

    from job.training.data import standardization

    return {
        "model.variant": variant,
        "model.dropout": repr(recipe.dropout if variant == "bn_dropout" else 0.0),
        "model.classes": ",".join(CLASS_LABELS),
        "preprocess.image_size": "28x28",
        "preprocess.color": "white digit on black background, grayscale",
        "preprocess.scale": repr(1 / 255),
        "preprocess.mean": repr(standardization(recipe.normalize)[0]),
        "preprocess.std": repr(standardization(recipe.normalize)[1]),
        "preprocess.method": PICTURE_METHOD,
        "metrics.test_accuracy": f"{accuracy:.4f}",
        "calibration.temperature": repr(temperature),
        "calibration.min_confidence": repr(min_confidence),
        "run.id": run_id,
        "run.trained_at": trained_at.isoformat(),
        "run.torch_version": torch.__version__,
        "run.source_commit": source_commit(),
        "run.recipe": recipe.name,
    }
