"""Learning-signal check: does the whole pipeline learn to correct OCR, end to end?

A small Qwen2-architecture model is built from scratch (random init, tokenizer trained on the run's
text), warm-started on the train split's clean lines (echo, full-parameter), then fine-tuned by the
project's own train stage (LoRA, response-only loss on ChatML rows) on synthetic-noise pairs; the
exported q4_k_m GGUF must then correct held-out lines better than the do-nothing baseline (grapheme
CER through llama.cpp, and the HF model's too). Masking, templates, EOS and export are all on the path.

Pairs: clean lines composed from data/wordlists (wordfreq's most frequent words of hi/bn/ta,
sampled by frequency^0.5, 4–14 words, sentence punctuation) plus the hand-written lines of
data/clean, each used once (no clean line is in both splits), noised by `noise.add_noise` at
`rate` grapheme CER with `identity_fraction` rows left unchanged (over-correction shows).

Real errors (`--errors real`, profile `signal-real`): the same model and stages, but trained on a
mix of REAL Tesseract errors and noise FITTED to them, and judged on held-out real OCR. Per language:
  ocr-<lang>.jsonl     --real-lines composed lines + data/clean's, rendered with the `train` fonts
                       and `train` degradations and read by Tesseract (features/ocr_pairs.py)
  noise-model.json     a noise model fitted to those real pairs (features/noise_fit.py)
  fitted-<lang>.jsonl  --lines other lines noised by that model (--identity-fraction of them left as
                       they are, on top of the model's own error-free lines): 80% composed, 20%
                       unfamiliar-word lines (pseudo-words of their own), so copying unknown words is learnt
  heldout/indomain-<lang>.jsonl    --heldout-lines new composed lines (in-domain text), and
  heldout/unfamiliar-<lang>.jsonl  --heldout-lines lines where about half the words are pseudo-words
                       no training line has (names, rare words), both rendered with the `heldout`
                       fonts and degradations (disjoint from training's) and read by Tesseract
  signal.json          the index: the mix, each file's rows and sha256, and how close the fitted
                       noise comes to the held-out real errors
The data stage normalizes both sides (data.zwj_policy "auto" drops Tesseract's word-final ZWNJs),
and so does the held-out eval. `finish` runs every held-out set through the q4_k_m with the
do-no-harm guard (end-mark changes counted apart on lines whose truth ends in '।', `end_marks`; its
confidence threshold: correct.min_confidence as served; the profile's "auto" is the one eval calibrated
on the EVAL SPLIT, never on held-out rows) and gives the verdict (`verdict_real`, issue 22's gate, as
served): on EVERY held-out set at least --min-rows (200) rows, the guarded CER at most the identity CER and
the guarded over-correction at most --max-over-correction (2%); on the in-domain sets (one per language)
the guarded CER at least --min-gain (30%) below identity and --min-baseline-gain (15%) below the strongest
non-model cleanup. Tesseract is needed by
`prepare` only: the input folder (a few MB) travels to the GPU box with the repo.

Phases (a GPU box often has no llama.cpp and the workstation no GPU, so they can run apart):
  prepare  write the pairs (runs/<input>/pairs.jsonl; real errors: the files above)
  gpu      data + train stages under the profile (default `signal-gpu`), then pack the run folder
           (base model, adapter, eval split, manifest, log) into parts of at most `part_mib` MiB
  adopt    a lease's trained adapter (--adapter-parts adapter-V.tar.xz.partNN, scripts/gpu-quality.sh) as this
           machine's run: the data stage here (the same splits), the adapter recorded as trained; then `finish`
  finish   unpack parts (if given), export (merge → GGUF → q4_k_m), eval (+ the held-out real-OCR
           sets); print the verdict JSON
  all      all three on one machine

Knobs: --errors (synthetic | real), --lines (per language), --rate, --identity-fraction, --seed,
--real-lines, --heldout-lines, --workers (Tesseract processes), --no-hand-written, --max-over-correction,
--min-gain, --min-baseline-gain, --min-rows,
--profile, --set (config overrides), --parts-dir, --part-mib, --adapter-parts, --allow-cpu (train without a GPU,
for tests).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bhasha_build.core.config import REPO_ROOT
from bhasha_build.core.errors import BhashaError, exit_status
from bhasha_build.core.fsutil import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    safe_extract,
    sha256_file,
)
from bhasha_build.core.layout import RunLayout

WORDLISTS = REPO_ROOT / "data" / "wordlists"
CLEAN_LINES = REPO_ROOT / "data" / "clean"
LANGS = ("hi", "bn", "ta")
END_MARK = {"hi": "।", "bn": "।", "ta": "."}
PARTS_INDEX = "parts.json"  # written beside the parts: each part's name, size and sha256


def packed_paths(layout: RunLayout) -> list[Path]:
    """What export + eval need from a trained run folder (core/layout.py names them)."""
    return [layout.base_model, layout.adapter, layout.eval_split, layout.data_stats, layout.manifest,
            layout.train_log, layout.loss_plot]


class SignalError(BhashaError):
    """The check's own inputs are missing or not what was packed (one line)."""


