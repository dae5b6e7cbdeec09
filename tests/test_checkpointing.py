"""Partial activation checkpointing (core/checkpointing.py) on a tiny Qwen2 on CPU: exactly the pinned
layers recompute in backward, the layout survives what Unsloth's trainer writes to the flags, and the
loss and gradients are those of full checkpointing."""

from __future__ import annotations

from typing import Any

import pytest

from bhasha_build.core import checkpointing


def _tiny_qwen(layers: int = 4, seed: int = 0) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                         num_attention_heads=4, num_key_value_heads=2))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _step(model: Any) -> tuple[list[int], float, dict[str, Any]]:
    """One forward + backward; (attention calls per layer, loss, gradients). A checkpointed layer runs
    its attention twice: once in forward, once when backward recomputes it (a pre-hook: torch's
    non-reentrant recompute stops early, once the tensors backward needs are back)."""
    import torch

    calls = [0] * len(model.model.layers)
    hooks = [layer.self_attn.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, layer in enumerate(model.model.layers)]
    model.train()
    model.zero_grad(set_to_none=True)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    for hook in hooks:
        hook.remove()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return calls, float(loss.detach()), grads


def test_pinned_layers_recompute_and_the_others_do_not() -> None:
    model = _tiny_qwen(4)
    assert _step(model)[0] == [2, 2, 2, 2]  # every layer checkpointed as enabled
    assert checkpointing.pin(model, 3) == [True, True, True, False]
    assert _step(model)[0] == [2, 2, 2, 1]
    checkpointing.pin(model, 0)
    assert _step(model)[0] == [1, 1, 1, 1]
    checkpointing.pin(model, 1)
    assert _step(model)[0] == [2, 1, 1, 1]
    assert checkpointing.pinned_layout(model) == [True, False, False, False]


def test_the_layout_survives_unsloths_rewrites_of_every_flag_and_unpin_hands_them_back() -> None:
    """Unsloth's for_training and its patched train() set gradient_checkpointing = True on every module
    before each step; a pinned layer keeps its own value and records the write."""
    model = _tiny_qwen(4)
    checkpointing.pin(model, 2)
    for module in model.modules():  # what Unsloth's switch_training_mode does
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = True
    model.train()
    assert [m.gradient_checkpointing for m in model.model.layers] == [True, True, False, False]
    assert _step(model)[0] == [2, 2, 1, 1]
    checkpointing.unpin(model)
    assert [m.gradient_checkpointing for m in model.model.layers] == [True] * 4  # the last write wins again
    assert _step(model)[0] == [2, 2, 2, 2]
    other = _tiny_qwen(2)  # the class change leaves unpinned models of the class as they were
    other.gradient_checkpointing_disable()
    assert _step(other)[0] == [1, 1]


@pytest.mark.parametrize("pinned", [0, 2, 4])
def test_partial_checkpointing_gives_the_loss_and_gradients_of_full_checkpointing(pinned: int) -> None:
    import torch

    full_calls, full_loss, full_grads = _step(_tiny_qwen(4, seed=5))
    assert full_calls == [2, 2, 2, 2]
    model = _tiny_qwen(4, seed=5)
    checkpointing.pin(model, pinned)
    calls, loss, grads = _step(model)
    assert calls == [2] * pinned + [1] * (4 - pinned)
    assert loss == pytest.approx(full_loss, rel=1e-6, abs=1e-7)
    assert grads.keys() == full_grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_layer_without_a_checkpoint_function_gets_torchs() -> None:
    model = _tiny_qwen(3)
    model.gradient_checkpointing_disable()
    for layer in model.model.layers:
        layer.__dict__.pop("_gradient_checkpointing_func", None)
    checkpointing.pin(model, 2)
    assert _step(model)[0] == [2, 2, 1]


@pytest.mark.slow
def test_the_probed_layout_holds_inside_unsloths_trainer(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The train stage on the Unsloth backend (its CPU path): a layout of 1 checkpointed layer, set as the
    probe sets it, is what every training step runs, though Unsloth's for_training re-arms every layer
    before each step."""
    from conftest import tiny_config
    from transformers import TrainerCallback

    from bhasha_build.stages import pipeline
    from bhasha_build.stages import train as train_stage

    cfg = tiny_config(tmp_path, "pin", ["train.max_steps=3", "train.save_steps=100", "train.logging_steps=1",
                                        "train.gradient_checkpointing=true", "model.tiny.pretrain_steps=0"])
    pipeline.run_data(cfg)
    probe = train_stage.choose_micro_batch

    def probe_then_one_layer(cfg: Any, model: Any, make_trainer: Any = None) -> tuple[Any, dict[str, Any]]:
        chosen, record = probe(cfg, model, make_trainer)
        train_stage.set_checkpointing(model, 1)  # what a probe that chose 1 of the layers leaves
        return chosen, {**record, "mode": "probed", "chosen": {**record.get("chosen", {}), "checkpointed_layers": 1}}

    monkeypatch.setattr(train_stage, "choose_micro_batch", probe_then_one_layer)
    per_step: list[list[int]] = []

    class CountRecompute(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            from unsloth import FastLanguageModel

            # Unsloth re-arming every layer, as its GPU training path did (a truthy flag on every module)
            FastLanguageModel.for_training(model, use_gradient_checkpointing="unsloth")
            flags = [m.__dict__.get("_bhasha_checkpoint_written") for m in train_stage.decoder_layers(model)]
            assert flags and all(flags), flags  # it did write every layer's flag
            layers = train_stage.decoder_layers(model)
            self.calls = [0] * len(layers)
            self.hooks = [layer.self_attn.register_forward_pre_hook(
                lambda *_, i=i: self.calls.__setitem__(i, self.calls[i] + 1)) for i, layer in enumerate(layers)]

        def on_step_end(self, args, state, control, **kw):
            for hook in self.hooks:
                hook.remove()
            per_step.append(self.calls)

    summary = train_stage.train(cfg, cfg.layout, extra_callbacks=[CountRecompute()])
    assert summary["global_step"] == 3 and summary["micro_batch"]["chosen"]["checkpointed_layers"] == 1
    assert len(per_step) == 3
    micro_steps = cfg.train.grad_accum  # forward passes per optimizer step
    for calls in per_step:
        assert calls == [2 * micro_steps] + [micro_steps] * (len(calls) - 1), per_step
