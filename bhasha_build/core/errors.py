"""The one base class of every user-facing failure.

A `BhashaError` carries a message that is already one line a user can act on (it names the file,
line or host and the reason). Its message is scrubbed of secrets when it is made (`scrub`): a bearer
token, any `Authorization` value, a URL's user-info and query string, `token=`-like parameters and
every value registered with `register_secret` (the Ollama client registers its token) become `***`,
so no report, manifest or log line that quotes an error can carry them (a server or proxy error body
that echoes the request's headers included). `first_line` scrubs any other exception's text too.

`tasks.py` and the torchrun entry (`stages/launch.py`) catch this class and nothing narrower, print
`error: <message>` and exit 1; anything else is a bug and keeps its traceback. Each module defines
its own subclass (ConfigError, DataError, TrainError, ...), so a caller can still catch one kind.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

MASK = "***"
_secrets: set[str] = set()
_SCRUBS = (
    # Authorization / Proxy-Authorization headers, as text, JSON or a Python repr: the whole value
    (re.compile(r"(?i)\b((?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)[^\"',;}\]\r\n]*"), rf"\1{MASK}"),
    (re.compile(r"\b((?i:bearer)|Basic)(\s+)(?!(?i:header|token|auth|scheme)s?\b)[A-Za-z0-9._~+/=-]+"),
     rf"\1\2{MASK}"),
    # user-info of a URL (a password may hold a '/': everything from :// to the last @ of the word)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s\"'<>@]*@"), rf"\1{MASK}@"),
    # query strings (and fragments) of URLs
    (re.compile(r"(?i)\b(https?://[^\s\"'<>?#]*)[?#][^\s\"'<>]*"), rf"\1?{MASK}"),
    # key=value pairs that name a secret, wherever they stand
    (re.compile(r"(?i)(?<![\w.-])((?:access[_-]?|api[_-]?|auth[_-]?|refresh[_-]?|id[_-]?)?(?:token|key|secret|"
                r"password|passwd|pwd|sig|signature|auth)=)[^\s&'\"<>]+"), rf"\1{MASK}"),
)


def register_secret(value: str | None) -> None:
    """A value (a token) that `scrub` replaces wherever it appears, for the rest of the process."""
    if value and len(value.strip()) >= 4:
        _secrets.add(value.strip())


def scrub(text: str) -> str:
    """`text` with every secret it may hold replaced by ``***`` (module docstring)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _SCRUBS:
        text = pattern.sub(replacement, text)
    return text


class BhashaError(Exception):
    """A failure phrased as one line for the user; never shown with a traceback. Its message is
    scrubbed of secrets (`scrub`) when it is made."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class StaleArtifactError(BhashaError):
    """An input artifact is missing, or is not the file its producer recorded in the manifest."""


class WriteError(BhashaError):
    """A write into the run folder failed (disk full, read-only, no permission); names the path."""


def first_line(exc: BaseException) -> str:
    """What a report or the manifest records of a failure: its message's first line (at most 500
    characters), or the exception's class name when it has no message (Ctrl-C)."""
    return scrub(str(exc)).splitlines()[0][:500] if str(exc) else type(exc).__name__


def exit_status(body: Callable[..., int], *args: Any) -> int:
    """A module CLI's main: run `body`; a BhashaError becomes `error: <line>` on stderr and status 1."""
    try:
        return body(*args)
    except BhashaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
