"""Promotion with a regression gate against the served model, rollback, history, and the run report.

Unit tests pin the gate's arithmetic and the names; the slow tests run the real thing against the
Ollama-contract server (real llama.cpp behind it) with two models of known quality on the gate row:
the tiny run's model, and the same model fine-tuned until it answers the built-in sample exactly
(`memorized_gguf`, conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TEST_OVERRIDES, tiny_config
from ollama_server import OllamaContractServer

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.manifest import Manifest
from bhasha_build.core.ollama import OllamaClient
from bhasha_build.stages.data import prepare
from bhasha_build.stages.promote import comparison_markdown, gate, kept_names, prev_name

REPO = Path(__file__).resolve().parent.parent
NAME = "bhasha-ocr"


def _block(cer: float, oc: float = 0.0, rows: int = 5) -> dict[str, Any]:
    return {"rows": rows, "cer": cer, "over_correction_rate": oc}


def _scores(candidate: dict[str, tuple[float, float]], served: dict[str, tuple[float, float]] | None,
            baseline: float = 0.08) -> dict[str, Any]:
    out: dict[str, Any] = {
        "baseline": {"by_lang": {lang: _block(baseline) for lang in candidate}},
        "candidate": {"by_lang": {lang: _block(*v) for lang, v in candidate.items()}},
    }
    if served is not None:
        out["served"] = {"by_lang": {lang: _block(*v) for lang, v in served.items()}}
    return out


def cfg(**promote: Any) -> BuildConfig:
    return BuildConfig.model_validate({"promote": promote})


def test_gate_refuses_a_language_that_got_worse_beyond_the_margin() -> None:
    result = gate(_scores({"hi": (0.05, 0.0), "bn": (0.071, 0.0)}, {"hi": (0.06, 0.0), "bn": (0.06, 0.0)}),
                  cfg(margin=0.01))
    assert not result["passed"] and result["against"] == "served"
    failed = [(c["lang"], c["check"]) for c in result["checks"] if not c["ok"]]
    assert failed == [("bn", "cer_not_worse_than_served")]
    assert [r["ok"] for r in result["table"]] == [True, False]


def test_gate_passes_within_the_margin_and_refuses_over_correction() -> None:
    assert gate(_scores({"hi": (0.069, 0.0)}, {"hi": (0.06, 0.0)}), cfg(margin=0.01))["passed"]
    result = gate(_scores({"hi": (0.01, 0.2)}, {"hi": (0.06, 0.0)}), cfg(max_over_correction=0.1))
    assert not result["passed"]
    assert [c["check"] for c in result["checks"] if not c["ok"]] == ["over_correction_within_bound"]


def test_gate_details_read_the_right_way() -> None:
    """A refusal once read `bn: candidate 1.0000 <= 0.1` (the bound, not what happened)."""
    result = gate(_scores({"bn": (0.2, 1.0)}, {"bn": (0.06, 0.0)}), cfg(margin=0.01, max_over_correction=0.1))
    details = {c["check"]: c["detail"] for c in result["checks"]}
    assert details == {"cer_not_worse_than_served": "candidate CER 0.2000 > served CER 0.0600 + margin 0.01",
                       "over_correction_within_bound": "candidate over-correction 1.0000 > limit 0.1"}
    ok = gate(_scores({"bn": (0.05, 0.0)}, None), cfg(max_over_correction=0.1))["checks"]
    assert [c["detail"] for c in ok] == ["candidate CER 0.0500 <= baseline CER 0.0800 + margin 0.005",
                                         "candidate over-correction 0.0000 <= limit 0.1"]


def test_first_promotion_is_gated_against_the_baseline() -> None:
    result = gate(_scores({"hi": (0.09, 0.0)}, None, baseline=0.08), cfg(margin=0.0))
    assert not result["passed"] and result["against"] == "baseline"
    assert result["table"][0]["served_cer"] is None
    assert gate(_scores({"hi": (0.03, 0.0)}, None, baseline=0.08), cfg())["passed"]


def test_comparison_table_names_every_language_and_the_verdict() -> None:
    text = comparison_markdown(gate(_scores({"hi": (0.05, 0.0), "ta": (0.2, 0.0)}, {"hi": (0.06, 0.0),
                                                                                   "ta": (0.1, 0.0)}), cfg()))
    assert "| hi | 5 | 0.0800 | 0.0600 | 0.0500 | 0.0000 | 0.0000 | ok |" in text
    assert "| ta | 5 | 0.0800 | 0.1000 | 0.2000 | 0.0000 | 0.0000 | WORSE |" in text
    assert "Gate refused against the served model" in text


def test_prev_names() -> None:
    assert prev_name("bhasha-ocr", "20261130-021700") == "bhasha-ocr:prev-20261130-021700"
    assert prev_name("bhasha-ocr:latest", "1") == "bhasha-ocr:prev-1"
    assert prev_name("bhasha-ocr:stable", "1") == "bhasha-ocr:stable-prev-1"


def test_regression_set_is_valid_and_held_out(tmp_path: Path) -> None:
    config = BuildConfig()
    stats = prepare(config.resolve_path(config.promote.regression_set), tmp_path / "out", config)
    assert stats["rejected"] == 0 and stats["duplicates_dropped"] == 0
    assert set(stats["by_lang"]) == {"hi", "bn", "ta"}
    assert any(r["noisy"] == r["clean"] for r in _rows(config)), "identity rows measure over-correction"
    seen = {json.loads(ln)["clean"] for f in (REPO / "data" / "samples").glob("*.jsonl") for ln in f.open()}
    seen |= {ln.strip() for f in (REPO / "data" / "clean").glob("*.txt") for ln in f.open(encoding="utf-8")}
    assert not {r["clean"] for r in _rows(config)} & seen, "a regression row is in the training data"


def test_report_renders_whatever_the_run_holds(tmp_path: Path) -> None:
    from bhasha_build.core.layout import RunLayout
    from bhasha_build.stages.report import render

    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    empty = render(layout)
    assert "_no data stage output_" in empty and "_not promoted in this run_" in empty
    layout.data_dir.mkdir()
    layout.data_stats.write_text(json.dumps({"rows_read": 10, "kept": 8, "train_rows": 7, "eval_rows": 1,
                                             "rejected": 2, "duplicates_dropped": 0,
                                             "rejects_by_reason": {"special_token": 2},
                                             "by_lang": {"hi": {"train": 7, "eval": 1, "rejected": 2}}}))
    block = {"rows": 1, "cer": 0.1, "over_correction_rate": 0.0}
    layout.eval_report.write_text(json.dumps({"baseline": {"overall": block, "by_lang": {"hi": block}},
                                              "gguf": {"overall": block, "by_lang": {"hi": block}},
                                              "gate": {"checks": [{"ok": False, "check": "gguf_beats_baseline",
                                                                   "detail": "0.1 vs 0.1"}]}}))
    result = gate(_scores({"hi": (0.05, 0.0)}, {"hi": (0.06, 0.0)}), cfg())
    layout.promote_report.write_text(json.dumps({"status": "promoted", "name": "bhasha-ocr:latest", "host": "h",
                                                 "comparison": comparison_markdown(result),
                                                 "digests": {"served_before": "a", "candidate": "b",
                                                             "served_after": "b"},
                                                 "kept_as": "bhasha-ocr:prev-1", "trigger": {"actor": "me"}}))
    layout.train_log.write_text('{"step": 10, "loss": 0.5}\n{"step": 20, "loss": 0.25}\n{"step": 3')  # torn by a kill
    text = render(layout)
    assert "2 logged points; loss 0.5000 at step 10 → 0.2500 at step 20." in text
    assert "| special_token | 2 |" in text and "| hi | 7 | 1 | 2 |" in text
    assert "| hi | 1 | 0.1000 | 0.1000 | 0.0000 |" in text and "- FAIL gguf_beats_baseline" in text
    assert "**promoted**" in text and "| hi | 5 | 0.0800 | 0.0600 | 0.0500 |" in text
    assert "kept as `bhasha-ocr:prev-1`" in text and "actor=me" in text


def _rows(config: BuildConfig) -> list[dict[str, Any]]:
    folder = config.resolve_path(config.promote.regression_set)
    return [json.loads(ln) for f in sorted(folder.glob("*.jsonl")) for ln in f.open(encoding="utf-8")]


# -- against the contract server (slow: real llama.cpp) -------------------------------------------------


def _builtin_row() -> dict[str, Any]:
    from bhasha_build.stages.deploy import BUILTIN_SAMPLE

    return {"id": "hi-builtin", **BUILTIN_SAMPLE}


def _gate_file(tmp_path: Path) -> Path:
    """A regression set of one row: the built-in sample, which the memorized model answers exactly."""
    folder = tmp_path / "regression"
    folder.mkdir(exist_ok=True)
    (folder / "one.jsonl").write_text(json.dumps(_builtin_row(), ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


def _run_with(tiny_pipeline: dict[str, Any], gguf: Path, dest: Path, run: str, gate_dir: Path) -> BuildConfig:
    """A copy of the session's tiny run whose exported GGUF is `gguf` and whose eval split is the
    built-in sample (the gate row, and deploy's sanity line), both recorded as their stages record them
    (sha256; the GGUF made from the current adapter), with the Modelfile rendered by its stage."""
    from bhasha_build.stages import pipeline

    src = Path(tiny_pipeline["run_dir"])
    shutil.copytree(src, dest / run, symlinks=True)
    config = tiny_config(dest, run=run, extra=[f'promote.regression_set="{gate_dir}"'])
    layout = config.layout
    shutil.copyfile(gguf, layout.gguf("Q4_K_M"))
    layout.eval_split.write_text(json.dumps({**_builtin_row(), "source": "one.jsonl:1"}, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
    manifest = Manifest(layout.root)
    adapter = manifest.load()["artifacts"]["adapter"]["sha256"]
    manifest.artifact("gguf", layout.gguf("Q4_K_M"), made_from={"adapter": adapter}, quant="Q4_K_M")
    manifest.artifact("eval_split", layout.eval_split, made_from={})
    pipeline.run_modelfile(config)
    return config


ENV = {"GITHUB_ACTOR": "nightly-bot", "GITHUB_EVENT_NAME": "schedule", "GITHUB_RUN_ID": "4242"}


def _argv(config: BuildConfig, *args: str) -> list[str]:
    """`invoke <args>` on `config`'s run, with the settings the test gave it."""
    argv = [sys.executable, "-m", "invoke", *args, "--profile", "tiny-cpu", "--run", config.run,
            "--set", f'runs_dir="{config.runs_dir}"',
            "--set", f'promote.regression_set="{config.promote.regression_set}"']
    for item in TINY_TEST_OVERRIDES:
        argv += ["--set", item]
    return argv


def _invoke(config: BuildConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(config, *args), cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **ENV})


