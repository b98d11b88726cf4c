"""File names and values as one line of text, whatever bytes they hold.

A file name on Linux is bytes: Python hands undecodable ones over as lone surrogates (PEP 383), and a name may
hold a newline or a tab. Shown raw, such a name breaks a message or a table row in two, or makes `print` raise on
a terminal whose encoding cannot show it. Shown through `printable`, it is quoted as a Python string literal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TextIO


def printable(value: object) -> str:
    """`value` as a message shows it: as is when every character is printable, else quoted (repr), so that the
    message stays one line and `os.fsencode(ast.literal_eval(shown))` gives the name's bytes back."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def discard(stream: TextIO) -> None:
    """From now on what is written to `stream` goes nowhere: its reader went away (a closed pipe, a terminal that
    hung up), and every further write, Python's own flush at exit included, would fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def tolerant_output() -> None:
    """Printable characters that the terminal's encoding lacks (an `é` on an ASCII or Latin-1 terminal, a CJK name on
    Latin-1) come out as backslash escapes instead of ending the program with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def complain(line: str) -> None:
    """`line` on stderr. A stderr that is full or closed (`2>/dev/full`, `2>&-`) loses the line, never the exit status
    the caller goes on to return, and never sends it to stdout (where print's file=None would, into --json)."""
    if sys.stderr is None:
        return
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # ValueError: a stream closed in this process
        with contextlib.suppress(OSError, ValueError):
            discard(sys.stderr)
