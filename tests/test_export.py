import os
import subprocess
import sys

import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import ROOT
from export.formats import ExportError, export_model, reject_training_graph
from export.parity import check_parity, format_runners, logits_of, onnx_runner, stratified_sample
from job.training.data import Split
from job.training.model import build_model
from lenet_client.contract import METADATA_KEYS

METADATA = {key: "x" for key in METADATA_KEYS}


@pytest.fixture(scope="module")
def random_test_split() -> Split:
    generator = torch.Generator().manual_seed(0)
    return Split(torch.rand(300, 1, 28, 28, generator=generator), torch.randint(0, 10, (300,), generator=generator))


def trained_looking(variant: str) -> torch.nn.Module:
    """Random weights, and BatchNorm statistics that are not the identity, so folding them is exercised."""
    torch.manual_seed(1)
    model = build_model(variant, dropout=0.5)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(64, 1, 28, 28) * 2)
    return model.eval()


@pytest.fixture(scope="module", params=["plain", "bn_dropout"])
def exported(request, tmp_path_factory):
    model = trained_looking(request.param)
    paths = export_model(model, tmp_path_factory.mktemp(request.param), METADATA)
    return model, paths


def test_every_format_predicts_what_the_model_predicts(exported, random_test_split):
    model, paths = exported
    results = check_parity(model, paths, random_test_split.images, random_test_split.labels, batch_sizes=(1, 128),
                           max_abs_diff=1e-4, max_rel_diff=1e-5, min_agreement=1.0)
    assert {r.format for r in results} == {"torchscript", "torch_export", "onnxruntime",
                                           "onnxruntime_no_optimizations"}
    assert all(r.passed and r.argmax_agreements == 300 for r in results), results
    assert max(r.max_abs_logit_diff for r in results) < 1e-4


def test_the_final_evaluation_is_the_parity_reference_bit_for_bit(exported, random_test_split):
    """On a CPU the job hands its final evaluation's logits to the parity check instead of running the model again:
    they must be what the check computes itself, so that every figure of the check is the same."""
    import copy

    from job.training.train import evaluate

    model, paths = exported
    images, labels = random_test_split.images, random_test_split.labels
    evaluation = evaluate(copy.deepcopy(model), random_test_split, 128)  # 3 batches, the last one short
    assert torch.equal(evaluation.logits, logits_of(copy.deepcopy(model).eval(), images, 128))
    assert torch.equal(evaluation.predictions, evaluation.logits.argmax(1))
    options = dict(batch_sizes=(1, 128), max_abs_diff=1e-4, max_rel_diff=1e-5, min_agreement=1.0)
    assert check_parity(model, paths, images, labels, reference=evaluation.logits, **options) == \
        check_parity(model, paths, images, labels, **options)


def test_parity_rows_come_by_batch_size_then_format(exported, random_test_split):
    model, paths = exported
    options = dict(batch_sizes=(1, 128), max_abs_diff=1e-4, max_rel_diff=1e-5, min_agreement=1.0)
    rows = check_parity(model, paths, random_test_split.images, random_test_split.labels, **options)
    assert [(row.batch_size, row.format) for row in rows] == [
        (batch, name) for batch in (1, 128)
        for name in ("torchscript", "torch_export", "onnxruntime", "onnxruntime_no_optimizations")]


def test_a_stop_during_a_parity_check_ends_it(exported, random_test_split, monkeypatch):
    import export.parity as parity
    from job.running.stop import Interrupted

    model, paths = exported
    checks, passes = [], []
    monkeypatch.setattr(parity, "logits_of", lambda *args: passes.append(1) or logits_of(*args))

    def stop_from_the_third_check_on():  # as the job's stop flag: once set, every check raises
        checks.append(1)
        if len(checks) >= 3:
            raise Interrupted()

    with pytest.raises(Interrupted):
        check_parity(model, paths, random_test_split.images, random_test_split.labels, batch_sizes=(1, 128),
                     max_abs_diff=1e-4, max_rel_diff=1e-5, min_agreement=1.0,
                     should_stop=stop_from_the_third_check_on)
    assert len(passes) == 3  # of 9: the eager reference and two passes; after the stop none began


def test_the_batch_1_sample_is_the_first_100_images_of_each_digit_in_order():
    labels = torch.randint(0, 10, (5000,), generator=torch.Generator().manual_seed(1))
    labels[labels == 3] = 4  # no 3 at all
    labels[:7] = 3  # and only seven of them, at the start
    sample = stratified_sample(labels)
    assert torch.equal(sample, stratified_sample(labels.clone()))  # the same every time
    assert sample.tolist() == sorted(sample.tolist())
    expected = {digit: (labels == digit).nonzero().flatten()[:100].tolist() for digit in range(10)}
    for digit in range(10):
        assert [i for i in sample.tolist() if labels[i] == digit] == expected[digit]
    assert len(sample) == 9 * 100 + 7


