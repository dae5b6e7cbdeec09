"""The do-no-harm guard keeps the input when a correction is implausible, and only then."""

from __future__ import annotations

import pytest

from bhasha_build.core.config import GuardConfig
from bhasha_build.core.guard import guard

CFG = GuardConfig()


def test_plausible_corrections_pass() -> None:
    got = guard("हम बाजार जा रहे है|", "हम बाज़ार जा रहे हैं।", "hi", CFG)
    assert got.text == "हम बाज़ार जा रहे हैं।" and got.reason is None and not got.kept_input


@pytest.mark.parametrize(("noisy", "output", "lang", "why"), [
    ("நான் புத்தகம் படிக்கிறேன்", "I am reading a book.", "ta", "script change"),
    ("आज मौसम बहुत अच्छा है और हम बाजार जा रहे है", "आज मौसम", "hi", "length ratio"),
    ("আমি ভাত খাই", "তুমি জল চাও", "bn", "edit distance"),
    ("आज मौसम अच्छा है", "", "hi", "empty output"),
])
def test_implausible_outputs_keep_the_input(noisy: str, output: str, lang: str, why: str) -> None:
    got = guard(noisy, output, lang, CFG)
    assert got.text == noisy and got.kept_input and why in got.reason


def test_disabled_guard_passes_everything() -> None:
    off = GuardConfig(enabled=False)
    assert guard("நான் படிக்கிறேன்", "I read.", "ta", off).text == "I read."


def test_script_comes_from_the_input_when_lang_is_unknown() -> None:
    assert guard("நான் படிக்கிறேன்", "I read.", None, CFG).kept_input


def test_eval_reports_raw_and_guarded_side_by_side_and_gates_over_correction() -> None:
    """The eval stage's scoring (no model needed): raw and guarded CER per system and language, guarded
    row counts and reasons, and the over-correction check on what is served (the guarded output)."""
    from bhasha_build.core.config import load_config
    from bhasha_build.core.metrics import identity_baseline
    from bhasha_build.stages.evaluate import gate, score_guarded

    rows = [{"lang": "hi", "noisy": "आज मौसम अच्छा है", "clean": "आज मौसम अच्छा है"},        # already correct
            {"lang": "hi", "noisy": "हम बाजार जा रहे है|", "clean": "हम बाज़ार जा रहे हैं।"},
            {"lang": "ta", "noisy": "நான் புத்தகம் படிக்கிறேன்", "clean": "நான் புத்தகம் படிக்கிறேன்"},  # correct
            {"lang": "ta", "noisy": "அவன் வந்தான", "clean": "அவன் வந்தான்"}]
    hyps = ["आज मौसम अच्छा है",            # copied: fine
            "हम बाज़ार जा रहे हैं।",          # corrected
            "I am reading a book.",         # a Tamil line answered in English: guarded
            "அவன் வந்தான்"]
    cfg = load_config(None, overrides=["eval.max_over_correction=0.02"])
    raw, reasons, served = score_guarded(rows, hyps, cfg)
    assert reasons == [None, None, reasons[2], None] and reasons[2].startswith("script change")
    assert served[2] == rows[2]["noisy"]
    assert raw["overall"]["over_correction_rate"] == 0.5 and raw["guarded"]["overall"]["over_correction_rate"] == 0.0
    assert raw["by_lang"]["ta"]["cer"] > raw["guarded"]["by_lang"]["ta"]["cer"] == 0.0
    assert raw["guarded"]["overall"]["guarded_rows"] == 1 and raw["guarded"]["by_lang"]["hi"]["guarded_rows"] == 0
    assert raw["guarded"]["reasons"] == {"script change": 1}
    report = {"baseline": identity_baseline(rows), "gguf": raw}
    checks = {c["check"]: c for c in gate(report, cfg)["checks"]}
    assert checks["gguf_beats_baseline"]["ok"] is False  # raw CER counts the English line
    assert checks["gguf_over_correction"]["ok"] and "(guarded)" in checks["gguf_over_correction"]["detail"]
    off = load_config(None, overrides=["guard.enabled=false"])
    raw_off, _, _ = score_guarded(rows, hyps, off)
    checks = {c["check"]: c for c in gate({"baseline": report["baseline"], "gguf": raw_off}, off)["checks"]}
    assert not checks["gguf_over_correction"]["ok"] and "(raw)" in checks["gguf_over_correction"]["detail"]


# -- the reply budget, the served rule (cut, confidence, lexicon) and eval's threshold sweep ----------


