"""Scheduled retraining: interruption, concurrent runs, bad input and full disks never touch what is published."""

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, TINY, job_env, job_in_process, published_files, published_id, run_in_process
from job.outcome.report import read_report
from job.settings import Settings


def new_run_dirs(outputs, old_id):
    return [p for p in sorted((outputs / "runs").iterdir()) if p.name != old_id]


def no_partial_files(outputs):
    return not [p for p in outputs.rglob("*") if ".partial" in p.name]


def start(outputs, data_dir, **settings):
    env = job_env(outputs.parent, data_dir, **(TINY | settings))
    return subprocess.Popen([PYTHON, "-m", "job"], env=env, cwd=outputs.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def signal_when(process, marker, number=signal.SIGTERM):
    """Send `number` as soon as the job logs a line containing `marker`; return (exit status, stdout, stderr)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            process.send_signal(number)
            break
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, "".join(lines) + stdout, stderr


def stop_while_writing_the_report(monkeypatch):
    """The stop signal lands while the report is being written."""
    import job.outcome.report as report

    original = report.write_text_atomically

    def stopped(path, text):
        if path.name == "report.json":
            os.kill(os.getpid(), signal.SIGTERM)
        original(path, text)

    monkeypatch.setattr(report, "write_text_atomically", stopped)


@pytest.mark.parametrize("moment, marker, settings, patch", [
    ("loading data", ", recipe ", {}, None),
    ("mid-epoch", "[plain] Epoch: 1,", {"epochs": 3, "train_limit": 6000}, None),
    ("mid-epoch, variants side by side", "[bn_dropout] Epoch: 1,",
     {"epochs": 3, "train_limit": 6000, "variants": "plain,bn_dropout", "parallel_variants": "true"}, None),
    ("during export", "[plain] exporting", {}, None),
    ("while writing the report", None, {}, stop_while_writing_the_report),
])
def test_sigterm_stops_the_run_and_leaves_the_published_model_alone(outputs, real_data_dir, moment, marker,
                                                                     settings, patch, monkeypatch, capfd):
    """In this process (the signal is real, its handler the job's), but side by side in a subprocess: the line
    that the stop follows is a worker's."""
    before, old_id = published_files(outputs), published_id(outputs)
    started = time.monotonic()
    if "side by side" in moment:
        code, stdout, stderr = signal_when(start(outputs, real_data_dir, **settings), marker)
    else:
        if patch:
            patch(monkeypatch)
        code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, stop_at=marker, **settings)
    assert code == 143, (moment, stdout[-2000:], stderr)
    assert time.monotonic() - started < 60
    assert "interrupted by SIGTERM" in stderr and stderr.count("\n") == 1
    assert published_files(outputs) == before
    assert no_partial_files(outputs)
    (interrupted,) = new_run_dirs(outputs, old_id)
    report = read_report(interrupted / "report.json")
    assert report.status == "interrupted" and report.exit_code == 143 and not report.published
    if moment.startswith("mid-epoch"):
        assert not report.variants  # stopped inside training, at a batch boundary


def test_sigint_exits_130(outputs, real_data_dir, monkeypatch, capfd):
    before = published_files(outputs)
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, stop_at="[plain] Epoch: 1,",
                                     number=signal.SIGINT, epochs=3, train_limit=6000)
    assert code == 130 and "interrupted by SIGINT" in stderr
    assert published_files(outputs) == before


