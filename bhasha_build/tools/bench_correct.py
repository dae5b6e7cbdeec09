"""Benchmark `correct`: lines/s on the demo GGUF through llama.cpp and through the Ollama-contract
server, and the client's overhead over the raw backend (goal: <= 5 %). JSON out.

    python -m bhasha_build.tools.bench_correct --out bench/correct.json [--gguf FILE] [--repeat 4]
                                               [--jobs 1,2,4] [--rounds 3]

Input: data/documents/ocr (the demo's document), copied ``--repeat`` times. Per round:
  gguf/raw      gguf.LlamaChat.complete on exactly the pieces `correct` sends (same text, same
                num_predict cap), one after the other: the backend alone;
  gguf/correct  stages.correct.correct with the GGUF backend on the same model instance: planning,
                normalization, splitting, the guard, journals, atomic writes, the reports;
  server/raw    OllamaClient.chat on the same pieces, one at a time, against the contract server
                (tests/ollama_server.py: real llama.cpp behind Ollama's REST contract) with the tiny
                model deployed by the deploy stage;
  server/jobs=N correct through that server with N requests in flight.
Rounds interleave a raw pass and a correct run. Overhead = (correct - raw) / raw, from the best of the
rounds and from the medians; and, measured inside each correct run (jobs=1), the client's share =
(wall time - time spent inside the backend's calls) / wall time, which another process's load cannot
move much. The machine (CPU, cores, load average before and after) is recorded.

Knobs: --gguf (default: runs/demo's q4_k_m from `make demo`), --repeat, --jobs, --rounds, --profile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bhasha_build.core.config import REPO_ROOT, load_config
from bhasha_build.core.fsutil import atomic_write_json
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.ollama import OllamaClient, ask_correction
from bhasha_build.stages import correct as cr
from bhasha_build.stages.deploy import deploy
from bhasha_build.stages.modelfile import render_modelfile

GOAL_OVERHEAD = 0.05  # the bound on the client's share of a correction's time

DOCUMENT = REPO_ROOT / "data" / "documents" / "ocr"
NAME = "bhasha-bench"


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "date": datetime.now(UTC).isoformat(timespec="seconds")}


def make_input(folder: Path, repeat: int) -> Path:
    for i in range(repeat):
        for src in sorted(DOCUMENT.iterdir()):
            shutil.copyfile(src, folder / f"{src.stem}-{i}{src.suffix}")
    return folder


def pieces(cfg: Any, backend: cr.Backend, folder: Path) -> list[tuple[str, int]]:
    """(text sent, num_predict) of every request `correct` makes for `folder`."""
    planner = cr.Planner(cfg, backend, None)
    return [(p.sent, p.max_tokens) for path, rel in cr.input_files(folder, folder / "_none")
            for p in planner.plan(path, rel).pieces]


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class TimedBackend:
    """A backend whose complete() calls are timed: correct's wall time minus the time inside them is
    the client's own time, measured within one run (so another process's load cancels out)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.inside = backend, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def complete(self, text: str, max_tokens: int) -> cr.Reply:
        start = time.perf_counter()
        try:
            return self.backend.complete(text, max_tokens)
        finally:
            self.inside += time.perf_counter() - start


def compare(todo: list[tuple[str, int]], raw_call: Any, run_correct: Any, rounds: int) -> dict[str, Any]:
    """Rounds of (raw pass, correct) interleaved; best-of and median times, both overheads."""
    pool = ThreadPoolExecutor(1)  # the raw pass calls from a worker thread too, as correct does
    raw, full, client, summary = [], [], [], {}
    try:
        for r in range(rounds):
            raw.append(timed(lambda: [pool.submit(raw_call, t, n).result() for t, n in todo])[0])
            seconds, (summary, inside) = timed(lambda r=r: run_correct(r))
            full.append(seconds)
            client.append(seconds - inside)
    finally:
        pool.shutdown()
    best_raw, best_full = min(raw), min(full)
    med_raw, med_full = statistics.median(raw), statistics.median(full)
    return {"lines": summary["lines"], "requests": len(todo), "jobs": summary["jobs"],
            "raw_seconds": [round(x, 3) for x in raw], "correct_seconds": [round(x, 3) for x in full],
            "raw_lines_per_s_best": round(summary["lines"] / best_raw, 2),
            "correct_lines_per_s_best": round(summary["lines"] / best_full, 2),
            "correct_lines_per_s_median": round(summary["lines"] / med_full, 2),
            "overhead_best_of": round((best_full - best_raw) / best_raw, 4),
            "overhead_median": round((med_full - med_raw) / med_raw, 4),
            "client_seconds": [round(x, 3) for x in client],
            "client_share": round(statistics.median(c / f for c, f in zip(client, full, strict=True)), 4)}