def load_wordlist(lang: str, folder: Path = WORDLISTS) -> tuple[list[str], list[float]]:
    """Words and sampling weights (frequency^0.5: flatter than Zipf, so rarer words occur too)."""
    path = folder / f"{lang}.tsv"
    words, weights = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            word, centibels = line.split("\t")
            weights.append(10 ** (-int(centibels) / 200))
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'word<TAB>centibels'") from None
        words.append(word)
    return words, weights


def page_words(lang: str) -> tuple[list[str], list[float]]:
    """The word list without entries that have no letter: wordfreq lists a bare ZWNJ among the Tamil
    words, which is invisible, so never a word on a page."""
    kept = [(w, f) for w, f in zip(*load_wordlist(lang), strict=True) if any(ch.isalpha() for ch in w)]
    return [w for w, _ in kept], [f for _, f in kept]


def compose(lang: str, count: int, rng: random.Random, seen: set[str]) -> list[str]:
    """`count` distinct lines of 4-14 words (frequency^0.5 sampling, 70% with sentence punctuation) that
    are not in `seen` (which gains them)."""
    words, weights = page_words(lang)
    out: list[str] = []
    for _ in range(count * 10):  # bounded: a tiny word list cannot loop forever on duplicates
        if len(out) >= count:
            break
        line = " ".join(rng.choices(words, weights, k=rng.randint(4, 14)))
        if rng.random() < 0.7:
            line += END_MARK[lang]
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def clean_lines(lang: str, count: int, rng: random.Random) -> list[str]:
    """The hand-written lines of data/clean, then `count` distinct synthetic clean lines of `lang`."""
    from bhasha_build.features.noise import read_clean

    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(CLEAN_LINES.glob(f"{lang}.txt")):
        for _no, _lang, line, _id in read_clean(path, lang):  # the noise stage's reader of clean files
            if line not in seen:
                seen.add(line)
                out.append(line)
    return out + compose(lang, count, rng, seen)


def pseudo_words(lang: str, count: int, rng: random.Random, avoid: set[str] | None = None) -> list[str]:
    """Words that are not in the word list (nor in `avoid`) but look like the script's words (names, rare
    words): random walks over the grapheme bigrams of the word list, 2-6 graphemes long."""
    from bhasha_build.core.metrics import graphemes

    words = page_words(lang)[0]
    known = set(words) | (avoid or set())
    nxt: dict[str, list[str]] = {}
    for word in words:
        units = ["<s>", *graphemes(word), "</s>"]
        for a, b in itertools.pairwise(units):
            nxt.setdefault(a, []).append(b)
    out: list[str] = []
    for _ in range(count * 50):
        if len(out) >= count:
            break
        unit, units = "<s>", []
        while len(units) < 7:
            unit = rng.choice(nxt[unit])
            if unit == "</s>":
                break
            units.append(unit)
        word = "".join(units)
        if 2 <= len(units) <= 6 and word not in known:
            known.add(word)
            out.append(word)
    return out


def unfamiliar_lines(lang: str, count: int, rng: random.Random, seen: set[str], avoid: set[str] | None = None
                     ) -> list[str]:
    """Lines like `compose`'s where about half the words are pseudo-words (none of them in `avoid`)."""
    words, weights = page_words(lang)
    strange = pseudo_words(lang, max(50, count * 4), rng, avoid)
    out: list[str] = []
    for _ in range(count * 10):
        if len(out) >= count:
            break
        tokens = [rng.choice(strange) if rng.random() < 0.5 else rng.choices(words, weights)[0]
                  for _ in range(rng.randint(4, 12))]
        line = " ".join(tokens) + (END_MARK[lang] if rng.random() < 0.7 else "")
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def make_pairs(out_file: Path, lines_per_lang: int, rate: float, identity_fraction: float, seed: int) -> dict[str, Any]:
    """Write the shuffled pairs file; returns counts and the baseline CER of what was written."""
    from bhasha_build.core.metrics import corpus_cer
    from bhasha_build.features.noise import add_noise

    rng = random.Random(seed)
    rows = []
    for lang in LANGS:
        for i, clean in enumerate(clean_lines(lang, lines_per_lang, rng)):
            noisy = clean if rng.random() < identity_fraction else add_noise(clean, lang, rate, rng)
            rows.append({"id": f"sig-{lang}-{i:06d}", "lang": lang, "noisy": noisy, "clean": clean})
    rng.shuffle(rows)  # the eval split's first rows then mix the three scripts
    atomic_write_jsonl(out_file, rows)
    return {"pairs": len(rows), "file": str(out_file),
            "identity_cer": round(corpus_cer([r["noisy"] for r in rows], [r["clean"] for r in rows]), 4)}


# ---------------------------------------------------------------- real errors
INDEX = "signal.json"
NOISE_MODEL = "noise-model.json"
HELDOUT_DIR = "heldout"  # a subfolder: the data stage reads the input folder's files only, not below it
HELDOUT_KINDS = ("indomain", "unfamiliar")


