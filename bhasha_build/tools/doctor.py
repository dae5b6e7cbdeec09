"""Preflight checks for the appliance: `invoke doctor` (or `python -m bhasha_build.tools.doctor`).

Each check answers one question with ok / warn / fail and a one-line detail:
  driver       NVIDIA driver new enough for the CUDA that torch (and the image) was built for
  gpu_memory   the card is at least the profile's train.gpu_memory_gib
  disk         free space in the runs folder for export (merged 16-bit + f16 GGUF + quant)
  toolchain    the pinned llama.cpp converter is prepared in its cache
  ollama       deploy.host answers /api/version
A machine without a GPU gets warnings, not failures: CPU profiles (tiny-cpu) are legitimate.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    from bhasha_build.core.config import BuildConfig

Status = Literal["ok", "warn", "fail"]

# Oldest Linux driver that runs any toolkit of a CUDA major version (minor-version compatibility,
# NVIDIA's CUDA compatibility guide).
MIN_DRIVER_FOR_CUDA_MAJOR = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

# Export footprint: merged 16-bit weights (2 B/param) + f16 GGUF (2 B/param) + q4_k_m (~0.6 B/param)
# + tokenizer/scratch ≈ 7.5 GB at 1.5 B params, i.e. 5 GB per billion parameters.
EXPORT_GB_PER_BILLION = 5.0
DEFAULT_BILLIONS = 1.5
TINY_EXPORT_GB = 0.1
GPU_MEMORY_SLACK = 0.93  # a "16 GB" card reports ~15.6-15.9 GiB usable


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"


# --- helpers (pure, tested directly) -----------------------------------------------------------


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def parse_nvidia_smi(header: str, query_csv: str) -> dict:
    """Driver version, driver's CUDA version and GPUs from `nvidia-smi` and its --query-gpu CSV."""
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    gpus = []
    for line in query_csv.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            name, driver, mem_mib = parts[0], parts[1], parts[2]
            try:
                mem = float(mem_mib) / 1024
            except ValueError:
                mem = None
            gpus.append({"name": name, "driver": driver, "memory_gib": mem})
    return {
        "driver": gpus[0]["driver"] if gpus else None,
        "driver_cuda": cuda.group(1) if cuda else None,
        "gpus": gpus,
    }


def driver_check(driver: str | None, driver_cuda: str | None, needed_cuda: str | None) -> tuple[Status, str]:
    """Compare the driver against the CUDA version the software was built for."""
    if not needed_cuda:
        return "warn", f"driver {driver}, but torch has no CUDA build (CPU torch)"
    need = _version_tuple(needed_cuda)
    if driver_cuda:
        have = _version_tuple(driver_cuda)
        # Minor-version compatibility: same major is enough (PTX JIT aside).
        if have[:1] < need[:1]:
            return (
                "fail",
                f"driver {driver} supports CUDA {driver_cuda}; needs CUDA {needed_cuda} (major {need[0]})",
            )
    minimum = MIN_DRIVER_FOR_CUDA_MAJOR.get(need[0])
    if driver and minimum and _version_tuple(driver) < _version_tuple(minimum):
        return "fail", f"driver {driver} < {minimum}, the minimum for CUDA {need[0]}.x ({needed_cuda})"
    if driver_cuda and _version_tuple(driver_cuda)[:2] < need[:2]:
        return "warn", (
            f"driver {driver} (CUDA {driver_cuda}) runs CUDA {needed_cuda} by minor-version "
            "compatibility only; PTX-only kernels may fail"
        )
    return "ok", f"driver {driver} (CUDA {driver_cuda or '?'}) >= CUDA {needed_cuda} needed"