def bench_gguf(cfg: Any, gguf: Path, folder: Path, work: Path, rounds: int) -> dict[str, Any]:
    backend = TimedBackend(cr.GgufBackend(gguf, cfg))
    try:
        todo = pieces(cfg, backend, folder)
        backend.complete(todo[0][0], todo[0][1])  # warm-up

        def run_correct(r: int) -> tuple[dict[str, Any], float]:
            backend.inside = 0.0
            summary = cr.correct(folder, work / f"gguf-{r}", backend, cfg, progress=False, jobs=1)
            return summary, backend.inside

        return compare(todo, backend.backend.complete, run_correct, rounds)
    finally:
        backend.close()


def bench_server(cfg: Any, gguf: Path, folder: Path, work: Path, rounds: int, jobs: list[int]) -> dict[str, Any]:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from ollama_server import OllamaContractServer  # the test suite's contract server (real llama.cpp)

    run = work / "runs" / "bench"
    run.mkdir(parents=True)
    layout = RunLayout(run)
    shutil.copyfile(gguf, layout.gguf(cfg.export.quant))
    render_modelfile(layout.gguf(cfg.export.quant), layout.modelfile, cfg)
    with OllamaContractServer() as server:
        deploy(run, cfg, NAME, server.url)
        backend = TimedBackend(cr.open_backend(cfg, name=NAME, host=server.url))
        client = OllamaClient(server.url, timeout=cfg.correct.timeout_s)
        try:
            todo = pieces(cfg, backend, folder)

            def raw_call(text: str, n: int) -> Any:
                return ask_correction(client, NAME, text, seed=cfg.seed, num_predict=n)

            raw_call(*todo[0])  # warm-up (loads the model)
            out: dict[str, Any] = {"renderer": server.renderer, "by_jobs": {}}
            for n_jobs in jobs:
                def run_correct(r: int, n: int = n_jobs) -> tuple[dict[str, Any], float]:
                    backend.inside, server.max_in_flight = 0.0, 0
                    summary = cr.correct(folder, work / f"srv-{n}-{r}", backend, cfg, progress=False, jobs=n)
                    # with several in flight the time inside calls overlaps: only jobs=1 gives client time
                    return summary, backend.inside if n == 1 else 0.0

                result = compare(todo, raw_call, run_correct, rounds)
                if n_jobs != 1:
                    result.pop("client_seconds"), result.pop("client_share")
                out["by_jobs"][str(n_jobs)] = {**result, "max_in_flight_seen": server.max_in_flight}
        finally:
            backend.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bhasha_build.tools.bench_correct")
    parser.add_argument("--out", type=Path, default=Path("bench/correct.json"))
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--profile", default="tiny-cpu")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", default="1,2,4")
    args = parser.parse_args(argv)
    cfg = load_config(profile=args.profile, env={}, overrides=['run="demo"'])
    gguf = args.gguf or cfg.layout.gguf(cfg.export.quant)
    if not gguf.is_file():
        print(f"error: {gguf}: not found; run `make demo` first or pass --gguf", file=sys.stderr)
        return 1
    jobs = [int(j) for j in args.jobs.split(",") if j.strip()]
    result: dict[str, Any] = {"machine_before": machine(), "gguf": str(gguf), "gguf_bytes": gguf.stat().st_size,
                              "profile": args.profile, "repeat": args.repeat, "rounds": args.rounds,
                              "goal_overhead": GOAL_OVERHEAD}
    with tempfile.TemporaryDirectory(prefix="bench-correct-") as tmp:
        work = Path(tmp)
        folder = make_input(Path(tempfile.mkdtemp(dir=tmp, prefix="input-")), args.repeat)
        result["gguf_backend"] = bench_gguf(cfg, gguf, folder, work, args.rounds)
        print(json.dumps({"gguf_backend": result["gguf_backend"]}), flush=True)
        result["server_backend"] = bench_server(cfg, gguf, folder, work, args.rounds, jobs)
    result["machine_after"] = machine()
    one = [result["gguf_backend"], *([result["server_backend"]["by_jobs"]["1"]] if "1" in result["server_backend"]
                                     ["by_jobs"] else [])]
    result["overhead_ok"] = all(x["overhead_best_of"] <= GOAL_OVERHEAD and x["client_share"] <= GOAL_OVERHEAD
                                for x in one)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
