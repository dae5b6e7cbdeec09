"""Real-OCR pairs on natural text (data/natural, tools/natural_text.py): the held-out sets and the
training pairs of the quality runs (issue 22), both read by Tesseract from rendered, damaged lines
(features/ocr_pairs.py).

  heldout  per language, from <lang>.heldout.jsonl (source units no training line comes from):
             indomain-<lang>    `rows` natural sentences as written
             unfamiliar-<lang>  `rows` other natural sentences with about `swap` of their words replaced
                                by pseudo-words (learning_signal.pseudo_words: script-like words in no
                                word list and no training line), punctuation kept: names, rare words
           both rendered with the `heldout` fonts and `heldout` damage (disjoint from training's), as the
           learning signal's held-out sets are. Written as <out>/heldout/<set>.jsonl + <out>/heldout.json
           (counts, CER, sha256 of each file, how they were made). Every planned line is a row: a line
           Tesseract reads as empty is kept as noisy "" with its clean truth (and listed in the summary).
  dev      per language, `--rows` (150) held-out-side sentences that neither held-out set uses, about `swap` of
           their words replaced by pseudo-words of their own draw (none of the held-out sets' or training's
           words), rendered with the TRAINING fonts and damage: <out>/dev/unfamiliar-<lang>.jsonl + <out>/dev.json.
           The eval stage scores them beside the eval split (eval.dev_sets) and the confidence threshold must
           keep over-correction within eval.max_over_correction on them too: the eval split has no unfamiliar
           words, and a threshold chosen on it alone let the first final change 9-26 % of the held-out
           unfamiliar sets' correct lines. They are for choosing; the held-out sets stay for judging.
  rare     training pairs that teach leaving unknown words alone: per language `--rows` (2000) training-side
           sentences with about `swap` (0.3) of their words replaced by real dictionary words found in no
           natural line and no held-out or dev set, only lines the data stage's hash puts in TRAIN, rendered
           with the training fonts and damage: <out>/ocr-rare-<lang>.jsonl + <out>/rare.json (committed packed
           as data/natural/train-pairs/rare-words.tar.xz; `assemble --rare-from` adds them).
  restore-empty  sets made before empty reads were kept: put those lines back as rows from the natural
           text and the summaries (no Tesseract), and update the summaries and heldout.json.
  train    per language, the <lang>.train.jsonl lines (+ data/clean's hand-written lines) rendered
           `variants` times each (variant k: seed + k, so a new font, size and damage per copy) with
           EVERY training font of the script that Debian ships (TRAIN_FONTS: the held-out families
           Noto Serif, Samyak and Mukti excluded) and the `train` damage kinds; when the natural lines
           give fewer than `pairs` rows, composed lines (learning_signal.compose) top them up. Written
           as <out>/ocr-<lang>.jsonl (+ .summary.json per variant) and <out>/train.json (counts, per-font
           CER, engine, fonts with their sha256).
  assemble copy held-out sets and training pairs into a data-stage input folder with the index that
           learning_signal.check_real_input / heldout_eval read (signal.json); --real-share < 1 adds
           noise fitted to the real pairs (noise_fit) on training-side lines.

Throughput: one Tesseract process per worker (OMP_THREAD_LIMIT=1); measured here (2 shared cores,
niced) and on the GPU box's 16 cores: see bench/quality/README.md.

Knobs: --natural (folder of natural_text's output), --rows, --swap, --variants, --pairs, --workers,
--seed, --fonts (train: a font list instead of TRAIN_FONTS).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import regex

from bhasha_build.core.config import REPO_ROOT
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl, jsonl_objects, sha256_file
from bhasha_build.core.text import LANG_SCRIPTS

LANGS = ("hi", "bn", "ta")
NATURAL = REPO_ROOT / "data" / "natural"
# Every Debian font of the script (package in the comment) except the held-out families (ocr_pairs.FONTS'
# "heldout": Noto Serif *, Samyak *, Mukti *), which training must never see.
TRAIN_FONTS: dict[str, list[str]] = {
    "Devanagari": [
        "NotoSansDevanagari-Regular.ttf", "NotoSansDevanagari-Bold.ttf",          # fonts-noto-core
        "NotoSansDevanagariUI-Regular.ttf", "NotoSansDevanagariUI-Bold.ttf",      # fonts-noto-ui-core
        "Lohit-Devanagari.ttf", "Lohit-Marathi.ttf", "Lohit-Nepali.ttf",          # fonts-lohit-deva(-marathi,-nepali)
        "chandas1-2.ttf", "kalimati.ttf", "samanata.ttf",                         # fonts-deva-extra
        "Gargi.ttf", "nakula.ttf", "sahadeva.ttf", "Sarai.ttf",                   # fonts-gargi/-nakula/-sahadeva/-sarai
        "AnnapurnaSIL-Regular.ttf", "AnnapurnaSIL-Bold.ttf",                      # fonts-sil-annapurna
        "Aksharyogini2Normal.ttf",                                                # fonts-aksharyogini2
    ],
    "Bengali": [
        "NotoSansBengali-Regular.ttf", "NotoSansBengali-Bold.ttf",                # fonts-noto-core
        "NotoSansBengaliUI-Regular.ttf", "NotoSansBengaliUI-Bold.ttf",            # fonts-noto-ui-core
        "Lohit-Bengali.ttf", "Lohit-Assamese.ttf",                                # fonts-lohit-beng-*
        "Ani.ttf", "JamrulNormal.ttf", "LikhanNormal.ttf", "MitraMono.ttf",       # fonts-beng-extra
    ],
    "Tamil": [
        "NotoSansTamil-Regular.ttf", "NotoSansTamil-Bold.ttf",                    # fonts-noto-core
        "NotoSansTamilUI-Regular.ttf", "NotoSansTamilUI-Bold.ttf",                # fonts-noto-ui-core
        "Lohit-Tamil.ttf", "Lohit-Tamil-Classical.ttf",                           # fonts-lohit-taml(-classical)
        "MeeraInimai-Regular.ttf",                                                # fonts-meera-inimai
    ],
}
FONT_DEBS = ("fonts-noto-core", "fonts-noto-ui-core", "fonts-lohit-deva", "fonts-lohit-deva-marathi",
             "fonts-lohit-deva-nepali", "fonts-deva-extra", "fonts-gargi", "fonts-nakula", "fonts-sahadeva",
             "fonts-sarai", "fonts-sil-annapurna", "fonts-aksharyogini2", "fonts-samyak-deva",
             "fonts-lohit-beng-bengali", "fonts-lohit-beng-assamese", "fonts-beng-extra", "fonts-lohit-taml",
             "fonts-lohit-taml-classical", "fonts-meera-inimai", "fonts-samyak-taml")
HELDOUT_INDEX = "heldout.json"
TRAIN_INDEX = "train.json"
DEV_DIR, DEV_INDEX = "dev", "dev.json"
RARE_INDEX = "rare.json"


class NaturalPairsError(BhashaError):
    """Missing natural text or fonts (one line)."""


def _rows(path: Path, missing: str) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file; a missing file or a bad line is one NaturalPairsError line."""
    return [obj for _, obj in jsonl_objects(path, NaturalPairsError, missing)]


