"""Ollama REST client on ``requests`` (plus an optional ``ollama create -f`` CLI fallback).

Every failure is an ``OllamaError`` subclass whose message is one line a user can act on, naming
the host and the call (``POST /api/chat``): unreachable (with the compose command that starts the
bundled Ollama), too old for the structured ``/api/create`` (needs >= 0.5.5), blob digest mismatch,
create failed, model exists without ``--force``, model not found, a non-2xx answer, an answer that
is not what the API defines (HTML with status 200, a JSON list where an object belongs, a stream
cut off midway: ``OllamaProtocolError``), and a call that ran past its deadline
(``OllamaTimeoutError``). No ``requests``/JSON/socket exception leaves this module.

Deadline: each call has a wall-clock deadline (``timeout`` seconds from its start, headers and the
whole body or stream included): a watchdog shuts the connection at the deadline, so a server that
trickles one line a second cannot stretch a 2 s call (read timeouts alone apply per chunk). Blob
uploads are the exception: the body is bounded per socket operation, the answer by the deadline.

Host: argument > ``OLLAMA_HOST`` > the config's deploy.host; accepts ``host``, ``host:port``,
``:port`` and full URLs (``https://h``, ``http://h:1/prefix``) with Ollama's defaults. A host with
credentials in it (``http://user:token@h``, any ``@``) or a query string (``https://h/?token=X``) is
refused without echoing them: the token goes in BHASHA_OLLAMA_TOKEN (or OLLAMA_API_KEY), sent as
``Authorization: Bearer`` and never written to logs, deploy.json or the manifest (it is registered
with core/errors.scrub, so an error body that echoes it is scrubbed too). A plain-http host that is
not loopback gets one warning per process.

Knobs: host, timeout (seconds per call; generation calls may pass their own), the token env vars,
MIN_VERSION (oldest Ollama accepted: structured create with ``files``/``template``/``parameters``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from bhasha_build.core.confidence import change_confidence, from_ollama
from bhasha_build.core.errors import BhashaError, register_secret
from bhasha_build.core.fsutil import sha256_file
from bhasha_build.core.guard import Answer

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
MIN_VERSION = (0, 5, 5)
COMPOSE_HINT = "docker compose -f docker/compose.yaml up -d ollama"
TOKEN_ENV = ("BHASHA_OLLAMA_TOKEN", "OLLAMA_API_KEY")  # a bearer token for a server behind auth
_CHUNK = 1 << 16
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Ollama 0.24.0's listing globs the manifest files, then stats each one and fails on the first error: a
# listing that races a model's deletion (another deploy tidying up its candidate) answers
# 500 "stat <manifest path>: no such file or directory". A new listing a moment later is consistent.
_LISTING_RACE = re.compile(r"\(500\): stat \S.*: no such file or directory")
LISTING_RETRIES = 3
_warned_plain_http: set[str] = set()


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


class OllamaTimeoutError(OllamaError):
    """The call did not finish within its wall-clock deadline."""


class OllamaProtocolError(OllamaError):
    """The server answered, but not as Ollama's API defines: not JSON, the wrong shape, cut off."""


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
        raise OllamaError(f"Ollama host {scheme + '://…'!r}: scheme must be http or https")
    if "@" in rest:  # never echo what is before the last @ (a password may hold a '/', '?' or '#')
        after = re.split(r"[/?#]", rest.rpartition("@")[2], maxsplit=1)[0]
        raise OllamaError(f"Ollama host {f'{scheme}://***@{after}'!r} has credentials in it: remove them and put "
                          f"the token in {TOKEN_ENV[0]} (or {TOKEN_ENV[1]}); it is sent as a bearer header and never "
                          "written to logs, deploy.json or the manifest")
    if "?" in rest or "#" in rest:  # a query may hold a token: never echo or record it
        shown = f"{scheme}://{re.split(r'[?#]', rest, maxsplit=1)[0]}"
        raise OllamaError(f"Ollama host {shown!r} has a query string or fragment (?…/#…) in it, which is neither "
                          "recorded nor sent: a host is [http[s]://]host[:port][/path]; a token goes in "
                          f"{TOKEN_ENV[0]} (or {TOKEN_ENV[1]}), sent as a bearer header")
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


