"""Run tracking and the model registry against a real MLflow server started here (sqlite, a temporary artifacts
folder), with the job run as a scheduler runs it."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, TINY, job_env, job_in_process, published_files

mlflow = pytest.importorskip("mlflow", reason="the test extra installs mlflow")
from mlflow import MlflowClient  # noqa: E402

BOTH = TINY | dict(variants="plain,bn_dropout", epochs=2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`mlflow server` on localhost, as a team runs it: a sqlite backend store and served artifacts."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [PYTHON, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"), cwd=folder)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "server.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        self.client = MlflowClient(self.uri, self.uri)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = Server(tmp_path_factory.mktemp("mlflow"))
    yield started
    started.stop()


def report_of(outputs: Path, stdout: str) -> dict:
    """The report the summary line names."""
    line = next(line for line in stdout.splitlines() if line.endswith("report.json") or "report.json (" in line)
    path = Path(line.split(": ", 1)[1].split(" (")[0])
    return json.loads((path if path.is_absolute() else outputs.parent / path).read_text())


def run_tracked(tmp_path: Path, data_dir: Path, uri: str, **settings):
    env = job_env(tmp_path, data_dir, **(BOTH | settings)) | {"MLFLOW_TRACKING_URI": uri}
    return subprocess.run([PYTHON, "-m", "job"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_published(server, real_data_dir, tmp_path_factory):
    """One run published with tracking on: (its report, the completed process)."""
    tmp_path = tmp_path_factory.mktemp("tracked")
    done = run_tracked(tmp_path, real_data_dir, server.uri)
    assert done.returncode == 0, done.stderr
    return report_of(tmp_path / "outputs", done.stdout), done, tmp_path


def test_a_published_run_is_logged_and_its_models_are_the_champions(server, first_published, tmp_path):
    report, done, _ = first_published
    tracking = report["tracking"]
    assert tracking["logged"] and tracking["champion_moved"] and set(tracking["model_versions"]) == {"plain",
                                                                                                   "bn_dropout"}
    client = server.client
    run = client.get_run(tracking["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == report["run_id"]
    assert run.data.tags["lenet.run_id"] == report["run_id"] and run.data.tags["lenet.status"] == "succeeded"
    assert run.data.tags["lenet.device"] == "cpu" and run.data.tags["lenet.data_version"] == "mnist"
    assert run.data.params["settings.epochs"] == "2" and run.data.params["recipe.batch_size"] == "128"
    for variant in report["variants"]:
        name = variant["variant"]
        history = client.get_metric_history(run.info.run_id, f"{name}/test_accuracy")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
            [(e["epoch"], e["test_accuracy"]) for e in variant["epochs"]]
        champion = client.get_model_version_by_alias(f"lenet-mnist-{name}", "champion")
        assert champion.version == tracking["model_versions"][name] and champion.run_id == run.info.run_id
        assert champion.tags["lenet.run_id"] == report["run_id"] and champion.tags["lenet.parity_all_passed"] == "true"
        model = client.download_artifacts(run.info.run_id, f"models/{name}", str(tmp_path))
        mlmodel = (Path(model) / "MLmodel").read_text()
        assert "onnx" in mlmodel and "signature:" in mlmodel and (Path(model) / "input_example.json").is_file()
    logged = {a.path for a in client.list_artifacts(run.info.run_id)} | \
             {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"report.json", "manifest.json", "plots/curves_plain.png", "plots/comparison.png"} <= logged
    assert f"MLflow: run {run.info.run_id}" in done.stdout and not done.stderr.strip()
    assert "View run" not in done.stdout + done.stderr  # MLflow's own lines are not the job's log
    # Every tag that docs/tracking.md documents, with a real value: the source commit was "unknown" for months.
    documented = re.findall(r"`(lenet\.[a-z_]+)`", (ROOT / "docs" / "tracking.md").read_text().split("**Tags**")[1]
                            .split("\n- ")[0]) + ["mlflow.source.git.commit"]
    assert len(documented) >= 8 and all(run.data.tags.get(tag) not in (None, "", "unknown") for tag in documented), \
        {tag: run.data.tags.get(tag) for tag in documented}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["lenet.source_commit"] == run.data.tags["mlflow.source.git.commit"] == \
        report["versions"]["source_commit"] == commit


def test_a_run_that_misses_the_gate_is_logged_failed_and_the_champion_stays(server, first_published,
                                                                            real_data_dir, tmp_path, monkeypatch,
                                                                            capfd):
    report, _, _ = first_published
    before = {v: server.client.get_model_version_by_alias(f"lenet-mnist-{v}", "champion").version
              for v in ("plain", "bn_dropout")}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    code, stdout, stderr = job_in_process(monkeypatch, capfd, tmp_path / "outputs", real_data_dir,
                                          min_test_accuracy=0.999, variants="plain,bn_dropout", epochs=2)
    assert code == 4, stderr
    failed = report_of(tmp_path / "outputs", stdout)
    run = server.client.get_run(failed["tracking"]["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["lenet.status"] == "accuracy_gate_failed"
    assert failed["tracking"]["model_versions"] == {} and not failed["tracking"]["champion_moved"]
    after = {v: server.client.get_model_version_by_alias(f"lenet-mnist-{v}", "champion").version for v in before}
    assert after == before == report["tracking"]["model_versions"]


def test_an_unreachable_server_publishes_with_a_warning_or_with_required_tracking_publishes_nothing(
        outputs, real_data_dir, monkeypatch, capfd):
    """Nothing listens on the port; a user name and password in the address never reach the report or the log.
    The job speaks to the server only once the work is done (finish.track_run), so this is also the server that
    went away during training."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://someone:hunter2@127.0.0.1:{free_port()}")
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir)
    assert code == 0, stderr
    assert stderr.count("\n") == 1 and stderr.startswith(
        "lenet-mnist: warning: tracking failed, the run's own outputs are complete: MLflow at http://127.0.0.1:")
    assert "Connection refused (3 tries)" in stderr
    report = report_of(outputs, stdout)
    assert report["published"] and not report["tracking"]["logged"] and report["tracking"]["mlflow_run_id"] is None
    assert "hunter2" not in json.dumps(report) + stdout + stderr

    before = published_files(outputs)
    code, stdout, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, tracking_required="true")
    assert code == 12, stderr
    assert stderr.strip().endswith("; nothing was published") and stderr.count("\n") == 1
    assert published_files(outputs) == before
    report = report_of(outputs, stdout)
    assert report["status"] == "tracking_failed" and not report["published"]
    run_dir = outputs / "runs" / report["run_id"]
    assert all((run_dir / a["path"]).is_file() for v in report["variants"] for a in v["artifacts"].values())
    assert (run_dir / "manifest.json").is_file()


