"""The benchmark's bookkeeping (the GPU parts themselves run on the GPU box: bench/RESULTS.md)."""

from __future__ import annotations

from bhasha_build.tools.bench import _ratios


def test_headline_is_against_the_strongest_baseline_of_the_run() -> None:
    results = {"project_dense": {"tokens_per_s": 40_000.0}, "baseline_trl": {"tokens_per_s": 18_000.0},
               "baseline_hf": {"tokens_per_s": 8_000.0}, "baseline_hf_lean": {"tokens_per_s": 20_000.0},
               "raw_unsloth": {"tokens_per_s": 38_000.0}}
    ratios = _ratios(results)
    assert ratios["strongest_baseline"] == "baseline_hf_lean"
    assert ratios["project_dense_vs_strongest_baseline"] == 2.0
    assert ratios["project_vs_baseline_trl"] == round(40 / 18, 3)
    assert ratios["project_vs_raw_unsloth"] == round(40 / 38, 3)


def test_a_failed_baseline_is_not_the_strongest() -> None:
    results = {"project_dense": {"tokens_per_s": 40_000.0}, "baseline_trl": {"error": "OOM"},
               "baseline_hf": {"tokens_per_s": 8_000.0}}
    assert _ratios(results)["strongest_baseline"] == "baseline_hf"
