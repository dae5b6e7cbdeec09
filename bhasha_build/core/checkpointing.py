"""Partial activation checkpointing that holds inside Unsloth's trainer.

The micro-batch probe (stages/probe.py choose_micro_batch) may choose to checkpoint only the first k
decoder layers: their activations are recomputed in backward, the others keep theirs. transformers'
decoder layers (GradientCheckpointingLayer) read `self.gradient_checkpointing` at every call and then
run `self._gradient_checkpointing_func` (Unsloth's offloaded checkpoint once Unsloth armed the model),
so a per-layer flag is all it takes, as long as the flag stays put. It does not: Unsloth's
`for_training` writes its mode (`gradient_checkpointing = "unsloth"`, a truthy string) on every
module that has the flag, so a layout set by flags alone trained with every layer checkpointed (seen
on an H200, 2026-11-30: a 21-of-28 layout trained at the all-layers peak; the per-step re-apply did not
even find the layers then, their flags being strings, not booleans).

`pin(model, k)` makes the layout stick: the decoder-layer class gets a `gradient_checkpointing`
property that, for a pinned layer, returns the pinned value and ignores writes (recorded, and
returned again after `unpin`). The checkpoint function stays whatever the model was armed with
(Unsloth's offloaded one, or torch's non-reentrant checkpoint for a layer that has none). Nothing of
Unsloth or transformers is edited; a class is changed once, and layers that are not pinned behave as
before.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

_PIN = "_bhasha_checkpoint_pin"  # instance dict: the pinned flag of this layer
_WRITTEN = "_bhasha_checkpoint_written"  # instance dict: the last value written to the flag


def decoder_layers(model: Any) -> list[Any]:
    """The transformer blocks (modules carrying a gradient_checkpointing flag, the top model excluded).
    The flag may hold a string: Unsloth's for_training writes its mode ("unsloth") into it."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")
            and isinstance(getattr(m, "gradient_checkpointing", None), (bool, str))]


def _make_pinnable(cls: type) -> None:
    """Give the class a gradient_checkpointing property that pinned instances answer themselves."""
    if cls.__dict__.get("_bhasha_pinnable"):
        return
    previous = inspect.getattr_static(cls, "gradient_checkpointing", False)

    def get(self: Any) -> bool:
        state = self.__dict__
        if _PIN in state:
            return state[_PIN]
        if isinstance(previous, property):  # e.g. Unsloth's skip-aware flag
            return previous.fget(self)
        return state.get(_WRITTEN, state.get("gradient_checkpointing", previous))

    def set_(self: Any, value: bool) -> None:
        if isinstance(previous, property) and previous.fset is not None:
            previous.fset(self, value)
        self.__dict__[_WRITTEN] = value

    cls.gradient_checkpointing = property(get, set_)
    cls._bhasha_pinnable = True


def _reset_unsloth_offload_count() -> None:
    """Unsloth's smart offload learns the checkpointed-call count in its first pass (the last call is not
    offloaded); a new layout makes it count again, as Unsloth's own skip_checkpointing does."""
    try:
        import sys

        zoo = sys.modules.get("unsloth_zoo.gradient_checkpointing")
        if zoo is not None and getattr(zoo, "CURRENT_GC_INDEX", 1) == 0:
            zoo.FIRST_PASS = True
            zoo.LAST_GC_INDEX = 0
    except Exception:  # a changed Unsloth: the count only decides whether the last layer is offloaded
        pass


def pin(model: Any, checkpointed: int, layers: list[Any] | None = None) -> list[bool]:
    """Checkpoint exactly the first `checkpointed` decoder layers, the rest never, whatever is written to
    their flags later; returns the layout. A layer to checkpoint that has no checkpoint function (the
    model was not armed for it) gets torch's non-reentrant checkpoint."""
    import torch.utils.checkpoint

    layers = decoder_layers(model) if layers is None else layers
    layout = []
    for index, layer in enumerate(layers):
        _make_pinnable(type(layer))
        on = index < checkpointed
        if on and getattr(layer, "_gradient_checkpointing_func", None) is None:
            layer._gradient_checkpointing_func = functools.partial(torch.utils.checkpoint.checkpoint,
                                                                   use_reentrant=False)
        layer.__dict__[_PIN] = on
        layout.append(on)
    _reset_unsloth_offload_count()
    return layout


def unpin(model: Any) -> None:
    """Hand the flags back: each layer reads the last value written to it again."""
    for layer in model.modules():
        layer.__dict__.pop(_PIN, None)


def pinned_layout(model: Any) -> list[bool | None]:
    """Each decoder layer's pinned flag (None: not pinned)."""
    return [layer.__dict__.get(_PIN) for layer in decoder_layers(model)]
