"""Find a digit's ink in a grayscale picture: which side is ink, the paper's shadows and noise, the threshold,
frame lines, specks and edge artifacts. Steps 5-10 of docs/model-contract.md; export.preprocess does the rest.
numpy only, plain arithmetic, so that it can be ported exactly."""

from __future__ import annotations

from collections import deque

import numpy as np

LIGHT_PAPER, DARK_PAPER = 0.6, 0.4  # paper at least this light has dark ink; at most this dark, light ink
GRID = 8  # the paper's level is measured in GRID x GRID cells...
PAPER_PERCENTILE = 5  # ...as this percentile of each cell...
FIT_ROUNDS = 3  # ...and a plane is fitted to them this many times, each without the cells far above the last
NOISE_SIGMAS = 5  # ink is at least this many robust standard deviations of the paper's noise above it
MIN_INK_CONTRAST = 0.12  # ink fainter than this against the paper (0-1 scale) is no ink: the picture is blank
STROKE_OVER_THRESHOLD = 1.15  # strokes stand well above the threshold; the paper's noise barely crosses it
BORDER_BAND = 0.03  # share of the shorter side that counts as the picture's edge band (at least 2 pixels)
FRAME_MARGIN, FRAME_MIN_MARGIN = 0.08, 4  # a frame line lies within this share of a side (at least 4 pixels)...
FRAME_COVERAGE = 0.8  # ...runs along this share of it...
FRAME_SIDES = 3  # ...and is found along at least this many sides
EDGE_ONLY = 0.8  # a component with this share of its pixels in the edge band is an edge artifact
MIN_PART = 0.05  # a component lighter than this share of the heaviest one is a speck


class NoDigitError(ValueError):
    """The picture holds no ink that could be a digit."""