def make_real_pairs(input_dir: Path, lines_per_lang: int, real_lines: int, heldout_lines: int,
                    identity_fraction: float, seed: int, workers: int | None = None,
                    unfamiliar_share: float = 0.2, hand_written: bool = True) -> dict[str, Any]:
    """Write the real-errors input folder (see the module docstring); returns its index. Without
    `hand_written`, data/clean's lines are left out (quick CPU checks: 315 fewer lines to OCR)."""
    import tempfile

    from bhasha_build.features import noise_fit
    from bhasha_build.features.ocr_pairs import ocr_pairs

    rng = random.Random(seed)
    held_dir = input_dir / HELDOUT_DIR
    held_dir.mkdir(parents=True, exist_ok=True)
    plan: dict[str, dict[str, list[str]]] = {}
    for lang in LANGS:
        train = clean_lines(lang, real_lines + lines_per_lang, rng) if hand_written else compose(
            lang, real_lines + lines_per_lang, rng, set())
        split = len(train) - lines_per_lang  # data/clean's lines and the first real_lines composed ones
        seen = set(train)
        plan[lang] = {"ocr": train[:split], "fitted": train[split:],
                      "indomain": compose(lang, heldout_lines, rng, seen),
                      "unfamiliar": unfamiliar_lines(lang, heldout_lines, rng, seen)}
        # real text has names and rare words: a share of the fitted-noise lines are unfamiliar-word
        # lines too (pseudo-words of their own, none of the held-out set's), so the model learns to copy
        # what it does not know
        known = set(page_words(lang)[0])
        held_words = {w.rstrip("।.") for line in plan[lang]["unfamiliar"] for w in line.split()} - known
        n_unfamiliar = round(unfamiliar_share * lines_per_lang)
        plan[lang]["fitted"] = plan[lang]["fitted"][:lines_per_lang - n_unfamiliar] + unfamiliar_lines(
            lang, n_unfamiliar, random.Random(f"{seed}\0unfamiliar-train\0{lang}"), seen, held_words)
    summaries: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bhasha-signal-") as tmp:
        for lang, parts in plan.items():
            jobs = [("ocr", input_dir / f"ocr-{lang}.jsonl", "train"),
                    *[(kind, held_dir / f"{kind}-{lang}.jsonl", "heldout") for kind in HELDOUT_KINDS]]
            for kind, out, fonts in jobs:
                src = Path(tmp) / f"{kind}-{lang}.txt"
                src.write_text("\n".join(parts[kind]) + "\n", encoding="utf-8")
                # held-out sets: every line a row, an empty read too (noisy ""); training drops empty reads
                info = ocr_pairs(src, out, lang, fonts=fonts, degrade=fonts, seed=seed, workers=workers,
                                 keep_empty=kind in HELDOUT_KINDS)
                summaries[out.relative_to(input_dir).as_posix()] = {
                    k: info[k] for k in ("lines", "pairs", "empty_ocr", "identity_rows", "cer", "seconds")}
    real_rows = [row for lang in LANGS for row in noise_fit.read_pairs(input_dir / f"ocr-{lang}.jsonl")]
    model = noise_fit.fit(real_rows)
    model["source"] = {"pairs": [f"ocr-{lang}.jsonl" for lang in LANGS], "rows": len(real_rows)}
    atomic_write_json(input_dir / NOISE_MODEL, model)
    for lang in LANGS:
        rows = []
        for i, clean in enumerate(plan[lang]["fitted"]):
            line_rng = random.Random(f"{seed}\0fitted\0{clean}")
            noisy = clean if line_rng.random() < identity_fraction else noise_fit.sample(model, clean, lang, line_rng)
            rows.append({"id": f"fit-{lang}-{i:06d}", "lang": lang, "noisy": noisy, "clean": clean})
        atomic_write_jsonl(input_dir / f"fitted-{lang}.jsonl", rows)
    held = [row for path in sorted(held_dir.glob("indomain-*.jsonl")) for row in noise_fit.read_pairs(path)]
    files = sorted(p.relative_to(input_dir).as_posix() for p in input_dir.rglob("*.json*") if p.name != INDEX)
    counts = {lang: {"real": summaries[f"ocr-{lang}.jsonl"]["pairs"], "fitted": len(plan[lang]["fitted"]),
                     "fitted_unfamiliar": round(unfamiliar_share * lines_per_lang)} for lang in LANGS}
    index = {
        "seed": seed, "lines": lines_per_lang, "real_lines": real_lines, "heldout_lines": heldout_lines,
        "identity_fraction": identity_fraction,
        "mix": {lang: {**c, "real_share": round(c["real"] / (c["real"] + c["fitted"]), 3)}
                for lang, c in counts.items()},
        "ocr": summaries,
        "fitted_vs_heldout_real": noise_fit.compare(model, held, seed),
        "files": {name: sha256_file(input_dir / name) for name in files},
    }
    atomic_write_json(input_dir / INDEX, index)
    return index


