"""The non-model baselines (core/baselines.py): the rule-based cleanup and the lexicon snap on the real
Debian dictionaries, and the lexicon guard."""

from __future__ import annotations

import pytest

from bhasha_build.core import baselines as bl
from bhasha_build.core.metrics import corpus_cer


@pytest.mark.parametrize(("noisy", "lang", "want"), [
    ("हम बाजार जा रहे है|", "hi", "हम बाजार जा रहे है।"),  # OCR's | for the danda
    ("हम  बाजार ,जा रहे है I", "hi", "हम बाजार, जा रहे है।"),  # spaces, comma, a Latin I for the danda
    ("এটা || ভাল |", "bn", "এটা॥ ভাল।"),  # double danda, danda
    ("நான் படிக்கிறேன்|", "ta", "நான் படிக்கிறேன்."),  # Tamil ends with a full stop
])
def test_rules_fix_punctuation_and_spacing(noisy: str, lang: str, want: str) -> None:
    assert bl.rules_cleanup(noisy, lang) == want


@pytest.mark.parametrize(("text", "lang"), [
    ("हम होटल Hotel में रुके, फिर घर गए!", "hi"),  # a Latin word ending in l, inner comma, a real !
    ("সে বলল, “আমি যাব?”", "bn"),
    ("அவர் 1947-இல் வந்தார்; பின்னர் சென்றார்!", "ta"),
    ("वर्ष १९४७ में ... और फिर", "hi"),
    ("நாட்டன்போர் ராத ித்தும்", "ta"),  # a dangling vowel sign: a letter was lost, not a space added
])
def test_rules_leave_correct_text_alone(text: str, lang: str) -> None:
    assert bl.rules_cleanup(text, lang) == text


@pytest.mark.parametrize("lang", ["hi", "bn", "ta"])
def test_the_debian_dictionaries_are_read(lang: str) -> None:
    words = bl.dictionary_words(lang)
    assert len(words) > 10000 and all(w == w.strip() and "/" not in w for w in words[:1000])
    lexicon = bl.load_lexicon(lang)
    assert set(lexicon.freq) <= lexicon.words and len(lexicon.words) >= len(set(words))


@pytest.mark.parametrize(("noisy", "lang", "want"), [
    ("भारत की सरकर ने कहा", "hi", "भारत की सरकार ने कहा"),  # one nearest word, frequent
    ("वह हिन्दुस्तन गया", "hi", "वह हिन्दुस्तान गया"),
    ("এই পৃথিবর মানুষ", "bn", "এই পৃথিবীর মানুষ"),
])
def test_lexicon_snaps_an_out_of_lexicon_word_to_its_unique_neighbour(noisy: str, lang: str, want: str) -> None:
    assert bl.load_lexicon(lang).snap(noisy) == want


def test_lexicon_leaves_ambiguous_short_foreign_and_known_words() -> None:
    hi = bl.load_lexicon("hi")
    assert hi.snap("कताब") == "कताब"  # किताब, करीब, कतार ... are all one edit away: no unique neighbour
    assert hi.snap("कब") == "कब"  # too short to judge
    assert hi.snap("Hotel होटल") == "Hotel होटल"  # not the line's script; in the lexicon
    assert hi.snap("सरकर, सरकर।") == "सरकार, सरकार।"  # outer punctuation kept around the word


def test_lexicon_guard_names_a_word_the_change_broke() -> None:
    hi = bl.load_lexicon("hi")
    assert hi.breaks("भारत की सरकार ने कहा", "भारत की सरकर ने कहा") == "सरकार → सरकर"
    assert hi.breaks("भारत की सरकर ने कहा", "भारत की सरकार ने कहा") is None  # a fix, not a break
    assert hi.breaks("भारत की सरकार ने कहा|", "भारत की सरकार ने कहा।") is None  # punctuation only


