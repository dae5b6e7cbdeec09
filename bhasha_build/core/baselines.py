"""Non-model baselines: what a careful script does to OCR without a model, scored beside every model.

A model's gain is measured against the strongest of these, per language, not only against doing
nothing (the identity baseline, core/metrics.identity_baseline). Both are deterministic and
conservative: they change only what is wrong in any text, never what a book might really say.

`rules` (`rules_cleanup`): punctuation and spacing
  * NFC; runs of whitespace → one space; no space before a closing mark (, . ; : ? ! । ॥ ) ]; an
    ellipsis keeps its space), and a
    comma, semicolon or colon moved off the next word moves its space after it ("क ,ख" → "क, ख");
  * Devanagari and Bengali (hi, bn): OCR's `|` for the danda → `।`, a doubled danda (`||`, `।।`,
    `| |`) → `॥`, and a line-final Latin `I`/`l` standing alone after a word → `।`;
  * Tamil (ta): a line-final `|` → `.` (Tamil ends sentences with a full stop; `|` is no Tamil mark).
  Nothing else: inner punctuation stays, `!` and `?` stay, digits stay, and a vowel sign after a
  space stays (joining it to the word before was wrong on the held-out real OCR: the OCR had lost a
  letter there, not added a space).

`lexicon` (`Lexicon.snap`): a dictionary snap, gated
  * the lexicon of a language is its Debian dictionary — `hunspell-hi` (/usr/share/hunspell/hi_IN.dic),
    `hunspell-bn` (bn_BD.dic), `aspell-ta` (/usr/share/aspell/ta.cwl.gz, expanded with aspell's
    `precat`) — plus the project's frequency list data/wordlists/<lang>.tsv (wordfreq, 8,000 words);
  * a word (its letters and marks, outer punctuation kept aside) that is in the lexicon, has fewer than
    MIN_GRAPHEMES graphemes, or holds a character outside the line's script is left as it is;
  * otherwise the in-lexicon words at grapheme edit distance 1 are its candidates: a unique one
    replaces it; among several, the most frequent replaces it only when it is at least FREQ_RATIO times
    as frequent as the next (frequencies from the frequency list; a dictionary word absent from it
    counts as rare); else the word is left as it is.
  Chosen on bench/signal-real-qwen-h200-2026-11-30.predictions.jsonl (held-out real OCR, 60 rows a set):
  3-grapheme words or distance 2 for long words gain 0.1-0.5 CER points in-domain but change 50-63 %
  of the already-correct lines of the unfamiliar-words sets (names snapped to dictionary words); this
  setting changes 20-35 % of them. No lexicon snap can tell a name from an OCR error without context:
  that is what the model is for.
  `Lexicon.breaks` is the lexicon guard (`correct.lexicon_guard`, core/guard.accept): a model's change
  that turns an in-lexicon word into one that is not.

A language without its dictionary installed has no lexicon (`load_lexicon` raises LexiconMissing,
naming the Debian package); eval then records the lexicon baseline as skipped.

A machine without the Debian packages (the GPU box: no apt, no aspell's `precat`) reads the same words
from `$BHASHA_DICTIONARY_DIR/<lang>.words.xz` (`export_dictionaries` writes them here, with the source
files' sha256 in SOURCES.json; scripts/gpu-quality-lease.sh prepare puts them in .carry/gpu/dict).
Until 2026-12-03 the box scored every lexicon column as the rules alone.

Knobs: BHASHA_DICTIONARY_DIR (env: a folder of exported word lists, read before the Debian files); the
constants below document the gates.
"""

from __future__ import annotations

import functools
import gzip
import lzma
import os
import shutil
import subprocess
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import regex
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.metrics import graphemes
from bhasha_build.core.text import LANG_SCRIPTS, detect_script, foreign_fraction

BASELINES = ("rules", "lexicon")  # the column names of prediction files and the systems of eval.json
WORDLISTS = Path(__file__).resolve().parents[2] / "data" / "wordlists"
DICTIONARIES: dict[str, tuple[str, Path]] = {  # lang → (Debian package, file)
    "hi": ("hunspell-hi", Path("/usr/share/hunspell/hi_IN.dic")),
    "bn": ("hunspell-bn", Path("/usr/share/hunspell/bn_BD.dic")),
    "ta": ("aspell-ta", Path("/usr/share/aspell/ta.cwl.gz")),
}
MIN_GRAPHEMES = 4  # shorter words are left alone (too many neighbours)
FREQ_RATIO = 10.0  # among several nearest candidates, the most frequent wins only by this factor

_SPACES = regex.compile(r"\s+")
_SPACE_BEFORE_CLOSE = regex.compile(r" +(?=[,;:?!।॥)\]]|\.(?!\.))")  # an ellipsis keeps its space
_DOUBLE_DANDA = regex.compile(r"(?:[|।]\s?[|।])")
_FINAL_LATIN_DANDA = {script: regex.compile(rf"(?<=[\p{{sc={script}}}&&[\p{{L}}\p{{M}}]]\s?)[Il]$", regex.V1)
                      for script in ("Devanagari", "Bengali")}