def test_two_runs_at_once_both_finish_and_the_pointer_names_a_complete_one(outputs, real_data_dir):
    old_id = published_id(outputs)
    first, second = start(outputs, real_data_dir), start(outputs, real_data_dir)
    assert [p.wait(timeout=300) for p in (first, second)] == [0, 0], (first.stderr.read(), second.stderr.read())
    new_runs = new_run_dirs(outputs, old_id)
    assert len(new_runs) == 2
    latest = json.loads((outputs / "latest.json").read_text())
    assert latest["run_id"] in {p.name for p in new_runs}
    manifest = json.loads((outputs / latest["manifest"]).read_text())
    run_dir = outputs / latest["run_dir"]
    from hashlib import sha256
    for name, entry in manifest["files"].items():
        assert sha256((run_dir / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert read_report(outputs / latest["report"]).status == "succeeded"
    assert no_partial_files(outputs)


def test_old_runs_are_pruned_but_never_the_published_one(outputs, real_data_dir, monkeypatch, capfd):
    published_run = published_id(outputs)
    code, _, _ = job_in_process(monkeypatch, capfd, outputs, real_data_dir, keep_runs=1, min_test_accuracy=1.0)
    assert code == 4
    assert published_run in {p.name for p in (outputs / "runs").iterdir()}  # a failed run prunes nothing
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, keep_runs=1)
    assert code == 0, stderr
    latest = json.loads((outputs / "latest.json").read_text())["run_id"]
    assert [p.name for p in (outputs / "runs").iterdir()] == [latest]


def test_champion_check_refuses_a_worse_model(outputs, real_data_dir, monkeypatch, capfd):
    before, old_id = published_files(outputs), published_id(outputs)
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, champion_check="true",
                                     champion_tolerance=0, train_limit=200)
    assert code == 7, stderr
    assert "worse than the published run" in stderr
    assert published_files(outputs) == before
    (run_dir,) = new_run_dirs(outputs, old_id)
    report = read_report(run_dir / "report.json")
    assert report.status == "champion_check_failed" and report.champion.compared_with_run == old_id
    assert report.champion.new_accuracy["plain"] < report.champion.published_accuracy["plain"]


def test_a_full_disk_while_writing_fails_with_6_and_keeps_what_was_published(monkeypatch, outputs, real_data_dir,
                                                                            capfd):
    import job.outcome.report

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    before = published_files(outputs)
    monkeypatch.setattr(job.outcome.report, "write_text_atomically", full_disk)
    assert run_in_process(monkeypatch, outputs, real_data_dir) == 6
    error = capfd.readouterr().err
    assert error.count("\n") == 1 and "No space left on device" in error
    assert published_files(outputs) == before


