"""Stage 5: write a trained model as a state_dict, TorchScript, a torch.export program (.pt2) and ONNX.

Only a model in eval mode is exported: in training mode BatchNorm uses batch statistics and Dropout zeroes
activations at random, so the file would not compute what was evaluated. The ONNX graph is checked for
left-over Dropout / training-mode nodes as well, because onnxruntime's default optimizations delete Dropout
and would hide the bug from a parity check (see export.parity).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from lenet_client.atomic import write_bytes_atomically, write_text_atomically
from lenet_client.contract import INPUT_NAME, OUTPUT_NAME

# The default (torch.export-based) ONNX exporter, not the legacy TorchScript one (dynamo=False): the legacy one
# is deprecated and warns so, while the default one folds BatchNorm into Conv/Gemm, gives a graph of plain
# Conv/Relu/MaxPool/Gemm nodes and writes byte-identical files for the same weights (installed at the same path: the
# nodes' stack traces name the source files). It costs ~0.5 s per model here (from the torch.export program:
# export_onnx) against 0.04 s. Opset 20 is what both exporters produce in torch 2.14.
ONNX_OPSET = 20
EXAMPLE_BATCH = 2  # not 1: torch.export specializes a dimension whose example size is 1
FILES = {"state_dict": "model.pt", "metadata": "model.json", "torchscript": "model.torchscript.pt",
         "torch_export": "model.pt2", "onnx": "model.onnx"}


class ExportError(RuntimeError):
    """The model cannot be exported faithfully; the message says why."""


BATCH_AXIS = "batch"


def batch_dim() -> dict[str, dict[int, torch.export.Dim]]:
    return {"x": {0: torch.export.Dim(BATCH_AXIS, min=1, max=65536)}}


def export_model(model: nn.Module, out_dir: Path, metadata: dict[str, str]) -> dict[str, Path]:
    """Write every format of `model` (which must be in eval mode) into `out_dir`; return format -> path."""
    if model.training:
        raise ExportError("refusing to export a model in training mode: call model.eval() first")
    model = copy.deepcopy(model).cpu()  # files are loaded on any machine; the CPU copy is the reference
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / file for name, file in FILES.items()}
    example = torch.zeros(EXAMPLE_BATCH, 1, 28, 28)

    # Every format is serialized in memory and written by Python: torch's C++ file writers abort the whole process
    # (std::terminate, exit 134, a partial file left) when the disk fills up, where Python raises OSError.
    extra_files = {"metadata.json": json.dumps(metadata, sort_keys=True)}
    write_bytes_atomically(paths["state_dict"], serialized(torch.save, model.state_dict()))
    write_text_atomically(paths["metadata"], json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    with warnings.catch_warnings():
        # Every torch.jit call warns that TorchScript is deprecated; TorchScript is what consumers asked for.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", message=r".*TorchScript.*deprecated")
        scripted = serialized(torch.jit.save, torch.jit.script(model), _extra_files=extra_files)
    write_bytes_atomically(paths["torchscript"], scripted)
    program = torch.export.export(model, (example,), dynamic_shapes=batch_dim())
    write_bytes_atomically(paths["torch_export"], serialized(torch.export.save, program, extra_files=extra_files))
    export_onnx(program, paths["onnx"], metadata)
    return paths


def export_onnx(program: torch.export.ExportedProgram, path: Path, metadata: dict[str, str]) -> None:
    """From the program just saved as .pt2: given the model, the exporter traces it again, for a byte-identical file
    (0.9-1.0 s per model here, against 0.5-0.6 s). The axis name replaces the program's own symbol for the batch
    dimension (e.g. "s77") in the file."""
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress; the job's log is ours
        exported = torch.onnx.export(program, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                     dynamic_shapes={"x": {0: BATCH_AXIS}}, opset_version=ONNX_OPSET,
                                     external_data=False, verbose=False)
    assert exported is not None  # dynamo=True always returns the ONNXProgram
    proto = exported.model_proto
    del proto.metadata_props[:]  # the exporter's own keys describe torch internals, not the contract
    for key, value in sorted(metadata.items()):
        proto.metadata_props.add(key=key, value=value)
    reject_training_graph(proto)
    onnx.checker.check_model(proto, full_check=True)
    write_bytes_atomically(path, proto.SerializeToString())


def serialized(save, obj, **options) -> bytes:
    buffer = io.BytesIO()
    save(obj, buffer, **options)
    return buffer.getvalue()


def reject_training_graph(proto: onnx.ModelProto) -> None:
    """An inference graph has no Dropout and no node in training mode."""
    for node in proto.graph.node:
        if node.op_type == "Dropout":
            raise ExportError(f"the ONNX graph holds a Dropout node ({node.name}): the model was exported in "
                              f"training mode")
        for attribute in node.attribute:
            if attribute.name == "training_mode" and onnx.helper.get_attribute_value(attribute):
                raise ExportError(f"the ONNX graph's {node.op_type} node {node.name} is in training mode")
