"""The end of every run, in order: judge it, write its report, log it to MLflow (when on), publish it if it passed,
prune old runs. `finish` returns the report as written; its `exit_code` is the run's exit status.

All of it happens under the publish lock, so that concurrent runs on one output dir publish one after the other
(a run that could not take the lock is judged and reported without it, and publishes nothing). `judge` chooses the
failure, if any; its status becomes the report's `exit_code`, which job.cli returns as the exit status.
The report is written once; twice with tracking (it says `published: false` while the run is logged), and again
only when publishing itself fails at the end, so that the report never contradicts the exit status or latest.json.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from job.log import warn
from job.outcome.champion import SameGround, check_champion
from job.outcome.metadata import library_versions
from job.outcome.publish import (
    POINTER,
    LockWaitTooLong,
    PointerBefore,
    check_pointer_replaceable,
    point_latest_at,
    prune_runs,
    publish_lock,
    repair_published_report,
    write_manifest,
)
from job.outcome.report import (
    Artifact,
    ChampionCheck,
    DataInfo,
    DeviceInfo,
    ExtraDataInfo,
    Report,
    Tracking,
    VariantResult,
    write_report,
)
from job.outcome.status import ACCURACY_GATE, CHAMPION, HOLDOUT_TOO_SMALL, OK, TRACKING, RunFailure, failure_of
from job.running.stop import Interrupted, StopRequest, raising_on_stop
from job.settings import Settings
from job.training.data import DataError
from job.training.extra import too_few_held_out

if TYPE_CHECKING:  # imported where used: mlflow's module is loaded only when tracking is on
    from job.outcome.tracking import TrackingFailed


@dataclass(frozen=True)
class RunFacts:
    """What a run did, as job.running.pipeline gathered it: the report is built from this."""
    run_id: str
    started_at: datetime
    device: DeviceInfo
    variants_in_parallel: bool
    data: DataInfo | None  # None when MNIST could not be loaded
    extra_data: ExtraDataInfo | None  # None without LENET_EXTRA_DATA
    variants: list[VariantResult]  # the variants that completed, in order
    plots: list[Path]


def finish(facts: RunFacts, settings: Settings, run_dir: Path, stop: StopRequest,
           error: Exception | None) -> Report:
    """Judge the run (`error`: what ended it early, if anything), write its report, track it, and publish it if it
    passed; return the report as written."""
    with contextlib.ExitStack() as held:
        if error is None:  # a run that failed publishes nothing: it neither needs nor waits for the lock
            try:
                held.callback(publish_lock(settings.output_dir, stop.check, settings.publish_wait_seconds).release)
                repair_published_report(settings.output_dir)
            except (Interrupted, LockWaitTooLong, OSError) as waited:
                error = waited
        failure, champion = judge(facts, settings, stop, error)
        tracking = None
        if settings.mlflow_tracking_uri is not None:
            pending, failure = write_run_report(facts, settings, run_dir, failure, champion, pending=True)
            tracking, failure = track_run(pending, run_dir, settings, stop, failure)
        # A run about to be published says `published: false` until the pointer has moved: a report may only say
        # what is already true on disk (a run killed before the move is not published).
        report, failure = write_run_report(facts, settings, run_dir, failure, champion, tracking,
                                           pending=failure is None)
        if failure is None:
            return publish_run(report, facts, settings, run_dir, stop, champion)
        if tracking is not None and tracking.champion_moved:  # tracked to publish, then the report failed
            tracking = restore_champion_in_mlflow(tracking, settings, failure)
            report, _ = write_run_report(facts, settings, run_dir, failure, champion, tracking)
        return report


def judge(facts: RunFacts, settings: Settings, stop: StopRequest,
          error: Exception | None) -> tuple[RunFailure | None, ChampionCheck | None]:
    """Why the run fails (None: it passed), and the champion check when it was made. In order: what ended the run
    early, a stop, a pointer that could not be replaced, the accuracy gate, too few extra pictures held out to judge a
    retrained model, then (if on) the champion check."""
    if error is None:
        try:
            stop.check()
            check_pointer_replaceable(settings.output_dir)
        except (Interrupted, OSError) as unpublishable:
            error = unpublishable
    if error is not None:
        return failure_of(error), None
    missed = [f"{r.variant} {100 * r.final_test_accuracy:.2f}%" for r in facts.variants if not r.met_accuracy_gate]
    if missed:
        return RunFailure(f"below LENET_MIN_TEST_ACCURACY={settings.min_test_accuracy}: {', '.join(missed)}",
                          ACCURACY_GATE, suffix=""), None
    if (unjudged := too_few_to_judge(facts, settings)) is not None:
        return unjudged, None
    if not settings.champion_check:
        return None, None
    new = {r.variant: r.final_test_accuracy for r in facts.variants}
    try:
        champion = check_champion(new, settings.output_dir, settings.champion_tolerance, same_ground(facts, settings))
    except Exception as unreadable:  # the published run, or the ground to judge it on again, cannot be read
        return failure_of(unreadable), None
    if not champion.passed:
        holdout = (f"; on the extra holdout ({champion.holdout_images} pictures): new {champion.new_holdout_accuracy}, "
                   f"published {champion.published_holdout_accuracy}") if champion.holdout_images else ""
        return RunFailure(f"worse than the published run {champion.compared_with_run} by more than "
                          f"LENET_CHAMPION_TOLERANCE={settings.champion_tolerance}: new {champion.new_accuracy}, "
                          f"published {champion.published_accuracy}{holdout}", CHAMPION, suffix=""), champion
    return None, champion


def too_few_to_judge(facts: RunFacts, settings: Settings) -> RunFailure | None:
    """A run that learned from extra pictures but holds too few of them out: how it reads pictures of their kind is
    unseen, so it may not replace a published model (where none is published yet, it is: there is nothing to lose).
    job.running.pipeline stops such a run before training when a model is published at its start; this is for one
    published while it trained."""
    extra = facts.extra_data
    if extra is None or not (settings.output_dir / POINTER).exists():
        return None
    too_few = too_few_held_out(sum(extra.holdout_pictures.values()), settings.extra_min_holdout)
    if too_few is None:
        return None
    return RunFailure(f"LENET_EXTRA_DATA: {too_few}; the published run stays", HOLDOUT_TOO_SMALL, suffix="")


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


def report_of(facts: RunFacts, settings: Settings, run_dir: Path, failure: RunFailure | None,
              champion: ChampionCheck | None, tracking: Tracking | None = None, pending: bool = False) -> Report:
    """`pending`: the run passed but is not about to be published yet (it is being logged to MLflow first)."""
    finished = datetime.now(UTC)
    recipe = settings.resolved_recipe()
    # The settings as used: a hyperparameter left to the recipe is shown with the recipe's value.
    used = settings.model_dump(mode="json") | {name: getattr(recipe, name) for name in
                                               ("epochs", "batch_size", "learning_rate", "momentum")}
    if settings.mlflow_tracking_uri:  # a user name or password in the address stays out of the report
        from job.outcome.tracking import without_credentials

        used["mlflow_tracking_uri"] = without_credentials(settings.mlflow_tracking_uri)
    status = failure.status if failure else OK
    assert status.report_status is not None, f"exit {status.code} happens before a run has a report"
    return Report(
        status=status.report_status, exit_code=status.code, message=failure.line() if failure else "",
        test_accuracy={r.variant: r.final_test_accuracy for r in facts.variants},
        run_id=facts.run_id, started_at=facts.started_at, finished_at=finished,
        elapsed_seconds=(finished - facts.started_at).total_seconds(), device=facts.device,
        versions=library_versions(), settings=used, recipe=asdict(recipe),
        variants_in_parallel=facts.variants_in_parallel, data=facts.data, extra_data=facts.extra_data,
        min_test_accuracy=settings.min_test_accuracy,
        accuracy_gate_passed=bool(facts.variants) and all(r.met_accuracy_gate for r in facts.variants),
        champion=champion, published=failure is None and not pending, variants=facts.variants,
        plots={path.stem: Artifact.of(path, run_dir) for path in facts.plots}, tracking=tracking)


def write_run_report(facts: RunFacts, settings: Settings, run_dir: Path, failure: RunFailure | None,
            champion: ChampionCheck | None, tracking: Tracking | None = None,
            pending: bool = False) -> tuple[Report, RunFailure | None]:
    """The run's report, written with the manifest (which hashes every file of the run, the report included), and
    the failure the run ends with. When the report cannot be written, that is the run's failure: its report is
    returned unwritten, and a report already in the folder is removed rather than left contradicting the exit
    status."""
    report = report_of(facts, settings, run_dir, failure, champion, tracking, pending)
    try:
        write_report(report, run_dir)
        write_manifest(run_dir, report.run_id)
        return report, failure
    except OSError as write_error:
        with contextlib.suppress(OSError):  # a folder that refuses this too keeps whatever it holds
            (run_dir / "report.json").unlink(missing_ok=True)
        failure = failure_of(write_error)
        return report_of(facts, settings, run_dir, failure, champion, tracking), failure


def track_run(report: Report, run_dir: Path, settings: Settings, stop: StopRequest,
            failure: RunFailure | None) -> tuple[Tracking | None, RunFailure | None]:
    """The judged run logged to MLflow (job.outcome.tracking), and the failure it ends with. A run that cannot be
    tracked is still published, with a warning, unless LENET_TRACKING_REQUIRED: then it is not (exit 12)."""
    from job.outcome.tracking import BudgetSpent, TrackingFailed, track, untracked, within_budget

    publishing = failure is None
    if publishing and stop():  # the stop came after judging: no request that only a new signal could cut short;
        return None, failure  # publish_run's stop check ends the run as interrupted
    try:
        # A stop, or the budget spent, does not wait for the server.
        with raising_on_stop(stop), within_budget(settings.tracking_budget_seconds) as budget:
            tracked = track(report, run_dir, settings, publishing, budget)
            budget.done = True
            return tracked, failure
    except BudgetSpent:  # the alarm landed outside track's own handler (it had caught an error just then)
        tracking = untracked(settings)
        failed = TrackingFailed(f"MLflow at {tracking.uri}: cut short: all of the tracking may take "
                                f"LENET_TRACKING_BUDGET_SECONDS={settings.tracking_budget_seconds}", tracking)
        return tracking_failed(failed, settings, stop, failure, publishing)
    except TrackingFailed as failed:
        return tracking_failed(failed, settings, stop, failure, publishing)
    except Interrupted:  # a stop after track returned, before the usual handler was back: publish_run's check ends it
        return None, failure


def tracking_failed(failed: TrackingFailed, settings: Settings, stop: StopRequest, failure: RunFailure | None,
                    publishing: bool) -> tuple[Tracking | None, RunFailure | None]:
    """What a run whose tracking failed does: the champion alias back, then published with a warning, or (tracking
    required) not published."""
    from job.outcome.tracking import restore_champion

    tracking = failed.tracking.model_copy(update={"message": str(failed)})
    # A champion alias that moved goes back; a stopped run is marked KILLED in MLflow.
    if tracking.champion_moved or (stop() and tracking.mlflow_run_id):
        tracking = restore_champion(tracking, settings, stopped=stop())
    if stop():  # publish_run's stop check ends the run as interrupted, which says so
        return tracking, failure
    if publishing and settings.tracking_required:
        return tracking, RunFailure(f"tracking failed: {failed}", TRACKING)
    warn(f"tracking failed, the run's own outputs are complete: {failed}")
    return tracking, failure


def publish_run(report: Report, facts: RunFacts, settings: Settings, run_dir: Path, stop: StopRequest,
                champion: ChampionCheck | None) -> Report:
    """Point latest.json at the run that passed, then say so in its report, then prune old runs (a folder it cannot
    remove is named in a warning and changes nothing). A stop that came first, or a pointer that cannot move, leaves
    the run unpublished, its report rewritten to say why, and MLflow's `champion` moved back; a report that cannot
    say it was published moves the pointer back too. A stop that arrives once the pointer has moved does not
    unpublish the run."""
    before = None
    try:
        stop.check()
        before = PointerBefore.keep(settings.output_dir)
        point_latest_at(settings.output_dir, run_dir, report)
        published, failure = write_run_report(facts, settings, run_dir, None, champion, report.tracking)
        if failure is not None:
            before.restore()
    except (Interrupted, OSError) as error:
        failure = failure_of(error)
    finally:
        if before is not None:
            before.forget()
    if failure is not None:
        tracking = report.tracking
        if tracking is not None and tracking.champion_moved:
            tracking = restore_champion_in_mlflow(tracking, settings, failure)
        return write_run_report(facts, settings, run_dir, failure, champion, tracking)[0]
    prune_runs(settings.output_dir, settings.keep_runs, report.run_id)
    return published


def restore_champion_in_mlflow(tracking: Tracking, settings: Settings, failure: RunFailure) -> Tracking:
    """A run that moved MLflow's `champion` and is not published after all: the alias goes back, and the MLflow run
    is marked KILLED (a stop) or FAILED."""
    from job.outcome.tracking import restore_champion

    return restore_champion(tracking, settings, stopped=isinstance(failure, Interrupted))
