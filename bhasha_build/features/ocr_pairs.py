"""Real OCR pairs: render clean lines with real fonts, degrade the images (seeded), read them back
with Tesseract 5. The OCR output is the noisy side; every row says how it was made.

Rendering is Pillow with the RAQM layout engine (libraqm: HarfBuzz shaping + FriBiDi), which Indic
scripts need: without shaping, matras and conjuncts are drawn in logical order and even clean
renders OCR badly (measured on 30 data/clean lines, Noto Sans, size 32: grapheme CER hi 0.16, bn 0.42,
ta 0.18 unshaped; 0.001-0.002 shaped, after the auto ZWJ policy). So a Pillow without RAQM is refused.

Per line (seeded from seed, lang and the text, so a line's image never depends on the lines around
it and cached results stay valid): a font from the font set, a size, then the degradations of the
preset, each applied with its probability and a sampled strength. The presets use DISJOINT kinds of
damage, so a model trained on `train` pairs can be tested on `heldout` pairs it has never seen:

  clean    size 32, nothing else (the "is shaping right?" check: CER ~0.01 except Tamil's ZWNJ)
  train    size 18-36; blur, resample (down then up: nearest/bilinear/bicubic), skew, specks, JPEG
  heldout  size 18-40; paper/ink tone, baseline wave (curled page), ink bleed (thickened strokes),
           lowres (box/lanczos down only), grain (Gaussian pixel noise), threshold (binarization)

Font sets (`--fonts`): `train`, `heldout` (disjoint families), `all`, or comma-separated font names
of FONTS or paths to .ttf/.otf files. Fonts come from Debian packages (fonts-noto-core,
fonts-lohit-*, fonts-samyak-*, fonts-beng-extra), looked up in the system font folders.

Tesseract runs as a CLI subprocess (argument lists), one process per chunk of lines over a list
file (`--psm 7`: one text line per image; OMP_THREAD_LIMIT=1), chunks spread over `workers`
processes. Each row records its font, the sampled degradation parameters, the Tesseract version and
the traineddata's Debian version (its sha256 is in the summary). A chunk whose Tesseract is killed by a signal
(5.3.0 dies of SIGFPE on some damaged images) is read again image by image; an image that still kills it is
counted (`ocr_failed`, `failed_rows`) and read as nothing. Lines Tesseract reads as empty are counted
(with their ids) in the summary, which is written beside the pairs (`<out stem>.summary.json`); they are
not written as pairs (training: an empty input teaches nothing), except with `keep_empty` (held-out sets:
every input line is a row, an empty read is the noisy "" with its clean truth, and every system is scored on it).

Cache: results are kept per line under BHASHA_OCR_CACHE (default ~/.cache/bhasha-build/ocr-pairs),
in one file per (lang, fonts and their sha256, preset, seed, psm, Tesseract + traineddata, RENDER
version), keyed by the sha256 of the clean line; a rerun only renders and reads the new lines.

Knobs: lang, fonts, degrade (preset), seed, workers, psm, chunk; env BHASHA_OCR_CACHE, BHASHA_FONT_DIRS
(extra font folders, ':'-separated).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from bhasha_build.core.errors import BhashaError
from bhasha_build.core.fsutil import atomic_write_json, atomic_write_jsonl, jsonl_lines, sha256_file
from bhasha_build.core.metrics import corpus_cer
from bhasha_build.core.text import LANG_SCRIPTS

RENDER_VERSION = 1  # bump when rendering or a preset changes: it is part of the cache key
TESS_LANGS = {"hi": "hin", "mr": "mar", "ne": "nep", "sa": "san", "bn": "ben", "as": "asm", "ta": "tam"}
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"))

# script -> {font set -> [font file names]}; the Debian package of each is in FONT_PACKAGES.
FONTS: dict[str, dict[str, list[str]]] = {
    "Devanagari": {
        "train": ["NotoSansDevanagari-Regular.ttf", "NotoSansDevanagari-Bold.ttf", "Lohit-Devanagari.ttf"],
        "heldout": ["NotoSerifDevanagari-Regular.ttf", "Samyak-Devanagari.ttf"],
    },
    "Bengali": {
        "train": ["NotoSansBengali-Regular.ttf", "NotoSansBengali-Bold.ttf", "Lohit-Bengali.ttf"],
        "heldout": ["NotoSerifBengali-Regular.ttf", "Mukti.ttf"],
    },
    "Tamil": {
        "train": ["NotoSansTamil-Regular.ttf", "NotoSansTamil-Bold.ttf", "Lohit-Tamil.ttf"],
        "heldout": ["NotoSerifTamil-Regular.ttf", "Samyak-Tamil.ttf"],
    },
}
FONT_PACKAGES = {"Noto": "fonts-noto-core", "Lohit-Devanagari": "fonts-lohit-deva",
                 "Lohit-Bengali": "fonts-lohit-beng-bengali", "Lohit-Tamil": "fonts-lohit-taml",
                 "Samyak": "fonts-samyak-deva / fonts-samyak-taml", "Mukti": "fonts-beng-extra"}


class OcrError(BhashaError):
    """A missing tool, font or language, or a bad input: one line naming it."""


# ---------------------------------------------------------------- degradations
# A preset: size range, then for each kind (applied in render's fixed order) the probability it is
# applied and how its parameter is drawn: ("uniform", lo, hi, decimals), ("int", lo, hi), ("choice", [...]),
# or a list of those (a composite parameter). Plain data, so a preset is recorded in the summary and is
# part of the cache key; the parameters are recorded per row exactly as applied.
PRESETS: dict[str, dict[str, Any]] = {
    "clean": {"size": [32, 32], "kinds": {}},
    "train": {"size": [18, 36], "kinds": {
        "skew": [0.5, ("uniform", -1.5, 1.5, 2)],                               # degrees
        "blur": [0.5, ("uniform", 0.4, 1.6, 2)],                                # Gaussian radius, px
        "resample": [0.7, [("uniform", 0.35, 0.8, 2), ("choice", ["nearest", "bilinear", "bicubic"])]],  # down, up
        "specks": [0.4, ("uniform", 0.001, 0.006, 4)],                          # share of pixels darkened
        "jpeg": [0.5, ("int", 15, 75)],                                         # quality
    }},
    "heldout": {"size": [18, 40], "kinds": {
        "paper": [0.6, [("int", 190, 240), ("int", 10, 70)]],                   # background, ink tone
        "wave": [0.5, [("uniform", 0.5, 2.5, 2), ("int", 120, 400)]],          # amplitude, period (px)
        "ink": [0.3, ("choice", ["bleed"])],                                    # 3x3 min filter: thick strokes
        "lowres": [0.7, [("uniform", 0.4, 0.75, 2), ("choice", ["box", "lanczos"])]],  # scale down only
        "grain": [0.5, ("uniform", 6, 28, 1)],                                  # Gaussian pixel noise sigma
        "threshold": [0.5, ("int", 110, 170)],                                  # binarize at this level
    }},
}


def _draw(spec: Any, rng: random.Random) -> Any:
    if isinstance(spec, list):
        return [_draw(part, rng) for part in spec]
    kind, *args = spec
    if kind == "uniform":
        return round(rng.uniform(args[0], args[1]), args[2])
    if kind == "int":
        return rng.randint(args[0], args[1])
    return rng.choice(args[0])


def sample_degradation(preset: str, rng: random.Random) -> dict[str, Any]:
    spec = PRESETS[preset]
    params: dict[str, Any] = {"size": rng.randint(*spec["size"])}
    for kind, (prob, draw) in spec["kinds"].items():
        if rng.random() < prob:
            params[kind] = _draw(draw, rng)
    return params


_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS}


@cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.RAQM)


def render(text: str, lang: str, font_path: str, params: dict[str, Any], rng: random.Random) -> Image.Image:
    """A grayscale (mode "L") image of one line, shaped by RAQM, degraded by `params` (see PRESETS)."""
    size = params["size"]
    font = _font(font_path, size)
    bg, ink = params.get("paper", (255, 0))
    x0, y0, x1, y1 = font.getbbox(text, language=lang)
    pad = max(8, size // 2)
    img = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), bg)
    ImageDraw.Draw(img).text((pad - x0, pad - y0), text, font=font, fill=ink, language=lang)
    if "skew" in params:
        img = img.rotate(params["skew"], resample=Image.Resampling.BICUBIC, expand=True, fillcolor=bg)
    if "wave" in params:
        img = _wave(img, *params["wave"], bg)
    if "ink" in params:  # dark text on light paper: a min filter thickens the strokes (ink bleed)
        img = img.filter(ImageFilter.MinFilter(3))
    if "blur" in params:
        img = img.filter(ImageFilter.GaussianBlur(params["blur"]))
    if "resample" in params:
        scale, name = params["resample"]
        img = _scaled(img, scale, name).resize(img.size, _FILTERS[name])
    if "lowres" in params:
        img = _scaled(img, *params["lowres"])
    if "grain" in params:  # effect_noise is centred on 128
        img = ImageChops.add(img, Image.effect_noise(img.size, params["grain"]), offset=-128)
    if "specks" in params:
        img = _specks(img, params["specks"], rng)
    if "threshold" in params:
        level = params["threshold"]
        img = img.point(lambda v: 255 if v > level else 0)
    if "jpeg" in params:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=params["jpeg"])
        img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    return img


def _scaled(img: Image.Image, scale: float, name: str) -> Image.Image:
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), _FILTERS[name])


def _wave(img: Image.Image, amp: float, period: int, bg: int) -> Image.Image:
    """Shift 2-px column strips vertically by amp*(1+sin(2*pi*x/period)): a curled page's baseline."""
    out = Image.new("L", (img.width, img.height + 2 * math.ceil(amp)), bg)
    for x in range(0, img.width, 2):
        dy = round(amp + amp * math.sin(2 * math.pi * x / period))
        out.paste(img.crop((x, 0, min(x + 2, img.width), img.height)), (x, dy))
    return out


