"""`correct`'s output folder (``CorrectOutput``): each corrected file written atomically (``_finish``),
corrections.jsonl and summary.json (``_summarize``), the progress line, and the terminal's summary line.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from bhasha_build.core.guard import reason_kind
from bhasha_build.core.inputs import shown
from bhasha_build.core.metrics import identity_baseline, score
from bhasha_build.core.text import detect_script, normalize_text
from bhasha_build.stages.correct.backends import Backend, CorrectError
from bhasha_build.stages.correct.journal import FileRun
from bhasha_build.stages.correct.planning import (
    SCRIPT_LANG,
    Document,
    Line,
    Piece,
    line_text,
    plain_text,
    render_line,
    structure,
)
from bhasha_build.stages.review import PAGE_NAME


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