def check_real_input(input_dir: Path) -> dict[str, Any]:
    """The index, after checking every file it lists is there with its recorded sha256."""
    index_file = input_dir / INDEX
    if not index_file.exists():
        raise SignalError(f"{index_file}: missing; run `--errors real prepare` where Tesseract is installed and "
                          f"carry {input_dir} along (the GPU box has no Tesseract)")
    index = json.loads(index_file.read_text(encoding="utf-8"))
    for name, digest in index["files"].items():
        path = input_dir / name
        if not path.is_file():
            raise SignalError(f"{path}: missing (listed in {index_file})")
        if (actual := sha256_file(path)) != digest:
            raise SignalError(f"{path}: sha256 {actual} is not {digest} (listed in {index_file}); rerun prepare")
    return index


def heldout_eval(cfg: Any, input_dir: Path, out_predictions: Path | None = None,
                 max_rows: int | None = None) -> dict[str, Any]:
    """Every held-out real-OCR set through the q4_k_m (normalized like training, guarded like serving);
    `max_rows`: the first rows of each set only (a CPU scoring a real model for hours). The input folder
    must have passed check_real_input (phase_finish checks it before the long part).

    The confidence threshold is never chosen on held-out rows: it is correct.min_confidence as served
    (evaluate.applied_min_confidence) — with "auto" (the signal-real and real-errors-qwen profiles) the one
    the eval stage calibrated on the EVAL SPLIT and recorded in eval.json; the zero-shot model gets the
    threshold eval applied to it on the eval split. Each set records `min_confidence` (threshold, source)."""
    from bhasha_build.core.baselines import run_baselines, strongest_of
    from bhasha_build.core.metrics import cer, check_unit_rules, end_mark_changes, identity_baseline, score
    from bhasha_build.core.text import normalize_text
    from bhasha_build.features.noise_fit import read_pairs
    from bhasha_build.stages.evaluate import (
        answer_lines,
        applied_min_confidence,
        generate_gguf,
        score_guarded,
        served,
        zeroshot_gguf,
    )

    check_unit_rules()  # the pinned grapheme rules, before hours of generation (eval.json records them)
    cfg, min_confidence = applied_min_confidence(cfg)
    threshold = min_confidence["threshold"]
    zeroshot_threshold = threshold
    if cfg.layout.eval_report.is_file():  # what eval applied to the zero-shot model on the eval split
        zeroshot_sweep = (json.loads(cfg.layout.eval_report.read_text(encoding="utf-8")).get("zeroshot") or {}
                          ).get("confidence")
        zeroshot_threshold = zeroshot_sweep["chosen"]["threshold"] if zeroshot_sweep else threshold
    gguf = cfg.layout.gguf(cfg.export.quant)
    zeroshot_source = zeroshot_gguf(cfg)
    held = {path.stem: read_pairs(path)[:max_rows] for path in sorted((input_dir / HELDOUT_DIR).glob("*.jsonl"))}
    normalized = {name: [{**r, "noisy": normalize_text(r["noisy"], cfg.data.zwj_policy),
                          "clean": normalize_text(r["clean"], cfg.data.zwj_policy)} for r in raw_rows]
                  for name, raw_rows in held.items()}
    inputs = [r["noisy"] for rows in normalized.values() for r in rows]
    # each model loaded once for every set (the untouched instruct model, with real weights: the second bar)
    # a line Tesseract read as empty is a row too: every system is scored on it, and a model's answer to
    # it is the empty line (answer_lines: no empty prompt is sent)
    all_hyps = answer_lines(lambda batch: generate_gguf(cfg, gguf, batch), inputs)
    all_zeroshot = (answer_lines(lambda batch: generate_gguf(cfg, zeroshot_source, batch), inputs)
                    if zeroshot_source is not None else None)
    sets: dict[str, Any] = {}
    predictions = []
    start = 0
    for name, raw_rows in held.items():
        rows = normalized[name]
        end = start + len(rows)
        hyps = all_hyps[start:end]
        report, reasons, guarded = score_guarded(rows, hyps, cfg, threshold)
        base = identity_baseline(rows)["overall"]
        baselines, _ = run_baselines(rows)  # the non-model cleanups (core/baselines.py), scored alike
        baseline_cer = {b: score(rows, outs)["overall"]["cer"] for b, outs in baselines.items()}
        zeroshot = None
        if all_zeroshot is not None:
            zeroshot_hyps = all_zeroshot[start:end]
            zeroshot_report = score_guarded(rows, zeroshot_hyps, cfg, zeroshot_threshold)[0]
            zeroshot = {"min_confidence": zeroshot_threshold, "raw_cer": zeroshot_report["overall"]["cer"],
                        "guarded_cer": served(zeroshot_report)["overall"]["cer"],
                        "raw_over_correction": zeroshot_report["overall"]["over_correction_rate"]}
        tally = {"raw": [0, 0, 0], "guarded": [0, 0, 0]}  # better, same, worse than the input
        for row, hyp, kept in zip(rows, hyps, guarded, strict=True):
            before = cer(row["noisy"], row["clean"])
            for output, text in (("raw", hyp.text), ("guarded", kept)):
                after = cer(text.strip(), row["clean"])
                tally[output][0 if after < before else 1 if after == before else 2] += 1
        sets[name] = {
            "rows": len(rows), "identity_cer": base["cer"], "identity_rows": base["identity_rows"],
            **{f"{b}_cer": c for b, c in baseline_cer.items()},
            "strongest_baseline": (strongest := strongest_of(baseline_cer)),
            "guarded_gain_over_strongest": (1 - served(report)["overall"]["cer"] / baseline_cer[strongest]
                                            if baseline_cer[strongest] else None),
            "cut_rows": report["cut_rows"],
            "identity_cer_before_normalization": identity_baseline(raw_rows)["overall"]["cer"],
            "raw_cer": report["overall"]["cer"], "guarded_cer": served(report)["overall"]["cer"],
            "raw_over_correction": report["overall"]["over_correction_rate"],
            "guarded_over_correction": served(report)["overall"]["over_correction_rate"],
            "guarded_rows": report["guarded"]["overall"]["guarded_rows"],
            "guard_reasons": report["guarded"]["reasons"],
            "better_same_worse": {k: dict(zip(("better", "same", "worse"), v, strict=True)) for k, v in tally.items()},
            "min_confidence": min_confidence,
            # '।'-ending truth vs the rest: a model trained on '.'-ending software Hindi may change the danda
            "end_marks": {"raw": end_mark_changes(rows, [h.text for h in hyps]),
                          "guarded": end_mark_changes(rows, guarded)},
            **({"zeroshot": zeroshot} if zeroshot else {}),
        }
        predictions += [{"set": name, "id": r.get("id"), "noisy": r["noisy"], "clean": r["clean"], "gguf": h.text,
                         "gguf_guarded": g, "guard": why, "gguf_confidence": h.confidence,
                         **{b: outs[i] for b, outs in baselines.items()}}
                        for i, (r, h, g, why) in enumerate(zip(rows, hyps, guarded, reasons, strict=True))]
        start = end
    if out_predictions is not None:
        atomic_write_jsonl(out_predictions, predictions)
    return sets


