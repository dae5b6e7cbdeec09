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
