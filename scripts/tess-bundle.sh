#!/usr/bin/env bash
# Build a relocatable Tesseract 5 bundle from Debian packages, for a machine without Tesseract that reaches
# no package index (the GPU box: 16 cores for the training pairs of issue 22). Run it HERE (Debian, apt).
#
# What it does: `apt-get download`s tesseract-ocr, libtesseract5, liblept5, tesseract-ocr-{hin,ben,tam},
#   the shared libraries the tesseract binary loads (ldd here, minus glibc/libgcc/libstdc++/zlib, which every
#   x86-64 Debian/Ubuntu has in a newer version), libfribidi0 (Pillow's RAQM layout loads it), the font
#   packages of natural_pairs.FONT_DEBS, and a Pillow wheel for python 3.12 (used only when the box's
#   Pillow lacks RAQM); unpacks them with `dpkg -x`, keeps bin/, lib/, tessdata/ (hin, ben, tam), fonts/
#   (Devanagari, Bengali and Tamil files only), pylib/ (libfribidi) and MANIFEST.json (every .deb's
#   name, version, sha256), and writes $OUT/tess-bundle.tar.xz cut into parts of at most $PART_MIB MiB.
# On the box: scripts/gpu-tess-pairs.sh unpacks it and runs `natural_pairs train` on every core.
# Knobs (env): OUT (default .carry/tess), CACHE (.deb cache, default ~/.cache/bhasha-build/tess-debs),
#   PART_MIB (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.carry/tess}
CACHE=${CACHE:-$HOME/.cache/bhasha-build/tess-debs}
PART_MIB=${PART_MIB:-60}
LIBS="libacl1 libarchive13 libbrotli1 libbz2-1.0 libcom-err2 libcurl4 libdeflate0 libffi8 libgif7 libgmp10
  libgnutls30 libgomp1 libgssapi-krb5-2 libhogweed6 libicu72 libidn2-0 libjbig0 libjpeg62-turbo libk5crypto3
  libkeyutils1 libkrb5-3 libkrb5support0 libldap-2.5-0 liblept5 liblerc4 liblz4-1 liblzma5 libnettle8
  libnghttp2-14 libopenjp2-7 libp11-kit0 libpng16-16 libpsl5 librtmp1 libsasl2-2 libssh2-1 libssl3 libtasn1-6
  libtesseract5 libtiff6 libunistring2 libwebp7 libwebpmux3 libxml2 libzstd1"
TESS="tesseract-ocr tesseract-ocr-hin tesseract-ocr-ben tesseract-ocr-tam libfribidi0"
FONTS=$(python3 -c "import ast,sys; t=open('bhasha_build/tools/natural_pairs.py').read(); \
i=t.index('FONT_DEBS = '); print(' '.join(ast.literal_eval(t[i+12:t.index(')', i)+1])))")
mkdir -p "$CACHE" "$OUT"
# shellcheck disable=SC2086
download() { (cd "$CACHE" && apt-get download $LIBS $TESS $FONTS 2>&1 | grep -v -e "^Get:" -e unsandboxed); }
# a fresh machine's package lists can name versions the mirror no longer has ("Can't find a source to
# download version ..."): refresh them once and ask again
if download | grep -q "^E:"; then apt-get update -qq >/dev/null 2>&1; download || true; fi
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
python3 - "$CACHE" "$STAGE" $LIBS $TESS $FONTS <<'EOF'
import hashlib, json, subprocess, sys
from pathlib import Path
cache, stage, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
debs = []
for name in names:
    found = sorted(cache.glob(f"{name}_*.deb"))
    if not found:
        sys.exit(f"tess-bundle: {name}: no .deb in {cache}")
    deb = found[-1]
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True).stdout.strip()
    debs.append({"package": name, "version": version, "deb": deb.name, "bytes": deb.stat().st_size,
                 "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()})
    subprocess.run(["dpkg-deb", "-x", str(deb), str(stage / "root")], check=True)
(stage / "MANIFEST.json").write_text(json.dumps({"debs": debs}, indent=1) + "\n")
EOF
B="$STAGE/bundle"
mkdir -p "$B"/{bin,lib,tessdata,fonts,pylib}
R="$STAGE/root"
cp "$R/usr/bin/tesseract" "$B/bin/tesseract.real"
cp -a "$R"/usr/lib/x86_64-linux-gnu/*.so* "$B/lib/"
cp -a "$R"/lib/x86_64-linux-gnu/*.so* "$B/lib/" 2>/dev/null || true  # liblzma, libbz2, libcom_err, libkeyutils
mv "$B"/lib/libfribidi.so* "$B/pylib/"
cp "$R"/usr/share/tesseract-ocr/5/tessdata/{hin,ben,tam}.traineddata "$B/tessdata/"
find "$R/usr/share/fonts" -type f \( -name "*.ttf" -o -name "*.otf" \) | while read -r f; do
  case "$(basename "$f")" in
    Noto*Devanagari*|Noto*Bengali*|Noto*Tamil*|[!N]*) cp "$f" "$B/fonts/" ;;
  esac
done
cp "$STAGE/MANIFEST.json" "$B/"
cat > "$B/bin/tesseract" <<'EOF'
#!/bin/sh
# The bundle's tesseract with its own libraries and language data (the caller's environment otherwise kept).
HERE=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH="$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" TESSDATA_PREFIX="$HERE/tessdata" \
  exec "$HERE/bin/tesseract.real" "$@"
EOF
chmod +x "$B/bin/tesseract"
WHEEL=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 -d "$WHEEL" "pillow==$(grep -i '^pillow==' requirements/lock.txt | cut -d= -f3)"
cp "$WHEEL"/*.whl "$B/"
rm -rf "$WHEEL"
rm -f "$OUT"/tess-bundle.tar.xz*
tar -C "$STAGE" -cJf "$OUT/tess-bundle.tar.xz" bundle
(cd "$OUT" && split -b "${PART_MIB}m" -d -a 2 tess-bundle.tar.xz tess-bundle.tar.xz.part && rm tess-bundle.tar.xz)
echo "tess-bundle: $(du -sh "$B" | cut -f1) unpacked, $(du -ch "$OUT"/tess-bundle.tar.xz.part* | tail -1 | cut -f1) packed" \
  "in $(ls "$OUT"/tess-bundle.tar.xz.part* | wc -l) part(s) under $OUT; $(ls "$B/fonts" | wc -l) fonts"
