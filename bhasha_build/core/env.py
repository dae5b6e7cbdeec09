"""Process environment defaults, set once when the package is imported (`bhasha_build/__init__.py`).

The appliance never reaches a model hub and sends no telemetry; the user's own settings win
(`setdefault`). These must be in place before transformers / huggingface_hub / unsloth are imported,
which is why the package's `__init__` applies them and nothing else does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

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


# A process that scores with a CUDA llama.cpp loads llama_cpp's shared libraries before any other extension
# module. Measured 2026-12-03 on the H200 (llama-cpp-python 0.3.36 built there with GGML_CUDA, the box's
# numpy 2.5.2): `import llama_cpp` first, then load + generate + logprobs on the GPU and on the CPU: fine;
# `import numpy` (or the project's core.gguf, which loads rapidfuzz) first, then the same load: SIGSEGV, every
# time, with layers on the GPU and without. The carried CPU build runs in either order. eval's llama.cpp
# workers and generation_check's child are started with it set (stages/evaluate.py, core/gguf.py).
LLAMA_FIRST = "BHASHA_LLAMA_FIRST"


def load_llama_first() -> None:
    """With BHASHA_LLAMA_FIRST=1, import llama_cpp now (the package's import is the first thing a spawned
    worker or a `-c` child runs), when it is installed."""
    if os.environ.get(LLAMA_FIRST) == "1":
        with contextlib.suppress(ImportError):
            import llama_cpp  # noqa: F401


@contextlib.contextmanager
def llama_first_in_children() -> Iterator[None]:
    """Processes started inside the block load llama_cpp first (they inherit BHASHA_LLAMA_FIRST=1)."""
    before = os.environ.get(LLAMA_FIRST)
    os.environ[LLAMA_FIRST] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LLAMA_FIRST, None)
        else:
            os.environ[LLAMA_FIRST] = before


# What libraries print that is not the project's: torch's _pytree registration warnings (torchao),
# torchao's optional kernels, transformers' and huggingface_hub's progress bars ("Writing model shards"
# for one shard) and advisories. The CLI shows them only with --verbose (tasks.py).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "DATASETS_VERBOSITY": "error"}
QUIET_LOGGERS = ("torch.utils._pytree", "torch", "torchao", "transformers", "huggingface_hub", "datasets",
                 "accelerate", "peft", "trl", "unsloth", "unsloth_zoo", "bitsandbytes", "filelock", "urllib3")


def quiet_libraries() -> None:
    """Keep a CLI's output to the project's own lines (before the libraries are imported: their
    progress bars read the environment once). Errors still show."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
