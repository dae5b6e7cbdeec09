"""Data stage: one test per rule, accounting, normalization, split stability, mixing, stats."""

from __future__ import annotations

import csv
import io
import json
import random
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from bhasha_build.core import chat, metrics
from bhasha_build.core.config import BuildConfig
from bhasha_build.stages.data import DataError, check_trainable, load_rows, manifest_sections, prepare, summary_line

ROOT = Path(__file__).resolve().parent.parent
MESSY = ROOT / "data" / "messy"

HI = [
    ("कल रात तेज बारिश हुई|", "कल रात तेज़ बारिश हुई।"),
    ("भारत एक विशाल देश हे।", "भारत एक विशाल देश है।"),
    ("बच्चे स्कूल जाते हैं।", "बच्चे स्कूल जाते हैं।"),
    ("गंगा नदी हिमालय से निकलती हे।", "गंगा नदी हिमालय से निकलती है।"),
]
BN_ROW = ("কলকাতা শহরে আজ বৃষটি", "কলকাতা শহরে আজ বৃষ্টি")
TA_ROW = ("தமிழ்நாட்டின் தலைநகரம் சென்னை", "தமிழ்நாட்டின் தலைநகரம் சென்னை.")


def cfg(**data: Any) -> BuildConfig:
    model = data.pop("model", {})
    seed = data.pop("seed", 3407)
    return BuildConfig.model_validate({"data": data, "model": model, "seed": seed})


def jrow(lang: str, noisy: Any, clean: Any, **extra: Any) -> dict[str, Any]:
    return {"lang": lang, "noisy": noisy, "clean": clean, **extra}


def write_jsonl(path: Path, rows: list[Any], ending: str = "\n") -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + ending for r in rows), encoding="utf-8", newline=""
    )
    return path


def good_rows() -> list[dict[str, Any]]:
    return [jrow("hi", n, c) for n, c in HI] + [jrow("bn", *BN_ROW), jrow("ta", *TA_ROW)]


def run(tmp_path: Path, rows: list[Any], config: BuildConfig | None = None, **kw: Any) -> dict[str, Any]:
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    return prepare(src, tmp_path / "out", config or cfg(), **kw)


