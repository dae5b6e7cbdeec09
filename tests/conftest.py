"""Shared fixtures. The expensive one, `tiny_pipeline`, runs the real stages once per session on the
tiny model: data → train (Unsloth CPU backend) → export (pinned llama.cpp) → modelfile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# Fewer steps than the demo: enough for the model to learn the format and stop; tests check mechanics.
TINY_TEST_OVERRIDES = ["train.max_steps=40", "train.save_steps=20", "model.tiny.pretrain_steps=150"]


def tiny_config(runs_dir: Path, run: str = "ci", extra: list[str] | None = None):
    from bhasha_build.core.config import load_config

    return load_config(profile="tiny-cpu", env={}, overrides=[
        f'runs_dir="{runs_dir}"', f'run="{run}"', *TINY_TEST_OVERRIDES, *(extra or [])])


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real tiny run: returns cfg, run_dir, stage results and artifact paths."""
    from bhasha_build.core import toolchain
    from bhasha_build.stages import pipeline

    toolchain.prepare()
    runs = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(runs)
    stats = pipeline.run_data(cfg)
    train = pipeline.run_train(cfg)
    export = pipeline.run_export(cfg)
    modelfile = pipeline.run_modelfile(cfg)
    return {"cfg": cfg, "run_dir": cfg.run_dir, "stats": stats, "train": train, "export": export,
            "modelfile": modelfile, "gguf": export["gguf"], "merged": export["merged"]}


@pytest.fixture(scope="session")
def tiny_gguf(tiny_pipeline: dict[str, Any]) -> dict[str, Any]:
    """{"hf_dir": merged HF folder, "gguf": q4_k_m GGUF} of the session's tiny run."""
    return {"hf_dir": tiny_pipeline["merged"], "gguf": tiny_pipeline["gguf"]}


@pytest.fixture(scope="session")
def qwen_vocab_gguf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny real-vocabulary model: Qwen2.5's tokenizer (core/qwen_tokenizer.py) on a 152,064-row
    embedding (hidden 256, random init, untrained), converted to an f16 GGUF by the pinned llama.cpp.
    {"hf_dir", "gguf", "convert": the converter's report (pre-tokenizer, whether one was registered)}."""
    from bhasha_build.core import tiny, toolchain
    from bhasha_build.core.config import TinyModelConfig

    toolchain.prepare()
    root = tmp_path_factory.mktemp("qwen-vocab")
    hf = tiny.build_tiny_model(root / "hf", [], TinyModelConfig(tokenizer="qwen2.5", vocab_size=152064))
    gguf = root / "model-f16.gguf"
    report = toolchain.convert_to_gguf(hf, gguf, outtype="f16")
    return {"hf_dir": hf, "gguf": gguf, "convert": report}
