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
``correct.min_confidence`` — a number, or ``"auto"``: the threshold the run's eval calibrated on its eval
split, read from eval.json and recorded in summary.json's ``min_confidence`` (refused in one line until
eval has run on the current GGUF) — with ``correct.lexicon_guard`` a change that breaks a dictionary word), as
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

Modules: ``backends`` (the model: Ollama, llama.cpp; retryable failures), ``planning`` (files into
documents, pieces and references; rendering them back), ``journal`` (judging replies, per-file journals),
``output`` (the output folder, corrections.jsonl, summary.json, progress); this module runs them.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from bhasha_build.core.config import MAX_JOBS, BuildConfig
from bhasha_build.core.dispatch import Breaker, DaemonPool, Stopped, retrying
from bhasha_build.core.fsutil import sha256_file
from bhasha_build.core.inputs import (
    InputError,
    check_paths,
    make_output,
    read_input,
    shown,
    text_problem,
    walk,
)
from bhasha_build.core.ollama import OllamaRequestError
from bhasha_build.core.text import LANG_SCRIPTS
from bhasha_build.stages.correct.backends import (
    Backend,
    CorrectError,
    GgufBackend,
    OllamaBackend,
    Reply,
    ServerGone,
    TransientError,
    open_backend,
)
from bhasha_build.stages.correct.journal import FileRun, Journal, Outcome, _loads, judge, settings_key
from bhasha_build.stages.correct.output import CorrectOutput, Progress, _finish, _summarize, summary_line
from bhasha_build.stages.correct.planning import (
    BOM,
    JSONL_SUFFIXES,
    SCRIPT_LANG,
    TEXT_SUFFIXES,
    WINDOW_CHARS,
    Document,
    Line,
    Piece,
    Planner,
    Segment,
    _split_physical,
    attach_reference,
    line_text,
    plain_text,
    render_line,
    segment_text,
    split_text,
    structure,
)
from bhasha_build.stages.evaluate import applied_min_confidence
from bhasha_build.stages.review import write_page

# Every name callers import from `stages.correct` (tasks.py, tools/, stages/review_apply.py, bench/, tests).
__all__ = [
    "BOM",
    "JSONL_SUFFIXES",
    "SCRIPT_LANG",
    "TEXT_SUFFIXES",
    "WINDOW_CHARS",
    "Backend",
    "CorrectError",
    "CorrectOutput",
    "Document",
    "FileRun",
    "GgufBackend",
    "InputError",
    "Journal",
    "Line",
    "OllamaBackend",
    "Outcome",
    "Piece",
    "Planner",
    "Progress",
    "Reply",
    "Segment",
    "ServerGone",
    "TransientError",
    "_loads",
    "_split_physical",
    "attach_reference",
    "check_jobs",
    "correct",
    "input_files",
    "judge",
    "line_text",
    "open_backend",
    "plain_text",
    "render_line",
    "run",
    "segment_text",
    "settings_key",
    "split_text",
    "structure",
    "summary_line",
    "walk",
]


def input_files(src: Path, out: Path) -> list[tuple[Path, str]]:
    """(path, path relative to the input) of every .txt/.jsonl file, sorted; the output folder excluded.
    Symlinks are not followed (`inputs.walk`; `correct` reports what was skipped)."""
    return _input_files(src, out)[0]


def _input_files(src: Path, out: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES
    files, skipped = walk(src, suffixes)
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


def _request(backend: Backend, piece: Piece, cfg: BuildConfig, breaker: Breaker | None = None) -> Reply:
    """One piece through the backend with retries and doubling backoff on transient failures, given up
    as soon as the breaker trips (the server is gone) or the run is interrupted."""
    return retrying(lambda: backend.complete(piece.sent, piece.max_tokens), retries=cfg.correct.retries,
                    backoff_s=cfg.correct.backoff_s, transient=(TransientError,), gone=(ServerGone,),
                    breaker=breaker or Breaker(1 << 30))


def correct(src: str | Path, out: str | Path, backend: Backend, cfg: BuildConfig, *, lang: str | None = None,
            reference: str | Path | None = None, jobs: int | None = None, progress: bool = True,
            progress_stream: Any = None) -> dict[str, Any]:
    """Correct `src` (file or folder) into `out`; returns the summary (also written to summary.json)."""
    started = time.perf_counter()
    src, out_dir = Path(src), Path(out)
    if lang is not None and lang not in LANG_SCRIPTS:
        raise CorrectError(f"--lang {lang!r}: unknown language code (known: {', '.join(sorted(LANG_SCRIPTS))})")
    jobs = check_jobs(jobs)
    check_paths(src, out_dir)
    cfg, min_confidence = applied_min_confidence(cfg)  # "auto": the run's eval-split calibration, else the number
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
    make_output(out_dir)

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
                         lines_done=bar.done, refused_files=len(refused), refused=refused, stopped=stopped,
                         min_confidence=min_confidence)
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


def check_jobs(jobs: Any) -> int | None:
    """--jobs (a number, or its text as the CLI passes it): requests in flight, 1 to MAX_JOBS (the
    config's own bound on correct.jobs); None (unset) stays None. The one owner of the rule: tasks.py
    calls it too."""
    if jobs is None:
        return None
    text = str(jobs).strip()
    if isinstance(jobs, bool) or not text.isdigit() or not 1 <= int(text) <= MAX_JOBS:
        raise CorrectError(f"--jobs {text!r}: requests in flight must be a whole number from 1 to {MAX_JOBS}")
    return int(text)


def run(cfg: BuildConfig, src: str | Path, out: str | Path | None = None, *, gguf: str | Path | None = None,
        name: str | None = None, host: str | None = None, lang: str | None = None,
        reference: str | Path | None = None, jobs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """`invoke correct`: open the backend (`open_backend`), correct into ``out`` (default: the run's
    corrected/ folder), close."""
    if not Path(src).exists():
        raise CorrectError(f"{shown(src)}: input not found")
    jobs = check_jobs(jobs)  # every argument checked before the backend is opened: one line, at once
    check_paths(Path(src), Path(out or cfg.layout.corrected))
    backend = open_backend(cfg, gguf=gguf, name=name, host=host)
    try:
        return correct(src, out or cfg.layout.corrected, backend, cfg, lang=lang, reference=reference, jobs=jobs,
                       progress=progress)
    finally:
        backend.close()