@pytest.fixture
def runs(tiny_pipeline: dict[str, Any], memorized_gguf: Path, tmp_path: Path) -> dict[str, BuildConfig]:
    gate_dir = _gate_file(tmp_path)
    return {"good": _run_with(tiny_pipeline, memorized_gguf, tmp_path, "good", gate_dir),
            "bad": _run_with(tiny_pipeline, Path(tiny_pipeline["gguf"]), tmp_path, "bad", gate_dir)}


@pytest.mark.slow
def test_a_nightly_followed_through_its_steps(runs: dict[str, BuildConfig]) -> None:
    """The nightly's deploy → promote → report steps, by the same tasks, against two contract servers:
    a throwaway one (the pre-promotion check) and the serving one. A user had deployed the weak model
    by hand; night 1 promotes the better model, night 2 refuses the worse one, and a rollback on
    command brings the kept one back, proven by the sanity prompt."""
    good, bad = runs["good"], runs["bad"]
    with OllamaContractServer() as throwaway, OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        by_hand = _invoke(bad, "deploy", "--name", NAME, "--host", serving.url)
        assert by_hand.returncode == 0, by_hand.stderr[-2000:]
        weak = client.model_digest(NAME)

        # night 1: the better model
        for step in (("deploy", "--name", NAME, "--host", throwaway.url, "--force"),
                     ("promote", "--name", NAME, "--host", serving.url), ("report",)):
            proc = _invoke(good, *step)
            assert proc.returncode == 0, (step, proc.stdout[-2000:], proc.stderr[-2000:])
        promoted = json.loads(good.layout.promote_report.read_text())
        assert promoted["status"] == "promoted" and promoted["gate"]["against"] == "served"
        assert promoted["digests"]["served_before"] == weak != promoted["digests"]["served_after"]
        assert client.model_digest(NAME) == promoted["digests"]["candidate"] == promoted["digests"]["served_after"]
        assert promoted["kept_as"] in kept_names(client, NAME) and client.model_digest(promoted["kept_as"]) == weak
        assert not client.exists(f"{NAME}-candidate")
        assert {k: promoted["trigger"][k] for k in ("actor", "event_name", "run_id")} == {
            "actor": "nightly-bot", "event_name": "schedule", "run_id": "4242"}
        table = promoted["gate"]["table"]
        assert [r["lang"] for r in table] == ["hi"] and table[0]["candidate_cer"] == 0.0 < table[0]["served_cer"]
        assert promoted["rows"] == {"total": 2, "by_set": {"eval": 1, "regression:one.jsonl": 1}}
        manifest = json.loads(good.layout.manifest.read_text())
        assert manifest["promote"]["gate"]["table"] == table and manifest["stages"]["promote"]["status"] == "done"
        report = good.layout.run_report.read_text()
        assert "**promoted**" in report and "| hi | 2 |" in report and "## Eval" in report

        # night 2: a worse model is refused; the served model is untouched
        proc = _invoke(bad, "promote", "--name", NAME, "--host", serving.url)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "| hi | 2 |" in proc.stdout and "WORSE" in proc.stdout  # the table is in the log
        assert "error: gate refused" in proc.stderr
        refused = json.loads(bad.layout.promote_report.read_text())
        assert refused["status"] == "refused" and client.model_digest(NAME) == promoted["digests"]["served_after"]
        assert json.loads(bad.layout.manifest.read_text())["promote"]["status"] == "refused"

        # rollback on command: the kept (weak) model comes back, proven first
        proc = _invoke(good, "rollback", "--name", NAME, "--host", serving.url)
        assert proc.returncode == 0, proc.stderr[-2000:]
        back = json.loads(good.layout.rollback_report.read_text())
        assert back["status"] == "rolled back" and back["restored_from"] == promoted["kept_as"]
        assert back["sanity"]["ok"] and client.model_digest(NAME) == weak


