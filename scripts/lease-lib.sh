#!/usr/bin/env bash
# The mechanics of a lease on a device machine, shared by scripts/gpu-quality-lease.sh and
# scripts/gpu-bench-real.sh (source it; $LEASE is the run's folder on the box): one background run per machine,
# in its own session so that it outlives the call that started it, fed and followed by short calls, each of
# which must come within the machine's warm window (30 s).
#   lease_step MSG...            a timestamped line in $LEASE/steps.log (and on stdout)
#   lease_background ARGS...     `bash ARGS...` in its own session (setsid), its leader's PID in $LEASE/run.pid,
#                                its output in $LEASE/run.log
#   lease_snapshot DIR [EXCLUDE...]  the tree (less .git, .venv, runs and EXCLUDE, paths like ./.carry) copied
#                                into DIR: a background run reads its code from there, since a later call of
#                                the same lease re-sends the working tree under it
#   lease_stop                   ends the background run and everything it started (its session, by the
#                                recorded leader: `pkill -f` would match the asking command's own line)
#   lease_wait_done SECONDS      returns when $LEASE/done exists or SECONDS have passed; at once (rc 3) on a
#                                machine that holds no lease, and (rc 4) when the background run has ended
#   lease_put_slice [--last]     the GGUF slice(s) this call carried (.carry/slices/sNN) into $LEASE_SLICES
#                                (earlier calls' stay there); --last marks them complete
#   lease_llama_cuda LOG [EXPORT_DIR]  builds llama.cpp with CUDA (scripts/gpu-llama-cuda.sh, LLAMA_SDIST) at
#                                nice 19 on LLAMA_JOBS cores (12) into /tmp/llama-cuda, its last line
#                                "rc=N seconds=S" in LOG; with EXPORT_DIR the built wheel is cut there in pieces
#                                (LLAMA_CUDA_EXPORT); run it in the background (`lease_llama_cuda LOG &`)

# Where the GGUF slices gather on the box (env SLICES, else /tmp/gguf-slices): put-slice, wait and the lease
# scripts all read it here.
LEASE_SLICES=${SLICES:-/tmp/gguf-slices}

lease_step() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LEASE/steps.log"; }

lease_background() {
  mkdir -p "$LEASE"
  LEASE_DIR=$LEASE setsid nohup bash "$@" > "$LEASE/run.log" 2>&1 < /dev/null &
  echo $! > "$LEASE/run.pid"
  sleep 3
  cat "$LEASE/steps.log" "$LEASE/run.log" 2>/dev/null | tail -5
}

lease_snapshot() {
  local dir=$1 args=() x
  shift
  for x in ./.git ./.venv ./runs "$@"; do args+=(--exclude "$x"); done
  rm -rf "$dir" && mkdir -p "$dir"
  tar -C . "${args[@]}" -cf - . | tar -C "$dir" -xf -
}

lease_stop() {
  [ -f "$LEASE/run.pid" ] && kill -- "-$(cat "$LEASE/run.pid")" 2>/dev/null
  sleep 2
  lease_step "stopped"
}

lease_wait_done() {
  local limit=${1:-560} t0=$SECONDS
  # 2026-12-03 (10th session): a `wait 530` went to a fresh machine (the lease's had been given back between
  # two calls) and waited out its whole limit there, 530 of the session's last 600 device seconds: a machine
  # that holds no lease answers at once, and a run that has ended without `done` ends the wait too
  if [ ! -f "$LEASE/run.pid" ]; then
    echo "wait: no lease on this machine ($LEASE/run.pid is missing): the lease's machine was given back" >&2
    # 2026-12-04 (15th session): `start` went to a machine that was given back before the slice batch came; the
    # batch's slices landed on a fresh one, and `start` sent again there ran the lease without sending them again
    local n
    n=$(find "$LEASE_SLICES" -maxdepth 1 -name 's[0-9]*' 2>/dev/null | wc -l)
    if [ "$n" -gt 0 ]; then
      if [ -f "$LEASE_SLICES/.complete" ]; then
        echo "wait: $n slices lie here, complete: send \`start\` again now (no slice need travel again)" >&2
      else
        echo "wait: $n slices lie here, not marked complete: send the missing ones (the last with --last), then \`start\`" >&2
      fi
    fi
    return 3
  fi
  while [ ! -f "$LEASE/done" ] && [ $((SECONDS - t0)) -lt "$limit" ]; do
    kill -0 "$(cat "$LEASE/run.pid")" 2>/dev/null || { echo "wait: the background run ended without 'done'" >&2; return 4; }
    sleep 10
  done
}

lease_put_slice() {
  mkdir -p "$LEASE_SLICES"
  cp .carry/slices/s* "$LEASE_SLICES"/ && ls "$LEASE_SLICES" | tr '\n' ' '
  if [ "${1:-}" = --last ]; then touch "$LEASE_SLICES/.complete"; echo "(complete)"; fi
}

lease_llama_cuda() {
  local log=$1 export_dir=${2:-}
  # shellcheck disable=SC2016  # $OUT, $rc and $SECONDS expand in the inner bash
  LLAMA_CUDA_JOBS=${LLAMA_JOBS:-12} LLAMA_CUDA_PREFIX=/tmp/llama-cuda \
    LLAMA_CUDA_EXPORT=${export_dir:+1} OUT=${export_dir:-} \
    nice -n 19 bash -c '[ -z "$OUT" ] || mkdir -p "$OUT"; SECONDS=0; bash scripts/gpu-llama-cuda.sh; rc=$?; echo "rc=$rc seconds=$SECONDS"' \
    > "$log" 2>&1
}
