"""The fault suite (issue 12): the project under faults and hostile input, end to end.

Each case drives the real code the way a failure would reach it and checks the three promises:
nothing stale or half-replaced is consumed or served, nothing is written outside the run folder,
and the failure is one line naming the file/host and the reason (no traceback).

  full disk      a small real tmpfs filled up: the data folder is swapped in whole or not at all,
                 a write names its path, the manifest's failure record never hides the first error
  kill           Ctrl-C and SIGKILL of `invoke export` while the GGUF is being written (slow)
  stale          a tampered GGUF and a GGUF older than the adapter are refused by every consumer (slow)
  ollama         a stalled, truncating, lying or dropping server during deploy: the live model is
                 untouched and deploy.json says what happened
  hostile tar    learning-signal parts with a symlink + file under it, a hard link to a system file,
                 a tampered part
  hostile data   a 20 MB line, 100k nested brackets, ChatML special tokens, invalid UTF-8, NUL bytes,
                 broken CSV quoting, through `invoke data`
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ctrl_c_as_a_terminal_sends_it, fill, tar_bytes, tiny_config
from ollama_server import OllamaContractServer

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import StaleArtifactError, WriteError
from bhasha_build.core.fsutil import atomic_write_text, sha256_file
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.manifest import Manifest
from bhasha_build.core.ollama import OllamaClient
from bhasha_build.stages.data import DataError, prepare
from bhasha_build.tools import learning_signal as ls

REPO = Path(__file__).resolve().parent.parent
PAGE = 4096
HI = [("कल रात तेज बारिश हुई|", "कल रात तेज़ बारिश हुई।"), ("भारत एक विशाल देश हे।", "भारत एक विशाल देश है।"),
      ("गंगा नदी हिमालय से निकलती हे।", "गंगा नदी हिमालय से निकलती है।"), ("बच्चे स्कूल जाते हैं।", "बच्चे स्कूल जाते हैं।")]


def invoke(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **(env or {})}, **kw)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def rows_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def pages(path: Path) -> int:
    return -(-path.stat().st_size // PAGE)


# -- full disk ------------------------------------------------------------------------------------


def test_full_disk_leaves_the_previous_data_folder_whole(tmp_path: Path, small_fs) -> None:
    """A second data run that fills the disk halfway through writing its four files: the first run's
    data/ stays byte for byte (the old four-atomic-files code paired a new train.jsonl with the old
    rest)."""
    cfg = BuildConfig()
    small = rows_file(tmp_path / "small.jsonl", [{"lang": "hi", "noisy": n, "clean": c} for n, c in HI])
    many = [{"lang": "hi", "noisy": f"{n} {i}", "clean": f"{c} {i}"} for i in range(1500) for n, c in HI[:1]]
    bad = [f"broken line {i} " + "x" * 900 for i in range(400)]  # 400 rejects of ~1 KB
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in many) + "\n".join(bad) + "\n",
                   encoding="utf-8")
    probe = tmp_path / "probe"
    prepare(big, probe, cfg)  # the second run's file sizes, measured on a roomy disk

    fs = small_fs(8 << 20)
    out = fs / "data"
    prepare(small, out, cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # Room for the new train and eval splits, not for the rejects after them.
    fill(fs, (pages(probe / "train.jsonl") + pages(probe / "eval.jsonl") + 2) * PAGE)
    assert pages(probe / "rejects.jsonl") > 10
    with pytest.raises(WriteError, match=rf"{out}: cannot write \(No space left on device\); nothing was replaced"):
        prepare(big, out, cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in fs.iterdir()) == [".filler", "data"]  # no temp folder left behind


def test_full_disk_write_names_the_file_and_keeps_the_old_one(tmp_path: Path, small_fs) -> None:
    fs = small_fs(1 << 20)
    target = fs / "eval.json"
    atomic_write_text(target, "old")
    fill(fs, PAGE)
    with pytest.raises(WriteError) as err:
        atomic_write_text(target, "x" * 50_000)
    assert str(err.value) == f"{target}: cannot write (No space left on device); nothing was replaced"
    assert target.read_text() == "old" and sorted(p.name for p in fs.iterdir()) == [".filler", "eval.json"]


@pytest.fixture(scope="module")
def tokenizer_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model folder (config + tokenizer) for a non-tiny data stage that needs no building."""
    from bhasha_build.core.config import TinyModelConfig
    from bhasha_build.core.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tok") / "model", [c for _, c in HI] * 20, TinyModelConfig())


