"""bhasha_build.tools.doctor on this (GPU-less) machine: a stub Ollama on loopback, an unreachable one,
a fake nvidia-smi on PATH for the driver/memory rules, and the disk/toolchain checks."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ollama_server import free_port

from bhasha_build.core.config import load_config
from bhasha_build.tools import doctor as doc


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    """PATH without nvidia-smi, whatever the host has."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def fake_nvidia_smi(monkeypatch, tmp_path, driver: str, cuda: str, mem_mib: int) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'if [ -n "$1" ]; then\n'
        f'  echo "NVIDIA H100 80GB HBM3, {driver}, {mem_mib}"\n'
        "else\n"
        f'  echo "| NVIDIA-SMI {driver}    Driver Version: {driver}    CUDA Version: {cuda}     |"\n'
        "fi\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


class _Handler(BaseHTTPRequestHandler):
    body = b'{"version": "0.13.5"}'
    content_type = "application/json"

    def do_GET(self):
        if self.path != "/api/version":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def ollama_stub():
    servers = []

    def start(body: bytes = _Handler.body, content_type: str = "application/json") -> str:
        handler = type("H", (_Handler,), {"body": body, "content_type": content_type})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def by_name(checks):
    return {c.name: c for c in checks}


def test_doctor_on_a_cpu_machine(no_gpu, ollama_stub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BHASHA_TOOLCHAIN_CACHE", str(tmp_path / "toolchain"))
    host = ollama_stub()
    cfg = load_config(profile="gpu16gb", overrides=[f'deploy.host="{host}"', f'runs_dir="{tmp_path}"'])
    checks = doc.doctor(cfg)
    assert [c.name for c in checks] == ["driver", "gpu_memory", "disk", "toolchain", "ollama"]
    got = by_name(checks)
    assert got["driver"].status == "warn" and "no GPU" in got["driver"].detail
    assert got["gpu_memory"].status == "warn" and "16 GiB" in got["gpu_memory"].detail
    assert got["ollama"].status == "ok" and "0.13.5" in got["ollama"].detail
    assert got["toolchain"].status == "fail" and "toolchain prepare" in got["toolchain"].detail
    assert "7.5 GB" in got["disk"].detail
    fails = doc.print_report(checks)
    out = capsys.readouterr().out
    assert fails == 1
    assert out.count("\n") == 6 and "[WARN] driver" in out and "1 failed, 2 warnings" in out


def test_ollama_unreachable_fails_fast():
    import time

    start = time.monotonic()
    check = doc.check_ollama(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    assert check.status == "fail" and "unreachable" in check.detail
    assert time.monotonic() - start < 5


def test_ollama_that_is_not_ollama(ollama_stub):
    check = doc.check_ollama(ollama_stub(b"<html>hello</html>", "text/html"))
    assert check.status == "fail" and "answered HTML" in check.detail and "not JSON" in check.detail


@pytest.mark.parametrize(
    ("driver", "driver_cuda", "torch_cuda", "status"),
    [
        ("580.95.05", "13.0", "13.0", "ok"),
        ("570.172.08", "12.8", "13.0", "fail"),  # CUDA 13 torch on a CUDA 12 driver
        ("575.51.03", "13.0", "13.0", "fail"),  # claims 13.0 but below the 580 minimum
        ("580.95.05", "13.0", "13.1", "warn"),  # minor-version compatibility only
        ("550.54.15", "12.4", "12.8", "warn"),
        ("550.54.15", "12.4", None, "warn"),  # CPU torch
    ],
)
def test_driver_rules(driver, driver_cuda, torch_cuda, status):
    assert doc.driver_check(driver, driver_cuda, torch_cuda)[0] == status


def test_driver_and_memory_from_nvidia_smi(monkeypatch, tmp_path, ollama_stub):
    fake_nvidia_smi(monkeypatch, tmp_path, driver="570.172.08", cuda="12.8", mem_mib=8192)
    monkeypatch.setattr(doc, "_torch_cuda", lambda: ("13.0", "torch 2.13.0"))
    cfg = load_config(profile="gpu16gb", overrides=[f'deploy.host="{ollama_stub()}"'])
    nvidia = doc._nvidia()
    assert nvidia["driver"] == "570.172.08" and nvidia["driver_cuda"] == "12.8"
    driver = doc.check_driver(nvidia)
    assert driver.status == "fail" and "needs CUDA 13.0" in driver.detail
    memory = doc.check_gpu_memory(cfg, nvidia)
    assert memory.status == "fail" and "8.0 GiB < 16 GiB" in memory.detail


def test_big_enough_gpu_passes(monkeypatch, tmp_path):
    fake_nvidia_smi(monkeypatch, tmp_path, driver="580.95.05", cuda="13.0", mem_mib=81559)
    monkeypatch.setattr(doc, "_torch_cuda", lambda: ("13.0", "torch 2.13.0"))
    cfg = load_config(profile="gpu16gb")
    nvidia = doc._nvidia()
    assert doc.check_driver(nvidia).status == "ok"
    assert doc.check_gpu_memory(cfg, nvidia).status == "ok"


def test_export_disk_estimate_scales_with_model_size():
    assert doc.export_need_gb("Qwen/Qwen2.5-1.5B-Instruct")[0] == pytest.approx(7.5)
    assert doc.export_need_gb("Qwen/Qwen2.5-7B-Instruct")[0] == pytest.approx(35.0)
    assert doc.export_need_gb("Qwen/Qwen2.5-500M")[0] == pytest.approx(2.5)
    assert doc.export_need_gb("tiny")[0] < 1
    assert "assumed" in doc.export_need_gb("/models/my-model")[1]


def test_disk_check_fails_when_export_cannot_fit(monkeypatch, tmp_path):
    cfg = load_config(overrides=[f'runs_dir="{tmp_path}"'])
    monkeypatch.setattr(doc.shutil, "disk_usage", lambda p: type("U", (), {"free": 3 * 10**9})())
    check = doc.check_disk(cfg)
    assert check.status == "fail" and "3.0 GB free" in check.detail
    monkeypatch.setattr(doc.shutil, "disk_usage", lambda p: type("U", (), {"free": 9 * 10**9})())
    assert doc.check_disk(cfg).status == "warn"


def test_toolchain_prepared(monkeypatch, tmp_path):
    from bhasha_build.core import toolchain

    monkeypatch.setenv("BHASHA_TOOLCHAIN_CACHE", str(tmp_path))
    target = Path(toolchain.toolchain_dir())
    assert doc.check_toolchain().status == "fail"
    target.mkdir(parents=True)
    (target / "convert_hf_to_gguf.py").write_text("# converter\n")
    (target / "toolchain.json").write_text(json.dumps({"ready": True, "llama_cpp_commit": "0c1e570"}))
    check = doc.check_toolchain()
    try:
        import llama_cpp  # noqa: F401

        assert check.status == "ok" and "0c1e570" in check.detail
    except ImportError:
        assert check.status == "warn" and "binding" in check.detail
