"""Train stage: LoRA/QLoRA fine-tuning on the ChatML pairs of a run, response-only loss.

Knobs (section.key — what it does):
  model.name             base model: "tiny" (built with the data), a local folder, or an HF cache id
  model.max_seq_length   packed row length and truncation limit (tokens)
  model.load_in_4bit     QLoRA: 4-bit NF4 base weights (Unsloth / bitsandbytes; CUDA only for hf)
  model.dtype            compute dtype: auto (bf16 on CUDA if supported, else fp16; fp32 on CPU) or fixed
  lora.r / lora.alpha / lora.dropout / lora.target_modules   the adapter (q,k,v,o,gate,up,down)
  train.backend          unsloth (default; its CPU backend without a GPU) | hf (transformers + peft)
  train.max_steps        optimizer steps; -1 runs train.epochs epochs
  train.epochs           epochs when max_steps is -1
  train.learning_rate / train.lr_scheduler / train.warmup_steps / train.weight_decay
  train.batch_size       rows per device per micro-step; effective = batch_size x grad_accum x GPUs
  train.grad_accum       micro-steps per optimizer step
  train.optim            TRL/transformers optimizer name (paged_adamw_8bit on the GPU profiles)
  train.packing          bin-pack short rows into max_seq_length rows (TRL best-fit decreasing)
  train.packing_strategy auto | padding_free | dense_rows (below)
  train.gradient_checkpointing   Unsloth's offloaded checkpointing / HF's non-reentrant one
  train.batch_size = "auto" / train.gradient_checkpointing = "auto"   micro-batch and per-layer checkpointing
                         chosen by timing real optimizer steps of this trainer (stages/probe.py)
  train.save_steps / train.save_total_limit   checkpoints for --resume
  train.logging_steps    train_log.jsonl cadence
  train.gpu_memory_gib   card size for the VRAM preflight (core/vram.py); None = detect
  train.dataset_num_proc processes tokenizing the train split (dataset_workers): "auto" = min(8, cores // 2)
                         on a GPU without packing, 1 on the CPU and whenever packing (TRL/Unsloth pack in
                         the same map call, per process shard: more would change the packed rows)
  seed                   model init of LoRA, data order, sampling
Outputs (core/layout.py): adapter/ (+ base_model.json), checkpoints/, train_log.jsonl, loss.png.

Backends: both train on TRL's conversational prompt-completion rows from core/chat.py, so the loss
falls on the assistant reply only (completion_only_loss).
  unsloth  FastLanguageModel.from_pretrained(max_seq_length, dtype, load_in_4bit) + get_peft_model(...,
           use_gradient_checkpointing="unsloth") + TRL SFTTrainer.
  hf       transformers + peft (+ bitsandbytes 4-bit on CUDA) + TRL SFTTrainer; same config.
Packing strategies:
  padding_free  flattens a batch into one sequence with per-example boundaries: exact isolation, and
                fast only with a varlen attention kernel (torch>=2.12 varlen_attn, flash-attn,
                xformers). Without one, Unsloth runs attention once per example: launch-bound.
  dense_rows    trains each packed row as one dense causal sequence: an example may attend to the
                whole examples packed before it in its row (the classic packing trade-off), at the
                speed of dense 2048-token rows on any kernel.
  auto          padding_free when a varlen kernel is available, else dense_rows (recorded).

Resume: `--resume` continues from the newest checkpoint with step count, optimizer, scheduler and
data order intact — only when the stage's inputs (data, base model, config) are those the
checkpoints were started on (checkpoints/bhasha_inputs.json), unless --force.

Under torchrun (stages/launch.py) every rank trains, but only global rank 0 writes train_log.jsonl,
loss.png and adapter/; checkpoints/ is the Trainer's (rank 0, plus one rng_state per rank).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bhasha_build.core import dist, models
from bhasha_build.core.clock import PhaseClock
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_dir, atomic_write_json, atomic_write_text, save_figure
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.vram import vram_preflight
from bhasha_build.stages.probe import choose_micro_batch, decoder_layers, record_trained, set_checkpointing

__all__ = ["choose_micro_batch", "decoder_layers", "run", "set_checkpointing", "train"]  # + the probe's, re-exported

INPUTS_RECORD = "bhasha_inputs.json"  # inside checkpoints/: the input key the checkpoints were made on


class TrainError(BhashaError):
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
# The stage


def run(cfg: BuildConfig, layout: RunLayout, resume: bool = False, force: bool = False,
        inputs_sha256: str | None = None, **_: Any) -> dict[str, Any]:
    return train(cfg, layout, resume=resume, force=force, inputs_sha256=inputs_sha256)


def train(cfg: BuildConfig, layout: RunLayout, resume: bool = False, force: bool = False,
          inputs_sha256: str | None = None, stop_after_steps: int | None = None,
          extra_callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train LoRA adapters on the run's train split → adapter/ (the module docstring lists the knobs).

    stop_after_steps interrupts the run after that many optimizer steps (tests of resume).
    """
    from transformers import set_seed

    clock = PhaseClock()  # where the stage's wall time goes besides the steps (summary "phases_s")
    rows = training_rows(layout)
    model_dir = models.resolve_base_model(cfg, layout)
    preflight = preflight_if_gpu(cfg, model_dir)
    set_seed(cfg.seed)
    clock.mark("rows_and_preflight")
    model, tokenizer = (load_unsloth if cfg.train.backend == "unsloth" else load_hf)(cfg, model_dir)
    clock.mark("load_model")
    dataset = build_dataset(rows, tokenizer)
    clock.mark("build_dataset")
    cfg, micro_batch = choose_micro_batch(  # stages/probe.py: times optimizer steps of this trainer
        cfg, model, lambda probe_cfg: probe_trainer(probe_cfg, layout, model, tokenizer, dataset))
    clock.mark("probe")
    ckpt = start_or_resume(layout, resume, force, inputs_sha256)
    callbacks = list(extra_callbacks or [])
    trainer, packing = build_trainer(cfg, layout, model, tokenizer, dataset, stop_after_steps, callbacks,
                                     checkpointing_set=micro_batch["mode"] != "fixed")
    clock.mark("build_trainer")  # TRL's tokenize + pack of the whole split
    result, seconds = fit(trainer, ckpt)
    clock.mark("fit")
    summary = summarize(cfg, layout, trainer, result, seconds, ckpt, packing, preflight)
    summary["micro_batch"] = record_trained(micro_batch, summary)  # the probe's step tok/s beside the trained
    summary["phases_s"] = clock.phases  # (the same dict: save_adapter's mark below lands in it too)
    if stop_after_steps and trainer.state.global_step < (trainer.state.max_steps or 0):
        summary["interrupted"] = True
    if not dist.is_main_process() or summary.get("interrupted"):
        return summary
    save_adapter(cfg, layout, trainer.model, tokenizer, model_dir)
    if layout.train_log.exists():
        plot_loss(layout.train_log, layout.loss_plot)
    clock.mark("save_adapter")
    return summary


