"""`invoke correct`: the step after deploy — correct users' OCR documents with the model.

    correct(input, out, backend, cfg, lang=None, reference=None, jobs=None) -> summary

Input: a file or a folder (searched recursively) of OCR text files (``.txt``: one line per OCR line,
blank lines between paragraphs, form feeds between pages) and JSONL files (``.jsonl``: rows
``{"id", "noisy"}`` with optional ``"lang"`` and ``"clean"``). Other files in a folder are ignored.
Inputs are only read (``core.inputs``): an output folder that overlaps the input either way round is
refused before anything is read; symlinks in a folder are never followed (skipped with a warning, loops
too); a file that is not UTF-8 text (a UTF-16/UTF-32 BOM, NUL bytes, another encoding) or whose name is
not UTF-8 is skipped whole with one warning line and counted (summary.json ``refused``), never
half-corrected. A line over ``data.max_line_bytes`` is kept as it was, with a warning, before it is
decoded; a shorter long line is cut on size (``WINDOW_CHARS``, ``inputs.windows``) before it is tokenized.

What is sent: every text line is cut into its layout (line ending LF/CRLF, form feeds, leading and
trailing whitespace, a BOM) and its text; the text is normalized exactly as training normalized it
(``core.text.normalize_text``: NFC, ``data.zwj_policy``, outer whitespace) and sent as the user turn
(the served model adds the Modelfile's SYSTEM; llama.cpp gets ``chat.render_chatml``, the same
prompt). Decoding is greedy: temperature 0, the config's seed, stop on ``chat.STOP_TOKENS`` (the
Modelfile's stops); ``num_predict`` is the reply budget ``core/guard.reply_budget`` (twice the
piece's tokens plus a margin), so a reply that never stops is cut short and rejected. A line longer
than ``correct.max_line_tokens`` (or than num_ctx leaves room for, prompt and reply together) is
split at sentence boundaries (danda, ``|``, ``.?!``), then at spaces, then between graphemes, and the
corrected pieces are joined back with the original separators. Lines without a letter (page numbers,
rules) are not sent. Text holding a chat-template special token (``<|im_end|>``...) is never sent (it
would reach the model as the token): its line is kept as it is, with the reason in corrections.jsonl;
a reply holding one is never used.

What is written: the output keeps the input byte for byte except the corrected text — the same
lines, blank lines, indentation, page breaks, line endings and final newline. A piece whose reply is
implausible keeps its input (``core.guard.serve``, the same rule as eval and promote: empty, script
change, too many edits, length ratio, a reply cut by the budget, a change whose confidence is below
``correct.min_confidence``, with ``correct.lexicon_guard`` a change that breaks a dictionary word), as
does a reply that holds a line break, and
a piece the model left unchanged keeps its original bytes (so an untouched line is byte-identical
even when it was not NFC). JSONL rows are written back with ``"corrected"`` added; a row that is not
JSON or has no string ``noisy`` is written back as it was and reported (file:line: reason).

Output folder (``CorrectOutput``): the corrected files mirroring the input tree, ``corrections.jsonl``
(one record per corrected line: file, line, id, lang, input, output, the model's reply, changed,
guarded, reasons, confidence: the least confidence of its pieces' changes, core/confidence.py, so a
reviewer can sort by it; null when nothing changed or the backend gave no log-probabilities),
``review.html`` (the reviewer's page over them: stages/review.py),
``summary.json`` (counts, lines/s, the backend, guard reasons, failures and, with references, CER/WER
and over-correction per language next to the do-nothing baseline and the unguarded replies, scored
by ``core.metrics.score`` like eval) and ``.correct-state/`` (per-file journals).

References: ``clean`` fields of JSONL rows, or ``reference`` = a file (single input) or a folder
mirroring the input tree of ground-truth text files with the input's line structure.

Language: the row's ``lang``, else ``lang``, else detected: the file's script
(``core.text.detect_script``), or the line's own when most of its letters are in another script;
the language recorded is the script's first code in LANG_SCRIPTS.

Concurrency, failures, resuming: ``correct.jobs`` requests are in flight at once (Ollama serves
parallel requests; one llama.cpp model answers one at a time, so the GGUF backend serializes). A
transient failure (server unreachable, a request past its deadline ``correct.timeout_s``, 5xx) is
retried ``correct.retries`` times with doubling backoff from ``correct.backoff_s``; a piece that still
fails keeps its input, its file is written but not marked done, and the run ends with an error line.
Fail fast (``core.dispatch``): after ``correct.stop_after_failures`` failures in a row (at least the
requests in flight; any success resets the count; a refused connection counts at each attempt, any
other failure once per line, when its retries run out) the server counts as gone: nothing more is sent,
retries waiting give up, what finished is kept, summary.json says ``stopped`` and the run ends within
seconds with one line naming the host. One Ctrl-C returns at once: requests in flight are let go (the
workers are daemon threads; the process exiting closes their connections). The progress line counts
failed lines apart from corrected ones.
Every finished piece is appended to its file's journal (keyed by the input's sha256 and the settings)
by the main thread at once; a file counts as done only when its journal records the sha256 of the
output, written after the output file was written atomically.
A rerun skips files that are done and pieces already in a journal, so Ctrl-C loses at most the
requests in flight and never leaves a half-written output file.

Backends: ``OllamaBackend`` (the project's REST client, ``/api/chat`` with the options deploy's
served-model check sends; line lengths counted with Qwen2.5's real tokenizer, core/qwen_tokenizer.py)
and ``GgufBackend`` (core/gguf.LlamaChat; lengths counted by the GGUF's own tokenizer).

Knobs: correct.jobs, correct.timeout_s, correct.retries, correct.backoff_s, correct.stop_after_failures,
correct.max_line_tokens, correct.progress_every_s, correct.min_confidence, correct.lexicon_guard;
data.zwj_policy, data.max_line_bytes; guard.*; seed; model.max_seq_length (llama.cpp context);
deploy.name / deploy.host (Ollama).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import regex
import requests

from bhasha_build.core.chat import SYSTEM_PROMPT, find_special_token
from bhasha_build.core.config import MAX_JOBS, BuildConfig
from bhasha_build.core.dispatch import Breaker, DaemonPool, Stopped, retrying
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, jsonl_lines, sha256_file
from bhasha_build.core.guard import REPLY_FACTOR, REPLY_MARGIN, Answer, reason_kind, reply_budget, serve
from bhasha_build.core.inputs import (
    InputError,
    check_paths,
    make_output,
    read_input,
    shown,
    text_problem,
    walk,
    windows,
)
from bhasha_build.core.manifest import Manifest
from bhasha_build.core.metrics import graphemes, identity_baseline, normalize_hyp, score
from bhasha_build.core.ollama import (
    OllamaClient,
    OllamaError,
    OllamaNotFoundError,
    OllamaRequestError,
    OllamaUnreachableError,
    answer_of,
    ask_correction,
    parse_show_parameters,
    server_url,
)
from bhasha_build.core.text import LANG_SCRIPTS, detect_script, foreign_fraction, normalize_text
from bhasha_build.stages.data import MAX_JSON_DEPTH, json_depth
from bhasha_build.stages.pipeline import verify_artifact
from bhasha_build.stages.review import PAGE_NAME, write_page

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


class CorrectError(BhashaError):
    """A one-line `correct` failure (input, output folder, backend, or lines that failed)."""


# ---------------------------------------------------------------------------------- output folder


@dataclass(frozen=True)
class CorrectOutput:
    """Every path of a `correct` output folder (the corrected tree lies beside these)."""

    root: Path

    @property
    def records(self) -> Path:
        return self.root / "corrections.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def state_dir(self) -> Path:
        return self.root / ".correct-state"

    def journal(self, rel: str) -> Path:
        return self.state_dir / "journal" / f"{rel}.jsonl"

    def corrected(self, rel: str) -> Path:
        return self.root / rel

    @property
    def review_page(self) -> Path:  # the reviewer's page (stages/review.py)
        return self.root / PAGE_NAME

    def reserved(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in (self.records, self.summary, self.review_page)}


# ---------------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Reply:
    text: str
    done_reason: str  # "stop" (a stop token ended it) or "length" (num_predict reached)
    confidence: float | None = None  # the model's confidence in its change (core/confidence.py)


class TransientError(Exception):
    """A failure worth retrying (server unreachable, deadline passed, 5xx)."""


class ServerGone(TransientError):
    """Nothing answers at the server's address (connection refused): counts toward the stop at every attempt."""


