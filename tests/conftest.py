"""Shared fixtures: small IDX files written by the tests, and the real MNIST unpacked once per session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) in the IDX format MNIST uses: magic, dimensions, then the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def small_mnist(raw_dir: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Random digits in MNIST's files and layout: enough to exercise loading, not to learn anything."""
    rng = np.random.default_rng(seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(raw_dir / name, array)
    return arrays


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory) -> Path:
    """The real MNIST, unpacked from the vendored copy and verified, shared by the tests that need it."""
    from job.training.data import ensure_mnist

    data_dir = tmp_path_factory.mktemp("mnist")
    ensure_mnist(data_dir, download=False)
    return data_dir


def job_env(tmp_path: Path, data_dir: Path, **settings: object) -> dict[str, str]:
    """Environment for `python -m job` as a subprocess: the given LENET_* settings and nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENET_")}
    env.update({"LENET_DATA_DIR": str(data_dir), "LENET_OUTPUT_DIR": str(tmp_path / "outputs"),
                "PYTHONPATH": str(ROOT)})
    env.update({f"LENET_{key.upper()}": str(value) for key, value in settings.items()})
    return env


PYTHON = sys.executable

# Fixtures that run the whole job or train on the real MNIST: a test that uses one is slow (`make test-fast`
# leaves it out). Tests that are slow for other reasons carry @pytest.mark.slow themselves.
SLOW_FIXTURES = {"published", "outputs", "small_run", "small_trained_onnx", "client_only", "server", "first_published",
                 "published_by_the_job", "browser"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


# An output dir that already holds one published run, and the tiny settings its runs use (tests of what happens
# to what is published: test_robustness.py, test_field.py).
THREADS_OF_A_PROCESS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
    else os.cpu_count() or 1  # what torch takes in a fresh process: one thread per core
TINY = dict(train_limit=1500, test_limit=300, epochs=1, variants="plain", min_test_accuracy=0, device="cpu")


def snapshot(folder):
    """Every file under `folder` with its bytes: what a consumer could read."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def published_files(outputs):
    latest = json.loads((outputs / "latest.json").read_text())
    return snapshot(outputs / latest["run_dir"]) | {"latest.json": (outputs / "latest.json").read_bytes()}


def published_id(outputs):
    return json.loads((outputs / "latest.json").read_text())["run_id"]


