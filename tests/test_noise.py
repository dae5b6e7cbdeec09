"""Synthetic OCR noise: every error family works, rate calibration, determinism, file I/O."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest

from bhasha_build.core.metrics import corpus_cer
from bhasha_build.features import noise
from bhasha_build.features.noise import NoiseError, add_noise, model_for, noise_file

CLEAN_DIR = Path(__file__).resolve().parent.parent / "data" / "clean"


def clean_lines(lang: str) -> list[str]:
    return (CLEAN_DIR / f"{lang}.txt").read_text(encoding="utf-8").splitlines()


def apply_named(lang: str, name: str, text: str, seed: int = 0) -> set[str]:
    """All outcomes of one named operation on ``text`` over a few seeds."""
    op = next(o for o in model_for(lang) if o.name == name)
    outs = set()
    for s in range(seed, seed + 30):
        out = noise._apply(text, op, random.Random(s))
        assert out is not None, f"{name} did not apply to {text!r}"
        outs.add(out)
    return outs


@pytest.mark.parametrize(
    ("lang", "name", "text", "expected"),
    [
        ("hi", "virama_loss", "क्षमा", {"कषमा"}),
        ("hi", "virama_extra", "कमल", {"क्मल", "कम्ल"}),
        ("hi", "anusvara_loss", "हिंदी", {"हिदी"}),
        ("hi", "chandrabindu_loss", "माँ", {"मा", "मां"}),
        ("hi", "nukta_loss", unicodedata.normalize("NFC", "सड़क"), {"सडक"}),
        ("hi", "matra_confusion", "है", {"हे"}),
        ("hi", "matra_confusion", "दिन", {"दीन"}),
        ("hi", "matra_confusion", "को", {"कौ", "काे"}),  # ो split into its parts
        ("hi", "lookalike", "वन", {"बन"}),
        ("hi", "lookalike", "खत", {"रवत"}),
        ("hi", "lookalike", "घर", {"धर"}),
        ("hi", "danda", "है।", {"है|", "है।।", "हैl"}),
        ("sa", "danda", "कदाचन॥", {"कदाचन।।", "कदाचन||", "कदाचन।"}),
        ("sa", "avagraha", "सोऽहम्", {"सो५हम्"}),
        ("hi", "digits", "४", {"4"}),
        ("hi", "digits", "4", {"४"}),
        ("hi", "space_drop", "अब घर", {"अबघर"}),
        ("hi", "space_double", "अब घर", {"अब  घर"}),
        ("bn", "virama_loss", "ক্ষমা", {"কষমা"}),
        ("bn", "lookalike", "থ", {"য"}),
        ("bn", "lookalike", "ব", {"ষ", "র"}),
        ("bn", "matra_confusion", "কে", {"কৈ"}),
        ("bn", "o_split", "কো", {"েকা"}),
        ("bn", "chandrabindu_loss", "চাঁদ", {"চাদ", "চাংদ"}),
        ("bn", "digits", "১", {"1"}),
        ("as", "lookalike", "ৰ", {"ব"}),
        ("ta", "pulli_loss", "தமிழ்", {"தமிழ"}),
        ("ta", "matra_confusion", "கெ", {"கே"}),
        ("ta", "lookalike", "ன", {"ண"}),
        ("ta", "o_split", "கொ", {"ெகா"}),
    ],
)
def test_error_family(lang: str, name: str, text: str, expected: set[str]) -> None:
    assert apply_named(lang, name, text) == expected


@pytest.mark.parametrize("lang", ["hi", "bn", "ta"])
@pytest.mark.parametrize("rate", [0.05, 0.15])
def test_measured_cer_near_rate(lang: str, rate: float) -> None:
    lines = clean_lines(lang) * 3  # ~300 lines
    rng = random.Random(7)
    noisy = [add_noise(line, lang, rate, rng) for line in lines]
    measured = corpus_cer(noisy, lines)
    assert rate * 0.75 <= measured <= rate * 1.25, (lang, rate, measured)


def test_rate_zero_and_bounds() -> None:
    line = clean_lines("hi")[0]
    assert add_noise(line, "hi", 0.0, random.Random(1)) == line
    with pytest.raises(NoiseError):
        add_noise(line, "hi", 1.5, random.Random(1))
    with pytest.raises(NoiseError, match="no noise model"):
        add_noise(line, "xx", 0.1, random.Random(1))


def test_deterministic_for_seed() -> None:
    lines = clean_lines("bn")[:40]
    a = [add_noise(t, "bn", 0.1, random.Random(f"s{i}")) for i, t in enumerate(lines)]
    b = [add_noise(t, "bn", 0.1, random.Random(f"s{i}")) for i, t in enumerate(lines)]
    c = [add_noise(t, "bn", 0.1, random.Random(f"t{i}")) for i, t in enumerate(lines)]
    assert a == b
    assert a != c


def test_output_is_nfc() -> None:
    for lang in ("hi", "bn", "ta"):
        rng = random.Random(3)
        for line in clean_lines(lang)[:50]:
            out = add_noise(line, lang, 0.2, rng)
            assert out == unicodedata.normalize("NFC", out)


def test_noise_file_txt_and_jsonl(tmp_path: Path) -> None:
    txt = tmp_path / "clean.txt"
    txt.write_text("\n".join(clean_lines("ta")[:30]) + "\n\n", encoding="utf-8")
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    stats = noise_file(txt, out1, lang="ta", rate=0.1, seed=5)
    noise_file(txt, out2, lang="ta", rate=0.1, seed=5)
    assert out1.read_bytes() == out2.read_bytes()
    rows = [json.loads(line) for line in out1.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == stats["rows"] == 30
    assert {r["lang"] for r in rows} == {"ta"}
    assert set(rows[0]) == {"id", "lang", "noisy", "clean"}
    assert 0.0 < stats["measured_cer"] < 0.3

    jl = tmp_path / "clean.jsonl"
    jl.write_text(
        "\n".join(
            json.dumps({"clean": t, "lang": "hi", "id": f"x{i}"}, ensure_ascii=False)
            for i, t in enumerate(clean_lines("hi")[:10])
        ),
        encoding="utf-8",
    )
    stats = noise_file(jl, tmp_path / "c.jsonl", rate=0.1, seed=1, identity_fraction=1.0)
    assert stats["identity_rows"] == 10
    first = json.loads((tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["id"] == "x0" and first["noisy"] == first["clean"]


def test_noise_file_errors(tmp_path: Path) -> None:
    with pytest.raises(NoiseError, match="not found"):
        noise_file(tmp_path / "missing.txt", tmp_path / "o.jsonl", lang="hi")
    txt = tmp_path / "c.txt"
    txt.write_text("कल\n", encoding="utf-8")
    with pytest.raises(NoiseError, match="no language"):
        noise_file(txt, tmp_path / "o.jsonl")
