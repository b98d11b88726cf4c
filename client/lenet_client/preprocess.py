"""Any picture of one digit -> the 28x28 picture the model was trained on, built the way MNIST's were.

MNIST's digits were made thus: the ink of each digit was fitted into a 20x20 box, keeping its aspect ratio,
with anti-aliasing, then placed in a 28x28 field so that its center of mass sat at the field's center. A photo,
a scan or a canvas drawing goes through the same steps here, after its ink has been found. numpy and Pillow
only, and every step is plain arithmetic (no library filter), so that an app in another language can port it
exactly; docs/model-contract.md states each step with its constants and gives a test vector.

    to_mnist(image) -> uint8 [28, 28], white ink on black, as in MNIST's own files
    to_input(image, scale, mean, std) -> float32 [1, 28, 28], the model's input
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from lenet_client.ink import NoDigitError, digit_ink, window_extreme

METHOD = "mnist-fit-20-center-of-mass-28 v1"  # the ONNX metadata's preprocess.method names this algorithm
MAX_PIXELS = 40_000_000  # larger pictures are refused before decoding (a 39.5 MP one peaks at 0.9 GB in predict)
MIN_SIDE = 8  # a smaller picture cannot hold a recognizable digit
WORK_SIDE = 512  # pictures are first reduced so that their longer side is at most this
FINE_SIDE = 80  # strokes are measured and grown with the digit at this size (4 x the 20x20 box)
MIN_STROKE = 1.5  # strokes thinner than this once fitted into 20x20 are grown to it (MNIST: 10th percentile)
BOX, FIELD, CENTER = 20, 28, 14.0  # MNIST: fit into 20x20, place in 28x28, center of mass at (14, 14)


def grayscale(image: Image.Image) -> np.ndarray:
    """float64 [H, W] in 0-1 from any mode. Transparent areas become the paper: white under dark ink, black
    under light ink, so that a stroke drawn on a transparent canvas stays visible whatever its color."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        return np.clip(pixels / (65535.0 if pixels.max(initial=0) <= 65535 else pixels.max()), 0, 1)
    if image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(pixels if pixels.max(initial=0) <= 1 else pixels / 255.0, 0, 1)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    channels = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))  # uint8: a quarter of the memory
    gray = np.empty(channels.shape[:2])
    for start in range(0, len(gray), 256):  # row blocks: a 40 MP photo never exists as floats per channel
        rgb = channels[start:start + 256, :, :3] / 255.0
        gray[start:start + 256] = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114  # BT.601 luma
    if not has_alpha:
        return gray
    alpha = channels[..., 3] / 255.0
    if alpha.sum() == 0:
        return np.ones_like(gray)
    paper = 1.0 if (gray * alpha).sum() / alpha.sum() < 0.5 else 0.0
    return gray * alpha + paper * (1 - alpha)


def area_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in]: each output pixel is the mean of the input it covers (fractional coverage counted)."""
    edges = np.arange(size_out + 1) * (size_in / size_out)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixel = np.arange(size_in)[None, :]
    overlap = np.clip(np.minimum(ends, pixel + 1) - np.maximum(starts, pixel), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize_area(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    return area_matrix(pixels.shape[0], height) @ pixels @ area_matrix(pixels.shape[1], width).T


def fit_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) with the longer one `side`, keeping the aspect ratio; each at least 1."""
    scale = side / max(height, width)
    return max(1, int(np.floor(height * scale + 0.5))), max(1, int(np.floor(width * scale + 0.5)))


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: the stroke area over half its boundary (a stroke of width w and length L has
    area w * L and 2 * L boundary pixels). Strokes are where the soft ink is at least 0.5."""
    strokes = ink >= 0.5
    inner = window_extreme(strokes.astype(float), 3, np.min) > 0
    boundary = int((strokes & ~inner).sum())
    return 2 * int(strokes.sum()) / boundary if boundary else 0.0


def thickened(fine: np.ndarray) -> np.ndarray:
    """A pen line on a large picture ends up far thinner than MNIST's strokes once fitted into 20x20 (MNIST's are
    1.3-2.8 pixels wide there, median 2.0), and models read thin strokes badly, the BatchNorm variant worst
    (docs/results.md). `fine` is the digit at FINE_SIDE; strokes thinner than MIN_STROKE at 20x20 are grown to it
    (a square maximum filter, on a margin wide enough to grow into)."""
    width = stroke_width(fine) * BOX / FINE_SIDE
    radius = int(np.floor((MIN_STROKE - width) / 2 * FINE_SIDE / BOX + 0.5)) if width < MIN_STROKE else 0
    if not radius:
        return fine
    return window_extreme(np.pad(fine, radius), 2 * radius + 1, np.max)


def to_mnist(image: Image.Image) -> np.ndarray:
    """uint8 [28, 28]: the digit's ink fitted into 20x20 (aspect kept, area-averaged), its center of mass
    placed at (14, 14) of the 28x28 field, white on black as in MNIST's files."""
    if min(image.size) < MIN_SIDE:
        raise NoDigitError(f"too small to hold a digit: {image.size[0]}x{image.size[1]} pixels (allowed: at least "
                           f"{MIN_SIDE}x{MIN_SIDE})")
    gray = grayscale(ImageOps.exif_transpose(image))
    gray = resize_area(gray, *fit_size(*gray.shape, min(WORK_SIDE, max(gray.shape))))
    ink = digit_ink(gray)
    rows, cols = np.nonzero(ink)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    fine = thickened(resize_area(crop, *fit_size(*crop.shape, FINE_SIDE)))
    patch = resize_area(fine, *fit_size(*fine.shape, BOX))
    patch /= patch.max()  # MNIST's strokes reach full white: thin or faint ink is brought up to it
    mass = patch.sum()
    center_row = (patch.sum(axis=1) * np.arange(patch.shape[0])).sum() / mass
    center_col = (patch.sum(axis=0) * np.arange(patch.shape[1])).sum() / mass
    top = int(np.clip(np.floor(CENTER - center_row + 0.5), 0, FIELD - patch.shape[0]))
    left = int(np.clip(np.floor(CENTER - center_col + 0.5), 0, FIELD - patch.shape[1]))
    field = np.zeros((FIELD, FIELD))
    field[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
    return np.floor(field * 255 + 0.5).astype(np.uint8)


def to_input(image: Image.Image, scale: float, mean: float, std: float) -> np.ndarray:
    """float32 [1, 28, 28]: the MNIST-style picture, then the model's own scale, mean and std."""
    return ((to_mnist(image).astype(np.float32) * scale - mean) / std)[None]