class Backend(Protocol):
    kind: str
    concurrent: bool  # may several requests be in flight?
    num_ctx: int

    def describe(self) -> dict[str, Any]: ...

    def count_tokens(self, text: str) -> int: ...

    def complete(self, text: str, max_tokens: int) -> Reply: ...

    def close(self) -> None: ...


class GgufBackend:
    """A GGUF through llama.cpp (core/gguf.LlamaChat: the project's one llama.cpp chat completion)."""

    kind = "gguf"
    concurrent = False

    def __init__(self, gguf: Path, cfg: BuildConfig) -> None:
        from bhasha_build.core.gguf import LlamaChat

        if not Path(gguf).is_file():
            raise CorrectError(f"{gguf}: GGUF not found")
        self.path = Path(gguf)
        self.num_ctx = cfg.model.max_seq_length  # the Modelfile's num_ctx
        self.chat = LlamaChat(self.path, n_ctx=self.num_ctx, seed=cfg.seed)
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"kind": self.kind, "gguf": str(self.path.resolve()), "bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns, "num_ctx": self.num_ctx, "token_counter": "gguf"}

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self.chat.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def complete(self, text: str, max_tokens: int) -> Reply:
        with self._lock:
            out = self.chat.complete(text, max_tokens)
        return Reply(out.text, "stop" if out.finish_reason == "stop" else "length", out.confidence)

    def close(self) -> None:
        self.chat.close()


