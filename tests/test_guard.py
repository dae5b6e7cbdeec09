"""The do-no-harm guard keeps the input when a correction is implausible, and only then."""

from __future__ import annotations

import pytest

from bhasha_build.core.config import GuardConfig
from bhasha_build.core.guard import guard

CFG = GuardConfig()


def test_plausible_corrections_pass() -> None:
    got = guard("हम बाजार जा रहे है|", "हम बाज़ार जा रहे हैं।", "hi", CFG)
    assert got.text == "हम बाज़ार जा रहे हैं।" and got.reason is None and not got.kept_input


@pytest.mark.parametrize(("noisy", "output", "lang", "why"), [
    ("நான் புத்தகம் படிக்கிறேன்", "I am reading a book.", "ta", "script change"),
    ("आज मौसम बहुत अच्छा है और हम बाजार जा रहे है", "आज मौसम", "hi", "length ratio"),
    ("আমি ভাত খাই", "তুমি জল চাও", "bn", "edit distance"),
    ("आज मौसम अच्छा है", "", "hi", "empty output"),
])
def test_implausible_outputs_keep_the_input(noisy: str, output: str, lang: str, why: str) -> None:
    got = guard(noisy, output, lang, CFG)
    assert got.text == noisy and got.kept_input and why in got.reason


def test_disabled_guard_passes_everything() -> None:
    off = GuardConfig(enabled=False)
    assert guard("நான் படிக்கிறேன்", "I read.", "ta", off).text == "I read."


def test_script_comes_from_the_input_when_lang_is_unknown() -> None:
    assert guard("நான் படிக்கிறேன்", "I read.", None, CFG).kept_input


def test_eval_reports_raw_and_guarded_side_by_side_and_gates_over_correction() -> None:
    """The eval stage's scoring (no model needed): raw and guarded CER per system and language, guarded
    row counts and reasons, and the over-correction check on what is served (the guarded output)."""
    from bhasha_build.core.config import load_config
    from bhasha_build.core.metrics import identity_baseline
    from bhasha_build.stages.evaluate import gate, score_guarded

    rows = [{"lang": "hi", "noisy": "आज मौसम अच्छा है", "clean": "आज मौसम अच्छा है"},        # already correct
            {"lang": "hi", "noisy": "हम बाजार जा रहे है|", "clean": "हम बाज़ार जा रहे हैं।"},
            {"lang": "ta", "noisy": "நான் புத்தகம் படிக்கிறேன்", "clean": "நான் புத்தகம் படிக்கிறேன்"},  # correct
            {"lang": "ta", "noisy": "அவன் வந்தான", "clean": "அவன் வந்தான்"}]
    hyps = ["आज मौसम अच्छा है",            # copied: fine
            "हम बाज़ार जा रहे हैं।",          # corrected
            "I am reading a book.",         # a Tamil line answered in English: guarded
            "அவன் வந்தான்"]
    cfg = load_config(None, overrides=["eval.max_over_correction=0.02"])
    raw, reasons, served = score_guarded(rows, hyps, cfg)
    assert reasons == [None, None, reasons[2], None] and reasons[2].startswith("script change")
    assert served[2] == rows[2]["noisy"]
    assert raw["overall"]["over_correction_rate"] == 0.5 and raw["guarded"]["overall"]["over_correction_rate"] == 0.0
    assert raw["by_lang"]["ta"]["cer"] > raw["guarded"]["by_lang"]["ta"]["cer"] == 0.0
    assert raw["guarded"]["overall"]["guarded_rows"] == 1 and raw["guarded"]["by_lang"]["hi"]["guarded_rows"] == 0
    assert raw["guarded"]["reasons"] == {"script change": 1}
    report = {"baseline": identity_baseline(rows), "gguf": raw}
    checks = {c["check"]: c for c in gate(report, cfg)["checks"]}
    assert checks["gguf_beats_baseline"]["ok"] is False  # raw CER counts the English line
    assert checks["gguf_over_correction"]["ok"] and "(guarded)" in checks["gguf_over_correction"]["detail"]
    off = load_config(None, overrides=["guard.enabled=false"])
    raw_off, _, _ = score_guarded(rows, hyps, off)
    checks = {c["check"]: c for c in gate({"baseline": report["baseline"], "gguf": raw_off}, off)["checks"]}
    assert not checks["gguf_over_correction"]["ok"] and "(raw)" in checks["gguf_over_correction"]["detail"]
