"""Picture files -> their MNIST-style 28x28 bytes (lenet_client.preprocess), one by one or, for a folder of many, on
every core this process may use. The preprocessing is numpy on pictures of a few hundred pixels a side, one core
each: a pool of worker processes (concurrent.futures) reads them in chunks and sends back 784 bytes per picture.

    mnist_pictures(paths, every_core=...) -> [uint8 [28, 28], or the PictureError / NoDigitError it gave], in order
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
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

from lenet_client.environment import usable_cpus
from lenet_client.pictures import PictureError, open_picture
from lenet_client.preprocess import NoDigitError, to_mnist

POOL_PAYS_FROM = 0.6  # seconds: the pictures left to read take longer than this here, a pool is started for them
ESTIMATE_AFTER = 0.1  # seconds of reading here before the time left is estimated (the first picture is slower)
CHUNK = 8  # pictures per task: few enough that a stop waits for little, enough that sending tasks costs little

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # lenet_client.__main__ turns each into its status
# The pool's processes start with these, whatever the user set: numpy's BLAS on one thread (they make no matrix
# products, and a thread per core in each counts against a container's limit on processes); glibc's malloc keeping
# 32 MB above its heap's top, instead of giving each picture's freed memory back and faulting it in again, a page at
# a time, for the next (any other value of it, even glibc's own default, turns off glibc's adaptive threshold and
# is slower than none: docs/performance.md, "Reading pictures on every core")
WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                      "MALLOC_TOP_PAD_": str(32 << 20)}

Reading = np.ndarray | PictureError | NoDigitError


def mnist_picture(path: Path) -> Reading:
    try:
        with open_picture(path) as image:
            return to_mnist(image)
    except (PictureError, NoDigitError) as error:
        return error


def mnist_pictures(paths: list[Path], *, every_core: bool) -> list[Reading]:
    """Read here, one by one; with `every_core`, once the pictures left would take longer than POOL_PAYS_FROM seconds
    here, those are read by a pool of processes, one per CPU. Starting the pool (fresh interpreters importing numpy
    and Pillow) costs more than a few pictures, or many small ones, take (docs/performance.md)."""
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
    """The pictures read by a pool of processes, in order; read here instead when no pool can start (a working
    folder that was deleted, no /dev/shm, a limit on processes or threads) or one of its processes is killed from
    outside (the OOM killer): then all of them are read again here. A stop kills the pool's processes rather than
    wait for the pictures they hold (a 12 MP picture, a file on a slow network share)."""
    pool = None
    try:
        # spawn: a fresh interpreter, the same on every system (a fork would copy onnxruntime's and BLAS's threads'
        # locks; macOS refuses to fork its frameworks)
        with stop_signals_held(), worker_environment():
            pool = ProcessPoolExecutor(min(usable_cpus(), -(-len(paths) // CHUNK)), initializer=worker_started,
                                       mp_context=multiprocessing.get_context("spawn"))
            readings = pool.map(mnist_picture, paths, chunksize=CHUNK)  # every chunk sent: the workers are started
        return list(readings)
    except (OSError, RuntimeError, BrokenProcessPool):  # RuntimeError: "can't start new thread"
        return [mnist_picture(path) for path in paths]
    except BaseException:  # a stop
        for process in multiprocessing.active_children():
            process.kill()
        raise
    finally:
        if pool is not None:
            with stop_signals_held():  # a second stop breaking the shutdown's join left it waiting forever
                pool.shutdown(cancel_futures=True)


@contextmanager
def worker_environment() -> Iterator[None]:
    """WORKER_ENVIRONMENT in this process's environment while the pool's processes start, then as it was: an app
    that calls classify(every_core=True) keeps its own."""
    before = {name: os.environ.get(name) for name in WORKER_ENVIRONMENT}
    os.environ.update(WORKER_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Stop signals held back (blocked: delivered when the block ends, not lost) while the pool's processes start.
    They start with them blocked too, so that a Ctrl-C, which reaches the whole process group, cannot break their
    interpreter's start ("Fatal Python error: init_import_site"); and this process cannot stop halfway through
    sending one its start-up data (an EOFError traceback from the worker). multiprocessing's resource tracker, which
    ignores SIGINT and SIGTERM but not SIGHUP, starts with SIGHUP held back for good; starting it unblocks SIGINT
    and SIGTERM, so they are held back again after it."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def worker_started() -> None:
    """Stop signals are the parent's to handle (the pool's processes share its process group, so a Ctrl-C reaches
    them too): a worker ignores them (one held back since its start is dropped), and ends the moment its parent
    does, however it ends (SIGKILL, an OOM kill), instead of waiting forever for work: a thread waits on the
    parent's sentinel, which multiprocessing gives every process it spawns."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=exit_with, args=(parent.sentinel,), name="parent watcher", daemon=True).start()


def exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)
