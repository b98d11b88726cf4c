"""The command line: `python -m job` (installed as `lenet-mnist`). Read the settings, set the run up, run the
pipeline, finish the run, and exit with the status of job.status."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch

from export.contract import project_version
from job import status
from job.device import device_name, select_device
from job.finish import conclude, finish, outcome
from job.log import log
from job.metadata import library_versions
from job.pipeline import run
from job.publish import create_run_dir, hold_run, new_run_id
from job.report import DeviceInfo, Report
from job.settings import Settings, SettingsError, env_name, load_settings, printable
from job.stop import StopRequest
from job.workers import variants_share_the_cpu


def usage() -> str:
    """Every LENET_* setting with its default and what it allows, from the settings' own definitions."""
    lines = ["Settings (environment variables, or lines in .env; an empty value means the default):"]
    for field, info in Settings.model_fields.items():
        default = info.default if not isinstance(info.default, tuple) else ",".join(info.default)
        shown = "(empty)" if default is None else str(default).lower() if isinstance(default, bool) else default
        lines.append(f"  {env_name(field):<28} default {shown}; {info.description}")
    lines.append(f"Exit status: {', '.join(f'{s.code} {s.report_status}' for s in status.STATUSES)} "
                 "(README: Exit status).")
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> None:
    """The job takes no arguments, only settings; --help and --version answer and exit without any work."""
    parser = argparse.ArgumentParser(
        prog="lenet-mnist", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=usage(),
        description="Train LeNet-5 (plain and BatchNorm + Dropout) on MNIST, export TorchScript and ONNX, check "
                    "that they predict what the trained models predict, report, and publish the run.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {project_version()}")
    parser.error = lambda message: parser.exit(status.BAD_SETTING.code, f"lenet-mnist: {message} (see --help)\n")
    parser.parse_args(argv)


def main(argv: list[str] | tuple[str, ...] = ()) -> int:
    parse_arguments(list(argv))
    stop = StopRequest()
    stop.install()
    try:
        settings = load_settings()
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        device = select_device(settings.device)
    except SettingsError as error:
        print(f"lenet-mnist: bad setting: {error}", file=sys.stderr)
        return status.BAD_SETTING.code
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    try:
        run_dir = create_run_dir(settings.output_dir, run_id)
        run_lock = hold_run(run_dir)
    except OSError as error:
        print(f"lenet-mnist: LENET_OUTPUT_DIR={printable(settings.output_dir)} cannot hold a run folder: "
              f"{error.strerror or error} (allowed: a writable folder, created if missing)", file=sys.stderr)
        return status.OUTPUT.code
    try:
        return run_and_finish(settings, device, run_dir, run_id, started, stop)
    finally:
        run_lock.release()


def run_and_finish(settings: Settings, device: torch.device, run_dir: Path, run_id: str, started: datetime,
                   stop: StopRequest) -> int:
    in_parallel = variants_share_the_cpu(settings, device.type, torch.get_num_threads())
    threads = max(1, torch.get_num_threads() // len(settings.variants)) if in_parallel else torch.get_num_threads()
    report = Report(status=status.UNEXPECTED.report_status, exit_code=status.UNEXPECTED.code, run_id=run_id,
                    started_at=started, finished_at=started, elapsed_seconds=0.0, versions=library_versions(),
                    settings=settings.model_dump(mode="json"), recipe=asdict(settings.resolved_recipe()),
                    min_test_accuracy=settings.min_test_accuracy, accuracy_gate_passed=False,
                    variants_in_parallel=in_parallel,
                    device=DeviceInfo(type=device.type, spec=str(device), name=device_name(device),
                                      threads=threads))
    error = None
    try:
        run(settings, device, run_dir, report, stop)
    except Exception as raised:  # every failure still gets its report; the exit status tells which kind
        error = raised
    try:
        finish(report, settings, run_dir, stop, error)
    except OSError as write_error:
        conclude(report, *outcome(write_error, stop))
    for result in report.variants:
        log(f"[{result.variant}] final test accuracy {100 * result.final_test_accuracy:.2f}% "
            f"({result.parameters:,} parameters, {result.training_seconds:.1f}s training)")
    log(f"{report.status} in {report.elapsed_seconds:.1f}s: {run_dir / 'report.json'}"
        + (" (published as latest.json)" if report.published else ""))
    if report.message:
        print(f"lenet-mnist: {report.message}", file=sys.stderr)
    return report.exit_code
