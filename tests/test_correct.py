"""`correct` without a model: layout, splitting, normalization, guard, JSONL, references, retries,
resuming. The backend here is a deterministic rule corrector (danda `|` → `।`, a few word fixes),
so every expected byte is known; the same code against real llama.cpp and the Ollama-contract server
is in tests/test_correct_model.py."""

from __future__ import annotations

import io
import json
import threading
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from bhasha_build.core.config import load_config
from bhasha_build.core.errors import BhashaError
from bhasha_build.stages import correct as cr

REPO = Path(__file__).resolve().parent.parent
FIXES = {"|": "।", "किताव": "किताब", "हे": "है"}


class RuleBackend:
    """Fixes FIXES in what it is sent; records every text; can fail or stop on cue."""

    kind = "rules"
    concurrent = True
    num_ctx = 512

    def __init__(self, reply: Any = None, fail_first: int = 0, interrupt_after: int | None = None,
                 permanent: bool = False) -> None:
        self.sent: list[str] = []
        self.reply, self.fail_first, self.permanent = reply, fail_first, permanent
        self.interrupt_after = interrupt_after
        self.calls = 0
        self.lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "fixes": FIXES}

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + text.count("।")  # about a token per word here

    def complete(self, text: str, max_tokens: int) -> cr.Reply:
        with self.lock:
            self.calls += 1
            calls = self.calls
            if self.interrupt_after is not None and calls > self.interrupt_after:
                raise KeyboardInterrupt
            if self.permanent or calls <= self.fail_first:
                raise cr.TransientError(f"stalled (call {calls})")
            self.sent.append(text)
        if self.reply is not None:
            return cr.Reply(self.reply(text), "stop")
        out = text
        for bad, good in FIXES.items():
            out = out.replace(bad, good)
        return cr.Reply(out, "stop")

    def close(self) -> None:
        pass


def _cfg(*extra: str):
    return load_config(env={}, overrides=["correct.backoff_s=0", *extra])


def _run(tmp_path: Path, src: Path, backend: Any = None, **kw: Any) -> tuple[dict[str, Any], RuleBackend]:
    backend = backend or RuleBackend()
    summary = cr.correct(src, tmp_path / "out", backend, kw.pop("cfg", None) or _cfg(), progress=False, **kw)
    return summary, backend


# A two-page document: CRLF, indentation, blank lines, trailing spaces, a form feed page break,
# a BOM, no final newline; OCR errors only in its text.
PAGE_DOC = ("\ufeff    पुस्तकालय|\r\n\r\nहर शाम बच्चे कहानियाँ पढ़ते हैं|  \r\nवे हर किताव पर आवरण चढ़ाते हैं।\r\n"
            "\f\r\n\tदूसरा पृष्ठ यहाँ शुरू होता हे\r\n - २ - \r\n\fतीसरा पृष्ठ|")


