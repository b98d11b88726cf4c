"""Recognize digits in image files with an exported ONNX model: a downstream example that needs no torch.

    python -m export.predict model.onnx IMAGE [IMAGE ...]

Only onnxruntime, numpy and Pillow are used, and the preprocessing is read from the model's own metadata,
so a slim image that never installs torch can run it. Prints one line per image: path, digit, probability.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

from export.contract import INPUT_NAME, OUTPUT_NAME, preprocessing

SIZE = 28


def load_model(path: Path) -> tuple[ort.InferenceSession, dict[str, str]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, dict(session.get_modelmeta().custom_metadata_map)


def to_input(image: Image.Image, scale: float, mean: float, std: float) -> np.ndarray:
    """Any picture of one digit -> float32 [1, 28, 28] as the model was trained on: white digit on black."""
    gray = ImageOps.grayscale(ImageOps.exif_transpose(image))
    pixels = np.asarray(gray.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.float32)
    # MNIST digits are light on a dark background; a scan or drawing is usually the other way round. The border
    # is background in either case, so a light border means the picture must be inverted.
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127.5:
        pixels = 255.0 - pixels
    return ((pixels * scale - mean) / std)[None]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict(model_path: Path, image_paths: list[Path]) -> list[tuple[int, float]]:
    session, metadata = load_model(model_path)
    scale, mean, std = preprocessing(metadata)
    batch = np.stack([to_input(Image.open(path), scale, mean, std) for path in image_paths])
    probabilities = softmax(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
    return [(int(p.argmax()), float(p.max())) for p in probabilities]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.predict", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an ONNX file exported by this job")
    parser.add_argument("images", type=Path, nargs="+", help="PNG or JPEG files, one digit each, any size")
    args = parser.parse_args(argv)
    try:
        results = predict(args.model, args.images)
    except (OSError, UnidentifiedImageError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail) as error:
        print(f"predict: {error}", file=sys.stderr)
        return 2
    for path, (digit, probability) in zip(args.images, results):
        print(f"{path}\t{digit}\t{probability:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
