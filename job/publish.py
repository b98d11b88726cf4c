"""Stage 8: run folders, and publishing a run that passed every check, so that downstream apps only ever load
verified models.

OUTPUT_DIR/latest.json names the last published run. It is replaced atomically, under a lock, and only at the
very end of a successful run: a failed, interrupted or concurrent run never leaves it naming anything but a
complete run. Each finished run folder holds manifest.json, the SHA-256 of every file in it.
"""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import datetime
from pathlib import Path

from filelock import FileLock

from export.atomic import write_text_atomically
from job.report import Artifact, ChampionCheck, Report, read_report

POINTER = "latest.json"
MANIFEST = "manifest.json"
RUNS = "runs"


LOCK = ".publish.lock"


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"  # sorts by time; the suffix keeps concurrent runs apart


def create_run_dir(output_dir: Path, run_id: str) -> Path:
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError("it is a file, not a folder")
    run_dir = output_dir / RUNS / run_id
    run_dir.mkdir(parents=True)
    return run_dir


def publish_lock(output_dir: Path) -> FileLock:
    """Serialize the read-compare-publish step of concurrent runs on one output dir (an flock on Unix)."""
    return FileLock(output_dir / LOCK)


def published_run(output_dir: Path) -> tuple[str, Report] | None:
    pointer = output_dir / POINTER
    if not pointer.is_file():
        return None
    published = json.loads(pointer.read_text())
    return published["run_id"], read_report(output_dir / published["report"])


def check_champion(report: Report, output_dir: Path, tolerance: float) -> ChampionCheck:
    """The new run may publish only if no variant is worse than the published one by more than `tolerance`."""
    current = published_run(output_dir)
    if current is None:
        return ChampionCheck(tolerance=tolerance, compared_with_run=None, published_accuracy={},
                             new_accuracy={}, passed=True)
    run_id, champion = current
    old = {v.variant: v.final_test_accuracy for v in champion.variants}
    new = {v.variant: v.final_test_accuracy for v in report.variants if v.variant in old}
    return ChampionCheck(tolerance=tolerance, compared_with_run=run_id, published_accuracy=old, new_accuracy=new,
                         passed=all(new[v] >= old[v] - tolerance for v in new))


def write_manifest(run_dir: Path, run_id: str) -> Path:
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != MANIFEST):
        entry = Artifact.of(path, run_dir)
        files[entry.path] = entry.model_dump(exclude={"path"})
    manifest = run_dir / MANIFEST
    write_text_atomically(manifest, json.dumps({"run_id": run_id, "files": files}, indent=2) + "\n")
    return manifest


def point_latest_at(output_dir: Path, run_dir: Path, report: Report) -> None:
    base = run_dir.relative_to(output_dir)
    pointer = {"run_id": report.run_id, "run_dir": str(base), "report": str(base / "report.json"),
               "manifest": str(base / MANIFEST),
               "models": {r.variant: {name: str(base / a.path) for name, a in r.artifacts.items()}
                          for r in report.variants}}
    write_text_atomically(output_dir / POINTER, json.dumps(pointer, indent=2) + "\n")


def prune_runs(output_dir: Path, keep: int, this_run: str) -> list[str]:
    """Delete the oldest finished runs beyond the newest `keep`; never the published one, this one, or one
    still in progress (no report yet: a concurrent run may be writing it)."""
    current = published_run(output_dir)
    protected = {this_run, current[0] if current else None}
    finished = sorted(p for p in (output_dir / RUNS).iterdir() if (p / "report.json").is_file())
    doomed = [p for p in finished[:-keep] if p.name not in protected]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in doomed]
