"""Metrics: hand-computed grapheme vs code-point CER on Devanagari, WER, corpus sums, over-correction."""

from __future__ import annotations

import pytest

from bhasha_build.core import metrics
from bhasha_build.core.metrics import cer, corpus_cer, corpus_wer, graphemes, over_correction_rate, wer


def test_conjunct_is_one_grapheme() -> None:
    assert graphemes("क्ष") == ["क्ष"]
    assert graphemes("क्षत्रिय") == ["क्ष", "त्रि", "य"]
    assert graphemes("স্ত্রী") == ["স্ত্রী"]
    assert graphemes("தமிழ்") == ["த", "மி", "ழ்"]


def test_lost_virama_hand_computed() -> None:
    # ref क्षमा = [क्ष, मा] (2 clusters, 5 code points); hyp कषमा = [क, ष, मा] (4 code points).
    # grapheme: substitute क्ष→क + insert ष = 2 edits / 2 → 1.0; char: delete ् = 1 edit / 5 → 0.2.
    assert cer("कषमा", "क्षमा") == pytest.approx(1.0)
    assert cer("कषमा", "क्षमा", unit="char") == pytest.approx(0.2)


def test_matra_confusion_hand_computed() -> None:
    # किताब = [कि, ता, ब]; कीताब: one cluster substituted → 1/3; code points: 1 of 5 → 0.2.
    assert cer("कीताब", "किताब") == pytest.approx(1 / 3)
    assert cer("कीताब", "किताब", unit="char") == pytest.approx(0.2)


def test_nukta_and_anusvara_hand_computed() -> None:
    # सड़क = [स, ड़, क]; सडक loses the nukta inside one cluster → 1/3 (char: 1/4).
    assert cer("सडक", "सड़क") == pytest.approx(1 / 3)
    assert cer("सडक", "सड़क", unit="char") == pytest.approx(1 / 4)
    # हिंदी = [हिं, दी]; हिदी = [हि, दी] → 1/2.
    assert cer("हिदी", "हिंदी") == pytest.approx(1 / 2)


def test_space_and_danda_hand_computed() -> None:
    # अब घर। = [अ, ब, ' ', घ, र, ।] (6); अबघर| drops the space and swaps the danda → 2/6.
    assert cer("अबघर|", "अब घर।") == pytest.approx(2 / 6)
    assert cer("अब घर।", "अब घर।") == 0.0


def test_wer_hand_computed() -> None:
    assert wer("राम धर गया", "राम घर गया") == pytest.approx(1 / 3)
    assert wer("रामघर गया", "राम घर गया") == pytest.approx(2 / 3)  # 1 substitution + 1 deletion


def test_empty_reference() -> None:
    assert cer("", "") == 0.0
    assert cer("क", "") == 1.0
    assert wer("", "") == 0.0


def test_corpus_cer_sums_edits_not_rates() -> None:
    hyps, refs = ["कषमा", "किताब"], ["क्षमा", "किताब"]
    assert corpus_cer(hyps, refs) == pytest.approx((2 + 0) / (2 + 3))
    assert corpus_cer(hyps, refs, unit="char") == pytest.approx((1 + 0) / (5 + 5))
    assert corpus_wer(["राम धर गया", "आज"], ["राम घर गया", "आज"]) == pytest.approx(1 / 4)


def test_bad_unit_and_length_mismatch() -> None:
    with pytest.raises(ValueError, match="unit"):
        cer("a", "a", unit="word")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="length mismatch"):
        corpus_cer(["a"], ["a", "b"])


def test_over_correction_rate() -> None:
    inputs = ["क", "ख", "गा"]
    refs = ["क", "ख", "ग"]  # two inputs already correct
    hyps = ["क", "खा", "ग"]  # the model changed one of them
    assert over_correction_rate(inputs, hyps, refs) == pytest.approx(0.5)
    assert over_correction_rate(["x"], ["y"], ["y"]) == 0.0  # no already-correct rows


ROWS = [
    {"lang": "hi", "noisy": "कषमा", "clean": "क्षमा"},
    {"lang": "hi", "noisy": "किताब", "clean": "किताब"},
    {"lang": "bn", "noisy": "বাংলা", "clean": "বাংলা"},
]


