"""`lenet-predict --sort-into DIR`: copy each picture read into DIR/<digit read>/, the folder-per-class layout
(torchvision's ImageFolder) that a retraining job reads as labelled data, or into DIR/unsure/ where the model was
unsure. A person then labels those, and corrects misread ones, by moving each into its digit's folder.

A picture is copied once: one that lies in a digit's folder or unsure/ of DIR, or whose bytes are already anywhere
under DIR (sorted before, perhaps moved by a person since; the pictures being sorted themselves aside), is not
copied again, so running the sort again never undoes a correction. Copies keep the picture's name; a different
picture of the same name in that folder gets its content hash added to the name.
Copies are whole or absent (lenet_client.atomic); nothing under DIR is ever overwritten or removed, not even by
two sorts into DIR at once (a copy takes its name only if it is free).
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

from lenet_client.atomic import fit_name, write_bytes_atomically
from lenet_client.pictures import LARGEST_PICTURE_FILE, file_hash
from lenet_client.text import printable


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CLASSES = tuple(str(digit) for digit in range(10))  # the digits' folders (LENET_EXTRA_DATA reads the same)
UNSURE = "unsure"  # the folder of pictures the model was unsure of: a person labels them (LENET_EXTRA_DATA skips it)


def sorted_pictures(folder: Path, sources: set[Path]) -> dict[str, Path]:
    """content hash -> path of every file already under `folder` that this user can read, except the pictures being
    sorted now (`sources`: an inbox sorted into itself holds them). A file over LARGEST_PICTURE_FILE is passed
    over unread."""
    known: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        try:
            if path.is_file() and not path.name.startswith(".") and path.resolve() not in sources and \
                    path.stat().st_size <= LARGEST_PICTURE_FILE:
                known.setdefault(file_hash(path), path)
        except OSError:  # a file this user may not read cannot be compared; it stays as it is
            continue
    return known


def in_a_class_folder(path: Path, folder: Path) -> bool:
    """Whether the picture lies in one of folder's digit folders or in its unsure/ folder (not in the folder itself,
    an inbox sorted into itself)."""
    place = path.resolve().parent
    return place.parent == folder.resolve() and place.name in (*CLASSES, UNSURE)


def sort_into(results: list[dict], folder: Path) -> None:
    """Copy the picture of every result that has a digit into folder/<digit>/, or folder/unsure/ where the model was
    unsure; record where in result["sorted_into"] (and result["already_sorted"] = True when its bytes were already
    there), or why it could not be copied in result["sort_error"]. Raises OSError when `folder` cannot be made."""
    folder.mkdir(parents=True, exist_ok=True)
    known = sorted_pictures(folder, {Path(r["path"]).resolve() for r in results if "digit" in r})
    for result in (r for r in results if "digit" in r):
        try:
            copy_one(result, folder, known)
        except OSError as error:  # this picture's problem (a name too long here, a full disk): its own line
            where = f": {printable(error.filename)}" if error.filename else ""
            result["sort_error"] = (f"{printable(result['path'])}: cannot be copied into {printable(folder)} "
                                    f"({error.strerror or error}{where})")


def copy_one(result: dict, folder: Path, known: dict[str, Path]) -> None:
    source = Path(result["path"])
    if in_a_class_folder(source, folder):  # sorted before, or put there by a person: where it belongs
        result.update(sorted_into=str(source), already_sorted=True)
        return
    if source.stat().st_size > LARGEST_PICTURE_FILE:  # a picture with gigabytes after its end: not held whole
        raise OSError(errno.EFBIG, f"larger than any picture ({source.stat().st_size:,} bytes; allowed: up to "
                                   f"{LARGEST_PICTURE_FILE:,})")
    data = source.read_bytes()
    digest = content_hash(data)
    if digest in known:
        result.update(sorted_into=str(known[digest]), already_sorted=True)
        return
    target = folder / (UNSURE if result.get("unsure") else str(result["digit"])) / source.name
    target.parent.mkdir(exist_ok=True)
    try:
        write_bytes_atomically(target, data, replace=False)
        already = False
    except FileExistsError:  # a different picture of that name, there before or put there by a sort running now
        target = target.with_name(fit_name(source.stem, f"-{digest[:12]}{source.suffix}"))
        try:
            write_bytes_atomically(target, data, replace=False)
            already = False
        except FileExistsError:  # the same name and content hash: this picture, sorted by another run just now
            already = True
    known[digest] = target
    result.update(sorted_into=str(target), already_sorted=already)