def test_the_torch_formats_at_batch_1_are_checked_on_the_sample_and_everything_else_on_every_image(exported):
    model, paths = exported
    labels = torch.arange(2000) % 10
    images = torch.rand(2000, 1, 28, 28)
    results = {(r.format, r.batch_size): r for r in check_parity(
        model, paths, images, labels, batch_sizes=(1, 500), max_abs_diff=1e-4, max_rel_diff=1e-5, min_agreement=1.0)}
    assert {key: (r.images, r.sample) for key, r in results.items()} == {
        ("torchscript", 1): (1000, "first 100 of each digit"), ("torch_export", 1): (1000, "first 100 of each digit"),
        ("onnxruntime", 1): (2000, "all"), ("onnxruntime_no_optimizations", 1): (2000, "all"),
        **{(name, 500): (2000, "all") for name in ("torchscript", "torch_export", "onnxruntime",
                                                   "onnxruntime_no_optimizations")}}
    assert all(r.passed for r in results.values())


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_onnx_and_torch_export_take_any_batch_size(exported, batch):
    model, paths = exported
    images = torch.rand(batch, 1, 28, 28)
    expected = model(images)
    for name, run in format_runners(paths).items():
        assert run(images).shape == (batch, 10), name
        assert torch.allclose(run(images), expected, atol=1e-4), name


