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

The reply budget (`reply_budget`) is the one rule for how many tokens a reply may take: twice the
input's tokens plus `REPLY_MARGIN` (never below `floor`, e.g. eval.max_new_tokens), per row. A
correction is about as long as its input, so a reply that reaches the budget was cut, not finished:
`accept` keeps the input for it (reason CUT_REASON, counted like every guard reason), so a cut reply
is never scored or served as a correction.

`accept` is the whole rule for what is served (eval's guarded systems, `invoke correct`, promote's
gate): the reply cut by the budget → input; the guard above → input; a changed line whose confidence
(core/confidence.py: the least probability the model gave a token of its change) is below
`min_confidence` → input; with a lexicon (core/baselines.Lexicon, `correct.lexicon_guard`), a change
that turns an in-lexicon word into an out-of-lexicon one → input.

Knobs (config section `guard`): enabled, max_edit_fraction, max_length_ratio, max_foreign_fraction;
correct.min_confidence and correct.lexicon_guard (passed to `accept` by its callers).
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


@dataclass(frozen=True)
class Answer:
    """A model's reply as the rule judges it: its text, whether the budget cut it, its confidence."""

    text: str
    cut: bool = False
    confidence: float | None = None


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


REPLY_FACTOR = 2  # reply tokens per input token a budget allows (a correction is about as long as its input)
REPLY_MARGIN = 16  # tokens on top: room for a short input's few insertions and the stop token
CUT_REASON = "no stop token (reply cut by the budget)"


def reply_budget(input_tokens: int, floor: int = 0) -> int:
    """max_new_tokens / num_predict for a reply to an input of `input_tokens` tokens (module docstring)."""
    return max(REPLY_FACTOR * max(input_tokens, 0) + REPLY_MARGIN, floor)


def qwen_reply_budgets(texts: list[str], floor: int = 0) -> list[int]:
    """Reply budgets for a served model (Ollama): inputs counted by Qwen2.5's tokenizer, as `correct`
    counts them (core/qwen_tokenizer.py; a tiny model's own vocabulary is smaller, so never fewer)."""
    from bhasha_build.core.qwen_tokenizer import qwen25_fast_tokenizer

    tokenizer = qwen25_fast_tokenizer()
    return [reply_budget(len(tokenizer.encode(t, add_special_tokens=False).ids), floor) for t in texts]


def accept(noisy: str, output: str, lang: str | None, cfg: Any, *, cut: bool = False,
           confidence: float | None = None, min_confidence: float = 0.0, lexicon: Any = None) -> Guarded:
    """What is served for `noisy` given the model's `output` (module docstring): the output, or the input
    with the reason. `cfg` is the guard section; `confidence` None (a backend that gave no token
    probabilities) passes the confidence rule; `lexicon` None skips the lexicon rule. With guard.enabled
    false only a cut reply is refused (it is not a finished reply)."""
    if cut:
        return Guarded(noisy, CUT_REASON)
    kept = guard(noisy, output, lang, cfg)
    if kept.reason or not cfg.enabled or output.strip() == noisy.strip():
        return kept
    if confidence is not None and confidence < min_confidence:
        return Guarded(noisy, f"low confidence {confidence:.3f} < {min_confidence:g}")
    if lexicon is not None and (word := lexicon.breaks(noisy, output, lang)):
        return Guarded(noisy, f"lexicon: {word}")
    return kept


def serve(noisy: str, answer: Answer, lang: str | None, cfg: Any, min_confidence: float | None = None) -> Guarded:
    """`accept` with the config's knobs (`cfg` the whole BuildConfig): guard.*, correct.min_confidence
    (or `min_confidence`, eval's threshold sweep) and correct.lexicon_guard — what eval's guarded
    systems, `invoke correct` and promote's gate serve for one line."""
    from bhasha_build.core.baselines import DICTIONARIES, load_lexicon
    from bhasha_build.core.metrics import normalize_hyp

    lexicon = load_lexicon(lang) if cfg.correct.lexicon_guard and lang in DICTIONARIES else None
    threshold = cfg.correct.min_confidence if min_confidence is None else min_confidence
    if threshold == "auto":  # a caller's bug, not a user's: the run's calibrated number must be applied first
        raise ValueError('correct.min_confidence "auto" reached serve(): resolve it first '
                         "(stages/evaluate.applied_min_confidence)")
    return accept(noisy, normalize_hyp(answer.text), lang, cfg.guard, cut=answer.cut,
                  confidence=answer.confidence, min_confidence=threshold, lexicon=lexicon)


def reason_kind(reason: str) -> str:
    """A reason without its numbers, for counting: "edit distance 40% of the input > 35%" → "edit distance"
    (the guard's reasons, and the clients' own such as "line break in the reply", start with words)."""
    words = re.match(r"[a-z ]+", reason)
    return words.group().strip() if words else reason
