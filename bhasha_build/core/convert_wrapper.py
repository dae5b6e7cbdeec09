"""Run the vendored convert_hf_to_gguf.py, optionally registering this tokenizer's pre-tokenizer hash.

The converter identifies a BPE pre-tokenizer by hashing the token ids of a fixed check text and
refuses hashes it does not know. A tokenizer built locally by `bhasha_build.core.tiny` uses Qwen2's exact
split regex but has its own vocabulary, hence its own hash: with `--register-pre-tokenizer qwen2`
that hash is registered as `qwen2` for this run. Known hashes (real Qwen2.5) go through untouched.
No vendored file is edited.

Usage: python -m bhasha_build.core.convert_wrapper --toolchain DIR [--register-pre-tokenizer NAME]
       [--report FILE] -- <convert_hf_to_gguf.py arguments>
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys
import textwrap
from hashlib import sha256
from pathlib import Path


def _check_text(method) -> str:
    """The converter's own check text, read from its source so it can never drift from it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "chktxt" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("could not find chktxt in the vendored get_vocab_base_pre")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="convert_wrapper")
    parser.add_argument("--toolchain", required=True, type=Path)
    parser.add_argument("--register-pre-tokenizer", default=None)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv[:split])
    converter_args = argv[split + 1 :]

    sys.path.insert(0, str(args.toolchain / "gguf-py"))
    sys.path.insert(0, str(args.toolchain))
    from conversion import base  # vendored; importable once the toolchain dir is on sys.path

    report: dict[str, object] = {"registered": None}
    original = base.TextModel.get_vocab_base_pre
    chktxt = _check_text(original)

    def get_vocab_base_pre(self, tokenizer) -> str:
        chkhsh = sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest()
        report["chkhsh"] = chkhsh
        try:
            res = original(self, tokenizer)
        except NotImplementedError:
            if not args.register_pre_tokenizer:
                raise
            res = args.register_pre_tokenizer
            report["registered"] = {chkhsh: res}
        report["pre_tokenizer"] = res
        return res

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", *converter_args]
    try:
        convert_hf_to_gguf.main()
    finally:
        if args.report:
            args.report.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
