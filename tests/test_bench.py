"""The benchmark's bookkeeping (the GPU parts themselves run on the GPU box: bench/RESULTS.md)."""

from __future__ import annotations

from bhasha_build.tools.bench import _ratios


def test_headline_is_against_the_strongest_baseline_of_the_run() -> None:
    results = {"project_dense": {"tokens_per_s": 40_000.0}, "baseline_trl": {"tokens_per_s": 18_000.0},
               "baseline_hf": {"tokens_per_s": 8_000.0}, "baseline_hf_lean": {"tokens_per_s": 20_000.0},
               "raw_unsloth": {"tokens_per_s": 38_000.0}}
    ratios = _ratios(results)
    assert ratios["strongest_baseline"] == "raw_unsloth"  # bare Unsloth is a baseline too
    assert ratios["project_dense_vs_strongest_baseline"] == round(40 / 38, 3)
    assert ratios["strongest_hf_baseline"] == "baseline_hf_lean"
    assert ratios["project_dense_vs_strongest_hf_baseline"] == 2.0
    assert ratios["project_vs_baseline_trl"] == round(40 / 18, 3)
    assert ratios["project_vs_raw_unsloth"] == round(40 / 38, 3)


def test_a_failed_baseline_is_not_the_strongest() -> None:
    results = {"project_dense": {"tokens_per_s": 40_000.0}, "baseline_trl": {"error": "OOM"},
               "baseline_hf": {"tokens_per_s": 8_000.0}}
    assert _ratios(results)["strongest_baseline"] == "baseline_hf"
    assert _ratios(results)["strongest_hf_baseline"] == "baseline_hf"


def test_repeats_alternate_the_order_so_no_part_always_runs_first() -> None:
    from bhasha_build.tools.bench import schedule

    order = schedule(["a", "b", "c"], 3)
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (2, "c")]
    assert schedule(["a"], 0) == []


def test_a_part_reports_the_median_run_and_its_spread() -> None:
    from bhasha_build.tools.bench import summarize_runs

    runs = [{"tokens_per_s": 30_000.0, "peak_memory_gib": 3.0, "repeat": 0, "wall_s": 50},
            {"tokens_per_s": 36_000.0, "peak_memory_gib": 3.4, "repeat": 1, "wall_s": 51},
            {"tokens_per_s": 33_000.0, "peak_memory_gib": 3.1, "repeat": 2, "wall_s": 52},
            {"error": "CUDA out of memory", "repeat": 3}]
    out = summarize_runs(runs)
    assert out["tokens_per_s"] == 33_000.0 and out["peak_memory_gib"] == 3.1  # the median run's own figures
    assert (out["tokens_per_s_min"], out["tokens_per_s_max"]) == (30_000.0, 36_000.0)
    assert out["spread_pct"] == round(100 * 6_000 / 33_000, 1) and out["peak_memory_gib_max"] == 3.4
    assert (out["repeats_ok"], out["repeats_failed"]) == (3, 1) and len(out["runs"]) == 4
    even = summarize_runs([{"tokens_per_s": 10.0}, {"tokens_per_s": 20.0}])
    assert even["tokens_per_s"] == 15.0  # an even count: the mean of the middle two
    failed = summarize_runs([{"error": "boom"}])
    assert failed["error"] == "boom" and "tokens_per_s" not in failed


def test_the_16gb_headline_is_against_the_fastest_baseline_that_fits_the_budget() -> None:
    results = {"project_16gb": {"tokens_per_s": 40_000.0}, "project_full_card": {"tokens_per_s": 50_000.0},
               "baseline_trl": {"tokens_per_s": 26_000.0, "peak_memory_gib": 5.0},
               "baseline_trl_nockpt": {"tokens_per_s": 38_000.0, "peak_memory_gib": 30.0},
               "raw_unsloth": {"tokens_per_s": 37_000.0, "peak_memory_gib": 3.5, "peak_memory_gib_max": 3.6}}
    ratios = _ratios(results, card_gib=16.0)
    assert ratios["headline_16gb"] == {"project": "project_16gb", "baseline": "raw_unsloth", "budget_gib": 14.0,
                                       "ratio": round(40 / 37, 3)}
    assert ratios["full_card"] == {"project": "project_full_card", "baseline": "baseline_trl_nockpt",
                                   "ratio": round(50 / 38, 3)}
    assert _ratios(results, card_gib=48.0)["headline_16gb"]["baseline"] == "baseline_trl_nockpt"


