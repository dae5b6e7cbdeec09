"""core/fsutil.py: atomic writes (modes, temp files removed on any failure or Ctrl-C, a check before
the final name), folder swaps that never leave the target missing, and archive extraction that
refuses links. The full-disk and kill cases are in test_faults.py."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import tar_bytes

from bhasha_build.core import fsutil
from bhasha_build.core.fsutil import (
    atomic_copy,
    atomic_dir,
    atomic_output,
    atomic_write_text,
    partial_path,
    safe_extract,
    save_figure,
    swap_in,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)  # a user with a private umask: artifacts must still be readable by others
    try:
        yield
    finally:
        os.umask(old)


def test_files_are_0644_and_folders_0755_whatever_the_umask(tmp_path: Path, strict_umask: None) -> None:
    atomic_write_text(tmp_path / "a.json", "{}")
    with atomic_output(tmp_path / "b.gguf") as tmp:
        tmp.write_bytes(b"x")
    atomic_copy(tmp_path / "b.gguf", tmp_path / "c.gguf")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("x")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    save_figure(plt.figure(), tmp_path / "plot.png")
    for name in ("a.json", "b.gguf", "c.gguf", "plot.png"):
        assert mode(tmp_path / name) == 0o644, name
    assert mode(tmp_path / "folder") == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.gguf", "c.gguf", "folder", "plot.png"]


@pytest.mark.parametrize("failure", [RuntimeError("converter crashed"), KeyboardInterrupt()])
def test_atomic_output_removes_the_partial_on_error_and_ctrl_c(tmp_path: Path, failure: BaseException) -> None:
    final = tmp_path / "model.gguf"
    final.write_bytes(b"old")
    with pytest.raises(type(failure)), atomic_output(final) as tmp:
        tmp.write_bytes(b"half a model")
        raise failure
    assert final.read_bytes() == b"old" and not partial_path(final).exists()


def test_atomic_output_checks_the_temp_file_before_it_gets_its_name(tmp_path: Path) -> None:
    seen = []

    def check(tmp: Path) -> None:
        seen.append((tmp.name, tmp.read_bytes()))
        raise ValueError("tensor data past the end")

    final = tmp_path / "model.gguf"
    with pytest.raises(ValueError, match="past the end"), atomic_output(final, check) as tmp:
        tmp.write_bytes(b"GGUF...")
    assert seen == [(".model.gguf.partial", b"GGUF...")]  # checked under the temp name
    assert not final.exists() and not partial_path(final).exists()


def test_atomic_output_replaces_a_partial_left_by_a_hard_kill(tmp_path: Path) -> None:
    final = tmp_path / "model.gguf"
    partial_path(final).write_bytes(b"x" * 1000)  # what SIGKILL mid-write leaves
    with atomic_output(final) as tmp:
        assert not tmp.exists()
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and not partial_path(final).exists()


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_in_replaces_a_folder_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)  # kernels without RENAME_EXCHANGE
    target = tmp_path / "toolchain"
    target.mkdir()
    (target / "old-only.txt").write_text("old")
    new = tmp_path / "staging"
    new.mkdir()
    (new / "new-only.txt").write_text("new")
    swap_in(new, target)
    assert [p.name for p in target.iterdir()] == ["new-only.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toolchain"]  # nothing old or temporary left


def test_swap_in_never_leaves_the_target_missing(tmp_path: Path) -> None:
    # A reader polling the folder while it is replaced 300 times must always find it: one atomic
    # exchange (renameat2), not "rename the old away, then the new in".
    target = tmp_path / "data"
    target.mkdir()
    missing = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not target.is_dir():
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(300):
            with atomic_dir(target) as tmp:
                (tmp / "n").write_text(str(i))
    finally:
        stop.set()
        watcher.join()
    assert (target / "n").read_text() == "299"
    assert not missing, f"target missing {len(missing)} times"


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(tar_bytes(members)))


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize(("members", "why"), [
    ([(_info("adapter", tarfile.SYMTYPE, "/tmp/elsewhere"), None), (_info("adapter/authorized_keys"), b"key")],
     "'adapter': not a plain file or folder"),
    ([(_info("passwd", tarfile.LNKTYPE, "/etc/passwd"), None)], "'passwd': not a plain file or folder"),
    ([(_info("null", tarfile.CHRTYPE), None)], "'null': not a plain file or folder"),
    ([(_info("/abs.txt"), b"x")], "path leaves the destination"),
    ([(_info("a/../../up.txt"), b"x")], "path leaves the destination"),
])
def test_safe_extract_refuses_links_devices_and_escapes_before_writing(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], why: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match=why):
        safe_extract(_tar([(_info("first.txt"), b"ok"), *members]), dest)
    assert list(dest.iterdir()) == []  # refused before anything was written


def test_recorded_writes_the_report_however_the_block_ends(tmp_path: Path, capsys) -> None:
    """deploy, promote and rollback: the report is written on success and on failure (with the first
    error line, attached to the BhashaError); a write failing on the failure path does not replace
    the error being raised."""
    import json

    from bhasha_build.core.errors import BhashaError
    from bhasha_build.core.fsutil import recorded

    ok = {"status": "failed"}
    with recorded(ok, tmp_path / "ok.json"):
        ok["status"] = "ok"
    assert json.loads((tmp_path / "ok.json").read_text()) == ok and ok["seconds"] >= 0

    failed: dict = {"status": "failed"}
    with pytest.raises(BhashaError, match="first line") as err, recorded(failed, tmp_path / "failed.json"):
        raise BhashaError("first line\nsecond line")
    assert err.value.report is failed and failed["error"] == "first line"
    assert json.loads((tmp_path / "failed.json").read_text()) == failed

    unwritable = tmp_path / "missing-parent-is-a-file"
    unwritable.write_text("")
    with pytest.raises(BhashaError, match="the real error"), recorded({}, unwritable / "report.json"):
        raise BhashaError("the real error")
    assert "warning:" in capsys.readouterr().err
