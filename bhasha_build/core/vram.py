"""VRAM preflight: refuse, with numbers, a training config that cannot fit the card.

`estimate_vram_gib` itemises one training step's peak (weights, LoRA + optimizer, activations,
logits); `vram_preflight` compares it with `train.gpu_memory_gib` (or the detected card) and raises
`VramError` naming the knobs to turn. Used by the train stage and by `invoke doctor`.
`vram_budget` is the peak the micro-batch probe may use (train.vram_budget_gib): 0.875 x the card
(14 GiB on the gpu16gb profile's 16 GB card), "auto" = 0.875 x the detected card (a full-card mode:
on a 141 GB H200 that leaves room to keep every activation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError


class VramError(BhashaError):
    """The config does not fit the card (one line, with the estimate)."""


UNSLOTH_KEPT = 0.75  # of (34·hidden + 6·intermediate) bytes per token and layer, unsloth without checkpointing


def estimate_vram_gib(cfg: BuildConfig, model_config: dict[str, Any]) -> dict[str, float]:
    """Peak-memory estimate for one training step (GiB), itemised; conservative by design.

    weights: 4-bit NF4 ≈ 0.5625 B/param (incl. absmax) for the linear layers, 16-bit embeddings;
    LoRA params + grads + optimizer states (8-bit Adam: 2 B/param, else 8 B) in fp32.
    unsloth backend: activations are offloaded per layer by its gradient checkpointing and the
    cross-entropy is fused, so what stays is ~60·hidden bytes per token — calibrated on an H200
    (Qwen2.5-1.5B shape, bs 8 × 2048, 4-bit: measured peak 2.72 GiB, this gives 3.2 GiB). Without
    checkpointing, UNSLOTH_KEPT × (34·hidden + 6·intermediate) bytes per token and layer: the full
    (34h + 6i) over-estimated every H200 measurement by 1.4-1.7x and refused a config that fits
    (2026-12-03, the 16-bit 1.5B at 64 × 768: "needs 139.4 GiB"; at 32 × 768 it ran in ~45 GiB). With 0.75:
    0.5B 16-bit 64 × 768 measured 39.9 GiB, estimated 50.1; 1.5B shape 4-bit 8 × 2048 measured 33.6 (the
    probe's peak; trained 27.0), estimated 35.8; 1.5B 16-bit 32 × 768 ≤ 45.5 (nvidia-smi), estimated 54.5.
    hf backend: one hidden state per layer per token kept (2 B), plus full logits: bf16 logits, an
    fp32 upcast and its gradient (12 B per token per vocab entry) — measured 35 GiB, this gives ~31.
    """
    h = model_config["hidden_size"]
    inter = model_config["intermediate_size"]
    layers = model_config["num_hidden_layers"]
    vocab = model_config["vocab_size"]
    kv = model_config.get("num_key_value_heads", model_config["num_attention_heads"])
    head_dim = h // model_config["num_attention_heads"]
    per_layer = h * h * 2 + 2 * h * kv * head_dim + 3 * h * inter
    embed = vocab * h * (1 if model_config.get("tie_word_embeddings", True) else 2)
    weight_bytes = layers * per_layer * (0.5625 if cfg.model.load_in_4bit else 2.0) + embed * 2.0
    lora_dims = {"q_proj": h + h, "k_proj": h + kv * head_dim, "v_proj": h + kv * head_dim, "o_proj": h + h,
                 "gate_proj": h + inter, "up_proj": h + inter, "down_proj": inter + h}
    lora_params = layers * cfg.lora.r * sum(lora_dims[m] for m in cfg.lora.target_modules)
    opt_bytes_per = 2.0 if "8bit" in cfg.train.optim else 8.0
    lora_bytes = lora_params * (4 + 4 + opt_bytes_per)
    # batch_size "auto" is probed on the card (stages/probe.py); the preflight checks the smallest micro-batch
    batch = 1 if cfg.train.batch_size == "auto" else cfg.train.batch_size
    tokens = batch * cfg.model.max_seq_length
    if cfg.train.backend == "unsloth":
        act_bytes = (tokens * 60 * h if cfg.train.gradient_checkpointing
                     else UNSLOTH_KEPT * tokens * layers * (34 * h + 6 * inter))
        logits_bytes = 0.0  # fused, chunked cross-entropy: inside the activation figure
    else:
        per_token = layers * h * 2 + 34 * h + 6 * inter if cfg.train.gradient_checkpointing else layers * (
            34 * h + 6 * inter)
        act_bytes = tokens * per_token
        logits_bytes = tokens * vocab * 12.0
    gib = 2**30
    parts = {"weights": weight_bytes / gib, "lora_and_optimizer": lora_bytes / gib,
             "activations": act_bytes / gib, "logits": logits_bytes / gib, "cuda_overhead": 0.5}
    parts["total"] = sum(parts.values())
    return {k: round(v, 2) for k, v in parts.items()}


BUDGET_SHARE = 0.875  # of the card: what the probe may fill, the rest for the allocator's fragmentation


def detected_card() -> tuple[str, float] | None:
    """(name, GiB) of CUDA device 0, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / 2**30


def card_gib(cfg: BuildConfig) -> float | None:
    """The card the config is checked against: the detected one under vram_budget_gib = "auto", else
    train.gpu_memory_gib (a profile's card, e.g. gpu16gb's 16 GB) or the detected one."""
    detected = detected_card()
    if cfg.train.vram_budget_gib == "auto" or cfg.train.gpu_memory_gib is None:
        return detected[1] if detected else None
    return cfg.train.gpu_memory_gib


def vram_budget(cfg: BuildConfig) -> tuple[float, str]:
    """(GiB, where it came from): the peak the micro-batch probe may reach on this config's card."""
    setting = cfg.train.vram_budget_gib
    if isinstance(setting, (int, float)):
        return float(setting), "train.vram_budget_gib"
    detected = detected_card()
    if setting == "auto" or cfg.train.gpu_memory_gib is None:
        if detected is None:
            raise VramError("train.vram_budget_gib = \"auto\" needs a CUDA card to size itself on; set a number "
                            "of GiB or train.gpu_memory_gib")
        name, gib = detected
        return BUDGET_SHARE * gib, f"{BUDGET_SHARE} x the detected card ({name}, {gib:.1f} GiB)"
    card = cfg.train.gpu_memory_gib
    return BUDGET_SHARE * card, f"{BUDGET_SHARE} x train.gpu_memory_gib {card:g}"


def vram_preflight(cfg: BuildConfig, model_dir: Path) -> dict[str, Any]:
    """Refuse, with numbers, a profile that cannot fit the card."""
    model_config = json.loads((model_dir / "config.json").read_text())
    estimate = estimate_vram_gib(cfg, model_config)
    card = card_gib(cfg)
    result = {"estimate_gib": estimate, "card_gib": round(card, 2) if card else None}
    if card and estimate["total"] > card * 0.95:
        raise VramError(
            f"VRAM preflight: this config needs about {estimate['total']:.1f} GiB "
            f"(weights {estimate['weights']}, activations {estimate['activations']}, logits {estimate['logits']}, "
            f"LoRA+optimizer {estimate['lora_and_optimizer']}) but the card has {card:.1f} GiB: lower "
            f"train.batch_size (now {cfg.train.batch_size}) or model.max_seq_length, or set model.load_in_4bit=true"
        )
    return result
