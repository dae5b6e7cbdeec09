"""Sanity stage: one deterministic chat completion through llama.cpp on the exported GGUF.

It must end on a stop token (`finish_reason == "stop"`: the model emitted <|im_end|>, so the
template and EOS survived training and export) with a non-empty answer. The prompt goes through
`text.normalize_text` (data.zwj_policy), like every client's; the answer is also passed through the
do-no-harm guard (`core/guard.py`) and the report shows both (`response`, `guarded`). The same check
against a live Ollama server is deploy's (stages/deploy.py, `deploy_sanity`).

Knobs: eval.max_new_tokens (the least reply budget: core/guard.reply_budget), model.max_seq_length
(context), data.zwj_policy, guard.*, seed.
Output: sanity.json.
"""

from __future__ import annotations

from typing import Any

from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json
from bhasha_build.core.gguf import open_chat
from bhasha_build.core.guard import guard, reply_budget
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.metrics import normalize_hyp
from bhasha_build.core.text import normalize_text

SANITY_TEXT = "भारत एक विशाल देश है। यहा अनेक भाषाए बोली जाती है।"


class SanityError(BhashaError):
    """The GGUF did not answer the sanity prompt properly; ``report`` is what was recorded."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def run(cfg: BuildConfig, layout: RunLayout, text: str = SANITY_TEXT, lang: str = "hi", **_: Any) -> dict[str, Any]:
    text = normalize_text(text, cfg.data.zwj_policy)
    # a CUDA build answers from its own process (core/gguf.open_chat): this one has numpy, torch loaded
    with open_chat(layout.gguf(cfg.export.quant), n_ctx=min(cfg.model.max_seq_length, 4096), seed=cfg.seed) as llm:
        reply = llm.complete(text, reply_budget(llm.count_tokens(text), cfg.eval.max_new_tokens))
    kept = guard(text, normalize_hyp(reply.text), lang, cfg.guard)
    result = {"prompt": text, "response": reply.text, "finish_reason": reply.finish_reason,
              "completion_tokens": reply.completion_tokens, "confidence": reply.confidence,
              "guarded": {"enabled": cfg.guard.enabled, "text": kept.text, "kept_input": kept.kept_input,
                          "reason": kept.reason},
              # "stop" alone would pass a model that emits <|im_end|> at once: an answer must exist too
              "ok": reply.finish_reason == "stop" and bool(reply.text.strip())}
    atomic_write_json(layout.sanity_report, result)
    if reply.finish_reason != "stop":
        raise SanityError(f"sanity prompt ended with finish_reason={reply.finish_reason!r}, not 'stop' "
                          "(the model never emitted <|im_end|>): train longer or check the template", result)
    if not result["ok"]:
        raise SanityError("sanity prompt got an empty answer (the model stopped at once): train longer", result)
    return result
