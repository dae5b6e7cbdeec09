"""Build a tiny Qwen2-architecture model and tokenizer locally (no hub): tests, demo, benchmarks.

The tokenizer is a byte-level BPE trained with `tokenizers` on the given text, with Qwen2's split
regex, NFC normalizer, the three Qwen special tokens and chat.CHAT_TEMPLATE, so every code path
(chat formatting, masking, GGUF conversion, llama.cpp tokenization, Ollama template) is the one a
real Qwen2.5 checkpoint takes. A BPE trained on a few hundred Indic lines stays small, so the model's
embedding rows are padded up to `vocab_size` (a multiple of 256, as K-quants need).

With ``model.tiny.tokenizer = "qwen2.5"`` the model gets Qwen2.5's real tokenizer instead
(core/qwen_tokenizer.py: 151,665 tokens, ids as in Qwen2.5) and a 151k-row embedding: the tiny
real-vocabulary model, whose GGUF llama.cpp tokenizes with its native "qwen2" pre-tokenizer.

Knobs (config section model.tiny): hidden_size, intermediate_size, num_hidden_layers,
num_attention_heads, num_key_value_heads, vocab_size, tokenizer. `qwen25_shape()` gives the exact
Qwen2.5-1.5B-Instruct architecture for the GPU benchmark.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bhasha_build.core.chat import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN_DEFAULT_SYSTEM,
    SPECIAL_TOKENS,
    SYSTEM_PROMPT,
)
from bhasha_build.core.config import TinyModelConfig
from bhasha_build.core.fsutil import atomic_dir

# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2/Qwen2.5).
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MARKER_FILE = "bhasha_tiny.json"  # tells export which pre-tokenizer the converter should register (None: none)


def qwen25_shape(name: str = "1.5B") -> dict[str, Any]:
    """Exact Qwen2.5-Instruct architectures (from their published config.json)."""
    shapes = {
        "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
        "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                     num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
    }
    return dict(shapes[name], tie_word_embeddings=True, max_position_embeddings=32768,
                rope_theta=1000000.0, rms_norm_eps=1e-6)


def train_tokenizer(texts: Iterable[str], target_vocab: int) -> Any:
    """Byte-level BPE with Qwen2's pre-tokenizer, wrapped as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=target_vocab - len(SPECIAL_TOKENS),
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The fixed prompt texts go in too (weighted), so they cost few tokens per training row.
    tok.train_from_iterator([*texts, *([SYSTEM_PROMPT, QWEN_DEFAULT_SYSTEM, "system user assistant"] * 50)],
                            trainer=trainer)
    # Special tokens go after the BPE vocab, as in Qwen2 (ids vocab, vocab+1, vocab+2).
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        split_special_tokens=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    shape: TinyModelConfig | None = None,
    seed: int = 3407,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write a random-init Qwen2ForCausalLM + tokenizer to `out_dir` (atomically); return the path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    shape = shape or TinyModelConfig()
    out_dir = Path(out_dir)
    if shape.tokenizer == "qwen2.5":  # the real vocabulary: the converter knows its pre-tokenizer
        from bhasha_build.core.qwen_tokenizer import load_qwen25_tokenizer

        tokenizer, pre_tokenizer = load_qwen25_tokenizer(), None
    else:
        tokenizer, pre_tokenizer = train_tokenizer(texts, shape.vocab_size), "qwen2"
    if len(tokenizer) > shape.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than model.tiny.vocab_size")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        do_sample=False,
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER_FILE).write_text(json.dumps({
            "builder": "bhasha_build.core.tiny", "pre_tokenizer": pre_tokenizer, "seed": seed,
            "tokenizer_size": len(tokenizer), "shape": shape.model_dump(),
        }, indent=2))
    return out_dir


def build_qwen25_shaped(out_dir: str | Path, size: str = "1.5B", seed: int = 3407) -> Path:
    """Random-init model with the exact Qwen2.5 architecture (benchmarks; no hub needed).

    The tokenizer is a tiny local one: throughput depends on the shapes, not on the vocabulary's
    contents, and ids stay inside the real 151936-row embedding.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sample = ["नमस्ते दुनिया", "আমার সোনার বাংলা", "வணக்கம் உலகம்", "hello world 123"]
    tokenizer = train_tokenizer(sample * 4, 512)
    shape = qwen25_shape(size)
    torch.manual_seed(seed)
    config = Qwen2Config(**shape, bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
                         pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT), torch_dtype="bfloat16")
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER_FILE).write_text(json.dumps({"builder": "bhasha_build.core.tiny.build_qwen25_shaped",
                                                   "pre_tokenizer": "qwen2", "seed": seed, "size": size}))
    return Path(out_dir)


def pretrain_echo(model_dir: str | Path, texts: list[str], steps: int = 200, lr: float = 3e-3,
                  batch_size: int = 16, seed: int = 3407) -> dict[str, Any]:
    """Warm-start the random tiny model into a "base instruct" model: full-parameter causal-LM
    training on ChatML echo conversations (Qwen's default system prompt, user line → same line).

    A real Qwen2.5-Instruct knows the chat format, the script and when to stop; a random model
    does not, and LoRA alone cannot teach a random network that in a few CPU minutes. Run it on the
    train split only, so eval lines stay unseen. Saved in place (atomically).

    On a CUDA machine it trains there (bf16 autocast, fp32 master weights) and saves bf16 weights,
    as a 16-bit base checkpoint would be; on CPU it trains and saves fp32.
    """
    import random
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bhasha_build.core.chat import render_chatml

    model_dir = Path(model_dir)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("pretrain_echo needs some text")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    model.train()
    losses: list[float] = []
    t0 = time.monotonic()
    for _ in range(steps):
        chats = [render_chatml([{"role": "user", "content": t}, {"role": "assistant", "content": t}])
                 for t in rng.sample(texts, min(batch_size, len(texts)))]
        enc = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if len(losses) % 250 == 0 or len(losses) == steps:
            print(f"tiny pretrain step {len(losses)}/{steps} loss {losses[-1]:.4f} {time.monotonic() - t0:.0f}s",
                  flush=True)
    model.eval()
    with atomic_dir(model_dir) as tmp:
        for item in model_dir.iterdir():
            if item.is_file() and not item.name.endswith(".safetensors"):
                shutil.copy2(item, tmp / item.name)
        if device == "cuda":
            model.to(torch.bfloat16)
        model.cpu().save_pretrained(tmp, safe_serialization=True)
        marker = json.loads((tmp / MARKER_FILE).read_text())
        marker["pretrain"] = {"steps": steps, "lr": lr, "batch_size": batch_size, "texts": len(texts), "device": device,
                              "first_loss": round(losses[0], 4), "final_loss": round(losses[-1], 4)}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    return marker["pretrain"]