def model_billions(name: str) -> float | None:
    """Parameter count in billions from a hub id like Qwen/Qwen2.5-1.5B-Instruct (None if unknown)."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*([BM])\b", name, flags=re.IGNORECASE)
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2).upper() == "M" else value


def export_need_gb(model_name: str) -> tuple[float, str]:
    if model_name == "tiny":
        return TINY_EXPORT_GB, "tiny model"
    billions = model_billions(model_name)
    if billions is None:
        return EXPORT_GB_PER_BILLION * DEFAULT_BILLIONS, f"size unknown, assumed {DEFAULT_BILLIONS}B"
    return EXPORT_GB_PER_BILLION * billions, f"{billions:g}B params"


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --- checks ------------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _nvidia() -> dict | None:
    if not shutil.which("nvidia-smi"):
        return None
    header = _run(["nvidia-smi"]) or ""
    query = _run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"]
    )
    if query is None:
        return {"error": "nvidia-smi found but failed (driver not loaded, or no device in this container)"}
    return parse_nvidia_smi(header, query)


def _torch_cuda() -> tuple[str | None, str]:
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    return torch.version.cuda, f"torch {torch.__version__}"


def check_driver(nvidia: dict | None) -> Check:
    torch_cuda, torch_desc = _torch_cuda()
    image_cuda = os.environ.get("CUDA_VERSION")  # set by the nvidia/cuda base images
    needed = torch_cuda or image_cuda
    where = f"{torch_desc}, CUDA {torch_cuda or 'none'}" + (
        f", image CUDA {image_cuda}" if image_cuda else ""
    )
    if nvidia is None:
        return Check("driver", "warn", f"no GPU (nvidia-smi not found); {where}")
    if "error" in nvidia:
        return Check("driver", "warn", f"no GPU: {nvidia['error']}; {where}")
    status, detail = driver_check(nvidia["driver"], nvidia["driver_cuda"], needed)
    return Check("driver", status, f"{detail}; {where}")


def check_gpu_memory(cfg: BuildConfig, nvidia: dict | None) -> Check:
    want = cfg.train.gpu_memory_gib
    gpus = (nvidia or {}).get("gpus") or []
    if not gpus:
        need = f"profile wants {want:g} GiB" if want else "profile sets no train.gpu_memory_gib"
        return Check("gpu_memory", "warn", f"no GPU; {need}")
    best = max(gpus, key=lambda g: g["memory_gib"] or 0)
    have = best["memory_gib"] or 0.0
    desc = f"{best['name']} {have:.1f} GiB"
    if not want:
        return Check("gpu_memory", "ok", f"{desc}; profile sets no train.gpu_memory_gib")
    if have < want * GPU_MEMORY_SLACK:
        return Check("gpu_memory", "fail", f"{desc} < {want:g} GiB the profile is sized for")
    return Check("gpu_memory", "ok", f"{desc} >= {want:g} GiB the profile is sized for")


def check_disk(cfg: BuildConfig) -> Check:
    need, why = export_need_gb(cfg.model.name)
    where = _existing_parent(cfg.run_dir)
    free = shutil.disk_usage(where).free / 1e9
    detail = f"{free:.1f} GB free at {where}; export needs ~{need:.1f} GB ({why})"
    if free < need:
        return Check("disk", "fail", detail)
    if free < need * 1.5:
        return Check("disk", "warn", detail + ", little headroom")
    return Check("disk", "ok", detail)


def check_toolchain() -> Check:
    """Use bhasha_build.core.toolchain's own view (toolchain_dir/info) of the pinned converter."""
    try:
        toolchain = importlib.import_module("bhasha_build.core.toolchain")
    except ImportError as exc:
        return Check("toolchain", "warn", f"bhasha_build.core.toolchain not importable ({exc})")
    target = toolchain.toolchain_dir()
    try:
        data = toolchain.info()
    except (OSError, ValueError) as exc:  # a damaged toolchain.json
        return Check(
            "toolchain", "fail", f"{target}: unreadable stamp ({exc}); prepare it again with --force"
        )
    pin = f"llama-cpp-python {data.get('llama_cpp_python')}, llama.cpp {data.get('llama_cpp_commit')}"
    if not data.get("ready") or not (Path(target) / "convert_hf_to_gguf.py").is_file():
        return Check(
            "toolchain",
            "fail",
            f"not prepared in {target} ({pin}); run `python -m bhasha_build.core.toolchain prepare`",
        )
    if not data.get("binding_version"):
        return Check(
            "toolchain", "warn", f"converter in {target}, but the llama_cpp binding (quantize) is missing"
        )
    return Check("toolchain", "ok", f"{target} ({pin}, binding {data['binding_version']})")


def check_ollama(host: str, timeout: float = 3.0) -> Check:
    """The server `invoke deploy` would use (ollama.server_url) answers /api/version."""
    from bhasha_build.core.ollama import OllamaClient, OllamaError

    try:
        version = OllamaClient(host, timeout=timeout).version()
    except OllamaError as exc:
        return Check("ollama", "fail", f"{exc}; deploy needs a running Ollama")
    return Check("ollama", "ok", f"{host} answers, version {version}")


def doctor(cfg: BuildConfig) -> list[Check]:
    from bhasha_build.core.ollama import server_url

    nvidia = _nvidia()
    return [
        check_driver(nvidia),
        check_gpu_memory(cfg, nvidia),
        check_disk(cfg),
        check_toolchain(),
        check_ollama(server_url(None, cfg.deploy.host), timeout=min(3.0, cfg.deploy.timeout_s)),
    ]


# --- printing ----------------------------------------------------------------------------------

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def format_checks(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"[{_MARK[c.status]}] {c.name:<{width}}  {c.detail}" for c in checks]
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    lines.append(f"doctor: {len(checks)} checks, {fails} failed, {warns} warnings")
    return "\n".join(lines)


def print_checks(checks: list[Check], file: TextIO | None = None) -> int:
    """Print the report; return the number of failed checks (the exit code for `invoke doctor`)."""
    print(format_checks(checks), file=file or sys.stdout)
    return sum(c.status == "fail" for c in checks)


print_report = print_checks  # the name tasks.py's `invoke doctor` calls


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bhasha_build.core.config import ConfigError, load_config

    parser = argparse.ArgumentParser(
        prog="python -m bhasha_build.tools.doctor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile")
    parser.add_argument("--config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, profile=args.profile, overrides=args.overrides)
    except ConfigError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 2
    return 1 if print_checks(doctor(cfg)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
