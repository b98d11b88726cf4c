"""Stage 8: run folders, and publishing a run that passed every check, so that downstream apps only ever load
verified models.

OUTPUT_DIR/latest.json names the last published run. It is replaced atomically, under a lock, and only at the
very end of a successful run: a failed, interrupted or concurrent run never leaves it naming anything but a
complete run. Each finished run folder holds manifest.json, the SHA-256 of every file in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from filelock import FileLock, Timeout

from job.log import log, warn
from job.outcome.report import Artifact, Report, read_report, write_report
from job.outcome.status import DAMAGED, LOCK_WAIT, RunFailure
from lenet_client.atomic import fsync_path, write_bytes_atomically, write_text_atomically
from lenet_client.jsonfile import read_json
from lenet_client.text import printable

POINTER = "latest.json"
KEPT_POINTER = ".latest.json.before"  # PointerBefore's hard link, while a run publishes
MANIFEST = "manifest.json"
RUNS = "runs"


LOCK = ".publish.lock"
RUN_LOCK = ".running.lock"  # in each run folder, held while the run lives
ABANDONED = "ABANDONED"  # written into a run folder found without a report and without a live process


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"  # sorts by time; the suffix keeps concurrent runs apart


def create_run_dir(output_dir: Path, run_id: str) -> Path:
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError("it is a file, not a folder")
    run_dir = output_dir / RUNS / run_id
    run_dir.mkdir(parents=True)
    return run_dir


class LockWaitTooLong(RunFailure):
    """Another run held the publish lock longer than this run may wait."""

    status = LOCK_WAIT
    suffix = ""  # the message says it


def publish_lock(output_dir: Path, stop: Callable[[], None], wait_seconds: float) -> FileLock:
    """The lock that serializes the read-compare-publish step of concurrent runs on one output dir (an flock on
    Unix), acquired. The wait is bounded, and `stop` is called every 0.2 s, so that SIGTERM ends a run that waits."""
    lock = FileLock(output_dir / LOCK)
    deadline = time.monotonic() + wait_seconds
    waiting = False
    while True:
        try:
            lock.acquire(timeout=0.2)
            return lock
        except Timeout:
            stop()
            if time.monotonic() >= deadline:
                raise LockWaitTooLong(f"another run has held {output_dir / LOCK} for more than "
                                      f"LENET_PUBLISH_WAIT_SECONDS={wait_seconds:g}; nothing was published") from None
            if not waiting:
                log(f"waiting for {output_dir / LOCK}: another run is publishing into {output_dir}")
                waiting = True


class DamagedFileError(RunFailure):
    """latest.json, or the report it names, cannot be read (a disk that filled, a hand edit)."""

    status = DAMAGED


def published_run(output_dir: Path) -> tuple[str, Report] | None:
    pointer = output_dir / POINTER
    if not pointer.is_file():
        return None
    try:
        published = cast(dict[str, Any], read_json(pointer))  # any other shape: the errors below
        run_id, report_path = published["run_id"], output_dir / published["report"]
    except (ValueError, KeyError, TypeError) as error:
        raise DamagedFileError(f"{pointer} is damaged ({type(error).__name__}: {error}): the champion check "
                               f"cannot read the published run; restore it, or remove it to publish anew") from None
    try:
        return run_id, read_report(report_path)
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error).splitlines()[0]
        raise DamagedFileError(f"{printable(report_path)}, the report {pointer.name} names, cannot be read ({reason}); "
                               f"restore it, or remove {pointer.name} to publish anew") from None


def repair_published_report(output_dir: Path) -> None:
    """Called holding the publish lock. A run killed (SIGKILL, the OOM killer) after latest.json moved to it and
    before its report could say so leaves that report `published: false`, and its manifest maybe without the report's
    last hash: the next run to publish makes both say what is true on disk. (Under the lock, latest.json names a
    report that says false in no other case: a run whose report cannot say true puts the pointer back.)"""
    try:
        current = published_run(output_dir)
    except DamagedFileError:  # the champion check, if on, names it; publishing replaces it
        return
    if current is None or current[1].published:
        return
    run_id, report = current
    run_dir = output_dir / cast(dict[str, Any], read_json(output_dir / POINTER))["run_dir"]
    try:
        write_report(report.model_copy(update={"published": True}), run_dir)
        write_manifest(run_dir, run_id)
    except OSError as error:
        warn(f"run {run_id} is published but its report says it is not (a run killed as it published), and it "
             f"cannot be corrected: {error.strerror or error}")
        return
    log(f"run {run_id} is published (latest.json names it) but its report said it was not: a run killed as it "
        f"published; its report and manifest now say so")


def write_manifest(run_dir: Path, run_id: str) -> Path:
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name not in (MANIFEST, RUN_LOCK)):
        entry = Artifact.of(path, run_dir)
        files[entry.path] = entry.model_dump(exclude={"path"})
    manifest = run_dir / MANIFEST
    write_text_atomically(manifest, json.dumps({"run_id": run_id, "files": files}, indent=2) + "\n")
    return manifest


def check_pointer_replaceable(output_dir: Path) -> None:
    """latest.json must be a file or absent: `docker run -v` of a file that does not exist yet creates a folder."""
    pointer = output_dir / POINTER
    if pointer.is_dir():
        raise IsADirectoryError(f"{printable(pointer)} is a folder, not a file (what `docker run -v` of a missing file "
                                f"creates): remove it, and mount the output folder instead")
    if pointer.exists() and not pointer.is_file():
        raise FileExistsError(f"{printable(pointer)} is not a regular file (a pipe, a socket or a device): remove it, "
                              f"so that the job can publish its pointer there")


def point_latest_at(output_dir: Path, run_dir: Path, report: Report) -> None:
    base = run_dir.relative_to(output_dir)
    pointer = {"run_id": report.run_id, "run_dir": str(base), "report": str(base / "report.json"),
               "manifest": str(base / MANIFEST),
               "models": {r.variant: {name: str(base / a.path) for name, a in r.artifacts.items()}
                          for r in report.variants}}
    check_pointer_replaceable(output_dir)
    try:
        write_text_atomically(output_dir / POINTER, json.dumps(pointer, indent=2) + "\n")
    except OSError as error:
        raise OSError(error.errno, f"could not point {printable(output_dir / POINTER)} at the run: "
                                   f"{error.strerror or error}") from None


@dataclass
class PointerBefore:
    """latest.json as it was before a run moved it, to put back if the run's report cannot then say it was
    published: a hard link (putting it back is a rename, which a full disk allows), or where the filesystem has no
    hard links, its bytes. `existed` False: there was none, and putting back is removing the new one."""
    output_dir: Path
    existed: bool
    kept: Path | None = None
    data: bytes | None = None

    @classmethod
    def keep(cls, output_dir: Path) -> PointerBefore:
        pointer, kept = output_dir / POINTER, output_dir / KEPT_POINTER
        kept.unlink(missing_ok=True)  # left by a run killed in between
        if not pointer.is_file():
            return cls(output_dir, existed=False)
        try:
            os.link(pointer, kept)
            return cls(output_dir, existed=True, kept=kept)
        except OSError:
            return cls(output_dir, existed=True, data=pointer.read_bytes())

    def restore(self) -> None:
        pointer = self.output_dir / POINTER
        if not self.existed:
            pointer.unlink(missing_ok=True)
        elif self.kept is not None:
            self.kept.replace(pointer)
        elif self.data is not None:
            write_bytes_atomically(pointer, self.data)
        fsync_path(self.output_dir)  # the name put back survives a power loss

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            (self.output_dir / KEPT_POINTER).unlink(missing_ok=True)


def hold_run(run_dir: Path) -> FileLock:
    """Held by the run's process for its whole life: when the process is gone (killed by the OOM killer, a lost
    node), the lock is free and the folder is known to be abandoned. The kernel releases it; no stale lock."""
    lock = FileLock(run_dir / RUN_LOCK)
    lock.acquire()
    return lock


def finished_or_abandoned(run_dir: Path) -> bool:
    """A run folder with a report is finished; one without is abandoned when no process holds its lock (it is
    then marked so), and otherwise still in progress."""
    if (run_dir / "report.json").is_file() or (run_dir / ABANDONED).is_file():
        return True
    lock = FileLock(run_dir / RUN_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    try:
        write_text_atomically(run_dir / ABANDONED, "no report, and no process holds the run's lock: the run was "
                                                   "killed before it could finish\n")
    finally:
        lock.release()
    return True


def prune_runs(output_dir: Path, keep: int, this_run: str) -> list[str]:
    """Delete the oldest finished or abandoned runs beyond the newest `keep`; never the published one, this one,
    or one still in progress. Housekeeping after publishing: a folder that cannot be judged or removed (another
    user's, a read-only mount) is named in a warning and kept; it never fails the run."""
    protected = {this_run}
    try:
        current = published_run(output_dir)
        if current:
            protected.add(current[0])
        candidates = sorted(p for p in (output_dir / RUNS).iterdir() if p.is_dir())
    except (OSError, DamagedFileError) as error:
        warn(f"old runs were not pruned: {error}")
        return []
    done = []
    for path in candidates:
        try:
            if finished_or_abandoned(path):
                done.append(path)
        except OSError as error:
            warn(f"kept old run folder {printable(path)}: cannot tell whether it is finished ({error.strerror})")
    removed = []
    for path in (p for p in done[:-keep] if p.name not in protected):
        try:
            shutil.rmtree(path)
            removed.append(path.name)
        except OSError as error:
            warn(f"could not remove old run folder {printable(path)}: {error.strerror or error}")
    if removed:
        log(f"removed {len(removed)} old run folder(s), keeping the newest {keep}")
    return removed
