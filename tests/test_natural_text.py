"""Natural text extractor (tools/natural_text.py) on small fixtures: a real .deb built with dpkg-deb holding
a gettext catalogue, a Chromium .pak and a Firefox-style language pack; and the sentence rules."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from bhasha_build.tools import natural_text as nt


def mo_bytes(pairs: dict[str, str]) -> bytes:
    """A GNU .mo catalogue (the format msgfmt writes), keys sorted."""
    keys = sorted(pairs)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(pairs[k].encode() + b"\0" for k in keys)
    n = len(keys)
    start = 28 + 16 * n
    o_tab, t_tab, off = [], [], 0
    for k in keys:
        o_tab.append((len(k.encode()), start + off))
        off += len(k.encode()) + 1
    off = 0
    for k in keys:
        t_tab.append((len(pairs[k].encode()), start + len(ids) + off))
        off += len(pairs[k].encode()) + 1
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    return head + b"".join(struct.pack("<2I", *e) for e in o_tab + t_tab) + ids + strs


def pak_bytes(strings: list[str]) -> bytes:
    """A version-5 Chromium .pak of UTF-8 strings."""
    count = len(strings)
    table = 12 + 6 * (count + 1)
    data, entries, off = b"", [], table
    for i, s in enumerate(strings):
        entries.append(struct.pack("<HI", 100 + i, off))
        data += s.encode()
        off += len(s.encode())
    entries.append(struct.pack("<HI", 0, off))
    return struct.pack("<IBxxxHH", 5, 1, count, 0) + b"".join(entries) + data


HI = ["यह फ़ाइल सहेजी नहीं जा सकी।", "क्या आप सचमुच बाहर निकलना चाहते हैं?", "%s फ़ाइल नहीं मिली।",
      "_फ़ाइल खोलें", "नया टैब खोलें (_N)", "यह Firefox का संस्करण है।", "पहला वाक्य है। दूसरा वाक्य भी है।"]


def build_deb(tmp: Path, package: str, files: dict[str, bytes]) -> Path:
    root = tmp / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n")
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    cache = tmp / "debs"
    cache.mkdir(exist_ok=True)
    deb = cache / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_sentence_rules():
    assert nt.clean_sentences(HI[0], "hi") == [HI[0]]
    assert nt.clean_sentences(HI[1], "hi") == [HI[1]]
    assert nt.clean_sentences(HI[2], "hi") == []            # a placeholder: the message is dropped whole
    assert nt.clean_sentences(HI[3], "hi") == []            # no end mark: a label, not a sentence
    assert nt.clean_sentences("नया टैब अभी खोलें (_N)।", "hi") == ["नया टैब अभी खोलें।"]  # accelerator key removed
    assert nt.clean_sentences(HI[5], "hi") == []            # a Latin word
    assert nt.clean_sentences(HI[6], "hi") == ["पहला वाक्य है।", "दूसरा वाक्य भी है।"]
    assert nt.clean_sentences("<b>ফাইলটি</b> সংরক্ষণ করা হয়েছে।", "bn") == ["ফাইলটি সংরক্ষণ করা হয়েছে।"]
    assert nt.clean_sentences("ফাইলটি সংরক্ষণ করা হয়েছে।", "hi") == []  # wrong script for the language
    assert nt.clean_sentences("கோப்பு சேமிக்கப்பட்டது, மீண்டும் திறக்கவும்.", "ta") == [
        "கோப்பு சேமிக்கப்பட்டது, மீண்டும் திறக்கவும்."]
    assert nt.dedup_key("यह, फ़ाइल।") == nt.dedup_key("यह फ़ाइल.")


def test_readers_roundtrip():
    assert nt.read_pak(pak_bytes(["एक", "दो"])) == ["एक", "दो"]
    assert set(nt.read_mo(mo_bytes({"a": "एक", "b": "दो"}))) == {"एक", "दो"}
    ftl = "# c\nkey = पहला वाक्य\n    जारी है।\n    .label = लेबल है।\n"
    assert nt.read_ftl(ftl) == ["पहला वाक्य जारी है।", "लेबल है।"]


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_extract_from_debs_splits_by_unit(tmp_path):
    many = [f"यह वाक्य संख्या {chr(0x966 + i % 10)}{chr(0x966 + i // 10)} है।" for i in range(100)]
    build_deb(tmp_path, "fake-mo", {"usr/share/locale/hi/LC_MESSAGES/app.mo":
                                     mo_bytes({f"m{i:03d}": s for i, s in enumerate(many)} | {"x": HI[2]})})
    build_deb(tmp_path, "fake-pak", {"usr/lib/chromium/locales/hi.pak": pak_bytes([*HI, many[0]])})
    import io

    xpi = io.BytesIO()
    with zipfile.ZipFile(xpi, "w") as zf:
        zf.writestr("localization/hi/a.ftl", "k = दूसरा वाक्य भी है।\nj = खिड़की बंद हो गई है।\n")
    build_deb(tmp_path, "fake-xpi", {"usr/lib/ff/hi.xpi": xpi.getvalue()})
    sources = (nt.Source("fake-mo", "MIT", "mo", {"hi": ("usr/share/locale/hi/LC_MESSAGES/*.mo",)}),
               nt.Source("fake-pak", "BSD", "pak", {"hi": ("usr/lib/chromium/locales/hi.pak",)}),
               nt.Source("fake-xpi", "MPL", "xpi", {"hi": ("usr/lib/ff/hi.xpi",)}))
    out = tmp_path / "out"
    record = nt.extract(out, ["hi"], heldout_fraction=0.4, seed=1, cache=tmp_path / "debs", sources=sources)
    train = nt.read_lines(out / "hi.train.jsonl")
    held = nt.read_lines(out / "hi.heldout.jsonl")
    keys_train = {nt.dedup_key(r["clean"]) for r in train}
    keys_held = {nt.dedup_key(r["clean"]) for r in held}
    assert train and held and not keys_train & keys_held          # no sentence on both sides
    assert not {r["unit"] for r in train} & {r["unit"] for r in held}
    all_rows = train + held
    assert len({nt.dedup_key(r["clean"]) for r in all_rows}) == len(all_rows)  # deduplicated across sources
    texts = {r["clean"] for r in all_rows}
    assert HI[0] in texts and "खिड़की बंद हो गई है।" in texts and not any("%" in t for t in texts)
    assert len(texts) == 100 + 2 + 2 + 1  # 100 numbered + HI[0], HI[1] + the two of HI[6] + the xpi's new one
    src = record["sources"]["fake-mo"]
    assert src["licence"] == "MIT" and src["version"] == "1.0-1" and len(src["sha256"]) == 64
    assert src["langs"]["hi"]["messages"] == 101
    assert json.loads((out / "SOURCES.json").read_text())["langs"]["hi"]["train"]["lines"] == len(train)
    with pytest.raises(nt.NaturalTextError, match=r"no \.deb"):
        nt.extract(out, ["hi"], cache=tmp_path / "empty", sources=sources)


# ---------------------------------------------------------------- natural_pairs
def test_swap_words_keeps_punctuation():
    import random

    from bhasha_build.tools.natural_pairs import swap_words

    line, k = swap_words("क्या आप, सचमुच बाहर निकलना चाहते हैं?", ["ज़ुबरा", "क्ष्मोत"], 0.5, random.Random(1))
    assert k == 4 and line.count(",") == 1 and line.endswith("?") and len(line.split()) == 7
    assert sum(w.strip(",?") in ("ज़ुबरा", "क्ष्मोत") for w in line.split()) == 4


def test_assemble_real_share(tmp_path):
    from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl
    from bhasha_build.stages.data import split_fraction
    from bhasha_build.tools.learning_signal import check_real_input
    from bhasha_build.tools.natural_pairs import assemble

    natural, train, held, dst = (tmp_path / n for n in ("natural", "train", "held", "input"))
    cleans = [f"यह वाक्य संख्या {i} है।" for i in range(40)]
    atomic_write_jsonl(natural / "hi.train.jsonl", ({"id": f"t{i}", "lang": "hi", "clean": c}
                                                    for i, c in enumerate(cleans)))
    atomic_write_jsonl(natural / "hi.heldout.jsonl", [{"id": "h0", "lang": "hi", "clean": "अलग वाक्य है।"}])
    atomic_write_jsonl(train / "ocr-hi.jsonl", ({"id": f"o{i}", "lang": "hi", "noisy": c.replace("वा", "ना"),
                                                 "clean": c} for i, c in enumerate(cleans)))
    atomic_write_json(train / "train.json", {"langs": {}})
    atomic_write_jsonl(held / "heldout" / "indomain-hi.jsonl",
                       [{"id": "h0", "lang": "hi", "noisy": "अलग नाक्य है।", "clean": "अलग वाक्य है।"}])
    atomic_write_json(held / "heldout.json", {"sets": {}})
    index = assemble(dst, held, train, real_share=0.5, natural=natural, eval_fraction=0.2, seed=7)
    fitted = [json.loads(x) for x in (dst / "fitted-hi.jsonl").read_text().splitlines()]
    assert index["fitted_rows"] == {"hi": 40} and len(fitted) == 40
    assert all(split_fraction(r["clean"], 7) >= 0.2 for r in fitted)  # train side only: eval split unchanged
    assert any(r["noisy"] != r["clean"] for r in fitted)
    assert set(check_real_input(dst)["files"]) >= {"ocr-hi.jsonl", "fitted-hi.jsonl", "heldout/indomain-hi.jsonl"}
    with pytest.raises(Exception, match="real_share"):
        assemble(tmp_path / "x", held, train, real_share=0)
    # rare-word lines (natural_pairs rare) join the training pairs only when asked, and leave with the next
    rare = tmp_path / "rare"
    atomic_write_jsonl(rare / "ocr-rare-hi.jsonl", [{"id": "r0", "lang": "hi", "noisy": "यह कलमीरा है", "clean":
                                                     "यह कलमीरा है"}])
    atomic_write_json(rare / "rare.json", {"lines": 1, "langs": {"hi": {"pairs": 1}}})
    with_rare = assemble(dst, held, train, natural=natural, eval_fraction=0.2, seed=7, rare_from=rare)
    assert with_rare["rare"] == {"lines": 1, "langs": {"hi": {"pairs": 1}}}
    assert "ocr-rare-hi.jsonl" in with_rare["files"]
    assert (dst / "ocr-rare-hi.jsonl").read_text() == (rare / "ocr-rare-hi.jsonl").read_text()
    without = assemble(dst, held, train, natural=natural, eval_fraction=0.2, seed=7)
    assert without["rare"] is None and not (dst / "ocr-rare-hi.jsonl").exists()
    with pytest.raises(Exception, match=r"no rare\.json"):
        assemble(dst, held, train, natural=natural, rare_from=tmp_path / "nothing")


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract missing: bash scripts/test-deps.sh")
def test_natural_pairs_real_tesseract(tmp_path, monkeypatch):
    """Real Tesseract on a few natural lines: held-out sets use only held-out fonts and damage, training
    pairs only training fonts (never a held-out family), and both index files record how they were made."""
    from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl
    from bhasha_build.features.ocr_pairs import FONTS
    from bhasha_build.tools.natural_pairs import make_heldout, make_train

    monkeypatch.setenv("BHASHA_OCR_CACHE", str(tmp_path / "cache"))
    natural = tmp_path / "natural"
    held_lines = ["फ़ाइल सहेजी नहीं जा सकी।", "क्या आप बाहर निकलना चाहते हैं?", "यह पृष्ठ खाली है।",
                  "नया टैब खोलें और फिर से कोशिश करें।"]
    train_lines = ["कृपया पासवर्ड दोबारा लिखें।", "संदेश भेज दिया गया है।", "यह सेटिंग बंद है।"]
    for side, lines in (("heldout", held_lines), ("train", train_lines)):
        atomic_write_jsonl(natural / f"hi.{side}.jsonl", ({"id": f"nat-hi-{side}-{i}", "lang": "hi", "clean": c,
                                                            "source": "pkg", "unit": f"pkg:f#{i}"}
                                                           for i, c in enumerate(lines)))
    atomic_write_json(natural / "SOURCES.json", {})
    out = tmp_path / "out"
    index = make_heldout(out, natural, rows=2, seed=5, workers=1, langs=("hi",))
    held_fonts = {f.removesuffix(".ttf") for f in FONTS["Devanagari"]["heldout"]}
    for kind in ("indomain", "unfamiliar"):
        rows = [json.loads(x) for x in (out / "heldout" / f"{kind}-hi.jsonl").read_text().splitlines()]
        assert 1 <= len(rows) <= 2 and all(r["ocr"]["font"] in held_fonts for r in rows)
        assert all(r["ocr"]["degrade"]["preset"] == "heldout" and r["source"]["package"] == "pkg" for r in rows)
        assert index["sets"][f"{kind}-hi"]["sha256"]
    unfamiliar = [json.loads(x)["clean"] for x in (out / "heldout" / "unfamiliar-hi.jsonl").read_text().splitlines()]
    assert not set(unfamiliar) & set(held_lines)  # words were swapped
    train = make_train(out, natural, pairs=6, variants=2, seed=5, workers=1, langs=("hi",), hand_written=False)
    rows = [json.loads(x) for x in (out / "ocr-hi.jsonl").read_text().splitlines()]
    assert 1 <= len(rows) <= 6 and {r["clean"] for r in rows} <= set(train_lines)
    assert not {r["ocr"]["font"] for r in rows} & held_fonts
    assert all(r["ocr"]["degrade"]["preset"] == "train" for r in rows)
    info = train["langs"]["hi"]
    assert info["pairs"] == len(rows) and info["lines"]["composed"] == 0 and info["cer_by_font"]
    assert all(len(f["sha256"]) == 64 for f in info["fonts"].values())
    more = make_train(tmp_path / "more", natural, pairs=3, variants=1, seed=5, workers=1, langs=("hi",),
                      hand_written=False, min_changed=10**6)["langs"]["hi"]
    assert more["renders"] == 3 and more["pairs"] > 3  # rendered again (up to 3x) for changed rows, not cut
    assert more["changed_after_normalization"] <= more["pairs"]


def _old_heldout(tmp_path, drop: dict[str, list[int]]):
    """A natural folder and a held-out output as natural_pairs wrote it before empty reads were kept: each
    set's planned rows (a fake OCR: the clean line with its last letter cut) less the rows at `drop`, which
    the summaries list under empty_rows."""
    from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl, sha256_file
    from bhasha_build.tools.natural_pairs import HELDOUT_INDEX, heldout_plan

    natural = tmp_path / "natural"
    held = [f"फ़ाइल संख्या {i} सहेजी नहीं जा सकी।" for i in range(8)]
    for side, lines in (("heldout", held), ("train", ["कृपया पासवर्ड दोबारा लिखें।"])):
        atomic_write_jsonl(natural / f"hi.{side}.jsonl", ({"id": f"nat-hi-{side}-{i}", "lang": "hi", "clean": c,
                                                            "source": "pkg", "unit": f"pkg:f#{i}"}
                                                           for i, c in enumerate(lines)))
    atomic_write_json(natural / "SOURCES.json", {"pkg": {}})
    out = tmp_path / "out"
    engine = {"tesseract": "tesseract 5.3.0", "traineddata": "hin", "traineddata_package": "1:4.1.0-2"}
    index = {"rows": 3, "swap": 0.4, "seed": 5, "sets": {}, "natural_sources": sha256_file(natural / "SOURCES.json")}
    for kind, chosen in heldout_plan(natural, "hi", rows=3, swap=0.4, seed=5).items():
        name = f"{kind}-hi"
        ocr = {"font": "Samyak-Devanagari", "degrade": {"preset": "heldout", "size": 20}, "engine": "tesseract 5.3.0",
               "traineddata": "hin 1:4.1.0-2"}
        rows = [{"id": r["id"], "lang": "hi", "noisy": r["clean"][:-1], "clean": r["clean"], "ocr": ocr,
                 "source": {"package": "pkg", "unit": r["unit"]}} for r in chosen]
        empty = [{"id": rows[i]["id"], "font": "Samyak-Devanagari", "degrade": {"preset": "heldout", "size": 33}}
                 for i in drop.get(kind, [])]
        kept = [r for i, r in enumerate(rows) if i not in drop.get(kind, [])]
        atomic_write_jsonl(out / "heldout" / f"{name}.jsonl", kept)
        atomic_write_json(out / "heldout" / f"{name}.summary.json", {"pairs": len(kept), "empty_ocr": len(empty),
                                                                     "empty_rows": empty, "cer": 0.1,
                                                                     "engine": engine})
        index["sets"][name] = {"pairs": len(kept), "cer": 0.1, "sha256": sha256_file(out / "heldout" / f"{name}.jsonl")}
    atomic_write_json(out / HELDOUT_INDEX, index)
    return natural, out, rows


def test_restore_empty_puts_dropped_lines_back_in_plan_order(tmp_path):
    from bhasha_build.core.fsutil import sha256_file
    from bhasha_build.tools.natural_pairs import NaturalPairsError, heldout_plan, restore_empty

    natural, out, _ = _old_heldout(tmp_path, {"indomain": [1], "unfamiliar": [0, 2]})
    assert restore_empty(out, natural) == {"indomain-hi": 1, "unfamiliar-hi": 2}
    index = json.loads((out / "heldout.json").read_text())
    assert index["kept_empty"]
    plan = heldout_plan(natural, "hi", rows=3, swap=0.4, seed=5)
    for kind, empty_at in (("indomain", [1]), ("unfamiliar", [0, 2])):
        path = out / "heldout" / f"{kind}-hi.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        assert [r["id"] for r in rows] == [r["id"] for r in plan[kind]]  # every planned line, in order
        assert [i for i, r in enumerate(rows) if r["noisy"] == ""] == empty_at
        assert all(r["clean"] == p["clean"] and r["source"] == {"package": "pkg", "unit": p["unit"]}
                   for r, p in zip(rows, plan[kind], strict=True))
        assert rows[empty_at[0]]["ocr"] == {"font": "Samyak-Devanagari", "degrade": {"preset": "heldout", "size": 33},
                                            "engine": "tesseract 5.3.0", "traineddata": "hin 1:4.1.0-2"}
        summary = json.loads((out / "heldout" / f"{kind}-hi.summary.json").read_text())
        assert summary["pairs"] == index["sets"][f"{kind}-hi"]["pairs"] == 3 and summary["kept_empty"]
        assert index["sets"][f"{kind}-hi"]["sha256"] == sha256_file(path)
        assert summary["cer"] == index["sets"][f"{kind}-hi"]["cer"] > 0.1  # the empty lines count in full
    before = {p.name: p.read_bytes() for p in (out / "heldout").iterdir()}
    assert restore_empty(out, natural) == {"indomain-hi": 0, "unfamiliar-hi": 0}  # idempotent
    assert before == {p.name: p.read_bytes() for p in (out / "heldout").iterdir()}

    # a set whose rows are not the plan's (reordered) is refused, not patched
    natural, out, _ = _old_heldout(tmp_path / "b", {"indomain": [1]})
    path = out / "heldout" / "indomain-hi.jsonl"
    path.write_text("\n".join(reversed(path.read_text().splitlines())) + "\n")
    with pytest.raises(NaturalPairsError, match="not the plan's"):
        restore_empty(out, natural)


def test_committed_heldout_sets_count_every_line():
    """data/natural/heldout: 6 x 300 rows = every planned line (rebuilt from data/natural, no Tesseract), in
    the plan's order; the lines Tesseract read as empty are rows with noisy "", and heldout.json's sha256s,
    counts and CERs are the files'."""
    from bhasha_build.core.fsutil import sha256_file
    from bhasha_build.core.metrics import corpus_cer
    from bhasha_build.tools.natural_pairs import LANGS, NATURAL, heldout_plan

    index = json.loads((NATURAL / "heldout.json").read_text())
    assert index["kept_empty"] and len(index["sets"]) == 6
    total = empty_rows = 0
    for lang in LANGS:
        plan = heldout_plan(NATURAL, lang, index["rows"], index["swap"], index["seed"])
        for kind, chosen in plan.items():
            path = NATURAL / "heldout" / f"{kind}-{lang}.jsonl"
            rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
            entry = index["sets"][f"{kind}-{lang}"]
            assert [r["id"] for r in rows] == [r["id"] for r in chosen] and len(rows) == entry["pairs"] == 300
            assert [r["clean"] for r in rows] == [r["clean"] for r in chosen]
            assert entry["sha256"] == sha256_file(path)
            assert entry["cer"] == round(corpus_cer([r["noisy"] for r in rows], [r["clean"] for r in rows]), 4)
            summary = json.loads((NATURAL / "heldout" / f"{kind}-{lang}.summary.json").read_text())
            empty = {e["id"] for e in summary["empty_rows"]}
            assert {r["id"] for r in rows if not r["noisy"]} == empty and len(empty) == entry["empty_ocr"]
            total, empty_rows = total + len(rows), empty_rows + len(empty)
    assert (total, empty_rows) == (1800, 8)


