"""The reviewer's formats: what review.html shows of a line, and what a reviewer's decision is.

One owner for both sides of the review loop (stages/review.py writes the page, the page exports
``review.jsonl``, stages/data.py and ``invoke correct --apply`` read it back):

    grapheme_diff(a, b) -> (spans_a, spans_b, insertions_a)
        The differing graphemes of ``a`` and ``b`` as [start, end) offsets in UTF-16 code units (what
        JavaScript's string indices count), runs of neighbours merged. Graphemes are
        ``core.metrics.graphemes`` (the CER unit) and the alignment is rapidfuzz's Levenshtein over
        them, the same edit distance the CER counts: a changed matra or nukta inside a conjunct
        highlights that whole conjunct, never half of it. ``insertions_a`` are the offsets in ``a``
        where ``b`` inserts something that replaces nothing.

    review.jsonl (one JSON object a line, written by the page's Export button):
        file, line   the corrected file (relative to the correct output folder) and its 1-based line
        noisy        the line's input text as corrections.jsonl recorded it
        corrected    what `correct` wrote for it
        decision     "accepted" | "rejected" | "edited"
        text         the text the reviewer wants there: corrected (accepted), noisy (rejected), or the
                     reviewer's own (edited)
        lang, id, confidence   copied from the record when it had them (optional)

    review_pair(fields) -> ReviewPair: a row's training pair: accepted and edited lines give
        ``noisy -> text``; rejected ones give ``noisy -> noisy`` (the input was right).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein

from bhasha_build.core.metrics import graphemes

DECISIONS = ("accepted", "rejected", "edited")
REVIEW_FIELDS = ("file", "line", "noisy", "corrected", "decision", "text")


class ReviewFormatError(ValueError):
    """A review row that is not a reviewer's decision (the words say which field and why)."""


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def grapheme_diff(a: str, b: str) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Changed grapheme runs of ``a`` and of ``b`` as [start, end) UTF-16 offsets, and the offsets
    in ``a`` where ``b`` inserts graphemes (see the module docstring)."""
    ga, gb = graphemes(a), graphemes(b)
    offsets_a, offsets_b = [0], [0]
    for g in ga:
        offsets_a.append(offsets_a[-1] + _utf16_len(g))
    for g in gb:
        offsets_b.append(offsets_b[-1] + _utf16_len(g))
    spans_a: list[list[int]] = []
    spans_b: list[list[int]] = []
    inserts: list[int] = []

    def add(spans: list[list[int]], start: int, end: int) -> None:
        if spans and spans[-1][1] == start:
            spans[-1][1] = end
        else:
            spans.append([start, end])

    for op in Levenshtein.opcodes(ga, gb):
        if op.tag == "equal":
            continue
        if op.src_end > op.src_start:
            add(spans_a, offsets_a[op.src_start], offsets_a[op.src_end])
        elif op.dest_end > op.dest_start:
            inserts.append(offsets_a[op.src_start])
        if op.dest_end > op.dest_start:
            add(spans_b, offsets_b[op.dest_start], offsets_b[op.dest_end])
    return spans_a, spans_b, sorted(set(inserts))


def changed_graphemes(text: str, spans: list[list[int]]) -> list[str]:
    """The graphemes of ``text`` inside ``spans`` (UTF-16 offsets), in order: what the page marks."""
    out, pos = [], 0
    for g in graphemes(text):
        end = pos + _utf16_len(g)
        if any(s <= pos and end <= e for s, e in spans):
            out.append(g)
        pos = end
    return out


@dataclass(frozen=True)
class ReviewPair:
    file: str
    line: int
    noisy: str
    corrected: str
    decision: str
    text: str  # what the line should read
    clean: str  # the training target: text, or noisy for a rejected line
    lang: str | None

    @property
    def provenance(self) -> str:
        return f"review {self.decision} {self.file}:{self.line}"


def is_review_row(fields: Mapping[str, Any]) -> bool:
    """A review.jsonl row (it has a ``decision``), not an OCR pair."""
    return "decision" in fields


def review_pair(fields: Mapping[str, Any]) -> ReviewPair:
    """The decision in a review.jsonl row, checked; raises ReviewFormatError naming the field."""
    for name in ("file", "noisy", "corrected", "decision", "text"):
        if name not in fields:
            raise ReviewFormatError(f"no field '{name}'")
        if not isinstance(fields[name], str):
            raise ReviewFormatError(f"{name} is {type(fields[name]).__name__}, expected string")
    line = fields.get("line")
    if not isinstance(line, int) or isinstance(line, bool) or line < 1:
        raise ReviewFormatError(f"line is {line!r}, expected a line number (1, 2, ...)")
    decision = fields["decision"]
    if decision not in DECISIONS:
        raise ReviewFormatError(f"decision is {decision!r}, expected one of {', '.join(DECISIONS)}")
    noisy, corrected, text = fields["noisy"], fields["corrected"], fields["text"]
    if decision == "accepted" and text != corrected:
        raise ReviewFormatError("decision is accepted but text is not the corrected text")
    if decision == "rejected" and text != noisy:
        raise ReviewFormatError("decision is rejected but text is not the noisy text")
    lang = fields.get("lang")
    return ReviewPair(fields["file"], line, noisy, corrected, decision, text,
                      noisy if decision == "rejected" else text,
                      lang.strip().lower() if isinstance(lang, str) and lang.strip() else None)
