"""Export stage: merge LoRA → 16-bit HF folder → f16 GGUF → quantized GGUF (pinned llama.cpp).

The adapter is always merged into a 16-bit reload of the base model in the base's own dtype
(core/models.py; never into 4-bit weights: Unsloth's CPU backend cannot, and a merge into dequantized
4-bit weights loses precision anyway). Each artifact is written under a temporary name and renamed
when complete: each GGUF is checked while it still has its temporary name (core/gguf.py check_gguf:
every tensor's data inside the file, architecture, file type, chat template) and only then renamed
(fsutil.atomic_output); a failed check, an error or Ctrl-C removes the temporary file and leaves the
final name as it was.

Knobs: export.quant (Q4_K_M default), export.keep_f16.
Outputs (core/layout.py): merged/, model-f16.gguf, model-<quant>.gguf. The manifest's stage record has
`phases_s`: wall seconds of the merge, the f16 conversion and the quantization (each with its GGUF check).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bhasha_build.core import models, toolchain
from bhasha_build.core.clock import PhaseClock
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_copy, atomic_dir
from bhasha_build.core.gguf import GgufError, check_gguf
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.tiny import MARKER_FILE


class ExportError(BhashaError):
    """One-line, user-facing export problem."""


def artifacts(cfg: BuildConfig, layout: RunLayout) -> dict[str, Path]:
    """What the export stage records in the manifest (the f16 GGUF only while it is kept)."""
    made = {"merged": layout.merged, "gguf": layout.gguf(cfg.export.quant)}
    if cfg.export.keep_f16 or cfg.export.quant == "F16":
        made["gguf_f16"] = layout.gguf_f16
    return made


def merge_adapter(layout: RunLayout) -> Path:
    """Base model (16-bit) + adapter → merged/ (atomic)."""
    model, tokenizer = models.load_with_adapter(layout)
    model = model.merge_and_unload()
    base = models.adapter_base_path(layout)
    with atomic_dir(layout.merged) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if (base / MARKER_FILE).exists():
            shutil.copy2(base / MARKER_FILE, tmp / MARKER_FILE)
    return layout.merged


def _checker(final: Path, quant: str, facts: dict[str, Any]) -> Callable[[Path], None]:
    """check_gguf on the temporary file, reported under the final name; collects the facts checked."""
    def check(tmp: Path) -> None:
        try:
            facts.update(check_gguf(tmp, quant))
        except GgufError as exc:
            raise ExportError(f"{final}: refused before it got its name: {exc}") from None
    return check


def run(cfg: BuildConfig, layout: RunLayout, **_: Any) -> dict[str, Any]:
    toolchain.require()
    clock = PhaseClock()
    merged = merge_adapter(layout)
    clock.mark("merge")
    marker = merged / MARKER_FILE
    pre = json.loads(marker.read_text())["pre_tokenizer"] if marker.exists() else None
    f16 = layout.gguf_f16
    convert = toolchain.convert_to_gguf(merged, f16, outtype="f16", register_pre_tokenizer=pre,
                                        check=_checker(f16, "F16", {}))
    clock.mark("convert")
    quant = cfg.export.quant
    out = layout.gguf(quant)
    checks: dict[str, Any] = {}
    check = _checker(out, quant, checks)

    if quant == "F16":
        atomic_copy(f16, out, check=check)
    else:
        toolchain.quantize(f16, out, quant, check=check)
    if not cfg.export.keep_f16 and quant != "F16":
        f16.unlink()
    clock.mark("quantize")
    return {"merged": merged, "f16": f16 if f16.exists() else None, "gguf": out, "quant": quant,
            "convert": convert, "checks": checks, "phases_s": clock.phases}