@pytest.fixture
def small_disk(tmp_path, request):
    """A real filesystem of 300 KiB (or the size a test names): a tmpfs, which only root may mount (skipped
    elsewhere)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    size = getattr(request, "param", "300k")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["false", "true"])
def test_a_disk_that_fills_during_export_is_exit_6_with_one_line_and_no_partial_file(small_disk, real_data_dir,
                                                                                     parallel):
    """torch's own file writers abort the process on ENOSPC (exit 134, a partial file left); the job's exports
    are written by Python, so a full disk is an ordinary output error."""
    done = subprocess.run([PYTHON, "-m", "job"], env=job_env(small_disk, real_data_dir, **(TINY | {
        "variants": "plain,bn_dropout", "parallel_variants": parallel})), cwd=small_disk, capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 6, (done.stdout[-1500:], done.stderr)
    assert done.stderr.count("\n") == 1 and "No space left on device; nothing was published" in done.stderr
    outputs = small_disk / "outputs"
    assert not [p for p in outputs.rglob("*") if ".partial" in p.name] and not (outputs / "latest.json").exists()
    (run_dir,) = (outputs / "runs").iterdir()
    last = done.stdout.splitlines()[-1]
    if (run_dir / "report.json").exists():  # the report fits once the partial exports are gone, or it does not
        assert read_report(run_dir / "report.json").exit_code == 6 and last.endswith(str(run_dir / "report.json"))
    else:
        assert last.endswith(f"no report could be written in {run_dir}")


# Where a full disk stops a plain run on the tiny settings, as shares of the room the run takes: in the first
# writes (the summary, the samples plot), among the exports (~250-290 KB each), the last plots, and the last few
# writes (the report, its schema, the manifest, latest.json); and with room to spare, where it must succeed.
DISK_SHARES = {"first writes": 0.15, "exports": 0.55, "plots": 0.9, "last writes": 0.98, "room to spare": 1.3}


@pytest.fixture(scope="module")
def room_a_run_takes(real_data_dir, tmp_path_factory):
    """The bytes a tiny plain run leaves on a tmpfs: the scale of DISK_SHARES (mounting needs root)."""
    folder = tmp_path_factory.mktemp("room")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        done = subprocess.run([PYTHON, "-m", "job"], env=job_env(folder, real_data_dir, **TINY), cwd=folder,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        usage = os.statvfs(folder)
        return (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("share", DISK_SHARES)
def test_a_disk_that_fills_at_any_write_is_one_line_exit_6_and_the_outcome_is_consistent(
        room_a_run_takes, real_data_dir, tmp_path, share, monkeypatch, capfd):
    folder = tmp_path / "small-disk"
    folder.mkdir()
    size = int(room_a_run_takes * DISK_SHARES[share]) // 4096 * 4096
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        code, stdout, stderr = job_in_process(monkeypatch, capfd, folder / "outputs", real_data_dir)
        monkeypatch.chdir(tmp_path)  # out of the folder, so that it can be unmounted
        outputs = folder / "outputs"
        assert not [p for p in outputs.rglob("*") if ".partial" in p.name]
        (run_dir,) = (outputs / "runs").iterdir()
        report = read_report(run_dir / "report.json") if (run_dir / "report.json").exists() else None
        summary = [line for line in stdout.splitlines() if " in " in line and line.split(" ")[0] in (
            "succeeded", "failed")][-1]
        pointer = json.loads((outputs / "latest.json").read_text()) if (outputs / "latest.json").exists() else None
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    if share == "room to spare":
        assert code == 0, (stdout[-1000:], stderr)
        assert stderr == "" and report.published and summary.startswith("succeeded")
        assert pointer["run_id"] == run_dir.name
    else:
        assert code == 6, (stdout[-1000:], stderr)
        assert stderr.count("\n") == 1 and "No space left on device" in stderr, stderr
        assert summary.startswith("failed") and pointer is None
        assert report is None or (report.exit_code, report.published) == (6, False)
        assert (report is None) == summary.endswith(f"no report could be written in {run_dir}")


def test_no_data_and_no_network_fails_with_3(monkeypatch, outputs, tmp_path, capfd):
    import torchvision.datasets

    import job.training.data

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: [Errno -3] Temporary failure")

    monkeypatch.setattr(job.training.data, "VENDORED_DIR", tmp_path / "no-vendored-copy")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    before = published_files(outputs)
    assert run_in_process(monkeypatch, outputs, tmp_path / "empty", download="true") == 3
    error = capfd.readouterr().err
    assert error.count("\n") == 1 and "put the four uncompressed IDX files there" in error
    assert published_files(outputs) == before


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "wrong shape"])
def test_damaged_idx_files_fail_with_3_before_training(outputs, real_data_dir, tmp_path, damage, monkeypatch, capfd):
    data_dir = tmp_path / "data"
    shutil.copytree(real_data_dir, data_dir)
    path = data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte"
    content = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif damage == "corrupted":
        path.write_bytes(content[:5000] + bytes([content[5000] ^ 0xFF]) + content[5001:])
    else:  # a valid IDX header for 30x30 images
        path.write_bytes(b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + (30).to_bytes(4, "big") * 2
                         + content[16:])
    before = published_files(outputs)
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, data_dir)
    assert code == 3
    assert stderr.count("\n") == 1
    assert "train-images-idx3-ubyte does not match its canonical checksum" in stderr
    assert "Epoch" not in stdout
    assert published_files(outputs) == before


def test_an_output_dir_that_is_a_file_fails_with_6(real_data_dir, tmp_path, monkeypatch, capfd):
    target = tmp_path / "outputs"
    target.write_text("precious")
    code, _, stderr = job_in_process(monkeypatch, capfd, target, real_data_dir)
    assert code == 6 and stderr.count("\n") == 1
    assert "LENET_OUTPUT_DIR=" in stderr and "not a folder" in stderr
    assert target.read_text() == "precious"


def make_unwritable(folder):
    """Make `folder` refuse new files, even to root (as in CI): an immutable folder (chattr +i) does that.
    Returns the undo."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    pytest.skip("running as root where chattr +i is not available: root may write anywhere")


def test_an_output_dir_that_is_not_writable_fails_with_6(real_data_dir, tmp_path, monkeypatch, capfd):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "latest.json").write_text("precious")
    undo = make_unwritable(outputs)
    try:
        code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir)
    finally:
        undo()
    assert code == 6, stderr
    assert stderr.count("\n") == 1 and f"LENET_OUTPUT_DIR={outputs} cannot hold a run folder" in stderr
    assert "Permission denied" in stderr or "Operation not permitted" in stderr
    assert (outputs / "latest.json").read_text() == "precious" and list(outputs.iterdir()) == [outputs / "latest.json"]


