#!/usr/bin/env bash
# Which llama.cpp scores on a GPU box: the one decision scripts/gpu-quality.sh and scripts/gpu-bench-real.sh
# both make after scripts/gpu-llama-cuda.sh (source this file; it defines llama_choose and runs nothing).
#
#   llama_choose [GGUF] [LOG] [CPU_TGZ]
#     with a GGUF, three steps, each a child process (python -m bhasha_build.core.gguf check):
#       1. the CUDA build answers a line on the GPU                  -> "gpu"
#       2. else the CUDA build answers on the CPU                    -> "cuda-build-on-cpu" (eval's own
#          llama_plan then scores on the CPU and records why: generation.gpu_failure)
#       3. else the carried CPU build (CPU_TGZ: scripts/gpu-bench-real.sh prepare's llama-cpu.tgz) -> "carried-cpu"
#     without a GGUF (the bench's random-init e2e has none before it runs): the CUDA build when it offloads
#     (llama_supports_gpu_offload), else the carried CPU build; eval's in-process check falls back from there.
#   It exports PYTHONPATH for the choice (the CUDA build's /tmp/llama-cuda/site is expected on it already,
#   as scripts/gpu-llama-cuda.sh leaves it; LLAMA_CUDA_SITE overrides; the carried build unpacks into
#   LLAMA_CPU_DIR, default /tmp/llama-cpu), writes the GPU check's whole stderr
#   (faulthandler's stack when llama.cpp dies) to LOG, and prints one line per step. The 2026-12-02 CUDA
#   build offloaded and quantized, then died of SIGSEGV generating: offload alone is not the question
#   (2026-12-03: it dies whenever numpy or another C++ extension loads before llama_cpp; the checks and eval's
#   workers load llama_cpp first, BHASHA_LLAMA_FIRST in core/env.py; torch-first, below, still loads torch first).
#   LLAMA_CHOICE holds the answer afterwards. LLAMA_DIAGNOSE=1 (with a GGUF and a LOG): two more GPU checks,
#   for the record only: the CUDA libraries the check's child loads (LD_DEBUG=libs -> LOG's -libs.log) and
#   the same check with torch's CUDA libraries (cuBLAS) loaded first (-torch.log): a scoring process that
#   exported with torch holds them.

llama_choose() {
  local gguf=${1:-} log=${2:-/dev/null} cpu_tgz=${3:-} py=${PY:-python3} line
  local cuda_site=${LLAMA_CUDA_SITE:-/tmp/llama-cuda/site}
  _llama_carried_cpu() {
    if [ -z "$cpu_tgz" ] || [ ! -f "$cpu_tgz" ]; then
      echo "llama.cpp: no carried CPU build (${cpu_tgz:-none given}); keeping the CUDA build"
      return 1
    fi
    local cpu_dir=${LLAMA_CPU_DIR:-/tmp/llama-cpu}
    mkdir -p "$cpu_dir" && tar xzf "$cpu_tgz" -C "$cpu_dir"
    export PYTHONPATH=$cpu_dir${PYTHONPATH:+:$PYTHONPATH}
    LLAMA_CHOICE=carried-cpu
  }
  if [ -d "$cuda_site" ] && [[ ":${PYTHONPATH:-}:" != *":$cuda_site:"* ]]; then
    export PYTHONPATH=$cuda_site${PYTHONPATH:+:$PYTHONPATH}
  fi
  if [ -z "$gguf" ]; then
    if "$py" -c "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())" 2>/dev/null; then
      LLAMA_CHOICE=gpu
      echo "llama.cpp: the CUDA build offloads (no GGUF to check with: eval checks in process)"
    elif _llama_carried_cpu; then
      echo "llama.cpp: the CUDA build does not offload; the carried CPU build"
    else
      LLAMA_CHOICE=cuda-build-on-cpu
    fi
    return 0
  fi
  # (`|| true`: the callers run under set -e -o pipefail, and a failed check is an answer here)
  line=$("$py" -m bhasha_build.core.gguf check "$gguf" --layers -1 --stderr "$log" 2>&1 | tail -1) || true
  echo "llama.cpp GPU check: $line"
  if [ "${LLAMA_DIAGNOSE:-0}" = 1 ] && [ "$log" != /dev/null ]; then  # the 2026-12-02 SIGSEGV, diagnosed:
    # which CUDA libraries the check's child loads (LD_DEBUG), and does it answer with torch's CUDA loaded first
    local diag=${log%.log}
    LD_DEBUG=libs "$py" -m bhasha_build.core.gguf check "$gguf" --layers -1 --stderr "$diag-ld.raw" >/dev/null 2>&1 || true
    grep -E 'calling init: .*lib(cublas|cublasLt|cudart|cuda|nvrtc|ggml|llama)' "$diag-ld.raw" 2>/dev/null \
      | sed 's/^ *[0-9]*: *//' | sort -u > "$diag-libs.log" || true
    rm -f "$diag-ld.raw"
    echo "llama.cpp GPU check's CUDA libraries: $(grep -oE '[^/]*\.so[.0-9]*$' "$diag-libs.log" 2>/dev/null | tr '\n' ' ')"
    local torch_line
    torch_line=$("$py" -m bhasha_build.core.gguf check "$gguf" --layers -1 --torch-first --stderr "$diag-torch.log" \
      2>&1 | tail -1) || true
    echo "llama.cpp GPU check with torch's CUDA libraries loaded first: $torch_line"
  fi
  if [ "$line" = ok ]; then
    LLAMA_CHOICE=gpu
    return 0
  fi
  line=$("$py" -m bhasha_build.core.gguf check "$gguf" --layers 0 2>&1 | tail -1) || true
  echo "llama.cpp CPU check (the CUDA build): $line"
  LLAMA_CHOICE=cuda-build-on-cpu
  if [ "$line" != ok ] && _llama_carried_cpu; then
    line=$("$py" -m bhasha_build.core.gguf check "$gguf" --layers 0 2>&1 | tail -1) || true
    echo "llama.cpp: the carried CPU build ($line)"
  fi
  return 0
}
