"""Export stage: merge LoRA → 16-bit HF folder → f16 GGUF → quantized GGUF (pinned llama.cpp).

The adapter is always merged into a 16-bit reload of the base model (never into 4-bit weights:
Unsloth's CPU backend cannot, and a merge into dequantized 4-bit weights loses precision anyway).
Each artifact is written under a temporary name and renamed when complete. The quantized GGUF's
metadata is checked (architecture, file type, chat template, EOS) before the stage reports done.

Knobs: export.quant (Q4_K_M default), export.keep_f16. Outputs: runs/<run>/merged/,
model-f16.gguf, model-<quant>.gguf, sanity.json (a llama.cpp chat completion on the quantized file).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from . import toolchain
from .chat import STOP_TOKENS, pair_messages, render_chatml
from .config import BuildConfig
from .fsutil import atomic_dir, atomic_write_json
from .tiny import MARKER_FILE
from .train import ADAPTER_DIR, adapter_base_path

MERGED_DIR = "merged"
F16_GGUF = "model-f16.gguf"
SANITY_TEXT = "भारत एक विशाल देश है। यहा अनेक भाषाए बोली जाती है।"


class ExportError(RuntimeError):
    """One-line, user-facing export problem."""


def quant_gguf_name(quant: str) -> str:
    return f"model-{quant.lower()}.gguf"


def merge_adapter(run_dir: Path) -> Path:
    """Base model (16-bit) + adapter → runs/<run>/merged (atomic)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").exists():
        raise ExportError(f"{adapter}: no trained adapter; run `invoke train` first")
    base = str(adapter_base_path(run_dir))
    base_cfg = json.loads((Path(base) / "config.json").read_text())
    dtype_name = base_cfg.get("dtype") or base_cfg.get("torch_dtype") or "float16"
    dtype = getattr(torch, dtype_name) if dtype_name in ("float16", "bfloat16", "float32") else torch.float16
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, local_files_only=True)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter), local_files_only=True)
    out = run_dir / MERGED_DIR
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        marker = Path(base) / MARKER_FILE
        if marker.exists():
            shutil.copy2(marker, tmp / MARKER_FILE)
    return out


def gguf_metadata(path: Path) -> dict[str, str]:
    """Key/value metadata of a GGUF as llama.cpp reads it (vocab only: cheap)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return dict(llm.metadata)
    finally:
        llm.close()


def check_gguf(path: Path, quant: str) -> dict[str, Any]:
    meta = gguf_metadata(path)
    problems = []
    if meta.get("general.architecture") != "qwen2":
        problems.append(f"general.architecture is {meta.get('general.architecture')!r}, not 'qwen2'")
    want = toolchain.QUANT_TYPES[quant]  # llama_ftype, as written to general.file_type
    if str(meta.get("general.file_type")) != str(want):
        problems.append(f"general.file_type is {meta.get('general.file_type')}, not {want} ({quant})")
    template = meta.get("tokenizer.chat_template", "")
    if "<|im_start|>" not in template:
        problems.append("tokenizer.chat_template missing or not ChatML")
    if problems:
        raise ExportError(f"{path.name}: " + "; ".join(problems))
    return {"architecture": meta["general.architecture"], "file_type": int(meta["general.file_type"]),
            "chat_template": True, "eos_token_id": int(meta.get("tokenizer.ggml.eos_token_id", -1)),
            "pre_tokenizer": meta.get("tokenizer.ggml.pre")}


def export(cfg: BuildConfig, run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    toolchain.require()
    merged = merge_adapter(run_dir)
    marker = merged / MARKER_FILE
    pre = json.loads(marker.read_text())["pre_tokenizer"] if marker.exists() else None
    f16 = run_dir / F16_GGUF
    convert = toolchain.convert_to_gguf(merged, f16, outtype="f16", register_pre_tokenizer=pre)
    quant = cfg.export.quant
    out = run_dir / quant_gguf_name(quant)
    if quant == "F16":
        shutil.copy2(f16, out)
    else:
        toolchain.quantize(f16, out, quant)
    checks = check_gguf(out, quant)
    if not cfg.export.keep_f16 and quant != "F16":
        f16.unlink()
    return {"merged": merged, "f16": f16 if f16.exists() else None, "gguf": out, "quant": quant,
            "convert": convert, "checks": checks}


def sanity_check(gguf: Path, out_json: Path, cfg: BuildConfig, text: str = SANITY_TEXT) -> dict[str, Any]:
    """One deterministic chat completion through llama.cpp on the quantized GGUF."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=min(cfg.model.max_seq_length, 4096), seed=cfg.seed,
                verbose=False, n_threads=os.cpu_count())
    try:
        prompt = render_chatml(pair_messages(text), add_generation_prompt=True)
        out = llm.create_completion(prompt, max_tokens=cfg.eval.max_new_tokens, temperature=0.0,
                                    stop=STOP_TOKENS, seed=cfg.seed)
    finally:
        llm.close()
    choice = out["choices"][0]
    result = {"prompt": text, "response": choice["text"], "finish_reason": choice["finish_reason"],
              "completion_tokens": out["usage"]["completion_tokens"],
              # "stop" alone would pass a model that emits <|im_end|> at once: an answer must exist too
              "ok": choice["finish_reason"] == "stop" and bool(choice["text"].strip())}
    atomic_write_json(out_json, result)
    return result
