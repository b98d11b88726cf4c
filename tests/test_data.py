import gzip

import numpy as np
import pytest
import torch

from conftest import small_mnist
from job.training import data as data_module
from job.training.data import CHECKSUMS, DataError, batches, ensure_mnist, file_digests, load_mnist


@pytest.fixture
def small_data_dir(tmp_path, monkeypatch):
    """Generated IDX files, with the checksums the job expects patched to theirs."""
    arrays = small_mnist(tmp_path / "MNIST" / "raw")
    monkeypatch.setattr(data_module, "CHECKSUMS",
                        {name: file_digests(tmp_path / "MNIST" / "raw" / name) for name in CHECKSUMS})
    return tmp_path, arrays


def test_loads_idx_files_as_tensors_like_to_tensor(small_data_dir):
    data_dir, arrays = small_data_dir
    data = load_mnist(data_dir, download=False, normalize=False)
    assert data.source == "data_dir"
    assert data.train.images.shape == (64, 1, 28, 28) and data.train.images.dtype == torch.float32
    assert data.test.labels.dtype == torch.int64 and len(data.test) == 32
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().div(255).unsqueeze(1)
    assert torch.equal(data.train.images, expected)
    assert data.train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_normalization_and_limits(small_data_dir):
    data_dir, _ = small_data_dir
    raw = load_mnist(data_dir, download=False, normalize=False, train_limit=10)
    normalized = load_mnist(data_dir, download=False, normalize=True, train_limit=10, test_limit=5)
    assert len(normalized.train) == 10 and len(normalized.test) == 5
    assert torch.allclose(normalized.train.images, (raw.train.images - 0.1307) / 0.3081)


def test_a_corrupted_file_is_caught_by_its_checksum(small_data_dir):
    data_dir, _ = small_data_dir
    path = data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    content[100] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte does not match its canonical checksum"):
        load_mnist(data_dir, download=False, normalize=False)


def test_a_truncated_file_is_caught_by_its_checksum(small_data_dir):
    data_dir, _ = small_data_dir
    path = data_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte does not match"):
        load_mnist(data_dir, download=False, normalize=False)


@pytest.mark.parametrize("kind", ["pipe", "folder"])
def test_an_mnist_file_that_is_not_a_regular_file_is_named_as_such(small_data_dir, kind):
    """A pipe was called "missing", which sent the reader looking for a file that is there."""
    import os

    data_dir, _ = small_data_dir
    path = data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.unlink()
    os.mkfifo(path) if kind == "pipe" else path.mkdir()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is not a regular file"):
        load_mnist(data_dir, download=False, normalize=False)


def test_no_data_and_no_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "VENDORED_DIR", tmp_path / "nothing-vendored")
    with pytest.raises(DataError, match=r"MNIST not found: put .* in .*MNIST/raw, or set LENET_DOWNLOAD=true"):
        ensure_mnist(tmp_path / "data", download=False)


def test_a_failed_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(data_module, "VENDORED_DIR", tmp_path / "nothing-vendored")

    def unreachable(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", unreachable)  # job.training.data imports it only to download
    with pytest.raises(DataError, match=r"could not obtain MNIST .*put the four uncompressed IDX files there"):
        ensure_mnist(tmp_path / "data", download=True)


def test_the_vendored_copy_is_the_real_mnist(real_data_dir):
    data = load_mnist(real_data_dir, download=False, normalize=False)
    assert (len(data.train), len(data.test)) == (60000, 10000)
    assert torch.bincount(data.train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                                                          5949]
    assert torch.bincount(data.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.files["train-images-idx3-ubyte"]["md5"] == "6bbc9ace898e44ae57da46a324031adb"


def test_vendored_files_unpack_into_an_empty_data_dir(tmp_path):
    raw_dir, source, files = ensure_mnist(tmp_path, download=False)
    assert source == "vendored" and sorted(files) == sorted(CHECKSUMS)
    assert not [p for p in raw_dir.iterdir() if p.name.startswith(".")]  # no partial file left behind
    with gzip.open(data_module.VENDORED_DIR / "t10k-labels-idx1-ubyte.gz") as vendored:
        assert vendored.read() == (raw_dir / "t10k-labels-idx1-ubyte").read_bytes()


def test_shuffled_batches_cover_every_sample_once(small_data_dir):
    data_dir, _ = small_data_dir
    train = load_mnist(data_dir, download=False, normalize=False).train
    seen = torch.cat([labels for _, labels in batches(train, 10, torch.Generator().manual_seed(1))])
    assert len(seen) == 64 and sorted(seen.tolist()) == sorted(train.labels.tolist())
    assert not torch.equal(seen, train.labels)
    in_order = [images for images, _ in batches(train, 30)]
    assert [len(b) for b in in_order] == [30, 30, 4] and torch.equal(torch.cat(in_order), train.images)


def test_idx_files_are_read_as_written_and_malformed_ones_are_named(tmp_path):
    from conftest import write_idx
    from job.training.data import read_idx

    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "good", array)
    assert read_idx(tmp_path / "good", 3).numpy().tolist() == array.tolist()
    with pytest.raises(DataError, match="not an IDX file of 1-dimensional"):
        read_idx(tmp_path / "good", 1)  # the magic says 3 dimensions
    (tmp_path / "short").write_bytes((tmp_path / "good").read_bytes()[:-1])
    with pytest.raises(DataError, match=r"short holds 23 bytes of data, its header says \[2, 3, 4\]"):
        read_idx(tmp_path / "short", 3)
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "tiny", 3)
