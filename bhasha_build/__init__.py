"""bhasha-build: Indic OCR-correction pairs → fine-tuned model → q4_k_m GGUF → Ollama.

Packages, in import order (a package imports only the ones before it; tests/test_architecture.py
checks this and that there is no import cycle):
  core      foundations: config, run layout, errors, file writes, chat format, text rules, metrics,
            rank helpers, manifest, model loading, llama.cpp toolchain + GGUF access, Ollama client
  stages    the pipeline: data → train → export → eval → modelfile → sanity → deploy, the stage
            contract and runner (stages/pipeline.py), the torchrun entry, and `correct`
  features  user features on a user's own data: noise, ocr_pairs, noise_fit
  tools     checks, benchmarks and the project's data builders: bench, bench_ddp, learning_signal,
            doctor, quality, natural_pairs, ...

Design: docs/design.md.
"""

from bhasha_build.core.env import apply_defaults as _apply_env_defaults
from bhasha_build.core.env import load_llama_first as _load_llama_first

__version__ = "0.1.0"

_apply_env_defaults()
_load_llama_first()  # only with BHASHA_LLAMA_FIRST=1 (core/env.py says why)
