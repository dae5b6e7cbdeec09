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
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