def verdict_real(sets: dict[str, Any], max_over_correction: float = 0.02, min_gain: float = 0.30,
                 min_baseline_gain: float = 0.15, min_rows: int = 200) -> dict[str, Any]:
    """Issue 22's gate on the held-out real OCR, everything as served (guarded): on EVERY set at least
    min_rows rows, guarded CER <= identity and guarded over-correction <= max_over_correction; on the
    in-domain sets (one per language) guarded CER at least min_gain below identity AND at least
    min_baseline_gain below the strongest non-model cleanup scored on the same rows (`strongest_baseline`);
    with real weights (a zero-shot score per set), guarded CER below the untouched instruct model's too."""
    checks = []

    def check(name: str, what: str, ok: bool, detail: str) -> None:
        checks.append({"set": name, "check": what, "ok": bool(ok), "detail": detail})

    for name, s in sorted(sets.items()):
        rows = s.get("rows")
        check(name, "rows", rows is not None and rows >= min_rows, f"{rows} rows scored (at least {min_rows})")
        guarded = s["guarded_cer"]
        check(name, "guarded_not_worse", guarded <= s["identity_cer"],
              f"guarded CER {guarded:.4f} vs identity {s['identity_cer']:.4f}")
        check(name, "over_correction", s["guarded_over_correction"] <= max_over_correction,
              f"guarded output changed {s['guarded_over_correction']:.1%} of {s['identity_rows']} correct lines "
              f"(raw {s['raw_over_correction']:.1%}; max {max_over_correction:.0%})")
        if "zeroshot" in s:  # real weights: the fine-tuned model must beat the untouched instruct model too
            zero = s["zeroshot"]["guarded_cer"]
            check(name, "beats_zeroshot", guarded < zero,
                  f"guarded CER {guarded:.4f} vs the untouched instruct model's {zero:.4f} "
                  f"(raw {s['raw_cer']:.4f} vs {s['zeroshot']['raw_cer']:.4f})")
        if name.startswith("indomain-"):
            bound = (1 - min_gain) * s["identity_cer"]
            check(name, "gain", guarded <= bound,
                  f"guarded CER {guarded:.4f} vs {bound:.4f} ({min_gain:.0%} below identity "
                  f"{s['identity_cer']:.4f}; raw {s['raw_cer']:.4f})")
            strongest = s.get("strongest_baseline")
            if strongest is None:
                check(name, "beats_baselines", False, "no non-model baseline scored on this set")
            else:
                bar = (1 - min_baseline_gain) * s[f"{strongest}_cer"]
                check(name, "beats_baselines", guarded <= bar,
                      f"guarded CER {guarded:.4f} vs {bar:.4f} ({min_baseline_gain:.0%} below {strongest} "
                      f"{s[f'{strongest}_cer']:.4f}, the strongest non-model cleanup)")
    return {"passed": bool(checks) and all(c["ok"] for c in checks), "max_over_correction": max_over_correction,
            "min_gain": min_gain, "min_baseline_gain": min_baseline_gain, "min_rows": min_rows, "checks": checks}


