"""A noise model fitted to real OCR errors: fit it from pairs, sample synthetic errors from it, and
measure how close the samples come to held-out real errors.

Fitting (`fit(rows)`, `invoke noise-fit --pairs PAIRS --out MODEL.json`): each pair's OCR text is
aligned to its clean text at the grapheme level (`metrics.graphemes`, a Levenshtein alignment with
operations, rapidfuzz). Adjacent operations are grouped into events:

  sub    one clean grapheme read as another (क → फ, नो → नों)
  del    one clean grapheme lost (a line-final ।)
  ins    graphemes added where the clean text has none (a stray . or ')
  split  one clean grapheme read as two (a conjunct broken into parts)
  merge  two clean graphemes read as one
  joiner a ZWNJ/ZWJ emitted after a virama (context: word-final or medial). Tesseract's Tamil model
         adds a ZWNJ after nearly every word-final pulli; this is fitted as its own rate per context,
         independent of how damaged the line is, because it is systematic, not damage.

Per language the model keeps: how often each grapheme (with counts; rarer ones back off to their
class: space, punct, digit, letter, marked letter, conjunct) starts an event and which event; what it
became (sub/split/merge tables per grapheme, with a code-point confusion table as back-off for
graphemes never seen wrong); insertions per gap context (line start/end, next to a space, inside a
word); the joiner rates; and the distribution of per-line damage (events per clean grapheme of each
line; quantiles past 500 lines). Real OCR damage is very uneven: most lines have no error, a few
have many. Sampling draws a line's damage from that empirical distribution, so the fitted noise has
the real share of error-free lines and the real spread of line CERs, not one rate everywhere.

Sampling (`sample(model, text, lang, rng)`; `invoke noise --model MODEL.json`): a real line's events
per grapheme, times this line's length (stochastically rounded; at least one when that line had
any) gives the number of events; their sites are drawn without replacement, weighted by each
grapheme's fitted rate and each gap's insertion rate; each event and its output come from the
tables; then the joiner rule. Output is NFC.

Closeness (`compare(model, rows)`, `invoke noise-fit --report`): sample noise for held-out pairs'
clean lines and compare with their real OCR text: event-type shares, events per 100 graphemes,
corpus CER, share of error-free lines and the per-line CER histogram (total variation distance
between the two histograms). A reference noise function (the rule-based `noise.add_noise` at the
held-out CER) can be compared the same way.

The JSON is small and versioned: {"format": FORMAT, "version": VERSION, "langs": {lang: {...}}}.

Knobs: smoothing (pseudo-count towards the class rate), max_table (outputs kept per grapheme),
seed, holdout fraction of the report.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import regex
from rapidfuzz.distance import Levenshtein

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json, jsonl_lines
from bhasha_build.core.metrics import cer, corpus_cer, graphemes
from bhasha_build.core.text import JOINERS, LANG_SCRIPTS, VIRAMAS
from bhasha_build.stages.data import split_fraction

FORMAT = "bhasha-noise-model"
VERSION = 1
EVENTS = ("sub", "del", "ins", "split", "merge", "joiner")
QUANTILES = 500  # line_event_rates keeps at most this many quantiles of the per-line distribution
CER_BINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)  # histogram edges: [0], (0, .02], (.02, .05], ... (.4, inf)
_JOINER_AFTER_VIRAMA = regex.compile(f"(?<=[{VIRAMAS}])([{JOINERS}]+)(?P<next>.|$)", regex.S)
_LETTER = regex.compile(r"[\p{L}\p{M}]")


class NoiseModelError(BhashaError):
    """A bad pairs file or model file, phrased as one line naming it."""


# ---------------------------------------------------------------- alignment
def gclass(g: str) -> str:
    """The back-off class of a grapheme."""
    if g.isspace():
        return "space"
    cat = unicodedata.category(g[0])
    if cat[0] in "PS":
        return "punct"
    if cat == "Nd":
        return "digit"
    if len(g) == 1:
        return "letter"
    return "conjunct" if any(ch in VIRAMAS for ch in g[:-1]) else "marked"


def _gap_context(clean: Sequence[str], j: int) -> str:
    if j == 0:
        return "start"
    if j == len(clean):
        return "end"
    return "word" if clean[j - 1].isspace() or clean[j].isspace() else "mid"


def _virama_joiners(text: str) -> tuple[Counter[str], Counter[str]]:
    """(joiners after a virama, viramas) of `text`, per context key: "final" or "medial" (+ ":<joiner>")."""
    joined: Counter[str] = Counter()
    viramas: Counter[str] = Counter()
    for i, ch in enumerate(text):
        if ch in VIRAMAS:
            rest = text[i + 1:].lstrip(JOINERS)
            viramas["medial" if rest and _LETTER.match(rest[0]) else "final"] += 1
    for m in _JOINER_AFTER_VIRAMA.finditer(text):
        ctx = "medial" if m.group("next") and _LETTER.match(m.group("next")) else "final"
        joined[f"{ctx}:{m.group(1)[0]}"] += 1
    return joined, viramas


def strip_virama_joiners(text: str) -> str:
    return _JOINER_AFTER_VIRAMA.sub(lambda m: m.group("next"), text)


def split_joiners(ocr: str, clean: str) -> tuple[str, str, Counter[str], Counter[str]]:
    """(OCR and clean text without joiners after viramas, joiners the OCR emitted beyond the clean
    text's per context key "<final|medial>:<joiner>", the OCR's viramas per context: the exposure).
    The other events are aligned without those joiners; the joiners are a rule of their own."""
    ocr_joined, exposure = _virama_joiners(ocr)
    clean_joined, _ = _virama_joiners(clean)
    emitted = ocr_joined - clean_joined  # Counter subtraction keeps positive counts only
    return strip_virama_joiners(ocr), strip_virama_joiners(clean), emitted, exposure


def events(clean: str, ocr: str) -> list[tuple[str, int, str, str]]:
    """Grapheme-level edit events (kind, clean index, clean graphemes, OCR output); joiners excluded."""
    src, dst = graphemes(clean), graphemes(ocr)
    out: list[tuple[str, int, str, str]] = []
    blocks: list[list[int]] = []  # merged runs of non-equal opcodes: [s0, s1, d0, d1]
    for op in Levenshtein.opcodes(src, dst):
        if op.tag == "equal":
            continue
        if blocks and blocks[-1][1] == op.src_start and blocks[-1][3] == op.dest_start:
            blocks[-1][1], blocks[-1][3] = op.src_end, op.dest_end
        else:
            blocks.append([op.src_start, op.src_end, op.dest_start, op.dest_end])
    for s0, s1, d0, d1 in blocks:
        n, m = s1 - s0, d1 - d0
        if n == 0:
            out.append(("ins", s0, "", "".join(dst[d0:d1])))
            continue
        if m == 0:
            out.extend(("del", s0 + i, src[s0 + i], "") for i in range(n))
            continue
        # pair up as evenly as possible: each clean grapheme gets m // n (+1) outputs
        i = j = 0
        while i < n:
            take = m // n + (1 if i < m % n else 0)
            if take == 0:  # more clean than OCR graphemes: merge this one into the previous output
                _, idx, g, h = out.pop()
                out.append(("merge", idx, g + src[s0 + i], h))
            elif take == 1:
                out.append(("sub", s0 + i, src[s0 + i], dst[d0 + j]))
            else:
                out.append(("split", s0 + i, src[s0 + i], "".join(dst[d0 + j:d0 + j + take])))
            j += take
            i += 1
    # a "sub" to the same grapheme cannot happen; a merge of a pair needs two clean graphemes
    return out


# ---------------------------------------------------------------- fit
def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise NoiseModelError(f"{path}: pairs file not found")
    rows = []
    for no, line in enumerate(jsonl_lines(path.read_text(encoding="utf-8")), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"lang": str(row["lang"]), "noisy": str(row["noisy"]), "clean": str(row["clean"]),
                         "id": row.get("id")})
        except (ValueError, KeyError, TypeError):
            raise NoiseModelError(f"{path}:{no}: expected a JSON object with lang, noisy and clean") from None
    if not rows:
        raise NoiseModelError(f"{path}: no pairs")
    return rows


def _top(counter: Mapping[str, int], k: int) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k])


def fit(rows: Iterable[Mapping[str, Any]], smoothing: float = 20.0, max_table: int = 12) -> dict[str, Any]:
    """Fit one model per language of `rows` ({"lang", "noisy", "clean"})."""
    by_lang: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_lang[row["lang"]].append(row)
    return {"format": FORMAT, "version": VERSION, "smoothing": smoothing,
            "langs": {lang: _fit_lang(lang, lang_rows, smoothing, max_table)
                      for lang, lang_rows in sorted(by_lang.items())}}


def _fit_lang(lang: str, rows: Sequence[Mapping[str, Any]], smoothing: float, max_table: int) -> dict[str, Any]:
    exposure: Counter[str] = Counter()
    starts: Counter[str] = Counter()
    class_exposure: Counter[str] = Counter()
    class_ops: dict[str, Counter[str]] = defaultdict(Counter)
    tables: dict[str, dict[str, Counter[str]]] = {"sub": defaultdict(Counter), "split": defaultdict(Counter),
                                                  "merge": defaultdict(Counter)}
    char_sub: dict[str, Counter[str]] = defaultdict(Counter)
    ins_exposure: Counter[str] = Counter()
    ins: dict[str, Counter[str]] = defaultdict(Counter)
    joined: Counter[str] = Counter()
    joiner_exposure: Counter[str] = Counter()
    per_line: list[tuple[list[str], int]] = []
    kinds: Counter[str] = Counter()
    for row in rows:
        ocr, clean, emitted, exposed = split_joiners(unicodedata.normalize("NFC", row["noisy"]),
                                                     unicodedata.normalize("NFC", row["clean"]))
        joined.update(emitted)
        joiner_exposure.update(exposed)
        kinds["joiner"] += sum(emitted.values())
        src = graphemes(clean)
        exposure.update(src)
        class_exposure.update(gclass(g) for g in src)
        ins_exposure.update(_gap_context(src, j) for j in range(len(src) + 1))
        found = events(clean, ocr)
        for kind, idx, g, h in found:
            kinds[kind] += 1
            if kind == "ins":
                ins[_gap_context(src, idx)][h] += 1
                continue
            first = src[idx]
            starts[first] += 1
            class_ops[gclass(first)][kind] += 1
            if kind in tables:
                tables[kind][g][h] += 1
            if kind == "sub":
                for op in Levenshtein.opcodes(g, h):
                    if op.tag == "replace" and op.src_end - op.src_start == op.dest_end - op.dest_start:
                        for a, b in zip(g[op.src_start:op.src_end], h[op.dest_start:op.dest_end], strict=True):
                            char_sub[a][b] += 1
                    elif op.tag == "delete":
                        for a in g[op.src_start:op.src_end]:
                            char_sub[a][""] += 1
        per_line.append((src, len(found)))
    class_rate = {c: sum(class_ops[c].values()) / n for c, n in class_exposure.items() if n}
    model: dict[str, Any] = {
        "script": LANG_SCRIPTS.get(lang), "pairs": len(rows), "graphemes": sum(exposure.values()),
        "events": dict(sorted(kinds.items())),
        "classes": {c: {"exposure": class_exposure[c], "rate": round(class_rate[c], 6),
                        "ops": dict(sorted(class_ops[c].items()))} for c in sorted(class_exposure)},
        # graphemes seen at least once in an event: their own exposure and event count (others use the class)
        "graphemes_seen": {g: [exposure[g], starts[g]] for g in sorted(starts)},
        "sub": {g: _top(c, max_table) for g, c in sorted(tables["sub"].items())},
        "split": {g: _top(c, max_table) for g, c in sorted(tables["split"].items())},
        "merge": {g: _top(c, max_table) for g, c in sorted(tables["merge"].items())},
        "char_sub": {a: _top(c, max_table) for a, c in sorted(char_sub.items())},
        "ins": {ctx: {"exposure": ins_exposure[ctx], "events": sum(ins[ctx].values()),
                      "strings": _top(ins[ctx], max_table)} for ctx in sorted(ins_exposure)},
        "joiners": {key: [joiner_exposure[key.split(":")[0]], n] for key, n in sorted(joined.items())},
    }
    # per-line damage: events per clean grapheme, as an empirical distribution (quantiles past 500 lines)
    rates = sorted(round(events_n / len(src), 4) if src else 0.0 for src, events_n in per_line)
    if len(rates) > QUANTILES:
        rates = [rates[round(q * (len(rates) - 1) / (QUANTILES - 1))] for q in range(QUANTILES)]
    model["line_event_rates"] = rates
    return model


def grapheme_rate(model: Mapping[str, Any], g: str, smoothing: float) -> float:
    """Events starting at `g` per occurrence, shrunk towards its class's rate."""
    base = model["classes"].get(gclass(g), {}).get("rate", 0.0)
    seen = model["graphemes_seen"].get(g)
    if seen is None:
        return base
    n, e = seen
    return (e + smoothing * base) / (n + smoothing)