def outputs(tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    out = tmp_path / "out"
    return load_rows(out / "train.jsonl"), load_rows(out / "eval.jsonl"), load_rows(out / "rejects.jsonl")


def both_splits(tmp_path: Path) -> list[dict[str, Any]]:
    train, evl, _ = outputs(tmp_path)
    return train + evl


def assert_accounting(stats: dict[str, Any]) -> None:
    assert stats["rows_read"] == stats["kept"] + stats["rejected"] + stats["duplicates_dropped"]
    assert stats["kept"] == stats["train_rows"] + stats["eval_rows"] + stats["chat_unused"]
    assert stats["rejected"] == sum(stats["rejects_by_reason"].values())


def only_reject(tmp_path: Path, bad: Any, code: str, config: BuildConfig | None = None) -> dict[str, Any]:
    """Run good rows + one bad row: exactly that row is rejected with ``code``, nothing else lost."""
    stats = run(tmp_path, [*good_rows(), bad], config)
    assert_accounting(stats)
    assert stats["rejects_by_reason"] == {code: 1}, stats["rejects_by_reason"]
    assert stats["kept"] == len(good_rows())
    rejects = outputs(tmp_path)[2]
    assert rejects[0]["reason"].startswith(code + ": ")
    assert rejects[0]["source"] == f"in.jsonl:{len(good_rows()) + 1}"
    return rejects[0]


# --- the messy example ----------------------------------------------------------------------


def test_messy_example_counts_add_up_and_lose_nothing(tmp_path: Path) -> None:
    sys.path.insert(0, str(MESSY))
    import make_messy

    stats = prepare(MESSY, tmp_path / "out", cfg())
    assert_accounting(stats)
    expect: dict[str, int] = {}
    for kind in ("jsonl", "csv"):
        for outcome, n in make_messy.expected(kind).items():
            expect[outcome] = expect.get(outcome, 0) + n
    reasons = {k: v for k, v in expect.items() if k not in ("keep", "dup", "chat_unused", "blank", "header")}
    assert stats["rejects_by_reason"] == reasons
    assert stats["duplicates_dropped"] == expect["dup"]
    assert stats["kept"] == expect["keep"] + expect["chat_unused"]
    assert stats["blank_lines_skipped"] == expect["blank"]
    train, evl, _ = outputs(tmp_path)
    kept_cleans = {r["clean"] for r in train + evl}
    for line, _, outcome in make_messy.JSONL:
        if outcome == "keep":
            obj = json.loads(line.decode("utf-8-sig"))
            clean = obj.get("clean") or obj.get("gt")
            assert unicodedata.normalize("NFC", clean).strip() in kept_cleans
    assert "rejected" in summary_line(stats)


# --- one test per reject rule ---------------------------------------------------------------


def test_malformed_json(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    write_jsonl(src, good_rows())
    with src.open("a", encoding="utf-8") as fh:
        fh.write('{"lang": "hi", "noisy": "कल", \n')
    stats = prepare(src, tmp_path / "out", cfg())
    assert stats["rejects_by_reason"] == {"malformed_json": 1}
    assert stats["kept"] == len(good_rows())


def test_json_not_an_object(tmp_path: Path) -> None:
    only_reject(tmp_path, ["hi", "कल", "कल"], "malformed_json")


def test_invalid_utf8_rejects_only_that_line(tmp_path: Path) -> None:
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in good_rows()]
    lines.insert(2, b'{"lang": "hi", "noisy": "\xe0\xa4\x95\xff", "clean": "\xe0\xa4\x95"}')
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    stats = prepare(src, tmp_path / "out", cfg())
    assert stats["rejects_by_reason"] == {"invalid_utf8": 1}
    assert stats["kept"] == len(good_rows())
    reject = outputs(tmp_path)[2][0]
    assert reject["source"] == "in.jsonl:3"
    assert "\\xff" in reject["raw"]


def test_lone_surrogate_is_invalid_utf8(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    write_jsonl(src, good_rows())
    with src.open("a", encoding="utf-8") as fh:
        fh.write('{"lang": "hi", "noisy": "\\ud800 कल", "clean": "कल"}\n')
    stats = prepare(src, tmp_path / "out", cfg())
    assert stats["rejects_by_reason"] == {"invalid_utf8": 1}


def test_bom_and_crlf_accepted(tmp_path: Path) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in good_rows())
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + body.encode())
    stats = prepare(src, tmp_path / "out", cfg())
    assert stats["rejected"] == 0 and stats["kept"] == len(good_rows())
    train, evl, _ = outputs(tmp_path)
    assert all("\r" not in r["clean"] and "\ufeff" not in r["noisy"] for r in train + evl)

    tsv = tmp_path / "hi.tsv"
    tsv.write_bytes(
        b"\xef\xbb\xbfnoisy\tclean\r\n" + "\r\n".join(f"{n}\t{c}" for n, c in HI).encode() + b"\r\n"
    )
    stats = prepare(tsv, tmp_path / "out2", cfg())
    assert stats["rejected"] == 0 and stats["kept"] == len(HI)


@pytest.mark.parametrize(
    "bad", [jrow("hi", "कल", ""), jrow("hi", "  \u3000 ", "कल"), jrow("hi", "कल", "\u200d")]
)
def test_empty_field(tmp_path: Path, bad: dict[str, Any]) -> None:
    config = cfg(zwj_policy="strip") if bad["clean"] == "\u200d" else cfg()
    only_reject(tmp_path, bad, "empty_field", config)


def test_wrong_script_threshold(tmp_path: Path) -> None:
    latin = jrow("hi", "The quick brown fox jumps", "The quick brown fox jumps")
    only_reject(tmp_path, latin, "wrong_script")
    # Devanagari under lang ta.
    (tmp_path / "b").mkdir()
    only_reject(tmp_path / "b", jrow("ta", *HI[0]), "wrong_script")
    # 2 Latin letters out of ~12 letters: under the default 0.3, rejected at 0.1.
    mixed = jrow("hi", "कल रात तेज बारिश GB", "कल रात तेज़ बारिश GB")
    (tmp_path / "c").mkdir()
    stats = run(tmp_path / "c", [*good_rows(), mixed])
    assert stats["rejected"] == 0
    (tmp_path / "d").mkdir()
    only_reject(tmp_path / "d", mixed, "wrong_script", cfg(max_foreign_fraction=0.1))


