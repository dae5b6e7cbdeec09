"""Multi-GPU proof: the same data and steps on 1 GPU and on N GPUs, through the project's launcher.

Both runs are `python -m bhasha_build.stages.launch train` (what `invoke train --gpus N` starts under
torchrun) on the same train.jsonl, with the same effective batch: 1 GPU with grad_accum = N, and N
GPUs (torchrun, DDP) with grad_accum 1. Accelerate shards each global batch over the ranks, so both
see the same examples at every optimizer step: their step losses must agree within
`rel_tol`·|loss| + `abs_tol` (bf16 4-bit kernels and a different reduction order differ a little),
and N GPUs must give ≥ `min_speedup`× the tokens/s of one. JSON out.

Model: the exact Qwen2.5 architecture at random init (tiny.build_qwen25_shaped, no hub), QLoRA.
Rows: echo pairs of random Devanagari words (the reply repeats the prompt), so the loss falls quickly
and the curves are compared while they move, not on a flat random-init plateau.

Knobs: --gpus, --backend (hf | unsloth), --size, --steps, --warmup (steps left out of tokens/s),
--batch (per GPU), --seq, --lr, --rel-tol, --abs-tol, --min-speedup, --set (extra overrides), --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bhasha_build.core.fsutil import atomic_write_json
from bhasha_build.core.layout import RunLayout
from bhasha_build.stages.launch import torchrun_command
from bhasha_build.stages.train import read_log
from bhasha_build.tools.bench import _env, _gpu, _random_words, write_train_split


def _sets(runs_dir: Path, run: str, model_dir: Path, args: argparse.Namespace, grad_accum: int) -> list[str]:
    return [f"runs_dir={json.dumps(str(runs_dir))}", f"run={json.dumps(run)}",
            f"model.name={json.dumps(str(model_dir))}", f"model.max_seq_length={args.seq}",
            "model.load_in_4bit=true", f"train.batch_size={args.batch}", f"train.grad_accum={grad_accum}",
            f"train.max_steps={args.steps}", "train.packing=false", "train.logging_steps=1",
            "train.save_steps=100000", "train.warmup_steps=2", f"train.learning_rate={args.lr}",
            'train.optim="paged_adamw_8bit"', 'train.lr_scheduler="constant_with_warmup"']


def echo_rows(n: int, seq: int, model_dir: Path, seed: int = 0) -> list[dict[str, str]]:
    """Pairs whose prompt + reply fill about 90% of `seq` tokens with the model's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    rng = random.Random(seed)
    per_word = len(tok(_random_words(random.Random(1), 200))["input_ids"]) / 200
    words = max(4, int((0.9 * seq / 2 - 40) / per_word))  # prompt and reply each about half the row
    rows = []
    for i in range(n):
        text = _random_words(rng, words)
        rows.append({"id": f"e{i}", "lang": "hi", "noisy": text, "clean": text})
    return rows


