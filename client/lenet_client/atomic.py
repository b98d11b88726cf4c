"""Files that readers see whole or not at all, even across a power loss: write under a temporary name in the same
folder, flush it to the disk, rename it over the real name, then flush the folder that holds the new name.

A rename within one filesystem is atomic, so a consumer, a concurrent run or a run killed half-way never sees
half a file under the real name. Without the two fsyncs a power loss soon after the rename can still leave the
real name pointing at an empty or missing file (the data and the rename may reach the disk in either order).
It lives in the client, the package at the bottom of the import graph, because the job and the exporters both
write through it.
"""

from __future__ import annotations

import errno
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
def atomic_path(path: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is flushed and replaces `path`, on failure it is removed.
    With replace=False it only takes a free name: FileExistsError when `path` exists, even when another process
    made it a moment before."""
    partial = path.with_name(fit_name(f".{path.name}", f".{os.getpid()}.partial{path.suffix}"))
    try:
        yield partial
        fsync_path(partial)
        if replace:
            partial.replace(path)
        else:
            take_free_name(partial, path)
        fsync_path(path.parent)
    finally:
        partial.unlink(missing_ok=True)


NAME_MAX = 255  # bytes in one file name, on every filesystem this runs on


def fit_name(start: str, ending: str) -> str:
    """`start` + `ending`, `start` cut at a whole character so that the name fits in NAME_MAX bytes (a picture named
    with 80 Japanese characters is 244 bytes: its temporary name, or its name with a content hash, would not)."""
    room = max(0, NAME_MAX - len(ending.encode("utf-8", "surrogateescape")))
    kept = ""
    for character in start:  # surrogateescape: a name in another encoding keeps its bytes
        if len((kept + character).encode("utf-8", "surrogateescape")) > room:
            break
        kept += character
    return kept + ending


def take_free_name(partial: Path, path: Path) -> None:
    """Give the finished file `path` as its name only if no file has it. A check, then a rename, would let a second
    writer's rename replace the first writer's file between the two; a hard link fails when the name is taken."""
    try:
        os.link(partial, path)
    except FileExistsError:
        raise
    except OSError as error:  # a filesystem without hard links (some network and FUSE mounts): check, then rename
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        partial.replace(path)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def write_bytes_atomically(path: Path, data: bytes, replace: bool = True) -> None:
    with atomic_path(path, replace) as partial:
        partial.write_bytes(data)
