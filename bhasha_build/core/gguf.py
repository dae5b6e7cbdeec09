"""GGUF files: read and check their structure, read metadata, chat with a model (pinned llama.cpp).

`read_gguf` is a small reader of the GGUF container (v2/v3: header, key/values, tensor infos) in
pure Python that trusts nothing it reads: every length and count is checked against the file's size
before it is used, so a truncated or lying file ends in one `GgufError` line, never a crash or a
multi-GB allocation. `check_gguf` (export's check, run on the temporary file BEFORE it gets its final
name) uses it for the metadata (architecture, file type, ChatML template) and for the data: every
tensor's bytes must lie inside the file, aligned, without overlap.

`LlamaChat` is the one llama.cpp chat completion of the project (export's sanity stage, eval's GGUF
system, `correct` without a server): the prompt is rendered by `chat.render_chatml` from the
system prompt + the user's line, decoding is greedy (temperature 0, the config's seed) and stops on
`chat.STOP_TOKENS`, exactly as the Modelfile tells Ollama to. Each completion also records its tokens'
log-probabilities (core/confidence.TokenRecorder) and the model's confidence in its change of the line
(core/confidence.change_confidence); `count_tokens` counts a text's tokens for the reply budget
(core/guard.reply_budget).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bhasha_build.core import toolchain
from bhasha_build.core.chat import STOP_TOKENS, pair_messages, render_chatml
from bhasha_build.core.confidence import TokenProb, TokenRecorder, change_confidence, token_probs
from bhasha_build.core.env import LLAMA_FIRST, llama_first_in_children
from bhasha_build.core.errors import BhashaError


class GgufError(BhashaError):
    """A GGUF that is not what the project exports (one line, naming the file)."""


GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# ggml tensor types: (elements per block, bytes per block), as gguf-py's GGML_QUANT_SIZES
GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}
# GGUF value types: struct format of the scalars; 8 = string, 9 = array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MAX_DIMS = 8
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section
    nbytes: int


@dataclass(frozen=True)
class GgufFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GgufTensor] = field(default_factory=list)
    data_offset: int = 0
    size: int = 0


@dataclass(frozen=True)
class GgufArray:
    """A metadata array, kept as its item type and length (token lists are not needed to check a file)."""

    item_type: int
    count: int


class _Reader:
    """Bounded reads over the mapped file: a length or count past its end is refused before use."""

    def __init__(self, buf: Any, size: int, name: str) -> None:
        self.buf, self.size, self.name, self.pos = buf, size, name, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GgufError(f"{self.name}: truncated or corrupt: {what} needs {n} bytes at offset "
                            f"{self.pos}, the file has {self.size}")

    def scalar(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what)
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GgufError(f"{self.name}: {what} is not UTF-8 (offset {self.pos - n})") from None

    def skip_strings(self, count: int, what: str) -> None:
        buf, pos, size, length = self.buf, self.pos, self.size, _U64.unpack_from  # hot loop: vocabularies
        for _ in range(count):
            if pos + 8 > size:
                break
            pos += 8 + length(buf, pos)[0]
            if pos > size:
                break
        else:
            self.pos = pos
            return
        raise GgufError(f"{self.name}: truncated or corrupt: {what} ({count} strings) runs past the end "
                        f"of the file ({size} bytes)")

    def value(self, vtype: int, what: str) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], what)
        if vtype == 8:
            return self.string(what)
        if vtype == 9:
            item_type, count = self.scalar("<I", what), self.scalar("<Q", what)
            if item_type in _SCALARS:
                self.need(count * struct.calcsize(_SCALARS[item_type]), f"{what} ({count} items)")
                self.pos += count * struct.calcsize(_SCALARS[item_type])
            elif item_type == 8:
                self.need(count * 8, f"{what} ({count} strings)")
                self.skip_strings(count, what)
            else:
                raise GgufError(f"{self.name}: {what}: array of value type {item_type} is not supported")
            return GgufArray(item_type, count)
        raise GgufError(f"{self.name}: {what} has unknown value type {vtype}")


def read_gguf(path: str | Path) -> GgufFile:
    """Parse a GGUF file's header, metadata and tensor infos; check every tensor lies inside the file.

    Raises GgufError (one line naming the file and what is wrong): not GGUF, an unknown version or
    type, a length or count past the end, a tensor whose data is not inside the file, misaligned or
    overlapping another. Metadata arrays are returned as `GgufArray` (type and length)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 4 or fh.read(4) != GGUF_MAGIC:
                raise GgufError(f"{path.name}: not a GGUF file (bad magic)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf, size)
    except OSError as exc:
        raise GgufError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse(path: Path, buf: Any, size: int) -> GgufFile:
    r = _Reader(buf, size, path.name)
    r.pos = 4
    version = r.scalar("<I", "version")
    if version not in (2, 3):
        raise GgufError(f"{path.name}: GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = r.scalar("<Q", "tensor count"), r.scalar("<Q", "metadata count")
    r.need(n_kv * 13, f"{n_kv} metadata entries")  # key length (8) + type (4) + a 1-byte value at least
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = r.string(f"metadata key {i}")
        metadata[key] = r.value(r.scalar("<I", key), key)
    r.need(n_tensors * 24, f"{n_tensors} tensor infos")  # name length, n_dims, type, offset at least
    infos = []
    for i in range(n_tensors):
        name = r.string(f"tensor {i} name")
        n_dims = r.scalar("<I", name)
        if not 1 <= n_dims <= _MAX_DIMS:
            raise GgufError(f"{path.name}: tensor {name!r} has {n_dims} dimensions")
        shape = tuple(r.scalar("<Q", name) for _ in range(n_dims))
        infos.append((name, shape, r.scalar("<I", name), r.scalar("<Q", name)))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GgufError(f"{path.name}: general.alignment {alignment!r} is not a power of two")
    data_offset = -(-r.pos // alignment) * alignment
    tensors = [GgufTensor(name, shape, gtype, offset, _tensor_bytes(path.name, name, shape, gtype))
               for name, shape, gtype, offset in infos]
    _check_tensor_data(path.name, tensors, data_offset, alignment, size)
    return GgufFile(path, version, metadata, tensors, data_offset, size)


def _tensor_bytes(file: str, name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    if ggml_type not in GGML_TYPES:
        raise GgufError(f"{file}: tensor {name!r} has unknown ggml type {ggml_type}")
    block, type_size = GGML_TYPES[ggml_type]
    elements = 1
    for dim in shape:
        elements *= dim
    if shape[0] % block:
        raise GgufError(f"{file}: tensor {name!r} row of {shape[0]} is not a multiple of its block {block}")
    return elements // block * type_size


def _check_tensor_data(file: str, tensors: list[GgufTensor], data_offset: int, alignment: int, size: int) -> None:
    if not tensors:
        raise GgufError(f"{file}: no tensors")
    end_of_previous, previous = 0, None
    for t in sorted(tensors, key=lambda t: t.offset):
        start, end = data_offset + t.offset, data_offset + t.offset + t.nbytes
        if t.offset % alignment:
            raise GgufError(f"{file}: tensor {t.name!r} at data offset {t.offset} is not aligned to {alignment}")
        if end > size:
            raise GgufError(f"{file}: truncated: tensor {t.name!r} needs bytes {start}..{end}, "
                            f"the file ends at {size}")
        if t.offset < end_of_previous:
            raise GgufError(f"{file}: tensor {t.name!r} overlaps {previous!r}")
        end_of_previous, previous = t.offset + t.nbytes, t.name


def added_tokens(path: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) of the vocabulary's control (special) and user-defined (not special) tokens
    as the file records them (tokenizer.ggml.token_type, read with PyPI gguf): what an HF tokenizer
    must hold as added tokens. (llama.cpp's loaded vocabulary differs: it also marks end-of-text-like
    texts such as "</s>" as control, with a warning, which the model's own tokenizer never did.)"""
    from gguf import GGUFReader, TokenType

    reader = GGUFReader(str(path))
    tokens, types = reader.fields["tokenizer.ggml.tokens"], reader.fields["tokenizer.ggml.token_type"]
    kinds = {int(TokenType.CONTROL): True, int(TokenType.USER_DEFINED): False}
    out = []
    for token_id, (text_at, type_at) in enumerate(zip(tokens.data, types.data, strict=True)):
        kind = int(types.parts[type_at][0])
        if kind in kinds:
            out.append((token_id, bytes(tokens.parts[text_at]).decode("utf-8"), kinds[kind]))
    return out


def check_gguf(path: Path, quant: str, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """The structure (`read_gguf`: every tensor inside the file), architecture qwen2, the file type
    of `quant`, a ChatML chat template and each `expect`ed metadata value (e.g. qwen2.block_count for
    a pinned source); returns the facts checked. Needs no llama.cpp."""
    info = read_gguf(path)
    meta = info.metadata
    problems = [f"{key} is {meta.get(key)!r}, not {want!r}" for key, want in (expect or {}).items()
                if str(meta.get(key)) != str(want)]
    if meta.get("general.architecture") != "qwen2":
        problems.append(f"general.architecture is {meta.get('general.architecture')!r}, not 'qwen2'")
    want = toolchain.QUANT_TYPES[quant]  # llama_ftype, as written to general.file_type
    if meta.get("general.file_type") != want:
        problems.append(f"general.file_type is {meta.get('general.file_type')}, not {want} ({quant})")
    template = meta.get("tokenizer.chat_template", "")
    if not isinstance(template, str) or "<|im_start|>" not in template:
        problems.append("tokenizer.chat_template missing or not ChatML")
    if problems:
        raise GgufError(f"{path.name}: " + "; ".join(problems))
    return {"architecture": meta["general.architecture"], "file_type": meta["general.file_type"],
            "chat_template": True, "eos_token_id": int(meta.get("tokenizer.ggml.eos_token_id", -1)),
            "pre_tokenizer": meta.get("tokenizer.ggml.pre"), "tensors": len(info.tensors),
            "data_bytes": info.size - info.data_offset, **{key: meta[key] for key in expect or {}}}


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (a stop token ended it) or "length" (the budget ran out)
    completion_tokens: int
    tokens: tuple[TokenProb, ...] | None = None  # the reply's tokens and their log-probabilities
    confidence: float | None = None  # core/confidence.change_confidence of the reply for the input

    @property
    def cut(self) -> bool:
        """The reply ran into its token budget instead of stopping."""
        return self.finish_reason != "stop"


def count_tokens_with(gguf: Path, texts: list[str]) -> list[int]:
    """Each text's tokens in `gguf`'s own vocabulary (llama.cpp, vocabulary only: no weights loaded) —
    what a server running that GGUF counts, for the reply budget (core/guard.reply_budget)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        return [len(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in texts]
    finally:
        llm.close()


def gpu_offload() -> bool:
    """Whether the installed llama.cpp can put layers on a GPU (a CUDA build, e.g. scripts/gpu-llama-cuda.sh
    on the GPU box or the image's): then n_gpu_layers=-1 runs the whole model there."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except (ImportError, AttributeError, OSError):
        return False


# a fresh process answers one line (generation_check); faulthandler prints the Python stack if llama.cpp dies
_CHECK_CODE = ("import sys; from pathlib import Path; from bhasha_build.core.gguf import LlamaChat\n"
               "with LlamaChat(Path(sys.argv[1]), n_ctx=256, seed=0, n_gpu_layers=int(sys.argv[2])) as chat:\n"
               "    chat.complete('नमस्ते दुनिया', 8)\n")
# torch's CUDA libraries (cuBLAS among them) loaded before llama.cpp's, as in a process that exported with torch
_TORCH_FIRST = ("import torch\n"
                "if torch.cuda.is_available():\n"
                "    (torch.ones(8, 8, device='cuda') @ torch.ones(8, 8, device='cuda')).sum().item()\n")
_checks: dict[tuple[str, int, bool], str | None] = {}
_check_stderr: dict[tuple[str, int, bool], str] = {}  # the child's whole stderr (llama.cpp's log, the stack)


def _ended(code: int | None) -> str:
    """How a child process ended, from its exit code (negative: the signal that killed it)."""
    import signal

    return f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit {code}"


def generation_check(gguf: Path, n_gpu_layers: int = -1, torch_first: bool = False) -> str | None:
    """None when llama.cpp answers a line with `gguf` (n_gpu_layers: -1 wholly on the GPU, 0 on the CPU) in a
    fresh process; else why not, in one line (the exit or signal, the last lines it printed). A CUDA build
    that offloads can still die while generating (seen 2026-12-02 on an H200: SIGSEGV in every scoring
    process, quantize in the same process fine); asking in a child keeps the caller alive to fall back.
    Once per GGUF and layer setting per process. `python -m bhasha_build.core.gguf check GGUF --layers N`
    asks from a shell (scripts/gpu-quality.sh). torch_first: the child loads torch's CUDA libraries first
    (a diagnosis of that SIGSEGV: scripts/llama-choose.sh asks both ways)."""
    key = (str(Path(gguf).resolve()), n_gpu_layers, torch_first)
    if key not in _checks:
        import subprocess
        import sys

        code = (_TORCH_FIRST if torch_first else "") + _CHECK_CODE
        try:
            proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code, key[0], str(n_gpu_layers)],
                                  capture_output=True, text=True, timeout=600, check=False,
                                  env={**os.environ, LLAMA_FIRST: "1"})  # as eval's workers load it
            code, tail = proc.returncode, [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()][-3:]
            _check_stderr[key] = proc.stderr
        except subprocess.TimeoutExpired as timeout:
            code, tail = None, ["no answer in 600 s"]
            _check_stderr[key] = str(timeout.stderr or "")
        if code == 0:
            _checks[key] = None
        else:
            how = _ended(code) if code is not None else "timed out"
            where = "the GPU" if n_gpu_layers else "the CPU"
            _checks[key] = f"llama.cpp on {where}: {how}: " + " | ".join(tail)[-400:]
    return _checks[key]


@dataclass(frozen=True)
class LlamaPlan:
    """How the GGUF systems are scored: layers on the GPU (-1 all, 0 none), contexts at once, and why the GPU
    is not used where the build could (generation_check's line)."""

    n_gpu_layers: int
    contexts: int
    gpu_failure: str | None = None

    def record(self) -> dict[str, Any]:
        """eval.json's `generation` entries: llama.cpp on the GPU or not, contexts, why not the GPU."""
        return {"llama_cpp_gpu": self.n_gpu_layers != 0, "contexts": self.contexts,
                **({"gpu_failure": self.gpu_failure} if self.gpu_failure else {})}


def llama_plan(gguf: Path, contexts: int | str = "auto") -> LlamaPlan:
    """The GPU when the installed llama.cpp offloads AND a line generates there (else the CPU, with the reason);
    contexts "auto": as many as the free GPU memory holds (gpu_contexts), on the CPU one per 4 cores."""
    offload = gpu_offload()
    failure = generation_check(gguf, -1) if offload else None
    on_gpu = offload and failure is None
    if contexts == "auto":
        contexts = gpu_contexts(gguf) if on_gpu else max(1, (os.cpu_count() or 1) // 4)
    return LlamaPlan(-1 if on_gpu else 0, int(contexts), failure)


def gpu_contexts(gguf: Path, most: int = 8) -> int:
    """How many llama.cpp contexts (one process each, each its own copy of the weights) fit the free GPU
    memory at the model's file size + 1 GiB each (KV cache, CUDA's own), at most `most`."""
    try:
        import torch

        free = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    except (ImportError, RuntimeError):
        free = None
    if free is None:
        return min(4, most)
    return max(1, min(most, int(free // (gguf.stat().st_size + 2**30))))


class LlamaChat:
    """A GGUF loaded in llama.cpp, answering one user line at a time (use as a context manager).
    n_gpu_layers: -1 puts every layer on the GPU when llama.cpp was built with CUDA (a CPU build ignores it)."""

    def __init__(self, gguf: Path, n_ctx: int, seed: int, n_gpu_layers: int = 0, n_threads: int | None = None) -> None:
        from llama_cpp import Llama

        self.seed = seed
        self.path = gguf
        self.resets = 0  # completions that needed a fresh context (see complete)
        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, seed=seed, verbose=False,
                         n_threads=n_threads or os.cpu_count(), n_gpu_layers=n_gpu_layers)

    def complete(self, text: str, max_tokens: int) -> Completion:
        """The model's reply to `text` under the system prompt (greedy, stops on chat.STOP_TOKENS).

        llama-cpp-python reuses the KV cache of the previous prompt's common prefix. When llama.cpp then
        finds no slot for a batch (`llama_decode returned 1`: seen once, on a 16-core GPU box, after many
        rows) the same prompt is retried once from an empty context: greedy decoding gives the same reply
        either way; a second failure is one GgufError line.

        The reply never runs past the context window (n_ctx, as a server's num_ctx): `max_tokens` is cut to
        the room the prompt leaves, and a prompt that leaves none is answered with an empty reply that ran
        into its budget (cut), as a served model's would be — never an exception in the middle of a run."""
        prompt = render_chatml(pair_messages(text), add_generation_prompt=True)
        room = self.llm.n_ctx() - len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
        if room <= 0:
            return Completion("", "length", 0, None, None)
        max_tokens = min(max_tokens, room)
        recorder = TokenRecorder()
        try:
            out = self._create(prompt, max_tokens, recorder)
        except RuntimeError as exc:
            if "llama_decode" not in str(exc):
                raise
            self.resets += 1
            self.llm.reset()
            self.llm._ctx.kv_cache_clear()
            recorder = TokenRecorder()
            try:
                out = self._create(prompt, max_tokens, recorder)
            except RuntimeError as again:
                raise GgufError(f"{self.path}: llama.cpp could not decode a {len(text)}-character line even from "
                                f"an empty context ({again})") from None
        choice = out["choices"][0]
        recorder.finish()
        tokens: tuple[TokenProb, ...] | None = tuple(token_probs(recorder.steps, self.llm.detokenize))
        spelled = b"".join(t.bytes for t in tokens or ()).decode("utf-8", "replace")
        if spelled.strip() != choice["text"].strip():  # a text stop string cut the reply: no alignment
            tokens = None
        return Completion(choice["text"], choice["finish_reason"], out["usage"]["completion_tokens"], tokens,
                          change_confidence(text, tokens))

    def count_tokens(self, text: str) -> int:
        """`text`'s tokens in this model's vocabulary (no BOS, special tokens as text)."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _create(self, prompt: str, max_tokens: int, recorder: TokenRecorder) -> Any:
        from llama_cpp import LogitsProcessorList

        return self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stop=STOP_TOKENS,
                                          seed=self.seed, logits_processor=LogitsProcessorList([recorder]))

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> LlamaChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LlamaChild:
    """A LlamaChat in a spawned process that loads llama_cpp before any other extension module (core/env.py),
    with the same calls (complete, count_tokens, close; a context manager). What a process that has numpy,
    rapidfuzz or torch loaded already uses with a CUDA build (the sanity stage, `correct --gguf`): on the H200
    such a build died of SIGSEGV loading a model after numpy (2026-12-03). A child that dies is one GgufError
    line, never the caller's death."""

    def __init__(self, gguf: Path, n_ctx: int, seed: int, n_gpu_layers: int = 0, n_threads: int | None = None) -> None:
        import multiprocessing

        self.path = Path(gguf)
        spawn = multiprocessing.get_context("spawn")
        self._conn, child = spawn.Pipe()
        with llama_first_in_children():
            self._proc = spawn.Process(target=_serve_chat, daemon=True,
                                       args=(child, str(gguf), n_ctx, seed, n_gpu_layers, n_threads))
            self._proc.start()
        child.close()
        self._answer()  # the load's outcome

    def _answer(self) -> Any:
        try:
            ok, value = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(10)
            raise GgufError(f"{self.path}: llama.cpp's process ended ({_ended(self._proc.exitcode)})") from None
        if not ok:
            raise GgufError(value)
        return value

    def _call(self, what: str, *args: Any) -> Any:
        with contextlib.suppress(OSError):  # the child is gone: _answer says how
            self._conn.send((what, args))
        return self._answer()

    def complete(self, text: str, max_tokens: int) -> Completion:
        return self._call("complete", text, max_tokens)

    def count_tokens(self, text: str) -> int:
        return self._call("count_tokens", text)

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("close", ()))
            self._proc.join(30)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
        self._conn.close()

    def __enter__(self) -> LlamaChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_chat(conn: Any, gguf: str, n_ctx: int, seed: int, n_gpu_layers: int, n_threads: int | None) -> None:
    """LlamaChild's process: load, say so (or why not), then answer calls until "close" or the pipe ends."""
    try:
        chat = LlamaChat(Path(gguf), n_ctx=n_ctx, seed=seed, n_gpu_layers=n_gpu_layers, n_threads=n_threads)
    except Exception as exc:  # any load failure goes back as one line
        conn.send((False, f"{gguf}: llama.cpp could not load it ({exc})"))
        return
    conn.send((True, None))
    with chat:
        while True:
            try:
                what, args = conn.recv()
            except EOFError:
                return
            if what == "close":
                return
            if what == "load_order":  # which of the extension modules that matter came first (core/env.py)
                import sys

                conn.send((True, [m for m in sys.modules if m in ("llama_cpp.llama_cpp", "numpy", "rapidfuzz")]))
                continue
            try:
                conn.send((True, getattr(chat, what)(*args)))
            except Exception as exc:  # GgufError and llama.cpp's own, as one line
                conn.send((False, str(exc)))


def open_chat(gguf: Path, n_ctx: int, seed: int, n_gpu_layers: int = 0, n_threads: int | None = None,
              isolate: bool | None = None) -> LlamaChat | LlamaChild:
    """A chat with `gguf`: in this process for a CPU build of llama.cpp (measured fine in any import order),
    in a LlamaChild for a build that can offload to a GPU (gpu_offload), or as `isolate` says."""
    if isolate is None:
        isolate = gpu_offload()
    cls = LlamaChild if isolate else LlamaChat
    return cls(gguf, n_ctx=n_ctx, seed=seed, n_gpu_layers=n_gpu_layers, n_threads=n_threads)


def main(argv: list[str] | None = None) -> int:
    """`python -m bhasha_build.core.gguf check GGUF [--layers N] [--stderr FILE] [--torch-first]`: prints "ok"
    (exit 0) or generation_check's line (exit 1); FILE gets the child's whole stderr (the stack when it died)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bhasha_build.core.gguf")
    sub = parser.add_subparsers(dest="what", required=True)
    check = sub.add_parser("check", help="does llama.cpp answer a line with this GGUF, in a fresh process?")
    check.add_argument("gguf", type=Path)
    check.add_argument("--layers", type=int, default=-1, help="n_gpu_layers: -1 all on the GPU, 0 the CPU")
    check.add_argument("--stderr", type=Path, help="write the child's whole stderr here")
    check.add_argument("--torch-first", action="store_true",
                       help="load torch's CUDA libraries (cuBLAS) in the child before llama.cpp")
    args = parser.parse_args(argv)
    failure = generation_check(args.gguf, args.layers, args.torch_first)
    if args.stderr:
        key = (str(Path(args.gguf).resolve()), args.layers, args.torch_first)
        args.stderr.write_text(_check_stderr.get(key, ""), encoding="utf-8")
    print(failure or "ok")
    return 1 if failure else 0


if __name__ == "__main__":
    raise SystemExit(main())

