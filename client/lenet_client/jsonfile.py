"""JSON files that a person, a full disk or another program may have damaged (latest.json, model.json)."""

from __future__ import annotations

import json
from pathlib import Path


def read_regular_text(path: Path) -> str:
    """The UTF-8 text of `path`; ValueError when it is not a regular file or not UTF-8, OSError when it cannot be
    opened."""
    if path.exists() and not path.is_file():  # reading a pipe would wait for a writer forever
        raise ValueError("not a regular file (a folder, a pipe, a socket or a device)")
    return path.read_text(encoding="utf-8")  # UnicodeDecodeError is a ValueError


def read_json(path: Path) -> object:
    """The JSON value in `path`. A file that is not a regular one, not UTF-8, not JSON, or nested deeper than the
    parser's recursion allows is a ValueError that says which; a file that cannot be opened is the OSError open
    gives."""
    text = read_regular_text(path)
    try:
        return json.loads(text)
    except RecursionError:  # json's C parser recurses once per nested [ or {
        raise ValueError("nested too deeply to be JSON this job wrote") from None
