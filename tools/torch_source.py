"""Where `make setup` takes torch from, printed as pip arguments (stdout), with one line saying why (stderr).

PyPI's torch for Linux x86_64 is the CUDA build: with its nvidia-* and triton libraries, about 6 GB in the venv. On a
Linux machine with no NVIDIA driver none of that can run, and pytorch.org publishes a CPU-only build of the same
version (`2.14.1+cpu` satisfies the pin `torch==2.14.1`, and pip prefers it) without those libraries. It is used
when that index answers; where it cannot be reached (a network that allows PyPI only), PyPI's build is installed,
and the line says so. TORCH_INDEX_URL, when set, decides instead (empty: PyPI only), as for the Docker image.

Run with the system's python3 before the venv exists: the standard library only.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import urllib.request
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def has_nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def answers(index: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"{index}/torch/", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def choose(system: str, machine: str, nvidia: bool, reachable, chosen: str | None = None) -> tuple[list[str], str]:
    """(pip arguments, the line that says why). `reachable(index)` is asked only when the CPU build would help;
    `chosen` is TORCH_INDEX_URL when it is set."""
    if chosen is not None:
        return (["--extra-index-url", chosen] if chosen else []), \
            f"torch: from {chosen or 'PyPI only'} (TORCH_INDEX_URL)"
    if system != "Linux" or machine not in ("x86_64", "AMD64"):
        return [], f"torch: PyPI's build for {system} {machine}"
    if nvidia:
        return [], "torch: PyPI's CUDA build (an NVIDIA driver is present), about 6 GB with its libraries"
    if reachable(CPU_INDEX):
        return ["--extra-index-url", CPU_INDEX], \
            f"torch: the CPU-only build from {CPU_INDEX} (no NVIDIA driver here), without CUDA's libraries"
    return [], (f"torch: PyPI's CUDA build, about 6 GB with libraries this machine cannot use (no NVIDIA driver): "
                f"{CPU_INDEX} cannot be reached from here")


def main() -> int:
    arguments, why = choose(platform.system(), platform.machine(), has_nvidia_driver(), answers,
                            os.environ.get("TORCH_INDEX_URL"))
    print(why, file=sys.stderr)
    print(" ".join(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
