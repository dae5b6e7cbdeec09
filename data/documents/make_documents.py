"""Rebuild data/documents/ (deterministic): sample OCR documents for `invoke correct` and their truth.

    python data/documents/make_documents.py

ocr/    what an OCR engine hands a user: book_hi.txt (3 pages, LF, a form feed after each page as
        Tesseract writes it, an indented title, blank lines between paragraphs, one paragraph
        written as a single long line, precomposed nukta letters U+0958/U+095B as some OCR
        pipelines emit) and letter_bn.txt (2 pages, CRLF line endings, the page break a form feed
        at the start of the next page, no final newline).
truth/  the same documents as they should read (same lines, same layout): `--reference` for correct.

The clean text was written for this project. The OCR errors are the noise model's
(bhasha_build.features.noise, seeded) plus a few hand-made ones (danda read as |, lost nukta).
"""

from __future__ import annotations

import random
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parents[1]))

from bhasha_build.features.noise import add_noise  # noqa: E402

SEED = 20261130
RATE = 0.06

# Pages of (indent, text) lines; "" is a blank line. Each page ends with a form feed.
BOOK_HI = [
    [
        ("        ", "गाँव का पुस्तकालय"),
        ("", ""),
        ("", "हमारे गाँव के बीच में एक छोटा सा पुस्तकालय है।"),
        ("", "उसकी अलमारियों में पुरानी किताबें और अख़बार रखे रहते हैं।"),
        ("", "हर शाम बच्चे वहाँ आकर कहानियाँ पढ़ते हैं।"),
        ("", ""),
        ("", "पुस्तकालय की देखभाल रामू काका करते हैं।"),
        ("", "वे हर किताब पर सफ़ेद काग़ज़ का आवरण चढ़ाते हैं।"),
    ],
    [
        ("", "बरसात के दिनों में छत से पानी टपकने लगता था।"),
        ("", "तब गाँव वालों ने मिलकर नई छत बनवाई।"),
        ("", ""),
        ("", "अब वहाँ एक कंप्यूटर भी है, जिस पर पुरानी पोथियों को स्कैन किया जाता है। स्कैन किए गए पन्नों "
             "को ओसीआर से पढ़ा जाता है, और फिर हर पंक्ति को ध्यान से जाँचा जाता है, क्योंकि मशीन कई अक्षर "
             "ग़लत पढ़ लेती है। इस तरह गाँव की पुरानी कहानियाँ आने वाली पीढ़ियों के लिए बची रहेंगी।"),
        ("", ""),
        ("    ", "— पृष्ठ २ —"),
    ],
    [
        ("", "ज़िले के अधिकारी भी यह काम देखने आए।"),
        ("", "उन्होंने कहा कि ऐसे पुस्तकालय हर गाँव में होने चाहिए।"),
    ],
]

LETTER_BN = [
    [
        ("", "প্রিয় বন্ধু,"),
        ("", ""),
        ("", "অনেক দিন তোমার কোনো চিঠি পাইনি।"),
        ("", "আমাদের গ্রামে এবার খুব ভালো বৃষ্টি হয়েছে।"),
        ("", "মাঠে মাঠে সবুজ ধান দুলছে।"),
    ],
    [
        ("", "মা তোমাকে আশীর্বাদ জানিয়েছেন।"),
        ("", ""),
        ("  ", "ইতি, তোমার বন্ধু"),
    ],
]

# Hand-made errors on top of the noise model: (clean substring, OCR's version).
HAND = {"सफ़ेद": "सफेद", "हैं।": "हैं|", "किताबें": "क़िताबें"}


def _noisy(text: str, lang: str, rng: random.Random) -> str:
    if not any(ch.isalpha() for ch in text):
        return text
    out = add_noise(text, lang, RATE, rng)
    for clean, ocr in HAND.items():
        out = out.replace(clean, ocr)
    return out


def _precompose(text: str) -> str:
    """Some OCR pipelines emit the precomposed nukta letters (U+0958-U+095F) NFC never produces."""
    return text.replace("\u091c\u093c", "\u095b").replace("\u0915\u093c", "\u0958")


def render(pages: list[list[tuple[str, str]]], newline: str, tesseract: bool, line_fn) -> str:
    """Tesseract's layout: every page ends with a newline and a form feed (so the next page's first
    line starts with it and the file ends on it); otherwise pages are joined by a form feed at the
    start of the next page and the file has no final newline."""
    texts = [newline.join(indent + line_fn(text) if text else "" for indent, text in page) for page in pages]
    if tesseract:
        return "".join(text + newline + "\f" for text in texts)
    return (newline + "\f").join(texts)


def main() -> None:
    rng = random.Random(SEED)
    docs = {
        "book_hi.txt": (BOOK_HI, "hi", "\n", True),
        "letter_bn.txt": (LETTER_BN, "bn", "\r\n", False),
    }
    for name, (pages, lang, newline, tesseract) in docs.items():
        truth = render(pages, newline, tesseract, lambda t: unicodedata.normalize("NFC", t))
        ocr = render(pages, newline, tesseract, lambda t, lang=lang: _precompose(_noisy(t, lang, rng)))
        for folder, text in (("truth", truth), ("ocr", ocr)):
            (ROOT / folder).mkdir(exist_ok=True)
            (ROOT / folder / name).write_bytes(text.encode("utf-8"))
        print(f"{name}: {len(truth.splitlines())} lines")


if __name__ == "__main__":
    main()
