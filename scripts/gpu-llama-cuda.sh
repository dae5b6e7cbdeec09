#!/usr/bin/env bash
# llama.cpp with CUDA on a GPU box that reaches no package index (the device tool's H200s): the pinned
# llama-cpp-python built for Hopper into a prefix, so that `import llama_cpp` offloads to the GPU and eval
# scores the q4_k_m there (core/gguf.py: n_gpu_layers=-1 when llama_cpp.llama_supports_gpu_offload()).
#
# Source it (it exports PYTHONPATH=$PREFIX/site:...) or run it (it builds and checks). Idempotent: a prefix
# that already holds a checked build is reused. Three ways in, first that applies:
#   1. $PREFIX/site holds a build that offloads            -> nothing to do
#   2. a built wheel travelled: $LLAMA_CUDA_PARTS/llama_cuda.whl.part-* (+ llama_cuda.whl.name), the
#      pieces this script wrote to $OUT on an earlier lease -> joined and installed (seconds, no compiler)
#   3. the sdist travelled ($LLAMA_SDIST)                   -> built: GGML_CUDA=on, CMAKE_CUDA_ARCHITECTURES=90
#      (Hopper only: H100/H200), ninja on every core, native CPU code without AMX (as scripts/llama-wheel.sh),
#      no llava/mtmd library (eval does not load it), no NCCL. Minutes on 16 cores.
# With LLAMA_CUDA_EXPORT=1 and $OUT set, the built wheel is cut into 15 MB pieces under $OUT (the device
# tool returns files of at most 16 MiB): carry them as $LLAMA_CUDA_PARTS on the next lease instead of
# rebuilding - but measured 2026-12-02 on an H200 the wheel is 265 MB (18 pieces), over one call's 64 MiB
# carry, so today a later lease rebuilds (366-388 s at nice 19 on 12 cores; bench/RESULTS.md).
#
# The sdist: the pinned one (scripts/llama-wheel.sh's version, requirements/lock.txt) is 77 MB with llama.cpp's
# git history, vocab GGUFs and docs; what travels is it slimmed to the build's sources (~6 MB):
#   pip download --no-deps --no-binary=:all: llama_cpp_python==0.3.36, then scripts/gpu-llama-cuda.sh --slim SDIST OUTDIR
# Knobs (env): LLAMA_CUDA_PREFIX (default /tmp/llama-cuda), LLAMA_SDIST (default: the first
#   llama_cpp_python-*-slim.tar.xz or llama_cpp_python-*.tar.gz under .carry/), LLAMA_CUDA_PARTS,
#   LLAMA_CUDA_EXPORT, CUDA_ARCH (default 90), LLAMA_CUDA_JOBS (default: all cores).
# Needs on the box: python3 with pip, scikit-build-core, cmake, ninja, nvcc + cuBLAS; numpy, jinja2,
# typing-extensions and diskcache at run time (diskcache travels with scripts/gpu-env.sh's wheels).

