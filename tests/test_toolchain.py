"""The pinned llama.cpp toolchain: checked sdist, cache keyed by version, converter wrapper."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bhasha_build.core import toolchain


def test_cache_is_keyed_by_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BHASHA_TOOLCHAIN_CACHE", str(tmp_path))
    assert toolchain.toolchain_dir() == tmp_path / f"llama-cpp-python-{toolchain.LLAMA_CPP_PYTHON_VERSION}"
    with pytest.raises(toolchain.ToolchainError, match="not prepared"):
        toolchain.require()


def test_sdist_with_wrong_hash_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BHASHA_TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / toolchain.SDIST_NAME
    with tarfile.open(fake, "w:gz") as tar:
        data = b"print('not the converter')\n"
        info = tarfile.TarInfo(f"llama_cpp_python-{toolchain.LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
                               "convert_hf_to_gguf.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(toolchain.ToolchainError, match="is not the pinned"):
        toolchain.prepare(fake)
    assert not toolchain.toolchain_dir().exists()  # nothing half-prepared


def test_prepared_toolchain_records_its_pins() -> None:
    path = toolchain.prepare()
    stamp = json.loads((path / "toolchain.json").read_text())
    assert stamp["llama_cpp_commit"] == "0c1e570" and stamp["sdist_sha256"] == toolchain.SDIST_SHA256
    assert (path / "convert_hf_to_gguf.py").exists() and (path / "gguf-py" / "gguf").is_dir()
    assert toolchain.info()["binding_version"] == toolchain.LLAMA_CPP_PYTHON_VERSION


@pytest.mark.slow
def test_unknown_pre_tokenizer_is_refused_unless_registered(tiny_pipeline: dict[str, Any], tmp_path: Path) -> None:
    merged = tiny_pipeline["merged"]
    with pytest.raises(toolchain.ToolchainError, match="pre-tokenizer was not recognized"):
        toolchain.convert_to_gguf(merged, tmp_path / "x.gguf", register_pre_tokenizer=None)
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".*partial"))
    report = toolchain.convert_to_gguf(merged, tmp_path / "y.gguf", register_pre_tokenizer="qwen2")
    assert report["pre_tokenizer"] == "qwen2" and list(report["registered"].values()) == ["qwen2"]
