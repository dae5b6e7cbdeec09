"""Learning-signal check: does the whole pipeline learn to correct OCR, end to end?

A small Qwen2-architecture model is built from scratch (random init, tokenizer trained on the run's
text), warm-started on the train split's clean lines (echo, full-parameter), then fine-tuned by the
project's own train stage (LoRA, response-only loss on ChatML rows) on synthetic-noise pairs; the
exported q4_k_m GGUF must then correct held-out lines better than the do-nothing baseline (grapheme
CER through llama.cpp, and the HF model's too). Masking, templates, EOS and export are all on the path.

Pairs: clean lines composed from data/wordlists (wordfreq's most frequent words of hi/bn/ta,
sampled by frequency^0.5, 4–14 words, sentence punctuation) plus the hand-written lines of
data/clean, each used once (no clean line is in both splits), noised by `noise.add_noise` at
`rate` grapheme CER with `identity_fraction` rows left unchanged (over-correction shows).

Phases (a GPU box often has no llama.cpp and the workstation no GPU, so they can run apart):
  prepare  write the pairs file (runs/<input>/pairs.jsonl)
  gpu      data + train stages under the profile (default `signal-gpu`), then pack the run folder
           (base model, adapter, eval split, manifest, log) into parts of at most `part_mib` MiB
  finish   unpack parts (if given), export (merge → GGUF → q4_k_m), eval; print the verdict JSON
  all      all three on one machine

Knobs: --lines (per language), --rate, --identity-fraction, --seed, --profile, --set (config
overrides), --parts-dir, --part-mib, --allow-cpu (train without a GPU, for tests).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bhasha_build.core.config import REPO_ROOT
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    safe_extract,
    sha256_file,
)
from bhasha_build.core.layout import RunLayout

WORDLISTS = REPO_ROOT / "data" / "wordlists"
CLEAN_LINES = REPO_ROOT / "data" / "clean"
LANGS = ("hi", "bn", "ta")
END_MARK = {"hi": "।", "bn": "।", "ta": "."}
PARTS_INDEX = "parts.json"  # written beside the parts: each part's name, size and sha256


def packed_paths(layout: RunLayout) -> list[Path]:
    """What export + eval need from a trained run folder (core/layout.py names them)."""
    return [layout.base_model, layout.adapter, layout.eval_split, layout.data_stats, layout.manifest,
            layout.train_log, layout.loss_plot]


class SignalError(BhashaError):
    """The check's own inputs are missing or not what was packed (one line)."""


def load_wordlist(lang: str, folder: Path = WORDLISTS) -> tuple[list[str], list[float]]:
    """Words and sampling weights (frequency^0.5: flatter than Zipf, so rarer words occur too)."""
    path = folder / f"{lang}.tsv"
    words, weights = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            word, centibels = line.split("\t")
            weights.append(10 ** (-int(centibels) / 200))
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'word<TAB>centibels'") from None
        words.append(word)
    return words, weights


def clean_lines(lang: str, count: int, rng: random.Random) -> list[str]:
    """The hand-written lines of data/clean, then `count` distinct synthetic clean lines of `lang`."""
    from bhasha_build.tools.noise import read_clean

    words, weights = load_wordlist(lang)
    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(CLEAN_LINES.glob(f"{lang}.txt")):
        for _no, _lang, line, _id in read_clean(path, lang):  # the noise stage's reader of clean files
            if line not in seen:
                seen.add(line)
                out.append(line)
    target = len(out) + count
    for _ in range(count * 10):  # bounded: a tiny word list cannot loop forever on duplicates
        if len(out) >= target:
            break
        line = " ".join(rng.choices(words, weights, k=rng.randint(4, 14)))
        if rng.random() < 0.7:
            line += END_MARK[lang]
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def make_pairs(out_file: Path, lines_per_lang: int, rate: float, identity_fraction: float, seed: int) -> dict[str, Any]:
    """Write the shuffled pairs file; returns counts and the baseline CER of what was written."""
    from bhasha_build.core.metrics import corpus_cer
    from bhasha_build.tools.noise import add_noise

    rng = random.Random(seed)
    rows = []
    for lang in LANGS:
        for i, clean in enumerate(clean_lines(lang, lines_per_lang, rng)):
            noisy = clean if rng.random() < identity_fraction else add_noise(clean, lang, rate, rng)
            rows.append({"id": f"sig-{lang}-{i:06d}", "lang": lang, "noisy": noisy, "clean": clean})
    rng.shuffle(rows)  # the eval split's first rows then mix the three scripts
    atomic_write_text(out_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"pairs": len(rows), "file": str(out_file),
            "identity_cer": round(corpus_cer([r["noisy"] for r in rows], [r["clean"] for r in rows]), 4)}


def pack_run(layout: RunLayout, parts_dir: Path, part_mib: int) -> list[Path]:
    """tar.gz of what export + eval need, split into parts of at most part_mib MiB (transfer limits),
    with parts.json recording each part's sha256 (the parts travel between machines unsigned)."""
    buffer = io.BytesIO()  # a few tens of MB: built in memory, so only the parts touch the disk
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in packed_paths(layout):
            if path.exists():
                tar.add(path, arcname=layout.rel(path))
    data, size = buffer.getvalue(), part_mib * 2**20
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(data), size):
        part = parts_dir / f"run.tar.gz.part{i // size:02d}"
        atomic_write_bytes(part, data[i : i + size])
        parts.append(part)
    index = [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in parts]
    atomic_write_json(parts_dir / PARTS_INDEX, {"parts": index})
    return parts


