"""Run tracking and model registry on an MLflow server, opt-in with MLFLOW_TRACKING_URI.

When a run has been judged and its report written, `track` logs it as one MLflow run: the settings and recipe as
params, every epoch's figures as metrics (step = epoch), the report, manifest and plots as artifacts, tags for the
job's run id, data version, source commit, device and status, and the MLflow status (FINISHED, FAILED or KILLED).
A run about to be published also registers each variant's ONNX model (signature and input example included) as a
new version of `lenet-mnist-<variant>` and moves the alias `champion` to it, last, just before latest.json
moves. A run that is not published registers nothing: the registry holds only models that passed every gate.

Every request is bounded (LENET_TRACKING_TIMEOUT_SECONDS, LENET_TRACKING_RETRIES) and the first one that still
fails ends the tracking with `TrackingFailed`; the caller decides what that means for the run. mlflow is imported
here only, and only when tracking is on: the default install does not have it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import tempfile
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from job.outcome.report import Report, Tracking
from job.running.stop import Interrupted
from job.settings import Settings

CHAMPION = "champion"
RESTORE_BUDGET_SECONDS = 15  # putting the aliases back after a failure: a few requests of at most 5 s each...
RESTORE_AFTER_A_STOP_SECONDS = 3  # ...and after a stop signal, within the 5 s a stop may take (docker stop: 10 s)


class BudgetSpent(Exception):
    """LENET_TRACKING_BUDGET_SECONDS have passed within `track`."""


class Budget:
    """What within_budget yields: `spent` once its time ran out, `done` once the block's work returned (an alarm
    after that changes nothing)."""

    def __init__(self) -> None:
        self.spent = False
        self.done = False


@contextlib.contextmanager
def within_budget(seconds: float) -> Iterator[Budget]:
    """Raise BudgetSpent in this (the main) thread once `seconds` have passed, unless the work is done: the same
    way a stop signal cuts a request short (job.running.stop.raising_on_stop). A library may wrap BudgetSpent in its
    own exception: `spent` tells."""
    budget = Budget()

    def alarm(number: int, frame: object) -> None:
        if not budget.done:
            budget.spent = True
            raise BudgetSpent()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield budget
    finally:
        budget.done = True  # first: an alarm from here on is ignored
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class TrackingFailed(Exception):
    """Tracking stopped; `tracking` says how far it got."""

    def __init__(self, message: str, tracking: Tracking):
        super().__init__(message)
        self.tracking = tracking


def registered_name(variant: str) -> str:
    return f"lenet-mnist-{variant}"


def without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))  # host and port as given: [::1] too


def mlflow_status(report: Report) -> str:
    """From the report's status: a run that is about to be published is still `succeeded`."""
    return {"succeeded": "FINISHED", "interrupted": "KILLED"}.get(report.status, "FAILED")


def client_for(settings: Settings, cleanup: bool = False):
    """An MlflowClient whose every request gives up after the configured timeout and retries; for `cleanup` after a
    failure or a stop, one try of at most 5 s per request, so that a scheduler's grace period is not spent here."""
    timeout = min(5, settings.tracking_timeout_seconds) if cleanup else settings.tracking_timeout_seconds
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0" if cleanup else str(settings.tracking_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # its "View run" lines; the job logs its own
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its progress lines and hints are not the job's log

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def untracked(settings: Settings) -> Tracking:
    """The Tracking of a run before anything was logged."""
    assert settings.mlflow_tracking_uri is not None  # called only when MLflow is configured
    return Tracking(uri=without_credentials(settings.mlflow_tracking_uri), experiment=settings.mlflow_experiment,
                    logged=False)


