"""What a downstream app may rely on in an exported ONNX model (see docs/model-contract.md). No torch here."""

from __future__ import annotations

import math
import re

INPUT_NAME = "input"  # float32 [N, 1, 28, 28]
OUTPUT_NAME = "logits"  # float32 [N, 10]
CLASS_LABELS = [str(digit) for digit in range(10)]

# Keys of the ONNX file's metadata_props; every value is a string.
METADATA_KEYS = (
    "model.variant",  # plain | bn_dropout
    "model.dropout",  # dropout probability while training (no effect on inference; needed to rebuild it)
    "model.classes",  # comma-separated labels of the 10 outputs, in order
    "preprocess.image_size",  # "28x28"
    "preprocess.color",  # "white digit on black background, grayscale"
    "preprocess.scale",  # multiply 0-255 pixels by this: "0.00392156862745098" (1/255)
    "preprocess.mean",  # then subtract this ("0" when the recipe does not standardize)
    "preprocess.std",  # then divide by this ("1" when the recipe does not standardize)
    # how a picture becomes the 28x28 input: lenet_client.preprocess.METHOD (docs/model-contract.md)
    "preprocess.method",
    "metrics.test_accuracy",  # final test accuracy of the trained model, 0-1
    "calibration.temperature",  # probabilities = softmax(logits / this), fitted on MNIST (job.training.calibrate)
    "calibration.min_confidence",  # below this calibrated probability, lenet-predict answers `unsure`
    "run.id",
    "run.trained_at",  # UTC, ISO 8601
    "run.torch_version",
    "run.source_commit",  # git commit of the job's source, or "unknown"
    "run.recipe",
)


def preprocessing(metadata: dict[str, str]) -> tuple[float, float, float]:
    """(scale, mean, std) such that input = (pixel * scale - mean) / std, pixel in 0-255."""
    values = []
    for key in ("preprocess.scale", "preprocess.mean", "preprocess.std"):
        if key not in metadata:
            raise ValueError(f"the model's metadata has no {key!r}: not an export of this job")
        try:
            values.append(float(metadata[key]))
        except ValueError:
            values.append(float("nan"))
        if not math.isfinite(values[-1]) or (key != "preprocess.mean" and values[-1] <= 0):
            raise ValueError(f"the model's metadata has {key}={metadata[key]!r} (allowed: a finite number"
                             f"{', above 0' if key != 'preprocess.mean' else ''})")
    return values[0], values[1], values[2]


# The temperatures a model may carry: the job fits within 0.05-20; far outside, dividing the logits by one turns
# them into infinities or a uniform guess, and every answer into nonsense.
TEMPERATURES = (0.01, 100.0)
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def calibration(metadata: dict[str, str]) -> tuple[float, float]:
    """(temperature, min_confidence): probabilities are softmax(logits / temperature), and an answer below
    min_confidence is unsure. A model exported before calibration (no such keys) reads as (1, 0): its raw softmax,
    never unsure."""
    temperature, min_confidence = metadata.get("calibration.temperature", "1"), metadata.get(
        "calibration.min_confidence", "0")
    # A plain decimal number, as the job writes it: the same rule as web/app.js's, where JavaScript's Number() would
    # read "" as 0 and "0x10" as 16, and Python's float() " 1" as 1.
    scale, minimum = (float(v) if DECIMAL.fullmatch(v) else math.nan for v in (temperature, min_confidence))
    if not (TEMPERATURES[0] <= scale <= TEMPERATURES[1] and 0 <= minimum <= 1):  # NaN fails both
        raise ValueError(f"the model's metadata has calibration.temperature={temperature!r} and "
                         f"calibration.min_confidence={min_confidence!r} (allowed: a number {TEMPERATURES[0]:g}-"
                         f"{TEMPERATURES[1]:g}, and a number 0-1)")
    return scale, minimum


def check_classes(metadata: dict[str, str]) -> None:
    """Output i must be digit i: a model that labels its outputs otherwise (a permutation, letters) is not this
    job's, and lenet-predict would answer the wrong digit. A model without the key is read as digits in order."""
    classes = metadata.get("model.classes", ",".join(CLASS_LABELS))
    if classes != ",".join(CLASS_LABELS):
        raise ValueError(f"the model's metadata has model.classes={classes!r} (allowed: {','.join(CLASS_LABELS)!r}, "
                         f"output i being digit i)")