def _specks(img: Image.Image, density: float, rng: random.Random) -> Image.Image:
    px = img.load()
    w, h = img.size
    for _ in range(int(w * h * density)):
        x, y = rng.randrange(w), rng.randrange(h)
        px[x, y] = rng.randint(0, 80)
        if rng.random() < 0.3 and x + 1 < w:
            px[x + 1, y] = px[x, y]
    return img


# ---------------------------------------------------------------- tools and fonts
def check_raqm() -> None:
    from PIL import features

    if not features.check("raqm"):
        raise OcrError("Pillow has no RAQM layout (libraqm + libfribidi): Indic text would render unshaped and OCR "
                       "at ~0.3 CER; install libfribidi0 (Debian) or a Pillow built with raqm")


def font_dirs() -> list[Path]:
    extra = [d for d in os.environ.get("BHASHA_FONT_DIRS", "").split(":") if d]
    return [Path(d) for d in (*extra, *FONT_DIRS) if Path(d).is_dir()]


@cache
def _installed_fonts() -> dict[str, str]:
    found: dict[str, str] = {}
    for folder in font_dirs():
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in (".ttf", ".otf"):
                found.setdefault(path.name, str(path))
    return found


def resolve_fonts(spec: str, lang: str) -> list[tuple[str, str]]:
    """(name, path) of each font of `spec`: a set name (train, heldout, all) or comma-separated names/paths."""
    script = LANG_SCRIPTS.get(lang)
    if script not in FONTS:
        raise OcrError(f"no fonts configured for language {lang!r} (have: {', '.join(sorted(TESS_LANGS))})")
    sets = FONTS[script]
    if spec == "all":
        names = [n for group in sets.values() for n in group]
    elif spec in sets:
        names = list(sets[spec])
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    out = []
    for name in names:
        if os.sep in name and Path(name).is_file():
            out.append((Path(name).stem, name))
            continue
        path = _installed_fonts().get(name) or _installed_fonts().get(f"{name}.ttf")
        if path is None:
            package = next((pkg for prefix, pkg in FONT_PACKAGES.items() if name.startswith(prefix)), "a font package")
            raise OcrError(f"font {name} not found in {', '.join(map(str, font_dirs())) or 'any font folder'} "
                           f"(apt-get install {package})")
        out.append((Path(name).stem, path))
    if not out:
        raise OcrError(f"--fonts {spec!r}: no fonts (give a set: {', '.join([*sets, 'all'])}, or names/paths)")
    return out