def is_loopback(url: str) -> bool:
    """Whether a resolved host URL names this machine (loopback, localhost, the unspecified address)."""
    name = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def warn_if_plain_http(url: str) -> None:
    """One warning per process and host: plain http to another machine carries prompts, the model
    and any token in clear."""
    if url.startswith("http://") and not is_loopback(url) and url not in _warned_plain_http:
        _warned_plain_http.add(url)
        print(f"warning: Ollama host {url} is not this machine and uses plain http: prompts, the model and the "
              "token travel unencrypted (use https, or a loopback/SSH-tunnelled address)", file=sys.stderr, flush=True)


def token_from_env(env: dict[str, str] | None = None) -> str | None:
    """The bearer token for the Ollama server, from BHASHA_OLLAMA_TOKEN or OLLAMA_API_KEY."""
    env = os.environ if env is None else env
    return next((env[k].strip() for k in TOKEN_ENV if env.get(k, "").strip()), None)


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


def _error_text(body: bytes, reason: str = "") -> str:
    """Ollama's {"error": ...} body, else the first line of whatever came back."""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and parsed.get("error"):
            return str(parsed["error"]).splitlines()[0][:300]
    except ValueError:
        pass
    lines = (body.decode("utf-8", "replace") or reason or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def _connection_reason(exc: Exception) -> str:
    """'Errno 111 Connection refused' rather than urllib3's nested retry message."""
    inner = exc.args[0] if exc.args else exc
    inner = getattr(inner, "reason", inner)
    match = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(inner))
    return match.group(0).strip() if match else type(inner).__name__


def _describe(body: bytes) -> str:
    """A few words on an answer that is not the JSON expected (for the one-line error)."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return "an empty body"
    if text[:1] == "<":
        return f"HTML ({text[:60]!r}…)"
    return f"{text[:60]!r}{'…' if len(text) > 60 else ''}"


class _Watchdog:
    """Shuts a connection's socket at the call's deadline: a blocked read then ends at once."""

    def __init__(self, sock: socket.socket | None, seconds: float) -> None:
        self.fired = False
        self.sock = sock
        self.timer = threading.Timer(max(seconds, 0.0), self._fire)
        self.timer.daemon = True
        if sock is not None:
            self.timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]

    def cancel(self) -> None:
        self.timer.cancel()


def _socket_of(resp: requests.Response) -> socket.socket | None:
    conn = getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:  # older urllib3: through http.client's file object
        fp = getattr(getattr(resp.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _Answer:
    """One call's response: its body or NDJSON stream read within the call's deadline, every
    failure turned into an OllamaError naming the host and the call."""

    def __init__(self, host: str, call: str, resp: requests.Response, deadline: float, seconds: float) -> None:
        self.host, self.call, self.resp, self.deadline, self.seconds = host, call, resp, deadline, seconds
        self.watchdog = _Watchdog(_socket_of(resp), deadline - time.monotonic())

    @property
    def status(self) -> int:
        return self.resp.status_code

    def fail(self, cls: type[OllamaError], what: str) -> OllamaError:
        return cls(f"Ollama at {self.host}: {self.call}: {what}")

    def timed_out(self) -> OllamaTimeoutError:
        return self.fail(OllamaTimeoutError, f"no complete answer within {self.seconds:g}s")  # type: ignore[return-value]

    def chunks(self) -> Iterator[bytes]:
        try:
            for chunk in self.resp.iter_content(chunk_size=_CHUNK):
                if time.monotonic() > self.deadline:
                    raise self.timed_out()
                yield chunk
        except OllamaError:
            raise
        except (requests.RequestException, OSError, ValueError) as exc:  # urllib3 errors come wrapped
            if self.watchdog.fired or time.monotonic() >= self.deadline:
                raise self.timed_out() from None
            raise self.fail(OllamaProtocolError, f"the answer was cut off midway ({type(exc).__name__}: "
                                                 f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'})"
                            ) from None
        finally:
            self.close()

    def body(self) -> bytes:
        return b"".join(self.chunks())

    def json_object(self) -> dict[str, Any]:
        body = self.body()
        try:
            parsed = json.loads(body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise self.fail(OllamaProtocolError, f"answered {_describe(body)}, not JSON: is {self.host} "
                                                 "an Ollama server?") from None
        if not isinstance(parsed, dict):
            raise self.fail(OllamaProtocolError, f"answered a JSON {type(parsed).__name__}, not an object")
        return parsed

    def ndjson(self) -> Iterator[dict[str, Any]]:
        """The stream's objects, one per line; a line that is not a JSON object is an error."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield self._event(line)
        if pending.strip():
            yield self._event(pending)

    def _event(self, line: bytes) -> dict[str, Any]:
        try:
            event = json.loads(line)
        except ValueError:
            raise self.fail(OllamaProtocolError, f"bad NDJSON line {_describe(line)}") from None
        if not isinstance(event, dict):
            raise self.fail(OllamaProtocolError, f"stream line is a JSON {type(event).__name__}, not an object")
        return event

    def close(self) -> None:
        self.watchdog.cancel()
        self.resp.close()


