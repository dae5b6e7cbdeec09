#!/usr/bin/env bash
# Source on a GPU machine that has torch/transformers/peft but lacks the rest of the lock:
# installs the carried wheels ($WHEELS, default .whl/) into /tmp/site and sets the offline environment.
# The wheels (cp312, --no-deps, ~17 MiB): trl 1.15.0, datasets 4.8.5, dill, multiprocess,
# bitsandbytes 0.50.2 (only its cuda130 + cpu libraries kept), unsloth + unsloth_zoo 2026.10.9
# (unsloth's studio/ folder stripped), cut_cross_entropy, xxhash, tyro, msgspec, docstring_parser,
# typeguard, pydantic + pydantic_core + annotated-types + typing-inspection, rapidfuzz, regex 2026.11.19 (the
# scorer's grapheme units: the image's older regex split Bengali অ্যা, core/metrics.check_unit_rules), gguf 0.19.0, and
# diskcache 5.6.3 (llama-cpp-python imports it); fetched with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ...`
# (scripts/gpu-bench-real.sh prepare does the download and the slimming).
set -e
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ] && [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
# the lexicon baseline's dictionaries (the box has no Debian packages), exported beside the wheels by
# scripts/gpu-quality-lease.sh prepare (core/baselines.export_dictionaries)
if [ -d "$WHEELS/../dict" ]; then BHASHA_DICTIONARY_DIR=$(cd "$WHEELS/../dict" && pwd); export BHASHA_DICTIONARY_DIR; fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
set +e
