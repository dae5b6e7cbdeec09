"""The do-no-harm guard: keep the input line when a model's correction is implausible.

OCR correction must never make a line worse, and a model can rewrite fluently: translate a line,
switch script, drop half of it, or hallucinate a longer one. `guard(noisy, output, lang, cfg)` keeps
`noisy` (and says why) when the output

  * holds a chat-template special token's text (``<|im_end|>``, ``<|endoftext|>``, any ``<|name|>``:
    a model that never learned to stop cleanly), whatever the line's length,
  * is empty (the input was not),
  * is not in the line's script (`text.foreign_fraction` over `guard.max_foreign_fraction`, or no
    letter of the script: the "answered a Tamil line in English" case),
  * changes too much: grapheme edit distance to the input over `guard.max_edit_fraction` of the
    input's graphemes (OCR errors touch a few graphemes of a line, not most of it),
  * or has a length ratio (output/input graphemes) outside [1/guard.max_length_ratio, guard.max_length_ratio].

Everything that scores or serves corrections (eval, sanity, deploy's served-model check, `correct`)
applies the same guard when `guard.enabled`, and reports raw and guarded results side by side.

Knobs (config section `guard`): enabled, max_edit_fraction, max_length_ratio, max_foreign_fraction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bhasha_build.core.chat import find_special_token
from bhasha_build.core.metrics import edit_distance, graphemes
from bhasha_build.core.text import LANG_SCRIPTS, detect_script, foreign_fraction


@dataclass(frozen=True)
class Guarded:
    """The text to use, and why the model's output was not used (None when it was)."""

    text: str
    reason: str | None

    @property
    def kept_input(self) -> bool:
        return self.reason is not None


def check(noisy: str, output: str, lang: str | None, cfg: Any) -> str | None:
    """Why `output` is an implausible correction of `noisy` (None: plausible). `cfg` is the config's
    `guard` section (GuardConfig)."""
    if special := find_special_token(output):
        return f"special token in the output ({special.group()})"
    if not output.strip():
        return "empty output" if noisy.strip() else None
    script = LANG_SCRIPTS.get(lang or "") or detect_script(noisy)
    if script:
        foreign, native = foreign_fraction(output, script)
        if native == 0 or foreign > cfg.max_foreign_fraction:
            return f"script change ({foreign:.0%} outside {script})"
    src, out = graphemes(noisy), graphemes(output)
    if src:
        ratio = len(out) / len(src)
        if ratio > cfg.max_length_ratio or ratio < 1 / cfg.max_length_ratio:
            return f"length ratio {ratio:.2f} outside [{1 / cfg.max_length_ratio:.2f}, {cfg.max_length_ratio:.2f}]"
        edits = edit_distance(out, src) / len(src)
        if edits > cfg.max_edit_fraction:
            return f"edit distance {edits:.0%} of the input > {cfg.max_edit_fraction:.0%}"
    return None


def guard(noisy: str, output: str, lang: str | None, cfg: Any) -> Guarded:
    """`output` when plausible, else `noisy` with the reason (see module docstring)."""
    reason = check(noisy, output, lang, cfg) if cfg.enabled else None
    return Guarded(noisy if reason else output, reason)


def reason_kind(reason: str) -> str:
    """A reason without its numbers, for counting: "edit distance 40% of the input > 35%" → "edit distance"
    (the guard's reasons, and the clients' own such as "line break in the reply", start with words)."""
    words = re.match(r"[a-z ]+", reason)
    return words.group().strip() if words else reason
