"""Stage 7 (figures): the tutorial's pictures as PNG files, drawn off-screen."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a batch job has no screen; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from job.outcome.report import VariantResult  # noqa: E402
from lenet_client.atomic import atomic_path  # noqa: E402


def save(figure: plt.Figure, path: Path, tight: bool = True) -> Path:
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=100, bbox_inches="tight" if tight else None)
    plt.close(figure)
    return path


def plot_samples(images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """The tutorial's grid: the first 20 images of the first training batch, with their labels, in 2 rows of 10.
    One picture of all 20 with the labels above each, not 20 subplots: a quarter of the time to draw (a run of
    256 images draws it before its first epoch)."""
    tiles = np.squeeze(images[:20], axis=1) if images.ndim == 4 else images[:20]
    height, width = tiles.shape[1:]
    top, gap = height // 2, width // 7  # room for a label above each image, and between images
    framed = np.pad(tiles, ((0, 20 - len(tiles)), (top, gap), (gap, gap)), constant_values=tiles.min())
    sheet = np.concatenate([np.concatenate(list(framed[row * 10:(row + 1) * 10]), axis=1) for row in range(2)])
    figure = plt.figure(figsize=(20, 5))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(sheet, cmap=plt.cm.binary, interpolation="nearest", aspect="auto")
    for i, label in enumerate(labels[:20]):
        axes.text((i % 10 + 0.5) * framed.shape[2] - 0.5, (i // 10) * framed.shape[1] + top / 2, str(int(label)),
                  ha="center", va="center", fontsize=16)
    axes.axis("off")
    return save(figure, path, tight=False)


def plot_curves(result: VariantResult, path: Path) -> Path:
    """The tutorial's figure: training/test accuracy and loss side by side."""
    epochs = [e.epoch for e in result.epochs]
    figure, (accuracy, loss) = plt.subplots(1, 2, figsize=(12, 3))
    accuracy.plot(epochs, [100 * e.train_accuracy for e in result.epochs], label="Training Accuracy")
    accuracy.plot(epochs, [100 * e.test_accuracy for e in result.epochs], label="Test Accuracy")
    accuracy.set(title=f"{result.variant}: Training and Test Accuracy", xlabel="epoch", ylabel="%")
    accuracy.legend(loc="lower right")
    loss.plot(epochs, [e.train_loss for e in result.epochs], label="Training Loss")
    loss.plot(epochs, [e.test_loss for e in result.epochs], label="Test Loss")
    loss.set(title=f"{result.variant}: Training and Test Loss", xlabel="epoch", ylabel="cross-entropy")
    loss.legend(loc="upper right")
    return save(figure, path)


def plot_comparison(results: list[VariantResult], path: Path) -> Path:
    """Every variant's test accuracy and loss on one figure, and how right each is on the pictures it is surest of
    (coverage-accuracy, on the half of the test set the calibration did not fit on)."""
    figure, (accuracy, loss, coverage) = plt.subplots(1, 3, figsize=(18, 3))
    for result in results:
        epochs = [e.epoch for e in result.epochs]
        accuracy.plot(epochs, [100 * e.test_accuracy for e in result.epochs], marker="o", label=result.variant)
        loss.plot(epochs, [e.test_loss for e in result.epochs], marker="o", label=result.variant)
        if result.calibration is not None:
            points = result.calibration.coverage_accuracy
            coverage.plot([100 * p.coverage for p in points], [100 * p.accuracy for p in points], marker="o",
                          label=result.variant)
    accuracy.set(title="Test accuracy by variant", xlabel="epoch", ylabel="%")
    loss.set(title="Test loss by variant", xlabel="epoch", ylabel="cross-entropy")
    coverage.set(title="Accuracy on the surest share of the test images", xlabel="share answered, surest first (%)",
                 ylabel="% right")
    accuracy.legend(loc="lower right")
    loss.legend(loc="upper right")
    if any(result.calibration is not None for result in results):
        coverage.legend(loc="lower left")
    else:  # a test set of one image (LENET_TEST_LIMIT=1) has nothing to measure it on
        coverage.text(0.5, 0.5, "not measured: fewer than 2 test images", ha="center", transform=coverage.transAxes)
    return save(figure, path)


def plot_confusion(result: VariantResult, path: Path) -> Path:
    """On the MNIST test set."""
    return plot_matrix(result.confusion_matrix, f"{result.variant}: confusion matrix "
                                                f"({100 * result.final_test_accuracy:.2f}% right)", path)


def plot_extra_confusion(result: VariantResult, path: Path) -> Path:
    """On LENET_EXTRA_DATA's holdout."""
    holdout = result.extra_holdout
    assert holdout is not None  # called only for a run with an extra holdout
    return plot_matrix(holdout.confusion_matrix, f"{result.variant}, extra holdout: {holdout.images} pictures "
                                                 f"({100 * holdout.accuracy:.2f}% right)", path)


def plot_matrix(confusion: list[list[int]], title: str, path: Path) -> Path:
    matrix = np.array(confusion)
    figure, axes = plt.subplots(figsize=(6, 5.5))
    # Log colour scale: the diagonal holds ~1000 per cell and the errors a handful; linear would hide them.
    shown = axes.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            axes.text(col, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if row == col else "black")
    axes.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    figure.colorbar(shown, ax=axes, label="log(1 + count)")
    return save(figure, path)
