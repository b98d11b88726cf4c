"""Stage 3: the two LeNet-5 variants the tutorial compares.

conv1 is padded by 2 (as in the original LeNet-5, whose input was 32x32) so that a 28x28 MNIST image
leaves 16x5x5 = 400 features for fc1, the size the tutorial gives it. Without the padding only 16x4x4 = 256
features remain and the tutorial's own forward pass fails.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


class LeNet(nn.Module):
    """LeNet-5 as the tutorial specifies it; with `batch_norm`, BatchNorm follows every layer but the last,
    and Dropout(`dropout`) follows each hidden fully connected layer."""

    def __init__(self, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()

        def normalized(layer: nn.Module, norm: type[nn.Module], width: int) -> list[nn.Module]:
            return [layer, norm(width)] if batch_norm else [layer]

        def regularized() -> list[nn.Module]:
            return [nn.Dropout(dropout)] if dropout > 0 else []

        self.features = nn.Sequential(
            *normalized(nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.BatchNorm2d, 6), nn.ReLU(), nn.MaxPool2d(2),
            *normalized(nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d, 16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *normalized(nn.Linear(16 * 5 * 5, 120), nn.BatchNorm1d, 120), nn.ReLU(), *regularized(),
            *normalized(nn.Linear(120, 84), nn.BatchNorm1d, 84), nn.ReLU(), *regularized(),
            nn.Linear(84, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(variant: str, dropout: float) -> LeNet:
    if variant == "plain":
        return LeNet()
    if variant == "bn_dropout":
        return LeNet(batch_norm=True, dropout=dropout)
    raise ValueError(f"unknown variant {variant!r} (allowed: plain, bn_dropout)")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