def test_a_server_that_never_answers_holds_the_job_only_as_long_as_its_timeouts(outputs, real_data_dir):
    """Also: while the job waits on the server, its run folder's report does not claim a publication."""
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        tmp_path = outputs.parent
        env = job_env(tmp_path, real_data_dir, **TINY) | {
            "MLFLOW_TRACKING_URI": uri, "LENET_TRACKING_REQUIRED": "true", "LENET_TRACKING_TIMEOUT_SECONDS": "2",
            "LENET_TRACKING_RETRIES": "1"}
        before = published_files(outputs)
        runs_before = set((outputs / "runs").iterdir())
        job = subprocess.Popen([PYTHON, "-m", "job"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        seen_while_waiting = []
        while job.poll() is None:
            for run_dir in set((outputs / "runs").iterdir()) - runs_before:
                try:
                    seen_while_waiting.append(json.loads((run_dir / "report.json").read_text())["published"])
                except (OSError, ValueError):
                    pass  # not written yet, or being replaced
            time.sleep(0.2)
        stdout, stderr = job.communicate()
        done = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    assert seen_while_waiting and not any(seen_while_waiting)
    assert done.returncode == 12, done.stderr
    assert "no answer within 2 s (2 tries)" in done.stderr
    report = report_of(outputs, done.stdout)
    # Two tries of 2 s and a 1 s backoff: the whole tracking stays within seconds of that, not MLflow's default
    # of 7 retries of 120 s. The bound here is loose on purpose (a busy machine), the order of magnitude is the point.
    assert report["elapsed_seconds"] < 120
    assert published_files(outputs) == before


@contextlib.contextmanager
def trickling_server():
    """The address of a server that answers every request one byte each 0.5 s, while the block runs."""
    import threading

    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def trickle():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=send_slowly, args=(connection,), daemon=True).start()

    def send_slowly(connection):
        with connection:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" * 100:
                if stop.wait(0.5):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("required", [False, True])
def test_a_server_that_trickles_its_answers_is_cut_off_by_the_tracking_budget(outputs, real_data_dir, monkeypatch,
                                                                              capfd, required):
    """A server that answers one byte a second never trips LENET_TRACKING_TIMEOUT_SECONDS (a bound on each read): the
    scheduler's deadline killed a run that had passed every gate. The budget ends the tracking; the run is then
    published with a warning, or, with tracking required, ends with exit 12."""
    before = published_files(outputs)
    with trickling_server() as address:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", address)
        started = time.monotonic()
        code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, tracking_timeout_seconds=3,
                                         tracking_budget_seconds=5, tracking_retries=0,
                                         tracking_required=str(required).lower())
    assert time.monotonic() - started < 60  # the run's own work and 5 s of tracking, not minutes of trickle
    assert "was cut short: all of the tracking may take LENET_TRACKING_BUDGET_SECONDS=5" in stderr, stderr
    assert (code, published_files(outputs) == before) == ((12, True) if required else (0, False)), stderr


