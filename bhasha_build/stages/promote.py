"""Promote stage: gate a run's model against the model in service, then swap it in, keeping history.

`invoke promote --name bhasha-ocr --host H` (the nightly's last step), on the serving Ollama H:

  1. candidate: the run's GGUF + Modelfile are created and verified as `<name>-candidate`
     (deploy.deploy with promote=False: /api/show round-trip + the sanity prompt);
  2. gate rows: the first `promote.eval_rows` rows of the run's eval split plus every row of the
     pinned regression set (`promote.regression_set`, data/regression/*.jsonl in the repository),
     each tagged with its set;
  3. scores: the candidate and the served `<name>` answer every row through the project's Ollama
     client (chat, temperature 0, the config's seed, each row's reply budget core/guard.reply_budget
     with floor eval.max_new_tokens, token log-probabilities, the input normalized by
     core/text.normalize_text like every client); what each serves for a row is the rule `invoke
     correct` applies (core/guard.serve: a reply cut by the budget, the guard, correct.min_confidence —
     with "auto" the threshold the run's eval calibrated on its eval split, recorded in promote.json's
     `min_confidence` —, correct.lexicon_guard), and that is scored by core/metrics.score, overall and per
     language, next to the do-nothing baseline;
  4. the gate (`gate`): per language, the candidate's grapheme CER may exceed the served model's by
     at most `promote.margin`, and its over-correction rate must be at most
     `promote.max_over_correction`; the first promotion (nothing served yet) compares with the
     baseline only;
  5. promotion, only when the gate passed: the served model is copied to `<name>:prev-<UTC stamp>`
     (which must then have the digest the gate scored: else the served model changed meanwhile and
     nothing is promoted), the candidate copied over `<name>` by deploy.copy_over (/api/copy: one
     manifest write, so the name is never missing, whatever moment a crash comes; the candidate's
     digest re-checked right before, the name's right after, the kept model put back when it is
     not the verified one), the candidate deleted, and all but the newest `promote.keep` kept
     models deleted. Kept models are the tags in this stage's own stamp format, ordered by the time
     in the stamp (`kept_names`); hand-made `prev-*` tags (`prev-good`, `prev-v1`) are never pruned
     and never restored by rollback. A refused gate leaves `<name>` untouched (the candidate stays
     for inspection) and raises PromoteError with the comparison table. A tidy-up delete that fails
     is a warning in the report, never a failed promotion.

Every outcome is recorded in the run's promote.json (digests before/after, scores, the gate, the
comparison table, trigger: who or what ran it, warnings) and in the manifest's `promote` section;
`digests.served_after` is what `<name>` serves as checked after the attempt, whatever the outcome.
The run report (stages/report.py) renders the table.

`rollback(name, host, ...)` restores the newest kept `<name>:prev-<stamp>` whose digest differs from
the served one: it proves the kept model with the sanity prompt first (deploy.check_served_model),
then copies it over `<name>` (deploy.copy_over); recorded in the run's rollback.json and the
manifest's `rollback` section. When the model it replaced is the one this run promoted, the run's
promote.json and the manifest's `promote` section say "rolled back" (with when and to what).

Knobs: promote.margin, promote.max_over_correction, promote.keep, promote.regression_set,
promote.eval_rows, eval.max_new_tokens, correct.min_confidence, correct.lexicon_guard, guard.*,
deploy.timeout_s, deploy.host (after --host/OLLAMA_HOST),
seed, data.zwj_policy.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import socket
from collections import Counter
from typing import Any

from bhasha_build.core import metrics
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json, recorded
from bhasha_build.core.guard import serve
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.manifest import Manifest
from bhasha_build.core.ollama import OllamaClient, OllamaError, ask_answers, full_name, server_url
from bhasha_build.core.text import normalize_text
from bhasha_build.stages.data import DataError, input_files, load_rows
from bhasha_build.stages.deploy import (
    ServeError,
    candidate_name,
    check_served_model,
    copy_judged,
    copy_over,
    delete_quietly,
    deploy,
    sanity_sample,
)
from bhasha_build.stages.evaluate import applied_min_confidence, served_budgets

PREV = "prev-"
STAMP_FORMAT = "%Y%m%d-%H%M%S-%f"
_STAMP = re.compile(r"(\d{8}-\d{6})(?:-(\d{6}))?")  # _stamp()'s format (older runs: without microseconds)
TRIGGER_ENV = ("GITHUB_ACTOR", "GITHUB_EVENT_NAME", "GITHUB_WORKFLOW", "GITHUB_RUN_ID", "GITHUB_SHA")


class PromoteError(BhashaError):
    """A refused gate or a failed promotion/rollback; ``report`` is what was recorded."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


