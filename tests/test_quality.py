"""Issue 22's training data knobs and quality records: the unchanged-row cap of the data stage, the
bench/quality JSON writer and its RESULTS.md table, the real-errors-qwen profile and its sweep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bhasha_build.core.config import BuildConfig, load_config
from bhasha_build.stages.data import load_rows, prepare


def _rows(lang: str, changed: int, unchanged: int, word: str) -> list[dict[str, str]]:
    rows = [{"lang": lang, "noisy": f"{word} {i} गलत", "clean": f"{word} {i} सही"} for i in range(changed)]
    rows += [{"lang": lang, "noisy": f"{word} {i} ठीक", "clean": f"{word} {i} ठीक"} for i in range(unchanged)]
    return rows


def _prepare(tmp_path: Path, rows: list[dict[str, str]], cap: float) -> dict:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = BuildConfig.model_validate({"data": {"max_unchanged_fraction": cap, "eval_fraction": 0.1}})
    return prepare(src, tmp_path / f"out-{cap}", cfg)


def test_unchanged_cap_per_language(tmp_path):
    rows = _rows("hi", 60, 60, "राम") + _rows("mr", 20, 1, "श्याम")
    off = _prepare(tmp_path, rows, 1.0)
    assert "unchanged_dropped" not in off  # default: no cap, stats as before
    stats = _prepare(tmp_path, rows, 0.15)
    train = load_rows(tmp_path / "out-0.15" / "train.jsonl")
    evl = load_rows(tmp_path / "out-0.15" / "eval.jsonl")
    for lang in ("hi", "mr"):
        mine = [r for r in train if r["lang"] == lang]
        same = sum(r["noisy"] == r["clean"] for r in mine)
        assert same / len(mine) <= 0.15, lang
        assert stats["unchanged_cap"]["train_unchanged_fraction"][lang] == round(same / len(mine), 4)
    hi_train = [r for r in train if r["lang"] == "hi"]
    assert sum(r["noisy"] == r["clean"] for r in hi_train) > 0     # capped, not removed
    assert "mr" not in stats["unchanged_cap"]["dropped_by_lang"]    # 1 unchanged of 20: under the cap
    assert stats["unchanged_dropped"] == stats["unchanged_cap"]["dropped_by_lang"]["hi"] > 0
    assert stats["kept"] == (stats["train_rows"] + stats["eval_rows"] + stats["chat_unused"]
                             + stats["unchanged_dropped"])
    assert evl == load_rows(tmp_path / "out-1.0" / "eval.jsonl")    # eval untouched
    again = _prepare(tmp_path, list(reversed(rows)), 0.15)          # order-independent
    assert again["unchanged_dropped"] == stats["unchanged_dropped"]
    assert [r["id"] for r in load_rows(tmp_path / "out-0.15" / "train.jsonl")] == [r["id"] for r in train]


def test_unchanged_cap_bounds():
    with pytest.raises(ValueError):
        BuildConfig.model_validate({"data": {"max_unchanged_fraction": 1.5}})


# ---------------------------------------------------------------- the recipe and the sweep
def test_profile_and_sweep():
    from bhasha_build.tools.quality import SWEEP, load_sweep, variant_overrides, variant_profile

    cfg = load_config(None, profile="real-errors-qwen", env={})
    assert cfg.data.max_unchanged_fraction == 0.15
    assert cfg.train.max_steps == -1 and 3 <= cfg.train.epochs <= 5
    sweep = load_sweep(SWEEP)  # every variant resolves against the config schema
    varied = {"lr": set(), "r": set(), "share": set(), "model": set()}
    inputs = set()  # each variant its own input folder: one may score while the next assembles
    for name in sweep["variants"]:
        if variant_profile(sweep, name) != "real-errors-qwen":
            continue
        c = load_config(None, profile="real-errors-qwen", overrides=variant_overrides(sweep, name), env={})
        varied["lr"].add(c.train.learning_rate)
        varied["r"].add(c.lora.r)
        varied["share"].add(sweep["variants"][name]["real_share"])
        varied["model"].add(c.model.name)
        assert c.run == f"real-errors-qwen-{name}"
        inputs.add(c.data.input)
    assert len(inputs) == len(varied_names := [n for n in sweep["variants"]
                                                if variant_profile(sweep, n) == "real-errors-qwen"]), varied_names
    assert all(len(v) >= 2 for v in varied.values()), varied


def _marks(danda_changed: int, danda_rows: int, other_changed: int, other_rows: int) -> dict:
    return {"danda": {"rows": danda_rows, "changed": danda_changed, "broken": 0, "fixed": 0, "changes": {}},
            "other": {"rows": other_rows, "changed": other_changed, "broken": 0, "fixed": 0, "changes": {}}}


def _result(rows: int = 4) -> dict:
    overall = {"cer": 0.1, "wer": 0.3, "rows": rows, "over_correction_rate": 0.0}
    return {"gpu": {"data": {"train_rows": 10, "eval_rows": rows}, "train": {"seconds": 1.5}},
            "finish": {"eval": {"baseline": {"overall": overall, "by_lang": {"hi": {"cer": 0.1}}},
                                "gguf": {"overall": {**overall, "cer": 0.07},
                                         "guarded": {"overall": {"cer": 0.08, "over_correction_rate": 0.0,
                                                                 "guarded_rows": 1}},
                                         "dev": {"overall": {"rows": 6, "identity_cer": 0.12, "raw_cer": 0.13,
                                                             "cer": 0.115, "raw_over_correction": 0.2,
                                                             "over_correction": 0.015, "identity_rows": 3}}}},
                       "heldout": {"indomain-hi": {"rows": rows, "identity_cer": 0.1, "raw_cer": 0.09,
                                                   "guarded_cer": 0.085, "raw_over_correction": 0.01,
                                                   "guarded_over_correction": 0.0, "rules_cer": 0.095,
                                                   "end_marks": {"guarded": _marks(2, 3, 1, 1)},
                                                   "min_confidence": {"threshold": 0.7, "source": "eval split"}},
                                   "unfamiliar-hi": {"rows": rows, "identity_cer": 0.1, "guarded_cer": 0.1,
                                                     "end_marks": {"guarded": _marks(1, 1, 0, 3)}}}},
            "verdict": {"passed": False}}


def test_record_and_table(tmp_path):
    from bhasha_build.tools import quality
    from bhasha_build.tools.quality import load_sweep, make_record, table, write_record, write_table

    sweep = load_sweep(quality.SWEEP)
    preds = tmp_path / "lr1e4.predictions.jsonl"
    preds.write_text('{"set": "indomain-hi", "id": "a"}\n{"set": "indomain-hi", "id": "b"}\n')
    rec = make_record("lr1e4", _result(), sweep, card="NVIDIA H200", date="2026-12-03", predictions=preds)
    path = write_record(rec, tmp_path / "q")
    assert path.name == "2026-12-03-lr1e4.json"
    back = json.loads(path.read_text())
    assert back["config"]["train"]["learning_rate"] == 1e-4 and back["card"] == "NVIDIA H200"
    assert back["variant"]["stage"] == "screen" and "train.learning_rate=1e-4" in back["variant"]["set"]
    assert back["eval_split"]["gguf"]["guarded"]["cer"] == 0.08
    assert back["heldout"]["indomain-hi"]["rules_cer"] == 0.095  # baseline columns kept
    assert back["predictions"]["rows"] == 2 and len(back["predictions"]["sha256"]) == 64
    assert back["heldout"]["indomain-hi"]["end_marks"]["guarded"]["danda"]["changed"] == 2
    assert back["heldout"]["indomain-hi"]["min_confidence"]["threshold"] == 0.7
    result = tmp_path / "run.json"  # the CLI keeps both predictions files beside the record, under its name
    result.write_text(json.dumps(_result()))
    result.with_suffix(".predictions.jsonl").write_text(preds.read_text())
    eval_preds = tmp_path / "eval_predictions.jsonl"
    eval_preds.write_text('{"id": "e1", "gguf": "x", "gguf_confidence": 0.9}\n')
    dev_preds = tmp_path / "dev_predictions.jsonl"
    dev_preds.write_text('{"set": "unfamiliar-hi", "id": "d1"}\n{"set": "unfamiliar-hi", "id": "d2"}\n')
    assert quality.main(["record", str(result), "--name", "lr1e4", "--date", "2026-12-04", "--out",
                         str(tmp_path / "cli"), "--eval-predictions", str(eval_preds),
                         "--dev-predictions", str(dev_preds)]) == 0
    cli = json.loads((tmp_path / "cli" / "2026-12-04-lr1e4.json").read_text())
    assert cli["predictions"]["file"] == "2026-12-04-lr1e4.predictions.jsonl" and cli["predictions"]["rows"] == 2
    assert cli["eval_split_predictions"]["file"] == "2026-12-04-lr1e4.eval-predictions.jsonl"
    assert cli["eval_split_predictions"]["rows"] == 1
    assert (tmp_path / "cli" / "2026-12-04-lr1e4.eval-predictions.jsonl").read_text() == eval_preds.read_text()
    assert cli["dev_predictions"] == {"file": "2026-12-04-lr1e4.dev-predictions.jsonl", "rows": 2,
                                      "sha256": cli["dev_predictions"]["sha256"]}
    assert cli["eval_split"]["gguf"]["dev"]["overall"]["over_correction"] == 0.015
    old = _result()  # a record made before end marks and dev sets were counted: its cells say so
    for entry in old["finish"]["heldout"].values():
        entry.pop("end_marks")
    old["finish"]["eval"]["gguf"].pop("dev")
    write_record(make_record("r64", old, sweep, date="2026-12-02"), tmp_path / "q")
    text = table(tmp_path / "q")
    lines = text.splitlines()
    assert len(lines) == 4 and "lr1e4" in lines[2] and "r64" in lines[3]  # newest first
    assert "0.1000 → 0.0700 (0.0800)" in lines[2] and "0.1000 → 0.0850 (0.000)" in lines[2]
    assert "| 0.1200 → 0.1150 (0.015) |" in lines[2] and "dev unfamiliar" in lines[0]  # the dev sets' cell
    assert "| 0.1000 → 0.0700 (0.0800) | – |" in lines[3]
    assert lines[0].endswith("| held-out end marks changed: । lines · others |")
    assert lines[2].endswith("| 3/4 · 1/4 |") and lines[3].endswith("| – |")  # summed over the held-out sets
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nintro\n")
    write_table(results, tmp_path / "q")
    write_table(results, tmp_path / "q")  # idempotent: the block is replaced, not appended again
    body = results.read_text()
    assert body.startswith("# Results\n\nintro\n") and body.count(quality.START) == 1 and text in body


def test_sweep_errors(tmp_path):
    from bhasha_build.tools.quality import QualityError, load_sweep

    bad = tmp_path / "s.toml"
    bad.write_text('profile = "real-errors-qwen"\n[stages.screen]\nset = []\n'
                   '[variants.x]\nstage = "screen"\nset = ["lora.r=0"]\n')
    with pytest.raises(QualityError, match="variant x"):
        load_sweep(bad)
    bad.write_text('profile = "real-errors-qwen"\n[variants.x]\nstage = "nope"\n')
    with pytest.raises(QualityError, match="stage 'nope'"):
        load_sweep(bad)


@pytest.mark.parametrize("script", ["gpu-quality.sh", "gpu-quality-lease.sh", "quality-pairs.sh", "gpu-tess-pairs.sh",
                                    "tess-bundle.sh", "lease-lib.sh", "gpu-bench-real.sh",
                                    "llama-choose.sh"])
def test_lease_scripts_parse(script):
    """The lease scripts run only on the GPU box (their CPU half: `scripts/gpu-quality.sh --dry-run`, minutes);
    here: bash parses them, and gpu-quality.sh calls issue 23's CUDA build by its name."""
    import subprocess

    path = Path(__file__).resolve().parent.parent / "scripts" / script
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    if script == "gpu-quality.sh":
        assert "scripts/gpu-llama-cuda.sh" in path.read_text()


