"""What a downstream app may rely on in an exported ONNX model (see docs/model-contract.md). No torch here."""

from __future__ import annotations

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
    "preprocess.method",  # how a picture becomes the 28x28 input: lenet_client.preprocess.METHOD (docs/model-contract.md)
    "metrics.test_accuracy",  # final test accuracy of the trained model, 0-1
    "run.id",
    "run.trained_at",  # UTC, ISO 8601
    "run.torch_version",
    "run.source_commit",  # git commit of the job's source, or "unknown"
    "run.recipe",
)


def preprocessing(metadata: dict[str, str]) -> tuple[float, float, float]:
    """(scale, mean, std) such that input = (pixel * scale - mean) / std, pixel in 0-255."""
    try:
        return (float(metadata["preprocess.scale"]), float(metadata["preprocess.mean"]),
                float(metadata["preprocess.std"]))
    except KeyError as missing:
        raise ValueError(f"the model's metadata has no {missing.args[0]!r}: not an export of this job") from None