class OllamaBackend:
    """The deployed model through the project's Ollama client: /api/chat, deploy's options."""

    kind = "ollama"
    concurrent = True

    def __init__(self, client: OllamaClient, name: str, cfg: BuildConfig) -> None:
        from bhasha_build.core.qwen_tokenizer import qwen25_fast_tokenizer

        self.client, self.name, self.seed = client, name, cfg.seed
        self.timeout = cfg.correct.timeout_s
        self.version = client.check_version()  # refuses a server too old for the project
        try:
            show = client.show(name)
        except OllamaNotFoundError:
            raise CorrectError(f"model '{name}' not found on {client.host}; "
                               f"run `invoke deploy --name {name}`") from None
        params = parse_show_parameters(show.get("parameters") or "")
        self.num_ctx = int(params.get("num_ctx", [cfg.model.max_seq_length])[0])
        self.stops = params.get("stop", [])
        self.system_matches = (show.get("system") or "") == SYSTEM_PROMPT
        self.digest = client.model_digest(name)
        self._tokenizer = qwen25_fast_tokenizer()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": self.client.host, "model": self.name, "digest": self.digest,
                "ollama_version": self.version, "num_ctx": self.num_ctx, "stop": self.stops,
                "system_prompt_matches_training": self.system_matches, "token_counter": "qwen2.5"}

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def complete(self, text: str, max_tokens: int) -> Reply:
        try:
            reply = ask_correction(self.client, self.name, text, seed=self.seed, num_predict=max_tokens,
                                   timeout=self.timeout)
        except OllamaNotFoundError:
            raise
        except OllamaUnreachableError as exc:
            raise ServerGone(str(exc)) from None
        except OllamaRequestError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise TransientError(str(exc)) from None
            raise
        except OllamaError as exc:  # the client's "did not answer within Ns" (deadline) and bad streams
            raise TransientError(str(exc)) from None
        except requests.RequestException as exc:  # a connection dropped mid-answer
            raise TransientError(f"{self.client.host}: {type(exc).__name__}") from None
        return Reply((reply.get("message") or {}).get("content") or "", str(reply.get("done_reason") or ""),
                     answer_of(text, reply).confidence)

    def close(self) -> None:
        self.client.session.close()


# ---------------------------------------------------------------------------------- documents


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


# ---------------------------------------------------------------------------------- results


@dataclass
class Outcome:
    """What became of one piece."""

    output: str  # the model's reply (normalize_hyp), "" when it failed
    final: str  # the text written: the reply, or the original piece
    changed: bool
    reason: str | None  # why the reply was not used (guard, length cap, line break), None if used
    confidence: float | None = None  # the model's confidence in its change (core/confidence.py)

    def record(self, index: int) -> dict[str, Any]:
        return {"i": index, "output": self.output, "final": self.final, "changed": self.changed,
                "reason": self.reason, "confidence": self.confidence}


