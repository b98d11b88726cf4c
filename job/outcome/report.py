"""Stage 7: the run's report, defined by pydantic models so that downstream code reads it without guessing.

`report.schema.json` (written next to every report, and kept in docs/) is generated from these models.
Bump SCHEMA_VERSION whenever a field is renamed, removed or changes meaning.
"""

from __future__ import annotations

import json
from datetime import datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from export.checks import FormatParity
from job.outcome.status import ReportStatus
from lenet_client.atomic import write_text_atomically
from lenet_client.jsonfile import read_regular_text

SCHEMA_VERSION = "1.8"  # 1.1: status "diverged"; parity max_scaled_diff. 1.2: device.processes, variants[].device.
# 1.3: parity[].sample. 1.4: extra_data, variants[].extra_holdout. 1.5: tracking, status "tracking_failed".
# 1.6: test_accuracy, the headline at the top. 1.7: variants[].calibration, status "holdout_too_small",
# extra_data.waiting_pictures. 1.8: variants[].warm_start.
Status = ReportStatus


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Epoch(Strict):
    epoch: int = Field(description="1-based")
    train_accuracy: float = Field(description="Share of training images classified right during the epoch (0-1)")
    train_loss: float = Field(description="Mean cross-entropy per training image during the epoch")
    test_accuracy: float = Field(description="Share of test images classified right after the epoch (0-1)")
    test_loss: float = Field(description="Mean cross-entropy per test image after the epoch")
    seconds: float = Field(description="Wall time of the epoch: training plus evaluation")
    learning_rate: float = Field(description="Learning rate at the end of the epoch")


class Artifact(Strict):
    path: str = Field(description="Relative to the run folder")
    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path, run_dir: Path) -> Artifact:
        data = path.read_bytes()
        return cls(path=str(path.relative_to(run_dir)), sha256=sha256(data).hexdigest(), bytes=len(data))


class ExtraHoldout(Strict):
    images: int
    accuracy: float = Field(description="Share of the extra holdout pictures read right (0-1)")
    loss: float = Field(description="Mean cross-entropy per extra holdout picture")
    confusion_matrix: list[list[int]] = Field(description="Rows: true digit 0-9; columns: predicted digit")


class CoveragePoint(Strict):
    coverage: float = Field(description="Share of the pictures answered, the surest first (0-1)")
    accuracy: float = Field(description="Share of those read right (0-1)")


class CalibrationInfo(Strict):
    """job.training.calibrate: the temperature is fitted on the even-indexed MNIST test images, and every figure
    here measured on the odd-indexed ones."""
    temperature: float = Field(description="Probabilities are softmax(logits / temperature); in the ONNX metadata")
    fitted: bool = Field(description="false: too few wrong answers to fit on, and the temperature is 1")
    errors_fitted_on: int = Field(description="Wrong answers among the images the temperature was fitted on")
    min_confidence: float = Field(description="LENET_MIN_CONFIDENCE: below it lenet-predict answers unsure; in the "
                                              "ONNX metadata")
    calibration_error_before: float = Field(description="Expected calibration error (15 bins) of softmax(logits)")
    calibration_error: float = Field(description="The same, of softmax(logits / temperature)")
    coverage_accuracy: list[CoveragePoint] = Field(description="Accuracy on the surest 50 %, 60 %, ... 99 %, 100 %")
    unsure_share: float = Field(description="Share of the images below min_confidence (0-1)")
    accuracy_when_sure: float | None = Field(description="Accuracy on the others; null where every one is unsure")
    fitted_on_images: int = Field(description="MNIST test images the temperature was fitted on (even indices)")
    measured_on_images: int = Field(description="MNIST test images the figures were measured on (odd indices)")


class VariantResult(Strict):
    variant: str
    device: str | None = Field(None, description="torch device this variant trained on, e.g. cuda:0")
    parameters: int
    epochs: list[Epoch]
    final_test_accuracy: float
    final_test_loss: float
    final_train_accuracy: float
    final_train_loss: float
    training_seconds: float = Field(description="Wall time of all epochs of this variant")
    export_seconds: float = Field(0.0, description="Wall time of writing every model format")
    parity_seconds: float = Field(0.0, description="Wall time of the parity check of every format")
    met_accuracy_gate: bool
    confusion_matrix: list[list[int]] = Field(description="Rows: true digit 0-9; columns: predicted digit")
    artifacts: dict[str, Artifact] = Field(default_factory=dict, description="format name -> file")
    parity: list[FormatParity] = Field(default_factory=list)
    extra_holdout: ExtraHoldout | None = Field(None, description="On LENET_EXTRA_DATA's holdout, when it has one")
    calibration: CalibrationInfo | None = Field(None, description="The calibrated confidence (job.training.calibrate)")
    warm_start: str | None = Field(None, description="LENET_WARM_START: the published model.pt this variant started "
                                                     "from (relative to the output dir); null: random weights")


class SkippedFile(Strict):
    path: str
    reason: str


