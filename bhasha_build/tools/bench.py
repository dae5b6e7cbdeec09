"""GPU training benchmark: the project's train path vs a plain HF + PEFT + bitsandbytes QLoRA loop
vs a raw Unsloth loop, at the exact Qwen2.5 architecture, in ONE run on ONE card. JSON out.

Parts (each in its own, fresh process that imports what the CLI imports in the CLI's order: unsloth
first for the project and the bare Unsloth loop, never for the HF baselines; memory peaks must not
leak between parts either):
  project_dense   bhasha_build.stages.train.train() on dense 2048-token rows (packing off, bs 8)
  project_16gb    the train stage as a 16 GB card runs it: micro-batch and per-layer checkpointing
                  probed within 14 GiB (0.875 x --card-gib), the layout pinned through Unsloth's trainer
                  (the probe times full optimizer steps, stages/probe.py; each probed part carries
                  probe_step_tokens_per_s beside trained_tokens_per_s, and probe.trained_vs_probe_speed)
  project_full_card  the same with train.vram_budget_gib = "auto": 0.875 x the detected card
  project_dense_nockpt  the same with activation checkpointing off (a lever: speed vs memory)
  project_dense_auto    the same effective batch with train.batch_size = "auto" and
                  gradient_checkpointing = "auto": micro-batch and checkpointing probed on the card
                  within the VRAM budget of a --card-gib card (0.875 x 16 GB = 14 GiB by default)
  baseline_trl    what HF users run: TRL SFTTrainer + PEFT + bitsandbytes nf4 (double quant, bf16
                  compute), gradient checkpointing (non-reentrant), paged_adamw_8bit; same rows/LoRA
  baseline_trl_nockpt  the same without checkpointing (TRL's best where memory allows)
  baseline_hf     plain transformers + peft + bitsandbytes 4-bit loop, same LoRA/seq/optimizer/batch,
                  PEFT's documented QLoRA recipe (prepare_model_for_kbit_training: fp32 norms/head)
  baseline_hf_lean  the same without the fp32 upcast (bf16 head, gradient checkpointing): a stronger
                  baseline, so the speed-up is not flattered by the recipe
  raw_unsloth     FastLanguageModel + get_peft_model + a bare torch loop, same shapes
  project_ocr     bhasha_build.stages.train.train() on OCR-length rows (64–384 tokens) with packing
                  (packing_strategy auto: padding_free with a varlen kernel, else dense_rows)
  project_ocr_padding_free  the same forced to padding-free packing (exact isolation)
  project_ocr_unpacked  the same rows without packing (what packing buys)

Repeats: --repeats N runs every part N times, the order reversed on every other repeat (ABC CBA ABC),
and reports each part's median tokens/s with its spread (min, max, (max - min) / median); ratios are
medians' ratios, with the per-repeat ratios beside them (one card gives +-10 % between runs).

tokens/s is measured after warm-up steps; useful tokens are non-padding tokens; peak memory is
torch.cuda.max_memory_allocated. Ratios: every project part against the STRONGEST baseline of the same
run, bare Unsloth included (and against the strongest HF path beside it), plus secondary rows (before
2026-12-03's 8th session `strongest_baseline` meant the HF paths alone: read older JSON's `headline_16gb`);
`headline_16gb`: project_16gb against the strongest baseline
(TRL or bare Unsloth) whose peak fits the 16 GB budget. Knobs: --size (1.5B|0.5B), --steps, --warmup,
--batch, --seq, --card-gib, --repeats, --mode (all|project|baseline|raw|levers|headline|speed|ocr|
<part>[,<part>...]), --profile (+ --profile-stacks: which Python lines launch the most ops), --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.manifest import Manifest

PARTS = ["project_dense", "baseline_trl", "baseline_hf", "baseline_hf_lean", "raw_unsloth", "project_dense_nockpt",
         "project_dense_auto", "project_ocr", "project_ocr_padding_free", "project_ocr_unpacked", "project_16gb",
         "project_full_card", "baseline_trl_nockpt"]
MODES = {"all": PARTS, "project": ["project_dense"], "baseline": ["baseline_trl", "baseline_hf", "baseline_hf_lean"],
         "raw": ["raw_unsloth"], "levers": ["project_dense", "project_dense_nockpt", "project_dense_auto"],
         "headline": ["project_dense", "project_dense_auto", "baseline_trl", "baseline_hf_lean", "raw_unsloth"],
         "ocr": ["project_ocr", "project_ocr_padding_free", "project_ocr_unpacked"],
         "speed": ["project_16gb", "project_full_card", "baseline_trl", "raw_unsloth"]}
BASELINES = ("baseline_trl", "baseline_trl_nockpt", "baseline_hf", "baseline_hf_lean")  # the strongest HF path
UNSLOTH_PARTS = ("raw_unsloth",)  # bare Unsloth: imports unsloth itself, first
# What each part imports before its work, in this order (the CLI: config, then unsloth, then the stages'
# transformers/peft/trl); the HF baselines never import unsloth, which would patch what they measure.
CLI_IMPORTS = ("unsloth", "transformers", "peft", "trl")
HF_IMPORTS = ("transformers", "peft", "trl", "bitsandbytes")
WATCHED = ("unsloth", "transformers", "peft", "trl")


def _env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", UNSLOTH_DISABLE_STATISTICS="1",
                TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")


def _gpu() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"name": None}
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.version.cuda}


def _random_words(rng: random.Random, n: int) -> str:
    alphabet = "कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसहािीुूेैोौंः"
    return " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7))) for _ in range(n))


def write_train_split(layout: RunLayout, rows: list[dict[str, str]]) -> None:
    """Benchmark rows as a run's train split, recorded in its manifest as the data stage would (the rows
    are synthetic, not data-stage output, so the train stage's input check has a record to verify)."""
    atomic_write_jsonl(layout.train_split, rows)
    Manifest(layout.root).artifact("train_split", layout.train_split)


