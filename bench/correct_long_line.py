"""`correct`'s planner on one single-line file of MB megabytes, lengths counted with Qwen2.5's real
tokenizer (what OllamaBackend counts with): seconds, tokenizer calls, the longest text tokenized, peak RSS.
Usage: PYTHONPATH=. python bench/correct_long_line.py MB   (bench/correct-long-line-cpu2-2026-12-02.json)"""

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from bhasha_build.core.config import load_config
from bhasha_build.core.qwen_tokenizer import qwen25_fast_tokenizer
from bhasha_build.stages import correct as cr

TOKENIZER = qwen25_fast_tokenizer()


class Counter:
    kind, concurrent, num_ctx = "qwen", True, 2048

    def __init__(self) -> None:
        self.calls = self.longest = self.chars = 0

    def count_tokens(self, text: str) -> int:
        self.calls += 1
        self.longest = max(self.longest, len(text))
        self.chars += len(text)
        return len(TOKENIZER.encode(text, add_special_tokens=False).ids)


def main(mb: float) -> None:
    sentence = "गाँव के पुस्तकालय में हर शाम बच्चे आकर कहानियाँ पढ़ते हैं| "
    n = int(mb * 1e6 // len(sentence.encode()))
    line = "".join(sentence.replace("शाम", f"शाम {i}") for i in range(n)).strip()
    path = Path(tempfile.mkdtemp()) / "line.txt"
    path.write_text(line + "\n", encoding="utf-8")
    backend = Counter()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    doc = cr.Planner(load_config(env={}), backend, None).plan(path, "line.txt")  # type: ignore[arg-type]
    print(json.dumps({
        "what": "correct's planner on one single-line file, Qwen2.5 tokenizer counting",
        "bytes": path.stat().st_size, "pieces": len(doc.pieces), "seconds": round(time.perf_counter() - started, 2),
        "count_tokens_calls": backend.calls, "longest_text_tokenized_chars": backend.longest,
        "chars_tokenized_total": backend.chars, "line_chars": len(line), "peak_rss_mb_before_plan": rss0 // 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "machine": f"{os.cpu_count()} shared cores, {platform.machine()}", "date": time.strftime("%Y-%m-%d")},
        indent=1))
    path.unlink()


if __name__ == "__main__":
    main(float(sys.argv[1]))