def test_the_report_keeps_medians_and_each_repeats_own_ratios(tmp_path) -> None:
    import argparse

    from bhasha_build.tools.bench import build_report

    args = argparse.Namespace(size="1.5B", seq=2048, batch=8, steps=10, warmup=3, card_gib=16.0, repeats=2)
    runs = {"project_16gb": [{"tokens_per_s": 40_000.0, "repeat": 0}, {"tokens_per_s": 44_000.0, "repeat": 1}],
            "raw_unsloth": [{"tokens_per_s": 40_000.0, "peak_memory_gib": 3.5, "repeat": 0},
                            {"tokens_per_s": 36_000.0, "peak_memory_gib": 3.5, "repeat": 1}]}
    report = build_report(args, {"name": "GPU"}, tmp_path, ["project_16gb", "raw_unsloth"], runs)
    assert report["order"] == ["0:project_16gb", "0:raw_unsloth", "1:raw_unsloth", "1:project_16gb"]
    assert report["results"]["project_16gb"]["tokens_per_s"] == 42_000.0
    assert report["ratios"]["headline_16gb"]["ratio"] == round(42 / 38, 3)
    assert [r["project_16gb_vs_raw_unsloth"] for r in report["ratios_per_repeat"]] == [1.0, round(44 / 36, 3)]
    assert report["ratios_range"]["project_16gb_vs_raw_unsloth"] == {"min": 1.0, "max": round(44 / 36, 3), "n": 2}


def test_each_part_imports_like_the_cli_in_a_fresh_process() -> None:
    """The project's and bare Unsloth's processes import unsloth before transformers, peft and trl (as
    tasks.py does); the HF baselines never import unsloth (it would patch what they measure)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "UNSLOTH_DISABLE_STATISTICS": "1", "HF_HUB_OFFLINE": "1"}

    def order(part: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "bhasha_build.tools.bench", "--part", part, "--imports-only"],
                              capture_output=True, text=True, env=env, cwd=repo, timeout=600)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_IMPORTS ")), None)
        assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-2000:]
        return json.loads(line.removeprefix("BENCH_IMPORTS "))

    assert order("project_16gb") == ["unsloth", "transformers", "peft", "trl"]
    assert order("baseline_trl") == ["transformers", "peft", "trl"]


def test_a_probed_part_carries_the_probes_step_speed_beside_the_trained_one() -> None:
    from bhasha_build.tools.bench import probe_vs_trained

    micro = {"mode": "probed", "measures": "optimizer steps", "probe_seconds": 21.5,
             "chosen": {"batch_size": 8, "checkpointed_layers": 21, "probe_tokens_per_s": 40_000.0,
                        "probe_peak_gib": 9.0},
             "trained": {"tokens_per_s": 37_000.0, "peak_gib": 8.5}}
    out = probe_vs_trained(micro, 38_000.0, 8.4)
    assert (out["probe_step_tokens_per_s"], out["trained_tokens_per_s"]) == (40_000.0, 38_000.0)
    assert out["stage_trained_tokens_per_s"] == 37_000.0  # the stage's all-steps median, from the manifest
    assert out["probe"] == {"tokens_per_s": 40_000.0, "peak_gib": 9.0, "measures": "optimizer steps",
                            "seconds": 21.5, "trained_vs_probe_speed": 0.95, "trained_vs_probe_peak": 0.933}
    assert probe_vs_trained({"mode": "fixed", "batch_size": 8}, 38_000.0, 8.4) == {}  # nothing probed


def test_the_step_profiler_says_where_a_steps_wall_time_goes() -> None:
    """`bench --profile` (project parts and the bare Unsloth loop alike): StepProfiler records the window's
    wall time per step beside the device time per step. Here on the CPU no device runs anything, so the
    device's busy share is 0 and the wall time is what the steps took."""
    import time

    import torch

    from bhasha_build.tools.bench import PROFILED_STEPS, StepProfiler

    profiler, sink = StepProfiler(), {}
    profiler.start()
    a = torch.randn(128, 128)
    for _ in range(PROFILED_STEPS):
        a = (a @ a) / 128
        time.sleep(0.02)
    profiler.stop(sink)
    step = sink["step_profile"]
    assert step["steps"] == PROFILED_STEPS
    assert step["wall_ms_per_step"] >= 20  # each step slept 20 ms
    assert step["device_ms_per_step"] == 0 and step["device_busy_share"] == 0
    assert "aten::mm" in sink["top_cuda_ops"]
    assert profiler.prof is None  # the window is closed: a second stop would be a bug, not a no-op
    assert {"op": "aten::mm", "calls_per_step": 1.0} in [{k: o[k] for k in ("op", "calls_per_step")}
                                                         for o in sink["ops_by_calls"]]
    assert "call_sites" not in sink  # stacks only when asked


def test_the_step_profiler_names_the_lines_that_launch_the_most_ops() -> None:
    """`bench --profile-stacks`: the Python line that launched each of the most-called ops, calls per step;
    here 5 additions a step from one line and 1 matmul from another."""
    import torch

    from bhasha_build.tools.bench import PROFILED_STEPS, StepProfiler

    profiler, sink = StepProfiler(stacks=True), {}
    profiler.start()
    a = torch.randn(64, 64)
    for _ in range(PROFILED_STEPS):
        for _ in range(5):
            a = a + 1  # the adds' line
        a = (a @ a) / 64
    profiler.stop(sink)
    assert {"op": "aten::add", "calls_per_step": 5.0} in [{k: o[k] for k in ("op", "calls_per_step")}
                                                          for o in sink["ops_by_calls"]]
    adds = sink["call_sites"].get("aten::add")
    assert adds, sink["call_sites"]
    assert adds[0]["calls_per_step"] == 5.0
    assert "test_bench.py" in adds[0]["site"] and "test_the_step_profiler_names" in adds[0]["site"]