def test_full_disk_manifest_failure_record_does_not_hide_the_first_error(
    tmp_path: Path, small_fs, tokenizer_model: Path
) -> None:
    """The data stage fails (no valid rows) on a disk so full that recording the failure in the
    manifest fails too: the user must see the data error, and a warning about the manifest."""
    from bhasha_build.stages import pipeline

    fs = small_fs(4 << 20)
    bad_input = rows_file(tmp_path / "bad.jsonl", [{"lang": "hi", "noisy": "", "clean": ""}])
    cfg = BuildConfig.model_validate({"runs_dir": str(fs), "run": "full", "model": {"name": str(tokenizer_model)},
                                      "data": {"input": str(bad_input)}})
    manifest = Manifest(cfg.run_dir)
    manifest.init(cfg)
    # Pad the manifest so that it ends 40 bytes short of a page: init still fits in the pages it
    # frees, while the failure record (status, seconds, error) needs one more page than is free.
    size = manifest.path.stat().st_size
    manifest.update(padding="")
    pad = (PAGE - 40 - manifest.path.stat().st_size) % PAGE
    manifest.update(padding="p" * pad)
    manifest.init(cfg)
    assert manifest.path.stat().st_size % PAGE == PAGE - 40 and size
    fill(fs, pages(manifest.path) * PAGE)
    with pytest.raises(DataError, match="no valid rows"):
        pipeline.run_data(cfg)
    assert "failed" not in json.dumps(manifest.load().get("stages", {}))  # could not be recorded: disk full


def test_full_disk_through_invoke_is_one_line(tmp_path: Path, small_fs, tokenizer_model: Path) -> None:
    fs = small_fs(2 << 20)
    src = rows_file(tmp_path / "hi.jsonl", [{"lang": "hi", "noisy": f"{n} {i}", "clean": f"{c} {i}"}
                                            for i in range(800) for n, c in HI[:1]])
    sets = ["--set", f'runs_dir="{fs}"', "--set", f'model.name="{tokenizer_model}"']
    fill(fs, 8 * PAGE)  # the manifest fits, the data folder (~80 kB) does not
    proc = invoke("data", "--run", "full", "--input", str(src), *sets)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line == f"error: {fs / 'full' / 'data'}: cannot write (No space left on device); nothing was replaced"
    manifest = json.loads((fs / "full" / "manifest.json").read_text())
    assert manifest["stages"]["data"]["status"] == "failed" and "No space left" in manifest["stages"]["data"]["error"]
    assert not (fs / "full" / "data").exists()


# -- Ollama that stalls, truncates, lies or drops, during deploy ---------------------------------------


def _deploy_run(tmp_path: Path) -> Path:
    from bhasha_build.stages.modelfile import render_modelfile

    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    gguf = RunLayout(run).gguf("Q4_K_M")
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(2048))
    render_modelfile(gguf, RunLayout(run).modelfile, BuildConfig())
    return run


@pytest.mark.parametrize(("path", "fault", "said"), [
    ("/api/chat", "stall", "no complete answer within 2s"),
    ("/api/chat", "trickle", "no complete answer within 2s"),
    ("/api/chat", "truncate", "the answer was cut off midway"),
    ("/api/chat", "html", "answered HTML"),
    ("/api/chat", "list", "answered a JSON list"),
    ("/api/show", "html", "answered HTML"),
    ("/api/tags", "list", "answered a JSON list"),
])
def test_faulty_ollama_never_touches_the_live_model(tmp_path: Path, path: str, fault: str, said: str) -> None:
    from bhasha_build.stages.deploy import DeployError, deploy

    run = _deploy_run(tmp_path)
    cfg = BuildConfig.model_validate({"deploy": {"timeout_s": 2}})
    with OllamaContractServer() as srv:
        url, client = srv.url, OllamaClient(srv.url)
        live_gguf = tmp_path / "live.gguf"
        live_gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(512))
        client.create("bhasha-ocr", {live_gguf.name: client.push_blob(live_gguf)})
        live = client.model_digest("bhasha-ocr")
        srv.faults[path] = fault
        start = time.monotonic()
        with pytest.raises((DeployError, Exception)) as err:
            deploy(run, cfg, "bhasha-ocr", srv.url, force=True)
        assert time.monotonic() - start < 10
        del srv.faults[path]
        assert client.model_digest("bhasha-ocr") == live  # the live model was never replaced
    message = str(err.value)
    assert said in message and url in message and "\n" not in message
    report = json.loads((run / "deploy.json").read_text())
    assert report["status"] in ("failed", "flagged") and report.get("live_digest_before") in (live, None)
    assert report == err.value.report


