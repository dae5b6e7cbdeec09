"""OCR-correction metrics: grapheme-cluster CER, code-point CER, WER, over-correction rate.

Why graphemes: an Indic "letter" as a reader sees it (क्ष, कि, স্ত্র) is several code points; a
code-point CER counts a lost virama or a wrong matra inside a conjunct as a fraction of a letter
on one side and a whole letter on the other, and rewards splitting conjuncts. Units here are
extended grapheme clusters from ``regex``'s ``\\X`` (the lock's regex: Unicode 15.1+ conjunct rules, so a
virama-joined conjunct such as क्ष is one unit, and অ্যা is one too); edit distance is ``rapidfuzz``
Levenshtein over those units. The units follow the installed ``regex``: an older one splits অ্যা in two
and scores the same Bengali rows differently (the H200 image's regex: eval split bn identity 0.1610 against
0.1606 here, 2026-12-03), so every scoring entry point calls ``check_unit_rules`` and reports carry
``unit_rules()``.

Conventions (documented because every choice changes numbers):
  * CER/WER = edit distance / reference length. An empty reference gives 0.0 when the hypothesis
    is empty too, else 1.0 (per row); corpus versions sum edits and reference lengths, so empty
    references only add their insertions.
  * ``score`` normalizes hypotheses to NFC and strips surrounding whitespace (a model's trailing
    newline is not an OCR error); references and inputs are taken as given (the data stage already
    wrote them NFC).
  * Over-correction rate: among rows whose input already equals the reference, the share the model
    changed. 0.0 when there are no such rows (``identity_rows`` in ``score`` says how many there were).

Knobs: ``unit`` ("grapheme" | "char") on the CER functions; nothing global.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import regex
from rapidfuzz.distance import Levenshtein

from bhasha_build.core.errors import BhashaError

Unit = Literal["grapheme", "char"]
_GRAPHEME = regex.compile(r"\X")
# Strings whose unit count the pinned rules fix (text, units): they differ between regex releases, so a
# machine that splits them scores other numbers for the same rows.
UNIT_PROBES = (("क्ष", 1), ("অ্যা", 1), ("ক্ষ্ম", 1), ("கொ", 1))


class MetricsError(BhashaError):
    """The installed grapheme rules are not the pinned ones: scores would not compare."""


def unit_rules() -> dict[str, Any]:
    """What the grapheme units follow here (recorded beside every score)."""
    return {"regex": getattr(regex, "__version__", "?"), "unicode": unicodedata.unidata_version,
            "probes_ok": all(len(graphemes(text)) == n for text, n in UNIT_PROBES)}


def check_unit_rules() -> dict[str, Any]:
    """unit_rules(), or MetricsError naming the first probe the installed regex splits differently."""
    for text, n in UNIT_PROBES:
        got = graphemes(text)
        if len(got) != n:
            raise MetricsError(
                f"grapheme units: {text!r} is {len(got)} units with regex {getattr(regex, '__version__', '?')} "
                f"(the pinned rules make it {n}); scores here would not compare with the committed ones: "
                "install requirements/lock.txt's regex (scripts/gpu-env.sh carries it)")
    return unit_rules()


def graphemes(text: str) -> list[str]:
    """Extended grapheme clusters of ``text`` (क्ष → one unit, कि → one unit)."""
    return _GRAPHEME.findall(text)


def words(text: str) -> list[str]:
    """Whitespace-separated words; runs of spaces count once (space errors show up in CER)."""
    return text.split()


def _units(text: str, unit: Unit) -> list[str]:
    if unit == "grapheme":
        return graphemes(text)
    if unit == "char":
        return list(text)
    raise ValueError(f"unit must be 'grapheme' or 'char', not {unit!r}")


def edit_distance(hyp: Sequence[str], ref: Sequence[str]) -> int:
    """Levenshtein distance between two unit sequences (lists of clusters, words or chars)."""
    # rapidfuzz compares sequences of hashables element-wise, so lists of clusters work directly.
    return int(Levenshtein.distance(hyp, ref))


def _rate(edits: int, ref_len: int, hyp_len: int) -> float:
    if ref_len == 0:
        return 0.0 if hyp_len == 0 else 1.0
    return edits / ref_len


def cer(hyp: str, ref: str, unit: Unit = "grapheme") -> float:
    """Character error rate of one line; ``unit`` = "grapheme" (default) or "char" (code points)."""
    h, r = _units(hyp, unit), _units(ref, unit)
    return _rate(edit_distance(h, r), len(r), len(h))


def wer(hyp: str, ref: str) -> float:
    """Word error rate of one line."""
    h, r = words(hyp), words(ref)
    return _rate(edit_distance(h, r), len(r), len(h))


def _check_lengths(*seqs: Sequence[Any]) -> None:
    if len({len(s) for s in seqs}) > 1:
        raise ValueError(f"length mismatch: {[len(s) for s in seqs]}")


def _corpus(hyps: Sequence[str], refs: Sequence[str], split: Any) -> float:
    _check_lengths(hyps, refs)
    edits = ref_len = 0
    for hyp, ref in zip(hyps, refs, strict=True):
        h, r = split(hyp), split(ref)
        edits += edit_distance(h, r)
        ref_len += len(r)
    return _ratio(edits, ref_len)


def corpus_cer(hyps: Sequence[str], refs: Sequence[str], unit: Unit = "grapheme") -> float:
    """Sum of edits over sum of reference lengths (long lines weigh more than in a mean of CERs)."""
    return _corpus(hyps, refs, lambda t: _units(t, unit))


def corpus_wer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    return _corpus(hyps, refs, words)


def over_correction_rate(inputs: Sequence[str], hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Share of already-correct inputs (input == ref) that the model changed."""
    _check_lengths(inputs, hyps, refs)
    correct = [(i, h) for i, h, r in zip(inputs, hyps, refs, strict=True) if i == r]
    if not correct:
        return 0.0
    return sum(1 for i, h in correct if h != i) / len(correct)


