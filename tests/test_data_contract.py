"""The data stage's run-folder contract: `prepare` writes the same bytes for the same inputs.

Six cases cover every path through `prepare` (the repo's samples; the messy file's rejects and
duplicates; chat mixing + the unchanged cap + a review folder; a tiny input whose eval split needs the
smallest-hash fallback; one clean text, too few chat rows and a missing review folder; a tokenizer
with `too_long="truncate"`). Each case's four files are hashed
(stats.json with the test's own folders replaced by placeholders) and compared with
tests/golden/data_contract.json, recorded before `prepare` was split into named steps; a refactor of
the stage must leave them byte-identical. `UPDATE_GOLDEN=1` rewrites the file (only for an intended
change of the outputs, with the reason in the commit).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_data import BN_ROW, HI, TA_ROW, byte_tokenizer, cfg, chat_rows, jrow, write_jsonl  # noqa: F401

from bhasha_build.stages.data import prepare

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "data_contract.json"
FILES = ("train.jsonl", "eval.jsonl", "rejects.jsonl", "stats.json")


def _reviews() -> list[dict[str, Any]]:
    """Review rows (core/review.py's format) over the first sample lines: each decision, and one malformed."""
    rows = [json.loads(ln) for ln in (ROOT / "data" / "samples" / "hi.jsonl").read_text(encoding="utf-8").splitlines()]
    out = []
    for i, row in enumerate(rows[:6]):
        decision = ("accepted", "edited", "rejected")[i % 3]
        text = {"accepted": row["clean"], "edited": row["clean"] + " ।", "rejected": row["noisy"]}[decision]
        out.append({"file": "book.txt", "line": i + 1, "noisy": row["noisy"], "corrected": row["clean"],
                    "decision": decision, "text": text})
    out.append({"file": "book.txt", "line": 9, "noisy": "क", "corrected": "क", "decision": "maybe", "text": "क"})
    return out


def _case(name: str, tmp: Path, tokenizer: Any) -> tuple[Path, Any, dict[str, Any]]:
    """(input, config, prepare's keyword arguments) of one case."""
    if name == "samples":
        return ROOT / "data" / "samples", cfg(), {}
    if name == "messy":
        return ROOT / "data" / "messy", cfg(eval_fraction=0.2), {}
    if name == "mixed":
        chat = write_jsonl(tmp / "chat.jsonl", chat_rows(40))
        reviews = tmp / "reviews"
        reviews.mkdir()
        write_jsonl(reviews / "2026-12-01.jsonl", _reviews())
        return ROOT / "data" / "samples", cfg(chat_input=str(chat), review_dir=str(reviews), mix_ratio=0.1,
                                              max_unchanged_fraction=0.05, eval_fraction=0.2, seed=7), {}
    if name == "tiny":
        src = write_jsonl(tmp / "in.jsonl", [jrow("hi", n, c) for n, c in HI[:3]] + [jrow("hi", *HI[0])])
        return src, cfg(eval_fraction=0.001), {}
    if name == "sparse":  # one distinct clean text, too few chat rows, a review folder that is not there
        src = write_jsonl(tmp / "in.jsonl", [jrow("hi", *HI[0]), jrow("hi", "कल रात तेज बारीश हुई|", HI[0][1])])
        chat = write_jsonl(tmp / "chat.jsonl", chat_rows(1))
        return src, cfg(chat_input=str(chat), review_dir=str(tmp / "no-reviews"), mix_ratio=0.5), {}
    assert name == "tokenizer"
    rows = [jrow("hi", n, c) for n, c in HI] + [jrow("bn", *BN_ROW), jrow("ta", *TA_ROW),
                                                 jrow("hi", HI[0][0] * 8, HI[0][1] * 8), *chat_rows(2)]
    src = write_jsonl(tmp / "in.jsonl", rows)
    return src, cfg(too_long="truncate", model={"max_seq_length": 512}), {
        "tokenizer": tokenizer, "tokenizer_source": "byte-level test tokenizer"}


CASES = ("samples", "messy", "mixed", "tiny", "sparse", "tokenizer")


def _hashes(out: Path, tmp: Path) -> dict[str, str]:
    hashes = {}
    for name in FILES:
        data = (out / name).read_bytes()
        if name == "stats.json":  # the only absolute paths: the inputs' and the review files'
            data = data.replace(str(tmp).encode(), b"<tmp>").replace(str(ROOT).encode(), b"<repo>")
        hashes[name] = hashlib.sha256(data).hexdigest()
    return hashes


@pytest.mark.parametrize("case", CASES)
def test_prepare_writes_the_recorded_bytes(tmp_path: Path, case: str, byte_tokenizer: Any) -> None:  # noqa: F811
    src, config, kwargs = _case(case, tmp_path, byte_tokenizer)
    stats = prepare(src, tmp_path / "out", config, **kwargs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)  # nothing else, no temp files
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    assert on_disk == stats  # what prepare returns is what it wrote
    got = _hashes(tmp_path / "out", tmp_path)
    golden = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.exists() else {}
    if os.environ.get("UPDATE_GOLDEN"):
        golden[case] = got
        GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=2) + "\n", encoding="utf-8")
    assert got == golden[case], f"{case}: the data stage's outputs changed (stats: {stats['rows_read']} rows read)"
