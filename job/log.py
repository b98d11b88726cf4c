"""The job's log: one line per event on stdout, flushed at once so that a scheduler's log shows it live. On a
terminal, a status line (variants' progress side by side) may stand below the log; each log line replaces it."""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING, TextIO

from lenet_client.text import discard

if TYPE_CHECKING:  # not at run time: the log is imported before torch, which job.training.train needs
    from job.training.train import EpochMetrics


# A terminal's cursor back to the start of the line, and the line erased: where a status line stands (any process
# of the job may have drawn it), a log line then takes its place instead of being appended to it.
CLEAR_LINE = "\r\x1b[K"


def write_line(stream: TextIO, message: str, end: str = "\n") -> None:
    """A reader that went away takes nothing from the run's outcome: stdout closed early (`python -m job | head`,
    EPIPE) or the terminal hung up (an SSH session that dropped, EIO). The rest goes nowhere and the run goes on;
    its report still says how it ended."""
    try:
        print(f"{CLEAR_LINE}{message}" if stream.isatty() else message, file=stream, end=end, flush=True)
    except OSError:
        discard(stream)


def show_status(text: str) -> None:
    """On a terminal only, `text` as the status line below the log (cut to the terminal's width; "" erases it)."""
    if sys.stdout.isatty():
        write_line(sys.stdout, text[:shutil.get_terminal_size().columns - 1], end="")


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