def pack_run(layout: RunLayout, parts_dir: Path, part_mib: int) -> list[Path]:
    """tar.gz of what export + eval need, split into parts of at most part_mib MiB (transfer limits),
    with parts.json recording each part's sha256 (the parts travel between machines unsigned)."""
    buffer = io.BytesIO()  # a few tens of MB: built in memory, so only the parts touch the disk
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in packed_paths(layout):
            if path.exists():
                tar.add(path, arcname=layout.rel(path))
    data, size = buffer.getvalue(), part_mib * 2**20
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(data), size):
        part = parts_dir / f"run.tar.gz.part{i // size:02d}"
        atomic_write_bytes(part, data[i : i + size])
        parts.append(part)
    index = [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in parts]
    atomic_write_json(parts_dir / PARTS_INDEX, {"parts": index})
    return parts


def unpack_run(parts_dir: Path, layout: RunLayout) -> list[str]:
    """Verify every part against parts.json, then extract plain files and folders only into a temp
    folder that replaces the run folder whole (fsutil.safe_extract; nothing lands outside it)."""
    index_file = parts_dir / PARTS_INDEX
    if not index_file.exists():
        raise SignalError(f"{index_file}: missing; the parts cannot be checked (pack them with --phase gpu)")
    try:
        index = json.loads(index_file.read_text())["parts"]
    except (ValueError, KeyError, TypeError):
        raise SignalError(f"{index_file}: not a parts index") from None
    for entry in index:
        part = parts_dir / Path(entry["name"]).name
        if not part.is_file():
            raise SignalError(f"{part}: missing (listed in {index_file.name})")
        if (actual := sha256_file(part)) != entry["sha256"]:
            raise SignalError(f"{part}: sha256 {actual} is not {entry['sha256']} (listed in {index_file.name})")
    blob = b"".join((parts_dir / Path(e["name"]).name).read_bytes() for e in index)
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar, atomic_dir(layout.root) as tmp:
            return safe_extract(tar, tmp)
    except (tarfile.TarError, ValueError) as exc:
        raise SignalError(f"{parts_dir}: {exc}") from None


def _config(profile: str, sets: Sequence[str]):
    from bhasha_build.core.config import load_config

    return load_config(None, profile=profile, overrides=list(sets))


def phase_gpu(profile: str, sets: Sequence[str], parts_dir: Path | None, part_mib: int) -> dict[str, Any]:
    from bhasha_build.stages.train import import_unsloth_first

    cfg = _config(profile, sets)
    import_unsloth_first(cfg)
    from bhasha_build.stages import pipeline

    t0 = time.monotonic()
    data = pipeline.run_data(cfg, force=True)
    t_data = time.monotonic()
    train = pipeline.run_train(cfg, force=True)
    t_train = time.monotonic()
    result = {"run_dir": str(cfg.run_dir), "data": {k: data.get(k) for k in ("rows_read", "kept", "train_rows",
                                                                               "eval_rows")},
              "train": {k: train.get(k) for k in ("global_step", "train_loss", "final_logged_loss", "seconds",
                                                  "tokens_per_s_median", "peak_memory_gib", "packing_strategy",
                                                  "optim_used", "backend", "phases_s")}}
    manifest = json.loads(cfg.layout.manifest.read_text())
    result["pretrain"] = manifest["stages"]["data"].get("tiny_pretrain")
    result["hardware"] = manifest.get("hardware")
    if parts_dir is not None:
        result["parts"] = [p.name for p in pack_run(cfg.layout, parts_dir, part_mib)]
    # where a lease's training half goes (2026-12-03: 671 s for 309 s of steps): the stages' wall seconds
    result["seconds"] = {"data_stage": round(t_data - t0, 2), "train_stage": round(t_train - t_data, 2),
                         "pack_adapter": round(time.monotonic() - t_train, 2) if parts_dir is not None else None}
    return result