def test_the_reply_budget_is_twice_the_input_plus_a_margin_per_row() -> None:
    from bhasha_build.core.guard import REPLY_MARGIN, reply_budget

    assert reply_budget(10) == 20 + REPLY_MARGIN and reply_budget(0) == REPLY_MARGIN
    assert reply_budget(10, floor=256) == 256 and reply_budget(200, floor=256) == 400 + REPLY_MARGIN


def test_a_long_tamil_line_gets_the_budget_its_copy_needs() -> None:
    """Issue 22: eval's fixed 128 tokens cut already-correct Tamil lines (Qwen spends ~1.7 tokens per
    Tamil grapheme). Counted by Qwen2.5's real tokenizer, a long Tamil line needs more than 128 tokens
    to be copied, and its budget covers the copy twice over."""
    from bhasha_build.core.guard import qwen_reply_budgets
    from bhasha_build.core.qwen_tokenizer import qwen25_fast_tokenizer

    line = ("தமிழ்நாட்டின் தலைநகரமான சென்னையில் நேற்று மாலை பெய்த கனமழையால் பல தெருக்களில் "
            "தண்ணீர் தேங்கியது என்று மாநகராட்சி அதிகாரிகள் தெரிவித்தனர்.")
    copy_tokens = len(qwen25_fast_tokenizer().encode(line, add_special_tokens=False).ids)
    assert copy_tokens > 128  # the old eval.max_new_tokens cut this line's faithful copy
    (budget,) = qwen_reply_budgets([line], floor=128)
    assert budget >= 2 * copy_tokens


def test_a_reply_cut_by_the_budget_is_kept_out_and_counted() -> None:
    from bhasha_build.core.config import load_config
    from bhasha_build.core.guard import Answer
    from bhasha_build.stages.evaluate import score_guarded

    line = "நான் புத்தகம் படிக்கிறேன்"
    rows = [{"lang": "ta", "noisy": line, "clean": line}, {"lang": "ta", "noisy": line + "|", "clean": line + "."}]
    answers = [Answer("நான் புத்தகம் படிக்கி", cut=True), Answer(line + ".")]  # cut mid-word; a real fix
    raw, reasons, served = score_guarded(rows, answers, load_config(None, env={}))
    assert raw["cut_rows"] == 1 and reasons[0].startswith("no stop token") and reasons[1] is None
    assert served == [line, line + "."]
    assert raw["overall"]["over_correction_rate"] == 1.0 and raw["guarded"]["overall"]["over_correction_rate"] == 0
    assert raw["guarded"]["reasons"] == {"no stop token": 1}


def test_a_change_below_min_confidence_or_breaking_a_dictionary_word_keeps_the_input() -> None:
    from bhasha_build.core.baselines import load_lexicon
    from bhasha_build.core.guard import accept, reason_kind

    noisy, fixed = "भारत की सरकर ने कहा|", "भारत की सरकार ने कहा।"
    assert accept(noisy, fixed, "hi", CFG, confidence=0.9, min_confidence=0.5).text == fixed
    low = accept(noisy, fixed, "hi", CFG, confidence=0.3, min_confidence=0.5)
    assert low.text == noisy and reason_kind(low.reason) == "low confidence"
    assert accept(noisy, fixed, "hi", CFG, confidence=None, min_confidence=0.5).text == fixed  # no evidence
    assert accept(noisy, noisy, "hi", CFG, confidence=0.0, min_confidence=0.5).reason is None  # no change
    lexicon = load_lexicon("hi")
    broke = accept("भारत की सरकार ने कहा", "भारत की सरकर ने कहा", "hi", CFG, lexicon=lexicon)
    assert broke.kept_input and broke.reason == "lexicon: सरकार → सरकर"
    assert accept(noisy, fixed, "hi", CFG, lexicon=lexicon).text == fixed


