"""The job's exit statuses, and the one kind of error that ends a run with one of them.

Every way a run can fail is a `RunFailure` (or a subclass) that carries its `ExitStatus`; `failure_of` turns any
other exception into one (an OSError is the outputs' problem, anything else a bug; a read that fails is wrapped in
its own failure where it happens, as a DataError). A kind of failure that always means one status sets it as a class
attribute (DataError, Diverged); a judged outcome gives it when made (the gate, the champion check). The status
becomes the report's `exit_code` (job.outcome.finish) and job.cli.main returns it: the only place an exit status
is returned.

`python -m job.outcome.status` prints the table as Markdown; tests/test_docs.py checks that the README and
docs/failure-modes.md hold it, so they cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The report's `status`, one per outcome (several exit statuses share `failed` and `interrupted`).
ReportStatus = Literal["succeeded", "accuracy_gate_failed", "parity_failed", "champion_check_failed", "interrupted",
                       "failed", "diverged", "tracking_failed", "holdout_too_small"]


@dataclass(frozen=True)
class ExitStatus:
    code: int
    report_status: ReportStatus | None  # None where no report is written
    meaning: str
    report_written: str
    published: str


OK = ExitStatus(0, "succeeded", "every variant met the gate and every export passed parity", "yes", "yes")
UNEXPECTED = ExitStatus(1, "failed", "unexpected error (a bug): the message names it", "yes", "no")
BAD_SETTING = ExitStatus(2, None, "bad setting, unknown variant or device, device not present", "no (nothing started)",
                         "no")
DATA = ExitStatus(3, "failed", "data problem: MNIST missing, truncated, corrupted, wrong shape (checksums), download "
                               "failed; `LENET_EXTRA_DATA` unusable (a class folder that cannot be read, a digit gone "
                               "since the published run, too many bad files)", "yes", "no")
ACCURACY_GATE = ExitStatus(4, "accuracy_gate_failed", "accuracy gate missed (`LENET_MIN_TEST_ACCURACY`)", "yes", "no")
PARITY = ExitStatus(5, "parity_failed", "an exported file does not predict what the trained model predicts", "yes",
                    "no")
OUTPUT = ExitStatus(6, "failed", "output dir is a file or not writable, disk full while writing, no writable "
                               "temporary folder", "when possible", "no")
CHAMPION = ExitStatus(7, "champion_check_failed", "champion check failed (`LENET_CHAMPION_CHECK`)", "yes", "no")
DAMAGED = ExitStatus(8, "failed", "latest.json, the report or the model it names is damaged (the champion check or "
                               "`LENET_WARM_START` cannot read it): the message names the file", "yes", "no")
DIVERGED = ExitStatus(9, "diverged", "training diverged: the loss became infinite, NaN or far above a uniform guess's "
                                    "(learning rate too high)", "yes", "no")
LOCK_WAIT = ExitStatus(10, "failed", "another run held the output dir's publish lock longer than "
                                     "`LENET_PUBLISH_WAIT_SECONDS`", "yes", "no")
WORKER_KILLED = ExitStatus(11, "failed", "a variant's worker process was killed (the OOM killer, a signal sent to it "
                                         "alone) or crashed: the message names the signal; the other variants are "
                                         "stopped", "yes", "no")
TRACKING = ExitStatus(12, "tracking_failed", "the run could not be logged to the MLflow server (`MLFLOW_TRACKING_URI`) "
                                           "and `LENET_TRACKING_REQUIRED=true`: the message names what failed",
                      "yes", "no")
HOLDOUT_TOO_SMALL = ExitStatus(13, "holdout_too_small", "too few extra pictures held out to judge a retrained model "
                                                       "(`LENET_EXTRA_MIN_HOLDOUT`) where a run is published: it "
                                                       "stays, and nothing is trained", "yes", "no")
SIGHUP = ExitStatus(129, "interrupted", "stopped by SIGHUP (the terminal or SSH session that started it closed), at "
                                      "the next batch or stage", "yes", "no")
SIGINT = ExitStatus(130, "interrupted", "stopped by SIGINT (Ctrl-C), at the next batch or stage", "yes", "no")
SIGTERM = ExitStatus(143, "interrupted", "stopped by SIGTERM (docker stop, Kubernetes), at the next batch or stage",
                     "yes", "no")

BY_SIGNAL = {status.code - 128: status for status in (SIGHUP, SIGINT, SIGTERM)}

STATUSES = (OK, UNEXPECTED, BAD_SETTING, DATA, ACCURACY_GATE, PARITY, OUTPUT, CHAMPION, DAMAGED, DIVERGED, LOCK_WAIT,
            WORKER_KILLED, TRACKING, HOLDOUT_TOO_SMALL, SIGHUP, SIGINT, SIGTERM)


class RunFailure(Exception):
    """Why a run ends without success: its `status`, and the one line (`line()`) that the job prints on stderr and
    the report keeps as its `message`. Subclasses name a kind of failure and its status; a judged outcome (a missed
    gate) is one too, made with its status."""

    status: ExitStatus = UNEXPECTED
    prefix = ""  # the kind of failure, before the message
    suffix = "; nothing was published"  # "" where the message says itself what became of the published run

    def __init__(self, message: str, status: ExitStatus | None = None, suffix: str | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if suffix is not None:
            self.suffix = suffix

    def line(self) -> str:
        """One line, whatever the message holds (torch's and onnx's errors often span several)."""
        return " ".join(f"{self.prefix}{self}{self.suffix}".splitlines())

    def __reduce__(self):  # a worker process sends it back whole, its status included
        return (type(self), (str(self), self.status, self.suffix))


def failure_of(error: BaseException) -> RunFailure:
    """`error` as the failure it ends the run with: an OSError is the outputs' (a full disk, a folder that cannot be
    written), anything else not foreseen is a bug."""
    if isinstance(error, RunFailure):
        return error
    if isinstance(error, OSError):
        return RunFailure(f"could not write the outputs: {error}", OUTPUT)
    return RunFailure(f"unexpected error: {type(error).__name__}: {error}", UNEXPECTED, suffix="")


def markdown_table() -> str:
    rows = ["| exit | report `status` | meaning | report written | published |", "|---|---|---|---|---|"]
    rows += [f"| {s.code} | {f'`{s.report_status}`' if s.report_status else '-'} | {s.meaning} | "
             f"{s.report_written} | {s.published} |" for s in STATUSES]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