def _tesseract() -> str:
    exe = shutil.which("tesseract")
    if exe is None:
        raise OcrError("tesseract not found on PATH (apt-get install tesseract-ocr tesseract-ocr-hin "
                       "tesseract-ocr-ben tesseract-ocr-tam)")
    return exe


@cache
def engine_info(tess_lang: str) -> dict[str, Any]:
    """Tesseract's version, and the traineddata's path, Debian version and sha256 (what a pair depends on)."""
    exe = _tesseract()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    first = (version.stdout or version.stderr).strip().splitlines()[0]
    listing = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, check=False)
    lines = listing.stdout.strip().splitlines()
    if tess_lang not in lines[1:]:
        raise OcrError(f"tesseract has no '{tess_lang}' model (apt-get install tesseract-ocr-{tess_lang}); "
                       f"it has: {', '.join(lines[1:]) or 'none'}")
    tessdata = Path(lines[0].split('"')[1]) if '"' in lines[0] else None
    data = tessdata / f"{tess_lang}.traineddata" if tessdata else None
    package = None
    if shutil.which("dpkg-query"):
        got = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", f"tesseract-ocr-{tess_lang}"],
                             capture_output=True, text=True, check=False)
        package = got.stdout.strip() if got.returncode == 0 else None
    return {"tesseract": first, "traineddata": tess_lang, "traineddata_package": package,
            "traineddata_sha256": sha256_file(data) if data and data.is_file() else None}


