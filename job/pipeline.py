"""The job: train each LeNet variant on MNIST on the best device, export and verify it, then report and plot.

`run` is the whole pipeline, stage by stage; `main` turns its outcome into an exit status. Every run writes
into its own folder, OUTPUT_DIR/runs/RUN_ID, and only a run that passed every check is published, by
atomically replacing OUTPUT_DIR/latest.json with a pointer to its folder.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch
from torchinfo import summary

from export.contract import CLASS_LABELS
from job.data import MNIST_MEAN, MNIST_STD, DataError, MnistData, load_mnist
from job.device import device_name, select_device
from job.model import build_model, parameter_count
from job.plots import plot_comparison, plot_confusion, plot_curves, plot_samples
from job.publish import RUNS, check_champion, point_latest_at, prune_runs, publish_lock, write_manifest
from job.report import Artifact, DataInfo, DeviceInfo, Epoch, Report, VariantResult, write_report
from job.settings import Recipe, Settings, SettingsError, load_settings
from job.train import EpochMetrics, Interrupted, train_model

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_SETTING = 2
EXIT_DATA = 3
EXIT_ACCURACY_GATE = 4
EXIT_PARITY = 5
EXIT_OUTPUT = 6
EXIT_CHAMPION = 7
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class ParityError(RuntimeError):
    """An exported file does not predict what the trained model predicts."""


class StopRequest:
    """Set by SIGTERM / SIGINT; training checks it before every batch and the pipeline between stages, so a stop
    takes effect promptly. The flag lives in shared memory, so variant worker processes see it too."""

    def __init__(self) -> None:
        self._signal = multiprocessing.get_context("spawn").RawValue("i", 0)

    @property
    def signal(self) -> int | None:
        return self._signal.value or None

    def __call__(self) -> bool:
        return self._signal.value != 0

    def check(self) -> None:
        """Stop between stages: raise Interrupted if a stop was requested."""
        if self._signal.value:
            raise Interrupted

    def install(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._request)

    def _request(self, number: int, frame: object) -> None:
        self._signal.value = number


def log(message: str) -> None:
    print(message, flush=True)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"  # sorts by time; the suffix keeps concurrent runs apart


def source_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SOURCE_COMMIT", "unknown")


def library_versions() -> dict[str, str]:
    import matplotlib
    import onnx
    import onnxruntime
    import pydantic
    import torchvision

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "pydantic": pydantic.__version__,
            "matplotlib": matplotlib.__version__}


def epoch_line(variant: str, m: EpochMetrics) -> str:
    """The tutorial's log line, with the variant and the epoch's seconds added."""
    return (f"[{variant}] Epoch:{m.epoch:2d}, Train_acc:{100 * m.train_accuracy:.1f}%, "
            f"Train_loss:{m.train_loss:.3f}, Test_acc:{100 * m.test_accuracy:.1f}%, "
            f"Test_loss:{m.test_loss:.3f}, {m.seconds:.1f}s")


def model_metadata(variant: str, recipe: Recipe, accuracy: float, run_id: str, trained_at: datetime) -> dict:
    return {
        "model.variant": variant,
        "model.dropout": repr(recipe.dropout if variant == "bn_dropout" else 0.0),
        "model.classes": ",".join(CLASS_LABELS),
        "preprocess.image_size": "28x28",
        "preprocess.color": "white digit on black background, grayscale",
        "preprocess.scale": repr(1 / 255),
        "preprocess.mean": repr(MNIST_MEAN if recipe.normalize else 0.0),
        "preprocess.std": repr(MNIST_STD if recipe.normalize else 1.0),
        "metrics.test_accuracy": f"{accuracy:.4f}",
        "run.id": run_id,
        "run.trained_at": trained_at.isoformat(),
        "run.torch_version": torch.__version__,
        "run.source_commit": source_commit(),
        "run.recipe": recipe.name,
    }


def train_variant(variant: str, data: MnistData, recipe: Recipe, settings: Settings, stop: StopRequest,
                  run_id: str, run_dir: Path, progress_bar: bool = True) -> VariantResult:
    """Train one variant, then export it and check that every exported file predicts what it predicts."""
    from export.formats import export_model  # torch.export / onnx are loaded only when a model is ready
    from export.parity import check_parity, describe

    device = data.train.images.device
    # The summary runs a forward pass that draws Dropout masks from the global RNG: print it from a throwaway
    # copy before seeding, so that it cannot change what the seeded run trains.
    log(str(summary(build_model(variant, recipe.dropout), input_size=(1, 1, 28, 28), verbose=0, device="cpu")))
    torch.manual_seed(settings.seed)
    model = build_model(variant, recipe.dropout).to(device)
    started = time.perf_counter()
    history, final = train_model(model, data.train, data.test, recipe, seed=settings.seed,
                                 eval_batch_size=settings.eval_batch_size, should_stop=stop,
                                 progress_label=f"[{variant}]" if progress_bar else None,
                                 on_epoch=lambda metrics: log(epoch_line(variant, metrics)))
    training_seconds = time.perf_counter() - started
    confusion = torch.bincount(data.test.labels.cpu() * 10 + final.predictions, minlength=100).reshape(10, 10)
    last = history[-1]
    result = VariantResult(
        variant=variant, parameters=parameter_count(model), epochs=[Epoch(**asdict(m)) for m in history],
        final_test_accuracy=final.accuracy, final_test_loss=final.loss, final_train_accuracy=last.train_accuracy,
        final_train_loss=last.train_loss, training_seconds=training_seconds,
        met_accuracy_gate=final.accuracy >= settings.min_test_accuracy, confusion_matrix=confusion.tolist())

    stop.check()
    log(f"[{variant}] exporting TorchScript, torch.export and ONNX")
    started = time.perf_counter()
    model_dir = run_dir / "models" / variant
    paths = export_model(model, model_dir, model_metadata(variant, recipe, final.accuracy, run_id, utc_now()))
    result.artifacts = {name: Artifact.of(path, run_dir) for name, path in paths.items()}
    result.export_seconds = time.perf_counter() - started
    stop.check()
    started = time.perf_counter()
    result.parity = check_parity(model, paths, data.test, batch_sizes=(1, settings.eval_batch_size),
                                 max_abs_diff=settings.parity_max_abs_diff,
                                 min_agreement=settings.parity_min_agreement, should_stop=stop.check)
    result.parity_seconds = time.perf_counter() - started
    log(f"[{variant}] exported in {result.export_seconds:.1f}s, parity checked in {result.parity_seconds:.1f}s")
    for check in result.parity:
        log(f"[{variant}] parity {describe(check)}")
    return result


def run(settings: Settings, device: torch.device, run_dir: Path, report: Report, stop: StopRequest) -> None:
    """Load MNIST onto the device, train/export/verify each variant, plot; fills `report` as it goes."""
    recipe = settings.resolved_recipe()
    log(f"run {report.run_id}: device {device} ({report.device.name}), {report.device.threads} threads, "
        f"recipe {recipe}")
    data = load_mnist(settings.data_dir, download=settings.download, normalize=recipe.normalize,
                      train_limit=settings.train_limit, test_limit=settings.test_limit)
    data = MnistData(data.train.to(device), data.test.to(device), data.source, data.raw_dir, data.files)
    report.data = DataInfo(source=data.source, raw_dir=str(data.raw_dir), train_images=len(data.train),
                           test_images=len(data.test), files=data.files)
    log(f"MNIST from {data.source}: {len(data.train)} training and {len(data.test)} test images, checksums ok")
    stop.check()

    plot_dir = run_dir / "plots"
    plot_dir.mkdir()
    first_batch = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(settings.seed))[:20]
    plots = [plot_samples(data.train.images.cpu()[first_batch].numpy(),
                          data.train.labels.cpu()[first_batch].numpy(), plot_dir / "samples.png")]
    if report.variants_in_parallel:
        report.variants = train_in_parallel(settings, stop, report.run_id, run_dir, report.device.threads)
    else:
        for variant in settings.variants:
            stop.check()
            report.variants.append(train_variant(variant, data, recipe, settings, stop, report.run_id, run_dir))
    stop.check()
    for result in report.variants:
        plots += [plot_curves(result, plot_dir / f"curves_{result.variant}.png"),
                  plot_confusion(result, plot_dir / f"confusion_{result.variant}.png")]
    plots.append(plot_comparison(report.variants, plot_dir / "comparison.png"))
    report.plots = {path.stem: Artifact.of(path, run_dir) for path in plots}
    report.accuracy_gate_passed = all(result.met_accuracy_gate for result in report.variants)
    failed = [r for r in report.variants if not all(check.passed for check in r.parity)]
    if failed:  # raised only now, so that the report keeps every variant's figures and plots for diagnosis
        from export.parity import describe_failures

        raise ParityError("; ".join(f"[{r.variant}] exported model differs from the trained one: "
                                    f"{describe_failures(r.parity)}" for r in failed))


def variants_share_the_cpu(settings: Settings, device: torch.device) -> bool:
    """Train the variants side by side, one process each? Measured on 2 cores (docs/performance.md): small
    convolutions use a second thread poorly, so two single-threaded trainings beat one two-threaded after the
    other, and one variant's export and parity check overlap the other's training."""
    if settings.parallel_variants is not None:
        return settings.parallel_variants and len(settings.variants) > 1
    return device.type == "cpu" and len(settings.variants) > 1 and torch.get_num_threads() >= len(settings.variants)


def variant_worker(variant: str, settings: Settings, stop: StopRequest, run_id: str, run_dir: Path, threads: int,
                   results: multiprocessing.Queue) -> None:
    """One variant in its own process: load MNIST, then train, export and verify it; send back the result."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)  # the parent handles signals and raises the shared stop flag
    torch.set_num_threads(threads)
    try:
        recipe = settings.resolved_recipe()
        data = load_mnist(settings.data_dir, download=False, normalize=recipe.normalize,
                          train_limit=settings.train_limit, test_limit=settings.test_limit)
        # No progress bar: two processes drawing on one terminal line would garble it.
        result = train_variant(variant, data, recipe, settings, stop, run_id, run_dir, progress_bar=False)
        results.put((variant, result, None))
    except Exception as error:
        try:
            pickle.dumps(error)
        except Exception:  # an error that cannot cross the process boundary still must say what it was
            error = RuntimeError(f"{type(error).__name__}: {error}")
        results.put((variant, None, error))