def unpack_run(parts_dir: Path, layout: RunLayout) -> list[str]:
    """Verify every part against parts.json, then extract plain files and folders only into a temp
    folder that replaces the run folder whole (fsutil.safe_extract; nothing lands outside it)."""
    index_file = parts_dir / PARTS_INDEX
    if not index_file.exists():
        raise SignalError(f"{index_file}: missing; the parts cannot be checked (pack them with --phase gpu)")
    try:
        index = json.loads(index_file.read_text())["parts"]
    except (ValueError, KeyError, TypeError):
        raise SignalError(f"{index_file}: not a parts index") from None
    for entry in index:
        part = parts_dir / Path(entry["name"]).name
        if not part.is_file():
            raise SignalError(f"{part}: missing (listed in {index_file.name})")
        if (actual := sha256_file(part)) != entry["sha256"]:
            raise SignalError(f"{part}: sha256 {actual} is not {entry['sha256']} (listed in {index_file.name})")
    blob = b"".join((parts_dir / Path(e["name"]).name).read_bytes() for e in index)
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar, atomic_dir(layout.root) as tmp:
            return safe_extract(tar, tmp)
    except (tarfile.TarError, ValueError) as exc:
        raise SignalError(f"{parts_dir}: {exc}") from None


def _config(profile: str, sets: Sequence[str]):
    from bhasha_build.core.config import load_config

    return load_config(None, profile=profile, overrides=list(sets))


def phase_gpu(profile: str, sets: Sequence[str], parts_dir: Path | None, part_mib: int) -> dict[str, Any]:
    from bhasha_build.stages.train import import_unsloth_first

    cfg = _config(profile, sets)
    import_unsloth_first(cfg)
    from bhasha_build.stages import pipeline

    data = pipeline.run_data(cfg, force=True)
    train = pipeline.run_train(cfg, force=True)
    result = {"run_dir": str(cfg.run_dir), "data": {k: data.get(k) for k in ("rows_read", "kept", "train_rows",
                                                                               "eval_rows")},
              "train": {k: train.get(k) for k in ("global_step", "train_loss", "final_logged_loss", "seconds",
                                                  "tokens_per_s_median", "peak_memory_gib", "packing_strategy",
                                                  "optim_used", "backend")}}
    manifest = json.loads(cfg.layout.manifest.read_text())
    result["pretrain"] = manifest["stages"]["data"].get("tiny_pretrain")
    result["hardware"] = manifest.get("hardware")
    if parts_dir is not None:
        result["parts"] = [p.name for p in pack_run(cfg.layout, parts_dir, part_mib)]
    return result


def phase_finish(profile: str, sets: Sequence[str], parts_dir: Path | None) -> dict[str, Any]:
    cfg = _config(profile, sets)
    if parts_dir is not None:
        unpack_run(parts_dir, cfg.layout)
    from bhasha_build.stages import pipeline

    export = pipeline.run_export(cfg, force=True)
    report = pipeline.run_eval(cfg)
    return {"run_dir": str(cfg.run_dir), "export": {k: str(v) for k, v in export.items() if k in ("gguf", "quant")},
            "eval": report}


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Model and GGUF grapheme CER against the identity baseline, with pass/fail."""
    base = report["baseline"]["overall"]["cer"]
    return {system: {"cer": report[system]["overall"]["cer"], "baseline_cer": base,
                     "beats_baseline": report[system]["overall"]["cer"] < base}
            for system in ("model", "gguf") if system in report}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.learning_signal",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=["prepare", "gpu", "finish", "all"])
    parser.add_argument("--profile", default="signal-gpu", help="config profile of the run")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--lines", type=int, default=15000, help="synthetic clean lines per language")
    parser.add_argument("--rate", type=float, default=0.10, help="noise: target grapheme CER")
    parser.add_argument("--identity-fraction", type=float, default=0.1, help="rows left unchanged")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--parts-dir", default=None, help="gpu: pack the run here; finish: unpack from here")
    parser.add_argument("--part-mib", type=int, default=15, help="largest part file, MiB")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="train without a GPU (hours at the profile's size: shrink it with --set)")
    args = parser.parse_args(argv)
    if args.phase in ("gpu", "all") and not args.allow_cpu:
        import torch

        if not torch.cuda.is_available():
            print("error: the gpu phase needs a CUDA GPU; run `--phase gpu --parts-dir P` on the GPU box and "
                  "`--phase finish --parts-dir P` here, or pass --allow-cpu with a shrunk --set", file=sys.stderr)
            return 1
    try:
        return _main(args)
    except BhashaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    parts_dir = Path(args.parts_dir) if args.parts_dir else None
    result: dict[str, Any] = {"phase": args.phase}
    cfg = _config(args.profile, args.set)
    pairs = cfg.resolve_path(cfg.data.input) / "pairs.jsonl"
    # gpu alone on a fresh box makes the pairs too (deterministic: the same seed gives the same file)
    if args.phase in ("prepare", "all") or (args.phase == "gpu" and not pairs.exists()):
        result["prepare"] = make_pairs(pairs, args.lines, args.rate, args.identity_fraction, args.seed)
        print(json.dumps(result["prepare"]), flush=True)
    if args.phase in ("gpu", "all"):
        result["gpu"] = phase_gpu(args.profile, args.set, parts_dir if args.phase == "gpu" else None, args.part_mib)
    if args.phase in ("finish", "all"):
        result["finish"] = phase_finish(args.profile, args.set, parts_dir if args.phase == "finish" else None)
        result["verdict"] = verdict(result["finish"]["eval"])
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if "verdict" in result:
        return 0 if result["verdict"] and all(v["beats_baseline"] for v in result["verdict"].values()) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