def part_imports(part: str) -> tuple[str, ...]:
    """The modules a part's process imports first, in order: the CLI's order (tasks.py: config, then
    stages.train.import_unsloth_first, then the stages) for the project and bare Unsloth; HF's for the
    baselines."""
    return HF_IMPORTS if part in BASELINES else CLI_IMPORTS


def import_like_the_cli(part: str) -> list[str]:
    """Import what `part` needs in part_imports' order; returns the order in which the watched packages
    (unsloth, transformers, peft, trl) first appeared in sys.modules, as evidence for the record."""
    import importlib

    if part_imports(part)[0] == "unsloth":
        from bhasha_build.core.config import BuildConfig
        from bhasha_build.stages.train import import_unsloth_first

        import_unsloth_first(BuildConfig.model_validate({"train": {"backend": "unsloth"}}))
    for name in part_imports(part):
        importlib.import_module(name)
    return imported_order()


class _ImportLog:
    """A meta-path finder that only notes the first import of each watched top-level package (Python asks
    the finders only for modules not yet in sys.modules) and lets the real finders load it."""

    def __init__(self) -> None:
        self.order = [name for name in WATCHED if name in sys.modules]  # already there: nothing to order

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name in WATCHED and name not in self.order:
            self.order.append(name)


_IMPORT_LOG: _ImportLog | None = None


def watch_imports() -> None:
    """Start noting the watched packages' first imports (before anything imports them)."""
    global _IMPORT_LOG
    if _IMPORT_LOG is None:
        _IMPORT_LOG = _ImportLog()
        sys.meta_path.insert(0, _IMPORT_LOG)


def imported_order() -> list[str]:
    """The watched packages in the order they were first imported (sys.modules' order is no evidence:
    Unsloth's CPU fallback re-inserts itself)."""
    return list(_IMPORT_LOG.order) if _IMPORT_LOG else [name for name in sys.modules if name in WATCHED]


