"""Stage 2: the real MNIST, verified, loaded once as tensors and batched by indexing.

Where the files come from, in order: the data dir (torchvision's layout, DATA_DIR/MNIST/raw), else the
copy vendored in this package (job/mnist/*.gz), else torchvision's download when allowed. Whatever the
source, the uncompressed files must match the canonical checksums before anything trains on them.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from job.outcome.status import DATA, RunFailure
from lenet_client.atomic import atomic_path
from lenet_client.text import printable

VENDORED_DIR = Path(__file__).parents[1] / "mnist"  # job/mnist
# Mean and std of the MNIST training pixels after ToTensor's scaling to [0, 1].
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def standardization(normalize: bool) -> tuple[float, float]:
    """(mean, std) that 0-1 pixels are standardized with: MNIST's, or none (the seed recipe's plain 0-1)."""
    return (MNIST_MEAN, MNIST_STD) if normalize else (0.0, 1.0)
# Canonical MD5 of the uncompressed files (the ones torchvision and most loaders publish), and SHA-256.
CHECKSUMS = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}


class DataError(RunFailure):
    """MNIST (or LENET_EXTRA_DATA) is missing, corrupted or unreadable; the message says which file and what to do."""

    status = DATA
    prefix = "data problem: "
    suffix = ""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # float32 [N, 1, 28, 28], scaled to [0, 1] (then standardized if the recipe says so)
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class MnistData:
    train: Split  # with LENET_EXTRA_DATA, MNIST's training images followed by the extra ones (job.training.extra)
    test: Split
    source: str  # "data_dir", "vendored" or "download"
    raw_dir: Path
    files: dict[str, dict[str, str]]  # file name -> {"md5": ..., "sha256": ...}
    extra_holdout: Split | None = None  # the extra pictures held out for evaluation

    def to(self, device: torch.device) -> MnistData:
        holdout = self.extra_holdout.to(device) if self.extra_holdout is not None else None
        return MnistData(self.train.to(device), self.test.to(device), self.source, self.raw_dir, self.files, holdout)


def file_digests(path: Path) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def verify(raw_dir: Path) -> dict[str, dict[str, str]]:
    digests = {}
    for name, expected in CHECKSUMS.items():
        path = raw_dir / name
        if path.exists() and not path.is_file():  # reading a pipe would wait for a writer forever
            raise DataError(f"MNIST file {path} is not a regular file (a folder, a pipe, a socket or a device): "
                            f"remove it to use the vendored copy, or replace it")
        if not path.is_file():
            raise DataError(f"MNIST file missing: {path}")
        actual = file_digests(path)
        if actual != expected:
            raise DataError(f"MNIST file {path} does not match its canonical checksum (md5 {actual[0]}, "
                            f"expected {expected[0]}): delete it to use the vendored copy, or replace it")
        digests[name] = {"md5": actual[0], "sha256": actual[1]}
    return digests


def unpack_vendored(raw_dir: Path) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in CHECKSUMS:
        target = raw_dir / name
        if target.exists():
            continue
        with atomic_path(target) as partial, gzip.open(VENDORED_DIR / f"{name}.gz", "rb") as source, \
                partial.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)


def ensure_mnist(data_dir: Path, download: bool) -> tuple[Path, str, dict[str, dict[str, str]]]:
    """Make sure DATA_DIR/MNIST/raw holds the four verified files; say where they came from."""
    raw_dir = data_dir / "MNIST" / "raw"
    present = [name for name in CHECKSUMS if (raw_dir / name).is_file()]
    try:
        if len(present) == len(CHECKSUMS):
            source = "data_dir"
        elif all((VENDORED_DIR / f"{name}.gz").is_file() for name in CHECKSUMS):
            unpack_vendored(raw_dir)
            source = "vendored"
        elif download:
            from torchvision.datasets import MNIST  # ~1 s of imports (torch._dynamo), paid only to download

            MNIST(str(data_dir), train=True, download=True)
            MNIST(str(data_dir), train=False, download=True)
            source = "download"
        else:
            raise DataError(f"MNIST not found: put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (uncompressed) in {raw_dir}, "
                            f"or set LENET_DOWNLOAD=true")
    except DataError:
        raise
    except Exception as error:  # a download or unpack failure, whatever its type
        raise DataError(f"could not obtain MNIST in {raw_dir} ({type(error).__name__}: {error}); put the four "
                        f"uncompressed IDX files there") from error
    return raw_dir, source, verify(raw_dir)


def read_idx(path: Path, dimensions: int) -> torch.Tensor:
    """An IDX file of unsigned bytes (magic 0x0000080N, N = number of dimensions, then each size as a big-endian
    int32), as MNIST ships it. Read here rather than by torchvision, whose import costs ~1 s of start-up."""
    data = path.read_bytes()
    header = 4 * (1 + dimensions)
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + dimensions or len(data) < header:
        raise DataError(f"{path} is not an IDX file of {dimensions}-dimensional unsigned bytes")
    shape = [int.from_bytes(data[4 * i:4 * i + 4], "big") for i in range(1, 1 + dimensions)]
    if len(data) != header + math.prod(shape):
        raise DataError(f"{path} holds {len(data) - header} bytes of data, its header says {shape}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def read_split(data_dir: Path, train: bool, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    raw_dir = data_dir / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    images = read_idx(raw_dir / f"{prefix}-images-idx3-ubyte", 3)
    labels = read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", 1)  # shapes: the checksums (verify) fix them
    return images[:limit], labels[:limit].long()


def to_split(images: torch.Tensor, labels: torch.Tensor, normalize: bool) -> Split:
    """The tensor equivalent of ToTensor (uint8 HxW -> float 1xHxW in [0, 1]), then optional standardization."""
    pixels = images.unsqueeze(1).float().div_(255)
    if normalize:
        pixels.sub_(MNIST_MEAN).div_(MNIST_STD)
    return Split(pixels, labels.long())


def load_mnist(data_dir: Path, *, download: bool, normalize: bool,
               train_limit: int | None = None, test_limit: int | None = None) -> MnistData:
    try:
        raw_dir, source, files = ensure_mnist(data_dir, download)
        train = to_split(*read_split(data_dir, True, train_limit), normalize)
        test = to_split(*read_split(data_dir, False, test_limit), normalize)
    except OSError as error:  # a file this user may not read: the input's problem, not the outputs'
        raise DataError(f"cannot read {printable(error.filename or data_dir)}: {error.strerror or error} (allowed: "
                        f"a LENET_DATA_DIR whose MNIST/raw files this user can read)") from None
    return MnistData(train, test, source, raw_dir, files)


def batches(split: Split, batch_size: int, generator: torch.Generator | None = None):
    """Yield (images, labels) batches by indexing; shuffled when a generator is given."""
    n = len(split)
    order = torch.randperm(n, generator=generator, device=generator.device) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            yield split.images[start:start + batch_size], split.labels[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield split.images[index], split.labels[index]