def _ins_rate(model: Mapping[str, Any], ctx: str) -> float:
    entry = model["ins"].get(ctx)
    return entry["events"] / entry["exposure"] if entry and entry["exposure"] else 0.0


# ---------------------------------------------------------------- sample
def _pick(table: Mapping[str, int], rng: random.Random) -> str:
    keys = list(table)
    return rng.choices(keys, [table[k] for k in keys])[0]


def _substitute(lang_model: Mapping[str, Any], g: str, rng: random.Random) -> str:
    if g in lang_model["sub"]:
        return _pick(lang_model["sub"][g], rng)
    options = [i for i, ch in enumerate(g) if ch in lang_model["char_sub"]]
    if options:  # back-off: a code-point confusion seen inside other graphemes
        i = rng.choice(options)
        return g[:i] + _pick(lang_model["char_sub"][g[i]], rng) + g[i + 1:]
    same_class = [h for k, t in lang_model["sub"].items() if gclass(k) == gclass(g) for h in t]
    return rng.choice(same_class) if same_class else g


def sample(model: Mapping[str, Any], text: str, lang: str, rng: random.Random) -> str:
    """`text` with errors drawn from the fitted model of `lang` (NFC output)."""
    try:
        m = model["langs"][lang]
    except KeyError:
        raise NoiseModelError(f"the noise model has no language {lang!r} "
                              f"(has: {', '.join(sorted(model['langs']))})") from None
    smoothing = model.get("smoothing", 20.0)
    src = graphemes(unicodedata.normalize("NFC", text))
    # how many events: a real line's events per grapheme (error-free lines included), stochastically
    # rounded over this line's length, at least one when that line had any
    per_grapheme = rng.choice(m["line_event_rates"]) if m["line_event_rates"] else 0.0
    expected = per_grapheme * len(src)
    count = int(expected) + (rng.random() < expected - int(expected))
    count = max(count, 1) if per_grapheme > 0 and src else count
    # where: graphemes (index i) and gaps before them (index -1 - j) weighted by their fitted rates
    sites = [(i, grapheme_rate(m, g, smoothing)) for i, g in enumerate(src)]
    sites += [(-1 - j, _ins_rate(m, _gap_context(src, j))) for j in range(len(src) + 1)]
    chosen: set[int] = set()
    for _ in range(count):
        left = [(site, w) for site, w in sites if site not in chosen and w > 0]
        if not left:
            break
        chosen.add(rng.choices([site for site, _ in left], [w for _, w in left])[0])
    out: list[str] = []
    i = 0
    while i <= len(src):
        if -1 - i in chosen:
            out.append(_pick(m["ins"][_gap_context(src, i)]["strings"], rng))
        if i == len(src):
            break
        g = src[i]
        if i not in chosen:
            out.append(g)
            i += 1
            continue
        kind = _pick(m["classes"].get(gclass(g), {}).get("ops") or {"sub": 1}, rng)
        if kind == "merge" and i + 1 < len(src):  # two graphemes read as one (back-off: a substitute of the first)
            pair = g + src[i + 1]
            out.append(_pick(m["merge"][pair], rng) if pair in m["merge"] else _substitute(m, g, rng))
            i += 2
            continue
        if kind == "split" and g in m["split"]:
            out.append(_pick(m["split"][g], rng))
        elif kind == "split":  # back-off: a substitution followed by an in-word insertion
            out.append(_substitute(m, g, rng) + _pick(m["ins"].get("mid", {}).get("strings") or {"": 1}, rng))
        elif kind != "del":
            out.append(_substitute(m, g, rng))
        i += 1
    return add_joiners(m, unicodedata.normalize("NFC", "".join(out)), rng)


