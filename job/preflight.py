"""What is checked before anything heavy is imported. A locked-down container (a read-only root filesystem,
Kubernetes' readOnlyRootFilesystem) may have no writable temporary folder; matplotlib, torch's exporters and
multiprocessing need one, and would fail on import with a traceback."""

from __future__ import annotations

import sys
import tempfile

from job.status import OUTPUT


def temporary_folder_or_exit() -> None:
    try:
        tempfile.gettempdir()
    except FileNotFoundError:  # "No usable temporary directory found in [...]"
        print("lenet-mnist: no writable temporary folder ($TMPDIR, /tmp, /var/tmp, /usr/tmp and the working folder "
              "were tried): mount a tmpfs on /tmp, or set TMPDIR to a writable folder", file=sys.stderr)
        raise SystemExit(OUTPUT.code) from None