def _read_natural(natural: Path, lang: str, side: str) -> list[dict[str, Any]]:
    path = natural / f"{lang}.{side}.jsonl"
    if not path.is_file():
        raise NaturalPairsError(f"{path}: missing; run `invoke natural-text` first")
    return _rows(path, "natural text")


_WORD = regex.compile(r"^(\p{P}*)([\p{L}\p{M}\p{N}]+)(\p{P}*)$")
_LETTERS = regex.compile(r"[\p{L}\p{M}]+")


def _words(rows: Any) -> set[str]:
    """The letter-words of every row's `clean` line."""
    return {w for r in rows for w in _LETTERS.findall(r["clean"])}


def swap_words(line: str, strange: list[str], share: float, rng: random.Random) -> tuple[str, int]:
    """`line` with about `share` of its words (letters only, ≥ 2 characters) replaced by pseudo-words,
    punctuation around each word kept; returns (line, words swapped)."""
    tokens = line.split(" ")
    slots = [i for i, t in enumerate(tokens) if (m := _WORD.match(t)) and len(m.group(2)) >= 2]
    if not slots:
        return line, 0
    k = max(1, round(share * len(slots)))
    for i in rng.sample(slots, k):
        lead, _, trail = _WORD.match(tokens[i]).groups()
        tokens[i] = f"{lead}{rng.choice(strange)}{trail}"
    return " ".join(tokens), k


def _heldout_order(natural: Path, lang: str, seed: int) -> tuple[list[dict[str, Any]], random.Random]:
    """`lang`'s held-out-side lines in the seeded order the held-out sets (then the dev set) take them from,
    and the generator that shuffled them (heldout_plan draws its pseudo-words from it next)."""
    rng = random.Random(f"{seed}\0heldout\0{lang}")
    lines = _read_natural(natural, lang, "heldout")
    rng.shuffle(lines)
    return lines, rng


