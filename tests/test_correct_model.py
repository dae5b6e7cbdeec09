"""`correct` with the real model: the tiny run's q4_k_m GGUF through llama.cpp directly and deployed to
the in-process Ollama-contract server (real llama.cpp behind it, the Modelfile TEMPLATE rendered by
Go's text/template where Go is installed). Layout, NFC on the wire, concurrency, a stalled server,
resuming, and the demo's document."""

from __future__ import annotations

import json
import shutil
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ollama_server import OllamaContractServer

from bhasha_build.core import chat
from bhasha_build.core.config import load_config
from bhasha_build.core.layout import RunLayout
from bhasha_build.stages import correct as cr
from bhasha_build.stages.deploy import deploy
from bhasha_build.stages.modelfile import render_modelfile

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "data" / "documents"
NAME = "bhasha-ocr"
# Two pages, CRLF, blank lines, indentation, trailing spaces, a form feed, no final newline; line 4
# carries a precomposed क़ (U+0958) and ज़ (U+095B), which NFC turns into base + nukta.
MULTIPAGE = ("  गाँव का पुस्तकालय\r\n\r\nहर शाम बच्चे वहाँ आकर कहानियाँ पढ़ते हैं|\r\n"
             "पुरानी \u0958िताबें और \u095Bमीन की बातें  \r\n\f\r\nबरसात के दिनौं में छत से पानी टपकता था।\r\n"
             "\r\n\t— पृष्ठ २ —")


def _cfg(runs_dir: Path, *extra: str):
    return load_config(profile="tiny-cpu", env={}, overrides=[f'runs_dir="{runs_dir}"', 'run="ci"',
                                                              "correct.backoff_s=0", *extra])


@pytest.fixture(scope="module")
def served(tiny_gguf: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaContractServer]:
    """The tiny model deployed (Modelfile + /api/create + checks) to a contract server."""
    run = tmp_path_factory.mktemp("served") / "runs" / "ci"
    run.mkdir(parents=True)
    gguf = RunLayout(run).gguf("Q4_K_M")
    shutil.copyfile(tiny_gguf["gguf"], gguf)
    cfg = _cfg(run.parent)
    render_modelfile(gguf, RunLayout(run).modelfile, cfg)
    with OllamaContractServer() as server:
        deploy(run, cfg, NAME, server.url)
        yield server


def _ollama(cfg: Any, server: OllamaContractServer) -> cr.OllamaBackend:
    return cr.open_backend(cfg, name=NAME, host=server.url)  # type: ignore[return-value]