def train_in_parallel(settings: Settings, stop: StopRequest, run_id: str, run_dir: Path,
                      threads: int) -> list[VariantResult]:
    context = multiprocessing.get_context("spawn")  # not fork: forking a process with torch's threads can hang
    results = context.Queue()
    workers = {variant: context.Process(target=variant_worker, name=f"lenet-{variant}",
                                        args=(variant, settings, stop, run_id, run_dir, threads, results))
               for variant in settings.variants}
    log(f"training {', '.join(workers)} side by side: one process each, {threads} thread(s) each")
    for worker in workers.values():
        worker.start()
    received: dict[str, tuple[VariantResult | None, Exception | None]] = {}
    try:
        while len(received) < len(workers):
            try:
                variant, result, error = results.get(timeout=2)
                received[variant] = (result, error)
            except queue.Empty:
                dead = [v for v, w in workers.items() if v not in received and w.exitcode is not None]
                if dead:
                    raise RuntimeError(f"the {dead[0]} worker died with exit code {workers[dead[0]].exitcode}")
    finally:
        for worker in workers.values():
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
    errors = [error for _, error in received.values() if error is not None]
    if errors:
        raise next((e for e in errors if isinstance(e, Interrupted)), errors[0]) if stop() else errors[0]
    return [received[variant][0] for variant in settings.variants]


