"""Quality runs of issue 22: the sweep's definition, one JSON record per run under bench/quality/, and the
table RESULTS.md shows.

  sweep    bench/quality/sweep.toml: named variants of the `real-errors-qwen` profile (learning rate, LoRA
           rank, share of real Tesseract pairs, 0.5B vs 1.5B), each a list of `--set` overrides and the
           input folder it trains on. The screen stage compares variants on the EVAL SPLIT only (CER and
           over-correction of the guarded q4_k_m); the held-out sets are scored once per finalist.
  record   <out>/<date>-<name>.json from a learning_signal result JSON (`gpu` and/or `finish`): the
           variant, the resolved config, data/train summaries, eval-split scores, held-out scores per set
           (identity, raw, guarded, over-correction, better/same/worse, the confidence threshold used and
           where it came from, end-mark changes on '।'-ending lines apart from the others), the eval
           split's calibrated threshold (`min_confidence`), the verdict, the card and the predictions
           file's name + sha256 (the predictions stay beside the record as JSON Lines; with
           --eval-predictions the eval split's rows too, as <date>-<name>.eval-predictions.jsonl: a new guard
           or threshold is chosen on those, never on the held-out rows).
  ceiling  the best any line guard could serve on a predictions file (held-out, eval-split or dev rows): per
           set, identity, the raw reply, the guarded one, and the oracle that serves the raw reply exactly on
           the lines where it lowers that line's CER. No threshold or lexicon rule beats the oracle: when it is
           still short of the gate, the model's replies are the limit, not the guard.
  guards   a predictions file re-served under other guard settings (confidence thresholds x the lexicon rule,
           core/guard.accept with the profile's guard section): CER and over-correction per set. For choosing
           the served guard on the eval split's and dev sets' rows, never on held-out rows.
  residuals  where a predictions file's errors are, before and after: per set, each column's words aligned
           to the truth's (difflib on whitespace words) and every wrong word's grapheme edits put in one class:
           `segmentation` (words split, merged, missing or extra), `punctuation` (the same word once punctuation
           is stripped), `non_word` (the truth is a lexicon word, the output is not: a dictionary can see it),
           `real_word` (the output is itself a lexicon word: only context tells), `unknown_truth` (neither is
           in the lexicon: names, rare words). Identity (`noisy`) against the served column says which kinds
           the model fixes and which it leaves.
  rescore  a record's scores recomputed from the predictions kept beside it, with this machine's grapheme rules
           (core/metrics.check_unit_rules: the lock's regex): the eval split per system, the dev sets and the
           held-out sets; what the record had goes under `rescored.scored_elsewhere`. For runs scored where
           another regex split Bengali clusters differently (the H200 image before it carried the lock's).
  table    a Markdown table of every record in a folder, newest first (last column: guarded end-mark
           changes over the held-out sets, '।'-ending lines · the others); `--results FILE` rewrites the
           block between `<!-- quality-table:start -->` and `<!-- quality-table:end -->` in FILE.

Knobs: --sweep (file), --out (folder), --name, --variant, --card, --date, --system, --columns.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bhasha_build.core.config import REPO_ROOT
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json, atomic_write_text, jsonl_objects, sha256_file

SWEEP = REPO_ROOT / "bench" / "quality" / "sweep.toml"
QUALITY_DIR = REPO_ROOT / "bench" / "quality"
START, END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"
SCHEMA = 1


class QualityError(BhashaError):
    """A bad sweep file, result or record (one line)."""


def load_sweep(path: str | Path = SWEEP) -> dict[str, Any]:
    """The sweep: {"profile", "stages": {...}, "variants": {name: {"stage", "set": [...], "input", "real_share",
    "rare_words", "model"}}}; every variant's overrides are checked against the config schema. rare_words: the
    training pairs get natural_pairs' rare-word lines (data/natural/train-pairs/rare-words.tar.xz)."""
    from bhasha_build.core.config import ConfigError, load_config

    path = Path(path)
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise QualityError(f"{path}: {exc}") from None
    profile = tree.get("profile")
    variants = tree.get("variants", {})
    if not profile or not variants:
        raise QualityError(f"{path}: needs `profile` and at least one [variants.NAME]")
    for name, spec in variants.items():
        if spec.get("stage") not in tree.get("stages", {}):
            raise QualityError(f"{path}: variant {name}: stage {spec.get('stage')!r} is not a [stages.*] table")
        if not isinstance(spec.get("rare_words", False), bool):
            raise QualityError(f"{path}: variant {name}: rare_words is true or false, not {spec['rare_words']!r}")
        try:
            load_config(None, profile=variant_profile(tree, name), overrides=variant_overrides(tree, name))
        except ConfigError as exc:
            raise QualityError(f"{path}: variant {name}: {exc}") from None
    return tree