_WORD = regex.compile(r"^([^\p{L}\p{M}]*)(.*?)([^\p{L}\p{M}]*)$", regex.DOTALL)


class LexiconMissing(BhashaError):
    """A language's dictionary is not installed (one line naming the Debian package)."""


# ---------------------------------------------------------------------------------- rules


def rules_cleanup(text: str, lang: str | None = None) -> str:
    """The rule-based cleanup (module docstring): punctuation, danda, spaces, end marks."""
    out = unicodedata.normalize("NFC", text).strip()
    out = _SPACES.sub(" ", out)
    script = LANG_SCRIPTS.get(lang or "") or detect_script(out)
    if script in ("Devanagari", "Bengali"):
        out = _DOUBLE_DANDA.sub("॥", out)
        out = out.replace("|", "।")
        out = _FINAL_LATIN_DANDA[script].sub("।", out)
    elif script == "Tamil" and out.endswith("|"):
        out = out[:-1] + "."
    moved = _SPACE_BEFORE_CLOSE.sub("", out)
    if moved != out:  # only where a space before a mark was dropped: "क ,ख" → "क,ख" → "क, ख"
        out = regex.sub(r"(?<= )([,;:])(?=[\p{L}\p{M}])", r"\1 ", out)
        out = _SPACE_BEFORE_CLOSE.sub("", out)
    return out


# ---------------------------------------------------------------------------------- lexicon


DICTIONARY_DIR_ENV = "BHASHA_DICTIONARY_DIR"


def dictionary_words(lang: str) -> list[str]:
    """The Debian dictionary's words for `lang` (NFC), or LexiconMissing naming the package; read from
    $BHASHA_DICTIONARY_DIR/<lang>.words.xz (export_dictionaries) when that file exists."""
    if lang not in DICTIONARIES:
        raise LexiconMissing(f"no dictionary known for language {lang!r} (have: {', '.join(DICTIONARIES)})")
    exported = Path(os.environ.get(DICTIONARY_DIR_ENV) or "/nonexistent") / f"{lang}.words.xz"
    if exported.is_file():
        return [w for w in lzma.decompress(exported.read_bytes()).decode("utf-8").splitlines() if w]
    package, path = DICTIONARIES[lang]
    if not path.is_file():
        raise LexiconMissing(f"{path}: missing; install the Debian package {package} "
                             f"(apt-get install {package}, scripts/test-deps.sh)")
    if path.suffix == ".gz":  # aspell's compressed word list: gzip, then aspell's prefix compression
        precat = shutil.which("precat")
        if precat is None:
            raise LexiconMissing(f"{path}: needs aspell's `precat` to expand (apt-get install aspell)")
        raw = subprocess.run([precat], input=gzip.decompress(path.read_bytes()), capture_output=True,
                             check=True, timeout=120).stdout.decode("utf-8")
        lines = raw.splitlines()
    else:  # hunspell .dic: a count line, then word[/flags]
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
    words = (unicodedata.normalize("NFC", line.split("/", 1)[0].strip()) for line in lines)
    return [w for w in words if w]


def export_dictionaries(out: str | Path) -> dict[str, Any]:
    """Each installed dictionary's words (dictionary_words: NFC, one per line) as <out>/<lang>.words.xz, and
    <out>/SOURCES.json (per language: the Debian package, file, its sha256 and the word count; or why not)."""
    from bhasha_build.core.fsutil import atomic_write_bytes, atomic_write_json, sha256_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Any] = {}
    for lang, (package, path) in DICTIONARIES.items():
        try:
            words = dictionary_words(lang)
        except LexiconMissing as exc:
            sources[lang] = {"missing": str(exc)}
            continue
        atomic_write_bytes(out / f"{lang}.words.xz", lzma.compress("\n".join(words).encode("utf-8") + b"\n"))
        sources[lang] = {"package": package, "file": str(path), "sha256": sha256_file(path), "words": len(words)}
    atomic_write_json(out / "SOURCES.json", sources)
    return sources


def frequency_list(lang: str, folder: Path = WORDLISTS) -> dict[str, float]:
    """word → frequency from data/wordlists/<lang>.tsv (word<TAB>centibels); {} when absent."""
    path = folder / f"{lang}.tsv"
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        word, _, centibels = line.partition("\t")
        if word and centibels.lstrip("-").isdigit():
            out[unicodedata.normalize("NFC", word)] = 10 ** (-int(centibels) / 100)
    return out


