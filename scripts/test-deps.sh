#!/usr/bin/env bash
# Test-only system tools, idempotent; prints what it runs:
#   Go (template parity with Ollama's text/template);
#   Tesseract 5 + its hin/ben/tam models, the Indic fonts and libfribidi0 (Pillow's RAQM layout loads it)
#   for the real-OCR pairs (bhasha_build/features/ocr_pairs.py; also in the image: docker/Dockerfile);
#   libsqlite3-0 for the real Ollama 0.24.0 the suite runs against (scripts/ollama-bin.sh);
#   hunspell-hi, hunspell-bn, aspell + aspell-ta: the dictionaries of the lexicon baseline and guard
#   (bhasha_build/core/baselines.py; also in the image);
#   chromium + chromium-driver: the review page's real-browser test (tests/test_review_browser.py).
set -euo pipefail
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
for pkg in tesseract-ocr tesseract-ocr-hin tesseract-ocr-ben tesseract-ocr-tam libfribidi0 fonts-noto-core \
           fonts-lohit-deva fonts-lohit-beng-bengali fonts-lohit-taml fonts-samyak-deva fonts-samyak-taml \
           fonts-beng-extra libsqlite3-0 hunspell-hi hunspell-bn aspell aspell-ta chromium chromium-driver; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  set -x
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