def schedule(parts: list[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, part) in run order: the parts' order reversed on every other repeat, so no part always
    runs first (a cold card) or right after the same neighbour."""
    return [(r, part) for r in range(repeats) for part in (parts if r % 2 == 0 else parts[::-1])]


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A part's repeated runs as one result: the median run's figures, plus min/max/spread of tokens/s
    and the largest peak memory. Failed runs are counted, not averaged."""
    ok = [r for r in runs if r.get("tokens_per_s")]
    out: dict[str, Any] = {"runs": runs, "repeats_ok": len(ok), "repeats_failed": len(runs) - len(ok)}
    if not ok:
        out["error"] = next((r["error"] for r in runs if r.get("error")), "no run measured tokens/s")
        return out
    tps = sorted(r["tokens_per_s"] for r in ok)
    median = statistics.median(tps)
    middle = min(ok, key=lambda r: abs(r["tokens_per_s"] - median))
    out.update({k: v for k, v in middle.items() if k not in ("wall_s", "repeat")})
    out.update(tokens_per_s=round(median, 1), tokens_per_s_min=tps[0], tokens_per_s_max=tps[-1],
               spread_pct=round(100 * (tps[-1] - tps[0]) / median, 1) if median else None)
    peaks = [r["peak_memory_gib"] for r in ok if r.get("peak_memory_gib") is not None]
    if peaks:
        out["peak_memory_gib_max"] = max(peaks)
    return out


def _bench_config(model_dir: Path, run_dir: Path, args: argparse.Namespace, packing: bool, steps: int,
                  strategy: str = "auto", **train: Any):
    from bhasha_build.core.config import BuildConfig

    return BuildConfig.model_validate({
        "run": run_dir.name, "runs_dir": str(run_dir.parent), "seed": 3407,
        "model": {"name": str(model_dir), "max_seq_length": args.seq, "load_in_4bit": True},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0},
        "train": {"backend": "unsloth", "batch_size": args.batch, "grad_accum": 1, "max_steps": steps,
                  "packing": packing, "packing_strategy": strategy, "optim": "paged_adamw_8bit",
                  "save_steps": 100000, "logging_steps": 1,
                  "warmup_steps": 0, "learning_rate": 1e-4, "gpu_memory_gib": args.card_gib, **train},
    })


