"""Files that readers see whole or not at all, even across a power loss: write under a temporary name in the same
folder, flush it to the disk, rename it over the real name, then flush the folder that holds the new name.

A rename within one filesystem is atomic, so a consumer, a concurrent run or a run killed half-way never sees
half a file under the real name. Without the two fsyncs a power loss soon after the rename can still leave the
real name pointing at an empty or missing file (the data and the rename may reach the disk in either order).
It lives in the client, the package at the bottom of the import graph, because the job and the exporters both
write through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents to the disk (a folder's: the names it holds)."""
    descriptor = os.open(path, (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is flushed and replaces `path`, on failure it is removed."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")
    try:
        yield partial
        fsync_path(partial)
        partial.replace(path)
        fsync_path(path.parent)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    with atomic_path(path) as partial:
        partial.write_bytes(data)