def judge(piece: Piece, reply: Reply, cfg: BuildConfig) -> Outcome:
    """Accept the reply, or keep the input (the do-no-harm guard and the layout's own checks)."""
    output = normalize_hyp(reply.text)
    cut = reply.done_reason != "stop"
    if not cut and not output:
        reason: str | None = "empty reply"
    elif not cut and ("\n" in output or "\f" in output or "\r" in output):
        reason = "line break in the reply"
    elif special := find_special_token(output):  # never text, whatever the guard's settings
        reason = f"special token in the output ({special.group()})"
    else:
        reason = serve(piece.sent, Answer(output, cut, reply.confidence), piece.lang, cfg).reason
    if reason:
        return Outcome(output, piece.original, False, reason, reply.confidence)
    if output == piece.sent:  # unchanged: keep the original bytes (even when they were not NFC)
        return Outcome(output, piece.original, False, None)
    return Outcome(output, output, True, None, reply.confidence)


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


# ---------------------------------------------------------------------------------- progress


class Progress:
    """Lines corrected, lines failed (counted apart: a failure is not progress), lines/s and ETA: a redrawn
    bar on a TTY, a plain line every few seconds otherwise (and a last one at the end)."""

    def __init__(self, total: int, every_s: float, stream: Any = None, enabled: bool = True) -> None:
        self.total, self.every_s, self.enabled = total, every_s, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.failed = 0
        self.t0 = self.last = time.monotonic()
        self._shown: tuple[int, int] | None = None

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done - self.failed) / rate if rate > 0 else None
        pct = 100 * self.done / self.total if self.total else 100.0
        eta_txt = f"{eta:.0f}s" if eta is not None else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"correct: {self.done}/{self.total} lines ({pct:.0f}%){failed} {rate:.2f} lines/s eta {eta_txt}"

    def advance(self, n: int = 1, failed: bool = False) -> None:
        """`n` lines finished: corrected, or (`failed`) kept as they were because a request failed."""
        if failed:
            self.failed += n
        else:
            self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            width = 24
            filled = int(width * self.done / self.total) if self.total else width
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.line()}   ")
            self.stream.flush()
        elif now - self.last >= self.every_s or self.done + self.failed == self.total:
            self._print()
            self.last = now

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._shown = (self.done, self.failed)

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        elif self.enabled and self._shown != (self.done, self.failed) and (self.done or self.failed):
            self._print()  # where the run stopped (a stopped run never reaches its total)


# ---------------------------------------------------------------------------------- the run


def input_files(src: Path, out: Path) -> list[tuple[Path, str]]:
    """(path, path relative to the input) of every .txt/.jsonl file, sorted; the output folder excluded.
    Symlinks are not followed (`inputs.walk`; `correct` reports what was skipped)."""
    return _input_files(src, out)[0]