# ----------------------------------------------------------------------------------------------
# Steps of train(), in order


def training_rows(layout: RunLayout) -> list[dict[str, Any]]:
    from bhasha_build.stages.data import load_rows

    if not layout.train_split.exists():
        raise TrainError(f"{layout.train_split}: no training split; run `invoke data` first")
    rows = load_rows(layout.train_split)
    if not rows:
        raise TrainError(f"{layout.train_split}: no rows to train on")
    return rows


def preflight_if_gpu(cfg: BuildConfig, model_dir: Path) -> dict[str, Any]:
    import torch

    return vram_preflight(cfg, model_dir) if torch.cuda.is_available() or cfg.train.gpu_memory_gib else {}


def build_dataset(rows: list[dict[str, Any]], tokenizer: Any):
    """TRL prompt-completion rows; every row must leave trainable reply tokens (data.check_trainable)."""
    from datasets import Dataset

    from bhasha_build.core.chat import row_to_training_example
    from bhasha_build.stages.data import check_trainable

    for row in rows:
        check_trainable(tokenizer, row)
    return Dataset.from_list([row_to_training_example(r) for r in rows])


def start_or_resume(layout: RunLayout, resume: bool, force: bool, inputs_sha256: str | None) -> Path | None:
    """The checkpoint to resume from (None: a fresh start, which clears checkpoints and the log).

    A resume must continue on the inputs the checkpoints were started on, unless forced; a torn last
    line of train_log.jsonl (a kill mid-write) is dropped with a warning."""
    ckpt = latest_checkpoint(layout) if resume else None
    if resume and ckpt is None:
        raise TrainError(f"{layout.checkpoints}: nothing to resume from")
    if not dist.is_main_process():  # only global rank 0 writes the run folder; other ranks just read it
        return ckpt
    record = layout.checkpoints / INPUTS_RECORD
    if ckpt is None:
        shutil.rmtree(layout.checkpoints, ignore_errors=True)
        layout.train_log.unlink(missing_ok=True)
        if inputs_sha256:
            atomic_write_json(record, {"inputs_sha256": inputs_sha256})
        return None
    started_on = json.loads(record.read_text()).get("inputs_sha256") if record.exists() else None
    if inputs_sha256 and started_on != inputs_sha256 and not force:
        raise TrainError(f"{layout.checkpoints}: the checkpoints were made on other inputs (data, base model or "
                         f"train config changed since: {started_on} != {inputs_sha256}); train afresh without "
                         "--resume, or pass --force to resume anyway")
    trim_log(layout.train_log, json.loads((ckpt / "trainer_state.json").read_text())["global_step"])
    return ckpt