def _jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _heldout_font_names(lang: str) -> set[str]:
    from bhasha_build.core.text import LANG_SCRIPTS
    from bhasha_build.features.ocr_pairs import FONTS

    return {f.removesuffix(".ttf") for f in FONTS[LANG_SCRIPTS[lang]]["heldout"]}


def test_committed_dev_sets_are_the_plan_and_share_nothing_with_the_heldout_sets():
    """data/natural/dev (the dev sets the eval stage calibrates on beside the eval split): 3 x 200 rows = every
    planned line in order, from held-out-side sentences neither held-out set uses; their pseudo-words appear
    in no training line and in neither held-out set; training fonts and damage only (never a held-out
    family); dev.json's sha256s and counts are the files'."""
    from bhasha_build.core.fsutil import sha256_file
    from bhasha_build.tools.natural_pairs import LANGS, NATURAL, _words, dev_plan, heldout_plan

    index = json.loads((NATURAL / "dev.json").read_text())
    held_index = json.loads((NATURAL / "heldout.json").read_text())
    for lang in LANGS:
        plan = dev_plan(NATURAL, lang, index["rows"], index["heldout_rows"], index["swap"], index["seed"])
        held = heldout_plan(NATURAL, lang, held_index["rows"], held_index["swap"], held_index["seed"])
        path = NATURAL / "dev" / f"unfamiliar-{lang}.jsonl"
        rows = _jsonl(path)
        entry = index["sets"][f"unfamiliar-{lang}"]
        assert [r["id"] for r in rows] == [r["id"] for r in plan] and len(rows) == entry["pairs"] == 200
        assert entry["sha256"] == sha256_file(path) and all(r["lang"] == lang for r in rows)
        held_ids = {r["id"].removesuffix("-unf") for kind in held.values() for r in kind}
        assert not {r["id"].removesuffix("-dev") for r in plan} & held_ids  # other sentences than the held-out sets'
        held_words = _words(r for kind in held.values() for r in kind)
        train_words = _words(_jsonl(NATURAL / f"{lang}.train.jsonl"))
        sources = {r["id"]: r for r in _jsonl(NATURAL / f"{lang}.heldout.jsonl")}
        swapped = _words(plan) - _words(sources[r["id"].removesuffix("-dev")] for r in plan)
        assert swapped and not swapped & (held_words | train_words)
        assert not {r["ocr"]["font"] for r in rows if r.get("ocr")} & _heldout_font_names(lang)
        assert {r["ocr"]["degrade"]["preset"] for r in rows if r.get("ocr")} == {"train"}