def test_eval_sweeps_min_confidence_and_records_the_chosen_point(tmp_path) -> None:
    from bhasha_build.core.config import load_config
    from bhasha_build.core.guard import Answer
    from bhasha_build.core.metrics import identity_baseline
    from bhasha_build.stages.evaluate import confidence_sweep, plot_confidence, score_guarded

    good, wrong = "हम बाज़ार जा रहे हैं।", "आज मौसम अच्छा है"
    rows = [{"lang": "hi", "noisy": "हम बाजार जा रहे है|", "clean": good},
            {"lang": "hi", "noisy": wrong, "clean": wrong}]
    answers = [Answer(good, confidence=0.8), Answer("आज मौसम अच्छा हैं", confidence=0.2)]  # a sure fix, an unsure harm
    cfg = load_config(None, env={}, overrides=["correct.min_confidence=0.5", "eval.max_over_correction=0.02"])
    sweep = confidence_sweep(rows, answers, cfg)
    points = {p["threshold"]: p for p in sweep["points"]}
    assert points[0.0]["over_correction_rate"] == 1.0 and points[0.5]["over_correction_rate"] == 0.0
    assert points[0.9]["changed_rows"] == 0 and points[0.9]["cer"] > points[0.5]["cer"]
    # calibrated: the lowest CER within 2 % (0.3-0.8 all fix the line and spare the correct one): ties to the
    # higher threshold; chosen: the configured 0.5
    assert sweep["chosen"] == points[0.5] and sweep["calibrated"] == {**points[0.8], "within_bound": True}
    assert sweep["rows"] == 2 and "eval split" in sweep["rule"]
    assert confidence_sweep(rows, [Answer(good), Answer(wrong)], cfg) is None  # no log-probabilities: no sweep
    report = {"baseline": identity_baseline(rows), "gguf": score_guarded(rows, answers, cfg)[0]}
    report["gguf"]["confidence"] = sweep
    assert plot_confidence(report, tmp_path / "confidence.png") and (tmp_path / "confidence.png").stat().st_size > 0
    del report["gguf"]["confidence"]
    assert not plot_confidence(report, tmp_path / "confidence.png") and not (tmp_path / "confidence.png").exists()


def test_calibration_rule_picks_on_the_sweep_it_is_given() -> None:
    from bhasha_build.stages.evaluate import calibrate

    def pt(t: float, cer: float, oc: float) -> dict[str, float]:
        return {"threshold": t, "cer": cer, "over_correction_rate": oc}

    points = [pt(0.0, 0.05, 0.10), pt(0.3, 0.06, 0.02), pt(0.5, 0.06, 0.01), pt(0.7, 0.08, 0.0)]
    assert calibrate(points, 0.02) == {**pt(0.5, 0.06, 0.01), "within_bound": True}  # tie on CER: the higher
    assert calibrate(points, 0.10)["threshold"] == 0.0  # a looser bound admits the lowest CER
    over = [pt(0.0, 0.05, 0.30), pt(0.5, 0.06, 0.05), pt(0.9, 0.07, 0.05)]
    assert calibrate(over, 0.02) == {**pt(0.5, 0.06, 0.05), "within_bound": False}  # none within: the safest


