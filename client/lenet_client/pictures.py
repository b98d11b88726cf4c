"""Which files are pictures, and opening one: safely (size limits before decoding, no waiting on pipes), with one
line that names the file when it cannot be. lenet-predict and the job's LENET_EXTRA_DATA read pictures only here."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lenet_client.preprocess import DAMAGED_HEADER_ERRORS, MAX_PIXELS, MAX_SIDE, MIN_SIDE, WORK_SIDE, fit_size
from lenet_client.text import printable

# What cameras, phones, browsers and scanners save, and Pillow reads: .jfif is a JPEG as Windows browsers save it,
# .avif what sites serve, .pgm/.ppm/.pbm/.pnm what scanners (SANE) write. HEIC, an iPhone's default, needs a plugin.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".avif",
                    ".jp2", ".pgm", ".ppm", ".pbm", ".pnm")
UNREADABLE_SUFFIXES = (".heic", ".heif")  # listed from folders all the same, so that they are named, not passed over
LARGEST_PICTURE_FILE = 1 << 30  # larger files are not pictures to read or hash (a sparse 64 GB file, a video)


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (a large file is never held whole)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class PictureError(Exception):
    """A picture that cannot be read; the message is one line that names the file."""


def picture_paths(paths: list[Path]) -> list[Path]:
    """Each path as given; a folder becomes the pictures directly in it, sorted by name."""
    expanded = []
    for path in paths:
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir()
                               if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES + UNREADABLE_SUFFIXES)
            except OSError:  # a folder this user may not list: it stays, and open_picture names the problem
                found = []
            expanded += found or [path]  # an empty folder stays, to be reported as such
        else:
            expanded.append(path)
    return expanded


def open_picture(path: Path) -> Image.Image:
    """The picture, decoded. A JPEG (what cameras and phones save) is decoded reduced, by a power of two that keeps
    its longer side at least WORK_SIDE (the preprocessing works at that size anyway): a 12-megapixel photo is read
    at 1/8, in a fraction of the time and memory. What would still be too large once
    decoded is refused from its header, before decoding (a decompression bomb)."""
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise PictureError(f"{printable(path)}: a folder this user may not list (Permission denied)")
        raise PictureError(f"{printable(path)}: a folder with no pictures ({', '.join(PICTURE_SUFFIXES)})")
    if path.exists() and not path.is_file():  # reading a pipe would wait for a writer forever
        raise PictureError(f"{printable(path)}: not a regular file (a pipe, a socket or a device; allowed: picture "
                           f"files)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on a damaged EXIF block: not the user's
            image = opened_as_jpeg(path)
            if image is None:
                image = Image.open(path)
            try:
                decoded(image, path)
            except BaseException:
                image.close()
                raise
    except FileNotFoundError:
        raise PictureError(f"{printable(path)}: no such file") from None
    except UnidentifiedImageError:
        hint = " (HEIC, an iPhone camera's format, is not: save it as JPEG)" if \
            path.suffix.lower() in UNREADABLE_SUFFIXES else ""
        raise PictureError(f"{printable(path)}: not a picture that Pillow can read{hint}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PictureError(too_large(path)) from None  # over Pillow's own bound, refused by Image.open
    except (OSError, SyntaxError, ValueError) as error:  # truncated or damaged files, unreadable ones
        raise PictureError(f"{printable(path)}: cannot be read: {error}") from None
    return image


def decoded(image: Image.Image, path: Path) -> None:
    """Decode `image` in place: a JPEG reduced, as far as keeps the longer side at least WORK_SIDE (and the shorter at
    least MIN_SIDE), to its gray (luma) channel when it has one; anything too large once decoded is refused first. A
    progressive JPEG is not reduced where it counts: its decoder holds every coefficient of the full picture, so it
    is bounded as any other."""
    width, height = image.size  # read from the header: nothing is decoded yet
    if max(width, height) > MAX_SIDE:
        raise PictureError(too_large(path, width, height))
    if image.format == "JPEG" and not image.info.get("progressive"):
        least_height, least_width = (max(MIN_SIDE, side) for side in fit_size(height, width, WORK_SIDE))
        image.draft("L" if image.mode in ("L", "RGB") else image.mode, (least_width, least_height))
    if image.size[0] * image.size[1] > MAX_PIXELS:  # image.size: what the decoder will produce, after draft
        raise PictureError(too_large(path, width, height))
    image.load()


JPEG_START = b"\xff\xd8\xff"


def opened_as_jpeg(path: Path) -> Image.Image | None:
    """A file that starts as a JPEG does, opened by Pillow's JPEG plugin itself, whatever its name (an MPO, a
    camera's JPEG with extra frames, gives its first); None for any other file. Image.open would refuse a JPEG over
    Pillow's general decompression-bomb bound (89 megapixels) from its full size, before it could be decoded
    reduced: open_picture bounds its size instead, once reduced. A damaged header is not a picture."""
    with open(path, "rb") as file:
        if file.read(3) != JPEG_START:
            return None
    from PIL import JpegImagePlugin

    try:
        return JpegImagePlugin.JpegImageFile(path)
    except DAMAGED_HEADER_ERRORS:
        raise UnidentifiedImageError(f"cannot identify image file {path}") from None


def too_large(path: Path, width: int | None = None, height: int | None = None) -> str:
    size = f", {width}x{height} = {width * height:,} pixels" if width and height else ""
    return (f"{printable(path)}: too large{size} (allowed: a JPEG up to {MAX_SIDE:,} on each side, read reduced; "
            f"a progressive JPEG or any other picture up to {MAX_PIXELS:,} pixels, each side up to {MAX_SIDE:,})")
