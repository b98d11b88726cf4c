"""The published model, the champion: the check of whether a new run may replace it (LENET_CHAMPION_CHECK), and its
weights as a new run's start (LENET_WARM_START).

Without extra pictures it compares each variant's MNIST test accuracy with the published run's report. With them
(LENET_EXTRA_DATA), the published model's report knows nothing of today's holdout, which may have grown since: its
ONNX file is evaluated again on today's MNIST test set and today's holdout, so both models are judged on the same
ground.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from job.outcome.publish import POINTER, DamagedFileError, published_run
from job.outcome.report import ChampionCheck
from lenet_client.jsonfile import read_json
from lenet_client.predict import PredictError


@dataclass(frozen=True)
class SameGround:
    """Today's MNIST test set and extra holdout, as uint8 pixels, to judge the published model on them again (its
    report's figures were measured on an older holdout, perhaps a smaller one)."""
    test_pixels: np.ndarray  # uint8 [N, 28, 28]
    test_labels: np.ndarray
    holdout_pixels: np.ndarray
    holdout_labels: np.ndarray
    new_holdout_accuracy: dict[str, float]  # variant -> this run's accuracy on the holdout


def onnx_accuracy(model: Path, pixels: np.ndarray, labels: np.ndarray) -> float:
    """A published ONNX file's accuracy on MNIST-style pixels, scaled as its own metadata says."""
    from lenet_client.contract import INPUT_NAME, OUTPUT_NAME, preprocessing
    from lenet_client.predict import load_model

    session, metadata = load_model(model)
    scale, mean, std = preprocessing(metadata)
    inputs = ((pixels.astype(np.float32) * scale - mean) / std)[:, None]
    predicted = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: inputs[start:start + 1000]})[0].argmax(1)
                                for start in range(0, len(inputs), 1000)])
    return float((predicted == labels).mean())


def check_champion(accuracy: dict[str, float], output_dir: Path, tolerance: float,
                   same_ground: SameGround | None = None) -> ChampionCheck:
    """The new run (`accuracy`: variant -> final test accuracy) may publish only if no variant is worse than the
    published one by more than `tolerance`; with `same_ground`, the published models are evaluated again on
    today's test set and extra holdout, and no variant may be worse on the holdout at all."""
    current = published_run(output_dir)
    if current is None:
        return ChampionCheck(tolerance=tolerance, compared_with_run=None, published_accuracy={},
                             new_accuracy={}, passed=True)
    run_id, champion = current
    recorded = {v.variant: v.final_test_accuracy for v in champion.variants}
    new = {variant: value for variant, value in accuracy.items() if variant in recorded}
    if same_ground is None:
        return ChampionCheck(tolerance=tolerance, compared_with_run=run_id, published_accuracy=recorded,
                             new_accuracy=new, passed=all(new[v] >= recorded[v] - tolerance for v in new))
    old, old_holdout = {}, {}  # the published model's figures on today's ground
    try:
        models = published_onnx(output_dir)
        for variant in new:
            old[variant] = onnx_accuracy(models[variant], same_ground.test_pixels, same_ground.test_labels)
            old_holdout[variant] = onnx_accuracy(models[variant], same_ground.holdout_pixels,
                                                 same_ground.holdout_labels)
    except (KeyError, TypeError, AttributeError, ValueError, OSError, PredictError) as error:
        raise DamagedFileError(f"the published run {run_id}'s model cannot be evaluated again ({error}); restore "
                               f"it, or remove {POINTER} to publish anew") from None
    new_holdout = {v: same_ground.new_holdout_accuracy[v] for v in new}
    passed = all(new[v] >= old[v] - tolerance and new_holdout[v] >= old_holdout[v] for v in new)
    return ChampionCheck(tolerance=tolerance, compared_with_run=run_id, published_accuracy=old, new_accuracy=new,
                         holdout_images=len(same_ground.holdout_labels), published_holdout_accuracy=old_holdout,
                         new_holdout_accuracy=new_holdout, passed=passed)


def published_onnx(output_dir: Path) -> dict[str, Path]:
    """variant -> the published ONNX file, as latest.json names it."""
    pointer = cast(dict[str, Any], read_json(output_dir / POINTER))  # any other shape: the caller's errors
    return {variant: output_dir / files["onnx"] for variant, files in pointer["models"].items() if "onnx" in files}


def warm_starts(output_dir: Path, variants: tuple[str, ...], pixels_mean: float) -> dict[str, str | None]:
    """LENET_WARM_START, decided once before any training: for each variant, the published model.pt it starts from
    (relative to `output_dir`), or None (nothing published, no model of that variant, or one that saw its pixels
    scaled otherwise: another `preprocess.mean`). Each file named is loaded here, so that a damaged one stops the
    run before any variant trains (a DamagedFileError), and every variant starts from the same published run."""
    from job.training.model import CheckpointError, load_trained

    if not (output_dir / POINTER).is_file():
        return dict.fromkeys(variants)
    try:
        models = cast(dict[str, Any], read_json(output_dir / POINTER))["models"]
        named = {variant: models[variant]["state_dict"] if variant in models else None for variant in variants}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DamagedFileError(f"{POINTER} cannot be read for LENET_WARM_START ({type(error).__name__}: {error}); "
                               f"restore it, or set LENET_WARM_START=false") from None
    starts: dict[str, str | None] = {}
    for variant, relative in named.items():
        if relative is None:
            starts[variant] = None
            continue
        if not isinstance(relative, str):
            raise DamagedFileError(f"{POINTER} names {relative!r} as {variant}'s model.pt, not a path; restore it, "
                                   f"or set LENET_WARM_START=false")
        try:
            _, metadata = load_trained(output_dir / relative)
        except CheckpointError as error:
            raise DamagedFileError(f"LENET_WARM_START: {error}; restore it, or set LENET_WARM_START=false") from None
        if metadata["model.variant"] != variant:
            raise DamagedFileError(f"LENET_WARM_START: {relative}, which {POINTER} names for {variant}, is a "
                                   f"{metadata['model.variant']} model; restore it, or set LENET_WARM_START=false")
        starts[variant] = str(relative) if float(metadata["preprocess.mean"]) == pixels_mean else None
    return starts
