"""Template parity: the Modelfile TEMPLATE run by Go's text/template (as Ollama runs it) renders the
exact prompt the HF tokenizer's chat template gives in training, for every conversation shape.

Go comes from Debian's golang-go (`.ci/run` installs it); without it these tests skip, saying so.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from ollama_server import render_go

from bhasha_build.core import chat
from bhasha_build.stages.modelfile import expected_template

pytestmark = pytest.mark.skipif(
    shutil.which("go") is None, reason="Go toolchain missing: apt-get install golang-go (CI's .ci/run does)"
)

NOISY = "भारत एक विशाल देश है|"
CLEAN = "भारत एक विशाल देश है।"
CONVERSATIONS: dict[str, list[dict[str, str]]] = {
    "system+user": chat.pair_messages(NOISY),
    "system+user+assistant+user": [
        *chat.pair_messages(NOISY, CLEAN),
        {"role": "user", "content": "আমার সোনার বাংলা"},
    ],
    "no system": [{"role": "user", "content": "தமிழ் நாடு ௧௨௩"}],
    "no system, two turns": [
        {"role": "user", "content": "क्\u200dष and र\u200cर्"},  # ZWJ/ZWNJ pass through untouched
        {"role": "assistant", "content": "क़ ख़ ग़ ॥"},
        {"role": "user", "content": "١٢٣ 123 ०१२"},
    ],
}


@pytest.fixture(scope="module")
def hf_tokenizer() -> Any:
    from bhasha_build.core.tiny import train_tokenizer

    tok = train_tokenizer([NOISY, CLEAN, "আমার সোনার বাংলা", "தமிழ் நாடு"] * 20, 512)
    assert tok.chat_template == chat.CHAT_TEMPLATE
    return tok


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_go_template_equals_hf_chat_template(name: str, hf_tokenizer: Any) -> None:
    messages = CONVERSATIONS[name]
    want = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    got = render_go(expected_template(), messages=messages)
    assert got == want
    assert got == chat.render_chatml(messages, add_generation_prompt=True)


def test_modelfile_system_is_injected_like_ollama(hf_tokenizer: Any) -> None:
    # Ollama prepends the Modelfile SYSTEM when the request has no system message.
    user_only = [{"role": "user", "content": NOISY}]
    got = render_go(expected_template(), system=chat.SYSTEM_PROMPT, messages=user_only)
    want = hf_tokenizer.apply_chat_template(
        chat.pair_messages(NOISY), tokenize=False, add_generation_prompt=True
    )
    assert got == want


def test_legacy_prompt_response_branch(hf_tokenizer: Any) -> None:
    # Ollama's path for /api/generate with a template that has no .Messages (and for old clients).
    got = render_go(expected_template(), system=chat.SYSTEM_PROMPT, legacy=True, prompt=NOISY)
    want = hf_tokenizer.apply_chat_template(
        chat.pair_messages(NOISY), tokenize=False, add_generation_prompt=True
    )
    assert got == want
    done = render_go(
        expected_template(), system=chat.SYSTEM_PROMPT, legacy=True, prompt=NOISY, response=CLEAN
    )
    assert done == want + CLEAN + chat.IM_END


def test_parity_would_catch_a_broken_template() -> None:
    # The check has teeth: the same template with the trailing-newline trim moved renders differently.
    broken = expected_template().replace(
        "{{ .Content }}<|im_end|>\n{{ else if", "{{ .Content }}<|im_end|>{{ else if"
    )
    assert broken != expected_template()
    messages = CONVERSATIONS["system+user+assistant+user"]
    assert render_go(broken, messages=messages) != chat.render_chatml(messages, add_generation_prompt=True)