# ---------------------------------------------------------------- work
def engine_tag(engine: dict[str, Any]) -> dict[str, str]:
    """What each pair records of the engine (engine_info's): Tesseract's version, the traineddata and its
    Debian version."""
    return {"engine": engine["tesseract"], "traineddata": f"{engine['traineddata']} {engine['traineddata_package']}"}


def _line_plan(text: str, lang: str, seed: int, fonts: Sequence[tuple[str, str]], preset: str
               ) -> tuple[tuple[str, str], dict[str, Any], random.Random]:
    rng = random.Random(f"{seed}\0{lang}\0{text}")  # str seeds hash with sha512: stable across runs
    font = rng.choice(list(fonts))
    return font, sample_degradation(preset, rng), rng


def ocr_chunk(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Render, degrade and read one chunk of lines (one Tesseract process); runs in a worker."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bhasha-ocr-") as tmp:
        paths = []
        for i, text in enumerate(job["texts"]):
            font, params, rng = _line_plan(text, job["lang"], job["seed"], job["fonts"], job["preset"])
            img = render(text, job["lang"], font[1], params, rng)
            path = Path(tmp) / f"{i:04d}.png"
            img.save(path, dpi=(300, 300))
            paths.append(str(path))
            results.append({"font": font[0], "degrade": {"preset": job["preset"], **params}})
        listing = Path(tmp) / "images.txt"
        listing.write_text("\n".join(paths) + "\n", encoding="utf-8")
        done = _tesseract_run(job, str(listing))
        if done.returncode < 0:  # killed by a signal (Tesseract 5.3.0 dies of SIGFPE on some damaged images):
            for result, path in zip(results, paths, strict=True):  # read the chunk's images one by one
                one = _tesseract_run(job, path)
                if one.returncode != 0:
                    result["noisy"], result["ocr_error"] = None, _exit_reason(one)
                else:
                    result["noisy"] = _page_text(one.stdout.decode("utf-8").split("\f")[0])
            return results
    if done.returncode != 0:
        raise OcrError(_exit_reason(done))
    pages = done.stdout.decode("utf-8").split("\f")  # the text renderer separates pages with a form feed
    if len(pages) != len(paths):
        raise OcrError(f"tesseract returned {len(pages)} pages for {len(paths)} images")
    for result, page in zip(results, pages, strict=True):
        result["noisy"] = _page_text(page)
    return results