# -- names --------------------------------------------------------------------------------------------


def _split(name: str) -> tuple[str, str]:
    """'x' -> ('x', 'latest'); 'x:tag' -> ('x', 'tag') (a registry host:port stays in the base)."""
    full = full_name(name)
    base, _, tag = full.rpartition(":")
    return base, tag


def prev_name(name: str, stamp: str) -> str:
    """Where the served `name` is kept when replaced: `<base>:prev-<stamp>` (`<base>:<tag>-prev-…`)."""
    base, tag = _split(name)
    return f"{base}:{PREV}{stamp}" if tag == "latest" else f"{base}:{tag}-{PREV}{stamp}"


def kept_time(name: str, kept: str) -> dt.datetime | None:
    """When `kept` was kept, read from its tag, if it is one of `name`'s kept models in this stage's
    own format (`prev_name` with a `_stamp`); None for anything else (a hand-made `prev-good`)."""
    prefix = prev_name(name, "")
    match = _STAMP.fullmatch(kept[len(prefix):]) if kept.startswith(prefix) else None
    if not match:
        return None
    try:
        return dt.datetime.strptime(f"{match[1]}-{match[2] or '000000'}", STAMP_FORMAT)
    except ValueError:  # 20261399-...: the shape, not a time
        return None


def kept_names(client: OllamaClient, name: str) -> list[str]:
    """The kept previous models of `name` on the server, newest first by the time in their stamp; tags
    not in that format are not kept models (never pruned, never restored)."""
    times = {m["name"]: kept_time(name, m["name"]) for m in client.tags()}
    return sorted((k for k, t in times.items() if t is not None), key=lambda k: (times[k], k), reverse=True)


def _stamp() -> str:
    """UTC; microseconds so two promotions in one second keep two models."""
    return dt.datetime.now(dt.UTC).strftime(STAMP_FORMAT)


def trigger(note: str | None = None) -> dict[str, Any]:
    """Who or what ran this: the CI run's facts when present, else the user and host; plus a note."""
    found = {k.removeprefix("GITHUB_").lower(): os.environ[k] for k in TRIGGER_ENV if os.environ.get(k)}
    if not found:
        found = {"user": getpass.getuser(), "host": socket.gethostname()}
    return {**found, **({"note": note} if note else {})}


# -- the gate rows and scores -------------------------------------------------------------------------


def gate_rows(cfg: BuildConfig, layout: RunLayout) -> list[dict[str, Any]]:
    """The run's eval split (first promote.eval_rows OCR pairs) + the pinned regression set."""
    rows = [{**r, "set": "eval"} for r in load_rows(layout.eval_split) if "noisy" in r][: cfg.promote.eval_rows]
    regression = cfg.resolve_path(cfg.promote.regression_set)
    try:
        files = input_files(regression)
    except DataError as exc:
        raise PromoteError(f"promote.regression_set: {exc}") from None
    for path in files:
        rows += [{**r, "set": f"regression:{path.name}"} for r in load_rows(path) if "noisy" in r]
    if not rows:
        raise PromoteError(f"{layout.eval_split} and {regression}: no rows to gate on")
    return rows


def answers(client: OllamaClient, name: str, rows: list[dict[str, Any]], cfg: BuildConfig,
            layout: RunLayout | None = None) -> list[str]:
    """What `name` serves for each row (core/guard.serve over its replies), asked the way every client of
    the project asks."""
    texts = [normalize_text(r["noisy"], cfg.data.zwj_policy) for r in rows]
    replies = ask_answers(client, name, texts, served_budgets(cfg, layout or cfg.layout, texts), seed=cfg.seed,
                          timeout=cfg.deploy.timeout_s)
    return [serve(r["noisy"], a, r.get("lang"), cfg).text for r, a in zip(rows, replies, strict=True)]


