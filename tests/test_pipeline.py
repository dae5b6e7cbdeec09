"""The whole flow on the tiny model (session fixture `tiny_pipeline`): run-folder contract, manifest
provenance, GGUF metadata, llama.cpp sanity, eval vs baseline, and skipping of unchanged stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bhasha_build.core.manifest import sha256_file

pytestmark = pytest.mark.slow


def test_run_folder_contract(tiny_pipeline: dict[str, Any]) -> None:
    run_dir: Path = tiny_pipeline["run_dir"]
    for rel in ("data/train.jsonl", "data/eval.jsonl", "data/rejects.jsonl", "data/stats.json",
                "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "train_log.jsonl", "loss.png",
                "merged/config.json", "model-f16.gguf", "model-q4_k_m.gguf", "Modelfile", "manifest.json"):
        assert (run_dir / rel).is_file(), rel
    # No half-written artifact or temp folder is left behind.
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]


def test_manifest_carries_provenance(tiny_pipeline: dict[str, Any]) -> None:
    run_dir: Path = tiny_pipeline["run_dir"]
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["run"] == "ci" and m["created"] and len(m["config_sha256"]) == 64
    assert set(m["git"]) == {"sha", "dirty"}
    for pkg in ("python", "torch", "transformers", "unsloth", "trl", "peft", "llama_cpp"):
        assert m["versions"][pkg], pkg
    assert m["toolchain"]["llama_cpp_commit"] == "0c1e570"
    assert m["lock_sha256"] and m["config"]["model"]["name"] == "tiny"
    data = m["data"]
    stats = tiny_pipeline["stats"]
    assert (data["train_rows"], data["eval_rows"], data["rejected_rows"]) == (
        stats["train_rows"], stats["eval_rows"], stats["rejected"])
    for stage in ("data", "train", "export", "modelfile"):
        assert m["stages"][stage]["status"] == "done" and m["stages"][stage]["seconds"] >= 0
    for stage, phases in (("train", ["rows_and_preflight", "load_model", "build_dataset", "probe", "build_trainer",
                                     "fit", "save_adapter"]), ("export", ["merge", "convert", "quantize"])):
        recorded = m["stages"][stage]["phases_s"]  # where each stage's wall time went, in order
        assert list(recorded) == phases and all(s >= 0 for s in recorded.values()), (stage, recorded)
    export = m["stages"]["export"]  # its seconds: the stage's wall time, the phases inside it
    assert 0 < sum(export["phases_s"].values()) <= export["seconds"] + 0.05 and export["phases_s"]["quantize"] > 0
    train = m["stages"]["train"]  # its seconds: the training steps' (trainer.train), the fit phase around them
    assert train["phases_s"]["fit"] + 0.05 >= train["seconds"] > 0
    gguf = m["artifacts"]["gguf"]
    assert gguf["quant"] == "Q4_K_M" and gguf["path"] == "model-q4_k_m.gguf"  # relative to the run folder
    assert gguf["sha256"] == sha256_file(run_dir / gguf["path"]) and gguf["bytes"] > 0
    assert m["artifacts"]["modelfile"]["sha256"] == sha256_file(run_dir / "Modelfile")


def test_gguf_metadata(tiny_pipeline: dict[str, Any]) -> None:
    """The exported GGUF's metadata as llama.cpp itself reads it (vocab only)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(tiny_pipeline["gguf"]), vocab_only=True, verbose=False)
    try:
        meta = dict(llm.metadata)
    finally:
        llm.close()
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.file_type"] == "15"  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert meta["tokenizer.ggml.pre"] == "qwen2"
    checks = tiny_pipeline["export"]["checks"]
    assert checks["eos_token_id"] == int(meta["tokenizer.ggml.eos_token_id"])


def test_train_used_unsloth_with_response_only_loss(tiny_pipeline: dict[str, Any]) -> None:
    summary = tiny_pipeline["train"]
    assert summary["backend"] == "unsloth" and summary["global_step"] == 40
    log = [json.loads(ln) for ln in (tiny_pipeline["run_dir"] / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30, 40]
    assert all(r["tokens_per_s"] and r["tokens_per_s"] > 0 for r in log[1:])
    assert log[-1]["loss"] < log[0]["loss"]


def test_sanity_prompt_stops_on_im_end(tiny_pipeline: dict[str, Any]) -> None:
    from bhasha_build.stages import pipeline

    result = pipeline.run_sanity(tiny_pipeline["cfg"])
    assert result["finish_reason"] == "stop" and result["response"].strip()
    assert result["completion_tokens"] < tiny_pipeline["cfg"].eval.max_new_tokens
    guarded = result["guarded"]  # the do-no-harm guard's verdict on the answer, next to the raw answer
    assert guarded["text"] == (result["prompt"] if guarded["kept_input"] else result["response"].strip())
    manifest = json.loads((tiny_pipeline["run_dir"] / "manifest.json").read_text())
    assert manifest["stages"]["sanity"]["finish_reason"] == "stop"


def test_eval_scores_model_and_gguf_against_the_baseline(tiny_pipeline: dict[str, Any]) -> None:
    from bhasha_build.stages import pipeline

    report = pipeline.run_eval(tiny_pipeline["cfg"])
    run_dir = tiny_pipeline["run_dir"]
    for system in ("baseline", "model", "gguf"):
        assert report[system]["overall"]["cer"] >= 0.0 and report[system]["by_lang"]
    assert report["rows"] == len((run_dir / "eval_predictions.jsonl").read_text().splitlines())
    assert (run_dir / "cer_by_lang.png").stat().st_size > 1000
    assert [c["check"] for c in report["gate"]["checks"]] == [
        "model_beats_baseline", "gguf_beats_baseline", "gguf_close_to_hf", "model_over_correction",
        "gguf_over_correction"]
    for system in ("model", "gguf"):
        guarded = report[system]["guarded"]
        assert guarded["overall"]["rows"] == report["rows"] and "guarded_rows" in guarded["overall"]
        assert set(guarded["by_lang"]) == set(report[system]["by_lang"])


def test_unchanged_stage_is_skipped_and_changed_one_reruns(tiny_pipeline: dict[str, Any], capsys) -> None:
    from bhasha_build.core.manifest import Manifest
    from bhasha_build.stages import pipeline

    cfg = tiny_pipeline["cfg"]
    before = Manifest(cfg.run_dir).load()["artifacts"]["gguf"]["sha256"]
    pipeline.run_export(cfg)
    assert "export: up to date" in capsys.readouterr().out
    assert Manifest(cfg.run_dir).load()["artifacts"]["gguf"]["sha256"] == before