def test_run_baselines_gives_a_column_per_baseline_and_beats_identity_on_ocr_noise() -> None:
    rows = [{"lang": "hi", "noisy": "भारत की सरकर ने कहा|", "clean": "भारत की सरकार ने कहा।"},
            {"lang": "ta", "noisy": "நான் படிக்கிறேன்|", "clean": "நான் படிக்கிறேன்."},
            {"set": "indomain-bn", "noisy": "এই পৃথিবর মানুষ", "clean": "এই পৃথিবীর মানুষ"}]
    outs, missing = bl.run_baselines(rows)
    assert set(outs) == set(bl.BASELINES) and not missing
    assert all(len(o) == len(rows) for o in outs.values())
    refs, identity = [r["clean"] for r in rows], [r["noisy"] for r in rows]
    assert corpus_cer(outs["lexicon"], refs) < corpus_cer(outs["rules"], refs) < corpus_cer(identity, refs)
    assert outs["lexicon"][2] == rows[2]["clean"]  # the language from the set's name


def test_a_missing_dictionary_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(bl.DICTIONARIES, "hi", ("hunspell-hi", tmp_path / "hi_IN.dic"))
    bl.load_lexicon.cache_clear()
    try:
        with pytest.raises(bl.LexiconMissing, match="apt-get install hunspell-hi"):
            bl.load_lexicon("hi")
        outs, missing = bl.run_baselines([{"lang": "hi", "noisy": "सरकर|", "clean": "सरकार।"}])
        assert outs["lexicon"] == outs["rules"] == ["सरकर।"] and "hunspell-hi" in missing["hi"]
    finally:
        bl.load_lexicon.cache_clear()


def test_a_machine_without_the_debian_packages_reads_the_exported_words(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path) -> None:
    # the GPU box: no apt, no precat; prepare exports the words here and the lease carries them
    sources = bl.export_dictionaries(tmp_path / "dict")
    assert {lang: s["package"] for lang, s in sources.items()} == {"hi": "hunspell-hi", "bn": "hunspell-bn",
                                                                   "ta": "aspell-ta"}
    want = {lang: bl.dictionary_words(lang) for lang in bl.DICTIONARIES}
    assert all(sources[lang]["words"] == len(want[lang]) for lang in want)
    for lang, (package, path) in list(bl.DICTIONARIES.items()):
        monkeypatch.setitem(bl.DICTIONARIES, lang, (package, tmp_path / "absent" / path.name))
    monkeypatch.setenv(bl.DICTIONARY_DIR_ENV, str(tmp_path / "dict"))
    bl.load_lexicon.cache_clear()
    try:
        assert {lang: bl.dictionary_words(lang) for lang in want} == want
        outs, missing = bl.run_baselines([{"lang": "hi", "noisy": "भारत की सरकर ने कहा", "clean": ""}])
        assert outs["lexicon"] == ["भारत की सरकार ने कहा"] and missing == {}
        (tmp_path / "dict" / "ta.words.xz").unlink()  # a language not exported: the Debian file, named
        with pytest.raises(bl.LexiconMissing, match="aspell-ta"):
            bl.dictionary_words("ta")
    finally:
        bl.load_lexicon.cache_clear()


