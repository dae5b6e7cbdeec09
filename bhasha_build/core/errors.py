"""The one base class of every user-facing failure.

A `BhashaError` carries a message that is already one line a user can act on (it names the file,
line or host and the reason). `tasks.py` and the torchrun entry (`stages/launch.py`) catch this class
and nothing narrower, print `error: <message>` and exit 1; anything else is a bug and keeps its
traceback. Each module defines its own subclass (ConfigError, DataError, TrainError, ...), so a
caller can still catch one kind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class BhashaError(Exception):
    """A failure phrased as one line for the user; never shown with a traceback."""


class StaleArtifactError(BhashaError):
    """An input artifact is missing, or is not the file its producer recorded in the manifest."""


class WriteError(BhashaError):
    """A write into the run folder failed (disk full, read-only, no permission); names the path."""


def first_line(exc: BaseException) -> str:
    """What a report or the manifest records of a failure: its message's first line (at most 500
    characters), or the exception's class name when it has no message (Ctrl-C)."""
    return str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__


def exit_status(body: Callable[..., int], *args: Any) -> int:
    """A module CLI's main: run `body`; a BhashaError becomes `error: <line>` on stderr and status 1."""
    try:
        return body(*args)
    except BhashaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