def test_committed_rare_word_lines_are_train_side_with_unseen_dictionary_words():
    """data/natural/train-pairs/rare-words.tar.xz (natural_pairs rare): 3 x 2,000 pairs whose clean lines are
    the plan (training-side sentences with dictionary words swapped in), every one in TRAIN by the data
    stage's hash on its normalized text (the eval split stays the same), its new words in no natural line and
    no held-out or dev set; training fonts and damage only; rare.json's sha256s are the files'."""
    import hashlib
    import tarfile

    from bhasha_build.core.text import normalize_text
    from bhasha_build.stages.data import split_fraction
    from bhasha_build.tools.natural_pairs import _LETTERS, LANGS, NATURAL, _words

    with tarfile.open(NATURAL / "train-pairs" / "rare-words.tar.xz") as packed:
        files = {m.name.removeprefix("./"): packed.extractfile(m).read() for m in packed.getmembers() if m.isfile()}
    index = json.loads(files["rare.json"])
    for lang in LANGS:
        raw = files[f"ocr-rare-{lang}.jsonl"]
        assert index["langs"][lang]["sha256"] == hashlib.sha256(raw).hexdigest()
        rows = [json.loads(x) for x in raw.decode().splitlines()]
        assert len(rows) == index["langs"][lang]["pairs"] >= 1900  # 2,000 lines less Tesseract's empty reads
        assert all(split_fraction(normalize_text(r["clean"], "auto"), index["seed"]) >= index["eval_fraction"]
                   for r in rows)
        natural_words = _words(r for side in ("train", "heldout") for r in _jsonl(NATURAL / f"{lang}.{side}.jsonl"))
        set_words = _words(r for folder in ("heldout", "dev") for path in (NATURAL / folder).glob(f"*-{lang}.jsonl")
                           for r in _jsonl(path))
        sources = {r["id"]: r["clean"] for r in _jsonl(NATURAL / f"{lang}.train.jsonl")}
        new = {w for r in rows for w in _LETTERS.findall(r["clean"])
               if w not in _LETTERS.findall(sources[r["id"].rsplit("-rare", 1)[0]])}
        assert new and not new & natural_words and not new & (set_words - natural_words)
        assert not {r["ocr"]["font"] for r in rows} & _heldout_font_names(lang)
