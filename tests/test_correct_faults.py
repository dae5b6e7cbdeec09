"""`invoke correct` under faults and hostile input (issue 21): users' files stay read-only and where they
are, what is not UTF-8 text is refused whole, special tokens never reach the model or the output, a dead
server stops the run within seconds, one Ctrl-C exits at once, every bad input is one line, every row
with a reference is scored.

The model here is test_correct.py's rule corrector (every expected byte is known); the server cases run
the project's Ollama-contract server (tests/ollama_server.py) with that corrector behind it, in its own
process, so it can be SIGKILLed mid-run, and `invoke correct` as a user runs it for the Ctrl-C case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ctrl_c_as_a_terminal_sends_it
from ollama_server import free_port
from test_correct import FIXES, RuleBackend, _cfg

from bhasha_build.core import guard as guard_mod
from bhasha_build.core.config import MAX_JOBS
from bhasha_build.core.fsutil import sha256_file
from bhasha_build.stages import correct as cr

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
HI = "वह किताव पढ़ता हे|\n"
HI_FIXED = "वह किताब पढ़ता है।\n"


def _correct(src: Path, out: Path, backend: Any = None, **kw: Any) -> tuple[dict[str, Any], RuleBackend, str]:
    backend = backend or RuleBackend()
    err = io.StringIO()
    summary = cr.correct(src, out, backend, kw.pop("cfg", None) or _cfg(), progress=False, progress_stream=err, **kw)
    return summary, backend, err.getvalue()


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- inputs stay put


@pytest.mark.parametrize("case", ["out_in_input", "input_in_out", "dotdot", "symlinked_out", "out_is_file_input"])
def test_overlapping_input_and_output_are_refused_before_anything_is_written(tmp_path: Path, case: str) -> None:
    book = tmp_path / "book"
    (book / "ch2").mkdir(parents=True)
    (book / "page.txt").write_text(HI, encoding="utf-8")
    (book / "ch2" / "page.txt").write_text("यह दूसरा अध्याय हे|\n", encoding="utf-8")
    src, out = book, book / "ch2"
    if case == "input_in_out":
        src, out = book / "ch2", book
    elif case == "dotdot":
        out = book / "ch2" / ".." / ".." / "book" / "ch2" / "new"
    elif case == "symlinked_out":
        (tmp_path / "alias").symlink_to(book)
        out = tmp_path / "alias" / "corrected"
    elif case == "out_is_file_input":
        src, out = book / "page.txt", book / "page.txt"
    before = _tree(book)
    backend = RuleBackend()
    with pytest.raises(cr.InputError) as err:
        _correct(src, out, backend)
    line = _one_line(err.value).replace(str(tmp_path), "")
    assert "must not" in line, line
    assert _tree(book) == before and backend.sent == []  # nothing written, nothing sent
    assert not (book / "ch2" / "new").exists() and not (book / "corrected").exists()


def test_a_symlink_is_never_followed_out_of_the_input_and_loops_are_skipped(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("गुप्त पासवर्ड यहाँ हे|\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "other.txt").write_text("बाहर की फ़ाइल हे|\n", encoding="utf-8")
    src = tmp_path / "in"
    src.mkdir()
    (src / "page.txt").write_text(HI, encoding="utf-8")
    (src / "leak.txt").symlink_to(secret)
    (src / "vol").symlink_to(outside, target_is_directory=True)
    (src / "loop").symlink_to(src, target_is_directory=True)  # a loop back to the input
    (src / "a.txt").symlink_to(src / "b.txt")
    (src / "b.txt").symlink_to(src / "a.txt")  # a file loop
    (src / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    summary, backend, err = _correct(src, tmp_path / "out")
    assert backend.sent == ["वह किताव पढ़ता हे|"]  # only the real file inside the input
    assert "page.txt" in _tree(tmp_path / "out")
    assert not any(k.startswith(("leak", "vol", "loop", "a.txt", "b.txt", "dangling")) for k in _tree(tmp_path / "out"))
    records = (tmp_path / "out" / "corrections.jsonl").read_text(encoding="utf-8")
    assert "गुप्त" not in records and "बाहर" not in records
    warned = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    for name in ("leak.txt", "vol", "loop", "a.txt", "b.txt", "dangling.txt"):
        assert sum(name in ln and "symlink" in ln for ln in warned) == 1, (name, warned)
    assert summary["refused_files"] == 6 and len(summary["refused"]) == 6


def test_a_file_swapped_for_a_symlink_after_the_walk_is_not_read_through(tmp_path: Path, monkeypatch: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("गुप्त पासवर्ड यहाँ हे|\n", encoding="utf-8")
    src = tmp_path / "in"
    src.mkdir()
    (src / "page.txt").write_text(HI, encoding="utf-8")
    walked = cr.walk

    def walk_then_swap(root: Path, suffixes: tuple[str, ...]) -> Any:
        files, skipped = walked(root, suffixes)
        (src / "page.txt").unlink()
        (src / "page.txt").symlink_to(secret)  # the race: a regular file when walked, a symlink when read
        return files, skipped

    monkeypatch.setattr(cr, "walk", walk_then_swap)
    backend = RuleBackend()
    with pytest.raises(cr.CorrectError, match=r"nothing to correct: page\.txt: cannot read"):
        _correct(src, tmp_path / "out", backend)
    assert backend.sent == []


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le-nobom", "utf-32", "latin-1"])
def test_a_file_that_is_not_utf8_text_is_refused_whole_with_one_warning(tmp_path: Path, encoding: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.txt").write_text(HI, encoding="utf-8")
    text = "पहली पंक्ति हे|\nदूसरी पंक्ति हे|\nतीसरी पंक्ति हे|\n"
    if encoding == "utf-16-le-nobom":
        data = text.encode("utf-16-le")
    elif encoding == "latin-1":
        data = "première ligne|\ndeuxième ligne|\n".encode("latin-1")
    else:
        data = text.encode(encoding)  # with its BOM
    (src / "bad.txt").write_bytes(data)
    summary, backend, err = _correct(src, tmp_path / "out")
    assert backend.sent == ["वह किताव पढ़ता हे|"]  # not one line of bad.txt, not even the ones that decode
    assert not (tmp_path / "out" / "bad.txt").exists()  # never half-corrected, never a "corrected" copy
    assert (src / "bad.txt").read_bytes() == data
    warned = [ln for ln in err.splitlines() if "bad.txt" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning:"), err
    assert ("UTF-16" in warned[0] or "UTF-32" in warned[0] or "NUL" in warned[0] or "not UTF-8" in warned[0])
    assert summary["refused_files"] == 1 and summary["refused"][0].startswith("bad.txt: ")
    assert summary["files"] == 1


def test_a_single_input_file_that_is_not_utf8_is_one_error_line(tmp_path: Path) -> None:
    src = tmp_path / "u16.txt"
    src.write_bytes("पहली पंक्ति हे|\n".encode("utf-16"))
    with pytest.raises(cr.CorrectError) as err:
        _correct(src, tmp_path / "out")
    assert "u16.txt" in _one_line(err.value) and "UTF-16" in str(err.value)


def test_a_huge_single_line_is_capped_and_a_long_one_cut_on_size_before_it_is_tokenized(tmp_path: Path) -> None:
    class Counting(RuleBackend):
        def __init__(self) -> None:
            super().__init__()
            self.counted: list[int] = []

        def count_tokens(self, text: str) -> int:
            self.counted.append(len(text))
            return super().count_tokens(text)

    def line_of(size: int) -> str:  # sentences that differ (no cache hit hides a whole-line count)
        parts, total, i = [], 0, 0
        while total < size:
            parts.append(f"यह {i} किताव हे|")
            total += len(parts[-1].encode()) + 1
            i += 1
        return " ".join(parts)

    src = tmp_path / "in"
    src.mkdir()
    huge, long = line_of(3_000_000), line_of(400_000)  # over and under data.max_line_bytes (1 MiB here)
    (src / "huge.txt").write_text("पहली पंक्ति हे|\n" + huge + "\n", encoding="utf-8")
    (src / "long.txt").write_text(long + "\n", encoding="utf-8")
    backend = Counting()
    started = time.perf_counter()
    summary, _, err = _correct(src, tmp_path / "out", backend, cfg=_cfg(f"data.max_line_bytes={1 << 20}"))
    seconds = time.perf_counter() - started
    assert max(backend.counted) <= 64 * 1024, max(backend.counted)  # never a whole line (400 KB, 3 MB)
    assert sum(backend.counted) < 40 * len(long)  # linear in the text, not in its square
    # Over the cap: kept byte for byte with one warning, never decoded into pieces or tokenized.
    assert (tmp_path / "out" / "huge.txt").read_text(encoding="utf-8") == "पहली पंक्ति है।\n" + huge + "\n"
    assert [ln for ln in err.splitlines() if "huge.txt:2:" in ln] == [
        f"warning: huge.txt:2: {len(huge.encode())} bytes > data.max_line_bytes {1 << 20}; line kept as it was "
        "(split it into lines to correct it)"]
    # Under it: cut on size, then to the token budget, corrected and joined back.
    want = long.replace("|", "।").replace("किताव", "किताब").replace("हे", "है") + "\n"
    assert (tmp_path / "out" / "long.txt").read_text(encoding="utf-8") == want
    assert summary["pieces"] > 100
    assert seconds < 120  # generous: a failure here means minutes again, not a timing target


def test_windows_cut_on_size_at_sentences_spaces_or_graphemes_and_join_back() -> None:
    import random

    import regex

    from bhasha_build.core.inputs import windows

    rng = random.Random(7)
    alphabet = ["क", "ि", "्", "ष", "ा", "।", " ", "  ", "|", "ক", "্", "ত", "a", ". "]
    for size in (16, 64, 300):
        for _ in range(30):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 2000))).strip() or "क"
            cut = windows(text, size)
            assert "".join(c + sep for c, sep in cut) == text
            assert all(0 < len(c) <= size and not sep.strip() for c, sep in cut)
            # a cut without a space is between two graphemes of the text, never inside one
            bounds, pos = set(), 0
            for g in regex.findall(r"\X", text):
                pos += len(g)
                bounds.add(pos)
            pos = 0
            for c, sep in cut[:-1]:
                pos += len(c)
                assert sep or pos in bounds, (text, pos)
                pos += len(sep)
    no_space = "क्ष" * 1000
    assert all(len(c) <= 64 and c.startswith("क") for c, _ in windows(no_space, 64))
    sentences = "पहला वाक्य है। " * 50
    assert all(c.endswith("।") for c, _ in windows(sentences.strip(), 100))  # at sentence ends when it can


def test_progress_counts_failed_lines_apart_from_corrected_ones() -> None:
    stream = io.StringIO()
    bar = cr.Progress(10, every_s=1000, stream=stream)
    for _ in range(3):
        bar.advance()
    bar.advance(failed=True)
    bar.close()  # a stopped run: the last state is printed even though the total was never reached
    assert stream.getvalue().strip().splitlines() == [stream.getvalue().strip()]
    assert "correct: 3/10 lines (30%), 1 failed" in stream.getvalue()


# ---------------------------------------------------------------------------------- special tokens


def test_the_guard_refuses_a_reply_holding_a_special_token_on_any_line_length() -> None:
    cfg = _cfg().guard
    for words in (3, 40):
        line = " ".join(["यह एक लंबी पंक्ति है।"] * words)
        for token in ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|fim_prefix|>"):
            reason = guard_mod.check(line, line + " " + token, "hi", cfg)
            assert reason is not None and reason.startswith("special token"), (words, token, reason)
            assert guard_mod.reason_kind(reason) == "special token in the output"
        piece = cr.Piece(0, 1, line, line, "hi")
        outcome = cr.judge(piece, cr.Reply(line + " <|im_end|>", "stop"), _cfg())
        assert outcome.final == line and outcome.reason.startswith("special token")


def test_document_text_holding_special_tokens_is_never_sent_and_kept_as_it_is(tmp_path: Path) -> None:
    src = tmp_path / "doc.txt"
    doc = "वह किताव पढ़ता हे|\nकोड में <|im_end|> लिखा हे|\n<|endoftext|>\n"
    src.write_text(doc, encoding="utf-8")
    summary, backend, _ = _correct(src, tmp_path / "out")
    assert backend.sent == ["वह किताव पढ़ता हे|"]
    assert not any("<|" in s for s in backend.sent)
    assert (tmp_path / "out" / "doc.txt").read_text(encoding="utf-8") == HI_FIXED + doc.split("\n", 1)[1]
    records = [json.loads(x) for x in (tmp_path / "out" / "corrections.jsonl").read_text().splitlines()]
    held = next(r for r in records if r["line"] == 2)
    assert held["guarded"] and held["reasons"][0].startswith("special token in the input")
    assert summary["guard_reasons"].get("special token in the input") == 2


# ---------------------------------------------------------------------------------- one line each


def test_a_deeply_nested_json_row_is_one_reject_line(tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    nested = '{"id": "n", "noisy": "क", "meta": ' + "[" * 990 + "]" * 990 + "}"
    src.write_text(json.dumps({"id": "a", "noisy": "वह किताव पढ़ता हे|"}, ensure_ascii=False) + "\n" + deep + "\n"
                   + nested + "\n", encoding="utf-8")
    summary, _, err = _correct(src, tmp_path / "out")
    assert "rows.jsonl:2: " in err and "nested too deep" in err
    out = (tmp_path / "out" / "rows.jsonl").read_text(encoding="utf-8").split("\n")
    assert json.loads(out[0])["corrected"] == "वह किताब पढ़ता है।" and out[1] == deep
    assert summary["problems"] >= 1


def test_a_file_name_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "ok.txt").write_text(HI, encoding="utf-8")
    bad = os.fsdecode(b"\xff\xfepage.txt")
    (src / bad).write_text(HI, encoding="utf-8")
    summary, backend, err = _correct(src, tmp_path / "out")
    assert backend.sent == ["वह किताव पढ़ता हे|"]
    warned = [ln for ln in err.splitlines() if "not UTF-8" in ln and "name" in ln]
    assert len(warned) == 1 and "page.txt" in warned[0]
    assert summary["refused_files"] == 1
    json.dumps(summary, ensure_ascii=False).encode("utf-8")  # the summary itself is writable UTF-8
    with pytest.raises(cr.InputError) as err_single:
        _correct(src / bad, tmp_path / "out2")
    assert "name is not UTF-8" in _one_line(err_single.value)


@pytest.mark.parametrize("out", ["/etc/passwd", "/proc/x", "/etc/passwd/sub", "symlink loop"])
def test_an_output_that_cannot_be_a_folder_is_one_line(tmp_path: Path, out: str) -> None:
    src = tmp_path / "p.txt"
    src.write_text(HI, encoding="utf-8")
    if out == "symlink loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        out = str(tmp_path / "a" / "out")
    before = sha256_file("/etc/passwd")
    backend = RuleBackend()
    with pytest.raises(cr.InputError) as err:
        _correct(src, Path(out), backend)
    assert out.split("/")[1] in _one_line(err.value)
    assert sha256_file("/etc/passwd") == before and backend.sent == []


@pytest.mark.parametrize("jobs", ["-1", "abc", "0", "100000"])
def test_jobs_out_of_range_is_one_line_from_invoke(tmp_path: Path, jobs: str) -> None:
    src = tmp_path / "p.txt"
    src.write_text(HI, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "invoke", "correct", "--input", str(src), "--out",
                           str(tmp_path / "out"), f"--jobs={jobs}", "--gguf", str(tmp_path / "none.gguf")],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--jobs" in errors[0] and f"1 to {MAX_JOBS}" in errors[0], proc.stderr
    with pytest.raises(cr.CorrectError, match=r"jobs"):
        _correct(src, tmp_path / "out", jobs=int(jobs) if jobs.lstrip("-").isdigit() else -5)


def test_the_jobs_rule_has_one_owner_for_the_cli_and_the_stage() -> None:
    # tasks.py passes --jobs as text, the stage gets numbers: both go through cr.check_jobs
    assert cr.check_jobs(None) is None
    assert cr.check_jobs(" 8 ") == 8 and cr.check_jobs(MAX_JOBS) == MAX_JOBS and cr.check_jobs("1") == 1
    for bad in (0, MAX_JOBS + 1, "-1", "abc", "", "2.5", True):
        with pytest.raises(cr.CorrectError, match=rf"^--jobs .*: requests in flight must be a whole number from 1 to "
                                                  rf"{MAX_JOBS}$"):
            cr.check_jobs(bad)
    tasks_py = (REPO / "tasks.py").read_text(encoding="utf-8")
    assert "MAX_JOBS" not in tasks_py and "check_jobs" in tasks_py  # the CLI keeps no copy of the rule


# ---------------------------------------------------------------------------------- every row scored


def test_every_row_with_a_reference_is_scored_even_one_the_model_cannot_touch(tmp_path: Path) -> None:
    rows = [{"id": "a", "noisy": "वह किताव पढ़ता हे|", "clean": "वह किताब पढ़ता है।"},
            {"id": "b", "noisy": "০", "clean": "০"},  # a Bengali digit only: nothing to send
            {"id": "c", "noisy": "১২", "clean": "১২।"},  # not sent either; its error counts as left
            {"id": "d", "noisy": "<|im_end|> हे", "clean": "<|im_end|> है"}]  # held: identity
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    summary, _, _ = _correct(src, tmp_path / "out")
    ref = summary["reference"]
    for name in ("baseline", "raw", "corrected"):
        assert ref[name]["overall"]["rows"] == 4, (name, ref[name]["overall"])
    assert ref["corrected"]["overall"]["cer"] > 0  # rows c and d keep their errors
    assert ref["corrected"]["overall"]["cer"] < ref["baseline"]["overall"]["cer"]
    # Text references: a page-number line scores too (identity), not only lines with letters.
    doc, truth = tmp_path / "d.txt", tmp_path / "t.txt"
    doc.write_text("वह किताव पढ़ता हे|\n- ২ -\n", encoding="utf-8")
    truth.write_text("वह किताब पढ़ता है।\n- २ -\n", encoding="utf-8")
    summary, _, _ = _correct(doc, tmp_path / "out2", reference=truth)
    assert summary["reference"]["baseline"]["overall"]["rows"] == 2
    assert summary["reference"]["corrected"]["overall"]["cer"] > 0


def test_one_line_the_server_keeps_failing_on_never_stops_the_run(tmp_path: Path) -> None:
    class FailsOneLine(RuleBackend):
        def complete(self, text: str, max_tokens: int) -> cr.Reply:
            if "तीसरी" in text:
                with self.lock:
                    self.calls += 1
                raise cr.TransientError("500: model runner crashed")  # this line only, every attempt
            return super().complete(text, max_tokens)

    src = tmp_path / "p.txt"
    src.write_text("".join(f"{w} पंक्ति हे|\n" for w in ("पहली", "दूसरी", "तीसरी", "चौथी", "पाँचवीं")),
                   encoding="utf-8")
    backend = FailsOneLine()
    with pytest.raises(cr.CorrectError, match=r"^1 line\(s\) could not be corrected .*p\.txt:3: 500"):
        _correct(src, tmp_path / "out", backend, cfg=_cfg("correct.retries=3"), jobs=1)
    assert len(backend.sent) == 4  # every other line was still asked and corrected
    assert (tmp_path / "out" / "p.txt").read_text(encoding="utf-8").count("है।") == 4


def test_a_refused_connection_counts_at_every_attempt_and_stops_the_run_at_once(tmp_path: Path) -> None:
    class GoneAfter(RuleBackend):
        refused = 0

        def complete(self, text: str, max_tokens: int) -> cr.Reply:
            with self.lock:
                gone = len(self.sent) >= 20
                self.refused += gone
            if gone:
                raise cr.ServerGone("Ollama is unreachable at http://127.0.0.1:9 (Errno 111 Connection refused)")
            return super().complete(text, max_tokens)

    src = tmp_path / "in"
    _book(src, pages=10, lines=20)
    backend = GoneAfter()
    started = time.perf_counter()
    with pytest.raises(cr.CorrectError, match=r"stopped after .*127\.0\.0\.1:9.*rerun the same command") as err:
        _correct(src, tmp_path / "out", backend, cfg=_cfg("correct.retries=3", "correct.backoff_s=0.5"), jobs=4)
    assert time.perf_counter() - started < 5  # not 180 lines x 3 retries x backoff
    assert backend.refused <= 8, backend.refused  # a few attempts, then nothing more is sent
    assert "20 lines corrected" in _one_line(err.value)


# ---------------------------------------------------------------------------------- a dead server


SERVER = textwrap.dedent("""
    import hashlib, json, os, signal, sys, threading
    from http.server import ThreadingHTTPServer
    sys.path.insert(0, {tests!r})
    from ollama_server import OllamaContractServer, _Handler, _now
    from bhasha_build.core.chat import SYSTEM_PROMPT, STOP_TOKENS

    FIXES = {fixes!r}
    port, die_after, stall = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"

    class RuleServer(OllamaContractServer):
        # The contract server with the rule corrector instead of llama.cpp behind /api/chat.
        def infer(self, record, body, kind):
            if stall:  # a stalled server: the request hangs until the process is killed
                sys.stdout.write("asked\\n")
                sys.stdout.flush()
                threading.Event().wait()
            text = body["messages"][-1]["content"]
            for bad, good in FIXES.items():
                text = text.replace(bad, good)
            yield {{"piece": text}}
            yield {{"done_reason": "stop", "total_duration": 1, "load_duration": 0,
                    "prompt_eval_count": 1, "eval_count": 1, "eval_duration": 1}}

    server = RuleServer(renderer="gguf-jinja")
    params = {{"num_ctx": 512, "stop": STOP_TOKENS}}
    server.models["bhasha-ocr:latest"] = {{
        "name": "bhasha-ocr:latest", "files": {{}}, "gguf": "sha256:" + "0" * 64, "template": "{{{{ .Prompt }}}}",
        "system": SYSTEM_PROMPT, "parameters": params, "messages": [], "license": [],
        "digest": hashlib.sha256(b"rules").hexdigest(), "size": 1, "modified_at": _now(),
        "details": {{"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
                     "parameter_size": "", "quantization_level": ""}}, "model_info": {{}}, "tensors": []}}
    chats = 0
    lock = threading.Lock()

    def answered(body):
        global chats
        with lock:
            chats += 1
            sys.stdout.write(f"chat {{chats}}\\n")
            sys.stdout.flush()
            if chats == die_after:
                os.kill(os.getpid(), signal.SIGKILL)  # the server dies between two answers

    server.after["/api/chat"] = answered
    handler = type("Handler", (_Handler,), {{"app": server}})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    print("port", httpd.server_address[1], flush=True)
    httpd.serve_forever(0.05)
