"""The dequantize's shortcuts (core/weights.py): one GGUFReader per file, quantized tensors unpacked in row
slices on threads; each gives the bytes the plain way gave (bench/quality/README.md §5, lease overhead)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bhasha_build.core import weights
from bhasha_build.core.weights import WeightsError

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import quants  # noqa: E402

from tests.test_weights import write_fake_gguf  # noqa: E402

QUANTIZABLE = (Q.Q8_0, Q.Q5_0, Q.Q4_0)  # gguf quantizes these itself; the others get random blocks


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random K-quant blocks hold NaN/inf scales: bytes still equal
@pytest.mark.parametrize("qtype", [*QUANTIZABLE, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.BF16])
@pytest.mark.parametrize("threads", [2, 3, 8])
def test_row_slices_on_threads_are_the_serial_bytes(qtype: Q, threads: int) -> None:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rows, per_row = 37, 2 * block  # 37 rows: slices of unequal size
    rng = np.random.default_rng(int(qtype) * 100 + threads)
    if qtype in QUANTIZABLE:
        data = quants.quantize(rng.standard_normal((rows, per_row)).astype(np.float32), qtype)
    else:
        data = rng.integers(0, 256, size=(rows, per_row // block * type_size), dtype=np.uint8)
    serial = quants.dequantize(data, qtype)
    threaded = weights.dequantize_rows(data, qtype, threads)
    assert threaded.shape == serial.shape and threaded.dtype == serial.dtype
    assert threaded.tobytes() == serial.tobytes()


def test_small_and_unquantized_tensors_take_the_serial_path() -> None:
    calls: list[int] = []

    def serial(data: np.ndarray, qtype: Q) -> np.ndarray:
        calls.append(data.shape[0])
        return quants.dequantize(data, qtype)

    f32 = np.arange(64, dtype=np.float32).view(np.uint8).reshape(4, 64)
    weights.dequantize_rows(f32, Q.F32, 8, serial)
    q8 = quants.quantize(np.ones((5, 32), dtype=np.float32), Q.Q8_0)
    weights.dequantize_rows(q8, Q.Q8_0, 4, serial)  # 5 rows < 2 x 4 threads: one slice
    weights.dequantize_rows(quants.quantize(np.ones((9, 32), dtype=np.float32), Q.Q8_0), Q.Q8_0, 4, serial)
    assert calls == [4, 5, 2, 2, 2, 3]


def test_one_reader_per_file_while_inside_and_the_real_ones_after(tmp_path: Path) -> None:
    a, b = write_fake_gguf(tmp_path / "a.gguf"), write_fake_gguf(tmp_path / "b.gguf", layers=1)
    real_reader, real_dequantize = gguf.GGUFReader, gguf.dequantize
    with weights.one_gguf_reader(), weights.threaded_dequantize(3):
        first = gguf.GGUFReader(a)
        assert gguf.GGUFReader(str(tmp_path / "." / "a.gguf")) is first
        assert gguf.GGUFReader(b) is not first
        assert gguf.dequantize is not real_dequantize
    assert gguf.GGUFReader is real_reader and gguf.dequantize is real_dequantize
    assert gguf.GGUFReader(a) is not first
    with pytest.raises(RuntimeError), weights.one_gguf_reader(), weights.threaded_dequantize(2):
        raise RuntimeError("a failed load")
    assert gguf.GGUFReader is real_reader and gguf.dequantize is real_dequantize


def test_dequant_threads_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BHASHA_DEQUANT_THREADS", raising=False)
    assert 1 <= weights.dequant_threads() <= 8
    monkeypatch.setenv("BHASHA_DEQUANT_THREADS", "3")
    assert weights.dequant_threads() == 3
    for bad in ("0", "x", "-2"):
        monkeypatch.setenv("BHASHA_DEQUANT_THREADS", bad)
        with pytest.raises(WeightsError, match="BHASHA_DEQUANT_THREADS"):
            weights.dequant_threads()
