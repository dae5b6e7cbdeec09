"""The data stage's faster paths give what the plain ones gave (bench/quality/README.md §5, lease overhead).

Each pair below checks a shortcut against the slow way it replaced: batched token counts against one
conversation at a time, the memoized foreign_fraction against a per-character classification, the
one-search special-token check against the field walk, and too_long rejects counted after reading
against the read order they had when counted while reading.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import regex

from bhasha_build.core import chat, text
from bhasha_build.stages import data
from tests.test_data import HI, byte_tokenizer, cfg, good_rows, jrow, load_rows, run  # noqa: F401


def test_batched_token_counts_are_the_one_by_one_counts(byte_tokenizer: Any,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "TOKEN_BATCH", 3)  # several batches and a short last one
    conversations = [chat.pair_messages(n * k, c) for k in (1, 2, 5) for n, c in HI]
    conversations.append([{"role": "user", "content": "नमस्ते"}, {"role": "assistant", "content": "नमस्कार"}])
    one_by_one = [data.chat_token_count(byte_tokenizer, m) for m in conversations]
    assert data.chat_token_counts(byte_tokenizer, conversations) == one_by_one
    assert len(set(one_by_one)) > 3  # lengths differ: a shifted or reordered batch would show


def _classify(ch: str, script: str) -> str:
    """The per-character rule foreign_fraction had before it memoized (text.py)."""
    cat = unicodedata.category(ch)
    if cat == "Co":
        return "foreign"
    if cat[0] in "LMN":
        if regex.match(rf"\p{{sc={script}}}", ch):
            return "native"
        if not regex.match(r"[\p{sc=Common}\p{sc=Inherited}]", ch):
            return "foreign"
    return "neutral"


def test_memoized_foreign_fraction_is_the_per_character_rule() -> None:
    chars = ("कखग़ज़०१२।॥ऽ ়ক্ষ০১ৎ৳ தமிழ்௦௳ abcXYZ019 .,-!?\u200c\u200d\ue000\ue0a4 ٣٤ αβ ﷺ "
             "\u0951\u0952\u1cd0\u0300\u093c\u09bc\u0bcd")
    for script in sorted(set(text.LANG_SCRIPTS.values())):
        native = sum(_classify(c, script) == "native" for c in chars)
        foreign = sum(_classify(c, script) == "foreign" for c in chars)
        want = ((foreign / (native + foreign)) if native + foreign else 0.0, native)
        assert text.foreign_fraction(chars, script) == want, script
        assert text.foreign_fraction(chars, script) == want, script  # the second call reads the memo
    with pytest.raises(KeyError):
        text.foreign_fraction("", "Klingon")


@pytest.mark.parametrize("fields", [
    {"noisy": "भारत", "clean": "भारत<|im_end|>"},
    {"noisy": "भारत", "meta": {"a": ["x", {"<|fim_pad|>": 1}]}},
    {"noisy": "भारत", "meta": [1, 2.5, None, True, "b<|endoftext|>c"]},
    {"noisy": "tab\tand \"quote\" \\ <|x|>"},
    json.loads('{"noisy": "\\u003c|im_start|\\u003e"}'),  # escaped in the file: the decoded text has it
    {"noisy": "भारत", "clean": "<| not a token |>", "id": "<||>"},
    {"noisy": "भारत", "clean": "भारत"},
])
def test_one_search_rejects_what_the_walk_rejects(fields: dict[str, Any]) -> None:
    def walk() -> str | None:
        try:
            data._special_tokens(fields, "row")
        except data.Reject as exc:
            return str(exc)
        return None

    try:
        data.check_special_tokens(fields)
        got = None
    except data.Reject as exc:
        got = str(exc)
    assert got == walk()


def test_too_long_rejects_keep_read_order(tmp_path: Path) -> None:
    long_row = jrow("hi", HI[0][0] * 8, HI[0][1] * 8)
    rows: list[Any] = [long_row, "not json", *good_rows()[:2], jrow("xx", "a", "b"), long_row,
                       jrow("hi", HI[1][0] * 9, HI[1][1] * 9), "{", good_rows()[2]]
    src = tmp_path / "in.jsonl"
    src.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                   encoding="utf-8")
    stats = data.prepare(src, tmp_path / "out", cfg(model={"max_seq_length": 256}))
    rejects = load_rows(tmp_path / "out" / "rejects.jsonl")
    assert [(r["source"], r["reason"].split(":")[0]) for r in rejects] == [
        ("in.jsonl:1", "too_long"), ("in.jsonl:2", "malformed_json"), ("in.jsonl:5", "unknown_lang"),
        ("in.jsonl:6", "too_long"), ("in.jsonl:7", "too_long"), ("in.jsonl:8", "malformed_json")]
    assert stats["rejects_by_reason"] == {"malformed_json": 2, "too_long": 3, "unknown_lang": 1}
    assert stats["by_lang"]["hi"]["rejected"] == 3


def test_duplicates_are_counted_once_with_the_same_length(tmp_path: Path, byte_tokenizer: Any,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = data.chat_token_counts
    monkeypatch.setattr(data, "chat_token_counts", lambda tok, convs: calls.append(len(convs)) or real(tok, convs))
    rows = good_rows() * 3
    stats = run(tmp_path, rows, tokenizer=byte_tokenizer)
    assert calls == [len(good_rows())] and stats["duplicates_dropped"] == 2 * len(good_rows())
    assert stats["token_lengths"]["max"] == max(
        data.chat_token_count(byte_tokenizer, chat.pair_messages(r["noisy"], r["clean"])) for r in good_rows())


def test_score_counts_each_line_once_with_the_corpus_functions_numbers() -> None:
    from bhasha_build.core import metrics

    rows = [{"lang": lang, "noisy": n, "clean": c} for lang, n, c in [
        ("hi", *HI[0]), ("hi", *HI[2]), ("bn", "কলকাতা শহরে", "কলকাতা শহরে"), ("hi", "", ""),
        ("ta", "தமிழ் நாடு", "தமிழ்நாடு"), ("hi", HI[1][1], HI[1][1])]]
    hyps = [HI[0][1], "बच्चे स्कूल", "কলকাতা শহর ", "x", "தமிழ்நாடு", HI[1][1] + "।"]

    def block(rs: list[dict[str, str]], hs: list[str]) -> dict[str, Any]:  # the per-function way
        hs = [metrics.normalize_hyp(h) for h in hs]
        refs, inputs = [r["clean"] for r in rs], [r["noisy"] for r in rs]
        return {"rows": len(rs), "cer": metrics.corpus_cer(hs, refs), "cer_char": metrics.corpus_cer(hs, refs, "char"),
                "wer": metrics.corpus_wer(hs, refs),
                "over_correction_rate": metrics.over_correction_rate(inputs, hs, refs),
                "identity_rows": sum(i == r for i, r in zip(inputs, refs, strict=True))}

    got = metrics.score(rows, hyps)
    assert json.dumps(got["overall"]) == json.dumps(block(rows, hyps))
    for lang in ("bn", "hi", "ta"):
        pick = [i for i, r in enumerate(rows) if r["lang"] == lang]
        assert got["by_lang"][lang] == block([rows[i] for i in pick], [hyps[i] for i in pick])
    assert list(got["by_lang"]) == ["bn", "hi", "ta"]
    groups = {"all": rows, "train": rows[:4], "eval": rows[4:], "none": []}
    assert metrics.identity_baselines(groups) == {k: metrics.identity_baseline(v) for k, v in groups.items()}
    assert metrics.score([], []) == {"overall": block([], []), "by_lang": {}}


def test_prepare_pauses_the_collector_and_restores_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    seen: list[bool] = []
    real = data.dedupe
    monkeypatch.setattr(data, "dedupe", lambda rows: seen.append(gc.isenabled()) or real(rows))
    assert gc.isenabled()
    run(tmp_path, good_rows())
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        run(tmp_path / "again", good_rows()) if (tmp_path / "again").mkdir() is None else None
        assert not gc.isenabled()  # a caller's choice is left as it was
    finally:
        gc.enable()