@pytest.mark.slow
def test_a_crash_between_copy_and_delete_never_leaves_the_name_missing(runs: dict[str, BuildConfig]) -> None:
    """`invoke promote` is killed (SIGKILL) the moment the server has copied the candidate over the name,
    before it could delete the candidate: the name holds the new model; the next run tidies up."""
    good, bad = runs["good"], runs["bad"]
    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        assert _invoke(bad, "deploy", "--name", NAME, "--host", serving.url).returncode == 0
        proc = subprocess.Popen(_argv(good, "promote", "--name", NAME, "--host", serving.url), cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})

        def crash(body: dict[str, Any] | None) -> None:
            if body and body.get("destination") in (NAME, f"{NAME}:latest"):
                os.kill(proc.pid, signal.SIGKILL)

        serving.after["/api/copy"] = crash
        proc.communicate(timeout=900)
        del serving.after["/api/copy"]
        assert proc.returncode == -signal.SIGKILL
        served = client.model_digest(NAME)
        assert served is not None and served == client.model_digest(f"{NAME}-candidate")  # the new model
        assert len(kept_names(client, NAME)) == 1  # the old one was kept before the swap
        again = _invoke(good, "promote", "--name", NAME, "--host", serving.url)
        assert again.returncode == 0, again.stderr[-2000:]
        assert client.model_digest(NAME) == served and not client.exists(f"{NAME}-candidate")


