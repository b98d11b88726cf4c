"""The command line: `python -m job` (installed as `lenet-mnist`). `main` checks what must be right before any
work, reads the settings, sets the run's folder up, hands the run to job.running.pipeline, says what it did, and
returns the exit status: the only place one is returned. It is the status of the RunFailure that ended the run
before it had a folder (job.outcome.status), or else the report's `exit_code` (job.outcome.finish).

torch and the pipeline are imported only once the temporary folder is known to be usable (job.preflight): they
need one on import.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from job import preflight
from job.log import complain, log
from job.outcome import status
from job.outcome.metadata import project_version
from job.outcome.publish import POINTER, create_run_dir, hold_run, new_run_id
from job.outcome.status import OUTPUT, RunFailure
from job.running.stop import StopRequest
from job.settings import Settings, env_name, load_settings
from lenet_client.text import printable

if TYPE_CHECKING:
    from job.outcome.report import Report

SAMPLE_PICTURE = Path("docs/images/digit-7.png")  # in a checkout of this repository


def usage() -> str:
    """Every LENET_* setting with its default and what it allows, from the settings' own definitions."""
    lines = ["Settings (environment variables, or lines in .env), each shown with its default value (an empty value "
             "means the default):"]
    defaults = {}
    for field, info in Settings.model_fields.items():
        default = info.default if not isinstance(info.default, tuple) else ",".join(info.default)
        shown = "" if default is None else str(default).lower() if isinstance(default, bool) else default
        defaults[f"{env_name(field)}={shown}"] = info.description
    width = max(map(len, defaults))
    lines += [f"  {setting:<{width}}  {description}" for setting, description in defaults.items()]
    lines.append("Exit status (README: Exit status):")
    lines += [f"  {s.code:>3}  {s.meaning}" for s in status.STATUSES]
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> None:
    """The job takes no arguments, only settings; --help and --version answer and exit without any work."""
    parser = argparse.ArgumentParser(
        prog="lenet-mnist", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=usage(),
        description="Train LeNet-5 (plain and BatchNorm + Dropout) on MNIST, export TorchScript, torch.export "
                    "and ONNX, check "
                    "that they predict what the trained models predict, report, and publish the run.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {project_version()}")
    parser.error = bad_argument  # type: ignore[method-assign]
    parser.parse_args(argv)


def bad_argument(message: str) -> NoReturn:
    raise RunFailure(f"{message} (see --help)", status.BAD_SETTING, suffix="")


def main(argv: list[str] | tuple[str, ...] = (), stop: StopRequest | None = None) -> int:
    """The exit status of `python -m job ARGV`. `stop`: the handlers `python -m job` installed first thing."""
    if stop is None:
        stop = StopRequest()
        stop.install()
    try:
        parse_arguments(list(argv))
        report = start_run(stop)
    except RunFailure as failure:  # before the run had a folder: nothing to report in
        complain(failure.line())
        return failure.status.code
    finally:
        preflight.stop_worker_server_if_started()  # not left importing, holding stdout, after the job's end
    if report.message:
        complain(report.message)
    return report.exit_code


def start_run(stop: StopRequest) -> Report:
    """Check, read the settings, make the run's folder, run; the report of the run as written."""
    preflight.check_temporary_folder()
    preflight.writable_config_folders()
    settings = load_settings()
    preflight.start_worker_server_if_useful(settings)
    import torch

    from job.device import select_device
    from job.running.pipeline import run

    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = select_device(settings.device)
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    try:
        new_output_dir = not settings.output_dir.exists()
        run_dir = create_run_dir(settings.output_dir, run_id)
        run_lock = hold_run(run_dir)
        if new_output_dir:  # run from another folder, the default makes one there: say where
            log(f"outputs: created {settings.output_dir.resolve()} (LENET_OUTPUT_DIR)")
    except OSError as error:
        raise RunFailure(f"LENET_OUTPUT_DIR={printable(settings.output_dir)} cannot hold a run folder: "
                         f"{error.strerror or error} (allowed: a writable folder, created if missing)", OUTPUT,
                         suffix="") from None
    try:
        report = run(settings, device, run_dir, run_id, started, stop)
    finally:
        run_lock.release()
    summarize(report, settings.output_dir, run_dir)
    return report


def summarize(report: Report, output_dir: Path, run_dir: Path) -> None:
    """The run's last lines: each variant's figures and model, where the report and plots are, what to try next."""
    for result in report.variants:
        onnx = result.artifacts.get("onnx")
        log(f"[{result.variant}] test accuracy {100 * result.final_test_accuracy:.2f}%, test loss "
            f"{result.final_test_loss:.4f}, {result.training_seconds:.1f}s training ({result.parameters:,} "
            f"parameters)" + (f": {run_dir / onnx.path}" if onnx else ""))
    if report.plots:
        log(f"plots: {run_dir / 'plots'} ({', '.join(sorted(report.plots))})")
    if report.tracking is not None and report.tracking.mlflow_run_id:
        models = ", ".join(f"lenet-mnist-{v} version {n}" for v, n in report.tracking.model_versions.items())
        champion = " (@champion)" if report.tracking.champion_moved else ""
        log(f"MLflow: run {report.tracking.mlflow_run_id} at {report.tracking.uri}"
            + (f"; registered {models}{champion}" if models else ""))
    written = (run_dir / "report.json").is_file()  # not on a full disk: then the report exists only here
    log(f"{report.status} in {report.elapsed_seconds:.1f}s: "
        + (f"{run_dir / 'report.json'}" if written else f"no report could be written in {run_dir}")
        + (f" (published as {output_dir / POINTER})" if report.published else ""))
    if report.published:
        log(f"next: {predict_command()} {shell_word(output_dir)} "
            f"{SAMPLE_PICTURE if SAMPLE_PICTURE.is_file() else 'YOUR_DIGIT.png'}   # read a picture of a digit")


def predict_command() -> str:
    """`lenet-predict` as this environment can run it: by name when it is on PATH, else by its path."""
    script = Path(sys.executable).parent / "lenet-predict"
    if shutil.which("lenet-predict") == str(script) or not script.is_file():
        return "lenet-predict"
    try:  # the working folder may be gone by now: then the full path
        return shell_word(Path(os.path.relpath(script)) if script.is_relative_to(Path.cwd()) else script)
    except OSError:
        return shell_word(script)


def shell_word(path: Path) -> str:
    return shlex.quote(str(path))
