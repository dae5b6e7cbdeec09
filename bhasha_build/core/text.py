"""Text rules shared by training and serving: normalization, languages and their scripts.

`normalize_text` is THE input normalization: the data stage applies it to both sides of every pair,
and every client the project ships (eval, sanity, deploy's sanity, `correct`) applies it to what it
sends, so the model is served the token sequences it was trained on (llama.cpp and Ollama tokenize
raw bytes; HF tokenizers apply NFC, so without this a precomposed क़ U+0958 reaches the served model
as tokens it never saw).

  * Unicode NFC. NFC is the one canonical form: the composition-excluded nukta letters क़ ख़ ग़ ज़ ड़ ढ़
    फ़ य़ (U+0958–U+095F) and Bengali ড় ঢ় য় (U+09DC/DD/DF) always become base + nukta.
  * ZWJ/ZWNJ (U+200D/U+200C), one policy (`data.zwj_policy`) for training data and every client:
      auto   (default) drop a ZWNJ that follows a virama at the end of a word (before a space,
             punctuation or the end): a virama there shows anyway, so the ZWNJ changes nothing on the
             page, and it is exactly what Tesseract emits (its Tamil model after nearly every
             word-final pulli, its Hindi model after word-final halants). Kept: every ZWJ (after a
             final virama it makes Bengali khanda-ta ত্‍ and Malayalam chillus) and joiners inside
             words (half forms, Bengali ya-phala র‍্য, Tamil க்‌ஷ), which are text.
      keep   leave every joiner; strip   remove every joiner.
  * Surrounding whitespace stripped; inner spacing kept (spacing errors are data).

Script rules: `LANG_SCRIPTS` maps language codes to scripts; `foreign_fraction` measures how much of a
text is outside a script (the data stage's wrong_script check, deploy's sanity, the do-no-harm guard).
"""

from __future__ import annotations

import unicodedata

import regex

LANG_SCRIPTS: dict[str, str] = {
    **dict.fromkeys(("hi", "mr", "ne", "sa", "mai", "kok", "bho", "doi"), "Devanagari"),
    **dict.fromkeys(("bn", "as", "mni"), "Bengali"),
    "ta": "Tamil",
    "te": "Telugu",
    "kn": "Kannada",
    "ml": "Malayalam",
    "gu": "Gujarati",
    "pa": "Gurmukhi",
    "or": "Oriya",
    "si": "Sinhala",
}
ZWJ, ZWNJ = "\u200d", "\u200c"
JOINERS = ZWJ + ZWNJ
# The virama (halant / hasant / pulli) of every Indic script of LANG_SCRIPTS.
VIRAMAS = "\u094d\u09cd\u0a4d\u0acd\u0b4d\u0bcd\u0c4d\u0ccd\u0d4d\u0dca"
ZWJ_RULES = {  # what each policy does, in words (the data stage records it in stats and the manifest)
    "auto": "ZWNJ after a word-final virama dropped; every other ZWJ/ZWNJ kept",
    "keep": "every ZWJ/ZWNJ kept",
    "strip": "every ZWJ/ZWNJ removed",
}
ZWJ_POLICIES = tuple(ZWJ_RULES)
_WORD_FINAL_ZWNJ = regex.compile(f"(?<=[{VIRAMAS}]){ZWNJ}+(?![\\p{{L}}\\p{{M}}])")

_NEUTRAL = regex.compile(r"[\p{sc=Common}\p{sc=Inherited}]")
_SCRIPT_RE = {name: regex.compile(rf"\p{{sc={name}}}") for name in set(LANG_SCRIPTS.values())}


def normalize_text(text: str, zwj_policy: str = "keep") -> str:
    """NFC, the ZWJ/ZWNJ policy, outer whitespace stripped — applied to noisy and clean alike."""
    text = unicodedata.normalize("NFC", text)
    if zwj_policy == "strip":
        text = unicodedata.normalize("NFC", text.replace(ZWJ, "").replace(ZWNJ, ""))
    elif zwj_policy == "auto":
        text = unicodedata.normalize("NFC", _WORD_FINAL_ZWNJ.sub("", text))
    elif zwj_policy not in ZWJ_POLICIES:
        raise ValueError(f"zwj_policy must be one of {', '.join(ZWJ_POLICIES)}, not {zwj_policy!r}")
    return text.strip()


def foreign_fraction(text: str, script: str) -> tuple[float, int]:
    """(share of letters/marks/digits not in ``script``, count of those in ``script``).

    Common/Inherited characters (ASCII digits, punctuation, danda, spaces) are neutral; the
    script's own digits (१२३) count as native; private-use characters (legacy-font OCR output)
    count as foreign. Each character is classified once per script (``_char_kind``, memoized).
    """
    if script not in _SCRIPT_RE:
        raise KeyError(script)
    kinds = _KINDS.setdefault(script, {})
    native = foreign = 0
    for ch in text:
        kind = kinds.get(ch)
        if kind is None:
            kind = kinds[ch] = _char_kind(ch, script)
        if kind == _NATIVE:
            native += 1
        elif kind == _FOREIGN:
            foreign += 1
    total = native + foreign
    return (foreign / total if total else 0.0), native


_NEUTRAL_KIND, _NATIVE, _FOREIGN = 0, 1, 2
_KINDS: dict[str, dict[str, int]] = {}  # script -> character -> kind (at most every code point once)


def _char_kind(ch: str, script: str) -> int:
    """One character's part in ``foreign_fraction``: native, foreign or neutral for ``script``."""
    cat = unicodedata.category(ch)
    if cat == "Co":
        return _FOREIGN
    if cat[0] in "LMN":  # letters, marks, digits; ASCII digits are Common, so neutral
        if _SCRIPT_RE[script].match(ch):
            return _NATIVE
        if not _NEUTRAL.match(ch):
            return _FOREIGN
    return _NEUTRAL_KIND


def detect_script(text: str) -> str | None:
    """The script most of ``text``'s letters are in (among LANG_SCRIPTS' scripts), None if none."""
    counts = {s: foreign_fraction(text, s)[1] for s in sorted(set(LANG_SCRIPTS.values()))}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else None
