"""Seeded synthetic OCR noise for Indic scripts (Devanagari, Bengali, Tamil).

Each script has an error model: a weighted list of edit operations that mimic what OCR engines
get wrong on that script (lost/extra virama that split or fuse conjuncts, lost anusvara /
chandrabindu / nukta, matra confusions such as ै/े and ी/ि, ो split into its parts, look-alike
consonants such as व/ब, म/भ, घ/ध, ख/रव, ব/ষ, থ/য, ன/ண, danda ↔ ``|`` / ``।।``, ॥, avagraha ↔ ५,
Indic ↔ ASCII digits, dropped or doubled spaces).

Rate calibration: for a line of n grapheme clusters we draw a target number of edits
t ~ Binomial(n, rate) and apply random operations until the grapheme edit distance to the clean
line reaches t (an operation that would overshoot is skipped). So the measured grapheme CER of
the output against the clean text is the requested rate on average, whatever the mix of
operations — the tests hold it to that.

Determinism: everything draws from the ``random.Random`` passed in; ``noise_file`` seeds one per
line from (seed, line number, text), so a line's noise does not depend on the lines before it.
Output is NFC, like the data stage, so no error is silently undone by normalization later.

Fitted mode: ``noise_file(..., model=MODEL.json)`` samples from a noise model fitted to real OCR
errors (``features/noise_fit.py``, ``invoke noise-fit``) instead of the rules; ``rate`` is then unused
(the model carries its own distribution of line CERs, error-free lines included).

Knobs: ``rate`` (target grapheme CER, 0..1), ``seed``, ``identity_fraction`` (share of rows left
unchanged, so over-correction can be measured), ``lang`` (hi, mr, ne, sa, mai, kok → Devanagari;
bn, as → Bengali; ta → Tamil), ``model`` (a fitted noise model file).
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_jsonl
from bhasha_build.core.metrics import corpus_cer, edit_distance, graphemes

Repl = Callable[[regex.Match, random.Random], str]


class NoiseError(BhashaError, ValueError):
    """A bad input to the noise generator, phrased as one line naming the path."""


@dataclass(frozen=True)
class Op:
    """One OCR error: replace a random match of ``pattern`` by ``repl(match, rng)``."""

    name: str
    pattern: regex.Pattern[str]
    repl: Repl
    weight: float


def _choice_map(name: str, mapping: dict[str, str | Sequence[str]], weight: float) -> Op:
    """Replace one of the keys by (one of) its value(s); keys may be multi-character (रव → ख)."""
    keys = sorted(mapping, key=len, reverse=True)  # longest first so रव wins over र
    pattern = regex.compile("|".join(regex.escape(k) for k in keys))

    def repl(m: regex.Match, rng: random.Random) -> str:
        value = mapping[m.group()]
        return value if isinstance(value, str) else rng.choice(list(value))

    return Op(name, pattern, repl, weight)


def _regex_op(name: str, pattern: str, template: str, weight: float) -> Op:
    compiled = regex.compile(pattern)
    return Op(name, compiled, lambda m, _rng: m.expand(template), weight)


def _digits(indic_zero: str) -> dict[str, str | Sequence[str]]:
    """Indic digit → ASCII digit of the same value, and back (both confusions happen)."""
    base = ord(indic_zero)
    out: dict[str, str | Sequence[str]] = {}
    for i in range(10):
        out[chr(base + i)] = str(i)
        out[str(i)] = chr(base + i)
    return out


def _spaces() -> list[Op]:
    return [
        _regex_op("space_drop", r"(?<=\S) (?=\S)", "", 1.5),
        _regex_op("space_double", r"(?<=\S) (?=\S)", "  ", 1.0),
    ]


# --- Devanagari (hi, mr, ne, sa, ...) ---------------------------------------------------------
_DEVA_C = "[\u0915-\u0939]"
DEVANAGARI: list[Op] = [
    _regex_op("virama_loss", "\u094d(?=" + _DEVA_C + ")", "", 2.0),  # क्ष → कष: conjunct splits
    _regex_op("virama_extra", "(" + _DEVA_C + ")(?=" + _DEVA_C + ")", "\\1\u094d", 1.0),
    _choice_map("anusvara_loss", {"ं": ""}, 2.0),
    _choice_map("chandrabindu_loss", {"ँ": ["", "ं"]}, 1.5),
    _choice_map("nukta_loss", {"\u093c": ""}, 1.5),  # NFC keeps क़ ड़ ज़ … as base + nukta
    _choice_map(
        "matra_confusion",
        {"ै": "े", "े": "ै", "ी": "ि", "ि": "ी", "ू": "ु", "ु": "ू", "ौ": "ो", "ो": ["ौ", "ाे"]},
        3.0,
    ),
    _choice_map(
        "lookalike",
        {
            "व": "ब",
            "ब": "व",
            "म": "भ",
            "भ": "म",
            "घ": "ध",
            "ध": "घ",
            "ख": "रव",
            "रव": "ख",
            "प": "ष",
            "ष": "प",
            "थ": "य",
            "य": "थ",
            "ड": "ङ",
            "द": "ढ",
            "ठ": "ट",
            "उ": "ड",
        },
        3.0,
    ),
    _choice_map("danda", {"।": ["|", "।।", "l"], "॥": ["।।", "||", "।"]}, 2.0),
    _choice_map("avagraha", {"ऽ": "५", "५": "ऽ"}, 1.0),
    _choice_map("digits", _digits("०"), 1.0),
    *_spaces(),
]

# --- Bengali / Assamese ---------------------------------------------------------------------
_BENG_C = "[\u0995-\u09b9\u09f0\u09f1]"
_BENGALI_LOOKALIKE: dict[str, str | Sequence[str]] = {
    "থ": "য",
    "য": "থ",
    "ব": ["ষ", "র"],
    "ষ": "ব",
    "র": "ব",
    "ঘ": "য",
    "ত": "ভ",
    "ভ": "ত",
    "ড": "ভ",
    "ম": "স",
    "উ": "ট",
    "ন": "ল",
}
BENGALI: list[Op] = [
    _regex_op("virama_loss", "\u09cd(?=" + _BENG_C + ")", "", 2.0),  # ক্ষ → কষ
    _regex_op("virama_extra", "(" + _BENG_C + ")(?=" + _BENG_C + ")", "\\1\u09cd", 1.0),
    _choice_map("anusvara_loss", {"ং": ""}, 1.5),
    _choice_map("chandrabindu_loss", {"ঁ": ["", "ং"]}, 1.5),
    _choice_map("nukta_loss", {"\u09bc": ""}, 1.5),  # ড় ঢ় য় are base + nukta under NFC
    _choice_map("matra_confusion", {"ে": "ৈ", "ৈ": "ে", "ি": "ী", "ী": "ি", "ু": "ূ", "ূ": "ু"}, 3.0),
    # ো/ৌ are written around the consonant; OCR often emits the parts in visual order (কো → েকা).
    _regex_op("o_split", "(" + _BENG_C + ")\u09cb", "\u09c7\\1\u09be", 1.0),
    _choice_map("lookalike", _BENGALI_LOOKALIKE, 3.0),
    _choice_map("danda", {"।": ["|", "।।", "l"], "॥": ["।।", "||"]}, 2.0),
    _choice_map("digits", {**_digits("০"), "৪": ["4", "8"]}, 1.0),
    *_spaces(),
]
_ASSAMESE_LOOKALIKE = _choice_map(
    "lookalike", {**_BENGALI_LOOKALIKE, "ৰ": "ব", "ৱ": "ব", "ব": ["ৰ", "ষ"]}, 3.0
)
ASSAMESE: list[Op] = [_ASSAMESE_LOOKALIKE if op.name == "lookalike" else op for op in BENGALI]

# --- Tamil ----------------------------------------------------------------------------------
_TAML_C = "[\u0b95-\u0bb9]"
TAMIL: list[Op] = [
    _choice_map("pulli_loss", {"\u0bcd": ""}, 3.0),  # க் → க: the commonest Tamil OCR error
    _regex_op("pulli_extra", "(" + _TAML_C + ")(?![\u0bbe-\u0bcd])", "\\1\u0bcd", 1.0),
    _choice_map(
        "matra_confusion",
        {"ெ": "ே", "ே": "ெ", "ி": "ீ", "ீ": "ி", "ு": "ூ", "ூ": "ு", "ொ": "ோ", "ோ": "ொ"},
        3.0,
    ),
    _regex_op("o_split", "(" + _TAML_C + ")\u0bca", "\u0bc6\\1\u0bbe", 1.0),  # கொ → ெகா
    _choice_map(
        "lookalike",
        {"ன": "ண", "ண": "ன", "ல": "ள", "ள": "ல", "ப": "ய", "ய": "ப", "ா": "ர", "ர": "ா", "ஒ": "ஓ"},
        3.0,
    ),
    _choice_map("punctuation", {".": ["", ",", "·"], ",": "."}, 1.0),
    _choice_map("digits", _digits("௦"), 0.5),
    *_spaces(),
]

MODELS: dict[str, list[Op]] = {
    **dict.fromkeys(("hi", "mr", "ne", "sa", "mai", "kok"), DEVANAGARI),
    "bn": BENGALI,
    "as": ASSAMESE,
    "ta": TAMIL,
}


def model_for(lang: str) -> list[Op]:
    try:
        return MODELS[lang]
    except KeyError:
        raise NoiseError(
            f"no noise model for language {lang!r} (have: {', '.join(sorted(MODELS))})"
        ) from None


def _apply(text: str, op: Op, rng: random.Random) -> str | None:
    matches = list(op.pattern.finditer(text))
    if not matches:
        return None
    m = rng.choice(matches)
    return text[: m.start()] + op.repl(m, rng) + text[m.end() :]


def add_noise(text: str, lang: str, rate: float, rng: random.Random) -> str:
    """Return ``text`` with OCR-like errors at about ``rate`` grapheme CER (NFC output)."""
    if not 0.0 <= rate <= 1.0:
        raise NoiseError(f"rate must be in [0, 1], got {rate}")
    ops = model_for(lang)
    weights = [op.weight for op in ops]
    clean = unicodedata.normalize("NFC", text)
    ref = graphemes(clean)
    target = sum(1 for _ in ref if rng.random() < rate)
    out, dist = clean, 0
    budget = 10 * target + 20  # a line with few applicable sites stops short instead of looping
    for attempt in range(budget):
        if dist >= target:
            break
        op = rng.choices(ops, weights)[0]
        cand = _apply(out, op, rng)
        if cand is None:
            continue
        cand = unicodedata.normalize("NFC", cand)
        d = edit_distance(graphemes(cand), ref)
        # Skip an edit that overshoots the target (e.g. a 2-unit split when 1 is left), unless
        # the budget is nearly gone.
        if d > target and attempt < budget - 5:
            continue
        out, dist = cand, d
    return out


def read_clean(path: Path, lang: str | None) -> list[tuple[int, str, str, str | None]]:
    """(line number, lang, clean text, id) for each non-blank line of a .txt or .jsonl file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NoiseError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text = data.decode("utf-8-sig", errors="strict") if data else ""
    out: list[tuple[int, str, str, str | None]] = []
    for no, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        row_id: str | None = None
        row_lang = lang
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                clean = obj["clean"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise NoiseError(f"{path}:{no}: expected a JSON object with a 'clean' field") from None
            row_lang = obj.get("lang") or lang
            row_id = obj.get("id")
        else:
            clean = line
        if not row_lang:
            raise NoiseError(f"{path}:{no}: no language (pass lang or give a 'lang' field)")
        out.append((no, row_lang, clean.strip(), row_id))
    return out


def noise_file(
    input: str | Path,
    out: str | Path,
    lang: str | None = None,
    rate: float = 0.08,
    seed: int = 0,
    identity_fraction: float = 0.0,
    model: str | Path | None = None,
) -> dict[str, Any]:
    """Read clean lines (.txt one per line, or .jsonl with clean[/lang/id]) → jsonl pairs.

    Each output row is {"id", "lang", "noisy", "clean"}. Returns counts and the measured
    grapheme CER of the whole file, so callers can print what they got next to what they asked.
    With ``model`` (a fitted noise model file) the noise is sampled from it and ``rate`` is unused.
    """
    src, dst = Path(input), Path(out)
    if not src.is_file():
        raise NoiseError(f"{src}: input not found")
    if not 0.0 <= identity_fraction <= 1.0:
        raise NoiseError(f"identity_fraction must be in [0, 1], got {identity_fraction}")
    fitted = None
    if model is not None:
        from bhasha_build.features.noise_fit import load_model, sample

        fitted = load_model(model)
    rows: list[dict[str, str]] = []
    for no, row_lang, clean, row_id in read_clean(src, lang):
        rng = random.Random(f"{seed}\0{no}\0{clean}")  # str seeds hash with sha512: stable across runs
        clean = unicodedata.normalize("NFC", clean)
        if rng.random() < identity_fraction:
            noisy = clean
        elif fitted is not None:
            noisy = sample(fitted, clean, row_lang, rng)
        else:
            noisy = add_noise(clean, row_lang, rate, rng)
        rows.append(
            {"id": row_id or f"{row_lang}-{no:05d}", "lang": row_lang, "noisy": noisy, "clean": clean}
        )
    atomic_write_jsonl(dst, rows)
    return {
        "rows": len(rows),
        "identity_rows": sum(1 for r in rows if r["noisy"] == r["clean"]),
        "requested_rate": None if fitted else rate,
        "model": str(model) if model else None,
        "measured_cer": corpus_cer([r["noisy"] for r in rows], [r["clean"] for r in rows]),
        "out": str(dst),
    }
