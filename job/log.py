"""The job's log: one line per event on stdout, flushed at once so that a scheduler's log shows it live."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: the log is imported before torch, which job.train needs
    from job.train import EpochMetrics


def log(message: str) -> None:
    """A reader that closed stdout early (`python -m job | head`) takes nothing from the run's outcome: the rest
    of the log goes nowhere and the run goes on."""
    try:
        print(message, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def warn(message: str) -> None:
    """Something the run went on despite: on stderr, where a scheduler keeps what needs a look."""
    print(f"lenet-mnist: warning: {message}", file=sys.stderr, flush=True)


def epoch_line(variant: str, m: EpochMetrics) -> str:
    """The tutorial's log line, with the variant and the epoch's seconds added."""
    return (f"[{variant}] Epoch:{m.epoch:2d}, Train_acc:{100 * m.train_accuracy:.1f}%, "
            f"Train_loss:{m.train_loss:.3f}, Test_acc:{100 * m.test_accuracy:.1f}%, "
            f"Test_loss:{m.test_loss:.3f}, {m.seconds:.1f}s")
