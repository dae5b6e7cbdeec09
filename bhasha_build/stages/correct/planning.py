"""`correct`'s documents: what a file is cut into (lines, their layout, the pieces sent), how it is put
back together, and the reference lines it is scored against.

``Planner.plan`` turns a file into a ``Document``; ``split_text`` cuts a long line's text to fit the
model; ``render_line`` writes a line back with each piece replaced; ``structure`` is a document's layout
without its text (tests and the demo compare input and output with it).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from bhasha_build.core.chat import SYSTEM_PROMPT, find_special_token
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.guard import REPLY_FACTOR, REPLY_MARGIN, reply_budget
from bhasha_build.core.inputs import windows
from bhasha_build.core.metrics import graphemes
from bhasha_build.core.text import LANG_SCRIPTS, detect_script, foreign_fraction, normalize_text
from bhasha_build.stages.correct.backends import Backend, CorrectError
from bhasha_build.stages.data import MAX_JSON_DEPTH, json_depth

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl",)
BOM = "\ufeff"
# The language recorded for a detected script: its first code in LANG_SCRIPTS (Devanagari → hi).
SCRIPT_LANG = {script: lang for lang, script in reversed(LANG_SCRIPTS.items())}
# Sentence ends: danda, double danda, OCR's | for a danda, . ? ! — followed by whitespace.
_SENTENCE_END = regex.compile(r"(?<=[।॥|.?!])\s+")
_SPACES = regex.compile(r"\s+")
_LETTER = regex.compile(r"\p{L}")
# A text longer than this many characters is cut on size (inputs.windows) before anything tokenizes it.
WINDOW_CHARS = 4096


@dataclass
class Piece:
    """One request: a piece of a line's text (the whole text unless the line is long)."""

    index: int  # within its file
    line: int  # 1-based physical line of the file
    original: str  # as in the file
    sent: str  # normalize_text(original): what the model sees
    lang: str | None
    max_tokens: int = 0  # num_predict for its reply
    held: str | None = None  # why it is never sent and kept as it is (special-token text in the input)


@dataclass
class Segment:
    """Text of a line (one form-feed section of it) made of pieces and the separators between them."""

    parts: list[str | int]  # literal text, or the index of a Piece


@dataclass
class Line:
    """A physical line: literal bytes around text segments; `row` for JSONL rows."""

    no: int
    ending: bytes
    parts: list[bytes | Segment] = field(default_factory=list)  # text lines
    row: dict[str, Any] | None = None  # JSONL: the parsed row; its noisy text is `parts`' segment
    prefix: bytes = b""  # JSONL: a BOM before the row
    reference: str | None = None

    @property
    def segments(self) -> list[Segment]:
        return [p for p in self.parts if isinstance(p, Segment)]


@dataclass
class Document:
    path: Path
    rel: str
    kind: str  # "text" | "jsonl"
    data: bytes
    lines: list[Line] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "file:line: reason" of lines kept untouched
    script: str | None = None  # the script most of the file's letters are in


