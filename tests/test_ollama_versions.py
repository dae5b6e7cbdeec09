"""The manifest records which Ollama versions a run was deployed to and whether each passed (the nightly
deploys to the pinned version and to the newest release)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bhasha_build.core.manifest import Manifest
from bhasha_build.stages.pipeline import STAGES

REPO = Path(__file__).resolve().parent.parent


def test_each_deploy_adds_its_version_and_the_last_deploy_stays_the_record(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path)
    sections = STAGES["deploy"].sections
    newest = {"ollama_version": "0.31.0", "status": "flagged", "host": "http://ollama-newest:11434",
              "created": "2026-11-30T02:40:00+00:00"}
    pinned = {"ollama_version": "0.24.0", "status": "ok", "host": "http://ollama:11434",
              "created": "2026-11-30T02:41:00+00:00"}
    manifest.update(**sections(newest))
    data = manifest.update(**sections(pinned))
    assert data["ollama_versions"] == {
        "0.31.0": {"status": "flagged", "host": "http://ollama-newest:11434", "checked": "2026-11-30T02:40:00+00:00"},
        "0.24.0": {"status": "ok", "host": "http://ollama:11434", "checked": "2026-11-30T02:41:00+00:00"},
    }
    assert data["deploy"]["ollama_version"] == "0.24.0"


def test_compose_pins_the_verified_ollama_and_offers_the_newest_for_the_nightly() -> None:
    spec = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    assert spec["services"]["ollama"]["image"] == "ollama/ollama:0.24.0"
    newest = spec["services"]["ollama-newest"]
    assert newest["profiles"] == ["newest"] and newest["image"].startswith("ollama/ollama:")


def test_the_nightly_deploys_to_the_newest_ollama_first() -> None:
    workflow = REPO / ".github" / "workflows" / "nightly.yml"
    if not workflow.is_file() and not (REPO / ".git").exists():
        pytest.skip("no .github/ here: the image leaves CI metadata out (.dockerignore); a clone has it")
    nightly = workflow.read_text()
    assert "--host http://ollama-newest:11434" in nightly
    assert nightly.index("ollama-newest:11434") < nightly.index("Deploy to the throwaway Ollama")