def test_no_script_characters_at_all(tmp_path: Path) -> None:
    # Only ASCII digits and punctuation: nothing says this is Hindi.
    only_reject(tmp_path, jrow("hi", "123 - 456 |", "123 - 456 ।"), "wrong_script")
    (tmp_path / "b").mkdir()
    stats = run(tmp_path / "b", [*good_rows(), jrow("hi", "12३", "१२३")])  # Devanagari digits are native
    assert stats["rejected"] == 0


def test_private_use_counts_as_foreign(tmp_path: Path) -> None:
    only_reject(tmp_path, jrow("hi", "\ue0a4\ue0b2\ue0c0 क", "कल"), "wrong_script")


def test_too_long_reject_and_truncate(tmp_path: Path) -> None:
    long_row = jrow("hi", HI[0][0] * 8, HI[0][1] * 8)
    config = cfg(model={"max_seq_length": 256})
    reject = only_reject(tmp_path, long_row, "too_long", config)
    assert "256" in reject["reason"]
    (tmp_path / "t").mkdir()
    stats = run(
        tmp_path / "t", [*good_rows(), long_row], cfg(model={"max_seq_length": 256}, too_long="truncate")
    )
    assert stats["rejected"] == 0
    assert stats["token_lengths"]["truncated_rows"] == 1
    assert stats["token_lengths"]["over_max"] == 1
    assert stats["token_lengths"]["too_long_policy"] == "truncate"


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (jrow("hi", "कल\u0007 रात", "कल रात"), "noisy"),
        (jrow("hi", "कल रात", "कल\tरात"), "clean"),
        (jrow("hi", "कल\u200b रात", "कल रात"), "noisy"),  # zero-width space
        (jrow("hi", "कल\u202e रात", "कल रात"), "noisy"),  # bidi override
        (jrow("hi", "कल\u0085 रात", "कल रात"), "noisy"),  # C1 control (NEL)
        (jrow("hi", "कल\u2028 रात", "कल रात"), "noisy"),  # line separator
    ],
)
def test_control_chars(tmp_path: Path, bad: dict[str, Any], where: str) -> None:
    reject = only_reject(tmp_path, bad, "control_chars")
    assert where in reject["reason"]


def test_missing_field(tmp_path: Path) -> None:
    only_reject(tmp_path, {"lang": "hi", "noisy": "कल"}, "missing_field")
    (tmp_path / "b").mkdir()
    only_reject(tmp_path / "b", {"noisy": "कल", "clean": "कल"}, "missing_field")  # no lang, file name "in"


def test_wrong_type(tmp_path: Path) -> None:
    only_reject(tmp_path, jrow("hi", "कल", 5), "wrong_type")
    (tmp_path / "b").mkdir()
    only_reject(tmp_path / "b", jrow("hi", ["कल"], "कल"), "wrong_type")


def test_unknown_lang(tmp_path: Path) -> None:
    only_reject(tmp_path, jrow("xx", "कल", "कल"), "unknown_lang")


@pytest.mark.parametrize(
    "messages",
    [
        "text",
        [],
        [{"role": "user", "content": "hi"}],
        [{"role": "bot", "content": "x"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}],
    ],
)
def test_malformed_chat(tmp_path: Path, messages: Any) -> None:
    only_reject(tmp_path, {"messages": messages}, "malformed_chat")


def test_csv_rules_and_aliases(tmp_path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["ID", "OCR", "GT", "Language"])
    for i, (n, c) in enumerate(HI):
        w.writerow([f"r{i}", n, c, "hi"])
    w.writerow(["r9", "भारत, एक देश", "भारत, एक देश।", "hi"])  # quoted field with a comma
    text = buf.getvalue() + "bad,row\n" + 'r10,"कल"रात,कल रात,hi\n'
    src = tmp_path / "x.csv"
    src.write_text(text, encoding="utf-8")
    stats = prepare(src, tmp_path / "out", cfg())
    assert_accounting(stats)
    assert stats["rejects_by_reason"] == {"malformed_csv": 2}
    assert stats["kept"] == len(HI) + 1
    train, evl, _ = outputs(tmp_path)
    assert "भारत, एक देश।" in {r["clean"] for r in train + evl}
    assert {r["id"] for r in train + evl} >= {"r0", "r9"}