def gate(scores: dict[str, Any], cfg: BuildConfig) -> dict[str, Any]:
    """Per language: candidate CER <= served CER + margin, over-correction <= the bound (module
    docstring). ``scores`` has baseline/candidate (and served, unless nothing is served)."""
    margin, bound = cfg.promote.margin, cfg.promote.max_over_correction
    served = scores.get("served")
    checks, table = [], []
    for lang, cand in scores["candidate"]["by_lang"].items():
        base = scores["baseline"]["by_lang"][lang]
        ref = served["by_lang"][lang] if served else base
        against = "served" if served else "baseline"
        cer_ok = cand["cer"] <= ref["cer"] + margin
        oc_ok = cand["over_correction_rate"] <= bound
        checks.append({"lang": lang, "check": f"cer_not_worse_than_{against}", "ok": cer_ok,
                       "detail": f"candidate CER {cand['cer']:.4f} {'<=' if cer_ok else '>'} {against} CER "
                                 f"{ref['cer']:.4f} + margin {margin}"})
        checks.append({"lang": lang, "check": "over_correction_within_bound", "ok": oc_ok,
                       "detail": f"candidate over-correction {cand['over_correction_rate']:.4f} "
                                 f"{'<=' if oc_ok else '>'} limit {bound}"})
        table.append({"lang": lang, "rows": cand["rows"], "baseline_cer": base["cer"],
                      "served_cer": served["by_lang"][lang]["cer"] if served else None, "candidate_cer": cand["cer"],
                      "served_over_correction": served["by_lang"][lang]["over_correction_rate"] if served else None,
                      "candidate_over_correction": cand["over_correction_rate"], "ok": cer_ok and oc_ok})
    return {"passed": all(c["ok"] for c in checks), "margin": margin, "max_over_correction": bound,
            "against": "served" if served else "baseline", "checks": checks, "table": table}


