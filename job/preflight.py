"""What is checked before anything heavy is imported. A locked-down container (a read-only root filesystem,
Kubernetes' readOnlyRootFilesystem) may have no writable temporary folder; matplotlib, torch's exporters and
multiprocessing need one, and would fail on import with a traceback."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from job.outcome.status import OUTPUT
from lenet_client.environment import writable_or_temporary


def temporary_folder_or_exit() -> None:
    try:
        tempfile.gettempdir()
    except FileNotFoundError:  # "No usable temporary directory found in [...]"
        print("lenet-mnist: no writable temporary folder ($TMPDIR, /tmp, /var/tmp, /usr/tmp and the working folder "
              "were tried): mount a tmpfs on /tmp, or set TMPDIR to a writable folder", file=sys.stderr)
        raise SystemExit(OUTPUT.code) from None


def matplotlib_config_folder() -> None:
    """Under a user whose home is not writable (`docker run --user`, a service account, `setpriv`), matplotlib
    falls back to a temporary folder itself, but says so in two lines on stderr at every run. Choose that folder
    here, silently, when its usual one cannot be written (the image sets MPLCONFIGDIR itself)."""
    if "MPLCONFIGDIR" not in os.environ:
        writable_or_temporary(
            "MPLCONFIGDIR", lambda: Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "matplotlib",
            prefix="matplotlib-")