@dataclass
class Lexicon:
    """One language's words, their frequencies, and the snap and guard built on them."""

    lang: str
    words: frozenset[str]
    freq: Mapping[str, float]
    _by_len: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict, repr=False)
    _codes: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        script = LANG_SCRIPTS.get(self.lang)
        self.script = script
        buckets: dict[int, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for word in sorted(self.words):
            units = graphemes(word)
            buckets[len(units)][0].append(word)
            buckets[len(units)][1].append(self._encode(units))
        self._by_len = dict(buckets)
        self.snap_word = functools.lru_cache(maxsize=65536)(self._snap_word)  # type: ignore[method-assign]

    def _encode(self, units: Sequence[str]) -> str:
        """A word as one private-use character per grapheme: rapidfuzz's distance is then graphemes'."""
        return "".join(self._codes.setdefault(u, chr(0xF0000 + len(self._codes))) for u in units)

    def __contains__(self, word: str) -> bool:
        return word in self.words

    def _candidates(self, units: list[str], distance: int) -> list[tuple[str, int]]:
        query = self._encode(units)
        found = []
        for length in range(len(units) - distance, len(units) + distance + 1):
            words, codes = self._by_len.get(length, ((), ()))
            if not words:
                continue
            for _, score, index in process.extract(query, codes, scorer=Levenshtein.distance,
                                                   score_cutoff=distance, limit=None):
                found.append((words[index], int(score)))
        return found

    def _snap_word(self, word: str) -> str:
        """The in-lexicon replacement of one out-of-lexicon word, or the word (module docstring)."""
        units = graphemes(word)
        if word in self.words or len(units) < MIN_GRAPHEMES:
            return word
        if self.script and foreign_fraction(word, self.script)[0] > 0:
            return word
        best = [w for w, d in self._candidates(units, 1) if d == 1]
        if len(best) == 1:
            return best[0]
        if len(best) > 1:
            ranked = sorted(best, key=lambda w: self.freq.get(w, 0.0), reverse=True)
            top, second = (self.freq.get(w, 0.0) for w in ranked[:2])
            if top > 0 and top >= FREQ_RATIO * second:
                return ranked[0]
        return word

    def snap(self, text: str) -> str:
        """`text` with every out-of-lexicon word snapped where the gates allow (spacing kept)."""
        parts = regex.split(r"(\s+)", text)
        out = []
        for part in parts:
            if not part or part.isspace():
                out.append(part)
                continue
            lead, core, trail = _WORD.match(part).groups()  # type: ignore[union-attr]
            out.append(lead + (self.snap_word(core) if core else "") + trail)
        return "".join(out)

    def breaks(self, noisy: str, output: str, lang: str | None = None) -> str | None:
        """'a → b' for the first word a model's change turned from in-lexicon to out-of-lexicon, else None."""
        before = [_core(w) for w in noisy.split()]
        after = [_core(w) for w in output.split()]
        matcher = SequenceMatcher(a=before, b=after, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "replace":
                continue
            for a, b in zip(before[i1:i2], after[j1:j2], strict=False):
                if a != b and a in self.words and b and b not in self.words:
                    return f"{a} → {b}"
        return None


def _core(word: str) -> str:
    return _WORD.match(word).group(2)  # type: ignore[union-attr]


@functools.lru_cache(maxsize=8)
def load_lexicon(lang: str) -> Lexicon:
    """The lexicon of `lang`: its Debian dictionary plus the frequency list (cached per process)."""
    freq = frequency_list(lang)
    words = frozenset(dictionary_words(lang)) | frozenset(freq)
    return Lexicon(lang, words, freq)


def lexicons(langs: Iterable[str]) -> tuple[dict[str, Lexicon], dict[str, str]]:
    """({lang: Lexicon} for the languages whose dictionary is installed, {lang: why not} for the rest)."""
    found, missing = {}, {}
    for lang in sorted(set(langs)):
        try:
            found[lang] = load_lexicon(lang)
        except LexiconMissing as exc:
            missing[lang] = str(exc)
    return found, missing


# ---------------------------------------------------------------------------------- running them


def run_baselines(rows: Sequence[Mapping[str, Any]], texts: Sequence[str] | None = None
                  ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """({baseline: one output per row}, {lang: why the lexicon baseline left it as it was}).

    `texts` are the inputs as every system gets them (normalized); default the rows' `noisy`. The
    lexicon baseline applies the rules first (its words are then clean of OCR punctuation), so it is
    at least the rules baseline plus the snap; a language without its dictionary gets the rules only,
    and is named in the second dict."""
    texts = list(texts) if texts is not None else [str(r["noisy"]) for r in rows]
    langs = [str(r.get("lang") or _lang_of(r, t)) for r, t in zip(rows, texts, strict=True)]
    found, missing = lexicons(langs)
    rules = [rules_cleanup(t, lang) for t, lang in zip(texts, langs, strict=True)]
    lexicon = [found[lang].snap(r) if lang in found else r for r, lang in zip(rules, langs, strict=True)]
    return {"rules": rules, "lexicon": lexicon}, missing


def strongest_of(cers: Mapping[str, float]) -> str:
    """The baseline with the lowest CER; on a tie the simpler one (BASELINES' order: rules first)."""
    return min(cers, key=lambda b: (cers[b], BASELINES.index(b) if b in BASELINES else len(BASELINES), b))


def _lang_of(row: Mapping[str, Any], text: str) -> str:
    """A row's language: its `lang`, else from its `set` name (indomain-hi), else from its script."""
    name = str(row.get("set") or "")
    tail = name.rsplit("-", 1)[-1]
    if tail in LANG_SCRIPTS:
        return tail
    script = detect_script(text)
    return next((lang for lang, s in LANG_SCRIPTS.items() if s == script), "?")
