"""core/gguf.py's reader and export check on GGUF files written by the pinned toolchain's own gguf-py
writer (the converter's): a well-formed file passes; truncated, lying or wrongly-typed ones are one
GgufError line each, read without trusting any length or count in them."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from bhasha_build.core import toolchain
from bhasha_build.core.gguf import GgufArray, GgufError, check_gguf, read_gguf

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


@pytest.fixture(scope="module")
def gguf_writer():
    sys.path.insert(0, str(toolchain.prepare() / "gguf-py"))
    try:
        import gguf

        yield gguf
    finally:
        sys.path.pop(0)


def write(gguf, path: Path, arch: str = "qwen2", file_type: int = 15, template: str | None = TEMPLATE) -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_file_type(file_type)
    if template is not None:
        w.add_chat_template(template)
    w.add_token_list(["a", "b", "<|im_end|>"] * 1000)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_tensor("token_embd.weight", np.ones((8, 64), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_well_formed_file_passes(gguf_writer, tmp_path: Path) -> None:
    path = write(gguf_writer, tmp_path / "m.gguf")
    info = read_gguf(path)
    assert info.version == 3 and [t.name for t in info.tensors] == ["token_embd.weight", "output_norm.weight"]
    assert info.tensors[0].nbytes == 8 * 64 * 4 and info.tensors[1].nbytes == 64 * 2
    assert info.metadata["tokenizer.ggml.tokens"] == GgufArray(item_type=8, count=3000)
    checks = check_gguf(path, "Q4_K_M")
    assert checks["architecture"] == "qwen2" and checks["file_type"] == 15 and checks["eos_token_id"] == 2
    assert checks["tensors"] == 2


def test_truncation_anywhere_is_refused(gguf_writer, tmp_path: Path) -> None:
    data = write(gguf_writer, tmp_path / "m.gguf").read_bytes()
    for cut in (3, 10, 30, 200, len(data) // 2, len(data) - 100, len(data) - 1):
        cut_file = tmp_path / f"cut{cut}.gguf"
        cut_file.write_bytes(data[:cut])
        with pytest.raises(GgufError, match=r"(truncated|bad magic)") as err:
            read_gguf(cut_file)
        assert str(err.value).startswith(cut_file.name) and "\n" not in str(err.value)


def test_tensor_data_past_the_end_names_the_tensor(gguf_writer, tmp_path: Path) -> None:
    data = write(gguf_writer, tmp_path / "m.gguf").read_bytes()
    (tmp_path / "short.gguf").write_bytes(data[:-64])  # the last tensor loses its tail
    with pytest.raises(GgufError, match=r"short\.gguf: truncated: tensor 'output_norm\.weight' needs bytes \d+\.\.\d+, "
                                        r"the file ends at \d+"):
        check_gguf(tmp_path / "short.gguf", "Q4_K_M")


def _patch_tensor_info(data: bytes, name: bytes, field: str, value: int) -> bytes:
    """Rewrite the ggml type or data offset of tensor `name` in its info record."""
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    at += 4 + 8 * n_dims
    if field == "offset":
        at += 4
    fmt = "<I" if field == "type" else "<Q"
    return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt):]


@pytest.mark.parametrize(("field", "value", "words"), [
    ("offset", 1 << 40, "truncated: tensor 'output_norm.weight'"),
    ("offset", 0, "overlaps"),
    ("offset", 8 * 64 * 4 + 3, "not aligned to 32"),
    ("type", 77, "unknown ggml type 77"),
])
def test_lying_tensor_infos(gguf_writer, tmp_path: Path, field: str, value: int, words: str) -> None:
    data = write(gguf_writer, tmp_path / "m.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_patch_tensor_info(data, b"output_norm.weight", field, value))
    with pytest.raises(GgufError, match=words.replace(".", r"\.").replace("(", r"\(")):
        read_gguf(bad)


def test_lying_counts_are_refused_before_allocating(gguf_writer, tmp_path: Path) -> None:
    data = bytearray(write(gguf_writer, tmp_path / "m.gguf").read_bytes())
    struct.pack_into("<Q", data, 16, 1 << 60)  # metadata count
    (tmp_path / "kv.gguf").write_bytes(bytes(data))
    with pytest.raises(GgufError, match="truncated or corrupt: 1152921504606846976 metadata entries"):
        read_gguf(tmp_path / "kv.gguf")


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"arch": "llama"}, "general.architecture is 'llama', not 'qwen2'"),
    ({"file_type": 1}, "general.file_type is 1, not 15 (Q4_K_M)"),
    ({"template": None}, "tokenizer.chat_template missing or not ChatML"),
])
def test_metadata_checks(gguf_writer, tmp_path: Path, kwargs: dict, words: str) -> None:
    path = write(gguf_writer, tmp_path / "m.gguf", **kwargs)
    with pytest.raises(GgufError, match=f"m.gguf: .*{words.replace('(', '[(]').replace(')', '[)]')}"):
        check_gguf(path, "Q4_K_M")


def test_not_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(GgufError, match=r"x\.gguf: not a GGUF file \(bad magic\)"):
        read_gguf(tmp_path / "x.gguf")
    with pytest.raises(GgufError, match="cannot read"):
        read_gguf(tmp_path / "missing.gguf")


@pytest.mark.slow
def test_llama_chat_retries_a_failed_decode_from_an_empty_context(tiny_gguf: dict, monkeypatch) -> None:
    """`llama_decode returned 1` (no KV slot) once: the same greedy reply from a fresh context, counted;
    a decode that keeps failing: one GgufError line naming the GGUF, not a RuntimeError traceback."""
    from bhasha_build.core.gguf import LlamaChat

    line = "नमस्ते दुनिया"
    with LlamaChat(tiny_gguf["gguf"], n_ctx=512, seed=3407) as llm:
        reference = llm.complete(line, 16)
        llm.complete("আমি বাংলায় গান গাই", 16)  # the cache now holds another prompt
        real_decode = llm.llm._ctx.decode
        failures = iter([True])

        def decode_failing_once(batch):
            if next(failures, False):
                raise RuntimeError("llama_decode returned 1")
            return real_decode(batch)

        monkeypatch.setattr(llm.llm._ctx, "decode", decode_failing_once)
        again = llm.complete(line, 16)
        assert (again.text, again.finish_reason) == (reference.text, reference.finish_reason)
        assert llm.resets == 1

        def decode_always_failing(batch):
            raise RuntimeError("llama_decode returned 1")

        monkeypatch.setattr(llm.llm._ctx, "decode", decode_always_failing)
        with pytest.raises(GgufError, match=r"model-q4_k_m\.gguf: llama\.cpp could not decode"):
            llm.complete(line, 16)
        assert llm.resets == 2


def test_llama_chat_never_asks_past_its_context_window(tiny_gguf: dict) -> None:
    """The quality lease's dry run (2026-12-02) died on a held-out line whose prompt + reply budget passed the
    tiny model's 256-token context ("Requested tokens (258) exceed context window"); the real 0.5B's 768 with
    eval's 384-token floor would have died the same way on long Tamil lines. The reply is cut to the room
    the prompt leaves; a prompt with no room gets an empty, cut reply."""
    from bhasha_build.core.gguf import LlamaChat

    with LlamaChat(tiny_gguf["gguf"], n_ctx=128, seed=3407) as llm:
        line = "नमस्ते दुनिया " * 6
        prompt_tokens = 128 - llm.count_tokens(line)  # a bound: the system prompt only adds to the line
        reply = llm.complete(line, 10_000)
        assert reply.completion_tokens <= prompt_tokens
        none_left = llm.complete("नमस्ते दुनिया " * 80, 64)
        assert (none_left.text, none_left.cut, none_left.completion_tokens) == ("", True, 0)


def test_a_llama_child_answers_as_this_process_would_and_a_dead_one_is_one_line(tiny_gguf: dict,
                                                                                   monkeypatch) -> None:
    """core/gguf.open_chat: a CUDA build (gpu_offload) answers from a spawned child that loads llama_cpp
    first (the H200's SIGSEGV came with numpy loaded first, and the sanity stage's and `correct --gguf`'s
    processes have numpy, rapidfuzz and torch loaded); its replies are the in-process chat's, token
    confidences included; a child that dies is one GgufError line, and the caller lives on."""
    import signal

    from bhasha_build.core import gguf as g

    line = "नमस्ते दुनिया"
    with g.LlamaChat(tiny_gguf["gguf"], n_ctx=256, seed=3407) as here:
        want, tokens = here.complete(line, 12), here.count_tokens(line)
    monkeypatch.setattr(g, "gpu_offload", lambda: True)
    with g.open_chat(tiny_gguf["gguf"], n_ctx=256, seed=3407) as child:
        assert isinstance(child, g.LlamaChild)
        assert child.complete(line, 12) == want and child.count_tokens(line) == tokens
        order = child._call("load_order")
        assert order and order[0] == "llama_cpp.llama_cpp", order
        os.kill(child._proc.pid, signal.SIGKILL)  # what a SIGSEGV leaves
        with pytest.raises(g.GgufError, match=r"model-q4_k_m\.gguf: llama\.cpp's process ended \(killed by SIGKILL\)"):
            child.complete(line, 12)
    monkeypatch.setattr(g, "gpu_offload", lambda: False)
    with g.open_chat(tiny_gguf["gguf"], n_ctx=256, seed=3407) as cpu:
        assert isinstance(cpu, g.LlamaChat)
    with pytest.raises(g.GgufError, match=r"nope\.gguf: llama\.cpp could not load it"):
        g.LlamaChild(tiny_gguf["gguf"].with_name("nope.gguf"), n_ctx=256, seed=1)


def test_gpu_offload_reads_the_installed_build_and_is_false_without_llama_cpp(monkeypatch) -> None:
    import sys

    from bhasha_build.core.gguf import gpu_offload

    llama_cpp = pytest.importorskip("llama_cpp")
    assert gpu_offload() is bool(llama_cpp.llama_supports_gpu_offload())  # a CPU build here, CUDA on the GPU box
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    assert gpu_offload() is True
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # not installed: import fails
    assert gpu_offload() is False


def test_several_llama_contexts_give_one_contexts_replies_in_order(tiny_gguf: dict, tmp_path: Path) -> None:
    """eval.gguf_contexts > 1 scores in worker processes, each its own llama.cpp context over an interleaved
    shard: the replies (text, cut, confidence) are one context's, row for row; "auto" is 1 on a CPU build."""
    from conftest import tiny_config

    from bhasha_build.core.gguf import gpu_offload, llama_plan
    from bhasha_build.stages.evaluate import generate_gguf

    texts = ["नमस्ते दुनिया", "আমি বাংলায় গান গাই", "வணக்கம் உலகம்", "भारत एक देश है", "এটা একটা বই"]
    one = generate_gguf(tiny_config(tmp_path, extra=["eval.gguf_contexts=1", "eval.max_new_tokens=12"]),
                        tiny_gguf["gguf"], texts)
    three = generate_gguf(tiny_config(tmp_path, extra=["eval.gguf_contexts=3", "eval.max_new_tokens=12"]),
                          tiny_gguf["gguf"], texts)
    assert len(one) == len(texts) and any(a.text for a in one)
    assert three == one
    if not gpu_offload():  # a CPU build: one context per 4 cores, nothing on a GPU
        plan = llama_plan(tiny_gguf["gguf"])
        assert (plan.n_gpu_layers, plan.contexts, plan.gpu_failure) == (0, max(1, (os.cpu_count() or 1) // 4), None)


def test_a_gpu_that_dies_generating_falls_back_to_the_cpu_with_its_reason(tiny_gguf: dict, monkeypatch,
                                                                         tmp_path: Path) -> None:
    """The lease of 2026-12-02: the CUDA build offloaded (llama_supports_gpu_offload) and quantized, then every
    scoring process died of SIGSEGV and took the run with it. The check asks a child process first; a child
    killed by a signal (or failing) sends scoring to the CPU, with the reason in one line."""
    from bhasha_build.core import gguf as g

    assert g.generation_check(tiny_gguf["gguf"]) is None  # a real answer (this CPU build ignores the layers)
    assert g.main(["check", str(tiny_gguf["gguf"]), "--layers", "0"]) == 0
    monkeypatch.setattr(g, "_checks", {})
    monkeypatch.setattr(g, "_CHECK_CODE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    failure = g.generation_check(tiny_gguf["gguf"])
    assert failure is not None and failure.startswith("llama.cpp on the GPU: killed by SIGSEGV: ")
    assert "Fatal Python error: Segmentation fault" in failure  # faulthandler's stack, for the next look
    monkeypatch.setattr(g, "_checks", {})
    log = tmp_path / "check.log"  # the shell keeps the child's whole stderr: the stack, not its last lines
    assert g.main(["check", str(tiny_gguf["gguf"]), "--layers", "-1", "--stderr", str(log)]) == 1
    assert "Fatal Python error: Segmentation fault" in log.read_text() and "Current thread" in log.read_text()
    failure = g.generation_check(tiny_gguf["gguf"])  # the CLI's child, cached
    monkeypatch.setattr(g, "gpu_offload", lambda: True)  # a CUDA build whose generation dies
    plan = g.llama_plan(tiny_gguf["gguf"], "auto")
    assert (plan.n_gpu_layers, plan.gpu_failure) == (0, failure)
    monkeypatch.setattr(g, "_checks", {(str(Path(tiny_gguf["gguf"]).resolve()), -1, False): None})  # one that works
    plan = g.llama_plan(tiny_gguf["gguf"], 3)
    assert (plan.n_gpu_layers, plan.contexts, plan.gpu_failure) == (-1, 3, None)
    monkeypatch.setattr(g, "_checks", {})
    monkeypatch.setattr(g, "_CHECK_CODE", "raise SystemExit('no CUDA device')")
    assert g.generation_check(tiny_gguf["gguf"]) == "llama.cpp on the GPU: exit 1: no CUDA device"
    assert g.main(["check", str(tiny_gguf["gguf"]), "--layers", "0"]) == 1  # the shell's question, same rule


def test_the_check_child_loads_llama_cpp_before_any_other_extension_module(tiny_gguf: dict, monkeypatch) -> None:
    """2026-12-03 on the H200: the CUDA build died of SIGSEGV loading a model whenever numpy (or core.gguf's
    rapidfuzz) was imported before llama_cpp, and answered when llama_cpp came first. The check's child
    runs as eval's workers do: BHASHA_LLAMA_FIRST=1, so the package's import loads llama_cpp first."""
    from bhasha_build.core import gguf as g

    monkeypatch.setattr(g, "_checks", {})
    monkeypatch.setattr(g, "_CHECK_CODE", (
        "import sys; import bhasha_build.core.gguf\n"
        "order = [m for m in sys.modules if m in ('llama_cpp.llama_cpp', 'numpy', 'rapidfuzz')]\n"
        "sys.exit(None if order[0] == 'llama_cpp.llama_cpp' else f'loaded in the order {order}')\n"))
    monkeypatch.delenv("BHASHA_LLAMA_FIRST", raising=False)
    assert g.generation_check(tiny_gguf["gguf"]) is None
    assert "BHASHA_LLAMA_FIRST" not in os.environ  # the caller's own environment is left as it was


_FAKE_PY = """#!/usr/bin/env bash
# the real interpreter, except for the checks the test makes fail (as the 2026-12-02 CUDA build did)
args=" $* "
if [[ $args == *" check "* ]]; then
  if [[ $args == *" --layers -1 "* && -n "${FAIL_GPU:-}" ]]; then
    log=$(sed -n 's/.*--stderr \\([^ ]*\\).*/\\1/p' <<< "$args")
    [ -z "$log" ] || printf 'Fatal Python error: Segmentation fault\\nCurrent thread 0x1:\\n' > "$log"
    echo "llama.cpp on the GPU: killed by SIGSEGV: Fatal Python error: Segmentation fault"; exit 1
  fi
  if [[ $args == *" --layers 0 "* && -n "${FAIL_CPU:-}" && ":$PYTHONPATH:" != *":$LLAMA_CPU_DIR:"* ]]; then
    echo "llama.cpp on the CPU: killed by SIGSEGV"; exit 1
  fi
fi
exec "$REAL_PY" "$@"
"""


def test_the_gpu_scripts_choose_llama_cpp_by_asking_it_to_answer(tiny_gguf: dict, tmp_path: Path) -> None:
    """scripts/llama-choose.sh, the one ladder gpu-quality.sh and gpu-bench-real.sh share, run under set -e
    as they run it: the GPU check answers -> the GPU; it dies -> this build on the CPU, with the stack kept;
    the CPU answer dies too -> the carried CPU build unpacked and first on PYTHONPATH, checked once more.
    Without a GGUF (the bench's random-init e2e): offload decides (this CPU build does not offload)."""
    import subprocess
    import sys
    import tarfile

    root = Path(__file__).resolve().parent.parent
    fake = tmp_path / "py"
    fake.write_text(_FAKE_PY)
    fake.chmod(0o755)
    carried = tmp_path / "llama-cpu.tgz"
    with tarfile.open(carried, "w:gz") as tgz:  # stands for llama_cpp: the real one answers through PYTHONPATH
        info = tarfile.TarInfo("carried-marker.txt")
        tgz.addfile(info)
    cpu_dir = tmp_path / "llama-cpu"

    def choose(gguf: str, **fail: str) -> tuple[str, list[str]]:
        env = {**os.environ, "PY": str(fake), "REAL_PY": sys.executable, "LLAMA_CPU_DIR": str(cpu_dir),
               "LLAMA_CUDA_SITE": str(tmp_path / "no-cuda-site"), "PYTHONPATH": str(root), **fail}
        script = ('set -euo pipefail; source scripts/llama-choose.sh; llama_choose "$1" "$2" "$3"; '
                  'echo "CHOICE=$LLAMA_CHOICE PP=$PYTHONPATH"')
        done = subprocess.run(["bash", "-c", script, "-", gguf, str(tmp_path / "check.log"), str(carried)],
                              cwd=root, env=env, capture_output=True, text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        return lines[-1], lines[:-1]

    gguf = str(tiny_gguf["gguf"])
    last, said = choose(gguf)
    assert last.startswith("CHOICE=gpu ") and said == ["llama.cpp GPU check: ok"]
    last, said = choose(gguf, LLAMA_DIAGNOSE="1")  # the record of which libraries, and with torch's loaded first
    assert last.startswith("CHOICE=gpu ") and said[0] == "llama.cpp GPU check: ok" and len(said) == 3
    assert said[1].startswith("llama.cpp GPU check's CUDA libraries: ") and "libggml" in said[1]
    assert "libggml" in (tmp_path / "check-libs.log").read_text()
    assert said[2] == "llama.cpp GPU check with torch's CUDA libraries loaded first: ok"
    last, said = choose(gguf, FAIL_GPU="1")
    assert last.startswith("CHOICE=cuda-build-on-cpu ") and str(cpu_dir) not in last
    assert said[0].startswith("llama.cpp GPU check: llama.cpp on the GPU: killed by SIGSEGV")
    assert said[1] == "llama.cpp CPU check (the CUDA build): ok"
    assert "Segmentation fault" in (tmp_path / "check.log").read_text()
    last, said = choose(gguf, FAIL_GPU="1", FAIL_CPU="1")
    assert last.startswith(f"CHOICE=carried-cpu PP={cpu_dir}:") and (cpu_dir / "carried-marker.txt").exists()
    assert said[-1] == "llama.cpp: the carried CPU build (ok)"
    last, said = choose("")
    assert last.startswith(f"CHOICE=carried-cpu PP={cpu_dir}:")
    assert said == ["llama.cpp: the CUDA build does not offload; the carried CPU build"]
