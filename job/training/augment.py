"""What real pictures vary that MNIST does not, applied to training batches: strokes thicker or thinner, a blur, a
trip through a low resolution (a small scan enlarged), gray edges made softer or harder, and a small rotation,
scale and shear. Each change is given its own window of the (shuffled) batch; whole windows at once as tensor
operations, on the batch's device, drawn from the training generator (the same seed gives the same batches).

Pictures reach the model through lenet_client's preprocessing (the digit's box fitted into 20x20 of 28x28, its ink
stretched to full contrast): these are what is left to vary after it. Figures: docs/results.md ("Augmentation"),
its cost: docs/performance.md ("Augmentation's cost").
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# The share of a batch each change is given. Low enough that a batch is still mostly MNIST as it is: the test set is.
SHARE = 0.12
SMALLEST_SCAN = 9  # the whole 28x28 image through 9x9 is a digit about 6 px high: the smallest scans seen
WARP = 0.15  # the largest change of each entry of the 2x2 matrix: rotations up to ~9 degrees, scale and shear alike


def vary(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`images` [N, 1, H, W], paper at their minimum and full ink at their maximum (0-1 pixels scaled by any
    increasing affine map, as the job's standardized ones are); returns as many, some of them changed.

    Each change is given its own window of SHARE of the batch, which is in random order (training batches are drawn
    from a shuffled epoch); neighbouring windows overlap by a quarter, so that some images get two changes in a row
    (a thick stroke scanned small, as real scans are) and about 60 % get at least one. Windows rather than a draw
    per image and change, and each change in a few tensor operations: on a CPU the cost per training step is the
    number of operations, not the pixels."""
    width = max(1, round(len(images) * SHARE))  # a batch of a few images still gets its changes, one image each
    low, high = images.amin(), images.amax()

    def gray_edges(chosen: torch.Tensor) -> torch.Tensor:
        """Partial coverage made fainter or stronger: the ink (0-1) to a power from 0.5 to 2."""
        power = 0.5 + 1.5 * float(torch.rand(1, generator=generator, device=generator.device))
        return ((chosen - low) / (high - low).clamp_min(1e-6)).clamp_min(1e-6) ** power * (high - low) + low

    changes = (thicker, lambda chosen: scanned_small(chosen, generator), thinner, gray_edges, blurred,
               lambda chosen: warped(chosen, generator))
    step = max(1, (3 * width) // 4)
    varied = images.clone()
    for index, change in enumerate(changes):
        window = varied[index * step:index * step + width]
        if len(window):
            window.copy_(change(window))
    return varied


def thicker(images: torch.Tensor) -> torch.Tensor:
    """Strokes a pixel wider on each side: the largest of each 3x3 neighbourhood, by rows then by columns (five
    operations: faster here than F.max_pool2d with stride 1, docs/performance.md)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    rows = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def thinner(images: torch.Tensor) -> torch.Tensor:
    """Strokes a pixel narrower: the least of each 2x2 neighbourhood (a 3x3 one would erase MNIST's thinnest)."""
    padded = F.pad(images, (0, 1, 0, 1), mode="replicate")
    rows = torch.minimum(padded[..., :-1], padded[..., 1:])
    return torch.minimum(rows[..., :-1, :], rows[..., 1:, :])


def blurred(images: torch.Tensor) -> torch.Tensor:
    """A 3x3 binomial blur: [1, 2, 1] / 4 by rows, then by columns (faster here than F.conv2d on one channel)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    rows = 0.25 * padded[..., :-2] + 0.5 * padded[..., 1:-1] + 0.25 * padded[..., 2:]
    return 0.25 * rows[..., :-2, :] + 0.5 * rows[..., 1:-1, :] + 0.25 * rows[..., 2:, :]


def scanned_small(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The images scanned at one small size by area (9x9 to 19x19), enlarged back by nearest (blocks) or by
    bilinear (smooth) sampling, as scans of small digits are enlarged."""
    draw = int(torch.randint(0, 2 * (20 - SMALLEST_SCAN), (1,), generator=generator, device=generator.device))
    small = F.adaptive_avg_pool2d(images, SMALLEST_SCAN + draw // 2)
    grid = identity_grid(*images.shape[-2:], images.device, images.dtype).expand(len(images), -1, -1, -1)
    return F.grid_sample(small, grid, mode=("nearest", "bilinear")[draw % 2], align_corners=False)


def warped(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image through its own random linear map near the identity, about its centre: a small rotation,
    scale and shear (bilinear; outside, the border: paper)."""
    n, _, height, width = images.shape
    change = torch.rand(n * 2, 2, generator=generator, device=generator.device, dtype=images.dtype)
    matrix = torch.eye(2, device=images.device, dtype=images.dtype).repeat(n, 1) + WARP * (2 * change - 1)
    # [2n, 2] @ [2, H*W]: one matrix product for the whole batch (faster here than a batched one).
    points = matrix @ identity_grid(height, width, images.device, images.dtype).view(-1, 2).T
    grid = points.view(n, 2, height, width).permute(0, 2, 3, 1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@functools.cache
def identity_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, H, W, 2]: where F.grid_sample finds each pixel's centre (x, y in -1..1, align_corners=False)."""
    ys = (2 * torch.arange(height, device=device, dtype=dtype) + 1) / height - 1
    xs = (2 * torch.arange(width, device=device, dtype=dtype) + 1) / width - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).unsqueeze(0)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset of up to `max_shift` pixels, filling with background."""
    n, _, height, width = images.shape
    background = images.amin()
    padded = F.pad(images - background, (max_shift,) * 4) + background  # F.pad's fill must be a Python number
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator, device=generator.device)
    # Every HxW window of each padded image, as a view; picking one window per image copies whole rows, where
    # indexing each pixel by its row and column took longer (docs/performance.md).
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # [n, 1, 2s+1, 2s+1, H, W]
    return windows[torch.arange(n, device=images.device), :, offsets[0, :, 0], offsets[1, :, 0]]
