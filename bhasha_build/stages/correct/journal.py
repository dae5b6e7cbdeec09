"""`correct`'s record of work: what became of each piece (``judge`` → ``Outcome``), and each file's
``Journal`` (keyed by ``settings_key``) that lets a rerun skip what is done.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bhasha_build.core.chat import find_special_token
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.fsutil import jsonl_lines
from bhasha_build.core.guard import Answer, serve
from bhasha_build.core.metrics import normalize_hyp
from bhasha_build.stages.correct.backends import Backend, Reply
from bhasha_build.stages.correct.planning import Document, Piece


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


@dataclass
class FileRun:
    doc: Document
    journal: Journal
    pending: set[int]
    skipped: bool = False  # done by an earlier run: output and journal complete, nothing to write
    failed: dict[int, str] = field(default_factory=dict)
    line_left: Counter[int] = field(default_factory=Counter)
    failed_lines: set[int] = field(default_factory=set)