def track(report: Report, run_dir: Path, settings: Settings, publishing: bool, budget: Budget | None = None
          ) -> Tracking:
    """Log the judged run; for a run about to be published (`publishing`), register its models and move `champion`
    to them. Raises TrackingFailed with the Tracking so far."""
    tracking = untracked(settings)
    step = "connecting"
    try:
        client = client_for(settings)
        step = f"finding experiment {settings.mlflow_experiment!r}"
        experiment = client.get_experiment_by_name(settings.mlflow_experiment)
        experiment_id = (experiment.experiment_id if experiment
                         else client.create_experiment(settings.mlflow_experiment))
        step = "creating the run"
        run = client.create_run(experiment_id, start_time=millis(report.started_at), tags=tags_of(report, publishing),
                                run_name=report.run_id)
        tracking = tracking.model_copy(update={"mlflow_run_id": run.info.run_id})
        step = "logging params and metrics"
        log_figures(client, run.info.run_id, report)
        step = "logging artifacts"
        for name in ("report.json", "manifest.json"):  # absent when the disk was full: the run's tags still say
            if (run_dir / name).is_file():
                client.log_artifact(run.info.run_id, str(run_dir / name))
        for plot in report.plots.values():
            client.log_artifact(run.info.run_id, str(run_dir / plot.path), "plots")
        versions = {}
        if publishing:
            example = first_test_image(settings)
            for variant in report.variants:
                step = f"registering {registered_name(variant.variant)}"
                versions[variant.variant] = register(client, run.info.run_id, variant, run_dir, report, settings,
                                                     example)
            tracking = tracking.model_copy(update={"model_versions": versions})
        step = "ending the run"
        client.set_terminated(run.info.run_id, mlflow_status(report), end_time=millis(report.finished_at))
        step = f"reading {CHAMPION}"
        replaced = {variant: champion_version(client, variant) for variant in versions}
        # From here `champion` may have moved: a failure on the way moves back what did.
        tracking = tracking.model_copy(update={"replaced_versions": replaced, "champion_moved": bool(versions)})
        for name, version in versions.items():
            step = f"moving {registered_name(name)}@{CHAMPION}"
            client.set_registered_model_alias(registered_name(name), CHAMPION, version)
        return tracking.model_copy(update={"logged": True})
    except Interrupted:
        raise TrackingFailed(f"MLflow at {tracking.uri}: {step} was cut short by a stop signal", tracking) from None
    except Exception as error:  # noqa: BLE001 - any failure of the server, the network or the client library
        if budget is not None and budget.spent:  # BudgetSpent, or whatever a library made of it
            raise TrackingFailed(f"MLflow at {tracking.uri}: {step} was cut short: all of the tracking may take "
                                 f"LENET_TRACKING_BUDGET_SECONDS={settings.tracking_budget_seconds}", tracking) \
                from None
        raise TrackingFailed(f"MLflow at {tracking.uri}: {step} failed: {reason(error, settings)}", tracking) \
            from None


def reason(error: Exception, settings: Settings) -> str:
    """The cause in a few words: the client library wraps a refused connection or a timeout in a long message."""
    text = " ".join(str(error).split())
    tries = f"{settings.tracking_retries + 1} tries"
    if errno := re.search(r"\[Errno -?\d+\] [^'\")]+", text):
        return f"{errno.group(0)} ({tries})"
    if "timed out" in text.lower():
        return f"no answer within {settings.tracking_timeout_seconds} s ({tries})"
    return (text[:200] + ("..." if len(text) > 200 else "")) or type(error).__name__


def millis(moment) -> int:
    return int(moment.timestamp() * 1000)


def tags_of(report: Report, publishing: bool) -> dict[str, str]:
    versions = report.versions
    return {"lenet.run_id": report.run_id, "lenet.status": report.status, "lenet.exit_code": str(report.exit_code),
            "lenet.published": str(publishing).lower(),
            "lenet.data_version": report.extra_data.version if report.extra_data else "mnist",
            "lenet.source_commit": versions.get("source_commit", "unknown"),
            "lenet.device": report.device.spec if report.device else "unknown",
            "mlflow.source.git.commit": versions.get("source_commit", "unknown")}


def log_figures(client, run_id: str, report: Report) -> None:
    from mlflow.entities import Metric, Param

    flat = {f"settings.{k}": v for k, v in report.settings.items() if k != "mlflow_tracking_uri"}
    flat |= {f"recipe.{k}": v for k, v in report.recipe.items()}
    params = [Param(key, "" if value is None else str(value)[:6000]) for key, value in sorted(flat.items())]
    metrics = []
    for variant in report.variants:
        moment = report.started_at
        for epoch in variant.epochs:
            moment += timedelta(seconds=epoch.seconds)
            for name in ("train_accuracy", "train_loss", "test_accuracy", "test_loss", "learning_rate", "seconds"):
                metrics.append(Metric(f"{variant.variant}/{name}", getattr(epoch, name), millis(moment), epoch.epoch))
        for name in ("final_test_accuracy", "final_test_loss", "training_seconds", "export_seconds", "parity_seconds"):
            metrics.append(Metric(f"{variant.variant}/{name}", getattr(variant, name), millis(report.finished_at), 0))
    metrics.append(Metric("elapsed_seconds", report.elapsed_seconds, millis(report.finished_at), 0))
    for start in range(0, max(len(params), len(metrics)), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100])


