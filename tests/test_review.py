"""The review loop without a browser: grapheme marks, the page's data, review.jsonl into the data
stage (pairs, identity pairs, provenance, data.review_dir, stats) and into the corrected files
(`correct --apply`: layout kept, checked before writing, kept by a rerun), and a CLI that prints only
the project's lines. The page itself in a real browser: tests/test_review_browser.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import review_helpers as rh

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.metrics import graphemes
from bhasha_build.core.review import changed_graphemes, grapheme_diff, review_pair
from bhasha_build.stages import correct as cr
from bhasha_build.stages import report, review_apply
from bhasha_build.stages import review as rv
from bhasha_build.stages.data import prepare

REPO = Path(__file__).resolve().parent.parent
BOOK = rh.DOCS / "ocr" / "book_hi.txt"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _review_row(rec: dict[str, Any], decision: str, text: str | None = None) -> dict[str, Any]:
    text = {"accepted": rec["output"], "rejected": rec["input"]}.get(decision, text)
    return {"file": rec["file"], "line": rec["line"], "noisy": rec["input"], "corrected": rec["output"],
            "decision": decision, "text": text, "lang": rec["lang"]}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("review") / "out"
    summary = rh.correct_demo(out)
    records = {(r["file"], r["line"]): r for r in map(json.loads, _lines(out / "corrections.jsonl"))}
    return {"out": out, "summary": summary, "records": records}


# ------------------------------------------------------------------------------ grapheme marks


@pytest.mark.parametrize(("a", "b", "in_a", "in_b"), [
    ("किताव", "किताब", ["व"], ["ब"]),
    ("क्षमा", "क्समा", ["क्ष"], ["क्स"]),  # a conjunct is one grapheme: marked whole, never half
    ("पुस्तकालय|", "पुस्तकालय।", ["|"], ["।"]),
    ("गाँवका", "गाँव का", [], [" "]),  # an insertion: nothing marked in the input (a caret there)
    ("𝔸क", "𝔸ख", ["क"], ["ख"]),  # outside the BMP: offsets count UTF-16 units, like JavaScript
])
def test_the_marked_graphemes_are_the_changed_ones(a: str, b: str, in_a: list[str], in_b: list[str]) -> None:
    spans_a, spans_b, inserts = grapheme_diff(a, b)
    assert changed_graphemes(a, spans_a) == in_a and changed_graphemes(b, spans_b) == in_b
    assert bool(inserts) == (not in_a and bool(in_b))
    js = a.encode("utf-16-le")  # the page slices UTF-16: every span is a whole grapheme run there too
    for s, e in spans_a:
        assert "".join(graphemes(js[2 * s:2 * e].decode("utf-16-le"))) == js[2 * s:2 * e].decode("utf-16-le")


def test_a_matra_change_inside_a_conjunct_marks_that_conjunct_only() -> None:
    spans_a, spans_b, _ = grapheme_diff("स्त्री शक्ति", "स्त्रि शक्ति")
    assert changed_graphemes("स्त्री शक्ति", spans_a) == ["स्त्री"]
    assert changed_graphemes("स्त्रि शक्ति", spans_b) == ["स्त्रि"]


def test_the_page_lists_changed_and_guarded_lines_with_their_marks(demo: dict[str, Any]) -> None:
    out = demo["out"]
    data = rv.page_data(rv.read_records(out / "corrections.jsonl"), "t", "k")
    rows = {(data["files"][r["f"]], r["l"]): r for r in data["rows"]}
    assert len(rows) == demo["summary"]["changed"] + demo["summary"]["guarded"] == 11
    assert data["counts"]["unchanged"] == 7 and data["langs"] == ["bn", "hi"]
    line4 = rows[("book_hi.txt", 4)]  # क़िताबें → किताबें, हेंl → हैं।  (hand-checked)
    assert changed_graphemes(line4["n"], line4["da"]) == ["क़ि", "हें", "l"]
    assert changed_graphemes(line4["o"], line4["db"]) == ["कि", "हैं", "।"]
    assert line4["i"] == demo["records"][("book_hi.txt", 4)]["input"]  # exported as recorded
    guarded = rows[rh.GUARDED_LINE]
    assert guarded["gd"] and guarded["r"] == rh.ENGLISH and "script change" in guarded["rs"]
    assert isinstance(guarded["c"], float)


def test_the_page_is_one_self_contained_file_whatever_the_text(tmp_path: Path) -> None:
    rec = {"file": "a.txt", "line": 1, "lang": "hi", "input": "</script><script>alert(1)</script> क",
           "output": "</script> ख", "changed": True, "guarded": False, "reasons": []}
    corrections = _write_jsonl(tmp_path / "corrections.jsonl", [rec])
    result = rv.write_page(corrections)
    html = Path(result["path"]).read_text(encoding="utf-8")
    assert html.count("</script>") == 2  # the data script's and the page script's own ends
    assert "http://" not in html and "https://" not in html and "src=" not in html  # nothing to fetch
    blob = html.split('id="review-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(blob)["rows"][0]["i"] == rec["input"]
    assert result["shown"] == 1 and result["with_confidence"] == 0  # no confidence: the page shows "—"


def test_a_bad_corrections_line_is_one_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "corrections.jsonl"
    bad.write_text('{"file": "a.txt", "line": 1, "input": "क", "output": "ख"}\nnot json\n', encoding="utf-8")
    with pytest.raises(rv.ReviewError, match=r"corrections.jsonl:2: not JSON"):
        rv.write_page(bad)


# ------------------------------------------------------------------------------ reviews as training data


def _reviews(demo: dict[str, Any]) -> list[dict[str, Any]]:
    r = demo["records"]
    return [_review_row(r[("book_hi.txt", 5)], "accepted"),
            _review_row(r[("book_hi.txt", 4)], "rejected"),
            _review_row(r[("book_hi.txt", 8)], "edited", "वे हर किताब पर सफ़ेद काग़ज़ का आवरण चढ़ाते थे।"),
            _review_row(r[rh.GUARDED_LINE], "accepted")]


def test_reviews_become_pairs_identity_pairs_and_counted_provenance(demo: dict[str, Any], tmp_path: Path) -> None:
    rows = [*_reviews(demo), {**_reviews(demo)[0], "line": 99, "decision": "maybe"}]
    src = _write_jsonl(tmp_path / "review.jsonl", rows)
    stats = prepare(src, tmp_path / "data", BuildConfig())
    got = [json.loads(x) for f in ("train.jsonl", "eval.jsonl") for x in _lines(tmp_path / "data" / f)]
    by_source = {r["source"]: r for r in got}
    assert set(by_source) == {"review.jsonl:1 (review accepted book_hi.txt:5)",
                              "review.jsonl:2 (review rejected book_hi.txt:4)",
                              "review.jsonl:3 (review edited book_hi.txt:8)",
                              "review.jsonl:4 (review accepted book_hi.txt:7)"}
    accepted, rejected, edited, kept = (by_source[f"review.jsonl:{no} ({what})"] for no, what in [
        (1, "review accepted book_hi.txt:5"), (2, "review rejected book_hi.txt:4"),
        (3, "review edited book_hi.txt:8"), (4, "review accepted book_hi.txt:7")])
    assert accepted["clean"] == "हर शाम बच्चे वहाँ आकर कहानियाँ पढ़ते हैं।" != accepted["noisy"]
    assert rejected["clean"] == rejected["noisy"]  # the input was right: an identity pair
    assert edited["clean"].endswith("चढ़ाते थे।")
    assert kept["clean"] == kept["noisy"]  # the guard kept the input and the reviewer agreed
    assert stats["review"]["rows"] == stats["review"]["kept"] == 4
    assert (stats["review"]["accepted"], stats["review"]["edited"], stats["review"]["rejected"]) == (2, 1, 1)
    assert stats["review"]["train"] + stats["review"]["eval"] == 4
    assert stats["rejects_by_reason"] == {"malformed_review": 1}


def test_the_review_dir_is_mixed_in_and_counted(demo: dict[str, Any], tmp_path: Path) -> None:
    reviews = tmp_path / "reviews"
    reviews.mkdir()
    _write_jsonl(reviews / "2026-12-01.jsonl", _reviews(demo)[:2])
    (reviews / "README.md").write_text("not a review\n")
    base = BuildConfig.model_validate({"data": {"review_dir": str(reviews)}})
    layout = RunLayout(tmp_path / "run")
    stats = prepare(REPO / "data" / "samples", layout.data_dir, base)
    assert stats["review"]["rows"] == 2 and stats["review"]["review_dir_files"] == [str(reviews / "2026-12-01.jsonl")]
    assert stats["rows_read"] == 315 + 2
    assert "Reviewed lines (review.jsonl, review.html's export): 2 (1 accepted, 0 edited, 1 rejected" in \
        report.render(layout)  # the morning page counts them
    missing = BuildConfig.model_validate({"data": {"review_dir": str(tmp_path / "none")}})
    stats = prepare(REPO / "data" / "samples", tmp_path / "data2", missing)
    assert stats["review"]["rows"] == 0 and any("no .jsonl review files" in w for w in stats["warnings"])


def test_review_rows_are_checked() -> None:
    row = {"file": "a.txt", "line": 3, "noisy": "क|", "corrected": "क।", "decision": "accepted", "text": "क।"}
    assert review_pair(row).clean == "क।"
    assert review_pair({**row, "decision": "rejected", "text": "क|"}).clean == "क|"
    for bad, why in [({"decision": "ok"}, "decision"), ({"line": 0}, "line"), ({"text": "x"}, "accepted but"),
                     ({"decision": "rejected"}, "rejected but"), ({"noisy": None}, "noisy")]:
        with pytest.raises(ValueError, match=why):
            review_pair({**row, **bad})


# ------------------------------------------------------------------------------ correct --apply


def test_apply_writes_the_decisions_with_the_layout_kept(demo: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rh.correct_demo(out, confidence=False)
    before = (out / "book_hi.txt").read_bytes()
    review = _write_jsonl(tmp_path / "review.jsonl", _reviews(demo))
    result = review_apply.apply_review(review, out, rh.cfg())
    assert (result["rewritten"], result["already"], result["files_rewritten"]) == (2, 2, 1)
    after = (out / "book_hi.txt").read_bytes()
    want = before.decode().splitlines(keepends=True)
    src = BOOK.read_text(encoding="utf-8").splitlines(keepends=True)
    want[3] = src[3]  # rejected: the input's own line, byte for byte
    want[7] = want[7].replace("चढ़ाते हैं।", "चढ़ाते थे।")  # edited
    assert after.decode() == "".join(want)
    assert cr.structure(after) == cr.structure(BOOK.read_bytes())
    # Twice changes nothing; a rerun of the same correct keeps the reviewed file (its journal says so).
    again = review_apply.apply_review(review, out, rh.cfg())
    assert again["rewritten"] == 0 and again["already"] == 4 and (out / "book_hi.txt").read_bytes() == after
    summary = cr.correct(rh.DOCS / "ocr", out, rh.TruthBackend(), rh.cfg(), progress=False)
    assert summary["skipped_files"] == 2 and (out / "book_hi.txt").read_bytes() == after


def test_apply_refuses_a_file_changed_since_and_writes_nothing(demo: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rh.correct_demo(out, confidence=False)
    book, letter = out / "book_hi.txt", out / "letter_bn.txt"
    book.write_text(book.read_text(encoding="utf-8").replace("पढ़ते हैं।", "पढ़ते हैं!"), encoding="utf-8")
    rows = [_review_row(demo["records"][("letter_bn.txt", 4)], "rejected"), *_reviews(demo)]
    before = {p: p.read_bytes() for p in (book, letter)}
    with pytest.raises(rv.ReviewError, match=r"book_hi.txt:5: the line no longer holds"):
        review_apply.apply_review(_write_jsonl(tmp_path / "review.jsonl", rows), out, rh.cfg())
    assert {p: p.read_bytes() for p in (book, letter)} == before
    with pytest.raises(rv.ReviewError, match="not a file inside"):
        review_apply.apply_review(_write_jsonl(tmp_path / "r2.jsonl", [{**rows[0], "file": "../x.txt"}]), out,
                                  rh.cfg())


def test_apply_to_jsonl_rows_sets_their_corrected_field(tmp_path: Path) -> None:
    noisy = _lines(BOOK)[4]  # a line the fixed backend corrects
    src = _write_jsonl(tmp_path / "rows.jsonl", [{"id": "p1", "noisy": "  " + noisy, "lang": "hi", "page": 3}])
    out = tmp_path / "out"
    cr.correct(src, out, rh.TruthBackend(), rh.cfg(), progress=False)
    rec = json.loads(_lines(out / "corrections.jsonl")[0])
    assert rec["changed"]
    review_apply.apply_review(_write_jsonl(tmp_path / "r.jsonl", [_review_row(rec, "edited", "हर शाम पढ़ते हैं।")]),
                              out, rh.cfg())
    row = json.loads(_lines(out / "rows.jsonl")[0])
    assert row == {"id": "p1", "noisy": "  " + noisy, "lang": "hi", "page": 3, "corrected": "  हर शाम पढ़ते हैं।"}


# ------------------------------------------------------------------------------ the CLI


def test_invoke_data_reads_a_review_and_prints_only_the_projects_lines(demo: dict[str, Any], tmp_path: Path) -> None:
    """`invoke data` on the samples plus a review.jsonl, with the tiny model (torch, transformers): no
    torch _pytree warnings, no progress bars — unless --verbose."""
    src = tmp_path / "input"
    src.mkdir()
    for f in (REPO / "data" / "samples").iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    _write_jsonl(src / "review.jsonl", _reviews(demo))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BHASHA_VERBOSE", None)
    argv = [sys.executable, "-m", "invoke", "data", "--profile", "tiny-cpu", "--run", "r", "--input", str(src),
            "--set", f'runs_dir="{tmp_path / "runs"}"', "--set", "model.tiny.pretrain_steps=0"]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for noise in ("_pytree", "Writing model shards", "it/s]", "Failed to load", "Warning"):
        assert noise not in proc.stderr, proc.stderr[-2000:]
    assert "reviewed lines 4 (2 accepted, 1 edited, 1 rejected" in proc.stdout
    stats = json.loads((tmp_path / "runs" / "r" / "data" / "stats.json").read_text(encoding="utf-8"))
    assert stats["review"]["kept"] == 4
