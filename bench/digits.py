"""Pictures of digits that are not MNIST, made here without network: strokes drawn like handwriting, and digits
rendered from the fonts matplotlib ships (DejaVu, STIX, Computer Modern), on paper of many kinds.

Each picture varies what real ones vary: size and aspect of the picture, the digit's size, position and margin
(small in a corner, edge to edge), stroke width, slant and rotation, ink and paper colour, polarity (dark ink on
light paper, or chalk on a board), paper noise, a shadow across the page, a thin frame, grayscale or RGB or RGBA
on a transparent background, PNG or JPEG. Everything is drawn from one seed.

    .venv/bin/python -m bench.digits OUT_DIR [--count N] [--seed S]   # writes OUT_DIR/<digit>/<n>.<png|jpg>
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
         "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralItalic.ttf",
         "STIXGeneralBol.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf")


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 24) -> list:
    """Points along an ellipse from angle `start` to `end` in degrees (0 = right, 90 = down: image axes)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(start, end, steps)]


# Each digit as one or more hand-drawn styles; each style is a list of strokes in a unit box (x right, y down).
STROKES = {
    0: [[arc(0.5, 0.5, 0.3, 0.45, -90, 275)]],
    1: [[[(0.5, 0.05), (0.5, 0.95)]], [[(0.3, 0.25), (0.55, 0.05), (0.55, 0.95)]]],
    2: [[arc(0.5, 0.3, 0.27, 0.25, 190, 390) + [(0.2, 0.95), (0.85, 0.95)]],
        [arc(0.5, 0.32, 0.28, 0.27, 200, 400) + [(0.25, 0.8)] + arc(0.45, 0.85, 0.2, 0.1, 200, 360)[:1]
         + [(0.3, 0.92), (0.85, 0.9)]]],
    3: [[arc(0.48, 0.28, 0.24, 0.23, 200, 450), arc(0.48, 0.72, 0.27, 0.24, 270, 520)]],
    4: [[[(0.68, 0.95), (0.68, 0.05), (0.15, 0.68), (0.85, 0.68)]],
        [[(0.25, 0.05), (0.2, 0.6), (0.82, 0.6)], [(0.66, 0.25), (0.66, 0.95)]]],
    5: [[[(0.78, 0.06), (0.32, 0.06), (0.28, 0.45)] + arc(0.48, 0.68, 0.28, 0.26, 235, 505)],
        [[(0.3, 0.08), (0.27, 0.45)] + arc(0.48, 0.68, 0.28, 0.26, 235, 505), [(0.3, 0.08), (0.8, 0.06)]]],
    6: [[[(0.72, 0.05), (0.45, 0.25), (0.27, 0.6)] + arc(0.5, 0.7, 0.24, 0.24, 180, 540)]],
    7: [[[(0.18, 0.06), (0.82, 0.06), (0.4, 0.95)]],
        [[(0.18, 0.06), (0.82, 0.06), (0.4, 0.95)], [(0.35, 0.5), (0.75, 0.5)]]],
    8: [[arc(0.5, 0.27, 0.21, 0.21, 90, 450), arc(0.5, 0.7, 0.26, 0.25, -90, 270)]],
    9: [[arc(0.48, 0.3, 0.25, 0.24, 0, 360), [(0.73, 0.3), (0.66, 0.95)]],
        [arc(0.48, 0.3, 0.25, 0.24, 0, 360), [(0.73, 0.3)] + arc(0.45, 0.6, 0.28, 0.35, 0, 90, 8)]],
}


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    digit: int
    suffix: str  # "png" or "jpg"
    quality: int  # JPEG quality (ignored for PNG)
    description: str


