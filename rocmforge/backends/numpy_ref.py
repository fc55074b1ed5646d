"""The numpy reference backend: every op in float32 (float64 where the reduction is cheap), the oracle.

Each op's reference is a function named after its `Op` (`MUL_MAT`, `SET_ROWS`, ...) taking the source
arrays and the node's params; `REF` maps ops to them. `NumpyBackend` (numpy_backend.py) executes whole
graphs with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import quant
from ..ir.graph import Tensor
from ..ir.ops import NP_DTYPES, SAMPLE_MAX_K, SAMPLE_PARAMS, Op
from .sampling import sample_logits


class QuantRows:
    """A quantized 2-D weight kept in its GGUF blocks; rows are dequantized on demand."""

    def __init__(self, raw: np.ndarray, qtype: quant.QType, shape: tuple[int, int]) -> None:
        self.raw = np.asarray(raw).reshape(shape[0], quant.row_bytes(qtype, shape[1]))
        self.qtype, self.shape = qtype, shape

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return quant.dequantize(self.raw[idx], self.qtype, (len(idx), self.shape[1]))

    def full(self) -> np.ndarray:
        return quant.dequantize(self.raw, self.qtype, self.shape)


# ---- op references (numpy order: last dim contiguous) ------------------------------------------------

def GET_ROWS(a: np.ndarray | QuantRows, idx: np.ndarray) -> np.ndarray:
    # f32 [n, D]
    if isinstance(a, QuantRows):
        return a.rows(idx)
    return np.asarray(a)[idx].astype(np.float32)


def MUL_MAT(w: np.ndarray, x: np.ndarray, xq: np.ndarray | None = None) -> np.ndarray:
    # (w [N, K], x [..., K]) -> f32 [..., N]; f32 products, BLAS accumulation as ggml's f32 path does. xq
    # (QUANTIZE_X8 of x) is what a backend's int8 kernels read instead of x: the reference reads x
    x2 = x.reshape(-1, x.shape[-1]).astype(np.float32, copy=False)
    y = x2 @ w.astype(np.float32, copy=False).T
    return y.reshape(*x.shape[:-1], w.shape[0])


def MUL_MAT_ADD(w: np.ndarray, x: np.ndarray, b: np.ndarray, xq: np.ndarray | None = None) -> np.ndarray:
    # MUL_MAT then ADD (a fused node computes exactly the pair it replaced): f32 [..., N]
    return ADD(MUL_MAT(w, x), b)


def MUL_MAT_SWIGLU(w: np.ndarray, x: np.ndarray, xq: np.ndarray | None = None) -> np.ndarray:
    # MUL_MAT over interleaved gate/up rows, then SWIGLU of its even (gate) and odd (up) columns: f32 [..., F]
    y = MUL_MAT(w, x)
    return SWIGLU(y[..., 0::2], y[..., 1::2])


def RMS_NORM_MUL_MAT(w: np.ndarray, x: np.ndarray, wn: np.ndarray, xq: np.ndarray | None = None, *,
                     eps: float) -> np.ndarray:
    # xq: RMS_NORM_MUL_QUANTIZE_X8(x, wn), what a backend's int8 kernel reads (the reference reads x and wn)
    return MUL_MAT(w, RMS_NORM_MUL(x, wn, eps=eps))


def RMS_NORM_MUL_MAT_ADD(w: np.ndarray, x: np.ndarray, wn: np.ndarray, b: np.ndarray,
                         xq: np.ndarray | None = None, *, eps: float) -> np.ndarray:
    return MUL_MAT_ADD(w, RMS_NORM_MUL(x, wn, eps=eps), b)


def RMS_NORM_MUL_MAT_SWIGLU(w: np.ndarray, x: np.ndarray, wn: np.ndarray, xq: np.ndarray | None = None, *,
                            eps: float) -> np.ndarray:
    return MUL_MAT_SWIGLU(w, RMS_NORM_MUL(x, wn, eps=eps))


def QUANTIZE_X8(x: np.ndarray) -> np.ndarray:
    # x [..., K] f32 -> i32 [..., K * 5 / 16], each row's bytes: int8 [K] (rint(x * 127 / amax) per block
    # of 32, llama.cpp's q8_1 values), then f32 pairs [K / 32]: (scale amax / 127, sum of the int8 values
    # times the scale); f32 arithmetic throughout, as the kernel's
    K = x.shape[-1]
    xb = x.reshape(-1, K // 32, 32).astype(np.float32)
    amax = np.abs(xb).max(-1)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(xb * inv[..., None]).astype(np.int32)
    d = (amax / np.float32(127)).astype(np.float32)
    ds = np.stack([d, q.sum(-1).astype(np.float32) * d], -1).astype(np.float32)
    values = q.astype(np.int8).reshape(-1, K).view(np.uint8)
    rows = np.concatenate([values, ds.reshape(-1, K // 16).view(np.uint8)], 1)
    return rows.view(np.int32).reshape(*x.shape[:-1], -1)


def RMS_NORM_MUL_QUANTIZE_X8(a: np.ndarray, wn: np.ndarray, *, eps: float) -> np.ndarray:
    # (a [..., K], wn [K]) -> QUANTIZE_X8 of RMS_NORM_MUL(a, wn): the norm and the int8 copy in one op
    return QUANTIZE_X8(RMS_NORM_MUL(a, wn, eps=eps))


def dequantize_x8(xq: np.ndarray, K: int) -> np.ndarray:
    """QUANTIZE_X8's rows [..., K * 5 / 16] i32 -> the x they hold, f32 [..., K] (int8 values x scales)."""
    rows = np.ascontiguousarray(xq).reshape(-1, xq.shape[-1]).view(np.uint8)
    q = rows[:, :K].view(np.int8).astype(np.float32).reshape(-1, K // 32, 32)
    d = rows[:, K:].copy().view(np.float32).reshape(-1, K // 32, 2)[..., 0]
    return (q * d[..., None]).reshape(*xq.shape[:-1], K)


def ADD(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32) + b.astype(np.float32)).astype(np.float32)


def MUL(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32) * b.astype(np.float32)).astype(np.float32)


