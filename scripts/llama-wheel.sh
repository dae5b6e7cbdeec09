#!/usr/bin/env bash
# Build the pinned llama-cpp-python wheel once per machine kind, cached outside the repo; print its path.
#
# Why not let `pip install -r requirements/lock.txt` build it: llama-cpp-python is sdist-only, and
# llama.cpp's default native build compiles Intel AMX kernels wherever the CPU advertises AMX. Virtual
# machines often advertise AMX without enabling its register state, and then the first generation dies
# with "Illegal instruction" (seen here 2026-11-30: `tilezero` in libggml-cpu.so). So: native build
# (AVX2/AVX-512/VNNI as the CPU has them) with AMX switched off, and the cache key holds the CPU's
# flags, so a wheel is never reused on a CPU it was not built for. pip's own wheel cache is bypassed
# (it keys sdist builds by the download alone, not by these flags).
#
# Usage: scripts/llama-wheel.sh PYTHON   (env BHASHA_WHEEL_CACHE: cache root, default ~/.cache/bhasha-build/wheels)
set -euo pipefail
python=${1:?usage: $0 PYTHON}
version=$(grep -oP '^llama_cpp_python==\K[0-9.]+' "$(dirname "$0")/../requirements/lock.txt")
flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake_args="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'"
cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | sort | tr -d '\n' || uname -m)
key=$(printf '%s\n%s\n%s\n' "$version" "$cmake_args" "$cpu" | sha256sum | cut -c1-16)
dir=${BHASHA_WHEEL_CACHE:-$HOME/.cache/bhasha-build/wheels}/llama_cpp_python-$version-$key
wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version (native, no AMX) into $dir: minutes on 2 cores, once" >&2
  tmp=$(mktemp -d "${dir%/*}/.build-XXXXXX" 2>/dev/null || { mkdir -p "${dir%/*}"; mktemp -d "${dir%/*}/.build-XXXXXX"; })
  trap 'rm -rf "$tmp"' EXIT
  CMAKE_ARGS="$cmake_args" "$python" -m pip wheel -q --no-cache-dir --no-deps -w "$tmp" "llama-cpp-python==$version" >&2
  rm -rf "$dir" && mv "$tmp" "$dir"
  trap - EXIT
  wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -n1)
fi
echo "$wheel"
