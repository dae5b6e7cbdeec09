"""The one conversation format: golden ChatML text, and the pure renderer equal to HF's jinja."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bhasha_build.core import chat

GOLDEN = Path(__file__).parent / "golden" / "chatml_pair.golden"


def test_pair_chatml_golden() -> None:
    text = chat.render_chatml(chat.pair_messages("भारत एक विशाल देश ह|", "भारत एक विशाल देश है।"))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_prompt_completion_split_puts_only_the_answer_in_the_completion() -> None:
    ex = chat.row_to_training_example({"noisy": "क ख", "clean": "क्ष"})
    assert [m["role"] for m in ex["prompt"]] == ["system", "user"]
    assert ex["prompt"][0]["content"] == chat.SYSTEM_PROMPT
    assert ex["completion"] == [{"role": "assistant", "content": "क्ष"}]
    chat_row = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    assert chat.row_to_training_example(chat_row)["completion"][0]["content"] == "4"
    with pytest.raises(ValueError, match="assistant"):
        chat.row_to_training_example({"messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def hf_tokenizer():
    from bhasha_build.core.tiny import train_tokenizer

    return train_tokenizer(["नमस्ते दुनिया", "আমার সোনার বাংলা", "வணக்கம்"] * 20, 512)


@pytest.mark.parametrize("messages", [
    chat.pair_messages("भारत"),
    [{"role": "user", "content": "नमस्ते"}],
    [*chat.pair_messages("क", "ख"), {"role": "user", "content": "ग"}],
])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_pure_renderer_equals_hf_chat_template(hf_tokenizer, messages, add_generation_prompt) -> None:
    hf = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert chat.render_chatml(messages, add_generation_prompt) == hf


def test_stop_tokens_cover_every_chatml_special() -> None:
    assert set(chat.STOP_TOKENS) == set(chat.SPECIAL_TOKENS)