def _input_files(src: Path, out: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES
    try:
        files, skipped = walk(src, suffixes)
    except InputError as exc:
        raise CorrectError(str(exc)) from None
    out_r = out.resolve()
    files = [(p, rel) for p, rel in files if not p.resolve().is_relative_to(out_r)]
    if not files and not skipped:
        raise CorrectError(f"{shown(src)}: no {', '.join(suffixes)} files in the folder")
    return files, skipped


def _reference_for(reference: Path | None, src: Path, rel: str) -> Path | None:
    if reference is None:
        return None
    path = reference if src.is_file() and reference.is_file() else reference / rel
    if not path.is_file():
        raise CorrectError(f"{path}: no reference file for {rel}")
    return path


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


def settings_key(doc: Document, backend: Backend, cfg: BuildConfig, budget: int) -> str:
    """What a file's outputs depend on: its bytes, the backend (model), normalization, guard, decoding."""
    h = hashlib.sha256(doc.data)
    h.update(json.dumps([backend.describe(), cfg.data.zwj_policy, cfg.guard.model_dump(), cfg.seed, budget,
                         [p.lang for p in doc.pieces], cfg.correct.min_confidence, cfg.correct.lexicon_guard],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


class Journal:
    """A file's record of work, appended and flushed line by line: a header with the settings key, one
    line per finished piece, and a "written" line (the output's sha256) each time the output file was
    written; a header of other settings (another model, changed input) discards the journal."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.done: dict[int, Outcome] = {}
        self.written: str | None = None  # sha256 of the last complete output written
        self._fh: Any = None
        if path.is_file():
            lines = [ln for ln in jsonl_lines(path.read_text(encoding="utf-8")) if ln]
            header = _loads(lines[0]) if lines else None
            if header and header.get("key") == key:
                for raw in lines[1:]:
                    rec = _loads(raw)  # a line torn by a kill is skipped: that piece runs again
                    if rec and "i" in rec:
                        self.done[int(rec["i"])] = Outcome(rec["output"], rec["final"], rec["changed"],
                                                           rec["reason"], rec.get("confidence"))
                    elif rec and "written" in rec:
                        self.written = rec["written"] if rec.get("complete") else None
            else:
                path.unlink()

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            self._fh = self.path.open("a", encoding="utf-8")
            if fresh:
                self._fh.write(json.dumps({"key": self.key}) + "\n")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    def add(self, index: int, outcome: Outcome) -> None:
        self._write(outcome.record(index))
        self.done[index] = outcome

    def mark_written(self, sha256: str, complete: bool) -> None:
        """After the output file was written (atomically): its hash, and whether every piece is in it."""
        self._write({"written": sha256, "complete": complete})
        self.written = sha256 if complete else None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _loads(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _request(backend: Backend, piece: Piece, cfg: BuildConfig, breaker: Breaker | None = None) -> Reply:
    """One piece through the backend with retries and doubling backoff on transient failures, given up
    as soon as the breaker trips (the server is gone) or the run is interrupted."""
    return retrying(lambda: backend.complete(piece.sent, piece.max_tokens), retries=cfg.correct.retries,
                    backoff_s=cfg.correct.backoff_s, transient=(TransientError,), gone=(ServerGone,),
                    breaker=breaker or Breaker(1 << 30))


@dataclass
class FileRun:
    doc: Document
    journal: Journal
    pending: set[int]
    skipped: bool = False  # done by an earlier run: output and journal complete, nothing to write
    failed: dict[int, str] = field(default_factory=dict)
    line_left: Counter[int] = field(default_factory=Counter)
    failed_lines: set[int] = field(default_factory=set)


def correct(src: str | Path, out: str | Path, backend: Backend, cfg: BuildConfig, *, lang: str | None = None,
            reference: str | Path | None = None, jobs: int | None = None, progress: bool = True,
            progress_stream: Any = None) -> dict[str, Any]:
    """Correct `src` (file or folder) into `out`; returns the summary (also written to summary.json)."""
    started = time.perf_counter()
    src, out_dir = Path(src), Path(out)
    if lang is not None and lang not in LANG_SCRIPTS:
        raise CorrectError(f"--lang {lang!r}: unknown language code (known: {', '.join(sorted(LANG_SCRIPTS))})")
    check_jobs(jobs)
    check_output_paths(src, out_dir)
    layout = CorrectOutput(out_dir)
    files, refused = _input_files(src, out_dir)
    if clash := [rel for _, rel in files if rel in layout.reserved()]:
        raise CorrectError(f"{src}: input {clash[0]} would collide with the report of the same name in {out_dir}")
    jobs = jobs or cfg.correct.jobs
    planner = Planner(cfg, backend, lang)
    docs: list[Document] = []
    runs: list[FileRun] = []
    skipped_files = 0
    for path, rel in files:
        try:
            data = read_input(path, follow=not src.is_dir())  # a folder's files: never through a symlink
        except OSError as exc:
            refused.append(f"{rel}: cannot read ({exc.strerror or type(exc).__name__}); skipped")
            continue
        if problem := text_problem(data):  # refused whole: never half-corrected, never "layout kept"
            refused.append(f"{rel}: {problem}; skipped")
            continue
        doc = planner.plan(path, rel, data)
        if ref := _reference_for(Path(reference) if reference else None, src, rel):
            attach_reference(doc, ref)
        docs.append(doc)
        key = settings_key(doc, backend, cfg, planner.budget)
        target = layout.corrected(rel)
        journal = Journal(layout.journal(rel), key)
        for piece in doc.pieces:  # held pieces (never sent) are decided by the plan itself
            if piece.held:
                journal.done[piece.index] = Outcome("", piece.original, False, piece.held)
        if (journal.written and len(journal.done) == len(doc.pieces) and target.is_file()
                and sha256_file(target) == journal.written):
            skipped_files += 1
            runs.append(FileRun(doc, journal, set(), skipped=True))
            continue
        run = FileRun(doc, journal, {p.index for p in doc.pieces} - set(journal.done))
        for i in run.pending:
            run.line_left[doc.pieces[i].line] += 1
        runs.append(run)
    for problem in [*refused, *(p for doc in docs for p in doc.problems)]:
        print(f"warning: {problem}", file=progress_stream or sys.stderr, flush=True)
    if not docs:
        raise CorrectError(f"{shown(src)}: nothing to correct: {refused[0] if refused else 'no files'}")
    _make_output(out_dir)

    todo = [(run, run.doc.pieces[i]) for run in runs for i in sorted(run.pending)]
    lines_todo = sum(len(run.line_left) for run in runs)
    bar = Progress(lines_todo, cfg.correct.progress_every_s, progress_stream, enabled=progress)
    in_flight = jobs if backend.concurrent else 1
    # Failures in a row (no success between, over every request in flight) that mean the server is gone.
    breaker = Breaker(max(cfg.correct.stop_after_failures, in_flight))
    sent = 0
    loop_start = time.perf_counter()
    pool = DaemonPool(in_flight, name="correct")  # workers never hold up a stop or Ctrl-C
    try:
        for run in runs:  # files with nothing left to ask (all in the journal, or no text) finish now
            if not run.pending and not run.skipped:
                _finish(run, layout)
        futures: dict[Future[Reply], tuple[FileRun, Piece]] = {}
        queue = iter(todo)
        try:
            while not breaker.tripped:
                while len(futures) < in_flight * 2 and (item := next(queue, None)) is not None:
                    run, piece = item
                    fut = pool.submit(_request, backend, piece, cfg, breaker)
                    futures[fut] = (run, piece)
                if not futures:
                    break
                finished, _ = wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
                stop: BaseException | None = None  # raised once every other finished piece is recorded
                for fut in finished:
                    run, piece = futures.pop(fut)
                    try:
                        outcome = judge(piece, fut.result(), cfg)
                        run.journal.add(piece.index, outcome)
                    except (TransientError, OllamaRequestError) as exc:  # this piece only: keeps its input
                        run.failed[piece.index] = str(exc)
                        run.failed_lines.add(piece.line)
                    except Stopped:  # never sent (the run is stopping): still to do
                        continue
                    except BaseException as exc:  # re-raised below
                        stop = stop or exc
                        continue
                    sent += 1
                    run.pending.discard(piece.index)
                    run.line_left[piece.line] -= 1
                    if run.line_left[piece.line] == 0:
                        del run.line_left[piece.line]
                        bar.advance(failed=piece.line in run.failed_lines)
                    if not run.pending:
                        _finish(run, layout)
                if stop is not None:
                    raise stop
        except BaseException as exc:
            breaker.cancel(type(exc).__name__)  # retries waiting give up; requests in flight are let go
            raise
        finally:
            for fut in futures:
                fut.cancel()
    finally:
        pool.shutdown(wait=not backend.concurrent)  # llama.cpp finishes its one line; a server is not waited for
        bar.close()
        for run in runs:
            run.journal.close()
    loop_seconds = time.perf_counter() - loop_start
    left = sum(len(run.line_left) for run in runs)  # lines not finished (a stop leaves some)
    stopped = (f"stopped after {breaker.tripped_at} failures in a row: the server is not answering "
               f"({breaker.reason})") if breaker.tripped and left else None
    summary = _summarize(runs, layout, backend, cfg, src, jobs=in_flight, requests=sent,
                         skipped_files=skipped_files, seconds=time.perf_counter() - started,
                         loop_seconds=round(loop_seconds, 3), max_line_tokens=planner.budget,
                         lines_done=bar.done, refused_files=len(refused), refused=refused, stopped=stopped)
    write_page(layout.records, layout.review_page)  # the reviewer's page for corrections.jsonl
    if stopped:
        raise CorrectError(f"{stopped}; {bar.done} lines corrected and kept, {left} not done; "
                           "rerun the same command to resume")
    failed = sorted((run.doc.rel, run.doc.pieces[i].line, why) for run in runs for i, why in run.failed.items())
    if failed:
        rel, no, why = failed[0]
        raise CorrectError(f"{len(failed)} line(s) could not be corrected and kept their input "
                           f"(first: {rel}:{no}: {why}); rerun the same command to retry them")
    return summary


def check_jobs(jobs: int | None) -> None:
    """--jobs: requests in flight, 1 to MAX_JOBS (the config's own bound on correct.jobs)."""
    if jobs is not None and not 1 <= jobs <= MAX_JOBS:
        raise CorrectError(f"--jobs {jobs}: requests in flight must be a whole number from 1 to {MAX_JOBS}")


def check_output_paths(src: Path, out: Path) -> None:
    """The output folder can be made and never overlaps the input (either way round): one line if not."""
    try:
        check_paths(src, out)
    except InputError as exc:
        raise CorrectError(str(exc)) from None


def _make_output(out: Path) -> None:
    try:
        make_output(out)
    except InputError as exc:
        raise CorrectError(str(exc)) from None


def _finish(run: FileRun, layout: CorrectOutput) -> None:
    """Write the file's corrected output atomically, then record it (complete unless pieces failed)."""
    finals = {i: o.final for i, o in run.journal.done.items()}
    for piece in run.doc.pieces:
        finals.setdefault(piece.index, piece.original)  # failed pieces keep their input
    data = b"".join(render_line(line, finals) for line in run.doc.lines)
    if run.doc.kind == "text" and structure(data) != structure(run.doc.data):  # never expected: a bug if seen
        raise CorrectError(f"{run.doc.rel}: the corrected output lost the input's layout; nothing written")
    target = layout.corrected(run.doc.rel)
    atomic_write_bytes(target, data, fsync=False)  # atomic; a rerun re-renders it unless its sha256 checks out
    run.journal.mark_written(hashlib.sha256(data).hexdigest(), complete=not run.failed)


def _score_untouched(line: Line, doc: Document, cfg: BuildConfig, scored: list[dict[str, Any]],
                     hyps: dict[str, list[str]]) -> None:
    """A line with a reference that held nothing to send (a digit, a rule) counts as identity."""
    zwj = cfg.data.zwj_policy
    text = normalize_text(plain_text(line), zwj)
    row_lang = line.row.get("lang") if line.row is not None else None
    script = detect_script(text) or doc.script
    lang = row_lang if isinstance(row_lang, str) and row_lang else SCRIPT_LANG.get(script or "", "?")
    scored.append({"lang": lang, "noisy": text, "clean": normalize_text(line.reference or "", zwj)})
    hyps["raw"].append(text)
    hyps["corrected"].append(text)


def _summarize(runs: list[FileRun], layout: CorrectOutput, backend: Backend, cfg: BuildConfig, src: Path,
               **extra: Any) -> dict[str, Any]:
    """corrections.jsonl (per line) and summary.json, both written whole (atomically)."""
    records: list[str] = []
    reasons: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    scored: list[dict[str, Any]] = []
    hyps: dict[str, list[str]] = {"raw": [], "corrected": []}
    for run in runs:
        doc, done = run.doc, run.journal.done
        counts["files"] += 1
        counts["problems"] += len(doc.problems)
        by_line: dict[int, list[Piece]] = {}
        for piece in doc.pieces:
            by_line.setdefault(piece.line, []).append(piece)
        for line in doc.lines:
            pieces = by_line.get(line.no, [])
            if not pieces:
                if line.reference is not None:  # nothing to send (no letter): scored as it came, never dropped
                    _score_untouched(line, doc, cfg, scored, hyps)
                continue
            outcomes = {p.index: done[p.index] for p in pieces if p.index in done}
            finals = {p.index: (outcomes[p.index].final if p.index in outcomes else p.original) for p in pieces}
            line_reasons = [o.reason for o in outcomes.values() if o.reason]
            reasons.update(reason_kind(r) for r in line_reasons)
            text_in = line_text(line, {p.index: p.original for p in pieces})
            text_out = line_text(line, finals)
            failed = [p.index for p in pieces if p.index in run.failed or p.index in run.pending]  # or never asked
            replies = {p.index: outcomes[p.index].output if p.index in outcomes else "" for p in pieces}
            rec = {"file": doc.rel, "line": line.no, "id": line.row.get("id") if line.row else None,
                   "lang": pieces[0].lang, "input": text_in, "output": text_out, "reply": line_text(line, replies),
                   "changed": any(o.changed for o in outcomes.values()), "guarded": bool(line_reasons),
                   "reasons": line_reasons, "confidence": min((o.confidence for o in outcomes.values()
                                                               if o.confidence is not None), default=None),
                   "pieces": len(pieces), "failed": bool(failed)}
            counts["lines"] += 1
            counts["pieces"] += len(pieces)
            counts["changed"] += rec["changed"]
            counts["guarded"] += rec["guarded"]
            counts["failed"] += bool(failed)
            records.append(json.dumps(rec, ensure_ascii=False))
            if line.reference is not None:
                zwj = cfg.data.zwj_policy
                scored.append({"lang": pieces[0].lang or "?", "noisy": normalize_text(text_in, zwj),
                               "clean": normalize_text(line.reference, zwj)})
                raw = {p.index: (outcomes[p.index].output if p.index in outcomes and outcomes[p.index].output
                                 else p.original) for p in pieces}
                hyps["raw"].append(normalize_text(line_text(line, raw), zwj))
                hyps["corrected"].append(normalize_text(text_out, zwj))
    atomic_write_text(layout.records, "".join(r + "\n" for r in records))
    seconds = extra.pop("seconds")
    summary: dict[str, Any] = {
        "input": shown(src), "out": shown(layout.root), "backend": backend.describe(),
        "normalization": {"function": "core.text.normalize_text", "zwj_policy": cfg.data.zwj_policy},
        "decoding": {"temperature": 0, "seed": cfg.seed, "max_length_ratio": cfg.guard.max_length_ratio},
        "guard": cfg.guard.model_dump(), **extra,
        "files": counts["files"], "lines": counts["lines"], "pieces": counts["pieces"],
        "changed": counts["changed"], "guarded": counts["guarded"], "failed": counts["failed"],
        "guard_reasons": dict(sorted(reasons.items())), "problems": counts["problems"],
        "problem_lines": [p for run in runs for p in run.doc.problems][:50],
        "seconds": round(seconds, 3),
        "lines_per_s": (round(extra["lines_done"] / extra["loop_seconds"], 3) if extra["loop_seconds"] > 0
                        else None),  # lines corrected in this run over the time spent asking the model
    }
    if scored:
        summary["reference"] = {"baseline": identity_baseline(scored),  # the input as it came
                                **{name: score(scored, h) for name, h in hyps.items()}}
        summary["reference"]["note"] = ("baseline = the input as it came (doing nothing); raw = the model's "
                                        "replies before the guard; corrected = what was written")
    atomic_write_json(layout.summary, summary)
    return summary


# ---------------------------------------------------------------------------------- entry


def open_backend(cfg: BuildConfig, *, gguf: str | Path | None = None, name: str | None = None,
                 host: str | None = None) -> Backend:
    """The model to correct with:
      ``gguf``                      llama.cpp on that file;
      ``host`` / ``name`` / OLLAMA_HOST   the deployed model ``name`` (deploy.name) on that Ollama server;
      none of them                  llama.cpp on this run's exported GGUF (checked against the sha256
                                    the export stage recorded) when there is one, else Ollama at deploy.host.
    """
    if gguf is not None:
        if host or name:
            raise CorrectError("--gguf runs the file through llama.cpp; it takes no --host/--name")
        return GgufBackend(Path(gguf), cfg)
    layout = cfg.layout
    if not (host or name or os.environ.get("OLLAMA_HOST")) and layout.manifest.is_file() and \
            "gguf" in Manifest(layout.root).load().get("artifacts", {}):
        return GgufBackend(verify_artifact(Manifest(layout.root), layout, "gguf"), cfg)
    client = OllamaClient(server_url(host, cfg.deploy.host), timeout=cfg.correct.timeout_s)
    return OllamaBackend(client, name or cfg.deploy.name, cfg)


def run(cfg: BuildConfig, src: str | Path, out: str | Path | None = None, *, gguf: str | Path | None = None,
        name: str | None = None, host: str | None = None, lang: str | None = None,
        reference: str | Path | None = None, jobs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """`invoke correct`: open the backend (`open_backend`), correct into ``out`` (default: the run's
    corrected/ folder), close."""
    if not Path(src).exists():
        raise CorrectError(f"{shown(src)}: input not found")
    check_jobs(jobs)  # every argument checked before the backend is opened: one line, at once
    check_output_paths(Path(src), Path(out or cfg.layout.corrected))
    backend = open_backend(cfg, gguf=gguf, name=name, host=host)
    try:
        return correct(src, out or cfg.layout.corrected, backend, cfg, lang=lang, reference=reference, jobs=jobs,
                       progress=progress)
    finally:
        backend.close()


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the terminal: what was done, and the reference scores when there were references."""
    done_before = f", {summary['skipped_files']} of them done before" if summary["skipped_files"] else ""
    speed = f"{summary['lines_done']} corrected at {summary['lines_per_s'] or 0:.2f} lines/s"
    text = (f"{summary['lines']} lines in {summary['files']} files{done_before}: {summary['changed']} changed, "
            f"{summary['guarded']} kept by the guard, {summary['failed']} failed; {speed}; layout kept; "
            f"{summary['out']}")
    if summary.get("refused_files"):
        text += f"; {summary['refused_files']} input files skipped (see the warnings and summary.json)"
    if ref := summary.get("reference"):
        text += "; CER " + " ".join(f"{k} {ref[k]['overall']['cer']:.4f}" for k in ("baseline", "raw", "corrected"))
    return text


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