def heldout_plan(natural: str | Path, lang: str, rows: int = 300, swap: float = 0.4, seed: int = 3407
                 ) -> dict[str, list[dict[str, Any]]]:
    """The lines of `lang`'s two held-out sets, in their rows' order ({"indomain": [...], "unfamiliar": [...]},
    each row {"id", "clean", "source", "unit", ...}): seeded, so the same natural text gives the same plan."""
    from bhasha_build.tools.learning_signal import pseudo_words

    natural = Path(natural)
    lines, rng = _heldout_order(natural, lang, seed)
    if len(lines) < 2 * rows:
        raise NaturalPairsError(f"{natural}/{lang}.heldout.jsonl: {len(lines)} lines, {2 * rows} needed")
    strange = pseudo_words(lang, 4 * rows, rng, avoid=_words(_read_natural(natural, lang, "train")))
    swapped = []
    for row in lines[rows:2 * rows]:
        text, k = swap_words(row["clean"], strange, swap, rng)
        swapped.append({**row, "id": f"{row['id']}-unf", "clean": text, "swapped_words": k})
    return {"indomain": lines[:rows], "unfamiliar": swapped}


def _repo_relative(path: Path) -> str:
    """`path` as an index records it: relative to the repository when inside it."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def dev_plan(natural: str | Path, lang: str, rows: int = 150, heldout_rows: int = 300, swap: float = 0.4,
             seed: int = 3407) -> list[dict[str, Any]]:
    """The lines of `lang`'s dev set: held-out-side sentences that neither held-out set uses (heldout_plan's
    order, after its 2 x `heldout_rows`), with about `swap` of their words replaced by pseudo-words of their
    own draw (in no training line and in neither held-out set). Seeded like heldout_plan."""
    from bhasha_build.tools.learning_signal import pseudo_words

    natural = Path(natural)
    spare = _heldout_order(natural, lang, seed)[0][2 * heldout_rows:]
    if len(spare) < rows:
        raise NaturalPairsError(f"{natural}/{lang}.heldout.jsonl: {len(spare)} lines left after the held-out "
                                f"sets' {2 * heldout_rows}, {rows} needed for the dev set")
    held = heldout_plan(natural, lang, heldout_rows, swap, seed)
    words = _words(_read_natural(natural, lang, "train")) | _words(r for kind in held.values() for r in kind)
    rng = random.Random(f"{seed}\0dev\0{lang}")
    strange = pseudo_words(lang, 4 * rows, rng, avoid=words)
    out = []
    for row in spare[:rows]:
        text, k = swap_words(row["clean"], strange, swap, rng)
        out.append({**row, "id": f"{row['id']}-dev", "clean": text, "swapped_words": k})
    return out


def _render(chosen: list[dict[str, Any]], lang: str, dst: Path, fonts: str, degrade: str, seed: int,
            workers: int | None, keep_empty: bool) -> dict[str, Any]:
    """The planned rows `chosen` rendered and read by Tesseract (features/ocr_pairs.py) into `dst`, each pair
    with its natural source attached; returns ocr_pairs' summary."""
    import tempfile

    from bhasha_build.features.ocr_pairs import ocr_pairs

    with tempfile.TemporaryDirectory(prefix="bhasha-natural-") as tmp:
        src = Path(tmp) / dst.name
        atomic_write_jsonl(src, ({"id": r["id"], "lang": lang, "clean": r["clean"]} for r in chosen))
        info = ocr_pairs(src, dst, lang, fonts=fonts, degrade=degrade, seed=seed, workers=workers,
                         keep_empty=keep_empty)
    _attach_sources(dst, {r["id"]: r for r in chosen})
    return info


def make_dev(out: str | Path, natural: str | Path = NATURAL, rows: int = 150, swap: float = 0.4,
             seed: int = 3407, workers: int | None = None, langs: tuple[str, ...] = LANGS,
             heldout_rows: int = 300) -> dict[str, Any]:
    """The dev sets (see the module docstring): <out>/dev/unfamiliar-<lang>.jsonl + <out>/dev.json. Rendered
    with the TRAINING fonts and damage, so that what they add to the eval split is the unfamiliar words
    alone; every planned line is a row (an empty read is noisy "")."""
    out_dir, natural = Path(out), Path(natural)
    dev_dir = out_dir / DEV_DIR
    dev_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"natural": _repo_relative(natural), "rows": rows, "swap": swap, "seed": seed,
                             "heldout_rows": heldout_rows, "fonts": "training (TRAIN_FONTS)", "damage": "train",
                             "natural_sources": sha256_file(natural / "SOURCES.json"), "sets": {}}
    for lang in langs:
        dst = dev_dir / f"unfamiliar-{lang}.jsonl"
        info = _render(dev_plan(natural, lang, rows, heldout_rows, swap, seed), lang, dst,
                       ",".join(train_fonts(lang)), "train", seed + 101, workers, keep_empty=True)
        index["sets"][f"unfamiliar-{lang}"] = {
            **{k: info[k] for k in ("lines", "pairs", "empty_ocr", "identity_rows", "cer", "seconds",
                                    "lines_per_s", "cached_lines", "engine")},
            "sha256": sha256_file(dst)}
    atomic_write_json(out_dir / DEV_INDEX, index)
    return index


