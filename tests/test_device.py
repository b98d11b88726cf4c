import os

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


def test_a_missing_device_is_an_error_not_a_fallback():
    """cuda:99 is missing on every machine, with CUDA or without: each says what is present."""
    with pytest.raises(SettingsError, match=r"^LENET_DEVICE=cuda:99: (no cuda device is present \(present: cpu|there "
                                            r"are \d+ CUDA devices \(allowed: cuda:0 to cuda:)"):
        select_device("cuda:99")


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
    from job.running.pool import might_share_the_cpu
    from job.settings import Settings

    monkeypatch.setattr("job.running.pool.usable_cpus", lambda: cores)
    assert might_share_the_cpu(Settings.model_construct(**values)) is early  # defaults, no .env read


def test_a_worker_moves_mnist_to_the_device_it_is_given_and_trains_there(monkeypatch, real_data_dir, tmp_path):
    """The path of LENET_DEVICE=cuda with LENET_PARALLEL_VARIANTS=true, on a machine without a GPU: the worker gets
    the device as an argument, not from where the data happens to be. The meta device stands in for the GPU."""
    import ctypes

    import job.running.pool as pool
    import job.training.variant
    from job.running.stop import StopRequest
    from job.settings import load_settings

    seen = {}

    def train_variant(variant, data, recipe, settings, device, *args, **kwargs):
        seen.update(device=device, train=data.train.images.device, test=data.test.labels.device)
        return f"{variant} trained"

    monkeypatch.setattr(job.training.variant, "train_variant", train_variant)
    for name in [n for n in os.environ if n.startswith("LENET_")]:
        monkeypatch.delenv(name)
    settings = load_settings(data_dir=real_data_dir, train_limit=64, test_limit=64)
    pids = (ctypes.c_int * 2)()
    monkeypatch.setattr(pool, "_stop", StopRequest())
    monkeypatch.setattr(pool, "_pids", pids)
    monkeypatch.setattr(pool, "_progress", (ctypes.c_int * (2 * pool.PROGRESS_FIELDS))())
    assert pool.train_one("bn_dropout", settings, "meta", "run", tmp_path, 1, None) == "bn_dropout trained"
    assert list(pids) == [0, os.getpid()]  # by the variant's place: how a dead worker is named
    assert seen == {"device": torch.device("meta"), "train": torch.device("meta"), "test": torch.device("meta")}