def phase_adopt(profile: str, sets: Sequence[str], adapter_parts: Sequence[Path]) -> dict[str, Any]:
    """A trained adapter that came back from a lease (`adapter-V.tar.xz.partNN`, gpu-quality.sh) as this
    machine's run: the data stage runs here (deterministic: the same splits as the box's), the adapter
    replaces layout.adapter whole and is recorded in the manifest, so export and eval take it as trained.
    Its base is the one base_model.json names (the same weights cache path on both machines)."""
    from bhasha_build.core.manifest import Manifest
    from bhasha_build.stages import pipeline

    if not adapter_parts:
        raise SignalError("--adapter-parts: no parts given")
    adapter_parts = sorted(adapter_parts)  # partNN: the archive's order
    for part in adapter_parts:
        if not part.is_file():
            raise SignalError(f"{part}: missing")
    cfg = _config(profile, sets)
    layout = cfg.layout
    blob = b"".join(Path(p).read_bytes() for p in adapter_parts)
    name = layout.adapter.name
    try:  # read to its end before the data stage's minutes: a lost part is said at once
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:xz") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, ValueError, EOFError, OSError) as exc:
        raise SignalError(f"{adapter_parts[0]} (+{len(adapter_parts) - 1} parts): {exc}") from None
    if not members or any(Path(m.name).parts[:1] != (name,) for m in members):
        raise SignalError(f"{adapter_parts[0]}: not an archive of one `{name}/` folder")
    data = pipeline.run_data(cfg, force=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:xz") as tar, \
            tempfile.TemporaryDirectory(dir=layout.root) as scratch, atomic_dir(layout.adapter) as tmp:
        safe_extract(tar, Path(scratch))
        for child in (Path(scratch) / name).iterdir():
            child.replace(tmp / child.name)
    if not layout.adapter_base_record.exists():
        raise SignalError(f"{layout.adapter_base_record}: missing from the adapter parts")
    entry = Manifest(layout.root).artifact("adapter", layout.adapter,
                                           adopted_from=[Path(p).name for p in adapter_parts])
    return {"run_dir": str(cfg.run_dir), "data": {k: data.get(k) for k in ("rows_read", "kept", "train_rows",
                                                                            "eval_rows")},
            "adapter": {"sha256": entry["sha256"], "parts": len(adapter_parts)}}


def current_eval(cfg: Any) -> dict[str, Any] | None:
    """The run's eval.json when it is the eval of the run's current q4_k_m (the manifest's eval entry was made
    from the GGUF entry, eval.json is unchanged since, the GGUF on disk is that GGUF); else None."""
    from bhasha_build.core.manifest import Manifest
    from bhasha_build.stages.evaluate import eval_is_of_current_gguf

    layout = cfg.layout
    gguf = layout.gguf(cfg.export.quant)
    recorded = (Manifest(layout.root).load().get("artifacts", {}).get("gguf") or {}).get("sha256")
    if not (recorded and gguf.is_file() and eval_is_of_current_gguf(layout) and sha256_file(gguf) == recorded):
        return None
    return json.loads(layout.eval_report.read_text(encoding="utf-8"))


def phase_finish(profile: str, sets: Sequence[str], parts_dir: Path | None, real: bool = False,
                 out_predictions: Path | None = None, systems: tuple[str, ...] | None = None,
                 heldout_rows: int | None = None, reuse_eval: bool = False) -> dict[str, Any]:
    """Export + eval (+ the held-out sets with real errors). `reuse_eval`: when the run's eval.json is the eval
    of its current q4_k_m (current_eval), neither runs again: a scoring cut off in the held-out part (hours on
    a CPU) resumes there, with the threshold that eval calibrated."""
    cfg = _config(profile, sets)
    if real:  # before the long part: the held-out sets must be the ones prepare wrote
        check_real_input(cfg.resolve_path(cfg.data.input))
    if parts_dir is not None:
        unpack_run(parts_dir, cfg.layout)
    from bhasha_build.stages import evaluate, pipeline

    report = current_eval(cfg) if reuse_eval else None
    if report is not None:
        print(f"finish: {cfg.layout.eval_report} is the eval of the run's current GGUF: export and eval not run "
              "again", flush=True)
        export: dict[str, Any] = {"gguf": cfg.layout.gguf(cfg.export.quant), "quant": cfg.export.quant}
    else:
        if reuse_eval:
            print("finish: no eval of the run's current GGUF to reuse: export and eval run", flush=True)
        export = pipeline.run_export(cfg, force=True)
        report = pipeline.run_eval(cfg, systems or evaluate.SYSTEMS)
    result = {"run_dir": str(cfg.run_dir), "export": {k: str(v) for k, v in export.items() if k in ("gguf", "quant")},
              "eval": report}
    if real:
        result["heldout"] = heldout_eval(cfg, cfg.resolve_path(cfg.data.input), out_predictions, heldout_rows)
    return result


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Model and GGUF grapheme CER against the identity baseline, with pass/fail."""
    base = report["baseline"]["overall"]["cer"]
    return {system: {"cer": report[system]["overall"]["cer"], "baseline_cer": base,
                     "beats_baseline": report[system]["overall"]["cer"] < base}
            for system in ("model", "gguf") if system in report}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.learning_signal",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=["prepare", "gpu", "adopt", "finish", "all"])
    parser.add_argument("--profile", default="signal-gpu", help="config profile of the run")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--lines", type=int, default=15000, help="synthetic clean lines per language")
    parser.add_argument("--rate", type=float, default=0.10, help="noise: target grapheme CER")
    parser.add_argument("--identity-fraction", type=float, default=0.1, help="rows left unchanged")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--parts-dir", default=None, help="gpu: pack the run here; finish: unpack from here")
    parser.add_argument("--part-mib", type=int, default=15, help="largest part file, MiB")
    parser.add_argument("--adapter-parts", nargs="+", default=[], metavar="PART",
                        help="adopt: a lease's adapter-V.tar.xz.partNN files (data stage here, adapter as trained)")
    parser.add_argument("--heldout-rows", type=int, default=None,
                        help="finish, real: score the first N rows of each held-out set (default: all)")
    parser.add_argument("--eval-systems", default=None,
                        help="finish: eval systems, comma list of model,gguf,zeroshot (default: all; a CPU "
                             "without the GPU skips `model`, the dense HF model, to save hours)")
    parser.add_argument("--reuse-eval", action="store_true",
                        help="finish: when the run's eval.json is the eval of its current q4_k_m (the manifest "
                             "says so), score the held-out sets only: no export, no eval again")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="train without a GPU (hours at the profile's size: shrink it with --set)")
    parser.add_argument("--errors", choices=["synthetic", "real"], default="synthetic",
                        help="synthetic: rule-based noise; real: Tesseract pairs + fitted noise, held-out real OCR")
    parser.add_argument("--real-lines", type=int, default=2500, help="real: composed lines per language read by "
                        "Tesseract for training (plus data/clean's)")
    parser.add_argument("--heldout-lines", type=int, default=200, help="real: lines per held-out set and language")
    parser.add_argument("--workers", type=int, default=None, help="real: Tesseract processes (default: all CPUs)")
    parser.add_argument("--no-hand-written", action="store_true", help="real: leave data/clean's lines out of "
                        "the Tesseract training pairs (quick CPU checks)")
    parser.add_argument("--max-over-correction", type=float, default=0.02, help="real: verdict bound")
    parser.add_argument("--min-gain", type=float, default=0.30, help="real: in-domain guarded CER must be this "
                        "far below identity")
    parser.add_argument("--min-baseline-gain", type=float, default=0.15, help="real: in-domain guarded CER must "
                        "be this far below the strongest non-model cleanup's")
    parser.add_argument("--min-rows", type=int, default=200, help="real: rows every held-out set must score")
    args = parser.parse_args(argv)
    if args.phase in ("gpu", "all") and not args.allow_cpu:
        import torch

        if not torch.cuda.is_available():
            print("error: the gpu phase needs a CUDA GPU; run `--phase gpu --parts-dir P` on the GPU box and "
                  "`--phase finish --parts-dir P` here, or pass --allow-cpu with a shrunk --set", file=sys.stderr)
            return 1
    return exit_status(_main, args)


def _main(args: argparse.Namespace) -> int:
    parts_dir = Path(args.parts_dir) if args.parts_dir else None
    result: dict[str, Any] = {"phase": args.phase}
    cfg = _config(args.profile, args.set)
    real = args.errors == "real"
    input_dir = cfg.resolve_path(cfg.data.input)
    pairs = input_dir / "pairs.jsonl"
    if real and args.phase in ("prepare", "all"):
        result["prepare"] = make_real_pairs(input_dir, args.lines, args.real_lines, args.heldout_lines,
                                            args.identity_fraction, args.seed, args.workers,
                                            hand_written=not args.no_hand_written)
        print(json.dumps(result["prepare"]["mix"]), flush=True)
    elif real and args.phase == "gpu":
        result["input"] = {"files": len(check_real_input(input_dir)["files"])}
    # gpu alone on a fresh box makes the pairs too (deterministic: the same seed gives the same file)
    elif args.phase in ("prepare", "all") or (args.phase == "gpu" and not pairs.exists()):
        result["prepare"] = make_pairs(pairs, args.lines, args.rate, args.identity_fraction, args.seed)
        print(json.dumps(result["prepare"]), flush=True)
    if args.phase == "adopt":
        result["adopt"] = phase_adopt(args.profile, args.set, [Path(p) for p in args.adapter_parts])
    if args.phase in ("gpu", "all"):
        result["gpu"] = phase_gpu(args.profile, args.set, parts_dir if args.phase == "gpu" else None, args.part_mib)
    if args.phase in ("finish", "all"):
        predictions = Path(args.out).with_suffix(".predictions.jsonl") if args.out and real else None
        result["finish"] = phase_finish(args.profile, args.set, parts_dir if args.phase == "finish" else None,
                                        real=real, out_predictions=predictions,
                                        systems=tuple(args.eval_systems.split(",")) if args.eval_systems else None,
                                        heldout_rows=args.heldout_rows, reuse_eval=args.reuse_eval)
        result["verdict"] = (verdict_real(result["finish"]["heldout"], args.max_over_correction, args.min_gain,
                                          args.min_baseline_gain, args.min_rows)
                             if real else verdict(result["finish"]["eval"]))
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if "verdict" in result:
        if real:
            return 0 if result["verdict"]["passed"] else 2
        return 0 if result["verdict"] and all(v["beats_baseline"] for v in result["verdict"].values()) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
