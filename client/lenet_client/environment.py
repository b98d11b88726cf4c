"""What the command-line tools set up before they import onnxruntime, and the CPUs they may use.

onnxruntime writes a telemetry device id under the user's cache folder ($XDG_CACHE_HOME, else ~/.cache) when it
is imported, and prints a warning on stderr when it cannot (a service account, `docker run --user`, `setpriv`:
a home that is not writable), before any logging setting can silence it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def writable_cache_folder() -> None:
    """Point XDG_CACHE_HOME at a fresh temporary folder when the usual cache folder cannot be written."""
    writable_or_temporary("XDG_CACHE_HOME", lambda: Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"),
                          prefix="cache-")


def writable_or_temporary(variable: str, usual: Callable[[], Path], prefix: str) -> None:
    """Leave `variable` alone when the folder `usual()` names can be created and written; else set it to a fresh
    temporary folder. (`usual` is called inside: Path.home() raises when no home directory can be determined.)"""
    try:
        folder = usual()
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return
    except (OSError, RuntimeError):  # RuntimeError: no home directory can be determined
        pass
    os.environ[variable] = temporary = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, temporary, ignore_errors=True)  # not one more folder in /tmp for every run


def usable_cpus() -> int:
    """The CPUs this process may use (its affinity, `taskset`, as torch counts them), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
