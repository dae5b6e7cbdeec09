#!/usr/bin/env bash
# The quality runs' training pairs (issue 22) in $PAIRS (train.json + ocr-<lang>.jsonl), found or made once
# per machine, first that applies:
#   1. parts that travelled: $TRAIN_PAIRS/quality-train.tar.xz* (an earlier lease's, carried);
#   2. the committed ones: data/natural/train-pairs/quality-train.tar.xz (README there);
#   3. made here: scripts/gpu-tess-pairs.sh (the Tesseract bundle in $BUNDLE, or the system's Tesseract),
#      then packed as $PACK_OUT/quality-train.tar.xz.partNN (15 MiB parts; written aside and moved in only
#      when whole, so a reader of $PACK_OUT never takes a part still being written) to carry next time.
# Prints one line saying which. Used by scripts/gpu-quality.sh and scripts/gpu-quality-lease.sh.
# Knobs (env): PAIRS (default /tmp/quality-train), TRAIN_PAIRS (default .carry/quality-train), PACK_OUT
#   (default: not packed), BUNDLE, and gpu-tess-pairs.sh's (PAIRS_PER_LANG, RENDERS, MIN_CHANGED, WORKERS, PY).
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-/tmp/quality-train}
[ -f "$PAIRS/train.json" ] && { echo "pairs: already in $PAIRS"; exit 0; }
for packed in "${TRAIN_PAIRS:-.carry/quality-train}" data/natural/train-pairs; do
  if ls "$packed"/quality-train.tar.xz* >/dev/null 2>&1; then
    mkdir -p "$PAIRS" && cat "$packed"/quality-train.tar.xz* | tar -C "$PAIRS" -xJ
    echo "pairs: unpacked from $packed"
    exit 0
  fi
done
PAIRS=$PAIRS bash scripts/gpu-tess-pairs.sh
if [ -n "${PACK_OUT:-}" ]; then
  mkdir -p "$PACK_OUT/.packing"
  tar -C "$PAIRS" -cJf - . | split -b 15m -d -a 2 - "$PACK_OUT/.packing/quality-train.tar.xz.part"
  mv "$PACK_OUT"/.packing/quality-train.tar.xz.part* "$PACK_OUT/" && rmdir "$PACK_OUT/.packing"
fi
echo "pairs: made by Tesseract on $(nproc) cores${PACK_OUT:+ (packed in $PACK_OUT)}"
