"""Labelled pictures beyond MNIST (LENET_EXTRA_DATA), for retraining that has something new to learn.

The folder has torchvision's ImageFolder layout: DIR/0/ ... DIR/9/, each holding pictures of that digit, in
nested folders if wanted (`lenet-predict --sort-into DIR` makes it). Every picture goes through the contract's
preprocessing, the predictor's own code (lenet_client.preprocess.to_mnist), to a 28x28 MNIST-style image.

- Cached by content: CACHE/<preprocessing method>/<sha256>.npy, so a nightly run preprocesses only new pictures.
  The cache only saves time: an entry that cannot be read is made again, and a cache that cannot be written (a
  read-only data folder, a full disk) is named in `ExtraData.cache_problem` while every picture is still used.
- Split by content: a picture is in the holdout when its hash says so (about 1 in 5), so no picture ever moves
  from the holdout into training as the folder grows.
- DIR/unsure/ (where `lenet-predict --sort-into` puts the pictures the model was unsure of) holds pictures waiting
  for a person to label them: not trained on, only counted.
- The same picture twice counts once; the same picture under two labels is a conflict, left out and listed.
- A file that cannot be read, is not a picture or holds no digit is skipped and listed with its reason; a folder
  that is missing, empty, has a class folder other than 0-9, or where more than `max_bad_share` of the files are
  bad, is an ExtraDataError (the job's data problem, before any training).
- Training sees MNIST's training images and the extra training pictures, repeated so that they are
  LENET_EXTRA_SHARE of each epoch's images: a folder of a few hundred pictures still matters against 60,000.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lenet_client.atomic import atomic_path
from lenet_client.pictures import LARGEST_PICTURE_FILE, file_hash
from lenet_client.sort import CLASSES, UNSURE
from lenet_client.text import printable

if TYPE_CHECKING:
    from job.settings import Settings
    from job.training.data import MnistData

HOLDOUT_EVERY = 5  # a picture whose hash is 0 modulo this is in the holdout: about 20 %


class ExtraDataError(ValueError):
    """The extra data folder as a whole cannot be used; the message says what is wrong and what is allowed."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class ExtraData:
    train_images: np.ndarray  # uint8 [N, 28, 28], white digit on black, as MNIST's files
    train_labels: np.ndarray  # int64 [N]
    holdout_images: np.ndarray
    holdout_labels: np.ndarray
    version: str  # sha256 over the sorted (content hash, label) pairs of the pictures used
    skipped: list[Skipped] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)  # {"sha256", "labels", "paths"}
    cache_problem: str | None = None  # why the preprocessed pictures could not be cached, if they could not
    waiting: int = 0  # files in DIR/unsure/: not labelled yet

    def counts(self) -> dict[str, dict[str, int]]:
        """Pictures per digit in training and in the holdout."""
        return {name: {str(d): int((labels == d).sum()) for d in range(10)}
                for name, labels in (("train", self.train_labels), ("holdout", self.holdout_labels))}


def in_holdout(content_hash: str) -> bool:
    return int(content_hash[:16], 16) % HOLDOUT_EVERY == 0


def class_folders(folder: Path) -> list[Path]:
    """The folders 0-9 of `folder`. One that is there but cannot be read (a link to a drive not mounted, a file,
    a folder this user may not list) stops the run: a digit's pictures would be lost without a word."""
    if not folder.is_dir():
        raise ExtraDataError(f"LENET_EXTRA_DATA={printable(folder)}: no such folder (allowed: a folder with "
                             f"subfolders 0-9 of pictures)")
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as error:
        raise ExtraDataError(f"LENET_EXTRA_DATA={printable(folder)}: cannot be listed ({error.strerror})") from None
    strangers = [p.name for p in entries if p.is_dir() and p.name not in (*CLASSES, UNSURE)]
    if strangers:
        raise ExtraDataError(f"LENET_EXTRA_DATA={printable(folder)}: class folder {printable(strangers[0])} is not a "
                             f"digit (allowed: subfolders named 0-9, one per digit, and {UNSURE}/ for pictures not "
                             f"labelled yet)")
    for entry in (p for p in entries if p.name in CLASSES):
        problem = unreadable(entry)
        if problem:
            raise ExtraDataError(f"LENET_EXTRA_DATA={printable(folder)}: class folder {entry.name} {problem}; its "
                                 f"pictures would be left out (allowed: a folder of pictures this user can read)")
    return [p for p in entries if p.is_dir() and p.name in CLASSES]


def unreadable(class_folder: Path) -> str | None:
    """Why a class folder's pictures cannot be read, or None."""
    if class_folder.is_symlink() and not class_folder.exists():
        return f"is a link to {printable(os.readlink(class_folder))}, which does not exist (a drive not mounted?)"
    if not class_folder.is_dir():
        return "is a file, not a folder"
    if not os.access(class_folder, os.R_OK | os.X_OK):
        return "is a folder this user may not list (Permission denied)"
    return None