def normalize_hyp(text: str) -> str:
    """What ``score`` does to a model output before comparing (NFC, outer whitespace)."""
    return unicodedata.normalize("NFC", text).strip()


# A line's counts: grapheme edits, reference graphemes, char edits, reference chars, word edits, reference
# words, whether the input already equals the reference, and whether such a line was changed.
_Counts = tuple[int, int, int, int, int, int, int, int]


def _line_counts(inp: str, hyp: str, ref: str) -> _Counts:
    g_h, g_r = graphemes(hyp), graphemes(ref)
    c_h, c_r = list(hyp), list(ref)
    w_h, w_r = words(hyp), words(ref)
    identity = inp == ref
    return (edit_distance(g_h, g_r), len(g_r), edit_distance(c_h, c_r), len(c_r),
            edit_distance(w_h, w_r), len(w_r), int(identity), int(identity and hyp != inp))


def _ratio(edits: int, ref_len: int) -> float:
    """A corpus rate: summed edits over summed reference units (``_corpus`` and ``score``'s blocks)."""
    if ref_len == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / ref_len


def _block(counts: Sequence[_Counts]) -> dict[str, Any]:
    """One block of ``score`` from its lines' counts (sums of ints: the same numbers as scoring the block)."""
    ge, gl, ce, cl, we, wl, identity, changed = (sum(column) for column in zip(*counts, strict=True)) \
        if counts else (0,) * 8
    return {
        "rows": len(counts),
        "cer": _ratio(ge, gl),
        "cer_char": _ratio(ce, cl),
        "wer": _ratio(we, wl),
        "over_correction_rate": changed / identity if identity else 0.0,
        "identity_rows": identity,
    }