def trim_log(log_path: Path, last_step: int) -> None:
    """Keep log lines up to the checkpoint's step, so the curve stays continuous after a resume."""
    keep = []
    lines = log_path.read_text(encoding="utf-8").split("\n") if log_path.exists() else []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            print(f"warning: {log_path}:{no}: torn line dropped (the run was killed mid-write)", file=sys.stderr)
            continue
        if record["step"] <= last_step:
            keep.append(line)
    atomic_write_text(log_path, "".join(ln + "\n" for ln in keep))


def build_trainer(cfg: BuildConfig, layout: RunLayout, model: Any, tokenizer: Any, dataset: Any,
                  stop_after_steps: int | None, extra_callbacks: list[Any] | None,
                  checkpointing_set: bool = False) -> tuple[Any, dict[str, Any]]:
    """TRL SFTTrainer with our progress callback and the packing strategy; (trainer, packing facts).
    checkpointing_set: the layers' checkpointing was chosen per layer (choose_micro_batch): the
    Trainer must not switch it on for every layer at train start."""
    from transformers import TrainerCallback

    callbacks = [_progress_callback(layout.train_log, cfg.train.max_steps if cfg.train.max_steps > 0 else None)]
    if stop_after_steps:
        class StopAfter(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step >= stop_after_steps:
                    control.should_save = True
                    control.should_training_stop = True

        callbacks.append(StopAfter())
    callbacks += extra_callbacks or []
    args = make_sft_config(cfg, layout, checkpointing_set=checkpointing_set)
    trainer, packing = sft_trainer(cfg, args, model, tokenizer, dataset, callbacks)
    for cb in list(trainer.callback_handler.callbacks):  # our callback prints progress instead
        if type(cb).__name__ in ("PrinterCallback", "ProgressCallback") and cb is not callbacks[0]:
            trainer.remove_callback(cb)
    return trainer, packing


PROBE_ROWS = 16  # rows of the train split the probe's trainer is built on (its rows are synthetic)


def probe_trainer(cfg: BuildConfig, layout: RunLayout, model: Any, tokenizer: Any, dataset: Any) -> Any:
    """The trainer whose optimizer steps the probe times (stages/probe.py): built as build_trainer builds
    training's (SFTConfig, trainer class, collator, optimizer settings), on the first PROBE_ROWS rows (TRL
    prepares only those) and a throw-away output folder; no callbacks, it never runs train()."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bhasha-probe-") as tmp:  # Trainer() makes its output folder
        args = make_sft_config(cfg, layout, checkpointing_set=True, output_dir=Path(tmp))
        trainer, _ = sft_trainer(cfg, args, model, tokenizer, dataset.select(range(min(len(dataset), PROBE_ROWS))),
                                 [])
    return trainer


def sft_trainer(cfg: BuildConfig, args: Any, model: Any, tokenizer: Any, dataset: Any,
                callbacks: list[Any]) -> tuple[Any, dict[str, Any]]:
    """The SFTTrainer class for this device (_trainer_class) with the packing strategy's collator;
    (trainer, packing facts). Training and the probe both build theirs here."""
    from trl import SFTTrainer

    trainer = _trainer_class(SFTTrainer)(model=model, args=args, train_dataset=dataset,
                                         processing_class=tokenizer, callbacks=callbacks)
    varlen_kernel = varlen_attention_available()  # probed once: it imports optional kernels
    strategy = packing_strategy(cfg, varlen_kernel)
    if strategy == "dense_rows":
        # Rows are already bin-packed by TRL; collate them as dense padded rows, not one flat sequence.
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                                                padding_free=False)
        trainer.padding_free = False
    return trainer, {"packing_strategy": strategy, "varlen_kernel": varlen_kernel}


def fit(trainer: Any, ckpt: Path | None) -> tuple[Any, float]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    return result, time.monotonic() - t0


def summarize(cfg: BuildConfig, layout: RunLayout, trainer: Any, result: Any, seconds: float, ckpt: Path | None,
              packing: dict[str, Any], preflight: dict[str, Any]) -> dict[str, Any]:
    """The train stage's record: steps, loss, speed, memory, optimizer, packing, process layout."""
    import torch

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
        **packing,
        "optim_used": trainer.args.optim.value if hasattr(trainer.args.optim, "value") else str(trainer.args.optim),
        "preflight": preflight,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "distributed": dist.distributed_info(cfg),
    }
    if not dist.is_main_process():  # rank 0 may still be appending the last log line: the summary is rank 0's
        return summary
    logged = read_log(layout.train_log)
    if logged:
        summary["final_logged_loss"] = logged[-1]["loss"]
        tps = [r["tokens_per_s"] for r in logged if r.get("tokens_per_s")]
        summary["tokens_per_s_median"] = sorted(tps)[len(tps) // 2] if tps else None
    if torch.cuda.is_available():
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return summary


def read_log(log_path: Path, skip_torn: bool = False) -> list[dict[str, Any]]:
    """train_log.jsonl's records; `skip_torn`: leave out lines that are not JSON (a kill mid-write)
    instead of raising, for readers that must not fail (the morning report)."""
    if not log_path.exists():
        return []
    records = []
    for line in log_path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if not skip_torn:
                raise
    return records


def save_adapter(cfg: BuildConfig, layout: RunLayout, model: Any, tokenizer: Any, model_dir: Path) -> None:
    """Adapter + tokenizer + base_model.json, built in a temp folder then renamed: never half-written."""
    with atomic_dir(layout.adapter) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        models.record_adapter_base(layout, tmp, model_dir, cfg.model.name)


def plot_loss(log_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
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


# ----------------------------------------------------------------------------------------------
# Model loading and Trainer pieces


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
        kwargs["device_map"] = {"": dist.local_rank()}  # under DDP each rank holds its own copy on its card
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



def latest_checkpoint(layout: RunLayout) -> Path | None:
    ckpt_root = layout.checkpoints
    candidates = [p for p in ckpt_root.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(candidates, key=lambda p: int(p.name.split("-")[-1]), default=None)


def dataset_workers(cfg: BuildConfig, on_gpu: bool, cores: int | None = None) -> int:
    """train.dataset_num_proc resolved: a number as given; "auto" = min(8, cores // 2) on a GPU without
    packing (the trainer's dataset preparation on the GPU box: 59,401 rows at ~900 rows/s in one
    process), else 1 (the CPU and tests keep one process; packing must, config.TrainConfig says why)."""
    import os

    value = cfg.train.dataset_num_proc
    if value != "auto":
        return int(value)
    if not on_gpu or cfg.train.packing:
        return 1
    return max(1, min(8, (cores or os.cpu_count() or 1) // 2))


def make_sft_config(cfg: BuildConfig, layout: RunLayout, max_steps: int | None = None,
                    checkpointing_set: bool = False, output_dir: Path | None = None):
    import torch
    from trl import SFTConfig

    dtype = _compute_dtype(cfg)
    on_gpu = torch.cuda.is_available()
    ddp: dict[str, Any] = {}
    if dist.world_size() > 1:
        # Every LoRA weight gets a gradient each step, so DDP need not search for unused ones; reentrant
        # checkpointing and DDP's gradient hooks don't mix, the non-reentrant kind does.
        ddp = {"ddp_find_unused_parameters": False, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    return SFTConfig(
        output_dir=str(output_dir or layout.checkpoints),
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
        gradient_checkpointing=cfg.train.gradient_checkpointing and cfg.train.backend == "hf" and not checkpointing_set,
        report_to=[],
        disable_tqdm=True,
        dataset_num_proc=dataset_workers(cfg, on_gpu),
        dataloader_num_workers=0,
        use_cpu=not on_gpu,
        include_num_input_tokens_seen="non_padding",  # useful tokens, for tokens/s in train_log.jsonl
        **ddp,
    )


