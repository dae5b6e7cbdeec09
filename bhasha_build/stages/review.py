"""The reviewer's page: ``review.html`` beside a `correct` run's corrections.jsonl.

    write_page(corrections, out=None) -> {"path", "rows", "changed", "guarded", ...}

Every `invoke correct` writes it into its output folder; ``invoke review --corrections FILE`` writes
one for an older run. One self-contained file (its CSS, script and data inline; no network: a
Content-Security-Policy forbids any fetch), opened from disk in any browser. It lists per file the
lines `correct` changed and the lines the guard (or a failure) kept, input and output side by side
with the differing graphemes marked. The marks are computed here, not in the browser:
``core.review.grapheme_diff`` segments with ``core.metrics.graphemes`` (the CER's unit) and aligns
with the CER's Levenshtein, so what is highlighted is what the metrics count as changed.

Shown per line: file:line, language, the model's ``confidence`` when the record has one ("—"
otherwise), the guard's reasons. Sort by confidence, filter by file / language / changed / guarded /
undecided; keys j/k (move), a (accept), r (reject), e (edit; Enter saves, Esc cancels), u (undo).
Rows are rendered in chunks as the reader scrolls, so a 10,000-line book opens at once
(bench/review_page.json). Decisions are kept in the browser's localStorage (keyed by a hash of the
corrections file) and exported with one button as ``review.jsonl`` (core/review.py: the format that
``invoke data --input`` and ``invoke correct --apply`` read).

Knobs: none (the page's look is review_page.html beside this module).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_text, jsonl_objects
from bhasha_build.core.review import grapheme_diff

TEMPLATE = Path(__file__).with_name("review_page.html")
PAGE_NAME = "review.html"  # beside corrections.jsonl (correct.CorrectOutput.review_page)


class ReviewError(BhashaError):
    """A one-line review failure naming the file (and line)."""


def confidence_of(record: dict[str, Any]) -> float | None:
    """The record's model confidence as a number, or None (older records have none)."""
    value = record.get("confidence")
    if isinstance(value, dict):  # a summary of per-token confidences: its lowest, else its mean
        value = next((value[k] for k in ("min", "mean", "value") if k in value), None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_records(path: Path) -> list[dict[str, Any]]:
    """corrections.jsonl's records; a line that is not a record is one error naming file:line."""
    records = []
    for no, rec in jsonl_objects(path, ReviewError, "a corrections.jsonl written by `invoke correct`"):
        if not all(isinstance(rec.get(k), str) for k in ("file", "input", "output")) \
                or not isinstance(rec.get("line"), int):
            raise ReviewError(f"{path}:{no}: not a corrections record (file, line, input, output)")
        records.append(rec)
    return records


def page_data(records: list[dict[str, Any]], title: str, key: str) -> dict[str, Any]:
    """What the page shows: the changed, guarded and failed lines with their grapheme marks."""
    files: dict[str, int] = {}
    rows = []
    for rec in records:
        changed, guarded, failed = bool(rec.get("changed")), bool(rec.get("guarded")), bool(rec.get("failed"))
        if not (changed or guarded or failed):
            continue
        proposal = rec["output"] if changed else str(rec.get("reply") or "")
        # Marked on the input as the model saw it (NFC: a precomposed क़ and क + nukta look alike and are
        # one grapheme to the metrics); the export keeps the input as recorded.
        shown = unicodedata.normalize("NFC", rec["input"])
        da, db, ia = grapheme_diff(shown, proposal)
        row: dict[str, Any] = {"f": files.setdefault(rec["file"], len(files)), "l": rec["line"],
                               "g": rec.get("lang") or "", "i": rec["input"], "o": rec["output"],
                               "c": confidence_of(rec), "ch": changed, "gd": guarded, "fl": failed,
                               "da": da, "db": db, "ia": ia}
        if shown != rec["input"]:
            row["n"] = shown
        if not changed:
            row["r"] = proposal
        if reasons := rec.get("reasons"):
            row["rs"] = "; ".join(str(r) for r in reasons)
        if rec.get("id") is not None:
            row["id"] = rec["id"]
        rows.append(row)
    counts = {"records": len(records), "shown": len(rows), "changed": sum(r["ch"] for r in rows),
              "guarded": sum(r["gd"] for r in rows), "failed": sum(r["fl"] for r in rows),
              "with_confidence": sum(r["c"] is not None for r in rows)}
    counts["unchanged"] = len(records) - len(rows)
    return {"title": title, "key": key, "files": list(files), "langs": sorted({r["g"] for r in rows if r["g"]}),
            "rows": rows, "counts": counts}


def render(data: dict[str, Any]) -> str:
    """The page: the template with the data inline (every ``<`` escaped, so no text closes the script)."""
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace("__REVIEW_DATA__", blob, 1)


def _title(corrections: Path) -> str:
    title = f" · {corrections.parent.name or corrections.parent.resolve().name}"
    try:
        backend = json.loads(corrections.with_name("summary.json").read_text(encoding="utf-8")).get("backend") or {}
    except (OSError, ValueError, AttributeError):
        return title
    model = backend.get("model") or Path(str(backend.get("gguf") or "")).name or backend.get("kind")
    return title + (f" · model {model}" if model else "")


def write_page(corrections: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write the review page for ``corrections`` (default: review.html beside it), atomically."""
    corrections = Path(corrections)
    target = Path(out) if out else corrections.with_name(PAGE_NAME)
    records = read_records(corrections)
    key = hashlib.sha256(corrections.read_bytes()).hexdigest()[:16]
    data = page_data(records, _title(corrections), key)
    atomic_write_text(target, render(data))
    return {"path": str(target), **data["counts"]}


def summary_line(result: dict[str, Any]) -> str:
    return (f"{result['path']}: {result['shown']} lines to review ({result['changed']} changed, "
            f"{result['guarded']} kept by the guard, {result['failed']} failed; {result['with_confidence']} with "
            f"a confidence); {result['unchanged']} unchanged lines not listed")
