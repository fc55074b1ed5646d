"""GGML block quantization formats: sizes, byte layouts, numpy dequantization and test data.

Every quantized type stores a tensor row as a sequence of fixed-size blocks. ``BLOCK_DTYPES``
spells out each block's byte layout as a numpy structured dtype (the layout the GPU kernels read,
taken from ggml-common.h); ``dequantize`` decodes them with our own vectorized numpy code, which is
checked bit for bit against ``gguf.quants`` (the reference) in tests/unit/test_quant.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES

__all__ = [
    "BLOCK_DTYPES",
    "QUANTIZABLE",
    "QType",
    "SUPPORTED",
    "block_size",
    "dequantize",
    "quantize",
    "random_blocks",
    "row_bytes",
    "type_size",
]

QType = gguf.GGMLQuantizationType

QK_K = 256  # elements per K-quant super-block
K_SCALE_SIZE = 12  # bytes of packed 6-bit scales and mins in Q4_K / Q5_K

_F16 = np.dtype("<f2")
_U8 = np.uint8

# Byte layout of one block, field by field in storage order (all little-endian, no padding).
# Element order inside a block, per type (e = element index within the block):
#   Q4_0/Q4_1: qs[j] low nibble = e j, high nibble = e j+16.
#   Q5_0/Q5_1: as Q4_x for the low 4 bits; bit 4 of e is bit e of qh read as a little-endian u32.
#   Q8_0: qs[e].
#   Q2_K: e = 128n + 32j + l (l < 32): bits 2j..2j+1 of qs[32n + l]; scales[e // 16] low nibble
#         scales d, high nibble scales dmin; x = d*sc*q - dmin*m.
#   Q3_K: low 2 bits as Q2_K; bit 2 is bit (e // 32) of hmask[e % 32], and a CLEAR bit subtracts 4
#         (q in [-4, 3]); 16 signed 6-bit scales (minus 32), scale i: low 4 bits from
#         scales[i % 8] >> 4*(i // 8), high 2 bits from scales[8 + i % 4] >> 2*(i // 4).
#   Q4_K: e = 64c + 32h + l: nibble h of qs[32c + l]; 8 sub-blocks of 32 with 6-bit scale/min
#         (get_scale_min_k4 packing); x = d*sc*q - dmin*m.
#   Q5_K: as Q4_K, plus bit 4 = bit (e // 32) of qh[e % 32].
#   Q6_K: e = 128n + 32k + l: low 4 bits = nibble (k // 2) of ql[64n + 32(k % 2) + l], high 2 bits =
#         bits 2k..2k+1 of qh[32n + l]; q - 32; scales[e // 16] is a signed 8-bit scale.
BLOCK_DTYPES: dict[QType, np.dtype] = {
    QType.F32: np.dtype([("x", "<f4")]),
    QType.F16: np.dtype([("x", _F16)]),
    QType.BF16: np.dtype([("x", "<u2")]),  # upper 16 bits of an IEEE f32
    QType.Q4_0: np.dtype([("d", _F16), ("qs", _U8, (16,))]),
    QType.Q4_1: np.dtype([("d", _F16), ("m", _F16), ("qs", _U8, (16,))]),
    QType.Q5_0: np.dtype([("d", _F16), ("qh", _U8, (4,)), ("qs", _U8, (16,))]),
    QType.Q5_1: np.dtype([("d", _F16), ("m", _F16), ("qh", _U8, (4,)), ("qs", _U8, (16,))]),
    QType.Q8_0: np.dtype([("d", _F16), ("qs", np.int8, (32,))]),
    QType.Q2_K: np.dtype([
        ("scales", _U8, (QK_K // 16,)), ("qs", _U8, (QK_K // 4,)), ("d", _F16), ("dmin", _F16),
    ]),
    QType.Q3_K: np.dtype([
        ("hmask", _U8, (QK_K // 8,)), ("qs", _U8, (QK_K // 4,)), ("scales", _U8, (12,)), ("d", _F16),
    ]),
    QType.Q4_K: np.dtype([
        ("d", _F16), ("dmin", _F16), ("scales", _U8, (K_SCALE_SIZE,)), ("qs", _U8, (QK_K // 2,)),
    ]),
    QType.Q5_K: np.dtype([
        ("d", _F16), ("dmin", _F16), ("scales", _U8, (K_SCALE_SIZE,)),
        ("qh", _U8, (QK_K // 8,)), ("qs", _U8, (QK_K // 2,)),
    ]),
    QType.Q6_K: np.dtype([
        ("ql", _U8, (QK_K // 2,)), ("qh", _U8, (QK_K // 4,)), ("scales", np.int8, (QK_K // 16,)),
        ("d", _F16),
    ]),
}

SUPPORTED: frozenset[QType] = frozenset(BLOCK_DTYPES)

# Types gguf.quants can quantize (its K-quant classes only dequantize).
QUANTIZABLE: frozenset[QType] = frozenset({
    QType.F32, QType.F16, QType.BF16, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1, QType.Q8_0,
})

_FLOAT_TYPES = frozenset({QType.F32, QType.F16, QType.BF16})

# Elements decoded per inner step (1 MiB of f32 output): temporaries stay in cache while the
# ~20 numpy calls per step cost little; measured best between 2**16 and 2**20.
_CHUNK_ELEMS = 1 << 18


# ---------------------------------------------------------------------------------------------
# sizes


def _as_qtype(qtype: QType | int) -> QType:
    try:
        qt = QType(qtype)
    except ValueError:
        raise ValueError(f"unknown GGML type {qtype!r}") from None
    if qt not in GGML_QUANT_SIZES:
        raise ValueError(f"no block size known for GGML type {qt.name}")
    return qt


def _supported(qtype: QType | int) -> QType:
    qt = _as_qtype(qtype)
    if qt not in SUPPORTED:
        names = ", ".join(t.name for t in sorted(SUPPORTED))
        raise ValueError(f"GGML type {qt.name} is not supported (supported: {names})")
    return qt


def block_size(qtype: QType) -> int:
    """Elements per block (1 for plain float types); defined for every GGML type gguf knows."""
    return GGML_QUANT_SIZES[_as_qtype(qtype)][0]


def type_size(qtype: QType) -> int:
    """Bytes per block; defined for every GGML type gguf knows."""
    return GGML_QUANT_SIZES[_as_qtype(qtype)][1]


def row_bytes(qtype: QType, n_elements: int) -> int:
    """Bytes taken by ``n_elements`` consecutive elements (a row) of type ``qtype``."""
    bs, ts = GGML_QUANT_SIZES[_as_qtype(qtype)]
    n = int(n_elements)
    if n < 0 or n % bs:
        raise ValueError(f"{n_elements} elements is not a multiple of the {QType(qtype).name} "
                         f"block size {bs}")
    return n // bs * ts


def _norm_shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    shp = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
    if not shp or any(s < 0 for s in shp):
        raise ValueError(f"bad tensor shape {shape!r}: need at least one dim, all >= 0")
    return shp


def _byte_shape(qtype: QType, shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        rb = row_bytes(qtype, shape[-1])
    except ValueError as e:
        raise ValueError(f"row length of shape {shape} is not usable: {e}") from None
    return (*shape[:-1], rb)


# ---------------------------------------------------------------------------------------------
# dequantization kernels: b is a 1-D array of BLOCK_DTYPES[qtype] records, out is (n_blocks, bs) f32.
# The op order follows gguf.quants (d*q, then + m or - dmin*m). It barely matters: d is an f16 (11
# significant bits) and sub-scales and quants are small ints, so every product (d*sc, d*sc*q,
# dmin*m) is exact in f32 and the only rounding is the final add. Any order, fused (FMA) or not,
# gives the same bits, which is what lets GPU kernels be checked bitwise against this code.

_NIB_SHIFT = np.array([0, 4], dtype=_U8).reshape(1, 2, 1)
_CRUMB_SHIFT = np.array([0, 2, 4, 6], dtype=_U8).reshape(1, 1, 4, 1)
_BIT_SHIFT = np.arange(8, dtype=_U8).reshape(1, 8, 1)


def _f32(field: np.ndarray) -> np.ndarray:
    """f16 field (n,) -> f32 column (n, 1)."""
    return field.astype(np.float32)[:, None]


def _nibbles32(qs: np.ndarray) -> np.ndarray:
    """qs (n, 16) u8 -> (n, 32) u8: low nibbles are elements 0-15, high nibbles 16-31."""
    q = qs[:, None, :] >> _NIB_SHIFT
    q &= 0x0F
    return q.reshape(len(qs), 32)


def _high_bits32(qh: np.ndarray) -> np.ndarray:
    """qh (n, 4) u8 (a little-endian u32 bit mask) -> (n, 32) u8 with bit e as 0x10 or 0."""
    h = np.unpackbits(qh, axis=1, bitorder="little")
    h <<= 4
    return h


def _bitplanes256(mask: np.ndarray) -> np.ndarray:
    """mask (n, 32) u8 -> (n, 256) u8 0/1, element e = bit (e // 32) of mask[e % 32] (Q3_K, Q5_K)."""
    h = mask[:, None, :] >> _BIT_SHIFT
    h &= 1
    return h.reshape(len(mask), QK_K)


def _crumbs256(qs: np.ndarray) -> np.ndarray:
    """qs (n, 64) u8 -> (n, 256) u8 2-bit values, e = 128n + 32j + l from qs[32n + l] >> 2j."""
    q = qs.reshape(len(qs), 2, 1, 32) >> _CRUMB_SHIFT
    q &= 3
    return q.reshape(len(qs), QK_K)


def _deq_q4_0(b: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles32(b["qs"])
    q -= 8  # wraps in u8; read back as int8 in [-8, 7]
    np.multiply(_f32(b["d"]), q.view(np.int8), out=out)


def _deq_q4_1(b: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_f32(b["d"]), _nibbles32(b["qs"]), out=out)
    out += _f32(b["m"])


def _deq_q5_0(b: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles32(b["qs"])
    q |= _high_bits32(b["qh"])
    q -= 16  # int8 in [-16, 15]
    np.multiply(_f32(b["d"]), q.view(np.int8), out=out)


def _deq_q5_1(b: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles32(b["qs"])
    q |= _high_bits32(b["qh"])
    np.multiply(_f32(b["d"]), q, out=out)
    out += _f32(b["m"])


def _deq_q8_0(b: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_f32(b["d"]), b["qs"], out=out)


def _deq_q2_k(b: np.ndarray, out: np.ndarray) -> None:
    n = len(b)
    sc = b["scales"]  # (n, 16): low nibble scale, high nibble min
    dl = _f32(b["d"]) * (sc & 0x0F)  # (n, 16) f32
    ml = _f32(b["dmin"]) * (sc >> 4)
    o = out.reshape(n, 16, 16)
    np.multiply(dl[:, :, None], _crumbs256(b["qs"]).reshape(n, 16, 16), out=o)
    o -= ml[:, :, None]


def _q3_k_scales(s: np.ndarray) -> np.ndarray:
    """Packed scales (n, 12) u8 -> (n, 16) int16 signed 6-bit scales minus 32."""
    n = len(s)
    lo = s[:, :8]
    low = np.concatenate([lo & 0x0F, lo >> 4], axis=1)  # scale i: nibble i // 8 of s[i % 8]
    high = (s[:, None, 8:12] >> _CRUMB_SHIFT[0]).reshape(n, 16) & 3  # bits 2(i//4) of s[8 + i%4]
    return (low | (high << 4)).astype(np.int16) - 32


def _deq_q3_k(b: np.ndarray, out: np.ndarray) -> None:
    n = len(b)
    dl = _f32(b["d"]) * _q3_k_scales(b["scales"]).astype(np.float32)  # (n, 16)
    q = _crumbs256(b["qs"])
    q |= _bitplanes256(b["hmask"]) << 2
    q -= 4  # a clear hmask bit means "minus 4": q in [-4, 3] as int8
    np.multiply(dl[:, :, None], q.view(np.int8).reshape(n, 16, 16), out=out.reshape(n, 16, 16))


def _k4_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_scale_min_k4 for all 8 sub-blocks: packed (n, 12) u8 -> scales, mins (n, 8) u8 in [0, 63]."""
    a, m, c = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)], axis=1)
    mn = np.concatenate([m & 0x3F, (c >> 4) | ((m >> 6) << 4)], axis=1)
    return sc, mn


def _nibbles256(qs: np.ndarray) -> np.ndarray:
    """qs (n, 128) u8 -> (n, 256) u8, e = 64c + 32h + l from nibble h of qs[32c + l] (Q4_K, Q5_K)."""
    q = qs.reshape(len(qs), 4, 1, 32) >> _NIB_SHIFT[:, None]
    q &= 0x0F
    return q.reshape(len(qs), QK_K)


def _deq_k_min(b: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    n = len(b)
    sc, mn = _k4_scales_mins(b["scales"])
    dl = _f32(b["d"]) * sc  # (n, 8) f32
    ml = _f32(b["dmin"]) * mn
    o = out.reshape(n, 8, 32)
    np.multiply(dl[:, :, None], q.reshape(n, 8, 32), out=o)
    o -= ml[:, :, None]


def _deq_q4_k(b: np.ndarray, out: np.ndarray) -> None:
    _deq_k_min(b, _nibbles256(b["qs"]), out)


def _deq_q5_k(b: np.ndarray, out: np.ndarray) -> None:
    q = _nibbles256(b["qs"])
    q |= _bitplanes256(b["qh"]) << 4
    _deq_k_min(b, q, out)


def _deq_q6_k(b: np.ndarray, out: np.ndarray) -> None:
    n = len(b)
    ql = b["ql"].reshape(n, 2, 2, 32)  # [half n, k % 2, l]
    q = np.empty((n, 2, 4, 32), dtype=_U8)  # [half n, k, l]
    np.bitwise_and(ql, 0x0F, out=q[:, :, 0:2])
    np.right_shift(ql, 4, out=q[:, :, 2:4])
    qh = b["qh"].reshape(n, 2, 1, 32) >> _CRUMB_SHIFT
    qh &= 3
    qh <<= 4
    q |= qh
    q -= 32  # int8 in [-32, 31]
    dl = _f32(b["d"]) * b["scales"].astype(np.float32)  # (n, 16)
    np.multiply(dl[:, :, None], q.view(np.int8).reshape(n, 16, 16), out=out.reshape(n, 16, 16))


_DEQUANT: dict[QType, Callable[[np.ndarray, np.ndarray], None]] = {
    QType.Q4_0: _deq_q4_0,
    QType.Q4_1: _deq_q4_1,
    QType.Q5_0: _deq_q5_0,
    QType.Q5_1: _deq_q5_1,
    QType.Q8_0: _deq_q8_0,
    QType.Q2_K: _deq_q2_k,
    QType.Q3_K: _deq_q3_k,
    QType.Q4_K: _deq_q4_k,
    QType.Q5_K: _deq_q5_k,
    QType.Q6_K: _deq_q6_k,
}


def _as_bytes(raw: np.ndarray) -> np.ndarray:
    """Any array (uint8 bytes, or e.g. the f32/f16 array gguf's reader gives) -> flat u8 view."""
    a = np.asarray(raw)
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a.reshape(-1).view(np.uint8)


def dequantize(raw: np.ndarray, qtype: QType, shape: Sequence[int]) -> np.ndarray:
    """Decode the raw bytes of a ``qtype`` tensor of numpy shape ``shape`` into a new float32 array.

    ``raw`` holds the tensor's bytes in storage order (any shape; typically uint8 and possibly a
    read-only memmap). The last dim of ``shape`` is the contiguous row and must be a multiple of
    the block size. Raises ValueError for unsupported types or a byte count that does not match.
    """
    qt = _supported(qtype)
    shp = _norm_shape(shape)
    n_bytes = math.prod(_byte_shape(qt, shp))
    buf = _as_bytes(raw)
    if buf.size != n_bytes:
        raise ValueError(f"{qt.name} tensor of shape {shp} needs {n_bytes} bytes, got {buf.size}")

    out = np.empty(shp, dtype=np.float32)
    flat = out.reshape(-1)
    if qt == QType.F32:
        flat[:] = buf.view("<f4")
    elif qt == QType.F16:
        flat[:] = buf.view("<f2")
    elif qt == QType.BF16:
        bits = flat.view(np.uint32)
        bits[:] = buf.view("<u2")
        bits <<= 16  # bf16 is the top half of an f32
    else:
        bs, ts = GGML_QUANT_SIZES[qt]
        blocks = buf.view(BLOCK_DTYPES[qt])  # (n_blocks,) records
        rows = flat.reshape(-1, bs)
        kernel = _DEQUANT[qt]
        step = max(1, _CHUNK_ELEMS // bs)
        for i in range(0, len(blocks), step):
            kernel(blocks[i:i + step], rows[i:i + step])
    return out


# ---------------------------------------------------------------------------------------------
# lossless conversion to Q8_0 (a stacked weight of mixed types)

# types whose blocks Q8_0 holds exactly: the same 32 elements under the same f16 scale, values d * q with
# q an int in [-8, 7] (Q4_0) or [-16, 15] (Q5_0); Q8_0 itself
TO_Q8_0 = (QType.Q4_0, QType.Q5_0, QType.Q8_0)


def to_q8_0(raw: np.ndarray, qtype: QType) -> np.ndarray:
    """The raw bytes of a Q4_0, Q5_0 or Q8_0 tensor as Q8_0 blocks that dequantize to the same values, bit
    for bit (u8, 34 bytes a block of 32). ValueError for another type or a byte count of partial blocks."""
    qt = _as_qtype(qtype)
    if qt not in TO_Q8_0:
        raise ValueError(f"{qt.name} does not convert to Q8_0 without loss (only Q4_0, Q5_0, Q8_0 do)")
    buf = _as_bytes(raw)
    if buf.size % type_size(qt):
        raise ValueError(f"{buf.size} bytes are not whole {qt.name} blocks of {type_size(qt)}")
    if qt == QType.Q8_0:
        return buf.copy()
    b = buf.view(BLOCK_DTYPES[qt])
    q = _nibbles32(b["qs"])
    if qt == QType.Q5_0:
        q |= _high_bits32(b["qh"])
    q -= 8 if qt == QType.Q4_0 else 16  # wraps in u8: the int8 values
    out = np.empty(len(b), dtype=BLOCK_DTYPES[QType.Q8_0])
    out["d"] = b["d"]
    out["qs"] = q.view(np.int8)
    return out.view(np.uint8)


# ---------------------------------------------------------------------------------------------
# quantization (reference: gguf) and random valid blocks


def quantize(x: np.ndarray, qtype: QType) -> np.ndarray:
    """Quantize ``x`` (converted to float32 first) with gguf's reference quantizer.

    Returns the raw bytes as uint8 of shape ``(*x.shape[:-1], row_bytes(qtype, x.shape[-1]))``.
    Raises NotImplementedError for types gguf cannot quantize (the K-quants), ValueError for a
    row length that is not a multiple of the block size.
    """
    qt = _as_qtype(qtype)
    if qt not in QUANTIZABLE:
        raise NotImplementedError(f"quantization to {qt.name} is not available (gguf.quants has none)")
    xf = np.asarray(x, dtype=np.float32)
    if xf.ndim == 0:
        xf = xf.reshape(1)
    byte_shape = _byte_shape(qt, xf.shape)
    q = gguf.quants.quantize(xf, qt)
    if np.shares_memory(q, xf):  # F32 returns its input; don't hand out an alias
        q = q.copy()
    return np.ascontiguousarray(q).view(np.uint8).reshape(byte_shape)


def _random_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """n f16 values with |v| log-uniform in [1e-3, 1e-1] and random sign."""
    mag = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), size=n))
    sign = rng.choice(np.array([-1.0, 1.0]), size=n)
    return (sign * mag).astype(_F16)


def random_blocks(qtype: QType, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Random valid raw bytes for a ``qtype`` tensor of numpy shape ``shape``.

    Quant bits are uniformly random; every f16 scale / min field is finite with
    |v| in [1e-3, 1e-1], so every dequantized value is finite. Plain float types get standard
    normal values. Returns uint8 of shape ``(*shape[:-1], row_bytes(qtype, shape[-1]))``.
    """
    qt = _supported(qtype)
    shp = _norm_shape(shape)
    byte_shape = _byte_shape(qt, shp)
    n_elems = math.prod(shp)
    if qt == QType.F32:
        buf = rng.standard_normal(n_elems, dtype=np.float32).view(np.uint8)
    elif qt == QType.F16:
        buf = rng.standard_normal(n_elems, dtype=np.float32).astype(_F16).view(np.uint8)
    elif qt == QType.BF16:
        bits = rng.standard_normal(n_elems, dtype=np.float32).view(np.uint32) >> 16  # truncate
        buf = bits.astype("<u2").view(np.uint8)
    else:
        buf = rng.integers(0, 256, size=math.prod(byte_shape), dtype=np.uint8)
        blocks = buf.view(BLOCK_DTYPES[qt])
        for name, (dt, *_) in BLOCK_DTYPES[qt].fields.items():
            if dt == _F16:
                blocks[name] = _random_scales(rng, len(blocks))
    return buf.reshape(byte_shape)