def variant_profile(sweep: dict[str, Any], name: str) -> str:
    """The variant's profile: its own `profile`, else the sweep's."""
    return sweep["variants"][name].get("profile") or sweep["profile"]


def variant_overrides(sweep: dict[str, Any], name: str) -> list[str]:
    """The `--set` overrides of a variant: its own data-stage input folder (runs/quality-input-<name>: variants
    may run side by side, one scoring while the next trains), its stage's, its own, then run=<profile>-<name>."""
    spec = sweep["variants"][name]
    stage = sweep["stages"][spec["stage"]]
    return [f'data.input="runs/quality-input-{name}"', *stage.get("set", []), *spec.get("set", []),
            f'run="{variant_profile(sweep, name)}-{name}"']


def _pick(d: dict[str, Any] | None, *keys: str) -> dict[str, Any]:
    return {k: d[k] for k in keys if d and k in d}


def make_record(name: str, result: dict[str, Any], sweep: dict[str, Any] | None = None, card: str | None = None,
                date: str | None = None, predictions: Path | None = None,
                extra_sets: Sequence[str] = ()) -> dict[str, Any]:
    """The record of one run (see the module docstring) from learning_signal's result JSON; `extra_sets`: the
    overrides the run had beyond its variant's (gpu-quality.sh EXTRA_SETS), recorded after them."""
    from bhasha_build.core.config import load_config

    spec = (sweep or {}).get("variants", {}).get(name, {})
    overrides = [*(variant_overrides(sweep, name) if spec else []), *extra_sets]
    profile = variant_profile(sweep, name) if spec else None
    cfg = load_config(None, profile=profile, overrides=overrides) if profile else None
    finish = result.get("finish") or {}
    gpu = result.get("gpu") or {}
    evaluation = finish.get("eval") or {}
    eval_scores = {}
    for system, block in evaluation.items():
        if isinstance(block, dict) and "overall" in block:
            eval_scores[system] = _pick(block["overall"], "cer", "wer", "rows", "over_correction_rate")
            eval_scores[system]["cer_by_lang"] = {lang: b.get("cer") for lang, b in block.get("by_lang", {}).items()}
            guarded = block.get("guarded", {}).get("overall") if isinstance(block.get("guarded"), dict) else None
            if guarded:
                eval_scores[system]["guarded"] = _pick(guarded, "cer", "over_correction_rate", "guarded_rows")
                if marks := block["guarded"].get("end_marks"):
                    eval_scores[system]["guarded"]["end_marks"] = marks
            if block.get("dev"):  # the dev sets (eval.dev_sets) at the applied threshold
                eval_scores[system]["dev"] = block["dev"]
    heldout = {s: _pick(v, "rows", "identity_cer", "raw_cer", "guarded_cer", "raw_over_correction",
                        "guarded_over_correction", "guarded_rows", "better_same_worse", "zeroshot",
                        "min_confidence", "end_marks", *[k for k in v if k.startswith(("rules", "lexicon"))])
               for s, v in (finish.get("heldout") or {}).items()}
    record = {
        "schema": SCHEMA, "name": name, "date": date or dt.date.today().isoformat(), "card": card,
        "variant": {"stage": spec.get("stage"), "real_share": spec.get("real_share"),
                    "rare_words": bool(spec.get("rare_words", False)), "set": overrides,
                    "profile": profile},
        "config": cfg.model_dump(mode="json") if cfg else None,
        "data": gpu.get("data"), "train": gpu.get("train"), "hardware": gpu.get("hardware"),
        "eval_split": eval_scores, "heldout": heldout, "verdict": result.get("verdict"),
    }
    if evaluation.get("metric_units"):  # the grapheme rules the scores followed (core/metrics.unit_rules)
        record["metric_units"] = evaluation["metric_units"]
    if evaluation.get("min_confidence"):  # the threshold calibrated on the eval split (applied with "auto")
        record["min_confidence"] = evaluation["min_confidence"]
    if predictions is not None and predictions.is_file():
        record["predictions"] = _file_facts(predictions)
    return record


