"""Any picture of one digit -> the 28x28 picture the model was trained on, built the way MNIST's were.

MNIST's digits were made thus: the ink of each digit was fitted into a 20x20 box, keeping its aspect ratio,
with anti-aliasing, then placed in a 28x28 field so that its center of mass sat at the field's center. A photo,
a scan or a canvas drawing goes through the same steps here, after its ink has been found (lenet_client.ink).
numpy and Pillow only, whole-array arithmetic; docs/model-contract.md states each step with its constants and gives
a test vector, for ports to other languages.

    to_mnist(image) -> uint8 [28, 28], white ink on black, as in MNIST's own files
    to_input(image, scale, mean, std) -> float32 [1, 28, 28], the model's input
    model_input(mnist, scale, mean, std) -> float32: the same from MNIST-style bytes, for a batch
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
from PIL import Image, ImageOps

from lenet_client.ink import NoDigitError, digit_ink, median, window_max

METHOD = "mnist-fit-20-center-of-mass-28 v5"  # the ONNX metadata's preprocess.method names this algorithm
MAX_PIXELS = 40_000_000  # larger pictures are refused before decoding (a JPEG: once reduced, lenet_client.pictures)...
MAX_SIDE = 20_000  # ...and so are longer sides: a strip of 8 x 4,000,000 pixels is 31 KB as a PNG
MIN_SIDE = 8  # a smaller picture cannot hold a recognizable digit
WORK_SIDE = 256  # pictures are first reduced so that their longer side is at most this
STRIP_ROWS = 256  # a large picture is reduced across this many rows at a time
FINE_SIDE = 80  # strokes are measured and grown with the digit at this size (4 x the 20x20 box)
MIN_STROKE = 1.5  # strokes thinner than this once fitted into 20x20 are grown to it (MNIST: 10th percentile)
OPAQUE_PICTURE = 0.7  # a picture with an alpha channel at least this opaque on average is not ink on a canvas
BOX, FIELD, CENTER = 20, 28, 14.0  # MNIST: fit into 20x20, place in 28x28, center of mass at (14, 14)
# What Pillow raises on reading a damaged header or EXIF block (a tag of the wrong type, one past the end)
DAMAGED_HEADER_ERRORS = (SyntaxError, OSError, ValueError, IndexError, KeyError, TypeError, struct.error)


def check_size(width: int, height: int) -> None:
    """Called on the picture's header, before it is decoded."""
    if min(width, height) < MIN_SIDE:
        raise NoDigitError(f"too small to hold a digit: {width}x{height} pixels (allowed: at least "
                           f"{MIN_SIDE}x{MIN_SIDE})")


def fit_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) with the longer one `side`, keeping the aspect ratio; each at least 1."""
    scale = side / max(height, width)
    return max(1, int(np.floor(height * scale + 0.5))), max(1, int(np.floor(width * scale + 0.5)))


def transparent(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def grayscale(image: Image.Image) -> tuple[np.ndarray, bool]:
    """float64 [H, W] in 0-1 from any mode, at working size (longer side at most WORK_SIDE), and whether it is a
    drawing on a transparent canvas. Such a drawing is mostly transparent: what is opaque is the ink, whatever its
    colour, so it becomes dark ink on white paper (its strength: opacity times its contrast with the paper it was
    drawn for, white under dark ink and black under light ink). A picture that is mostly opaque (a screenshot, a
    photo with rounded corners; any PNG saved with an alpha channel it does not use) is a picture whose transparent
    parts are more of its paper: they take the level of the opaque part's median."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0, posinf=0, neginf=0)
        # the scale is the decoded picture's, not its reduction's (whose sums may end a rounding error over 1)
        top = float(pixels.max(initial=0))
        full = (1.0 if top <= 1 else 255.0) if image.mode == "F" else 65535.0 if top <= 65535 else top
        return np.clip(working_size(pixels) / full, 0, 1), False
    if not transparent(image):
        return working_size(np.asarray(luminance(image))) / 255, False
    rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")  # Pillow: no La -> RGBA
    gray = working_size(np.asarray(rgba.convert("L"))) / 255
    alpha = working_size(np.asarray(rgba.getchannel("A"))) / 255
    if alpha.mean() >= OPAQUE_PICTURE:
        return alpha * gray + (1 - alpha) * median(gray[alpha >= 0.5]), False
    if alpha.sum() == 0:
        return np.ones_like(gray), True
    paper = 1.0 if (gray * alpha).sum() / alpha.sum() < 0.5 else 0.0
    return 1 - alpha * np.abs(gray - paper), True


def luminance(image: Image.Image) -> Image.Image:
    """Mode L by way of RGB, as the contract defines it (docs/model-contract.md step 3: Pillow's direct conversions
    to L are not the same for every mode and version; YCbCr's differs by a level); a picture already in L or RGB
    gets the same values without the copies."""
    if image.mode == "L":
        return image
    return (image if image.mode == "RGB" else image.convert("RGB")).convert("L")