def files_under(class_folder: Path) -> tuple[list[Path], list[Skipped]]:
    """Every file under `class_folder`, linked sub-folders followed (each real folder once), and as Skipped entries
    that name them: each sub-folder that cannot be listed, and each link to a folder that holds this one or lies
    elsewhere in the labelled folder (a link to `..` would label every other digit's pictures as this one's)."""
    found: list[Path] = []
    unlisted: list[Skipped] = []
    labelled = os.path.realpath(class_folder.parent)
    own = os.path.realpath(class_folder)
    seen: set[str] = set()

    def not_listed(error: OSError) -> None:
        unlisted.append(Skipped(str(error.filename), f"a folder that cannot be listed ({error.strerror}): its "
                                                     f"pictures are left out"))

    def elsewhere(real: str) -> bool:
        within = real == own or real.startswith(own + os.sep)
        return not within and (real == labelled or real.startswith(labelled + os.sep) or
                               labelled.startswith(real + os.sep))

    for root, folders, files in os.walk(class_folder, followlinks=True, onerror=not_listed):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree: walked once
            folders[:] = []
            continue
        seen.add(real)
        kept = []
        for name in sorted(folders):
            if name.startswith("."):
                continue
            if elsewhere(os.path.realpath(os.path.join(root, name))):
                unlisted.append(Skipped(os.path.join(root, name), "a link to a folder outside this digit's (another "
                                                                  "digit's, or one that holds them): left out"))
                continue
            kept.append(name)
        folders[:] = kept
        found += [Path(root) / name for name in sorted(files) if not name.startswith(".")]
    return found, unlisted


