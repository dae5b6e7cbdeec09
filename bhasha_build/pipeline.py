"""Stage runners: each reads only the run folder + config, writes only into the run folder, records
itself in the manifest, and skips when its inputs (hashed) and outputs are unchanged, unless forced.

Order: data → train → export → eval → modelfile → sanity → deploy. Eval runs after export so it can
score the q4_k_m GGUF next to the HF model; `invoke eval` alone scores what exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .config import BuildConfig, config_to_dict
from .fsutil import sha256_file
from .manifest import Manifest


def _hash(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for f in files:
                digest.update(str(f.relative_to(part) if part.is_dir() else f.name).encode())
                digest.update(sha256_file(f).encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _section(cfg: BuildConfig, *names: str) -> dict[str, Any]:
    full = config_to_dict(cfg)
    return {n: full[n] for n in names}


def _skip(manifest: Manifest, name: str, key: str, outputs: list[Path], force: bool) -> bool:
    if not force and manifest.stage_is_current(name, key, outputs):
        print(f"{name}: up to date (inputs unchanged), skipping; use --force to redo", flush=True)
        return True
    return False


def load_tokenizer(cfg: BuildConfig, run_dir: Path):
    from transformers import AutoTokenizer

    from .train import resolve_model_path

    return AutoTokenizer.from_pretrained(str(resolve_model_path(cfg, run_dir)), local_files_only=True)


def run_data(cfg: BuildConfig, input_path: str | None = None, force: bool = False) -> dict[str, Any]:
    from .data import DataError, input_texts, prepare
    from .train import BASE_MODEL_DIR, ensure_tiny_base_model

    run_dir = cfg.run_dir
    src = cfg.resolve_path(input_path or cfg.data.input)
    if not src.exists():
        raise DataError(f"{src}: input not found")
    manifest = Manifest(run_dir)
    manifest.init(cfg)
    out = run_dir / "data"
    key = _hash(src, _section(cfg, "data", "model", "seed"))
    outputs = [out / n for n in ("train.jsonl", "eval.jsonl", "rejects.jsonl", "stats.json")]
    if _skip(manifest, "data", key, outputs, force):
        return json.loads((out / "stats.json").read_text())
    with manifest.stage("data", inputs_sha256=key) as extra:
        if cfg.model.is_tiny:  # rebuilt with the data: its tokenizer and warm-start come from it
            shutil.rmtree(run_dir / BASE_MODEL_DIR, ignore_errors=True)
            ensure_tiny_base_model(cfg, run_dir, input_texts(src))
        stats = prepare(src, out, cfg, tokenizer=load_tokenizer(cfg, run_dir))
        if cfg.model.is_tiny and cfg.model.tiny.pretrain_steps:
            from .data import load_rows
            from .tiny import pretrain_echo

            lines = [r["clean"] for r in load_rows(out / "train.jsonl") if "clean" in r]
            tiny = cfg.model.tiny
            extra["tiny_pretrain"] = pretrain_echo(run_dir / BASE_MODEL_DIR, lines, steps=tiny.pretrain_steps,
                                                   lr=tiny.pretrain_learning_rate,
                                                   batch_size=tiny.pretrain_batch_size, seed=cfg.seed)
        extra.update(rows_read=stats.get("rows_read"), kept=stats.get("kept"), rejected=stats.get("rejected"))
        manifest.update(data={
            "input": str(src), "sha256": _hash(out / "train.jsonl", out / "eval.jsonl"),
            "train_rows": stats.get("train_rows"), "eval_rows": stats.get("eval_rows"),
            "rejected_rows": stats.get("rejected"), "duplicates_dropped": stats.get("duplicates_dropped"),
        })
    return stats


def run_train(cfg: BuildConfig, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train stage; under torchrun every rank calls this, and only global rank 0 touches the manifest."""
    from .launch import is_main_process
    from .train import ADAPTER_DIR, BASE_MODEL_DIR, TrainError, train

    run_dir = cfg.run_dir
    train_file = run_dir / "data" / "train.jsonl"
    if not train_file.exists():
        raise TrainError(f"{train_file}: no training split; run `invoke data` first")
    manifest = Manifest(run_dir)
    main_proc = is_main_process()
    if main_proc:
        manifest.init(cfg)
    # A tiny base model is rebuilt with the data, so it is an input too (a real base is pinned by name/path).
    base = [run_dir / BASE_MODEL_DIR] if cfg.model.is_tiny else []
    key = _hash(train_file, *base, _section(cfg, "model", "lora", "train", "seed"))
    adapter = run_dir / ADAPTER_DIR
    # Every rank reaches the same verdict: the stage record and adapter change only after training ends.
    if not resume and _skip(manifest, "train", key, [adapter / "adapter_config.json"], force):
        return manifest.load()["stages"]["train"]
    if not main_proc:
        return train(cfg, run_dir, resume=resume)
    with manifest.stage("train", inputs_sha256=key) as extra:
        summary = train(cfg, run_dir, resume=resume)
        extra.update(summary)
        manifest.artifact("adapter", adapter / "adapter_model.safetensors")
    return summary