def draw_strokes(digit: int, rng: np.random.Generator, size: int = 256,
                 pen_range: tuple[float, float] = (0.015, 0.14)) -> tuple[Image.Image, str]:
    """The digit as an ink mask ('L', 255 = ink), drawn with jittered strokes of one random width; and which pen:
    "fine pen" (under 3 % of the drawing's size), "pen" (3-6 %) or "marker"."""
    styles = STROKES[digit]
    strokes = styles[rng.integers(len(styles))]
    mask = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(mask)
    width = max(1, int(size * rng.uniform(*pen_range)))  # by default from a fine pen on a large scan to a marker
    jitter = rng.normal(0, 0.025, 2)  # the whole stroke wanders a little, then each point a little more
    for stroke in strokes:
        points = [(size * (0.2 + 0.6 * (x + jitter[0] + rng.normal(0, 0.012))),
                   size * (0.1 + 0.8 * (y + jitter[1] + rng.normal(0, 0.012)))) for x, y in stroke]
        pen.line(points, fill=255, width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return mask, "fine pen" if width < 0.03 * size else "pen" if width < 0.06 * size else "marker"


def draw_font(digit: int, rng: np.random.Generator, size: int = 256) -> tuple[Image.Image, str]:
    name = FONTS[rng.integers(len(FONTS))]
    font = ImageFont.truetype(str(FONT_DIR / name), int(size * 0.7))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).text((size / 2, size / 2), str(digit), fill=255, font=font, anchor="mm")
    return mask, name


def crop_to_ink(mask: Image.Image) -> Image.Image:
    return mask.crop(mask.getbbox())


