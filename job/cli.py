"""The command line: `python -m job` (installed as `lenet-mnist`). Read the settings, set the run up, run the
pipeline, finish the run, and exit with the status of job.status."""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import UTC, datetime

import torch

from job import status
from job.device import device_name, select_device
from job.finish import conclude, finish, outcome
from job.log import log
from job.metadata import library_versions
from job.pipeline import run
from job.publish import create_run_dir, new_run_id
from job.report import DeviceInfo, Report
from job.settings import SettingsError, load_settings
from job.stop import StopRequest
from job.workers import variants_share_the_cpu


def main() -> int:
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
    except OSError as error:
        print(f"lenet-mnist: LENET_OUTPUT_DIR={settings.output_dir} cannot hold a run folder: "
              f"{error.strerror or error} (allowed: a writable folder, created if missing)", file=sys.stderr)
        return status.OUTPUT.code
    in_parallel = variants_share_the_cpu(settings, device)
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


def main_exit() -> None:
    sys.exit(main())
