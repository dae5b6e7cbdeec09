"""Multi-GPU launcher (issue 7), CPU part: the torchrun argv, `invoke train --gpus N`, and a real
2-process DDP run (torchrun + gloo, the config's Unsloth backend) on the tiny model where only rank 0
writes the run folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bhasha_build.stages.launch import _parser, torchrun_command

REPO = Path(__file__).resolve().parent.parent


def _torchrun_parse(argv: list[str]):
    """Parse argv with torchrun's own parser, as `python -m torch.distributed.run` would."""
    from torch.distributed.run import get_args_parser

    assert argv[1:3] == ["-m", "torch.distributed.run"]
    return get_args_parser().parse_args(argv[3:])


# ----------------------------------------------------------------------------------------------
# (a) argv


def test_single_host_argv_reaches_each_rank_intact() -> None:
    sets = ['runs_dir="/data/my runs"', "train.max_steps=6"]
    argv = torchrun_command(2, profile="gpu16gb", run="2024", config="x.toml", sets=sets, resume=True)
    assert argv[0] == sys.executable
    ns = _torchrun_parse(argv)
    assert ns.standalone and ns.nnodes == "1" and ns.nproc_per_node == "2"
    assert ns.module and ns.training_script == "bhasha_build.stages.launch"
    # What every rank's main() receives: the same profile, config, overrides, run and resume flag.
    rank = _parser().parse_args(ns.training_script_args)
    assert rank.command == "train" and rank.profile == "gpu16gb" and rank.config == "x.toml" and rank.resume
    assert rank.set == [*sets, 'run="2024"']  # a numeric run name stays a string (JSON-quoted)
    assert rank.backend is None and not rank.force


def test_multi_host_argv_uses_c10d_rendezvous() -> None:
    argv = torchrun_command(8, profile="gpu16gb", run="big", nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.5:29400",
                            backend="unsloth", force=True)
    ns = _torchrun_parse(argv)
    assert not ns.standalone
    assert (ns.nnodes, ns.node_rank, ns.nproc_per_node) == ("2", 1, "8")
    assert (ns.rdzv_backend, ns.rdzv_endpoint, ns.rdzv_id) == ("c10d", "10.0.0.5:29400", "bhasha-big")
    rank = _parser().parse_args(ns.training_script_args)
    assert rank.backend == "unsloth" and rank.force


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nproc": 0}, "nproc"),
    ({"nproc": 2, "nnodes": 2}, "rdzv_endpoint"),
    ({"nproc": 2, "nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, "node_rank"),
    ({"nproc": 2, "rdzv_endpoint": "h:1"}, "several hosts"),
    ({"nproc": 2, "backend": "deepspeed"}, "backend"),
])
def test_bad_layouts_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        torchrun_command(**kwargs)


