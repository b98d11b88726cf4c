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
    from job.settings import Settings
    from job.running.workers import might_share_the_cpu

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert might_share_the_cpu(Settings.model_construct(**values)) is early  # defaults, no .env read


def test_a_worker_moves_mnist_to_the_device_it_is_given_and_trains_there(monkeypatch, real_data_dir, tmp_path):
    """The path of LENET_DEVICE=cuda with LENET_PARALLEL_VARIANTS=true, on a machine without a GPU: the worker gets
    the device as an argument, not from where the data happens to be. The meta device stands in for the GPU."""
    import multiprocessing

    import job.training.variant
    from job.settings import load_settings
    from job.running.stop import StopRequest
    from job.running.workers import Finished, train_one

    seen = {}

    def train_variant(variant, data, recipe, settings, device, *args, **kwargs):
        seen.update(device=device, train=data.train.images.device, test=data.test.labels.device)
        return f"{variant} trained"

    monkeypatch.setattr(job.training.variant, "train_variant", train_variant)
    for name in [n for n in os.environ if n.startswith("LENET_")]:
        monkeypatch.delenv(name)
    settings = load_settings(data_dir=real_data_dir, train_limit=64, test_limit=64)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    finished = Finished(("plain", "bn_dropout"))
    train_one("plain", settings, "meta", StopRequest(), "run", tmp_path, 1, sender, finished)
    assert receiver.poll() and receiver.recv() == ("plain trained", None)
    assert finished.all_but("bn_dropout")  # marked done before its result was sent
    assert seen == {"device": torch.device("meta"), "train": torch.device("meta"), "test": torch.device("meta")}


def test_the_last_worker_at_work_checks_two_formats_at_a_time(monkeypatch):
    """Beside another worker a second thread took that worker's CPU (docs/performance.md); alone it has a core."""
    from job.running.workers import Finished, parity_formats_at_once

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    finished = Finished(("plain", "bn_dropout"))
    assert parity_formats_at_once("bn_dropout", finished, threads=1) == 1
    finished.mark("plain")
    assert parity_formats_at_once("bn_dropout", finished, threads=1) == 2
    assert parity_formats_at_once("plain", finished, threads=1) == 1
    assert parity_formats_at_once("bn_dropout", finished, threads=2) == 1  # no core left for a second thread
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert parity_formats_at_once("bn_dropout", finished, threads=2) == 2