def bench_rows(tok: Any, args: argparse.Namespace, rows_kind: str, steps: int) -> list[dict[str, str]]:
    """The rows every part trains on: "dense" (one exactly-`seq`-token row per sequence) or "ocr"."""
    rng = random.Random(0)
    rows = []
    if rows_kind == "dense":
        # One row per sequence, longer than seq so TRL truncates it to exactly `seq` tokens.
        per_word = max(1, len(tok(_random_words(rng, 50))["input_ids"]) // 50)
        for i in range(args.batch * steps):
            rows.append({"id": f"d{i}", "lang": "hi", "noisy": _random_words(rng, 8),
                         "clean": _random_words(rng, int(args.seq / per_word) + 64)})
    else:
        # OCR-length rows: 64–384 tokens each, like real line/paragraph pairs.
        for i in range(args.batch * steps * 12):
            target = rng.randint(64, 384)
            words = max(2, target // 6)
            text = _random_words(rng, words)
            rows.append({"id": f"o{i}", "lang": "hi", "noisy": text[: len(text) // 2], "clean": text})
    return rows


def _project_part(model_dir: Path, args: argparse.Namespace, rows_kind: str, packing: bool,
                  strategy: str = "auto", **overrides: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from bhasha_build.stages.train import read_log, train

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    steps = args.warmup + args.steps
    rows = bench_rows(tok, args, rows_kind, steps)
    with tempfile.TemporaryDirectory() as tmp:
        layout = RunLayout(Path(tmp) / "bench")
        write_train_split(layout, rows)
        cfg = _bench_config(model_dir, layout.root, args, packing, steps, strategy, **overrides)
        torch.cuda.reset_peak_memory_stats()
        profile: dict[str, Any] = {}
        summary = train(cfg, layout, extra_callbacks=[_profiler_callback(args, profile)] if args.profile else None)
        log = read_log(layout.train_log)
    timed = [r for r in log if r["step"] > args.warmup and r.get("tokens_per_s")]
    tps = sorted(r["tokens_per_s"] for r in timed)
    median = tps[len(tps) // 2] if tps else None
    profile.update(probe_vs_trained(summary.get("micro_batch") or {}, median, summary.get("peak_memory_gib")))
    return {"tokens_per_s": median, "useful_tokens_per_s": median,
            "peak_memory_gib": summary.get("peak_memory_gib"), "steps_timed": len(timed),
            "optim_used": summary.get("optim_used"), "packing": packing, "rows": rows_kind,
            "packing_strategy": summary.get("packing_strategy"), "varlen_kernel": summary.get("varlen_kernel"),
            "micro_batch": summary.get("micro_batch"),
            **profile,
            "tokens_per_step": (timed[-1]["num_tokens"] - timed[0]["num_tokens"]) / max(len(timed) - 1, 1)
            if len(timed) > 1 else None}


def probe_vs_trained(micro: dict[str, Any], trained_tps: float | None, trained_peak: float | None) -> dict[str, Any]:
    """Does training run at what the probe measured? The chosen layout's probed optimizer-step tokens/s and
    peak (the manifest's stages.train.micro_batch.chosen) beside this part's trained median after warm-up
    (and the stage's own all-steps median, micro_batch.trained); {} when nothing was probed."""
    chosen = micro.get("chosen") or {}
    probed = chosen.get("probe_tokens_per_s")
    if not probed:
        return {}
    out: dict[str, Any] = {"probe_step_tokens_per_s": probed, "trained_tokens_per_s": trained_tps,
                           "stage_trained_tokens_per_s": (micro.get("trained") or {}).get("tokens_per_s"),
                           "probe": {"tokens_per_s": probed, "peak_gib": chosen.get("probe_peak_gib"),
                                     "measures": micro.get("measures"), "seconds": micro.get("probe_seconds")}}
    if trained_tps:
        out["probe"]["trained_vs_probe_speed"] = round(trained_tps / probed, 3)
    if trained_peak and chosen.get("probe_peak_gib"):
        out["probe"]["trained_vs_probe_peak"] = round(trained_peak / chosen["probe_peak_gib"], 3)
    return out


PROFILED_STEPS = 3  # --profile: the steps after warm-up that torch.profiler records (they are not timing runs)


class StepProfiler:
    """torch.profiler over PROFILED_STEPS steps: `start()` before the first, `stop(sink)` after the last. The
    sink gets the top device ops by self time and where a step's wall time goes: `device_ms_per_step` (every
    kernel and copy the window ran, summed over the device-side events; overlapping streams can make it
    exceed the wall) against `wall_ms_per_step`, and `device_busy_share`, their ratio. A step whose device is
    busy for most of its wall time is bound by its kernels; one with a low share waits on the host (Python,
    synchronizing calls, data). The same measure for the project's trainer and the bare Unsloth loop says
    which of the two a gap between them is."""

    def __init__(self, stacks: bool = False) -> None:
        self.prof: Any = None
        self.t0 = 0.0
        self.stacks = stacks  # --profile-stacks: Python call sites of the most launched ops (slows the window)

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def start(self) -> None:
        import torch

        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._sync()
        self.prof = torch.profiler.profile(activities=activities, with_stack=self.stacks)
        self.prof.__enter__()
        self.t0 = time.perf_counter()

    def stop(self, sink: dict[str, Any], steps: int = PROFILED_STEPS) -> None:
        from torch.autograd import DeviceType

        self._sync()
        wall = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        events = self.prof.key_averages()
        device_us = sum(e.self_device_time_total for e in events if e.device_type != DeviceType.CPU)
        wall_ms, device_ms = 1000 * wall / steps, device_us / 1000 / steps
        sink.update(top_cuda_ops=events.table(sort_by="self_device_time_total", row_limit=12),
                    step_profile={"steps": steps, "wall_ms_per_step": round(wall_ms, 2),
                                  "device_ms_per_step": round(device_ms, 2),
                                  "device_busy_share": round(device_ms / wall_ms, 3) if wall_ms > 0 else None})
        cpu_ops = sorted((e for e in events if e.device_type == DeviceType.CPU and "::" in e.key),  # ops, not
                         key=lambda e: -e.count)  # the Python frames with_stack adds as events
        sink["ops_by_calls"] = [{"op": e.key, "calls_per_step": round(e.count / steps, 1),
                                 "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2)}
                                for e in cpu_ops[:10]]
        if self.stacks:
            sink["call_sites"] = call_sites(self.prof, [o["op"] for o in sink["ops_by_calls"]], steps)
        print(sink["top_cuda_ops"], "\nstep profile:", json.dumps(sink["step_profile"]),
              "\nops by calls:", json.dumps(sink["ops_by_calls"]), flush=True)
        self.prof = None


def call_sites(prof: Any, ops: list[str], steps: int, top: int = 8) -> dict[str, list[dict[str, Any]]]:
    """For each op named, the Python frames that launched it most (the first frame outside torch itself), as
    calls per step: where a step's many small launches come from (`bench --profile-stacks`). `_trace` counts
    the Python frames the trace holds: on the H200 of 2026-12-04 (torch 2.11, the project's trainer and the bare
    loop alike) it held none, so every site read "(no Python frame)"; on the 2-core VM (torch 2.13) the lines
    are named (tests/test_bench.py)."""
    def own(frame: str) -> bool:  # a Python frame ("path.py(line): function") that is not torch's own
        return ".py(" in frame and not frame.startswith("torch/") and "/torch/" not in frame

    def site_of(event: Any) -> str:
        frame = next((f for f in (event.stack or []) if own(f)), None)  # the op's own recorded stack, if any
        if frame:
            return frame
        parent = event.cpu_parent  # with_stack: the Python frames are the op's ancestors in the event tree
        while parent is not None and not own(parent.name):
            parent = parent.cpu_parent
        return parent.name if parent is not None else "(no Python frame)"

    events = list(prof.events())
    counts: dict[str, dict[str, int]] = {op: {} for op in ops}
    for event in events:
        if event.name in counts and event.device_type.name == "CPU":
            site = site_of(event)
            counts[event.name][site] = counts[event.name].get(site, 0) + 1
    found: dict[str, list[dict[str, Any]]] = {}
    for op, sites in counts.items():
        ranked = sorted(sites.items(), key=lambda kv: -kv[1])[:top]
        found[op] = [{"site": site, "calls_per_step": round(n / steps, 1)} for site, n in ranked]
    # how much Python the trace holds: 0 frames means the sites cannot be named
    found["_trace"] = [{"python_frames": sum(1 for e in events if own(e.name)),
                        "ops_with_a_stack": sum(1 for e in events if e.stack), "events": len(events)}]
    return found


def _profiler_callback(args: argparse.Namespace, sink: dict[str, Any]):
    """StepProfiler over PROFILED_STEPS trainer steps after warm-up (the project parts)."""
    from transformers import TrainerCallback

    class ProfilerCallback(TrainerCallback):
        profiler = StepProfiler(stacks=args.profile_stacks)

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup and self.profiler.prof is None:
                self.profiler.start()

        def on_step_end(self, a, state, control, **kw):
            if self.profiler.prof is not None and state.global_step == args.warmup + PROFILED_STEPS:
                self.profiler.stop(sink)

    return ProfilerCallback()


def _timed_loop(model, optimizer, args: argparse.Namespace, vocab: int) -> dict[str, Any]:
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen).cuda()
    model.train()
    times = []
    profiled: dict[str, Any] = {}
    profiler = StepProfiler(stacks=args.profile_stacks) if args.profile else None
    for step in range(args.warmup + args.steps):
        if profiler and step == args.warmup:
            profiler.start()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        if profiler and step == args.warmup + PROFILED_STEPS - 1:
            profiler.stop(profiled)
    return {**_timing(times, args), **profiled}


def _timing(times: list[float], args: argparse.Namespace) -> dict[str, Any]:
    """Median step time of the timed steps as tokens/s, with the card's peak memory."""
    import torch

    step_s = sorted(times)[len(times) // 2]
    return {"tokens_per_s": round(args.batch * args.seq / step_s, 1), "step_s_median": round(step_s, 4),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3), "steps_timed": len(times)}


def _load_nf4(model_dir: Path) -> Any:
    """The baselines' base model: bitsandbytes nf4, double quant, bf16 compute, on GPU 0."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    return AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.bfloat16, device_map={"": 0},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16))


def _lora() -> Any:
    """The baselines' PEFT LoRA: the project's rank, alpha and target modules."""
    from peft import LoraConfig

    from bhasha_build.core.config import LORA_TARGETS

    return LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")


def _baseline_part(model_dir: Path, args: argparse.Namespace, lean: bool = False) -> dict[str, Any]:
    import bitsandbytes as bnb
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = _load_nf4(model_dir)
    if lean:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    else:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, _lora())
    optimizer = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    torch.cuda.reset_peak_memory_stats()
    return _timed_loop(model, optimizer, args, model.config.vocab_size)


def _baseline_trl_part(model_dir: Path, args: argparse.Namespace, checkpointing: bool = True) -> dict[str, Any]:
    """What HF users run: TRL SFTTrainer + PEFT LoRA + bitsandbytes nf4 (double quant, bf16 compute),
    gradient checkpointing (non-reentrant; off with checkpointing=False), paged_adamw_8bit; the same
    rows, batch, LoRA and length."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from bhasha_build.core.chat import row_to_training_example

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    steps = args.warmup + args.steps
    dataset = Dataset.from_list([row_to_training_example(r) for r in bench_rows(tok, args, "dense", steps)])
    model = _load_nf4(model_dir)
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            torch.cuda.synchronize()
            if state.global_step > args.warmup:
                times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(
            model=model, train_dataset=dataset, processing_class=tok, callbacks=[StepTimer()],
            peft_config=_lora(),
            args=SFTConfig(output_dir=tmp, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                           max_steps=steps, max_length=args.seq, packing=False, completion_only_loss=True,
                           gradient_checkpointing=checkpointing,
                           gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
                           optim="paged_adamw_8bit", learning_rate=1e-4, bf16=True, logging_steps=1,
                           save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0))
        torch.cuda.reset_peak_memory_stats()
        trainer.train()
    return {**_timing(times, args),
            "recipe": "TRL SFTTrainer + PEFT + bnb nf4 double-quant bf16, "
                      f"{'grad ckpt non-reentrant' if checkpointing else 'no checkpointing'}, paged_adamw_8bit"}


def _raw_unsloth_part(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from unsloth import FastLanguageModel  # noqa: I001  (must come before transformers)
    import bitsandbytes as bnb
    import torch

    from bhasha_build.core.config import LORA_TARGETS

    model, _ = FastLanguageModel.from_pretrained(str(model_dir), max_seq_length=args.seq, dtype=None,
                                                 load_in_4bit=True, local_files_only=True)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, bias="none",
                                             target_modules=LORA_TARGETS, use_gradient_checkpointing="unsloth",
                                             random_state=3407, max_seq_length=args.seq)
    optimizer = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    torch.cuda.reset_peak_memory_stats()
    return _timed_loop(model, optimizer, args, model.config.vocab_size)


def run_part(part: str, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    if part == "project_dense":
        return _project_part(model_dir, args, "dense", packing=False)
    if part == "project_ocr":
        return _project_part(model_dir, args, "ocr", packing=True)
    if part == "project_ocr_padding_free":
        return _project_part(model_dir, args, "ocr", packing=True, strategy="padding_free")
    if part == "project_ocr_unpacked":
        return _project_part(model_dir, args, "ocr", packing=False)
    if part == "project_dense_nockpt":
        return _project_part(model_dir, args, "dense", packing=False, gradient_checkpointing=False)
    if part == "project_dense_auto":  # the same effective batch, micro-batch and checkpointing probed on the card
        return _project_part(model_dir, args, "dense", packing=False, batch_size="auto", effective_batch=args.batch,
                             gradient_checkpointing="auto")
    if part == "project_16gb":  # the 16 GB card's budget (0.875 x --card-gib), micro-batch + per-layer layout probed
        return _project_part(model_dir, args, "dense", packing=False, batch_size="auto", effective_batch=args.batch,
                             gradient_checkpointing="auto")
    if part == "project_full_card":  # the same probe within 0.875 x the detected card
        return _project_part(model_dir, args, "dense", packing=False, batch_size="auto", effective_batch=args.batch,
                             gradient_checkpointing="auto", vram_budget_gib="auto", gpu_memory_gib=None)
    if part == "baseline_trl":
        return _baseline_trl_part(model_dir, args)
    if part == "baseline_trl_nockpt":
        return _baseline_trl_part(model_dir, args, checkpointing=False)
    if part == "baseline_hf":
        return _baseline_part(model_dir, args)
    if part == "baseline_hf_lean":
        return _baseline_part(model_dir, args, lean=True)
    if part == "raw_unsloth":
        return _raw_unsloth_part(model_dir, args)
    raise ValueError(part)


def _ratios(results: dict[str, Any], card_gib: float = 16.0) -> dict[str, Any]:
    """Each project part against the STRONGEST baseline measured in this run, bare Unsloth included
    (`strongest_baseline`), and against the strongest HF path (`strongest_hf_baseline`: TRL, PEFT), and the
    secondary rows (each baseline, bare Unsloth, what packing buys). headline_16gb: project_16gb against
    the fastest of the HF baselines and bare Unsloth whose peak fits 0.875 x card_gib; full_card:
    project_full_card against the fastest of them all."""
    def tps(name: str) -> float | None:
        return (results.get(name) or {}).get("tokens_per_s")

    out: dict[str, Any] = {}
    projects = ("project_dense", "project_dense_auto", "project_dense_nockpt", "project_16gb", "project_full_card")
    for label, names in (("strongest_baseline", (*BASELINES, *UNSLOTH_PARTS)), ("strongest_hf_baseline", BASELINES)):
        measured = {b: tps(b) for b in names if tps(b)}
        if measured:
            strongest = max(measured, key=lambda b: measured[b])
            out[label] = strongest
            for part in projects:
                if tps(part):
                    out[f"{part}_vs_{label}"] = round(tps(part) / measured[strongest], 3)
    budget = 0.875 * card_gib
    fits = {b: tps(b) for b in (*BASELINES, *UNSLOTH_PARTS) if tps(b)
            and (results[b].get("peak_memory_gib_max") or results[b].get("peak_memory_gib") or 0) <= budget}
    if fits and tps("project_16gb"):
        best = max(fits, key=lambda b: fits[b])
        out["headline_16gb"] = {"project": "project_16gb", "baseline": best, "budget_gib": round(budget, 2),
                                "ratio": round(tps("project_16gb") / fits[best], 3)}
    every = {b: tps(b) for b in (*BASELINES, *UNSLOTH_PARTS) if tps(b)}
    if every and tps("project_full_card"):
        best = max(every, key=lambda b: every[b])
        out["full_card"] = {"project": "project_full_card", "baseline": best,
                            "ratio": round(tps("project_full_card") / every[best], 3)}
    pairs = {"project_vs_baseline_trl": ("project_dense", "baseline_trl"),
             "project_16gb_vs_baseline_trl": ("project_16gb", "baseline_trl"),
             "project_16gb_vs_raw_unsloth": ("project_16gb", "raw_unsloth"),
             "project_full_card_vs_raw_unsloth": ("project_full_card", "raw_unsloth"),
             "project_full_card_vs_baseline_trl_nockpt": ("project_full_card", "baseline_trl_nockpt"),
             "project_vs_baseline_peft_recipe": ("project_dense", "baseline_hf"),
             "project_vs_baseline_lean": ("project_dense", "baseline_hf_lean"),
             "project_vs_raw_unsloth": ("project_dense", "raw_unsloth"),
             "project_auto_vs_raw_unsloth": ("project_dense_auto", "raw_unsloth"),
             "ocr_packed_vs_dense": ("project_ocr", "project_dense"),
             "ocr_packed_vs_unpacked": ("project_ocr", "project_ocr_unpacked")}
    for key, (a, b) in pairs.items():
        if tps(a) and tps(b):
            out[key] = round(tps(a) / tps(b), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.bench")
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--mode", default="all")
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--size", default="1.5B")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--profile", action="store_true",
                        help=f"torch.profiler over {PROFILED_STEPS} steps after warm-up (project parts and the "
                             "bare Unsloth loop): top device ops and the device's busy share of a step; not a "
                             "timing run")
    parser.add_argument("--profile-stacks", action="store_true",
                        help="with --profile: the Python call sites of the ten most launched ops (with_stack; "
                             "slows the profiled steps, so their busy share is not comparable)")
    parser.add_argument("--card-gib", type=float, default=16.0,
                        help="card size the VRAM budget is computed for (auto parts: 0.875 x this)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of every part, the order reversed on every other repeat; median and spread")
    parser.add_argument("--imports-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.part:  # child process: the CLI's imports first, then one part, JSON on the last stdout line
        watch_imports()
        order = import_like_the_cli(args.part)
        if args.imports_only:
            print("BENCH_IMPORTS " + json.dumps(order), flush=True)
            return 0
        result = {**run_part(args.part, Path(args.model_dir), args), "import_order": order}
        print("BENCH_RESULT " + json.dumps(result), flush=True)
        return 0

    import torch

    if not torch.cuda.is_available():
        print("error: the benchmark needs a CUDA GPU (it measures the 4-bit GPU path)", file=sys.stderr)
        return 1
    parts = MODES.get(args.mode) or [p for p in args.mode.split(",") if p in PARTS]
    model_dir = Path(args.model_dir or Path(tempfile.gettempdir()) / f"bhasha-bench-qwen2.5-{args.size}")
    if not (model_dir / "config.json").exists():
        from bhasha_build.core.tiny import build_qwen25_shaped

        t0 = time.monotonic()
        build_qwen25_shaped(model_dir, args.size)
        print(f"built random-init Qwen2.5-{args.size} shape in {time.monotonic() - t0:.0f}s", flush=True)
    gpu = _gpu()
    runs: dict[str, list[dict[str, Any]]] = {part: [] for part in parts}
    report: dict[str, Any] = {}
    for repeat, part in schedule(parts, args.repeats):
        result = run_child(part, model_dir, args)
        result["repeat"] = repeat
        runs[part].append(result)
        print(f"repeat {repeat} {part}", json.dumps(result), flush=True)
        report = build_report(args, gpu, model_dir, parts, runs)
        atomic_write_json(args.out, report)  # after each run: a cut run keeps the runs done
    print(json.dumps(report["ratios"], indent=2))
    return 0


def run_child(part: str, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One part in a fresh process; its result, or its error's last lines."""
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "bhasha_build.tools.bench", "--part", part, "--model-dir", str(model_dir),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--seq", str(args.seq), "--card-gib", str(args.card_gib), *(["--profile"] if args.profile else []),
           *(["--profile-stacks"] if args.profile_stacks else [])]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        result: dict[str, Any] = {"error": "\n".join(tail)}
    else:
        result = json.loads(line.removeprefix("BENCH_RESULT "))
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def build_report(args: argparse.Namespace, gpu: dict[str, Any], model_dir: Path, parts: list[str],
                 runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The JSON: each part's median and spread over its repeats, the medians' ratios, and each repeat's
    own ratios (parts of one repeat ran back to back) with their range."""
    results = {part: summarize_runs(part_runs) for part, part_runs in runs.items() if part_runs}
    repeats = sorted({r["repeat"] for part_runs in runs.values() for r in part_runs})
    per_repeat = [_ratios({p: next((r for r in runs[p] if r["repeat"] == k), {}) for p in parts}, args.card_gib)
                  for k in repeats]
    spread: dict[str, Any] = {}
    for key in {k for ratios in per_repeat for k, v in ratios.items() if isinstance(v, float)}:
        values = sorted(r[key] for r in per_repeat if isinstance(r.get(key), float))
        spread[key] = {"min": values[0], "max": values[-1], "n": len(values)}
    from bhasha_build.core.tiny import MARKER_FILE

    marker = model_dir / MARKER_FILE
    return {"date": dt.date.today().isoformat(), "gpu": gpu, "size": args.size, "seq": args.seq,
            "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "card_gib": args.card_gib,
            "repeats": args.repeats, "order": [f"{r}:{p}" for r, p in schedule(parts, args.repeats)],
            "weights": "random-init shape (core/tiny.build_qwen25_shaped)" if marker.exists() else str(model_dir),
            "results": results, "ratios": _ratios(results, args.card_gib), "ratios_per_repeat": per_repeat,
            "ratios_range": spread}


if __name__ == "__main__":
    raise SystemExit(main())
