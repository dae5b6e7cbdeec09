"""Score a predictions file against the non-model baselines, per set: identity, `rules`, `lexicon` and
every system column it holds (e.g. `gguf`, `gguf_guarded`), with over-correction.

    python -m bhasha_build.tools.baseline_scores bench/X.predictions.jsonl [--out bench/Y.json] [--markdown]

Input: JSON Lines rows with `set` (or `lang`), `noisy`, `clean` and system columns (strings). `noisy` and
`clean` are normalized as eval normalizes them (core/text.normalize_text, --zwj-policy: the config's
data.zwj_policy, "auto"), so identity here is eval's identity: Tesseract's Tamil puts a ZWNJ after most
word-final viramas (265 of 300 indomain-ta lines), which "auto" drops; scored raw, identity CER there was
0.1355, normalized 0.06 (2026-12-03). The
baselines are recomputed here by core/baselines.py (the file's own `rules`/`lexicon` columns, when
present, are ignored and recomputed, so an old file is scored by today's rules). Per set: CER
(grapheme, corpus), over-correction, rows, the strongest non-model baseline and each system's gain
over it and over identity (1 - CER / theirs). Output: JSON (stdout or --out), a Markdown table with
--markdown.

Knobs: --systems (columns to score; default every string column but the row's own fields).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bhasha_build.core.baselines import BASELINES, run_baselines, strongest_of
from bhasha_build.core.fsutil import atomic_write_json, jsonl_objects
from bhasha_build.core.metrics import check_unit_rules, score
from bhasha_build.core.text import ZWJ_POLICIES, normalize_text

ROW_FIELDS = {"set", "id", "lang", "noisy", "clean", "guard", *BASELINES}


def load(path: Path, zwj_policy: str = "auto") -> list[dict[str, Any]]:
    rows = []
    for n, row in jsonl_objects(path, SystemExit, "a predictions JSON Lines file"):
        if not all(isinstance(row.get(k), str) for k in ("noisy", "clean")):
            raise SystemExit(f"{path}:{n}: a row needs string 'noisy' and 'clean'")
        rows.append({**row, "noisy": normalize_text(row["noisy"], zwj_policy),
                     "clean": normalize_text(row["clean"], zwj_policy)})
    return rows


def score_sets(rows: list[dict[str, Any]], systems: Sequence[str] | None = None) -> dict[str, Any]:
    """{"rows": every row scored, "sets": {set: {rows, identity/rules/lexicon/<system>: {cer,
    over_correction_rate}, strongest, gains}}, ...}. A row whose noisy side is empty (an OCR line read as
    empty) is scored like any other, in every column."""
    if systems is None:
        systems = [k for k in rows[0] if k not in ROW_FIELDS and isinstance(rows[0][k], str)]
    outs, missing = run_baselines(rows)
    by_set: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_set.setdefault(str(row.get("set") or row.get("lang") or "?"), []).append(i)
    result: dict[str, Any] = {}
    for name, idx in sorted(by_set.items()):
        subset = [rows[i] for i in idx]
        columns = {"identity": [r["noisy"] for r in subset], **{b: [outs[b][i] for i in idx] for b in BASELINES},
                   **{s: [rows[i][s] for i in idx] for s in systems}}
        entry: dict[str, Any] = {"rows": len(subset)}
        for column, hyps in columns.items():
            block = score(subset, hyps)["overall"]
            entry[column] = {"cer": round(block["cer"], 4), "identity_rows": block["identity_rows"],
                             "over_correction_rate": round(block["over_correction_rate"], 4)}
        strongest = strongest_of({b: entry[b]["cer"] for b in BASELINES})
        entry["strongest_baseline"] = strongest
        for s in systems:
            for key, bar in (("gain_over_strongest", entry[strongest]["cer"]), ("gain_over_identity",
                                                                                entry["identity"]["cer"])):
                entry[s][key] = round(1 - entry[s]["cer"] / bar, 4) if bar else None
        result[name] = entry
    return {"rows": len(rows), "sets": result, "systems": list(systems), "lexicon_missing": missing}


def markdown(scored: dict[str, Any]) -> str:
    systems = scored["systems"]
    head = ["set", "rows", "identity", *BASELINES, *systems, "strongest", *(f"{s} vs strongest" for s in systems)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in scored["sets"].items():
        cells = [name, str(e["rows"]), *(f"{e[c]['cer']:.4f} ({e[c]['over_correction_rate']:.1%})"
                                        for c in ("identity", *BASELINES, *systems)), e["strongest_baseline"],
                 *(f"{e[s]['gain_over_strongest']:+.1%}" if e[s]["gain_over_strongest"] is not None else "—"
                   for s in systems)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nCER (grapheme, corpus) with over-correction in brackets; gain = 1 - system CER / strongest "
                 "non-model baseline CER (positive: the system is better).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help="a predictions JSON Lines file")
    parser.add_argument("--out", type=Path, help="write the JSON here (default stdout)")
    parser.add_argument("--systems", nargs="*", help="system columns to score (default: every string column)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--zwj-policy", default="auto", choices=ZWJ_POLICIES,
                        help="how noisy and clean are normalized, as eval does (data.zwj_policy)")
    args = parser.parse_args(argv)
    rows = load(args.predictions, args.zwj_policy)
    if not rows:
        raise SystemExit(f"{args.predictions}: no rows")
    scored = {"predictions": str(args.predictions), "zwj_policy": args.zwj_policy,
              "metric_units": check_unit_rules(), **score_sets(rows, args.systems)}
    if args.out:
        atomic_write_json(args.out, scored)
    else:
        json.dump(scored, sys.stdout, ensure_ascii=False, indent=1)
        print()
    if args.markdown:
        print(markdown(scored))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