def comparison_markdown(result: dict[str, Any]) -> str:
    """The gate's table as Markdown (the job log, the job summary and report.md show this)."""
    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = ["| lang | rows | baseline CER | served CER | candidate CER | served over-corr. | candidate over-corr. "
             "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for row in result["table"]:
        lines.append(f"| {row['lang']} | {row['rows']} | {num(row['baseline_cer'])} | {num(row['served_cer'])} | "
                     f"{num(row['candidate_cer'])} | {num(row['served_over_correction'])} | "
                     f"{num(row['candidate_over_correction'])} | {'ok' if row['ok'] else 'WORSE'} |")
    verdict = "passed" if result["passed"] else "refused"
    lines.append(f"\nGate {verdict} against the {result['against']} model (margin {result['margin']}, "
                 f"over-correction at most {result['max_over_correction']}).")
    return "\n".join(lines)


# -- promote ---------------------------------------------------------------------------------------


def run(cfg: BuildConfig, layout: RunLayout, name: str | None = None, host: str | None = None,
        note: str | None = None, **_: Any) -> dict[str, Any]:
    """The promote stage's work (the runner has verified the GGUF, Modelfile and eval split)."""
    return promote(cfg, layout, name=name, host=host, note=note)


def promote(cfg: BuildConfig, layout: RunLayout, name: str | None = None, host: str | None = None,
            note: str | None = None) -> dict[str, Any]:
    name = full_name(name or cfg.deploy.name)
    host_url = server_url(host, cfg.deploy.host)
    report: dict[str, Any] = {"name": name, "candidate": full_name(candidate_name(name)), "host": host_url,
                              "status": "failed", "trigger": trigger(note),
                              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "digests": {}}
    with recorded(report, layout.promote_report):
        _promote(cfg, layout, name, host_url, report)
    return report


def _promote(cfg: BuildConfig, layout: RunLayout, name: str, host_url: str, report: dict[str, Any]) -> None:
    # "auto": the threshold eval calibrated on the run's eval split (eval.json), else the configured number
    cfg, report["min_confidence"] = applied_min_confidence(cfg, layout)
    client = OllamaClient(host_url, timeout=cfg.deploy.timeout_s)
    digests = report["digests"]
    digests["served_before"] = client.model_digest(name)
    staged = deploy(layout.root, cfg, name=name, host=host_url, promote=False, report_file=None)
    report["candidate_check"] = {k: staged.get(k) for k in ("roundtrip", "sanity", "gguf_digest", "status")}
    digests["candidate"] = staged["candidate_digest"]

    rows = gate_rows(cfg, layout)
    scores: dict[str, Any] = {"baseline": metrics.identity_baseline(rows),
                              "candidate": metrics.score(rows, answers(client, report["candidate"], rows, cfg, layout))}
    if digests["served_before"]:
        scores["served"] = metrics.score(rows, answers(client, name, rows, cfg, layout))
    report["rows"] = {"total": len(rows), "by_set": dict(Counter(r["set"] for r in rows))}
    report["scores"] = scores
    report["gate"] = result = gate(scores, cfg)
    report["comparison"] = comparison_markdown(result)
    if not result["passed"]:
        report["status"] = "refused"
        digests["served_after"] = client.model_digest(name)
        failed = "; ".join(f"{c['lang']}: {c['detail']}" for c in result["checks"] if not c["ok"])
        raise PromoteError(f"gate refused '{report['candidate']}' against the {result['against']} model on "
                           f"{host_url} ({failed}); '{name}' is left as it was")

    swap(client, report, cfg.promote.keep)


def swap(client: OllamaClient, report: dict[str, Any], keep: int) -> None:
    """Step 5 (module docstring) for a candidate that passed the gate: keep the served model (it must
    still be the one scored), copy the candidate over the name, tidy up; fills `report`."""
    name, digests, warnings = report["name"], report["digests"], report.setdefault("warnings", [])
    try:
        previous = _keep_served(client, name, digests["served_before"], report) if digests["served_before"] else None
        if previous is None and (now := client.model_digest(name)) is not None:
            raise PromoteError(f"'{name}' on {client.host} was created ({now}) while the gate ran against the "
                               "baseline (another deploy or promote at once?): nothing was promoted")
        digests["served_after"] = copy_over(client, report["candidate"], name, digests["candidate"], previous,
                                            warnings)
    except ServeError as exc:
        digests["served_after"] = exc.served
        raise
    except (OllamaError, PromoteError):
        digests["served_after"] = _served_now(client, name)
        raise
    delete_quietly(client, report["candidate"], warnings)
    report["pruned"] = []
    for old in kept_names(client, name)[keep:]:
        if old != report.get("kept_as"):  # never the one just kept, whatever the clocks said before
            delete_quietly(client, old, warnings)
            report["pruned"].append(old)
    report["status"] = "promoted"


def _keep_served(client: OllamaClient, name: str, digest: str, report: dict[str, Any]) -> tuple[str, str]:
    """Copy the served model to a new kept name; it must have the digest the gate scored, else the served
    model changed meanwhile and nothing is promoted. Returns (kept name, digest) for copy_over."""
    report["kept_as"] = kept = prev_name(name, _stamp())
    got, failed = copy_judged(client, name, kept)
    if got == digest:
        return kept, digest
    if got is not None:
        delete_quietly(client, kept, report["warnings"])
    del report["kept_as"]
    if failed is not None and got is None:
        raise PromoteError(f"keeping the served '{name}' as '{kept}' failed ({failed}): nothing was promoted")
    raise PromoteError(f"'{name}' on {client.host} changed while the gate ran (it served {digest} when scored, "
                       f"{got} now; another deploy or promote at once?): nothing was promoted")


def _served_now(client: OllamaClient, name: str) -> str | None:
    """What `name` serves, for a report on a failure path (None also when the server cannot say)."""
    try:
        return client.model_digest(name)
    except OllamaError:
        return None


# -- rollback ---------------------------------------------------------------------------------------


def rollback(cfg: BuildConfig, layout: RunLayout, name: str | None = None, host: str | None = None,
             note: str | None = None) -> dict[str, Any]:
    """Restore the newest kept `<name>:prev-<stamp>` that is not what is served now (module docstring)."""
    name = full_name(name or cfg.deploy.name)
    host_url = server_url(host, cfg.deploy.host)
    report: dict[str, Any] = {"name": name, "host": host_url, "status": "failed", "trigger": trigger(note),
                              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "digests": {}}
    try:
        with recorded(report, layout.rollback_report):
            _rollback(cfg, layout, name, host_url, report)
    finally:
        record_rollback(layout, report)
    return report


def _rollback(cfg: BuildConfig, layout: RunLayout, name: str, host_url: str, report: dict[str, Any]) -> None:
    client = OllamaClient(host_url, timeout=cfg.deploy.timeout_s)
    digests = client.digests()  # one /api/tags for the served and every kept model
    report["digests"]["served_before"] = served = digests.get(full_name(name))
    kept = [(k, digests.get(k)) for k in kept_names(client, name)]
    report["kept"] = [k for k, _ in kept]
    restore = next(((k, d) for k, d in kept if d != served), None)
    if restore is None:
        raise PromoteError(f"no kept model of '{name}' on {host_url} differs from the served one "
                           f"({len(kept)} kept): nothing to roll back to")
    report["restored_from"], report["digests"]["restored"] = restore
    report["sanity"] = check_served_model(client, restore[0], cfg, sanity_sample(layout))
    if not report["sanity"]["ok"]:
        raise PromoteError(f"'{restore[0]}' failed the sanity prompt ({'; '.join(report['sanity']['failures'])}); "
                           f"'{name}' is left as it was")
    warnings = report.setdefault("warnings", [])
    try:
        report["digests"]["served_after"] = copy_over(client, restore[0], name, restore[1], warnings=warnings)
    except ServeError as exc:
        report["digests"]["served_after"] = exc.served
        raise
    report["status"] = "rolled back"


def record_rollback(layout: RunLayout, report: dict[str, Any]) -> None:
    """The rollback in the run's manifest (`rollback` section); when it replaced the very model this run
    promoted, the run's promote.json and the manifest's `promote` section say "rolled back" too.
    Writes only into a run that has a manifest; a write that fails is a warning (the rollback's own
    outcome is the one reported)."""
    manifest = Manifest(layout.root)
    if not manifest.path.is_file():
        return
    section = {k: report[k] for k in ("status", "name", "host", "digests", "restored_from", "trigger", "error",
                                      "warnings", "started") if k in report}

    def write() -> None:
        promoted = manifest.load().get("promote") or {}
        replaced = report["digests"].get("served_before")
        if (report["status"] == "rolled back" and promoted.get("status") == "promoted" and replaced
                and promoted.get("name") == report["name"] and promoted.get("host") == report["host"]
                and (promoted.get("digests") or {}).get("served_after") == replaced):
            mark = {"status": "rolled back", "rolled_back": {
                "at": report["started"], "restored_from": report.get("restored_from"),
                "served_after": report["digests"].get("served_after"), "trigger": report.get("trigger")}}
            try:
                promote_report = json.loads(layout.promote_report.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                promote_report = None
            if isinstance(promote_report, dict) and promote_report.get("status") == "promoted":
                atomic_write_json(layout.promote_report, {**promote_report, **mark})
            manifest.update(rollback=section, promote=mark)
        else:
            manifest.update(rollback=section)

    manifest.try_update(write)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What `invoke promote`/`rollback` print after the table."""
    d = report.get("digests", {})
    return [f"{report['status']}: '{report['name']}' on {report['host']}",
            f"served before {d.get('served_before')}  after {d.get('served_after')}"
            + (f"  kept as {report['kept_as']}" if report.get("kept_as") else "")
            + (f"  restored from {report['restored_from']}" if report.get("restored_from") else "")]


def manifest_section(report: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a promotion: the outcome, digests, the gate with its table."""
    keep = ("status", "name", "host", "digests", "kept_as", "pruned", "trigger", "error", "warnings", "comparison",
            "rows", "rolled_back")
    section = {k: report[k] for k in keep if k in report}
    if "gate" in report:
        section["gate"] = {k: report["gate"][k] for k in ("passed", "against", "margin", "max_over_correction",
                                                          "table")}
    return section
