"""Variants side by side: one process per variant, each training, exporting and verifying its own model.

Measured on 2 cores (docs/performance.md): small convolutions use a second thread poorly, so two
single-threaded trainings beat one two-threaded after the other, and one variant's export and parity check
overlap the other's training.

The workers are forked from a multiprocessing forkserver that imports what they need (torch, the exporters,
onnxruntime: ~2.5 s) once for both; `python -m job` starts it before its own imports, so that the two import side
by side. That server has run no torch operation, so forking it is safe where forking the job is not.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import pickle
import signal
from collections.abc import Callable
from pathlib import Path
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from job.log import log
from job.outcome.report import VariantResult
from job.settings import Settings
from job.running.stop import STOP_SIGNALS, Interrupted, StopRequest, helpers_ignore_stop_signals

if TYPE_CHECKING:  # not at run time: `python -m job` imports this module before torch, to start the server early
    import torch

# Everything a worker imports from the start of training to the end of its parity check.
WORKER_MODULES = ["job.running.forkserver_first", "job.training.variant", "export.formats", "export.parity", "torch._dynamo", "torch.onnx", "onnxscript",
                  "onnxruntime", "job.running.forkserver_ready"]


def might_share_the_cpu(settings: Settings) -> bool:
    """Before torch is imported: could variants_share_the_cpu say yes? (`auto` counts as the CPU: on a machine
    with an accelerator the early server then goes unused.)"""
    device_type = "cpu" if settings.device == "auto" else settings.device
    return variants_share_the_cpu(settings, device_type, settings.num_threads or os.cpu_count() or 1)


def start_worker_server() -> None:
    """Start the forkserver now, so that its imports overlap the job's own."""
    worker_context()