def _file_facts(path: Path) -> dict[str, Any]:
    """A JSON Lines file as a record names it: file name, sha256, rows."""
    return {"file": path.name, "sha256": sha256_file(path),
            "rows": sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())}


def write_record(record: dict[str, Any], out: str | Path = QUALITY_DIR) -> Path:
    path = Path(out) / f"{record['date']}-{record['name']}.json"
    atomic_write_json(path, record)
    return path


def _fmt(x: Any, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _setting(record: dict[str, Any], key: str) -> Any:
    cfg = record.get("config") or {}
    section, _, field = key.partition(".")
    return (cfg.get(section) or {}).get(field)


def table(folder: str | Path = QUALITY_DIR) -> str:
    """Markdown: one row per record (newest first): the settings the sweep varies, the eval-split CER of
    the guarded q4_k_m vs identity, and per held-out set identity → guarded CER (over-correction)."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise QualityError(f"{path}: not JSON") from None
        if isinstance(rec, dict) and rec.get("schema") == SCHEMA:
            records.append(rec)
    records.sort(key=lambda r: (r["date"], r["name"]), reverse=True)
    sets = sorted({s for r in records for s in r.get("heldout", {})})
    head = ["date", "run", "model", "lr", "r", "real share", "epochs/steps", "eval CER id → gguf (guarded)",
            "dev unfamiliar: id → guarded (over-corr.)",
            *[f"{s}: id → guarded (over-corr.)" for s in sets], "held-out end marks changed: । lines · others"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        ev = r.get("eval_split", {})
        base = (ev.get("baseline") or {}).get("cer")
        gg = ev.get("gguf") or {}
        guarded = (gg.get("guarded") or {}).get("cer")
        epochs = f"{_setting(r, 'train.epochs'):g} epochs" if _setting(r, "train.max_steps") == -1 else \
            f"{_setting(r, 'train.max_steps')} steps"
        model = str(_setting(r, "model.name") or "").replace("pypi:qwen2.5-coder-", "").replace("-instruct", "")
        cells = [r["date"], r["name"], model, _fmt(_setting(r, "train.learning_rate"), 5) if isinstance(
            _setting(r, "train.learning_rate"), float) else _fmt(_setting(r, "train.learning_rate")),
            _fmt(_setting(r, "lora.r")), _fmt((r.get("variant") or {}).get("real_share"), 2), _fmt(epochs),
            f"{_fmt(base)} → {_fmt(gg.get('cer'))} ({_fmt(guarded)})"]
        dev = (gg.get("dev") or {}).get("overall")
        cells.append("–" if not dev else f"{_fmt(dev.get('identity_cer'))} → {_fmt(dev.get('cer'))} "
                                         f"({_fmt(dev.get('over_correction'), 3)})")
        for s in sets:
            h = r.get("heldout", {}).get(s)
            cells.append("–" if not h else f"{_fmt(h.get('identity_cer'))} → {_fmt(h.get('guarded_cer'))} "
                                           f"({_fmt(h.get('guarded_over_correction'), 3)})")
        cells.append(_end_marks(r.get("heldout", {})))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _end_marks(heldout: dict[str, Any]) -> str:
    """Guarded end-mark changes over every held-out set, '।'-ending lines apart: "changed/rows · changed/rows"
    ("–" for a record made before they were counted)."""
    totals = {g: [0, 0] for g in ("danda", "other")}
    counted = False
    for entry in heldout.values():
        marks = ((entry or {}).get("end_marks") or {}).get("guarded")
        if marks:
            counted = True
            for group, total in totals.items():
                total[0] += marks[group]["changed"]
                total[1] += marks[group]["rows"]
    return " · ".join(f"{c}/{n}" for c, n in totals.values()) if counted else "–"


def write_table(results: str | Path, folder: str | Path = QUALITY_DIR) -> None:
    """Replace the marked block of `results` with `table(folder)` (markers added at the end if absent)."""
    path = Path(results)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{START}\n{table(folder)}{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    atomic_write_text(path, text)


def _by_set(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by their `set` (held-out, dev), else their `lang` (the eval split's rows)."""
    sets: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        sets.setdefault(row.get("set") or row.get("lang") or "all", []).append(row)
    return sets


def guard_ceiling(rows: Sequence[dict[str, Any]], system: str = "gguf") -> dict[str, dict[str, Any]]:
    """Per set (_by_set): grapheme CER of identity, `system` raw, `system`_guarded (when the
    rows have it) and the oracle guard (raw where it lowers the line's CER, else the input), with the rows."""
    from bhasha_build.core.metrics import corpus_cer

    sets = _by_set(rows)
    out = {}
    for name, group in sorted(sets.items()):
        clean = [r["clean"] for r in group]
        oracle = [r[system] if corpus_cer([r[system]], [r["clean"]]) < corpus_cer([r["noisy"]], [r["clean"]])
                  else r["noisy"] for r in group]
        entry = {"rows": len(group), "identity": corpus_cer([r["noisy"] for r in group], clean),
                 "raw": corpus_cer([r[system] for r in group], clean), "oracle_guard": corpus_cer(oracle, clean),
                 "oracle_lines_served": sum(o != r["noisy"] for o, r in zip(oracle, group, strict=True))}
        if all(f"{system}_guarded" in r for r in group):
            entry["guarded"] = corpus_cer([r[f"{system}_guarded"] for r in group], clean)
        entry["oracle_gain"] = 1 - entry["oracle_guard"] / entry["identity"] if entry["identity"] else 0.0
        out[name] = entry
    return out


def guard_settings(rows: Sequence[dict[str, Any]], guard_cfg: Any, thresholds: Sequence[float],
                   system: str = "gguf") -> list[dict[str, Any]]:
    """Per threshold x lexicon rule (off, on) x set: grapheme CER and over-correction of what core/guard.accept
    serves from the rows' raw `system` replies and `system`_confidence (a reply the run's guard refused as cut
    stays refused: the rows keep no cut flag, only that reason)."""
    from bhasha_build.core.baselines import DICTIONARIES, load_lexicon
    from bhasha_build.core.guard import CUT_REASON, accept
    from bhasha_build.core.metrics import corpus_cer, over_correction_rate

    sets = _by_set(rows)
    lexicons = {lang: load_lexicon(lang) for lang in {r.get("lang") for r in rows} if lang in DICTIONARIES}
    out = []
    for threshold in thresholds:
        for with_lexicon in (False, True):
            for name, group in sorted(sets.items()):
                served = [accept(r["noisy"], r[system], r.get("lang"), guard_cfg,
                                 cut=r.get(f"{system}_guard") == CUT_REASON, confidence=r.get(f"{system}_confidence"),
                                 min_confidence=threshold,
                                 lexicon=lexicons.get(r.get("lang")) if with_lexicon else None).text for r in group]
                clean, noisy = [r["clean"] for r in group], [r["noisy"] for r in group]
                out.append({"set": name, "min_confidence": threshold, "lexicon_guard": with_lexicon,
                            "rows": len(group), "identity": corpus_cer(noisy, clean),
                            "cer": corpus_cer(served, clean), "over_correction": over_correction_rate(noisy, served,
                                                                                                   clean)})
    return out


RESIDUAL_CLASSES = ("segmentation", "punctuation", "non_word", "real_word", "unknown_truth")


def _row_lang(row: dict[str, Any]) -> str | None:
    """A row's language: its `lang`, else its set's suffix (indomain-bn -> bn)."""
    return row.get("lang") or (row.get("set") or "").rsplit("-", 1)[-1] or None


def word_errors(output: str, truth: str, lexicon: Any) -> list[tuple[str, int]]:
    """(class, grapheme edits) of every wrong word of `output` against `truth` (RESIDUAL_CLASSES; the
    quality module's docstring says what each means). Words aligned with difflib; a block of unequal length
    is one `segmentation` error weighing the edits between its joined texts."""
    import difflib

    from bhasha_build.core.baselines import _core
    from bhasha_build.core.metrics import edit_distance, graphemes

    out_words, truth_words = output.split(), truth.split()
    found = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, out_words, truth_words, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if op != "replace" or i2 - i1 != j2 - j1:
            found.append(("segmentation", edit_distance(graphemes(" ".join(out_words[i1:i2])),
                                                       graphemes(" ".join(truth_words[j1:j2])))))
            continue
        for o, t in zip(out_words[i1:i2], truth_words[j1:j2], strict=True):
            oc, tc = _core(o), _core(t)
            if oc == tc:
                kind = "punctuation"
            elif lexicon is None:
                kind = "unknown_truth"
            elif oc in lexicon:
                kind = "real_word"
            elif tc in lexicon:
                kind = "non_word"
            else:
                kind = "unknown_truth"
            found.append((kind, edit_distance(graphemes(o), graphemes(t))))
    return found


def residuals(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """Per set (_by_set), per column: wrong words and their grapheme edits by class (word_errors), with the
    truth's grapheme count, so edits / graphemes is each class's share of that column's CER. A language whose
    dictionary is not installed has no lexicon: its wrong words are `unknown_truth` (`lexicons_missing` says why)."""
    from bhasha_build.core.baselines import DICTIONARIES, lexicons
    from bhasha_build.core.metrics import graphemes

    known, missing = lexicons(lang for lang in {_row_lang(r) for r in rows} if lang in DICTIONARIES)
    out: dict[str, Any] = {"lexicons_missing": missing} if missing else {}
    for name, group in sorted(_by_set(rows).items()):
        entry: dict[str, Any] = {"rows": len(group),
                                 "truth_graphemes": sum(len(graphemes(r["clean"])) for r in group)}
        for column in columns:
            words = dict.fromkeys(RESIDUAL_CLASSES, 0)
            edits = dict.fromkeys(RESIDUAL_CLASSES, 0)
            for row in group:
                for kind, n in word_errors(row[column], row["clean"], known.get(_row_lang(row))):
                    words[kind] += 1
                    edits[kind] += n
            entry[column] = {"words": words, "edits": edits,
                             "cer_share": {k: round(v / entry["truth_graphemes"], 5) for k, v in edits.items()}}
        out[name] = entry
    return out


def _read_rows(path: str | Path, text_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """A predictions file's rows (core/fsutil.jsonl_objects: a bad line is one QualityError naming it); a row
    without one of `text_columns` as text is one QualityError naming its file and line."""
    rows = []
    for line, row in jsonl_objects(path, QualityError, "a predictions JSON Lines file"):
        if lacking := [c for c in text_columns if not isinstance(row.get(c), str)]:
            raise QualityError(f"{path}:{line}: no text column {', '.join(lacking)} (--columns)")
        rows.append(row)
    return rows


def _print_result(result: dict[str, Any], out: str | None, indent: int) -> None:
    """A per-file result as JSON on stdout, and into `out` when given (`ceiling`, `guards`)."""
    text = json.dumps(result, indent=indent, ensure_ascii=False)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")


def _set_blocks(rows: Sequence[dict[str, Any]], system: str, old: dict[str, Any], keys: dict[str, str]
                ) -> dict[str, Any]:
    """Per set of `rows` (and "overall" when `old` has it): `old`'s blocks with identity / raw / guarded CER and
    over-correction recomputed (keys: which field holds which: identity, raw, guarded, raw_oc, guarded_oc)."""
    from bhasha_build.core.metrics import score

    groups = dict(_by_set(rows))
    if "overall" in old:
        groups["overall"] = list(rows)
    out = {}
    for name, block in old.items():
        group = groups.get(name)
        if group is None or not isinstance(block, dict):
            out[name] = block
            continue
        raw = score(group, [r[system] for r in group])["overall"]
        guarded = score(group, [r[f"{system}_guarded"] for r in group])["overall"]
        out[name] = {**block, keys["identity"]: score(group, [r["noisy"] for r in group])["overall"]["cer"],
                     keys["raw"]: raw["cer"], keys["guarded"]: guarded["cer"],
                     keys["raw_oc"]: raw["over_correction_rate"], keys["guarded_oc"]: guarded["over_correction_rate"]}
        for column in (k for k in block if k.endswith("_cer") and k.startswith(("rules", "lexicon"))):
            name_ = column.removesuffix("_cer")
            if all(name_ in r for r in group):
                out[name][column] = score(group, [r[name_] for r in group])["overall"]["cer"]
    return out


def _baseline_columns(path: Path, zwj_policy: str | None) -> None:
    """The predictions file rewritten with its non-model baseline columns made again here (core/baselines
    .run_baselines on the input as eval sends it)."""
    from bhasha_build.core.baselines import run_baselines
    from bhasha_build.core.fsutil import atomic_write_jsonl
    from bhasha_build.core.text import normalize_text

    rows = _read_rows(path)
    texts = [normalize_text(r["noisy"], zwj_policy) if zwj_policy else r["noisy"] for r in rows]
    outputs, missing = run_baselines(rows, texts)
    if missing:
        raise QualityError(f"the lexicon baseline cannot be made here: {next(iter(missing.values()))}")
    atomic_write_jsonl(path, ({**r, **{name: outs[i] for name, outs in outputs.items()}} for i, r in enumerate(rows)))


def rescore(record: dict[str, Any], folder: Path, system: str = "gguf", date: str | None = None,
            baselines: bool = False) -> dict[str, Any]:
    """`record` with its eval-split, dev and held-out scores recomputed from the predictions files it names (in
    `folder`) under this machine's grapheme rules; the scores it had, and their rules, kept under
    rescored.scored_elsewhere. The rows' served outputs are taken as they are: no guard decision changes.
    `baselines`: the eval-split and held-out files' baseline columns (rules, lexicon) are made again here
    first and the files rewritten (a machine without the dictionaries wrote its rules output as the lexicon)."""
    import copy

    from bhasha_build.core.metrics import check_unit_rules, score

    units = check_unit_rules()
    before = {"metric_units": record.get("metric_units"), "eval_split": copy.deepcopy(record.get("eval_split")),
              "heldout": copy.deepcopy(record.get("heldout"))}
    out = copy.deepcopy(record)
    zwj_policy = ((record.get("config") or {}).get("data") or {}).get("zwj_policy")
    for key in ("eval_split_predictions", "predictions"):
        if baselines and (facts := record.get(key)):
            _baseline_columns(folder / facts["file"], zwj_policy if key == "eval_split_predictions" else None)
            out[key] = _file_facts(folder / facts["file"])
    if facts := record.get("eval_split_predictions"):
        rows = _read_rows(folder / facts["file"])
        columns = {"baseline": "noisy", "rules": "rules", "lexicon": "lexicon", system: system}
        for name, column in columns.items():
            block = out["eval_split"].get(name)
            if not block or not all(column in r for r in rows):
                continue
            report = score(rows, [r[column] for r in rows])
            block.update({k: report["overall"][k] for k in ("cer", "wer", "over_correction_rate")},
                         cer_by_lang={lang: b["cer"] for lang, b in report["by_lang"].items()})
            guarded = block.get("guarded")
            if guarded is None:
                continue
            served = ([r[f"{column}_guarded"] for r in rows] if all(f"{column}_guarded" in r for r in rows)
                      else [r[column] for r in rows] if guarded.get("guarded_rows") == 0 else None)
            if served is not None:
                g = score(rows, served)["overall"]
                guarded.update(cer=g["cer"], over_correction_rate=g["over_correction_rate"])
    if (facts := record.get("dev_predictions")) and (dev := out["eval_split"].get(system, {}).get("dev")):
        out["eval_split"][system]["dev"] = _set_blocks(
            _read_rows(folder / facts["file"]), system, dev,
            {"identity": "identity_cer", "raw": "raw_cer", "guarded": "cer", "raw_oc": "raw_over_correction",
             "guarded_oc": "over_correction"})
    if (facts := record.get("predictions")) and out.get("heldout"):
        rows = [{**r, f"{system}_guarded": r.get(f"{system}_guarded", r.get("guarded"))}
                for r in _read_rows(folder / facts["file"])]
        out["heldout"] = _set_blocks(rows, system, out["heldout"],
                                     {"identity": "identity_cer", "raw": "raw_cer", "guarded": "guarded_cer",
                                      "raw_oc": "raw_over_correction", "guarded_oc": "guarded_over_correction"})
    out["metric_units"] = units
    out["rescored"] = {"date": date or dt.date.today().isoformat(), "scored_elsewhere": before,
                       "baselines_made_here": baselines,
                       "note": "scores recomputed from the predictions beside the record (quality rescore); "
                               "guard decisions and the calibrated threshold are the run's own"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.quality", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_sweep = sub.add_parser("sweep", help="check the sweep file; print each variant's --set overrides")
    p_sweep.add_argument("--sweep", default=str(SWEEP))
    p_sweep.add_argument("--variant", default=None, help="print only this variant's overrides, one per line")
    p_sweep.add_argument("--field", default=None, help="with --variant: print this field of the variant")
    p_rec = sub.add_parser("record", help="write <out>/<date>-<name>.json from a learning_signal result")
    p_rec.add_argument("result", help="learning_signal --out JSON (gpu and/or finish phase)")
    p_rec.add_argument("--name", required=True, help="the sweep variant (or any run name)")
    p_rec.add_argument("--sweep", default=str(SWEEP))
    p_rec.add_argument("--gpu-result", default=None, help="the gpu phase's JSON, when finish ran apart")
    p_rec.add_argument("--card", default=None, help="the GPU's name (nvidia-smi) or 'cpu'")
    p_rec.add_argument("--date", default=None)
    p_rec.add_argument("--out", default=str(QUALITY_DIR))
    p_rec.add_argument("--eval-predictions", default=None,
                       help="the run's eval_predictions.jsonl (the eval split, per row: each system's reply, guarded "
                            "output, confidence), kept beside the record: guards and thresholds are chosen on it")
    p_rec.add_argument("--dev-predictions", default=None,
                       help="the run's dev_predictions.jsonl (the dev sets' rows, eval.dev_sets), kept beside "
                            "the record")
    p_rec.add_argument("--set", dest="sets", action="append", default=[],
                       help="an override the run had beyond its variant's (repeatable; gpu-quality.sh EXTRA_SETS)")
    p_ceil = sub.add_parser("ceiling", help="the best any line guard could serve on a predictions file, per set")
    p_ceil.add_argument("predictions", nargs="+", help="JSON Lines with noisy, clean, SYSTEM (and set)")
    p_ceil.add_argument("--system", default="gguf", help="the reply column (its guarded one: SYSTEM_guarded)")
    p_ceil.add_argument("--out", default=None, help="also write the JSON here (per file, per set)")
    p_gd = sub.add_parser("guards", help="re-serve eval-split / dev predictions under other guard settings")
    p_gd.add_argument("predictions", nargs="+", help="eval-predictions / dev-predictions JSON Lines")
    p_gd.add_argument("--profile", default="real-errors-qwen", help="whose guard section applies")
    p_gd.add_argument("--thresholds", default="0,0.3,0.5,0.7,0.9", help="comma list of min_confidence values")
    p_gd.add_argument("--system", default="gguf")
    p_gd.add_argument("--out", default=None, help="also write the JSON here")
    p_res = sub.add_parser("residuals", help="which kinds of word errors a predictions file's columns leave, per set")
    p_res.add_argument("predictions", nargs="+", help="JSON Lines with noisy, clean and the columns (and set/lang)")
    p_res.add_argument("--columns", default="noisy,gguf_guarded", help="comma list of columns to classify")
    p_res.add_argument("--out", default=None, help="also write the JSON here")
    p_rs = sub.add_parser("rescore", help="recompute a record's scores from its predictions with this machine's "
                                           "grapheme rules (the lock's regex)")
    p_rs.add_argument("record", help="bench/quality/<date>-<name>.json (rewritten in place)")
    p_rs.add_argument("--system", default="gguf")
    p_rs.add_argument("--baselines", action="store_true",
                      help="make the rules/lexicon columns again here first (the run's machine lacked the "
                           "dictionaries); the predictions files are rewritten")
    p_tab = sub.add_parser("table", help="print the table; --results FILE rewrites its marked block")
    p_tab.add_argument("--folder", default=str(QUALITY_DIR))
    p_tab.add_argument("--results", default=None)
    args = parser.parse_args(argv)
    try:
        if args.what == "sweep":
            sweep = load_sweep(args.sweep)
            if args.variant:
                if args.variant not in sweep["variants"]:
                    raise QualityError(f"no variant {args.variant!r} (have: {', '.join(sweep['variants'])})")
                if args.field == "profile":
                    print(variant_profile(sweep, args.variant))
                elif args.field:
                    print(sweep["variants"][args.variant].get(args.field, ""))
                else:
                    print("\n".join(variant_overrides(sweep, args.variant)))
            else:
                for name in sweep["variants"]:
                    print(name, json.dumps(variant_overrides(sweep, name)))
        elif args.what == "record":
            result = json.loads(Path(args.result).read_text(encoding="utf-8"))
            if args.gpu_result:
                result["gpu"] = json.loads(Path(args.gpu_result).read_text(encoding="utf-8")).get("gpu")
            sweep = load_sweep(args.sweep) if Path(args.sweep).is_file() else None
            predictions = Path(args.result).with_suffix(".predictions.jsonl")
            record = make_record(args.name, result, sweep, args.card, args.date, predictions, args.sets)
            path = write_record(record, args.out)
            if "predictions" in record:  # beside the record, under the record's dated name
                kept = path.with_suffix(".predictions.jsonl")
                shutil.copyfile(predictions, kept)
                record["predictions"]["file"] = kept.name
            if args.eval_predictions:  # the eval split's rows: what a new guard or threshold is chosen on
                kept = path.with_suffix(".eval-predictions.jsonl")
                shutil.copyfile(args.eval_predictions, kept)
                record["eval_split_predictions"] = _file_facts(kept)
            if args.dev_predictions:  # the dev sets' rows: chosen on too
                kept = path.with_suffix(".dev-predictions.jsonl")
                shutil.copyfile(args.dev_predictions, kept)
                record["dev_predictions"] = _file_facts(kept)
            write_record(record, args.out)
            print(path)
        elif args.what == "guards":
            from bhasha_build.core.config import load_config

            guard_cfg = load_config(None, profile=args.profile).guard
            thresholds = [float(t) for t in args.thresholds.split(",")]
            _print_result({Path(file).name: guard_settings(_read_rows(file), guard_cfg, thresholds, args.system)
                           for file in args.predictions}, args.out, indent=1)
        elif args.what == "rescore":
            path = Path(args.record)
            record = rescore(json.loads(path.read_text(encoding="utf-8")), path.parent, args.system,
                             baselines=args.baselines)
            atomic_write_json(path, record)
            print(path)
        elif args.what == "residuals":
            columns = [c for c in args.columns.split(",") if c]
            _print_result({Path(file).name: residuals(_read_rows(file, ("clean", *columns)), columns)
                           for file in args.predictions}, args.out, indent=1)
        elif args.what == "ceiling":
            _print_result({Path(file).name: guard_ceiling(_read_rows(file), args.system)
                           for file in args.predictions}, args.out, indent=2)
        else:
            if args.results:
                write_table(args.results, args.folder)
            else:
                print(table(args.folder), end="")
    except (BhashaError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