def test_tsv_aliases_lang_from_file_name_and_literal_quotes(tmp_path: Path) -> None:
    src = tmp_path / "bn_news.tsv"
    src.write_text(
        f'input\ttarget\n{BN_ROW[0]}\t{BN_ROW[1]}\n"উদ্ধৃতি" চিহ্ন\t"উদ্ধৃতি" চিহ্ন।\nonly-one-field\n',
        encoding="utf-8",
    )
    stats = prepare(src, tmp_path / "out", cfg())
    assert stats["rejects_by_reason"] == {"malformed_tsv": 1}
    train, evl, _ = outputs(tmp_path)
    rows = train + evl
    assert {r["lang"] for r in rows} == {"bn"}
    assert '"উদ্ধৃতি" চিহ্ন।' in {r["clean"] for r in rows}


def test_jsonl_aliases_and_canonical_wins(tmp_path: Path) -> None:
    rows = [
        {"input": HI[0][0], "corrected": HI[0][1], "lang": "hi"},
        {"source": HI[1][0], "target": HI[1][1], "lang": "hi"},
        {"noisy": HI[2][0], "clean": HI[2][1], "source": "other.jsonl:3", "lang": "hi"},
    ]
    stats = run(tmp_path, rows)
    assert stats["kept"] == 3
    train, evl, _ = outputs(tmp_path)
    assert {(r["noisy"], r["clean"]) for r in train + evl} == {HI[0], HI[1], HI[2]}


def test_written_split_reads_back_unchanged(tmp_path: Path) -> None:
    stats = run(tmp_path, good_rows())
    train = outputs(tmp_path)[0]
    again = prepare(tmp_path / "out" / "train.jsonl", tmp_path / "out2", cfg())
    assert again["rejected"] == 0 and again["kept"] == stats["train_rows"]
    back = load_rows(tmp_path / "out2" / "train.jsonl") + load_rows(tmp_path / "out2" / "eval.jsonl")
    assert {(r["noisy"], r["clean"]) for r in back} == {(r["noisy"], r["clean"]) for r in train}


# --- duplicates and normalization -----------------------------------------------------------


def test_exact_duplicates_kept_once_and_counted(tmp_path: Path) -> None:
    rows = [*good_rows(), good_rows()[0], good_rows()[0]]
    stats = run(tmp_path, rows)
    assert_accounting(stats)
    assert stats["duplicates_dropped"] == 2
    assert stats["rejected"] == 0
    assert stats["duplicates_count_as_rejects"] is False
    assert stats["by_lang"]["hi"]["duplicates_dropped"] == 2
    train, evl, _ = outputs(tmp_path)
    assert sum(1 for r in train + evl if (r["noisy"], r["clean"]) == HI[0]) == 1


def test_nfc_both_sides_and_nukta_forms(tmp_path: Path) -> None:
    decomposed = "\u091c\u093cमीन"  # ज + nukta
    precomposed = "\u095bमीन"  # ज़ (composition-excluded)
    rows = [*good_rows(), jrow("hi", precomposed, decomposed), jrow("hi", decomposed, precomposed)]
    stats = run(tmp_path, rows)
    assert stats["duplicates_dropped"] == 1  # both rows normalize to the same pair
    train, evl, _ = outputs(tmp_path)
    row = next(r for r in train + evl if "मीन" in r["clean"])
    assert row["noisy"] == row["clean"] == unicodedata.normalize("NFC", decomposed)
    assert all(r["clean"] == unicodedata.normalize("NFC", r["clean"]) for r in train + evl)
    # Bengali য় written as য + nukta (the NFC form) vs precomposed U+09DF.
    (tmp_path / "b").mkdir()
    stats = run(tmp_path / "b", [*good_rows(), jrow("bn", "ন\u09dfন", "ন\u09af\u09bcন")])
    train, evl, _ = outputs(tmp_path / "b")
    row = next(r for r in train + evl if r["clean"].startswith("ন"))
    assert row["noisy"] == row["clean"]


def test_zwj_policy_keep_and_strip(tmp_path: Path) -> None:
    zrow = jrow("hi", "क्\u200dष", "क्\u200dष और")
    run(tmp_path, [*good_rows(), zrow], cfg(zwj_policy="keep"))
    rows = both_splits(tmp_path)
    assert any("\u200d" in r["noisy"] and "\u200d" in r["clean"] for r in rows)
    (tmp_path / "s").mkdir()
    run(tmp_path / "s", [*good_rows(), zrow], cfg(zwj_policy="strip"))
    rows = both_splits(tmp_path / "s")
    assert not any("\u200d" in r["noisy"] or "\u200d" in r["clean"] for r in rows)


