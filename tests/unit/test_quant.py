"""rocmforge.quant against gguf.quants (the reference) and against hand-built blocks."""

from __future__ import annotations

import math
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rocmforge import quant
from rocmforge.quant import BLOCK_DTYPES, QUANTIZABLE, SUPPORTED, QType

TYPES = sorted(SUPPORTED)
K_TYPES = [QType.Q2_K, QType.Q3_K, QType.Q4_K, QType.Q5_K, QType.Q6_K]
ids = [t.name for t in TYPES]


def _row(qtype: QType, n_blocks: int) -> int:
    """Row length of n_blocks blocks (at least 32 elements for the plain float types)."""
    return n_blocks * max(quant.block_size(qtype), 32)


def _gguf_deq(raw: np.ndarray, qtype: QType, shape: tuple[int, ...]) -> np.ndarray:
    """gguf's dequantize of raw bytes laid out as (*shape[:-1], row_bytes)."""
    byte_shape = (*shape[:-1], quant.row_bytes(qtype, shape[-1]))
    return np.ascontiguousarray(gguf.quants.dequantize(raw.reshape(byte_shape), qtype)).reshape(shape)


def assert_bitwise(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.dtype == np.float32 and ref.dtype == np.float32
    assert ours.shape == ref.shape
    a = np.ascontiguousarray(ours).view(np.uint32)
    b = np.ascontiguousarray(ref).view(np.uint32)
    bad = np.flatnonzero(a != b)
    assert bad.size == 0, (
        f"{bad.size} of {a.size} values differ, first at flat {bad[0]}: "
        f"{ours.reshape(-1)[bad[0]]!r} vs gguf {ref.reshape(-1)[bad[0]]!r}"
    )


# ------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("qtype", TYPES, ids=ids)
def test_sizes_follow_gguf(qtype: QType) -> None:
    bs, ts = GGML_QUANT_SIZES[qtype]
    assert quant.block_size(qtype) == bs
    assert quant.type_size(qtype) == ts
    assert quant.block_size(int(qtype)) == bs  # plain ints work too
    assert quant.row_bytes(qtype, 7 * bs) == 7 * ts
    assert quant.row_bytes(qtype, 0) == 0
    if bs > 1:
        with pytest.raises(ValueError, match="multiple"):
            quant.row_bytes(qtype, bs + 1)


@pytest.mark.parametrize("qtype", TYPES, ids=ids)
def test_block_dtype_is_exact_layout(qtype: QType) -> None:
    dt = BLOCK_DTYPES[qtype]
    assert dt.itemsize == quant.type_size(qtype)
    # packed, in declaration order, no gaps, little-endian
    offset = 0
    for name in dt.names:
        fdt, foff = dt.fields[name][:2]
        assert foff == offset, name
        offset += fdt.itemsize
        assert fdt.base.byteorder in "<|=", name
    assert offset == dt.itemsize


def test_supported_set() -> None:
    names = {t.name for t in SUPPORTED}
    assert names == {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                     "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
    assert QUANTIZABLE <= SUPPORTED
    assert quant.QType is gguf.GGMLQuantizationType


# ------------------------------------------------------------------- dequantize == gguf, bitwise

SHAPES = [(1,), (3, 2), (2, 3, 4), (5, 11)]  # (..., n_blocks): leading dims and blocks per row


@pytest.mark.parametrize("qtype", TYPES, ids=ids)
@pytest.mark.parametrize("dims", SHAPES, ids=[str(s) for s in SHAPES])
def test_dequantize_matches_gguf(qtype: QType, dims: tuple[int, ...]) -> None:
    shape = (*dims[:-1], _row(qtype, dims[-1]))
    rng = np.random.default_rng([int(qtype), *dims])
    raw = quant.random_blocks(qtype, shape, rng)
    ours = quant.dequantize(raw, qtype, shape)
    assert ours.shape == shape
    assert np.isfinite(ours).all()
    assert_bitwise(ours, _gguf_deq(raw, qtype, shape))


@pytest.mark.parametrize("qtype", TYPES, ids=ids)
def test_dequantize_matches_gguf_across_chunks(qtype: QType, monkeypatch: pytest.MonkeyPatch) -> None:
    # a chunk that is not a whole number of rows and leaves a ragged last chunk
    monkeypatch.setattr(quant, "_CHUNK_ELEMS", 3 * max(quant.block_size(qtype), 32) + 5)
    shape = (7, _row(qtype, 5))
    raw = quant.random_blocks(qtype, shape, np.random.default_rng([99, int(qtype)]))
    assert_bitwise(quant.dequantize(raw, qtype, shape), _gguf_deq(raw, qtype, shape))


@pytest.mark.parametrize("qtype", TYPES, ids=ids)
def test_dequantize_matches_gguf_real_chunking(qtype: QType) -> None:
    # more than one default chunk, with a ragged tail
    n = quant._CHUNK_ELEMS + 17 * 256
    shape = (n // 4352, 4352)
    raw = quant.random_blocks(qtype, shape, np.random.default_rng([7, int(qtype)]))
    assert_bitwise(quant.dequantize(raw, qtype, shape), _gguf_deq(raw, qtype, shape))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    qtype=st.sampled_from(TYPES),
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    n_blocks=st.integers(1, 6),
    seed=st.integers(0, 2**63 - 1),
)
def test_dequantize_matches_gguf_fresh_seeds(qtype: QType, lead: list[int], n_blocks: int, seed: int) -> None:
    shape = (*lead, _row(qtype, n_blocks))
    raw = quant.random_blocks(qtype, shape, np.random.default_rng(seed))
    assert_bitwise(quant.dequantize(raw, qtype, shape), _gguf_deq(raw, qtype, shape))


@pytest.mark.parametrize("qtype", [QType.Q4_0, QType.Q5_1, QType.Q8_0, *K_TYPES], ids=lambda t: t.name)
def test_all_bit_patterns_of_quants(qtype: QType) -> None:
    # random_blocks keeps scales modest; also sweep every byte value through each quant byte
    ts = quant.type_size(qtype)
    raw = np.zeros((256, ts), dtype=np.uint8)
    raw[:] = quant.random_blocks(qtype, (quant.block_size(qtype),), np.random.default_rng(5))
    blocks = raw.reshape(-1).view(BLOCK_DTYPES[qtype])
    for name, (fdt, *_) in BLOCK_DTYPES[qtype].fields.items():
        if fdt.base != np.float16:
            blocks[name] = np.arange(256, dtype=np.uint8).view(fdt.base).reshape(
                (256,) + (1,) * len(fdt.shape))
    shape = (256, quant.block_size(qtype))
    assert_bitwise(quant.dequantize(raw, qtype, shape), _gguf_deq(raw, qtype, shape))


# ------------------------------------------------------------- layout pinned without gguf


def test_q4_0_layout_by_hand() -> None:
    blk = np.zeros(1, dtype=BLOCK_DTYPES[QType.Q4_0])
    blk["d"] = 0.5
    j = np.arange(16, dtype=np.uint8)
    blk["qs"] = j | ((15 - j) << 4)  # low nibble -> element j, high nibble -> element j + 16
    got = quant.dequantize(blk.view(np.uint8), QType.Q4_0, (32,))
    want = 0.5 * np.concatenate([j.astype(np.float32) - 8, 7 - j.astype(np.float32)])
    np.testing.assert_array_equal(got, want)


def test_q8_0_layout_by_hand() -> None:
    blk = np.zeros(2, dtype=BLOCK_DTYPES[QType.Q8_0])
    blk["d"] = [0.25, -2.0]
    blk["qs"] = np.arange(-16, 16, dtype=np.int8)
    got = quant.dequantize(blk.view(np.uint8), QType.Q8_0, (2, 32))
    q = np.arange(-16, 16, dtype=np.float32)
    np.testing.assert_array_equal(got, np.stack([0.25 * q, -2.0 * q]))


def test_q5_0_high_bits_by_hand() -> None:
    blk = np.zeros(1, dtype=BLOCK_DTYPES[QType.Q5_0])
    blk["d"] = 1.0
    blk["qh"] = np.array([1 << 31 | 1], dtype="<u4").view(np.uint8)  # bit e -> element e
    got = quant.dequantize(blk.view(np.uint8), QType.Q5_0, (32,))
    want = np.full(32, -16.0, dtype=np.float32)
    want[[0, 31]] = 0.0
    np.testing.assert_array_equal(got, want)


def test_q6_k_layout_by_hand() -> None:
    blk = np.zeros(1, dtype=BLOCK_DTYPES[QType.Q6_K])
    blk["d"] = 1.0
    blk["scales"] = np.arange(1, 17, dtype=np.int8)  # scale of element e is scales[e // 16]
    blk["ql"][0, 32] = 0x50  # high nibble of ql[32]: element 96 (k = 3, l = 0), low bits 5
    blk["qh"][0, 0] = 0b10 << 6  # bits 6-7 of qh[0]: element 96, high bits 2
    got = quant.dequantize(blk.view(np.uint8), QType.Q6_K, (256,))
    want = -32.0 * np.repeat(np.arange(1, 17, dtype=np.float32), 16)
    want[96] = (5 + (2 << 4) - 32) * 7.0  # q = 37 - 32, scales[96 // 16] = 7
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------- round trips


def _roundtrip_bound(qtype: QType, x: np.ndarray) -> np.ndarray:
    """Worst-case |dequantize(quantize(x)) - x| per element for gguf's quantizers (f16 scale rounding
    included); x is (n_blocks, bs) for block types, anything for float types."""
    e16 = 2.0**-11  # f16 relative rounding
    if qtype == QType.F32:
        return np.zeros_like(x)
    if qtype == QType.F16:
        return np.abs(x) * e16 + 2.0**-25
    if qtype == QType.BF16:
        return np.abs(x) * 2.0**-8
    amax = np.abs(x).max(axis=1, keepdims=True)
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    f32_slack = 4 * 2.0**-24 * (amax + np.abs(lo))
    if qtype == QType.Q8_0:  # d = amax/127, round to nearest
        return amax * (1 / 254 + e16) + f32_slack
    if qtype == QType.Q4_0:  # d = -max/8; the far end can clip from +8 to +7: one full step
        return amax / 8 * (1 + 8 * e16) + f32_slack
    if qtype == QType.Q5_0:
        return amax / 16 * (1 + 16 * e16) + f32_slack
    if qtype in (QType.Q4_1, QType.Q5_1):  # d = (max-min)/(2^b-1), m = min, round to nearest
        return (hi - lo) * (0.5 / 15 if qtype == QType.Q4_1 else 0.5 / 31) \
            + (hi - lo) * e16 + np.abs(lo) * e16 + f32_slack
    raise AssertionError(qtype)


@pytest.mark.parametrize("qtype", sorted(QUANTIZABLE), ids=lambda t: t.name)
@pytest.mark.parametrize("dist", ["normal", "offset", "heavy"])
def test_roundtrip(qtype: QType, dist: str) -> None:
    rng = np.random.default_rng([int(qtype), len(dist)])
    shape = (48, 256)
    if dist == "normal":
        x = rng.standard_normal(shape)
    elif dist == "offset":  # blocks far from zero: exercises the min of Q4_1 / Q5_1
        x = rng.uniform(-1, 1, shape) + rng.uniform(-4, 4, (shape[0], 1))
    else:  # heavy tails, per-row scales 0.1 .. 10: f16 scales stay normal, F16 does not overflow
        x = rng.standard_t(2, shape) * np.exp(rng.uniform(np.log(0.1), np.log(10), (shape[0], 1)))
    x = x.astype(np.float32)

    raw = quant.quantize(x, qtype)
    assert raw.dtype == np.uint8 and raw.shape == (48, quant.row_bytes(qtype, 256))
    y = quant.dequantize(raw, qtype, shape)
    assert_bitwise(y, _gguf_deq(raw, qtype, shape))

    bs = quant.block_size(qtype)
    xb = x.reshape(-1, bs)
    err = np.abs(y.reshape(xb.shape) - xb)
    bound = _roundtrip_bound(qtype, xb)
    worst = np.argmax(err - bound)
    assert (err <= bound).all(), f"err {err.flat[worst]} > bound {bound.flat[worst]}"
    if qtype == QType.Q8_0 and dist == "normal":  # expected ~0.006 = (2.5 / 127) / sqrt(12)
        assert np.linalg.norm(y - x) / np.linalg.norm(x) < 0.008


def test_quantize_does_not_alias_input() -> None:
    x = np.arange(32, dtype=np.float32)
    raw = quant.quantize(x, QType.F32)
    raw[:] = 0
    assert x[5] == 5.0


def test_quantize_zero_blocks() -> None:
    x = np.zeros((2, 64), dtype=np.float32)
    for qtype in QUANTIZABLE:
        y = quant.dequantize(quant.quantize(x, qtype), qtype, x.shape)
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_quantize_k_types_not_implemented(qtype: QType) -> None:
    with pytest.raises(NotImplementedError, match=qtype.name):
        quant.quantize(np.zeros(256, dtype=np.float32), qtype)


def test_quantize_bad_row_length() -> None:
    with pytest.raises(ValueError, match="multiple"):
        quant.quantize(np.zeros((2, 48), dtype=np.float32), QType.Q8_0)


# ------------------------------------------------------------------------------- random_blocks


@pytest.mark.parametrize("qtype", TYPES, ids=ids)
def test_random_blocks_are_valid(qtype: QType) -> None:
    shape = (3, _row(qtype, 4))
    raw = quant.random_blocks(qtype, shape, np.random.default_rng(1))
    assert raw.dtype == np.uint8
    assert raw.shape == (3, quant.row_bytes(qtype, shape[1]))
    again = quant.random_blocks(qtype, shape, np.random.default_rng(1))
    other = quant.random_blocks(qtype, shape, np.random.default_rng(2))
    np.testing.assert_array_equal(raw, again)
    assert not np.array_equal(raw, other)

    blocks = raw.reshape(-1).view(BLOCK_DTYPES[qtype])
    if qtype in (QType.F32, QType.F16, QType.BF16):  # plain values: standard normal
        vals = quant.dequantize(raw, qtype, shape)
        assert np.isfinite(vals).all() and 0.5 < vals.std() < 2
        return
    halves = [n for n, (fdt, *_) in BLOCK_DTYPES[qtype].fields.items() if fdt == np.float16]
    assert halves, "every block type has an f16 scale"
    for name in halves:
        mag = np.abs(blocks[name].astype(np.float64))
        assert (mag >= 1e-3 * (1 - 2**-10)).all() and (mag <= 1e-1 * (1 + 2**-10)).all(), name
    assert np.isfinite(quant.dequantize(raw, qtype, shape)).all()


# ------------------------------------------------------------------------------ inputs, errors


def test_dequantize_readonly_memmap(tmp_path: Path) -> None:
    shape = (4, 512)
    raw = quant.random_blocks(QType.Q4_K, shape, np.random.default_rng(3))
    path = tmp_path / "t.bin"
    raw.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = quant.dequantize(mm, QType.Q4_K, shape)
    assert out.flags.writeable and out.flags.c_contiguous
    assert_bitwise(out, _gguf_deq(raw, QType.Q4_K, shape))


def test_dequantize_accepts_typed_arrays_and_copies() -> None:
    # gguf's reader hands F32/F16 tensors out as typed arrays rather than bytes
    x = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    out = quant.dequantize(x, QType.F32, (3, 8))
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)
    h = x.astype(np.float16)
    np.testing.assert_array_equal(quant.dequantize(h, QType.F16, (24,)), h.astype(np.float32).ravel())


def test_dequantize_empty() -> None:
    assert quant.dequantize(np.zeros(0, np.uint8), QType.Q6_K, (0, 256)).shape == (0, 256)


@pytest.mark.parametrize("qtype", [QType.Q8_K, QType.IQ2_XXS, QType.IQ4_NL, QType.TQ1_0, QType.I32],
                         ids=lambda t: t.name)
def test_unsupported_types_raise(qtype: QType) -> None:
    bs, ts = GGML_QUANT_SIZES[qtype]
    with pytest.raises(ValueError, match="not supported"):
        quant.dequantize(np.zeros(ts, np.uint8), qtype, (bs,))
    with pytest.raises(ValueError, match="not supported"):
        quant.random_blocks(qtype, (bs,), np.random.default_rng(0))
    assert quant.type_size(qtype) == ts  # sizes are still known


def test_unknown_type_raises() -> None:
    for fn in (quant.block_size, quant.type_size):
        with pytest.raises(ValueError, match="unknown"):
            fn(12345)
    with pytest.raises(ValueError, match="unknown"):
        quant.dequantize(np.zeros(4, np.uint8), 12345, (1,))


@pytest.mark.parametrize("qtype", TYPES, ids=ids)
def test_dequantize_size_mismatch_raises(qtype: QType) -> None:
    shape = (2, _row(qtype, 2))
    raw = quant.random_blocks(qtype, shape, np.random.default_rng(0))
    with pytest.raises(ValueError, match="bytes"):
        quant.dequantize(raw.reshape(-1)[:-1], qtype, shape)
    with pytest.raises(ValueError, match="bytes"):
        quant.dequantize(raw, qtype, (3, shape[1]))


@pytest.mark.parametrize("qtype", [t for t in TYPES if quant.block_size(t) > 1], ids=lambda t: t.name)
def test_dequantize_row_not_block_multiple_raises(qtype: QType) -> None:
    bs = quant.block_size(qtype)
    with pytest.raises(ValueError, match="multiple"):
        quant.dequantize(np.zeros(4 * quant.type_size(qtype), np.uint8), qtype, (2, 2 * bs - 1))


def test_bad_shape_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        quant.dequantize(np.zeros(0, np.uint8), QType.F32, ())
    with pytest.raises(ValueError, match="shape"):
        quant.random_blocks(QType.F32, (-1, 4), np.random.default_rng(0))


# ------------------------------------------------------------------------------------- speed


@pytest.mark.slow
@pytest.mark.parametrize("qtype", [QType.Q8_0, QType.Q5_K], ids=lambda t: t.name)
def test_dequantize_embedding_sized_tensor_fast(qtype: QType) -> None:
    # Qwen2-0.5B token_embd is 151936 x 896; K-quants need a row of 256s, so same element count
    shape = (151936, 896) if qtype == QType.Q8_0 else (151936 * 896 // 1024, 1024)
    raw = quant.random_blocks(qtype, shape, np.random.default_rng(0))
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        out = quant.dequantize(raw, qtype, shape)
        best = min(best, time.perf_counter() - t0)
        del out
    assert best < 2.0, f"{qtype.name} {shape}: {best:.2f} s"


@pytest.mark.parametrize("qt", [QType.Q4_0, QType.Q5_0, QType.Q8_0])
def test_to_q8_0_holds_the_same_values_bit_for_bit(qt):
    rng = np.random.default_rng(int(qt))
    raw = quant.random_blocks(qt, (5, 128), rng)
    q8 = quant.to_q8_0(raw, qt)
    want = quant.dequantize(raw, qt, (5, 128))
    assert q8.size == 5 * 4 * 34
    got = quant.dequantize(q8, QType.Q8_0, (5, 128))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_to_q8_0_refuses_what_it_cannot_hold():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="without loss"):
        quant.to_q8_0(quant.random_blocks(QType.Q4_1, (2, 64), rng), QType.Q4_1)
    with pytest.raises(ValueError, match="whole Q5_0 blocks"):
        quant.to_q8_0(quant.random_blocks(QType.Q5_0, (2, 64), rng).reshape(-1)[:-1], QType.Q5_0)