def test_eval_scores_the_baselines_beside_identity_and_names_the_strongest(tmp_path) -> None:
    """The eval stage without a model (`systems=()`): rules and lexicon are scored like every system,
    eval.json names the strongest per language, the predictions carry a column per baseline."""
    import json

    from bhasha_build.core.config import load_config
    from bhasha_build.stages.evaluate import evaluate

    cfg = load_config(None, env={}, overrides=[f'runs_dir="{tmp_path}"', 'run="b"'])
    rows = [{"id": "1", "lang": "hi", "noisy": "भारत की सरकर ने कहा|", "clean": "भारत की सरकार ने कहा।"},
            {"id": "2", "lang": "hi", "noisy": "आज मौसम अच्छा है", "clean": "आज मौसम अच्छा है"},
            {"id": "3", "lang": "ta", "noisy": "நான் படிக்கிறேன்|", "clean": "நான் படிக்கிறேன்."}]
    layout = cfg.layout
    layout.eval_split.parent.mkdir(parents=True)
    layout.eval_split.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = evaluate(cfg, layout, systems=())
    assert report["rules"]["by_lang"]["hi"]["cer"] < report["baseline"]["by_lang"]["hi"]["cer"]
    assert report["lexicon"]["by_lang"]["hi"]["cer"] == 0.0 and report["rules"]["by_lang"]["ta"]["cer"] == 0.0
    assert report["baselines"]["hi"]["strongest"] == "lexicon" and report["baselines"]["hi"]["strongest_cer"] == 0.0
    assert json.loads(layout.eval_report.read_text(encoding="utf-8"))["baselines"] == report["baselines"]
    predictions = [json.loads(line) for line in layout.eval_predictions.read_text(encoding="utf-8").splitlines()]
    assert [p["lexicon"] for p in predictions] == [r["clean"] for r in rows]
    assert predictions[0]["rules"] == "भारत की सरकर ने कहा।"
    from bhasha_build.stages.report import render

    text = render(layout)
    assert "| hi | 0.0741 | 0.0370 | 0.0000 | lexicon |" in text  # report.md
    assert "| ta | 0.1000 | 0.0000 | 0.0000 | rules |" in text  # a tie: the simpler one


def test_baseline_scores_count_a_row_read_as_empty(tmp_path) -> None:
    """tools/baseline_scores: every row is scored in every column, an empty OCR line (noisy "") included."""
    import json

    from bhasha_build.tools.baseline_scores import main

    rows = [{"set": "indomain-hi", "noisy": "भारत की सरकर ने कहा|", "clean": "भारत की सरकार ने कहा।", "lang": "hi",
             "gguf": "भारत की सरकार ने कहा।"},
            {"set": "indomain-hi", "noisy": "", "clean": "आज मौसम अच्छा है।", "lang": "hi", "gguf": ""}]
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main([str(src), "--out", str(tmp_path / "s.json")]) == 0
    scored = json.loads((tmp_path / "s.json").read_text())
    entry = scored["sets"]["indomain-hi"]
    assert scored["rows"] == entry["rows"] == 2 and scored["systems"] == ["gguf"]
    refs = [r["clean"] for r in rows]
    assert entry["identity"]["cer"] == round(corpus_cer([r["noisy"] for r in rows], refs), 4)
    assert entry["gguf"]["cer"] == round(corpus_cer([r["gguf"] for r in rows], refs), 4) > 0  # the empty row counts
    assert entry["rules"]["cer"] == round(corpus_cer(["भारत की सरकर ने कहा।", ""], refs), 4)


def test_baseline_scores_normalize_noisy_and_clean_as_eval_does(tmp_path) -> None:
    """Tesseract's Tamil puts a ZWNJ after a word-final virama (265 of 300 indomain-ta lines); eval's "auto"
    policy drops it, so a line that differs only by it is an identity row in eval, and here too (scored
    raw, identity CER of indomain-ta was 0.1355 against eval's ~0.06). --zwj-policy keep scores it raw."""
    import json

    from bhasha_build.tools.baseline_scores import main

    clean = "அவன் வீட்டுக்குப் போனான்"
    noisy = clean.replace("ப் ", "ப்\u200c ")  # the ZWNJ after the word-final virama
    assert noisy != clean
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"set": "indomain-ta", "lang": "ta", "noisy": noisy, "clean": clean},
                              ensure_ascii=False) + "\n", encoding="utf-8")
    assert main([str(src), "--out", str(tmp_path / "auto.json")]) == 0
    assert main([str(src), "--out", str(tmp_path / "keep.json"), "--zwj-policy", "keep"]) == 0
    auto = json.loads((tmp_path / "auto.json").read_text())["sets"]["indomain-ta"]["identity"]
    keep = json.loads((tmp_path / "keep.json").read_text())["sets"]["indomain-ta"]["identity"]
    assert auto["cer"] == 0.0 and auto["identity_rows"] == 1
    assert keep["cer"] > 0 and keep["identity_rows"] == 0