_llama_cuda_main() {
  local prefix=${LLAMA_CUDA_PREFIX:-/tmp/llama-cuda}
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local version
  version=$(grep -oP '^llama_cpp_python==\K[0-9.]+' "$here/requirements/lock.txt")
  if [ "${1:-}" = "--slim" ]; then  # here, before a lease: the pinned sdist cut to what the build needs
    local sdist=${2:?usage: --slim SDIST OUTDIR} outdir=${3:?usage: --slim SDIST OUTDIR} tmp
    tmp=$(mktemp -d)
    tar xzf "$sdist" -C "$tmp"
    local root="$tmp/llama_cpp_python-$version" v="$tmp/llama_cpp_python-$version/vendor/llama.cpp"
    rm -rf "$root/.git" "$root/.github" "$root/docker" "$root/docs" "$root/tests" "$root/examples" \
      "${v:?}/.git" "${v:?}/models" "${v:?}/docs" "${v:?}/media" "$v/benches" "$v/tests" "$v/examples" "$v/tools/ui" \
      "$v/tools/server/public"* "$v/.github" "$v/ggml/src/ggml-sycl" "$v/ggml/src/ggml-opencl"
    mkdir -p "$outdir"
    tar cJf "$outdir/llama_cpp_python-$version-slim.tar.xz" -C "$tmp" "llama_cpp_python-$version"
    rm -rf "$tmp"
    echo "$outdir/llama_cpp_python-$version-slim.tar.xz"
    return 0
  fi
  export PYTHONPATH="$prefix/site${PYTHONPATH:+:$PYTHONPATH}"
  _llama_cuda_ok() {
    python3 -c "import llama_cpp, sys; sys.exit(not (llama_cpp.__version__ == '$version' and llama_cpp.llama_supports_gpu_offload()))" \
      2>/dev/null
  }
  if [ -f "$prefix/site/.done" ] && _llama_cuda_ok; then
    echo "gpu-llama-cuda: $prefix/site holds llama-cpp-python $version with CUDA" >&2
    return 0
  fi
  rm -rf "$prefix/site" && mkdir -p "$prefix/wheel"
  local parts=${LLAMA_CUDA_PARTS:-}
  local wheel=""
  if [ -n "$parts" ] && [ -f "$parts/llama_cuda.whl.name" ]; then
    wheel="$prefix/wheel/$(cat "$parts/llama_cuda.whl.name")"
    cat "$parts"/llama_cuda.whl.part-* > "$wheel"
    echo "gpu-llama-cuda: joined the carried wheel $(basename "$wheel")" >&2
  else
    local sdist=${LLAMA_SDIST:-}
    if [ -z "$sdist" ]; then
      sdist=$(find "$here/.carry" -name "llama_cpp_python-$version-slim.tar.xz" -o -name "llama_cpp_python-$version.tar.gz" \
        2>/dev/null | head -n1)
    fi
    if [ -z "$sdist" ] || [ ! -f "$sdist" ]; then
      echo "gpu-llama-cuda: no sdist (set LLAMA_SDIST) and no carried wheel (LLAMA_CUDA_PARTS)" >&2
      return 1
    fi
    local arch=${CUDA_ARCH:-90} jobs=${LLAMA_CUDA_JOBS:-$(nproc)} flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    local nvcc_path
    nvcc_path=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    echo "gpu-llama-cuda: building llama-cpp-python $version, CUDA arch $arch, $jobs jobs (nvcc: $nvcc_path)" >&2
    local t0=$SECONDS
    # pip's build tree is left in /tmp: tar.xz needs unpacking first (pip reads .tar.gz/.zip sdists only)
    local src
    src=$(mktemp -d)
    tar xf "$sdist" -C "$src"
    CMAKE_GENERATOR=Ninja CMAKE_BUILD_PARALLEL_LEVEL=$jobs \
      CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$arch -DCMAKE_CUDA_COMPILER=$nvcc_path -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'" \
      python3 -m pip wheel -q --no-build-isolation --no-deps --no-cache-dir -w "$prefix/wheel" "$src/llama_cpp_python-$version" >&2 \
      || { echo "gpu-llama-cuda: the build failed" >&2; rm -rf "$src"; return 1; }
    rm -rf "$src"
    wheel=$(find "$prefix/wheel" -name "llama_cpp_python-$version-*.whl" | head -n1)
    echo "gpu-llama-cuda: built $(basename "$wheel") in $((SECONDS - t0)) s" >&2
    if [ "${LLAMA_CUDA_EXPORT:-}" = 1 ] && [ -n "${OUT:-}" ]; then
      split -b 15000000 -d -a 2 "$wheel" "$OUT/llama_cuda.whl.part-"
      basename "$wheel" > "$OUT/llama_cuda.whl.name"
    fi
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$prefix/site" "$wheel" >&2 || return 1
  if ! _llama_cuda_ok; then
    echo "gpu-llama-cuda: the installed llama_cpp does not offload to a GPU" >&2
    return 1
  fi
  touch "$prefix/site/.done"
  echo "gpu-llama-cuda: llama-cpp-python $version with CUDA in $prefix/site" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  _llama_cuda_main "$@"
  exit $?
fi
_llama_cuda_main
