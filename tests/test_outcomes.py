"""A run's outcome has four witnesses, and they agree in every outcome: the exit status, the report's `status`,
`exit_code` and `published`, the summary line of the log, and what latest.json actually names. Each case below
ends a run one way, including the failures that come after publishing has begun."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from conftest import PYTHON, TINY, children, descendants, job_env, job_in_process, live, published_files, published_id
from job.outcome import status
from job.outcome.report import read_report


# One library call made to fail the way a full disk or another user's folder makes it fail, in a run in this process.
def fail_on_pointer(monkeypatch):
    import job.outcome.publish as publish

    original = publish.write_text_atomically

    def full(path, text):
        if path.name == "latest.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        original(path, text)

    monkeypatch.setattr(publish, "write_text_atomically", full)


def fail_on_prune(monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)


SUMMARY = re.compile(r"^(succeeded|accuracy_gate_failed|parity_failed|champion_check_failed|interrupted|failed|"
                     r"diverged|tracking_failed|holdout_too_small) in [0-9.]+s: (.*)$", re.MULTILINE)


def pointer_is_a_folder(outputs):
    (outputs / "latest.json").unlink()
    (outputs / "latest.json").mkdir()


def damaged_pointer(outputs):
    (outputs / "latest.json").write_text('{"run_id": "2026')


CASES = {  # name: (settings, launcher, prepare the output dir, expected exit status, published, stderr holds)
    "succeeded": ({}, None, None, status.OK, True, ""),
    "accuracy gate missed": ({"min_test_accuracy": 0.999}, None, None, status.ACCURACY_GATE, False,
                             "below LENET_MIN_TEST_ACCURACY=0.999: plain"),
    "champion check failed": ({"train_limit": 100, "champion_check": "true", "champion_tolerance": 0}, None, None,
                              status.CHAMPION, False, "worse than the published run"),
    "diverged": ({"learning_rate": 10}, None, None, status.DIVERGED, False, ""),
    "parity failed": ({"parity_max_abs_diff": 1e-12, "parity_max_rel_diff": 0}, None, None, status.PARITY, False,
                      "exported model differs from the trained one: "),
    "interrupted during export": ({}, "SIGTERM at [plain] exporting", None, status.SIGTERM, False,
                                  "interrupted by SIGTERM"),
    "publish lock held too long": ({"publish_wait_seconds": 1}, "hold the lock", None, status.LOCK_WAIT, False,
                                   "LENET_PUBLISH_WAIT_SECONDS=1; nothing was published"),
    "latest.json damaged": ({"champion_check": "true"}, None, damaged_pointer, status.DAMAGED, False, ""),
    "latest.json is a folder": ({}, None, pointer_is_a_folder, status.OUTPUT, False,
                                "{outputs}/latest.json is a folder, not a file (what `docker run -v` of a missing "
                                "file creates): remove it"),
    "latest.json cannot be written": ({}, fail_on_pointer, None, status.OUTPUT, False, "No space left on device"),
    "old runs cannot be pruned after publishing": ({"keep_runs": 1}, fail_on_prune, None, status.OK, True,
                                                   "lenet-mnist: warning: could not remove old run folder "
                                                   "{outputs}/runs/{old_id}: Permission denied\n"),
}


def run_case(outputs, data_dir, settings, launcher, monkeypatch, capfd):
    """(exit status, stdout, stderr) of a run in this process: `launcher` is a function that patches the library
    first, or "hold the lock" (another run holds the publish lock), or "SIGTERM at MARKER"; a launcher that is
    source code runs the job in a subprocess (for runs whose workers must see the patch)."""
    if isinstance(launcher, str) and "\n" in launcher:
        env = job_env(outputs.parent, data_dir, **(TINY | settings))
        done = subprocess.run([PYTHON, "-c", launcher], env=env, cwd=outputs.parent, capture_output=True, text=True,
                              timeout=300)
        return done.returncode, done.stdout, done.stderr
    if callable(launcher):
        launcher(monkeypatch)
    if launcher == "hold the lock":
        with FileLock(outputs / ".publish.lock"):
            return job_in_process(monkeypatch, capfd, outputs, data_dir, **settings)
    stop_at = launcher.removeprefix("SIGTERM at ") if isinstance(launcher, str) else None
    return job_in_process(monkeypatch, capfd, outputs, data_dir, stop_at=stop_at, **settings)


def pointer_state(outputs):
    latest = outputs / "latest.json"
    return "folder" if latest.is_dir() else latest.read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_exit_status_report_log_and_pointer_agree(outputs, real_data_dir, case, monkeypatch, capfd):
    settings, launcher, prepare, expected, published, says = CASES[case]
    old_id = published_id(outputs)
    if prepare:
        prepare(outputs)
    old_runs = {p.name for p in (outputs / "runs").iterdir()}
    pointer_before = pointer_state(outputs)
    untouched = published_files(outputs) if pointer_before != "folder" and case != "latest.json damaged" else None

    code, stdout, stderr = run_case(outputs, real_data_dir, settings, launcher, monkeypatch, capfd)

    # 1. the exit status
    assert code == expected.code, (case, stdout[-1500:], stderr)
    # 2. the report of the new run
    (run_dir,) = [p for p in (outputs / "runs").iterdir() if p.name not in old_runs]
    report = read_report(run_dir / "report.json")
    assert (report.exit_code, report.status, report.published) == (expected.code, expected.report_status, published)
    # 3. the log's summary line, the last line but the `next:` hint
    (summary,) = SUMMARY.findall(stdout)
    assert summary[0] == expected.report_status
    assert summary[1].startswith(str(run_dir / "report.json"))
    assert ("published as" in summary[1]) == published
    # 4. what latest.json names
    if published:
        assert json.loads((outputs / "latest.json").read_text())["run_id"] == run_dir.name == report.run_id
    else:
        assert pointer_state(outputs) == pointer_before
        if untouched is not None:
            assert published_files(outputs) == untouched
    # and stderr: the run's one line when it failed; on success only warnings, each one line
    lines, says = stderr.splitlines(), says.format(outputs=outputs, old_id=old_id)
    if expected is status.OK:
        assert stderr == says  # nothing, or exactly the warning the case causes
    else:
        assert len(lines) == 1 and lines[0] == f"lenet-mnist: {report.message}" and says in stderr, stderr
    assert report.accuracy_gate_passed == (expected is not status.ACCURACY_GATE and bool(report.variants))
    if case == "old runs cannot be pruned after publishing":  # what could not be removed is still there
        assert (outputs / "runs" / old_id).is_dir()


def test_a_pointer_that_is_a_pipe_is_named_as_one(outputs, real_data_dir, monkeypatch, capfd):
    """It was named "a folder"."""
    (outputs / "latest.json").unlink()
    os.mkfifo(outputs / "latest.json")
    code, _, stderr = run_case(outputs, real_data_dir, {}, None, monkeypatch, capfd)
    assert code == status.OUTPUT.code and stderr.count("\n") == 1
    assert f"{outputs / 'latest.json'} is not a regular file (a pipe" in stderr and "remove it" in stderr


PARALLEL = {"variants": "plain,bn_dropout", "parallel_variants": "true", "epochs": 3, "train_limit": 6000}


def start_parallel(outputs, data_dir):
    env = job_env(outputs.parent, data_dir, **(TINY | PARALLEL))
    return subprocess.Popen([PYTHON, "-m", "job"], env=env, cwd=outputs.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(process, marker):
    for line in process.stdout:
        if marker in line:
            return line
    raise AssertionError(f"the job ended before logging {marker!r}: {process.stderr.read()}")


def tree(run_dir):
    return {str(p): p.stat().st_mtime_ns for p in run_dir.rglob("*")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_die_with_a_job_killed_by_sigkill_and_write_nothing_after_it(outputs, real_data_dir):
    old_runs = {p.name for p in (outputs / "runs").iterdir()}
    process = start_parallel(outputs, real_data_dir)
    wait_for_line(process, "[bn_dropout] Epoch: 1,")
    helpers = descendants(process.pid)
    assert len(helpers) >= 3  # the forkserver and the two workers at least
    process.kill()
    process.wait()
    deadline = time.monotonic() + 5
    while any(live(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in helpers if live(pid)], "processes outlived the killed job"
    (run_dir,) = [p for p in (outputs / "runs").iterdir() if p.name not in old_runs]
    before = tree(run_dir)
    time.sleep(2)
    assert tree(run_dir) == before and not (run_dir / "report.json").exists()


def test_a_worker_killed_alone_is_exit_11_and_the_other_stops(outputs, real_data_dir):
    before, old_id = published_files(outputs), published_id(outputs)
    process = start_parallel(outputs, real_data_dir)
    wait_for_line(process, "[plain] Epoch: 1,")
    # The workers are the grandchildren: forked by the forkserver, the job's child.
    workers = [pid for pid in descendants(process.pid) if pid not in children(process.pid)]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status.WORKER_KILLED.code, (stdout[-1500:], stderr)
    assert stderr.count("\n") == 1 and "worker process was killed by SIGKILL" in stderr and "Traceback" not in stderr
    (run_dir,) = [p for p in (outputs / "runs").iterdir() if p.name != old_id]
    report = read_report(run_dir / "report.json")
    assert (report.status, report.exit_code, report.published) == ("failed", 11, False)
    assert not [p for p in run_dir.rglob("*") if ".partial" in p.name]
    assert not [pid for pid in workers if live(pid)]
    assert published_files(outputs) == before


FAIL_ON_PLAIN_CURVES = """
import errno, os, sys
import job.running.pipeline as pipeline
original = pipeline.plot_curves
def full(result, path):
    if result.variant == "plain":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return original(result, path)
