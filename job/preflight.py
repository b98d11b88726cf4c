"""What is checked and set up before anything heavy is imported. A locked-down container (a read-only root
filesystem, Kubernetes' readOnlyRootFilesystem) may have no writable temporary folder; matplotlib, torch's exporters
and multiprocessing need one, and would fail on import with a traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from job.outcome.status import OUTPUT, RunFailure
from job.settings import Settings
from lenet_client.environment import writable_cache_folder, writable_or_temporary


def check_temporary_folder() -> None:
    try:
        tempfile.gettempdir()
    except FileNotFoundError:  # "No usable temporary directory found in [...]"
        raise RunFailure("no writable temporary folder ($TMPDIR, /tmp, /var/tmp, /usr/tmp and the working folder were "
                         "tried): mount a tmpfs on /tmp, or set TMPDIR to a writable folder", OUTPUT, suffix="") \
            from None


def writable_config_folders() -> None:
    """Under a user whose home is not writable (`docker run --user`, a service account, `setpriv`), matplotlib
    falls back to a temporary folder itself, but says so in two lines on stderr at every run. Choose that folder
    here, silently, when its usual one cannot be written (the image sets MPLCONFIGDIR itself); the same for the
    cache that onnxruntime's and torch's helpers use, before the worker server imports them."""
    if "MPLCONFIGDIR" not in os.environ:
        writable_or_temporary(
            "MPLCONFIGDIR", lambda: Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "matplotlib",
            prefix="matplotlib-")
    writable_cache_folder()


def start_worker_server_if_useful(settings: Settings) -> None:
    """Start the server the variants' worker processes are forked from before the job imports torch, so that the
    two import side by side (job.running.pool)."""
    from job.running.pool import can_start_workers, might_share_the_cpu, start_worker_server

    if might_share_the_cpu(settings) and can_start_workers():
        start_worker_server()


def stop_worker_server_if_started() -> None:
    """Where the pool was not used after all (a failure before training, one variant per process on a busy CPU),
    the server started above must not outlive the job (job.running.pool.stop_worker_server)."""
    import sys

    if "job.running.pool" in sys.modules:
        from job.running.pool import stop_worker_server

        stop_worker_server()
