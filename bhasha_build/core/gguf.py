"""GGUF files through the pinned llama.cpp: read metadata, check an export, chat with a model.

`LlamaChat` is the one llama.cpp chat completion of the project (export's sanity stage, eval's GGUF
system, `correct` without a server): the prompt is rendered by `chat.render_chatml` from the
system prompt + the user's line, decoding is greedy (temperature 0, the config's seed) and stops on
`chat.STOP_TOKENS`, exactly as the Modelfile tells Ollama to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bhasha_build.core import toolchain
from bhasha_build.core.chat import STOP_TOKENS, pair_messages, render_chatml
from bhasha_build.core.errors import BhashaError


class GgufError(BhashaError):
    """A GGUF that is not what the project exports (one line, naming the file)."""


def gguf_metadata(path: Path) -> dict[str, str]:
    """Key/value metadata of a GGUF as llama.cpp reads it (vocab only: cheap)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return dict(llm.metadata)
    finally:
        llm.close()


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
    """Architecture qwen2, the file type of `quant`, a ChatML chat template, and each `expect`ed
    metadata value (e.g. qwen2.block_count for a pinned source); the facts checked."""
    meta = gguf_metadata(path)
    problems = [f"{key} is {meta.get(key)!r}, not {str(want)!r}" for key, want in (expect or {}).items()
                if meta.get(key) != str(want)]
    if meta.get("general.architecture") != "qwen2":
        problems.append(f"general.architecture is {meta.get('general.architecture')!r}, not 'qwen2'")
    want = toolchain.QUANT_TYPES[quant]  # llama_ftype, as written to general.file_type
    if str(meta.get("general.file_type")) != str(want):
        problems.append(f"general.file_type is {meta.get('general.file_type')}, not {want} ({quant})")
    template = meta.get("tokenizer.chat_template", "")
    if "<|im_start|>" not in template:
        problems.append("tokenizer.chat_template missing or not ChatML")
    if problems:
        raise GgufError(f"{path.name}: " + "; ".join(problems))
    return {"architecture": meta["general.architecture"], "file_type": int(meta["general.file_type"]),
            "chat_template": True, "eos_token_id": int(meta.get("tokenizer.ggml.eos_token_id", -1)),
            "pre_tokenizer": meta.get("tokenizer.ggml.pre"), **{key: meta[key] for key in expect or {}}}


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    completion_tokens: int


class LlamaChat:
    """A GGUF loaded in llama.cpp, answering one user line at a time (use as a context manager)."""

    def __init__(self, gguf: Path, n_ctx: int, seed: int, n_gpu_layers: int = 0) -> None:
        from llama_cpp import Llama

        self.seed = seed
        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, seed=seed, verbose=False,
                         n_threads=os.cpu_count(), n_gpu_layers=n_gpu_layers)

    def complete(self, text: str, max_tokens: int) -> Completion:
        """The model's reply to `text` under the system prompt (greedy, stops on chat.STOP_TOKENS)."""
        prompt = render_chatml(pair_messages(text), add_generation_prompt=True)
        out = self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stop=STOP_TOKENS,
                                         seed=self.seed)
        choice = out["choices"][0]
        return Completion(choice["text"], choice["finish_reason"], out["usage"]["completion_tokens"])

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> LlamaChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
