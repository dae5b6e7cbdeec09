"""Deploy a run's Modelfile + q4_k_m GGUF to Ollama, then prove the deployed model answers right.

The live name is only ever replaced by a model that has passed every check: the run is created as
``<name>-candidate`` (``candidate_name``), verified there, then copied over ``<name>`` with
``/api/copy`` (one manifest write: the name always holds the old model or the new one) and the
candidate deleted.

Steps: read the run's ``Modelfile`` (validated by Ollama's parsing rules, FROM must stay inside the
run folder) -> version check (structured create needs Ollama >= 0.5.5) -> refuse an existing name
unless ``force`` -> upload the GGUF blob (HEAD, then POST) and structured ``/api/create`` of the
candidate (or ``ollama create -f`` with ``use_cli``) -> ``/api/show`` round-trip: template, system
and typed parameters (stops included) must equal the Modelfile -> sanity prompt through
``/api/chat`` (temperature 0, seed, num_predict, timeout): a non-empty answer, ``done_reason ==
"stop"`` (it ended on a stop token, not the length cap), mostly in the target script, and grapheme
CER against the reference under ``deploy.sanity_max_cer`` when that is set (real models; tiny ones
skip it) -> copy the candidate over the name (``copy_over``: the candidate must still have the digest
read before its checks right before /api/copy, the name must have it right after, else the previous
model is put back) -> delete the candidate (a delete that fails while the model is gone anyway, or
that leaves it, is a warning in the report, not a failure). ``promote=False`` stops after the
checks and keeps the candidate (the nightly's promotion, stages/promote.py, gates it against the
served model first).

Output: the run's ``deploy.json``, written atomically on EVERY outcome (also when Ollama is
unreachable, lies or times out), and the same dict returned, for the manifest's ``deploy`` key: name,
candidate, host, ollama_version, live_digest_before, digest (the name's digest after), candidate_digest,
gguf_digest, method, roundtrip, sanity{...}, status ("ok" | "candidate" | "flagged" | "failed"),
error, warnings, created, seconds; ``digest`` is what the name serves as checked after the copy, also
when the copy failed. A failed round-trip or sanity check leaves the live model as it was and the
candidate in place for inspection, and raises ``DeployError``; every failure's exception carries
the dict on ``.report``. The host is recorded as resolved (never with credentials: they are refused).

Knobs: deploy.name, deploy.host (after --host and OLLAMA_HOST), deploy.timeout_s,
deploy.sanity_max_cer, deploy.num_predict, seed; the script check reuses the data stage's rule
(text.foreign_fraction within data.max_foreign_fraction, at least one letter of the script).
"""

from __future__ import annotations

import json
import secrets
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bhasha_build.core import metrics
from bhasha_build.core.config import BuildConfig
from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import recorded, sha256_file
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.ollama import (
    OllamaClient,
    OllamaError,
    OllamaModelExistsError,
    ask_correction,
    blob_digest,
    cli_create,
    correction_options,
    full_name,
    parse_show_parameters,
    server_url,
)
from bhasha_build.core.text import LANG_SCRIPTS, detect_script, foreign_fraction
from bhasha_build.stages.modelfile import (
    ModelfileError,
    format_params,
    parse_modelfile,
    resolve_from,
)

# Used when the run has no eval split: a noisy Hindi line (lost nukta in बाज़ार, lost anusvara in
# हैं, danda read as |) and its fix; NFC like the data stage writes it.
BUILTIN_SAMPLE = {
    "lang": "hi",
    "noisy": unicodedata.normalize("NFC", "आज मौसम बहुत अच्छा है और हम बाजार जा रहे है|"),
    "clean": unicodedata.normalize("NFC", "आज मौसम बहुत अच्छा है और हम बाज़ार जा रहे हैं।"),
}


class DeployError(BhashaError):
    """One-line deploy failure; ``report`` holds what was recorded (None if nothing was created)."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


def sanity_sample(layout: RunLayout) -> dict[str, Any]:
    """First OCR pair of the run's eval split (chat rows skipped), else BUILTIN_SAMPLE."""
    path = layout.eval_split
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if isinstance(row, dict) and row.get("noisy") and row.get("clean"):
                    return {
                        "source": f"{layout.rel(path)}:{line_no}",
                        "lang": row.get("lang"),
                        "noisy": row["noisy"],
                        "clean": row["clean"],
                    }
    return {"source": "builtin", **BUILTIN_SAMPLE}


def _typed(params: dict[str, Any]) -> dict[str, Any]:
    # Compare numbers as numbers (Ollama prints floats that are whole as ints).
    return {
        k: (
            [str(x) for x in v]
            if isinstance(v, list)
            else float(v)
            if not isinstance(v, bool) and isinstance(v, (int, float))
            else v
        )
        for k, v in params.items()
    }