def _dry_train(*args: str) -> list[str]:
    """`invoke --dry train ...`: the echoed command line (ANSI colour removed)."""
    proc = subprocess.run([sys.executable, "-m", "invoke", "--dry", "train", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in proc.stdout.splitlines()]
    return [ln for ln in lines if "torch.distributed.run" in ln]


def _set_flags(sets: list[str]) -> list[str]:
    return [a for item in sets for a in ("--set", item)]


def test_invoke_train_gpus_echoes_the_torchrun_command(tmp_path: Path) -> None:
    # A numeric run name and a quoted path must reach the ranks as typed (tasks.py shell-quotes the argv).
    sets = [f'runs_dir="{tmp_path}/my runs"', "train.backend=hf"]  # hf: the parent process skips importing unsloth
    echoed = _dry_train("--gpus", "2", "--profile", "tiny-cpu", "--run", "2024", *_set_flags(sets))
    assert len(echoed) == 1
    assert shlex.split(echoed[0]) == torchrun_command(2, profile="tiny-cpu", run="2024", sets=sets)


# ----------------------------------------------------------------------------------------------
# (b) a real 2-process run

# Loaded by every process of the run through PYTHONPATH: records, per rank, each Python-level write
# (open for writing, mkdir, rename/replace, remove, rmtree) under the run folder. C-level writers
# (torch.save, safetensors) escape it; the final-state checks below cover those.
AUDIT_HOOK = r'''
import os, sys
_root = os.environ.get("BHASHA_AUDIT_ROOT")
_log = os.environ.get("BHASHA_AUDIT_LOG")
_rank = os.environ.get("RANK")  # unset in torchrun's agent process: not audited
if _root and _log and _rank is not None:
    _busy = []
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate", "os.link",
               "os.symlink", "shutil.copyfile", "shutil.move"}

    def _under_root(p):
        try:
            p = os.fsdecode(p) if isinstance(p, (bytes, os.PathLike)) else p
            return isinstance(p, str) and os.path.abspath(p).startswith(_root + os.sep)
        except Exception:
            return False

    def _hook(event, args):
        if _busy or not (event == "open" or event in _EVENTS):
            return
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
            paths = [path] if writes else []
        else:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        for p in paths:
            if _under_root(p):
                _busy.append(1)
                try:
                    with open(f"{_log}.{_rank}", "a") as fh:
                        fh.write(f"{event}\t{os.path.relpath(os.fsdecode(p), _root)}\n")
                finally:
                    _busy.pop()

    sys.addaudithook(_hook)
'''


def _clone_run(tiny_pipeline: dict[str, Any], dest: Path) -> None:
    src = tiny_pipeline["run_dir"]
    dest.mkdir(parents=True)
    shutil.copytree(src / "data", dest / "data")
    shutil.copytree(src / "base-model", dest / "base-model")
    shutil.copy2(src / "manifest.json", dest / "manifest.json")  # the records the train stage verifies


STEPS = ["train.max_steps=4", "train.logging_steps=2", "train.save_steps=2", "train.warmup_steps=1"]


@pytest.mark.slow
def test_torchrun_two_ranks_gloo_only_rank0_writes(tiny_pipeline: dict[str, Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "ddp"
    _clone_run(tiny_pipeline, run_dir)
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    audit = tmp_path / "audit.log"
    argv = torchrun_command(2, profile="tiny-cpu", run="ddp", sets=[f'runs_dir="{run_dir.parent}"', *STEPS])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "BHASHA_AUDIT_ROOT": str(run_dir),
           "BHASHA_AUDIT_LOG": str(audit), "PYTHONPATH": os.pathsep.join([str(hook_dir), str(REPO)])}
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    print(f"torchrun 2 ranks: {time.monotonic() - t0:.1f}s")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # train_log.jsonl: one line per logging step, none from rank 1; progress printed once per step.
    log = [json.loads(ln) for ln in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert [ln.split(" loss")[0] for ln in out.splitlines() if ln.startswith("train step ")] == \
        ["train step 2/4", "train step 4/4"]

    # One adapter, no leftover temp folders; the manifest says what ran.
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["adapter", "base-model", "checkpoints", "data", "loss.png", "manifest.json", "train_log.jsonl"])
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]
    assert stage["status"] == "done" and stage["global_step"] == 4
    # The config's backend (tiny-cpu: unsloth, whose CPU backend runs here) is what the ranks train with.
    assert stage["distributed"] == {"world_size": 2, "backend": "unsloth", "engine": "torchrun+ddp",
                                    "ddp_backend": "gloo", "per_device_batch": 8, "grad_accum": 1,
                                    "effective_batch": 16}

    # The Trainer's checkpoints: rank 0's files plus one rng_state per rank.
    ckpt = run_dir / "checkpoints" / "checkpoint-4"
    assert (ckpt / "rng_state_0.pth").exists() and (ckpt / "rng_state_1.pth").exists()

    # Audit: rank 0 wrote the run folder (proves the hook saw writes); rank 1 wrote nothing but its RNG state.
    rank0 = (tmp_path / "audit.log.0").read_text().splitlines()
    assert any(ln.endswith("\ttrain_log.jsonl") for ln in rank0)
    assert any(ln.startswith("os.rename") and ln.endswith("\tmanifest.json") for ln in rank0)
    audit1 = tmp_path / "audit.log.1"
    rank1 = audit1.read_text().splitlines() if audit1.exists() else []
    allowed = r"os\.mkdir\tcheckpoints/checkpoint-\d+|open\tcheckpoints/checkpoint-\d+/rng_state_1\.pth"
    stray = [ln for ln in rank1 if not re.fullmatch(allowed, ln)]
    assert not stray, stray

    # Same effective batch (8 × 1 × 2 ranks == 8 × 2 accum × 1 process), same steps: the same per-step
    # losses, since the sharded sampler hands rank r the r-th micro-batch of the single-process order.
    # The reference runs in a fresh process too (this one has Unsloth's patches loaded by the fixture).
    single_dir = tmp_path / "runs" / "single"
    _clone_run(tiny_pipeline, single_dir)
    one_proc = [sys.executable, "-m", "bhasha_build.stages.launch", "train", "--profile", "tiny-cpu",
                "--backend", "unsloth",
                *_set_flags([f'runs_dir="{single_dir.parent}"', 'run="single"', *STEPS, "train.grad_accum=2"])]
    t0 = time.monotonic()
    proc = subprocess.run(one_proc, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          timeout=600)
    print(f"single process: {time.monotonic() - t0:.1f}s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    dist = json.loads((single_dir / "manifest.json").read_text())["stages"]["train"]["distributed"]
    assert dist["world_size"] == 1 and dist["effective_batch"] == 16
    single = [json.loads(ln) for ln in (single_dir / "train_log.jsonl").read_text().splitlines()]
    for one, two in zip(single, log, strict=True):
        print(f"step {one['step']}: loss 1 process {one['loss']:.6f}, 2 ranks {two['loss']:.6f}")
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-3), (one, two)