def test_auto_threshold_is_calibrated_on_the_eval_split_and_applied_from_the_run(tmp_path, monkeypatch) -> None:
    """correct.min_confidence = "auto": eval applies and records the eval split's calibrated threshold (eval.json
    and the manifest); applied_min_confidence hands it to correct/promote/held-out scoring, and refuses in one
    line before eval ran or once the GGUF changed; a configured number is used as it is."""
    import json

    from bhasha_build.core.config import load_config
    from bhasha_build.core.guard import Answer
    from bhasha_build.core.manifest import Manifest
    from bhasha_build.stages import evaluate

    good, wrong = "हम बाज़ार जा रहे हैं।", "आज मौसम अच्छा है"
    rows = [{"id": "1", "lang": "hi", "noisy": "हम बाजार जा रहे है|", "clean": good},
            {"id": "2", "lang": "hi", "noisy": wrong, "clean": wrong}]
    replies = {rows[0]["noisy"]: Answer(good, confidence=0.8), wrong: Answer("आज मौसम अच्छा हैं", confidence=0.2)}
    monkeypatch.setattr(evaluate, "generate_gguf", lambda cfg, gguf, texts, plan=None: [replies[t] for t in texts])
    cfg = load_config(None, env={}, overrides=[f'runs_dir="{tmp_path}"', 'run="cal"', 'correct.min_confidence="auto"',
                                               "eval.max_over_correction=0.02", "eval.zeroshot=false"])
    layout = cfg.layout
    layout.eval_split.parent.mkdir(parents=True)
    layout.eval_split.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    gguf = layout.gguf(cfg.export.quant)
    gguf.write_bytes(b"GGUF stand-in")
    with pytest.raises(evaluate.CalibrationMissing, match="records no threshold calibrated on the eval split"):
        evaluate.applied_min_confidence(cfg)
    manifest = Manifest(layout.root)
    manifest.update(artifacts={"gguf": {"path": gguf.name, "sha256": "g1"}})
    report = evaluate.evaluate(cfg, layout, systems=("gguf",))
    sweep = report["gguf"]["confidence"]
    assert sweep["calibrated"]["threshold"] == 0.8 and sweep["chosen"]["threshold"] == 0.8
    assert report["gguf"]["guarded"]["min_confidence"] == 0.8  # the guarded score is at the calibrated point
    assert report["gguf"]["guarded"]["overall"]["over_correction_rate"] == 0.0
    marks = report["gguf"]["guarded"]["end_marks"]  # the '|' → '।' fix on the one '।'-ending line
    assert (marks["danda"]["rows"], marks["danda"]["fixed"], marks["other"]["rows"], marks["other"]["changed"]) == (
        1, 1, 1, 0)
    record = report["min_confidence"]
    assert (record["setting"], record["threshold"], record["calibrated"]["system"], record["calibrated"]["rows"]) == (
        "auto", 0.8, "gguf", 2) and record["source"].startswith("eval split")
    from bhasha_build.stages.report import render

    assert "- gguf: correct.min_confidence 0.8 gives guarded CER 0.0000, over-correction 0.0%; calibrated on the " \
           "eval split (lowest CER within 2%): 0.8" in render(layout)
    # what the runner records for eval (sha256 of eval.json, made from the current GGUF)
    from bhasha_build.core.fsutil import sha256_file

    manifest.update(artifacts={"eval": {"path": "eval.json", "sha256": sha256_file(layout.eval_report),
                                        "made_from": {"gguf": "g1"}}})
    applied, why = evaluate.applied_min_confidence(cfg)
    assert applied.correct.min_confidence == 0.8 and why["threshold"] == 0.8
    assert "eval split (gguf, 2 rows" in why["source"]
    manifest.update(artifacts={"gguf": {"path": gguf.name, "sha256": "g2"}})  # re-exported since eval
    with pytest.raises(evaluate.CalibrationMissing, match="re-run `invoke eval`"):
        evaluate.applied_min_confidence(cfg)
    fixed = cfg.model_copy(update={"correct": cfg.correct.model_copy(update={"min_confidence": 0.3})})
    assert evaluate.applied_min_confidence(fixed) == (fixed, {"setting": 0.3, "threshold": 0.3,
                                                              "source": "config (correct.min_confidence)"})
    with pytest.raises(ValueError, match="resolve it first"):
        evaluate.score_guarded(rows, [Answer(good)] * 2, cfg)  # "auto" never reaches serve unresolved


def test_auto_without_any_confidence_calibrates_to_the_highest_threshold(tmp_path, monkeypatch) -> None:
    """A model that changed no eval line gives no confidence: every threshold ties, so "auto" records the
    highest (the rule's tie) instead of nothing, and correct/promote/held-out scoring can still apply it."""
    import json

    from bhasha_build.core.config import load_config
    from bhasha_build.core.guard import Answer
    from bhasha_build.stages import evaluate

    rows = [{"id": "1", "lang": "hi", "noisy": "आज मौसम अच्छा है", "clean": "आज मौसम अच्छा है।"}]
    monkeypatch.setattr(evaluate, "generate_gguf", lambda cfg, gguf, texts, plan=None: [Answer(t) for t in texts])
    cfg = load_config(None, env={}, overrides=[f'runs_dir="{tmp_path}"', 'run="n"', 'correct.min_confidence="auto"',
                                               "eval.zeroshot=false"])
    cfg.layout.eval_split.parent.mkdir(parents=True)
    cfg.layout.eval_split.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    cfg.layout.gguf(cfg.export.quant).write_bytes(b"GGUF stand-in")
    report = evaluate.evaluate(cfg, cfg.layout, systems=("gguf",))
    assert "confidence" not in report["gguf"] and report["gguf"]["guarded"]["min_confidence"] == 0.99
    record = report["min_confidence"]
    assert record["threshold"] == record["calibrated"]["threshold"] == evaluate.THRESHOLDS[-1]
    assert record["calibrated"]["note"] == evaluate.NO_CONFIDENCE_NOTE and record["calibrated"]["rows"] == 1
    assert evaluate.run_min_confidence({"rows": 1}, cfg)["threshold"] is None  # nothing scored: nothing recorded


