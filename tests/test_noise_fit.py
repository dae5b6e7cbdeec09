"""The noise model fitted to real OCR errors: alignment events, fitting the shipped Tesseract pairs,
sampling, and how close sampled noise comes to held-out real errors (printed: pytest -s)."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest

from bhasha_build.features import noise_fit as nf
from bhasha_build.features.noise import add_noise, noise_file

OCR = Path(__file__).resolve().parents[1] / "data" / "ocr"


@pytest.fixture(scope="module")
def shipped() -> list[dict]:
    return [row for lang in ("hi", "bn", "ta") for row in nf.read_pairs(OCR / f"{lang}.jsonl")]


@pytest.mark.parametrize(("clean", "ocr", "expected"), [
    ("कमल", "कमल", []),
    ("कमल", "कनल", [("sub", 1, "म", "न")]),
    ("कमल।", "कमल", [("del", 3, "।", "")]),
    ("कमल", "कमल.", [("ins", 3, "", ".")]),
    ("क्षमा", "कषमा", [("split", 0, "क्ष", "कष")]),
    ("रवि", "खि", [("merge", 0, "रवि", "खि")]),
])
def test_events_name_each_edit(clean: str, ocr: str, expected: list) -> None:
    assert nf.events(clean, ocr) == expected


def test_joiners_after_viramas_are_their_own_rule() -> None:
    ocr, clean, emitted, exposure = nf.split_joiners("தமிழ்\u200c நாடு க்\u200cஷ", "தமிழ் நாடு க்ஷ")
    assert (ocr, clean) == ("தமிழ் நாடு க்ஷ", "தமிழ் நாடு க்ஷ")
    assert emitted == {"final:\u200c": 1, "medial:\u200c": 1} and exposure == {"final": 1, "medial": 1}
    # a joiner the clean text has too is text, not an emitted one
    assert not nf.split_joiners("क्\u200dष", "क्\u200dष")[2]


def test_fit_is_small_versioned_and_reads_back(shipped: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    result = nf.fit_file(OCR / "ta.jsonl", out)
    model = nf.load_model(out)
    assert model["format"] == nf.FORMAT and model["version"] == nf.VERSION and set(model["langs"]) == {"ta"}
    assert out.stat().st_size < 100_000 and result["langs"]["ta"]["pairs"] == len(nf.read_pairs(OCR / "ta.jsonl"))
    ta = model["langs"]["ta"]
    final_exposure, final_zwnj = ta["joiners"]["final:\u200c"]
    assert final_zwnj / final_exposure > 0.9  # Tesseract's Tamil ZWNJ after word-final pullis, fitted
    assert 0.0 in ta["line_event_rates"] and max(ta["line_event_rates"]) > 0.05  # error-free and damaged lines
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**model, "version": 99}))
    with pytest.raises(nf.NoiseModelError, match="version 99"):
        nf.load_model(bad)
    bad.write_text("{}")
    with pytest.raises(nf.NoiseModelError, match="not a bhasha-noise-model"):
        nf.load_model(bad)


def test_samples_are_seeded_nfc_and_add_the_tamil_zwnj(shipped: list[dict]) -> None:
    model = nf.fit(shipped)
    lines = [r["clean"] for r in shipped if r["lang"] == "ta"][:60]
    a = [nf.sample(model, t, "ta", random.Random(f"x{i}")) for i, t in enumerate(lines)]
    assert a == [nf.sample(model, t, "ta", random.Random(f"x{i}")) for i, t in enumerate(lines)]
    assert all(s == unicodedata.normalize("NFC", s) for s in a)
    assert sum("\u0bcd\u200c" in s for s in a) > 0.8 * sum("\u0bcd " in t or t.endswith("\u0bcd") for t in lines)
    with pytest.raises(nf.NoiseModelError, match="no language 'xx'"):
        nf.sample(model, "x", "xx", random.Random(0))


def test_noise_file_samples_from_a_fitted_model(tmp_path: Path) -> None:
    nf.fit_file(OCR / "hi.jsonl", tmp_path / "m.json")
    clean = tmp_path / "clean.txt"
    clean.write_text("\n".join(r["clean"] for r in nf.read_pairs(OCR / "hi.jsonl")[:80]) + "\n", encoding="utf-8")
    a = noise_file(clean, tmp_path / "a.jsonl", lang="hi", seed=3, model=tmp_path / "m.json")
    noise_file(clean, tmp_path / "b.jsonl", lang="hi", seed=3, model=tmp_path / "m.json")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a["model"] and a["requested_rate"] is None and 0 < a["measured_cer"] < 0.2
    assert 0.3 < a["identity_rows"] / a["rows"] < 0.95  # real OCR leaves most Hindi lines alone


def test_fitted_noise_is_closer_to_held_out_real_errors_than_rules(shipped: list[dict]) -> None:
    """Fit on 80% of the shipped Tesseract pairs, sample noise for the other 20%'s clean lines and compare
    with their real OCR output, next to the rule-based noise at the same CER (pytest -s prints the table)."""
    fit_rows, held = nf.holdout_split(shipped, 0.2)
    report = nf.compare(nf.fit(fit_rows), held, seed=1, references={"rule_based": add_noise})
    print("\n" + nf.format_report({"heldout": "20% of data/ocr by sha256(clean)", "langs": report}))
    for lang, entry in report.items():
        fitted, rules = entry["fitted"]["distance_to_real"], entry["rule_based"]["distance_to_real"]
        assert fitted["line_cer_hist_tv"] < rules["line_cer_hist_tv"], lang
        assert fitted["event_share_tv"] < rules["event_share_tv"], lang
        assert fitted["line_cer_hist_tv"] < 0.2 and abs(fitted["cer_diff"]) < 0.03, lang


def test_pairs_with_unicode_line_separators_read_back(tmp_path: Path) -> None:
    """JSON leaves U+2028 / U+0085 unescaped; a pairs file is split on "\\n" only, so such a row is
    one pair, not two broken lines (str.splitlines() breaks there)."""
    from bhasha_build.core.fsutil import atomic_write_jsonl

    rows = [{"lang": "hi", "noisy": "क\u2028ख", "clean": "कख"}, {"lang": "hi", "noisy": "ग\x85", "clean": "ग"}]
    atomic_write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert [(r["noisy"], r["clean"]) for r in nf.read_pairs(tmp_path / "pairs.jsonl")] == [
        ("क\u2028ख", "कख"), ("ग\x85", "ग")]
