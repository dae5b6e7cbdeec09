"""Atomic file and folder writes, and content hashes: no half-written artifact ever looks complete.

Files go through a temp file in the same folder (fsync, then rename); folders are built under a
temp name and swapped in with renames only (one atomic exchange where the kernel has
renameat2(RENAME_EXCHANGE), so the target name is never missing). A temp file or folder is removed
on any failure, Ctrl-C (KeyboardInterrupt) included; only a hard kill (SIGKILL, power loss) can leave
one behind, under a dot-name the next write of the same target replaces. Written files are mode 0644
and folders 0755 (a second user, the Ollama container must read them). A write that fails for lack
of space or permission is a `WriteError` naming the path (`core/errors.py`).

Writers: `atomic_write_bytes/text/json`, `atomic_output` (a temp path for a tool that writes the file
itself, with an optional check of the finished temp file before it gets its name), `atomic_copy`,
`atomic_dir`, `save_figure`. Reading archives: `safe_extract`. Checking a folder-to-be: `not_a_folder`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bhasha_build.core.errors import BhashaError, WriteError, first_line

FILE_MODE = 0o644  # artifacts are readable by other users (a second user, the Ollama container)
DIR_MODE = 0o755


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to a temp file beside `path` (fsync), then rename it over `path`. `fsync=False`
    keeps the atomic rename but skips the flush to disk, for outputs whose writer verifies them on
    the next run anyway (stages/correct/ checks each output's sha256 against its journal)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)  # mkstemp makes 0600: other users (Ollama's container) must read
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Errors of the storage, not of the program: reported as one line naming the path.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


def write_error(path: str | Path, exc: OSError) -> Exception:
    """`exc` as a one-line WriteError naming `path` when the storage refused the write, else `exc`."""
    if isinstance(exc, WriteError) or exc.errno not in _STORAGE_ERRNOS:
        return exc
    return WriteError(f"{path}: cannot write ({exc.strerror or exc}); nothing was replaced")


def partial_path(path: str | Path) -> Path:
    """The temp name `atomic_output` writes `path` under: `.<name>.partial` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_output(path: str | Path, check: Callable[[Path], Any] | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer that creates the file itself (a converter, a
    quantizer, savefig). When the block ends normally the temp file is fsynced, checked with
    `check(temp)` (an exception refuses it), made 0644 and renamed to `path`. On any failure or
    Ctrl-C the temp file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    tmp.unlink(missing_ok=True)  # left by a hard kill of an earlier run
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(errno.ENOENT, f"the writer did not create {tmp.name}", str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_copy(src: str | Path, dst: str | Path, check: Callable[[Path], Any] | None = None) -> Path:
    """Copy `src` to `dst` through `atomic_output` (checked before it gets the final name)."""
    with atomic_output(dst, check) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def recorded(report: dict[str, Any], path: str | Path | None) -> Iterator[dict[str, Any]]:
    """Write `report` as JSON to `path` however the block ends, with the block's `seconds`. On a failure
    it also gets `error` (the first line) and rides on a BhashaError as `.report` (the runner records it
    in the manifest); a write that fails on that path is a warning, so the first error is the one
    raised. `path` None: the report is filled and attached, not written."""
    started = time.perf_counter()
    try:
        yield report
    except BaseException as exc:
        report.setdefault("error", first_line(exc))
        report["seconds"] = round(time.perf_counter() - started, 3)
        if path is not None:
            try:
                atomic_write_json(path, report)
            except (OSError, BhashaError) as write_exc:  # keep the first error; say why the report is missing
                print(f"warning: {write_exc}", file=sys.stderr, flush=True)
        if isinstance(exc, BhashaError):
            exc.report = report  # type: ignore[attr-defined]
        raise
    report["seconds"] = round(time.perf_counter() - started, 3)
    if path is not None:
        atomic_write_json(path, report)


def jsonl_text(rows: Iterable[Any]) -> str:
    """Rows as JSON Lines: one compact object per line, UTF-8 kept (read back splitting on "\\n" only:
    JSON leaves U+2028/U+0085 unescaped, which str.splitlines() would also break at)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    atomic_write_text(path, jsonl_text(rows))


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split on "\\n" only (see jsonl_text)."""
    return text.split("\n")


def jsonl_objects(path: str | Path, error: Callable[[str], Exception],
                  missing: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines file. A missing or unreadable file, a
    line that is not JSON or not an object: ``error`` raised with one line naming path[:line] and the
    reason (``missing`` says what the file should have been)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: not found ({missing})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read ({exc})") from None
    for no, line in enumerate(jsonl_lines(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{no}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise error(f"{path}:{no}: expected a JSON object")
        yield no, obj


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(new: Path, target: Path) -> None:
    """Replace folder `target` by the complete folder `new`: one atomic exchange where the kernel
    can (the target name always holds the old or the new folder), else two renames."""
    new, target = Path(new), Path(target)
    if target.exists() and _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now names the old folder
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it becomes `target`, on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, DIR_MODE)  # mkdtemp makes 0700
    try:
        yield tmp
        swap_in(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(target, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure atomically (temp PNG beside it, then rename) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


def not_a_folder(path: str | Path) -> Path | None:
    """The first existing part of `path` (itself or the nearest existing parent) when that is not a
    folder (a file where a folder must be, or will be made); None when `path` can be a folder."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
        if part.is_symlink():  # a dangling link cannot hold a folder either
            return part
    return None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file; of a folder, over its files' relative paths and sha256s (sorted), so two
    folders hash alike exactly when they hold the same files with the same bytes."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def size_of(path: str | Path) -> int:
    """Bytes of a file, or of all files under a folder."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def safe_extract(tar: tarfile.TarFile, dest: Path, members: Iterable[tarfile.TarInfo] | None = None) -> list[str]:
    """Extract an archive (or the chosen `members` of it) of plain files and folders under `dest`,
    refusing everything else.

    Links (symbolic or hard), devices, absolute names and names with `..` are refused before
    anything is written (a link member could otherwise redirect later members outside `dest`);
    extraction then goes through tarfile's "data" filter where Python has it (3.11.4+) as a second
    line. Returns the member names. Raises ValueError naming the first offending member.
    """
    chosen = list(tar.getmembers() if members is None else members)
    names = []
    for member in chosen:
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"refusing archive member {member.name!r}: not a plain file or folder")
        if member.name.startswith(("/", "\\")) or ".." in parts or not parts:
            raise ValueError(f"refusing archive member {member.name!r}: path leaves the destination")
        names.append(member.name)
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(dest, members=chosen, **kwargs)
    return names
