"""The job, start to end: load MNIST, train, export and verify each LeNet variant on the device, plot, then
finish the run (judge it, write its report, publish it). `run` owns a run: each stage returns a value, and the
report is built from those values once, by job.outcome.finish. Every run writes into its own folder,
OUTPUT_DIR/runs/RUN_ID, which job.cli creates.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch

from export.checks import describe_failures
from job.device import device_name
from job.log import log, warn
from job.outcome.champion import warm_starts
from job.outcome.finish import RunFacts, finish
from job.outcome.plots import plot_comparison, plot_confusion, plot_curves, plot_extra_confusion, plot_samples
from job.outcome.publish import POINTER, DamagedFileError, published_run
from job.outcome.report import DataInfo, DeviceInfo, ExtraDataInfo, Report, SkippedFile, VariantResult
from job.outcome.status import HOLDOUT_TOO_SMALL, PARITY, RunFailure
from job.running.pool import can_start_workers, train_in_parallel, variants_share_the_cpu
from job.running.stop import StopRequest
from job.settings import Settings
from job.training.data import DataError, MnistData, standardization
from job.training.extra import load_run_data, too_few_held_out
from job.training.variant import train_variant
from lenet_client.sort import UNSURE
from lenet_client.text import printable


def run(settings: Settings, device: torch.device, run_dir: Path, run_id: str, started: datetime,
        stop: StopRequest) -> Report:
    """Train, export and verify every variant on `device`, plot, and finish the run: its report, as written."""
    in_parallel = variants_share_the_cpu(settings, device.type, torch.get_num_threads())
    if in_parallel and not can_start_workers():
        log(f"variants one after the other: this user may not run {sys.executable} again, as worker processes do")
        in_parallel = False
    processes = len(settings.variants) if in_parallel else 1
    threads = max(1, torch.get_num_threads() // processes)
    device_info = DeviceInfo(type=device.type, spec=str(device), name=device_name(device), threads=threads,
                             processes=processes)
    recipe = settings.resolved_recipe()
    log(f"run {run_id}: device {device} ({device_info.name}), {plural(processes, 'process', 'processes')} of "
        f"{plural(threads, 'thread')}, recipe {recipe.describe()}")
    data, extra, results, plots, error = None, None, [], [], None
    try:
        data, extra = load_data(settings, recipe.normalize, stop.check)
        check_extra_can_be_judged(extra, settings)
        check_no_digit_disappeared(extra, settings)
        starts: dict[str, str | None] = dict.fromkeys(settings.variants)
        if settings.warm_start:  # decided once, before any variant trains
            starts = warm_starts(settings.output_dir, settings.variants, standardization(recipe.normalize)[0])
        stop.check()
        (run_dir / "plots").mkdir()
        plots.append(plot_first_images(data, settings.seed, run_dir / "plots"))
        figures = FiguresAsResultsArrive(run_dir / "plots")
        if in_parallel:
            results = train_in_parallel(settings, device, stop, run_id, run_dir, threads, starts,
                                        on_result=figures.draw)
        else:
            on_device = data.to(device)
            for variant in settings.variants:
                stop.check()
                results.append(train_variant(variant, on_device, recipe, settings, device, stop, run_id, run_dir,
                                             starts[variant]))
                figures.draw(results[-1])
        stop.check()
        plots += figures.all(results)
        raise_on_parity_failures(results)
    except Exception as raised:  # every failure still gets its report; the exit status tells which kind
        error = raised
    facts = RunFacts(run_id=run_id, started_at=started, device=device_info, variants_in_parallel=in_parallel,
                     data=data_info(data, extra) if data else None, extra_data=extra, variants=results, plots=plots)
    return finish(facts, settings, run_dir, stop, error)


def plural(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def load_data(settings: Settings, normalize: bool,
              check_stop: Callable[[], None]) -> tuple[MnistData, ExtraDataInfo | None]:
    """MNIST on the CPU, with LENET_EXTRA_DATA's pictures mixed in: each training process moves it onto the device
    itself. Each extra file left out gets a warning line. `check_stop` is called between pictures."""
    data, extra, repeats = load_run_data(settings, normalize, check_stop)
    mnist_images = len(data.train) - repeats * (len(extra.train_labels) if extra else 0)
    source = (f"unpacked from the vendored copy into {data.raw_dir.resolve()} (kept for the next runs: "
              f"LENET_DATA_DIR)" if data.source == "vendored" else f"from {data.source}")
    log(f"MNIST {source}: {mnist_images} training and {len(data.test)} test images, checksums ok")
    if extra is None:
        return data, None
    for skipped in extra.skipped:
        warn(f"LENET_EXTRA_DATA: {printable(skipped.path)}: {skipped.reason}; left out")
    if extra.cache_problem:
        warn(f"LENET_EXTRA_DATA: the preprocessed pictures are not cached: {extra.cache_problem}; every run "
             f"preprocesses them again")
    for conflict in extra.conflicts:
        warn(f"LENET_EXTRA_DATA: the same picture under labels {conflict['labels']}: "
             f"{', '.join(map(printable, conflict['paths']))}; left out")
    counts = extra.counts()
    held_out = sum(counts["holdout"].values())
    log(f"extra pictures from {settings.extra_data}: {sum(counts['train'].values())} for training (x{repeats} per "
        f"epoch), {held_out} held out, data version {extra.version[:12]}")
    if extra.waiting:
        log(f"extra pictures waiting for a label in {settings.extra_data}/{UNSURE}: {extra.waiting} (not trained on)")
    return data, ExtraDataInfo(
        folder=str(settings.extra_data), version=extra.version, share=settings.extra_share, repeats=repeats,
        train_pictures=counts["train"], holdout_pictures=counts["holdout"],
        # A name in another encoding (an old PC's Latin-1) is kept as printable() shows it: JSON holds only UTF-8,
        # and the quoted form gives the name's bytes back.
        skipped=[SkippedFile(path=printable(s.path), reason=s.reason) for s in extra.skipped],
        conflicts=[conflict | {"paths": [printable(path) for path in conflict["paths"]]}
                   for conflict in extra.conflicts],
        waiting_pictures=extra.waiting)


def check_no_digit_disappeared(extra: ExtraDataInfo | None, settings: Settings) -> None:
    """A digit that had labelled pictures in the published run and has none now (its folder emptied, unplugged or
    renamed): retraining without them would forget them without a word. The run stops before training (exit 3)."""
    if extra is None:
        return
    try:
        published = published_run(settings.output_dir)
    except DamagedFileError:  # the champion check, if on, says so; this check needs the counts only
        return
    if published is None or published[1].extra_data is None or \
            Path(published[1].extra_data.folder).resolve() != Path(extra.folder).resolve():
        return  # another folder (LENET_EXTRA_DATA pointed elsewhere, on purpose) is another set of labels
    before = published[1].extra_data
    for digit in sorted(set(before.train_pictures) | set(before.holdout_pictures)):
        had = before.train_pictures.get(digit, 0) + before.holdout_pictures.get(digit, 0)
        if had and not extra.train_pictures.get(digit, 0) + extra.holdout_pictures.get(digit, 0):
            raise DataError(f"LENET_EXTRA_DATA={printable(extra.folder)}: digit {digit} had {had} pictures in the "
                            f"published run {published[0]} and has none now (its folder emptied, renamed or not "
                            f"mounted?)")


def check_extra_can_be_judged(extra: ExtraDataInfo | None, settings: Settings) -> None:
    """Too few extra pictures held out to judge a retrained model: where a model is published, the run could not
    replace it, and stops before training to find that out (job.outcome.finish judges again at the end, for a model
    published meanwhile); where none is, it goes on, and says so."""
    if extra is None:
        return
    too_few = too_few_held_out(sum(extra.holdout_pictures.values()), settings.extra_min_holdout)
    if too_few is None:
        return
    if (settings.output_dir / POINTER).exists():
        raise RunFailure(f"LENET_EXTRA_DATA: {too_few}; the published run stays (nothing was trained)",
                         HOLDOUT_TOO_SMALL, suffix="")
    warn(f"LENET_EXTRA_DATA: {too_few}; no model is published yet, so this run may be")


def data_info(data: MnistData, extra: ExtraDataInfo | None) -> DataInfo:
    extra_images = extra.repeats * sum(extra.train_pictures.values()) if extra else 0
    return DataInfo(source=data.source, raw_dir=str(data.raw_dir), train_images=len(data.train) - extra_images,
                    test_images=len(data.test), files=data.files)


def plot_first_images(data: MnistData, seed: int, plot_dir: Path) -> Path:
    """The tutorial's grid: the first 20 images of the first (shuffled) training batch, with their labels."""
    first_batch = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:20]
    return plot_samples(data.train.images[first_batch].numpy(), data.train.labels[first_batch].numpy(),
                        plot_dir / "samples.png")