LEASE_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu-quality-lease.sh"


def _collect(lease: Path, out: Path) -> Path:
    """One `gpu-quality-lease.sh collect` into a fresh `out` (a `wait`'s last step)."""
    import subprocess

    out.mkdir()
    done = subprocess.run(["bash", str(LEASE_SCRIPT), "collect"], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(out), "LEASE_DIR": str(lease)})
    assert done.returncode == 0, done.stderr
    return out


def test_the_lease_returns_each_finished_file_once_and_never_a_log_or_a_part_in_the_making(tmp_path: Path) -> None:
    """`wait`/`collect` bring back what is new in the lease's back/ folder, each file once, at most 8 files
    a call (the device tool's limit), logs only inside logs.tgz; parts being packed live in pack/, not back/
    (2026-12-02: a `wait` returned a 0.7 MB part of a pack still being written)."""
    import tarfile

    lease, back = tmp_path / "lease", tmp_path / "lease" / "back"
    back.mkdir(parents=True)
    (lease / "pack").mkdir()
    (lease / "pack" / "quality-train.tar.xz.part00").write_bytes(b"half")
    (lease / "steps.log").write_text("[00:00:00] start\n")
    for i in range(9):
        (back / f"quality-results-v{i}.tar.xz").write_bytes(b"x" * i)
    (back / "pairs.log").write_text("ocr-pairs hi: 16/4000 lines\n")

    def collect(n: int) -> set[str]:
        out = _collect(lease, tmp_path / f"out{n}")
        names = {p.name for p in out.iterdir()}
        assert len(names) <= 8 and {"steps.log", "logs.tgz"} <= names
        with tarfile.open(out / "logs.tgz") as logs:
            assert "./pairs.log" in logs.getnames() and not any(".part" in n for n in logs.getnames())
        return names - {"steps.log", "logs.tgz"}

    first, second, third = collect(1), collect(2), collect(3)
    assert len(first) == 6 and not any(n.endswith(".log") or ".part" in n for n in first)
    assert first | second == {f"quality-results-v{i}.tar.xz" for i in range(9)} and not first & second
    assert third == set()


