"""The job's log: one line per event on stdout, flushed at once so that a scheduler's log shows it live."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from lenet_client.text import discard

if TYPE_CHECKING:  # not at run time: the log is imported before torch, which job.training.train needs
    from job.training.train import EpochMetrics


def write_line(stream: TextIO, message: str) -> None:
    """A reader that went away takes nothing from the run's outcome: stdout closed early (`python -m job | head`,
    EPIPE) or the terminal hung up (an SSH session that dropped, EIO). The rest goes nowhere and the run goes on;
    its report still says how it ended."""
    try:
        print(message, file=stream, flush=True)
    except OSError:
        discard(stream)


def log(message: str) -> None:
    write_line(sys.stdout, message)


def warn(message: str) -> None:
    """Something the run went on despite: on stderr, where a scheduler keeps what needs a look."""
    write_line(sys.stderr, f"lenet-mnist: warning: {message}")


def complain(message: str) -> None:
    """Why the run ended as it did, on stderr: the one line a failed run prints."""
    write_line(sys.stderr, f"lenet-mnist: {message}")


def epoch_line(variant: str, m: EpochMetrics) -> str:
    """The tutorial's log line, with the variant and the epoch's seconds added."""
    return (f"[{variant}] Epoch:{m.epoch:2d}, Train_acc:{100 * m.train_accuracy:.1f}%, "
            f"Train_loss:{m.train_loss:.3f}, Test_acc:{100 * m.test_accuracy:.1f}%, "
            f"Test_loss:{m.test_loss:.3f}, {m.seconds:.1f}s")
