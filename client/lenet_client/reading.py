"""Picture files -> their MNIST-style 28x28 bytes (lenet_client.preprocess), one by one or, for a folder of many, on
every core this process may use. The preprocessing is numpy on pictures of a few hundred pixels a side, one core
each: a pool of worker processes (concurrent.futures) reads them in chunks and sends back 784 bytes per picture.

    mnist_pictures(paths, every_core) -> [uint8 [28, 28], or the PictureError / NoDigitError it gave], in order
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import resource_tracker
from pathlib import Path

import numpy as np

from lenet_client.pictures import PictureError, open_picture
from lenet_client.preprocess import NoDigitError, to_mnist

POOL_PAYS_FROM = 0.6  # seconds: the pictures left to read take longer than this here, a pool is started for them
ESTIMATE_AFTER = 0.1  # seconds of reading here before the time left is estimated (the first picture is slower)
CHUNK = 8  # pictures per task: few enough that a stop waits for little, enough that sending tasks costs little

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # lenet_client.__main__ turns each into its status

Reading = np.ndarray | PictureError | NoDigitError


def mnist_picture(path: Path) -> Reading:
    try:
        with open_picture(path) as image:
            return to_mnist(image)
    except (PictureError, NoDigitError) as error:
        return error


def usable_cpus() -> int:
    """The CPUs this process may use (its affinity, `taskset`), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def mnist_pictures(paths: list[Path], every_core: bool = True) -> list[Reading]:
    """Read here, one by one, until the pictures left would take longer than POOL_PAYS_FROM seconds: those are read
    by a pool of processes, one per CPU (unless not `every_core`). Starting the pool costs about 0.3 s (fresh
    interpreters, numpy and Pillow imported), which a few pictures, or many small ones, do not repay
    (docs/performance.md)."""
    readings: list[Reading] = []
    started = time.perf_counter()
    for index, path in enumerate(paths):
        if every_core and pool_pays(time.perf_counter() - started, index, len(paths) - index):
            return readings + in_a_pool(paths[index:])
        readings.append(mnist_picture(path))
    return readings


def pool_pays(spent: float, read: int, left: int) -> bool:
    """Whether the pictures left, at the pace of those read so far, would take longer than POOL_PAYS_FROM here."""
    return read > 0 and spent >= ESTIMATE_AFTER and spent / read * left > POOL_PAYS_FROM and usable_cpus() > 1


def in_a_pool(paths: list[Path]) -> list[Reading]:
    # spawn: a fresh interpreter, the same on every system (a fork would copy onnxruntime's and BLAS's threads'
    # locks; macOS refuses to fork its frameworks)
    with stop_signals_held():
        pool = ProcessPoolExecutor(min(usable_cpus(), -(-len(paths) // CHUNK)), initializer=worker_started,
                                   mp_context=multiprocessing.get_context("spawn"), initargs=(os.getpid(),))
        readings = pool.map(mnist_picture, paths, chunksize=CHUNK)  # every chunk sent: the workers are started
    try:
        return list(readings)
    except BrokenProcessPool:  # a worker killed from outside (the OOM killer): the rest is read here
        return [mnist_picture(path) for path in paths]
    finally:
        pool.shutdown(cancel_futures=True)  # after a Ctrl-C, only the chunks being read are waited for


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Stop signals held back (blocked: delivered when the block ends, not lost) while the pool's processes start.
    They start with them blocked too, so that a Ctrl-C, which reaches the whole process group, cannot break their
    interpreter's start ("Fatal Python error: init_import_site"); and this process cannot stop halfway through
    sending one its start-up data (an EOFError traceback from the worker). multiprocessing's resource tracker is
    started first: starting it unblocks SIGINT and SIGTERM."""
    resource_tracker.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def worker_started(parent: int) -> None:
    """Stop signals are the parent's to handle (the pool's processes share its process group, so a Ctrl-C reaches
    them too): a worker ignores them (one held back since its start is dropped), and ends the moment its parent
    does, however it ends (SIGKILL, an OOM kill), instead of waiting forever for work: a thread waits on the
    parent's pidfd (Linux; elsewhere nothing)."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        parent_ended = os.pidfd_open(parent)
    except ProcessLookupError:  # the parent died while this process was being started
        os._exit(1)
    except (AttributeError, OSError):  # not Linux 5.3 or later
        return
    threading.Thread(target=exit_when_readable, args=(parent_ended,), name="parent watcher", daemon=True).start()


def exit_when_readable(pidfd: int) -> None:
    select.select([pidfd], [], [])
    os._exit(1)
