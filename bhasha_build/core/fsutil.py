"""Atomic file and folder writes, and content hashes: no half-written artifact ever looks complete.

Files go through a temp file in the same folder (fsync, then rename); folders are built under a
temp name and swapped in with renames only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_MODE = 0o644  # artifacts are readable by other users (a second user, the Ollama container)
DIR_MODE = 0o755


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to a temp file beside `path` (fsync), then rename it over `path`. `fsync=False`
    keeps the atomic rename but skips the flush to disk, for outputs whose writer verifies them on
    the next run anyway (stages/correct.py checks each output's sha256 against its journal)."""
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def swap_in(new: Path, target: Path) -> None:
    """Replace folder `target` by the complete folder `new` with renames only."""
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure atomically (temp PNG beside it, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


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


def safe_extract(tar: tarfile.TarFile, dest: Path) -> list[str]:
    """Extract an archive of plain files and folders under `dest`, refusing everything else.

    Links (symbolic or hard), devices, absolute names and names with `..` are refused before
    anything is written (a link member could otherwise redirect later members outside `dest`);
    extraction then goes through tarfile's "data" filter where Python has it (3.11.4+) as a second
    line. Returns the member names. Raises ValueError naming the first offending member.
    """
    names = []
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"refusing archive member {member.name!r}: not a plain file or folder")
        if member.name.startswith(("/", "\\")) or ".." in parts or not parts:
            raise ValueError(f"refusing archive member {member.name!r}: path leaves the destination")
        names.append(member.name)
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tar.extractall(dest, **kwargs)
    return names
