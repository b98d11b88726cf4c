"""What a parity check found, as the run's report records it (no torch here: the report and the job's exit
status read it without loading the exporter)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FormatParity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = Field(description="torchscript | torch_export | onnxruntime | onnxruntime_no_optimizations")
    batch_size: int
    images: int
    sample: str = Field("all", description="Which test images: 'all', or 'first 100 of each digit' (the fixed "
                                           "stratified sample of the torch formats at batch 1)")
    argmax_agreements: int = Field(description="Images where this format's top class equals the eager model's")
    max_abs_logit_diff: float = Field(description="Largest |logit difference| from the eager model")
    max_scaled_diff: float = Field(description="Largest |difference| / (max_abs_diff + max_rel_diff * |eager "
                                               "logit|), as numpy.allclose; at most 1 to pass")
    accuracy: float = Field(description="This format's test accuracy (0-1)")
    passed: bool


def describe(check: FormatParity) -> str:
    sample = "" if check.sample == "all" else f" ({check.sample})"
    return (f"{check.format} at batch {check.batch_size}: {check.argmax_agreements}/{check.images}{sample} agree, "
            f"max |diff| {check.max_abs_logit_diff:.1e}, accuracy {100 * check.accuracy:.2f}%")


def describe_failures(results: list[FormatParity]) -> str:
    return "; ".join(describe(r) for r in results if not r.passed)