def working_size(pixels: np.ndarray) -> np.ndarray:
    """float64, reduced by area averaging to a longer side of at most WORK_SIDE; STRIP_ROWS rows at a time across,
    so that a large photo never exists as floats at full size."""
    height, width = fit_size(pixels.shape[0], pixels.shape[1], min(WORK_SIDE, max(pixels.shape)))
    if (height, width) == pixels.shape:
        return pixels.astype(np.float64)
    across = np.concatenate([area_average(pixels[top:top + STRIP_ROWS], width, 1)
                             for top in range(0, pixels.shape[0], STRIP_ROWS)])
    return area_average(across, height, 0)


def area_average(pixels: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resize one axis to `size` by area averaging: output pixel i is the mean of the input over its span
    [i * n / size, (i + 1) * n / size), partial input pixels counted by the share covered. The input's running
    sum is piecewise linear between whole pixels, so each span's sum is read off it by linear interpolation."""
    length = pixels.shape[axis]
    along = np.moveaxis(pixels, axis, -1)
    # 8-bit pixels add up in int32 (at most 255 x MAX_SIDE): the same sums as in float64, twice as fast
    sum_type = np.int32 if pixels.dtype == np.uint8 else np.float64
    running = np.zeros(along.shape[:-1] + (length + 1,), dtype=sum_type)
    np.cumsum(along, axis=-1, dtype=sum_type, out=running[..., 1:])
    edges = np.arange(size + 1) * (length / size)
    whole = np.minimum(np.floor(edges).astype(np.intp), length - 1)
    at_edges = running[..., whole] + (edges - whole) * along[..., whole]
    return np.moveaxis(np.diff(at_edges, axis=-1) / (length / size), -1, axis)


def resize_area(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    return area_average(area_average(pixels, height, 0), width, 1)


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: the stroke area over half its boundary (a stroke of width w and length L has
    area w * L and 2 * L boundary pixels). Strokes are where the soft ink is at least 0.5."""
    strokes = ink >= 0.5
    inner = -window_max(-strokes.astype(float), 3) > 0  # the minimum over 3x3: every neighbour is stroke
    boundary = int((strokes & ~inner).sum())
    return 2 * int(strokes.sum()) / boundary if boundary else 0.0


def stroked(fine: np.ndarray, leave_out: tuple[str, ...] = ()) -> np.ndarray:
    """Thin strokes grown to MNIST's widths (1.3-2.8 pixels in the 20x20 box, median 2.0): models read thin strokes
    badly, the BatchNorm variant worst (docs/results.md). `fine` is the digit at FINE_SIDE; strokes thinner than
    MIN_STROKE at 20x20 are grown to it (a square maximum filter, on a margin wide enough to grow into). Bold
    strokes are left as they are: thinning them (v3) removed the ink of low-resolution scans, and the held-out
    families read better without it (docs/results.md)."""
    width = stroke_width(fine) * BOX / FINE_SIDE
    if width < MIN_STROKE and "thin strokes" not in leave_out:
        radius = int(np.floor((MIN_STROKE - width) / 2 * FINE_SIDE / BOX + 0.5))
        return window_max(np.pad(fine, radius), 2 * radius + 1) if radius else fine
    return fine


def to_mnist(image: Image.Image, leave_out: tuple[str, ...] = ()) -> np.ndarray:
    """uint8 [28, 28]: the digit's ink fitted into 20x20 (aspect kept, area-averaged), its center of mass placed at
    (14, 14) of the 28x28 field, white on black as in MNIST's files. `leave_out` names steps to skip (ink.STEPS,
    "thin strokes"): for the benchmark's ablation only."""
    check_size(*image.size)
    image = upright(image)
    gray, drawing = grayscale(image)
    ink = digit_ink(gray, leave_out, dark_ink=True if drawing else None)
    rows, cols = np.nonzero(ink)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    fine = stroked(resize_area(crop, *fit_size(crop.shape[0], crop.shape[1], FINE_SIDE)), leave_out)
    return centered(resize_area(fine, *fit_size(fine.shape[0], fine.shape[1], BOX)))


def upright(image: Image.Image) -> Image.Image:
    """The picture turned as its EXIF orientation tag says. A damaged EXIF block (a tag of the wrong type, one that
    runs past the end) leaves the picture as it is, without Pillow's warnings: the pixels are still good."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return ImageOps.exif_transpose(image)
        except DAMAGED_HEADER_ERRORS:
            return image


def centered(patch: np.ndarray) -> np.ndarray:
    """uint8 [28, 28]: the digit fitted into 20x20 (`patch`), its strongest ink brought to full white, placed so that
    its center of mass is at (14, 14), quantized as MNIST's files are."""
    patch = patch / patch.max()  # MNIST's strokes reach full white: thin or faint ink is brought up to it
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
    return model_input(to_mnist(image), scale, mean, std)[None]


def model_input(mnist: np.ndarray, scale: float, mean: float, std: float) -> np.ndarray:
    """float32, the same shape: MNIST-style bytes (any number of pictures) scaled as the model's metadata says."""
    return (mnist.astype(np.float32) * scale - mean) / std