def rare_plan(natural: str | Path, lang: str, lines: int = 2000, swap: float = 0.3, seed: int = 3407,
              eval_fraction: float = 0.02, avoid: set[str] | None = None) -> list[dict[str, Any]]:
    """Training lines with words the model has not seen: `lines` training-side sentences (seeded order) with
    about `swap` of their words replaced by REAL words of the language's Debian dictionary (core/baselines
    dictionary_words: 3+ letters, in no natural line of either side and not in `avoid`), kept only where the
    data stage's hash puts the line in TRAIN (split_fraction >= eval_fraction), so the eval split is the same
    as without them. Not the held-out and dev sets' pseudo-word generator: what is learnt from these is to
    leave an unknown but well-formed word alone, not that generator's shapes."""
    from bhasha_build.core.baselines import dictionary_words
    from bhasha_build.core.text import normalize_text
    from bhasha_build.stages.data import split_fraction

    natural = Path(natural)
    seen = _words(r for side in ("train", "heldout") for r in _read_natural(natural, lang, side)) | (avoid or set())
    words = sorted({w for w in dictionary_words(lang) if _LETTERS.fullmatch(w) and len(regex.findall(r"\X", w)) >= 3}
                   - seen)
    if not words:
        raise NaturalPairsError(f"{lang}: no dictionary word outside the natural text")
    rng = random.Random(f"{seed}\0rare\0{lang}")
    train = _read_natural(natural, lang, "train")
    rng.shuffle(train)
    out: list[dict[str, Any]] = []
    for n in range(3 * lines):
        if len(out) == lines:
            break
        row = train[n % len(train)]
        text, k = swap_words(row["clean"], words, swap, rng)
        if k and split_fraction(normalize_text(text, "auto"), seed) >= eval_fraction:  # as the data stage hashes
            out.append({**row, "id": f"{row['id']}-rare{n // len(train)}", "clean": text, "swapped_words": k})
    return out


def make_rare(out: str | Path, natural: str | Path = NATURAL, lines: int = 2000, swap: float = 0.3,
              seed: int = 3407, workers: int | None = None, langs: tuple[str, ...] = LANGS,
              eval_fraction: float = 0.02) -> dict[str, Any]:
    """The rare-word training pairs (see the module docstring): <out>/ocr-rare-<lang>.jsonl + <out>/rare.json,
    rendered with the training fonts and damage. The held-out and dev sets' words are avoided too."""
    out_dir, natural = Path(out), Path(natural)
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"natural": _repo_relative(natural), "lines": lines, "swap": swap, "seed": seed,
                             "eval_fraction": eval_fraction, "fonts": "training (TRAIN_FONTS)", "damage": "train",
                             "words": "the Debian dictionary (core/baselines.dictionary_words), outside the natural "
                                      "text and the held-out and dev sets", "langs": {}}
    for lang in langs:
        avoid = _words(r for folder in (natural / "heldout", natural / DEV_DIR)
                       for path in folder.glob(f"*-{lang}.jsonl") for r in _rows(path, "a held-out or dev set"))
        chosen = rare_plan(natural, lang, lines, swap, seed, eval_fraction, avoid)
        dst = out_dir / f"ocr-rare-{lang}.jsonl"
        info = _render(chosen, lang, dst, ",".join(train_fonts(lang)), "train", seed + 202, workers,
                       keep_empty=False)
        index["langs"][lang] = {**{k: info[k] for k in ("lines", "pairs", "empty_ocr", "identity_rows", "cer",
                                                         "seconds", "lines_per_s", "cached_lines", "engine")},
                                "swapped_words": sum(r["swapped_words"] for r in chosen), "sha256": sha256_file(dst)}
    atomic_write_json(out_dir / RARE_INDEX, index)
    return index


