"""`correct`'s backends: the model a piece of text is sent to, and the failures worth retrying.

``OllamaBackend`` (the deployed model through the project's REST client) and ``GgufBackend``
(llama.cpp on a GGUF); ``open_backend`` picks one from the arguments and the run. ``CorrectError`` is
the one-line failure of every part of `correct` but its paths: an input or output folder that cannot
be used as given is ``core.inputs.InputError`` (a BhashaError too, so the CLI prints it as one line).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from bhasha_build.core.chat import SYSTEM_PROMPT
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.manifest import Manifest
from bhasha_build.core.ollama import (
    OllamaClient,
    OllamaError,
    OllamaNotFoundError,
    OllamaRequestError,
    OllamaUnreachableError,
    answer_of,
    ask_correction,
    parse_show_parameters,
    server_url,
)
from bhasha_build.stages.pipeline import verify_artifact


class CorrectError(BhashaError):
    """A one-line `correct` failure (arguments, references, backend, or lines that failed)."""


@dataclass(frozen=True)
class Reply:
    text: str
    done_reason: str  # "stop" (a stop token ended it) or "length" (num_predict reached)
    confidence: float | None = None  # the model's confidence in its change (core/confidence.py)


class TransientError(Exception):
    """A failure worth retrying (server unreachable, deadline passed, 5xx)."""


class ServerGone(TransientError):
    """Nothing answers at the server's address (connection refused): counts toward the stop at every attempt."""


class Backend(Protocol):
    kind: str
    concurrent: bool  # may several requests be in flight?
    num_ctx: int

    def describe(self) -> dict[str, Any]: ...

    def count_tokens(self, text: str) -> int: ...

    def complete(self, text: str, max_tokens: int) -> Reply: ...

    def close(self) -> None: ...


class GgufBackend:
    """A GGUF through llama.cpp (core/gguf.open_chat: the project's one llama.cpp chat completion, in this
    process, or in a child that loads llama.cpp first for a CUDA build)."""

    kind = "gguf"
    concurrent = False

    def __init__(self, gguf: Path, cfg: BuildConfig) -> None:
        from bhasha_build.core.gguf import open_chat

        if not Path(gguf).is_file():
            raise CorrectError(f"{gguf}: GGUF not found")
        self.path = Path(gguf)
        self.num_ctx = cfg.model.max_seq_length  # the Modelfile's num_ctx
        self.chat = open_chat(self.path, n_ctx=self.num_ctx, seed=cfg.seed)  # a CUDA build: its own process
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"kind": self.kind, "gguf": str(self.path.resolve()), "bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns, "num_ctx": self.num_ctx, "token_counter": "gguf"}

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return self.chat.count_tokens(text)

    def complete(self, text: str, max_tokens: int) -> Reply:
        with self._lock:
            out = self.chat.complete(text, max_tokens)
        return Reply(out.text, "stop" if out.finish_reason == "stop" else "length", out.confidence)

    def close(self) -> None:
        self.chat.close()


class OllamaBackend:
    """The deployed model through the project's Ollama client: /api/chat, deploy's options."""

    kind = "ollama"
    concurrent = True

    def __init__(self, client: OllamaClient, name: str, cfg: BuildConfig) -> None:
        from bhasha_build.core.qwen_tokenizer import qwen25_fast_tokenizer

        self.client, self.name, self.seed = client, name, cfg.seed
        self.timeout = cfg.correct.timeout_s
        self.version = client.check_version()  # refuses a server too old for the project
        try:
            show = client.show(name)
        except OllamaNotFoundError:
            raise CorrectError(f"model '{name}' not found on {client.host}; "
                               f"run `invoke deploy --name {name}`") from None
        params = parse_show_parameters(show.get("parameters") or "")
        self.num_ctx = int(params.get("num_ctx", [cfg.model.max_seq_length])[0])
        self.stops = params.get("stop", [])
        self.system_matches = (show.get("system") or "") == SYSTEM_PROMPT
        self.digest = client.model_digest(name)
        self._tokenizer = qwen25_fast_tokenizer()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": self.client.host, "model": self.name, "digest": self.digest,
                "ollama_version": self.version, "num_ctx": self.num_ctx, "stop": self.stops,
                "system_prompt_matches_training": self.system_matches, "token_counter": "qwen2.5"}

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def complete(self, text: str, max_tokens: int) -> Reply:
        try:
            reply = ask_correction(self.client, self.name, text, seed=self.seed, num_predict=max_tokens,
                                   timeout=self.timeout)
        except OllamaNotFoundError:
            raise
        except OllamaUnreachableError as exc:
            raise ServerGone(str(exc)) from None
        except OllamaRequestError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise TransientError(str(exc)) from None
            raise
        except OllamaError as exc:  # the client's "did not answer within Ns" (deadline) and bad streams
            raise TransientError(str(exc)) from None
        except requests.RequestException as exc:  # a connection dropped mid-answer
            raise TransientError(f"{self.client.host}: {type(exc).__name__}") from None
        return Reply((reply.get("message") or {}).get("content") or "", str(reply.get("done_reason") or ""),
                     answer_of(text, reply).confidence)

    def close(self) -> None:
        self.client.session.close()


def open_backend(cfg: BuildConfig, *, gguf: str | Path | None = None, name: str | None = None,
                 host: str | None = None) -> Backend:
    """The model to correct with:
      ``gguf``                      llama.cpp on that file;
      ``host`` / ``name`` / OLLAMA_HOST   the deployed model ``name`` (deploy.name) on that Ollama server;
      none of them                  llama.cpp on this run's exported GGUF (checked against the sha256
                                    the export stage recorded) when there is one, else Ollama at deploy.host.
    """
    if gguf is not None:
        if host or name:
            raise CorrectError("--gguf runs the file through llama.cpp; it takes no --host/--name")
        return GgufBackend(Path(gguf), cfg)
    layout = cfg.layout
    if not (host or name or os.environ.get("OLLAMA_HOST")) and layout.manifest.is_file() and \
            "gguf" in Manifest(layout.root).load().get("artifacts", {}):
        return GgufBackend(verify_artifact(Manifest(layout.root), layout, "gguf"), cfg)
    client = OllamaClient(server_url(host, cfg.deploy.host), timeout=cfg.correct.timeout_s)
    return OllamaBackend(client, name or cfg.deploy.name, cfg)