def test_onnx_file_is_self_contained_checked_and_names_its_tensors(exported):
    _, paths = exported
    assert not list(paths["onnx"].parent.glob("*.data"))
    proto = onnx.load(str(paths["onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    # The batch axis by its name, in and out: exported from the torch.export program, the file would otherwise
    # carry that program's own symbol (e.g. "s77").
    for value in (proto.graph.input[0], proto.graph.output[0]):
        batch_dim = value.type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param == "batch" and not batch_dim.dim_value, value.name
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [20]


def test_every_format_holds_the_standard_pooling_operator(exported):
    """The eager model pools by strided maxima in training and under inference mode (job.training.model.MaxPool2x2); the
    files must hold the operator every runtime knows, twice (one per convolution)."""
    _, paths = exported
    assert [n.op_type for n in onnx.load(str(paths["onnx"])).graph.node].count("MaxPool") == 2
    program = torch.export.load(paths["torch_export"])
    assert [str(n.target) for n in program.graph.nodes].count("aten.max_pool2d.default") == 2
    scripted = torch.jit.load(str(paths["torchscript"]))
    assert str(scripted.inlined_graph).count("aten::max_pool2d(") == 2


def test_onnx_metadata_reads_back(exported):
    _, paths = exported
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == METADATA


def test_two_exports_of_the_same_model_are_byte_identical(exported, tmp_path):
    model, paths = exported
    again = export_model(model, tmp_path, METADATA)
    assert again["onnx"].read_bytes() == paths["onnx"].read_bytes()


def test_a_model_in_training_mode_is_refused(tmp_path):
    model = trained_looking("bn_dropout").train()
    with pytest.raises(ExportError, match="training mode"):
        export_model(model, tmp_path, METADATA)
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def training_mode_onnx(tmp_path_factory):
    """The bug the guards exist for: a BatchNorm + Dropout model exported while in training mode."""
    path = tmp_path_factory.mktemp("bug") / "train_mode.onnx"
    with pytest.warns(UserWarning, match="training mode"):  # torch warns too; the guards must not rely on it
        program = torch.onnx.export(trained_looking("bn_dropout").train(), (torch.rand(2, 1, 28, 28),),
                                    dynamo=True, input_names=["input"], output_names=["logits"], external_data=False,
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    program.save(str(path))
    return path


def test_a_graph_exported_in_training_mode_is_rejected(training_mode_onnx):
    with pytest.raises(ExportError, match="Dropout"):
        reject_training_graph(onnx.load(str(training_mode_onnx)))


def test_unoptimized_onnxruntime_exposes_a_training_mode_export(training_mode_onnx):
    """Default optimizations delete Dropout and hide the bug; ORT_DISABLE_ALL runs it and gets random outputs."""
    images = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    optimized = onnx_runner(training_mode_onnx, optimize=True)
    unoptimized = onnx_runner(training_mode_onnx, optimize=False)
    assert torch.equal(optimized(images), optimized(images))
    assert not torch.equal(unoptimized(images), unoptimized(images))


def test_the_client_imports_neither_torch_nor_the_job():
    code = ("import sys, lenet_client, lenet_client.contract, lenet_client.predict, lenet_client.preprocess, "
            "lenet_client.atomic, lenet_client.pictures, lenet_client.jsonfile; "
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('torch', 'job', 'export')]; "
            "print(loaded); sys.exit(1 if loaded else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_parity_bound_scales_with_the_logits(tmp_path, random_test_split):
    """A model with logits in the thousands (a run that trained badly) differs from its exports by float32
    rounding at that scale: relative plus absolute, as numpy.allclose, passes it; an absolute bound alone fails it."""
    model = trained_looking("plain")
    with torch.no_grad():
        model.classifier[-1].weight.mul_(1e4)
        model.classifier[-1].bias.mul_(1e4)
    paths = export_model(model, tmp_path, METADATA)
    images, labels = random_test_split.images, random_test_split.labels
    scaled = check_parity(model, paths, images, labels, batch_sizes=(1,), max_abs_diff=1e-4, max_rel_diff=1e-5,
                          min_agreement=1.0)
    absolute = check_parity(model, paths, images, labels, batch_sizes=(1,), max_abs_diff=1e-4, max_rel_diff=0,
                            min_agreement=1.0)
    assert max(c.max_abs_logit_diff for c in scaled) > 1e-4  # float32 rounding at this scale exceeds the absolute bound
    assert all(c.passed for c in scaled) and not all(c.passed for c in absolute)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """model.pt and model.json as a run writes them, for a plain model (no training: files are what matter)."""
    import json

    folder = tmp_path_factory.mktemp("checkpoint")
    model = trained_looking("plain")
    torch.save(model.state_dict(), folder / "model.pt")
    metadata = {"model.variant": "plain", "model.dropout": "0.5", "preprocess.scale": repr(1 / 255),
                "preprocess.mean": "0.1307", "preprocess.std": "0.3081"}
    (folder / "model.json").write_text(json.dumps(metadata))
    return folder


def damaged_checkpoint(kind, good, folder):
    import json
    import shutil

    shutil.copy(good / "model.pt", folder / "model.pt")
    metadata = json.loads((good / "model.json").read_text())
    if kind == "no model.json":
        return folder / "model.pt"
    if kind == "model.json not JSON":
        (folder / "model.json").write_text("{bad")
        return folder / "model.pt"
    if kind == "model.json nested too deeply":
        (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)
        return folder / "model.pt"
    if kind == "model.json a pipe":
        os.mkfifo(folder / "model.json")
        return folder / "model.pt"
    if kind == "model.json with std 0":
        metadata["preprocess.std"] = "0"
    if kind == "model.json of the other variant":
        metadata["model.variant"] = "bn_dropout"
    (folder / "model.json").write_text(json.dumps(metadata))
    if kind == "model.pt not a checkpoint":
        (folder / "model.pt").write_bytes(b"garbage")
    if kind == "model.pt truncated":
        (folder / "model.pt").write_bytes((good / "model.pt").read_bytes()[:1000])
    if kind == "model.pt a pipe":
        (folder / "model.pt").unlink()
        os.mkfifo(folder / "model.pt")
    return folder / "model.pt"


def export_cli_in_process(arguments, capsys):
    """`lenet-export ARGUMENTS` in this process (a subprocess adds only torch's import to each case): its exit
    status and stderr. An exception that escapes is the traceback the command would print."""
    from job.export_cli import main

    try:
        code = main(arguments)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind, message", [
    ("no model.json", "model.json: no such file"),
    ("model.json not JSON", "model.json: not the metadata of a model this job exported (JSONDecodeError"),
    ("model.json with std 0", "preprocess.std='0' (allowed: a finite number, above 0)"),
    ("model.json of the other variant", "model.pt: does not fit the bn_dropout model that model.json describes"),
    ("model.pt not a checkpoint", "model.pt: not a state_dict this job saved"),
    ("model.pt truncated", "model.pt: not a state_dict this job saved (PytorchStreamReader failed"),
    # These two were a RecursionError traceback and a wait for a writer that never came.
    ("model.json nested too deeply", "model.json: not the metadata of a model this job exported (ValueError: nested"),
    ("model.json a pipe", "model.json: not the metadata of a model this job exported (ValueError: not a regular file"),
    ("model.pt a pipe", "model.pt: not a regular file"),
])
def test_lenet_export_reexport_refuses_a_damaged_or_mismatched_checkpoint_in_one_line(checkpoint, tmp_path, kind,
                                                                                      message, capsys):
    """These used to end in a torch traceback (exit 1), or, for a std of 0, in files the predictor then refused."""
    damaged = damaged_checkpoint(kind, checkpoint, tmp_path)
    code, stderr = export_cli_in_process(["reexport", str(damaged), str(tmp_path / "out")], capsys)
    assert code == 2 and stderr.count("\n") == 1 and message in stderr, stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, message", [
    (["reexport", "CHECKPOINT", "A_FILE"], "lenet-export: cannot write "),
    (["reexport", "CHECKPOINT", "OUT", "--batch-size", "0"], "--batch-size: 0 is out of range (allowed: 1-10000)"),
    (["verify", "model.onnx", "--tolerance", "nan"], "--tolerance: nan is out of range (allowed: 0-1)"),
    (["verify", "model.onnx", "--tolerance", "-1"], "--tolerance: -1 is out of range"),
])
def test_lenet_export_refuses_bad_arguments_and_unwritable_outputs_in_one_line(checkpoint, tmp_path, arguments,
                                                                               message, capsys):
    (tmp_path / "A_FILE").write_text("")
    arguments = [str(checkpoint / "model.pt") if a == "CHECKPOINT" else str(tmp_path / a) if a in ("A_FILE", "OUT")
                 else a for a in arguments]
    code, stderr = export_cli_in_process(arguments, capsys)
    assert code in (2, 6) and stderr.count("\n") == 1 and message in stderr, stderr
