"""Rebuild data/samples/ from the clean lines in data/clean/ (deterministic).

    /tmp/venv0/bin/python data/make_samples.py

Per language: ~15% identity pairs (noisy == clean, for over-correction), hand-made realistic
errors on the lines listed in HAND, synthetic noise from bhasha_build.features.noise on the rest at a rate
drawn from RATES. Formats differ on purpose: hi.jsonl (canonical keys), bn.csv (aliases
id,ocr,gt,lang), ta.tsv (aliases id,input,target and no lang column: the file name gives "ta").
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from bhasha_build.features.noise import add_noise  # noqa: E402

SEED = 20240601
RATES = (0.03, 0.06, 0.1, 0.15)
IDENTITY_FRACTION = 0.15

# Hand-made OCR errors seen in real scans: (substring of one clean line, what OCR made of it), ...
HAND: dict[str, list[list[tuple[str, str]]]] = {
    "hi": [
        [("प्रधानमंत्री", "प्रधानमत्री"), ("शिक्षा", "शिक्शा")],
        [("८ डिग्री", "8 डिग्री"), ("दिल्ली", "दिल्लो")],
        [("गाड़ियाँ", "गाडियाँ"), ("त्योहारों", "त्यौहारों")],
        [("बड़न", "बडन"), ("उत्पात।", "उत्पात|")],
        [("सन् १९४७", "सन १९४७"), ("संग्रह", "सग्रह")],
        [("वसुधैव कुटुम्बकम्", "वसुधेव कुटुम्बकम")],
        [("विनयं,", "विनय,"), ("पात्रताम्।", "पात्रताम्|")],
        [("फलेषु कदाचन॥", "फलेपु कदाचन।।")],
        [("सोऽहम्", "सो५हम्")],
        [("खड़े,", "रवड़े,"), ("लागूँ पाँय॥", "लागूं पांय||")],
        [("क़िले", "किले"), ("नक़्क़ाशी", "नक्काशी")],
        [("ऊँट", "ऊट"), ("जहाज़", "जहाज")],
    ],
    "bn": [
        [("১৯১৩", "1913")],
        [("সাংবাদিক সম্মেলন", "সাবাদিক সন্মেলন")],
        [("দুর্গাপূজায়", "দুর্গাপুজায়"), ("তৈরি", "তেরি")],
        [("বেঙ্গল", "বেঙগল")],
        [("ভালোবাসি।", "ভালোবাসি|")],
        [("২টা ১০", "২টা 1০")],
        [("সিঁদুরে", "সিদুরে"), ("ডরায়।", "ডরায।")],
        [("বাঁশবনে", "বাশবনে")],
        [("ঝিঁঝিঁ", "ঝিঝি")],
        [("গঙ্গোপাধ্যায়", "গঙ্গোপাধ্যায")],
        [("ঘোষের", "যোষের")],
    ],
    "ta": [
        [("கசடறக் ", "கசடறக "), ("கற்றபின் ", "கற்றபின "), ("தக.", "தக")],
        [("எழுத்தெல்லாம்", "எழுத்தெல்லரம்"), ("முதற்றே", "முதற்றெ")],
        [("மீனாட்சி", "மீணாட்சி")],
        [("டிகிரி", "டிகிரீ")],
        [("சோழன்", "சொழன்")],
        [("குறட்பாக்கள்", "குறட்பாக்கள")],
        [("பனைமரம்", "பனைமாம்")],
        [("எண்ணித்", "எணணித்")],
        [("உடையார்.", "உடையார்")],
        [("கொடைக்கானல்", "ெகாடைக்கானல்")],
        [("ஒன்பது மணிக்கு", "ஒன்பதுமணிக்கு")],
    ],
}


def hand_noisy(lang: str, lines: list[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for edits in HAND[lang]:
        hits = [i for i, line in enumerate(lines) if edits[0][0] in line]
        assert len(hits) == 1, (lang, edits[0][0], hits)
        text = lines[hits[0]]
        for old, new in edits:
            assert old in text, (lang, old)
            text = text.replace(old, new, 1)
        out[hits[0]] = text
    return out


def pairs(lang: str) -> list[dict[str, str]]:
    lines = (ROOT / "clean" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
    hand = hand_noisy(lang, lines)
    rows = []
    for i, clean in enumerate(lines):
        rng = random.Random(f"{SEED}:{lang}:{i}")
        if i in hand:
            noisy, kind = hand[i], "hand"
        elif rng.random() < IDENTITY_FRACTION:
            noisy, kind = clean, "identity"
        else:
            noisy, kind = add_noise(clean, lang, rng.choice(RATES), rng), "synthetic"
        rows.append({"id": f"{lang}-{i + 1:03d}-{kind}", "lang": lang, "noisy": noisy, "clean": clean})
    return rows


def main() -> None:
    out = ROOT / "samples"
    out.mkdir(exist_ok=True)
    hi = pairs("hi")
    (out / "hi.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in hi), "utf-8")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "ocr", "gt", "lang"])
    for r in pairs("bn"):
        writer.writerow([r["id"], r["noisy"], r["clean"], r["lang"]])
    (out / "bn.csv").write_text(buf.getvalue(), "utf-8")

    lines = ["id\tinput\ttarget"] + [f"{r['id']}\t{r['noisy']}\t{r['clean']}" for r in pairs("ta")]
    (out / "ta.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
