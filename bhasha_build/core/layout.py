"""The run folder: every path of `runs/<run>/`, spelled here and nowhere else.

`RunLayout(root)` is frozen; stages, tools and tests take their paths from it. The manifest records
artifact paths relative to `root`, so a run folder can be moved or archived whole.

    runs/<run>/
      manifest.json              provenance + stage records + artifact sha256s (core/manifest.py)
      data/                      train.jsonl eval.jsonl rejects.jsonl stats.json   (data stage, swapped in whole)
      base-model/                the tiny model, built with the data (tiny runs only)
      checkpoints/               Trainer checkpoints (train stage; --resume)
      adapter/                   LoRA adapter + tokenizer + base_model.json      (train stage)
      train_log.jsonl loss.png   training curve                                   (train stage)
      merged/                    16-bit base + adapter                            (export stage)
      model-f16.gguf             f16 GGUF                                         (export stage)
      model-<quant>.gguf         quantized GGUF, e.g. model-q4_k_m.gguf           (export stage)
      eval.json eval_predictions.jsonl cer_by_lang.png confidence.png            (eval stage)
      dev_predictions.jsonl      the dev sets' rows (eval.dev_sets)                (eval stage)
      Modelfile                                                                    (modelfile stage)
      sanity.json                                                                  (sanity stage)
      deploy.json                                                                  (deploy stage)
      promote.json rollback.json  the gate against the served model; a rollback    (promote stage; invoke rollback)
      report.md                  the run report (the nightly's job summary)        (report stage)
      corrected/                 `invoke correct`'s default output folder (the demo's document)

Run names are simple slugs (letters, digits, `.`, `_`, `-`; not starting with `.` or `-`), so a
run name can never point outside `runs_dir` (`run="/"` or `run=".."` is refused).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def check_run_name(name: str) -> str:
    """The name itself when it is a simple slug; ValueError (with the rule) otherwise."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"run name {name!r} is not a simple name (letters, digits, '.', '_', '-'; "
                         "at most 100; not starting with '.' or '-')")
    return name


@dataclass(frozen=True)
class RunLayout:
    """Every path inside one run folder."""

    root: Path

    @classmethod
    def for_run(cls, runs_dir: Path, run: str) -> RunLayout:
        return cls(Path(runs_dir) / check_run_name(run))

    # -- provenance
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    # -- data stage
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def train_split(self) -> Path:
        return self.data_dir / "train.jsonl"

    @property
    def eval_split(self) -> Path:
        return self.data_dir / "eval.jsonl"

    @property
    def rejects(self) -> Path:
        return self.data_dir / "rejects.jsonl"

    @property
    def data_stats(self) -> Path:
        return self.data_dir / "stats.json"

    @property
    def base_model(self) -> Path:
        return self.root / "base-model"

    # -- train stage
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def adapter_base_record(self) -> Path:
        return self.adapter / "base_model.json"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    # -- export stage
    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def gguf_f16(self) -> Path:
        return self.root / "model-f16.gguf"

    def gguf(self, quant: str) -> Path:
        """The exported GGUF of `quant` (Q4_K_M → model-q4_k_m.gguf)."""
        return self.root / f"model-{quant.lower()}.gguf"

    # -- eval stage
    @property
    def eval_report(self) -> Path:
        return self.root / "eval.json"

    @property
    def eval_predictions(self) -> Path:
        return self.root / "eval_predictions.jsonl"

    @property
    def dev_predictions(self) -> Path:
        return self.root / "dev_predictions.jsonl"

    @property
    def cer_plot(self) -> Path:
        return self.root / "cer_by_lang.png"

    @property
    def confidence_plot(self) -> Path:
        return self.root / "confidence.png"

    # -- serving
    @property
    def modelfile(self) -> Path:
        return self.root / "Modelfile"

    @property
    def sanity_report(self) -> Path:
        return self.root / "sanity.json"

    @property
    def deploy_report(self) -> Path:
        return self.root / "deploy.json"

    @property
    def promote_report(self) -> Path:
        return self.root / "promote.json"

    @property
    def rollback_report(self) -> Path:
        return self.root / "rollback.json"

    @property
    def run_report(self) -> Path:
        return self.root / "report.md"
    # -- correct (users' documents; `invoke correct` writes here unless --out says otherwise)
    @property
    def corrected(self) -> Path:
        return self.root / "corrected"

    def rel(self, path: Path) -> str:
        """`path` as the manifest records it: relative to the run folder, or absolute for an input that
        lives outside it (the cached real-weights base model, core/weights.py)."""
        path, root = Path(os.path.abspath(path)), Path(os.path.abspath(self.root))
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()

    def resolve(self, rel: str) -> Path:
        """A manifest path back to a path; refuses a relative one that leaves the run folder."""
        if Path(rel).is_absolute():
            return Path(rel)
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{rel!r} points outside the run folder {self.root}")
        return self.root / rel

    def documented_paths(self) -> dict[str, Path]:
        """Every fixed path of the layout by name (docs/design.md lists them; a test keeps them equal)."""
        names = [n for n, v in vars(type(self)).items() if isinstance(v, property)]
        return {n: getattr(self, n) for n in names}
