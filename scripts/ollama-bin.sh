#!/usr/bin/env bash
# Prints the path of a real Ollama 0.24.0 binary for the test suite (tests/real_ollama.py), or
# nothing when there is none; messages go to stderr. `make test` passes what it prints on as
# BHASHA_OLLAMA_BIN; without it the real-Ollama tests skip with one reason.
#
#   1. BHASHA_OLLAMA_BIN already set: printed as it is (the user's own build);
#   2. else the CPU build kept beside the clone, <shared>/ollama/ollama-0.24.0-linux-amd64.tar.xz
#      (<shared> = BHASHA_SHARED_DIR, default ../shared next to the repository root, as CI lays
#      it out: ../shared/ollama/): its sha256 is checked, then it is unpacked once into the cache
#      (BHASHA_OLLAMA_CACHE, default ~/.cache/bhasha-build/ollama-0.24.0) and the cached binary
#      printed. The unpacked copy is built aside and renamed into place, so a killed or parallel
#      run never leaves a half-unpacked cache.
# A present archive with the wrong sha256 is an error (exit 1), not a skip.
set -euo pipefail

VERSION=0.24.0
ARCHIVE_NAME="ollama-${VERSION}-linux-amd64.tar.xz"
SHA256=d322ed1433276ca5b3abb4f74eaa8c25814e890192124c8fa20675eb77e8f268

if [ -n "${BHASHA_OLLAMA_BIN:-}" ]; then
  printf '%s\n' "${BHASHA_OLLAMA_BIN}"
  exit 0
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="${BHASHA_SHARED_DIR:-${repo}/../shared}"
archive="${shared}/ollama/${ARCHIVE_NAME}"
if [ ! -f "${archive}" ]; then
  echo "ollama-bin: no ${ARCHIVE_NAME} under ${shared}/ollama: the real-Ollama tests will skip" \
       "(set BHASHA_OLLAMA_BIN to an Ollama ${VERSION} binary to run them)" >&2
  exit 0
fi

cache="${BHASHA_OLLAMA_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bhasha-build/ollama-${VERSION}}"
bin="${cache}/ollama-${VERSION}/bin/ollama"
stamp="${cache}/.sha256"
if [ -x "${bin}" ] && [ "$(cat "${stamp}" 2>/dev/null)" = "${SHA256}" ]; then
  printf '%s\n' "${bin}"
  exit 0
fi

got="$(sha256sum "${archive}" | cut -d' ' -f1)"
if [ "${got}" != "${SHA256}" ]; then
  echo "ollama-bin: ${archive}: sha256 ${got}, expected ${SHA256}; not using it" >&2
  exit 1
fi
mkdir -p "$(dirname "${cache}")"
tmp="$(mktemp -d "${cache}.partial.XXXXXX")"
chmod 755 "${tmp}"
trap 'rm -rf "${tmp}"' EXIT
tar -xJf "${archive}" -C "${tmp}"
[ -x "${tmp}/ollama-${VERSION}/bin/ollama" ] || { echo "ollama-bin: ${archive} holds no ollama-${VERSION}/bin/ollama" >&2; exit 1; }
printf '%s\n' "${SHA256}" > "${tmp}/.sha256"
rm -rf "${cache}"
# Another run may have put its copy in place meanwhile: theirs is as good as ours.
mv -T "${tmp}" "${cache}" 2>/dev/null || [ -x "${bin}" ]
echo "ollama-bin: unpacked ${ARCHIVE_NAME} (sha256 checked) into ${cache}" >&2
printf '%s\n' "${bin}"
