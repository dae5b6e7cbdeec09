"""Real OCR pairs through real fonts, RAQM shaping and the Debian Tesseract 5 (tiny samples on CPU).

Tesseract, its hin/ben/tam models and the fonts come from Debian (scripts/test-deps.sh installs them,
as `make test` does); without Tesseract these tests skip, saying so."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from bhasha_build.core.metrics import corpus_cer
from bhasha_build.core.text import normalize_text
from bhasha_build.features import ocr_pairs as op

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="tesseract missing: bash scripts/test-deps.sh (make test does)")
CLEAN = Path(__file__).resolve().parents[1] / "data" / "clean"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("BHASHA_OCR_CACHE", str(cache))
    return cache


def _lines(tmp_path: Path, lang: str, n: int) -> Path:
    src = tmp_path / f"{lang}.txt"
    src.write_text("\n".join((CLEAN / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:n]) + "\n",
                   encoding="utf-8")
    return src


@needs_tesseract
@pytest.mark.parametrize("lang", ["hi", "bn", "ta"])
def test_shaped_clean_renders_read_back_nearly_perfectly(tmp_path: Path, lang: str) -> None:
    """RAQM shaping is what makes a clean render readable (unshaped: 0.16-0.42 CER); Tamil's only
    error is the ZWNJ after word-final pullis, which the auto ZWJ policy removes."""
    info = op.ocr_pairs(_lines(tmp_path, lang, 8), tmp_path / "p.jsonl", lang, degrade="clean", workers=1,
                        progress=False)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert info["pairs"] == len(rows) == 8 and info["empty_ocr"] == 0
    noisy = [normalize_text(r["noisy"], "auto") for r in rows]
    assert corpus_cer(noisy, [r["clean"] for r in rows]) < 0.03
    if lang == "ta":
        assert sum("\u0bcd\u200c" in r["noisy"] for r in rows) >= 6  # what Tesseract's Tamil model does


@needs_tesseract
def test_rows_record_how_they_were_made_and_reruns_come_from_the_cache(tmp_path: Path) -> None:
    src = _lines(tmp_path, "hi", 10)
    first = op.ocr_pairs(src, tmp_path / "a.jsonl", "hi", workers=2, seed=5, progress=False)
    assert first["ocr_lines"] == 10 and first["cached_lines"] == 0 and first["workers"] == 2
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()]
    train_fonts = {Path(f).stem for f in op.FONTS["Devanagari"]["train"]}
    for row in rows:
        ocr = row["ocr"]
        assert ocr["font"] in train_fonts and ocr["engine"].startswith("tesseract 5")
        assert ocr["traineddata"].startswith("hin ")
        assert ocr["degrade"]["preset"] == "train" and set(ocr["degrade"]) - {"preset", "size"} <= set(
            op.PRESETS["train"]["kinds"])
    assert first["engine"]["traineddata_sha256"] and json.loads(op.summary_path(tmp_path / "a.jsonl").read_text())
    again = op.ocr_pairs(src, tmp_path / "b.jsonl", "hi", workers=1, seed=5, progress=False)
    assert again["ocr_lines"] == 0 and again["cached_lines"] == 10
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    other = op.ocr_pairs(src, tmp_path / "c.jsonl", "hi", workers=1, seed=6, progress=False)
    assert other["ocr_lines"] == 10  # another seed is another cache file: other fonts and damage


@needs_tesseract
def test_empty_ocr_is_counted_not_silently_dropped(tmp_path: Path) -> None:
    """A line the shipped Bengali samples lost (its damage left Tesseract nothing), next to one it read."""
    shipped = json.loads(op.summary_path(CLEAN.parent / "ocr" / "bn.jsonl").read_text(encoding="utf-8"))
    lost = int(shipped["empty_rows"][0]["id"].rsplit("-", 1)[1])
    inputs = (CLEAN.parent / "ocr" / "input" / "bn.txt").read_text(encoding="utf-8").splitlines()
    src = tmp_path / "bn.txt"
    src.write_text(f"{inputs[0]}\n{inputs[lost - 1]}\n", encoding="utf-8")
    info = op.ocr_pairs(src, tmp_path / "p.jsonl", "bn", seed=shipped["seed"], workers=1, progress=False)
    assert info["lines"] == 2 and info["pairs"] == 1 and info["empty_ocr"] == 1
    assert info["empty_rows"][0]["id"] == "bn-ocr-00002"
    assert info["empty_rows"][0]["degrade"] == shipped["empty_rows"][0]["degrade"]
    assert not info["kept_empty"] and len((tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()) == 1
    # held-out sets keep it as a row (noisy "", its clean truth), still listed; from the cache, same read
    kept = op.ocr_pairs(src, tmp_path / "k.jsonl", "bn", seed=shipped["seed"], workers=1, progress=False,
                        keep_empty=True)
    rows = [json.loads(line) for line in (tmp_path / "k.jsonl").read_text(encoding="utf-8").splitlines()]
    assert kept["kept_empty"] and kept["pairs"] == len(rows) == 2 and kept["empty_ocr"] == 1
    assert rows[1]["id"] == "bn-ocr-00002" and rows[1]["noisy"] == "" and rows[1]["clean"] == inputs[lost - 1]
    assert rows[1]["ocr"]["degrade"] == shipped["empty_rows"][0]["degrade"] and rows[0]["noisy"]
    assert kept["cer"] > info["cer"]  # the lost line counts: all its graphemes are missing


def test_presets_and_font_sets_are_disjoint_and_seeded() -> None:
    """Held-out pairs must come from damage and fonts the training pairs never had."""
    assert not set(op.PRESETS["train"]["kinds"]) & set(op.PRESETS["heldout"]["kinds"])
    for sets in op.FONTS.values():
        assert not set(sets["train"]) & set(sets["heldout"])
    a = [op.sample_degradation("train", random.Random(f"s{i}")) for i in range(50)]
    assert a == [op.sample_degradation("train", random.Random(f"s{i}")) for i in range(50)]
    assert 15 < sum("blur" in p for p in a) < 35  # each kind at its probability (0.5)


def test_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _lines(tmp_path, "hi", 2)
    with pytest.raises(op.OcrError, match="not a preset"):
        op.ocr_pairs(src, tmp_path / "p.jsonl", "hi", degrade="nope")
    with pytest.raises(op.OcrError, match="no Tesseract model mapped"):
        op.ocr_pairs(src, tmp_path / "p.jsonl", "te")
    with pytest.raises(op.OcrError, match=r"font NoSuchFont\.ttf not found"):
        op.resolve_fonts("NoSuchFont.ttf", "hi")
    with pytest.raises(op.OcrError, match="input not found"):
        op.ocr_pairs(tmp_path / "missing.txt", tmp_path / "p.jsonl", "hi")
    from PIL import features

    monkeypatch.setattr(features, "check", lambda name: False)
    with pytest.raises(op.OcrError, match="no RAQM layout"):
        op.ocr_pairs(src, tmp_path / "p.jsonl", "hi")
    assert not (tmp_path / "p.jsonl").exists()


def test_shipped_samples_match_their_summaries() -> None:
    """data/ocr ships a few hundred real pairs per language, each row saying how it was made."""
    root = CLEAN.parent / "ocr"
    for lang in ("hi", "bn", "ta"):
        rows = [json.loads(line) for line in (root / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()]
        summary = json.loads(op.summary_path(root / f"{lang}.jsonl").read_text(encoding="utf-8"))
        inputs = (root / "input" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        assert 200 <= len(rows) == summary["pairs"] == len(inputs) - summary["empty_ocr"]
        assert {r["clean"] for r in rows} <= set(inputs)
        assert all(r["lang"] == lang and r["ocr"]["font"] and r["ocr"]["engine"] for r in rows)
        assert corpus_cer([r["noisy"] for r in rows], [r["clean"] for r in rows]) == pytest.approx(summary["cer"],
                                                                                                   abs=1e-4)


@needs_tesseract
def test_a_tesseract_crash_on_one_image_costs_that_render_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Tesseract 5.3.0 died of SIGFPE on one damaged Bengali render on the GPU box (2026-12-02), which failed
    the whole pairs run: now the chunk is read image by image and only the crashing render is lost, counted."""
    real = shutil.which("tesseract")
    wrapper = tmp_path / "bin" / "tesseract"
    wrapper.parent.mkdir()
    wrapper.write_text('#!/bin/bash\ncase "$1" in *0001.png) kill -FPE $$;;'
                       ' *.txt) grep -q 0001.png "$1" && kill -FPE $$;; esac\n'
                       f'exec {real} "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("BHASHA_OCR_CACHE", str(tmp_path / "cache"))
    src = _lines(tmp_path, "hi", 4)
    info = op.ocr_pairs(src, tmp_path / "p.jsonl", "hi", workers=1, seed=5, progress=False)
    assert info["lines"] == 4 and info["pairs"] + info["empty_ocr"] == 3 and info["ocr_failed"] == 1
    assert info["failed_rows"][0]["error"].startswith("tesseract exited -8")
    again = op.ocr_pairs(src, tmp_path / "q.jsonl", "hi", workers=1, seed=5, progress=False)
    assert again["ocr_lines"] == 0 and again["ocr_failed"] == 1  # the crash is cached like any reading