pipeline.plot_curves = full
from job.cli import main
sys.exit(main())
"""


def test_a_figure_that_cannot_be_drawn_fails_the_run_once_every_variant_is_in(outputs, real_data_dir):
    """Side by side, a variant's figures are drawn as its result arrives, while the other still trains: a failure
    there must wait for the other variant, so that the report holds both."""
    before, old_id = published_files(outputs), published_id(outputs)
    code, stdout, stderr = run_case(outputs, real_data_dir, PARALLEL | {"epochs": 1}, FAIL_ON_PLAIN_CURVES, None, None)
    assert code == status.OUTPUT.code, (stdout[-1500:], stderr)
    assert stderr.count("\n") == 1 and "No space left on device" in stderr and "curves_plain" in stderr
    (run_dir,) = [p for p in (outputs / "runs").iterdir() if p.name != old_id]
    report = read_report(run_dir / "report.json")
    assert (report.status, report.exit_code, report.published) == ("failed", status.OUTPUT.code, False)
    assert [v.variant for v in report.variants] == ["plain", "bn_dropout"]
    assert all(len(v.epochs) == 1 and len(v.parity) == 8 for v in report.variants)
    assert set(report.plots) == {"samples"}
    assert published_files(outputs) == before


def catches(pid, number):
    """Whether process `pid` has a handler for signal `number` (SigCgt in /proc: a bit mask, bit N-1 for signal N)."""
    try:
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except OSError:
        return False
    return bool(int(fields["SigCgt"], 16) >> (number - 1) & 1)


# The moments of the start that differ: the job's own imports (torch, matplotlib) while the forkserver imports what
# the workers need; the workers being forked from it; a worker at its first step.
START_MOMENTS = {"handlers installed": None, "side by side": "side by side on cpu",
                 "a worker at work": "parameters (layers:"}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("number, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["Ctrl-C to the process group", "SIGTERM to the job"])
@pytest.mark.parametrize("moment", START_MOMENTS)
def test_a_stop_signal_at_any_moment_of_the_start_gives_its_status_and_one_line(real_data_dir, tmp_path, number,
                                                                                to_group, moment):
    """From the moment the job handles signals (its first instruction; before that, the interpreter's own start,
    the default action is the only one there is): imports, the forkserver's start and its imports, loading MNIST,
    the workers' start. A Ctrl-C there printed a KeyboardInterrupt traceback (from the job or the forkserver) and
    SIGTERM killed the job silently."""
    env = job_env(tmp_path, real_data_dir, **(TINY | PARALLEL | {"train_limit": 30000}))
    process = subprocess.Popen([PYTHON, "-m", "job"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    # SIGHUP: Python's runtime catches SIGINT itself during its start; only the job's own handlers catch SIGHUP.
    while not catches(process.pid, signal.SIGHUP) and time.monotonic() < deadline:
        time.sleep(0.001)
    if START_MOMENTS[moment]:
        wait_for_line(process, START_MOMENTS[moment])
    (os.killpg if to_group else os.kill)(process.pid, number)
    stdout, stderr = process.communicate(timeout=120)
    expected = status.SIGINT if number == signal.SIGINT else status.SIGTERM
    assert process.returncode == expected.code, (stdout[-1000:], stderr)
    assert stderr == f"lenet-mnist: interrupted by {signal.Signals(number).name}; nothing was published\n"
    (report,) = (tmp_path / "outputs" / "runs").glob("*/report.json")
    assert read_report(report).status == "interrupted" and not (tmp_path / "outputs" / "latest.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["true", "false"], ids=["side by side", "one after the other"])
def test_a_terminal_that_hangs_up_mid_training_gives_129_and_a_report_that_says_so(real_data_dir, tmp_path,
                                                                                  parallel):
    """An SSH session that drops: the kernel hangs the terminal up and sends SIGHUP. It killed the job at once
    (exit 129, no report, a run folder left half-made); handled, its last line to the dead terminal failed with EIO
    and the job exited 1 while its report said 129. (tqdm's bar stops itself on EIO.)"""
    import fcntl
    import pty
    import select
    import termios

    env = job_env(tmp_path, real_data_dir, **(TINY | PARALLEL | {"parallel_variants": parallel, "train_limit": 20000}))
    terminal, job_side = pty.openpty()
    process = subprocess.Popen([PYTHON, "-m", "job"], env=env, cwd=tmp_path, stdin=job_side, stdout=job_side,
                               stderr=job_side, start_new_session=True,  # the job leads a session on this terminal
                               preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(job_side)
    seen, deadline = b"", time.monotonic() + 120
    while b"Epoch: 1" not in seen and time.monotonic() < deadline:  # well inside training
        if select.select([terminal], [], [], 0.1)[0]:
            seen += os.read(terminal, 65536)
    os.close(terminal)  # the hang-up
    assert process.wait(timeout=120) == status.SIGHUP.code, seen[-2000:]
    (report,) = (tmp_path / "outputs" / "runs").glob("*/report.json")
    assert read_report(report).status == "interrupted" and read_report(report).exit_code == status.SIGHUP.code
    assert not (tmp_path / "outputs" / "latest.json").exists()


def test_a_stop_that_came_after_judging_a_run_that_passed_skips_tracking():
    """The stop flag was raised while the report was written, just before the first request to a silent tracking
    server: only a new signal cuts a request short, so the job waited out the timeout (30 s in test_tracking)."""
    from job.outcome.finish import track_run
    from job.running.stop import StopRequest
    from job.settings import Settings

    stop = StopRequest()
    stop._request(signal.SIGTERM, None)
    settings = Settings.model_construct(mlflow_tracking_uri="http://127.0.0.1:9", tracking_timeout_seconds=30)
    started = time.monotonic()
    assert track_run(None, Path("."), settings, stop, None) == (None, None)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("make", ["Interrupted(signal.SIGHUP)", "DataError('gone')", "Diverged('nan')",
                                  "WorkerDied('killed')", "RunFailure('worse', status.CHAMPION, suffix='')"])
def test_a_failure_crosses_a_process_boundary_with_its_status_and_line(make):
    """A worker process sends its failure back pickled: the status and the one line must survive."""
    import pickle

    from job.outcome.status import RunFailure  # noqa: F401 - used by `make`
    from job.running.pool import WorkerDied  # noqa: F401
    from job.running.stop import Interrupted  # noqa: F401
    from job.training.data import DataError  # noqa: F401
    from job.training.train import Diverged  # noqa: F401

    failure = eval(make)
    again = pickle.loads(pickle.dumps(failure))
    assert (type(again), again.status, again.line()) == (type(failure), failure.status, failure.line())


def test_a_worker_that_does_not_stop_is_killed_and_the_stop_still_ends_the_run(outputs, real_data_dir):
    """A worker stopped with SIGSTOP (or stuck in native code) never reaches its next batch: the job waited for it
    forever, deaf to more signals, until a scheduler's SIGKILL left no report."""
    before = published_files(outputs)
    process = start_parallel(outputs, real_data_dir)
    wait_for_line(process, "[plain] Epoch: 1,")
    workers = [pid for pid in descendants(process.pid) if pid not in children(process.pid)]
    os.kill(workers[0], signal.SIGSTOP)
    stopped = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status.SIGTERM.code and time.monotonic() - stopped < 30, (stdout[-800:], stderr)
    assert stderr == "lenet-mnist: interrupted by SIGTERM; nothing was published\n"
    assert not [pid for pid in workers if live(pid)] and published_files(outputs) == before


def test_a_run_that_failed_does_not_wait_for_another_runs_publish_lock(tmp_path):
    """It publishes nothing, so it needs no lock: it used to wait up to LENET_PUBLISH_WAIT_SECONDS (an hour) and
    then report the wait (exit 10) instead of its own failure."""
    from datetime import UTC, datetime

    from job.outcome.finish import RunFacts, finish
    from job.outcome.report import DeviceInfo
    from job.running.stop import StopRequest
    from job.settings import Settings
    from job.training.data import DataError

    (tmp_path / "run").mkdir()
    facts = RunFacts(run_id="run", started_at=datetime.now(UTC), device=DeviceInfo(type="cpu", spec="cpu", name="cpu",
                     threads=1), variants_in_parallel=False, data=None, extra_data=None, variants=[], plots=[])
    settings = Settings.model_construct(output_dir=tmp_path, publish_wait_seconds=60)
    started = time.monotonic()
    with FileLock(tmp_path / ".publish.lock"):
        report = finish(facts, settings, tmp_path / "run", StopRequest(), DataError("MNIST is gone"))
    assert (report.exit_code, report.published) == (status.DATA.code, False) and time.monotonic() - started < 10
    assert read_report(tmp_path / "run" / "report.json").message == "data problem: MNIST is gone"


def test_a_failure_is_one_line_whatever_its_message_holds():
    from job.outcome.status import failure_of

    assert failure_of(ValueError("line one\nline two")).line() == "unexpected error: ValueError: line one line two"


def test_a_report_says_published_only_once_the_pointer_has_moved(monkeypatch, capfd, outputs, real_data_dir):
    """SIGKILL after the report was written and before latest.json moved left `published: true` with the old run
    still published. What is on disk at the moment the pointer moves: the report says not published. And a SIGKILL
    right after the pointer moved leaves that run published with a report that says it is not, and a manifest
    without the report's last hash: the next run to publish corrects both (here, the published run so broken)."""
    import hashlib

    import job.outcome.finish

    killed = outputs / json.loads((outputs / "latest.json").read_text())["run_dir"]
    report = json.loads((killed / "report.json").read_text())
    (killed / "report.json").write_text(json.dumps(report | {"published": False}, indent=2) + "\n")
    seen = []
    move = job.outcome.finish.point_latest_at

    def moving(output_dir, run_dir, report):
        seen.append(json.loads((run_dir / "report.json").read_text())["published"])
        move(output_dir, run_dir, report)

    monkeypatch.setattr(job.outcome.finish, "point_latest_at", moving)
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir)
    assert code == 0, stderr
    latest = json.loads((outputs / "latest.json").read_text())
    assert seen == [False] and json.loads((outputs / latest["report"]).read_text())["published"] is True
    corrected = (killed / "report.json").read_bytes()
    assert json.loads(corrected) == report  # published: true, and nothing else changed
    listed = json.loads((killed / "manifest.json").read_text())["files"]["report.json"]
    assert listed["sha256"] == hashlib.sha256(corrected).hexdigest()
    assert f"run {report['run_id']} is published (latest.json names it) but its report said it was not" in stdout


def test_a_report_that_cannot_say_it_was_published_moves_the_pointer_back(monkeypatch, capfd, outputs,
                                                                          real_data_dir):
    import errno

    import job.outcome.finish

    before = published_files(outputs)
    moved = []
    move, manifest = job.outcome.finish.point_latest_at, job.outcome.finish.write_manifest

    def moving(output_dir, run_dir, report):
        move(output_dir, run_dir, report)
        moved.append(run_dir)

    def full_once_moved(run_dir, run_id):
        if moved:
            raise OSError(errno.ENOSPC, "No space left on device")
        return manifest(run_dir, run_id)

    monkeypatch.setattr(job.outcome.finish, "point_latest_at", moving)
    monkeypatch.setattr(job.outcome.finish, "write_manifest", full_once_moved)
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir)
    assert moved and code == 6 and stderr.count("\n") == 1 and "No space left on device" in stderr, stderr
    assert published_files(outputs) == before  # the old pointer is back, byte for byte
    assert not (outputs / ".latest.json.before").exists()
    report = moved[0] / "report.json"
    assert not report.exists() or json.loads(report.read_text())["published"] is False
