"""The one source of the conversation format: system prompt, ChatML pair formatting, templates.

Train, eval, the tiny tokenizer and the Modelfile all read from here, so the model is served
exactly the way it was trained.

Knobs: none at run time; changing SYSTEM_PROMPT changes training, eval and the Modelfile together.
"""

from __future__ import annotations

import re
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
# Stop strings for any server that decodes this model (Ollama PARAMETER stop, llama.cpp).
STOP_TOKENS = [IM_END, ENDOFTEXT, IM_START]

# Any special token of the Qwen family's form <|name|> (<|im_start|>, <|im_end|>, <|endoftext|>,
# <|fim_prefix|>, <|vision_start|>, ...): text holding one would tokenize to the special id.
SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_.\-]{1,64}\|>")


def find_special_token(text: str) -> re.Match[str] | None:
    """The first chat-template special token in ``text`` (data rows must hold none)."""
    return SPECIAL_TOKEN_RE.search(text)


# Qwen2.5 injects this system turn when a conversation has none; kept so parity holds either way.
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

SYSTEM_PROMPT = (
    "You correct OCR errors in Indic-script text (Devanagari, Bengali, Tamil). "
    "Reply with the corrected text only, keeping the original wording, script and punctuation."
)

# Qwen2.5-Instruct's chat template without the tool-calling branches (which this task never uses).
# It renders identically to the real Qwen2.5 template for system/user/assistant conversations.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def pair_messages(noisy: str, clean: str | None = None, system: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """System + user(noisy) [+ assistant(clean)] for one OCR pair."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": noisy}]
    if clean is not None:
        messages.append({"role": "assistant", "content": clean})
    return messages


def pair_to_prompt_completion(noisy: str, clean: str) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion form: loss falls on the completion only."""
    return {"prompt": pair_messages(noisy), "completion": [{"role": "assistant", "content": clean}]}


def row_to_training_example(row: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """A data-stage row (OCR pair or chat row) → prompt/completion split at the last assistant turn."""
    if "messages" in row:
        messages = list(row["messages"])
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("chat row must end with an assistant turn")
        return {"prompt": messages[:-1], "completion": [messages[-1]]}
    return pair_to_prompt_completion(row["noisy"], row["clean"])


def render_chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Pure-Python rendering of CHAT_TEMPLATE (no jinja needed); tests hold it equal to HF's."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"{IM_START}system\n{QWEN_DEFAULT_SYSTEM}{IM_END}\n")
    for message in messages:
        out.append(f"{IM_START}{message['role']}\n{message['content']}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)
