"""The job's exit statuses: the one table that the code, the README and docs/failure-modes.md share.

`python -m job.outcome.status` prints it as Markdown; tests/test_docs.py checks that both documents hold that table,
so they cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExitStatus:
    code: int
    report_status: str  # the report's `status`; "-" where no report is written
    meaning: str
    report_written: str
    published: str


OK = ExitStatus(0, "succeeded", "every variant met the gate and every export passed parity", "yes", "yes")
UNEXPECTED = ExitStatus(1, "failed", "unexpected error (a bug): the message names it", "yes", "no")
BAD_SETTING = ExitStatus(2, "-", "bad setting, unknown variant or device, device not present", "no (nothing started)",
                         "no")
DATA = ExitStatus(3, "failed", "data problem: MNIST missing, truncated, corrupted, wrong shape (checksums), download "
                               "failed", "yes", "no")
ACCURACY_GATE = ExitStatus(4, "accuracy_gate_failed", "accuracy gate missed (`LENET_MIN_TEST_ACCURACY`)", "yes", "no")
PARITY = ExitStatus(5, "parity_failed", "an exported file does not predict what the trained model predicts", "yes",
                    "no")
OUTPUT = ExitStatus(6, "failed", "output dir is a file or not writable, disk full while writing, no writable "
                               "temporary folder", "when possible", "no")
CHAMPION = ExitStatus(7, "champion_check_failed", "champion check failed (`LENET_CHAMPION_CHECK`)", "yes", "no")
DAMAGED = ExitStatus(8, "failed", "latest.json or the report it names is damaged (the champion check cannot read "
                               "it): the message names the file", "yes", "no")
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
SIGHUP = ExitStatus(129, "interrupted", "stopped by SIGHUP (the terminal or SSH session that started it closed), at "
                                      "the next batch or stage", "yes", "no")
SIGINT = ExitStatus(130, "interrupted", "stopped by SIGINT (Ctrl-C), at the next batch or stage", "yes", "no")
SIGTERM = ExitStatus(143, "interrupted", "stopped by SIGTERM (docker stop, Kubernetes), at the next batch or stage",
                     "yes", "no")

STATUSES = (OK, UNEXPECTED, BAD_SETTING, DATA, ACCURACY_GATE, PARITY, OUTPUT, CHAMPION, DAMAGED, DIVERGED, LOCK_WAIT,
            WORKER_KILLED, TRACKING, SIGHUP, SIGINT, SIGTERM)


def markdown_table() -> str:
    rows = ["| exit | report `status` | meaning | report written | published |", "|---|---|---|---|---|"]
    rows += [f"| {s.code} | {'`' + s.report_status + '`' if s.report_status != '-' else '-'} | {s.meaning} | "
             f"{s.report_written} | {s.published} |" for s in STATUSES]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
