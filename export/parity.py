"""Stage 6: prove that every exported file predicts what the trained model predicts.

Each format runs the whole test set at a large batch, and at batch size 1, and is compared with the eager model's
logits at the large batch (on a CPU, the job's own final evaluation's): argmax agreements, the largest
|logit difference|, and its own accuracy. At batch 1 the two torch formats run on a fixed stratified sample, the
first 100 test images of each digit (1,000 of 10,000): they cost a Python call per image, more than half of the
whole check on all 10,000, and they are not what downstream apps load. onnxruntime, which is, runs every image at
batch 1 as well.
onnxruntime runs twice, with its default graph optimizations and with none (ORT_DISABLE_ALL): the default
optimizations delete Dropout nodes, which would make a model exported in training mode look right.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from export.checks import FormatParity
from lenet_client.contract import INPUT_NAME, OUTPUT_NAME

Runner = Callable[[torch.Tensor], torch.Tensor]


def onnx_runner(path: Path, optimize: bool) -> Runner:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    # As many threads as torch may use here (one per variant side by side): onnxruntime's default, one spinning
    # thread per core, competes with the other variant's process for its core.
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])


def format_runners(paths: dict[str, Path]) -> dict[str, Runner]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        scripted = torch.jit.load(str(paths["torchscript"]), map_location="cpu").eval()
    program = torch.export.load(paths["torch_export"]).module()
    return {
        "torchscript": scripted,
        "torch_export": program,
        "onnxruntime": onnx_runner(paths["onnx"], optimize=True),
        "onnxruntime_no_optimizations": onnx_runner(paths["onnx"], optimize=False),
    }


SAMPLE_PER_DIGIT = 100
SAMPLED_AT_BATCH_1 = ("torchscript", "torch_export")
ALL_IMAGES = "all"
STRATIFIED_SAMPLE = f"first {SAMPLE_PER_DIGIT} of each digit"


def stratified_sample(labels: torch.Tensor, per_digit: int = SAMPLE_PER_DIGIT) -> torch.Tensor:
    """Indices of the first `per_digit` images of each class, in the set's order: the same every run."""
    return torch.cat([(labels == digit).nonzero().flatten()[:per_digit] for digit in range(10)]).sort().values


def logits_of(run: Runner, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([run(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


def check_parity(model: nn.Module, paths: dict[str, Path], images: torch.Tensor, labels: torch.Tensor, *,
                 batch_sizes: tuple[int, ...], max_abs_diff: float, max_rel_diff: float, min_agreement: float,
                 reference: torch.Tensor | None = None,
                 should_stop: Callable[[], None] = lambda: None) -> list[FormatParity]:
    """One row per batch size and format, in that order. `reference`: the eager model's logits for `images` at the
    largest batch size on the CPU, if already computed (the job's own final evaluation on a CPU is exactly that);
    otherwise they are computed here. `should_stop` is called before each pass; it raises to abandon the check (e.g.
    on SIGTERM)."""
    images, labels = images.cpu().contiguous(), labels.cpu()
    runners = format_runners(paths)
    all_logits = reference if reference is not None else \
        logits_of(copy.deepcopy(model).cpu().eval(), images, max(batch_sizes))
    sample = stratified_sample(labels)

    def check_format(name: str) -> list[FormatParity]:
        rows = []
        for batch_size in batch_sizes:
            should_stop()
            sampled = batch_size == 1 and name in SAMPLED_AT_BATCH_1
            chosen = sample if sampled else slice(None)
            expected, truth = all_logits[chosen], labels[chosen]
            logits = logits_of(runners[name], images[chosen], batch_size)
            predicted = logits.argmax(1)
            agreements = int((predicted == expected.argmax(1)).sum())
            difference = (logits - expected).abs()
            # As numpy.allclose: |a - b| <= atol + rtol * |b|, so that a model with large logits is not failed for
            # differences that are float32 rounding at its scale.
            scaled = float((difference / (max_abs_diff + max_rel_diff * expected.abs())).max())
            rows.append(FormatParity(
                format=name, batch_size=batch_size, images=len(truth),
                sample=STRATIFIED_SAMPLE if sampled else ALL_IMAGES, argmax_agreements=agreements,
                max_abs_logit_diff=float(difference.max()), max_scaled_diff=scaled,
                accuracy=int((predicted == truth).sum()) / len(truth),
                passed=bool(agreements >= min_agreement * len(truth) and scaled <= 1)))
        return rows

    by_format = {name: check_format(name) for name in runners}
    return [by_format[name][row] for row in range(len(batch_sizes)) for name in runners]