def roundtrip(
    show: dict[str, Any], template: str | None, system: str | None, parameters: dict[str, Any]
) -> dict[str, Any]:
    """Compare /api/show with the Modelfile; {"ok", "mismatches": [...]} ."""
    mismatches = []
    if (show.get("template") or "") != (template or ""):
        mismatches.append("template")
    if (show.get("system") or "") != (system or ""):
        mismatches.append("system")
    try:
        shown = format_params(parse_show_parameters(show.get("parameters") or ""))
    except ModelfileError as exc:
        shown = {"<unparsable>": str(exc)}
    if _typed(shown) != _typed(parameters):
        missing = sorted(set(parameters) - set(shown))
        differ = sorted(
            k for k in set(parameters) & set(shown) if _typed({k: shown[k]}) != _typed({k: parameters[k]})
        )
        extra = sorted(set(shown) - set(parameters))
        detail = ", ".join(
            f"{label} {keys}"
            for label, keys in (("missing", missing), ("different", differ), ("extra", extra))
            if keys
        )
        mismatches.append(f"parameters ({detail})")
    return {"ok": not mismatches, "mismatches": mismatches}


def check_served_model(client: OllamaClient, name: str, cfg: BuildConfig, sample: dict[str, Any]) -> dict[str, Any]:
    """One deterministic chat turn with the sample's noisy line; returns the checks and the answer."""
    script = (
        LANG_SCRIPTS.get(str(sample.get("lang") or "")) or detect_script(sample["clean"]) or "Devanagari"
    )
    options = correction_options(cfg.seed, cfg.deploy.num_predict)
    start = time.perf_counter()
    reply = ask_correction(client, name, sample["noisy"], seed=cfg.seed, num_predict=cfg.deploy.num_predict,
                           timeout=cfg.deploy.timeout_s)
    seconds = time.perf_counter() - start
    answer = metrics.normalize_hyp((reply.get("message") or {}).get("content") or "")
    # The data stage's rule for "in the target script": foreign letters within data.max_foreign_fraction.
    foreign, native = foreign_fraction(answer, script)
    result: dict[str, Any] = {
        "endpoint": "/api/chat",
        "options": options,
        "source": sample["source"],
        "lang": sample.get("lang"),
        "script": script,
        "prompt": sample["noisy"],
        "reference": sample["clean"],
        "response": answer,
        "done_reason": reply.get("done_reason"),
        "eval_count": reply.get("eval_count"),
        "foreign_fraction": round(foreign, 4),
        "seconds": round(seconds, 3),
        "cer": round(metrics.cer(answer, sample["clean"]), 4),
        "max_cer": cfg.deploy.sanity_max_cer,
    }
    failures = []
    if not answer:
        failures.append("empty response")
    if reply.get("done_reason") != "stop":
        failures.append(
            f"done_reason {reply.get('done_reason')!r} (expected 'stop': no stop token within "
            f"num_predict={cfg.deploy.num_predict}; check TEMPLATE and stop parameters)"
        )
    if answer and (native == 0 or foreign > cfg.data.max_foreign_fraction):
        failures.append(
            f"answer is not in {script} ({native} {script} letters, {foreign:.0%} foreign; "
            f"data.max_foreign_fraction {cfg.data.max_foreign_fraction})"
        )
    if cfg.deploy.sanity_max_cer is not None and result["cer"] >= cfg.deploy.sanity_max_cer:
        failures.append(f"CER {result['cer']:.3f} >= deploy.sanity_max_cer {cfg.deploy.sanity_max_cer}")
    result["failures"] = failures
    result["ok"] = not failures
    return result


class ServeError(DeployError):
    """Copying a verified model over the served name did not leave it served; ``served`` is the
    digest the name holds now (None: no model of that name), as checked after the attempt."""

    def __init__(self, message: str, served: str | None, report: dict[str, Any] | None = None) -> None:
        super().__init__(message, report)
        self.served = served