class PictureCache:
    """The pictures' 28x28 images by content hash. Reading it falls back to preprocessing; after the first write that
    fails, it stops writing and keeps the reason in `problem`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problem: str | None = None

    def picture(self, path: Path, content_hash: str) -> np.ndarray:
        """The picture's 28x28 image, from the cache or made now by the predictor's own code (and cached)."""
        from lenet_client.pictures import open_picture
        from lenet_client.preprocess import to_mnist

        cached = self.folder / f"{content_hash}.npy"
        pixels = self.read(cached)
        if pixels is not None:
            return pixels
        pixels = to_mnist(open_picture(path))
        if self.problem is None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                with atomic_path(cached) as partial, partial.open("wb") as stream:
                    np.save(stream, pixels)
            except OSError as error:
                self.problem = f"{printable(self.folder)} cannot be written ({error.strerror or error})"
        return pixels

    @staticmethod
    def read(cached: Path) -> np.ndarray | None:
        """A cached image, or None where there is none or it is not a 28x28 uint8 array (damaged, or not ours)."""
        if not cached.is_file():  # reading a pipe would wait for a writer forever
            return None
        try:  # mapped, so that a damaged header's huge shape is refused before anything is read
            pixels = np.load(cached, mmap_mode="r", allow_pickle=False)
            if not (isinstance(pixels, np.ndarray) and pixels.shape == (28, 28) and pixels.dtype == np.uint8):
                return None
            return np.array(pixels)
        except (OSError, ValueError, EOFError):  # unreadable, truncated, or not a .npy file
            return None


def why_not_a_picture(path: Path) -> str | None:
    """Why `path` is not even tried as a picture, or None."""
    from lenet_client.pictures import PICTURE_SUFFIXES, UNREADABLE_SUFFIXES

    if not path.is_file():  # reading a pipe would wait for a writer forever
        return "not a regular file (a pipe, a socket, a device or a broken link)"
    if path.suffix.lower() not in PICTURE_SUFFIXES + UNREADABLE_SUFFIXES:  # HEIC: named as unreadable
        return f"not a picture file (allowed: {' '.join(PICTURE_SUFFIXES)})"
    if path.stat().st_size > LARGEST_PICTURE_FILE:  # a sparse 64 GB file would be read whole to hash it
        return f"larger than any picture ({path.stat().st_size:,} bytes; allowed: up to {LARGEST_PICTURE_FILE:,})"
    return None


def load_extra(folder: Path, cache_dir: Path, max_bad_share: float = 0.2,
               check_stop: Callable[[], None] = lambda: None) -> ExtraData:
    from lenet_client.pictures import PictureError
    from lenet_client.preprocess import METHOD, NoDigitError

    cache = PictureCache(cache_dir / METHOD.replace(" ", "-"))
    by_hash: dict[str, dict] = {}
    skipped, files = [], 0
    for class_folder in class_folders(folder):
        label = int(class_folder.name)
        paths, unlisted = files_under(class_folder)
        skipped += unlisted
        files += len(unlisted)
        for path in paths:
            files += 1
            check_stop()  # a first night preprocesses a whole new folder: a stop must not wait for all of it
            try:
                reason = why_not_a_picture(path)
                if reason:
                    skipped.append(Skipped(str(path), reason))
                    continue
                content_hash = file_hash(path)
                if content_hash not in by_hash:
                    by_hash[content_hash] = {"labels": set(), "paths": [],
                                             "pixels": cache.picture(path, content_hash)}
            except PictureError as error:
                skipped.append(Skipped(str(path), str(error).split(": ", 1)[-1]))
                continue
            except NoDigitError as error:
                skipped.append(Skipped(str(path), str(error)))
                continue
            except OSError as error:
                skipped.append(Skipped(str(path), f"cannot be read ({error.strerror or error})"))
                continue
            by_hash[content_hash]["labels"].add(label)
            by_hash[content_hash]["paths"].append(str(path))
    waiting = sum(1 for p in (folder / UNSURE).rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if (folder / UNSURE).is_dir() else 0
    if files == 0:
        unsure = f"; {waiting} in {UNSURE}/ wait for a person to move each into its digit's folder" if waiting else ""
        raise ExtraDataError(f"LENET_EXTRA_DATA={printable(folder)}: holds no labelled pictures{unsure} (allowed: "
                             f"pictures in subfolders 0-9)")
    if len(skipped) > max_bad_share * files:
        raise ExtraDataError(f"LENET_EXTRA_DATA={printable(folder)}: {len(skipped)} of {files} files cannot be used "
                             f"(more than {max_bad_share:.0%}; the first: {printable(skipped[0].path)}: "
                             f"{skipped[0].reason})")
    conflicts = [{"sha256": h, "labels": sorted(e["labels"]), "paths": e["paths"]}
                 for h, e in sorted(by_hash.items()) if len(e["labels"]) > 1]
    used = sorted((h, next(iter(e["labels"])), e["pixels"]) for h, e in by_hash.items() if len(e["labels"]) == 1)
    version = hashlib.sha256("".join(f"{h} {label}\n" for h, label, _ in used).encode()).hexdigest()

    def stack(rows):
        images = np.stack([pixels for _, _, pixels in rows]) if rows else np.zeros((0, 28, 28), np.uint8)
        return images, np.array([label for _, label, _ in rows], dtype=np.int64)

    train_images, train_labels = stack([row for row in used if not in_holdout(row[0])])
    holdout_images, holdout_labels = stack([row for row in used if in_holdout(row[0])])
    return ExtraData(train_images, train_labels, holdout_images, holdout_labels, version, skipped, conflicts,
                     cache.problem, waiting)


def too_few_held_out(held_out: int, minimum: int) -> str | None:
    """Why a model retrained with these extra pictures cannot be judged on pictures of their kind, or None."""
    if held_out >= minimum:
        return None
    return (f"{held_out} pictures held out, fewer than LENET_EXTRA_MIN_HOLDOUT={minimum}: too few to judge a "
            f"retrained model on pictures of their kind (about 1 picture in {HOLDOUT_EVERY} is held out, by its "
            f"content: label about {HOLDOUT_EVERY * minimum} or more)")


def repeats_for(share: float, mnist_images: int, extra_images: int) -> int:
    """How many times the extra training pictures are repeated so that they are about `share` of an epoch."""
    return max(1, round(share / (1 - share) * mnist_images / extra_images))


def with_extra(data: MnistData, extra: ExtraData, share: float, normalize: bool) -> tuple[MnistData, int]:
    """MNIST's training set followed by the extra training pictures (repeated), and the extra holdout; the
    repeat count."""
    import torch

    from job.training.data import Split, to_split

    holdout = to_split(torch.from_numpy(extra.holdout_images), torch.from_numpy(extra.holdout_labels), normalize)
    if not len(extra.train_labels):
        return replace(data, extra_holdout=holdout), 0
    pictures = to_split(torch.from_numpy(extra.train_images), torch.from_numpy(extra.train_labels), normalize)
    repeats = repeats_for(share, len(data.train), len(pictures))
    train = Split(torch.cat([data.train.images, pictures.images.repeat(repeats, 1, 1, 1)]),
                  torch.cat([data.train.labels, pictures.labels.repeat(repeats)]))
    return replace(data, train=train, extra_holdout=holdout), repeats


def load_run_data(settings: Settings, normalize: bool,
                  check_stop: Callable[[], None] = lambda: None) -> tuple[MnistData, ExtraData | None, int]:
    """MNIST, with the extra pictures mixed in when LENET_EXTRA_DATA is set: (data, the extra pictures or None,
    their repeat count). An unusable extra folder is a DataError, like damaged MNIST files."""
    from job.training.data import DataError, load_mnist

    data = load_mnist(settings.data_dir, download=settings.download, normalize=normalize,
                      train_limit=settings.train_limit, test_limit=settings.test_limit)
    if settings.extra_data is None:
        return data, None, 0
    try:
        extra = load_extra(settings.extra_data, settings.data_dir / "extra-cache", settings.extra_max_bad_share,
                           check_stop)
    except ExtraDataError as error:
        raise DataError(str(error)) from None
    mixed, repeats = with_extra(data, extra, settings.extra_share, normalize)
    return mixed, extra, repeats
