"""Ollama REST client on ``requests`` (plus an optional ``ollama create -f`` CLI fallback).

Every failure is an ``OllamaError`` subclass whose message is one line a user can act on:
unreachable (with the compose command that starts the bundled Ollama), too old for the structured
``/api/create`` (needs >= 0.5.5), blob digest mismatch, create failed, model exists without
``--force``, model not found, generation failed.

Knobs:
  host: argument > ``OLLAMA_HOST`` > ``http://127.0.0.1:11434``; accepts ``host``, ``host:port``,
        ``:port`` and full URLs (``https://h``, ``http://h:1/prefix``) with Ollama's defaults.
  timeout: seconds per request (generation calls may pass their own).
  MIN_VERSION: oldest Ollama accepted (structured create with ``files``/``template``/``parameters``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import sha256_file

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
MIN_VERSION = (0, 5, 5)
COMPOSE_HINT = "docker compose -f docker/compose.yaml up -d ollama"
_CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class OllamaError(BhashaError):
    """Base class; str(err) is a one-line message."""


class OllamaUnreachableError(OllamaError):
    pass


class OllamaTooOldError(OllamaError):
    pass


class OllamaDigestMismatchError(OllamaError):
    pass


class OllamaCreateError(OllamaError):
    pass


class OllamaModelExistsError(OllamaError):
    pass


class OllamaNotFoundError(OllamaError):
    pass


class OllamaRequestError(OllamaError):
    """Any other non-2xx answer (status code kept on ``.status``)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def resolve_host(host: str | None = None, env: dict[str, str] | None = None) -> str:
    """Base URL the way Ollama's envconfig.Host reads OLLAMA_HOST (scheme default http, port 11434)."""
    env = os.environ if env is None else env
    raw = (host or env.get("OLLAMA_HOST") or "").strip()
    if not raw:
        return DEFAULT_HOST
    scheme, sep, rest = raw.partition("://")
    port = str(DEFAULT_PORT)
    if not sep:
        scheme, rest = "http", raw
    elif scheme == "http":
        port = "80"
    elif scheme == "https":
        port = "443"
    else:
        raise OllamaError(f"Ollama host {raw!r}: scheme must be http or https")
    hostport, _, path = rest.partition("/")
    name = hostport
    if hostport.startswith("["):  # [v6]:port
        end = hostport.find("]")
        name, tail = hostport[1:end], hostport[end + 1 :]
        if tail.startswith(":") and tail[1:]:
            port = tail[1:]
    elif hostport.count(":") == 1:
        name, port = hostport.split(":")
        port = port or str(DEFAULT_PORT)
    name = name or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise OllamaError(f"Ollama host {raw!r}: invalid port {port!r}")
    try:
        if ipaddress.ip_address(name).version == 6:
            name = f"[{name}]"
    except ValueError:
        pass
    url = f"{scheme}://{name}:{port}"
    return f"{url}/{path.strip('/')}" if path.strip("/") else url


def parse_version(text: str) -> tuple[int, int, int]:
    """'0.5.7', 'v0.6.0-rc1', '0.5.5+dirty' -> (0, 5, 7); unparsable parts count as 0."""
    core = text.strip().lstrip("v").split("-")[0].split("+")[0]
    parts = [*(int(p) if p.isdigit() else 0 for p in core.split(".")[:3]), 0, 0, 0]
    return parts[0], parts[1], parts[2]


def blob_digest(path: str | Path) -> str:
    """Ollama's name for a file's blob: 'sha256:<hex>' (fsutil's streamed sha256)."""
    return f"sha256:{sha256_file(path)}"


def server_url(explicit: str | None, configured: str) -> str:
    """The Ollama server a command talks to: --host, else OLLAMA_HOST, else the config's deploy.host
    (deploy, doctor and correct all ask here, so they check and use the same server)."""
    return resolve_host(explicit or os.environ.get("OLLAMA_HOST") or configured)


def full_name(name: str) -> str:
    """Ollama's short form 'x' means 'x:latest'."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _error_text(resp: requests.Response) -> str:
    """Ollama's {"error": ...} body, else the first line of whatever came back."""
    try:
        body = resp.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except ValueError:
        pass
    lines = (resp.text or resp.reason or "").strip().splitlines()
    return lines[0] if lines else ""


def _connection_reason(exc: Exception) -> str:
    """'Errno 111 Connection refused' rather than urllib3's nested retry message."""
    inner = exc.args[0] if exc.args else exc
    inner = getattr(inner, "reason", inner)
    match = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(inner))
    return match.group(0).strip() if match else type(inner).__name__