def test_through_the_server_layout_is_kept_and_the_model_sees_nfc(
        served: OllamaContractServer, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    src = tmp_path / "in" / "page.txt"
    src.parent.mkdir()
    src.write_bytes(MULTIPAGE.encode())
    backend = _ollama(cfg, served)
    summary = cr.correct(src, tmp_path / "out", backend, cfg, progress=False, jobs=1)
    out = (tmp_path / "out" / "page.txt").read_bytes()
    assert cr.structure(out) == cr.structure(src.read_bytes())
    assert out.count(b"\r\n") == MULTIPAGE.count("\r\n") and out.count(b"\f") == 1 and not out.endswith(b"\n")
    assert summary["lines"] == 5 and summary["failed"] == 0 and summary["backend"]["kind"] == "ollama"
    assert summary["backend"]["num_ctx"] == cfg.model.max_seq_length  # from /api/show: the Modelfile's
    assert summary["backend"]["system_prompt_matches_training"] is True
    # What reached the model for the nukta line: NFC, never the precomposed letters.
    nukta = tmp_path / "in2" / "nukta.txt"
    nukta.parent.mkdir()
    nukta.write_text(MULTIPAGE.split("\r\n")[3] + "\n", encoding="utf-8")
    cr.correct(nukta, tmp_path / "out2", backend, cfg, progress=False)
    sent = unicodedata.normalize("NFC", MULTIPAGE.split("\r\n")[3]).strip()
    assert "\u0958" not in served.last_prompt and "\u095b" not in served.last_prompt
    assert f"<|im_start|>user\n{sent}<|im_end|>" in served.last_prompt
    if served.renderer == "go":  # the Modelfile TEMPLATE with Go: exactly the training prompt
        assert served.last_prompt == chat.render_chatml(chat.pair_messages(sent), add_generation_prompt=True)
    backend.close()


def test_server_and_llama_cpp_give_the_same_corrections(served: OllamaContractServer, tiny_gguf: dict[str, Any],
                                                        tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    backend = _ollama(cfg, served)
    via_server = cr.correct(DOCS / "ocr", tmp_path / "server", backend, cfg, progress=False)
    backend.close()
    gguf = cr.GgufBackend(tiny_gguf["gguf"], cfg)
    try:
        via_gguf = cr.correct(DOCS / "ocr", tmp_path / "gguf", gguf, cfg, progress=False)
    finally:
        gguf.close()
    for name in ("book_hi.txt", "letter_bn.txt"):
        assert (tmp_path / "server" / name).read_bytes() == (tmp_path / "gguf" / name).read_bytes(), name
    assert via_server["lines"] == via_gguf["lines"] and via_server["changed"] == via_gguf["changed"]


def test_requests_in_flight_follow_jobs(served: OllamaContractServer, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    src = tmp_path / "many.txt"
    src.write_text("".join(f"हर शाम बच्चे कहानी {i} पढ़ते हैं|\n" for i in range(6)), encoding="utf-8")
    backend = _ollama(cfg, served)
    for jobs in (1, 2):
        served.max_in_flight = 0
        summary = cr.correct(src, tmp_path / f"out{jobs}", backend, cfg, progress=False, jobs=jobs)
        assert served.max_in_flight == jobs and summary["jobs"] == jobs
    assert (tmp_path / "out1" / "many.txt").read_bytes() == (tmp_path / "out2" / "many.txt").read_bytes()
    backend.close()


def test_a_stalled_server_hits_the_deadline_and_the_request_is_retried(
        served: OllamaContractServer, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "correct.timeout_s=2", "correct.retries=2")
    src = tmp_path / "s.txt"
    src.write_text("हर शाम बच्चे वहाँ आकर कहानियाँ पढ़ते हैं|\n", encoding="utf-8")
    backend = _ollama(cfg, served)
    served.stall_count, served.stall_s = 1, 30.0
    start = time.perf_counter()
    summary = cr.correct(src, tmp_path / "out", backend, cfg, progress=False, jobs=1)
    took = time.perf_counter() - start
    assert summary["failed"] == 0 and summary["requests"] == 1 and served.stall_count == 0
    assert 2 <= took < 30  # waited for the deadline, not for the stalled answer
    backend.close()


def test_a_server_that_keeps_stalling_fails_in_one_line_and_a_rerun_resumes(
        served: OllamaContractServer, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "correct.timeout_s=1", "correct.retries=1")
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("हर शाम बच्चे वहाँ आकर कहानियाँ पढ़ते हैं|\nबरसात के दिनौं में छत से पानी टपकता था।\n",
                               encoding="utf-8")
    backend = _ollama(cfg, served)
    served.stall_count, served.stall_s = 2, 5.0  # the first line's two attempts stall
    with pytest.raises(cr.CorrectError, match=r"1 line\(s\) could not be corrected .*a.txt:1: Ollama at .* did not"):
        cr.correct(src, tmp_path / "out", backend, cfg, progress=False, jobs=1)
    assert (tmp_path / "out" / "a.txt").read_text(encoding="utf-8").splitlines()[0] == \
        "हर शाम बच्चे वहाँ आकर कहानियाँ पढ़ते हैं|"  # kept its input
    before = sum(1 for m, p in served.requests if p == "/api/chat")
    summary = cr.correct(src, tmp_path / "out", backend, cfg, progress=False, jobs=1)
    assert sum(1 for m, p in served.requests if p == "/api/chat") - before == 1  # only the failed line again
    assert summary["failed"] == 0 and summary["requests"] == 1
    backend.close()


def test_an_interrupted_run_through_the_server_resumes(served: OllamaContractServer, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    src = DOCS / "ocr"
    backend = _ollama(cfg, served)
    calls = {"n": 0}
    complete = backend.complete

    def interrupting(text: str, max_tokens: int) -> cr.Reply:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return complete(text, max_tokens)

    backend.complete = interrupting  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        cr.correct(src, tmp_path / "out", backend, cfg, progress=False, jobs=1)
    backend.complete = complete  # type: ignore[method-assign]
    resumed = cr.correct(src, tmp_path / "out", backend, cfg, progress=False, jobs=1)
    fresh = cr.correct(src, tmp_path / "fresh", backend, cfg, progress=False, jobs=1)
    assert resumed["requests"] == fresh["requests"] - 5
    for name in ("book_hi.txt", "letter_bn.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    backend.close()


def test_the_demo_document_is_corrected_through_the_runs_gguf_with_its_layout(
        tiny_pipeline: dict[str, Any]) -> None:
    """What `make demo` ends with: `invoke correct --input data/documents/ocr --reference
    data/documents/truth` on the demo run (no server given: the run's GGUF, checked against the manifest)."""
    cfg = tiny_pipeline["cfg"]
    summary = cr.run(cfg, DOCS / "ocr", reference=DOCS / "truth", progress=False)
    out = cfg.layout.corrected
    assert summary["backend"]["kind"] == "gguf" and summary["backend"]["gguf"] == str(tiny_pipeline["gguf"].resolve())
    for src in sorted((DOCS / "ocr").iterdir()):
        got = (out / src.name).read_bytes()
        assert cr.structure(got) == cr.structure(src.read_bytes()), src.name
        assert got.count(b"\f") == src.read_bytes().count(b"\f") >= 1  # 3 pages and 2 pages
    records = [json.loads(line) for line in (out / "corrections.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == summary["lines"] == 18 and summary["failed"] == 0  # the lines with letters
    assert (out / "review.html").is_file()  # `make demo` ends with the reviewer's page
    ref = summary["reference"]
    assert {"hi", "bn"} <= set(ref["baseline"]["by_lang"]) and ref["baseline"]["overall"]["cer"] > 0
    print("demo document:", cr.summary_line(summary))


def test_an_untrained_real_vocabulary_model_cannot_harm_the_document(qwen_vocab_gguf: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """Qwen's real vocabulary on random weights: fluent-looking garbage in any script, never a stop
    token. Every reply must be refused, so the document comes back byte for byte."""
    cfg = _cfg(tmp_path)
    backend = cr.GgufBackend(qwen_vocab_gguf["gguf"], cfg)
    try:
        summary = cr.correct(DOCS / "ocr", tmp_path / "out", backend, cfg, progress=False)
    finally:
        backend.close()
    for src in sorted((DOCS / "ocr").iterdir()):
        assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes(), src.name
    assert summary["guarded"] == summary["lines"] == 18 and summary["changed"] == 0
    assert summary["pieces"] > summary["lines"]  # the long paragraph line was split to fit num_ctx 256
    print("untrained real-vocabulary model:", summary["guard_reasons"])
