"""Print the image's provenance record (written to /etc/bhasha-build/image.json at build time).

Read by bhasha_build.core.manifest through BHASHA_IMAGE_INFO. Values come from the build args passed
as env; the lock and torch pins are hashed/read from the files that were installed, so the record
describes what is in the image rather than what was asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def image_info() -> dict:
    base = os.environ.get("BASE_IMAGE", "")
    # A ref pinned as name@sha256:... carries its digest; BASE_DIGEST (a local base) wins if given.
    digest = os.environ.get("BASE_DIGEST") or (base.split("@", 1)[1] if "@" in base else None)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return {
        "schema": 1,
        "version": os.environ.get("VERSION"),
        "git_sha": os.environ.get("GIT_SHA"),
        "created": os.environ.get("CREATED"),
        "source_date_epoch": int(epoch) if epoch and epoch.isdigit() else None,
        "base_image": base or None,
        "base_digest": digest,
        "build_args": {
            "TORCH_SPEC": os.environ.get("TORCH_SPEC") or None,
            "TORCH_INDEX_URL": os.environ.get("TORCH_INDEX_URL") or None,
        },
        "lock_sha256": _sha256(ROOT / "requirements" / "lock.txt"),
        "torch_pin_sha256": _sha256(ROOT / "requirements" / "torch.txt"),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "llama_cpp_python": _version("llama_cpp_python"),
        "executable": sys.executable,
    }


if __name__ == "__main__":
    print(json.dumps(image_info(), indent=2, sort_keys=True))