class FiguresAsResultsArrive:
    """Each variant's figures, drawn as soon as its result arrives: side by side on the CPU, while the other variant
    still trains on its own core (0.2 s of the 7 s a run of 256 images takes here, docs/performance.md). A failure
    to draw is raised by `all`, once every variant's result is in, so that the report still holds them all."""

    def __init__(self, plot_dir: Path) -> None:
        self.plot_dir = plot_dir
        self.drawn: dict[str, list[Path]] = {}
        self.failure: Exception | None = None

    def draw(self, result: VariantResult) -> None:
        if self.failure is not None:
            return
        try:
            self.drawn[result.variant] = plot_variant(result, self.plot_dir)
        except Exception as error:
            self.failure = error

    def all(self, results: list[VariantResult]) -> list[Path]:
        """Every variant's figures, in the order of `results`, and the comparison of all of them."""
        if self.failure is not None:
            raise self.failure
        drawn = [path for result in results for path in self.drawn[result.variant]]
        return drawn + [plot_comparison(results, self.plot_dir / "comparison.png")]


def plot_variant(result: VariantResult, plot_dir: Path) -> list[Path]:
    plots = [plot_curves(result, plot_dir / f"curves_{result.variant}.png"),
             plot_confusion(result, plot_dir / f"confusion_{result.variant}.png")]
    if result.extra_holdout is not None:
        plots.append(plot_extra_confusion(result, plot_dir / f"confusion_extra_{result.variant}.png"))
    return plots


class ParityFailed(RunFailure):
    """An exported file does not predict what the trained model predicts."""

    status = PARITY


def raise_on_parity_failures(results: list[VariantResult]) -> None:
    """Raised only after every variant was trained, exported and plotted, so that the report keeps every
    variant's figures and plots for diagnosis."""
    failed = [r for r in results if not all(check.passed for check in r.parity)]
    if failed:
        raise ParityFailed("; ".join(f"[{r.variant}] exported model differs from the trained one: "
                                    f"{describe_failures(r.parity)}" for r in failed))
