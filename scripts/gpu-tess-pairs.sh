#!/usr/bin/env bash
# Make issue 22's training pairs on a machine without Tesseract (the GPU box: 16 cores), from the bundle that
# scripts/tess-bundle.sh built here: >= 20,000 real Tesseract pairs per language of the natural training
# text (data/natural), every Debian training font of the script, all `train` damage kinds
# (bhasha_build/tools/natural_pairs.py train), recorded with font, damage, engine and the bundle's .debs.
#
# What travels: the repo, and the bundle's parts (tess-bundle.tar.xz.partNN, ~30 MB) in $BUNDLE.
# What it does: unpacks the bundle into $PREFIX (once), puts its `tesseract` wrapper (own libraries and
#   tessdata via LD_LIBRARY_PATH/TESSDATA_PREFIX for that process only) first on PATH, its fonts in
#   BHASHA_FONT_DIRS; if python's Pillow lacks RAQM, installs the bundle's Pillow wheel into /tmp/site and
#   lets it find the bundle's libfribidi; then runs natural_pairs train on every core into $PAIRS.
# Knobs (env): BUNDLE (default .carry/tess), PREFIX (default /tmp/tess), PAIRS (default /tmp/quality-train),
#   PAIRS_PER_LANG (default 20000), RENDERS (renders per line, default 5), MIN_CHANGED (default 17000: more
#   renders, up to 3x, until that many pairs per language differ after normalization, so the 15 % cap on
#   unchanged rows leaves >= 20,000 training rows), WORKERS (default: all cores). Extra args go to
#   natural_pairs (e.g. --langs hi).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-.carry/tess}
PREFIX=${PREFIX:-/tmp/tess}
PAIRS=${PAIRS:-/tmp/quality-train}
if [ ! -x "$PREFIX/bundle/bin/tesseract" ] && ls "$BUNDLE"/tess-bundle.tar.xz.part* >/dev/null 2>&1; then
  mkdir -p "$PREFIX"
  cat "$BUNDLE"/tess-bundle.tar.xz.part* | tar -C "$PREFIX" -xJ
fi
if [ -x "$PREFIX/bundle/bin/tesseract" ]; then
  export PATH="$PREFIX/bundle/bin:$PATH" BHASHA_FONT_DIRS="$PREFIX/bundle/fonts"
elif ! command -v tesseract >/dev/null; then
  echo "gpu-tess-pairs: no bundle parts in $BUNDLE (scripts/tess-bundle.sh) and no tesseract on PATH" >&2
  exit 1
fi  # else: the system's Tesseract and fonts (a Debian machine with scripts/test-deps.sh's packages)
export BHASHA_OCR_CACHE=${BHASHA_OCR_CACHE:-/tmp/ocr-cache}
export LD_LIBRARY_PATH="$PREFIX/bundle/pylib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"  # libfribidi only
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! ${PY:-python3} -c "from PIL import features; import sys; sys.exit(not features.check('raqm'))" 2>/dev/null; then
  ${PY:-python3} -m pip install -q --no-index --no-deps --target /tmp/site "$PREFIX"/bundle/pillow-*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
tesseract --version 2>&1 | sed -n 1p
${PY:-python3} -m bhasha_build.tools.natural_pairs train --out "$PAIRS" --pairs "${PAIRS_PER_LANG:-20000}" \
  --variants "${RENDERS:-5}" --min-changed "${MIN_CHANGED:-17000}" --workers "${WORKERS:-$(nproc)}" "$@"
[ ! -f "$PREFIX/bundle/MANIFEST.json" ] || cp "$PREFIX/bundle/MANIFEST.json" "$PAIRS/tess-bundle-manifest.json"
