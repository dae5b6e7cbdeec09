"""Report stage: `runs/<run>/report.md`, the page a user reads each morning (and the nightly's job summary).

Rendered from what the run folder holds, whatever stage it reached (a missing part says so):
data counts and rejects, reviewed lines (data/stats.json), the training curve (train_log.jsonl, loss.png), CER and
over-correction by language against the do-nothing baseline and HF vs GGUF (eval.json), the model's
gain over the strongest non-model baseline per language and the confidence threshold (eval.json), the gate
against the served model (promote.json), the deploy check (deploy.json), stage timings, artifact
sha256s and versions (manifest.json). It reads only; it never fails on a missing or unreadable file.

Knobs: none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.fsutil import atomic_write_text
from bhasha_build.core.layout import RunLayout
from bhasha_build.stages.train import read_log


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "—"


def _data(layout: RunLayout) -> list[str]:
    stats = _json(layout.data_stats)
    if not stats:
        return ["_no data stage output_"]
    lines = [f"{stats['rows_read']} rows read: {stats['kept']} kept ({stats['train_rows']} train, "
             f"{stats['eval_rows']} eval), {stats['rejected']} rejected, {stats['duplicates_dropped']} duplicates "
             "dropped.", ""]
    if (review := stats.get("review") or {}).get("rows"):
        lines += [f"Reviewed lines (review.jsonl, review.html's export): {review['rows']} ({review['accepted']} "
                  f"accepted, {review['edited']} edited, {review['rejected']} rejected as identity pairs); "
                  f"{review['train']} in train, {review['eval']} in eval.", ""]
    if stats.get("rejects_by_reason"):
        lines += ["| reject reason | rows |", "|---|---|"]
        lines += [f"| {code} | {n} |" for code, n in stats["rejects_by_reason"].items()]
        lines.append("")
    lines += ["| lang | train | eval | rejected |", "|---|---|---|---|"]
    lines += [f"| {lang} | {v.get('train', 0)} | {v.get('eval', 0)} | {v.get('rejected', 0)} |"
              for lang, v in stats.get("by_lang", {}).items()]
    return lines


def _training(layout: RunLayout, manifest: dict[str, Any]) -> list[str]:
    log = read_log(layout.train_log, skip_torn=True)
    train = manifest.get("stages", {}).get("train", {})
    if not log and not train:
        return ["_no training output_"]
    lines = []
    if log:
        lines.append(f"{len(log)} logged points; loss {_num(log[0].get('loss'))} at step {log[0].get('step')} → "
                     f"{_num(log[-1].get('loss'))} at step {log[-1].get('step')}.")
    facts = {k: train.get(k) for k in ("backend", "global_step", "train_loss", "seconds", "tokens_per_s_median",
                                      "peak_memory_gib") if train.get(k) is not None}
    if facts:
        lines.append(", ".join(f"{k} {v}" for k, v in facts.items()) + ".")
    if layout.loss_plot.exists():
        lines.append(f"\nCurve: `{layout.rel(layout.loss_plot)}`.")
    return lines


def _eval(layout: RunLayout) -> list[str]:
    report = _json(layout.eval_report)
    if not report:
        return ["_no eval output_"]
    systems = [s for s in ("model", "gguf", "zeroshot") if s in report]
    head = "".join(f" {s} CER | {s} over-corr. |" for s in systems)
    lines = [f"| lang | rows | baseline CER |{head}", "|---|---|---|" + "---|---|" * len(systems)]

    def block(system: str, lang: str) -> dict[str, Any]:
        return report[system]["overall"] if lang == "overall" else report[system]["by_lang"].get(lang, {})

    for lang in [*report["baseline"]["by_lang"], "overall"]:
        base = block("baseline", lang)
        cells = "".join(f" {_num(block(s, lang).get('cer'))} | {_num(block(s, lang).get('over_correction_rate'))} |"
                        for s in systems)
        lines.append(f"| {lang} | {base.get('rows', '—')} | {_num(base.get('cer'))} |{cells}")
    gate = report.get("gate", {})
    lines.append("")
    lines += [f"- {'ok' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}" for c in gate.get("checks", [])]
    if "model" in report and "gguf" in report:
        diff = report["gguf"]["overall"]["cer"] - report["model"]["overall"]["cer"]
        lines.append(f"- GGUF (q4_k_m) vs HF: {diff:+.4f} CER")
    return lines + _baselines(report) + _confidence(report)


def _baselines(report: dict[str, Any]) -> list[str]:
    """Per language: identity, the non-model baselines, the strongest, each system's gain over it (served)."""
    table = report.get("baselines") or {}
    if not table:
        return []
    systems = sorted({s for entry in table.values() for s in entry.get("gain_over_strongest", {})})
    head = "".join(f" {s} gain |" for s in systems)
    lines = ["", "Non-model baselines (CER; gain = 1 - served CER / the strongest baseline's CER):", "",
             f"| lang | identity | rules | lexicon | strongest |{head}",
             "|---|---|---|---|---|" + "---|" * len(systems)]
    for lang, e in table.items():
        gains = "".join(f" {_pct(e['gain_over_strongest'].get(s))} |" for s in systems)
        lines.append(f"| {lang} | {_num(e['identity_cer'])} | {_num(e.get('rules_cer'))} "
                     f"| {_num(e.get('lexicon_cer'))} | {e['strongest']} |{gains}")
    return lines


