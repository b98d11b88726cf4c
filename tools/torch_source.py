"""Where `make setup` takes torch from, printed as pip arguments (stdout), with one line saying why (stderr).

PyPI's torch for Linux x86_64 is the CUDA build: with its nvidia-* and triton libraries, about 6 GB in the venv. On a
Linux machine with no NVIDIA driver none of that can run, and pytorch.org publishes a CPU-only build of the same
version (`2.14.1+cpu` satisfies the pin `torch==2.14.1`, and pip prefers it) without those libraries. It is used
when that index offers the pinned version; where it cannot be reached (a network that allows PyPI only) or does
not offer it, PyPI's build is installed, and the line says so. TORCH_INDEX_URL, when set, is added as an extra
index instead (empty: PyPI only).

Run with the system's python3 before the venv exists: the standard library only.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import urllib.request
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def has_nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def pinned_torch() -> str:
    found = re.search(r"^torch==(\S+)$", CONSTRAINTS.read_text(), re.MULTILINE)
    return found.group(1) if found else ""


def offers_cpu_build(index: str, timeout: float = 5.0) -> bool:
    """Whether `index` answers and lists the CPU build of the pinned torch (PEP 503: a page per project)."""
    try:
        with urllib.request.urlopen(f"{index}/torch/", timeout=timeout) as response:
            return f"torch-{pinned_torch()}+cpu-" in response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return False


def choose(system: str, machine: str, nvidia: bool, reachable, chosen: str | None = None) -> tuple[list[str], str]:
    """(pip arguments, the line that says why). `reachable(index)`, whether the index offers the pinned version's
    CPU build, is asked only when that build would help; `chosen` is TORCH_INDEX_URL when it is set."""
    if chosen is not None:
        return (["--extra-index-url", chosen] if chosen else []), \
            f"torch: from {chosen or 'PyPI only'} (TORCH_INDEX_URL)"
    if system != "Linux" or machine != "x86_64":
        return [], f"torch: PyPI's build for {system} {machine}"
    if nvidia:
        return [], "torch: PyPI's CUDA build (an NVIDIA driver is present), about 6 GB with its libraries"
    if reachable(CPU_INDEX):
        return ["--extra-index-url", CPU_INDEX], \
            f"torch: the CPU-only build from {CPU_INDEX} (no NVIDIA driver here), without CUDA's libraries"
    return [], (f"torch: PyPI's CUDA build, about 6 GB with libraries this machine cannot use (no NVIDIA driver): "
                f"{CPU_INDEX} cannot be reached from here, or does not offer the pinned version")


def main() -> int:
    chosen = os.environ.get("TORCH_INDEX_URL")
    if chosen and not re.fullmatch(r"https?://[^\s]+", chosen):  # the Makefile splits the output into words
        print(f"TORCH_INDEX_URL={chosen!r}: not an index address (allowed: http:// or https:// and no spaces, or "
              f"empty for PyPI only)", file=sys.stderr)
        return 2
    arguments, why = choose(platform.system(), platform.machine(), has_nvidia_driver(), offers_cpu_build, chosen)
    print(why, file=sys.stderr)
    print(" ".join(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