def add_joiners(lang_model: Mapping[str, Any], text: str, rng: random.Random) -> str:
    """The joiner rule: after each virama, a ZWNJ/ZWJ with the fitted rate of its context."""
    rules: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for key, (exposure, n) in lang_model["joiners"].items():
        ctx, joiner = key.split(":")
        rules[ctx].append((joiner, n / exposure if exposure else 0.0))
    if not rules:
        return text
    out = []
    for i, ch in enumerate(text):
        out.append(ch)
        if ch in VIRAMAS and (i + 1 == len(text) or text[i + 1] not in JOINERS):
            ctx = "medial" if i + 1 < len(text) and _LETTER.match(text[i + 1]) else "final"
            for joiner, rate in rules.get(ctx, ()):
                if rng.random() < rate:
                    out.append(joiner)
                    break
    return "".join(out)


# ---------------------------------------------------------------- closeness
def profile(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Error profile of (noisy, clean) pairs: event shares, events/100 graphemes, CER distribution."""
    kinds: Counter[str] = Counter()
    n_graphemes = 0
    line_cers = []
    for noisy, clean in pairs:
        stripped, stripped_clean, emitted, _ = split_joiners(noisy, clean)
        kinds["joiner"] += sum(emitted.values())
        kinds.update(kind for kind, *_ in events(stripped_clean, stripped))
        n_graphemes += len(graphemes(clean))
        line_cers.append(cer(noisy, clean))
    total = sum(kinds.values())
    hist = Counter(_bin(c) for c in line_cers)
    labels = _bin_labels()
    return {
        "lines": len(pairs), "events": total,
        "events_per_100_graphemes": round(100 * total / n_graphemes, 3) if n_graphemes else 0.0,
        "event_share": {k: round(kinds[k] / total, 4) if total else 0.0 for k in EVENTS},
        "cer": round(corpus_cer([n for n, _ in pairs], [c for _, c in pairs]), 4),
        "error_free_lines": round(sum(1 for c in line_cers if c == 0) / len(line_cers), 4) if line_cers else 0.0,
        "line_cer_hist": {labels[b]: round(hist[b] / len(line_cers), 4) for b in range(len(labels))},
    }


def _bin(c: float) -> int:
    if c == 0:
        return 0
    for b, edge in enumerate(CER_BINS[1:], 1):
        if c <= edge:
            return b
    return len(CER_BINS)


def _bin_labels() -> list[str]:
    edges = CER_BINS
    return ["0", *[f"({edges[i - 1]}, {edges[i]}]" for i in range(1, len(edges))], f"> {edges[-1]}"]


def distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """Total variation distances between two profiles' event shares and line-CER histograms."""
    ev = 0.5 * sum(abs(a["event_share"][k] - b["event_share"][k]) for k in EVENTS)
    hist = 0.5 * sum(abs(a["line_cer_hist"][k] - b["line_cer_hist"][k]) for k in a["line_cer_hist"])
    return {"event_share_tv": round(ev, 4), "line_cer_hist_tv": round(hist, 4),
            "cer_diff": round(b["cer"] - a["cer"], 4),
            "error_free_diff": round(b["error_free_lines"] - a["error_free_lines"], 4)}


def compare(model: Mapping[str, Any], heldout: Sequence[Mapping[str, Any]], seed: int = 0,
            references: Mapping[str, Callable[[str, str, float, random.Random], str]] | None = None,
            draws: int = 5) -> dict[str, Any]:
    """Per language: the real held-out profile, the fitted model's profile on the same clean lines
    (and each reference noise function's, at the held-out CER), and their distances to the real one.
    Each clean line is noised `draws` times, so the synthetic side is close to its expectation."""
    by_lang: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in heldout:
        by_lang[row["lang"]].append(row)
    report: dict[str, Any] = {}
    for lang, rows in sorted(by_lang.items()):
        if lang not in model["langs"]:
            continue
        real = profile([(r["noisy"], r["clean"]) for r in rows])
        entry: dict[str, Any] = {"real": real}
        rate = min(1.0, real["cer"])
        systems = {"fitted": lambda text, lang_, rng: sample(model, text, lang_, rng)}
        for name, fn in (references or {}).items():
            systems[name] = lambda text, lang_, rng, fn=fn, rate=rate: fn(text, lang_, rate, rng)
        for name, fn in systems.items():
            prof = profile([(fn(r["clean"], lang, random.Random(f"{seed}\0{name}\0{d}\0{r['clean']}")), r["clean"])
                            for d in range(draws) for r in rows])
            entry[name] = {**prof, "distance_to_real": distance(real, prof)}
        report[lang] = entry
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """The comparison as a table: one line per language and system."""
    lines = [f"held out: {report['heldout']}",
             f"{'lang':4} {'system':10} {'lines':>5} {'CER':>6} {'error-free':>10} {'ev/100g':>7}  "
             + " ".join(f"{k:>6}" for k in EVENTS) + "  TV(events) TV(line CER)"]
    for lang, entry in report["langs"].items():
        for system, prof in entry.items():
            dist = prof.get("distance_to_real")
            tail = f"  {dist['event_share_tv']:10.3f} {dist['line_cer_hist_tv']:12.3f}" if dist else ""
            lines.append(f"{lang:4} {system:10} {prof['lines']:5d} {prof['cer']:6.3f} {prof['error_free_lines']:10.2f} "
                         f"{prof['events_per_100_graphemes']:7.2f}  "
                         + " ".join(f"{prof['event_share'][k]:6.3f}" for k in EVENTS) + tail)
    return "\n".join(lines)


def holdout_split(rows: Sequence[Mapping[str, Any]], fraction: float, seed: int = 0
                  ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(fit rows, held-out rows) by sha256 of the clean text (the data stage's rule)."""
    fit_rows, held = [], []
    for row in rows:
        (held if split_fraction(row["clean"], seed) < fraction else fit_rows).append(row)
    return fit_rows, held


# ---------------------------------------------------------------- files
def fit_file(pairs: str | Path, out: str | Path, heldout: str | Path | None = None, holdout: float = 0.2,
             report: bool = False, seed: int = 0,
             references: Mapping[str, Callable[[str, str, float, random.Random], str]] | None = None
             ) -> dict[str, Any]:
    """Fit on all of `pairs`, write the model; with `report`, also measure closeness on `heldout` pairs
    (or, without them, on a `holdout` share of `pairs` that a second model is fitted without)."""
    rows = read_pairs(pairs)
    model = fit(rows)
    model["source"] = {"pairs": str(pairs), "rows": len(rows)}
    atomic_write_json(out, model)
    result: dict[str, Any] = {"out": str(out), "langs": {lang: {"pairs": m["pairs"], "events": m["events"]}
                                                          for lang, m in model["langs"].items()}}
    if report:
        if heldout is not None:
            held, fitted, how = read_pairs(heldout), model, f"held-out pairs {heldout}"
        else:
            fit_rows, held = holdout_split(rows, holdout, seed)
            fitted, how = fit(fit_rows), f"{holdout:.0%} of {pairs} held out by sha256(clean), model fitted on the rest"
        result["report"] = {"heldout": how, "langs": compare(fitted, held, seed, references)}
    return result


def load_model(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NoiseModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError:
        raise NoiseModelError(f"{path}: not JSON") from None
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        raise NoiseModelError(f"{path}: not a {FORMAT} file")
    if model.get("version") != VERSION:
        raise NoiseModelError(f"{path}: noise model version {model.get('version')}, this code reads {VERSION}")
    return model
