"""The job: load MNIST onto the device, train, export and verify each LeNet variant, then plot and report.

`run` is the whole pipeline, stage by stage, and fills the run's report as it goes; job.cli sets the run up,
and job.finish judges it, writes the report and publishes it. Every run writes into its own folder,
OUTPUT_DIR/runs/RUN_ID.
"""

from __future__ import annotations

from pathlib import Path

import torch

from export.checks import ParityError, describe_failures
from job.data import MnistData, load_mnist
from job.log import log
from job.plots import plot_comparison, plot_confusion, plot_curves, plot_samples
from job.report import Artifact, DataInfo, Report, VariantResult
from job.settings import Settings
from job.stop import StopRequest
from job.variant import train_variant
from job.workers import train_in_parallel


def run(settings: Settings, device: torch.device, run_dir: Path, report: Report, stop: StopRequest) -> None:
    """Load MNIST onto the device, train/export/verify each variant, plot; fills `report` as it goes."""
    recipe = settings.resolved_recipe()
    log(f"run {report.run_id}: device {device} ({report.device.name}), {report.device.threads} threads, "
        f"recipe {recipe.describe()}")
    data = load_data(settings, recipe.normalize, device, report)
    stop.check()
    plot_dir = run_dir / "plots"
    plot_dir.mkdir()
    plots = [plot_first_images(data, settings.seed, plot_dir)]
    if report.variants_in_parallel:
        report.variants = train_in_parallel(settings, stop, report.run_id, run_dir, report.device.threads)
    else:
        for variant in settings.variants:
            stop.check()
            report.variants.append(train_variant(variant, data, recipe, settings, stop, report.run_id, run_dir))
    stop.check()
    plots += plot_results(report.variants, plot_dir)
    report.plots = {path.stem: Artifact.of(path, run_dir) for path in plots}
    report.accuracy_gate_passed = all(result.met_accuracy_gate for result in report.variants)
    raise_on_parity_failures(report.variants)


def load_data(settings: Settings, normalize: bool, device: torch.device, report: Report) -> MnistData:
    data = load_mnist(settings.data_dir, download=settings.download, normalize=normalize,
                      train_limit=settings.train_limit, test_limit=settings.test_limit)
    data = MnistData(data.train.to(device), data.test.to(device), data.source, data.raw_dir, data.files)
    report.data = DataInfo(source=data.source, raw_dir=str(data.raw_dir), train_images=len(data.train),
                           test_images=len(data.test), files=data.files)
    log(f"MNIST from {data.source}: {len(data.train)} training and {len(data.test)} test images, checksums ok")
    return data


def plot_first_images(data: MnistData, seed: int, plot_dir: Path) -> Path:
    """The tutorial's grid: the first 20 images of the first (shuffled) training batch, with their labels."""
    first_batch = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:20]
    return plot_samples(data.train.images.cpu()[first_batch].numpy(), data.train.labels.cpu()[first_batch].numpy(),
                        plot_dir / "samples.png")


def plot_results(results: list[VariantResult], plot_dir: Path) -> list[Path]:
    plots = []
    for result in results:
        plots += [plot_curves(result, plot_dir / f"curves_{result.variant}.png"),
                  plot_confusion(result, plot_dir / f"confusion_{result.variant}.png")]
    return plots + [plot_comparison(results, plot_dir / "comparison.png")]


def raise_on_parity_failures(results: list[VariantResult]) -> None:
    """Raised only after every variant was trained, exported and plotted, so that the report keeps every
    variant's figures and plots for diagnosis."""
    failed = [r for r in results if not all(check.passed for check in r.parity)]
    if failed:
        raise ParityError("; ".join(f"[{r.variant}] exported model differs from the trained one: "
                                    f"{describe_failures(r.parity)}" for r in failed))
