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
     correct` applies (core/guard.serve: a reply cut by the budget, the guard, correct.min_confidence,
     correct.lexicon_guard), and that is scored by core/metrics.score, overall and per language, next
     to the do-nothing baseline;
  4. the gate (`gate`): per language, the candidate's grapheme CER may exceed the served model's by
     at most `promote.margin`, and its over-correction rate must be at most
     `promote.max_over_correction`; the first promotion (nothing served yet) compares with the
     baseline only;
  5. promotion, only when the gate passed: the served model is copied to `<name>:prev-<UTC stamp>`,
     the candidate copied over `<name>` (/api/copy: one manifest write, so the name is never
     missing, whatever moment a crash comes), its digest checked, the candidate deleted, and all
     but the newest `promote.keep` prev tags deleted. A refused gate leaves `<name>` untouched (the
     candidate stays for inspection) and raises PromoteError with the comparison table.

Every outcome is recorded in the run's promote.json (digests before/after, scores, the gate, the
comparison table, trigger: who or what ran it) and in the manifest's `promote` section; the run
report (stages/report.py) renders the table.

`rollback(name, host, ...)` restores the newest kept `<name>:prev-*` whose digest differs from the
served one: it proves the kept model with the sanity prompt first (deploy.check_served_model), then
copies it over `<name>` and checks the digest; recorded in the run's rollback.json.

Knobs: promote.margin, promote.max_over_correction, promote.keep, promote.regression_set,
promote.eval_rows, eval.max_new_tokens, correct.min_confidence, correct.lexicon_guard, guard.*,
deploy.timeout_s, deploy.host (after --host/OLLAMA_HOST),
seed, data.zwj_policy.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from collections import Counter
from typing import Any

from bhasha_build.core import metrics
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import recorded
from bhasha_build.core.guard import serve
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.ollama import OllamaClient, ask_answers, full_name, server_url
from bhasha_build.core.text import normalize_text
from bhasha_build.stages.data import DataError, input_files, load_rows
from bhasha_build.stages.deploy import candidate_name, check_served_model, copy_over, deploy, sanity_sample
from bhasha_build.stages.evaluate import served_budgets

PREV = "prev-"
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


def kept_names(client: OllamaClient, name: str) -> list[str]:
    """The kept previous models of `name` on the server, newest first (stamps sort as text)."""
    prefix = prev_name(name, "")
    return sorted((m["name"] for m in client.tags() if m["name"].startswith(prefix)), reverse=True)


def _stamp() -> str:
    """UTC, sortable as text; microseconds so two promotions in one second keep two models."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")


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
                       "detail": f"candidate {cand['cer']:.4f} vs {against} {ref['cer']:.4f} + margin {margin}"})
        checks.append({"lang": lang, "check": "over_correction_within_bound", "ok": oc_ok,
                       "detail": f"candidate {cand['over_correction_rate']:.4f} <= {bound}"})
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

    if digests["served_before"]:
        report["kept_as"] = prev_name(name, _stamp())
        client.copy(name, report["kept_as"])
    digests["served_after"] = copy_over(client, report["candidate"], name, digests["candidate"])
    client.delete(report["candidate"])
    report["pruned"] = []
    for old in kept_names(client, name)[cfg.promote.keep:]:
        client.delete(old)
        report["pruned"].append(old)
    report["status"] = "promoted"


# -- rollback ---------------------------------------------------------------------------------------


def rollback(cfg: BuildConfig, layout: RunLayout, name: str | None = None, host: str | None = None,
             note: str | None = None) -> dict[str, Any]:
    """Restore the newest kept `<name>:prev-*` that is not what is served now (module docstring)."""
    name = full_name(name or cfg.deploy.name)
    host_url = server_url(host, cfg.deploy.host)
    report: dict[str, Any] = {"name": name, "host": host_url, "status": "failed", "trigger": trigger(note),
                              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "digests": {}}
    with recorded(report, layout.rollback_report):
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
        report["digests"]["served_after"] = copy_over(client, restore[0], name, restore[1])
        report["status"] = "rolled back"
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What `invoke promote`/`rollback` print after the table."""
    d = report.get("digests", {})
    return [f"{report['status']}: '{report['name']}' on {report['host']}",
            f"served before {d.get('served_before')}  after {d.get('served_after')}"
            + (f"  kept as {report['kept_as']}" if report.get("kept_as") else "")
            + (f"  restored from {report['restored_from']}" if report.get("restored_from") else "")]


def manifest_section(report: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a promotion: the outcome, digests, the gate with its table."""
    keep = ("status", "name", "host", "digests", "kept_as", "pruned", "trigger", "error", "comparison", "rows")
    section = {k: report[k] for k in keep if k in report}
    if "gate" in report:
        section["gate"] = {k: report["gate"][k] for k in ("passed", "against", "margin", "max_over_correction",
                                                          "table")}
    return section
