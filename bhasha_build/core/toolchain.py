"""The pinned llama.cpp toolchain: converter + gguf-py from the llama-cpp-python sdist, quantize via
the installed binding of the same version.

The sdist of llama-cpp-python vendors llama.cpp at a fixed commit together with
`convert_hf_to_gguf.py`, its `conversion/` package and its own `gguf-py` (PyPI's `gguf` is too old
for that converter). `prepare()` fetches the sdist from the package index (or takes a local copy),
checks its sha256, and unpacks just those files into a cache folder keyed by version, outside the
repo. Nothing vendored is edited: `convert_wrapper.py` registers extra pre-tokenizer hashes at run
time.

Knobs (env): BHASHA_TOOLCHAIN_CACHE (cache root, default ~/.cache/bhasha-build/toolchain),
BHASHA_LLAMA_SDIST (path of an already downloaded sdist, for offline images).

CLI: `python -m bhasha_build.core.toolchain prepare|info`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_output, atomic_write_json, safe_extract, sha256_file, swap_in

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e570"  # llama.cpp commit vendored by that sdist
_VENDOR_PREFIX = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
_KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")


class ToolchainError(BhashaError):
    """One-line, user-facing toolchain problem."""


def cache_root() -> Path:
    return Path(os.environ.get("BHASHA_TOOLCHAIN_CACHE", Path.home() / ".cache" / "bhasha-build" / "toolchain"))


def toolchain_dir() -> Path:
    return cache_root() / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}"


def info() -> dict[str, Any]:
    """What the manifest records about the toolchain."""
    stamp = toolchain_dir() / "toolchain.json"
    data: dict[str, Any] = json.loads(stamp.read_text()) if stamp.exists() else {"ready": False}
    try:
        import llama_cpp

        data["binding_version"] = llama_cpp.__version__
    except ImportError:
        data["binding_version"] = None
    data.setdefault("llama_cpp_commit", LLAMA_CPP_COMMIT)
    data.setdefault("llama_cpp_python", LLAMA_CPP_PYTHON_VERSION)
    return data


def _download_sdist(dest: Path) -> Path:
    # --no-binary for this package only: ":all:" would also build its build backend from source
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
           f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(dest)]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / SDIST_NAME
    if proc.returncode != 0 or not path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ToolchainError(f"could not download {SDIST_NAME} from the package index: {tail[0]}")
    return path


def prepare(sdist: str | Path | None = None, force: bool = False) -> Path:
    """Unpack the converter + gguf-py of the pinned sdist into the cache; idempotent."""
    target = toolchain_dir()
    stamp = target / "toolchain.json"
    if stamp.exists() and not force:
        return target
    check_binding()
    sdist = sdist or os.environ.get("BHASHA_LLAMA_SDIST")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as tmp_str:
        tmp = Path(tmp_str)
        path = Path(sdist) if sdist else _download_sdist(tmp)
        if not path.exists():
            raise ToolchainError(f"{path}: sdist not found")
        actual = sha256_file(path)
        if actual != SDIST_SHA256:
            raise ToolchainError(f"{path}: sha256 {actual} is not the pinned {SDIST_SHA256}")
        staging = tmp / "toolchain"
        with tarfile.open(path, "r:gz") as tar:
            members = []
            for member in tar.getmembers():
                if not member.name.startswith(_VENDOR_PREFIX):
                    continue
                rel = member.name[len(_VENDOR_PREFIX):]
                if rel.startswith(_KEEP) and (member.isfile() or member.isdir()):
                    member.name = rel
                    members.append(member)
            safe_extract(tar, staging, members)  # plain files and folders only (fsutil)
        if not (staging / "convert_hf_to_gguf.py").exists():
            raise ToolchainError(f"{path}: no vendored convert_hf_to_gguf.py inside")
        atomic_write_json(staging / "toolchain.json", {
            "ready": True, "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "sdist_sha256": SDIST_SHA256,
            "llama_cpp_commit": LLAMA_CPP_COMMIT, "path": str(target),
        })
        swap_in(staging, target)  # one exchange: the toolchain name always holds a complete toolchain
    return target


def require() -> Path:
    target = toolchain_dir()
    if not (target / "toolchain.json").exists():
        raise ToolchainError(f"llama.cpp toolchain not prepared in {target}: run `invoke toolchain`")
    return target


def check_binding() -> str:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ToolchainError(f"llama-cpp-python is not installed ({exc}); run `make install`") from None
    if llama_cpp.__version__ != LLAMA_CPP_PYTHON_VERSION:
        raise ToolchainError(
            f"llama-cpp-python {llama_cpp.__version__} installed, toolchain pinned to {LLAMA_CPP_PYTHON_VERSION}"
        )
    return llama_cpp.__version__


Check = Callable[[Path], Any]


def convert_to_gguf(hf_dir: str | Path, out_file: str | Path, outtype: str = "f16",
                    register_pre_tokenizer: str | None = None, check: Check | None = None) -> dict[str, Any]:
    """HF folder → GGUF with the vendored converter (in a subprocess: it owns its sys.path).

    The converter writes a temp file (fsutil.atomic_output) that `check` sees before it gets the
    final name; a failure, a refused check or Ctrl-C removes it (subprocess.run kills the converter)."""
    tool = require()
    out_file = Path(out_file)
    report = out_file.with_name(f".{out_file.name}.convert.json")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                    os.environ.get("PYTHONPATH")])))
    try:
        with atomic_output(out_file, check) as tmp_out:
            cmd = [sys.executable, "-m", "bhasha_build.core.convert_wrapper", "--toolchain", str(tool),
                   "--report", str(report)]
            if register_pre_tokenizer:
                cmd += ["--register-pre-tokenizer", register_pre_tokenizer]
            cmd += ["--", str(hf_dir), "--outfile", str(tmp_out), "--outtype", outtype]
            print("+", " ".join(cmd), flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0 or not tmp_out.exists():
                lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
                reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln),
                              lines[-1] if lines else "")
                raise ToolchainError(f"GGUF conversion of {hf_dir} failed: {reason.strip()}")
        return json.loads(report.read_text()) if report.exists() else {}
    finally:
        report.unlink(missing_ok=True)


QUANT_TYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q8_0": 7, "F16": 1}  # llama_ftype values


def quantize(in_file: str | Path, out_file: str | Path, quant: str = "Q4_K_M", threads: int = 0,
             check: Check | None = None) -> None:
    """Quantize with the binding's llama_model_quantize (the pinned llama.cpp), into a temp file
    that `check` sees before it gets the final name (fsutil.atomic_output, as convert_to_gguf)."""
    import ctypes

    import llama_cpp

    check_binding()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[quant]
    params.nthread = threads or (os.cpu_count() or 1)
    with atomic_output(out_file, check) as tmp_out:
        rc = llama_cpp.llama_model_quantize(str(in_file).encode(), str(tmp_out).encode(), ctypes.byref(params))
        if rc != 0 or not tmp_out.exists():
            raise ToolchainError(f"quantizing {in_file} to {quant} failed (llama_model_quantize returned {rc})")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bhasha_build.core.toolchain")
    parser.add_argument("action", choices=["prepare", "info"])
    parser.add_argument("--sdist", help="local sdist instead of downloading it")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.action == "prepare":
            print(f"toolchain ready: {prepare(args.sdist, args.force)}")
        else:
            print(json.dumps(info(), indent=2))
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
