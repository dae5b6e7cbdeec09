"""An in-process HTTP server that follows Ollama's REST contract, for tests (loopback only).

Endpoints: GET/HEAD /, GET /api/version, HEAD/POST /api/blobs/sha256:<hex> (digest verified:
400 {"error"} on mismatch, 201 on upload), POST /api/create (structured form: ``files`` keys are
relative names that must reference uploaded blobs; NDJSON status stream ending in
{"status":"success"}, or {"error"} mid-stream), POST /api/show, GET /api/tags, DELETE
/api/delete, POST /api/copy (as Ollama's CopyHandler: 200 with an empty body, 404 for a missing
source, the destination replaced by a copy of the source's manifest: same digest), POST
/api/generate and /api/chat (streamed NDJSON or one JSON object).

Generations are REAL llama.cpp inference (``llama_cpp.Llama`` on the uploaded GGUF blob). The
prompt is rendered from the model's stored Go TEMPLATE by Go's own text/template, running the
helper in ``tests/go`` (built once per process) with Ollama's data shape. Where ``go`` is missing
the server falls back to the GGUF's embedded jinja chat template (``renderer == "gguf-jinja"``),
which does NOT exercise the Modelfile TEMPLATE: tests that need the Go path check ``renderer``.
Stop strings come from the model parameters overlaid by request options; ``done_reason`` is
"stop" (stop string or end-of-generation token) or "length" (num_predict reached). ``"logprobs": true``
(and ``"top_logprobs": N``, 0-20) on /api/chat adds Ollama 0.24.0's per-token ``logprobs`` to the
answer: a list of {token, logprob, bytes[, top_logprobs]} per stream line (the done line has none; the
last token's entry may come on a content-less line just before it), without the end-of-generation
token, recorded by core/confidence.TokenRecorder (log-softmax of the logits, as Ollama reports).

Knobs (constructor): ``version`` reported by /api/version; ``renderer`` ("auto" | "go" |
"gguf-jinja"); ``ignore_create_fields`` drops
structured create fields the way an Ollama older than 0.5.5 silently ignores them; ``n_threads``.
The last rendered prompt is kept on ``last_prompt`` for assertions.

Faults (for the client's error handling and the fault suite), set at any time:
``server.faults[path] = kind`` makes every request to ``path`` misbehave after its body is read:
  "html"      status 200 with an HTML page (a proxy's error page)
  "list"      status 200 with a JSON list where Ollama answers an object
  "truncate"  a chunked NDJSON stream cut off mid-chunk after one line (ChunkedEncodingError)
  "stall"     headers and one NDJSON line, then nothing (until ``stall_seconds`` or stop())
  "trickle"   one NDJSON line every ``trickle_interval`` seconds, ``trickle_lines`` of them
  "drop"      the connection closed without an answer
  "echo-auth" status 401 whose error echoes the request's Authorization header and its bare token
              (a proxy that quotes what it refused)
  "fail-after"    the request is applied, then answered 500 (a server that fails after writing)
  "missing-after" the request is applied, then answered 404 (as a delete of a model already gone)
``server.listing_races = N`` makes the next N GET /api/tags answer Ollama 0.24.0's own listing race
(500 "stat <manifest>: no such file or directory": a manifest deleted between its glob and its stat).
``server.after[path] = fn`` calls ``fn(body)`` after a request to ``path`` was answered (a test
kills its client there: a crash between two calls).
``server.before[path] = fn`` calls ``fn(body)`` once a request's JSON body is read, before it is
handled (a test changes a model there: another deploy racing between a client's check and its copy).
Attributes: ``in_flight`` /
``max_in_flight`` count /api/chat and /api/generate requests being served (now, most at once);
setting ``stall_count`` > 0 makes that many of the next ones hang for ``stall_s`` seconds and then
drop the connection unanswered (a stalled server, for deadlines and retries).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

from bhasha_build.stages.modelfile import PARAMETER_TYPES

GO_DIR = Path(__file__).resolve().parent / "go"
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$")
# Ollama's defaults for options a Modelfile does not set.
DEFAULT_OPTIONS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "repeat_last_n": 64,
    "num_ctx": 2048,
    "num_predict": -1,
    "seed": -1,
}

_go_lock = threading.Lock()
_go_binary: Path | None = None


def go_renderer() -> Path | None:
    """Build tests/go once per process; None when no ``go`` toolchain is installed."""
    global _go_binary
    with _go_lock:
        if _go_binary is None and shutil.which("go"):
            work = Path(tempfile.mkdtemp(prefix="tmplrender-"))
            out = work / "tmplrender"
            env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
            if not any(env.get(k) for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
                env["GOCACHE"] = str(work / "gocache")  # bare CI containers: go needs a cache dir
            if not env.get("HOME"):
                env.setdefault("GOPATH", str(work / "gopath"))
            proc = subprocess.run(
                ["go", "build", "-o", str(out), "."],
                cwd=GO_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode:
                raise RuntimeError(f"building tests/go failed: {proc.stderr.strip()}")
            _go_binary = out
        return _go_binary


def render_go(
    template: str,
    *,
    system: str = "",
    messages: list[dict[str, str]] | None = None,
    legacy: bool = False,
    prompt: str = "",
    response: str = "",
) -> str:
    """Execute an Ollama TEMPLATE with Go's text/template (see tests/go/main.go for the data shape)."""
    binary = go_renderer()
    if binary is None:
        raise RuntimeError("go toolchain not installed")
    req = {
        "template": template,
        "system": system,
        "messages": messages or [],
        "legacy": legacy,
        "prompt": prompt,
        "response": response,
    }
    proc = subprocess.run([str(binary)], input=json.dumps(req), capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode:
        raise ValueError(proc.stderr.strip())
    return proc.stdout


def _go_value(value: Any) -> str:
    """Go's %#v for the JSON-decoded option values /api/show prints."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def free_port() -> int:
    """A loopback port free right now (the tests' servers bind it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> str:
    return datetime.now(UTC).isoformat()


_AFTER_FAULTS = {"fail-after": 500, "missing-after": 404}  # faults applied before their error answer

# general.file_type -> the quantization_level Ollama names (the types the project exports)
_FILE_TYPES = {0: "F32", 1: "F16", 7: "Q8_0", 15: "Q4_K_M", 17: "Q5_K_M"}


def _gguf_facts(path: Path) -> dict[str, Any]:
    """What Ollama derives from a GGUF for /api/tags and /api/show: details, model_info (array values
    as null, as Ollama leaves them out), tensors. A blob that is not a readable GGUF (fault tests upload
    'GGUF' + random bytes) gets the qwen2 defaults and no tensors."""
    from bhasha_build.core.gguf import GgufArray, GgufError, read_gguf

    try:
        gguf = read_gguf(path)
    except GgufError:
        return {"details": {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
                            "parameter_size": "", "quantization_level": ""}, "model_info": {}, "tensors": []}
    meta = gguf.metadata
    family = str(meta.get("general.architecture", ""))
    count = sum(math.prod(t.shape) for t in gguf.tensors)
    size = next((f"{count / unit:.2f}".rstrip("0").rstrip(".") + suffix for unit, suffix in
                 ((1e9, "B"), (1e6, "M"), (1e3, "K")) if count >= unit), str(count))
    return {
        "details": {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                    "parameter_size": size,
                    "quantization_level": _FILE_TYPES.get(meta.get("general.file_type", -1), "unknown")},
        "model_info": {k: None if isinstance(v, GgufArray) else v for k, v in meta.items()},
        "tensors": [{"name": t.name, "type": _GGML_TYPE_NAMES.get(t.ggml_type, str(t.ggml_type)),
                     "shape": list(t.shape)} for t in gguf.tensors],
    }


_GGML_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K",
                    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OllamaContractServer:
    def __init__(
        self,
        version: str = "0.5.7",
        *,
        ignore_create_fields: tuple[str, ...] = (),
        n_threads: int = 2,
        renderer: str = "auto",
        workdir: Path | None = None,
    ) -> None:
        self.version = version
        self.ignore_create_fields = set(ignore_create_fields)
        self.n_threads = n_threads
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="ollama-contract-")
        self.root = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, dict[str, Any]] = {}
        if renderer == "auto":
            renderer = "go" if shutil.which("go") else "gguf-jinja"
        if renderer not in ("go", "gguf-jinja"):
            raise ValueError(f"renderer must be auto, go or gguf-jinja, not {renderer!r}")
        self.renderer = renderer
        self.last_prompt: str | None = None
        self.requests: list[tuple[str, str]] = []
        self.in_flight = self.max_in_flight = 0
        self.stall_count, self.stall_s = 0, 0.0
        self._llamas: dict[tuple[str, int], Any] = {}
        self._infer_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.faults: dict[str, str] = {}
        self.after: dict[str, Any] = {}
        self.before: dict[str, Any] = {}
        self.listing_races = 0
        self.stall_seconds = 30.0
        self.trickle_interval = 1.0
        self.trickle_lines = 10
        self._released = threading.Event()  # set by stop(): stalled handlers let go

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> OllamaContractServer:
        if self.renderer == "go":
            go_renderer()  # build before serving, so the first request is not slow
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="ollama-contract", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self._llamas.clear()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> OllamaContractServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- blobs ------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        match = _DIGEST.match(digest)
        if not match:
            raise ApiError(400, "invalid digest format")
        return self.blobs / f"sha256-{match.group(1)}"

    def put_blob(self, digest: str, chunks: Iterator[bytes]) -> None:
        path = self.blob_path(digest)
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".upload-")
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                h.update(chunk)
                fh.write(chunk)
        got = f"sha256:{h.hexdigest()}"
        if got != digest.replace("sha256-", "sha256:"):
            os.unlink(tmp)
            raise ApiError(400, f'digest mismatch, expected "{digest}", got "{got}"')
        os.replace(tmp, path)

    # -- models -----------------------------------------------------------------------------------
    @staticmethod
    def full_name(name: str) -> str:
        last = name.rsplit("/", 1)[-1]
        return name if ":" in last else f"{name}:latest"

    def lookup(self, name: str | None, missing: str) -> dict[str, Any]:
        record = self.models.get(self.full_name(name or ""))
        if record is None:
            raise ApiError(404, missing.format(name=name))
        return record

    def create_events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The create steps as status events; raises ApiError for a mid-stream {"error"}."""
        name = self.full_name(body["model"])
        files: dict[str, str] = body.get("files") or {}
        ggufs = [key for key in files if key.endswith(".gguf")]
        if len(ggufs) != 1:
            raise ApiError(400, f"expected exactly one .gguf in files, got {sorted(files)}")
        layers = []
        yield {"status": "parsing GGUF"}  # first, as Ollama 0.24.0: a missing blob is an error mid-stream
        for key, digest in files.items():
            path = self.blob_path(digest)
            if not path.is_file():
                raise ApiError(400, f"{key}: blob {digest} not found; upload it to /api/blobs first")
        path = self.blob_path(files[ggufs[0]])
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ApiError(400, f"{ggufs[0]}: invalid file magic")
        layers.append(
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": files[ggufs[0]],
                "size": path.stat().st_size,
            }
        )
        yield {"status": f"using existing layer {files[ggufs[0]]}"}
        fields = {k: v for k, v in body.items() if k not in self.ignore_create_fields}
        params = fields.get("parameters") or {}
        for key, value in params.items():
            if key not in PARAMETER_TYPES:
                raise ApiError(400, f"unknown parameter '{key}'")
            if key == "stop" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
                raise ApiError(400, "invalid stop parameter: expected a list of strings")
        record = {
            "name": name,
            **_gguf_facts(path),
            "files": dict(files),
            "gguf": files[ggufs[0]],
            "template": fields.get("template", ""),
            "system": fields.get("system", ""),
            "parameters": dict(params),
            "messages": list(fields.get("messages") or []),
            "license": [lic] if isinstance(lic := fields.get("license"), str) else list(lic or []),
        }
        media = {"template": "template", "system": "system", "parameters": "params", "messages": "messages"}
        for kind in media:
            if record[kind]:
                blob = (
                    json.dumps(record[kind]).encode() if kind in ("parameters", "messages") else record[kind].encode()
                )
                digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
                layers.append(
                    {
                        "mediaType": f"application/vnd.ollama.image.{media[kind]}",
                        "digest": digest,
                        "size": len(blob),
                    }
                )
                yield {"status": f"creating new layer {digest}"}
        yield {"status": "writing manifest"}
        manifest = json.dumps({"schemaVersion": 2, "layers": layers}, sort_keys=True).encode()
        record["digest"] = hashlib.sha256(manifest).hexdigest()
        record["size"] = sum(layer["size"] for layer in layers)
        record["modified_at"] = _now()
        with self._state_lock:
            self.models[name] = record
        yield {"status": "success"}

    def copy(self, source: str, destination: str) -> None:
        """/api/copy: the destination gets the source's manifest (same layers, same digest)."""
        record = self.lookup(source, 'model "{name}" not found')
        dst = self.full_name(destination)
        with self._state_lock:
            self.models[dst] = {**json.loads(json.dumps(record)), "name": dst, "modified_at": _now()}

    def show(self, record: dict[str, Any]) -> dict[str, Any]:
        params = []
        for key, value in record["parameters"].items():
            for item in value if isinstance(value, list) else [value]:
                params.append(f"{key:<30} {_go_value(item)}")
        lines = ['# Modelfile generated by "ollama show"', f"FROM {self.blob_path(record['gguf'])}"]
        if record["template"]:
            lines.append(f'TEMPLATE """{record["template"]}"""')
        if record["system"]:
            lines.append(f'SYSTEM """{record["system"]}"""')
        for key, value in record["parameters"].items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"PARAMETER {key} {item}")
        for msg in record["messages"]:
            lines.append(f"MESSAGE {msg['role']} {msg['content']}")
        shown = {
            "license": "\n".join(record["license"]),
            "modelfile": "\n".join(lines) + "\n",
            "parameters": "\n".join(params),
            "template": record["template"],
            "system": record["system"],
            "details": {**record["details"], "parent_model": str(self.blob_path(record["gguf"]))},
            "model_info": record["model_info"],
            "tensors": record["tensors"],
            "capabilities": ["completion"],
            "modified_at": record["modified_at"],
        }
        return {k: v for k, v in shown.items() if v != "" or k == "modelfile"}  # Go's omitempty

    # -- inference --------------------------------------------------------------------------------
    def _llama(self, record: dict[str, Any], n_ctx: int) -> Any:
        import llama_cpp

        key = (record["gguf"], n_ctx)
        if key not in self._llamas:
            self._llamas.clear()  # one model resident at a time, like a small Ollama
            self._llamas[key] = llama_cpp.Llama(
                model_path=str(self.blob_path(record["gguf"])),
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                verbose=False,
            )
        return self._llamas[key]

    def render(self, record: dict[str, Any], messages: list[dict[str, str]], system: str, llm: Any) -> str:
        if self.renderer == "go":
            return render_go(record["template"], system=system, messages=messages)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        msgs = messages
        if system and (not msgs or msgs[0]["role"] != "system"):
            msgs = [{"role": "system", "content": system}, *msgs]
        vocab = llm._model
        fmt = Jinja2ChatFormatter(
            llm.metadata["tokenizer.chat_template"],
            eos_token=vocab.token_get_text(vocab.token_eos()),
            bos_token=vocab.token_get_text(vocab.token_bos()),
        )
        return str(fmt(messages=msgs).prompt)

    def infer(self, record: dict[str, Any], body: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
        """Token pieces as {"piece": str[, "logprobs"]} then {"done_reason", counts, durations}."""
        opts = {**DEFAULT_OPTIONS, **record["parameters"], **(body.get("options") or {})}
        start = time.perf_counter_ns()
        import llama_cpp

        with self._infer_lock:
            llm = self._llama(record, int(opts["num_ctx"]))
            load_ns = time.perf_counter_ns() - start
            if kind == "generate" and body.get("raw"):
                prompt = str(body.get("prompt", ""))
            elif kind == "generate":
                system = body.get("system") or record["system"]
                msgs = [*record["messages"], {"role": "user", "content": str(body.get("prompt", ""))}]
                prompt = self.render(record, msgs, system, llm)
            else:
                prompt = self.render(record, [*record["messages"], *body["messages"]], record["system"], llm)
            self.last_prompt = prompt
            # Special tokens in the rendered prompt are parsed as tokens, as Ollama does.
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            room = llm.n_ctx() - len(tokens)
            if room <= 0:
                raise ApiError(400, f"prompt of {len(tokens)} tokens does not fit num_ctx {llm.n_ctx()}")
            limit = int(opts["num_predict"])
            limit = room if limit < 0 else min(limit, room)
            stop = opts.get("stop") or []
            seed = int(opts["seed"])
            sampled: list[int] = []
            evaluated: list[int] = []  # when the prompt was evaluated (the first token's logits are there)

            def count_sampled(input_ids: Any, scores: Any) -> Any:
                # Called once per sampled token: eval_count counts tokens, not text pieces (a
                # token can be half a Devanagari character and print nothing yet).
                if not sampled:
                    evaluated.append(time.perf_counter_ns())
                sampled.append(1)
                return scores

            from bhasha_build.core.confidence import TokenRecorder, to_ollama

            want_logprobs = kind == "chat" and bool(body.get("logprobs"))
            top = max(0, min(int(body.get("top_logprobs") or 0), 20))
            recorder = TokenRecorder(top)
            processors = [count_sampled, recorder] if want_logprobs else [count_sampled]

            def logprobs() -> list[dict[str, Any]]:
                steps = [(llm.detokenize([t]), lp, [(llm.detokenize([i]), p) for i, p in alts])
                         for t, lp, alts in recorder.take()]
                entries = to_ollama([(data, lp, alts) for data, lp, alts in steps if data])  # no end-of-generation
                return [e if top else {k: v for k, v in e.items() if k != "top_logprobs"} for e in entries]

            stream = llm.create_completion(
                tokens,
                max_tokens=limit,
                temperature=float(opts["temperature"]),  # 0 = greedy in llama.cpp, as in Ollama
                top_k=int(opts["top_k"]),
                top_p=float(opts["top_p"]),
                min_p=float(opts["min_p"]),
                typical_p=float(opts["typical_p"]),
                repeat_penalty=float(opts["repeat_penalty"]),
                presence_penalty=float(opts["presence_penalty"]),
                frequency_penalty=float(opts["frequency_penalty"]),
                stop=list(stop),
                seed=seed if seed >= 0 else int(time.time_ns() % 2**31),
                logits_processor=llama_cpp.LogitsProcessorList(processors),
                stream=True,
            )
            eval_start = time.perf_counter_ns()
            reason, text = "length", []
            for chunk in stream:
                choice = chunk["choices"][0]
                if choice["text"]:
                    text.append(choice["text"])
                    yield {"piece": choice["text"], **({"logprobs": logprobs()} if want_logprobs else {})}
                if choice.get("finish_reason"):
                    reason = "stop" if choice["finish_reason"] == "stop" else "length"
            if want_logprobs:
                recorder.finish()
                if rest := logprobs():
                    yield {"piece": "", "logprobs": rest}
            end = time.perf_counter_ns()
            first = evaluated[0] if evaluated else end
            context = [*tokens, *llm.tokenize("".join(text).encode(), add_bos=False, special=True)]
        final = {
            "done_reason": reason,
            "total_duration": end - start,
            "load_duration": load_ns,
            "prompt_eval_count": len(tokens),
            "prompt_eval_duration": first - eval_start,
            "eval_count": len(sampled),
        }
        if len(sampled) > 1:  # Ollama times generation from the second token on, and omits a zero
            final["eval_duration"] = end - first
        if kind == "generate" and not body.get("raw"):
            final["context"] = context  # the old /api/generate conversation state (not for raw prompts)
        yield final


class _Handler(BaseHTTPRequestHandler):
    app: OllamaContractServer
    protocol_version = "HTTP/1.1"
    server_version = "ollama-contract/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures anyway
        pass

    # -- io helpers -------------------------------------------------------------------------------
    def _body_chunks(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk

    def _json_body(self) -> dict[str, Any]:
        raw = b"".join(self._body_chunks())
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        if hook := self.app.before.get(self.path.split("?")[0]):
            hook(body)
        return body

    def _send(self, status: int, payload: Any = None, *, text: str | None = None) -> None:
        if status < 400 and (failed := _AFTER_FAULTS.get(getattr(self, "_fault_after", ""))):  # applied, then
            status, payload, text = failed, {"error": f"injected {self._fault_after} ({failed})"}, None  # an error
        data = (
            b""
            if payload is None and text is None
            else (text.encode() if text is not None else json.dumps(payload, ensure_ascii=False).encode())
        )
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            # The request body may be unread: close, and say so, so the client does not reuse the socket.
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        """NDJSON over chunked encoding; an ApiError after the headers becomes an {"error"} line."""
        first: dict[str, Any] | None
        try:
            first = next(events)
        except StopIteration:
            first = None
        except ApiError as exc:  # nothing sent yet: a plain error status, as Ollama does
            self._send(exc.status, {"error": str(exc)})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(obj: dict[str, Any]) -> None:
            line = json.dumps(obj, ensure_ascii=False).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        try:
            if first is not None:
                emit(first)
            for event in events:
                emit(event)
        except ApiError as exc:
            emit({"error": str(exc)})
        except Exception as exc:  # e.g. llama.cpp failing mid-generation: Ollama streams the error too
            emit({"error": f"{type(exc).__name__}: {exc}"})
        self.wfile.write(b"0\r\n\r\n")

    # -- dispatch ---------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        path = self.path.split("?")[0]
        self.app.requests.append((self.command, path))
        self.app.authorizations.append(self.headers.get("Authorization"))
        self._fault_after = self.app.faults.get(path, "")
        if path in self.app.faults and self._fault_after not in _AFTER_FAULTS:
            self._fault(self.app.faults[path])
            return
        try:
            route = self._route(self.command, path)
            if route is None:
                self._send(404, text="404 page not found")
                return
            route()
        except ApiError as exc:
            self._send(exc.status, {"error": str(exc)})
        except Exception as exc:
            self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
        if path in self.app.after:
            self.app.after[path](getattr(self, "_last_body", None))

    def _fault(self, kind: str) -> None:
        """Misbehave as ``kind`` (module docstring) after reading the request body."""
        b"".join(self._body_chunks())
        if kind == "html":
            page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
            self._send(200, text=page)
            return
        if kind == "list":
            self._send(200, [{"model": "x", "done": True}])
            return
        if kind == "drop":
            self.close_connection = True
            return
        if kind == "echo-auth":
            auth = self.headers.get("Authorization") or ""
            self._send(401, {"error": f"unauthorized: header Authorization={auth!r} refused; token "
                                      f"{auth.removeprefix('Bearer ')} is not known here"})
            return
        line = json.dumps({"model": "x", "created_at": _now(), "message": {"role": "assistant", "content": "क"},
                           "response": "क", "done": False}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()
        self.close_connection = True
        if kind == "truncate":  # a chunk that promises more bytes than come before the close
            self.wfile.write(b"400\r\n" + line[:10])
            self.wfile.flush()
        elif kind == "stall":
            self.app._released.wait(self.app.stall_seconds)
        elif kind == "trickle":
            for _ in range(self.app.trickle_lines - 1):
                if self.app._released.wait(self.app.trickle_interval):
                    return
                try:
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.flush()
                except OSError:  # the client gave up (its deadline): fine
                    return
        else:
            raise ValueError(f"unknown fault {kind!r}")

    do_GET = do_POST = do_HEAD = do_DELETE = _dispatch

    def _route(self, method: str, path: str) -> Any:
        if path == "/" and method in ("GET", "HEAD"):
            return lambda: self._send(200, text="Ollama is running")
        if path.startswith("/api/blobs/"):
            return {"HEAD": self._blob_head, "POST": self._blob_post}.get(method, self._not_allowed)
        table = {
            "/api/version": ("GET", self._version),
            "/api/create": ("POST", self._create),
            "/api/show": ("POST", self._show),
            "/api/tags": ("GET", self._tags),
            "/api/delete": ("DELETE", self._delete),
            "/api/copy": ("POST", self._copy),
            "/api/generate": ("POST", self._generate),
            "/api/chat": ("POST", self._chat),
        }
        if path not in table:
            return None
        want, fn = table[path]
        return fn if method == want or (want == "GET" and method == "HEAD") else self._not_allowed

    def _not_allowed(self) -> None:
        b"".join(self._body_chunks())
        self._send(405, text="405 method not allowed")

    # -- endpoints --------------------------------------------------------------------------------
    def _version(self) -> None:
        self._send(200, {"version": self.app.version})

    def _digest_from_path(self) -> str:
        return self.path.split("?")[0].removeprefix("/api/blobs/")

    def _blob_head(self) -> None:
        path = self.app.blob_path(self._digest_from_path())
        self._send(200 if path.is_file() else 404)

    def _blob_post(self) -> None:
        digest = self._digest_from_path()
        self.app.blob_path(digest)  # format check before reading the body
        self.app.put_blob(digest, self._body_chunks())  # reads the whole body, then checks the digest
        self._send(201)

    def _create(self) -> None:
        body = self._json_body()
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ApiError(400, "invalid model name")
        body["model"] = name
        if not body.get("files") and not body.get("from"):
            raise ApiError(400, "neither 'from' or 'files' was specified")
        if body.get("from") and not body.get("files"):
            raise ApiError(400, "this test server only creates from uploaded files")
        for key, digest in body["files"].items():
            pure = PurePosixPath(key)
            if not key or pure.is_absolute() or ".." in pure.parts or "\\" in key or ":" in key:
                raise ApiError(400, f"file path must be relative: {key!r}")
            if not isinstance(digest, str) or not _DIGEST.match(digest):
                raise ApiError(400, f"invalid digest format for {key!r}")
        events = self.app.create_events(body)
        if body.get("stream", True):
            self._stream(events)
            return
        *_, last = events
        self._send(200, last)

    def _show(self) -> None:
        body = self._json_body()
        name = body.get("model") or body.get("name")
        self._send(200, self.app.show(self.app.lookup(name, "model '{name}' not found")))

    def _tags(self) -> None:
        with self.app._state_lock:
            race, self.app.listing_races = self.app.listing_races > 0, max(0, self.app.listing_races - 1)
        if race:
            raise ApiError(500, "stat /root/.ollama/models/manifests/registry.ollama.ai/library/bhasha-ocr/"
                                "candidate-1: no such file or directory")
        models = [
            {
                "name": r["name"],
                "model": r["name"],
                "modified_at": r["modified_at"],
                "size": r["size"],
                "digest": r["digest"],
                "details": r["details"],
            }
            for r in self.app.models.values()
        ]
        self._send(200, {"models": models})

    def _delete(self) -> None:
        body = self._json_body()
        name = body.get("model") or body.get("name")
        self._last_body = body
        self.app.lookup(name, "model '{name}' not found")
        with self.app._state_lock:
            self.app.models.pop(self.app.full_name(name), None)
        self._send(200)

    def _copy(self) -> None:
        body = self._json_body()
        self._last_body = body
        source, destination = body.get("source"), body.get("destination")
        for field, value in (("source", source), ("destination", destination)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ApiError(400, f"{field} {value!r} is invalid")
        self.app.copy(source, destination)
        self._send(200)

    def _infer(self, kind: str) -> None:
        body = self._json_body()
        name = body.get("model")
        record = self.app.lookup(name, 'model "{name}" not found, try pulling it first')
        if kind == "chat":
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m for m in msgs):
                raise ApiError(400, "messages must be a list of {role, content}")
            if not msgs:  # Ollama answers an empty chat by loading the model only
                self._send(
                    200,
                    {
                        "model": name,
                        "created_at": _now(),
                        "message": {"role": "assistant", "content": ""},
                        "done_reason": "load",
                        "done": True,
                    },
                )
                return
        key = "response" if kind == "generate" else "message"

        def shape(text: str) -> Any:
            return text if kind == "generate" else {"role": "assistant", "content": text}

        def events() -> Iterator[dict[str, Any]]:
            for event in self.app.infer(record, body, kind):
                if "piece" in event:
                    extra = {"logprobs": event["logprobs"]} if "logprobs" in event else {}
                    yield {"model": name, "created_at": _now(), key: shape(event["piece"]), "done": False, **extra}
                else:
                    yield {"model": name, "created_at": _now(), key: shape(""), "done": True, **event}

        if body.get("stream", True):
            self._stream(events())
            return
        pieces, final, logprobs = [], {}, []
        for event in events():
            if event["done"]:
                final = event
            else:
                pieces.append(event["response"] if kind == "generate" else event["message"]["content"])
                logprobs += event.get("logprobs", [])
        final[key] = shape("".join(pieces))
        if body.get("logprobs") and kind == "chat":
            final["logprobs"] = logprobs
        self._send(200, final)

    def _generate(self) -> None:
        self._counted("generate")

    def _chat(self) -> None:
        self._counted("chat")

    def _counted(self, kind: str) -> None:
        """_infer, counted in in_flight; a stalled request (stall_count) hangs, then drops the connection."""
        app = self.app
        with app._state_lock:
            app.in_flight += 1
            app.max_in_flight = max(app.max_in_flight, app.in_flight)
            stall = app.stall_count > 0
            app.stall_count -= stall
        try:
            if stall:
                b"".join(self._body_chunks())
                time.sleep(app.stall_s)
                self.close_connection = True
                return
            self._infer(kind)
        finally:
            with app._state_lock:
                app.in_flight -= 1
