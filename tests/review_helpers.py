"""The demo document corrected without a model, for the review tests: a fixed backend that answers
each line of data/documents/ocr with its line in data/documents/truth (normalized like training),
and one line with an English sentence (the guard keeps that line's input: script change). Every
changed grapheme is then known from the two files; no timing, no model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bhasha_build.core.config import load_config
from bhasha_build.core.text import normalize_text
from bhasha_build.stages import correct as cr

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "data" / "documents"
GUARDED_LINE = ("book_hi.txt", 7)  # the backend answers this one in English
ENGLISH = "Ramu uncle looks after the library."


def cfg(*extra: str):
    return load_config(env={}, overrides=["correct.backoff_s=0", *extra])


class TruthBackend:
    kind = "truth"
    concurrent = True
    num_ctx = 4096

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        guarded = ""
        for ocr in sorted((DOCS / "ocr").glob("*.txt")):
            truth = (DOCS / "truth" / ocr.name).read_text(encoding="utf-8").splitlines()
            for no, line in enumerate(ocr.read_text(encoding="utf-8").splitlines(), 1):
                key = normalize_text(line, "auto")
                self.answers[key] = normalize_text(truth[no - 1], "auto")
                if (ocr.name, no) == GUARDED_LINE:
                    guarded = key
        self.answers[guarded] = ENGLISH

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": "truth-oracle"}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, text: str, max_tokens: int) -> cr.Reply:
        return cr.Reply(self.answers.get(text, text), "stop")

    def close(self) -> None:
        pass


def correct_demo(out: Path, confidence: bool = True) -> dict[str, Any]:
    """`correct` on the demo document into ``out`` (review.html included); with ``confidence``, the
    records get a made-up ``confidence`` (the field a parallel change adds), lowest on the longest
    line, so sorting has something to sort — then the page is rewritten from them."""
    from bhasha_build.stages.review import write_page

    summary = cr.correct(DOCS / "ocr", out, TruthBackend(), cfg(), progress=False)
    if confidence:
        records = [json.loads(x) for x in (out / "corrections.jsonl").read_text(encoding="utf-8").splitlines()]
        for rec in records:
            if rec["changed"] or rec["guarded"]:
                rec["confidence"] = round(max(0.05, 1 - len(rec["input"]) / 300 - 0.2 * rec["guarded"]), 3)
        (out / "corrections.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                               encoding="utf-8")
        write_page(out / "corrections.jsonl")
    return summary
