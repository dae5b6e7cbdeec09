"""Tokenizer parity: the GGUF's llama.cpp tokenizer gives the HF tokenizer's ids on Indic text.

A converter that registers the wrong pre-tokenizer, drops merges or mangles byte-level symbols
shows up here as different ids on exactly the text this model corrects.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from bhasha_build.core import chat

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow  # needs the converted tiny GGUF (tiny_gguf fixture)

PROBES = {
    "devanagari conjuncts": "क्षत्रिय ज्ञान श्रम विद्वान स्त्री द्ध ह्म",
    "nukta (NFC)": "क़लम ख़ुश ग़ज़ल ज़रूर ड़ ढ़ फ़िल्म य़",
    "zwj": "क्\u200dष र्\u200dय",
    "zwnj": "क्\u200cष ক্\u200cষ",
    "bengali": "আমার সোনার বাংলা, আমি তোমায় ভালোবাসি। ক্ষ জ্ঞ ৎ",
    "tamil": "தமிழ்நாடு ஸ்ரீ க்ஷ ஔ",
    "digits": "०१२३४५६७८९ ০১২৩৪৫ ௧௨௩ 0123456789",
    "danda": "यह ठीक है। वह भी॥ और यह| ॥१॥",
    "mixed": "OCR: “भारत” 2024 — ok?\n  नई पंक्ति\t tab",
}


@pytest.fixture(scope="module")
def tokenizers(tiny_gguf: dict[str, Any]) -> tuple[Any, Any]:
    import llama_cpp
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_gguf["hf_dir"])
    gguf = llama_cpp.Llama(model_path=str(tiny_gguf["gguf"]), vocab_only=True, verbose=False)
    return hf, gguf


def _gguf_ids(gguf: Any, text: str, special: bool) -> list[int]:
    return list(gguf.tokenize(text.encode("utf-8"), add_bos=False, special=special))


@pytest.mark.parametrize("name", list(PROBES))
def test_ids_match_on_indic_probes(name: str, tokenizers: tuple[Any, Any]) -> None:
    hf, gguf = tokenizers
    text = PROBES[name]
    assert text == unicodedata.normalize("NFC", text)
    want = hf.encode(text, add_special_tokens=False)
    assert _gguf_ids(gguf, text, special=False) == want
    assert hf.decode(want) == text  # byte-level BPE round-trips, ZWJ/ZWNJ included


def test_ids_match_on_chat_prompt_with_special_tokens(tokenizers: tuple[Any, Any]) -> None:
    hf, gguf = tokenizers
    messages = chat.pair_messages(PROBES["danda"], PROBES["devanagari conjuncts"])
    want = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
    want = list(want["input_ids"] if hasattr(want, "keys") else want)
    text = chat.render_chatml(messages)
    assert _gguf_ids(gguf, text, special=True) == want
    for token in chat.SPECIAL_TOKENS:  # each special token is one id on both sides
        assert _gguf_ids(gguf, token, special=True) == [hf.convert_tokens_to_ids(token)]


def test_gguf_carries_the_training_chat_template(tiny_gguf: dict[str, Any], tokenizers: tuple[Any, Any]) -> None:
    _, gguf = tokenizers
    assert gguf.metadata.get("tokenizer.chat_template") == chat.CHAT_TEMPLATE


def test_non_nfc_input_needs_normalizing_before_llama_cpp(tokenizers: tuple[Any, Any]) -> None:
    # U+0958 (precomposed क़) is a composition exclusion: NFC decomposes it. The HF tokenizer's NFC
    # normalizer does that; llama.cpp has no normalizer, so serving clients must send NFC text.
    hf, gguf = tokenizers
    raw = "\u0958\u0932\u092e"  # क़लम with precomposed qa
    nfc = unicodedata.normalize("NFC", raw)
    assert nfc != raw
    assert _gguf_ids(gguf, nfc, special=False) == hf.encode(raw, add_special_tokens=False)
    # Different UTF-8 bytes, so byte-level ids must differ: this is why clients must send NFC.
    assert _gguf_ids(gguf, raw, special=False) != hf.encode(raw, add_special_tokens=False)