def run_export(cfg: BuildConfig, force: bool = False) -> dict[str, Any]:
    from .export import ExportError, export, quant_gguf_name
    from .train import ADAPTER_DIR

    run_dir = cfg.run_dir
    if not (run_dir / ADAPTER_DIR / "adapter_config.json").exists():
        raise ExportError(f"{run_dir / ADAPTER_DIR}: no trained adapter; run `invoke train` first")
    manifest = Manifest(run_dir)
    manifest.init(cfg)
    gguf = run_dir / quant_gguf_name(cfg.export.quant)
    key = _hash(run_dir / ADAPTER_DIR, _section(cfg, "export"), manifest.load().get("toolchain"))
    if _skip(manifest, "export", key, [gguf], force):
        return manifest.load()["stages"]["export"]
    with manifest.stage("export", inputs_sha256=key) as extra:
        result = export(cfg, run_dir)
        extra.update(quant=result["quant"], checks=result["checks"], convert=result["convert"])
        if result["f16"]:
            manifest.artifact("gguf_f16", result["f16"])
        manifest.artifact("gguf", result["gguf"], quant=result["quant"])
    return result


def run_eval(cfg: BuildConfig, systems: tuple[str, ...] = ("model", "gguf")) -> dict[str, Any]:
    from .evaluate import evaluate

    run_dir = cfg.run_dir
    manifest = Manifest(run_dir)
    manifest.init(cfg)
    with manifest.stage("eval") as extra:
        report = evaluate(cfg, run_dir, systems)
        extra.update(gate_passed=report["gate"]["passed"])
        manifest.update(eval={k: report[k] for k in ("baseline", "model", "gguf", "gate") if k in report})
        manifest.artifact("eval", run_dir / "eval.json")
    return report


def _require_gguf(cfg: BuildConfig) -> Path:
    from .export import ExportError, quant_gguf_name

    gguf = cfg.run_dir / quant_gguf_name(cfg.export.quant)
    if not gguf.exists():
        raise ExportError(f"{gguf}: not exported yet; run `invoke export` first")
    return gguf


def run_modelfile(cfg: BuildConfig) -> Path:
    from .modelfile import render_modelfile

    run_dir = cfg.run_dir
    gguf = _require_gguf(cfg)
    manifest = Manifest(run_dir)
    manifest.init(cfg)
    with manifest.stage("modelfile"):
        out = run_dir / "Modelfile"
        render_modelfile(gguf, out, cfg)
        manifest.artifact("modelfile", out)
    return out


def run_sanity(cfg: BuildConfig) -> dict[str, Any]:
    from .export import ExportError, sanity_check

    run_dir = cfg.run_dir
    gguf = _require_gguf(cfg)
    manifest = Manifest(run_dir)
    manifest.init(cfg)
    with manifest.stage("sanity") as extra:
        result = sanity_check(gguf, run_dir / "sanity.json", cfg)
        extra.update(finish_reason=result["finish_reason"], ok=result["ok"])
        manifest.update(sanity=result)
        manifest.artifact("sanity", run_dir / "sanity.json")
        if not result["ok"]:
            if result["finish_reason"] != "stop":
                raise ExportError(f"sanity prompt ended with finish_reason={result['finish_reason']!r}, not 'stop' "
                                  f"(the model never emitted <|im_end|>): train longer or check the template")
            raise ExportError("sanity prompt got an empty answer (the model stopped at once): train longer")
    return result


def run_deploy(cfg: BuildConfig, name: str | None = None, host: str | None = None, force: bool = False,
               use_cli: bool = False) -> dict[str, Any]:
    from .deploy import DeployError, deploy

    run_dir = cfg.run_dir
    manifest = Manifest(run_dir)
    manifest.init(cfg)
    with manifest.stage("deploy") as extra:
        try:  # host None: deploy() resolves --host, then OLLAMA_HOST, then deploy.host
            report = deploy(run_dir, cfg, name=name or cfg.deploy.name, host=host, force=force, use_cli=use_cli)
        except DeployError as exc:
            if getattr(exc, "report", None):  # a flagged model stays in Ollama: record what was checked
                manifest.update(deploy=exc.report)
            raise
        extra.update(model=report.get("name"), digest=report.get("digest"), deploy_status=report.get("status"))
        manifest.update(deploy=report)
    return report


def run_pipeline(cfg: BuildConfig, input_path: str | None = None, force: bool = False,
                 deploy: bool = False, name: str | None = None, host: str | None = None) -> dict[str, Any]:
    stats = run_data(cfg, input_path, force=force)
    print(f"data: {stats.get('train_rows')} train / {stats.get('eval_rows')} eval rows, "
          f"{stats.get('rejected')} rejected", flush=True)
    summary = run_train(cfg, force=force)
    print(f"train: {summary.get('global_step')} steps, final loss {summary.get('final_logged_loss')}", flush=True)
    result = run_export(cfg, force=force)
    print(f"export: {result.get('gguf') or 'up to date'}", flush=True)
    report = run_eval(cfg)
    base = report["baseline"]["overall"]["cer"]
    got = {s: report[s]["overall"]["cer"] for s in ("model", "gguf") if s in report}
    print(f"eval: grapheme CER baseline {base:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in got.items()), flush=True)
    modelfile = run_modelfile(cfg)
    print(f"modelfile: {modelfile}", flush=True)
    sanity = run_sanity(cfg)
    print(f"sanity: finish_reason={sanity['finish_reason']} response={sanity['response'][:80]!r}", flush=True)
    out: dict[str, Any] = {"run_dir": str(cfg.run_dir), "sanity": sanity, "eval": report["gate"]}
    if deploy:
        out["deploy"] = run_deploy(cfg, name=name, host=host)
    return out
