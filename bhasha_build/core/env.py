"""Process environment defaults, set once when the package is imported (`bhasha_build/__init__.py`).

The appliance never reaches a model hub and sends no telemetry; the user's own settings win
(`setdefault`). These must be in place before transformers / huggingface_hub / unsloth are imported,
which is why the package's `__init__` applies them and nothing else does.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "UNSLOTH_DISABLE_STATISTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # llama.cpp's OpenMP threads spin between operations by default; on a busy few-core box (other
    # jobs, the trainer, CI neighbours) a spinning thread holds the core its partner needs. Measured on
    # the 2-core VM under load ~13: the real 0.5B answered 99+20 tokens in 153 s spinning, 7 s passive.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