def test_score_shape_and_by_lang() -> None:
    result = metrics.score(ROWS, ["क्षमा", "किताबें", "বাংলা"])
    overall = result["overall"]
    assert set(overall) >= {"cer", "cer_char", "wer", "over_correction_rate", "rows"}
    assert overall["rows"] == 3
    assert set(result["by_lang"]) == {"hi", "bn"}
    assert result["by_lang"]["hi"]["rows"] == 2
    # hi: किताबें vs किताब → [कि, ता, बें] vs [कि, ता, ब]: 1 edit; total ref clusters 2 + 3.
    assert result["by_lang"]["hi"]["cer"] == pytest.approx(1 / 5)
    assert result["by_lang"]["hi"]["over_correction_rate"] == pytest.approx(1.0)
    assert result["by_lang"]["bn"]["cer"] == 0.0


def test_score_normalizes_hypotheses() -> None:
    # A decomposed nukta and a trailing newline from a model are not errors.
    rows = [{"lang": "hi", "noisy": "x", "clean": "\u095bमीन"}]  # clean as written (already NFC by data)
    from unicodedata import normalize

    rows[0]["clean"] = normalize("NFC", rows[0]["clean"])
    assert metrics.score(rows, ["\u091c\u093cमीन\n"])["overall"]["cer"] == 0.0


def test_identity_baseline() -> None:
    base = metrics.identity_baseline(ROWS)
    assert base["overall"]["over_correction_rate"] == 0.0
    assert base["overall"]["cer"] == pytest.approx(
        corpus_cer([r["noisy"] for r in ROWS], [r["clean"] for r in ROWS])
    )
    assert base["by_lang"]["hi"]["identity_rows"] == 1


@pytest.mark.parametrize(("text", "mark"), [("वह घर गया।", "।"), ("वह घर गया।” ", "।"), ("Done.", "."),
                                            ("क्या?", "?"), ("वह घर गया", ""), ("", ""), ("वह |", "|"),
                                            ("वह घर गया॥", "॥")])
def test_end_mark_is_the_final_sentence_mark(text: str, mark: str) -> None:
    assert metrics.end_mark(text) == mark


def test_end_mark_changes_count_danda_lines_apart() -> None:
    """A model that learnt '.' from software Hindi: on '।'-ending truth its '।'→'.' is a change that breaks
    the line's end; on '.'-ending truth the same output is no change."""
    rows = [{"noisy": "वह घर गया।", "clean": "वह घर गया।"},       # '।' kept → broken when turned to '.'
            {"noisy": "वह घर गया|", "clean": "वह घर गया।"},       # '|' → '।': fixed
            {"noisy": "फ़ाइल सहेजी गई", "clean": "फ़ाइल सहेजी गई."},  # no mark → '.': fixed (other)
            {"noisy": "फ़ाइल खुली.", "clean": "फ़ाइल खुली."}]       # unchanged
    got = metrics.end_mark_changes(rows, ["वह घर गया.", "वह घर गया।", "फ़ाइल सहेजी गई.", "फ़ाइल खुली."])
    assert got["danda"] == {"rows": 2, "changed": 2, "broken": 1, "fixed": 1, "changes": {"|→।": 1, "।→.": 1}}
    assert got["other"] == {"rows": 2, "changed": 1, "broken": 0, "fixed": 1, "changes": {"→.": 1}}
    same = metrics.end_mark_changes(rows, [r["noisy"] for r in rows])  # doing nothing changes no end mark
    assert same["danda"]["changed"] == same["other"]["changed"] == 0
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.end_mark_changes(rows, ["x"])


def test_the_pinned_grapheme_rules_keep_bengali_ya_phala_in_one_unit() -> None:
    # the lock's regex: অ্যা (vowel + virama + ya + aa) is one unit; the H200 image's older regex split it,
    # which moved the same eval split's Bengali identity CER from 0.1606 to 0.1610 (2026-12-03)
    assert graphemes("অ্যাসিড") == ["অ্যা", "সি", "ড"]
    assert cer("অ্যাসিড", "এসিড") == pytest.approx(1 / 3)  # one unit substituted of three
    rules = metrics.check_unit_rules()
    assert rules["probes_ok"] is True and rules["regex"] == metrics.regex.__version__


def test_other_grapheme_rules_are_refused_before_anything_is_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    # what an older regex does: a virama followed by a letter starts a new unit
    split = metrics.regex.compile(r"(?<=[\u094d\u09cd])(?=\p{Lo})")
    monkeypatch.setattr(metrics, "graphemes",
                        lambda text: [p for unit in metrics._GRAPHEME.findall(text) for p in split.split(unit) if p])
    assert metrics.unit_rules()["probes_ok"] is False
    with pytest.raises(metrics.MetricsError, match=r"'क्ष' is 2 units .*requirements/lock.txt"):
        metrics.check_unit_rules()
