"""Variants side by side: one process per variant, each training, exporting and verifying its own model.

Measured on 2 cores (docs/performance.md): small convolutions use a second thread poorly, so two single-threaded
trainings beat one two-threaded after the other, and one variant's export and parity check overlap the other's
training.

The processes are the standard library's ProcessPoolExecutor, forked from a multiprocessing forkserver that imports
what the workers need (torch, the exporters, onnxruntime: seconds) once for all of them. job.preflight starts that
server before the job imports torch (`start_worker_server`), so that the two import side by side. The server has run no
torch operation, so forking it is safe where forking the job is not.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from job.log import log, show_status
from job.outcome.report import VariantResult
from job.outcome.status import WORKER_KILLED, RunFailure
from job.running.stop import STOP_SIGNALS, Interrupted, StopRequest, helpers_ignore_stop_signals
from job.settings import Settings
from lenet_client.environment import usable_cpus

if TYPE_CHECKING:  # not at run time: `python -m job` imports this module before torch, to start the server early
    import torch

# What a worker imports from the start of training to the end of its parity check: the forkserver imports them
# once, and every worker forked from it has them.
WORKER_MODULES = ["job.training.variant", "export.formats", "export.parity", "torch._dynamo", "torch.onnx",
                  "onnxscript", "onnxruntime"]


class WorkerDied(RunFailure):
    """A variant's worker process ended without sending its result: killed (the OOM killer, a signal sent to it
    alone) or crashed in native code."""

    status = WORKER_KILLED


def variants_share_the_cpu(settings: Settings, device_type: str, threads: int) -> bool:
    """Train the variants side by side, one process each? Yes on a CPU with a thread per variant, unless
    LENET_PARALLEL_VARIANTS says otherwise."""
    if settings.parallel_variants is not None:
        return settings.parallel_variants and len(settings.variants) > 1
    return device_type == "cpu" and len(settings.variants) > 1 and threads >= len(settings.variants)


def can_start_workers() -> bool:
    """Worker processes run this interpreter again, and a user may be able to run it only as a command already
    started: a venv's python that links into a home only its owner may enter, run as `nobody`. Then every worker
    (and multiprocessing's own helpers) fails to start."""
    return os.access(sys.executable, os.X_OK)


def might_share_the_cpu(settings: Settings) -> bool:
    """Before torch is imported: could variants_share_the_cpu say yes? (`auto` counts as the CPU: on a machine
    with an accelerator the early server then goes unused.)"""
    device_type = "cpu" if settings.device == "auto" else settings.device
    return variants_share_the_cpu(settings, device_type, settings.num_threads or usable_cpus())


def worker_context() -> BaseContext:
    """The forkserver, started now if it is not running, with WORKER_MODULES imported; a fresh interpreter per
    worker (spawn) where the server cannot run (its socket path must fit AF_UNIX's ~100 characters: a long TMPDIR
    does not). Started with the stop signals ignored, as its workers then are from their first instruction: they
    share the job's process group, and a Ctrl-C there is the job's to handle (through the shared stop flag)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_MODULES)
    try:
        with helpers_ignore_stop_signals():
            multiprocessing.forkserver.ensure_running()
        return context
    except OSError:
        return multiprocessing.get_context("spawn")


def start_worker_server() -> None:
    """Start the forkserver now, so that its imports overlap the job's own (job.preflight)."""
    worker_context()

# Set in each worker process by `worker_started`: the job's stop flag, the table where each worker writes its pid by
# its variant's place, and the one where it writes its progress (PROGRESS_FIELDS per variant), which only
# inheritance can pass.
_stop: StopRequest | None = None
_pids: ctypes.Array[ctypes.c_int] | None = None
_progress: ctypes.Array[ctypes.c_int] | None = None
PROGRESS_FIELDS = 3  # epoch, step, steps per epoch


def worker_started(stop: StopRequest, pids: ctypes.Array[ctypes.c_int], progress: ctypes.Array[ctypes.c_int],
                   job: int) -> None:
    """Each worker's first step. The stop signals are ignored: the job handles them and stops its workers through
    the shared stop flag (job.running.stop). And the worker ends the moment the job does, however
    the job ends (SIGKILL, the OOM killer, a node drain): it must never go on training and writing into a run whose
    job is gone. Its parent is the forkserver, which waits for its workers before it exits, so the kernel's
    parent-death signal would not do: a thread waits on the job's pidfd instead (Linux; elsewhere nothing)."""
    global _stop, _pids, _progress
    _stop, _pids, _progress = stop, pids, progress
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    try:
        job_ended = os.pidfd_open(job)
    except ProcessLookupError:  # the job died while this process was being started
        os._exit(1)
    except (AttributeError, OSError):  # not Linux 5.3 or later
        return
    threading.Thread(target=exit_when_readable, args=(job_ended,), name="job watcher", daemon=True).start()


def exit_when_readable(pidfd: int) -> None:
    select.select([pidfd], [], [])
    os._exit(1)


def train_one(variant: str, settings: Settings, device: str, run_id: str, run_dir: Path, threads: int,
              warm_start: str | None) -> VariantResult:
    """One variant in a worker process: load MNIST onto `device`, train, export and verify it there."""
    import torch

    from job.training.extra import load_run_data
    from job.training.variant import train_variant

    assert _stop is not None and _pids is not None and _progress is not None, "worker_started ran first"
    place = settings.variants.index(variant)
    _pids[place] = os.getpid()
    torch.set_num_threads(threads)
    progress = _progress

    def on_step(epoch: int, step: int, steps: int) -> None:
        progress[PROGRESS_FIELDS * place:PROGRESS_FIELDS * (place + 1)] = [epoch, step, steps]

    try:
        recipe = settings.resolved_recipe()
        data, _, _ = load_run_data(settings, recipe.normalize, _stop.check)  # the job warned of the extra pictures
        # No bar of its own (two processes drawing on one terminal line would garble it): the job draws the status.
        return train_variant(variant, data.to(torch.device(device)), recipe, settings, torch.device(device), _stop,
                             run_id, run_dir, warm_start, on_step=on_step)
    except BaseException as error:  # SystemExit too: the job must hear of it as an error, not a dead worker
        try:
            pickle.loads(pickle.dumps(error))
            crosses = isinstance(error, Exception)
        except Exception:  # e.g. an exception whose __init__ takes other arguments than its args (some of torch's)
            crosses = False
        if not crosses:  # an error that cannot cross the process boundary still must say what it was
            raise RuntimeError(f"{type(error).__name__}: {error}") from None
        raise


def train_in_parallel(settings: Settings, device: torch.device, stop: StopRequest, run_id: str, run_dir: Path,
                      threads: int, warm_starts: dict[str, str | None],
                      on_result: Callable[[VariantResult], None] = lambda result: None) -> list[VariantResult]:
    """Every variant in its own process, each on `device` (on a GPU, both share it). `on_result` is called with each
    variant's result as it arrives, while the others go on. A variant's error is raised once every variant ended
    (a stop signal's Interrupted first); a worker that dies stops the others at once."""
    context = worker_context()  # not fork: forking a process that has run torch's threads can hang
    start = ("forked from the preloaded worker server" if context.get_start_method() == "forkserver"
             else "each in a fresh interpreter")
    log(f"training {', '.join(settings.variants)} side by side on {device}: one process each, {threads} "
        f"thread{'s' if threads > 1 else ''} each, {start}")
    pids = context.RawArray("i", len(settings.variants))
    progress = context.RawArray("i", PROGRESS_FIELDS * len(settings.variants))
    pool = ProcessPoolExecutor(len(settings.variants), mp_context=context, initializer=worker_started,
                               initargs=(stop, pids, progress, os.getpid()))
    epochs = settings.resolved_recipe().epochs
    on_a_terminal = sys.stdout.isatty()
    results: dict[str, VariantResult] = {}
    errors: list[Exception] = []
    workers: list[BaseProcess] = []
    try:
        # The executor starts its processes at submit. A spawned one is a new interpreter that must start with the
        # stop signals ignored; a forked one inherits the forkserver's, and the job must not ignore signals while it
        # waits for the forkserver's imports (seconds).
        with helpers_ignore_stop_signals() if context.get_start_method() == "spawn" else contextlib.nullcontext():
            pending = {pool.submit(train_one, variant, settings, str(device), run_id, run_dir, threads,
                                   warm_starts[variant]) for variant in settings.variants}
        workers = list(pool._processes.values())  # private: to tell how a dead one ended
        stopped_at = None
        while pending:
            done, pending = wait(pending, timeout=0.2 if on_a_terminal else 0.5, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise WorkerDied(stop_after_a_worker_died(pool, workers, pids, settings.variants)) from None
                except Exception as error:
                    errors.append(error)
                    continue
                results[result.variant] = result
                on_result(result)
            if stop():  # each worker ends at its next batch; one that does not (stopped, stuck) is killed
                stopped_at = stopped_at or time.monotonic()
                if time.monotonic() - stopped_at > STOP_GRACE_SECONDS:
                    stop.check()
            if on_a_terminal:  # every tick: a worker's log line erases it, and nothing else says so
                show_status(status_line(settings.variants, progress, epochs, results,
                                        shutil.get_terminal_size().columns))
    except BrokenProcessPool:  # at submit: a worker died as it started
        workers = list(pool._processes.values())  # private, as above
        raise WorkerDied(stop_after_a_worker_died(pool, workers, pids, settings.variants)) from None
    except BaseException:
        kill(workers, pids)  # nothing of this run is published: the survivors stop at once
        raise
    finally:
        if on_a_terminal:
            show_status("")
        pool.shutdown(wait=True, cancel_futures=True)
        remove_partial_files(run_dir)
    if errors:
        raise next((e for e in errors if isinstance(e, Interrupted)), errors[0]) if stop() else errors[0]
    return [results[variant] for variant in settings.variants]


def status_line(variants: tuple[str, ...], progress: ctypes.Array[ctypes.c_int], epochs: int,
                finished: dict[str, VariantResult], width: int = 80) -> str:
    """Where each variant still at work stands: its epoch and step, as the one-variant bar (job.training.train)
    shows them with a shorter bar, so that two fit on 80 columns (on a narrower terminal, epoch and percent only);
    after its last step, the stages that follow."""
    full, short = [], []
    for place, variant in enumerate(variants):
        epoch, step, steps = progress[PROGRESS_FIELDS * place:PROGRESS_FIELDS * (place + 1)]
        if variant in finished:
            continue
        if not steps:
            full.append(f"[{variant}] starting")
            short.append(f"[{variant}] starting")
        elif epoch == epochs and step == steps:
            full.append(f"[{variant}] evaluating, exporting, checking parity")
            short.append(f"[{variant}] exporting")
        else:
            done = step * 8 // steps
            full.append(f"[{variant}] Epoch:{epoch:2d} [{'#' * done}{'.' * (8 - done)}] {step}/{steps}")
            short.append(f"[{variant}] {epoch}/{epochs} {100 * step // steps}%")
    line = "  ".join(full)
    return line if len(line) < width else "  ".join(short)


# A stopped worker ends at its next batch, within a second; one that does not within this (stopped with SIGSTOP,
# stuck in native code) is killed, so that a stop ends the job before a scheduler's SIGKILL.
STOP_GRACE_SECONDS = 5


def kill(workers: list[BaseProcess], pids: ctypes.Array[ctypes.c_int]) -> None:
    """SIGKILL every worker (they ignore SIGTERM), by pid: Process.kill does nothing once the forkserver that
    reports on them is gone."""
    for pid in {worker.pid for worker in workers} | {pid for pid in pids if pid}:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_worker_server() -> None:
    """The forkserver exits with the job, but its exit (torch's teardown, about a second) holds the job's stdout
    open for whoever reads it, after the job's last line. job.cli kills it once the run is over, whatever its path
    (it holds nothing but imported modules); it is started anew if needed. multiprocessing has no public call for
    this."""
    pid = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_after_a_worker_died(pool: ProcessPoolExecutor, workers: list[BaseProcess], pids: ctypes.Array[ctypes.c_int],
                             variants: tuple[str, ...]) -> str:
    """Kill the other workers and shut the pool down; which variant's worker had ended, and how. The dead one is the
    one whose process is gone (its parent, the forkserver, reaped it before the pool heard of it). Its exit status
    is read only once the pool has shut down: the pool's own thread reads it too, from the same pipe (a forked
    worker's status comes from the forkserver), and a second reader at once gets nothing, which multiprocessing
    reports as 255 (a SIGKILL said "exited with status 255")."""
    dead = [worker for worker in workers if worker.pid is not None and not running(worker.pid)]
    kill(workers, pids)
    pool.shutdown(wait=True, cancel_futures=True)
    if not dead:
        return "a variant's worker process ended without a result; the other variants were stopped"
    worker = dead[0]
    variant = next((v for v, pid in zip(variants, pids, strict=True) if pid == worker.pid), "a variant's")
    code = worker.exitcode
    how = (f"was killed by {signal.Signals(-code).name} (the OOM killer sends SIGKILL)" if code is not None
           and code < 0 else f"exited with status {code} without a result")
    return f"the {variant} worker process {how}; the other variants were stopped"


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def remove_partial_files(run_dir: Path) -> None:
    """A worker killed while it wrote leaves its temporary file (lenet_client.atomic): the run folder keeps only
    whole files."""
    for path in run_dir.rglob(".*.partial*"):
        path.unlink(missing_ok=True)