def test_zwj_policy_auto_drops_only_word_final_joiners_after_a_virama(tmp_path: Path) -> None:
    """Tesseract's Tamil model adds a ZWNJ after word-final pullis (and its Hindi model after final halants):
    invisible on the page, so "auto" drops them on both sides; joiners inside words are text."""
    from bhasha_build.core.text import normalize_text

    assert normalize_text("தமிழ்\u200c நாடு.\u200c தமிழ்\u200c.", "auto") == "தமிழ் நாடு.\u200c தமிழ்."
    assert normalize_text("अर्थात्\u200c", "auto") == "अर्थात्"
    for kept in ("क्\u200dष", "র\u200d্য", "க்\u200cஷ", "ত্\u200d", "क्\u200cष"):  # half form, ya-phala, க்‌ஷ,
        assert normalize_text(kept, "auto") == kept                                # khanda-ta, explicit halant
    rows = [*good_rows(), jrow("ta", "தமிழ்\u200c நாடு", "தமிழ் நாடு"), jrow("hi", "क्\u200dष और", "क्\u200dष और")]
    stats = run(tmp_path, rows)  # the default policy
    out = both_splits(tmp_path)
    tamil = next(r for r in out if r["clean"] == "தமிழ் நாடு")
    assert tamil["noisy"] == tamil["clean"]  # the only error was the joiner
    assert any("\u200d" in r["clean"] for r in out if r["lang"] == "hi")
    assert stats["normalization"]["zwj_policy"] == "auto"
    assert manifest_sections({**stats, "source": "in.jsonl"})["data"]["normalization"]["zwj_policy"] == "auto"


def test_danda_digits_never_fixed(tmp_path: Path) -> None:
    row = jrow("hi", "दाम 40 रुपये है|| ॥", "दाम ४० रुपये है।")
    run(tmp_path, [*good_rows(), row])
    rows = both_splits(tmp_path)
    got = next(r for r in rows if r["clean"] == "दाम ४० रुपये है।")
    assert got["noisy"] == "दाम 40 रुपये है|| ॥"


# --- split ----------------------------------------------------------------------------------


def many_rows(n: int = 200) -> list[dict[str, Any]]:
    base = (ROOT / "data" / "clean" / "hi.txt").read_text(encoding="utf-8").splitlines()
    rows = []
    for i in range(n):
        clean = base[i % len(base)] + ("" if i < len(base) else f" {i}")
        rows.append(jrow("hi", clean.replace("ी", "ि", 1), clean))
    return rows


def test_split_stable_under_shuffle_and_disjoint(tmp_path: Path) -> None:
    rows = many_rows()
    # The same clean text with a second noisy version must land in the same split.
    rows += [jrow("hi", r["clean"] + "|", r["clean"]) for r in rows[:40]]
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run(tmp_path / "a", rows)
    run(tmp_path / "b", shuffled)

    def content(p: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        train, evl, _ = outputs(p)
        return [(r["noisy"], r["clean"]) for r in train], [(r["noisy"], r["clean"]) for r in evl]

    assert content(tmp_path / "a") == content(tmp_path / "b")  # same rows, same order
    train, evl = content(tmp_path / "a")
    assert not {c for _, c in train} & {c for _, c in evl}
    assert 0.03 < len(evl) / (len(train) + len(evl)) < 0.2


def test_split_follows_fraction_and_seed(tmp_path: Path) -> None:
    rows = many_rows(300)
    (tmp_path / "a").mkdir()
    s = run(tmp_path / "a", rows, cfg(eval_fraction=0.3))
    assert 0.2 < s["split"]["achieved_eval_fraction"] < 0.4
    evl_a = {r["clean"] for r in outputs(tmp_path / "a")[1]}
    (tmp_path / "b").mkdir()
    run(tmp_path / "b", rows, cfg(eval_fraction=0.3, seed=1))
    assert evl_a != {r["clean"] for r in outputs(tmp_path / "b")[1]}


def test_empty_eval_gets_one_text(tmp_path: Path) -> None:
    stats = run(tmp_path, good_rows()[:3], cfg(eval_fraction=0.001))
    assert stats["eval_rows"] == 1
    assert any("eval empty" in w for w in stats["warnings"])


# --- mixing ---------------------------------------------------------------------------------


def chat_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ]
        }
        for i in range(n)
    ]