class OllamaClient:
    """Thin typed wrapper over Ollama's REST API."""

    def __init__(
        self, host: str | None = None, timeout: float = 120.0, session: requests.Session | None = None,
        token: str | None = None,
    ) -> None:
        self.host = resolve_host(host)
        self.timeout = timeout
        self.session = session or requests.Session()
        token = token or token_from_env()
        if token:
            register_secret(token)  # scrubbed from every error text (core/errors.scrub)
            self.session.headers["Authorization"] = f"Bearer {token}"
        warn_if_plain_http(self.host)

    # -- plumbing ---------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> _Answer:
        """Send one call; the answer's body must then be read through the returned _Answer (within
        the call's deadline). Non-2xx answers raise here."""
        url = f"{self.host}{path}"
        call = f"{method} {path}"
        seconds = timeout or self.timeout
        deadline = time.monotonic() + seconds
        try:
            resp = self.session.request(method, url, timeout=(min(seconds, 30.0), seconds), stream=True, **kwargs)
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.ConnectTimeout) or not _is_protocol(exc):
                reason = _connection_reason(exc)
                raise OllamaUnreachableError(
                    f"Ollama is unreachable at {self.host} ({reason}); start it with "
                    f"`{COMPOSE_HINT}` or point --host/OLLAMA_HOST at a running server"
                ) from None
            raise OllamaProtocolError(f"Ollama at {self.host}: {call}: the connection closed without an answer "
                                      f"({_connection_reason(exc)})") from None
        except requests.Timeout:
            raise OllamaTimeoutError(f"Ollama at {self.host} did not answer {call} within {seconds:g}s") from None
        except (requests.RequestException, OSError, ValueError) as exc:
            raise OllamaError(f"Ollama at {self.host}: {call} failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'})") from None
        answer = _Answer(self.host, call, resp, deadline, seconds)
        if resp.status_code not in ok:
            message = _error_text(answer.body(), resp.reason or "")
            if resp.status_code == 404:
                raise OllamaNotFoundError(f"{call}: {message or 'not found'} (404)")
            raise OllamaRequestError(f"{call} failed ({resp.status_code}): {message}", resp.status_code)
        return answer

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._request(method, path, **kwargs).json_object()

    # -- server -----------------------------------------------------------------------------------
    def version(self) -> str:
        body = self._json("GET", "/api/version")
        if not isinstance(body.get("version"), str) or not body["version"]:
            raise OllamaProtocolError(f"Ollama at {self.host}: GET /api/version answered without a version: "
                                      "is it Ollama?")
        return body["version"]

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
            self._request("HEAD", f"/api/blobs/{digest}").close()
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
                ).body()
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
            answer = self._request("POST", "/api/create", json=body)
        except (OllamaRequestError, OllamaNotFoundError) as exc:
            raise OllamaCreateError(f"creating '{name}' failed: {exc}") from None
        statuses: list[str] = []
        for event in answer.ndjson():
            if "error" in event:
                answer.close()
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
            shown = self._json("POST", "/api/show", json={"model": name})
        except OllamaNotFoundError:
            raise OllamaNotFoundError(f"model '{name}' not found on {self.host}") from None
        for key in ("template", "system", "parameters", "modelfile", "license"):
            if shown.get(key) is not None and not isinstance(shown[key], str):
                raise OllamaProtocolError(f"Ollama at {self.host}: POST /api/show: '{key}' is a "
                                          f"{type(shown[key]).__name__}, not a string")
        return shown

    def exists(self, name: str) -> bool:
        return self.model_digest(name) is not None

    def tags(self) -> list[dict[str, Any]]:
        for attempt in range(LISTING_RETRIES + 1):
            try:
                models = self._json("GET", "/api/tags").get("models") or []
                break
            except OllamaRequestError as exc:  # only Ollama's own listing race is asked again
                if attempt == LISTING_RETRIES or exc.status != 500 or not _LISTING_RACE.search(str(exc)):
                    raise
                time.sleep(0.05 * 2**attempt)
        if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                                   for m in models):
            raise OllamaProtocolError(f"Ollama at {self.host}: GET /api/tags: 'models' is not a list of "
                                      "{name, digest, ...} objects")
        return models

    list_models = tags

    def digests(self) -> dict[str, str | None]:
        """Every model's manifest digest by its full name, from one /api/tags."""
        return {model["name"]: str(model.get("digest") or "") or None for model in self.tags()}

    def model_digest(self, name: str) -> str | None:
        """The model's manifest digest, None when the server has no model of that name."""
        return self.digests().get(full_name(name))

    def delete(self, name: str) -> None:
        try:
            self._request("DELETE", "/api/delete", json={"model": name}).close()
        except OllamaNotFoundError:
            raise OllamaNotFoundError(f"model '{name}' not found on {self.host}") from None

    def copy(self, source: str, destination: str) -> None:
        """/api/copy: ``destination`` becomes the same model as ``source`` (a new manifest over the
        same layers; an existing destination is replaced in one write)."""
        try:
            self._request("POST", "/api/copy", json={"source": source, "destination": destination}).close()
        except OllamaNotFoundError:
            raise OllamaNotFoundError(f"model '{source}' not found on {self.host}") from None

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
            answer = self._request("POST", path, json=body, timeout=timeout)
        except OllamaNotFoundError:
            raise OllamaNotFoundError(f"model '{body['model']}' not found on {self.host}") from None
        key = "response" if path == "/api/generate" else "message"
        if not stream:
            return self._checked(answer, answer.json_object(), key)
        # Fold the NDJSON chunks into the shape of a non-streamed answer.
        text: list[str] = []
        logprobs: list[Any] = []  # per-token log-probabilities, when asked for: each line carries its own
        final: dict[str, Any] = {}
        for event in answer.ndjson():
            if "error" in event:
                answer.close()
                raise answer.fail(OllamaRequestError, f"failed mid-stream: {event['error']}")
            self._checked(answer, event, key)
            if on_chunk:
                on_chunk(event)
            text.append(event[key] if key == "response" else event[key]["content"])
            if isinstance(event.get("logprobs"), list):
                logprobs += event["logprobs"]
            if event.get("done"):
                final = event
        if not final:
            raise answer.fail(OllamaProtocolError, "the stream ended before its done line")
        final[key] = "".join(text) if key == "response" else {"role": "assistant", "content": "".join(text)}
        if logprobs:
            final["logprobs"] = logprobs
        return final

    @staticmethod
    def _checked(answer: _Answer, event: dict[str, Any], key: str) -> dict[str, Any]:
        """An inference answer (or stream line) must carry its text where the API puts it."""
        value = event.get(key)
        ok = isinstance(value, str) if key == "response" else (
            isinstance(value, dict) and isinstance(value.get("content", ""), str))
        if "error" in event:
            raise answer.fail(OllamaRequestError, f"failed: {event['error']}")
        if not ok:
            shown = _describe(json.dumps(event).encode())
            raise answer.fail(OllamaProtocolError, f"answer without a text '{key}' ({shown})")
        if key == "message":
            value.setdefault("content", "")
        return event

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
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> dict[str, Any]:
        """/api/chat; `logprobs` asks for each reply token's log-probability (Ollama >= 0.12.11: the
        answer's `logprobs`, a list of {token, logprob, bytes, top_logprobs}; `top_logprobs` 0-20
        alternatives each), which an older server ignores."""
        body: dict[str, Any] = {"model": name, "messages": messages, "options": options or {}}
        if logprobs:
            body["logprobs"] = True
            if top_logprobs:
                body["top_logprobs"] = top_logprobs
        return self._infer("/api/chat", body, stream, timeout, on_chunk)