def make_heldout(out: str | Path, natural: str | Path = NATURAL, rows: int = 300, swap: float = 0.4,
                 seed: int = 3407, workers: int | None = None, langs: tuple[str, ...] = LANGS) -> dict[str, Any]:
    """The six held-out sets (see the module docstring); returns the index written to <out>/heldout.json.
    Every planned line is a row: a line Tesseract reads as empty is the noisy "" (ocr_pairs keep_empty)."""
    out_dir, natural = Path(out), Path(natural)
    held_dir = out_dir / "heldout"
    held_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"natural": str(natural), "rows": rows, "swap": swap, "seed": seed, "sets": {},
                             "natural_sources": sha256_file(natural / "SOURCES.json"), "kept_empty": True}
    for lang in langs:
        for kind, chosen in heldout_plan(natural, lang, rows, swap, seed).items():
            dst = held_dir / f"{kind}-{lang}.jsonl"
            info = _render(chosen, lang, dst, "heldout", "heldout", seed, workers, keep_empty=True)
            index["sets"][f"{kind}-{lang}"] = {
                **{k: info[k] for k in ("lines", "pairs", "empty_ocr", "identity_rows", "cer", "seconds",
                                        "lines_per_s", "fonts", "engine")},
                "sources": dict(Counter(r["source"] for r in chosen)),
                "sha256": sha256_file(dst)}
    atomic_write_json(out_dir / HELDOUT_INDEX, index)
    return index


def restore_empty(out: str | Path, natural: str | Path = NATURAL) -> dict[str, Any]:
    """Held-out sets written before empty reads were kept (ocr_pairs dropped them): put each line its
    summary lists under empty_rows back as a row (noisy "", its clean truth, font and damage from the
    summary, source from the natural text) at its place in the plan, without running Tesseract. The plan
    is rebuilt from <out>/heldout.json's rows/swap/seed and must give exactly the rows the file has, in its
    order; then each summary (pairs, cer, kept_empty, restored) and heldout.json (pairs, cer, sha256) are
    updated. Returns {set: rows restored}; a set with nothing to restore is left as it is."""
    from bhasha_build.core.metrics import corpus_cer
    from bhasha_build.features.ocr_pairs import engine_tag, summary_path

    out_dir, natural = Path(out), Path(natural)
    index_path = out_dir / HELDOUT_INDEX
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NaturalPairsError(f"{index_path}: {exc}") from None
    if index.get("natural_sources") != sha256_file(natural / "SOURCES.json"):
        raise NaturalPairsError(f"{natural}/SOURCES.json: not the natural text {index_path} was made from")
    restored: dict[str, int] = {}
    plans: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in sorted(index["sets"]):
        kind, _, lang = name.partition("-")
        path = out_dir / "heldout" / f"{name}.jsonl"
        summary = json.loads(summary_path(path).read_text(encoding="utf-8"))
        have = _rows(path, "a held-out set")
        by_id = {r["id"]: r for r in have}
        empty = {e["id"]: e for e in summary.get("empty_rows", []) if e["id"] not in by_id}
        if not empty:
            restored[name] = 0
            continue
        if lang not in plans:
            plans[lang] = heldout_plan(natural, lang, index["rows"], index["swap"], index["seed"])
        chosen = plans[lang][kind]
        nfc = {r["id"]: unicodedata.normalize("NFC", r["clean"]) for r in chosen}
        if [r["id"] for r in chosen if r["id"] not in empty] != [r["id"] for r in have] or any(
                by_id[i]["clean"] != clean for i, clean in nfc.items() if i in by_id):
            raise NaturalPairsError(f"{path}: its rows are not the plan's (rows {index['rows']}, swap "
                                    f"{index['swap']}, seed {index['seed']}) less the empty reads; remake the set")
        if missing := sorted(set(empty) - {r["id"] for r in chosen}):
            raise NaturalPairsError(f"{summary_path(path)}: empty_rows {', '.join(missing)} not in the plan")
        tag = engine_tag(summary["engine"])
        rows = []
        for r in chosen:
            if r["id"] in empty:
                e = empty[r["id"]]
                rows.append({"id": r["id"], "lang": lang, "noisy": "", "clean": nfc[r["id"]],
                             "ocr": {"font": e["font"], "degrade": e["degrade"], **tag},
                             "source": {"package": r.get("source"), "unit": r.get("unit")}})
            else:
                rows.append(by_id[r["id"]])
        atomic_write_jsonl(path, rows)
        cer = round(corpus_cer([r["noisy"] for r in rows], [r["clean"] for r in rows]), 4)
        summary.update({"pairs": len(rows), "kept_empty": True, "cer": cer,
                        "restored_empty_rows": f"{len(empty)} empty read(s) put back as rows (noisy \"\") by "
                                               f"natural_pairs restore-empty, without rerunning Tesseract"})
        atomic_write_json(summary_path(path), summary)
        index["sets"][name].update({"pairs": len(rows), "cer": cer, "sha256": sha256_file(path)})
        restored[name] = len(empty)
    index["kept_empty"] = True
    atomic_write_json(index_path, index)
    return restored


