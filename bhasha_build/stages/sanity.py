"""Sanity stage: one deterministic chat completion through llama.cpp on the exported GGUF.

It must end on a stop token (`finish_reason == "stop"`: the model emitted <|im_end|>, so the
template and EOS survived training and export) with a non-empty answer. The same check against a
live Ollama server is deploy's (stages/deploy.py, `deploy_sanity`).

Knobs: eval.max_new_tokens, model.max_seq_length (context), seed. Output: sanity.json.
"""

from __future__ import annotations

from typing import Any

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json
from bhasha_build.core.gguf import LlamaChat
from bhasha_build.core.layout import RunLayout

SANITY_TEXT = "भारत एक विशाल देश है। यहा अनेक भाषाए बोली जाती है।"


class SanityError(BhashaError):
    """The GGUF did not answer the sanity prompt properly; ``report`` is what was recorded."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def run(cfg: BuildConfig, layout: RunLayout, text: str = SANITY_TEXT, **_: Any) -> dict[str, Any]:
    with LlamaChat(layout.gguf(cfg.export.quant), n_ctx=min(cfg.model.max_seq_length, 4096), seed=cfg.seed) as llm:
        reply = llm.complete(text, cfg.eval.max_new_tokens)
    result = {"prompt": text, "response": reply.text, "finish_reason": reply.finish_reason,
              "completion_tokens": reply.completion_tokens,
              # "stop" alone would pass a model that emits <|im_end|> at once: an answer must exist too
              "ok": reply.finish_reason == "stop" and bool(reply.text.strip())}
    atomic_write_json(layout.sanity_report, result)
    if reply.finish_reason != "stop":
        raise SanityError(f"sanity prompt ended with finish_reason={reply.finish_reason!r}, not 'stop' "
                          "(the model never emitted <|im_end|>): train longer or check the template", result)
    if not result["ok"]:
        raise SanityError("sanity prompt got an empty answer (the model stopped at once): train longer", result)
    return result