@pytest.fixture(scope="session")
def published(real_data_dir, tmp_path_factory, worker_id):
    """An output dir that already holds one published run: read only (tests change the `outputs` copy). Made once
    per test session: with pytest-xdist's workers, by whichever asks first, in the session's shared folder (the
    parent of each worker's own), while the others wait for it."""
    from filelock import FileLock

    tmp_path = (tmp_path_factory.mktemp("published") if worker_id == "master" else
                tmp_path_factory.getbasetemp().parent / "published")
    tmp_path.mkdir(exist_ok=True)
    with FileLock(tmp_path.parent / "published.lock"):
        if not (tmp_path / "outputs" / "latest.json").is_file():
            done = subprocess.run([PYTHON, "-m", "job"], env=job_env(tmp_path, real_data_dir, **TINY), cwd=tmp_path,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
    return tmp_path / "outputs"


@pytest.fixture
def outputs(published, tmp_path):
    copy = tmp_path / "outputs"
    shutil.copytree(published, copy)
    return copy


def run_in_process(monkeypatch, outputs, data_dir, **settings):
    from job.cli import main

    for name in [n for n in os.environ if n.startswith("LENET_")]:
        monkeypatch.delenv(name)
    for key, value in job_env(outputs.parent, data_dir, **(TINY | settings)).items():
        if key.startswith("LENET_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(outputs.parent)
    import torch

    shared = torch.get_num_threads()
    torch.set_num_threads(THREADS_OF_A_PROCESS)  # a run decides side by side or not from it, as a process would
    try:
        return main()
    finally:
        torch.set_num_threads(shared)


def job_in_process(monkeypatch, capfd, outputs, data_dir, stop_at=None, number=signal.SIGTERM, **settings):
    """The job run in this process as `python -m job` runs it, with the tiny settings: (exit status, stdout,
    stderr). A subprocess adds nothing to what most outcome tests check, and costs ~3x the time (torch's import and
    its exporters' first call). What a process would have printed is all here: `capfd` reads the file descriptors
    (native libraries' output too), and Python's warnings are printed to stderr as the interpreter would.

    `stop_at`: this process gets the signal `number` once the log has written a line that holds it, as a
    scheduler's stop lands on the job (real signal, the job's handler; the run's own process only: not for lines
    that worker processes write). The handler only sets the stop flag, which every stage reads at its next check,
    so a signal at a stage's first line is a signal during that stage.

    The environment variables the run sets for itself (MLflow's timeouts, a temporary MPLCONFIGDIR) are undone
    after it, as they end with a process; a run that hangs ends the test session after 300 s with every thread's
    traceback."""
    import faulthandler
    import warnings

    import job.log
    from job.running.stop import STOP_SIGNALS

    if stop_at is not None:
        write_line = job.log.write_line

        def signal_on_marker(stream, message, end="\n"):
            write_line(stream, message, end)
            if stop_at in message:
                os.kill(os.getpid(), number)

        monkeypatch.setattr(job.log, "write_line", signal_on_marker)
    handlers = {n: signal.getsignal(n) for n in STOP_SIGNALS}
    environment = dict(os.environ)
    capfd.readouterr()
    faulthandler.dump_traceback_later(300, exit=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()  # the interpreter's own filters, not pytest's
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            code = run_in_process(monkeypatch, outputs, data_dir, **settings)
    finally:
        faulthandler.cancel_dump_traceback_later()
        for n, handler in handlers.items():
            signal.signal(n, handler)
        for name in [n for n in os.environ if not n.startswith("LENET_") and os.environ[n] != environment.get(n)]:
            if name in environment:
                os.environ[name] = environment[name]
            else:
                del os.environ[name]
    out, err = capfd.readouterr()
    return code, out, err + "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                                    for w in caught)


def run_job(tmp_path, data_dir, *args, **settings):
    """`python -m job ARGS` as a scheduler starts it, with the given LENET_* settings."""
    return subprocess.run([PYTHON, "-m", "job", *args], env=job_env(tmp_path, data_dir, **settings), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def seven(size=(200, 200), box=(60, 40, 140, 160), width=9, ink=0, paper=255, mode="L") -> Image.Image:
    """A 7 drawn on a canvas with a pen, as a user would: the top bar, then the diagonal."""
    image = Image.new("L", size, paper)
    left, top, right, bottom = box
    ImageDraw.Draw(image).line([(left, top), (right, top), (left + (right - left) * 0.35, bottom)], fill=ink,
                               width=width, joint="curve")
    return image.convert(mode)


@pytest.fixture(scope="session", autouse=True)
def torch_threads_shared_among_workers():
    """pytest-xdist runs a worker per core, and torch in each would take a thread per core: in-process training and
    exports beside another worker then wait on each other's threads, about twice as long. Each worker gets its share
    of the cores; the jobs that tests start as processes choose their own, as always, and so do runs in this
    process (run_in_process gives them a process's threads for the run)."""
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, THREADS_OF_A_PROCESS // workers))
    yield


@pytest.fixture(scope="session", autouse=True)
def onnx_exporter_registry_built_once():
    """torch.onnx.export builds its table of ONNX functions for every ATen operator anew at each call (0.8 s here:
    it reads and parses the source of ~500 onnxscript functions). The job calls it once per process; a test process
    exports again and again (runs in this process, export fixtures), so here it is built once per opset and shared.
    The exporter only reads it: tests/test_export.py's byte-identical exports still hold. Where torch's private
    layout differs (another torch), nothing is changed."""
    import functools

    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        yield
        return
    registry = _registration.ONNXRegistry
    original = registry.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return
    build = functools.cache(original.__func__)
    registry.from_torchlib = classmethod(build)  # type: ignore[method-assign, assignment]
    yield
    registry.from_torchlib = original  # type: ignore[method-assign]


def children_by_parent():
    """parent pid -> the pids of its live children, from /proc (the forkserver, the workers, multiprocessing's
    helpers)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def descendants(pid):
    """Every live process under `pid`."""
    children = children_by_parent()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def children(pid):
    return children_by_parent().get(pid, [])


def live(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def foreign_model(path, *, input_name="input", input_shape=("N", 1, 28, 28), input_type=None, output_name="logits",
                  output_shape=("N", 10), metadata=None, outputs=10, noise=False):
    """A plausible ONNX model that is not this job's: one Identity-like graph with the contract's metadata (its
    logits the first `outputs` pixels, plus random noise if `noise`), and one thing changed."""
    import onnx
    from onnx import TensorProto, helper

    elem = input_type or TensorProto.FLOAT
    nodes = [helper.make_node("Flatten", [input_name], ["flat"]),
             helper.make_node("Slice", ["flat", "start", "end", "axis"], ["sliced" if noise else output_name])]
    if noise:  # as dropout exported in training mode would
        nodes += [helper.make_node("RandomUniformLike", ["sliced"], ["random"]),
                  helper.make_node("Add", ["sliced", "random"], [output_name])]
    inits = [helper.make_tensor(name, TensorProto.INT64, [1], [value])
             for name, value in (("start", 0), ("end", outputs), ("axis", 1))]
    graph = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info(input_name, elem, list(input_shape))],
                              [helper.make_tensor_value_info(output_name, elem, list(output_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {"preprocess.scale": repr(1 / 255), "preprocess.mean": "0.1307",
                                    "preprocess.std": "0.3081"}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path
