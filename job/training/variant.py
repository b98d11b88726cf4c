"""One variant, start to end: train it on the device, export every format, and prove that each format predicts
what the trained model predicts. Returns the variant's result, built once at the end.

The pipeline calls this once per variant, either in its own process (job.running.pool) or one after the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch
from torchinfo import summary

from job.log import epoch_line, log
from job.outcome.metadata import model_metadata
from job.outcome.report import Artifact, CalibrationInfo, CoveragePoint, Epoch, ExtraHoldout, VariantResult
from job.running.stop import StopRequest
from job.settings import Recipe, Settings
from job.training.calibrate import Calibration, calibrate
from job.training.data import MnistData
from job.training.model import build_model, load_trained, parameter_count
from job.training.train import Diverged, EpochBar, evaluate, train_model
from lenet_client.atomic import write_text_atomically


def train_variant(variant: str, data: MnistData, recipe: Recipe, settings: Settings, device: torch.device,
                  stop: StopRequest, run_id: str, run_dir: Path, warm_start: str | None = None,
                  on_step: Callable[[int, int, int], None] | None = None) -> VariantResult:
    """Train one variant on `device` (where `data` already is), then export it and check that every exported file
    predicts what it predicts. A terminal gets a progress bar within each epoch, unless `on_step` takes the progress
    (variants side by side: the job draws one status line for all of them). `warm_start`: the published model.pt
    (relative to the output dir) to start from instead of random weights (job.outcome.champion.warm_starts)."""
    from export.checks import describe  # torch.export / onnx are loaded only when a model is ready
    from export.formats import export_model
    from export.parity import check_parity

    model_dir = run_dir / "models" / variant
    model_dir.mkdir(parents=True, exist_ok=True)
    # The layer table goes to a file, not the log. It runs a forward pass that draws Dropout masks from the global
    # RNG: it is made from a throwaway copy before seeding, so that it cannot change what the seeded run trains.
    layers = summary(build_model(variant, recipe.dropout), input_size=(1, 1, 28, 28), verbose=0, device="cpu")
    write_text_atomically(model_dir / "summary.txt", f"{layers}\n")
    torch.manual_seed(settings.seed)
    model = build_model(variant, recipe.dropout)
    if warm_start is not None:
        model.load_state_dict(load_trained(settings.output_dir / warm_start)[0].state_dict())
    model = model.to(device)
    layers_file = (model_dir / "summary.txt").relative_to(run_dir)
    start = ""
    if settings.warm_start:
        start = f", starting from the published {warm_start}" if warm_start else ", from random weights"
    log(f"[{variant}] {parameter_count(model):,} parameters (layers: {layers_file}), training on {device}{start}")
    started = time.perf_counter()
    try:
        history, final = train_model(model, data.train, data.test, recipe, device=device, seed=settings.seed,
                                     eval_batch_size=settings.eval_batch_size, check_stop=stop.check,
                                     on_step=on_step or EpochBar(f"[{variant}]"),
                                     on_epoch=lambda metrics: log(epoch_line(variant, metrics)))
    except Diverged as error:
        raise Diverged(f"[{variant}] {error}") from None
    training_seconds = time.perf_counter() - started

    stop.check()
    calibration = calibrate(final.logits, data.test.labels.cpu(), settings.min_confidence)
    if calibration is not None:
        how = (f"calibrated: temperature {calibration.temperature:.3f}" if calibration.fitted else
               f"not calibrated ({calibration.errors_fitted_on} wrong answers to fit on): temperature 1")
        log(f"[{variant}] {how}, calibration error {calibration.error_before:.4f} -> {calibration.error:.4f} on "
            f"{calibration.measured_on} test images")
    log(f"[{variant}] exporting TorchScript, torch.export and ONNX")
    started = time.perf_counter()
    metadata = model_metadata(variant, recipe, final.accuracy, calibration.temperature if calibration else 1.0,
                              settings.min_confidence, run_id, datetime.now(UTC))
    paths = export_model(model, model_dir, metadata)
    export_seconds = time.perf_counter() - started
    stop.check()
    started = time.perf_counter()
    parity = check_parity(model, paths, data.test.images, data.test.labels,
                          batch_sizes=(1, settings.eval_batch_size),
                          max_abs_diff=settings.parity_max_abs_diff, max_rel_diff=settings.parity_max_rel_diff,
                          min_agreement=settings.parity_min_agreement, should_stop=stop.check,
                          # On a CPU the final evaluation ran the eager model on the same images at the same batch
                          # size: its logits are the reference, bit for bit (tests/test_export.py). An accelerator's
                          # are not what the files, run on the CPU, are compared with.
                          reference=final.logits if device.type == "cpu" else None)
    parity_seconds = time.perf_counter() - started
    log(f"[{variant}] exported in {export_seconds:.1f}s, parity checked in {parity_seconds:.1f}s")
    for check in parity:
        log(f"[{variant}] parity {describe(check)}")
    last = history[-1]
    holdout = None
    if data.extra_holdout is not None and len(data.extra_holdout):
        on_holdout = evaluate(model, data.extra_holdout, settings.eval_batch_size)
        holdout = ExtraHoldout(images=len(data.extra_holdout), accuracy=on_holdout.accuracy, loss=on_holdout.loss,
                               confusion_matrix=confusion_of(data.extra_holdout.labels, on_holdout.predictions))
        log(f"[{variant}] extra holdout: accuracy {100 * on_holdout.accuracy:.2f}% on {len(data.extra_holdout)} "
            f"pictures")
    return VariantResult(
        variant=variant, device=str(device), parameters=parameter_count(model),
        epochs=[Epoch(**asdict(m)) for m in history], final_test_accuracy=final.accuracy,
        final_test_loss=final.loss, final_train_accuracy=last.train_accuracy, final_train_loss=last.train_loss,
        training_seconds=training_seconds, export_seconds=export_seconds, parity_seconds=parity_seconds,
        met_accuracy_gate=final.accuracy >= settings.min_test_accuracy,
        confusion_matrix=confusion_of(data.test.labels, final.predictions),
        artifacts={name: Artifact.of(path, run_dir) for name, path in paths.items()}, parity=parity,
        extra_holdout=holdout, calibration=calibration_info(calibration, settings.min_confidence),
        warm_start=warm_start)


def calibration_info(calibration: Calibration | None, min_confidence: float) -> CalibrationInfo | None:
    if calibration is None:
        return None
    return CalibrationInfo(
        temperature=calibration.temperature, fitted=calibration.fitted, errors_fitted_on=calibration.errors_fitted_on,
        min_confidence=min_confidence, calibration_error_before=calibration.error_before,
        calibration_error=calibration.error,
        coverage_accuracy=[CoveragePoint(coverage=c, accuracy=a) for c, a in calibration.coverage_accuracy],
        unsure_share=calibration.unsure_share, accuracy_when_sure=calibration.accuracy_when_sure,
        fitted_on_images=calibration.fitted_on, measured_on_images=calibration.measured_on)


def confusion_of(labels: torch.Tensor, predictions: torch.Tensor) -> list[list[int]]:
    """Rows: true digit; columns: predicted digit."""
    return torch.bincount(labels.cpu() * 10 + predictions.cpu(), minlength=100).reshape(10, 10).tolist()