def test_the_lease_returns_no_more_than_the_device_tool_brings_back_in_one_call(tmp_path: Path) -> None:
    """The device tool returns at most 64 MiB a call: five 15 MiB adapter parts come back as four, then the
    fifth (2026-12-03: the fifth was left out by the tool and marked returned, never to come again)."""
    import os

    lease, back = tmp_path / "lease", tmp_path / "lease" / "back"
    back.mkdir(parents=True)
    (lease / "steps.log").write_text("[00:00:00] start\n")
    for i in range(5):
        with open(back / f"adapter-v.tar.xz.part0{i}", "wb") as part:
            part.truncate(15 * 1048576)  # sparse: the size counts, the disk does not

    def collect(n: int) -> list[str]:
        out = _collect(lease, tmp_path / f"out{n}")
        assert sum(os.path.getsize(p) for p in out.iterdir()) <= 64 * 1048576
        return sorted(p.name for p in out.iterdir() if ".part" in p.name)

    assert collect(1) == [f"adapter-v.tar.xz.part0{i}" for i in range(4)]
    assert collect(2) == ["adapter-v.tar.xz.part04"] and collect(3) == []


@pytest.mark.nightly
@pytest.mark.slow
def test_the_lease_runs_its_whole_chain_on_cpu(tmp_path: Path) -> None:
    """`DRY=1 scripts/gpu-quality-lease.sh run tiny`: training pairs carried from an earlier lease unpacked (the
    committed ones, cut short), the tiny profile trained on the assembled input, exported, the eval split and 5
    rows of each held-out set scored, the record written and packed for `wait`; then the adapter that came back
    adopted and scored as trained on another machine."""
    import os
    import subprocess
    import sys
    import tarfile

    lease = tmp_path / "lease"
    repo = lease / "repo"
    root = LEASE_SCRIPT.parent.parent
    repo.mkdir(parents=True)  # what `start` makes on the box: a snapshot of the tree
    tracked = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout
    subprocess.run(["cp", "--parents", *tracked.decode().strip("\0").split("\0"), str(repo)], cwd=root, check=True)
    # the committed pairs, cut to their first TRIM lines per language and carried as an earlier lease's parts
    # would be ($LEASE/carry/quality-train): the same unpacking, a tenth of the CPU minutes (the whole 127k-row
    # input took 7.5 of this test's minutes on 2 cores)
    trim, full = 1500, tmp_path / "full-pairs"
    full.mkdir()
    committed = sorted((root / "data" / "natural" / "train-pairs").glob("quality-train.tar.xz*"))
    subprocess.run(f"cat {' '.join(map(str, committed))} | tar -C {full} -xJ", shell=True, check=True)
    for ocr in full.glob("ocr-*.jsonl"):
        lines = ocr.read_text(encoding="utf-8").splitlines(keepends=True)
        assert len(lines) > trim
        ocr.write_text("".join(lines[:trim]), encoding="utf-8")
    carried = lease / "carry" / "quality-train"
    carried.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(full), "-cJf", str(carried / "quality-train.tar.xz"), "."], check=True)
    env = {**os.environ, "DRY": "1", "PY": sys.executable, "LEASE_DIR": str(lease), "PYTHONPATH": str(repo),
           "PAIRS": str(tmp_path / "pairs"), "BHASHA_OCR_CACHE": str(tmp_path / "ocr")}
    done = subprocess.run(["bash", str(repo / "scripts" / "gpu-quality-lease.sh"), "run", "tiny"], env=env,
                          capture_output=True, text=True, check=False, timeout=900)
    steps = (lease / "steps.log").read_text()
    assert done.returncode == 0 and f"pairs: unpacked from {carried}" in steps, steps + done.stderr
    assert sum(1 for _ in (tmp_path / "pairs" / "ocr-hi.jsonl").open(encoding="utf-8")) == trim
    log = (lease / "back" / "quality-tiny.log").read_text()[-3000:]
    assert "variant tiny: trained rc=0" in steps and "variant tiny: scored rc=0" in steps, log
    with tarfile.open(lease / "back" / "quality-results-tiny.tar.xz") as packed:
        names = packed.getnames()
    record = next(n for n in names if n.endswith("-tiny.json") and "/quality/" in n)
    assert any(n.endswith("-tiny.predictions.jsonl") for n in names), names
    assert any(n.endswith("-tiny.eval-predictions.jsonl") for n in names), names  # the eval split's rows too
    with tarfile.open(lease / "back" / "quality-results-tiny.tar.xz") as packed:
        kept = json.load(packed.extractfile(record))
    assert kept["eval_split_predictions"]["rows"] == kept["eval_split"]["gguf"]["rows"] > 0  # the rows scored
    parts = sorted((lease / "back").glob("adapter-tiny.tar.xz.part*"))  # the adapter comes back too, whole
    assert parts, sorted(p.name for p in (lease / "back").iterdir())
    unpacked = tmp_path / "adapter-back"
    unpacked.mkdir()
    subprocess.run(f"cat {' '.join(map(str, parts))} | tar -xJ -C {unpacked}", shell=True, check=True)
    trained = repo / "runs" / "quality-tiny-tiny" / "adapter"
    assert {p.name for p in (unpacked / "adapter").iterdir()} == {p.name for p in trained.iterdir()}
    assert (unpacked / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (trained / "adapter_model.safetensors").read_bytes()
    trained_on_box = json.loads((lease / "back" / "tiny.gpu.json").read_text())["gpu"]["train"]  # came back too
    assert trained_on_box["global_step"] > 0

    # another machine (ADOPT): the run folder gone, the parts and figures that came back score as trained there
    adapter_bytes = (trained / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(repo / "runs" / "quality-tiny-tiny")
    adopted = subprocess.run(["bash", str(repo / "scripts" / "gpu-quality.sh"), "--dry-run", "tiny"],
                             env={**env, "ADOPT": str(lease / "back"), "OUT": str(tmp_path / "adopt-out"),
                                  "WORK": str(tmp_path / "adopt-work"), "EVAL_SYSTEMS": "gguf"},
                             capture_output=True, text=True, check=False, timeout=900)
    assert adopted.returncode == 0 and "tiny adopted from" in adopted.stdout, adopted.stdout[-3000:] + adopted.stderr
    assert "tiny trained" not in adopted.stdout  # nothing trained here
    assert (trained / "adapter_model.safetensors").read_bytes() == adapter_bytes
    record = json.loads(next((tmp_path / "adopt-work" / "bench" / "quality").glob("*-tiny.json")).read_text())
    assert record["train"]["global_step"] == trained_on_box["global_step"]
    assert record["eval_split"]["gguf"]["rows"] > 0


@pytest.mark.parametrize("script", ["gpu-quality-lease.sh", "gpu-bench-real.sh"])
def test_stop_ends_the_background_run_and_all_it_started(tmp_path: Path, script: str) -> None:
    """The lease of 2026-12-02 tried `pkill -f gpu-quality.sh` to stop a run and killed the very call that asked
    (its own command line matched). `stop` (scripts/lease-lib.sh, both lease scripts) kills the background
    run's session by its recorded leader."""
    import os
    import subprocess
    import time

    lease = tmp_path / "lease"
    lease.mkdir()
    leader = subprocess.Popen(["setsid", "bash", "-c", "sleep 300 & echo $! > child; sleep 300"], cwd=lease)
    (lease / "run.pid").write_text(f"{leader.pid}\n")
    for _ in range(50):
        if (lease / "child").is_file() and (lease / "child").read_text().strip():
            break
        time.sleep(0.1)
    child = int((lease / "child").read_text())
    done = subprocess.run(["bash", str(LEASE_SCRIPT.parent / script), "stop"],
                          env={**os.environ, "LEASE_DIR": str(lease)}, capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert leader.wait(timeout=10) != 0  # killed
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert "stopped" in (lease / "steps.log").read_text()


@pytest.mark.parametrize("script", ["gpu-quality-lease.sh", "gpu-bench-real.sh"])
def test_wait_answers_at_once_where_no_lease_runs(tmp_path: Path, script: str) -> None:
    """2026-12-03 (10th session): a `wait 530` reached a fresh machine (the lease's had been given back) and sat
    out its limit there. `wait` on a machine with no lease answers at once (rc 3), and a background run that
    ended without `done` ends the wait at once too, showing what it left."""
    import os
    import subprocess
    import time

    lease = tmp_path / "lease"
    env = {**os.environ, "LEASE_DIR": str(lease), "OUT": str(tmp_path / "out"), "SLICES": str(tmp_path / "none")}
    (tmp_path / "out").mkdir()
    t0 = time.monotonic()
    fresh = subprocess.run(["bash", str(LEASE_SCRIPT.parent / script), "wait", "120"], env=env,
                           capture_output=True, text=True, check=False, timeout=60)
    assert fresh.returncode == 3, fresh.stdout + fresh.stderr
    assert "no lease on this machine" in fresh.stderr
    assert "slices lie here" not in fresh.stderr
    # 2026-12-04: the slices reached a fresh machine, `start` had gone to the one given back: say what to resend
    slices = tmp_path / "slices"
    slices.mkdir()
    for name in ("s00", "s01"):
        (slices / name).write_bytes(b"x")
    env["SLICES"] = str(slices)
    partial = subprocess.run(["bash", str(LEASE_SCRIPT.parent / script), "wait", "120"], env=env,
                             capture_output=True, text=True, check=False, timeout=60)
    assert partial.returncode == 3 and "2 slices lie here, not marked complete" in partial.stderr, partial.stderr
    (slices / ".complete").touch()
    complete = subprocess.run(["bash", str(LEASE_SCRIPT.parent / script), "wait", "120"], env=env,
                              capture_output=True, text=True, check=False, timeout=60)
    assert complete.returncode == 3 and "2 slices lie here, complete: send `start` again" in complete.stderr
    lease.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (lease / "run.pid").write_text(f"{dead.pid}\n")
    (lease / "steps.log").write_text("[00:00:00] start\n")
    ended = subprocess.run(["bash", str(LEASE_SCRIPT.parent / script), "wait", "120"], env=env,
                           capture_output=True, text=True, check=False, timeout=60)
    assert "ended without 'done'" in ended.stderr and "[00:00:00] start" in ended.stdout
    assert time.monotonic() - t0 < 60  # neither call sat out its 120 s


@pytest.mark.parametrize(("parts", "profile"), [("project_16gb", ""), ("", ""), ("project_16gb,raw_unsloth", "1")])
def test_the_speed_lease_runs_from_a_snapshot_that_later_calls_cannot_change(tmp_path: Path, parts: str,
                                                                             profile: str) -> None:
    """2026-12-03: `gpu-bench-real.sh start` ran from the call's working tree; the next call of the lease re-sent
    the tree and every bench part started meanwhile failed ("No module named bhasha_build.tools.bench"). `start`
    now runs from a snapshot under $LEASE_DIR/repo: here the tree is removed right after `start`, and the run
    (python3 faked: it reports where it runs and whether the module is there) still finds the bench. An empty
    PARTS (the e2e's own lease) runs no bench at all; PROFILE asks the bench for its profiler window, into a
    file of its own (a profiled run is not a timing run)."""
    import os
    import shutil
    import subprocess
    import time

    root = LEASE_SCRIPT.parent.parent
    tree, lease, fake = tmp_path / "tree", tmp_path / "lease", tmp_path / "bin"
    for folder in ("scripts", "bhasha_build", "requirements"):  # no git here: the image has no .git
        shutil.copytree(root / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__"))
    fake.mkdir()
    (fake / "python3").write_text('#!/bin/bash\nsleep 1\n[ "$2" = bhasha_build.tools.bench ] || exit 0\n'
                                  'echo "$PWD" > "$LEASE_DIR/cwd"\necho "$@" > "$LEASE_DIR/args"\n'
                                  '[ -f bhasha_build/tools/bench.py ] && '
                                  'echo "repeat 0 found" > "$LEASE_DIR/bench.log.fake"\n'
                                  'exit 0\n')
    (fake / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LEASE_DIR": str(lease), "E2E": "0",
           "SLICES": str(tmp_path / "none"), "PARTS": parts, "REPEATS": "1", "PROFILE": profile}
    done = subprocess.run(["bash", "scripts/gpu-bench-real.sh", "start"], cwd=tree, env=env, capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    subprocess.run(["rm", "-rf", str(tree / "bhasha_build"), str(tree / "scripts")], check=True)  # the next call
    for _ in range(100):
        if (lease / "done").exists():
            break
        time.sleep(0.2)
    assert (lease / "done").exists(), (lease / "run.log").read_text()
    if not parts:
        assert not (lease / "bench.log.fake").exists() and not (lease / "cwd").exists()
        assert "no parts asked" in (lease / "steps.log").read_text()
        return
    assert (lease / "cwd").read_text().strip() == str(lease / "repo")
    assert (lease / "bench.log.fake").read_text().strip() == "repeat 0 found"
    args = (lease / "args").read_text().split()
    assert args[args.index("--mode") + 1] == parts
    assert ("--profile" in args) == bool(profile)
    assert args[args.index("--out") + 1] == str(lease / ("bench-profile.json" if profile else "bench.json"))


def test_the_guard_ceiling_serves_the_raw_reply_only_where_it_helps(tmp_path: Path) -> None:
    """`quality ceiling`: the oracle guard takes the model's reply on exactly the lines it improves, so it is at
    or below both identity and the raw reply on every set, and no real guard (the rows' guarded column) is
    below it. Three rows: one fixed, one broken, one left alone."""
    from bhasha_build.core.metrics import corpus_cer
    from bhasha_build.tools.quality import main

    rows = [{"set": "s", "noisy": "कमल", "clean": "कमला", "gguf": "कमला", "gguf_guarded": "कमल"},  # fixed, refused
            {"set": "s", "noisy": "घर", "clean": "घर", "gguf": "घार", "gguf_guarded": "घर"},  # broken, refused
            {"set": "t", "noisy": "जल", "clean": "जला", "gguf": "जल", "gguf_guarded": "जल"}]
    file = tmp_path / "p.jsonl"
    file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main(["ceiling", str(file), "--out", str(tmp_path / "c.json")]) == 0
    got = json.loads((tmp_path / "c.json").read_text())["p.jsonl"]
    s = got["s"]
    assert s["rows"] == 2 and s["oracle_lines_served"] == 1
    assert s["oracle_guard"] == pytest.approx(corpus_cer(["कमला", "घर"], ["कमला", "घर"])) == 0.0
    assert s["identity"] > 0 and s["raw"] > 0 and s["guarded"] == s["identity"] and s["oracle_gain"] == 1.0
    assert got["t"]["oracle_guard"] == got["t"]["identity"] == got["t"]["raw"] and got["t"]["oracle_gain"] == 0.0


def test_guard_settings_re_serve_rows_with_the_lexicon_rule_and_thresholds() -> None:
    """`quality guards`: the same rows under another threshold or with the lexicon rule serve what
    core/guard.accept serves: a change that breaks a dictionary word is refused only with the rule, a change
    below the threshold only above it, and a reply the run refused as cut stays refused."""
    from bhasha_build.core.config import load_config
    from bhasha_build.core.guard import CUT_REASON
    from bhasha_build.tools.quality import guard_settings

    rows = [{"lang": "hi", "noisy": "भारत की सरकार ने कहा", "clean": "भारत की सरकार ने कहा",
             "gguf": "भारत की सरकर ने कहा", "gguf_confidence": 0.9},  # breaks a dictionary word
            {"lang": "hi", "noisy": "भारत की सरकर ने कहा", "clean": "भारत की सरकार ने कहा",
             "gguf": "भारत की सरकार ने कहा", "gguf_confidence": 0.6},  # a fix at 0.6
            {"lang": "hi", "noisy": "वह घर गया", "clean": "वह घर गया", "gguf": "वह घर गया गया",
             "gguf_confidence": 0.99, "gguf_guard": CUT_REASON}]
    got = {(r["min_confidence"], r["lexicon_guard"]): r
           for r in guard_settings(rows, load_config(None, profile="real-errors-qwen").guard, [0.0, 0.7])}
    assert set(got) == {(0.0, False), (0.0, True), (0.7, False), (0.7, True)} and got[(0.0, False)]["set"] == "hi"
    assert got[(0.0, False)]["over_correction"] == pytest.approx(1 / 2)  # the break is served, the cut one is not
    assert got[(0.0, True)]["over_correction"] == 0.0 and got[(0.0, True)]["cer"] == 0.0  # break refused, fix kept
    assert got[(0.7, True)]["cer"] == got[(0.7, True)]["identity"] > 0  # the fix is below 0.7: nothing served


def test_rescore_recomputes_a_record_from_its_predictions_and_keeps_what_it_had(tmp_path: Path) -> None:
    """`quality rescore`: a record scored where the grapheme rules (or the dictionaries) differed gets the
    scores its own predictions give here — the eval split per system, the dev sets — with the old numbers
    kept; --baselines makes the rules/lexicon columns again (a box without dictionaries wrote rules as
    lexicon) and the file's sha256 in the record follows the rewrite."""
    from bhasha_build.core.baselines import run_baselines
    from bhasha_build.core.metrics import score, unit_rules
    from bhasha_build.tools.quality import main

    rows = [{"id": "a", "lang": "hi", "noisy": "भारत की सरकर ने कहा", "clean": "भारत की सरकार ने कहा",
             "gguf": "भारत की सरकार ने कहा", "gguf_guarded": "भारत की सरकार ने कहा"},
            {"id": "b", "lang": "bn", "noisy": "অ্যাসিড", "clean": "অ্যাসিড", "gguf": "অ্যাসিডা", "gguf_guarded": "অ্যাসিড"},
            {"id": "c", "lang": "bn", "noisy": "এসিড", "clean": "অ্যাসিড", "gguf": "অ্যাসিড", "gguf_guarded": "এসিড"}]
    for r in rows:  # what a machine without the dictionaries wrote: the lexicon column is the rules alone
        r["rules"] = r["lexicon"] = r["noisy"]
    dev = [{**r, "set": f"unfamiliar-{r['lang']}"} for r in rows]
    (tmp_path / "r.eval-predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                       encoding="utf-8")
    (tmp_path / "r.dev-predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dev),
                                                      encoding="utf-8")
    wrong = {"cer": 0.5, "wer": 0.5, "over_correction_rate": 0.5, "rows": 3, "cer_by_lang": {"bn": 0.5, "hi": 0.5}}
    dev_block = {"rows": 1, "identity_cer": 0.5, "raw_cer": 0.5, "cer": 0.5, "raw_over_correction": 0.5,
                 "over_correction": 0.5, "identity_rows": 1}
    record = {"name": "r", "config": {"data": {"zwj_policy": "auto"}},
              "eval_split": {"baseline": dict(wrong), "rules": {**wrong, "guarded": {"cer": 0.5, "guarded_rows": 0}},
                             "lexicon": {**wrong, "guarded": {"cer": 0.5, "guarded_rows": 0}},
                             "gguf": {**wrong, "guarded": {"cer": 0.5, "over_correction_rate": 0.5, "guarded_rows": 1},
                                      "dev": {"unfamiliar-bn": dict(dev_block), "overall": dict(dev_block)}}},
              "eval_split_predictions": {"file": "r.eval-predictions.jsonl", "sha256": "old", "rows": 3},
              "dev_predictions": {"file": "r.dev-predictions.jsonl", "sha256": "old", "rows": 3}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    assert main(["rescore", str(path), "--baselines"]) == 0
    got = json.loads(path.read_text(encoding="utf-8"))
    raw, served = score(rows, [r["gguf"] for r in rows]), score(rows, [r["gguf_guarded"] for r in rows])
    assert got["eval_split"]["gguf"]["cer"] == raw["overall"]["cer"] != 0.5
    assert got["eval_split"]["gguf"]["cer_by_lang"] == {lang: b["cer"] for lang, b in raw["by_lang"].items()}
    assert got["eval_split"]["gguf"]["guarded"]["cer"] == served["overall"]["cer"]
    assert got["eval_split"]["gguf"]["guarded"]["over_correction_rate"] == 0.0
    assert got["eval_split"]["baseline"]["cer"] == score(rows, [r["noisy"] for r in rows])["overall"]["cer"]
    lexicon = run_baselines(rows, [r["noisy"] for r in rows])[0]["lexicon"]
    assert lexicon[0] == "भारत की सरकार ने कहा"  # the snap the box could not make
    assert got["eval_split"]["lexicon"]["cer"] == score(rows, lexicon)["overall"]["cer"] \
        < got["eval_split"]["rules"]["cer"]
    kept = [json.loads(line) for line in (tmp_path / "r.eval-predictions.jsonl").read_text().splitlines()]
    assert [r["lexicon"] for r in kept] == lexicon and got["eval_split_predictions"]["sha256"] != "old"
    bn = [r for r in dev if r["lang"] == "bn"]
    assert got["eval_split"]["gguf"]["dev"]["unfamiliar-bn"]["raw_cer"] == score(bn, [r["gguf"] for r in bn])[
        "overall"]["cer"]
    assert got["eval_split"]["gguf"]["dev"]["unfamiliar-bn"]["raw_over_correction"] == 1.0  # b changed, was right
    assert got["eval_split"]["gguf"]["dev"]["overall"]["rows"] == 1  # the block's other fields kept as they were
    assert got["metric_units"] == unit_rules()
    assert got["rescored"]["scored_elsewhere"]["eval_split"]["gguf"]["cer"] == 0.5


def test_residuals_put_each_wrong_word_in_one_class() -> None:
    """`quality residuals`: punctuation-only, a word the lexicon knows (real_word), a non-word whose truth
    it knows (non_word), a word neither knows (unknown_truth) and a split word (segmentation), with their
    grapheme edits; a column equal to the truth has none."""
    from bhasha_build.tools.quality import RESIDUAL_CLASSES, residuals, word_errors

    lexicon = {"भारत", "सरकार", "कहा", "ने", "कर"}
    truth = "भारत सरकार ने रामदीन से कहा।"
    assert word_errors(truth, truth, lexicon) == []
    found = word_errors("भारत! सरकर कर रामदिन से कहा।", truth, lexicon)
    assert found == [("punctuation", 1), ("non_word", 1), ("real_word", 2), ("unknown_truth", 1)]
    assert word_errors("भारत सरकार ने राम दीन से कहा।", truth, lexicon) == [("segmentation", 1)]
    rows = [{"set": "indomain-hi", "noisy": "भारत! सरकर ने रामदीन से कहा।", "clean": truth, "gguf_guarded": truth}]
    out = residuals(rows, ["noisy", "gguf_guarded"])["indomain-hi"]
    assert set(out["noisy"]["words"]) == set(RESIDUAL_CLASSES) and out["truth_graphemes"] > 0
    assert sum(out["noisy"]["edits"].values()) == 2 and sum(out["gguf_guarded"]["edits"].values()) == 0


def test_residuals_name_the_file_and_line_of_a_row_without_the_column(tmp_path: Path, capsys) -> None:
    from bhasha_build.tools.quality import main

    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"noisy": "क", "clean": "क", "gguf_guarded": "क"}) + "\n\n"
                    + json.dumps({"noisy": "क", "clean": "क"}) + "\n", encoding="utf-8")
    assert main(["residuals", str(rows)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {rows}:3: no text column gguf_guarded (--columns)"


@pytest.mark.parametrize("script", ["gpu-quality-lease.sh", "gpu-bench-real.sh"])
def test_put_slice_gathers_the_carried_slices_and_marks_the_last(tmp_path: Path, script: str) -> None:
    """Both leases take the weights' GGUF slices the same way (lease-lib.sh lease_put_slice): each call's
    .carry/slices/sNN joins the earlier ones in $SLICES, and --last marks them complete; joined in name order
    they are the file that was cut."""
    import subprocess

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in (script, "lease-lib.sh"):
        shutil.copy(LEASE_SCRIPT.parent / name, repo / "scripts" / name)
    slices, whole = tmp_path / "slices", (bytes(range(256)) * 40)[:10_000]
    env = {"PATH": "/usr/bin:/bin", "SLICES": str(slices), "LEASE_DIR": str(tmp_path / "lease")}
    for i, last in ((0, False), (1, True)):
        carried = repo / ".carry" / "slices"
        shutil.rmtree(carried, ignore_errors=True)  # each call carries its own slice only
        carried.mkdir(parents=True)
        (carried / f"s{i:02d}").write_bytes(whole[i * 5000 : (i + 1) * 5000])
        done = subprocess.run(["bash", str(repo / "scripts" / script), "put-slice", *(["--last"] if last else [])],
                              capture_output=True, text=True, check=False, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert (slices / ".complete").exists() == last
    assert sorted(p.name for p in slices.iterdir()) == [".complete", "s00", "s01"]
    assert b"".join((slices / n).read_bytes() for n in ("s00", "s01")) == whole
