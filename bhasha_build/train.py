"""Train stage: LoRA/QLoRA fine-tuning on the ChatML pairs of a run, response-only loss.

Backends (config train.backend):
  unsloth  FastLanguageModel.from_pretrained(max_seq_length, dtype=None, load_in_4bit) +
           get_peft_model(q,k,v,o,gate,up,down, use_gradient_checkpointing="unsloth") + TRL SFTTrainer.
           On a machine without a GPU, Unsloth's CPU backend runs the same calls.
  hf       transformers + peft (+ bitsandbytes 4-bit on CUDA) + TRL SFTTrainer; same config.

Both train on TRL's conversational prompt-completion rows from chat.py, so the loss falls on the
assistant reply only (completion_only_loss). Packing keeps short OCR lines from being mostly padding;
TRL's best-fit-decreasing packer bins whole examples into max_seq_length rows, then
  padding_free  flattens a batch into one sequence with per-example boundaries: exact isolation, and
                fast only with a varlen attention kernel (torch>=2.12 varlen_attn, flash-attn,
                xformers). Without one, Unsloth runs attention once per example: launch-bound.
  dense_rows    trains each packed row as one dense causal sequence: an example may attend to the
                whole examples packed before it in its row (the classic packing trade-off), at the
                speed of dense 2048-token rows on any kernel.
  auto          padding_free when a varlen kernel is available, else dense_rows (recorded).

Knobs: model.{name,max_seq_length,load_in_4bit,dtype}, lora.{r,alpha,dropout,target_modules},
train.{backend,max_steps,epochs,learning_rate,lr_scheduler,warmup_steps,batch_size,grad_accum,optim,
weight_decay,packing,gradient_checkpointing,save_steps,save_total_limit,logging_steps,gpu_memory_gib},
seed. Outputs: runs/<run>/adapter/, checkpoints/, train_log.jsonl, loss.png.

Under torchrun (several processes, see launch.py) every rank trains, but only global rank 0 writes
train_log.jsonl, loss.png and adapter/; checkpoints/ is the Trainer's (rank 0, plus one rng_state per rank).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .config import BuildConfig
from .fsutil import atomic_dir, save_figure
from .launch import distributed_info, is_main_process, local_rank, world_size

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE_MODEL_DIR = "base-model"  # tiny models are built into the run folder
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
TRAIN_LOG = "train_log.jsonl"


class TrainError(RuntimeError):
    """One-line, user-facing training problem."""


def import_unsloth_first(cfg: BuildConfig) -> None:
    """Unsloth patches transformers/peft/trl at import: it must come before them to apply fully.
    A failure is only noted here; the train stage reports it properly."""
    if cfg.train.backend == "unsloth":
        try:
            import unsloth  # noqa: F401
        except Exception as exc:  # unsloth raises many kinds at import on unsupported setups
            print(f"note: unsloth import failed early ({type(exc).__name__})", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Model resolution


def resolve_model_path(cfg: BuildConfig, run_dir: Path) -> Path:
    """A local folder holding config.json + tokenizer; never touches the network."""
    if cfg.model.is_tiny:
        path = run_dir / BASE_MODEL_DIR
        if not (path / "config.json").exists():
            raise TrainError(f"{path}: tiny base model missing; run `invoke data` first")
        return path
    local = Path(cfg.model.name).expanduser()
    if not local.is_absolute():
        local = cfg.resolve_path(cfg.model.name)
    if local.is_dir():
        if not (local / "config.json").exists():
            raise TrainError(f"{local}: not a model folder (no config.json)")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(cfg.model.name, local_files_only=True))
    except Exception:  # any miss in the offline cache means the same thing to the user
        raise TrainError(
            f"model '{cfg.model.name}' is not a local folder and not in the HF cache (no network here): "
            f"mount its folder (e.g. -v /path/Qwen2.5-1.5B-Instruct:/models/qwen) and set model.name=/models/qwen, "
            f"or pre-fill HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}"
        ) from None


def ensure_tiny_base_model(cfg: BuildConfig, run_dir: Path, texts: list[str]) -> Path:
    """Build the tiny model once per run (its tokenizer is trained on the run's input text)."""
    from .tiny import build_tiny_model

    path = run_dir / BASE_MODEL_DIR
    if not (path / "config.json").exists():
        build_tiny_model(path, texts, cfg.model.tiny, seed=cfg.seed,
                         max_position_embeddings=max(cfg.model.max_seq_length, 512))
    return path


# ----------------------------------------------------------------------------------------------
# VRAM preflight


def estimate_vram_gib(cfg: BuildConfig, model_config: dict[str, Any]) -> dict[str, float]:
    """Peak-memory estimate for one training step (GiB), itemised; conservative by design.

    weights: 4-bit NF4 ≈ 0.5625 B/param (incl. absmax) for the linear layers, 16-bit embeddings;
    LoRA params + grads + optimizer states (8-bit Adam: 2 B/param, else 8 B) in fp32.
    unsloth backend: activations are offloaded per layer by its gradient checkpointing and the
    cross-entropy is fused, so what stays is ~60·hidden bytes per token — calibrated on an H200
    (Qwen2.5-1.5B shape, bs 8 × 2048, 4-bit: measured peak 2.72 GiB, this gives 3.2 GiB).
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
    tokens = cfg.train.batch_size * cfg.model.max_seq_length
    if cfg.train.backend == "unsloth":
        act_bytes = tokens * 60 * h if cfg.train.gradient_checkpointing else tokens * layers * (34 * h + 6 * inter)
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


def vram_preflight(cfg: BuildConfig, model_dir: Path) -> dict[str, Any]:
    """Refuse, with numbers, a profile that cannot fit the card."""
    import torch

    model_config = json.loads((model_dir / "config.json").read_text())
    estimate = estimate_vram_gib(cfg, model_config)
    card = cfg.train.gpu_memory_gib
    if card is None and torch.cuda.is_available():
        card = torch.cuda.get_device_properties(0).total_memory / 2**30
    result = {"estimate_gib": estimate, "card_gib": round(card, 2) if card else None}
    if card and estimate["total"] > card * 0.95:
        raise TrainError(
            f"VRAM preflight: this config needs about {estimate['total']:.1f} GiB "
            f"(weights {estimate['weights']}, activations {estimate['activations']}, logits {estimate['logits']}, "
            f"LoRA+optimizer {estimate['lora_and_optimizer']}) but the card has {card:.1f} GiB: lower "
            f"train.batch_size (now {cfg.train.batch_size}) or model.max_seq_length, or set model.load_in_4bit=true"
        )
    return result


# ----------------------------------------------------------------------------------------------
# Loading


def _compute_dtype(cfg: BuildConfig):
    import torch

    if cfg.model.dtype != "auto":
        return getattr(torch, cfg.model.dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_unsloth(cfg: BuildConfig, model_dir: Path):
    try:
        from unsloth import FastLanguageModel
    except Exception as exc:  # unsloth raises many kinds at import on unsupported setups
        raise TrainError(f"cannot import unsloth ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                         f"try --set train.backend=hf") from None
    import torch

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(model_dir),
        max_seq_length=cfg.model.max_seq_length,
        dtype=None if cfg.model.dtype == "auto" else getattr(torch, cfg.model.dtype),
        load_in_4bit=cfg.model.load_in_4bit,
        local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora.r,
        target_modules=cfg.lora.target_modules,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        bias="none",
        use_gradient_checkpointing="unsloth" if cfg.train.gradient_checkpointing else False,
        random_state=cfg.seed,
        max_seq_length=cfg.model.max_seq_length,
    )
    return model, tokenizer


def load_hf(cfg: BuildConfig, model_dir: Path):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _compute_dtype(cfg)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    quantized = cfg.model.load_in_4bit and torch.cuda.is_available()
    if quantized:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": local_rank()}  # under DDP each rank holds its own copy on its card
    elif cfg.model.load_in_4bit:
        print("note: bitsandbytes 4-bit needs CUDA; the hf backend trains in 16/32-bit here", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    model = get_peft_model(model, LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM"))
    return model, tokenizer


# ----------------------------------------------------------------------------------------------
# Trainer pieces


def _trainer_class(base):
    """On CPU, TRL 1.15's fused loss needs a Triton GPU driver: use transformers' loss there."""
    import torch

    if torch.cuda.is_available():
        return base

    from transformers import Trainer

    class CpuLossSFTTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CpuLossSFTTrainer


def _progress_callback(log_path: Path, total_steps_hint: int | None):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """train_log.jsonl + a TTY bar with ETA, or plain periodic lines for `docker logs`."""

        def __init__(self) -> None:
            self.tty = sys.stderr.isatty()
            self.t0 = time.monotonic()
            self.last_t = self.t0
            self.last_tokens = 0.0
            self.start_step = 0

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.last_t = time.monotonic()
            self.start_step = state.global_step
            self.last_tokens = float(getattr(state, "num_input_tokens_seen", 0) or 0)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "loss" not in logs or not state.is_world_process_zero:  # logged loss is already the all-rank mean
                return
            now = time.monotonic()
            step, total = state.global_step, state.max_steps or total_steps_hint or 0
            tokens = float(state.num_input_tokens_seen or logs.get("num_tokens") or 0.0)
            dt = max(now - self.last_t, 1e-9)
            tok_s = (tokens - self.last_tokens) / dt if tokens else None
            self.last_t, self.last_tokens = now, tokens or self.last_tokens
            done = max(step - self.start_step, 1)
            eta = (now - self.t0) / done * max(total - step, 0) if total else None
            record = {"step": step, "max_steps": total, "epoch": round(state.epoch or 0.0, 4),
                      "loss": logs["loss"], "learning_rate": logs.get("learning_rate"),
                      "grad_norm": logs.get("grad_norm"), "num_tokens": tokens or None,
                      "tokens_per_s": round(tok_s, 1) if tok_s else None,
                      "elapsed_s": round(now - self.t0, 2), "eta_s": round(eta, 1) if eta is not None else None}
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            eta_txt = f"{eta:.0f}s" if eta is not None else "?"
            tps = f"{tok_s:.0f}" if tok_s else "?"
            if self.tty:
                width = 30
                filled = int(width * step / total) if total else 0
                sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {step}/{total} "
                                 f"loss {logs['loss']:.4f} {tps} tok/s ETA {eta_txt}   ")
                sys.stderr.flush()
            else:
                print(f"train step {step}/{total} loss {logs['loss']:.4f} tok/s {tps} eta {eta_txt}", flush=True)

        def on_train_end(self, args, state, control, **kw):
            if self.tty and state.is_world_process_zero:
                sys.stderr.write("\n")

    return ProgressCallback()


def varlen_attention_available() -> str | None:
    """Name of a varlen attention kernel usable for padding-free packing, or None."""
    import importlib
    import inspect

    import torch

    if not torch.cuda.is_available():
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn

        if "enable_gqa" in inspect.signature(varlen_attn).parameters:
            return "torch.varlen_attn"
    except ImportError:
        pass
    for module in ("flash_attn", "xformers.ops"):
        try:
            importlib.import_module(module)
            return module
        except Exception:  # broken builds raise more than ImportError
            continue
    return None


def packing_strategy(cfg: BuildConfig, varlen_kernel: str | None) -> str:
    if not cfg.train.packing:
        return "off"
    if cfg.train.packing_strategy != "auto":
        return cfg.train.packing_strategy
    return "padding_free" if varlen_kernel else "dense_rows"


def adapter_base_path(run_dir: Path) -> Path:
    """The base model an adapter was trained on (a relative record is relative to the run folder)."""
    adapter = run_dir / ADAPTER_DIR
    record = adapter / "base_model.json"
    if not record.exists():
        raise TrainError(f"{record}: missing; run `invoke train` first")
    path = Path(json.loads(record.read_text())["path"])
    path = path if path.is_absolute() else run_dir / path
    if not (path / "config.json").exists():
        raise TrainError(f"{path}: the adapter's base model is not there (see {record})")
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpt_root = run_dir / CHECKPOINTS_DIR
    candidates = [p for p in ckpt_root.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(candidates, key=lambda p: int(p.name.split("-")[-1]), default=None)


def plot_loss(log_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (response tokens)")
    ax.set_title("bhasha-build training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_png)


def build_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    from .chat import row_to_training_example

    return Dataset.from_list([row_to_training_example(r) for r in rows])


def make_sft_config(cfg: BuildConfig, run_dir: Path, max_steps: int | None = None):
    import torch
    from trl import SFTConfig

    dtype = _compute_dtype(cfg)
    on_gpu = torch.cuda.is_available()
    ddp: dict[str, Any] = {}
    if world_size() > 1:
        # Every LoRA weight gets a gradient each step, so DDP need not search for unused ones; reentrant
        # checkpointing and DDP's gradient hooks don't mix, the non-reentrant kind does.
        ddp = {"ddp_find_unused_parameters": False, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    return SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
        max_length=cfg.model.max_seq_length,  # TRL's default is 1024
        packing=cfg.train.packing,
        completion_only_loss=True,
        per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.grad_accum,
        learning_rate=cfg.train.learning_rate,
        lr_scheduler_type=cfg.train.lr_scheduler,
        warmup_steps=cfg.train.warmup_steps,
        weight_decay=cfg.train.weight_decay,
        max_steps=cfg.train.max_steps if max_steps is None else max_steps,
        num_train_epochs=cfg.train.epochs,
        optim=cfg.train.optim,
        save_strategy="steps",
        save_steps=cfg.train.save_steps,
        save_total_limit=cfg.train.save_total_limit,
        logging_steps=cfg.train.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        gradient_checkpointing=cfg.train.gradient_checkpointing and cfg.train.backend == "hf",
        report_to=[],
        disable_tqdm=True,
        dataset_num_proc=1,
        dataloader_num_workers=0,
        use_cpu=not on_gpu,
        include_num_input_tokens_seen="non_padding",  # useful tokens, for tokens/s in train_log.jsonl
        **ddp,
    )


def train(cfg: BuildConfig, run_dir: Path, resume: bool = False, stop_after_steps: int | None = None,
          extra_callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train LoRA adapters on runs/<run>/data/train.jsonl → runs/<run>/adapter/.

    stop_after_steps interrupts the run after that many optimizer steps (tests of resume).
    """
    import torch
    from transformers import TrainerCallback, set_seed

    from .data import check_trainable, load_rows

    run_dir = Path(run_dir)
    train_file = run_dir / "data" / "train.jsonl"
    if not train_file.exists():
        raise TrainError(f"{train_file}: no training split; run `invoke data` first")
    rows = load_rows(train_file)
    if not rows:
        raise TrainError(f"{train_file}: no rows to train on")
    model_dir = resolve_model_path(cfg, run_dir)
    preflight = vram_preflight(cfg, model_dir) if torch.cuda.is_available() or cfg.train.gpu_memory_gib else {}
    set_seed(cfg.seed)

    model, tokenizer = (load_unsloth if cfg.train.backend == "unsloth" else load_hf)(cfg, model_dir)
    for row in rows:
        check_trainable(tokenizer, row)
    dataset = build_dataset(rows)

    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise TrainError(f"{run_dir / CHECKPOINTS_DIR}: nothing to resume from")
    log_path = run_dir / TRAIN_LOG
    main_proc = is_main_process()  # only global rank 0 writes the run folder; other ranks just read it
    if main_proc and ckpt is None:
        shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
        log_path.unlink(missing_ok=True)
    elif main_proc:  # drop log lines past the checkpoint so the curve stays continuous
        state = json.loads((ckpt / "trainer_state.json").read_text())
        keep = [ln for ln in (log_path.read_text().splitlines() if log_path.exists() else [])
                if ln.strip() and json.loads(ln)["step"] <= state["global_step"]]
        log_path.write_text("".join(ln + "\n" for ln in keep))

    from trl import SFTTrainer

    callbacks = [_progress_callback(log_path, cfg.train.max_steps if cfg.train.max_steps > 0 else None)]
    if stop_after_steps:
        class StopAfter(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step >= stop_after_steps:
                    control.should_save = True
                    control.should_training_stop = True

        callbacks.append(StopAfter())
    callbacks += extra_callbacks or []

    trainer = _trainer_class(SFTTrainer)(
        model=model,
        args=make_sft_config(cfg, run_dir),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    varlen_kernel = varlen_attention_available()  # probed once: it imports optional kernels
    strategy = packing_strategy(cfg, varlen_kernel)
    if strategy == "dense_rows":
        # Rows are already bin-packed by TRL; collate them as dense padded rows, not one flat sequence.
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                                                padding_free=False)
        trainer.padding_free = False
    for cb in list(trainer.callback_handler.callbacks):  # our callback prints progress instead
        if type(cb).__name__ in ("PrinterCallback", "ProgressCallback") and cb is not callbacks[0]:
            trainer.remove_callback(cb)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    seconds = time.monotonic() - t0
    state = trainer.state
    summary: dict[str, Any] = {
        "backend": cfg.train.backend,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "resumed_from": ckpt.name if ckpt else None,
        "train_loss": round(float(result.training_loss), 5) if not math.isnan(result.training_loss) else None,
        "seconds": round(seconds, 2),
        "num_tokens": state.num_input_tokens_seen or None,
        "optimizer": type(trainer.optimizer).__name__ if trainer.optimizer else None,
        "optim_requested": cfg.train.optim,
        "packing_strategy": strategy,
        "varlen_kernel": varlen_kernel,
        "optim_used": trainer.args.optim.value if hasattr(trainer.args.optim, "value") else str(trainer.args.optim),
        "preflight": preflight,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "distributed": distributed_info(cfg),
    }
    if not main_proc:  # rank 0 may still be appending the last log line: the summary is rank 0's to make
        return summary
    logged = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()] if log_path.exists() else []
    if logged:
        summary["final_logged_loss"] = logged[-1]["loss"]
        tps = [r["tokens_per_s"] for r in logged if r.get("tokens_per_s")]
        summary["tokens_per_s_median"] = sorted(tps)[len(tps) // 2] if tps else None
    if torch.cuda.is_available():
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    if stop_after_steps and state.global_step < (state.max_steps or 0):
        summary["interrupted"] = True
        return summary

    # Adapter written to a temp folder then renamed: no half-written adapter ever looks complete.
    with atomic_dir(run_dir / ADAPTER_DIR) as tmp:
        trainer.model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        # A base inside the run folder (the tiny model) is recorded relative to it, so a run folder
        # trained on one machine (a GPU box) exports and evaluates on another.
        recorded = model_dir.relative_to(run_dir) if model_dir.is_relative_to(run_dir) else model_dir
        (tmp / "base_model.json").write_text(json.dumps({"path": str(recorded), "name": cfg.model.name}))
    if log_path.exists():
        plot_loss(log_path, run_dir / "loss.png")
    return summary
