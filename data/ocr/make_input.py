"""The clean lines behind data/ocr/*.jsonl: each language's hand-written lines of data/clean, then 150
lines composed from data/wordlists (the learning-signal check's composer, seeded per language).
Deterministic; rebuild with `python data/ocr/make_input.py`, then the pairs with `invoke ocr-pairs`
(see data/README.md)."""

from __future__ import annotations

import random
from pathlib import Path

from bhasha_build.tools.learning_signal import LANGS, clean_lines

COMPOSED = 150

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "input"
    out.mkdir(exist_ok=True)
    for lang in LANGS:
        lines = clean_lines(lang, COMPOSED, random.Random(f"ocr-samples-{lang}"))
        (out / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(out / f"{lang}.txt", len(lines))