def create_run_dir(output_dir: Path, run_id: str) -> Path:
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError("it is a file, not a folder")
    run_dir = output_dir / RUNS / run_id
    run_dir.mkdir(parents=True)
    return run_dir


def outcome(error: BaseException, stop: StopRequest) -> tuple[str, int, str]:
    """(report status, exit status, one-line message) of a run that raised `error`."""
    if isinstance(error, Interrupted):
        code = EXIT_SIGINT if stop.signal == signal.SIGINT else EXIT_SIGTERM
        return "interrupted", code, f"interrupted by {signal.Signals(stop.signal).name}; nothing was published"
    if isinstance(error, DataError):
        return "failed", EXIT_DATA, f"data problem: {error}"
    if isinstance(error, ParityError):
        return "parity_failed", EXIT_PARITY, f"{error}; nothing was published"
    if isinstance(error, OSError):
        return "failed", EXIT_OUTPUT, f"could not write the outputs: {error}; nothing was published"
    return "failed", EXIT_UNEXPECTED, f"unexpected error: {type(error).__name__}: {error}"


def judge(report: Report, settings: Settings) -> None:
    """Set the status of a run that completed: the accuracy gate, then (if on) the champion check."""
    if not report.accuracy_gate_passed:
        missed = [f"{r.variant} {100 * r.final_test_accuracy:.2f}%" for r in report.variants
                  if not r.met_accuracy_gate]
        report.status, report.exit_code = "accuracy_gate_failed", EXIT_ACCURACY_GATE
        report.message = f"below LENET_MIN_TEST_ACCURACY={settings.min_test_accuracy}: {', '.join(missed)}"
        return
    if settings.champion_check:
        report.champion = check_champion(report, settings.output_dir, settings.champion_tolerance)
        if not report.champion.passed:
            report.status, report.exit_code = "champion_check_failed", EXIT_CHAMPION
            report.message = (f"worse than the published run {report.champion.compared_with_run} by more than "
                              f"LENET_CHAMPION_TOLERANCE={settings.champion_tolerance}: new "
                              f"{report.champion.new_accuracy}, published {report.champion.published_accuracy}")
            return
    report.status, report.exit_code, report.message = "succeeded", EXIT_OK, ""