def test_mix_ratio_achieved(tmp_path: Path) -> None:
    chat_file = write_jsonl(tmp_path / "chat.jsonl", chat_rows(200))
    stats = run(tmp_path, many_rows(200), cfg(mix_ratio=0.25, chat_input=str(chat_file)))
    assert_accounting(stats)
    assert stats["mix"]["achieved_ratio"] == pytest.approx(0.25, abs=0.01)
    train = outputs(tmp_path)[0]
    n_chat = sum(1 for r in train if "messages" in r)
    assert n_chat == stats["mix"]["chat_rows_train"] > 0
    assert stats["chat_unused"] == 200 - n_chat
    assert all("messages" not in r for r in outputs(tmp_path)[1])  # eval is OCR pairs only


def test_mix_ratio_short_of_chat_rows_warns(tmp_path: Path) -> None:
    chat_file = write_jsonl(tmp_path / "chat.jsonl", chat_rows(5))
    stats = run(tmp_path, many_rows(200), cfg(mix_ratio=0.25, chat_input=str(chat_file)))
    assert stats["mix"]["chat_rows_train"] == 5
    assert stats["mix"]["achieved_ratio"] < 0.25
    assert any("chat rows" in w for w in stats["warnings"])


def test_chat_rows_unused_without_mix_ratio(tmp_path: Path) -> None:
    stats = run(tmp_path, [*good_rows(), *chat_rows(3)])
    assert_accounting(stats)
    assert stats["chat_unused"] == 3 and stats["mix"]["achieved_ratio"] == 0.0


# --- stats, errors, outputs -----------------------------------------------------------------


