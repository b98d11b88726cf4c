"""Stopping a run on SIGTERM / SIGINT: a flag that training checks before every batch and the pipeline between
stages, so that a stop takes effect within one batch or one stage and the run still writes its report."""

from __future__ import annotations

import multiprocessing
import signal


class Interrupted(Exception):
    """The run stopped early because a stop was requested."""


class StopRequest:
    """Set by SIGTERM / SIGINT. The flag lives in shared memory, so variant worker processes see it too."""

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