def _tesseract_run(job: dict[str, Any], image_or_listing: str) -> subprocess.CompletedProcess[bytes]:
    argv = [job["tesseract"], image_or_listing, "stdout", "-l", job["tess_lang"], "--psm", str(job["psm"]),
            "--dpi", "300"]
    return subprocess.run(argv, capture_output=True, check=False, env={**os.environ, "OMP_THREAD_LIMIT": "1"})


def _exit_reason(done: subprocess.CompletedProcess[bytes]) -> str:
    err = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"tesseract exited {done.returncode}: {err[-1] if err else 'no message'}"


def _page_text(page: str) -> str:
    return unicodedata.normalize("NFC", " ".join(page.split("\n")).strip())


def _cache_file(lang: str, fonts: Sequence[tuple[str, str]], preset: str, seed: int, psm: int,
                engine: dict[str, Any]) -> Path:
    key = json.dumps({"lang": lang, "fonts": [(n, sha256_file(p)) for n, p in fonts], "preset": preset, "seed": seed,
                      "spec": PRESETS[preset], "psm": psm, "engine": engine, "render": RENDER_VERSION}, sort_keys=True)
    root = Path(os.environ.get("BHASHA_OCR_CACHE", Path.home() / ".cache" / "bhasha-build" / "ocr-pairs"))
    return root / f"{lang}-{preset}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.jsonl"


def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in jsonl_lines(path.read_text(encoding="utf-8")):
            try:
                row = json.loads(line)
                out[row["h"]] = row["r"]
            except (ValueError, KeyError, TypeError):
                continue  # a damaged cache line is only a miss
    return out


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def summary_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.summary.json")