class OllamaClient:
    """Thin typed wrapper over Ollama's REST API."""

    def __init__(
        self, host: str | None = None, timeout: float = 120.0, session: requests.Session | None = None
    ) -> None:
        self.host = resolve_host(host)
        self.timeout = timeout
        self.session = session or requests.Session()

    # -- plumbing ---------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        url = f"{self.host}{path}"
        try:
            resp = self.session.request(method, url, timeout=timeout or self.timeout, stream=stream, **kwargs)
        except requests.ConnectionError as exc:
            reason = _connection_reason(exc)
            raise OllamaUnreachableError(
                f"Ollama is unreachable at {self.host} ({reason}); start it with "
                f"`{COMPOSE_HINT}` or point --host/OLLAMA_HOST at a running server"
            ) from None
        except requests.Timeout:
            raise OllamaError(
                f"Ollama at {self.host} did not answer {method} {path} within {timeout or self.timeout:g}s"
            ) from None
        if resp.status_code not in ok:
            message = _error_text(resp)
            if resp.status_code == 404:
                raise OllamaNotFoundError(f"{method} {path}: {message or 'not found'} (404)")
            raise OllamaRequestError(
                f"{method} {path} failed ({resp.status_code}): {message}", resp.status_code
            )
        return resp

    @staticmethod
    def _ndjson(resp: requests.Response) -> Iterator[dict[str, Any]]:
        for raw in resp.iter_lines():
            if raw.strip():
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    raise OllamaError(f"bad NDJSON line from Ollama: {raw[:80]!r}") from None

    # -- server -----------------------------------------------------------------------------------
    def version(self) -> str:
        resp = self._request("GET", "/api/version")
        try:
            body = resp.json()
        except ValueError:
            raise OllamaError(f"{self.host} answered /api/version, but not with JSON: not an Ollama server?") from None
        if not isinstance(body, dict) or not body.get("version"):
            raise OllamaError(f"{self.host} answered /api/version without a version: is it Ollama?")
        return str(body["version"])

    def check_version(self, minimum: tuple[int, int, int] = MIN_VERSION) -> str:
        """The server's version; OllamaTooOldError below ``minimum`` (0.0.0 = source build, accepted)."""
        version = self.version()
        parsed = parse_version(version)
        if parsed != (0, 0, 0) and parsed < minimum:
            need = ".".join(map(str, minimum))
            raise OllamaTooOldError(
                f"Ollama {version} at {self.host} is too old: structured /api/create needs >= {need}; "
                "upgrade it (docker compose pull ollama) or deploy with --cli"
            )
        return version

    # -- blobs ------------------------------------------------------------------------------------
    def blob_exists(self, digest: str) -> bool:
        if not _DIGEST.fullmatch(digest):
            raise OllamaError(f"invalid blob digest {digest!r}: expected sha256:<64 hex digits>")
        try:
            self._request("HEAD", f"/api/blobs/{digest}")
        except OllamaNotFoundError:
            return False
        return True

    def push_blob(self, path: str | Path, digest: str | None = None) -> str:
        """Upload ``path`` unless the server has it; returns its 'sha256:<hex>' digest."""
        path = Path(path)
        digest = digest or blob_digest(path)
        if self.blob_exists(digest):
            return digest
        with path.open("rb") as fh:
            try:
                self._request(
                    "POST",
                    f"/api/blobs/{digest}",
                    data=fh,
                    ok=(200, 201),
                    headers={"Content-Length": str(path.stat().st_size)},
                )
            except OllamaRequestError as exc:
                if exc.status == 400 and "digest" in str(exc).lower():
                    raise OllamaDigestMismatchError(
                        f"Ollama rejected {path.name}: digest mismatch (sent as {digest}); "
                        "the file changed or is corrupt: re-run `invoke export`"
                    ) from None
                raise
        return digest

    # -- models -----------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        files: dict[str, str],
        *,
        template: str | None = None,
        system: str | None = None,
        parameters: dict[str, Any] | None = None,
        messages: list[dict[str, str]] | None = None,
        license: list[str] | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Structured /api/create (Ollama >= 0.5.5); returns the status lines; errors raise."""
        body: dict[str, Any] = {"model": name, "files": files, "stream": True}
        for key, value in (
            ("template", template),
            ("system", system),
            ("parameters", parameters),
            ("messages", messages),
            ("license", license),
        ):
            if value is not None:
                body[key] = value
        try:
            resp = self._request("POST", "/api/create", json=body, stream=True)
        except (OllamaRequestError, OllamaNotFoundError) as exc:
            raise OllamaCreateError(f"creating '{name}' failed: {exc}") from None
        statuses: list[str] = []
        with resp:
            for event in self._ndjson(resp):
                if "error" in event:
                    raise OllamaCreateError(f"creating '{name}' failed: {event['error']}")
                status = str(event.get("status", ""))
                statuses.append(status)
                if on_status:
                    on_status(status)
        if not statuses or statuses[-1] != "success":
            raise OllamaCreateError(
                f"creating '{name}' failed: stream ended without success (last: {statuses[-1:] or 'none'})"
            )
        return statuses

    def show(self, name: str) -> dict[str, Any]:
        try:
            return self._request("POST", "/api/show", json={"model": name}).json()
        except OllamaNotFoundError:
            raise OllamaNotFoundError(f"model '{name}' not found on {self.host}") from None

    def exists(self, name: str) -> bool:
        return any(m.get("name") == full_name(name) for m in self.tags())

    def tags(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/tags").json().get("models") or [])

    list_models = tags

    def model_digest(self, name: str) -> str | None:
        for model in self.tags():
            if model.get("name") == full_name(name):
                return model.get("digest")
        return None

    def delete(self, name: str) -> None:
        try:
            self._request("DELETE", "/api/delete", json={"model": name})
        except OllamaNotFoundError:
            raise OllamaNotFoundError(f"model '{name}' not found on {self.host}") from None

    # -- inference --------------------------------------------------------------------------------
    def _infer(
        self,
        path: str,
        body: dict[str, Any],
        stream: bool,
        timeout: float | None,
        on_chunk: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        body = {**body, "stream": stream}
        try:
            resp = self._request("POST", path, json=body, stream=stream, timeout=timeout)
        except OllamaNotFoundError:
            raise OllamaNotFoundError(f"model '{body['model']}' not found on {self.host}") from None
        if not stream:
            return resp.json()
        # Fold the NDJSON chunks into the shape of a non-streamed answer.
        text: list[str] = []
        final: dict[str, Any] = {}
        with resp:
            for event in self._ndjson(resp):
                if "error" in event:
                    raise OllamaRequestError(f"POST {path} failed mid-stream: {event['error']}")
                if on_chunk:
                    on_chunk(event)
                piece = (
                    event.get("response")
                    if path == "/api/generate"
                    else (event.get("message") or {}).get("content")
                )
                text.append(piece or "")
                if event.get("done"):
                    final = event
        if not final:
            raise OllamaRequestError(f"POST {path}: stream ended before done")
        if path == "/api/generate":
            final["response"] = "".join(text)
        else:
            final["message"] = {"role": "assistant", "content": "".join(text)}
        return final

    def generate(
        self,
        name: str,
        prompt: str,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        raw: bool = False,
        stream: bool = False,
        timeout: float | None = None,
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": name, "prompt": prompt, "options": options or {}, "raw": raw}
        if system is not None:
            body["system"] = system
        return self._infer("/api/generate", body, stream, timeout, on_chunk)

    def chat(
        self,
        name: str,
        messages: list[dict[str, str]],
        *,
        options: dict[str, Any] | None = None,
        stream: bool = False,
        timeout: float | None = None,
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        body = {"model": name, "messages": messages, "options": options or {}}
        return self._infer("/api/chat", body, stream, timeout, on_chunk)


def parse_show_parameters(text: str) -> dict[str, list[str]]:
    """/api/show 'parameters': lines of '<name> <Go %#v value>' (strings Go-quoted), one per value."""
    out: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = value[1:-1]
        out.setdefault(key, []).append(value)
    return out


def cli_create(
    name: str, modelfile: str | Path, host: str, *, ollama_bin: str = "ollama", timeout: float = 600.0
) -> str:
    """``ollama create NAME -f Modelfile`` against ``host`` (the CLI reads OLLAMA_HOST); returns stdout."""
    exe = shutil.which(ollama_bin)
    if exe is None:
        raise OllamaError(f"`{ollama_bin}` CLI not found on PATH; install Ollama or deploy without --cli")
    modelfile = Path(modelfile)
    env = {**os.environ, "OLLAMA_HOST": host}
    try:
        proc = subprocess.run(
            [exe, "create", name, "-f", str(modelfile)],
            cwd=modelfile.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OllamaCreateError(f"`ollama create {name}` timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise OllamaCreateError(f"`ollama create {name} -f {modelfile.name}` failed: {detail}")
    return proc.stdout
