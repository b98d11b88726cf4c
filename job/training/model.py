"""Stage 3: the two LeNet-5 variants the tutorial compares.

conv1 is padded by 2 (as in the original LeNet-5, whose input was 32x32) so that a 28x28 MNIST image
leaves 16x5x5 = 400 features for fc1, the size the tutorial gives it. Without the padding only 16x4x4 = 256
features remain and the tutorial's own forward pass fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10


class MaxPool2x2(nn.Module):
    """`F.max_pool2d(x, 2)`, with a faster path for training on the CPU.

    On the CPU, max_pool2d's forward pass over NCHW 28x28 planes took 2.5 ms per batch of 128 (measured, one
    thread): a fifth of a training step. Taking the maximum of the four strided quarters of the input takes
    0.2 ms. The fast path also computes the same indices max_pool2d would (the first maximum of each window
    wins ties, as in max_pool2d) and hands them to max_pool2d's own backward kernel, so its outputs and
    gradients are bit for bit those of max_pool2d (tests/test_model.py). Under torch.inference_mode (the job's
    evaluation and the parity check's reference) the same maximum, without indices, evaluates 10,000 images in
    0.15 s instead of 0.40 s. TorchScript and the exporters, which trace outside inference mode, take max_pool2d, so
    every exported file holds the standard pooling operator.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and not torch.jit.is_scripting() and x.shape[-2] % 2 == 0
                and x.shape[-1] % 2 == 0):
            if self.training and x.requires_grad:
                return self.train_forward(x)
            if torch.is_inference_mode_enabled():  # the job's evaluation; never while an exporter traces the model
                return self.inference_forward(x)
        return F.max_pool2d(x, 2)

    @torch.jit.unused
    def train_forward(self, x: torch.Tensor) -> torch.Tensor:
        return MaxPool2x2Function.apply(x)

    @torch.jit.unused
    def inference_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class MaxPool2x2Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        top_left, top_right = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
        bottom_left, bottom_right = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        top, bottom = torch.maximum(top_left, top_right), torch.maximum(bottom_left, bottom_right)
        lower = top < bottom  # strict comparisons: on a tie the earlier position wins
        # torch.where on these masks took 0.5 ms per batch of 128 here, the two logical operations 0.02 ms.
        right = (lower & (bottom_left < bottom_right)) | (~lower & (top_left < top_right))
        height, width = x.shape[-2:]
        window_start = torch.arange(0, height, 2, dtype=torch.int32).view(-1, 1) * width + \
            torch.arange(0, width, 2, dtype=torch.int32)
        # The arithmetic in int32 and one conversion to the int64 that max_pool2d's backward takes: in int64 the
        # same three operations took 0.17-0.97 ms on 128x6x14x14 here, in int32 0.06 ms.
        index = lower.to(torch.int32).mul_(width).add_(right).add_(window_start).long()
        ctx.save_for_backward(x, index)
        return torch.maximum(top, bottom)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)


class LeNet(nn.Module):
    """LeNet-5 as the tutorial specifies it; with `batch_norm`, BatchNorm follows every layer but the last,
    and Dropout(`dropout`) follows each hidden fully connected layer.

    Each convolution is max-pooled before its ReLU, the reverse of the tutorial's code: the two commute exactly
    (the same outputs and the same gradients, tests/test_model.py), and the ReLU then touches a quarter of the
    values. With MaxPool2x2's training path, this cut a bn_dropout training step from 14.2 to 11.4 ms (medians,
    both variants training at once, docs/performance.md).
    """

    def __init__(self, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()

        def normalized(layer: nn.Module, norm: type[nn.Module], width: int) -> list[nn.Module]:
            return [layer, norm(width)] if batch_norm else [layer]

        def regularized() -> list[nn.Module]:
            return [nn.Dropout(dropout)] if dropout > 0 else []

        self.features = nn.Sequential(
            *normalized(nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.BatchNorm2d, 6), MaxPool2x2(), nn.ReLU(),
            *normalized(nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d, 16), MaxPool2x2(), nn.ReLU(),
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


class CheckpointError(ValueError):
    """A checkpoint, or the model.json beside it, is missing, damaged, or not one this job wrote."""


def load_trained(checkpoint: Path) -> tuple[LeNet, dict[str, str]]:
    """A model this job exported, rebuilt from its state_dict (model.pt) and the model.json beside it, in eval mode;
    with that metadata. Anything else is a CheckpointError whose message names the file and what is wrong."""
    from lenet_client.contract import preprocessing
    from lenet_client.jsonfile import read_json
    from lenet_client.text import printable

    described = checkpoint.parent / "model.json"
    try:
        metadata = cast(dict[str, str], read_json(described))  # any other shape: the errors below
        variant, dropout = metadata["model.variant"], float(metadata["model.dropout"])
        preprocessing(metadata)
        model = build_model(variant, dropout)
    except FileNotFoundError:
        raise CheckpointError(f"{printable(described)}: no such file (a checkpoint needs the model.json written "
                              f"beside it)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        raise CheckpointError(f"{printable(described)}: not the metadata of a model this job exported "
                              f"({reason})") from None
    if checkpoint.exists() and not checkpoint.is_file():  # reading a pipe would wait for a writer forever
        raise CheckpointError(f"{printable(checkpoint)}: not a regular file (allowed: the model.pt this job wrote)")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{printable(checkpoint)}: no such file") from None
    except Exception as error:  # torch.load raises pickle, zip, EOF and runtime errors for damaged files
        raise CheckpointError(f"{printable(checkpoint)}: not a state_dict this job saved ({gist(error)})") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{printable(checkpoint)}: does not fit the {variant} model that model.json "
                              f"describes ({gist(error)})") from None
    return model.eval(), metadata


def gist(error: Exception, limit: int = 200) -> str:
    """torch's errors run to several lines and paragraphs: their first sentence, on one line."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."