def SCALE(a: np.ndarray, *, s: float) -> np.ndarray:
    return (a.astype(np.float32) * np.float32(s)).astype(np.float32)


def RMS_NORM(a: np.ndarray, *, eps: float) -> np.ndarray:
    a64 = a.astype(np.float64)
    ms = np.mean(a64 * a64, axis=-1, keepdims=True)
    return (a64 / np.sqrt(ms + eps)).astype(np.float32)


def RMS_NORM_MUL(a: np.ndarray, w: np.ndarray, *, eps: float) -> np.ndarray:
    # RMS_NORM then MUL by the norm's weight [n]: f32 [..., n]
    return MUL(RMS_NORM(a, eps=eps), w)


def rope_angles(pos: np.ndarray, n_dims: int, base: float, freq_scale: float) -> np.ndarray:
    """theta[t, i] = pos[t] * freq_scale * base^(-2i/n_dims), i < n_dims/2 (float64)."""
    inv_freq = base ** (-np.arange(0, n_dims, 2, dtype=np.float64) / n_dims)
    return pos.astype(np.float64)[:, None] * freq_scale * inv_freq[None, :]


def ROPE(x: np.ndarray, pos: np.ndarray, *, n_dims: int, neox: bool, base: float,
         freq_scale: float = 1.0) -> np.ndarray:
    # x f32 [T, H, D]: normal mode rotates pairs (2i, 2i+1); NEOX rotates (i, i + n_dims/2)
    theta = rope_angles(pos, n_dims, base, freq_scale)[:, None, :]  # [T, 1, n_dims/2]
    cos, sin = np.cos(theta), np.sin(theta)
    out = x.astype(np.float64).copy()
    if neox:
        x0, x1 = out[..., : n_dims // 2].copy(), out[..., n_dims // 2: n_dims].copy()
        out[..., : n_dims // 2] = x0 * cos - x1 * sin
        out[..., n_dims // 2: n_dims] = x0 * sin + x1 * cos
    else:
        x0, x1 = out[..., 0:n_dims:2].copy(), out[..., 1:n_dims:2].copy()
        out[..., 0:n_dims:2] = x0 * cos - x1 * sin
        out[..., 1:n_dims:2] = x0 * sin + x1 * cos
    return out.astype(np.float32)


def VIEW(a: np.ndarray, *, shape: tuple, strides: tuple, offset: int) -> np.ndarray:
    flat = a.reshape(-1)  # a view when a is contiguous (sources of views are)
    item = flat.itemsize
    # writeable only over writeable storage (the KV cache, which FLASH_ATTN_EXT's k_new writes through)
    return np.lib.stride_tricks.as_strided(flat[offset:], shape=shape, strides=[s * item for s in strides],
                                           writeable=a.flags.writeable and flat.base is not None)


def RESHAPE(a: np.ndarray, *, shape: tuple) -> np.ndarray:
    return a.reshape(shape)


def CONT(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).copy()


def CPY(a: np.ndarray, *, dtype: str) -> np.ndarray:
    return a.astype(NP_DTYPES[dtype])


def SET_ROWS(dst: np.ndarray, src: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # overwrite (never add) rows idx of dst, in place; the result is dst
    if idx.size and (idx.min() < 0 or idx.max() >= dst.shape[0]):
        raise IndexError(f"SET_ROWS: row index out of range [0, {dst.shape[0]}): {idx.min()}..{idx.max()}")
    dst[idx] = src.astype(dst.dtype)
    return dst


def SET_ROWS_ROPE(dst: np.ndarray, src: np.ndarray, idx: np.ndarray, *, n_rot: int, head_dim: int,
                  n_dims: int, neox: bool, base: float, freq_scale: float = 1.0) -> np.ndarray:
    # SET_ROWS of src [n, W] whose first n_rot columns, as heads of head_dim, are ROPE'd at positions idx
    rows = src.astype(np.float32)
    heads = rows[:, :n_rot].reshape(rows.shape[0], n_rot // head_dim, head_dim)
    roped = ROPE(heads, idx, n_dims=n_dims, neox=neox, base=base, freq_scale=freq_scale)
    return SET_ROWS(dst, np.concatenate([roped.reshape(rows.shape[0], n_rot), rows[:, n_rot:]], axis=1), idx)


def SOFT_MAX(a: np.ndarray, mask: np.ndarray | None = None, *, scale: float = 1.0) -> np.ndarray:
    # mask [m, n] repeats over rows: row r of a (second-to-last axis) takes mask row r % m
    z = a.astype(np.float64) * scale
    if mask is not None:
        reps = z.shape[-2] // mask.shape[0]
        z = z + np.tile(mask.astype(np.float64), (reps, 1))
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / np.sum(e, axis=-1, keepdims=True)).astype(np.float32)


def SILU(a: np.ndarray) -> np.ndarray:
    a64 = a.astype(np.float64)
    return (a64 / (1.0 + np.exp(-a64))).astype(np.float32)


def SWIGLU(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    g = gate.astype(np.float64)
    return (g / (1.0 + np.exp(-g)) * up.astype(np.float64)).astype(np.float32)


def FLASH_ATTN_EXT(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos: np.ndarray,
                   k_new: np.ndarray | None = None, v_new: np.ndarray | None = None, *,
                   scale: float, rope_q: tuple | None = None) -> np.ndarray:
    # q [T, H, D], k/v [C, Hkv, D]; query t sees cache rows 0..pos[t]; head h uses kv head h // (H/Hkv);
    # rope_q (n_dims, neox, base, freq_scale): q ROPE'd at pos first. k_new, v_new [T, Hkv * D]: written
    # into rows pos of k and v (in place: views of the cache) first, k_new ROPE'd as q is (SET_ROWS_ROPE's)
    if k_new is not None:
        kr = k_new.astype(np.float32).reshape(k_new.shape[0], k.shape[1], k.shape[2])
        if rope_q is not None:
            n_dims, neox, base, freq_scale = rope_q
            kr = ROPE(kr, pos, n_dims=n_dims, neox=neox, base=base, freq_scale=freq_scale)
        k[pos] = kr.astype(k.dtype)
        v[pos] = v_new.reshape(kr.shape).astype(v.dtype)
    if rope_q is not None:
        n_dims, neox, base, freq_scale = rope_q
        q = ROPE(q, pos, n_dims=n_dims, neox=neox, base=base, freq_scale=freq_scale)
    n_tok, n_head, hd = q.shape
    n_kv_head = k.shape[1]
    n_kv = int(pos.max()) + 1
    if n_kv > k.shape[0] or pos.min() < 0:
        raise IndexError(f"FLASH_ATTN_EXT: position {int(pos.max())} outside the cache of {k.shape[0]}")
    g = n_head // n_kv_head
    qg = q.astype(np.float64).reshape(n_tok, n_kv_head, g, hd)
    kk = k[:n_kv].astype(np.float64)
    vv = v[:n_kv].astype(np.float64)
    s = np.einsum("tkgd,ckd->kgtc", qg, kk) * scale  # [Hkv, G, T, n_kv]
    visible = np.arange(n_kv)[None, :] <= pos[:, None]  # [T, n_kv]
    s = np.where(visible, s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    o = np.einsum("kgtc,ckd->tkgd", p, vv)
    return o.reshape(n_tok, n_head, hd).astype(np.float32)


def ARGMAX(a: np.ndarray) -> np.ndarray:
    return np.argmax(a, axis=-1).astype(np.int32)


def SAMPLE(logits: np.ndarray, params: np.ndarray) -> np.ndarray:
    # logits f32 [n, V], params i32 [8] (sampling.sample_params) -> i32 [n]: sample_logits with at most
    # SAMPLE_MAX_K candidates (the engine samples a larger top_k, or none, on the host: sample_logits)
    if np.shape(params) != (SAMPLE_PARAMS,):
        raise ValueError(f"SAMPLE: params must be [{SAMPLE_PARAMS}], got {np.shape(params)}")
    return sample_logits(logits, params, SAMPLE_MAX_K)


REF: dict[Op, Callable[..., np.ndarray]] = {op: globals()[op.value] for op in Op if op is not Op.NONE}


def run_op(t: Tensor, srcs: list[Any]) -> np.ndarray:
    """Evaluate one node on numpy arrays of its sources."""
    return REF[t.op](*srcs, **t.params)
