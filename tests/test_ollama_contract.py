"""The contract server (tests/ollama_server.py, the fake that injects faults) follows the real Ollama
0.24.0: the requests the project sends — version, blobs, structured create, tags, show, copy, chat,
generate, delete, and their not-found answers — go to both, each to a fresh server, and the answers
must have the same shape: status code, body kind (JSON, NDJSON stream, empty), keys and value types,
done_reason, the create stream's statuses. Values (digests, durations, text) may differ.

Skipped, with one reason, without the real binary (tests/real_ollama.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import tiny_config
from ollama_server import OllamaContractServer
from real_ollama import VERSION, RealOllama

from bhasha_build.core.layout import RunLayout
from bhasha_build.core.ollama import blob_digest, correction_options
from bhasha_build.stages.deploy import BUILTIN_SAMPLE
from bhasha_build.stages.modelfile import parse_modelfile, render_modelfile

pytestmark = pytest.mark.slow
# Where the real server's answer holds model-specific keys (GGUF metadata): only its type is compared.
OPAQUE = {"show.model_info"}


def shape(value: Any, path: str = "") -> Any:
    """The value's shape: key -> shape for objects, [shape of the first item] for lists, type names."""
    if path in OPAQUE:
        return type(value).__name__
    if isinstance(value, dict):
        return {k: shape(v, f"{path}.{k}") for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0], path)] if value else []
    return type(value).__name__


def differences(real: Any, fake: Any, path: str = "") -> list[str]:
    """Where `fake`'s shape departs from `real`'s, one line each."""
    if isinstance(real, dict) and isinstance(fake, dict):
        out = [f"{path}.{k}: only the real server has it ({real[k]})" for k in real if k not in fake]
        out += [f"{path}.{k}: only the fake has it ({fake[k]})" for k in fake if k not in real]
        for k in real.keys() & fake.keys():
            out += differences(real[k], fake[k], f"{path}.{k}")
        return out
    if isinstance(real, list) and isinstance(fake, list) and real and fake:
        return differences(real[0], fake[0], f"{path}[]")
    return [] if real == fake or ((real == [] or fake == []) and type(real) is type(fake)) else \
        [f"{path}: real {real}, fake {fake}"]


def exchange(url: str, gguf: Path, modelfile: Any) -> dict[str, Any]:
    """The project's requests, in its order, against `url`: per step its status, body kind, shape and
    the values that must agree."""
    digest = blob_digest(gguf)
    missing = "sha256:" + hashlib.sha256(b"never uploaded").hexdigest()
    options = correction_options(seed=3407, num_predict=64)
    chat = {"model": "parity", "messages": [{"role": "user", "content": BUILTIN_SAMPLE["noisy"]}],
            "options": options}
    create = {"model": "parity-candidate", "files": {gguf.name: digest}, "template": modelfile.template,
              "system": modelfile.system, "parameters": modelfile.parameters, "stream": True}
    steps: list[tuple[str, str, str, dict[str, Any]]] = [
        ("version", "GET", "/api/version", {}),
        ("blob_head_missing", "HEAD", f"/api/blobs/{digest}", {}),
        ("blob_bad_digest", "POST", f"/api/blobs/{digest}", {"data": b"not the file"}),
        ("blob_upload", "POST", f"/api/blobs/{digest}", {"data": gguf.read_bytes()}),
        ("blob_head", "HEAD", f"/api/blobs/{digest}", {}),
        ("create", "POST", "/api/create", {"json": create}),
        ("create_missing_blob", "POST", "/api/create", {"json": {**create, "model": "parity-x",
                                                                  "files": {gguf.name: missing}}}),
        ("tags", "GET", "/api/tags", {}),
        ("show", "POST", "/api/show", {"json": {"model": "parity-candidate"}}),
        ("show_missing", "POST", "/api/show", {"json": {"model": "nothing-here"}}),
        ("copy", "POST", "/api/copy", {"json": {"source": "parity-candidate", "destination": "parity"}}),
        ("copy_missing", "POST", "/api/copy", {"json": {"source": "nothing-here", "destination": "parity-y"}}),
        ("chat", "POST", "/api/chat", {"json": {**chat, "stream": False}}),
        ("chat_length", "POST", "/api/chat", {"json": {**chat, "stream": False,
                                                        "options": {**options, "num_predict": 1}}}),
        ("chat_stream", "POST", "/api/chat", {"json": {**chat, "stream": True}}),
        ("chat_missing", "POST", "/api/chat", {"json": {**chat, "model": "nothing-here", "stream": False}}),
        ("generate", "POST", "/api/generate", {"json": {"model": "parity", "prompt": BUILTIN_SAMPLE["noisy"],
                                                        "options": options, "stream": False}}),
        ("delete", "DELETE", "/api/delete", {"json": {"model": "parity-candidate"}}),
        ("delete_missing", "DELETE", "/api/delete", {"json": {"model": "parity-candidate"}}),
        ("tags_after", "GET", "/api/tags", {}),
    ]
    out: dict[str, Any] = {}
    with requests.Session() as session:
        for step, method, path, kwargs in steps:
            resp = session.request(method, url + path, timeout=300, **kwargs)
            body = resp.content
            kind = "empty" if not body else (
                "ndjson" if resp.headers.get("Content-Type", "").startswith("application/x-ndjson") else "json")
            record: dict[str, Any] = {"status": resp.status_code, "kind": kind}
            if kind == "json":
                parsed = json.loads(body)
                record["shape"] = shape(parsed, step)
                record["done_reason"] = parsed.get("done_reason")
            elif kind == "ndjson":
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                record["shape"] = [shape(lines[0], step), shape(lines[-1], step)]
                record["done"] = [line.get("done") for line in (lines[0], lines[-1])]
                record["last_status"] = lines[-1].get("status")
                record["done_reason"] = lines[-1].get("done_reason")
            out[step] = record
    return out


def test_the_contract_server_answers_in_the_real_ones_shapes(real_ollama: Any, tiny_gguf: dict[str, Any],
                                                             tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "runs")
    layout = RunLayout(tmp_path / "runs" / "ci")
    layout.root.mkdir(parents=True)
    gguf = layout.gguf("Q4_K_M")
    gguf.write_bytes(Path(tiny_gguf["gguf"]).read_bytes())
    modelfile = parse_modelfile(render_modelfile(gguf, layout.modelfile, cfg))
    with RealOllama(real_ollama.binary, tmp_path / "real") as real:  # a fresh one: no blob uploaded yet
        got_real = exchange(real.url, gguf, modelfile)
    with OllamaContractServer(version=VERSION) as fake:
        got_fake = exchange(fake.url, gguf, modelfile)
    problems = []
    for step, want in got_real.items():
        have = got_fake[step]
        for key in ("status", "kind", "done", "last_status", "done_reason"):
            if want.get(key) != have.get(key):
                problems.append(f"{step}: {key} real {want.get(key)!r}, fake {have.get(key)!r}")
        if "shape" in want and "shape" in have:
            problems += [f"{step}{line}" for line in differences(want["shape"], have["shape"])]
    assert got_real["chat"]["done_reason"] == "stop" and got_real["chat_length"]["done_reason"] == "length"
    assert got_real["create"]["last_status"] == "success"
    assert not problems, "\n".join(problems)
