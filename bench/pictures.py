"""Accuracy of exported models on pictures of digits that are not MNIST, family by family (bench.families), through
the shipped torch-free path (lenet_client), against two simpler preprocessings, in one run; then which steps pay.

    .venv/bin/python -m bench.pictures RUN_DIR [--count 100] [--seed 0] [--held-out] [--ablation] [--pen-sweep]

RUN_DIR/models/<variant>/model.onnx are the models read. Tuning families are always measured; --held-out adds the
families kept back to tell whether the preprocessing generalizes (measure them only at the end of a change).
Each figure is the share read right, and in brackets how many pictures were refused as holding no digit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image, ImageOps

import lenet_client.preprocess
from bench.digits import pen_sweep
from bench.families import HELD_OUT, TUNING, add_family_arguments, family_samples, mnist_test_set
from lenet_client.contract import preprocessing
from lenet_client.ink import STEPS, NoDigitError, otsu
from lenet_client.predict import load_model
from lenet_client.preprocess import BOX, FIELD, centered, fit_size, resize_area, to_input, to_mnist


def resize_whole_picture(image: Image.Image) -> np.ndarray:
    """The predictor before MNIST-style preprocessing: grayscale, invert by the border, resize to 28x28."""
    pixels = np.asarray(ImageOps.grayscale(image).resize((28, 28), Image.Resampling.LANCZOS), dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return (255.0 - pixels if border.mean() > 127.5 else pixels).astype(np.uint8)


def textbook(image: Image.Image) -> np.ndarray:
    """The textbook MNIST recipe by hand: dark ink on light paper, Otsu's threshold, the bounding box of what is
    above it, fitted into 20x20 by area, center of mass at (14, 14) of 28x28. Nothing else."""
    ink = 1 - np.asarray(ImageOps.grayscale(image), dtype=np.float64) / 255
    mask = ink > otsu(ink)
    if not mask.any():
        raise NoDigitError("nothing above the threshold")
    rows, cols = np.nonzero(mask)
    crop = np.where(mask, ink, 0)[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return centered(resize_area(crop, *fit_size(crop.shape[0], crop.shape[1], BOX)))


def read(models: dict, pictures: list[Image.Image], labels: np.ndarray, make) -> dict[str, tuple[float, int]]:
    """variant -> (share read right, pictures refused), with `make` turning a picture into MNIST-style 28x28."""
    fields, refused = [], []
    for picture in pictures:
        try:
            fields.append(make(picture))
            refused.append(False)
        except NoDigitError:
            fields.append(np.zeros((FIELD, FIELD), np.uint8))
            refused.append(True)
    figures = {}
    for variant, (session, metadata) in models.items():
        scale, mean, std = preprocessing(metadata)
        batch = ((np.stack(fields).astype(np.float32) * scale - mean) / std)[:, None]
        right = (session.run(None, {"input": batch})[0].argmax(1) == labels) & ~np.array(refused)
        figures[variant] = (100 * right.mean(), int(sum(refused)))
    return figures


def table(models: dict, families: dict[str, tuple[list, np.ndarray]], ways: dict) -> None:
    """A Markdown table: one row per family, one column per variant and way of making the 28x28 picture."""
    columns = [(variant, way) for variant in models for way in ways]
    print("| family | " + " | ".join(f"{variant}, {way}" for variant, way in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    totals: dict[tuple[str, str], list[tuple[float, int]]] = {column: [] for column in columns}
    for family, (pictures, labels) in families.items():
        for way, make in ways.items():
            for variant, figure in read(models, pictures, labels, make).items():
                totals[(variant, way)].append(figure)
        print(f"| {family} | " + " | ".join(cell(*totals[c][-1]) for c in columns) + " |")
    print("| **mean** | " + " | ".join(cell(float(np.mean([a for a, _ in totals[c]])), sum(r for _, r in totals[c]))
                                     for c in columns) + " |")


def cell(accuracy: float, refused: int) -> str:
    return f"{accuracy:.1f} %" + (f" ({refused} refused)" if refused else "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pictures", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    add_family_arguments(parser)
    parser.add_argument("--ablation", action="store_true", help="each step of lenet_client's preprocessing left out")
    parser.add_argument("--pen-sweep", action="store_true", help="accuracy by pen width; MNIST with fainter ink")
    parser.add_argument("--speed", action="store_true", help="time lenet-predict on 1,000 pictures and on a photo")
    args = parser.parse_args()
    models = {m.parent.name: load_model(m) for m in sorted(args.run_dir.glob("models/*/model.onnx"))}
    mnist = mnist_test_set(args.data_dir)
    chosen = TUNING + (HELD_OUT if args.held_out else ())
    families = {}
    for family in chosen:
        samples = family_samples(family, args.count, args.seed, mnist)
        families[family] = ([s.image for s in samples], np.array([s.digit for s in samples]))
    print(f"{args.count} pictures per family, seed {args.seed}; accuracy % (pictures refused as holding no digit)")
    ways = {"resize": resize_whole_picture, "textbook": textbook, "lenet_client": to_mnist}
    table(models, families, ways)
    if args.ablation:
        print("ablation: lenet_client's preprocessing with one step left out")
        table(models, families, {"all steps": to_mnist} | {
            f"no {step}": (lambda image, step=step: to_mnist(image, leave_out=(step,)))
            for step in (*STEPS, "thin strokes")})
    if args.pen_sweep:
        sweep_pen_widths(args.run_dir, 300)
        fainter_mnist(args.run_dir, args.data_dir)
    if args.speed:
        speed(args.run_dir)


def speed(run_dir: Path) -> None:
    """`lenet-predict --json` as an app runs it, process start included: a folder of 1,000 112x112 PNG pictures; a
    folder of 1,000 pictures as phones and scanners leave them (each side drawn from 112-640 by 112-480, every other
    one a JPEG); one 4000x3000 JPEG photo of a page. The median of 3 runs each."""
    import statistics
    import subprocess
    import sys
    import tempfile
    import time

    from PIL import ImageDraw

    model = sorted(run_dir.glob("models/*/model.onnx"))[0]
    with tempfile.TemporaryDirectory() as folder:
        pictures = Path(folder) / "pictures"
        pictures.mkdir()
        for index, sample in enumerate(family_samples("tight crop, 2 edges", 1000, 1)):
            sample.image.save(pictures / f"{index:04d}.png")
        rng = np.random.default_rng(0)
        mixed = Path(folder) / "mixed"
        mixed.mkdir()
        for index, sample in enumerate(family_samples("mixed (the earlier benchmark)", 1000, 2)):
            size = (int(rng.integers(112, 641)), int(rng.integers(112, 481)))
            picture = sample.image.convert("RGBA")
            picture = Image.alpha_composite(Image.new("RGBA", picture.size, "white"), picture).convert("RGB")
            picture = picture.resize(size, Image.Resampling.BILINEAR)
            picture.save(mixed / (f"{index:04d}.jpg" if index % 2 else f"{index:04d}.png"), quality=90)
        page = Image.new("L", (4000, 3000), 235)
        ImageDraw.Draw(page).line([(1500, 800), (2400, 800), (1800, 2300)], fill=30, width=60, joint="curve")
        pixels = np.asarray(page, dtype=float) - 70 * np.linspace(0, 1, 4000)[None, :] + rng.normal(0, 6, (3000, 4000))
        photo = Path(folder) / "photo.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).convert("RGB").save(photo, quality=85)
        for name, target in (("1,000 pictures of 112x112 PNG", pictures),
                             ("1,000 pictures of 112x112 to 640x480, PNG and JPEG", mixed),
                             ("one 4000x3000 JPEG photo", photo)):
            times = []
            for _ in range(3):
                started = time.perf_counter()
                # Exit 5 is a picture with no digit found (a few faint ones of the mixed folder): still timed.
                done = subprocess.run([sys.executable, "-m", "lenet_client", "--json", str(model), str(target)],
                                      capture_output=True)
                times.append(time.perf_counter() - started)
                if done.returncode not in (0, 5):
                    raise SystemExit(f"lenet-predict failed on {name}: {done.stderr.decode()[-500:]}")
            results = json.loads(done.stdout)["results"]
            read = sum("digit" in result for result in results)
            print(f"lenet-predict --json, {name}: {statistics.median(times):.2f} s wall, process start included "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)}; {read} of {len(results)} read)")


def sweep_pen_widths(run_dir: Path, count: int) -> None:
    """Only the pen's width changes: where the models' reading of thin strokes breaks, with and without growing
    thin strokes to MNIST's width."""
    models = {m.parent.name: load_model(m) for m in sorted(run_dir.glob("models/*/model.onnx"))}
    print(f"pen width sweep: {count} drawn digits per band, 200 px tall on a 300x300 page")
    for band in [(0.015, 0.03), (0.03, 0.05), (0.05, 0.08), (0.08, 0.14)]:
        pictures = pen_sweep(band, count)
        labels = np.array([digit for _, digit in pictures])
        line = f"  pen {100 * band[0]:.1f}-{100 * band[1]:.1f}% of the drawing:"
        for variant, (session, metadata) in models.items():
            figures = []
            for min_stroke in (0.0, lenet_client.preprocess.MIN_STROKE):
                with mock.patch.object(lenet_client.preprocess, "MIN_STROKE", min_stroke):
                    batch = np.stack([to_input(image, *preprocessing(metadata)) for image, _ in pictures])
                figures.append(100 * (session.run(None, {"input": batch})[0].argmax(1) == labels).mean())
            line += f"  {variant} {figures[0]:.1f}% thin kept, {figures[1]:.1f}% grown"
        print(line)


def fainter_mnist(run_dir: Path, data_dir: Path) -> None:
    """Why the BatchNorm variant reads thin strokes worse: the MNIST test set with its ink scaled down, through the
    trained models. A thin stroke is, to the first layers, less ink."""

    import torch

    from job.training.data import ensure_mnist, read_split
    from job.training.model import load_trained

    ensure_mnist(data_dir, download=False)
    images, labels = read_split(data_dir, train=False, limit=None)
    print("MNIST test set with its ink scaled by k (0-1 pixels times k, then the model's mean and std):")
    for model_dir in sorted(run_dir.glob("models/*")):
        model, metadata = load_trained(model_dir / "model.pt")
        mean, std = float(metadata["preprocess.mean"]), float(metadata["preprocess.std"])
        figures = []
        for k in (1.0, 0.6, 0.33):
            with torch.inference_mode():
                logits = model((images.float().unsqueeze(1) / 255 * k - mean) / std)
            figures.append(f"k={k}: {100 * float((logits.argmax(1) == labels).float().mean()):.2f}%")
        print(f"  {model_dir.name:<11} " + ", ".join(figures))


if __name__ == "__main__":
    main()