def ocr_pairs(input: str | Path, out: str | Path, lang: str, fonts: str = "train", degrade: str = "train",
              seed: int = 0, workers: int | None = None, psm: int = 7, chunk: int = 16,
              progress: bool = True, keep_empty: bool = False) -> dict[str, Any]:
    """Clean lines (.txt one per line, or .jsonl with clean[/id]) of `lang` → real-OCR pairs jsonl + summary.
    keep_empty: lines Tesseract reads as empty are rows too (noisy ""), still listed in the summary's empty_rows."""
    from bhasha_build.features.noise import read_clean

    src, dst = Path(input), Path(out)
    if lang not in TESS_LANGS:
        raise OcrError(f"no Tesseract model mapped for language {lang!r} (have: {', '.join(sorted(TESS_LANGS))})")
    if degrade not in PRESETS:
        raise OcrError(f"--degrade {degrade!r}: not a preset (have: {', '.join(PRESETS)})")
    if not src.is_file():
        raise OcrError(f"{src}: input not found")
    check_raqm()
    font_list = resolve_fonts(fonts, lang)
    tess_lang = TESS_LANGS[lang]
    engine = engine_info(tess_lang)
    read = read_clean(src, lang)
    rows = [(no, clean, row_id) for no, row_lang, clean, row_id in read if row_lang == lang]
    cleans = [unicodedata.normalize("NFC", clean) for _, clean, _ in rows]
    cache_path = _cache_file(lang, font_list, degrade, seed, psm, engine)
    cached = _load_cache(cache_path)
    todo = sorted({c for c in cleans if _hash(c) not in cached})
    start = time.monotonic()
    workers = max(1, workers or len(os.sched_getaffinity(0)))
    chunk = max(1, min(chunk, math.ceil(len(todo) / workers)))  # a small input still spreads over the workers
    jobs = [{"texts": todo[i:i + chunk], "lang": lang, "seed": seed, "fonts": font_list, "preset": degrade,
             "tesseract": _tesseract(), "tess_lang": tess_lang, "psm": psm} for i in range(0, len(todo), chunk)]
    workers = min(workers, len(jobs) or 1)
    done = 0
    fresh: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool:
        for job, results in zip(jobs, pool.map(ocr_chunk, jobs), strict=True):
            for text, result in zip(job["texts"], results, strict=True):
                fresh[_hash(text)] = result
            done += len(job["texts"])
            if progress:
                rate = done / max(time.monotonic() - start, 1e-9)
                print(f"ocr-pairs {lang}: {done}/{len(todo)} lines ({rate:.1f}/s)", file=sys.stderr, flush=True)
    seconds = time.monotonic() - start
    if fresh:
        merged = {**cached, **fresh}
        atomic_write_jsonl(cache_path, ({"h": h, "r": r} for h, r in sorted(merged.items())))
        cached = merged
    tag = engine_tag(engine)
    pairs, empty, failed = [], [], []
    for (no, _, row_id), clean in zip(rows, cleans, strict=True):
        result = cached[_hash(clean)]
        row_id = row_id or f"{lang}-ocr-{no:05d}"
        ocr = {"font": result["font"], "degrade": result["degrade"], **tag}
        made = {"id": row_id, "font": result["font"], "degrade": result["degrade"]}
        if result.get("ocr_error"):  # Tesseract crashed on this image alone: counted, read as nothing
            failed.append({**made, "error": result["ocr_error"]})
        elif not result["noisy"]:
            empty.append(made)
        if result["noisy"] or keep_empty:
            pairs.append({"id": row_id, "lang": lang, "noisy": result["noisy"] or "", "clean": clean, "ocr": ocr})
    atomic_write_jsonl(dst, pairs)
    summary = {
        "input": str(src), "out": str(dst), "lang": lang, "lines": len(rows), "other_lang_lines": len(read) - len(rows),
        "pairs": len(pairs),
        "empty_ocr": len(empty), "empty_rows": empty, "kept_empty": keep_empty,
        "ocr_failed": len(failed), "failed_rows": failed,
        "identity_rows": sum(1 for r in pairs if r["noisy"] == r["clean"]),
        "cer": round(corpus_cer([r["noisy"] for r in pairs], [r["clean"] for r in pairs]), 4) if pairs else None,
        "fonts": {name: path for name, path in font_list}, "degrade": degrade,
        "preset": PRESETS[degrade],
        "seed": seed, "psm": psm, "engine": engine, "render_version": RENDER_VERSION,
        "pillow": _pillow_versions(),
        "cached_lines": len(set(cleans)) - len(todo), "ocr_lines": len(todo), "workers": workers,
        "seconds": round(seconds, 1), "lines_per_s": round(len(todo) / seconds, 1) if todo and seconds else None,
        "cache": str(cache_path),
    }
    atomic_write_json(summary_path(dst), summary)
    return summary


def _pillow_versions() -> dict[str, str | None]:
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "raqm": features.version("raqm"), "harfbuzz": features.version("harfbuzz"),
            "fribidi": features.version("fribidi")}


class _Inline:
    """A one-worker stand-in for ProcessPoolExecutor (no process start-up for small inputs)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Any:
        return map(fn, items)