@pytest.mark.slow
def test_history_keeps_the_last_n(runs: dict[str, BuildConfig]) -> None:
    from bhasha_build.stages import pipeline

    good = runs["good"]
    good = good.model_copy(update={"promote": good.promote.model_copy(update={"keep": 2})})
    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        for _ in range(4):  # the first has nothing to keep; each later one keeps the one it replaces
            report = pipeline.run_promote(good, name=NAME, host=serving.url)
            assert report["status"] == "promoted"
        kept = kept_names(client, NAME)
        assert len(kept) == 2 and report["pruned"] and not any(client.exists(p) for p in report["pruned"])
        assert report["kept_as"] == kept[0]


def test_a_missing_regression_set_is_an_error_not_a_smaller_gate(tmp_path: Path) -> None:
    from bhasha_build.core.layout import RunLayout
    from bhasha_build.stages.promote import PromoteError, gate_rows

    layout = RunLayout(tmp_path / "run")
    layout.data_dir.mkdir(parents=True)
    layout.eval_split.write_text(json.dumps(_builtin_row(), ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(PromoteError, match=r"promote\.regression_set: .*nowhere: input not found"):
        gate_rows(cfg(regression_set=str(tmp_path / "nowhere")), layout)
    rows = gate_rows(cfg(regression_set=str(_gate_file(tmp_path)), eval_rows=0), layout)
    assert [r["set"] for r in rows] == ["regression:one.jsonl"]


# -- the swap under races and faulty servers (fast: the contract server, a fake GGUF per run) -----------
#
# The models here cannot generate (random bytes after the GGUF magic), so the two things that need a
# real model's answers are replaced: deploy's sanity prompt and the gate rows' answers (the reference:
# a perfect candidate). Everything that moves models (create, show round-trip, tags, copy, delete) and
# every record (promote.json, rollback.json, the manifest through the stage runner) is the real code
# against the contract server; the slow tests above run the same steps with real llama.cpp.


def _fake_run(tmp_path: Path, run: str, gate_dir: Path) -> BuildConfig:
    from bhasha_build.core.layout import RunLayout
    from bhasha_build.stages.modelfile import render_modelfile

    config = BuildConfig.model_validate({"runs_dir": str(tmp_path / "runs"), "run": run,
                                         "promote": {"regression_set": str(gate_dir)}})
    layout: RunLayout = config.layout
    layout.data_dir.mkdir(parents=True)
    gguf = layout.gguf("Q4_K_M")
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(1024))  # a different model per run
    render_modelfile(gguf, layout.modelfile, config)
    layout.eval_split.write_text(json.dumps(_builtin_row(), ensure_ascii=False) + "\n", encoding="utf-8")
    manifest = Manifest(layout.root)
    for key, path in (("gguf", gguf), ("modelfile", layout.modelfile), ("eval_split", layout.eval_split)):
        manifest.artifact(key, path, made_from={})
    return config


@pytest.fixture
def stubbed_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from bhasha_build.stages import deploy as deploy_stage
    from bhasha_build.stages import promote as promote_stage

    def sane(client: Any, name: str, *_: Any) -> dict[str, Any]:
        return {"ok": True, "failures": [], "stubbed": name}

    monkeypatch.setattr(deploy_stage, "check_served_model", sane)
    monkeypatch.setattr(promote_stage, "check_served_model", sane)
    monkeypatch.setattr(promote_stage, "answers",
                        lambda client, name, rows, config, layout=None: [r["clean"] for r in rows])


@pytest.fixture
def fake_runs(tmp_path: Path, stubbed_answers: None) -> dict[str, BuildConfig]:
    gate_dir = _gate_file(tmp_path)
    return {run: _fake_run(tmp_path, run, gate_dir) for run in ("a", "b", "c")}


def _stamped(n: int) -> str:
    return f"{NAME}:prev-2026120{n}-010203-000000"


def _make(server: OllamaContractServer, name: str, like: str) -> None:
    """`name` on the server as a copy of `like` (a hand-made tag, or an older kept model), made behind
    the client's back."""
    server.copy(like, name)


def test_kept_time_reads_only_the_stages_own_stamp() -> None:
    from bhasha_build.stages.promote import kept_time

    assert kept_time(NAME, f"{NAME}:prev-20261201-010203-000004").microsecond == 4
    assert kept_time(NAME, f"{NAME}:prev-20261201-010203").second == 3  # older runs: without microseconds
    assert kept_time(f"{NAME}:stable", f"{NAME}:stable-prev-20261201-010203").day == 1
    for other in ("prev-good", "prev-v1", "prev-20261399-000000", "prev-20261201-010203-x",
                  "stable-prev-20261201-010203"):
        assert kept_time(NAME, f"{NAME}:{other}") is None, other


def test_kept_models_are_ordered_by_their_stamp_and_hand_made_tags_are_not_kept_models(
        fake_runs: dict[str, BuildConfig]) -> None:
    from bhasha_build.stages.pipeline import run_promote

    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        a, b, c = (fake_runs[r].model_copy(update={"promote": fake_runs[r].promote.model_copy(update={"keep": 2})})
                   for r in "abc")
        assert run_promote(a, name=NAME, host=serving.url)["status"] == "promoted"
        first = client.model_digest(NAME)
        for tag in ("prev-good", "prev-v1", "prev-zzz"):  # hand-made: sort after any stamp as text
            _make(serving, f"{NAME}:{tag}", NAME)
        _make(serving, _stamped(1), NAME)  # an older promotion's kept model
        report = run_promote(b, name=NAME, host=serving.url)
        assert report["status"] == "promoted", report.get("error")
        kept = kept_names(client, NAME)
        assert kept == [report["kept_as"], _stamped(1)]  # newest first, by the time in the stamp
        assert client.model_digest(report["kept_as"]) == first
        report = run_promote(c, name=NAME, host=serving.url)
        assert report["pruned"] == [_stamped(1)]  # the oldest stamp: never the one just kept
        assert all(client.exists(f"{NAME}:{tag}") for tag in ("prev-good", "prev-v1", "prev-zzz"))
        assert len(kept_names(client, NAME)) == 2 and report["kept_as"] in kept_names(client, NAME)


def test_rollback_restores_the_newest_stamped_model_and_the_manifest_says_rolled_back(
        fake_runs: dict[str, BuildConfig]) -> None:
    from bhasha_build.stages.pipeline import run_promote
    from bhasha_build.stages.promote import rollback
    from bhasha_build.stages.report import render

    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        run_promote(fake_runs["a"], name=NAME, host=serving.url)
        older = client.model_digest(NAME)
        run_promote(fake_runs["b"], name=NAME, host=serving.url)
        newer = client.model_digest(NAME)
        c = fake_runs["c"]
        promoted = run_promote(c, name=NAME, host=serving.url)
        assert promoted["status"] == "promoted" and client.model_digest(NAME) == promoted["digests"]["served_after"]
        _make(serving, f"{NAME}:prev-v1", kept_names(client, NAME)[1])
        assert client.model_digest(f"{NAME}:prev-v1") == older  # hand-made, holding the oldest model
        back = rollback(c, c.layout, name=NAME, host=serving.url, note="bad answers on page 3")
        assert back["status"] == "rolled back" and back["restored_from"] == promoted["kept_as"]
        assert client.model_digest(NAME) == newer == back["digests"]["served_after"]
    manifest = json.loads(c.layout.manifest.read_text())
    assert manifest["promote"]["status"] == "rolled back"
    assert manifest["promote"]["rolled_back"]["restored_from"] == promoted["kept_as"]
    assert manifest["rollback"]["status"] == "rolled back" and manifest["rollback"]["trigger"]["note"]
    assert json.loads(c.layout.promote_report.read_text())["status"] == "rolled back"
    assert "**rolled back**" in render(c.layout)
    # another run's promotion (not the model rolled back from) keeps its record
    assert json.loads(fake_runs["b"].layout.manifest.read_text())["promote"]["status"] == "promoted"


def test_a_candidate_changed_at_the_copy_is_never_left_served(fake_runs: dict[str, BuildConfig]) -> None:
    """Another deploy replaces `<name>-candidate` between promote's check and its /api/copy: the copy
    brings an unverified model; promote must put the kept model back and say so."""
    from bhasha_build.core.errors import BhashaError
    from bhasha_build.stages.pipeline import run_promote

    a, b = fake_runs["a"], fake_runs["b"]
    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        run_promote(a, name=NAME, host=serving.url)
        served = client.model_digest(NAME)
        _make(serving, "intruder", NAME)
        serving.models["intruder:latest"]["digest"] = "f" * 64  # a model nobody verified

        def race(body: dict[str, Any]) -> None:
            if body.get("destination") in (NAME, f"{NAME}:latest") and serving.before.pop("/api/copy", None):
                serving.copy("intruder", f"{NAME}-candidate")

        serving.before["/api/copy"] = race
        with pytest.raises(BhashaError, match=r"not the verified .*the previous model \(" + served + r"\) is served "
                                             r"again"):
            run_promote(b, name=NAME, host=serving.url)
        assert client.model_digest(NAME) == served
    report = json.loads(b.layout.promote_report.read_text())
    assert report["status"] == "failed" and report["digests"]["served_after"] == served
    assert json.loads(b.layout.manifest.read_text())["promote"]["digests"]["served_after"] == served


@pytest.mark.parametrize(("path", "fault"), [("/api/copy", "fail-after"), ("/api/delete", "missing-after"),
                                             ("/api/delete", "html")])
def test_a_promotion_that_was_applied_is_recorded_as_promoted(fake_runs: dict[str, BuildConfig], path: str,
                                                              fault: str) -> None:
    """/api/copy answers 500 after writing, or /api/delete 404s (or answers a proxy's page and deletes
    nothing): the new model is served, so promote.json says promoted (with a warning where something
    was left), and what is served is checked, not assumed."""
    from bhasha_build.stages.pipeline import run_promote

    a, b = fake_runs["a"], fake_runs["b"]
    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        run_promote(a, name=NAME, host=serving.url)
        before = client.model_digest(NAME)
        serving.faults[path] = fault
        report = run_promote(b, name=NAME, host=serving.url)
        del serving.faults[path]
        assert report["status"] == "promoted", report.get("error")
        assert client.model_digest(NAME) == report["digests"]["served_after"] == report["digests"]["candidate"]
        assert client.model_digest(report["kept_as"]) == before
        left = client.exists(f"{NAME}-candidate")
        assert left == (fault == "html")
        assert bool(report["warnings"]) == (fault != "missing-after")  # an answered error, or a model left
    assert json.loads(b.layout.promote_report.read_text())["status"] == "promoted"


def test_a_served_model_changed_during_the_gate_is_not_replaced(fake_runs: dict[str, BuildConfig]) -> None:
    from bhasha_build.stages.pipeline import run_promote
    from bhasha_build.stages.promote import PromoteError

    a, b, c = fake_runs["a"], fake_runs["b"], fake_runs["c"]
    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        run_promote(a, name=NAME, host=serving.url)
        run_promote(c, name=NAME, host=serving.url)
        other = kept_names(client, NAME)[0]

        def meanwhile(body: dict[str, Any]) -> None:  # just before promote keeps the served model
            if str(body.get("destination", "")).startswith(f"{NAME}:prev-") and serving.before.pop("/api/copy", None):
                serving.copy(other, NAME)

        serving.before["/api/copy"] = meanwhile
        with pytest.raises(PromoteError, match="changed while the gate ran"):
            run_promote(b, name=NAME, host=serving.url)
        assert client.model_digest(NAME) == client.model_digest(other)
        assert len(kept_names(client, NAME)) == 1  # the half-kept copy was removed


def test_no_token_reaches_promote_json_or_the_manifest(fake_runs: dict[str, BuildConfig],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A server (or proxy) whose error bodies echo the Authorization header: the warnings and errors
    recorded say what failed, with the token scrubbed."""
    from bhasha_build.core.errors import BhashaError
    from bhasha_build.stages.pipeline import run_promote

    token = "tok-" + os.urandom(8).hex()
    monkeypatch.setenv("BHASHA_OLLAMA_TOKEN", token)
    a, b = fake_runs["a"], fake_runs["b"]
    with OllamaContractServer() as serving:
        serving.faults["/api/delete"] = "echo-auth"  # tidying up fails: warnings
        report = run_promote(a, name=NAME, host=serving.url)
        assert report["status"] == "promoted" and "unauthorized" in report["warnings"][0]
        serving.faults["/api/copy"] = "echo-auth"  # the swap fails: errors
        with pytest.raises(BhashaError, match=r"unauthorized: header Authorization='\*\*\*' refused; "
                                              r"token \*\*\* is not known"):
            run_promote(b, name=NAME, host=serving.url)
        assert serving.authorizations[-1] == f"Bearer {token}"  # it was sent, and echoed
    for run in (a, b):
        for path in (run.layout.promote_report, run.layout.manifest):
            text = path.read_text()
            assert "unauthorized" in text and token not in text, path


def test_a_kept_model_changed_at_the_rollback_copy_is_never_left_served(fake_runs: dict[str, BuildConfig]) -> None:
    from bhasha_build.core.errors import BhashaError
    from bhasha_build.stages.pipeline import run_promote
    from bhasha_build.stages.promote import rollback

    a, b = fake_runs["a"], fake_runs["b"]
    with OllamaContractServer() as serving:
        client = OllamaClient(serving.url)
        run_promote(a, name=NAME, host=serving.url)
        promoted = run_promote(b, name=NAME, host=serving.url)
        served = client.model_digest(NAME)
        _make(serving, "intruder", NAME)
        serving.models["intruder:latest"]["digest"] = "e" * 64  # a model nobody checked

        def race(body: dict[str, Any]) -> None:  # between rollback's sanity prompt and its copy
            if body.get("destination") in (NAME, f"{NAME}:latest") and serving.before.pop("/api/copy", None):
                serving.copy("intruder", promoted["kept_as"])

        serving.before["/api/copy"] = race
        with pytest.raises(BhashaError, match=r"the previous model \(" + served + r"\) is served again"):
            rollback(b, b.layout, name=NAME, host=serving.url)
        assert client.model_digest(NAME) == served
    back = json.loads(b.layout.rollback_report.read_text())
    assert back["status"] == "failed" and back["digests"]["served_after"] == served
    manifest = json.loads(b.layout.manifest.read_text())
    assert manifest["rollback"]["status"] == "failed" and manifest["promote"]["status"] == "promoted"