def copy_over(client: OllamaClient, source: str, name: str, digest: str | None,
              previous: tuple[str, str | None] | None = None, warnings: list[str] | None = None) -> str | None:
    """Copy the verified `source` (manifest `digest`) over the served `name`: the one step that changes
    what is served (deploy, promote and rollback all end with it); returns the digest now served.

    Only the verified model may stay served. The model `name` holds now is kept first under a
    temporary `rescue_name` (unless the caller kept it already: ``previous`` = its name and digest,
    promote's prev-<stamp>); right before /api/copy `source` must still have `digest` (else nothing is
    copied); right after, `name` must have `digest`. A copy that answers an error is judged by the
    digests too (Ollama may answer 500 after writing the manifest: then it is done, and a warning is
    appended to ``warnings``). When `name` does not hold `digest`, the previous model is copied back
    (no model, when there was none) and proven, and ServeError says what is served."""
    full, host = full_name(name), client.host
    rescue = rescue_name(name) if previous is None and client.model_digest(name) is not None else None
    try:
        if rescue:
            kept, failed = copy_judged(client, name, rescue)
            if kept is None:
                raise ServeError(f"keeping the served '{full}' as '{rescue}' on {host} failed ({failed}): nothing "
                                 "was copied", client.model_digest(name))
            previous = (rescue, kept)
        now = client.model_digest(source)
        if now != digest:
            served = client.model_digest(name)
            raise ServeError(f"'{full_name(source)}' on {host} changed after it was verified (digest {now}, verified "
                             f"{digest}; another deploy or promote at once?): nothing was copied; '{full}' serves "
                             f"{served}", served)
        served, failed = copy_judged(client, source, name)
        if served == digest:
            if failed is not None and warnings is not None:
                warnings.append(f"{failed}; but '{full}' has the copied model's digest {digest}: the copy was applied")
            return served
        want = previous[1] if previous else None
        if failed is not None and served == want:
            raise ServeError(f"{failed}; '{full}' on {host} is left as it was ({served})", served)
        what = (f"after copying '{full_name(source)}' over '{full}' on {host} the name has digest {served}, not the "
                f"verified {digest} (changed by another deploy or promote at once?)")
        back = _put_back(client, name, previous)
        if back == want:
            raise ServeError(f"{what}; the previous model ({want or 'none: the name was removed'}) is served "
                             "again", back)
        raise ServeError(f"{what}; putting the previous model ({want}) back failed: '{full}' serves {back}, which "
                         "is NOT verified: run `invoke rollback` or deploy again", back)
    finally:
        if rescue:
            delete_quietly(client, rescue, warnings)


def copy_judged(client: OllamaClient, source: str, destination: str) -> tuple[str | None, OllamaError | None]:
    """/api/copy, judged by what it did: the destination's digest afterwards (None: no such model) and
    the error the copy answered, if any (a copy may answer an error after it was applied)."""
    failed: OllamaError | None = None
    try:
        client.copy(source, destination)
    except OllamaError as exc:
        failed = exc
    return client.model_digest(destination), failed


def _put_back(client: OllamaClient, name: str, previous: tuple[str, str | None] | None) -> str | None:
    """Copy the kept previous model back over `name` (or remove `name` when nothing was served);
    returns the digest `name` has afterwards (as checked; None when that check fails too)."""
    try:
        if previous and previous[1]:
            client.copy(previous[0], name)
        else:
            client.delete(name)
    except OllamaError:
        pass  # judged by the digest below
    try:
        return client.model_digest(name)
    except OllamaError:
        return None


def delete_quietly(client: OllamaClient, model: str, warnings: list[str] | None) -> None:
    """Delete a model that is tidied away (a candidate, a rescue copy, a pruned one), judged by whether it
    is gone afterwards (a 404 or a 500 after deleting is fine; a 200 that deleted nothing is not); one
    that is still there is a warning, never a failure of what was served."""
    error: OllamaError | str = "it is still listed after the delete"
    try:
        client.delete(model)
    except OllamaError as exc:
        error = exc
    try:
        if not client.exists(model):
            return
    except OllamaError as exc:
        error = f"{error}; and listing the models failed: {exc}"
    if warnings is not None:
        warnings.append(f"could not delete '{full_name(model)}': {error}")


def rescue_name(name: str) -> str:
    """Where the served model waits while it is replaced, to be put back if the copy is not the verified
    one: ``x[:tag]`` -> ``x-rescue-<random>[:tag]`` (never a kept ``prev-*`` tag; deleted afterwards)."""
    head, sep, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    return f"{head}-rescue-{secrets.token_hex(4)}{sep}{tag}"


def candidate_name(name: str) -> str:
    """Where a model is verified before it may replace ``name``: ``x[:tag]`` -> ``x-candidate[:tag]``."""
    head, sep, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    return f"{head}-candidate{sep}{tag}"


def run(cfg: BuildConfig, layout: RunLayout, name: str | None = None, host: str | None = None,
        replace: bool = False, use_cli: bool = False, **_: Any) -> dict[str, Any]:
    """The deploy stage (its runner's --force is the stage's; ``replace`` is deploy --force)."""
    return deploy(layout.root, cfg, name=name, host=host, force=replace, use_cli=use_cli)


