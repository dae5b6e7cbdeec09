"""The project against a real Ollama 0.24.0 (the version docker/compose.yaml pins; `real_ollama` in
conftest.py starts it, tests/real_ollama.py finds it): deploy, `deploy --force` with the name polled
the whole time, promote accepted and refused, rollback, `correct` on the demo's multi-page documents
and eval's `served` system, all on the session's tiny model. Skipped, with one reason, without the
binary (tests/real_ollama.py); the contract server (tests/ollama_server.py) stays for injected faults
and follows this one (tests/test_ollama_contract.py).

Each test uses its own model names: the server is shared by the session."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import tiny_config
from test_promote import _gate_file, _run_with

from bhasha_build.core.layout import RunLayout
from bhasha_build.core.ollama import OllamaClient, OllamaModelExistsError
from bhasha_build.stages import correct as cr
from bhasha_build.stages import pipeline
from bhasha_build.stages.deploy import BUILTIN_SAMPLE, candidate_name, deploy
from bhasha_build.stages.modelfile import render_modelfile
from bhasha_build.stages.promote import PromoteError, kept_names, rollback

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "data" / "documents"


def _run(runs: Path, run: str, gguf: Path) -> tuple[Path, Any]:
    """A run folder holding `gguf` as its q4_k_m and the Modelfile its stage renders (no manifest:
    deploy() itself reads only these two)."""
    cfg = tiny_config(runs, run=run)
    layout = RunLayout(runs / run)
    layout.root.mkdir(parents=True)
    shutil.copyfile(gguf, layout.gguf("Q4_K_M"))
    render_modelfile(layout.gguf("Q4_K_M"), layout.modelfile, cfg)
    return layout.root, cfg


class TagsPoller(threading.Thread):
    """Polls /api/tags as fast as it answers and counts the polls in which `name` was missing. A listing the
    server refused (non-200) is kept apart in `refused`: Ollama 0.24.0's manifest.Manifests globs the manifest
    files, then stats each and returns the first error, so a listing that races a model's deletion (deploy
    deletes its candidate) answers 500 "stat ...: no such file or directory" (seen in CI, 2026-12-03)."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(daemon=True)
        self.url, self.name = url, name
        self.polls = self.missing = 0
        self.errors: list[str] = []
        self.refused: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    resp = session.get(f"{self.url}/api/tags", timeout=10)
                    body = resp.json()
                    if resp.status_code != 200:
                        self.refused.append(f"{resp.status_code}: {body.get('error')}")
                        continue
                    names = {m["name"] for m in body["models"]}
                except (requests.RequestException, ValueError, KeyError, AttributeError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.polls += 1
                self.missing += self.name not in names


def test_deploy_then_force_never_leaves_the_name_missing(real_ollama: Any, tiny_gguf: dict[str, Any],
                                                        memorized_gguf: Path, tmp_path: Path) -> None:
    name = "rt-deploy"
    client = OllamaClient(real_ollama.url)
    weak_run, cfg = _run(tmp_path / "runs", "weak", Path(tiny_gguf["gguf"]))
    first = deploy(weak_run, cfg, name, real_ollama.url)
    assert first["status"] == "ok" and first["ollama_version"] == "0.24.0" and first["live_digest_before"] is None
    assert first["roundtrip"] == {"ok": True, "mismatches": []}  # Ollama gave back the Modelfile as written
    assert first["sanity"]["ok"] and first["sanity"]["done_reason"] == "stop"
    assert client.model_digest(name) == first["digest"] == first["candidate_digest"]
    assert not client.exists(candidate_name(name))
    with pytest.raises(OllamaModelExistsError, match="--force"):
        deploy(weak_run, cfg, name, real_ollama.url)

    strong_run, _ = _run(tmp_path / "runs", "strong", memorized_gguf)
    poller = TagsPoller(real_ollama.url, f"{name}:latest")
    poller.start()
    try:
        second = deploy(strong_run, cfg, name, real_ollama.url, force=True)
    finally:
        poller.stop.set()
        poller.join(30)
    print(f"deploy --force: {poller.polls} polls of /api/tags, name missing in {poller.missing}, "
          f"{len(poller.refused)} refused")
    assert not poller.errors, poller.errors[:3]
    # only Ollama's own listing race may refuse a poll: a manifest deleted between its glob and its stat
    assert all(r.startswith("500: stat ") and "no such file or directory" in r for r in poller.refused), \
        poller.refused[:3]
    assert poller.polls >= 20 and poller.missing == 0
    assert second["status"] == "ok" and second["live_digest_before"] == first["digest"]
    assert client.model_digest(name) == second["digest"] == second["candidate_digest"] != first["digest"]
    assert second["sanity"]["response"] == BUILTIN_SAMPLE["clean"]  # the memorized model is the one served
    assert json.loads((strong_run / "deploy.json").read_text()) == second


def test_promote_accepted_then_refused_then_rollback(real_ollama: Any, tiny_pipeline: dict[str, Any],
                                                     memorized_gguf: Path, tmp_path: Path) -> None:
    """The nightly's promotion on the real server: a weak model served by hand, the better one promoted
    (gate against the served model), a worse one refused, then a rollback to the kept weak one."""
    name = "rt-promote:latest"
    client = OllamaClient(real_ollama.url)
    gate_dir = _gate_file(tmp_path)
    good = _run_with(tiny_pipeline, memorized_gguf, tmp_path, "good", gate_dir)
    bad = _run_with(tiny_pipeline, Path(tiny_pipeline["gguf"]), tmp_path, "bad", gate_dir)
    weak = pipeline.run_deploy(bad, name=name, host=real_ollama.url)["digest"]

    promoted = pipeline.run_promote(good, name=name, host=real_ollama.url)
    assert promoted["status"] == "promoted" and promoted["gate"]["against"] == "served"
    assert promoted["gate"]["table"][0]["candidate_cer"] == 0.0 < promoted["gate"]["table"][0]["served_cer"]
    digests = promoted["digests"]
    assert digests["served_before"] == weak != digests["served_after"] == digests["candidate"]
    assert client.model_digest(name) == digests["candidate"]
    assert promoted["kept_as"] in kept_names(client, name) and client.model_digest(promoted["kept_as"]) == weak
    assert not client.exists(candidate_name(name))

    with pytest.raises(PromoteError, match="gate refused") as refused:
        pipeline.run_promote(bad, name=name, host=real_ollama.url)
    assert refused.value.report["status"] == "refused"
    assert json.loads(bad.layout.promote_report.read_text())["status"] == "refused"
    assert client.model_digest(name) == digests["served_after"]  # untouched

    back = rollback(good, good.layout, name=name, host=real_ollama.url)
    assert back["status"] == "rolled back" and back["restored_from"] == promoted["kept_as"]
    assert back["sanity"]["ok"] and client.model_digest(name) == weak


@pytest.fixture(scope="module")
def deployed(real_ollama: Any, tiny_gguf: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model deployed to the real server as `rt-correct`."""
    run, cfg = _run(tmp_path_factory.mktemp("rt") / "runs", "ci", Path(tiny_gguf["gguf"]))
    deploy(run, cfg, "rt-correct", real_ollama.url)
    return "rt-correct"


def test_correct_keeps_the_layout_of_the_demo_documents(real_ollama: Any, deployed: str, tmp_path: Path) -> None:
    # The guard off: the tiny model's replies are written, so every line's text changes around a layout
    # that must not (with the guard on, it keeps all 18 inputs and the check would be empty).
    cfg = tiny_config(tmp_path / "runs", extra=["correct.backoff_s=0", "guard.enabled=false"])
    summary = cr.run(cfg, DOCS / "ocr", tmp_path / "out", name=deployed, host=real_ollama.url, progress=False)
    backend = summary["backend"]
    assert backend["kind"] == "ollama" and backend["ollama_version"] == "0.24.0"
    assert backend["num_ctx"] == cfg.model.max_seq_length and backend["system_prompt_matches_training"] is True
    assert summary["lines"] == 18 and summary["failed"] == 0  # the lines with letters, 3 + 2 pages
    assert summary["changed"] >= 9, cr.summary_line(summary)
    records = [json.loads(line) for line in (tmp_path / "out" / "corrections.jsonl").read_text().splitlines()]
    assert len(records) == 18
    changed = {(r["file"], r["line"]) for r in records if r["output"] != r["input"]}
    for src in sorted((DOCS / "ocr").iterdir()):
        data, got = src.read_bytes(), (tmp_path / "out" / src.name).read_bytes()
        assert cr.structure(got) == cr.structure(data), src.name
        assert got.count(b"\f") == data.count(b"\f") >= 1
        for (no, before, end_in), (_, after, end_out) in zip(cr._split_physical(data), cr._split_physical(got),
                                                              strict=True):
            assert end_in == end_out
            if (src.name, no) not in changed:
                assert after == before, f"{src.name}:{no} changed without a correction record"
    print("correct via real Ollama:", cr.summary_line(summary))


def test_eval_scores_the_served_model(real_ollama: Any, tiny_pipeline: dict[str, Any], tmp_path: Path) -> None:
    """eval's `served` system: the deployed model scored by name through the server; what it records
    for a row is what the server answers that row when asked directly (greedy, seeded: reproducible)."""
    from bhasha_build.core.config import load_config
    from bhasha_build.core.text import normalize_text

    src = Path(tiny_pipeline["run_dir"])
    shutil.copytree(src, tmp_path / "runs" / src.name)
    cfg = load_config(profile="tiny-cpu", env={}, overrides=[
        f'runs_dir="{tmp_path / "runs"}"', f'run="{src.name}"', f'deploy.host="{real_ollama.url}"',
        'eval.served_name="rt-served"', "eval.max_rows=6"])
    pipeline.run_deploy(cfg, name="rt-served", host=real_ollama.url)
    report = pipeline.run_eval(cfg, ("served",))
    assert report["served_model"] == f"rt-served on {real_ollama.url}"
    assert report["served"]["overall"]["rows"] == report["rows"] == 6
    assert report["served"]["generation"]["seconds"] > 0
    predictions = [json.loads(line) for line in cfg.layout.eval_predictions.read_text().splitlines()]
    assert len(predictions) == 6 and all(isinstance(p["served"], str) for p in predictions)
    for row in predictions[:2]:
        body = {"model": "rt-served", "stream": False, "options": {"temperature": 0, "seed": cfg.seed,
                                                                   "num_predict": cfg.eval.max_new_tokens},
                "messages": [{"role": "user", "content": normalize_text(row["noisy"], cfg.data.zwj_policy)}]}
        direct = requests.post(f"{real_ollama.url}/api/chat", json=body, timeout=120).json()
        assert direct["message"]["content"].strip() == row["served"].strip()
    print(f"eval served: CER {report['served']['overall']['cer']:.4f} on {report['rows']} rows")