def _is_protocol(exc: requests.ConnectionError) -> bool:
    """A ConnectionError that is the server dropping the connection (not a refused or failed connect)."""
    from urllib3.exceptions import ProtocolError

    inner = exc.args[0] if exc.args else None
    return isinstance(inner, ProtocolError)


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


def correction_options(seed: int, num_predict: int) -> dict[str, Any]:
    """The request options of a correction: greedy, seeded, the reply's token cap."""
    return {"temperature": 0, "seed": seed, "num_predict": num_predict}


def ask_correction(client: OllamaClient, name: str, text: str, *, seed: int, num_predict: int,
                   timeout: float | None = None, logprobs: bool = True) -> dict[str, Any]:
    """`name`'s answer (the whole /api/chat reply) to one line already normalized like training: one
    chat turn, greedy, with each reply token's log-probability (`logprobs`; core/confidence.py) — the
    way every client of the project asks a served model (deploy's check, `invoke correct`, promote's
    gate, eval's `served` system)."""
    return client.chat(name, [{"role": "user", "content": text}], options=correction_options(seed, num_predict),
                       timeout=timeout, logprobs=logprobs)


def answer_of(text: str, reply: dict[str, Any]) -> Answer:
    """An /api/chat reply to `text` as the guard judges it: the text, cut (done_reason other than
    "stop": num_predict ran out) and the model's confidence in its change (core/confidence.py)."""
    content = (reply.get("message") or {}).get("content") or ""
    return Answer(content, str(reply.get("done_reason") or "") != "stop",
                  change_confidence(text, from_ollama(reply.get("logprobs"))))


def ask_answers(client: OllamaClient, name: str, texts: list[str], budgets: list[int], *, seed: int,
                timeout: float) -> list[Answer]:
    """`name`'s answers to `texts`, one `ask_correction` each, each with its own reply budget
    (core/guard.reply_budget)."""
    return [answer_of(text, ask_correction(client, name, text, seed=seed, num_predict=budget, timeout=timeout))
            for text, budget in zip(texts, budgets, strict=True)]


def ask_corrections(client: OllamaClient, name: str, texts: list[str], *, seed: int, num_predict: int,
                    timeout: float) -> list[str]:
    """`name`'s replies to `texts`, one `ask_correction` each."""
    return [ask_correction(client, name, text, seed=seed, num_predict=num_predict, timeout=timeout)
            ["message"]["content"] for text in texts]
