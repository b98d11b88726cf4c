"""Which device trains: the best accelerator present, or the one asked for if it is present."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from job.settings import SettingsError

AUTO_ORDER = ("cuda", "mps", "xpu")


def is_available(kind: str) -> bool:
    if kind == "cpu":
        return True
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}
    module = backend.get(kind)
    return bool(module is not None and module.is_available())


def select_device(spec: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then XPU, else CPU; an explicit device must be present."""
    if spec == "auto":
        accelerator = torch.accelerator.current_accelerator(check_available=True) \
            if hasattr(torch, "accelerator") else None
        if accelerator is not None and accelerator.type in AUTO_ORDER:
            return torch.device(accelerator.type)
        return torch.device(next((kind for kind in AUTO_ORDER if is_available(kind)), "cpu"))
    device = torch.device(spec)
    if not is_available(device.type):
        raise SettingsError(f"LENET_DEVICE={spec}: no {device.type} device is present "
                            f"(present: {', '.join(present_devices())})")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SettingsError(f"LENET_DEVICE={spec}: there are {torch.cuda.device_count()} CUDA devices "
                            f"(allowed: cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def present_devices() -> list[str]:
    return ["cpu"] + [kind for kind in AUTO_ORDER if is_available(kind)]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "xpu":
        return torch.xpu.get_device_name(device)
    return f"{cpu_model() or platform.processor() or 'CPU'} ({platform.machine()})"


def cpu_model() -> str | None:
    """The processor's name as Linux reports it (platform.processor() gives only the architecture there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")) and ":" in line:
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None
