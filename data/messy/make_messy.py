"""Write data/messy/messy.jsonl and messy.csv: one bad row of every kind, plus valid rows.

    /tmp/venv0/bin/python data/messy/make_messy.py

Written as bytes on purpose (a UTF-8 BOM, CRLF endings, invalid UTF-8, lone surrogates). The
expected outcome of every line is in EXPECTED (tests/test_data.py checks it):
"keep" (valid, kept), "dup" (exact duplicate after normalization), "chat_unused" (a valid chat
row, unused while data.mix_ratio is 0), or the reject code.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def j(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


HI_CLEAN = "कल रात तेज़ बारिश के कारण शहर की कई सड़कों पर पानी भर गया।"
HI_NOISY = "कल रात तेज बारिश के कारण शहर की कई सडकों पर पानी भर गया|"
BN_CLEAN = "কলকাতা শহরে আজ সকাল থেকে বৃষ্টি হচ্ছে।"
TA_CLEAN = "தமிழ்நாட்டின் தலைநகரம் சென்னை ஆகும்."

# (line bytes, line ending, expected outcome)
JSONL: list[tuple[bytes, bytes, str]] = [
    (
        b"\xef\xbb\xbf" + j({"id": "ok-1", "lang": "hi", "noisy": HI_NOISY, "clean": HI_CLEAN}),
        b"\r\n",
        "keep",
    ),
    (j({"lang": "bn", "noisy": "কলকাতা শহরে আজ সকাল থেকে বৃষটি হচছে।", "clean": BN_CLEAN}), b"\r\n", "keep"),
    (j({"ocr": "தமிழ்நாட்டின் தலைநகரம் சென்னை ஆகும்", "gt": TA_CLEAN, "language": "ta"}), b"\n", "keep"),
    (
        b'{"lang": "hi", "noisy": "\xe0\xa4\x95\xe0\xa4\xb2 \xe0\xa4\xb0\xe0\xa4\xbe\xe0\xa4\xa4", "clean": ',
        b"\n",
        "malformed_json",
    ),
    (b'{"lang": "hi", "noisy": "\xe0\xa4\x95\xff\xfe", "clean": "\xe0\xa4\x95"}', b"\n", "invalid_utf8"),
    # A JSON escape of a lone surrogate decodes but can never be written back as UTF-8.
    (
        j({"lang": "hi", "noisy": "SURROGATE broken", "clean": HI_CLEAN}).replace(b"SURROGATE", b"\\ud800"),
        b"\n",
        "invalid_utf8",
    ),
    (j({"lang": "hi", "noisy": HI_NOISY, "clean": ""}), b"\n", "empty_field"),
    (j({"lang": "bn", "noisy": "   \u3000 ", "clean": BN_CLEAN}), b"\n", "empty_field"),
    (
        j(
            {
                "lang": "hi",
                "noisy": "The quick brown fox jumps over the dog.",
                "clean": "The quick brown fox.",
            }
        ),
        b"\n",
        "wrong_script",
    ),
    (j({"lang": "ta", "noisy": HI_NOISY, "clean": HI_CLEAN}), b"\n", "wrong_script"),
    (
        j({"lang": "hi", "noisy": "\ue0a4\ue0b2 \ue0c0\ue0d1 legacy", "clean": HI_CLEAN}),
        b"\n",
        "wrong_script",
    ),
    (j({"lang": "hi", "noisy": HI_NOISY * 60, "clean": HI_CLEAN * 60}), b"\n", "too_long"),
    (
        b"\xef\xbb\xbf" + j({"id": "ok-1-again", "lang": "hi", "noisy": HI_NOISY, "clean": HI_CLEAN}),
        b"\n",
        "dup",
    ),
    (j({"lang": "hi", "noisy": "कल रात\u0007 तेज बारिश", "clean": "कल रात तेज़ बारिश"}), b"\n", "control_chars"),
    (j({"lang": "hi", "noisy": "कल रात तेज बारिश", "clean": "कल रात\tतेज़ बारिश"}), b"\n", "control_chars"),
    (j({"lang": "hi", "noisy": "कल\u200b रात तेज बारिश", "clean": "कल रात तेज़ बारिश"}), b"\n", "control_chars"),
    (j({"lang": "hi", "noisy": HI_NOISY}), b"\n", "missing_field"),
    (j({"noisy": "কলকাতা শহরে", "clean": "কলকাতা শহরে"}), b"\n", "missing_field"),
    (j({"lang": "xx", "noisy": HI_NOISY, "clean": HI_CLEAN}), b"\n", "unknown_lang"),
    (j({"lang": "hi", "noisy": HI_NOISY, "clean": 123}), b"\n", "wrong_type"),
    (j(["hi", HI_NOISY, HI_CLEAN]), b"\n", "malformed_json"),
    (b"this is not json at all", b"\n", "malformed_json"),
    (
        j(
            {
                "messages": [
                    {"role": "user", "content": "What is OCR?"},
                    {"role": "assistant", "content": "Optical character recognition."},
                ]
            }
        ),
        b"\n",
        "chat_unused",
    ),
    (j({"messages": [{"role": "user", "content": "Only a question?"}]}), b"\n", "malformed_chat"),
    (j({"messages": "not a list"}), b"\n", "malformed_chat"),
    # Nukta: precomposed ज़ (U+095B) on one side, ज + ़ on the other → identical after NFC.
    (j({"lang": "hi", "noisy": "\u095bमीन पर बैठो।", "clean": "\u091c\u093cमीन पर बैठो।"}), b"\n", "keep"),
    (j({"lang": "hi", "noisy": "\u091c\u093cमीन पर बैठो।", "clean": "\u095bमीन पर बैठो।"}), b"\n", "dup"),
    # ZWJ/ZWNJ are kept by default (half forms).
    (
        j(
            {
                "lang": "hi",
                "noisy": "क्\u200dष और क्\u200cष अलग दिखते हैं।",
                "clean": "क्\u200dष और क्\u200cष अलग दिखते हैं।",
            }
        ),
        b"\n",
        "keep",
    ),
    # Danda vs | and Indic vs ASCII digits are what the model learns: never normalized away.
    (j({"lang": "hi", "noisy": "दाम 40 रुपये है|", "clean": "दाम ४० रुपये है।"}), b"\n", "keep"),
    (b"", b"\n", "blank"),
    (b"   ", b"\r\n", "blank"),
    (j({"lang": "ta", "noisy": "நீரின்றி அமையாது உலகு", "clean": "நீரின்றி அமையாது உலகு."}), b"\r\n", "keep"),
]

CSV: list[tuple[bytes, str]] = [
    (b"\xef\xbb\xbfid,ocr,gt,lang", "header"),
    ('c1,কলকাতা শহরে আজ সকাল,"কলকাতা শহরে আজ সকাল",bn'.encode(), "keep"),
    ('c2,"সে প্রতিদিন ভোরে উঠে, বই পড়ে","সে প্রতিদিন ভোরে উঠে, বই পড়ে।",bn'.encode(), "keep"),
    (b"c3,only three,fields", "malformed_csv"),
    ('c4,"বই"পড়ে,বই পড়ে,bn'.encode(), "malformed_csv"),
    (b"c5,\xe0\xa6\x95\xc3\x28,\xe0\xa6\x95,bn", "invalid_utf8"),
    ("c6,,কলকাতা,bn".encode(), "empty_field"),
    ('c7,কলকাতা শহরে আজ সকাল,"কলকাতা শহরে আজ সকাল",bn'.encode(), "dup"),
]


def expected(kind: str) -> dict[str, int]:
    rows = JSONL if kind == "jsonl" else [(b, b"", e) for b, e in CSV]
    out: dict[str, int] = {}
    for _, _, outcome in rows:
        out[outcome] = out.get(outcome, 0) + 1
    return out


def main() -> None:
    (HERE / "messy.jsonl").write_bytes(b"".join(line + end for line, end, _ in JSONL))
    (HERE / "messy.csv").write_bytes(b"".join(line + b"\r\n" for line, _ in CSV))
    print(f"wrote {HERE / 'messy.jsonl'} and {HERE / 'messy.csv'}")


if __name__ == "__main__":
    main()
