"""Accuracy of exported models on pictures of digits that are not MNIST (bench.digits), through the shipped
torch-free path (lenet_client.predict), against the preprocessing it had before (resize the whole picture), in one run.

    python -m bench.pictures RUN_DIR [--count 1000] [--seed 0] [--data-dir data]   # RUN_DIR/models/<variant>/...

Prints one line per variant and preprocessing, the new preprocessing's accuracy by kind of picture, a sweep over
the pen's width, and the MNIST test set with fainter ink (why the BatchNorm variant reads thin strokes worse).
"""

from __future__ import annotations

import argparse
import tempfile
from unittest import mock
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench.digits import pen_sweep, samples, write
from lenet_client.preprocess import to_input
import lenet_client.preprocess
from lenet_client.contract import preprocessing
from lenet_client.predict import classify, load_model


def resize_whole_picture(image: Image.Image, scale: float, mean: float, std: float) -> np.ndarray:
    """The baseline: the predictor before MNIST-style preprocessing (grayscale, invert by the border, resize)."""
    gray = ImageOps.grayscale(ImageOps.exif_transpose(image))
    pixels = np.asarray(gray.resize((28, 28), Image.Resampling.LANCZOS), dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127.5:
        pixels = 255.0 - pixels
    return ((pixels * scale - mean) / std)[None]


def baseline_predictions(model: Path, paths: list[Path]) -> list[int]:
    session, metadata = load_model(model)
    scale, mean, std = preprocessing(metadata)
    batch = np.stack([resize_whole_picture(Image.open(path), scale, mean, std) for path in paths])
    return [int(d) for d in session.run(None, {"input": batch})[0].argmax(1)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pictures", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST folder (default: data)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        made = [(write(s, Path(folder) / f"{i:05d}"), s) for i, s in enumerate(samples(args.count, args.seed))]
        paths = [path for path, _ in made]
        labels = np.array([s.digit for _, s in made])
        print(f"{args.count} pictures (seed {args.seed}): "
              f"{sum('strokes' in s.description for _, s in made)} drawn strokes, "
              f"{sum('strokes' not in s.description for _, s in made)} font digits")
        print(f"{'variant':<11} {'preprocessing':<32} {'accuracy':>9} {'no digit':>9}")
        for model in sorted(args.run_dir.glob("models/*/model.onnx")):
            variant = model.parent.name
            before = np.array(baseline_predictions(model, paths))
            print(f"{variant:<11} {'resize whole picture (before)':<32} {100 * (before == labels).mean():8.1f}% "
                  f"{0:>9}")
            with mock.patch.object(lenet_client.preprocess, "MIN_STROKE", 0.0):  # ablation: thin strokes left thin
                thin = np.array([r.get("digit", -1) for r in classify(*load_model(model), paths)])
            print(f"{variant:<11} {'MNIST-style, thin strokes kept':<32} {100 * (thin == labels).mean():8.1f}% "
                  f"{int((thin == -1).sum()):>9}")
            results = classify(*load_model(model), paths)
            after = np.array([r.get("digit", -1) for r in results])
            print(f"{variant:<11} {'MNIST-style (lenet_client)':<32} {100 * (after == labels).mean():8.1f}% "
                  f"{int((after == -1).sum()):>9}")
            fine = np.array(["fine pen" in s.description for _, s in made])
            print(f"  fine-pen strokes ({fine.sum()}): resize {100 * (before == labels)[fine].mean():.1f}%, "
                  f"thin kept {100 * (thin == labels)[fine].mean():.1f}%, "
                  f"lenet_client.preprocess {100 * (after == labels)[fine].mean():.1f}%")
            by_kind = defaultdict(list)
            for (_, sample), ok in zip(made, after == labels):
                for kind in sample.description.split(", "):
                    if "x" not in kind:  # not the picture's size
                        by_kind[kind].append(ok)
            print("  by kind: " + ", ".join(f"{kind} {100 * np.mean(v):.1f}% ({len(v)})"
                                           for kind, v in sorted(by_kind.items())))
            wrong = [f"{s.digit}->{d} ({s.description})" for (_, s), d in zip(made, after) if d != s.digit]
            print(f"  first misreadings: {'; '.join(wrong[:8])}")
    sweep_pen_widths(args.run_dir, 300)
    fainter_mnist(args.run_dir, args.data_dir)


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

    from job.data import ensure_mnist, read_split
    from job.model import load_trained

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
