"""The run manifest: provenance of everything in `runs/<run>/manifest.json`.

Every stage calls `stage()` around its work; the manifest is re-read and re-written atomically on
each update, so a crashed stage leaves the previous complete manifest plus a "failed" status.
Paths inside are relative to the run folder (a run folder can be moved or archived whole).

Provenance read from the environment when present: BHASHA_IMAGE_DIGEST, BHASHA_BASE_IMAGE,
BHASHA_IMAGE_REF, and /etc/bhasha-build/image.json written by the image build.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from bhasha_build.core.config import REPO_ROOT, BuildConfig, config_to_dict
from bhasha_build.core.errors import BhashaError, first_line
from bhasha_build.core.fsutil import atomic_write_json, sha256_file, sha256_path, size_of
from bhasha_build.core.layout import RunLayout

LOCK_FILE = REPO_ROOT / "requirements" / "lock.txt"
IMAGE_INFO = Path("/etc/bhasha-build/image.json")
PACKAGES = ["torch", "transformers", "unsloth", "unsloth_zoo", "trl", "peft", "datasets", "accelerate",
            "bitsandbytes", "llama_cpp_python", "tokenizers", "pydantic"]


def git_info() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        sha = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", False
    return {"sha": sha or os.environ.get("BHASHA_GIT_SHA", "unknown"), "dirty": dirty}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name.replace("llama_cpp_python", "llama_cpp")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("llama_cpp_python", "llama_cpp")] = None
    return versions


def hardware_info() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch

        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 2),
                           "count": torch.cuda.device_count()}
    except ImportError:
        pass
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["driver"] = out.stdout.strip().splitlines()[0]
    return info


def image_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    if IMAGE_INFO.exists():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            info.update(json.loads(IMAGE_INFO.read_text()))
    for key, env in (("digest", "BHASHA_IMAGE_DIGEST"), ("base", "BHASHA_BASE_IMAGE"), ("ref", "BHASHA_IMAGE_REF")):
        if os.environ.get(env):
            info[key] = os.environ[env]
    return info


class Manifest:
    """Read-modify-write access to one run's manifest."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = RunLayout(self.run_dir).manifest

    def load(self) -> dict[str, Any]:
        if self.path.exists():
            return json.loads(self.path.read_text(encoding="utf-8"))
        return {}

    def update(self, **sections: Any) -> dict[str, Any]:
        data = self.load()
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        atomic_write_json(self.path, data)
        return data

    def init(self, cfg: BuildConfig) -> dict[str, Any]:
        """(Re)stamp provenance; keeps stage results and artifacts of earlier stages."""
        from bhasha_build.core import toolchain

        resolved = config_to_dict(cfg)
        data = self.load()
        data.update({
            "run": cfg.run,
            "created": data.get("created") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": git_info(),
            "config": resolved,
            "config_sha256": hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest(),
            "lock_sha256": sha256_file(LOCK_FILE) if LOCK_FILE.exists() else None,
            "versions": package_versions(),
            "toolchain": {k: v for k, v in toolchain.info().items() if k != "path"},
            "hardware": hardware_info(),
            "image": image_info(),
        })
        data.setdefault("stages", {})
        data.setdefault("artifacts", {})
        atomic_write_json(self.path, data)
        return data

    def artifact(self, key: str, path: Path, **extra: Any) -> dict[str, Any]:
        path = Path(path)
        entry = {"path": RunLayout(self.run_dir).rel(path), "sha256": sha256_path(path),
                 "bytes": size_of(path), **({"kind": "folder"} if path.is_dir() else {}), **extra}
        self.update(artifacts={key: entry})
        return entry

    def set_stage(self, name: str, /, **fields: Any) -> None:
        data = self.load()
        data.setdefault("stages", {})[name] = fields
        atomic_write_json(self.path, data)

    @contextlib.contextmanager
    def stage(self, name: str, /, inputs_sha256: str | None = None) -> Iterator[dict[str, Any]]:
        """Time a stage and record done/failed; the yielded dict collects extra fields."""
        extra: dict[str, Any] = {}
        start = time.monotonic()
        try:
            yield extra
        except BaseException as exc:
            # Record the failure if the disk still lets us; never let that attempt replace the
            # first error (on a full disk this write fails too).
            error = first_line(exc)
            seconds = round(time.monotonic() - start, 2)
            self.try_update(lambda: self.set_stage(name, status="failed", seconds=seconds, error=error, **extra))
            raise
        fields = {"status": extra.pop("status", "done"), "seconds": round(time.monotonic() - start, 2), **extra}
        if inputs_sha256:
            fields["inputs_sha256"] = inputs_sha256
        self.set_stage(name, **fields)

    def try_update(self, write: Any) -> bool:
        """Run a manifest write on a failure path: an OSError (or WriteError) there is reported as
        a warning on stderr and swallowed, so the error being handled is the one the user sees."""
        try:
            write()
            return True
        except (OSError, BhashaError) as exc:
            print(f"warning: {self.path}: could not record the failure ({exc})", file=sys.stderr, flush=True)
            return False

    def stage_is_current(self, name: str, inputs_sha256: str) -> bool:
        """True when the stage last finished on the same inputs (the runner checks its outputs)."""
        stage = self.load().get("stages", {}).get(name, {})
        return stage.get("status") in ("done", "skipped") and stage.get("inputs_sha256") == inputs_sha256
