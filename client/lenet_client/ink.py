"""Find a digit's ink in a grayscale picture: which side is ink, the paper's shading, the threshold, and what is not
the digit (frame lines, specks). Steps 4-8 of docs/model-contract.md; lenet_client.preprocess does the rest.

Nothing here assumes that the paper is most of the picture or that the border is paper: a tight crop of a bold
digit touches the edges and covers half the picture. numpy only, whole-array arithmetic, so that it is fast and
can be ported exactly.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

BORDER_BAND = 0.05  # the border band: this share of the shorter side (at least 2 pixels)...
BORDER_UNIFORM = 0.5  # ...is uniform when its 10th-90th percentiles span at most this share of the picture's range
MIN_CONTRAST = 0.05  # ink must stand this far above the paper (0-1 scale: 13 of 255 levels)...
MIN_COHERENCE = 0.5  # ...and at least this share of what crossed the threshold must touch two more such pixels
NOISE_SIGMAS = 5  # the threshold stays this many of the paper's noise deviations above the paper's level
FRAME_MARGIN = 0.08  # a frame line lies within this share of a side (at least 4 pixels)...
FRAME_COVERAGE = 0.8  # ...runs along this share of it...
FRAME_SIDES = 3  # ...is found along at least this many sides...
FRAME_GAP, FRAME_GAPS = 0.2, 2  # ...with paper inside it (a row covering at most this share) on this many
CORNER = 0.1  # the corner squares that decide the polarity of a digit cropped to its own box: this share of a side
MIN_PART = 0.05  # a part separated from the rest by empty rows or columns, lighter than this share: a speck
STEPS = ("shading", "noise floor", "frame", "specks")  # the steps that can be left out (bench.pictures' ablation)


class NoDigitError(ValueError):
    """The picture holds no ink that could be a digit."""


def window_max(pixels: np.ndarray, window: int) -> np.ndarray:
    """Maximum over a square window centered on each pixel; the edges repeat the nearest pixel."""
    half = window // 2
    for axis in (0, 1):
        first, last = pixels.take([0], axis=axis), pixels.take([-1], axis=axis)
        padded = np.concatenate([first] * half + [pixels] + [last] * half, axis=axis)
        length = pixels.shape[axis]
        for offset in range(window):
            part = padded[offset:offset + length] if axis == 0 else padded[:, offset:offset + length]
            pixels = part if offset == 0 else np.maximum(pixels, part)
    return pixels


def percentiles(values: np.ndarray, qs: list[float]) -> list[float]:
    """np.percentile(values, qs) with its default ("linear") method, the same floats for float64 values without NaN
    (the only ones here), several times faster: see ranked_pairs."""
    ranks = [q / 100 * (values.size - 1) for q in qs]
    lows = [math.floor(rank) for rank in ranks]
    pairs = ranked_pairs(values, lows)
    return [lerp(low, high, rank - at) for rank, at, (low, high) in zip(ranks, lows, pairs, strict=True)]


def median(values: np.ndarray) -> float:
    """np.median(values), the same float for float64 values without NaN: the middle value, or the mean of the
    middle two."""
    count = values.size
    ((low, high),) = ranked_pairs(values, [(count - 1) // 2])
    return low if count % 2 else (low + high) / 2


def ranked_pairs(values: np.ndarray, ranks: list[int]) -> list[tuple[float, float]]:
    """For each rank r, the values at ranks r and r + 1 of the sorted array (r + 1 capped at the last). Each r is
    selected alone, in what lies above the r before it, and the value at r + 1 is the smallest between r and the
    next r: numpy's median and percentile partition at several positions in one call (their NaN check's included),
    which is several times slower on this numpy (docs/performance.md)."""
    part = values.flatten()  # a copy: it is partitioned in place
    points = sorted(set(ranks))
    for start, point in zip([0, *(point + 1 for point in points[:-1])], points, strict=True):
        part[start:].partition(point - start)
    ends = dict(zip(points, [*(point + 1 for point in points[1:]), None], strict=True))
    return [(float(part[rank]), float(part[rank + 1:ends[rank]].min()) if rank + 1 < part.size else float(part[rank]))
            for rank in ranks]


def lerp(low: float, high: float, share: float) -> float:
    """numpy's linear interpolation between neighbouring values, from whichever end is nearer."""
    return high - (high - low) * (1 - share) if share >= 0.5 else low + (high - low) * share


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold over 256 bins of 0-1 (values outside are clipped to it): the split that maximizes the
    between-class variance."""
    # floor(v * 255 + 0.5) clipped to 0-255: the values are clipped first, so the cast's truncation is the floor
    counts = np.bincount((np.clip(values, 0, 1) * 255 + 0.5).astype(np.intp).ravel(), minlength=256).astype(float)
    weight, mass = np.cumsum(counts), np.cumsum(counts * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * weight - mass * weight[-1]) ** 2 / (weight * (weight[-1] - weight))
    between[~np.isfinite(between)] = -1
    return (int(np.argmax(between)) + 0.5) / 255


def oriented(gray: np.ndarray) -> np.ndarray:
    """Ink bright on dark, as MNIST's. The ink is the extreme of the picture's range (its 0.1 and 99.9 percentiles)
    farther from the paper's level. A uniform border band (the outer 5 %) is paper: its median decides. An uneven
    band is a digit touching the edges or a frame along them. Without a frame (on either side of Otsu's split), the
    four corners vote (each its median, squares of 10 % of the shorter side): a digit cropped to its own box
    leaves most of its corners empty, whether it is thick dark ink filling most of the picture (where both medians
    below are the ink) or light ink on dark (a crop of MNIST, chalk). With a frame, or two corners each way (a 7's
    bar), the band's median and the whole picture's must both say light ink, else the ink is dark, as in most
    pictures."""
    low, high = percentiles(gray, [0.1, 99.9])
    band = max(2, int(np.floor(BORDER_BAND * min(gray.shape) + 0.5)))
    inside = np.zeros(gray.shape, dtype=bool)
    inside[band:-band, band:-band] = True
    spread_low, border, spread_high = percentiles(gray[~inside], [10, 50, 90])

    def ink_is_light(paper: float) -> bool:
        return bool(high - paper > paper - low)

    if spread_high - spread_low <= BORDER_UNIFORM * (high - low):
        return gray if ink_is_light(border) else 1 - gray
    side = max(2, int(np.floor(CORNER * min(gray.shape) + 0.5)))
    corners = [gray[:side, :side], gray[:side, -side:], gray[-side:, :side], gray[-side:, -side:]]
    votes = sum(ink_is_light(median(corner)) for corner in corners)  # corners whose paper is dark
    split = otsu(gray)
    if votes == 2 or frame_found(gray > split) or frame_found(gray <= split):
        light = ink_is_light(border) and ink_is_light(median(gray))
    else:
        light = votes > 2
    return gray if light else 1 - gray


def flattened(ink: np.ndarray) -> np.ndarray:
    """The paper's shading removed (a shadow across a photographed page): a plane a + b*y + c*x fitted by least
    squares to the pixels on the paper's side of Otsu's split (y, x = row / height, column / width), subtracted
    everywhere. Solved from its 3x3 normal equations by Cramer's rule, in plain float arithmetic that a port repeats
    bit for bit (no matrix products: multithreaded BLAS on arrays this small is slow, and very slow on a busy
    machine; and LAPACK's least squares cannot be repeated exactly in a browser). Paper whose pixels leave the
    plane undetermined (all on one line) gets its mean level subtracted instead."""
    height, width = ink.shape
    y, x = np.arange(height) / height, np.arange(width) / width
    paper = (ink <= otsu(ink)).astype(np.float64)
    level = paper * ink
    rows, cols, row_level, col_level = paper.sum(1), paper.sum(0), level.sum(1), level.sum(0)
    cross = ((paper * x).sum(1) * y).sum()
    n00, n01, n02 = float(rows.sum()), float((rows * y).sum()), float((cols * x).sum())
    n11, n12, n22 = float((rows * y * y).sum()), float(cross), float((cols * x * x).sum())
    t0, t1, t2 = float(row_level.sum()), float((row_level * y).sum()), float((col_level * x).sum())
    c00, c01, c02 = n11 * n22 - n12 * n12, n02 * n12 - n01 * n22, n01 * n12 - n02 * n11
    c11, c12, c22 = n00 * n22 - n02 * n02, n01 * n02 - n00 * n12, n00 * n11 - n01 * n01
    det = n00 * c00 + n01 * c01 + n02 * c02
    if det <= 1e-9 * n00 ** 3:
        return ink - (t0 / n00 if n00 else 0.0)
    a = (c00 * t0 + c01 * t1 + c02 * t2) / det
    b = (c01 * t0 + c11 * t1 + c12 * t2) / det
    c = (c02 * t0 + c12 * t1 + c22 * t2) / det
    return ink - (a + b * y[:, None] + c * x[None, :])


def noise(ink: np.ndarray) -> float:
    """The paper's noise, as a standard deviation: from the differences of neighbouring pixels across, whose median
    absolute deviation strokes, blur and shading barely move (most neighbours lie on the same paper or stroke). A
    picture one pixel wide has no neighbours across: no noise is measured."""
    if ink.shape[1] < 2:
        return 0.0
    across = np.diff(ink, axis=1).ravel()
    return float(1.4826 * median(np.abs(across - median(across))) / np.sqrt(2))


def coherence(mask: np.ndarray) -> float:
    """The share of the mask's pixels with at least two of their 8 neighbours in the mask: strokes have them,
    noise that crossed a threshold mostly does not."""
    padded = np.pad(mask, 1).astype(np.int8)
    height, width = mask.shape
    neighbours = cast(np.ndarray, sum(padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]  # 8 terms: never 0
                                      for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx))
    return float((neighbours[mask] >= 2).mean()) if mask.any() else 0.0


def segments(profile: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of the runs of nonzero entries of a 1-D profile."""
    filled = np.concatenate([[0], (profile > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(filled))
    return list(zip(edges[::2], edges[1::2], strict=True))


def frame_lines(cover: np.ndarray) -> tuple[slice, bool] | None:
    """The rows of a line along one side, `cover` being each row's ink share from that side inwards: within
    FRAME_MARGIN of the side, rows covering at least FRAME_COVERAGE; and whether a nearly empty row follows it
    (paper between a frame and the digit; a digit drawn edge to edge can touch the frame on some sides)."""
    margin = max(4, int(FRAME_MARGIN * len(cover)))
    lines = np.flatnonzero(cover[:margin] >= FRAME_COVERAGE)
    if not lines.size:
        return None
    start = int(lines[0])
    after = np.flatnonzero(cover[start:] < FRAME_COVERAGE)
    if not after.size:
        return None
    end = start + int(after[0])
    return slice(start, end), bool(cover[end] <= FRAME_GAP)


def frame_sides(mask: np.ndarray) -> list[tuple[int, slice, bool]] | None:
    """The frame's lines, (axis, rows, paper inside) per side, when there are lines along at least FRAME_SIDES sides
    and at least FRAME_GAPS of them have paper inside; else None."""
    found = []
    for axis in (0, 1):
        cover = mask.mean(axis=1 - axis)
        size = len(cover)
        if (near := frame_lines(cover)) is not None:
            found.append((axis, *near))
        if (far := frame_lines(cover[::-1])) is not None:
            rows, gap = far
            found.append((axis, slice(size - rows.stop, size - rows.start), gap))
    if len(found) < FRAME_SIDES or sum(gap for _, _, gap in found) < FRAME_GAPS:
        return None
    return found


def without_frame(mask: np.ndarray) -> np.ndarray:
    """Drop a frame: lines along at least FRAME_SIDES sides, at least FRAME_GAPS of them with paper inside."""
    found = frame_sides(mask)
    if found is None:
        return mask
    mask = mask.copy()
    for axis, rows, _ in found:
        if axis == 0:
            mask[rows] = False
        else:
            mask[:, rows] = False
    return mask


def frame_found(mask: np.ndarray) -> bool:
    """Whether the mask holds a frame as without_frame finds one (lines along FRAME_SIDES sides, FRAME_GAPS of them
    with paper inside)."""
    return frame_sides(mask) is not None


def without_specks(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Drop parts separated from the digit by empty rows or columns whose ink is under MIN_PART of the whole."""
    mask = mask.copy()
    for axis in (0, 1):
        mass = np.where(mask, ink, 0).sum(axis=1 - axis)
        for start, end in segments(mass):
            if mass[start:end].sum() < MIN_PART * mass.sum():
                if axis == 0:
                    mask[start:end] = False
                else:
                    mask[:, start:end] = False
    return mask


def digit_ink(gray: np.ndarray, leave_out: tuple[str, ...] = (), dark_ink: bool | None = None) -> np.ndarray:
    """Ink 0-1 (1 = full ink) with everything that is not the digit set to 0. `dark_ink`: whether the ink is dark
    on light paper when that is known (a drawing on a transparent canvas), None to find out."""
    ink = oriented(gray) if dark_ink is None else 1 - gray if dark_ink else gray
    if "shading" not in leave_out:
        ink = flattened(ink)
    threshold = otsu(ink)  # on the ink clipped to 0-1
    paper_side = ink[ink <= threshold]
    if not paper_side.size:  # one level everywhere: nothing stands out
        raise NoDigitError("no ink found: the picture has no contrast (it is one level everywhere)")
    paper_level = median(paper_side)
    if "noise floor" not in leave_out:  # Otsu splits a large noisy page with a small digit inside the noise
        threshold = max(threshold, paper_level + NOISE_SIGMAS * noise(ink))
    strong = ink > threshold
    level = median(ink[strong]) if strong.any() else paper_level
    # The strongest marks measure the contrast: a small digit on a noisy page is a few pixels among the noise
    # that crossed the threshold, which pull the median down to the noise.
    contrast = percentiles(ink[strong], [90])[0] - paper_level if strong.any() else 0.0
    if contrast < MIN_CONTRAST:
        raise NoDigitError(f"no ink found: the picture has no contrast (its darkest marks stand {contrast:.2f} from "
                           f"the paper, of a full range of 1; a digit needs at least {MIN_CONTRAST})")
    share = coherence(strong)
    if share < MIN_COHERENCE:
        raise NoDigitError(f"no ink found: only noise stands out from the paper (of the marks above the threshold, "
                           f"{100 * share:.0f} % touch two others; a stroke's do, at least "
                           f"{100 * MIN_COHERENCE:.0f} %)")
    mask = strong
    if "frame" not in leave_out:
        mask = without_frame(mask)
    floor = (paper_level + threshold) / 2  # anti-aliased edges fade out between the paper and the threshold
    soft = np.clip((ink - floor) / (level - floor), 0, 1)
    if "specks" not in leave_out:
        mask = without_specks(mask, soft)
    if not mask.any():
        raise NoDigitError("no ink found inside the frame")
    # Anti-aliased edges just below the threshold belong to the strokes: grow the kept area by one pixel.
    return np.where(window_max(mask.astype(float), 3) > 0, soft, 0.0)