def test_stats_contents(tmp_path: Path) -> None:
    stats = prepare(ROOT / "data" / "samples", tmp_path / "out", cfg())
    assert_accounting(stats)
    assert set(stats["by_lang"]) >= {"hi", "bn", "ta"}
    assert all(stats["by_lang"][lang]["kept"] >= 80 for lang in ("hi", "bn", "ta"))
    tl = stats["token_lengths"]
    assert tl["method"] == "char_estimate"
    assert tl["p50"] <= tl["p90"] <= tl["p95"] <= tl["p99"] <= tl["max"] <= tl["max_seq_length"]
    evl = outputs(tmp_path)[1]
    ident = metrics.identity_baseline(evl)
    assert stats["identity"]["eval"]["overall"]["cer"] == pytest.approx(ident["overall"]["cer"])
    assert 0.01 < stats["identity"]["all"]["overall"]["cer"] < 0.2
    assert stats["identity"]["all"]["overall"]["identity_rows"] > 0
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    assert on_disk["kept"] == stats["kept"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="input not found") as exc:
        prepare(tmp_path / "nope.jsonl", tmp_path / "out", cfg())
    assert "\n" not in str(exc.value) and "nope.jsonl" in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.jsonl"):
        prepare(tmp_path / "empty", tmp_path / "out", cfg())
    (tmp_path / "x.txt").write_text("कल", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported"):
        prepare(tmp_path / "x.txt", tmp_path / "out", cfg())
    bad = write_jsonl(tmp_path / "bad.jsonl", [jrow("hi", "", "")])
    with pytest.raises(DataError, match="no valid rows"):
        prepare(bad, tmp_path / "out", cfg())
    only_chat = write_jsonl(tmp_path / "chat.jsonl", chat_rows(2))
    with pytest.raises(DataError, match="no valid OCR pairs"):
        prepare(only_chat, tmp_path / "out", cfg())


def test_failed_run_leaves_previous_outputs(tmp_path: Path) -> None:
    run(tmp_path, good_rows())
    before = (tmp_path / "out" / "train.jsonl").read_bytes()
    bad = write_jsonl(tmp_path / "bad.jsonl", [jrow("hi", "", "")])
    with pytest.raises(DataError):
        prepare(bad, tmp_path / "out", cfg())
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == before


def test_load_rows_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_rows(tmp_path / "train.jsonl")
    p = tmp_path / "t.jsonl"
    p.write_text('{"a": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl:2"):
        load_rows(p)


# --- tokenizer path -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def byte_tokenizer() -> Any:
    """A byte-level tokenizer with no merges and the project's chat template (offline, instant)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=chat.IM_END, pad_token=chat.ENDOFTEXT
    )
    fast.add_special_tokens({"additional_special_tokens": list(chat.SPECIAL_TOKENS)})
    fast.chat_template = chat.CHAT_TEMPLATE
    return fast


def test_token_lengths_with_tokenizer(tmp_path: Path, byte_tokenizer: Any) -> None:
    stats = run(tmp_path, good_rows(), tokenizer=byte_tokenizer)
    tl = stats["token_lengths"]
    assert tl["method"] == "tokenizer"
    expected = max(
        len(
            byte_tokenizer(chat.render_chatml(chat.pair_messages(n, c)), add_special_tokens=False)[
                "input_ids"
            ]
        )
        for n, c in [*HI, BN_ROW, TA_ROW]
    )
    assert tl["max"] == expected
    assert tl["max"] < 512
    # Byte-level: a 3-byte Indic letter is 3 tokens, so a row 8x longer is over 512.
    (tmp_path / "b").mkdir()
    long_row = jrow("hi", HI[0][0] * 8, HI[0][1] * 8)
    stats = run(
        tmp_path / "b", [*good_rows(), long_row], cfg(model={"max_seq_length": 512}), tokenizer=byte_tokenizer
    )
    assert stats["rejects_by_reason"] == {"too_long": 1}


def test_check_trainable(byte_tokenizer: Any) -> None:
    row = {"noisy": HI[0][0], "clean": HI[0][1], "source": "in.jsonl:1"}
    n = check_trainable(byte_tokenizer, row)
    assert n >= len(HI[0][1].encode())  # the reply's bytes (+ end of turn) are trainable
    with pytest.raises(DataError, match="zero trainable"):
        check_trainable(byte_tokenizer, {**row, "clean": ""})
    with pytest.raises(DataError, match="zero trainable"):
        check_trainable(byte_tokenizer, row, max_seq_length=64)  # the prompt alone fills 64 tokens
    with pytest.raises(DataError, match="cannot format"):
        check_trainable(byte_tokenizer, {"messages": [{"role": "user", "content": "q"}], "id": "c1"})
    chat_row = {"messages": chat_rows(1)[0]["messages"], "id": "c1"}
    assert check_trainable(byte_tokenizer, chat_row) > 0


def test_default_input_is_config_data_input(tmp_path: Path) -> None:
    stats = prepare(None, tmp_path / "out", cfg(input=str(ROOT / "data" / "samples")))
    assert stats["rows_read"] == stats["kept"] >= 300


def test_input_texts_reads_every_text_with_the_stage_reader(tmp_path: Path) -> None:
    """The tiny tokenizer's text: the same record reader as the stage (BOM, CSV quoting, headers),
    every row's text including rows the stage will reject, chat contents, never ids or language codes."""
    from bhasha_build.stages.data import input_texts

    (tmp_path / "a.jsonl").write_text(
        '\ufeff{"id": "x-1", "lang": "hi", "noisy": "भारत देस", "clean": "भारत देश"}\n'
        '{"id": "x-2", "lang": "hi", "noisy": "", "clean": "खाली पंक्ति"}\n'  # rejected later (empty field)
        "not json\n"
        '{"messages": [{"role": "user", "content": "नमस्ते"}, {"role": "assistant", "content": "नमस्कार"}]}\n',
        encoding="utf-8")
    (tmp_path / "bn.csv").write_text('id,ocr,gt\nb-1,"আমার, সোনার","আমার সোনার"\n', encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored: not a data file\n", encoding="utf-8")
    texts = input_texts(tmp_path, cfg().data.max_line_bytes)
    assert texts == ["भारत देस", "भारत देश", "", "खाली पंक्ति", "नमस्ते", "नमस्कार", "আমার, সোনার", "আমার সোনার"]


# --- hostile lines: size, nesting, special tokens (issue 12) ------------------------------------


def test_oversized_line_is_rejected_with_its_size_unparsed(tmp_path: Path) -> None:
    # A 20 MB line: refused before decoding/parsing, and rejects.jsonl keeps a prefix + the length.
    huge = json.dumps(jrow("hi", "क" * 10, "क" * 10, note="x" * 20_000_000))
    src = tmp_path / "in.jsonl"
    with src.open("w", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good_rows()[:3]))
        fh.write(huge + "\n")
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good_rows()[3:]))
    stats = prepare(src, tmp_path / "out", cfg())
    assert_accounting(stats)
    assert stats["rejects_by_reason"] == {"too_large": 1} and stats["kept"] == len(good_rows())
    (reject,) = outputs(tmp_path)[2]
    assert reject["source"] == "in.jsonl:4"
    assert reject["reason"] == f"too_large: line of {len(huge)} bytes > data.max_line_bytes {1 << 20}"
    assert reject["raw_bytes"] == len(huge) and len(reject["raw"]) == 1000 and huge.startswith(reject["raw"])
    assert (tmp_path / "out" / "rejects.jsonl").stat().st_size < 5000


