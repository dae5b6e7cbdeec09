"""Issue 22's training data knobs and quality records: the unchanged-row cap of the data stage, the
bench/quality JSON writer and its RESULTS.md table, the real-errors-qwen profile and its sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bhasha_build.core.config import BuildConfig, load_config
from bhasha_build.stages.data import load_rows, prepare


def _rows(lang: str, changed: int, unchanged: int, word: str) -> list[dict[str, str]]:
    rows = [{"lang": lang, "noisy": f"{word} {i} गलत", "clean": f"{word} {i} सही"} for i in range(changed)]
    rows += [{"lang": lang, "noisy": f"{word} {i} ठीक", "clean": f"{word} {i} ठीक"} for i in range(unchanged)]
    return rows


def _prepare(tmp_path: Path, rows: list[dict[str, str]], cap: float) -> dict:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = BuildConfig.model_validate({"data": {"max_unchanged_fraction": cap, "eval_fraction": 0.1}})
    return prepare(src, tmp_path / f"out-{cap}", cfg)


def test_unchanged_cap_per_language(tmp_path):
    rows = _rows("hi", 60, 60, "राम") + _rows("mr", 20, 1, "श्याम")
    off = _prepare(tmp_path, rows, 1.0)
    assert "unchanged_dropped" not in off  # default: no cap, stats as before
    stats = _prepare(tmp_path, rows, 0.15)
    train = load_rows(tmp_path / "out-0.15" / "train.jsonl")
    evl = load_rows(tmp_path / "out-0.15" / "eval.jsonl")
    for lang in ("hi", "mr"):
        mine = [r for r in train if r["lang"] == lang]
        same = sum(r["noisy"] == r["clean"] for r in mine)
        assert same / len(mine) <= 0.15, lang
        assert stats["unchanged_cap"]["train_unchanged_fraction"][lang] == round(same / len(mine), 4)
    hi_train = [r for r in train if r["lang"] == "hi"]
    assert sum(r["noisy"] == r["clean"] for r in hi_train) > 0     # capped, not removed
    assert "mr" not in stats["unchanged_cap"]["dropped_by_lang"]    # 1 unchanged of 20: under the cap
    assert stats["unchanged_dropped"] == stats["unchanged_cap"]["dropped_by_lang"]["hi"] > 0
    assert stats["kept"] == (stats["train_rows"] + stats["eval_rows"] + stats["chat_unused"]
                             + stats["unchanged_dropped"])
    assert evl == load_rows(tmp_path / "out-1.0" / "eval.jsonl")    # eval untouched
    again = _prepare(tmp_path, list(reversed(rows)), 0.15)          # order-independent
    assert again["unchanged_dropped"] == stats["unchanged_dropped"]
    assert [r["id"] for r in load_rows(tmp_path / "out-0.15" / "train.jsonl")] == [r["id"] for r in train]


def test_unchanged_cap_bounds():
    with pytest.raises(ValueError):
        BuildConfig.model_validate({"data": {"max_unchanged_fraction": 1.5}})