def slanted(mask: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Shear (slant) and rotate the ink mask, growing the canvas so that nothing is cut."""
    shear, angle = rng.uniform(-0.35, 0.35), rng.uniform(-12, 12)
    width, height = mask.size
    pad = int(0.5 * max(width, height))
    big = Image.new("L", (width + 2 * pad, height + 2 * pad), 0)
    big.paste(mask, (pad, pad))
    sheared = big.transform(big.size, Image.Transform.AFFINE, (1, shear, -shear * big.size[1] / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR)
    return crop_to_ink(sheared.rotate(angle, resample=Image.Resampling.BILINEAR))


def paper(rng: np.random.Generator, height: int, width: int, dark: bool) -> np.ndarray:
    """float [H, W, 3] in 0-255: a paper or board colour, texture noise, and perhaps a shadow across it."""
    base = rng.uniform(20, 70) if dark else rng.uniform(185, 255)
    tint = rng.normal(0, 8, 3)
    page = np.full((height, width, 3), base) + tint
    page += rng.normal(0, rng.uniform(0, 10), (height, width, 1))
    if rng.random() < 0.35:  # a shadow: darker towards one side, as a phone's photo of a page
        direction = rng.uniform(0, 2 * math.pi)
        ramp = (np.cos(direction) * np.arange(width)[None, :] / width
                + np.sin(direction) * np.arange(height)[:, None] / height)
        page -= (rng.uniform(30, 70) * (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9))[..., None]
    return page


def make_sample(digit: int, rng: np.random.Generator) -> Sample:
    if rng.random() < 0.5:
        mask, pen = draw_strokes(digit, rng)
        source = f"strokes, {pen}"
    else:
        mask, source = draw_font(digit, rng)
    mask = slanted(crop_to_ink(mask), rng)
    width, height = int(rng.integers(40, 420)), int(rng.integers(40, 420))
    placement = rng.choice(["centered", "anywhere", "corner", "edge to edge"], p=[0.35, 0.35, 0.15, 0.15])
    fill = {"centered": rng.uniform(0.4, 0.85), "anywhere": rng.uniform(0.25, 0.8), "corner": rng.uniform(0.15, 0.35),
            "edge to edge": 1.0}[placement]
    scale = fill * min(width / mask.size[0], height / mask.size[1])
    digit_size = (max(6, int(mask.size[0] * scale)), max(8, int(mask.size[1] * scale)))
    digit_size = (min(digit_size[0], width), min(digit_size[1], height))
    ink = np.asarray(mask.resize(digit_size, Image.Resampling.LANCZOS), dtype=np.float64).clip(0, 255) / 255
    free_x, free_y = width - digit_size[0], height - digit_size[1]
    if placement == "centered":
        x, y = free_x // 2, free_y // 2
    elif placement == "corner":
        margin_x, margin_y = int(rng.uniform(0.02, 0.12) * width), int(rng.uniform(0.02, 0.12) * height)
        x = margin_x if rng.random() < 0.5 else free_x - margin_x
        y = margin_y if rng.random() < 0.5 else free_y - margin_y
        x, y = int(np.clip(x, 0, free_x)), int(np.clip(y, 0, free_y))
    else:
        x, y = int(rng.integers(0, free_x + 1)), int(rng.integers(0, free_y + 1))
    dark = rng.random() < 0.2  # chalk on a board, a white pen on black: light ink on dark
    page = paper(rng, height, width, dark)
    ink_colour = (rng.uniform(200, 255, 3) if dark else rng.uniform(0, 90) + rng.normal(0, 15, 3)).clip(0, 255)
    alpha = np.zeros((height, width))
    alpha[y:y + digit_size[1], x:x + digit_size[0]] = ink * rng.uniform(0.75, 1.0)
    if rng.random() < 0.12:  # a thin frame drawn or printed around the picture
        frame = np.zeros((height, width), dtype=bool)
        thickness, inset = int(rng.integers(1, 4)), int(rng.integers(0, 4))
        frame[inset:inset + thickness, inset:width - inset] = True
        frame[height - inset - thickness:height - inset, inset:width - inset] = True
        frame[inset:height - inset, inset:inset + thickness] = True
        frame[inset:height - inset, width - inset - thickness:width - inset] = True
        alpha = np.maximum(alpha, frame * 0.9)
    pixels = (page * (1 - alpha[..., None]) + ink_colour * alpha[..., None]).clip(0, 255).astype(np.uint8)
    form = rng.choice(["L", "RGB", "RGBA"], p=[0.4, 0.5, 0.1])
    if form == "RGBA":  # a canvas drawing: the ink on a transparent background
        rgba = np.dstack([np.broadcast_to(ink_colour, (height, width, 3)).astype(np.uint8),
                          (alpha * 255).astype(np.uint8)])
        image, suffix = Image.fromarray(rgba, "RGBA"), "png"
    else:
        image = Image.fromarray(pixels, "RGB").convert(form)
        suffix = "jpg" if rng.random() < 0.4 else "png"
    quality = int(rng.integers(50, 95))
    description = (f"{source}, {placement}, {width}x{height}, {'light on dark' if dark else 'dark on light'}, "
                   f"{form} {suffix}")
    return Sample(image, digit, suffix, quality, description)


def pen_sweep(pen_range: tuple[float, float], count: int, seed: int = 0) -> list[tuple[Image.Image, int]]:
    """Digits drawn with a pen whose width is in `pen_range` (share of the drawing's size), slanted, 200 pixels
    tall on a white 300x300 page: only the pen changes."""
    rng = np.random.default_rng(seed)
    pictures = []
    for index in range(count):
        mask = slanted(crop_to_ink(draw_strokes(index % 10, rng, pen_range=pen_range)[0]), rng)
        scale = 200 / max(mask.size)
        mask = mask.resize((max(1, round(mask.size[0] * scale)), max(1, round(mask.size[1] * scale))))
        page = Image.new("L", (300, 300), 255)
        page.paste(0, (50, 50), mask)
        pictures.append((page, index % 10))
    return pictures


def samples(count: int, seed: int = 0):
    """`count` samples, the digits in turn 0-9, 0-9, ...; the same seed gives the same pictures."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        yield make_sample(index % 10, rng)


def write(sample: Sample, path: Path) -> Path:
    path = path.with_suffix(f".{sample.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if sample.suffix == "jpg":
        sample.image.save(path, quality=sample.quality)
    else:
        sample.image.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for index, sample in enumerate(samples(args.count, args.seed)):
        write(sample, args.out_dir / str(sample.digit) / f"{index:04d}")
    print(f"wrote {args.count} pictures to {args.out_dir}")


if __name__ == "__main__":
    main()