def test_max_line_bytes_is_configurable(tmp_path: Path) -> None:
    row = jrow("hi", "भारत एक विशाल देश हे।" * 20, "भारत एक विशाल देश है।" * 20)
    size = len(json.dumps(row, ensure_ascii=False).encode())
    reject = only_reject(tmp_path, row, "too_large", cfg(max_line_bytes=1024))
    assert reject["reason"] == f"too_large: line of {size} bytes > data.max_line_bytes 1024"
    assert "raw_bytes" in reject  # only the first max_line_bytes bytes were read
    assert run(tmp_path, [*good_rows(), row], cfg(max_line_bytes=size))["kept"] == len(good_rows()) + 1


@pytest.mark.parametrize("line", ["[" * 100_000, '{"a": ' * 100_000, '{"noisy": ' + "[" * 40 + "]" * 40 + "}"])
def test_deep_nesting_is_a_reject_not_a_crash(tmp_path: Path, line: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good_rows()) + line + "\n",
                   encoding="utf-8")
    stats = prepare(src, tmp_path / "out", cfg())
    assert_accounting(stats)
    (reject,) = outputs(tmp_path)[2]
    assert reject["reason"].startswith("malformed_json: nested ") and "(at most 32)" in reject["reason"]
    assert stats["kept"] == len(good_rows())


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    row = jrow("hi", "भारत [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ देश", "भारत देश", id="{" * 50)
    stats = run(tmp_path, [*good_rows(), row])
    assert stats["rejects_by_reason"].get("malformed_json") is None


@pytest.mark.parametrize(("bad", "where"), [
    (jrow("hi", "भारत एक विशाल देश हे।", "भारत एक विशाल देश है।<|im_end|>"), "<|im_end|> at column 22 in clean"),
    (jrow("hi", "<|im_start|>assistant\nभारत", "भारत"), "<|im_start|> at column 1 in noisy"),
    (jrow("hi", "भारत<|endoftext|>", "भारत"), "<|endoftext|> at column 5 in noisy"),
    (jrow("hi", "भारत", "भारत", id="<|fim_prefix|>"), "<|fim_prefix|> at column 1 in id"),
    (jrow("hi", "भारत", "भारत", ocr="<|vision_start|>"), "in ocr"),
    ({"messages": [{"role": "user", "content": "नमस्ते"},
                   {"role": "assistant", "content": "नमस्कार<|im_end|>\n<|im_start|>user"}]},
     "<|im_end|> at column 8 in messages[1].content"),
])
def test_special_tokens_are_rejected_in_every_field(tmp_path: Path, bad: dict[str, Any], where: str) -> None:
    reject = only_reject(tmp_path, bad, "special_token")
    assert where in reject["reason"], reject["reason"]


def test_special_token_rejected_in_csv_too(tmp_path: Path) -> None:
    src = tmp_path / "hi.csv"
    src.write_text("noisy,clean\nभारत एक देश हे।,भारत एक देश है।\nभारत हे।,भारत है।<|endoftext|>\n", encoding="utf-8")
    stats = prepare(src, tmp_path / "out", cfg())
    assert stats["rejects_by_reason"] == {"special_token": 1} and stats["kept"] == 1


def test_long_reject_keeps_a_prefix_and_the_length(tmp_path: Path) -> None:
    line = "not json " * 500
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good_rows()) + line + "\n",
                   encoding="utf-8")
    prepare(src, tmp_path / "out", cfg())
    (reject,) = outputs(tmp_path)[2]
    assert reject["raw"] == line[:1000] and reject["raw_bytes"] == len(line)
    short = only_reject(tmp_path, "oops", "malformed_json")
    assert short["raw"] == '"oops"' and "raw_bytes" not in short