def test_a_device_that_is_not_present_fails_with_2(real_data_dir, tmp_path, monkeypatch, capfd):
    """cuda:99 is missing on every machine, with CUDA or without."""
    code, _, stderr = job_in_process(monkeypatch, capfd, tmp_path / "outputs", real_data_dir, device="cuda:99")
    assert code == 2 and stderr.count("\n") == 1 and "LENET_DEVICE=cuda:99: " in stderr
    assert not (tmp_path / "outputs").exists()


def test_failed_parity_exits_5_and_publishes_nothing(outputs, real_data_dir):
    """A parity bound no float32 runtime can meet (1e-12) makes onnxruntime fail the check, in worker processes."""
    before, old_id = published_files(outputs), published_id(outputs)
    done = subprocess.run([PYTHON, "-m", "job"], env=job_env(outputs.parent, real_data_dir, **(TINY | {
        "variants": "plain,bn_dropout", "parallel_variants": "true", "parity_max_abs_diff": 1e-12,
        "parity_max_rel_diff": 0})),
        cwd=outputs.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 5, done.stderr
    assert done.stderr.count("\n") == 1 and "exported model differs from the trained one: " in done.stderr
    large_batch = Settings.model_fields["eval_batch_size"].default
    assert f"onnxruntime at batch {large_batch}" in done.stderr
    assert published_files(outputs) == before
    (run_dir,) = new_run_dirs(outputs, old_id)
    report = read_report(run_dir / "report.json")
    assert report.status == "parity_failed" and report.exit_code == 5 and not report.published
    failing = [check for v in report.variants for check in v.parity if not check.passed]  # the figures are kept
    assert [v.variant for v in report.variants] == ["plain", "bn_dropout"] and failing
    # Every format is compared with eager's logits at the large batch: there TorchScript and torch.export run
    # eager's own kernels on the same batches and match it exactly, so only onnxruntime fails; at batch 1 every
    # format differs from that reference by float32 rounding (~1e-7), far over 1e-12.
    assert {check.format for check in failing if check.batch_size > 1} == {"onnxruntime",
                                                                          "onnxruntime_no_optimizations"}


@pytest.mark.slow
def test_relative_folders_mean_the_jobs_folder_in_forked_workers(monkeypatch, real_data_dir, tmp_path):
    """The forkserver keeps the folder it was started in; a job run in-process from another folder, with relative
    LENET_DATA_DIR and LENET_OUTPUT_DIR, must still read and write there in its workers (multiprocessing moves
    each new process to the starting process's folder, for a forkserver as for spawn)."""
    from job.running.pool import start_worker_server

    start_worker_server()  # from pytest's folder, as a long-lived caller would have
    (tmp_path / "mnist-here").symlink_to(real_data_dir, target_is_directory=True)
    # run_in_process moves to tmp_path; both folders are given relative to it.
    assert run_in_process(monkeypatch, tmp_path / "outputs", Path("mnist-here"), variants="plain,bn_dropout",
                          parallel_variants="true", test_limit=100, output_dir="outputs") == 0
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert read_report(run_dir / "report.json").variants_in_parallel
    assert {p.name for p in (run_dir / "models").iterdir()} == {"plain", "bn_dropout"}


def test_sigterm_while_waiting_for_another_runs_publish_lock_stops_at_once(outputs, real_data_dir, monkeypatch,
                                                                          capfd):
    """Another run holds .publish.lock (it is publishing, or hung): SIGTERM ends the waiting run at once, not when
    the lock frees or the wait (600 s here) runs out."""
    from filelock import FileLock

    import job.log

    waiting_since = []
    write_line = job.log.write_line

    def note_the_wait(stream, message, end="\n"):
        if "waiting for" in message:
            waiting_since.append(time.monotonic())
        write_line(stream, message, end)

    monkeypatch.setattr(job.log, "write_line", note_the_wait)  # job_in_process sends the signal at the same line
    before, old_id = published_files(outputs), published_id(outputs)
    with FileLock(outputs / ".publish.lock"):  # held until the run has returned
        code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, stop_at="waiting for",
                                              publish_wait_seconds=600)
        assert code == 143, (stdout[-2000:], stderr)
    assert time.monotonic() - waiting_since[0] < 10  # from the signal to the end of the run, report included
    assert "interrupted by SIGTERM" in stderr and stderr.count("\n") == 1
    (interrupted,) = new_run_dirs(outputs, old_id)
    assert read_report(interrupted / "report.json").status == "interrupted"
    assert published_files(outputs) == before
