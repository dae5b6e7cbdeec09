"""Deploy end to end to the Ollama contract server (real llama.cpp inference), and every error path."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ollama_server import OllamaContractServer

from bhasha_build.core import chat
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.ollama import (
    COMPOSE_HINT,
    OllamaClient,
    OllamaError,
    OllamaModelExistsError,
    OllamaTooOldError,
    OllamaUnreachableError,
    full_name,
)
from bhasha_build.stages.deploy import BUILTIN_SAMPLE, DeployError, candidate_name, deploy, sanity_sample
from bhasha_build.stages.modelfile import ModelfileError, render_modelfile

NAME = "bhasha-ocr"
GGUF_NAME = RunLayout(Path(".")).gguf("Q4_K_M").name  # model-q4_k_m.gguf


def _cfg(**deploy: object) -> BuildConfig:
    return BuildConfig.model_validate(
        {
            "model": {"name": "tiny", "max_seq_length": 256, "load_in_4bit": False},
            "deploy": {"num_predict": 64, "timeout_s": 60, **deploy},
        }
    )


def _run_dir(tmp_path: Path, gguf_bytes_from: Path | None = None) -> Path:
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    if gguf_bytes_from is None:
        (run / GGUF_NAME).write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(1024))
    else:
        shutil.copyfile(gguf_bytes_from, run / GGUF_NAME)
    render_modelfile(run / GGUF_NAME, run / "Modelfile", _cfg())
    return run


@pytest.fixture
def server() -> Iterator[OllamaContractServer]:
    with OllamaContractServer() as srv:
        yield srv


# -- error paths that stop before inference (no model needed) ------------------------------------


def test_missing_modelfile(tmp_path: Path, server: OllamaContractServer) -> None:
    with pytest.raises(DeployError, match="invoke modelfile"):
        deploy(tmp_path, _cfg(), NAME, server.url)


def test_modelfile_from_escaping_run_folder(tmp_path: Path, server: OllamaContractServer) -> None:
    run = _run_dir(tmp_path)
    (tmp_path / "elsewhere.gguf").write_bytes(b"GGUF")
    text = (run / "Modelfile").read_text().replace(f"FROM ./{GGUF_NAME}", "FROM ../../elsewhere.gguf")
    (run / "Modelfile").write_text(text)
    with pytest.raises(ModelfileError, match="escapes the run folder"):
        deploy(run, _cfg(), NAME, server.url)
    assert server.requests == []  # refused before talking to Ollama


def test_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OllamaUnreachableError, match=COMPOSE_HINT.replace(".", r"\.")):
        deploy(_run_dir(tmp_path), _cfg(), NAME, f"127.0.0.1:{port}")


def test_too_old(tmp_path: Path) -> None:
    with OllamaContractServer(version="0.5.1") as old, pytest.raises(OllamaTooOldError, match=r"0\.5\.5"):
        deploy(_run_dir(tmp_path), _cfg(), NAME, old.url)


def test_host_from_ollama_host_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OllamaContractServer(version="0.5.1") as old:
        monkeypatch.setenv("OLLAMA_HOST", old.url)
        with pytest.raises(OllamaTooOldError, match=f"at {old.url}"):  # no host argument: OLLAMA_HOST wins
            deploy(_run_dir(tmp_path), _cfg(), NAME, None)


def test_exists_without_force(tmp_path: Path, server: OllamaContractServer) -> None:
    run = _run_dir(tmp_path)
    client = OllamaClient(server.url)
    client.create(NAME, {GGUF_NAME: client.push_blob(run / GGUF_NAME)})
    with pytest.raises(OllamaModelExistsError, match=f"'{NAME}:latest' already exists .* --force"):
        deploy(run, _cfg(), NAME, server.url)


def test_roundtrip_mismatch_leaves_the_live_model_untouched(tmp_path: Path) -> None:
    # An Ollama that silently ignores structured parameters (as pre-0.5.5 builds do) loses the stops.
    # deploy --force verifies `<name>-candidate` first: the live model must stay as it was.
    run = _run_dir(tmp_path)
    with OllamaContractServer(ignore_create_fields=("parameters",)) as srv:
        client = OllamaClient(srv.url)
        old = tmp_path / "old.gguf"
        old.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(512))
        client.create(NAME, {old.name: client.push_blob(old)})
        live = client.model_digest(NAME)
        with pytest.raises(DeployError, match=r"parameters \(missing .*stop.*'bhasha-ocr:latest' on .* is left as "
                                              r"it was; the candidate 'bhasha-ocr-candidate:latest' is kept") as err:
            deploy(run, _cfg(), NAME, srv.url, force=True)
        assert client.model_digest(NAME) == live  # untouched
        assert client.exists(candidate_name(NAME))  # kept for inspection
        assert not any(path in ("/api/chat", "/api/copy") for _, path in srv.requests)  # no sanity, no copy
    report = json.loads((run / "deploy.json").read_text())
    assert report == err.value.report
    assert report["status"] == "flagged" and report["roundtrip"]["ok"] is False
    assert report["live_digest_before"] == live and report["candidate"] == "bhasha-ocr-candidate:latest"


def test_candidate_names() -> None:
    assert candidate_name("bhasha-ocr") == "bhasha-ocr-candidate"
    assert candidate_name("bhasha-ocr:v2") == "bhasha-ocr-candidate:v2"
    assert candidate_name("me/bhasha:latest") == "me/bhasha-candidate:latest"
    assert candidate_name("host:5000/me/bhasha") == "host:5000/me/bhasha-candidate"


@pytest.mark.parametrize("fault", ["unreachable", "html", "drop", "missing-modelfile"])
def test_deploy_json_is_written_on_every_outcome(tmp_path: Path, server: OllamaContractServer, fault: str) -> None:
    run = _run_dir(tmp_path)
    host = server.url
    if fault == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            host = f"http://127.0.0.1:{sock.getsockname()[1]}"
    elif fault == "missing-modelfile":
        (run / "Modelfile").unlink()
    else:
        server.faults["/api/version"] = fault
    with pytest.raises((OllamaError, DeployError)) as err:
        deploy(run, _cfg(), NAME, host, force=True)
    report = json.loads((run / "deploy.json").read_text())
    assert report["status"] == "failed" and report["error"] == str(err.value) and report["host"] == host
    assert err.value.report == report  # what the stage runner records in the manifest
    assert "\n" not in report["error"]


def test_cli_fallback_missing_binary(
    tmp_path: Path, server: OllamaContractServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(OllamaError, match="`ollama` CLI not found"):
        deploy(_run_dir(tmp_path), _cfg(), NAME, server.url, use_cli=True)


def test_sanity_sample_prefers_eval_split(tmp_path: Path) -> None:
    assert sanity_sample(RunLayout(tmp_path))["source"] == "builtin"
    (tmp_path / "data").mkdir()
    rows = [{"messages": [{"role": "user", "content": "hi"}]}, {"lang": "bn", "noisy": "আমর", "clean": "আমার"}]
    (tmp_path / "data" / "eval.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    sample = sanity_sample(RunLayout(tmp_path))
    assert (sample["source"], sample["lang"], sample["clean"]) == ("data/eval.jsonl:2", "bn", "আমার")


# -- end to end with the tiny model (slow: needs the converted tiny GGUF) ----------------------------


@pytest.fixture(scope="module")
def live_server() -> Iterator[OllamaContractServer]:
    with OllamaContractServer() as srv:
        yield srv


@pytest.fixture
def tiny_run(tmp_path: Path, tiny_gguf: dict[str, Any]) -> Path:
    return _run_dir(tmp_path, tiny_gguf["gguf"])


@pytest.mark.slow
def test_deploy_end_to_end(tiny_run: Path, live_server: OllamaContractServer) -> None:
    start = time.perf_counter()
    report = deploy(tiny_run, _cfg(), NAME, live_server.url, force=True)
    seconds = time.perf_counter() - start
    answer = report["sanity"]["response"]
    print(f"deploy end to end: {seconds:.1f}s, renderer={live_server.renderer}, answer={answer!r}")
    assert json.loads((tiny_run / "deploy.json").read_text()) == report
    assert report["status"] == "ok" and report["roundtrip"] == {"ok": True, "mismatches": []}
    # verified as the candidate, copied over the name, candidate removed
    assert report["digest"] == report["candidate_digest"] and not OllamaClient(live_server.url).exists(
        candidate_name(NAME))
    assert ("POST", "/api/copy") in live_server.requests
    assert report["name"] == f"{NAME}:latest" and report["host"] == live_server.url
    assert report["ollama_version"] == live_server.version and len(report["digest"]) == 64
    sanity = report["sanity"]
    assert sanity["ok"] and sanity["done_reason"] == "stop" and sanity["response"]
    assert sanity["options"] == {"temperature": 0, "seed": 3407, "num_predict": 64}
    assert sanity["prompt"] == BUILTIN_SAMPLE["noisy"]
    if live_server.renderer == "go":  # the server rendered the Modelfile TEMPLATE with Go
        want = chat.render_chatml(chat.pair_messages(BUILTIN_SAMPLE["noisy"]), add_generation_prompt=True)
        assert live_server.last_prompt == want
    # Same seed, temperature 0: the answer is reproducible through /api/generate too.
    again = OllamaClient(live_server.url).generate(NAME, BUILTIN_SAMPLE["noisy"], options=sanity["options"])
    assert again["response"].strip() == sanity["response"] and again["done_reason"] == "stop"


@pytest.mark.slow
def test_redeploy_needs_force_then_cli(
    tiny_run: Path, live_server: OllamaContractServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(tiny_run, _cfg(), NAME, live_server.url, force=True)
    with pytest.raises(OllamaModelExistsError):
        deploy(tiny_run, _cfg(), NAME, live_server.url)
    # CLI fallback: a stand-in `ollama` that does what `ollama create -f` does (parse, upload, create)
    # against OLLAMA_HOST, so the wiring (cwd, env, exit status) is what is tested here.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ollama"
    fake.write_text(
        f"#!{sys.executable}\n"
        f"import os, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from pathlib import Path\n"
        "from bhasha_build.stages.modelfile import parse_modelfile, resolve_from\n"
        "from bhasha_build.core.ollama import OllamaClient\n"
        "_, cmd, name, flag, path = sys.argv\n"
        "assert (cmd, flag) == ('create', '-f'), sys.argv\n"
        "mf = parse_modelfile(Path(path).read_text()); gguf = resolve_from(Path(path).resolve(), mf.from_)\n"
        "c = OllamaClient(os.environ['OLLAMA_HOST'])\n"
        "c.create(name, {gguf.name: c.push_blob(gguf)}, template=mf.template, system=mf.system,\n"
        "         parameters=mf.parameters)\n"
        "print('success')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    report = deploy(tiny_run, _cfg(), "bhasha-ocr-cli", live_server.url, use_cli=True)
    assert report["method"] == "cli" and report["status"] == "ok"


@pytest.mark.slow
def test_cer_gate_passes_for_a_model_that_answers(
    tmp_path: Path, memorized_gguf: Path, live_server: OllamaContractServer
) -> None:
    # A model that really corrects the line: the CER gate (deploy.sanity_max_cer) is applied and passes.
    run = _run_dir(tmp_path, memorized_gguf)
    report = deploy(run, _cfg(sanity_max_cer=0.05), "bhasha-ocr-memorized", live_server.url, force=True)
    sanity = report["sanity"]
    assert sanity["ok"] and sanity["done_reason"] == "stop" and sanity["max_cer"] == 0.05
    assert sanity["cer"] < 0.05 and sanity["script"] == "Devanagari" and sanity["foreign_fraction"] == 0.0
    assert sanity["response"] == BUILTIN_SAMPLE["clean"]


@pytest.mark.slow
def test_sanity_failure_leaves_the_live_model_untouched(tiny_run: Path, live_server: OllamaContractServer,
                                                         memorized_gguf: Path, tmp_path: Path) -> None:
    # A good model is live; a candidate that fails the sanity check (CER can never be below 0) must
    # not replace it: the live name keeps its digest and still answers, the candidate stays flagged.
    good = deploy(_run_dir(tmp_path / "good", memorized_gguf), _cfg(), "bhasha-ocr-strict", live_server.url,
                  force=True)
    with pytest.raises(DeployError, match=r"sanity check failed .*CER .*is left as it was") as err:
        deploy(tiny_run, _cfg(sanity_max_cer=0.0), "bhasha-ocr-strict", live_server.url, force=True)
    client = OllamaClient(live_server.url)
    assert client.model_digest("bhasha-ocr-strict") == good["digest"]
    assert client.exists("bhasha-ocr-strict-candidate")
    report = json.loads((tiny_run / "deploy.json").read_text())
    assert report == err.value.report and report["status"] == "flagged"
    assert report["sanity"]["ok"] is False and report["sanity"]["max_cer"] == 0.0
    assert report["live_digest_before"] == good["digest"] != report["candidate_digest"]
    answer = client.chat("bhasha-ocr-strict", [{"role": "user", "content": BUILTIN_SAMPLE["noisy"]}],
                         options=good["sanity"]["options"])
    assert answer["message"]["content"].strip() == good["sanity"]["response"]


@pytest.mark.slow
def test_streaming_matches_non_streaming(tiny_run: Path, live_server: OllamaContractServer) -> None:
    deploy(tiny_run, _cfg(), NAME, live_server.url, force=True)
    client = OllamaClient(live_server.url)
    messages = [{"role": "user", "content": BUILTIN_SAMPLE["noisy"]}]
    options = {"temperature": 0, "seed": 1, "num_predict": 8}
    chunks: list[dict[str, Any]] = []
    streamed = client.chat(NAME, messages, options=options, stream=True, on_chunk=chunks.append)
    whole = client.chat(NAME, messages, options=options)
    assert streamed["message"] == whole["message"] and streamed["done_reason"] == whole["done_reason"]
    assert chunks[-1]["done"] is True and all(not c["done"] for c in chunks[:-1])
    # num_predict caps generation with done_reason "length" (when the model had more to say).
    prompt, opts = BUILTIN_SAMPLE["noisy"], {**options, "num_predict": 64}
    full = client.generate(NAME, prompt, options=opts)
    capped = client.generate(NAME, prompt, options={**opts, "num_predict": 1})
    assert full["eval_count"] > 1, "the tiny model should say more than one token here"
    assert (capped["done_reason"], capped["eval_count"]) == ("length", 1)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("go") is None, reason="Go toolchain missing: apt-get install golang-go")
def test_gguf_chat_template_renders_like_the_modelfile_template(
    tiny_run: Path, live_server: OllamaContractServer
) -> None:
    # The same request through the GGUF's embedded jinja template (llama.cpp's view) and through the
    # Modelfile TEMPLATE run by Go (Ollama's view) must reach the model as the same prompt.
    deploy(tiny_run, _cfg(), NAME, live_server.url, force=True)
    go_prompt = live_server.last_prompt
    with OllamaContractServer(renderer="gguf-jinja") as jinja:
        report = deploy(tiny_run, _cfg(), NAME, jinja.url)
        assert jinja.last_prompt == go_prompt
    assert report["sanity"]["ok"]


@pytest.mark.slow
def test_invoke_deploy_demo_run(
    tiny_pipeline: dict[str, Any], live_server: OllamaContractServer, tmp_path: Path
) -> None:
    # The "done when": `invoke deploy --name bhasha-ocr` on a pipeline-made run folder
    # (Modelfile from `invoke modelfile`, sanity line from its eval split) passes every check.
    src = Path(tiny_pipeline["run_dir"])
    run = tmp_path / "runs" / src.name
    (run / "data").mkdir(parents=True)
    for rel in ("Modelfile", GGUF_NAME, "data/eval.jsonl", "manifest.json"):  # + the records deploy verifies
        shutil.copyfile(src / rel, run / rel)
    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "invoke", "deploy", "--profile", "tiny-cpu", "--run", src.name,
           "--set", f'runs_dir="{run.parent}"', "--name", NAME, "--host", live_server.url, "--force"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    report = json.loads((run / "deploy.json").read_text())
    assert report["status"] == "ok" and report["sanity"]["source"].startswith("data/eval.jsonl:")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["deploy"]["digest"] == report["digest"] == OllamaClient(live_server.url).model_digest(NAME)
    assert manifest["ollama_versions"][live_server.version]["status"] == "ok"


@pytest.mark.slow
def test_eval_scores_the_served_model_through_ollama(tiny_pipeline: dict[str, Any],
                                                     live_server: OllamaContractServer, tmp_path: Path) -> None:
    # eval's `served` system: the deployed GGUF scored by name through the server (on a GPU box, the
    # server's GPU); same GGUF, same greedy decoding and template as llama.cpp here, so the same answers.
    from bhasha_build.core.config import load_config
    from bhasha_build.core.gguf import llama_plan
    from bhasha_build.stages import pipeline

    src = Path(tiny_pipeline["run_dir"])
    shutil.copytree(src, tmp_path / "runs" / src.name)
    base = tiny_pipeline["cfg"]
    cfg = load_config(profile="tiny-cpu", env={}, overrides=[
        f'runs_dir="{tmp_path / "runs"}"', f'run="{src.name}"', f'deploy.host="{live_server.url}"',
        'eval.served_name="bhasha-served"', f"eval.max_rows={base.eval.max_rows}"])
    pipeline.run_deploy(cfg, name="bhasha-served", host=live_server.url)
    report = pipeline.run_eval(cfg, ("gguf", "served"))
    assert report["served_model"].startswith("bhasha-served on ")
    assert report["served"]["overall"]["cer"] == report["gguf"]["overall"]["cer"]
    assert report["served"]["overall"]["rows"] == report["gguf"]["overall"]["rows"] > 0
    for system in ("gguf", "served"):  # rows/s of each path, what RESULTS.md compares on a GPU box
        speed = report[system]["generation"]
        assert speed["seconds"] > 0
        assert speed["rows_per_s"] == pytest.approx(report["rows"] / speed["seconds"], rel=0.02)
    plan = llama_plan(cfg.layout.gguf(cfg.export.quant), cfg.eval.gguf_contexts)  # where llama.cpp scored, recorded
    assert {k: report["gguf"]["generation"][k] for k in ("llama_cpp_gpu", "contexts")} == \
        {"llama_cpp_gpu": plan.n_gpu_layers != 0, "contexts": plan.contexts}


# -- deploy --force under a race and a server that fails after applying (fast: the models cannot
# generate, so deploy's sanity prompt is replaced; create, the show round-trip, tags, copy and delete
# are real against the contract server) -----------------------------------------------------------------


@pytest.fixture
def sane(monkeypatch: pytest.MonkeyPatch) -> None:
    from bhasha_build.stages import deploy as deploy_stage

    monkeypatch.setattr(deploy_stage, "check_served_model", lambda client, name, *_: {"ok": True, "failures": []})


def _live_and_intruder(tmp_path: Path, server: OllamaContractServer, live: bool = True) -> tuple[str | None, str]:
    """The live model (unless `live` is False) and an 'intruder' nobody verified, on the server."""
    client = OllamaClient(server.url)
    digests = []
    for name in ("bhasha-ocr", "intruder")[0 if live else 1:]:
        gguf = tmp_path / f"{name}.gguf"
        gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(512))
        client.create(name, {gguf.name: client.push_blob(gguf)})
        digests.append(client.model_digest(name))
    return (digests[0] if live else None), digests[-1]


def _race_at(server: OllamaContractServer, destination: str) -> None:
    """Once, when a /api/copy to `destination` arrives, another deploy puts the intruder on the candidate."""
    def race(body: dict[str, Any]) -> None:
        if full(body.get("destination", "")) == full(destination) and server.before.pop("/api/copy", None):
            server.copy("intruder", candidate_name(NAME))

    def full(name: str) -> str:
        return server.full_name(name) if name else ""

    server.before["/api/copy"] = race


@pytest.mark.parametrize("live", [True, False])
def test_a_candidate_swapped_at_the_copy_is_never_left_served(tmp_path: Path, server: OllamaContractServer,
                                                               sane: None, live: bool) -> None:
    run = _run_dir(tmp_path)
    client = OllamaClient(server.url)
    before, intruder = _live_and_intruder(tmp_path, server, live)
    _race_at(server, NAME)
    with pytest.raises(DeployError, match=r"not the verified .*; the previous model \((" + str(before)
                       + r"|none: the name was removed)\) is served again") as err:
        deploy(run, _cfg(), NAME, server.url, force=True)
    assert client.model_digest(NAME) == before != intruder  # the old model, or none: never the intruder
    report = json.loads((run / "deploy.json").read_text())
    assert report["status"] == "failed" and report["digest"] == before and report == err.value.report
    assert not [m for m in client.digests() if "-rescue-" in m]  # the rescue copy is tidied away


def test_a_candidate_changed_after_its_checks_is_not_copied(tmp_path: Path, server: OllamaContractServer,
                                                            sane: None) -> None:
    run = _run_dir(tmp_path)
    client = OllamaClient(server.url)
    before, _ = _live_and_intruder(tmp_path, server)
    copies = []
    server.after["/api/copy"] = copies.append
    server.after["/api/show"] = lambda _: server.copy("intruder", candidate_name(NAME))  # after the round-trip
    with pytest.raises(DeployError, match=r"changed after it was verified .*nothing was copied; "
                                          rf"'{NAME}:latest' serves {before}"):
        deploy(run, _cfg(), NAME, server.url, force=True)
    assert client.model_digest(NAME) == before
    assert all(full_name(c["destination"]) != f"{NAME}:latest" for c in copies)  # never copied over the name


@pytest.mark.parametrize(("path", "fault"), [("/api/copy", "fail-after"), ("/api/delete", "missing-after")])
def test_deploy_applied_despite_an_error_answer_is_ok(tmp_path: Path, server: OllamaContractServer, sane: None,
                                                      path: str, fault: str) -> None:
    run = _run_dir(tmp_path)
    client = OllamaClient(server.url)
    _live_and_intruder(tmp_path, server)
    server.faults[path] = fault
    report = deploy(run, _cfg(), NAME, server.url, force=True)
    del server.faults[path]
    assert report["status"] == "ok" and client.model_digest(NAME) == report["digest"] == report["candidate_digest"]
    assert not client.exists(candidate_name(NAME))
    assert bool(report.get("warnings")) == (fault == "fail-after")
    assert json.loads((run / "deploy.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_deploy_force_racing_another_deploy_keeps_the_verified_model(tiny_run: Path, tmp_path: Path) -> None:
    """The race of issue 21 with a real model (real sanity prompt through llama.cpp): while deploy --force
    copies its verified candidate, another deploy puts an unchecked model on `<name>-candidate`; the
    copy brings that one over the name, and deploy puts the model that was served back."""
    with OllamaContractServer() as srv:
        client = OllamaClient(srv.url)
        deploy(tiny_run, _cfg(), NAME, srv.url, force=True)
        live = client.model_digest(NAME)
        _, intruder = _live_and_intruder(tmp_path, srv, live=False)
        _race_at(srv, NAME)
        with pytest.raises(DeployError, match=rf"not the verified .*the previous model \({live}\) is served again"):
            deploy(tiny_run, _cfg(), NAME, srv.url, force=True)
        assert client.model_digest(NAME) == live != intruder
        report = json.loads((tiny_run / "deploy.json").read_text())
        assert report["sanity"]["ok"] and report["status"] == "failed" and report["digest"] == live
        assert client.chat(NAME, [{"role": "user", "content": BUILTIN_SAMPLE["noisy"]}])["done_reason"] == "stop"
