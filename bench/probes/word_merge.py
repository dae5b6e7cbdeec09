"""Probe (2026-12-03, 8th session, 2-core VM): a word-level merge in place of the line guard, on the eval
split's and dev sets' predictions of a screen (never held-out rows).

Per row: the line guard's structural rules (core/guard.accept with no confidence threshold) refuse runaway
replies; otherwise the reply and the input are aligned word by word (difflib) and a changed word is served
only when it is a punctuation-only change (`p`) or turns a word the lexicon lacks into one it has (`nw`);
`seg`: a split/merge block too when every new word is known and some old one was not; `oov`: also
out-of-lexicon -> out-of-lexicon changes. Prints grapheme CER and over-correction per set beside identity
and the line guard as served (the row's `gguf_guarded`); `--json OUT` writes them.

Run: .venv/bin/python bench/probes/word_merge.py PRED.jsonl... [--json OUT]
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

from bhasha_build.core.baselines import _core, lexicons
from bhasha_build.core.config import load_config
from bhasha_build.core.guard import CUT_REASON, accept
from bhasha_build.core.metrics import corpus_cer, over_correction_rate
from bhasha_build.tools.quality import _read_rows, _row_lang

MODES = {"nw+p": {}, "nw": {"punct": False}, "nw+p+seg": {"seg": True}, "nw+p+oov": {"oov": True}}


def merge(noisy: str, reply: str, lex: object, mode: dict[str, bool]) -> str:
    """The input with the reply's word changes that `mode` allows."""
    a, b = noisy.split(), reply.split()
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        src, dst = a[i1:i2], b[j1:j2]
        if op == "equal":
            out += src
        elif op == "replace" and len(src) == len(dst):
            for s, d in zip(src, dst, strict=True):
                cs, cd = _core(s), _core(d)
                take = (cs == cd and mode.get("punct", True)) or (
                    lex is not None and cs not in lex and (cd in lex or bool(mode.get("oov"))))
                out.append(d if take else s)
        else:  # split, merge, insert, delete
            known = lex is not None and dst and all(_core(d) in lex for d in dst)
            out += dst if mode.get("seg") and known and any(_core(s) not in lex for s in src) else src
    return " ".join(out)


def served(rows: list[dict], mode: dict[str, bool], guard_cfg: object, known: dict) -> list[str]:
    texts = []
    for r in rows:
        lang = _row_lang(r)
        line = accept(r["noisy"], r["gguf"], lang, guard_cfg, cut=r.get("gguf_guard") == CUT_REASON,
                      confidence=None, min_confidence=0.0)
        refused = line.text == r["noisy"] and r["gguf"] != r["noisy"]
        texts.append(r["noisy"] if refused else merge(r["noisy"], r["gguf"], known.get(lang), mode))
    return texts


def main(argv: list[str]) -> None:
    out_json = None
    if "--json" in argv:
        i = argv.index("--json")
        out_json = argv[i + 1]
        del argv[i : i + 2]
    guard_cfg = load_config(None, profile="real-errors-qwen").guard
    known, _ = lexicons(["bn", "hi", "ta"])
    results: dict[str, dict] = {}
    for file in argv:
        rows = _read_rows(file)
        groups: dict[str, list[dict]] = {}
        for r in rows:
            groups.setdefault(r.get("set") or r.get("lang"), []).append(r)
        print(Path(file).name)
        for name, group in [("ALL", rows), *sorted(groups.items())]:
            noisy, clean = [r["noisy"] for r in group], [r["clean"] for r in group]
            guarded = [r["gguf_guarded"] for r in group]
            entry = {"identity": round(corpus_cer(noisy, clean), 4),
                     "line_guard": [round(corpus_cer(guarded, clean), 4),
                                    round(over_correction_rate(noisy, guarded, clean), 4)]}
            for label, mode in MODES.items():
                texts = served(group, mode, guard_cfg, known)
                entry[label] = [round(corpus_cer(texts, clean), 4), round(over_correction_rate(noisy, texts, clean), 4)]
            print(" ", name, json.dumps(entry))
            results.setdefault(Path(file).name, {})[name] = entry
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
