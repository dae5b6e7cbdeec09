"""Shared fixtures. The expensive one, `tiny_pipeline`, runs the real stages once per session on the
tiny model: data → train (Unsloth CPU backend) → export (pinned llama.cpp) → modelfile."""

from __future__ import annotations

import io
import os
import signal
import tarfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# Fewer steps than the demo: enough for the model to learn the format and stop; tests check mechanics.
TINY_TEST_OVERRIDES = ["train.max_steps=40", "train.save_steps=20", "model.tiny.pretrain_steps=150"]


def tiny_config(runs_dir: Path, run: str = "ci", extra: list[str] | None = None):
    from bhasha_build.core.config import load_config

    return load_config(profile="tiny-cpu", env={}, overrides=[
        f'runs_dir="{runs_dir}"', f'run="{run}"', *TINY_TEST_OVERRIDES, *(extra or [])])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `nightly` tier (long CPU proofs: minutes each on 2 cores) runs with BHASHA_NIGHTLY_TESTS=1:
    `make test-nightly` and the nightly workflow; `make test` skips it, saying why."""
    if os.environ.get("BHASHA_NIGHTLY_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="nightly tier (minutes on 2 cores): BHASHA_NIGHTLY_TESTS=1 / make test-nightly")
    for item in items:
        if "nightly" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real tiny run: returns cfg, run_dir, stage results and artifact paths."""
    from bhasha_build.core import toolchain
    from bhasha_build.stages import pipeline

    toolchain.prepare()
    runs = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(runs)
    stats = pipeline.run_data(cfg)
    train = pipeline.run_train(cfg)
    export = pipeline.run_export(cfg)
    modelfile = pipeline.run_modelfile(cfg)
    return {"cfg": cfg, "run_dir": cfg.run_dir, "stats": stats, "train": train, "export": export,
            "modelfile": modelfile, "gguf": export["gguf"], "merged": export["merged"]}


@pytest.fixture(scope="session")
def tiny_gguf(tiny_pipeline: dict[str, Any]) -> dict[str, Any]:
    """{"hf_dir": merged HF folder, "gguf": q4_k_m GGUF} of the session's tiny run."""
    return {"hf_dir": tiny_pipeline["merged"], "gguf": tiny_pipeline["gguf"]}


@pytest.fixture(scope="session")
def memorized_gguf(tiny_gguf: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model fine-tuned (in the training chat format) until it answers the built-in
    sanity sample exactly, then converted to q4_k_m like export does: a model whose CER is known."""
    import json
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bhasha_build.core import chat, toolchain
    from bhasha_build.core.tiny import MARKER_FILE
    from bhasha_build.stages.deploy import BUILTIN_SAMPLE

    gguf_name = "memorized-q4_k_m.gguf"

    src, out = Path(tiny_gguf["hf_dir"]), tmp_path_factory.mktemp("memorized")
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    messages = chat.pair_messages(BUILTIN_SAMPLE["noisy"], BUILTIN_SAMPLE["clean"])
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = chat.render_chatml(messages)
    assert full.startswith(prompt)
    ids = tok(full, add_special_tokens=False, return_tensors="pt").input_ids
    labels = ids.clone()
    labels[:, : len(tok(prompt, add_special_tokens=False).input_ids)] = -100  # loss on the answer only
    torch.manual_seed(0)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs 5x faster on one thread than on two busy ones
    try:
        for _ in range(80):
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
            if loss.item() < 0.02:
                break
    finally:
        torch.set_num_threads(threads)
    hf_dir = out / "hf"
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    marker = src / MARKER_FILE
    pre = json.loads(marker.read_text())["pre_tokenizer"] if marker.exists() else None
    if marker.exists():
        shutil.copy(marker, hf_dir / MARKER_FILE)
    toolchain.convert_to_gguf(hf_dir, out / "f16.gguf", outtype="f16", register_pre_tokenizer=pre)
    toolchain.quantize(out / "f16.gguf", out / gguf_name, "Q4_K_M")
    return out / gguf_name


@pytest.fixture
def small_fs(tmp_path: Path):
    """A factory of small real filesystems (tmpfs of `size` bytes, mounted under tmp_path; needs root
    or passwordless sudo, as CI runners have); each is unmounted at the end. Skipped where neither is
    available, failed under CI=true (the fault suite must run there)."""
    import shutil
    import subprocess

    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and (not shutil.which("sudo") or subprocess.run([*sudo, "true"], capture_output=True).returncode):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the full-disk tests need root or passwordless sudo to mount a tmpfs")
        pytest.skip("mounting a small tmpfs needs root or passwordless sudo")
    mounted: list[Path] = []

    def mount(size: int, name: str = "fs") -> Path:
        point = tmp_path / name
        point.mkdir()
        opts = f"size={size},mode=0755,uid={os.getuid()},gid={os.getgid()}"
        proc = subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run([*sudo, "umount", "-l", str(point)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the filesystem of `folder` up to `leave` free bytes (tmpfs counts whole pages)."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    if free > leave:
        with open(folder / ".filler", "wb") as fh:
            fh.write(b"\0" * (free - leave))


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    """An archive of `members` (a TarInfo and its data; None for links, folders, devices) as bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def qwen_vocab_gguf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny real-vocabulary model: Qwen2.5's tokenizer (core/qwen_tokenizer.py) on a 152,064-row
    embedding (hidden 256, random init, untrained), converted to an f16 GGUF by the pinned llama.cpp.
    {"hf_dir", "gguf", "convert": the converter's report (pre-tokenizer, whether one was registered)}."""
    from bhasha_build.core import tiny, toolchain
    from bhasha_build.core.config import TinyModelConfig

    toolchain.prepare()
    root = tmp_path_factory.mktemp("qwen-vocab")
    hf = tiny.build_tiny_model(root / "hf", [], TinyModelConfig(tokenizer="qwen2.5", vocab_size=152064))
    gguf = root / "model-f16.gguf"
    report = toolchain.convert_to_gguf(hf, gguf, outtype="f16")
    return {"hf_dir": hf, "gguf": gguf, "convert": report}


@pytest.fixture(scope="session")
def real_ollama(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real `ollama serve` 0.24.0 for the session (tests/real_ollama.py): temp HOME and models, a free
    loopback port, stopped at the end. Skipped, with one reason, where no binary is found. Ask for it
    before `tiny_gguf`, so a clone without Ollama skips before building the tiny model."""
    from real_ollama import SKIP_REASON, RealOllama, find_binary

    binary = find_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    with RealOllama(binary, tmp_path_factory.mktemp("real-ollama")) as server:
        yield server


def ctrl_c_as_a_terminal_sends_it() -> None:
    """In the child, before exec: SIGINT back to its default, so Python installs its Ctrl-C handler. A suite
    started as a background job (`nohup make test &`: POSIX shells start those with SIGINT ignored) would
    otherwise pass SIG_IGN down, and the child would never see the Ctrl-C these tests send (seen
    2026-12-03: both Ctrl-C tests failed only in such a run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
