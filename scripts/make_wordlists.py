"""One-off: derive data/wordlists/{hi,bn,ta}.tsv from the wordfreq 3.1.1 wheel (PyPI, pinned by sha256).

The learning-signal check (bhasha_build/tools/learning_signal.py) composes synthetic clean lines from these
words; the lists are committed so that check needs neither the wheel nor msgpack. Re-run only to
change the lists:
    pip download --no-deps wordfreq==3.1.1 -d /tmp/wf && pip install --target /tmp/wf/site msgpack
    PYTHONPATH=/tmp/wf/site python scripts/make_wordlists.py /tmp/wf/wordfreq-3.1.1-py3-none-any.whl
Data licence: wordfreq's word lists are CC-BY-SA 4.0 (Robyn Speer); see data/wordlists/README.md.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import unicodedata
import zipfile
from pathlib import Path

import msgpack  # only this one-off needs it

WHEEL_SHA256 = "4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473"
BLOCKS = {"hi": (0x0900, 0x097F), "bn": (0x0980, 0x09FF), "ta": (0x0B80, 0x0BFF)}
TOP = 8000


def in_script(word: str, lang: str) -> bool:
    lo, hi = BLOCKS[lang]
    return bool(word) and all(lo <= ord(ch) <= hi or ch in "\u200c\u200d" for ch in word)


def main(wheel: str) -> None:
    digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256} (wordfreq 3.1.1)")
    out_dir = Path(__file__).resolve().parent.parent / "data" / "wordlists"
    with zipfile.ZipFile(wheel) as zf:
        for lang in BLOCKS:
            pack = msgpack.unpackb(gzip.decompress(zf.read(f"wordfreq/data/small_{lang}.msgpack.gz")), raw=False)
            rows: list[tuple[str, int]] = []
            seen: set[str] = set()
            for centibels, bucket in enumerate(pack[1:]):  # bucket i holds words of frequency 10^(-i/100)
                for word in bucket:
                    word = unicodedata.normalize("NFC", word)
                    if in_script(word, lang) and word not in seen:
                        seen.add(word)
                        rows.append((word, centibels))
            rows = rows[:TOP]
            text = "".join(f"{w}\t{cb}\n" for w, cb in rows)
            (out_dir / f"{lang}.tsv").write_text(text, encoding="utf-8")
            print(f"{lang}: {len(rows)} words")


if __name__ == "__main__":
    main(sys.argv[1])
