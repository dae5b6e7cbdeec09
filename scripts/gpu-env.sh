#!/usr/bin/env bash
# Source on a GPU machine that has torch/transformers/peft but lacks the rest of the lock:
# installs the carried wheels (.whl/) into /tmp/site and sets the offline environment.
set -e
if [ -d .whl ] && [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
set +e
