"""The end of every run, one verb: `finish` judges the run, builds its report from what the run did, writes it
with the manifest, and publishes the run if it passed.

All of it happens under the publish lock, so that concurrent runs on one output dir publish one after the other.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from export.checks import ParityError
from job.outcome import status
from job.training.data import DataError
from job.log import log
from job.outcome.metadata import library_versions
from job.outcome.champion import SameGround, check_champion
from job.outcome.publish import (DamagedFileError, LockWaitTooLong, check_pointer_replaceable, point_latest_at, prune_runs,
                         publish_lock, warn, write_manifest)
from job.outcome.report import (Artifact, ChampionCheck, DataInfo, DeviceInfo, ExtraDataInfo, Report, Tracking,
                        VariantResult, write_report)
from job.settings import Settings
from job.running.stop import Interrupted, StopRequest, raising_on_stop
from job.training.train import Diverged
from job.running.workers import WorkerDied


@dataclass(frozen=True)
class RunFacts:
    """What a run did, as job.running.pipeline gathered it: the report is built from this once."""
    run_id: str
    started_at: datetime
    device: DeviceInfo
    variants_in_parallel: bool
    data: DataInfo | None  # None when MNIST could not be loaded
    extra_data: ExtraDataInfo | None  # None without LENET_EXTRA_DATA
    variants: list[VariantResult]  # the variants that completed, in order
    plots: list[Path]


@dataclass(frozen=True)
class Verdict:
    status: status.ExitStatus
    message: str = ""
    champion: ChampionCheck | None = None


def verdict_on_error(error: BaseException, stop: StopRequest) -> Verdict:
    """The exit status of a run that raised `error`, and its one-line message."""
    if isinstance(error, Interrupted):
        code = {signal.SIGINT: status.SIGINT, signal.SIGHUP: status.SIGHUP}.get(stop.signal, status.SIGTERM)
        return Verdict(code, f"interrupted by {signal.Signals(stop.signal).name}; nothing was published")
    if isinstance(error, DataError):
        return Verdict(status.DATA, f"data problem: {error}")
    if isinstance(error, DamagedFileError):
        return Verdict(status.DAMAGED, f"{error}; nothing was published")
    if isinstance(error, Diverged):
        return Verdict(status.DIVERGED, f"{error}; nothing was published")
    if isinstance(error, ParityError):
        return Verdict(status.PARITY, f"{error}; nothing was published")
    if isinstance(error, LockWaitTooLong):
        return Verdict(status.LOCK_WAIT, str(error))
    if isinstance(error, WorkerDied):
        return Verdict(status.WORKER_KILLED, f"{error}; nothing was published")
    if isinstance(error, OSError):
        return Verdict(status.OUTPUT, f"could not write the outputs: {error}; nothing was published")
    return Verdict(status.UNEXPECTED, f"unexpected error: {type(error).__name__}: {error}")


def verdict_on_results(facts: RunFacts, settings: Settings) -> Verdict:
    """The status of a run that completed: the accuracy gate, then (if on) the champion check."""
    missed = [f"{r.variant} {100 * r.final_test_accuracy:.2f}%" for r in facts.variants if not r.met_accuracy_gate]
    if missed:
        return Verdict(status.ACCURACY_GATE,
                       f"below LENET_MIN_TEST_ACCURACY={settings.min_test_accuracy}: {', '.join(missed)}")
    if not settings.champion_check:
        return Verdict(status.OK)
    new = {r.variant: r.final_test_accuracy for r in facts.variants}
    champion = check_champion(new, settings.output_dir, settings.champion_tolerance, same_ground(facts, settings))
    if not champion.passed:
        holdout = (f"; on the extra holdout ({champion.holdout_images} pictures): new {champion.new_holdout_accuracy}, "
                   f"published {champion.published_holdout_accuracy}") if champion.holdout_images else ""
        return Verdict(status.CHAMPION, f"worse than the published run {champion.compared_with_run} by more than "
                                        f"LENET_CHAMPION_TOLERANCE={settings.champion_tolerance}: new "
                                        f"{champion.new_accuracy}, published {champion.published_accuracy}{holdout}",
                       champion)
    return Verdict(status.OK, champion=champion)


def same_ground(facts: RunFacts, settings: Settings) -> SameGround | None:
    """With extra pictures that have a holdout: today's MNIST test set and holdout, to judge the published model
    on them again (the extra folder is read from its cache)."""
    holdouts = {r.variant: r.extra_holdout.accuracy for r in facts.variants if r.extra_holdout is not None}
    if settings.extra_data is None or not holdouts:
        return None
    from job.training.data import read_split
    from job.training.extra import ExtraDataError, load_extra

    try:
        images, labels = read_split(settings.data_dir, train=False, limit=settings.test_limit)
        extra = load_extra(settings.extra_data, settings.data_dir / "extra-cache", settings.extra_max_bad_share)
    except (ExtraDataError, OSError) as error:  # the folder changed, or became unreadable, during the run
        raise DataError(f"the champion check could not read its ground again: {error}") from None
    return SameGround(images.numpy(), labels.numpy(), extra.holdout_images, extra.holdout_labels, holdouts)


def report_of(facts: RunFacts, settings: Settings, verdict: Verdict, run_dir: Path,
              tracking: Tracking | None = None, pending: bool = False) -> Report:
    """`pending`: the run passed but is not about to be published yet (it is being logged to MLflow first)."""
    finished = datetime.now(UTC)
    recipe = settings.resolved_recipe()
    # The settings as used: a hyperparameter left to the recipe is shown with the recipe's value.
    used = settings.model_dump(mode="json") | {name: getattr(recipe, name) for name in
                                               ("epochs", "batch_size", "learning_rate", "momentum")}
    if settings.mlflow_tracking_uri:  # a user name or password in the address stays out of the report
        from job.outcome.tracking import without_credentials

        used["mlflow_tracking_uri"] = without_credentials(settings.mlflow_tracking_uri)
    return Report(
        status=verdict.status.report_status, exit_code=verdict.status.code, message=verdict.message,
        run_id=facts.run_id, started_at=facts.started_at, finished_at=finished,
        elapsed_seconds=(finished - facts.started_at).total_seconds(), device=facts.device,
        versions=library_versions(), settings=used, recipe=asdict(recipe),
        variants_in_parallel=facts.variants_in_parallel, data=facts.data, extra_data=facts.extra_data,
        min_test_accuracy=settings.min_test_accuracy,
        accuracy_gate_passed=bool(facts.variants) and all(r.met_accuracy_gate for r in facts.variants),
        champion=verdict.champion, published=verdict.status == status.OK and not pending, variants=facts.variants,
        plots={path.stem: Artifact.of(path, run_dir) for path in facts.plots}, tracking=tracking)


def write_run(report: Report, run_dir: Path) -> None:
    """The report, then the manifest, which hashes every file of the run including the report."""
    write_report(report, run_dir)
    write_manifest(run_dir, report.run_id)


def finish(facts: RunFacts, settings: Settings, run_dir: Path, stop: StopRequest,
           error: Exception | None) -> Report:
    """Judge the run, write its report and manifest, publish it if it passed; return the report.

    Moving latest.json is the last thing that can fail: the report is rewritten when it does, so that the exit
    status, the report and the pointer agree. Pruning old runs comes after it and cannot change the outcome (a
    folder it cannot remove is named in a warning). A stop that arrives once the pointer has moved does not
    unpublish the run."""
    lock = None
    try:
        lock = publish_lock(settings.output_dir, stop.check, settings.publish_wait_seconds)
    except (Interrupted, LockWaitTooLong, OSError) as waited:  # its own report needs no lock: it publishes nothing
        error = waited
    try:
        try:
            if error is None and stop():
                error = Interrupted()
            if error is None:
                check_pointer_replaceable(settings.output_dir)
        except OSError as unpublishable:
            error = unpublishable
        try:
            verdict = verdict_on_error(error, stop) if error else verdict_on_results(facts, settings)
        except (DamagedFileError, DataError) as damaged:  # the champion check could not read its ground
            verdict = verdict_on_error(damaged, stop)
        # While the run is logged to MLflow its report says `published: false`: true only once it is about to be.
        tracking_on = settings.mlflow_tracking_uri is not None
        report = write_judged_run(facts, settings, verdict, run_dir, stop, pending=tracking_on)
        if tracking_on:
            report = tracked(report, facts, settings, verdict, run_dir, stop)
        if report.published and stop():  # the stop came while the report was written: honour it
            report = unpublished(report, facts, settings, verdict_on_error(Interrupted(), stop), run_dir, stop)
        if report.published:
            try:
                point_latest_at(settings.output_dir, run_dir, report)
            except OSError as error:
                return unpublished(report, facts, settings, verdict_on_error(error, stop), run_dir, stop)
            prune_runs(settings.output_dir, settings.keep_runs, report.run_id)
        return report
    finally:
        if lock is not None:
            lock.release()


def tracked(report: Report, facts: RunFacts, settings: Settings, verdict: Verdict, run_dir: Path,
            stop: StopRequest) -> Report:
    """The judged run logged to MLflow (job.outcome.tracking), and its report rewritten with what was logged. A run that
    cannot be tracked is still published, with a warning, unless LENET_TRACKING_REQUIRED: then it is not (exit 12)."""
    from job.outcome.tracking import TrackingFailed, restore_champion, track

    if report.exit_code != verdict.status.code:  # the report could not be written: that is the run's outcome now
        verdict = Verdict(next(s for s in status.STATUSES if s.code == report.exit_code), report.message,
                          verdict.champion)
    publishing = verdict.status == status.OK
    tracking = None
    try:
        with raising_on_stop(stop):  # a stop does not wait for a server's timeouts
            tracking = track(report, run_dir, settings, publishing)
    except TrackingFailed as failed:
        tracking = failed.tracking.model_copy(update={"message": str(failed)})
        if tracking.champion_moved or (stop() and tracking.mlflow_run_id):  # what moved goes back; a stopped
            tracking = restore_champion(tracking, settings, "KILLED" if stop() else "FAILED")  # run is KILLED
        if stop():
            pass  # the run ends as interrupted (finish), which says so
        elif publishing and settings.tracking_required:
            verdict = Verdict(status.TRACKING, f"tracking failed: {failed}; nothing was published")
        else:
            warn(f"tracking failed, the run's own outputs are complete: {failed}")
    except Interrupted:  # after track returned, before the usual handler was back: finish unpublishes the run
        pass
    return write_judged_run(facts, settings, verdict, run_dir, stop, tracking)


def unpublished(report: Report, facts: RunFacts, settings: Settings, verdict: Verdict, run_dir: Path,
                stop: StopRequest) -> Report:
    """A run that was to be published and is not after all: its report rewritten, and `champion` moved back."""
    tracking = report.tracking
    if tracking is not None and tracking.champion_moved:
        from job.outcome.tracking import restore_champion

        killed = verdict.status.report_status == "interrupted"
        tracking = restore_champion(tracking, settings, "KILLED" if killed else "FAILED")
    return write_judged_run(facts, settings, verdict, run_dir, stop, tracking)


def write_judged_run(facts: RunFacts, settings: Settings, verdict: Verdict, run_dir: Path,
                     stop: StopRequest, tracking: Tracking | None = None, pending: bool = False) -> Report:
    """The run's report for `verdict`, written with its manifest. When it cannot be written, the report of that
    failure is returned unwritten, and a report already in the folder is removed rather than left contradicting
    the exit status."""
    report = report_of(facts, settings, verdict, run_dir, tracking, pending)
    try:
        write_run(report, run_dir)
        return report
    except OSError as write_error:
        with contextlib.suppress(OSError):  # a folder that refuses this too keeps whatever it holds
            (run_dir / "report.json").unlink(missing_ok=True)
        return report_of(facts, settings, verdict_on_error(write_error, stop), run_dir, tracking)