def record(report: Report, run_dir: Path) -> None:
    """Write the report, then the manifest, which hashes every file of the run including the report."""
    write_report(report, run_dir)
    write_manifest(run_dir, report.run_id)


def finish(report: Report, settings: Settings, run_dir: Path, stop: StopRequest, error: Exception | None) -> None:
    """Judge the run, write its report and manifest, and publish it if it passed; all under the publish lock,
    so that concurrent runs publish one after the other."""
    with publish_lock(settings.output_dir):
        if error is None and stop():
            error = Interrupted()
        if error is None:
            judge(report, settings)
        else:
            report.status, report.exit_code, report.message = outcome(error, stop)
        report.published = report.status == "succeeded"
        finished = utc_now()
        report.finished_at, report.elapsed_seconds = finished, (finished - report.started_at).total_seconds()
        record(report, run_dir)
        if report.published and stop():  # the stop came while the report was written: honour it
            report.status, report.exit_code, report.message = outcome(Interrupted(), stop)
            report.published = False
            record(report, run_dir)
        if report.published:
            point_latest_at(settings.output_dir, run_dir, report)
            removed = prune_runs(settings.output_dir, settings.keep_runs, report.run_id)
            if removed:
                log(f"removed {len(removed)} old run folder(s), keeping the newest {settings.keep_runs}")


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
        return EXIT_BAD_SETTING
    started = utc_now()
    run_id = new_run_id(started)
    try:
        run_dir = create_run_dir(settings.output_dir, run_id)
    except OSError as error:
        print(f"lenet-mnist: LENET_OUTPUT_DIR={settings.output_dir} cannot hold a run folder: "
              f"{error.strerror or error} (allowed: a writable folder, created if missing)", file=sys.stderr)
        return EXIT_OUTPUT
    in_parallel = variants_share_the_cpu(settings, device)
    threads = max(1, torch.get_num_threads() // len(settings.variants)) if in_parallel else torch.get_num_threads()
    report = Report(status="failed", exit_code=EXIT_UNEXPECTED, run_id=run_id, started_at=started,
                    finished_at=started, elapsed_seconds=0.0, versions=library_versions(),
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
        report.status, report.exit_code, report.message = outcome(write_error, stop)
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