def test_layout_is_kept_byte_for_byte_except_the_corrected_text(tmp_path: Path) -> None:
    src = tmp_path / "doc.txt"
    src.write_bytes(PAGE_DOC.encode())
    summary, backend = _run(tmp_path, src)
    got = (tmp_path / "out" / "doc.txt").read_bytes()
    want = PAGE_DOC.replace("|", "।").replace("किताव", "किताब").replace("होता हे", "होता है")
    assert got == want.encode()
    assert cr.structure(got) == cr.structure(src.read_bytes())
    assert " - २ - " not in backend.sent and "- २ -" not in backend.sent  # no letter: not sent
    assert summary["lines"] == 5 and summary["changed"] == 5 and summary["guarded"] == 0
    records = [json.loads(x) for x in (tmp_path / "out" / "corrections.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 3, 4, 6, 8] and all(r["changed"] for r in records)
    # The record's input/output are the line's text (layout outside it).
    assert records[0]["input"] == "पुस्तकालय|" and records[0]["output"] == "पुस्तकालय।"


def test_structure_sees_a_layout_change() -> None:  # the comparison the demo test relies on can fail
    base = "क\r\n\r\n  ख\fग".encode()
    for changed in ("क\n\r\n  ख\fग", "क\r\n\r\n ख\fग", "क\r\n\r\n  ख ग", "क\r\nx\r\n  ख\fग", "क\r\n\r\n  ख\fग\n"):
        assert cr.structure(changed.encode()) != cr.structure(base)


def test_what_is_sent_is_normalized_like_training_and_unchanged_lines_keep_their_bytes(tmp_path: Path) -> None:
    raw = "\u0958लम और \u095Bमीन\n"  # precomposed क़ and ज़: NFC decomposes them (composition exclusions)
    src = tmp_path / "nukta.txt"
    src.write_text(raw, encoding="utf-8")
    summary, backend = _run(tmp_path, src)
    assert backend.sent == [unicodedata.normalize("NFC", raw.strip())]
    assert backend.sent[0] != raw.strip()
    # The rule corrector changes nothing here: the line keeps its original (precomposed) bytes.
    assert (tmp_path / "out" / "nukta.txt").read_text(encoding="utf-8") == raw
    assert summary["changed"] == 0


def test_zwj_policy_of_the_config_applies_to_what_is_sent(tmp_path: Path) -> None:
    src = tmp_path / "ta.txt"
    src.write_text("தமிழ்\u200cநாடு\n", encoding="utf-8")
    _, backend = _run(tmp_path, src, cfg=_cfg('data.zwj_policy="strip"'))
    assert backend.sent == ["தமிழ்நாடு"]


def test_split_text_cuts_at_sentences_then_words_then_graphemes_and_joins_back() -> None:
    text = "पहला वाक्य यहाँ है। दूसरा वाक्य भी है|  तीसरा बहुत लंबा वाक्य है जो शब्दों पर कटेगा"
    fits = lambda t: len(t.split()) <= 4  # noqa: E731
    pieces = cr.split_text(text, fits)
    assert "".join(p + s for p, s in pieces) == text
    assert all(fits(p) for p, _ in pieces)
    assert pieces[0] == ("पहला वाक्य यहाँ है।", " ")  # a whole sentence when it fits
    assert pieces[1] == ("दूसरा वाक्य भी है|", "  ")  # OCR's | ends a sentence too; the double space is kept
    long_word = "क्षत्रियक्षत्रियक्षत्रिय"
    cut = cr.split_text(long_word, lambda t: len(t) <= 8)
    assert "".join(p + s for p, s in cut) == long_word and len(cut) > 1
    assert all(unicodedata.normalize("NFC", p) == p for p, _ in cut)  # cut between graphemes, not inside
    assert cr.split_text("छोटा", fits) == [("छोटा", "")]


def test_a_long_line_is_split_to_the_budget_and_joined_back(tmp_path: Path) -> None:
    line = " ".join(["यह एक वाक्य है|"] * 30)
    src = tmp_path / "long.txt"
    src.write_text(line + "\n", encoding="utf-8")
    summary, backend = _run(tmp_path, src, cfg=_cfg("correct.max_line_tokens=20"))
    assert len(backend.sent) > 1 and all(RuleBackend().count_tokens(t) <= 20 for t in backend.sent)
    assert (tmp_path / "out" / "long.txt").read_text(encoding="utf-8") == line.replace("|", "।") + "\n"
    assert summary["lines"] == 1 and summary["pieces"] == len(backend.sent)


def test_implausible_replies_keep_the_input_and_are_counted(tmp_path: Path) -> None:
    src = tmp_path / "g.txt"
    src.write_text("हर शाम बच्चे कहानियाँ पढ़ते हैं|\nवे हर किताव पर आवरण चढ़ाते हैं।\n", encoding="utf-8")
    replies = iter(["Every evening the children read stories.", "वे हर किताब पर आवरण चढ़ाते हैं।\nदूसरी"])
    summary, _ = _run(tmp_path, src, RuleBackend(reply=lambda t: next(replies)), jobs=1)
    assert (tmp_path / "out" / "g.txt").read_bytes() == src.read_bytes()
    assert summary["guarded"] == 2 and summary["changed"] == 0
    assert summary["guard_reasons"] == {"line break in the reply": 1, "script change": 1}


def test_a_reply_cut_at_the_length_cap_is_not_used() -> None:
    piece = cr.Piece(0, 1, "हर शाम|", "हर शाम|", "hi")
    outcome = cr.judge(piece, cr.Reply("हर शाम।", "length"), _cfg())
    assert outcome.final == "हर शाम|" and outcome.reason.startswith("no stop token")


def test_jsonl_rows_get_corrected_fields_bad_rows_are_kept_and_reported(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "noisy": "वह किताव पढ़ता हे|", "lang": "hi", "clean": "वह किताब पढ़ता है।"},
        {"id": "b", "noisy": "यह ठीक है।", "clean": "यह ठीक है।"},  # no lang: detected (Devanagari → hi)
    ]
    lines = [json.dumps(rows[0], ensure_ascii=False), "{not json", "", json.dumps(rows[1], ensure_ascii=False),
             json.dumps({"id": "c"})]
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = io.StringIO()
    summary = cr.correct(src, tmp_path / "out", RuleBackend(), _cfg(), progress=False, progress_stream=err)
    out = (tmp_path / "out" / "rows.jsonl").read_text(encoding="utf-8").split("\n")
    assert json.loads(out[0]) == {**rows[0], "corrected": "वह किताब पढ़ता है।"}
    assert out[1:3] == ["{not json", ""] and out[4] == json.dumps({"id": "c"})
    assert json.loads(out[3])["corrected"] == "यह ठीक है।"
    assert "rows.jsonl:2: not JSON" in err.getvalue() and "rows.jsonl:5: no string field 'noisy'" in err.getvalue()
    assert summary["problems"] == 2
    ref = summary["reference"]
    assert ref["baseline"]["by_lang"]["hi"]["rows"] == 2
    assert ref["corrected"]["overall"]["cer"] == 0.0 < ref["baseline"]["overall"]["cer"]
    overall = ref["corrected"]["overall"]
    assert overall["over_correction_rate"] == 0.0 and overall["identity_rows"] == 1


def test_reference_files_mirror_the_input_tree(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "vol1").mkdir(parents=True)
    (src / "vol1" / "p1.txt").write_text("वह किताव पढ़ता हे|\n\nयह ठीक है।\n", encoding="utf-8")
    (src / "notes.md").write_text("not an OCR file", encoding="utf-8")
    ref = tmp_path / "ref"
    (ref / "vol1").mkdir(parents=True)
    (ref / "vol1" / "p1.txt").write_text("वह किताब पढ़ता है।\n\nयह ठीक है।\n", encoding="utf-8")
    summary, _ = _run(tmp_path, src, reference=ref)
    assert (tmp_path / "out" / "vol1" / "p1.txt").is_file() and not (tmp_path / "out" / "notes.md").exists()
    assert summary["reference"]["corrected"]["overall"]["cer"] == 0.0
    (ref / "vol1" / "p1.txt").write_text("वह किताब पढ़ता है।\n", encoding="utf-8")
    with pytest.raises(cr.CorrectError, match=r"p1.txt: 1 lines, but vol1/p1.txt has 3"):
        _run(tmp_path, src, reference=ref)


def test_transient_failures_are_retried(tmp_path: Path) -> None:
    src = tmp_path / "r.txt"
    src.write_text("वह किताव पढ़ता है।\n", encoding="utf-8")
    summary, backend = _run(tmp_path, src, RuleBackend(fail_first=2), cfg=_cfg("correct.retries=2"))
    assert backend.calls == 3 and summary["changed"] == 1


def test_a_piece_that_keeps_failing_keeps_its_input_and_a_rerun_retries_it(tmp_path: Path) -> None:
    src = tmp_path / "r.txt"
    src.write_text("वह किताव पढ़ता है।\nयह बात सही हे|\n", encoding="utf-8")
    with pytest.raises(cr.CorrectError, match=r"2 line\(s\) could not be corrected .*r.txt:1: stalled"):
        _run(tmp_path, src, RuleBackend(permanent=True), cfg=_cfg("correct.retries=1"))
    assert (tmp_path / "out" / "r.txt").read_bytes() == src.read_bytes()  # written, input kept
    summary, backend = _run(tmp_path, src)
    assert len(backend.sent) == 2 and summary["changed"] == 2
    assert (tmp_path / "out" / "r.txt").read_text(encoding="utf-8") == "वह किताब पढ़ता है।\nयह बात सही है।\n"


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    lines = [f"यह पंक्ति {i} हे|" for i in range(12)]
    (src / "a.txt").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    (src / "b.txt").write_text("\n".join(lines[4:]) + "\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, src, RuleBackend(interrupt_after=7), jobs=1)
    out = tmp_path / "out"
    assert (out / "a.txt").is_file() and not (out / "b.txt").exists()  # a half-done file is never written
    summary, backend = _run(tmp_path, src, jobs=1)
    assert len(backend.sent) == 12 - 7  # only what was not finished
    assert summary["skipped_files"] == 1 and summary["lines"] == 12
    for name, part in (("a.txt", lines[:4]), ("b.txt", lines[4:])):
        want = "\n".join(x.replace("हे|", "है।") for x in part) + "\n"
        assert (out / name).read_text(encoding="utf-8") == want
    summary, backend = _run(tmp_path, src)  # a third run: nothing left to do
    assert backend.sent == [] and summary["skipped_files"] == 2 and summary["changed"] == 12
    (src / "a.txt").write_text("वह किताव पढ़ता है।\n", encoding="utf-8")  # an input that changed is redone
    summary, backend = _run(tmp_path, src)
    assert backend.sent == ["वह किताव पढ़ता है।"] and summary["skipped_files"] == 1


def test_requests_are_in_flight_together(tmp_path: Path) -> None:
    gate = threading.Barrier(3, timeout=10)

    class Slow(RuleBackend):
        def complete(self, text: str, max_tokens: int) -> cr.Reply:
            gate.wait()  # passes only when 3 requests are in flight at once
            return super().complete(text, max_tokens)

    src = tmp_path / "c.txt"
    src.write_text("".join(f"पंक्ति {i} हे|\n" for i in range(6)), encoding="utf-8")
    summary, _ = _run(tmp_path, src, Slow(), jobs=3)
    assert summary["jobs"] == 3 and summary["changed"] == 6


def test_progress_prints_plain_lines_when_not_a_tty() -> None:
    stream = io.StringIO()
    bar = cr.Progress(4, every_s=1000, stream=stream)
    for _ in range(4):
        bar.advance()
    assert stream.getvalue().strip().splitlines() == [stream.getvalue().strip()]  # only the final line
    assert "correct: 4/4 lines (100%)" in stream.getvalue() and "lines/s eta" in stream.getvalue()


@pytest.mark.parametrize("bad", ["out_is_input", "lang", "missing"])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, bad: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.txt").write_text("क\n", encoding="utf-8")
    args: dict[str, Any] = {"out": tmp_path / "out"}
    if bad == "out_is_input":
        args["out"] = src
    elif bad == "lang":
        args["lang"] = "xx"
    else:
        src = tmp_path / "nope"
    # a path that cannot be used is core.inputs' InputError, raised as it is (not retyped); the rest CorrectError
    with pytest.raises(cr.CorrectError if bad == "lang" else cr.InputError) as err:
        cr.correct(src, args.pop("out"), RuleBackend(), _cfg(), progress=False, **args)
    assert isinstance(err.value, BhashaError) and "\n" not in str(err.value)


def test_sample_documents_match_their_generator() -> None:
    """data/documents/ is what make_documents.py writes (so the demo's input is reproducible)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp_root = Path(tmp) / "data" / "documents"
        tmp_root.mkdir(parents=True)
        script = tmp_root / "make_documents.py"
        script.write_text((REPO / "data/documents/make_documents.py").read_text(encoding="utf-8"))
        env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, str(script)], check=True, env=env, capture_output=True)
        for sub in ("ocr", "truth"):
            for f in (REPO / "data/documents" / sub).iterdir():
                assert (tmp_root / sub / f.name).read_bytes() == f.read_bytes(), f


def test_journal_keeps_a_piece_holding_a_unicode_line_separator(tmp_path: Path) -> None:
    """A reply or piece with U+2028 (JSON writes it raw) is one journal record: the rerun finds it done."""
    path = tmp_path / "journal" / "a.txt.jsonl"
    journal = cr.Journal(path, "key-1")
    journal.add(0, cr.Outcome("क\u2028ख", "क\u2028ख", True, None))
    journal.add(1, cr.Outcome("", "ग", False, "guard"))
    journal.close()
    again = cr.Journal(path, "key-1")
    assert again.done == {0: cr.Outcome("क\u2028ख", "क\u2028ख", True, None), 1: cr.Outcome("", "ग", False, "guard")}


def test_auto_min_confidence_applies_the_runs_eval_split_calibration(tmp_path: Path) -> None:
    """correct.min_confidence = "auto": refused in one line until the run's eval recorded a calibrated threshold;
    then that threshold is applied (a change less confident than it keeps its input) and recorded."""
    from bhasha_build.core.fsutil import atomic_write_json, sha256_file
    from bhasha_build.core.manifest import Manifest
    from bhasha_build.stages.evaluate import CalibrationMissing

    src = tmp_path / "doc.txt"
    src.write_text("वे हर किताव पर आवरण चढ़ाते हैं।\nदूसरा पृष्ठ यहाँ शुरू होता हे\n", encoding="utf-8")
    cfg = _cfg(f'runs_dir="{tmp_path / "runs"}"', 'run="cal"', 'correct.min_confidence="auto"')
    unsure = RuleBackend()
    unsure.complete = lambda text, max_tokens: cr.Reply(  # type: ignore[method-assign]
        RuleBackend.complete(RuleBackend(), text, max_tokens).text, "stop", 0.6 if "किताव" in text else 0.95)
    with pytest.raises(CalibrationMissing, match=r'"auto": .*eval\.json records no threshold'):
        _run(tmp_path, src, unsure, cfg=cfg)
    assert not (tmp_path / "out").exists()
    report = cfg.layout.eval_report
    atomic_write_json(report, {"min_confidence": {"setting": "auto", "threshold": 0.9, "calibrated": {
        "threshold": 0.9, "system": "gguf", "rows": 300, "split": "eval"}}})
    Manifest(cfg.layout.root).update(artifacts={"eval": {"path": "eval.json", "sha256": sha256_file(report)}})
    summary, _ = _run(tmp_path, src, unsure, cfg=cfg)
    assert summary["min_confidence"]["threshold"] == 0.9 and summary["min_confidence"]["setting"] == "auto"
    assert (tmp_path / "out" / "doc.txt").read_text(encoding="utf-8") == (
        "वे हर किताव पर आवरण चढ़ाते हैं।\nदूसरा पृष्ठ यहाँ शुरू होता है\n")  # 0.6 < 0.9: kept; 0.95: used
    assert summary["guard_reasons"] == {"low confidence": 1}