def _split_physical(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(line number, content, ending) of every line; the last line may have no ending."""
    start, no = 0, 0
    while start < len(data):
        no += 1
        end = data.find(b"\n", start)
        if end < 0:
            content, ending, start = data[start:], b"", len(data)
        else:
            content, ending, start = data[start:end], b"\n", end + 1
            if content.endswith(b"\r"):
                content, ending = content[:-1], b"\r\n"
        yield no, content, ending


def _pack(units: list[tuple[str, str]], fits: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Join consecutive (text, separator-after) units while the joined text still fits."""
    out: list[tuple[str, str]] = []
    for text, sep in units:
        if out and fits(out[-1][0] + out[-1][1] + text):
            out[-1] = (out[-1][0] + out[-1][1] + text, sep)
        else:
            out.append((text, sep))
    return out


def _units(text: str, pattern: regex.Pattern[str]) -> list[tuple[str, str]]:
    units, pos = [], 0
    for m in pattern.finditer(text):
        units.append((text[pos:m.start()], m.group()))
        pos = m.end()
    units.append((text[pos:], ""))
    return [(t, s) for t, s in units if t] or [(text, "")]


def split_text(text: str, fits: Callable[[str], bool]) -> list[tuple[str, str]]:
    """``text`` (no outer whitespace) as (piece, separator-after) pairs that each fit: whole, else at
    sentence ends, else at spaces, else between graphemes. Joining piece + separator gives ``text``."""
    if len(text) > WINDOW_CHARS:  # cut on size first: the whole text is never tokenized (nor its graphemes listed)
        cut: list[tuple[str, str]] = []
        for chunk, space in windows(text, WINDOW_CHARS):
            sub = split_text(chunk, fits)
            cut.extend([*sub[:-1], (sub[-1][0], sub[-1][1] + space)])
        return _pack(cut, fits)
    if fits(text):
        return [(text, "")]
    pieces: list[tuple[str, str]] = []
    for sentence, sep in _units(text, _SENTENCE_END):
        if fits(sentence):
            pieces.append((sentence, sep))
            continue
        words: list[tuple[str, str]] = []
        for word, space in _units(sentence, _SPACES):
            if fits(word):
                words.append((word, space))
            else:  # a "word" longer than the budget: graphemes, the longest run that fits each time
                parts = _longest_fitting(graphemes(word), fits)
                words.extend((part, "") for part in parts[:-1])
                words.append((parts[-1], space))
        words[-1] = (words[-1][0], sep)
        pieces.extend(_pack(words, fits))
    return _pack(pieces, fits)


def _longest_fitting(units: list[str], fits: Callable[[str], bool]) -> list[str]:
    """`units` joined into consecutive runs, each the longest that fits (at least one unit), found by
    bisection: O(log n) fits calls per run instead of one per unit."""
    runs, i = [], 0
    while i < len(units):
        lo, hi = i + 1, len(units)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits("".join(units[i:mid])):
                lo = mid
            else:
                hi = mid - 1
        runs.append("".join(units[i:lo]))
        i = lo
    return runs


class Planner:
    """Turns files into Documents: layout, pieces (normalized, split to fit), languages."""

    def __init__(self, cfg: BuildConfig, backend: Backend, lang: str | None) -> None:
        self.zwj = cfg.data.zwj_policy
        self.max_line_bytes = cfg.data.max_line_bytes  # the longest line the project reads (the data stage's cap)
        self.lang = lang
        self.ratio = cfg.guard.max_length_ratio
        self.backend = backend
        self.count = functools.lru_cache(maxsize=8192)(backend.count_tokens)  # a line is counted once
        overhead = backend.count_tokens(SYSTEM_PROMPT) + 16  # ChatML turns around the system and user text
        # a prompt of n tokens and its reply budget must fit: n + reply_budget(n) <= num_ctx - overhead
        room = int((backend.num_ctx - overhead - REPLY_MARGIN) / (1 + REPLY_FACTOR))
        self.budget = max(8, min(cfg.correct.max_line_tokens, room))

    def fits(self, text: str) -> bool:
        return self.count(normalize_text(text, self.zwj)) <= self.budget

    def max_tokens(self, sent: str) -> int:
        """num_predict for a piece: its reply budget (core/guard.reply_budget)."""
        return reply_budget(self.count(sent))

    def _segment(self, doc: Document, no: int, text: str, lang: str | None) -> list[str | Segment]:
        """`text` as literal whitespace around a Segment of pieces (or literal when there is no letter)."""
        core = text.strip()
        if not core or not _LETTER.search(core):
            return [text]
        lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
        parts: list[str | int] = []
        if special := find_special_token(core):  # never sent raw (it would reach the model as a token): kept
            doc.pieces.append(Piece(len(doc.pieces), no, core, normalize_text(core, self.zwj),
                                    lang or self.lang or self._detect(core, doc.script), 0,
                                    held=f"special token in the input ({special.group()}); kept as it is"))
            parts.append(len(doc.pieces) - 1)
        for piece, sep in ([] if special else split_text(core, self.fits)):
            sent = normalize_text(piece, self.zwj)
            if sent and _LETTER.search(sent):
                detected = lang or self.lang or self._detect(sent, doc.script)
                doc.pieces.append(Piece(len(doc.pieces), no, piece, sent, detected,
                                        self.max_tokens(sent)))
                parts.append(len(doc.pieces) - 1)
            else:
                parts.append(piece)
            if sep:
                parts.append(sep)
        out: list[str | Segment] = []
        if lead:
            out.append(lead)
        out.append(Segment(parts))
        if trail:
            out.append(trail)
        return out

    def text_parts(self, doc: Document, no: int, text: str, lang: str | None) -> list[bytes | Segment]:
        """A line's text as literal bytes (form feeds, whitespace, BOM) and text segments."""
        parts: list[bytes | Segment] = []
        if text.startswith(BOM):
            parts.append(BOM.encode())
            text = text[1:]
        for i, section in enumerate(text.split("\f")):
            if i:
                parts.append(b"\f")
            for part in self._segment(doc, no, section, lang):
                parts.append(part.encode("utf-8") if isinstance(part, str) else part)
        return parts

    @staticmethod
    def _detect(text: str, file_script: str | None) -> str | None:
        """The language of a line: its file's script unless most of its letters are in another one
        (one foreign_fraction per line; detect_script, which tries every script, only then)."""
        if file_script and foreign_fraction(text, file_script)[0] <= 0.5:
            return SCRIPT_LANG[file_script]
        return SCRIPT_LANG.get(detect_script(text) or "")

    def plan(self, path: Path, rel: str, data: bytes | None = None) -> Document:
        data = path.read_bytes() if data is None else data
        kind = "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "text"
        sample = data[:16384].decode("utf-8", errors="replace")  # enough letters to tell the script
        doc = Document(path, rel, kind, data, script=detect_script(sample))
        for no, content, ending in _split_physical(data):
            line = Line(no, ending)
            doc.lines.append(line)
            if len(content) > self.max_line_bytes:  # capped before decoding or tokenizing, as the data stage does
                line.parts = [content]
                doc.problems.append(f"{rel}:{no}: {len(content)} bytes > data.max_line_bytes {self.max_line_bytes}; "
                                    "line kept as it was (split it into lines to correct it)")
                continue
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError as exc:
                line.parts = [content]
                doc.problems.append(f"{rel}:{no}: not UTF-8 (byte {exc.start + 1}); line kept as it was")
                continue
            if kind == "text":
                line.parts = self.text_parts(doc, no, text, None)
                continue
            if not text.strip() or text.strip() == BOM:
                line.parts = [content]
                continue
            row, reason = _parse_row(text.removeprefix(BOM))
            line.prefix = BOM.encode() if text.startswith(BOM) else b""
            if row is None:
                line.parts = [content]
                doc.problems.append(f"{rel}:{no}: {reason}; row kept as it was")
                continue
            line.row = row
            lang = row.get("lang") if isinstance(row.get("lang"), str) and row.get("lang") else None
            line.parts = self.text_parts(doc, no, row["noisy"], lang)
            if isinstance(row.get("clean"), str):
                line.reference = row["clean"]
        return doc


def _parse_row(text: str) -> tuple[dict[str, Any] | None, str]:
    if (depth := json_depth(text)) > MAX_JSON_DEPTH:  # the data stage's limit, checked before parsing
        return None, f"JSON nested too deep ({depth} levels, at most {MAX_JSON_DEPTH})"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    except RecursionError:  # not reachable under MAX_JSON_DEPTH; the parser's own limit
        return None, "JSON nested too deep"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    if not isinstance(row.get("noisy"), str):
        return None, "no string field 'noisy'"
    return row, ""


def segment_text(seg: Segment, texts: dict[int, str]) -> str:
    """A segment's text with each piece number replaced by its text in `texts`."""
    return "".join(texts.get(p, "") if isinstance(p, int) else p for p in seg.parts)


def render_line(line: Line, finals: dict[int, str]) -> bytes:
    """The corrected line: literal bytes as they were, each piece replaced by its final text."""
    body = b"".join(p if isinstance(p, bytes) else segment_text(p, finals).encode("utf-8") for p in line.parts)
    if line.row is not None:
        body = line.prefix + json.dumps({**line.row, "corrected": body.decode("utf-8")},
                                        ensure_ascii=False).encode("utf-8")
    return body + line.ending


def line_text(line: Line, texts: dict[int, str]) -> str:
    """A line's text content (segments only, form feeds as spaces) with pieces replaced by `texts`."""
    return " ".join(segment_text(seg, texts) for seg in line.segments)



def attach_reference(doc: Document, path: Path) -> None:
    """Ground-truth lines onto the document's lines (the same line structure is required)."""
    ref_lines = list(_split_physical(path.read_bytes()))
    if len(ref_lines) != len(doc.lines):
        raise CorrectError(f"{path}: {len(ref_lines)} lines, but {doc.rel} has {len(doc.lines)}; "
                           "a reference must keep the input's lines")
    for line, (no, content, _) in zip(doc.lines, ref_lines, strict=True):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise CorrectError(f"{path}:{no}: not UTF-8") from None
        if line.row is None and doc.kind == "jsonl":
            continue  # a blank or bad row: nothing to score (a bad row is reported)
        if line.segments or line.row is not None or text.strip() or plain_text(line).strip():  # every line scored
            if line.row is not None:  # a JSONL reference holds rows with "clean"
                row, _reason = _parse_row(text) if text.strip() else (None, "")
                line.reference = row.get("clean") if row and isinstance(row.get("clean"), str) else line.reference
            else:
                line.reference = text.removeprefix(BOM).replace("\f", " ")


def plain_text(line: Line) -> str:
    """A line's text as it came (segments and literal bytes alike, form feeds as spaces): what a line
    holding nothing to send is scored as (identity)."""
    if line.row is not None:
        return str(line.row.get("noisy") or "")
    body = b"".join(p if isinstance(p, bytes) else segment_text(p, {}).encode() for p in line.parts)
    return body.decode("utf-8", errors="replace").removeprefix(BOM).replace("\f", " ")


def structure(data: bytes) -> list[tuple[str, ...]]:
    """A document's layout without its text: per line, the ending, the form feeds, the indentation
    and whether it is blank (tests and the demo compare input and output with it)."""
    out = []
    for _, content, ending in _split_physical(data):
        text = content.decode("utf-8", errors="replace")
        sections = text.split("\f")
        out.append((ending.decode(), str(len(sections) - 1),
                    *(s[: len(s) - len(s.lstrip())] + "|" + ("blank" if not s.strip() else "text") + "|"
                      + s[len(s.rstrip()):] for s in sections)))
    return out
