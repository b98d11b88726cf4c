"""End to end: `python -m job` as a scheduler starts it, on a subset of the real MNIST."""

import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from conftest import PYTHON, ROOT, TINY, job_env, run_job
from job.outcome.report import Report, read_report


@pytest.fixture(scope="module")
def small_run(real_data_dir, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("job")
    done = run_job(tmp_path, real_data_dir, train_limit=6000, test_limit=1000, epochs=2, min_test_accuracy=0.8,
                   device="cpu")
    return tmp_path / "outputs", done


def test_succeeds_and_logs_one_tutorial_line_per_epoch(small_run):
    outputs, done = small_run
    assert done.returncode == 0, done.stderr
    epoch_lines = [line for line in done.stdout.splitlines() if " Epoch:" in line]
    assert len(epoch_lines) == 4
    for variant in ("plain", "bn_dropout"):  # trained side by side: the two variants' lines interleave
        mine = [line for line in epoch_lines if line.startswith(f"[{variant}] ")]
        assert [line.split(",")[0] for line in mine] == [f"[{variant}] Epoch: 1", f"[{variant}] Epoch: 2"]
        assert mine[0].startswith(f"[{variant}] Epoch: 1, Train_acc:")
    assert all(", Test_acc:" in line and ", Test_loss:" in line and line.endswith("s") for line in epoch_lines)
    assert "\r" not in done.stdout  # no progress bar when stdout is not a terminal
    assert "[plain] 61,706 parameters (layers: models/plain/summary.txt), training on cpu" in done.stdout
    assert "Total params" not in done.stdout  # the layer table goes to a file, not the log
    run_dir = outputs / json.loads((outputs / "latest.json").read_text())["run_dir"]
    assert "Total params: 61,706" in (run_dir / "models" / "plain" / "summary.txt").read_text()


def test_the_run_ends_with_each_variants_figures_where_things_are_and_a_command_that_works(small_run, tmp_path):
    import shlex

    outputs, done = small_run
    run_dir = outputs / json.loads((outputs / "latest.json").read_text())["run_dir"]
    report = read_report(run_dir / "report.json")
    *variant_lines, plots, verdict, next_step = done.stdout.splitlines()[-5:]
    for line, result in zip(variant_lines, report.variants, strict=True):
        assert line.startswith(f"[{result.variant}] test accuracy {100 * result.final_test_accuracy:.2f}%, test loss "
                               f"{result.final_test_loss:.4f}, {result.training_seconds:.1f}s training")
        assert line.endswith(f": {run_dir / 'models' / result.variant / 'model.onnx'}")
    assert plots.startswith(f"plots: {run_dir / 'plots'} (comparison, confusion_bn_dropout, ")
    assert verdict.startswith("succeeded in ") and verdict.endswith(f"(published as {outputs / 'latest.json'})")
    command = shlex.split(next_step.removeprefix("next: ").split("   #")[0])
    assert command[-1] == "YOUR_DIGIT.png" and command[-2] == str(outputs)  # no sample picture where it ran
    picture = tmp_path / "seven.png"
    shutil.copy(ROOT / "docs" / "images" / "digit-7.png", picture)
    tried = subprocess.run([*command[:-1], str(picture)], capture_output=True, text=True, timeout=120)
    assert tried.returncode == 0 and tried.stdout.startswith(f"{picture}\t"), tried.stderr


def test_every_field_of_the_report_is_filled_with_a_real_value(small_run):
    """What the schema documents is there: only the parts of an option that is off (extra data, the champion check,
    tracking) may be empty. The MLflow tags read some of these (the source commit was "unknown" for months)."""
    outputs, _ = small_run
    raw = json.loads((outputs / json.loads((outputs / "latest.json").read_text())["report"]).read_text())
    off = {"extra_data", "champion", "tracking"}
    assert {name for name, value in raw.items() if value in (None, "", [], {})} == off | {"message"}
    assert set(Report.model_fields) == set(raw)
    assert all(value not in ("", "unknown", "not installed") for value in raw["versions"].values()), raw["versions"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert raw["versions"]["source_commit"] == commit
    for variant in raw["variants"]:
        # Without LENET_EXTRA_DATA and LENET_WARM_START these two are null; tests/test_extra.py fills them.
        assert {name for name, value in variant.items() if value in (None, "", [], {})} == {"extra_holdout",
                                                                                             "warm_start"}


def test_report_holds_every_figure_and_the_published_pointer_names_it(small_run):
    outputs, _ = small_run
    latest = json.loads((outputs / "latest.json").read_text())
    run_dir = outputs / latest["run_dir"]
    report = read_report(run_dir / "report.json")
    assert report.status == "succeeded" and report.exit_code == 0 and report.accuracy_gate_passed
    # The headline, among the first fields a person reads: each variant's final test accuracy
    assert list(json.loads((run_dir / "report.json").read_text()))[:5] == [
        "schema_version", "status", "message", "exit_code", "test_accuracy"]
    assert report.test_accuracy == {v.variant: v.final_test_accuracy for v in report.variants} and len(
        report.test_accuracy) == 2
    assert report.device.type == "cpu" and report.device.threads >= 1
    assert report.device.processes == 2 and report.variants_in_parallel  # side by side, the CPU's default here
    assert {v.device for v in report.variants} == {"cpu"}
    assert report.data.source == "data_dir" and (report.data.train_images, report.data.test_images) == (6000, 1000)
    assert report.settings["train_limit"] == 6000 and report.recipe["epochs"] == 2 == report.settings["epochs"]
    assert report.settings["batch_size"] == report.recipe["batch_size"] == 128  # left to the recipe: its value
    assert report.finished_at > report.started_at and report.elapsed_seconds > 0
    assert [v.variant for v in report.variants] == ["plain", "bn_dropout"]
    for variant in report.variants:
        assert [e.epoch for e in variant.epochs] == [1, 2]
        assert variant.final_test_accuracy == variant.epochs[-1].test_accuracy >= 0.8
        assert sum(map(sum, variant.confusion_matrix)) == 1000
        assert sum(variant.confusion_matrix[i][i] for i in range(10)) == round(variant.final_test_accuracy * 1000)
        assert set(variant.artifacts) == {"state_dict", "metadata", "torchscript", "torch_export", "onnx"}
        assert len(variant.parity) == 8 and all(p.passed and p.argmax_agreements == p.images for p in variant.parity)
        sample = sum(min(100, sum(row)) for row in variant.confusion_matrix)  # the first 100 of each digit
        assert {(p.sample, p.images) for p in variant.parity} == {("all", 1000), ("first 100 of each digit", sample)}
    assert report.variants[0].parameters == 61706
    assert latest["models"]["plain"]["onnx"] == f"{latest['run_dir']}/models/plain/model.onnx"


def test_the_onnx_metadata_holds_every_key_of_the_contract(small_run):
    import onnx

    from lenet_client.contract import METADATA_KEYS
    from lenet_client.preprocess import METHOD

    outputs, _ = small_run
    latest = json.loads((outputs / "latest.json").read_text())
    for variant, files in latest["models"].items():
        metadata = {p.key: p.value for p in onnx.load(str(outputs / files["onnx"])).metadata_props}
        assert sorted(metadata) == sorted(METADATA_KEYS)
        assert metadata["model.variant"] == variant and metadata["preprocess.method"] == METHOD


def test_every_artifact_is_there_with_its_recorded_checksum(small_run):
    from hashlib import sha256

    outputs, _ = small_run
    run_dir = outputs / json.loads((outputs / "latest.json").read_text())["run_dir"]
    report = read_report(run_dir / "report.json")
    artifacts = [a for v in report.variants for a in v.artifacts.values()] + list(report.plots.values())
    for artifact in artifacts:
        assert sha256((run_dir / artifact.path).read_bytes()).hexdigest() == artifact.sha256
    assert set(report.plots) == {"samples", "curves_plain", "curves_bn_dropout", "confusion_plain",
                                 "confusion_bn_dropout", "comparison"}
    for plot in report.plots.values():
        with Image.open(run_dir / plot.path) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200


@pytest.mark.slow
def test_a_run_says_where_it_unpacked_mnist_and_made_the_output_folder(tmp_path, monkeypatch, capfd):
    """The defaults are folders in the working folder: a run started from another folder makes them there, and
    says so (data/ holds 53 MB)."""
    from conftest import job_in_process

    code, stdout, stderr = job_in_process(monkeypatch, capfd, tmp_path / "outputs", tmp_path / "data")
    assert code == 0, stderr
    assert f"outputs: created {tmp_path / 'outputs'} (LENET_OUTPUT_DIR)\n" in stdout
    assert f"MNIST unpacked from the vendored copy into {tmp_path / 'data' / 'MNIST' / 'raw'} (kept for the next " \
           f"runs: LENET_DATA_DIR): 1500 training" in stdout
    code, stdout, stderr = job_in_process(monkeypatch, capfd, tmp_path / "outputs", tmp_path / "data")
    assert code == 0 and "outputs: created" not in stdout and "MNIST from data_dir: 1500 training" in stdout, stderr


def test_a_data_problem_exits_3_with_one_line(tmp_path):
    data_dir = tmp_path / "data" / "MNIST" / "raw"
    data_dir.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data_dir / name).write_bytes(b"\x00\x00\x08\x03 truncated")
    done = run_job(tmp_path, tmp_path / "data")
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "does not match its canonical checksum" in done.stderr
    (report_path,) = (tmp_path / "outputs" / "runs").glob("*/report.json")
    assert read_report(report_path).status == "failed"


def export_cli(*args, data_dir):
    return subprocess.run([PYTHON, "-m", "job.export_cli", "--data-dir", str(data_dir), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_reexport_from_a_checkpoint_reproduces_the_published_onnx_byte_for_byte(small_run, real_data_dir, tmp_path):
    outputs, _ = small_run
    models = json.loads((outputs / "latest.json").read_text())["models"]["bn_dropout"]
    done = export_cli("reexport", str(outputs / models["state_dict"]), str(tmp_path), data_dir=real_data_dir)
    assert done.returncode == 0, done.stderr
    # onnxruntime (2 sessions) at batch 1 and every format at the large batch on all images; the torch formats at
    # batch 1 on the stratified sample
    assert done.stdout.count("10000/10000 agree") == 6
    assert done.stdout.count("1000/1000 (first 100 of each digit) agree") == 2
    assert (tmp_path / "model.onnx").read_bytes() == (outputs / models["onnx"]).read_bytes()


def test_verify_checks_an_onnx_file_against_its_recorded_accuracy(small_run, real_data_dir, tmp_path, capsys):
    import onnx
    import torch

    from job.export_cli import main as lenet_export
    from job.training.data import load_mnist
    from job.training.model import build_model
    from job.training.train import evaluate

    outputs, _ = small_run
    checkpoint = outputs / json.loads((outputs / "latest.json").read_text())["models"]["plain"]["state_dict"]
    metadata = json.loads((checkpoint.parent / "model.json").read_text())
    model = build_model("plain", 0.0)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    accuracy = evaluate(model, load_mnist(real_data_dir, download=False, normalize=True).test, 1000).accuracy
    shutil.copy(checkpoint, tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps(metadata | {"metrics.test_accuracy": f"{accuracy:.4f}"}))
    data = ["--data-dir", str(real_data_dir)]  # in this process: the command's own subprocess test is above
    assert lenet_export([*data, "reexport", str(tmp_path / "model.pt"), str(tmp_path)]) == 0
    # The same file recording an accuracy 1 point off: verify reads the recorded figure from the file's metadata.
    proto = onnx.load(str(tmp_path / "model.onnx"))
    (entry,) = [p for p in proto.metadata_props if p.key == "metrics.test_accuracy"]
    entry.value = f"{accuracy - 0.01:.4f}"
    onnx.save(proto, str(tmp_path / "wrong.onnx"))
    for name, expected_status in (("model", 0), ("wrong", 5)):
        capsys.readouterr()
        assert lenet_export([*data, "verify", str(tmp_path / f"{name}.onnx")]) == expected_status, name
        assert f"test accuracy {100 * accuracy:.2f}% on 10000 images" in capsys.readouterr().out
    # The published run, as lenet-predict takes it: the outputs folder, and a variant of it (its accuracy was
    # recorded on 1,000 test images, hence the tolerance).
    for variant in ([], ["--variant", "bn_dropout"]):
        assert lenet_export([*data, "verify", str(outputs), "--tolerance", "1", *variant]) == 0, variant
        onnx = json.loads((outputs / "latest.json").read_text())["models"][(variant or ["", "plain"])[1]]["onnx"]
        assert f"{outputs / onnx}: ok, matches" in capsys.readouterr().out


def test_every_argument_of_lenet_export_says_what_it_is():
    for command in ("reexport", "verify"):
        done = subprocess.run([PYTHON, "-m", "job.export_cli", command, "--help"], capture_output=True, text=True,
                              timeout=60)
        positional = done.stdout.split("positional arguments:")[1].split("options:")[0].strip().splitlines()
        assert done.returncode == 0 and all(len(line.split(maxsplit=1)) == 2 for line in positional), done.stdout


def test_verify_of_a_file_that_is_not_onnx_is_one_line_and_exit_2(real_data_dir, tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("not a model")
    done = export_cli("verify", str(bogus), data_dir=real_data_dir)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not an ONNX model" in done.stderr


@pytest.mark.slow
def test_the_same_seed_gives_the_same_figures_on_cpu(real_data_dir, tmp_path):
    """Twice side by side: once with the workers forked from the preloaded server (the default), once in fresh
    interpreters, the fallback where the server's Unix socket cannot be made (a TMPDIR too long for one)."""
    figures = []
    for attempt, temporary_folder, start in (("first", tmp_path, "forked from the preloaded worker server"),
                                             ("second", tmp_path / ("t" * 120), "each in a fresh interpreter")):
        folder = tmp_path / attempt
        folder.mkdir()
        temporary_folder.mkdir(exist_ok=True)
        env = job_env(folder, real_data_dir, train_limit=1000, test_limit=200, epochs=2, min_test_accuracy=0,
                      device="cpu", seed=7) | {"TMPDIR": str(temporary_folder)}
        done = subprocess.run([PYTHON, "-m", "job"], env=env, cwd=folder, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert f"each, {start}" in done.stdout
        (report_path,) = (folder / "outputs" / "runs").glob("*/report.json")
        report = read_report(report_path)
        assert report.variants_in_parallel  # both variants, side by side, as a default run on CPU does
        figures.append([[(e.train_loss, e.test_loss, e.test_accuracy) for e in v.epochs] for v in report.variants])
    assert figures[0] == figures[1]


def run_on_a_terminal(tmp_path, data_dir, **settings) -> str:
    """Run the job with stdout on a pseudo-terminal, as an interactive user would; return what it printed."""
    import os
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen([PYTHON, "-m", "job"], env=job_env(tmp_path, data_dir, **settings), cwd=tmp_path,
                               stdout=terminal, stderr=subprocess.DEVNULL)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the job exited and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0
    os.close(controller)
    return output.decode(errors="replace")


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar_within_the_epoch(real_data_dir, tmp_path):
    output = run_on_a_terminal(tmp_path, real_data_dir, train_limit=3000, test_limit=200, epochs=1,
                               variants="plain", min_test_accuracy=0)
    assert "\r[plain] Epoch: 1 [###" in output and "24/24" in output
    assert "[plain] Epoch: 1, Train_acc:" in output


@pytest.mark.slow
def test_variants_side_by_side_share_one_status_line_on_a_terminal_and_each_log_line_replaces_it(real_data_dir,
                                                                                                tmp_path):
    output = run_on_a_terminal(tmp_path, real_data_dir, train_limit=6000, test_limit=200, epochs=1,
                               min_test_accuracy=0, parallel_variants="true")
    statuses = re.findall(r"\r\x1b\[K([^\r\n]*)(?=\r\x1b\[K)", output)  # drawn, then erased by the next write
    both = [s for s in statuses if re.fullmatch(r"\[plain\] Epoch: 1 \[[#.]{8}\] \d+/47  "
                                                   r"\[bn_dropout\] Epoch: 1 \[[#.]{8}\] \d+/47", s)]
    assert both, statuses
    for variant in ("plain", "bn_dropout"):  # every log line whole, on a line of its own
        assert re.search(rf"\r\x1b\[K\[{variant}\] Epoch: 1, Train_acc:[^\r]*\r?\n", output), variant


def shell_commands(document: str) -> list[str]:
    """The commands of a document's ```sh blocks, comments and continuation lines joined, as a reader pastes them."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / document).read_text(), re.S)
    commands = []
    for block in blocks:
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


# Pasted elsewhere, or not here: make's (test_the_readmes_command_for_the_job... and CI), Docker's (no engine here;
# CI validates compose.yaml), the client's own venv (tests/test_client.py installs it so), a server's (test_web,
# test_tracking).
RUN_ELSEWHERE = ("make ", "mkdir -p outputs", "export HOST_UID", "docker ", "python3 -m venv client-venv",
                 "client-venv/bin/", "MLFLOW_TRACKING_URI=")


@pytest.mark.slow
def test_the_readmes_commands_paste_as_they_are_and_end_as_it_says(small_run, real_data_dir, tmp_path):
    """Every command of the README's and the retraining guide's blocks, run as pasted in a checkout with a published
    run of both variants (the job's own settings made tiny through the environment): each ends as the text says."""
    from job.outcome import status

    for name in (".venv", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(small_run[0], tmp_path / "outputs")
    tiny = job_env(tmp_path, real_data_dir, **TINY)
    commands = [c for document in ("README.md", "docs/retraining.md") for c in shell_commands(document)]
    pasted = [c for c in commands if not c.startswith(RUN_ELSEWHERE)]
    assert len(pasted) >= 5 and all(c.startswith((".venv/bin/", "LENET_")) for c in pasted), pasted
    sorted_unsure = None
    for command in pasted:
        # The retraining example's one picture is too few to judge a retrained model on: exit 13, as the text says;
        # exit 3 where the predictor said it was unsure of it, and it waits in labelled/unsure/ for a person.
        expected = status.OK.code if "LENET_EXTRA_DATA=" not in command else (
            status.DATA.code if sorted_unsure else status.HOLDOUT_TOO_SMALL.code)
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env=tiny)
        assert done.returncode == expected, (command, done.stderr[-2000:])
        if "--sort-into labelled" in command:
            sorted_unsure = done.stdout.split("\t")[3] == "unsure"
            assert sorted_unsure == (tmp_path / "labelled" / "unsure").is_dir(), done.stdout


def test_the_status_line_fits_a_narrow_terminal_with_every_variant():
    import ctypes

    from job.running.pool import status_line

    progress = (ctypes.c_int * 6)(3, 120, 469, 3, 95, 469)
    wide = status_line(("plain", "bn_dropout"), progress, 7, {}, width=80)
    assert wide == "[plain] Epoch: 3 [##......] 120/469  [bn_dropout] Epoch: 3 [#.......] 95/469"
    narrow = status_line(("plain", "bn_dropout"), progress, 7, {}, width=40)
    assert narrow == "[plain] 3/7 25%  [bn_dropout] 3/7 20%" and len(narrow) < 40
