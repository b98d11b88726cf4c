"""The end of every run: judge it, write its report and manifest, and publish it if it passed.

All of it happens under the publish lock, so that concurrent runs on one output dir publish one after the other.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

from export.checks import ParityError
from job import status
from job.data import DataError
from job.log import log
from job.publish import DamagedFileError, check_champion, point_latest_at, prune_runs, publish_lock, write_manifest
from job.report import Report, write_report
from job.settings import Settings
from job.stop import Interrupted, StopRequest
from job.train import Diverged


def outcome(error: BaseException, stop: StopRequest) -> tuple[status.ExitStatus, str]:
    """The exit status of a run that raised `error`, and its one-line message."""
    if isinstance(error, Interrupted):
        code = status.SIGINT if stop.signal == signal.SIGINT else status.SIGTERM
        return code, f"interrupted by {signal.Signals(stop.signal).name}; nothing was published"
    if isinstance(error, DataError):
        return status.DATA, f"data problem: {error}"
    if isinstance(error, DamagedFileError):
        return status.DAMAGED, f"{error}; nothing was published"
    if isinstance(error, Diverged):
        return status.DIVERGED, f"{error}; nothing was published"
    if isinstance(error, ParityError):
        return status.PARITY, f"{error}; nothing was published"
    if isinstance(error, OSError):
        return status.OUTPUT, f"could not write the outputs: {error}; nothing was published"
    return status.UNEXPECTED, f"unexpected error: {type(error).__name__}: {error}"


def conclude(report: Report, exit_status: status.ExitStatus, message: str = "") -> None:
    report.status, report.exit_code, report.message = exit_status.report_status, exit_status.code, message


def judge(report: Report, settings: Settings) -> None:
    """Set the status of a run that completed: the accuracy gate, then (if on) the champion check."""
    if not report.accuracy_gate_passed:
        missed = [f"{r.variant} {100 * r.final_test_accuracy:.2f}%" for r in report.variants
                  if not r.met_accuracy_gate]
        conclude(report, status.ACCURACY_GATE,
                 f"below LENET_MIN_TEST_ACCURACY={settings.min_test_accuracy}: {', '.join(missed)}")
        return
    if settings.champion_check:
        report.champion = check_champion(report, settings.output_dir, settings.champion_tolerance)
        if not report.champion.passed:
            conclude(report, status.CHAMPION,
                     f"worse than the published run {report.champion.compared_with_run} by more than "
                     f"LENET_CHAMPION_TOLERANCE={settings.champion_tolerance}: new "
                     f"{report.champion.new_accuracy}, published {report.champion.published_accuracy}")
            return
    conclude(report, status.OK)


def record(report: Report, run_dir: Path) -> None:
    """Write the report, then the manifest, which hashes every file of the run including the report."""
    write_report(report, run_dir)
    write_manifest(run_dir, report.run_id)


def finish(report: Report, settings: Settings, run_dir: Path, stop: StopRequest, error: Exception | None) -> None:
    """Judge the run, write its report and manifest, and publish it if it passed."""
    with publish_lock(settings.output_dir):
        if error is None and stop():
            error = Interrupted()
        if error is None:
            try:
                judge(report, settings)
            except DamagedFileError as damaged:  # the champion check could not read the published run
                error = damaged
        if error is not None:
            conclude(report, *outcome(error, stop))
        report.published = report.status == status.OK.report_status
        finished = datetime.now(UTC)
        report.finished_at, report.elapsed_seconds = finished, (finished - report.started_at).total_seconds()
        record(report, run_dir)
        if report.published and stop():  # the stop came while the report was written: honour it
            conclude(report, *outcome(Interrupted(), stop))
            report.published = False
            record(report, run_dir)
        if report.published:
            point_latest_at(settings.output_dir, run_dir, report)
            removed = prune_runs(settings.output_dir, settings.keep_runs, report.run_id)
            if removed:
                log(f"removed {len(removed)} old run folder(s), keeping the newest {settings.keep_runs}")
