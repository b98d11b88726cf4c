"""A confidence that means what it says: one temperature T per model, so that softmax(logits / T)'s top probability
is, on average, the share of answers that are right (temperature scaling, Guo et al. 2017).

The job has no validation split: all 60,000 training images are trained on, and pictures the model trained on say
nothing of its confidence. The MNIST test set is split instead, by index: T is fitted on the even-indexed images,
and the calibration error and the coverage-accuracy curve are measured on the odd-indexed ones, which the fit never
saw. Dividing the logits by T changes no answer, so the accuracy gate's figure is the same either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BINS = 15  # the calibration error's confidence bins, equal width, as in the literature's figures
COVERAGES = tuple(step / 10 for step in range(1, 11))  # the share of pictures answered, surest first
LOWEST, HIGHEST = 0.05, 20.0  # the temperatures searched: from much sharper to much softer than the raw logits


@dataclass(frozen=True)
class Calibration:
    temperature: float
    error_before: float  # expected calibration error of softmax(logits), on the measuring half
    error: float  # the same, of softmax(logits / temperature)
    coverage_accuracy: list[tuple[float, float]]  # (share answered, surest first; accuracy on those)
    fitted_on: int  # images
    measured_on: int


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimizes the cross-entropy of softmax(logits / T). The loss is convex in 1/T (a log-sum-exp of
    linear functions of it, minus a linear one), so a golden-section search over 1/T finds its minimum: 60 steps
    narrow the range to a 1e-12th of itself, one loss each."""
    logits, labels = logits.double(), labels.long()

    def loss(inverse: float) -> float:
        return F.cross_entropy(logits * inverse, labels).item()

    ratio = (math.sqrt(5) - 1) / 2
    low, high = 1 / HIGHEST, 1 / LOWEST
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    loss_left, loss_right = loss(left), loss(right)
    for _ in range(60):
        if loss_left <= loss_right:
            high, right, loss_right = right, left, loss_left
            left = high - ratio * (high - low)
            loss_left = loss(left)
        else:
            low, left, loss_left = left, right, loss_right
            right = low + ratio * (high - low)
            loss_right = loss(right)
    return 1 / ((low + high) / 2)


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


def coverage_accuracy(confidence: torch.Tensor, correct: torch.Tensor) -> list[tuple[float, float]]:
    """For each share of the pictures answered, the surest first: the accuracy on them."""
    order = torch.argsort(confidence, descending=True, stable=True)
    ranked = correct[order].double()
    return [(coverage, ranked[:max(1, math.ceil(coverage * len(ranked)))].mean().item()) for coverage in COVERAGES]


def calibrate(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """`logits` and `labels` of the MNIST test set (on the CPU): T fitted on the even-indexed images, everything
    else measured on the odd-indexed ones."""
    fit, measure = slice(0, None, 2), slice(1, None, 2)
    temperature = fit_temperature(logits[fit], labels[fit])
    raw = F.softmax(logits[measure].double(), dim=1)
    scaled = F.softmax(logits[measure].double() / temperature, dim=1)
    correct = scaled.argmax(1) == labels[measure]
    return Calibration(
        temperature=temperature, error_before=calibration_error(raw.amax(1), correct),
        error=calibration_error(scaled.amax(1), correct),
        coverage_accuracy=coverage_accuracy(scaled.amax(1), correct),
        fitted_on=len(labels[fit]), measured_on=len(labels[measure]))
