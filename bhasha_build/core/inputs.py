"""Users' input files, read where they are and never written: the checks `invoke correct` makes before
it reads or writes anything.

    check_paths(src, out)        the output folder and the input never overlap, in either direction
                                 (paths compared resolved: symlinks and `..` cannot hide an overlap),
                                 and the output can be a folder (not a file, not under a file)
    make_output(out)             create the output folder, or one line saying why it cannot be
    read_input(path)             a regular file's bytes, never through a symlink swapped in after the walk
    walk(src, suffixes)          the input files (a file, or a folder searched recursively) as
                                 (path, relative name) and the entries skipped, each with its reason:
                                 a symlink is never followed (not out of the input, not in a loop),
                                 a name that is not UTF-8, something that is not a regular file
    text_problem(data)           why bytes are not UTF-8 text (a UTF-16/UTF-32 BOM, NUL bytes, an
                                 invalid UTF-8 sequence, with its line and byte), None when they are
    windows(text, size)          a long text cut into (chunk, separator) of at most `size` characters at
                                 sentence ends, else spaces, else grapheme boundaries, without looking
                                 at more than one window at a time: the cut on size that comes before
                                 any tokenizing, so a 50 MB line costs its length, not its square

Every failure is an ``InputError`` (a BhashaError): one line naming the path and the reason.
Knobs: none (callers pass the suffixes and the window size).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import regex

from bhasha_build.core.errors import BhashaError

_SENTENCE_END = regex.compile(r"(?<=[।॥|.?!])\s+")
_SPACES = regex.compile(r"\s+")
_GRAPHEME = regex.compile(r"\X")
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


class InputError(BhashaError):
    """An input or output path that cannot be used as given (one line)."""


def shown(path: str | Path) -> str:
    """A path as text that can always be printed and written as UTF-8 (undecodable bytes as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_is_utf8(path: str | Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # a byte of the name that is not UTF-8 (surrogate-escaped by the OS layer)
        return False
    return True


def check_paths(src: Path, out: Path) -> None:
    """Refuse an output folder that overlaps the input (either way round) or cannot be a folder."""
    try:
        src_r, out_r = src.resolve(), out.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop in either path (3.11 raises RuntimeError)
        raise InputError(f"{shown(src)} -> {shown(out)}: cannot resolve the paths ({exc})") from None
    if src.is_file() or not src.is_dir():  # one file: the output must not hold it (or replace it)
        if out_r == src_r or src_r.is_relative_to(out_r):
            raise InputError(f"{shown(out)}: the output folder must not be the input's folder or contain the "
                             f"input {shown(src)} (outputs would replace or mix with it); choose another --out")
    elif out_r == src_r or out_r.is_relative_to(src_r) or src_r.is_relative_to(out_r):
        where = "is the input" if out_r == src_r else ("is inside the input" if out_r.is_relative_to(src_r)
                                                     else "contains the input")
        raise InputError(f"{shown(out)}: the output folder {where} {shown(src)}: input and output must not "
                         "overlap (inputs are never written); choose a --out outside it")
    check_output(out)


def check_output(out: Path) -> None:
    """The output can be a folder: it is one, or its nearest existing parent is a folder."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{shown(out)}: exists and is not a folder; --out must be a folder")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{shown(out)}: {shown(parent)} is a file, not a folder; --out must be a folder")
            break


def make_output(out: Path) -> None:
    """Create the output folder (and its parents), or one line saying why it cannot be."""
    check_output(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{shown(out)}: cannot create the output folder ({exc.strerror or type(exc).__name__})"
                         ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"{shown(out)}: the output folder is not writable")


def walk(src: Path, suffixes: tuple[str, ...]) -> tuple[list[tuple[Path, str]], list[str]]:
    """(path, relative name) of every regular file with one of `suffixes`, sorted, and the skipped
    entries as "relative name: reason". A folder is walked without following any symlink in it; a
    single file given by name is read even through a symlink (the user named it)."""
    if not src.exists():
        raise InputError(f"{shown(src)}: input not found")
    if not src.is_dir():
        if not name_is_utf8(src.name):
            raise InputError(f"{shown(src)}: the file name is not UTF-8; rename it to correct it")
        if not src.is_file():
            raise InputError(f"{shown(src)}: not a regular file")
        return [(src, src.name)], []
    root = src.resolve()
    files: list[tuple[Path, str]] = []
    skipped: list[str] = []

    def unreadable(exc: OSError) -> None:
        rel = Path(exc.filename).relative_to(root) if exc.filename else Path(".")
        skipped.append(f"{shown(rel)}: folder not readable ({exc.strerror}); skipped")

    for folder, dirs, names in os.walk(root, onerror=unreadable):  # never descends into a symlinked folder
        here = Path(folder)
        for name in sorted(dirs):
            path = here / name
            rel = path.relative_to(root)
            if path.is_symlink():
                skipped.append(f"{shown(rel)}: symlink to a folder, not followed (inputs are read where they are)")
                dirs.remove(name)
            elif not name_is_utf8(name):
                skipped.append(f"{shown(rel)}: folder name is not UTF-8; skipped (rename it)")
                dirs.remove(name)
        for name in names:
            if not name.lower().endswith(suffixes):
                continue
            path = here / name
            rel = path.relative_to(root)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                skipped.append(f"{shown(rel)}: symlink, not followed (inputs are read where they are)")
            elif not name_is_utf8(name):
                skipped.append(f"{shown(rel)}: file name is not UTF-8; skipped (rename it)")
            elif not stat.S_ISREG(mode):
                skipped.append(f"{shown(rel)}: not a regular file; skipped")
            else:
                files.append((path, rel.as_posix()))
    return sorted(files, key=lambda f: Path(f[1]).parts), sorted(skipped)  # the order rglob sorted in


def read_input(path: Path, follow: bool = False) -> bytes:
    """A regular file's bytes, opened without following a symlink (unless `follow`: a file the user named):
    a file swapped for a symlink after the walk is refused (OSError), not read through."""
    fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(0, "not a regular file", str(path))
        return fh.read()


def text_problem(data: bytes) -> str | None:
    """Why `data` is not UTF-8 text (a file to refuse whole, never half-correct), None when it is."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return f"{name} text (BOM {bom.hex(' ').upper()}), not UTF-8; convert it (iconv -f {name} -t UTF-8)"
    if (nul := data.find(b"\x00")) >= 0:
        line = data.count(b"\n", 0, nul) + 1
        return (f"NUL bytes (line {line}, byte {nul + 1}): UTF-16/UTF-32 without a BOM or binary, not UTF-8 "
                "text; convert it to UTF-8")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return f"not UTF-8 (line {line}, byte {col}): another encoding; convert it to UTF-8 (iconv -t UTF-8)"
    return None


def windows(text: str, size: int) -> list[tuple[str, str]]:
    """`text` (no outer whitespace) as (chunk, separator-after) pairs of at most `size` characters each,
    cut at the window's last sentence end, else its last space, else its last grapheme boundary.
    Joining chunk + separator gives `text` back."""
    out: list[tuple[str, str]] = []
    pos, n = 0, len(text)
    while n - pos > size:
        end = pos + size
        cut = sep_end = -1
        for pattern in (_SENTENCE_END, _SPACES):
            last = None
            for match in pattern.finditer(text, pos + 1, end):
                last = match
            if last is not None:
                cut, sep_end = last.start(), last.end()
                while sep_end < n and text[sep_end].isspace():  # the separator runs past the window
                    sep_end += 1
                break
        if cut < 0:  # no space in the window: the start of its last whole grapheme
            tail = max(pos + 1, end - 64)
            starts = [m.start() for m in _GRAPHEME.finditer(text, tail, end)]
            cut = starts[-1] if starts and starts[-1] > pos else end
            sep_end = cut
        out.append((text[pos:cut], text[cut:sep_end]))
        pos = sep_end
    if pos < n:
        out.append((text[pos:], ""))
    return out
