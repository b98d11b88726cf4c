import pytest
import torch

from job import device as device_module
from job.device import select_device
from job.settings import SettingsError


def test_cpu_is_always_present():
    assert select_device("cpu") == torch.device("cpu")


def test_auto_prefers_cuda_then_mps_then_xpu(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)
    present = set()
    monkeypatch.setattr(device_module, "is_available", lambda kind: kind == "cpu" or kind in present)
    assert select_device("auto").type == "cpu"
    present.add("xpu")
    assert select_device("auto").type == "xpu"
    present.add("mps")
    assert select_device("auto").type == "mps"
    present.add("cuda")
    assert select_device("auto").type == "cuda"


def test_auto_uses_torch_accelerator_when_it_names_one(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda check_available=False: torch.device("mps"))
    assert select_device("auto") == torch.device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_an_error_not_a_fallback():
    with pytest.raises(SettingsError, match=r"LENET_DEVICE=cuda:1: no cuda device is present \(present: cpu"):
        select_device("cuda:1")


@pytest.mark.parametrize("values, cores, early", [
    ({}, 2, True),  # auto on a 2-core machine: side by side is likely, start the worker server early
    ({}, 1, False),  # one core: the variants run one after the other
    ({"device": "cuda"}, 16, False),
    ({"device": "cpu", "num_threads": 1}, 16, False),  # one thread cannot be shared by two variants
    ({"parallel_variants": False}, 16, False),
    ({"parallel_variants": True, "device": "cuda"}, 1, True),  # asked for: as variants_share_the_cpu decides
    ({"variants": ("plain",)}, 16, False),
])
def test_the_worker_server_starts_early_only_where_variants_may_share_the_cpu(monkeypatch, values, cores, early):
    from job.settings import Settings
    from job.workers import might_share_the_cpu

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert might_share_the_cpu(Settings.model_construct(**values)) is early  # defaults, no .env read
