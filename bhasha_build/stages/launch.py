"""Multi-GPU training: `invoke train --gpus N` → torchrun → one `python -m bhasha_build.stages.launch train` per GPU.

Engine: PyTorch DDP through torchrun (`python -m torch.distributed.run`) and the transformers Trainer
(accelerate underneath) that TRL's SFTTrainer already is. Nothing home-made: each rank runs the normal
train stage (`pipeline.run_train`); the Trainer wraps the model in DistributedDataParallel, shards the
batches with a distributed sampler and all-reduces the LoRA gradients. Communication backend: NCCL on
GPUs, gloo on CPU (the Trainer's choice; the CPU tests use gloo).

Training backend under DDP: the config's `train.backend`, as on one GPU — Unsloth by default (its
2026.10.9 release pins each rank's model to LOCAL_RANK), or `hf` (transformers + peft + TRL, QLoRA
through bitsandbytes 4-bit, `device_map={"": LOCAL_RANK}`) with `--backend hf` / `--set train.backend="hf"`.
Both were proven on 2×H200 (bench/RESULTS.md, `python -m bhasha_build.tools.bench_ddp`): per-step losses of
1 GPU (grad_accum 2) and 2 GPUs (grad_accum 1) agree within 6e-5 relative; Unsloth is the faster of
the two at any GPU count (2 GPUs: 35.4k tok/s vs hf's 24.0k), hf scales better (1.80× vs 1.39×):
Unsloth's activation offload (its gradient checkpointing) shares the host's memory path between ranks;
with train.gradient_checkpointing=false it scales 1.78× (50.7k tok/s, 24 GiB per GPU: large cards only).
The backend used is recorded in the manifest under
`stages.train.distributed = {world_size, backend, engine, ddp_backend, effective_batch, ...}`.

Batch and schedule semantics (knobs train.batch_size, train.grad_accum, train.max_steps, train.epochs):
  * train.batch_size is per GPU, so the effective batch is batch_size × grad_accum × world_size (recorded
    as `effective_batch`). For the same effective batch as one GPU, divide grad_accum by N
    (e.g. `--set train.grad_accum=1` on 2 GPUs for a profile with grad_accum 2).
  * train.max_steps counts optimizer steps, as on one GPU: warmup_steps, the LR schedule and save_steps
    are laid over the same step numbers, and each step sees world_size× the examples. The learning rate
    is not rescaled automatically.
  * train.max_steps=-1 (epochs): the sampler splits every epoch over the ranks, so an epoch is 1/N of
    the steps and the schedule spans those; "2 epochs" still means every example twice.
  * Checkpoints and resume are the Trainer's: rank 0 writes the model/optimizer/state, every rank its
    own `rng_state_<rank>.pth`; `--resume` restores all of them. Resume with the same world size.
  * Only global rank 0 writes the run folder (train_log.jsonl, loss.png, adapter/, manifest.json);
    the other ranks only read it (plus their rng_state file inside checkpoints/).

Several hosts: run the same launcher on every host with the same rendezvous endpoint (host:port of one
of them, reachable from all) and its own node rank; torchrun's c10d rendezvous forms the world:
  host A: torchrun_command(8, ..., nnodes=2, node_rank=0, rdzv_endpoint="hostA:29400")
  host B: torchrun_command(8, ..., nnodes=2, node_rank=1, rdzv_endpoint="hostA:29400")
The run folder must be on storage every host sees at the same path (NFS or similar) with the data
and base model present, since only global rank 0 writes it and all ranks read it. NCCL then runs over
the hosts' network (set NCCL_SOCKET_IFNAME / InfiniBand variables as the cluster needs).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bhasha_build.core import dist
from bhasha_build.core.errors import BhashaError

TRAIN_BACKENDS = ("hf", "unsloth")


def torchrun_command(nproc: int, profile: str | None = None, run: str | None = None, config: str | None = None,
                     sets: Sequence[str] | None = None, resume: bool = False, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None, backend: str | None = None, force: bool = False,
                     python: str | None = None) -> list[str]:
    """argv that trains on `nproc` processes per host through torchrun (run it as a list, or shlex.join it).

    nproc: processes (GPUs) on this host. nnodes/node_rank/rdzv_endpoint ("host:port", same on every
    host): several hosts through c10d rendezvous; one host uses --standalone (a free local port, so
    two jobs on one machine don't clash). backend: training backend of the ranks (default: the
    config's train.backend, see the module docstring). python: interpreter (default: this one, so the
    ranks share its environment).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in [0, nnodes={nnodes}), got {node_rank}")
    if backend is not None and backend not in TRAIN_BACKENDS:
        raise ValueError(f"backend must be one of {TRAIN_BACKENDS}, got {backend!r}")
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        if rdzv_endpoint:
            raise ValueError("rdzv_endpoint is for several hosts (nnodes > 1)")
        cmd += ["--standalone", "--nnodes", "1"]
    else:
        if not rdzv_endpoint or ":" not in rdzv_endpoint:
            raise ValueError("several hosts need rdzv_endpoint='HOST:PORT', the same on every host")
        # The rendezvous id ties the hosts of one job together; the run name is the same on all of them.
        cmd += ["--nnodes", str(nnodes), "--node_rank", str(node_rank), "--rdzv_backend", "c10d",
                "--rdzv_endpoint", rdzv_endpoint, "--rdzv_id", f"bhasha-{run or 'default'}"]
    cmd += ["--nproc_per_node", str(nproc), "-m", "bhasha_build.stages.launch", "train"]
    for flag, value in (("--profile", profile), ("--config", config), ("--backend", backend)):
        if value:
            cmd += [flag, value]
    for item in sets or ():
        cmd += ["--set", item]
    if run:  # as --set: torchrun's own parser rejects a bare `--run` (ambiguous with its --run-path)
        cmd += ["--set", f"run={json.dumps(run)}"]
    if resume:
        cmd.append("--resume")
    if force:
        cmd.append("--force")
    return cmd


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.stages.launch",
                                     description="One rank of a torchrun training job (see module docstring).")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run the train stage on this rank")
    train.add_argument("--profile")
    train.add_argument("--run", help="run name (under torchrun pass --set run=NAME: torchrun's parser "
                                      "takes --run for its --run-path)")
    train.add_argument("--config")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    train.add_argument("--backend", choices=TRAIN_BACKENDS,
                       help="training backend of the ranks (default: the config's train.backend)")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--force", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of each rank: resolve the config, run the train stage; rank 0 alone writes and reports."""
    args = _parser().parse_args(argv)
    from bhasha_build.core.config import load_config

    overrides = list(args.set)
    if args.run:
        overrides.append(f"run={json.dumps(args.run)}")
    if args.backend:
        overrides.append(f"train.backend={json.dumps(args.backend)}")
    main_proc = dist.is_main_process()
    try:
        cfg = load_config(args.config, profile=args.profile, overrides=overrides)
        from bhasha_build.stages.train import import_unsloth_first

        import_unsloth_first(cfg)  # patches transformers/peft/trl: must come before the pipeline's imports
        from bhasha_build.stages import pipeline

        summary = pipeline.run_train(cfg, resume=args.resume, force=args.force)
    except BhashaError as exc:
        if main_proc:  # every rank hits the same user error: say it once
            print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        dist.destroy()
    if main_proc:
        print(json.dumps({k: summary.get(k) for k in ("global_step", "train_loss", "seconds", "distributed")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
