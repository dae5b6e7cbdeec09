"""The Invoke shell: every stage is a task with help, and user mistakes end in one line, exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_every_stage_is_listed() -> None:
    out = invoke("--list").stdout
    for name in ("data", "noise", "train", "export", "eval", "modelfile", "sanity", "deploy", "correct", "pipeline",
                 "demo", "bench", "bench-correct", "doctor", "toolchain", "ocr-pairs", "noise-fit", "promote",
                 "rollback", "report", "fetch-model", "review", "dev.test", "dev.lint"):
        assert f"  {name}" in out, name


@pytest.mark.parametrize(("task", "flags"), [
    ("deploy", ("--name", "--host", "--force", "--profile", "--set", "--run")),
    ("correct", ("--input", "--out", "--name", "--host", "--gguf", "--reference", "--lang", "--jobs", "--set",
                 "--apply", "--verbose")),
    ("review", ("--corrections", "--out")),
    ("data", ("--input", "--verbose")),
])
def test_flags_have_help(task: str, flags: tuple[str, ...]) -> None:
    out = invoke("--help", task).stdout
    for flag in flags:
        line = next(ln for ln in out.splitlines() if flag in ln)
        assert len(line.split(flag, 1)[1].strip()) > 10, f"{flag} has no help text"


@pytest.mark.parametrize(("args", "expected"), [
    (("data", "--input", "/no/such/place"), "/no/such/place: input not found"),
    (("data", "--set", "train.nope=1"), "unknown config key 'train.nope'"),
    (("train", "--profile", "nope"), "no profile 'nope'"),
    (("correct", "--input", "/no/such/place"), "/no/such/place: input not found"),
    (("correct", "--input", "data/documents/ocr", "--gguf", "/no/model.gguf"), "/no/model.gguf: GGUF not found"),
    (("correct", "--input", "data/documents/ocr", "--host", "http://127.0.0.1:9"),
     "Ollama is unreachable at http://127.0.0.1:9"),
    (("correct",), "correct needs an input file or folder (or --apply review.jsonl)"),
    (("correct", "--input", "data/documents/ocr", "--out", "data/documents/ocr/corrected"),
     "data/documents/ocr/corrected: the output folder is inside the input data/documents/ocr"),
    (("correct", "--input", "data/documents/ocr", "--out", "README.md"), "README.md: exists and is not a folder"),
    (("correct", "--apply", "/no/review.jsonl"), "corrected: no such `correct` output folder"),
    (("correct", "--apply", "/no/review.jsonl", "--out", "data/documents/ocr"), "/no/review.jsonl: not found"),
    (("review", "--corrections", "/no/corrections.jsonl"), "/no/corrections.jsonl: not found"),
])
def test_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    proc = invoke(*args, "--set", f'runs_dir="{tmp_path}"')
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (("ocr-pairs", "--input", "/no/such.txt", "--out", "o.jsonl", "--lang", "hi"), "/no/such.txt: input not found"),
    (("ocr-pairs", "--input", "data/clean/hi.txt", "--out", "o.jsonl", "--lang", "hi", "--degrade", "x"),
     "--degrade 'x': not a preset"),
    (("noise-fit", "--pairs", "/no/pairs.jsonl", "--out", "m.json"), "/no/pairs.jsonl: pairs file not found"),
    (("noise", "--input", "data/clean/hi.txt", "--out", "o.jsonl", "--model", "/no/model.json"),
     "/no/model.json: cannot read"),
])
def test_real_ocr_tasks_fail_in_one_line(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    proc = invoke(*[str(tmp_path / a) if a.endswith((".jsonl", ".json")) and not a.startswith("/") else a
                    for a in args])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr


def test_stage_without_its_inputs_says_what_to_run(tmp_path: Path) -> None:
    proc = invoke("train", "--profile", "tiny-cpu", "--set", f'runs_dir="{tmp_path}"', "--run", "empty")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "run `invoke data` first" in proc.stderr


def test_arguments_reach_commands_unparsed_by_a_shell(tmp_path: Path) -> None:
    # `!r` is not shell quoting: `-k "it's $(id -un)"` used to run `id`. Tasks pass argument lists.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "id-was-run"
    fake = bin_dir / "id"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\necho someone\n")
    fake.chmod(0o755)
    expr = "it's $(id -un)"
    proc = invoke("dev.test", "-k", expr, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert not marker.exists(), "a shell expanded the -k expression"
    echoed = proc.stdout.splitlines()[0]
    assert echoed.endswith(" -k 'it'\"'\"'s $(id -un)'"), echoed  # shown quoted, passed as one argument
    assert "Wrong expression passed to '-k'" in proc.stdout + proc.stderr and proc.returncode == 4
