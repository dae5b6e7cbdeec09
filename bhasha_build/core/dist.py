"""Rank helpers for torchrun jobs; imports nothing of the package (and not torch: it asks
`sys.modules`, so a single-process run never imports torch.distributed just to ask)."""

from __future__ import annotations

import os
import sys
from typing import Any


def _initialized():
    """torch.distributed when it is imported and a process group is up, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def world_size() -> int:
    """Processes in this job: torch.distributed when initialised, else torchrun's WORLD_SIZE, else 1."""
    dist = _initialized()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", "1"))


def global_rank() -> int:
    """This process's global rank (0 on a single process)."""
    dist = _initialized()
    return dist.get_rank() if dist else int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on the one process that may write the run folder (global rank 0)."""
    return global_rank() == 0


def local_rank() -> int:
    """Index of this process's GPU on its host (torchrun's LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def comm_backend() -> str | None:
    """The process group's backend (nccl, gloo) when one is up."""
    dist = _initialized()
    return dist.get_backend() if dist else None


def destroy() -> None:
    """Tear the process group down if one is up, after a barrier: a rank that tears its gloo pairs down while
    its peer is still finishing can abort the peer ("terminate called without an active exception", one
    clean-clone CI run of 2026-12-02, in the 2-rank probe test)."""
    dist = _initialized()
    if dist:
        dist.barrier()
        dist.destroy_process_group()


def _tensor(dist: Any, values: list[int]):
    torch = sys.modules["torch"]  # a process group is up: torch is imported
    device = f"cuda:{local_rank()}" if dist.get_backend() == "nccl" else "cpu"
    return torch.tensor(values, dtype=torch.int64, device=device)


def all_agree(flag: bool) -> bool:
    """True only when `flag` is true on every rank (the flag itself on a single process)."""
    dist = _initialized()
    if not dist:
        return flag
    t = _tensor(dist, [int(bool(flag))])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def from_main(value: int) -> int:
    """Global rank 0's `value` on every rank (the value itself on a single process)."""
    dist = _initialized()
    if not dist:
        return value
    t = _tensor(dist, [int(value)])
    dist.broadcast(t, src=0)
    return int(t.item())


ENGINE = "torchrun+ddp"  # torch DDP via the transformers Trainer (accelerate)


def distributed_info(cfg: Any) -> dict[str, Any]:
    """What the manifest records about the process layout of a train stage (any world size)."""
    size = world_size()
    return {"world_size": size, "backend": cfg.train.backend, "engine": ENGINE if size > 1 else "single-process",
            "ddp_backend": comm_backend(), "per_device_batch": cfg.train.batch_size,
            "grad_accum": cfg.train.grad_accum,
            "effective_batch": cfg.train.batch_size * cfg.train.grad_accum * size}
