"""The train stage's probe: settle train.batch_size = "auto" and train.gradient_checkpointing = "auto"
by timing real optimizer steps of the stage's own trainer on the card (stages/train.py calls it).

Knobs (section.key — what it does):
  train.batch_size = "auto"      probe the micro-batch among the divisors of train.effective_batch
                                 (grad_accum = effective / micro-batch, so the loss curve is the same)
  train.effective_batch          rows per optimizer step per device
  train.gradient_checkpointing = "auto"   also probe how many decoder layers to checkpoint: all, 3/4,
                                 then the fewest the budget holds (activations kept where memory allows,
                                 recomputed elsewhere)
  train.vram_budget_gib / train.gpu_memory_gib   the peak a layout may reach (core/vram.py vram_budget:
                                 0.875 x the card, 14 GiB on a 16 GB card; "auto": 0.875 x the detected one)
  model.max_seq_length           the probe's row length: every row full, the worst case for memory
Constants: WARMUP_STEPS (1) untimed and TIMED_STEPS (2) timed optimizer steps per layout; RETIME_WITHIN.

One probe step is one optimizer step as the Trainer's inner loop runs it, on the stage's own trainer
(built by stages/train.py `probe_trainer`: the same SFTConfig, trainer class, collator, optimizer and
loss path as training): grad_accum micro-batches of synthetic rows (random ids, the first quarter of each
row masked as a prompt) through the trainer's collator and its `training_step` (its compute_loss: TRL's
fused loss on the GPU, with its metrics), gradient clipping at train.max_grad_norm, `optimizer.step()`
(train.optim at train.learning_rate; its state is made on the first step and stays alive, so every
layout's peak includes it) and `zero_grad()`. Left out: the LR scheduler, logging and callbacks.
tokens/s = effective batch x max_seq_length / the mean timed step; peak = torch.cuda.max_memory_allocated
over the layout's steps. On 2026-12-02 (bench/RESULTS.md) a forward + backward probe over-rated the
trainer by 1.3-1.6x and ranked a layout first that trained slower than checkpointing every layer.

The climb (each trial over the budget, or out of memory, stops its climb):
  1. with every layer checkpointed (or as configured), from the largest micro-batch <= 8: up while it fits,
     down until one fits, then the one below the largest that fits (`micro_batch_climb`; smaller ones,
     slower at the same rows per optimizer step, are not timed);
  2. with checkpointing "auto", for the largest fitting micro-batch and the one below it, 3/4 of the layers
     are checkpointed; while a trial fits, the fewest checkpointed layers the budget holds on the line through
     the two fitting peaks that checkpoint fewest is tried next (`fewest_on_line`; the next quarter when a peak
     is unknown); at the first that does not fit, the count between it and the last that did which the budget
     holds, by the line through their peaks, is tried too (`layers_between`). The layout is pinned
     (core/checkpointing.py), so it holds inside Unsloth's trainer too.
  3. two layouts are timed once more and ranked by the faster of their two measurements (`retime_near_ties`):
     the fastest and a layout at its micro-batch that checkpoints fewer layers yet timed slower, else the two
     fastest when within RETIME_WITHIN (5 %) of each other.
The fastest fitting trial wins. Without CUDA nothing is measured: the largest divisor <= 8, all layers
checkpointed. Under torchrun every rank probes, the ranks agree on what fits and take rank 0's choice.

After probing, the trainable weights and the RNG states (torch, CUDA, Python, NumPy) are put back and
the probe's optimizer dropped (training makes its own), so training starts from the weights it would
have started from without a probe. The record (the manifest's stages.train.micro_batch) keeps every
trial, the chosen layout with its probed step tokens/s and peak, and after training (`record_trained`)
the trained tokens/s and peak beside them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bhasha_build.core import checkpointing, dist
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.vram import vram_budget

WARMUP_STEPS = 1  # untimed optimizer steps per layout (the first also makes the optimizer's state)
TIMED_STEPS = 2  # timed optimizer steps per layout
RETIME_WITHIN = 0.05  # the two fastest fitting layouts this close are timed once more (retime_near_ties)
PROMPT_SHARE = 0.25  # of each synthetic row masked out of the loss, as a prompt is


class ProbeError(BhashaError):
    """No layout fits (one line, with the budget)."""


def measures_here() -> bool:
    """Whether the probe measures on this machine: only on CUDA, where memory and speed are the card's.
    (Tests point this at the CPU to run the real steps there.)"""
    import torch

    return torch.cuda.is_available()


def choose_micro_batch(cfg: BuildConfig, model: Any,
                       make_trainer: Callable[[BuildConfig], Any] | None = None) -> tuple[BuildConfig, dict[str, Any]]:
    """The concrete config (batch_size, grad_accum, gradient_checkpointing; the layout pinned on `model`)
    and the record the manifest keeps. `make_trainer(cfg)` builds the trainer whose optimizer steps are
    timed (stages/train.py probe_trainer); it is called only when something is measured."""
    train_cfg = cfg.train
    if train_cfg.batch_size != "auto" and train_cfg.gradient_checkpointing != "auto":
        return cfg, {"mode": "fixed", "batch_size": train_cfg.batch_size, "grad_accum": train_cfg.grad_accum}
    effective = train_cfg.effective_batch or train_cfg.batch_size * train_cfg.grad_accum
    sizes = [b for b in range(1, effective + 1) if effective % b == 0]
    if train_cfg.batch_size != "auto":
        sizes = [train_cfg.batch_size]
    n_layers = len(decoder_layers(model))
    loaded_checkpointing(model)  # before any trainer is built
    full = n_layers if train_cfg.gradient_checkpointing else 0
    record: dict[str, Any] = {"mode": "probed", "effective_batch": effective, "decoder_layers": n_layers,
                              "candidates": []}
    if make_trainer is None or not measures_here():
        best = {"batch_size": sizes[default_index(sizes)], "checkpointed": full}
        record.update(mode="default (no CUDA: nothing to measure)")
    else:
        best = climb(cfg, model, make_trainer, sizes, full, record)
    checkpointed = set_checkpointing(model, best["checkpointed"], switchable=bool(train_cfg.gradient_checkpointing))
    any_checkpointed = checkpointed > 0 if n_layers else bool(train_cfg.gradient_checkpointing)
    chosen = {"batch_size": best["batch_size"], "grad_accum": effective // best["batch_size"],
              "gradient_checkpointing": any_checkpointed}
    record["chosen"] = {**chosen, "checkpointed_layers": checkpointed}
    if "tokens_per_s" in best:
        record["chosen"].update(probe_tokens_per_s=best["tokens_per_s"], probe_peak_gib=best["peak_gib"])
    print(f"micro-batch: {chosen['batch_size']} x grad_accum {chosen['grad_accum']}, activation checkpointing on "
          f"{checkpointed} of {n_layers} layers ({record['mode']}"
          + (f", {best['tokens_per_s']:.0f} tok/s per optimizer step" if "tokens_per_s" in best else "") + ")",
          flush=True)
    return cfg.model_copy(update={"train": train_cfg.model_copy(update=chosen)}), record


def climb(cfg: BuildConfig, model: Any, make_trainer: Callable[[BuildConfig], Any], sizes: list[int], full: int,
          record: dict[str, Any]) -> dict[str, Any]:
    """The measured climb of the module docstring; every trial lands in record["candidates"]. Returns the
    fastest trial that fits (rank 0's, under torchrun)."""
    train_cfg, effective = cfg.train, record["effective_batch"]
    n_layers = record["decoder_layers"]
    budget, source = vram_budget(cfg)
    record.update(budget_gib=round(budget, 2), budget_source=source,
                  measures=f"optimizer steps: {WARMUP_STEPS} warm-up + {TIMED_STEPS} timed per layout "
                           "(collate, forward + backward x grad_accum, clip, optimizer step, zero_grad)")
    t0 = time.monotonic()
    concrete = cfg.model_copy(update={"train": train_cfg.model_copy(
        update={"batch_size": sizes[-1], "grad_accum": effective // sizes[-1]})})
    with step_probe(lambda: make_trainer(concrete), model, cfg.model.max_seq_length, effective) as probe:
        record["optimizer"] = probe.optimizer_name

        def trial(b: int, checkpointed: int) -> bool:
            # what the model can do: recorded as run
            checkpointed = set_checkpointing(model, checkpointed, switchable=bool(train_cfg.gradient_checkpointing))
            done = [c for c in record["candidates"] if (c["batch_size"], c["checkpointed"]) == (b, checkpointed)]
            if done:  # a model loaded without checkpointing runs every layout as none: measured once
                return done[0]["fits"]
            result = {"batch_size": b, "checkpointed": checkpointed, **probe.measure(b)}
            fits = not result.get("oom") and (result["peak_gib"] is None or result["peak_gib"] <= budget)
            result["fits"] = dist.all_agree(fits)  # on every rank, or the ranks' climbs part ways
            record["candidates"].append(result)
            return result["fits"]

        fitting_sizes = micro_batch_climb(sizes, lambda b: trial(b, full))
        if train_cfg.gradient_checkpointing == "auto":
            quarters = sorted({n_layers * q // 4 for q in (3, 2, 1, 0)}, reverse=True)
            for b in fitting_sizes:  # (at most two: the largest that fits and the one below it)
                checkpointed = quarters[0]
                while True:
                    if not trial(b, checkpointed):
                        between = dist.from_main(layers_between(record["candidates"], b, checkpointed, budget))
                        if between >= 0:
                            trial(b, between)
                        break
                    fewer = dist.from_main(fewest_on_line(record["candidates"], b, budget))
                    if fewer < 0:  # no line (a peak unknown): the next quarter
                        fewer = next((q for q in quarters if q < checkpointed), -1)
                    if not 0 <= fewer < checkpointed:
                        break
                    checkpointed = fewer
        retime_near_ties(record["candidates"], probe, model, bool(train_cfg.gradient_checkpointing))
        record["probe_optimizer_steps"] = probe.steps
    record["probe_seconds"] = round(time.monotonic() - t0, 2)
    fitting = [i for i, c in enumerate(record["candidates"]) if c["fits"]]
    if not fitting:
        raise ProbeError(f"no micro-batch of {sizes} fits train.vram_budget_gib {budget:.1f} GiB at "
                         f"model.max_seq_length {cfg.model.max_seq_length}: lower the sequence length")
    return record["candidates"][dist.from_main(max(fitting, key=lambda i: record["candidates"][i]["tokens_per_s"]))]


def fewest_on_line(candidates: list[dict[str, Any]], batch: int, budget: float) -> int:
    """After two fitting trials at micro-batch `batch`: the fewest checkpointed layers the budget holds on the
    straight line through the peaks of the two that checkpoint fewest (0 when the line allows none); -1 without
    two such peaks (out of memory, no CUDA). Step 2 tries that count next and skips the quarters above it: at the
    same micro-batch fewer checkpointed layers do the same work with less recompute, so they are never slower
    (the probe's real runs: bench/h200-2026-12-04-e2e-real-1.5b-cuda.json, mb 8 / 16 from 28 to 0 layers,
    38.2-52.4k / 34.6-54.8k tok/s, each step faster). On that full card it times 6 layouts where the quarters
    timed 10 (45.9 s of the stage's probe)."""
    fitting = sorted((c for c in candidates if c["batch_size"] == batch and c["fits"]
                      and c.get("peak_gib") is not None), key=lambda c: c["checkpointed"])
    if len(fitting) < 2 or fitting[0]["checkpointed"] == fitting[1]["checkpointed"]:
        return -1
    layers = count_on_line(fitting[0], fitting[1], budget)
    return 0 if layers is None else max(0, layers)


def layers_between(candidates: list[dict[str, Any]], batch: int, over: int, budget: float) -> int:
    """After a climb step at micro-batch `batch` went over the budget with `over` layers checkpointed: the
    fewest checkpointed layers between it and the last fitting trial that the budget holds, on the straight
    line through the two peaks (every decoder layer keeps the same activations when not checkpointed);
    -1 when no count lies strictly between or a peak is unknown (out of memory, no CUDA). 2026-12-03 (H200,
    bs 8 x 2048, 14 GiB): 21 of 28 layers 9.8 GiB, 14 layers 17.8 GiB -> 18 layers, ~13.2 GiB."""
    at_batch = [c for c in candidates if c["batch_size"] == batch]
    above = next((c for c in at_batch if c["checkpointed"] == over), None)
    fitting = [c for c in at_batch if c["fits"] and c["checkpointed"] > over and c.get("peak_gib") is not None]
    if above is None or above.get("peak_gib") is None or not fitting:
        return -1
    fit = min(fitting, key=lambda c: c["checkpointed"])
    layers = count_on_line(fit, above, budget)
    return layers if layers is not None and over < layers < fit["checkpointed"] else -1


def count_on_line(fit: dict[str, Any], other: dict[str, Any], budget: float) -> int | None:
    """The fewest checkpointed layers the budget holds on the straight line through two trials' peaks, counted
    from `fit` (a fitting trial; may be below 0 when the budget holds more than every layer kept); None when the
    peak does not grow as fewer layers are checkpointed (fewest_on_line and layers_between both read it)."""
    per_layer = (fit["peak_gib"] - other["peak_gib"]) / (other["checkpointed"] - fit["checkpointed"])
    if per_layer <= 0:
        return None
    return fit["checkpointed"] - int((budget - fit["peak_gib"]) // per_layer)


def default_index(sizes: list[int]) -> int:
    """Where the micro-batch sizes (ascending) start: the largest <= 8 (the first when none is); also the
    micro-batch taken without a probe."""
    return max(i for i, b in enumerate(sizes) if b <= 8 or i == 0)


def micro_batch_climb(sizes: list[int], fits: Callable[[int], bool]) -> list[int]:
    """Step 1 of the climb: the micro-batches that fit, as far as step 2 needs them (the largest and the one
    below it). It starts at the largest size <= 8, climbs while a size fits and steps down while one does not,
    then times the size below the largest that fit; sizes below that are not timed, as they never win: at the
    same rows per optimizer step a smaller micro-batch only adds launches (on the H200 of 2026-12-04, real 1.5B,
    every layer checkpointed, mb 1 / 2 / 4 / 8 ran 4.5-8.0k / 8.8-13.8k / 14.9-26.5k / 26.9-34.4k tok/s in all six
    project runs, and mb 1 and 2 took 10-16 s of a 44-78 s probe). Returns the fitting sizes timed, ascending."""
    start = default_index(sizes)
    i = start
    while i >= 0 and not fits(sizes[i]):
        i -= 1
    if i < 0:
        return []
    largest = i
    if i == start:
        while largest + 1 < len(sizes) and fits(sizes[largest + 1]):
            largest += 1
    if largest > i:  # climbed: the two largest that fit are timed already
        return sizes[largest - 1:largest + 1]
    return [sizes[i - 1], sizes[i]] if i > 0 and fits(sizes[i - 1]) else [sizes[i]]


def retime_near_ties(candidates: list[dict[str, Any]], probe: Any, model: Any, switchable: bool) -> None:
    """Time two layouts once more when 2 timed steps cannot be trusted to order them, and keep the faster of
    each one's two measurements as its tokens/s (the first beside it, `retimed`):
    - *inverted*: at the fastest fitting layout's micro-batch, a fitting layout that checkpoints fewer layers
      (the same work, less recompute) timed slower. A slow measurement, not a slow layout: on the H200 of
      2026-12-04 (bench/h200-2026-12-04-speed-real-1.5b-repeats.json, full card, run 2) no checkpointing timed
      37.4k against 7 layers' 41.6k, was not chosen, and the 7 layers trained at 37.7k where the other runs'
      no-checkpointing trained at 46.9k and 48.4k. That layout is timed again beside the fastest.
    - *near tie*: the two fastest fitting layouts within RETIME_WITHIN of each other (2026-12-03, H200: 21 and 28
      of 28 layers checkpointed timed 34.1k and 34.2k; trained, 21 layers ran 35.2k-39.0k and 28 layers 34.7k).
    The faster of two measurements, not their mean: what slows a step here (the host, another process, a
    clock ramping up) only ever slows it, so the best run is the layout's speed (timeit's rule for repeats).
    Rank 0's pair under torchrun."""
    fitting = [i for i, c in enumerate(candidates) if c["fits"] and c.get("tokens_per_s")]
    ranked = sorted(fitting, key=lambda i: candidates[i]["tokens_per_s"], reverse=True)
    pair = (-1, -1)
    if ranked:
        best = candidates[ranked[0]]
        inverted = [i for i in ranked[1:] if candidates[i]["batch_size"] == best["batch_size"]
                    and candidates[i]["checkpointed"] < best["checkpointed"]]
        if inverted:
            pair = (ranked[0], inverted[0])
        elif len(ranked) > 1 and (candidates[ranked[1]]["tokens_per_s"]
                                  >= (1 - RETIME_WITHIN) * best["tokens_per_s"]):
            pair = (ranked[0], ranked[1])
    pair = (dist.from_main(pair[0]), dist.from_main(pair[1]))
    if pair[0] < 0:
        return
    for i in pair:
        trial = candidates[i]
        set_checkpointing(model, trial["checkpointed"], switchable=switchable)
        again = probe.measure(trial["batch_size"])
        if again.get("oom") or not again.get("tokens_per_s"):
            continue
        trial["first_tokens_per_s"] = trial["tokens_per_s"]
        trial["tokens_per_s"] = max(trial["tokens_per_s"], again["tokens_per_s"])
        trial["retimed"] = True


def record_trained(record: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The probe's record with what training then measured beside the probe's figures for the chosen
    layout: trained tokens/s (the median of train_log.jsonl's non-padding tokens/s) and peak."""
    chosen = record.get("chosen") or {}
    trained = {"tokens_per_s": summary.get("tokens_per_s_median"), "peak_gib": summary.get("peak_memory_gib")}
    if chosen.get("probe_tokens_per_s") and trained["tokens_per_s"]:
        trained["vs_probe_speed"] = round(trained["tokens_per_s"] / chosen["probe_tokens_per_s"], 3)
    if chosen.get("probe_peak_gib") and trained["peak_gib"]:
        trained["vs_probe_peak"] = round(trained["peak_gib"] / chosen["probe_peak_gib"], 3)
    return {**record, "trained": trained}


def decoder_layers(model: Any) -> list[Any]:
    """The transformer blocks (core/checkpointing.py)."""
    return checkpointing.decoder_layers(model)


def loaded_checkpointing(model: Any) -> tuple[list[Any], dict[int, bool]]:
    """(modules with a checkpointing flag, {id: flag on}) as first seen: the state the model was loaded with,
    kept on the model. choose_micro_batch takes it before the probe builds a trainer: the optimizer-step
    probe's two GPU runs found no layer on, where its forward + backward predecessor, which built no
    trainer, had found 21 of 28 armed. Whether the trainer's build (on the GPU path) or Unsloth's load left
    them off is not known: on the CPU the flags are on before and after the build."""
    # a flag is a bool, or the mode string Unsloth's for_training writes ("unsloth": truthy, armed)
    flagged = [m for m in model.modules() if isinstance(getattr(m, "gradient_checkpointing", None), (bool, str))]
    return flagged, model.__dict__.setdefault("_bhasha_loaded_checkpointing",
                                              {id(m): bool(m.gradient_checkpointing) for m in flagged})


def set_checkpointing(model: Any, checkpointed: int | bool, switchable: bool = False) -> int:
    """Checkpoint the first `checkpointed` decoder layers (True: every layer as loaded, False/0: none),
    pinned so that Unsloth's trainer cannot switch the others back on (core/checkpointing.py); returns
    how many layers are checkpointed now.

    `switchable` (the config asks for checkpointing: train.gradient_checkpointing true or "auto"): any
    layer may be switched on; one without a checkpoint function gets torch's (core/checkpointing.pin).
    Otherwise only layers flagged when first seen (the flags the model was loaded with, kept as the "on"
    state) can be. The first look is not proof of what the model can do: on an H200 (2026-12-02, the
    bench's project_16gb, Unsloth asked for "unsloth" checkpointing) no layer was flagged yet, every
    layout ran with none and the probe chose micro-batch 2 at 16.1k tok/s where bare Unsloth, all layers
    checkpointed at micro-batch 8, ran 36.8k."""
    flagged, loaded = loaded_checkpointing(model)
    layers = decoder_layers(model)
    count = len(layers) if checkpointed is True else int(checkpointed)
    armed = [switchable or loaded.get(id(m), False) for m in layers]
    count = min(count, armed.index(False) if False in armed else len(layers))
    checkpointing.pin(model, count, layers)
    partial = 0 < count < len(layers)
    for m in flagged:
        if m not in layers:  # the model-level flag would wrap every layer: off when only some layers checkpoint
            m.gradient_checkpointing = loaded[id(m)] and count > 0 and not partial
    return count


# ----------------------------------------------------------------------------------------------
# One real optimizer step, timed


class StepProbe:
    """Times optimizer steps of `trainer` on `model` (see the module docstring); `measure(b)` runs one
    layout's steps at micro-batch b. Made by `step_probe`, which puts the weights back afterwards."""

    def __init__(self, trainer: Any, model: Any, seq_len: int, effective_batch: int) -> None:
        import torch

        self.trainer, self.model, self.seq_len, self.effective = trainer, model, seq_len, effective_batch
        self.optimizer = trainer.optimizer or trainer.create_optimizer()
        self.optimizer_name = type(self.optimizer).__name__
        self.device = trainer.args.device
        self.vocab = model.get_input_embeddings().weight.shape[0]
        self.rows = torch.Generator().manual_seed(0)  # the synthetic rows' own generator: no global RNG drawn
        self.steps = 0  # optimizer steps run

    def measure(self, batch: int) -> dict[str, Any]:
        """One layout's warm-up and timed optimizer steps at micro-batch `batch`: tokens/s per optimizer step
        and the peak GiB (None off CUDA), or {"oom": True}."""
        import torch

        cuda = self.device.type == "cuda"
        examples = self._rows(batch)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        try:
            for _ in range(WARMUP_STEPS + TIMED_STEPS):
                self._sync()
                t0 = time.perf_counter()
                self.step(examples, self.effective // batch)
                self._sync()
                times.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError:
            self.model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.empty_cache()
            return {"oom": True}
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        step_s = sum(times[WARMUP_STEPS:]) / TIMED_STEPS
        if cuda:
            torch.cuda.empty_cache()
        return {"tokens_per_s": round(self.effective * self.seq_len / step_s, 1), "step_s": round(step_s, 4),
                "peak_gib": round(peak, 3) if peak is not None else None}

    def step(self, examples: list[dict[str, list[int]]], grad_accum: int) -> None:
        """One optimizer step as the Trainer's inner loop runs it: collate, training_step per micro-batch,
        clip, optimizer step, zero_grad."""
        trainer, model = self.trainer, self.model
        collated = [trainer.data_collator(examples) for _ in range(grad_accum)]
        batches, num_items = trainer.get_batch_samples(iter(collated), grad_accum, self.device)
        trainer.current_gradient_accumulation_steps = len(batches)
        for inputs in batches:
            trainer.training_step(model, inputs, num_items)
        if trainer.args.max_grad_norm and trainer.args.max_grad_norm > 0:
            trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
        self.optimizer.step()
        model.zero_grad()
        self.steps += 1

    def _rows(self, batch: int) -> list[dict[str, list[int]]]:
        import torch

        ids = torch.randint(0, self.vocab, (batch, self.seq_len), generator=self.rows)
        labels = ids.clone()
        labels[:, : int(self.seq_len * PROMPT_SHARE)] = -100
        return [{"input_ids": i.tolist(), "labels": lab.tolist()} for i, lab in zip(ids, labels, strict=True)]

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()


@contextmanager
def step_probe(make_trainer: Callable[[], Any], model: Any, seq_len: int, effective_batch: int
               ) -> Iterator[StepProbe]:
    """A StepProbe on the trainer `make_trainer()` builds; on leaving (also on an error) the trainable
    weights, the gradients and the RNG states are as they were on entering (building a Trainer re-seeds
    them too), and the probe's optimizer is dropped."""
    import torch

    saved = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
    rng = _rng_state()
    trainer = probe = None
    try:
        trainer = make_trainer()
        probe = StepProbe(trainer, model, seq_len, effective_batch)
        yield probe
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in saved:
                    p.copy_(saved[name].to(p.device))
        model.zero_grad(set_to_none=True)
        _set_rng_state(rng)
        if probe is not None:
            _drop_state(probe.optimizer)
        if trainer is not None:
            trainer.optimizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _drop_state(optimizer: Any) -> None:
    """Free the optimizer's state (bitsandbytes' paged optimizers also list their state buffers in a global
    page manager, which would keep them)."""
    buffers = {id(t) for state in optimizer.state.values() for t in state.values() if hasattr(t, "data_ptr")}
    optimizer.state.clear()
    manager = getattr(optimizer, "page_mng", None)
    if manager is not None and isinstance(getattr(manager, "paged_tensors", None), list):
        manager.paged_tensors[:] = [t for t in manager.paged_tensors if id(t) not in buffers]


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