def _scored(rows: Sequence[Mapping[str, Any]], counts: Sequence[_Counts]) -> dict[str, Any]:
    by_lang: dict[str, list[_Counts]] = {}
    for row, line in zip(rows, counts, strict=True):
        by_lang.setdefault(str(row.get("lang", "?")), []).append(line)
    return {"overall": _block(counts), "by_lang": {lang: _block(c) for lang, c in sorted(by_lang.items())}}


def score(rows: Sequence[Mapping[str, Any]], hyps: Iterable[str]) -> dict[str, Any]:
    """Score hypotheses against rows ({"lang", "noisy", "clean"}): overall and per language.

    Returns {"overall": block, "by_lang": {lang: block}} where a block has cer (grapheme, corpus),
    cer_char, wer, over_correction_rate, rows and identity_rows. Each line is measured once and its
    counts summed into both of its blocks.
    """
    hyp_list = [normalize_hyp(h) for h in hyps]
    _check_lengths(rows, hyp_list)
    return _scored(rows, [_line_counts(r["noisy"], h, r["clean"]) for r, h in zip(rows, hyp_list, strict=True)])


def identity_baseline(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The do-nothing model (hyp = noisy input): the bar a trained model must beat."""
    return score(rows, [r["noisy"] for r in rows])


def identity_baselines(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``identity_baseline`` of each group (the data stage's all / train / eval), each distinct
    (noisy, clean) measured once however many groups and rows hold it."""
    seen: dict[tuple[str, str], _Counts] = {}

    def counts(row: Mapping[str, Any]) -> _Counts:
        key = (row["noisy"], row["clean"])
        if key not in seen:
            seen[key] = _line_counts(row["noisy"], normalize_hyp(row["noisy"]), row["clean"])
        return seen[key]

    return {name: _scored(rows, [counts(r) for r in rows]) for name, rows in groups.items()}


# ---------------------------------------------------------------- end marks
END_MARKS = "।॥.?!|"  # what ends a line as a sentence (OCR's `|` for the danda included)
_CLOSERS = "\"'”’»)]"
DANDA = "।"


def end_mark(text: str) -> str:
    """The line's final sentence mark: its last character when it is one of END_MARKS, after outer
    whitespace and closing quotes/brackets; "" when the line has none."""
    core = text.strip().rstrip(_CLOSERS).rstrip()
    return core[-1] if core and core[-1] in END_MARKS else ""


def end_mark_changes(rows: Sequence[Mapping[str, Any]], hyps: Iterable[str]) -> dict[str, Any]:
    """End marks, counted apart on lines whose truth ends in the danda (`danda`) and on the others
    (`other`): a model trained on Hindi software text (sentences end in '.') may turn a book's '।' into
    '.'. Per group: rows; changed (the output's end mark is not the input's); broken (the input had the
    truth's mark, the output has not); fixed (the reverse); and `changes`, "input→output" marks with their
    counts ("" is no mark). Outputs are compared as `score` compares them (normalize_hyp)."""
    groups: dict[str, dict[str, Any]] = {g: {"rows": 0, "changed": 0, "broken": 0, "fixed": 0, "changes": {}}
                                         for g in ("danda", "other")}
    hyp_list = [normalize_hyp(h) for h in hyps]
    _check_lengths(rows, hyp_list)
    for row, hyp in zip(rows, hyp_list, strict=True):
        truth, before, after = end_mark(row["clean"]), end_mark(row["noisy"]), end_mark(hyp)
        group = groups["danda" if truth == DANDA else "other"]
        group["rows"] += 1
        if after != before:
            group["changed"] += 1
            key = f"{before}→{after}"
            group["changes"][key] = group["changes"].get(key, 0) + 1
        group["broken"] += before == truth != after
        group["fixed"] += before != truth == after
    for group in groups.values():
        group["changes"] = dict(sorted(group["changes"].items(), key=lambda kv: (-kv[1], kv[0])))
    return groups