def _attach_sources(path: Path, by_id: dict[str, dict[str, Any]]) -> None:
    """Add each row's natural source (package) and unit to the pairs file ocr_pairs wrote."""
    rows = _rows(path, "the pairs ocr_pairs wrote")
    for row in rows:
        src = by_id.get(row["id"], {})
        row["source"] = {"package": src.get("source"), "unit": src.get("unit")}
    atomic_write_jsonl(path, rows)


def train_fonts(lang: str) -> list[str]:
    """The training fonts of `lang` that are installed (BHASHA_FONT_DIRS included); at least one."""
    from bhasha_build.features.ocr_pairs import _installed_fonts

    names = TRAIN_FONTS[LANG_SCRIPTS[lang]]
    have = [n for n in names if n in _installed_fonts()]
    if not have:
        raise NaturalPairsError(f"no training font of {lang} installed (want {', '.join(names)}; Debian "
                                f"packages {', '.join(FONT_DEBS)})")
    return have


def make_train(out: str | Path, natural: str | Path = NATURAL, pairs: int = 20000, variants: int = 5,
               seed: int = 3407, workers: int | None = None, langs: tuple[str, ...] = LANGS,
               fonts: str | None = None, hand_written: bool = True, min_changed: int = 0) -> dict[str, Any]:
    """Training pairs (see the module docstring); returns the index written to <out>/train.json.
    min_changed: render further variants (up to 3x `variants`) until at least this many pairs per language
    differ after the data stage's normalization (zwj_policy auto), so that a 15 % cap on unchanged rows
    still leaves min_changed / 0.85 training rows; the pairs are then not cut to `pairs`."""
    from bhasha_build.core.text import normalize_text

    def changed_rows(rows: list[dict[str, Any]]) -> int:
        return sum(normalize_text(r["noisy"], "auto") != normalize_text(r["clean"], "auto") for r in rows)

    import tempfile

    from bhasha_build.features.noise import read_clean
    from bhasha_build.features.ocr_pairs import ocr_pairs
    from bhasha_build.tools.learning_signal import CLEAN_LINES, compose

    out_dir, natural = Path(out), Path(natural)
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"natural": str(natural), "pairs_wanted": pairs, "variants": variants, "seed": seed,
                             "min_changed": min_changed, "langs": {}}
    for lang in langs:
        font_spec = fonts or ",".join(train_fonts(lang))
        held = {r["clean"] for r in _read_natural(natural, lang, "heldout")}
        lines = [(r["id"], r["clean"]) for r in _read_natural(natural, lang, "train")]
        if hand_written:
            hand = read_clean(CLEAN_LINES / f"{lang}.txt", lang)
            lines += [(f"clean-{lang}-{no:05d}", text) for no, _, text, _ in hand if text not in held]
        seen = {text for _, text in lines} | held
        need = max(0, pairs - variants * len(lines))
        composed = compose(lang, -(-need // variants), random.Random(f"{seed}\0compose\0{lang}"), seen) if need else []
        lines += [(f"comp-{lang}-{i:06d}", text) for i, text in enumerate(composed)]
        # each variant renders a slice of the lines (all of them while that stays under `pairs`)
        per_variant = min(len(lines), -(-pairs // variants))
        rows: list[dict[str, Any]] = []
        summaries = []
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bhasha-natural-train-") as tmp:
            k = 0
            while k < variants or (changed_rows(rows) < min_changed and k < 3 * variants):
                rng = random.Random(f"{seed}\0variant\0{lang}\0{k}")
                chosen = rng.sample(lines, per_variant) if per_variant < len(lines) else lines
                src = Path(tmp) / f"v{k}.jsonl"
                atomic_write_jsonl(src, ({"id": f"{i}-v{k}", "lang": lang, "clean": t} for i, t in chosen))
                dst = Path(tmp) / f"ocr-v{k}.jsonl"
                info = ocr_pairs(src, dst, lang, fonts=font_spec, degrade="train", seed=seed + k, workers=workers)
                summaries.append({k2: info[k2] for k2 in ("lines", "pairs", "empty_ocr", "ocr_failed", "identity_rows",
                                                          "cer", "seconds", "lines_per_s", "cached_lines")})
                rows += _rows(dst, "the pairs ocr_pairs wrote")
                fonts_info, engine = info["fonts"], info["engine"]
                k += 1
        if not min_changed:
            rows = rows[:pairs]
        dst = out_dir / f"ocr-{lang}.jsonl"
        atomic_write_jsonl(dst, rows)
        from bhasha_build.core.metrics import corpus_cer

        by_font: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_font[row["ocr"]["font"]].append(row)
        index["langs"][lang] = {
            "pairs": len(rows), "unchanged": sum(r["noisy"] == r["clean"] for r in rows), "renders": k,
            "changed_after_normalization": changed_rows(rows),
            "lines": {"natural": sum(1 for i, _ in lines if i.startswith("nat-")),
                      "hand_written": sum(1 for i, _ in lines if i.startswith("clean-")), "composed": len(composed)},
            "cer": round(corpus_cer([r["noisy"] for r in rows], [r["clean"] for r in rows]), 4) if rows else None,
            "cer_by_font": {f: {"rows": len(rs), "cer": round(corpus_cer([r["noisy"] for r in rs],
                                                                        [r["clean"] for r in rs]), 4)}
                            for f, rs in sorted(by_font.items())},
            "fonts": {name: {"path": path, "sha256": sha256_file(path)} for name, path in fonts_info.items()},
            "engine": engine, "variants": summaries, "seconds": round(time.monotonic() - start, 1),
            "sha256": sha256_file(dst)}
    atomic_write_json(out_dir / TRAIN_INDEX, index)
    return index


def assemble(input_dir: str | Path, heldout_from: str | Path, train_from: str | Path, real_share: float = 1.0,
             natural: str | Path = NATURAL, eval_fraction: float = 0.02, seed: int = 3407,
             rare_from: str | Path | None = None) -> dict[str, Any]:
    """A data-stage input folder: ocr-<lang>.jsonl (training), heldout/*.jsonl, and signal.json listing
    every file's sha256 (what learning_signal.check_real_input verifies before scoring).

    real_share < 1: fitted-<lang>.jsonl adds rows of noise fitted to the real pairs (noise_fit) so that the
    real pairs are `real_share` of the training rows; their clean lines are natural training lines (then
    composed ones) whose data-stage hash puts them in TRAIN (split_fraction >= eval_fraction under `seed`),
    so every variant of the sweep has the same eval split.

    rare_from: a folder of `rare`'s output: its ocr-rare-<lang>.jsonl join the training pairs (their lines were
    chosen in TRAIN by the same hash: the eval split stays the same)."""
    from bhasha_build.features import noise_fit
    from bhasha_build.stages.data import split_fraction
    from bhasha_build.tools.learning_signal import INDEX, compose

    dst, held_src, train_src = Path(input_dir), Path(heldout_from), Path(train_from)
    if not 0 < real_share <= 1:
        raise NaturalPairsError(f"real_share {real_share}: must be in (0, 1]")
    (dst / "heldout").mkdir(parents=True, exist_ok=True)
    for path in sorted((held_src / "heldout").glob("*.jsonl")):
        shutil.copyfile(path, dst / "heldout" / path.name)
    for path in sorted(train_src.glob("ocr-*.jsonl")):
        if not path.name.startswith("ocr-rare-"):
            shutil.copyfile(path, dst / path.name)
    for path in sorted(dst.glob("ocr-rare-*.jsonl")):
        path.unlink()  # an earlier assemble's, when this one is without them
    rare_index = None
    if rare_from is not None:
        rare_src = Path(rare_from)
        if not (rare_src / RARE_INDEX).is_file():
            raise NaturalPairsError(f"{rare_src}: no {RARE_INDEX} (natural_pairs rare makes it)")
        rare_index = json.loads((rare_src / RARE_INDEX).read_text(encoding="utf-8"))
        for path in sorted(rare_src.glob("ocr-rare-*.jsonl")):
            shutil.copyfile(path, dst / path.name)
    fitted: dict[str, int] = {}
    if real_share < 1:
        real = [row for path in sorted(dst.glob("ocr-*.jsonl")) if not path.name.startswith("ocr-rare-")
                for row in noise_fit.read_pairs(path)]
        model = noise_fit.fit(real)
        atomic_write_json(dst / "noise-model.json", model)
        for lang in sorted({r["lang"] for r in real}):
            n_real = sum(r["lang"] == lang for r in real)
            want = round(n_real * (1 - real_share) / real_share)
            held = {r["clean"] for r in _read_natural(Path(natural), lang, "heldout")}
            cleans = [r["clean"] for r in _read_natural(Path(natural), lang, "train")]
            cleans += compose(lang, want, random.Random(f"{seed}\0fitted\0{lang}"), set(cleans) | held)
            cleans = [c for c in cleans if split_fraction(c, seed) >= eval_fraction]
            rows = []
            for i in range(want):
                clean = cleans[i % len(cleans)]
                rng = random.Random(f"{seed}\0fitted\0{lang}\0{i}")
                noisy = noise_fit.sample(model, clean, lang, rng)
                rows.append({"id": f"fit-{lang}-{i:06d}", "lang": lang, "noisy": noisy, "clean": clean})
            atomic_write_jsonl(dst / f"fitted-{lang}.jsonl", rows)
            fitted[lang] = len(rows)
    files = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.json*") if p.name != INDEX)
    if not any(f.startswith("heldout/") for f in files) or not any(f.startswith("ocr-") for f in files):
        raise NaturalPairsError(f"{dst}: needs heldout/*.jsonl (from {held_src}) and ocr-*.jsonl (from {train_src})")
    index = {"made_by": "natural_pairs.assemble", "real_share": real_share, "fitted_rows": fitted,
             "rare": rare_index,
             "heldout": json.loads((held_src / HELDOUT_INDEX).read_text()),
             "train": json.loads((train_src / TRAIN_INDEX).read_text()),
             "files": {name: sha256_file(dst / name) for name in files}}
    atomic_write_json(dst / INDEX, index)
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.natural_pairs",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["heldout", "dev", "rare", "restore-empty", "train", "assemble"])
    parser.add_argument("--out", required=True, help="output folder (assemble: the data-stage input folder; "
                        "restore-empty: the folder holding heldout.json)")
    parser.add_argument("--natural", default=str(NATURAL), help="natural_text's output folder")
    parser.add_argument("--langs", default=",".join(LANGS))
    parser.add_argument("--rows", type=int, default=None, help="heldout: rows per set (300); dev: rows per "
                        "language (150); rare: lines per language (2000)")
    parser.add_argument("--swap", type=float, default=None, help="heldout/dev: share of words made pseudo-words "
                        "(0.4); rare: share replaced by dictionary words (0.3)")
    parser.add_argument("--pairs", type=int, default=20000, help="train: pairs per language")
    parser.add_argument("--variants", type=int, default=5, help="train: renders per line (new font/damage each)")
    parser.add_argument("--fonts", default=None, help="train: comma list of fonts instead of TRAIN_FONTS")
    parser.add_argument("--min-changed", type=int, default=0, help="train: render more (up to 3x --variants) "
                        "until this many pairs per language differ after normalization")
    parser.add_argument("--no-hand-written", action="store_true", help="train: leave data/clean's lines out")
    parser.add_argument("--workers", type=int, default=None, help="Tesseract processes (default: all CPUs)")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--heldout-from", default=None, help="assemble: folder with heldout/ + heldout.json")
    parser.add_argument("--train-from", default=None, help="assemble: folder with ocr-*.jsonl + train.json")
    parser.add_argument("--real-share", type=float, default=1.0, help="assemble: share of real pairs in training "
                        "(the rest: noise fitted to them)")
    parser.add_argument("--eval-fraction", type=float, default=0.02, help="assemble, rare: the profile's "
                        "data.eval_fraction")
    parser.add_argument("--rare-from", default=None, help="assemble: folder with ocr-rare-*.jsonl + rare.json "
                        "(natural_pairs rare) to add to the training pairs")
    args = parser.parse_args(argv)
    langs = tuple(args.langs.split(","))
    try:
        if args.what in ("heldout", "dev"):
            make = make_heldout if args.what == "heldout" else make_dev
            result = make(args.out, args.natural, args.rows or (300 if args.what == "heldout" else 150),
                          0.4 if args.swap is None else args.swap, args.seed, args.workers, langs)
            summary = {k: {f: v[f] for f in ("pairs", "cer", "identity_rows", "seconds")}
                       for k, v in result["sets"].items()}
        elif args.what == "rare":
            result = make_rare(args.out, args.natural, args.rows or 2000, 0.3 if args.swap is None else args.swap,
                               args.seed, args.workers, langs, args.eval_fraction)
            summary = {k: {f: v[f] for f in ("pairs", "cer", "identity_rows", "swapped_words", "seconds")}
                       for k, v in result["langs"].items()}
        elif args.what == "restore-empty":
            summary = restore_empty(args.out, args.natural)
        elif args.what == "train":
            result = make_train(args.out, args.natural, args.pairs, args.variants, args.seed, args.workers, langs,
                                args.fonts, not args.no_hand_written, args.min_changed)
            summary = {k: {f: v[f] for f in ("pairs", "unchanged", "changed_after_normalization", "renders", "cer",
                                             "seconds")}
                       for k, v in result["langs"].items()}
        else:
            if not (args.heldout_from and args.train_from):
                parser.error("assemble needs --heldout-from and --train-from")
            result = assemble(args.out, args.heldout_from, args.train_from, args.real_share, args.natural,
                              args.eval_fraction, args.seed, args.rare_from)
            summary = {"files": len(result["files"])}
    except BhashaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