# -- hostile archives (learning-signal parts travel between machines unsigned) -------------------------


def _parts(parts_dir: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    parts_dir.mkdir()
    (parts_dir / "run.tar.gz.part00").write_bytes(tar_bytes(members, "w:gz"))
    part = parts_dir / "run.tar.gz.part00"
    # A forged index: it matches the parts, so only the member check stands between them and the disk.
    (parts_dir / ls.PARTS_INDEX).write_text(json.dumps({"parts": [
        {"name": part.name, "bytes": part.stat().st_size, "sha256": sha256_file(part)}]}))


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize("case", ["symlink-then-file", "hardlink-to-system-file"])
def test_hostile_parts_write_nothing_outside_the_run(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = {
        "symlink-then-file": [(_member("manifest.json"), b"{}"),
                              (_member("adapter", tarfile.SYMTYPE, str(outside)), None),
                              (_member("adapter/authorized_keys"), b"ssh-ed25519 AAAA attacker")],
        "hardlink-to-system-file": [(_member("passwd", tarfile.LNKTYPE, "/etc/passwd"), None),
                                    (_member("manifest.json"), b"{}")],
    }[case]
    _parts(tmp_path / "parts", members)
    run = RunLayout(tmp_path / "runs" / "signal")
    run.root.mkdir(parents=True)
    (run.root / "keep.txt").write_text("the run as it was")
    with pytest.raises(ls.SignalError, match="not a plain file or folder"):
        ls.unpack_run(tmp_path / "parts", run)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in run.root.iterdir()) == ["keep.txt"]  # untouched, no temp folder
    assert sorted(p.name for p in run.root.parent.iterdir()) == ["signal"]


def test_tampered_part_is_refused_naming_both_hashes(tmp_path: Path) -> None:
    _parts(tmp_path / "parts", [(_member("manifest.json"), b"{}")])
    part = tmp_path / "parts" / "run.tar.gz.part00"
    recorded = sha256_file(part)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in transit
    part.write_bytes(bytes(data))
    with pytest.raises(ls.SignalError) as err:
        ls.unpack_run(tmp_path / "parts", RunLayout(tmp_path / "run"))
    assert f"sha256 {sha256_file(part)} is not {recorded}" in str(err.value)
    assert not (tmp_path / "run").exists()


# -- hostile data files through `invoke data` --------------------------------------------------------


@pytest.mark.slow
def test_hostile_data_files_through_invoke(tmp_path: Path) -> None:
    src = tmp_path / "input"
    src.mkdir()
    good = [{"lang": "hi", "noisy": n, "clean": c} for n, c in HI]
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in good]
    lines += [
        json.dumps({"lang": "hi", "noisy": "क", "clean": "क", "pad": "x" * 20_000_000}).encode(),  # too_large
        b"[" * 100_000,  # malformed_json: nested
        json.dumps({"lang": "hi", "noisy": "भारत", "clean": "भारत<|im_end|>"}, ensure_ascii=False).encode(),
        json.dumps({"messages": [{"role": "user", "content": "नमस्ते<|im_start|>system"},
                                 {"role": "assistant", "content": "नमस्कार"}]}, ensure_ascii=False).encode(),
        b'{"lang": "hi", "noisy": "\xff\xfe", "clean": "x"}',  # invalid_utf8
        json.dumps({"lang": "hi", "noisy": "भारत\u0000", "clean": "भारत"}, ensure_ascii=False).encode(),
        b"\x00\x01\x02 binary junk \x7f",
    ]
    (src / "hi.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (src / "bn.csv").write_text('noisy,clean\n"আমার সোনার,আমার সোনার\nকলকাতা শহরে,কলকাতা শহরে।\n', encoding="utf-8")
    run = tmp_path / "runs"
    proc = invoke("data", "--profile", "tiny-cpu", "--run", "hostile", "--input", str(src),
                  "--set", f'runs_dir="{run}"', "--set", "model.tiny.pretrain_steps=0")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    stats = json.loads((run / "hostile" / "data" / "stats.json").read_text())
    assert stats["rows_read"] == stats["kept"] + stats["rejected"] + stats["duplicates_dropped"]
    assert stats["kept"] == len(good) + 1
    assert stats["rejects_by_reason"] == {"too_large": 1, "malformed_json": 2, "special_token": 2,
                                          "invalid_utf8": 1, "control_chars": 1, "malformed_csv": 1}
    assert (run / "hostile" / "data" / "rejects.jsonl").stat().st_size < 20_000


# -- kill during export (slow: the session's tiny run) ------------------------------------------------


def _copy_run(tiny_pipeline: dict[str, Any], dest: Path) -> BuildConfig:
    src = Path(tiny_pipeline["run_dir"])
    shutil.copytree(src, dest / src.name, symlinks=True)
    return tiny_config(dest, run=src.name)


def _sets(cfg: BuildConfig) -> list[str]:
    from conftest import TINY_TEST_OVERRIDES

    out = ["--profile", "tiny-cpu", "--run", cfg.run, "--set", f'runs_dir="{cfg.runs_dir}"']
    for item in TINY_TEST_OVERRIDES:
        out += ["--set", item]
    return out


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 600) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_kill_during_export_loses_nothing(tiny_pipeline: dict[str, Any], tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGKILL while the f16
    GGUF is being written: the final names keep the previous export, byte for byte; Ctrl-C removes the
    partial file, SIGKILL can leave it, and the next export replaces it and finishes."""
    cfg = _copy_run(tiny_pipeline, tmp_path)
    layout = cfg.layout
    finals = {p: sha256_file(p) for p in (layout.gguf_f16, layout.gguf("Q4_K_M"))}
    partial = layout.root / f".{layout.gguf_f16.name}.partial"
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "export", "--force", *_sets(cfg)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=ctrl_c_as_a_terminal_sends_it)
    seen = _wait_for(partial, proc)
    if seen:
        os.killpg(proc.pid, signal.SIGSTOP)  # freeze the converter mid-write, then deliver the signal
        os.killpg(proc.pid, sig)
        os.killpg(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert seen, f"the export finished before its partial GGUF was seen:\n{out[-1500:]}{err[-1500:]}"
    assert {p: sha256_file(p) for p in finals} == finals  # the previous export is intact
    leftovers = sorted(p.name for p in layout.root.iterdir() if p.name.startswith("."))
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
        assert leftovers == []
        stage = json.loads(layout.manifest.read_text())["stages"]["export"]
        assert stage["status"] == "failed" and stage["error"] == "KeyboardInterrupt"
    else:
        assert proc.returncode == -signal.SIGKILL
        assert set(leftovers) <= {partial.name, f".{layout.gguf_f16.name}.convert.json"}
    again = invoke("export", "--force", *_sets(cfg))
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name for p in layout.root.iterdir() if p.name.startswith(".")) == []
    record = json.loads(layout.manifest.read_text())["artifacts"]["gguf"]
    assert record["sha256"] == sha256_file(layout.gguf("Q4_K_M"))


# -- stale artifacts: tampered, or older than what they were made from (slow) ---------------------


@pytest.mark.slow
def test_tampered_gguf_is_refused_by_every_consumer(tiny_pipeline: dict[str, Any], tmp_path: Path) -> None:
    from bhasha_build.stages import pipeline

    cfg = _copy_run(tiny_pipeline, tmp_path)
    gguf = cfg.layout.gguf("Q4_K_M")
    recorded = Manifest(cfg.run_dir).load()["artifacts"]["gguf"]["sha256"]
    with gguf.open("r+b") as fh:  # the last 4 KiB zeroed: structurally still a valid GGUF
        fh.seek(-4096, os.SEEK_END)
        fh.write(b"\0" * 4096)
    now = sha256_file(gguf)
    for run in (pipeline.run_modelfile, pipeline.run_sanity, lambda c: pipeline.run_deploy(c, host="127.0.0.1:9"),
                lambda c: pipeline.run_eval(c, ("gguf",))):
        with pytest.raises(StaleArtifactError) as err:
            run(cfg)
        assert str(err.value) == (f"{gguf}: sha256 {now} is not {recorded}, the one the export stage recorded "
                                  "(changed or corrupt since); re-run `invoke export`")
    proc = invoke("modelfile", *_sets(cfg))
    assert proc.returncode == 1 and f"sha256 {now} is not {recorded}" in one_error_line(proc)


@pytest.mark.slow
def test_gguf_older_than_a_retrained_adapter_is_refused(tiny_pipeline: dict[str, Any], tmp_path: Path) -> None:
    from bhasha_build.stages import pipeline

    cfg = _copy_run(tiny_pipeline, tmp_path)
    old_adapter = Manifest(cfg.run_dir).load()["artifacts"]["adapter"]["sha256"]
    retrained = tiny_config(tmp_path, run=cfg.run, extra=["train.max_steps=2", "train.save_steps=1"])
    pipeline.run_train(retrained, force=True)
    new_adapter = Manifest(cfg.run_dir).load()["artifacts"]["adapter"]["sha256"]
    assert new_adapter != old_adapter
    gguf = cfg.layout.gguf("Q4_K_M")
    for run in (pipeline.run_modelfile, pipeline.run_sanity, lambda c: pipeline.run_deploy(c, host="127.0.0.1:9")):
        with pytest.raises(StaleArtifactError) as err:
            run(retrained)
        assert str(err.value) == (f"{gguf}: made from a adapter that has changed since ({old_adapter} -> "
                                  f"{new_adapter}); re-run `invoke export`")


@pytest.mark.slow
def test_export_refuses_a_short_gguf_before_it_gets_its_name(tiny_pipeline: dict[str, Any], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The quantizer writes a file 100 bytes short (a full disk, a crash inside llama.cpp): export's check
    sees it under its temporary name and refuses it; the previous q4_k_m stays, nothing partial remains."""
    from bhasha_build.core import gguf
    from bhasha_build.stages import export, pipeline

    cfg = _copy_run(tiny_pipeline, tmp_path)
    final = cfg.layout.gguf("Q4_K_M")
    before = sha256_file(final)
    real_check = gguf.check_gguf

    def short_then_check(path: Path, quant: str) -> dict[str, Any]:
        if quant == "Q4_K_M":
            assert path.name == f".{final.name}.partial"  # checked before the rename
            with path.open("r+b") as fh:
                fh.truncate(path.stat().st_size - 100)
        return real_check(path, quant)

    monkeypatch.setattr(export, "check_gguf", short_then_check)
    with pytest.raises(export.ExportError) as err:
        pipeline.run_export(cfg, force=True)
    assert str(err.value).startswith(f"{final}: refused before it got its name: .{final.name}.partial: truncated: "
                                     "tensor ")
    assert sha256_file(final) == before
    assert not [p.name for p in cfg.layout.root.iterdir() if p.name.endswith(".partial")]
    assert Manifest(cfg.run_dir).load()["stages"]["export"]["status"] == "failed"


def test_a_failed_tiny_rebuild_keeps_the_previous_base_model(tmp_path: Path, monkeypatch) -> None:
    """The data stage rebuilds the tiny base model from the new data; when that build fails, the
    previous base model is still there, byte for byte, and no half-built folder is left beside it."""
    from bhasha_build.core import tiny
    from bhasha_build.core.fsutil import sha256_path
    from bhasha_build.stages import pipeline

    src = rows_file(tmp_path / "hi.jsonl", [{"lang": "hi", "noisy": f"{n} {i}", "clean": f"{c} {i}"}
                                            for i in range(30) for n, c in HI])
    cfg = tiny_config(tmp_path / "runs", extra=[f'data.input="{src}"', "model.tiny.pretrain_steps=0"])
    pipeline.run_data(cfg)
    base = RunLayout(cfg.run_dir).base_model
    before = sha256_path(base)

    def tokenizer_training_fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tokenizer training failed")

    monkeypatch.setattr(tiny, "train_tokenizer", tokenizer_training_fails)
    rows_file(src, [{"lang": "hi", "noisy": n, "clean": c} for n, c in HI])  # new data: the stage runs again
    with pytest.raises(RuntimeError, match="tokenizer training failed"):
        pipeline.run_data(cfg)
    assert sha256_path(base) == before
    assert [p.name for p in base.parent.iterdir() if p.name.startswith(f".{base.name}")] == []


# -- secrets and misplaced folders, through invoke: one line, no secret printed or recorded ------------


def test_no_token_reaches_the_log_deploy_json_or_the_manifest(tmp_path: Path) -> None:
    """A server (or a proxy in front of it) whose 401 body echoes the Authorization header and the bare
    token: the user sees the refusal, the token is in none of the log, deploy.json and manifest.json
    (which the nightly uploads)."""
    run = _deploy_run(tmp_path)
    manifest = Manifest(run)
    for key, path in (("gguf", RunLayout(run).gguf("Q4_K_M")), ("modelfile", RunLayout(run).modelfile)):
        manifest.artifact(key, path, made_from={})
    token = "tok-" + os.urandom(8).hex()
    with OllamaContractServer() as srv:
        srv.faults["/api/version"] = "echo-auth"
        proc = invoke("deploy", "--run", "demo", "--set", f'runs_dir="{tmp_path / "runs"}"', "--host", srv.url,
                      "--force", env={"BHASHA_OLLAMA_TOKEN": token})
        assert srv.authorizations[-1] == f"Bearer {token}"
    line = one_error_line(proc)
    assert "GET /api/version failed (401): unauthorized" in line and "***" in line
    recorded = json.loads((run / "deploy.json").read_text())["error"], json.loads(manifest.path.read_text())
    assert "unauthorized" in recorded[0] and "unauthorized" in recorded[1]["stages"]["deploy"]["error"]
    for text in (proc.stdout + proc.stderr, (run / "deploy.json").read_text(), manifest.path.read_text()):
        assert token not in text


@pytest.mark.parametrize("host", ["http://admin:S3C/RETPW@gpu-box", "https://gpu-box/?token=S3CRETPW"])
def test_a_secret_in_the_host_is_one_line_and_never_printed(tmp_path: Path, host: str) -> None:
    """However the host is given (--host, OLLAMA_HOST, --set deploy.host), it is refused before anything
    is sent or recorded, in one line that does not hold the password or the query."""
    for args, env in (((), {"OLLAMA_HOST": host}), (("--host", host), {}),
                      (("--set", f'deploy.host="{host}"'), {})):
        proc = invoke("deploy", "--run", "demo", "--set", f'runs_dir="{tmp_path / "runs"}"', *args, env=env)
        line = one_error_line(proc)
        assert "BHASHA_OLLAMA_TOKEN" in line and "gpu-box" in line, line
        assert "S3C" not in proc.stdout + proc.stderr and "RETPW" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing recorded


def test_a_file_where_a_folder_belongs_is_one_line(tmp_path: Path) -> None:
    """runs_dir naming a file, BHASHA_MODEL_CACHE naming a file, a weights.json torn by a crash or not
    an object: each one line naming the path (they were tracebacks)."""
    from bhasha_build.core import weights

    a_file = tmp_path / "runs.txt"
    a_file.write_text("not a folder\n")
    proc = invoke("data", "--set", f'runs_dir="{a_file}"')
    assert f"runs_dir: {a_file} must be a folder, not a file" in one_error_line(proc)
    proc = invoke("data", "--set", f'runs_dir="{a_file / "runs"}"')
    assert f"({a_file} is not a folder)" in one_error_line(proc)

    proc = invoke("fetch-model", env={"BHASHA_MODEL_CACHE": str(a_file)})
    assert f"BHASHA_MODEL_CACHE {a_file} must be a folder, but {a_file} is a file" in one_error_line(proc)

    cache = tmp_path / "cache"
    record = cache / weights.SOURCES["qwen2.5-coder-0.5b-instruct"].folder / weights.RECORD
    record.parent.mkdir(parents=True)
    for body, reason in (('{"recipe": 1, "hf": {"sha256": "ab', "not valid JSON"),
                         ('[{"recipe": 1}]', "a JSON list, not an object"),
                         ('{"recipe": 1, "hf": "x"}', "'hf' is not an object")):
        record.write_text(body)
        line = one_error_line(invoke("fetch-model", env={"BHASHA_MODEL_CACHE": str(cache)}))
        assert f"{record}: not a fetch record ({reason}" in line and "--force" in line, line
        assert record.read_text() == body  # left for the user to look at