def register(client, run_id: str, variant, run_dir: Path, report: Report, settings: Settings, pixels) -> str:
    """The variant's ONNX file as an MLflow model (signature, input example: `pixels` scaled as the model's metadata
    says) in the run, registered as a new version tagged with the job's run id and parity figures; returns the
    version."""
    import mlflow.onnx
    import numpy as np
    import onnx
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from lenet_client.contract import preprocessing

    name = registered_name(variant.variant)
    model = onnx.load(run_dir / variant.artifacts["onnx"].path)
    scale, mean, std = preprocessing({p.key: p.value for p in model.metadata_props})
    example = (pixels * scale - mean) / std
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.onnx.save_model(model, Path(folder) / "model", onnx_execution_providers=["CPUExecutionProvider"],
                               signature=infer_signature(example, np.zeros((1, 10), dtype=np.float32)),
                               input_example=example)
        client.log_artifacts(run_id, str(Path(folder) / "model"), f"models/{variant.variant}")
    try:
        client.create_registered_model(name, description="LeNet-5 trained on MNIST by lenet-mnist; input "
                                                         "[N,1,28,28] float32, output logits [N,10]")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, f"runs:/{run_id}/models/{variant.variant}", run_id=run_id,
                                          tags={"lenet.run_id": report.run_id},
                                          await_creation_for=settings.tracking_timeout_seconds)
    if variant.parity:
        client.set_model_version_tag(name, version.version, "lenet.parity_all_passed",
                                     str(all(row.passed for row in variant.parity)).lower())
        client.set_model_version_tag(name, version.version, "lenet.parity_max_abs_logit_diff",
                                     f"{max(row.max_abs_logit_diff for row in variant.parity):.3g}")
    client.set_model_version_tag(name, version.version, "lenet.test_accuracy", f"{variant.final_test_accuracy:.4f}")
    return str(version.version)


def first_test_image(settings: Settings):
    """float32 [1, 1, 28, 28]: MNIST's first test image, 0-255, the input example before each model's scaling."""
    import numpy as np

    from job.training.data import read_split

    images, _ = read_split(settings.data_dir, train=False, limit=1)
    return images.numpy().astype(np.float32)[:1, None]


def champion_version(client, variant: str) -> str | None:
    """The version `champion` names now; None when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(registered_name(variant), CHAMPION).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def restore_champion(tracking: Tracking, settings: Settings, stopped: bool) -> Tracking:
    """Best effort, when the run was not published after all (latest.json could not move, a stop arrived) or
    tracking failed while moving the alias: the alias back where it was, and the MLflow run marked KILLED (`stopped`)
    or FAILED. A server that trickles its answers must not hold the job here, least of all after a stop."""
    try:
        with within_budget(RESTORE_AFTER_A_STOP_SECONDS if stopped else RESTORE_BUDGET_SECONDS):
            restored = restore_aliases(tracking, settings, "KILLED" if stopped else "FAILED")
        return restored
    except Exception:  # noqa: BLE001 - the run's outcome is already decided; the warning says what to check
        from job.log import warn

        warn(f"could not move {CHAMPION} back in MLflow at {tracking.uri}: check the registry's aliases")
        return tracking


def restore_aliases(tracking: Tracking, settings: Settings, run_status: str) -> Tracking:
    client = client_for(settings, cleanup=True)
    for variant, version in tracking.replaced_versions.items():
        if version is None:
            client.delete_registered_model_alias(registered_name(variant), CHAMPION)
        else:
            client.set_registered_model_alias(registered_name(variant), CHAMPION, version)
    if tracking.mlflow_run_id:
        client.set_terminated(tracking.mlflow_run_id, run_status)
    return tracking.model_copy(update={"champion_moved": False})