def worker_context() -> multiprocessing.context.BaseContext:
    """The forkserver, with WORKER_MODULES imported; a fresh interpreter per worker (spawn) where the server
    cannot run (its socket path must fit AF_UNIX's ~100 characters: a long TMPDIR does not)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_MODULES)
    try:
        with helpers_ignore_stop_signals():
            multiprocessing.forkserver.ensure_running()
        return context
    except OSError:
        return multiprocessing.get_context("spawn")


def variants_share_the_cpu(settings: Settings, device_type: str, threads: int) -> bool:
    """Train the variants side by side, one process each? Yes on a CPU with a thread per variant, unless
    LENET_PARALLEL_VARIANTS says otherwise."""
    if settings.parallel_variants is not None:
        return settings.parallel_variants and len(settings.variants) > 1
    return device_type == "cpu" and len(settings.variants) > 1 and threads >= len(settings.variants)


class WorkerDied(RuntimeError):
    """A variant's worker process ended without sending its result: killed (the OOM killer, a signal sent to it
    alone) or crashed in native code."""


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the process that started it exits, however it exits (SIGKILL, the
    OOM killer, a node drain): a worker must never go on training and writing into a run whose job is gone. Linux's
    parent-death signal; elsewhere nothing. If the parent died before the request took effect, exit now."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:
        os._exit(1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Finished:
    """Which variants' workers have finished their work, in shared memory (as StopRequest's flag): the last one at
    work may use the cores the others have left, for its parity check (export.parity)."""

    def __init__(self, variants: tuple[str, ...]) -> None:
        self.variants = list(variants)
        self._done = multiprocessing.get_context("spawn").RawArray("b", len(self.variants))

    def mark(self, variant: str) -> None:
        self._done[self.variants.index(variant)] = 1

    def all_but(self, variant: str) -> bool:
        return all(self._done[i] for i, other in enumerate(self.variants) if other != variant)


def parity_formats_at_once(variant: str, finished: Finished, threads: int) -> int:
    """Two formats at a time once every other variant is done and a core is free for the second; else one: checked
    two at a time beside another worker, they took its CPU (the fixed cost 1.05x, docs/performance.md)."""
    return 2 if finished.all_but(variant) and (os.cpu_count() or 1) >= 2 * threads else 1


def variant_worker(variant: str, settings: Settings, device: str, stop: StopRequest, run_id: str, run_dir: Path,
                   threads: int, results: Connection, job_pid: int, finished: Finished) -> None:
    """One variant in its own process: load MNIST onto `device`, then train, export and verify it there; send back
    the result."""
    die_with_parent()  # the forkserver, which dies with the job (job.running.forkserver_ready), or the job itself
    if not alive(job_pid):  # the job died while this process was being forked
        os._exit(1)
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)  # the parent handles signals and raises the shared stop flag
    train_one(variant, settings, device, stop, run_id, run_dir, threads, results, finished)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def train_one(variant: str, settings: Settings, device: str, stop: StopRequest, run_id: str, run_dir: Path,
              threads: int, results: Connection, finished: Finished) -> None:
    import torch

    from job.training.extra import load_run_data
    from job.training.variant import train_variant

    torch.set_num_threads(threads)
    try:
        recipe = settings.resolved_recipe()
        data, _, _ = load_run_data(settings, recipe.normalize)  # the parent has warned about the extra pictures
        # No progress bar: two processes drawing on one terminal line would garble it.
        result = train_variant(variant, data.to(torch.device(device)), recipe, settings, torch.device(device), stop,
                               run_id, run_dir, progress_bar=False,
                               parity_formats_at_once=lambda: parity_formats_at_once(variant, finished, threads))
        reply = (result, None)
    except Exception as error:
        try:
            pickle.dumps(error)
        except Exception:  # an error that cannot cross the process boundary still must say what it was
            error = RuntimeError(f"{type(error).__name__}: {error}")
        reply = (None, error)
    finished.mark(variant)  # before the reply crosses the pipe: the others may start their checks now
    results.send(reply)


def ended(exitcode: int) -> str:
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name} (the OOM killer sends SIGKILL)"
    return f"exited with status {exitcode} without a result"


def remove_partial_files(run_dir: Path) -> None:
    """A worker killed while it wrote leaves its temporary file (lenet_client.atomic): the run folder keeps only
    whole files."""
    for path in run_dir.rglob(".*.partial*"):
        path.unlink(missing_ok=True)


def train_in_parallel(settings: Settings, device: torch.device, stop: StopRequest, run_id: str, run_dir: Path,
                      threads: int, on_result: Callable[[VariantResult], None] = lambda result: None
                      ) -> list[VariantResult]:
    """Every variant in its own process, each on `device` (on a GPU, both share it). `on_result` is called with each
    variant's result as it arrives, while the others go on."""
    context = worker_context()  # not fork: forking a process that has run torch's threads can hang
    # A pipe per worker, not a Queue: waiting on the pipes and the processes' sentinels at once sees a worker's
    # death the moment it happens, and pipes hold no named semaphores that a killed worker would leak.
    pipes = {variant: context.Pipe(duplex=False) for variant in settings.variants}
    finished = Finished(settings.variants)
    workers = {variant: context.Process(target=variant_worker, name=f"lenet-{variant}",
                                        args=(variant, settings, str(device), stop, run_id, run_dir, threads,
                                              pipes[variant][1], os.getpid(), finished))
               for variant in settings.variants}
    start = ("forked from the preloaded worker server" if context.get_start_method() == "forkserver"
             else "each in a fresh interpreter")
    log(f"training {', '.join(workers)} side by side on {device}: one process each, {threads} thread(s) each, "
        f"{start}")
    # A spawned worker is a new interpreter that must start with the stop signals ignored; a forked one asks the
    # forkserver, which may still be importing (seconds), and the job must not ignore signals while it waits.
    spawned = context.get_start_method() == "spawn"
    for variant, worker in workers.items():
        with helpers_ignore_stop_signals() if spawned else contextlib.nullcontext():
            worker.start()
        pipes[variant][1].close()  # the worker holds the sending end now: its death closes the pipe
    received: dict[str, tuple[VariantResult | None, Exception | None]] = {}
    try:
        while len(received) < len(workers):
            waiting = {pipes[v][0]: v for v in workers if v not in received}
            multiprocessing.connection.wait(list(waiting) + [workers[v].sentinel for v in waiting.values()])
            for pipe, variant in waiting.items():
                if pipe.poll():
                    try:
                        received[variant] = pipe.recv()
                    except EOFError:  # it died without sending
                        pass
                    else:
                        if received[variant][0] is not None:
                            on_result(received[variant][0])
                        continue
                if pipe.closed or not workers[variant].is_alive():
                    workers[variant].join()
                    raise WorkerDied(f"the {variant} worker process {ended(workers[variant].exitcode)}; the "
                                     f"other variants were stopped")
    except BaseException:
        for worker in workers.values():  # nothing of this run is published: the survivors stop at once
            if worker.is_alive():
                worker.kill()
        raise
    finally:
        for variant, worker in workers.items():
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
            pipes[variant][0].close()
        remove_partial_files(run_dir)
    errors = [error for _, error in received.values() if error is not None]
    if errors:
        raise next((e for e in errors if isinstance(e, Interrupted)), errors[0]) if stop() else errors[0]
    return [received[variant][0] for variant in settings.variants]