class ExtraDataInfo(Strict):
    folder: str = Field(description="LENET_EXTRA_DATA")
    version: str = Field(description="SHA-256 over the sorted (content SHA-256, label) pairs of the pictures used")
    share: float = Field(description="LENET_EXTRA_SHARE: the extra pictures' share of each epoch")
    repeats: int = Field(description="Times each extra training picture appears in an epoch")
    train_pictures: dict[str, int] = Field(description="Digit -> distinct extra pictures trained on")
    holdout_pictures: dict[str, int] = Field(description="Digit -> extra pictures held out (by content hash)")
    skipped: list[SkippedFile] = Field(description="Files left out: unreadable, not a picture, or no digit")
    conflicts: list[dict[str, Any]] = Field(description="The same picture under two labels: {sha256, labels, paths}")
    waiting_pictures: int = Field(0, description="Files in unsure/ (lenet-predict --sort-into): not labelled yet, "
                                                 "not trained on")


class ChampionCheck(Strict):
    tolerance: float = Field(description="How much lower than the published accuracy a variant may be")
    compared_with_run: str | None = Field(description="Run id of the published run; null when none was")
    published_accuracy: dict[str, float] = Field(description="variant -> the published model's MNIST test accuracy: "
                                                             "from its report, or with LENET_EXTRA_DATA its ONNX "
                                                             "file evaluated again on today's test set")
    new_accuracy: dict[str, float] = Field(description="variant -> this run's test accuracy (compared variants)")
    holdout_images: int = Field(0, description="Pictures in today's extra holdout; 0 without LENET_EXTRA_DATA")
    published_holdout_accuracy: dict[str, float] = Field(
        default_factory=dict, description="variant -> the published model's accuracy on today's extra holdout (its "
                                          "ONNX file); it may not be higher than the new one's")
    new_holdout_accuracy: dict[str, float] = Field(default_factory=dict,
                                                   description="variant -> this run's accuracy on the extra holdout")
    passed: bool


class Tracking(Strict):
    uri: str = Field(description="MLFLOW_TRACKING_URI, without a user name or password")
    experiment: str = Field(description="LENET_MLFLOW_EXPERIMENT")
    logged: bool = Field(description="Whether the run was logged in full (and, when published, registered)")
    message: str = Field("", description="Why tracking failed; empty when it did not")
    mlflow_run_id: str | None = Field(None, description="The MLflow run of this job's run, once created")
    model_versions: dict[str, str] = Field(default_factory=dict,
                                           description="variant -> version of lenet-mnist-<variant> registered")
    champion_moved: bool = Field(False, description="Whether the alias `champion` now names those versions")
    replaced_versions: dict[str, str | None] = Field(
        default_factory=dict, description="variant -> the version `champion` named before (null: none)")


class DeviceInfo(Strict):
    type: str = Field(description="cpu | cuda | mps | xpu")
    spec: str = Field(description="torch device string, e.g. cuda:0")
    name: str
    threads: int = Field(description="torch threads of each training process")
    processes: int = Field(1, description="training processes at once: one per variant side by side, else 1")


class DataInfo(Strict):
    source: str = Field(description="data_dir | vendored | download")
    raw_dir: str
    train_images: int
    test_images: int
    files: dict[str, dict[str, str]] = Field(description="Uncompressed IDX file -> {md5, sha256}")


class Report(Strict):
    schema_version: str = SCHEMA_VERSION
    status: Status
    message: str = Field("", description="Why the run did not succeed; empty when it did")
    exit_code: int
    test_accuracy: dict[str, float] = Field(default_factory=dict, description="The headline: variant -> its final "
                                            "test accuracy (variants[].final_test_accuracy), for each variant trained")
    run_id: str
    started_at: datetime = Field(description="UTC, ISO 8601")
    finished_at: datetime = Field(description="UTC, ISO 8601")
    elapsed_seconds: float
    device: DeviceInfo | None = None
    versions: dict[str, str] = Field(description="python, torch, torchvision, onnx, onnxruntime, ..., and "
                                                 "source_commit (git commit of the job, or unknown)")
    settings: dict[str, Any] = Field(description="Every LENET_* setting as used, by field name")
    recipe: dict[str, Any] = Field(description="The hyperparameters used, after explicit settings were applied")
    variants_in_parallel: bool = Field(False, description="Variants trained side by side, one process each")
    data: DataInfo | None = None
    extra_data: ExtraDataInfo | None = Field(None, description="Present when LENET_EXTRA_DATA is set")
    min_test_accuracy: float
    accuracy_gate_passed: bool
    champion: ChampionCheck | None = Field(None, description="Present when LENET_CHAMPION_CHECK is on")
    published: bool = Field(False, description="Whether OUTPUT_DIR/latest.json points at this run: written true only "
                                               "once it does")
    variants: list[VariantResult] = Field(default_factory=list)
    plots: dict[str, Artifact] = Field(default_factory=dict, description="figure name -> PNG file")
    tracking: Tracking | None = Field(None, description="Present when MLFLOW_TRACKING_URI is set")


def schema_json() -> str:
    return json.dumps(Report.model_json_schema(), indent=2) + "\n"


def write_report(report: Report, run_dir: Path) -> Path:
    write_text_atomically(run_dir / "report.schema.json", schema_json())
    path = run_dir / "report.json"
    write_text_atomically(path, report.model_dump_json(indent=2) + "\n")
    return path


def read_report(path: Path) -> Report:
    """A report this job wrote; ValueError when the file is not one (OSError when it cannot be read)."""
    return Report.model_validate_json(read_regular_text(Path(path)))
