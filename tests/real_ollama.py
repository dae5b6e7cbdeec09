"""A real Ollama server for the test suite: `ollama serve` (0.24.0, the version docker/compose.yaml pins)
with a temporary HOME and OLLAMA_MODELS on a free loopback port, stopped at the end whatever happens.

The binary: BHASHA_OLLAMA_BIN, else what scripts/ollama-bin.sh finds (the CPU build kept beside the
clone, unpacked once into ~/.cache/bhasha-build; `make test` runs that script too). Without one the
tests that use it skip with one reason; a binary that is given but does not start, or reports another
version, is an error, not a skip.

Knobs (env): BHASHA_OLLAMA_BIN, BHASHA_SHARED_DIR (where scripts/ollama-bin.sh looks), and the
start deadline below.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests
from ollama_server import free_port

REPO = Path(__file__).resolve().parent.parent
VERSION = "0.24.0"
START_S = 60.0  # ollama serve answers /api/version within a second or two; a busy 2-core box is slower
STOP_S = 15.0
SKIP_REASON = (f"no real Ollama {VERSION}: set BHASHA_OLLAMA_BIN to its binary "
               "(`make test` finds the CPU build kept beside the clone, scripts/ollama-bin.sh)")


class RealOllamaError(RuntimeError):
    """The binary was there but the server did not come up as Ollama {VERSION}."""


def find_binary() -> str | None:
    """BHASHA_OLLAMA_BIN, else scripts/ollama-bin.sh's answer; None when neither has one."""
    given = os.environ.get("BHASHA_OLLAMA_BIN", "").strip()
    if given:
        return given
    proc = subprocess.run(["bash", str(REPO / "scripts" / "ollama-bin.sh")], capture_output=True, text=True,
                          timeout=300, check=False)
    if proc.returncode:
        raise RealOllamaError(f"scripts/ollama-bin.sh failed: {proc.stderr.strip()}")
    return proc.stdout.strip() or None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (even by SIGKILL), so no server
    outlives the session; its own process group, so teardown can stop the runners it spawned too."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RealOllama:
    """One `ollama serve`; ``url``, ``home``, ``models``, ``log`` (its output), ``proc``."""

    def __init__(self, binary: str, root: Path | None = None) -> None:
        self.binary = binary
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="real-ollama-")
        self.root = Path(root or self._tmp.name)  # type: ignore[union-attr]
        self.home, self.models, self.log = self.root / "home", self.root / "models", self.root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> RealOllama:
        self.home.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # the free port can be taken between the probe and the bind
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
            env.update(HOME=str(self.home), OLLAMA_MODELS=str(self.models), OLLAMA_HOST=f"127.0.0.1:{port}",
                       OLLAMA_NOPRUNE="1")
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_die_with_parent)
            try:
                self._wait()
                return self
            except RealOllamaError:
                self.stop()
                if attempt == 2 or "address already in use" not in self.tail():
                    raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + START_S
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RealOllamaError(f"`{self.binary} serve` exited with status {self.proc.returncode}: "
                                      f"{self.tail()}")
            try:
                got = requests.get(f"{self.url}/api/version", timeout=2).json().get("version")
            except (requests.RequestException, ValueError) as exc:
                last = type(exc).__name__
            else:
                if got != VERSION:
                    raise RealOllamaError(f"{self.binary} reports Ollama {got!r}, not {VERSION}")
                return
            time.sleep(0.1)
        raise RealOllamaError(f"`{self.binary} serve` did not answer /api/version within {START_S:g}s "
                              f"({last}): {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the server's process group (the server and its model runners), SIGKILL after
        STOP_S; waits for it, so nothing is left running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_S), (signal.SIGKILL, STOP_S)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # a runner that outlived its server
            os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> RealOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