def test_after_a_stop_a_trickling_server_holds_the_champions_restore_3_s_at_most(monkeypatch, capfd):
    """A stop while the champion alias had moved: putting it back is best effort within 3 s, so that the whole stop
    stays within 5 s (docker stop kills at 10 s); without a stop, a failure's restore may take 15 s."""
    from job.outcome.report import Tracking
    from job.outcome.tracking import RESTORE_AFTER_A_STOP_SECONDS, restore_champion
    from job.settings import load_settings

    with trickling_server() as address:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", address)
        settings = load_settings()
        moved = Tracking(uri=address, experiment="lenet-mnist", logged=True, mlflow_run_id="0" * 32,
                         model_versions={"plain": "2"}, champion_moved=True, replaced_versions={"plain": "1"})
        started = time.monotonic()
        after = restore_champion(moved, settings, stopped=True)
        spent = time.monotonic() - started
    assert RESTORE_AFTER_A_STOP_SECONDS == 3 and spent < 4, spent
    assert after.champion_moved and "could not move champion back in MLflow" in capfd.readouterr().err


@pytest.mark.slow
def test_without_a_tracking_address_mlflow_is_never_imported(real_data_dir, tmp_path):
    script = ("import sys; from job.cli import main; code = main(); "
              "print('mlflow imported' if any(m.split('.')[0] == 'mlflow' for m in sys.modules) else 'no mlflow'); "
              "sys.exit(code)")
    done = subprocess.run([PYTHON, "-c", script], env=job_env(tmp_path, real_data_dir, **TINY), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("no mlflow")


@pytest.mark.parametrize("uri, message", [
    ("ftp://host/x", "lenet-mnist: bad setting: MLFLOW_TRACKING_URI=ftp://host/x: is not an http:// or https:// "
                     "address (the job logs to an MLflow server) (allowed: the http:// or https:// address of an "
                     "MLflow server, or empty for no tracking)"),
    ("sqlite:///mlflow.db", "is not an http:// or https:// address (the job logs to an MLflow server)"),
    ("http://", "is not an http:// or https:// address"),
])
def test_a_tracking_address_that_is_not_a_server_is_a_bad_setting(uri, message, tmp_path):
    env = job_env(tmp_path, tmp_path / "no-data") | {"MLFLOW_TRACKING_URI": uri}
    done = subprocess.run([PYTHON, "-m", "job"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_tracking_address_without_mlflow_installed_names_the_extra(monkeypatch):
    from job.settings import SettingsError, load_settings

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what find_spec sees when the package is not installed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(SettingsError, match=r"MLflow is not installed: install the job with its tracking extra, "
                                            r"pip install '\.\[tracking\]'"):
        load_settings()


def test_when_latest_json_cannot_move_after_tracking_the_champion_moves_back(server, first_published, outputs,
                                                                             real_data_dir, monkeypatch):
    import job.outcome.finish
    from conftest import run_in_process

    report, _, _ = first_published
    before = server.client.get_model_version_by_alias("lenet-mnist-plain", "champion").version
    assert before == report["tracking"]["model_versions"]["plain"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(job.outcome.finish, "point_latest_at", disk_full)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    published_before = published_files(outputs)
    assert run_in_process(monkeypatch, outputs, real_data_dir) == 6
    assert published_files(outputs) == published_before
    after = server.client.get_model_version_by_alias("lenet-mnist-plain", "champion").version
    assert after == before
    run = server.client.search_runs([server.client.get_experiment_by_name("lenet-mnist").experiment_id],
                                    order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert run.info.status == "FAILED"
    versions = server.client.search_model_versions("name='lenet-mnist-plain'")
    assert max(int(v.version) for v in versions) > int(before)  # it was registered, and is not the champion


def test_the_tracking_address_is_read_from_dotenv_too(tmp_path):
    (tmp_path / ".env").write_text("MLFLOW_TRACKING_URI=ftp://from-dotenv\n")
    done = subprocess.run([PYTHON, "-m", "job"], env=job_env(tmp_path, tmp_path / "no-data"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith(
        "lenet-mnist: bad setting: .env: MLFLOW_TRACKING_URI=ftp://from-dotenv: is not an http"), done.stderr


@pytest.mark.slow
def test_a_stop_signal_during_tracking_does_not_wait_for_the_servers_timeouts(outputs, real_data_dir):
    """A scheduler sends SIGTERM and SIGKILLs after a grace period (Kubernetes: 30 s): waiting out a request's
    timeout (here 30 s) would be killed mid-way. The stop cuts the request short; the run ends as interrupted."""
    import signal

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        tmp_path = outputs.parent
        env = job_env(tmp_path, real_data_dir, **TINY) | {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "LENET_TRACKING_TIMEOUT_SECONDS": "30", "LENET_TRACKING_RETRIES": "0"}
        before = published_files(outputs)
        runs_before = set((outputs / "runs").iterdir())
        job = subprocess.Popen([PYTHON, "-m", "job"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not any((d / "report.json").is_file() for d in set((outputs / "runs").iterdir()) - runs_before):
            assert job.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)  # well inside the first request's 30 s
        stopped = time.monotonic()
        job.send_signal(signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=120)
        took = time.monotonic() - stopped
    assert job.returncode == 143, stderr
    assert took < 20, f"{took:.1f} s after SIGTERM"  # 30 s or more without the cut
    assert stderr.strip().splitlines()[-1] == "lenet-mnist: interrupted by SIGTERM; nothing was published"
    assert published_files(outputs) == before


def test_a_run_stopped_during_training_is_logged_killed(server, first_published, real_data_dir, tmp_path,
                                                        monkeypatch, capfd):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    code, stdout, stderr = job_in_process(monkeypatch, capfd, tmp_path / "outputs", real_data_dir, stop_at="Epoch:",
                                          epochs=4, train_limit=6000)
    assert code == 143, stderr
    report = report_of(tmp_path / "outputs", stdout)
    run = server.client.get_run(report["tracking"]["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["lenet.status"] == "interrupted"
    assert report["tracking"]["model_versions"] == {}


def test_the_job_speaks_to_mlflow_only_once_the_work_is_done(outputs, real_data_dir, monkeypatch, capfd):
    """Every MLflow client is made after the run's report and models are on disk: a server that goes away while the
    job trains is the unreachable server above (docs/failure-modes.md), and a slow one never holds the training."""
    import job.outcome.tracking

    made_when = []
    original = job.outcome.tracking.client_for

    def client_for(settings, cleanup=False):
        runs = [d for d in (outputs / "runs").iterdir() if d.name not in published_before]
        made_when.append([(run / "report.json").is_file() and (run / "models" / "plain" / "model.onnx").is_file()
                          for run in runs])
        return original(settings, cleanup)

    published_before = {d.name for d in (outputs / "runs").iterdir()}
    monkeypatch.setattr(job.outcome.tracking, "client_for", client_for)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    code, _, stderr = job_in_process(monkeypatch, capfd, outputs, real_data_dir, tracking_retries=0)
    assert code == 0 and "tracking failed" in stderr, stderr
    assert made_when and all(state == [True] for state in made_when), made_when


def test_a_tracking_address_is_logged_without_its_credentials_and_keeps_its_brackets():
    from job.outcome.tracking import without_credentials

    assert without_credentials("http://someone:hunter2@[::1]:5000/mlflow") == "http://[::1]:5000/mlflow"
    assert without_credentials("https://mlflow.example.com") == "https://mlflow.example.com"


def test_the_tracking_budget_cuts_a_wait_short_once_and_is_gone_after_the_block():
    """within_budget raises BudgetSpent once its time is out, and not after the work is done; SIGALRM's handler and
    timer are put back as they were."""
    import signal as signals

    from job.outcome.tracking import BudgetSpent, within_budget

    before = signals.getsignal(signals.SIGALRM)
    with pytest.raises(BudgetSpent), within_budget(0.2) as budget:
        time.sleep(5)
    assert budget.spent and signals.getsignal(signals.SIGALRM) is before
    assert signals.getitimer(signals.ITIMER_REAL) == (0.0, 0.0)
    with within_budget(0.2) as budget:
        budget.done = True
        time.sleep(0.4)  # the alarm comes after the work: ignored
    assert not budget.spent