""").format(tests=str(TESTS), fixes=FIXES)


def _server(port: int, die_after: int, stall: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(die_after), str(int(stall))], cwd=REPO,
                            text=True, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["port", str(port)]
    return proc


def _line_within(stream: Any, seconds: float, client: subprocess.Popen[str]) -> str:
    """The next line the server prints, or a failure showing why the client never asked (no hang)."""
    ready, _, _ = select.select([stream], [], [], seconds)
    if not ready:
        client.kill()
        pytest.fail(f"the server was not asked within {seconds:g}s; client: {client.communicate()[1][-2000:]}")
    return str(stream.readline())


def _chats(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    return sum(1 for ln in proc.stdout.read().splitlines() if ln.startswith("chat"))


def _book(src: Path, pages: int = 6, lines: int = 10) -> None:
    src.mkdir()
    for p in range(pages):
        (src / f"p{p}.txt").write_text("".join(f"पृष्ठ {p} की पंक्ति {i} हे|\n" for i in range(lines)),
                                       encoding="utf-8")


def test_a_server_killed_mid_run_stops_the_run_within_seconds_and_a_rerun_resumes(tmp_path: Path) -> None:
    src, out = tmp_path / "book", tmp_path / "out"
    _book(src)
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    cfg = _cfg("correct.retries=3", "correct.backoff_s=0.5", "correct.timeout_s=30")
    server = _server(port, die_after=14)
    try:
        backend = cr.open_backend(cfg, name="bhasha-ocr", host=host)
        err = io.StringIO()
        started = time.perf_counter()
        with pytest.raises(cr.CorrectError) as exc:
            cr.correct(src, out, backend, cfg, progress=True, progress_stream=err, jobs=2)
        seconds = time.perf_counter() - started
        backend.close()
    finally:
        server.kill()
        server.wait()
    line = _one_line(exc.value)
    assert seconds < 15, seconds  # it was 34 s for 35 lines before: every line retried 3x with backoff
    assert host in line and "rerun" in line, line
    answered = _chats(server)
    assert answered == 14
    # What was finished is in the journals; finished files are written and complete, none half-written.
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["stopped"] and host in summary["stopped"]
    assert summary["failed"] >= 1 and summary["lines_done"] <= 14
    assert "failed" in err.getvalue()  # the progress counts failures apart from corrections
    for page in sorted(src.iterdir()):
        if (out / page.name).exists():
            assert cr.structure((out / page.name).read_bytes()) == cr.structure(page.read_bytes())
    # The server is back (same address): the rerun asks only for what was not finished.
    server = _server(port, die_after=10_000)
    try:
        backend = cr.open_backend(cfg, name="bhasha-ocr", host=host)
        summary = cr.correct(src, out, backend, cfg, progress=False, jobs=2)
        backend.close()
    finally:
        server.kill()
        server.wait()
    assert summary["failed"] == 0 and summary["lines"] == 60 and summary["changed"] == 60
    assert _chats(server) == 60 - answered  # nothing asked twice, nothing lost
    for page in sorted(src.iterdir()):
        want = page.read_text(encoding="utf-8").replace("हे|", "है।")
        assert (out / page.name).read_text(encoding="utf-8") == want


def test_one_ctrl_c_while_the_server_stalls_exits_at_once_without_tracebacks(tmp_path: Path) -> None:
    src = tmp_path / "book"
    _book(src, pages=2, lines=4)
    for presses in (1, 3):
        port = free_port()
        server = _server(port, die_after=10_000, stall=True)
        proc = None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "invoke", "correct", "--input", str(src), "--out",
                 str(tmp_path / f"out{presses}"),
                 "--host", f"http://127.0.0.1:{port}", "--name", "bhasha-ocr", "--jobs=4",
                 "--set", f'runs_dir="{tmp_path / "runs"}"', "--set", "correct.timeout_s=300"],
                cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=ctrl_c_as_a_terminal_sends_it)
            assert server.stdout is not None
            assert _line_within(server.stdout, 60, proc).strip() == "asked"  # a request is in flight, stalled
            time.sleep(0.3)
            started = time.perf_counter()
            for _ in range(presses):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                time.sleep(0.2)
            _, stderr = proc.communicate(timeout=60)
            seconds = time.perf_counter() - started
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            server.kill()
            server.wait()
        assert seconds < 10, (presses, seconds)  # it was 240 s: each request in flight ran all its retries
        assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
        assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == "interrupted", stderr[-2000:]
