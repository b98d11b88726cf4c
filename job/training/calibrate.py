"""A calibrated confidence: one temperature T per model, so that the top probability of softmax(logits / T) is, on
average over MNIST-like pictures, the share of such answers that are right (temperature scaling, Guo et al. 2017).

The job has no validation split: all 60,000 training images are trained on, and pictures the model trained on say
nothing of its confidence. The MNIST test set is split instead, by index: T is fitted on the even-indexed images,
and everything the report says of it is measured on the odd-indexed ones, which the fit never saw. Dividing the
logits by T changes no answer, so the accuracy gate's figure is the same either way.

T is fitted only where the fitting half holds enough wrong answers to say how sure the model should be (a model
right on every image would be fitted ever sharper, to no end); else T stays 1, the logits' own softmax, and the
report says so. On pictures unlike MNIST the model errs more, and more surely: docs/results.md has how far this
confidence ranks those errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BINS = 15  # the calibration error's confidence bins, equal width, as in the literature's figures
# The shares of pictures answered, surest first, at which accuracy is reported: finer near all of them, where a
# model that is right 99 % of the time differs.
COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
LOWEST, HIGHEST = 0.05, 20.0  # the temperatures searched: from much sharper to much softer than the raw logits
MIN_ERRORS = 20  # wrong answers in the fitting half below which T is not fitted


@dataclass(frozen=True)
class Calibration:
    temperature: float
    fitted: bool  # False: too few wrong answers to fit on (or a fit at the search's edge), and T is 1
    errors_fitted_on: int  # wrong answers in the fitting half
    error_before: float  # expected calibration error of softmax(logits), on the measuring half
    error: float  # the same, of softmax(logits / temperature)
    coverage_accuracy: list[tuple[float, float]]  # (share answered, surest first; accuracy on those)
    unsure_share: float  # share of the measuring half below min_confidence
    accuracy_when_sure: float | None  # accuracy on the rest (None where every answer is unsure)
    fitted_on: int  # images
    measured_on: int


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimizes the cross-entropy of softmax(logits / T). In b = 1/T the loss is convex (a log-sum-exp of
    linear functions of b, minus a linear one), with derivative mean(E_p[z] - z_label) and second derivative
    mean(Var_p[z]) under p = softmax(b z): Newton's steps on b, kept inside a bracket of the derivative's sign change
    (halved where a step would leave it), find the minimum in a handful of passes over the logits."""
    z, labels = logits.double(), labels.long()
    own = z.gather(1, labels[:, None])[:, 0]

    def slope_and_curvature(b: float) -> tuple[float, float]:
        p = torch.softmax(b * z, dim=1)
        mean = (p * z).sum(1)
        return (mean - own).mean().item(), ((p * z * z).sum(1) - mean * mean).mean().item()

    low, high = 1 / HIGHEST, 1 / LOWEST
    if slope_and_curvature(low)[0] >= 0:  # the loss rises from the softest temperature searched on
        return HIGHEST
    if slope_and_curvature(high)[0] <= 0:  # it falls all the way to the sharpest
        return LOWEST
    b = 1.0
    for _ in range(100):
        slope, curvature = slope_and_curvature(b)
        if abs(slope) < 1e-10 or high - low < 1e-12 * high:
            break
        if slope > 0:
            high = b
        else:
            low = b
        step = b - slope / curvature if curvature > 0 else math.nan
        b = step if low <= step <= high else (low + high) / 2
    return 1 / b


def calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = BINS) -> float:
    """Expected calibration error: over equal-width confidence bins, the gap between each bin's mean confidence
    and its accuracy, weighted by the bin's share of the pictures."""
    which = torch.clamp((confidence * bins).long(), max=bins - 1)
    error = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            gap = confidence[members].double().mean() - correct[members].double().mean()
            error += members.double().mean().item() * abs(gap.item())
    return error


def coverage_accuracy(surety: torch.Tensor, correct: torch.Tensor) -> list[tuple[float, float]]:
    """For each share of the pictures answered, the surest first: the accuracy on them. `surety` ranks them: the
    log of the top probability, which does not round to a tie at 1 as the probability does for confident answers."""
    order = torch.argsort(surety, descending=True, stable=True)
    ranked = correct[order].double()
    return [(coverage, ranked[:max(1, math.ceil(coverage * len(ranked)))].mean().item()) for coverage in COVERAGES]


def calibrate(logits: torch.Tensor, labels: torch.Tensor, min_confidence: float) -> Calibration | None:
    """`logits` and `labels` of the MNIST test set (on the CPU): T fitted on the even-indexed images, everything
    else measured on the odd-indexed ones. None for a test set of fewer than 2 images (LENET_TEST_LIMIT=1): there is
    nothing to measure on."""
    if len(labels) < 2:
        return None
    fit, measure = slice(0, None, 2), slice(1, None, 2)
    errors = int((logits[fit].argmax(1) != labels[fit]).sum())
    temperature = fit_temperature(logits[fit], labels[fit]) if errors >= MIN_ERRORS else 1.0
    fitted = errors >= MIN_ERRORS and LOWEST * 1.01 < temperature < HIGHEST * 0.99
    temperature = temperature if fitted else 1.0
    raw = F.softmax(logits[measure].double(), dim=1)
    scaled = F.log_softmax(logits[measure].double() / temperature, dim=1)
    correct = scaled.argmax(1) == labels[measure]
    confidence = scaled.amax(1).exp()
    sure = confidence >= min_confidence
    return Calibration(
        temperature=temperature, fitted=fitted, errors_fitted_on=errors,
        error_before=calibration_error(raw.amax(1), correct), error=calibration_error(confidence, correct),
        coverage_accuracy=coverage_accuracy(scaled.amax(1), correct),
        unsure_share=1 - sure.double().mean().item(),
        accuracy_when_sure=correct[sure].double().mean().item() if sure.any() else None,
        fitted_on=len(labels[fit]), measured_on=len(labels[measure]))