def deploy(
    run_dir: str | Path,
    cfg: BuildConfig,
    name: str | None = None,
    host: str | None = None,
    force: bool = False,
    use_cli: bool = False,
    promote: bool = True,
    report_file: Path | str | None = "run",
) -> dict[str, Any]:
    """Create ``name`` (default deploy.name) on ``host`` through its candidate, and verify it.

    Host: ``host`` argument, else OLLAMA_HOST, else deploy.host (normalized like Ollama does).
    ``promote=False`` verifies the candidate and leaves it (and the live name) as they are.
    ``report_file``: where the report goes ("run": the run's deploy.json; None: only returned, as
    the promote stage does, which records it in promote.json).

    Raises DeployError / OllamaError / ModelfileError with one-line messages; each carries the
    report (also written to deploy.json) on ``.report``.
    """
    layout = RunLayout(Path(run_dir))
    target = layout.deploy_report if report_file == "run" else report_file
    name = name or cfg.deploy.name
    report: dict[str, Any] = {"name": full_name(name), "candidate": full_name(candidate_name(name)),
                              "status": "failed", "created": datetime.now(UTC).isoformat(timespec="seconds")}
    with recorded(report, target):
        _deploy(layout, cfg, name, host, force, use_cli, promote, report)
    return report


def _deploy(layout: RunLayout, cfg: BuildConfig, name: str, host: str | None, force: bool, use_cli: bool,
            promote: bool, report: dict[str, Any]) -> None:
    """The steps of `deploy` (module docstring), filling ``report`` as they go."""
    host_url = server_url(host, cfg.deploy.host)
    report["host"] = host_url
    modelfile_path = layout.modelfile
    if not modelfile_path.is_file():
        raise DeployError(f"{modelfile_path} not found; run `invoke modelfile` first")
    mf = parse_modelfile(modelfile_path.read_text(encoding="utf-8"))
    gguf = resolve_from(modelfile_path, mf.from_)
    if not gguf.is_file():
        raise DeployError(
            f"the Modelfile's FROM {mf.from_!r} does not exist in {layout.root}; run `invoke export`"
        )
    if mf.adapters:
        raise DeployError("ADAPTER lines are not supported: export merges the LoRA into the GGUF")
    parameters = mf.parameters
    candidate = candidate_name(name)

    client = OllamaClient(host_url, timeout=cfg.deploy.timeout_s)
    report["ollama_version"] = client.check_version()
    report["live_digest_before"] = client.model_digest(name)
    if promote and not force and report["live_digest_before"]:
        raise OllamaModelExistsError(
            f"model '{full_name(name)}' already exists on {host_url}; pass --force to replace it"
        )
    report["gguf_digest"] = gguf_digest = blob_digest(gguf)
    report["method"] = "cli" if use_cli else "api"
    report["modelfile_sha256"] = sha256_file(modelfile_path)
    if use_cli:
        cli_create(candidate, modelfile_path, host_url, timeout=max(cfg.deploy.timeout_s, 600.0))
    else:
        client.push_blob(gguf, gguf_digest)
        rel = gguf.relative_to(modelfile_path.parent.resolve()).as_posix()
        client.create(
            candidate,
            {rel: gguf_digest},
            template=mf.template,
            system=mf.system,
            parameters=parameters,
            messages=mf.messages or None,
            license=mf.license or None,
        )
    report["candidate_digest"] = client.model_digest(candidate)
    report["roundtrip"] = roundtrip(client.show(candidate), mf.template, mf.system, parameters)
    if report["roundtrip"]["ok"]:
        try:
            report["sanity"] = check_served_model(client, candidate, cfg, sanity_sample(layout))
        except OllamaError as exc:
            report["sanity"] = {"ok": False, "failures": [str(exc)]}
    else:
        report["sanity"] = {"ok": False, "failures": ["skipped: /api/show round-trip failed"]}
    kept = (f"'{report['name']}' on {host_url} is left as it was; the candidate '{report['candidate']}' "
            "is kept for inspection, flagged in deploy.json")
    if not report["roundtrip"]["ok"]:
        report["status"] = "flagged"
        raise DeployError(f"'{report['candidate']}' does not match the Modelfile after create "
                          f"({'; '.join(report['roundtrip']['mismatches'])}); {kept}")
    if not report["sanity"]["ok"]:
        report["status"] = "flagged"
        raise DeployError(f"sanity check failed for '{report['candidate']}': "
                          f"{'; '.join(report['sanity']['failures'])}; {kept}")
    if not promote:
        report["status"] = "candidate"
        report["digest"] = report["live_digest_before"]
        return
    warnings: list[str] = report.setdefault("warnings", [])
    try:
        report["digest"] = copy_over(client, candidate, name, report["candidate_digest"], warnings=warnings)
    except ServeError as exc:
        report["digest"] = exc.served
        raise
    delete_quietly(client, candidate, warnings)
    if not warnings:
        del report["warnings"]
    report["status"] = "ok"