def test_dev_sets_hold_the_calibrated_threshold_to_the_over_correction_bound_too(tmp_path, monkeypatch) -> None:
    """eval.dev_sets (tools/natural_pairs.py dev: unfamiliar words): the eval split alone calibrates 0.8 (a sure
    fix, an unsure harm); a dev line that is already right and that the model "fixes" at 0.85 (a name snapped
    to a word, as the first final did on the held-out unfamiliar sets) moves the threshold above 0.85. eval.json
    scores each dev set at the applied threshold, and dev_predictions.jsonl keeps their rows."""
    import json

    from bhasha_build.core.config import load_config
    from bhasha_build.core.guard import Answer
    from bhasha_build.stages import evaluate

    good, wrong = "हम बाज़ार जा रहे हैं।", "आज मौसम अच्छा है"
    rows = [{"id": "1", "lang": "hi", "noisy": "हम बाजार जा रहे है|", "clean": good},
            {"id": "2", "lang": "hi", "noisy": wrong, "clean": wrong}]
    name = "कलमीरा नदी के पास गया"
    dev = [{"id": "d1", "lang": "hi", "noisy": name, "clean": name},
           {"id": "d2", "lang": "hi", "noisy": "वह घर गया", "clean": "वह घर गया"}]
    replies = {rows[0]["noisy"]: Answer(good, confidence=0.8), wrong: Answer("आज मौसम अच्छा हैं", confidence=0.2),
               name: Answer("कलम नदी के पास गया", confidence=0.85), "वह घर गया": Answer("वह घर गया")}
    monkeypatch.setattr(evaluate, "generate_gguf", lambda cfg, gguf, texts, plan=None: [replies[t] for t in texts])
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    (dev_dir / "unfamiliar-hi.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dev),
                                                 encoding="utf-8")
    overrides = [f'runs_dir="{tmp_path}"', 'correct.min_confidence="auto"', "eval.max_over_correction=0.02",
                 "eval.zeroshot=false"]
    reports = {}
    for run, extra in (("alone", []), ("dev", [f'eval.dev_sets="{dev_dir}"'])):
        cfg = load_config(None, env={}, overrides=[*overrides, f'run="{run}"', *extra])
        cfg.layout.eval_split.parent.mkdir(parents=True)
        cfg.layout.eval_split.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                         encoding="utf-8")
        cfg.layout.gguf(cfg.export.quant).write_bytes(b"GGUF stand-in")
        reports[run] = evaluate.evaluate(cfg, cfg.layout, systems=("gguf",))
    assert reports["alone"]["min_confidence"]["threshold"] == 0.8 and "dev" not in reports["alone"]["gguf"]
    assert not cfg.layout.root.with_name("alone").joinpath("dev_predictions.jsonl").exists()
    report = reports["dev"]
    sweep = report["gguf"]["confidence"]
    points = {p["threshold"]: p for p in sweep["points"]}
    assert points[0.8]["over_correction_rate"] == 0.0 and points[0.8]["dev_over_correction_rate"] == 0.5
    chosen = report["min_confidence"]["threshold"]
    assert chosen > 0.85 and points[chosen]["dev_over_correction_rate"] == 0.0 and sweep["dev_rows"] == 2
    assert report["gguf"]["dev"]["unfamiliar-hi"] == report["gguf"]["dev"]["overall"]
    assert report["gguf"]["dev"]["overall"]["over_correction"] == 0.0  # served at the chosen threshold
    assert report["gguf"]["dev"]["overall"]["raw_over_correction"] == 0.5 and report["dev_sets"]["rows"] == 2
    from bhasha_build.stages.report import render

    assert "  - on the dev sets (2 rows): CER 0.0000 as read → 0.0000 served, over-correction 0.0% (50.0% before " \
           "the guard)" in render(cfg.layout)
    kept = [json.loads(line) for line in cfg.layout.dev_predictions.read_text(encoding="utf-8").splitlines()]
    assert [(r["set"], r["id"], r["gguf"], r["gguf_guarded"]) for r in kept] == [
        ("unfamiliar-hi", "d1", "कलम नदी के पास गया", name), ("unfamiliar-hi", "d2", "वह घर गया", "वह घर गया")]
    assert kept[0]["gguf_confidence"] == 0.85 and kept[0]["gguf_guard"].startswith("low confidence")
    bad = load_config(None, env={}, overrides=[*overrides, 'run="bad"', f'eval.dev_sets="{tmp_path / "none"}"'])
    with pytest.raises(evaluate.EvalError, match=r"no \*\.jsonl pairs there"):
        evaluate.dev_rows(bad)
