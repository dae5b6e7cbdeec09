"""Text rules shared by training and serving: normalization, languages and their scripts.

`normalize_text` is THE input normalization: the data stage applies it to both sides of every pair,
and every client the project ships (eval, sanity, deploy's sanity, `correct`) applies it to what it
sends, so the model is served the token sequences it was trained on (llama.cpp and Ollama tokenize
raw bytes; HF tokenizers apply NFC, so without this a precomposed क़ U+0958 reaches the served model
as tokens it never saw).

  * Unicode NFC. NFC is the one canonical form: the composition-excluded nukta letters क़ ख़ ग़ ज़ ड़ ढ़
    फ़ य़ (U+0958–U+095F) and Bengali ড় ঢ় য় (U+09DC/DD/DF) always become base + nukta.
  * ZWJ/ZWNJ (U+200D/U+200C): policy "keep" (they select half forms and are text) or "strip"
    (removed; e.g. what Tesseract's Tamil model emits after word-final viramas is noise there).
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
ZWJ_POLICIES = ("keep", "strip")

_NEUTRAL = regex.compile(r"[\p{sc=Common}\p{sc=Inherited}]")
_SCRIPT_RE = {name: regex.compile(rf"\p{{sc={name}}}") for name in set(LANG_SCRIPTS.values())}


def normalize_text(text: str, zwj_policy: str = "keep") -> str:
    """NFC, the ZWJ/ZWNJ policy, outer whitespace stripped — applied to noisy and clean alike."""
    text = unicodedata.normalize("NFC", text)
    if zwj_policy == "strip":
        text = unicodedata.normalize("NFC", text.replace(ZWJ, "").replace(ZWNJ, ""))
    elif zwj_policy not in ZWJ_POLICIES:
        raise ValueError(f"zwj_policy must be 'keep' or 'strip', not {zwj_policy!r}")
    return text.strip()


def foreign_fraction(text: str, script: str) -> tuple[float, int]:
    """(share of letters/marks/digits not in ``script``, count of those in ``script``).

    Common/Inherited characters (ASCII digits, punctuation, danda, spaces) are neutral; the
    script's own digits (१२३) count as native; private-use characters (legacy-font OCR output)
    count as foreign.
    """
    native_re = _SCRIPT_RE[script]
    native = foreign = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Co":
            foreign += 1
        elif cat[0] in "LMN":  # letters, marks, digits; ASCII digits are Common, so neutral
            if native_re.match(ch):
                native += 1
            elif not _NEUTRAL.match(ch):
                foreign += 1
    total = native + foreign
    return (foreign / total if total else 0.0), native


def detect_script(text: str) -> str | None:
    """The script most of ``text``'s letters are in (among LANG_SCRIPTS' scripts), None if none."""
    counts = {s: foreign_fraction(text, s)[1] for s in sorted(set(LANG_SCRIPTS.values()))}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else None