def window_extreme(pixels: np.ndarray, window: int, reduce) -> np.ndarray:
    """Min or max over a square window centered on each pixel; the edges repeat the nearest pixel."""
    half = window // 2
    for axis in (0, 1):
        padded = np.pad(pixels, [(half, half) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=axis)
        pixels = reduce(windows, axis=-1)
    return pixels


def background(ink: np.ndarray) -> np.ndarray:
    """The paper's own level under bright ink (a shadow or a gradient across a photo of a page): a plane fitted
    to the PAPER_PERCENTILE of each cell of a GRID x GRID partition, refitted FIT_ROUNDS times without the cells
    that lie well above the last fit (cells filled with ink)."""
    height, width = ink.shape
    row_edges = np.linspace(0, height, GRID + 1).astype(int)
    col_edges = np.linspace(0, width, GRID + 1).astype(int)
    rows, cols, levels = [], [], []
    for i in range(GRID):
        for j in range(GRID):
            cell = ink[row_edges[i]:max(row_edges[i + 1], row_edges[i] + 1),
                       col_edges[j]:max(col_edges[j + 1], col_edges[j] + 1)]
            rows.append((row_edges[i] + row_edges[i + 1]) / 2 / height)
            cols.append((col_edges[j] + col_edges[j + 1]) / 2 / width)
            levels.append(np.percentile(cell, PAPER_PERCENTILE))
    design = np.column_stack([np.ones(len(levels)), rows, cols])
    levels = np.array(levels)
    used = np.ones(len(levels), dtype=bool)
    for _ in range(FIT_ROUNDS):
        plane = np.linalg.lstsq(design[used], levels[used], rcond=None)[0]
        residual = levels - design @ plane
        used = residual < 2.5 * (1.4826 * float(np.median(np.abs(residual[used]))) + 1e-3)
    return (plane[0] + plane[1] * (np.arange(height)[:, None] + 0.5) / height
            + plane[2] * (np.arange(width)[None, :] + 0.5) / width)


def oriented(gray: np.ndarray) -> np.ndarray:
    """Ink bright on dark, as MNIST's. The paper is most of the picture, so the median is the paper: light paper
    means dark ink, dark paper light ink. On grey paper (or paper darkened by a shadow), the ink is on the side
    whose 1 % tail lies farther from the median."""
    paper = float(np.median(gray))
    if paper >= LIGHT_PAPER:
        return 1 - gray
    if paper <= DARK_PAPER:
        return gray
    low, high = np.percentile(gray, [1, 99])
    return 1 - gray if paper - low > high - paper else gray


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold over 256 bins of 0-1: the split that maximizes the between-class variance."""
    counts = np.bincount(np.clip((values * 255 + 0.5).astype(int), 0, 255).ravel(), minlength=256).astype(float)
    levels = np.arange(256)
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * levels)
    total_weight, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight - mass * total_weight) ** 2 / (weight * (total_weight - weight))
    between[~np.isfinite(between)] = -1
    return (int(np.argmax(between)) + 0.5) / 255


def remove_frame(mask: np.ndarray) -> np.ndarray:
    """Unset the rows and columns of a frame: lines that run along FRAME_COVERAGE of a side within FRAME_MARGIN of
    it, when such lines are found along at least FRAME_SIDES sides (a digit's own bar touches one side at most)."""
    height, width = mask.shape
    rows = max(FRAME_MIN_MARGIN, int(FRAME_MARGIN * height))
    cols = max(FRAME_MIN_MARGIN, int(FRAME_MARGIN * width))
    row_cover, col_cover = mask.mean(axis=1), mask.mean(axis=0)
    lines = {"top": [r for r in range(min(rows, height)) if row_cover[r] >= FRAME_COVERAGE],
             "bottom": [r for r in range(max(0, height - rows), height) if row_cover[r] >= FRAME_COVERAGE],
             "left": [c for c in range(min(cols, width)) if col_cover[c] >= FRAME_COVERAGE],
             "right": [c for c in range(max(0, width - cols), width) if col_cover[c] >= FRAME_COVERAGE]}
    if sum(bool(found) for found in lines.values()) < FRAME_SIDES:
        return mask
    mask = mask.copy()
    mask[lines["top"] + lines["bottom"]] = False
    mask[:, lines["left"] + lines["right"]] = False
    return mask


def components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of `mask`, each as an int array [n, 2] of (row, col)."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    found = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, pixels = deque([start]), []
        while queue:
            row, col = queue.popleft()
            pixels.append((row, col))
            for r in (row - 1, row, row + 1):
                for c in (col - 1, col, col + 1):
                    if 0 <= r < height and 0 <= c < width and mask[r, c] and not seen[r, c]:
                        seen[r, c] = True
                        queue.append((r, c))
        found.append(np.array(pixels))
    return found


def digit_ink(gray: np.ndarray) -> np.ndarray:
    """Ink 0-1 (1 = full ink) at working size with everything that is not the digit set to 0."""
    height, width = gray.shape
    ink = oriented(gray)
    ink = ink - background(ink)
    # Otsu splits ink from paper; on a large noisy page with a small digit it can land in the paper's noise, so
    # the threshold is also at least NOISE_SIGMAS standard deviations of the paper's noise above the paper. For
    # normal noise the 5th, 10th, 25th and 50th percentiles lie 1.6449, 1.2816, 0.6745 and 0 deviations below
    # the paper's median; ink covering much of the picture pushes the upper ones up, so the smaller estimate wins.
    p5, p10, p25, p50 = np.percentile(ink, [5, 10, 25, 50])
    noise = min((p25 - p5) / 0.9704, (p50 - p10) / 1.2816)
    paper = p5 + 1.6449 * noise
    ink = np.clip(ink, 0, None)
    threshold = max(otsu_threshold(np.clip(ink, 0, 1)), paper + NOISE_SIGMAS * noise)
    strong = ink[ink > threshold]
    level = float(np.median(strong)) if strong.size else 0.0
    if level < MIN_INK_CONTRAST or level < STROKE_OVER_THRESHOLD * threshold:
        raise NoDigitError(f"no ink found (the strongest marks stand {level:.2f} above the paper, of a full range "
                           f"of 1; ink needs at least {MIN_INK_CONTRAST} and {STROKE_OVER_THRESHOLD} times the "
                           f"threshold {threshold:.2f})")
    band = max(2, int(BORDER_BAND * min(height, width)))
    mask = remove_frame(ink > threshold)
    floor = threshold / 2  # anti-aliased edges fade out between half the threshold and the typical ink
    ink = np.clip((ink - floor) / (level - floor), 0, 1)
    edge = np.zeros_like(mask)
    edge[:band], edge[-band:], edge[:, :band], edge[:, -band:] = True, True, True, True
    parts = [p for p in components(mask) if edge[p[:, 0], p[:, 1]].mean() < EDGE_ONLY]
    if not parts:
        raise NoDigitError("no ink found away from the picture's edges")
    masses = [ink[p[:, 0], p[:, 1]].sum() for p in parts]
    keep = np.zeros_like(mask)
    for part, mass in zip(parts, masses):
        if mass >= MIN_PART * max(masses):
            keep[part[:, 0], part[:, 1]] = True
    # Anti-aliased edges just below the threshold belong to the kept strokes: grow the kept area by one pixel.
    keep = window_extreme(keep.astype(float), 3, np.max) > 0
    return np.where(keep, ink, 0.0)