def compare(single: list[dict[str, Any]], multi: list[dict[str, Any]], warmup: int, rel_tol: float,
            abs_tol: float, min_speedup: float) -> dict[str, Any]:
    """Step-by-step loss agreement and the tokens/s ratio of two train_log.jsonl curves."""
    by_step = {r["step"]: r for r in multi}
    pairs = [(r["step"], r["loss"], by_step[r["step"]]["loss"]) for r in single if r["step"] in by_step]
    if not pairs:
        return {"ok": False, "reason": "no common logged steps"}
    worst = max(pairs, key=lambda p: abs(p[1] - p[2]) - (rel_tol * abs(p[1]) + abs_tol))
    losses_ok = all(abs(a - b) <= rel_tol * abs(a) + abs_tol for _, a, b in pairs)

    def median_tps(log: list[dict[str, Any]]) -> float | None:
        values = sorted(r["tokens_per_s"] for r in log if r["step"] > warmup and r.get("tokens_per_s"))
        return values[len(values) // 2] if values else None

    def tokens_per_step(log: list[dict[str, Any]]) -> float | None:
        timed = [r for r in log if r.get("num_tokens")]
        if len(timed) < 2:
            return None
        return (timed[-1]["num_tokens"] - timed[0]["num_tokens"]) / (timed[-1]["step"] - timed[0]["step"])

    tps_single, tps_multi = median_tps(single), median_tps(multi)
    speedup = round(tps_multi / tps_single, 3) if tps_single and tps_multi else None
    return {
        "steps_compared": len(pairs),
        "loss_first": {"single": pairs[0][1], "multi": pairs[0][2]},
        "loss_last": {"single": pairs[-1][1], "multi": pairs[-1][2]},
        "max_abs_diff": round(max(abs(a - b) for _, a, b in pairs), 5),
        "max_rel_diff": round(max(abs(a - b) / max(abs(a), 1e-9) for _, a, b in pairs), 5),
        "worst_step": {"step": worst[0], "single": worst[1], "multi": worst[2]},
        "tolerance": f"|multi - single| <= {rel_tol}*|single| + {abs_tol} at every step",
        "losses_agree": losses_ok,
        "tokens_per_step": {"single": tokens_per_step(single), "multi": tokens_per_step(multi)},
        "tokens_per_s": {"single": tps_single, "multi": tps_multi},
        "speedup": speedup,
        "speedup_ok": speedup is not None and speedup >= min_speedup,
        "ok": losses_ok and speedup is not None and speedup >= min_speedup,
    }


def _run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    print("+", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = round(time.monotonic() - t0, 1)
    if rc:
        print(log.read_text()[-3000:], flush=True)
    return rc, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.bench_ddp", description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--backend", default="hf", choices=["hf", "unsloth"])
    parser.add_argument("--size", default="1.5B")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="per GPU")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rel-tol", type=float, default=0.02)
    parser.add_argument("--abs-tol", type=float, default=0.02)
    parser.add_argument("--min-speedup", type=float, default=1.8)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--work-dir", default=None, help="run folders (default: a temp folder)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra config override for both runs (e.g. train.gradient_checkpointing=false)")
    parser.add_argument("--out", default="bench/ddp.json")
    parser.add_argument("--only", choices=["single", "multi"], default=None,
                        help="run one layout (the other's results are read from --work-dir if there)")
    parser.add_argument("--cpu", action="store_true", help="processes on CPU with gloo (tests of this tool)")
    args = parser.parse_args(argv)

    import torch

    if not args.cpu and torch.cuda.device_count() < args.gpus:
        print(f"error: needs {args.gpus} CUDA GPUs, found {torch.cuda.device_count()}", file=sys.stderr)
        return 1
    model_dir = Path(args.model_dir or Path(tempfile.gettempdir()) / f"bhasha-bench-qwen2.5-{args.size}")
    if not (model_dir / "config.json").exists():
        from bhasha_build.core.tiny import build_qwen25_shaped

        build_qwen25_shaped(model_dir, args.size)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bhasha-ddp-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = echo_rows(args.batch * args.gpus * args.steps, args.seq, model_dir)
    env = dict(_env(), NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    runs: dict[str, Any] = {}
    layouts = {"single": (1, args.gpus), "multi": (args.gpus, 1)}  # (processes, grad_accum)
    for name, (nproc, accum) in layouts.items():
        run_name = f"{name}-{args.backend}"
        if args.only and name != args.only:
            saved = work / f"{run_name}.json"
            runs[name] = json.loads(saved.read_text()) if saved.exists() else {"rc": None, "log": []}
            continue
        layout = RunLayout(work / run_name)
        write_train_split(layout, rows)
        sets = [*_sets(work, run_name, model_dir, args, accum), *args.set]
        if nproc == 1:
            cmd = [sys.executable, "-m", "bhasha_build.stages.launch", "train", "--backend", args.backend,
                   *[a for s in sets for a in ("--set", s)]]
            run_env = dict(env, CUDA_VISIBLE_DEVICES="" if args.cpu else "0")
        else:
            cmd = torchrun_command(nproc, sets=sets, backend=args.backend)
            run_env = dict(env, CUDA_VISIBLE_DEVICES="" if args.cpu else ",".join(str(i) for i in range(nproc)))
        rc, wall = _run(cmd, run_env, work / f"{run_name}.log")
        manifest = layout.manifest
        stage = json.loads(manifest.read_text())["stages"].get("train", {}) if manifest.exists() else {}
        runs[name] = {"rc": rc, "wall_s": wall, "processes": nproc, "grad_accum": accum,
                      "distributed": stage.get("distributed"), "peak_memory_gib_rank0": stage.get("peak_memory_gib"),
                      "train_loss": stage.get("train_loss"), "log": read_log(layout.train_log)}
        atomic_write_json(work / f"{run_name}.json", runs[name])
    report = {"date": dt.date.today().isoformat(), "gpu": _gpu(), "gpus": args.gpus, "backend": args.backend,
              "size": args.size, "seq": args.seq, "batch_per_gpu": args.batch,
              "effective_batch": args.batch * args.gpus, "steps": args.steps, "warmup": args.warmup,
              "runs": {k: {kk: vv for kk, vv in v.items() if kk != "log"} for k, v in runs.items()}}
    if all(r["rc"] == 0 for r in runs.values()):
        report["comparison"] = compare(runs["single"]["log"], runs["multi"]["log"], args.warmup, args.rel_tol,
                                       args.abs_tol, args.min_speedup)
    else:
        report["comparison"] = {"ok": False, "reason": "a run failed (see its log above)"}
    report["curves"] = {k: [(r["step"], r["loss"], r.get("tokens_per_s")) for r in v["log"]] for k, v in runs.items()}
    atomic_write_json(args.out, report)
    print(json.dumps(report["comparison"], indent=2), flush=True)
    return 0 if report["comparison"].get("ok") else 2


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
