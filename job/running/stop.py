"""Stopping a run on SIGTERM / SIGINT / SIGHUP: a flag that training checks before every batch and the pipeline between
stages, so that a stop takes effect within one batch or one stage and the run still writes its report.

`python -m job` installs the handlers first thing, before its heavy imports: a stop that arrives while torch loads
is kept, and the run ends at its first check."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from job.outcome.status import BY_SIGNAL, SIGTERM, RunFailure

# SIGHUP: the terminal or the SSH session that started the run closed; its default killed the job without a report.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(RunFailure):
    """The run stopped early because a stop signal came: 128 + its number, as a shell reports a signal."""

    def __init__(self, number: int = signal.SIGTERM) -> None:
        super().__init__(f"interrupted by {signal.Signals(number).name}", BY_SIGNAL.get(number, SIGTERM))
        self.number = number

    def __reduce__(self):
        return (Interrupted, (self.number,))


class StopRequest:
    """Set by SIGTERM / SIGINT / SIGHUP. The flag lives in shared memory, so variant worker processes see it too."""

    def __init__(self) -> None:
        self._signal = multiprocessing.get_context("spawn").RawValue("i", 0)

    def __call__(self) -> bool:
        return self._signal.value != 0

    def check(self) -> None:
        """Stop between stages: raise Interrupted if a stop was requested."""
        if self._signal.value:
            raise Interrupted(self._signal.value)

    def install(self) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, self._request)

    def _request(self, number: int, frame: object) -> None:
        self._signal.value = number


@contextmanager
def helpers_ignore_stop_signals() -> Iterator[None]:
    """Start helper processes (the forkserver, a spawned worker) with the stop signals ignored from their first
    instruction: an ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt handler.
    They share the job's process group, so the terminal's Ctrl-C reaches them too, and one arriving while they
    import torch printed a traceback and killed them. The job alone handles both, and tells its workers through the
    shared stop flag. The cost: a signal that reaches the job during the few milliseconds of the fork is lost."""
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def raising_on_stop(stop: StopRequest) -> Iterator[None]:
    """For a blocking call that a stop must cut short (a request to a tracking server that does not answer): within
    the block a stop signal sets the flag and raises Interrupted at once, instead of waiting for the call's timeout
    (a scheduler's grace period before SIGKILL is often 30 s)."""
    def request(number: int, frame: object) -> None:
        stop._request(number, frame)
        raise Interrupted(number)

    previous = {number: signal.signal(number, request) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