def _confidence(report: dict[str, Any]) -> list[str]:
    lines = []
    for system in ("model", "gguf", "zeroshot", "served"):
        sweep = (report.get(system) or {}).get("confidence")
        if sweep:
            chosen, best = sweep["chosen"], sweep.get("calibrated") or sweep.get("best")  # best: older runs
            within = best and best.get("within_bound", True)
            lines.append(f"- {system}: correct.min_confidence {chosen['threshold']:g} gives guarded CER "
                         f"{chosen['cer']:.4f}, over-correction {chosen['over_correction_rate']:.1%}"
                         + (f"; calibrated on the eval split (lowest CER within {sweep['max_over_correction']:.0%}): "
                            f"{best['threshold']:g} (CER {best['cer']:.4f})" if within
                            else "; no threshold keeps over-correction "
                            f"within {sweep['max_over_correction']:.0%}"))
        dev = ((report.get(system) or {}).get("dev") or {}).get("overall")
        if dev:  # eval.dev_sets: the calibration's bound holds on them too
            lines.append(f"  - on the dev sets ({dev['rows']} rows): CER {dev['identity_cer']:.4f} as read → "
                         f"{dev['cer']:.4f} served, over-correction {dev['over_correction']:.1%} "
                         f"({dev['raw_over_correction']:.1%} before the guard)")
    return ["", *lines] if lines else []


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _promotion(layout: RunLayout) -> list[str]:
    promote = _json(layout.promote_report)
    if not promote:
        return ["_not promoted in this run_"]
    digests = promote.get("digests", {})
    lines = [f"**{promote.get('status')}** — '{promote.get('name')}' on {promote.get('host')}"
             + (f": {promote['error']}" if promote.get("error") and promote.get("status") != "promoted" else ""), ""]
    if promote.get("comparison"):
        lines += [promote["comparison"], ""]
    lines.append(f"Digests: served before `{digests.get('served_before')}`, candidate `{digests.get('candidate')}`, "
                 f"served after `{digests.get('served_after')}`"
                 + (f"; the previous model is kept as `{promote['kept_as']}`" if promote.get("kept_as") else "")
                 + ".")
    lines.append(f"Triggered by: {', '.join(f'{k}={v}' for k, v in promote.get('trigger', {}).items())}.")
    return lines


def _deploy(layout: RunLayout) -> list[str]:
    report = _json(layout.deploy_report)
    if not report:
        return ["_no deploy in this run_"]
    sanity = report.get("sanity") or {}
    return [f"**{report.get('status')}** — '{report.get('name')}' on {report.get('host')}"
            + (f": {report['error']}" if report.get("error") else ""),
            f"Sanity: {'ok' if sanity.get('ok') else 'failed'}; answer {sanity.get('response', '—')!r}, "
            f"done_reason {sanity.get('done_reason')}."]


def _provenance(manifest: dict[str, Any]) -> list[str]:
    stages, artifacts = manifest.get("stages", {}), manifest.get("artifacts", {})
    lines = ["| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {s.get('status')} | {s.get('seconds')} |" for name, s in stages.items()]
    lines += ["", "| artifact | path | sha256 |", "|---|---|---|"]
    lines += [f"| {key} | `{a.get('path')}` | `{a.get('sha256')}` |" for key, a in artifacts.items()]
    versions = {**manifest.get("versions", {}), "llama.cpp": manifest.get("toolchain", {}).get("llama_cpp_commit")}
    git = manifest.get("git", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
              f"Git {git.get('sha')}{' (dirty)' if git.get('dirty') else ''}; config sha256 "
              f"`{manifest.get('config_sha256')}`; image {manifest.get('image', {}).get('digest', '—')}."]
    return lines


def render(layout: RunLayout) -> str:
    manifest = _json(layout.manifest) or {}
    sections = [
        (f"Run `{manifest.get('run', layout.root.name)}`", [f"Updated {manifest.get('updated', '—')}."]),
        ("Promotion (gate against the served model)", _promotion(layout)),
        ("Eval: CER and over-correction by language", _eval(layout)),
        ("Data", _data(layout)),
        ("Training", _training(layout, manifest)),
        ("Deploy check", _deploy(layout)),
        ("Stages, artifacts, versions", _provenance(manifest)),
    ]
    out = []
    for i, (title, body) in enumerate(sections):
        out += [("# " if i == 0 else "## ") + title, "", *body, ""]
    return "\n".join(out)


def run(cfg: BuildConfig, layout: RunLayout, **_: Any) -> dict[str, Any]:
    text = render(layout)
    atomic_write_text(layout.run_report, text)
    return {"path": layout.run_report, "chars": len(text)}
