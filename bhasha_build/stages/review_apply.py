"""`invoke correct --apply review.jsonl`: the reviewer's decisions written into the corrected files.

    apply_review(review, out, cfg) -> {"files", "lines", "rewritten", "already", "accepted", ...}

``review`` is a review.html export (core/review.py); ``out`` the `correct` output folder it was made
from (its ``file`` fields are relative to it). Each decided line of a corrected file is set to the
decision's ``text`` — accepted: what `correct` wrote, rejected: the line's input, edited: the
reviewer's text — through stages/correct's own layout-keeping renderer (``Planner`` + ``render_line``),
so indentation, blank lines, page breaks, line endings, a BOM and JSONL rows' other fields stay
byte for byte as they were (JSONL rows get the text as ``corrected``).

Safety: every decision is checked before anything is written — the line must still hold the
corrected text the reviewer saw (or already the decided text: applying twice changes nothing); a
file that was edited or corrected again since is refused with file:line, and then no file is
written. Files are replaced atomically. When the file's `correct` journal recorded the file as
complete, it now records the reviewed bytes, so rerunning the same `correct` keeps the decisions
instead of re-rendering the model's output.

Knobs: data.zwj_policy (how correct segments a line; the text itself is written as decided).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.fsutil import atomic_write_bytes, jsonl_lines, jsonl_objects
from bhasha_build.core.review import DECISIONS, ReviewFormatError, ReviewPair, review_pair
from bhasha_build.stages import correct as cr
from bhasha_build.stages.review import ReviewError


class _WholeLines:
    """A token counter under which every line fits: the planner then cuts a line only at its layout
    (whitespace, form feeds), never into pieces; nothing is ever sent."""

    kind = "review"
    concurrent = False
    num_ctx = 1 << 30

    def count_tokens(self, text: str) -> int:
        return 1


def read_review(path: Path) -> list[ReviewPair]:
    """The decisions in a review.jsonl; a bad row is one error naming file:line and the reason."""
    pairs: dict[tuple[str, int], ReviewPair] = {}
    for no, fields in jsonl_objects(path, ReviewError, "the review.jsonl exported from review.html"):
        try:
            pair = review_pair(fields)
        except ReviewFormatError as exc:
            raise ReviewError(f"{path}:{no}: {exc}") from None
        pairs[(pair.file, pair.line)] = pair  # a later decision on the same line wins
    if not pairs:
        raise ReviewError(f"{path}: no decisions in it")
    return list(pairs.values())


def _target(out: Path, rel: str) -> Path:
    target = out / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not target.resolve().is_relative_to(out.resolve()):
        raise ReviewError(f"{rel}: not a file inside {out}")
    if target.is_symlink() or not target.is_file():
        raise ReviewError(f"{target}: no corrected file there (is --out the folder `correct` wrote?)")
    return target


def _plan(out: Path, rel: str, decisions: list[ReviewPair], cfg: BuildConfig) -> tuple[bytes, bytes, Counter[str]]:
    """(old bytes, new bytes, counts) of one corrected file with its decisions applied; raises on a
    line that no longer holds what the reviewer saw."""
    target = _target(out, rel)
    doc = cr.Planner(cfg, _WholeLines(), None).plan(target, rel)  # type: ignore[arg-type]
    finals = {p.index: p.original for p in doc.pieces}
    by_line: dict[int, list[cr.Piece]] = {}
    for piece in doc.pieces:
        by_line.setdefault(piece.line, []).append(piece)
    counts: Counter[str] = Counter()
    for pair in sorted(decisions, key=lambda p: p.line):
        where = f"{target}:{pair.line}"
        if pair.line > len(doc.lines):
            raise ReviewError(f"{where}: the file has only {len(doc.lines)} lines")
        line, pieces = doc.lines[pair.line - 1], by_line.get(pair.line, [])
        if line.row is not None:  # JSONL: the row's corrected field is the text; its noisy the layout
            current, seen = str(line.row.get("corrected", "")).strip(), pair.corrected.strip()
        else:
            current, seen = cr.line_text(line, {p.index: p.original for p in pieces}), pair.corrected
        if current == pair.text:
            counts["already"] += 1
        elif current != seen:
            raise ReviewError(f"{where}: the line no longer holds the corrected text the reviewer saw "
                              "(edited or corrected again since?); nothing applied")
        elif len(pieces) != 1:
            raise ReviewError(f"{where}: a line with a page break (form feed) inside; apply this decision by hand")
        else:
            finals[pieces[0].index] = pair.text
            counts["rewritten"] += 1
        counts[pair.decision] += 1
    old = target.read_bytes()
    new = b"".join(cr.render_line(line, finals) for line in doc.lines)
    if doc.kind == "text" and cr.structure(new) != cr.structure(old):
        raise ReviewError(f"{target}: the decisions would change the file's layout (a line break in a text?); "
                          "nothing applied")
    return old, new, counts


def _record_in_journal(out: Path, rel: str, old: bytes, new: bytes) -> None:
    """Where correct's journal recorded ``old`` as the complete output, record ``new`` instead."""
    path = cr.CorrectOutput(out).journal(rel)
    if not path.is_file():
        return
    lines = [ln for ln in jsonl_lines(path.read_text(encoding="utf-8")) if ln]
    header = cr._loads(lines[0]) if lines else None
    if not header or "key" not in header:
        return
    journal = cr.Journal(path, header["key"])
    try:
        if journal.written == hashlib.sha256(old).hexdigest():
            journal.mark_written(hashlib.sha256(new).hexdigest(), complete=True)
    finally:
        journal.close()


def apply_review(review: str | Path, out: str | Path, cfg: BuildConfig) -> dict[str, Any]:
    """Apply every decision of ``review`` to the corrected files in ``out`` (all checked first)."""
    review, out = Path(review), Path(out)
    if not out.is_dir():
        raise ReviewError(f"{out}: no such `correct` output folder")
    by_file: dict[str, list[ReviewPair]] = {}
    for pair in read_review(review):
        by_file.setdefault(pair.file, []).append(pair)
    planned = {rel: _plan(out, rel, pairs, cfg) for rel, pairs in sorted(by_file.items())}
    totals: Counter[str] = Counter()
    for rel, (old, new, counts) in planned.items():
        totals.update(counts)
        if new != old:
            target = out / rel
            atomic_write_bytes(target, new)
            _record_in_journal(out, rel, old, new)
            totals["files_rewritten"] += 1
    return {"review": str(review), "out": str(out), "files": len(planned),
            "files_rewritten": totals["files_rewritten"], "lines": sum(len(p) for p in by_file.values()),
            "rewritten": totals["rewritten"], "already": totals["already"],
            **{d: totals[d] for d in DECISIONS}}


def summary_line(result: dict[str, Any]) -> str:
    return (f"{result['lines']} decisions ({result['accepted']} accepted, {result['edited']} edited, "
            f"{result['rejected']} rejected) in {result['files']} files: {result['rewritten']} lines rewritten, "
            f"{result['already']} already as decided; {result['files_rewritten']} files written in {result['out']}")
