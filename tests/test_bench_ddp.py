"""The multi-GPU proof tool (bench_ddp): its comparison rules, and one real run of it on CPU (torchrun,
gloo, 2 processes vs 1 process with grad_accum 2) on the tiny model, where the curves must match."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bhasha_build.tools.bench_ddp import compare

REPO = Path(__file__).resolve().parent.parent


def _log(losses: list[float], tps: float, tokens_per_step: float = 100.0) -> list[dict[str, Any]]:
    return [{"step": i + 1, "loss": loss, "tokens_per_s": tps, "num_tokens": tokens_per_step * (i + 1)}
            for i, loss in enumerate(losses)]


def test_compare_passes_close_curves_and_enough_speedup() -> None:
    result = compare(_log([8.0, 7.0, 6.0], 1000), _log([8.0, 7.05, 6.02], 1900), warmup=0, rel_tol=0.02,
                     abs_tol=0.02, min_speedup=1.8)
    assert result["losses_agree"] and result["speedup"] == 1.9 and result["ok"]
    assert result["tokens_per_step"] == {"single": 100.0, "multi": 100.0}


def test_compare_fails_a_diverging_step() -> None:
    result = compare(_log([8.0, 7.0, 6.0], 1000), _log([8.0, 7.0, 6.5], 2000), warmup=0, rel_tol=0.02,
                     abs_tol=0.02, min_speedup=1.8)
    assert not result["losses_agree"] and not result["ok"]
    assert result["worst_step"]["step"] == 3


def test_compare_fails_too_little_speedup_and_skips_warmup() -> None:
    single = _log([8.0, 7.0, 6.0], 1000)
    multi = _log([8.0, 7.0, 6.0], 1700)
    multi[0]["tokens_per_s"] = 99999.0  # a warm-up step is not timed
    result = compare(single, multi, warmup=1, rel_tol=0.02, abs_tol=0.02, min_speedup=1.8)
    assert result["losses_agree"] and result["speedup"] == 1.7 and not result["ok"]


def test_compare_without_common_steps_is_not_ok() -> None:
    assert compare([], _log([1.0], 1), 0, 0.02, 0.02, 1.8) == {"ok": False, "reason": "no common logged steps"}


@pytest.mark.nightly
@pytest.mark.slow
def test_cpu_proof_run_curves_match(tiny_pipeline: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "bhasha_build.tools.bench_ddp", "--cpu", "--gpus", "2", "--model-dir",
           str(tiny_pipeline["run_dir"] / "base-model"), "--seq", "128", "--batch", "2", "--steps", "4",
           "--warmup", "1", "--min-speedup", "0", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    runs, comparison = report["runs"], report["comparison"]
    assert runs["single"]["distributed"]["world_size"] == 1 and runs["single"]["grad_accum"] == 2
    assert runs["multi"]["distributed"]["world_size"] == 2 and runs["multi"]["distributed"]["ddp_backend"] == "gloo"
    assert runs["multi"]["distributed"]["effective_batch"] == runs["single"]["distributed"]["effective_batch"] == 4
    assert comparison["steps_compared"] == 4 and comparison["losses_agree"]
    assert comparison["tokens_per_step"]["single"] == comparison["tokens_per_step"]["multi"]  # same examples
    assert comparison["max_abs_diff"] < 1e-3
