"""The job and the predictor run as a user who is not root (the image runs as one), against files and folders that
user cannot read, list or write, with a home folder it cannot write. Each outcome is one line and its documented
status, and a good run prints nothing on stderr.

These tests need root to set the files up and `setpriv` to drop to `nobody`; elsewhere they are skipped.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, TINY, seven

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def nobody_can_run_python() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    done = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import torch, onnxruntime"], capture_output=True)
    return done.returncode == 0


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not nobody_can_run_python(),
                                                   reason="needs root, setpriv, and an interpreter nobody can run")]


@pytest.fixture
def place():
    """A folder `nobody` may enter, outside pytest's own (which only root may): its files are set up per test."""
    folder = Path(tempfile.mkdtemp(prefix="lenet-nonroot-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def owned_by_nobody(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)
    return path


def as_nobody(command, cwd, tmpdir=None, **settings):
    """`command` as user nobody, with root's HOME (which nobody cannot write: matplotlib and onnxruntime must not
    complain about it) and the given LENET_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LENET_", "MPLCONFIGDIR", "XDG_", "TMPDIR"))}
    env.update({"PYTHONPATH": str(ROOT), "HOME": "/root"} | ({"TMPDIR": str(tmpdir)} if tmpdir else {}))
    env.update({f"LENET_{key.upper()}": str(value) for key, value in settings.items()})
    return subprocess.run([*AS_NOBODY, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def job_as_nobody(place, **settings):
    """The job as nobody, with its temporary files in place/tmp."""
    return as_nobody([sys.executable, "-m", "job"], owned_by_nobody(place / "work"), tmpdir=owned_by_nobody(
        place / "tmp"), **(TINY | {
        "data_dir": owned_by_nobody(place / "data"), "output_dir": place / "outputs"} | settings))


def test_a_run_as_nobody_with_an_unwritable_home_succeeds_and_prints_nothing_on_stderr(place):
    owned_by_nobody(place / "outputs")
    done = job_as_nobody(place, variants="plain,bn_dropout", parallel_variants="true")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (place / "outputs" / "latest.json").is_file()
    # Side by side where nobody may start the interpreter again (CI lets other users through root's home), else
    # one after the other, said on stdout: its worker processes failed to start, and the run with them (exit 6).
    again = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import os, sys; sys.exit(not os.access(sys.executable, "
                                                               "os.X_OK))"]).returncode == 0
    (report,) = (place / "outputs" / "runs").glob("*/report.json")
    assert json.loads(report.read_text())["variants_in_parallel"] == again
    assert ("variants one after the other: this user may not run" in done.stdout) != again
    # The folders it made for matplotlib and onnxruntime are gone; torch's own per-user files (torchinductor_nobody,
    # .ses) keep one name and are reused by the next run.
    assert {p.name for p in (place / "tmp").iterdir()} <= {"torchinductor_nobody", ".ses"}


def test_an_output_folder_nobody_cannot_write_is_exit_6(place):
    (place / "outputs").mkdir(mode=0o755)  # root's
    done = job_as_nobody(place)
    assert done.returncode == 6 and done.stderr.count("\n") == 1 and "Permission denied" in done.stderr


def test_an_mnist_file_nobody_cannot_read_is_a_data_problem_not_an_output_one(place):
    """It was `could not write the outputs: Permission denied: '.../t10k-images-idx3-ubyte'`, exit 6."""
    from job.training.data import ensure_mnist

    owned_by_nobody(place / "outputs")
    raw_dir, _, _ = ensure_mnist(owned_by_nobody(place / "data"), download=False)
    (raw_dir / "t10k-images-idx3-ubyte").chmod(0)
    done = job_as_nobody(place)
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    assert "data problem: cannot read " in done.stderr and "t10k-images-idx3-ubyte: Permission denied" in done.stderr


def test_extra_pictures_in_a_data_folder_nobody_may_not_write_are_all_used_and_the_cache_is_a_warning(place):
    """They were all left out as `cannot be read (Permission denied)` (exit 3): the cache, not the pictures, was
    what could not be written."""
    from job.training.data import ensure_mnist

    owned_by_nobody(place / "outputs")
    ensure_mnist(place / "shared", download=False)  # root's: nobody may read it, not write in it
    for path in [place / "shared", *(place / "shared").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    extra = place / "extra"
    for digit in range(10):
        (extra / str(digit)).mkdir(parents=True)
        seven(box=(40 + 3 * digit, 30, 150, 170)).save(extra / str(digit) / "a.png")
    extra.chmod(0o755)
    done = job_as_nobody(place, data_dir=place / "shared", extra_data=extra, extra_min_holdout=0)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1 and "not cached" in done.stderr and "Permission denied" in done.stderr
    used = re.search(r"extra pictures from .*: (\d+) for training .*, (\d+) held out", done.stdout)
    assert used and int(used[1]) + int(used[2]) == 10, done.stdout
    assert not (place / "shared" / "extra-cache").exists()


def test_a_class_folder_nobody_may_not_list_stops_the_run_before_training_with_exit_3(place):
    """Its digit's pictures were dropped with exit 0, published, and not a word (issue 35, kind 4); as root every
    folder can be listed, so only here is it seen."""
    from job.training.data import ensure_mnist

    owned_by_nobody(place / "outputs")
    ensure_mnist(place / "shared", download=False)
    for path in [place / "shared", *(place / "shared").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    extra = place / "extra"
    for digit in (3, 7):
        (extra / str(digit)).mkdir(parents=True)
        seven().save(extra / str(digit) / "a.png")
    extra.chmod(0o755)
    (extra / "3").chmod(0o755)
    (extra / "7").chmod(0o700)  # root's, not listable by nobody
    done = job_as_nobody(place, data_dir=place / "shared", extra_data=extra, extra_min_holdout=0)
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    assert "class folder 7 is a folder this user may not list (Permission denied)" in done.stderr
    (report,) = (place / "outputs").glob("runs/*/report.json")
    assert json.loads(report.read_text())["exit_code"] == 3 and not (place / "outputs" / "latest.json").exists()


def test_an_old_run_folder_nobody_cannot_remove_is_a_warning_and_the_run_is_published(place):
    outputs = owned_by_nobody(place / "outputs")
    assert job_as_nobody(place).returncode == 0
    (old,) = (outputs / "runs").iterdir()
    for path in [old, *old.rglob("*")]:  # another user's run: nobody may not delete it
        os.chown(path, 0, 0)
    done = job_as_nobody(place, keep_runs=1)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"lenet-mnist: warning: could not remove old run folder {old}: Permission denied")
    assert old.is_dir() and old.name not in (outputs / "latest.json").read_text()


@pytest.fixture
def published_model(place):
    owned_by_nobody(place / "outputs")
    assert job_as_nobody(place).returncode == 0
    return place / "outputs"


def test_the_predictor_as_nobody_reads_what_it_may_and_names_what_it_may_not(published_model, place):
    pictures = owned_by_nobody(place / "pictures")
    for name in ("a.png", "b.png", "secret.png"):
        seven().save(pictures / name)
    (pictures / "secret.png").chmod(0)
    locked = place / "locked"
    locked.mkdir(mode=0o700)  # root's, not listable by nobody
    predict = [sys.executable, "-m", "lenet_client", str(published_model)]

    done = as_nobody([*predict, str(pictures / "a.png")], place)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no warning from onnxruntime about the home
    done = as_nobody([*predict, str(pictures)], place)
    assert done.returncode == 4 and done.stderr.count("\n") == 1 and "secret.png" in done.stderr, done.stderr
    assert len(done.stdout.splitlines()) == 2  # the others were read
    done = as_nobody([*predict, str(locked)], place)
    assert done.returncode == 4 and done.stderr.count("\n") == 1 and str(locked) in done.stderr, done.stderr
    model = published_model / "unreadable.onnx"
    shutil.copy(next(published_model.glob("runs/*/models/plain/model.onnx")), model)
    model.chmod(stat.S_IWUSR)
    done = as_nobody([sys.executable, "-m", "lenet_client", str(model), str(pictures / "a.png")], place)
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
