"""The IR's operations: ggml's op names, with the shape and dtype rule of each.

Shapes are numpy order (last dimension contiguous), so a ggml tensor with ne = [K, N] is (N, K) here.
Every rule takes the source shapes/dtypes and the params and returns the result's (shape, dtype), raising
`IRError` for a mismatch. Backends implement the semantics; `backends/numpy_ref.py` is the definition.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .graph import Tensor

FLOAT_DTYPES = ("f32", "f16")
# dtype names: activations are f32/f16/i32; weights may also carry any GGML type name ("q4_0", "q6_k", ...)
ACT_DTYPES = ("f32", "f16", "i32")
NP_DTYPES = {"f32": np.float32, "f16": np.float16, "i32": np.int32}  # activation dtype -> numpy
ITEMSIZE = {k: np.dtype(v).itemsize for k, v in NP_DTYPES.items()}
# SAMPLE: i32 words of its params input (seed, counter, top_k, temperature, top_p: sampling.sample_params)
# and the most candidates it keeps (top_k above it, or 0, is cut there: the kernel's shared-memory bound)
SAMPLE_PARAMS = 8
SAMPLE_MAX_K = 256


class IRError(ValueError):
    """A graph that cannot be built: wrong shapes, dtypes or params."""


class Op(enum.Enum):
    NONE = "NONE"  # a leaf: input, weight or persistent state (KV cache)
    GET_ROWS = "GET_ROWS"  # (a [R, D], idx i32 [n]) -> f32 [n, D]
    MUL_MAT = "MUL_MAT"  # (w [N, K], x [..., K], xq?) -> f32 [..., N]   (x @ w.T, ggml's mul_mat(w, x))
    # xq: QUANTIZE_X8(x), the copy of x a backend's int8 kernels read (the reference reads x)
    MUL_MAT_ADD = "MUL_MAT_ADD"  # (w [N, K], x [..., K], b, xq?) -> MUL_MAT(w, x) + b; b [N] or [..., N]
    # (w [2F, K] with gate's and up's rows interleaved: row 2i gate_i, row 2i+1 up_i; x [..., K], xq?) ->
    # f32 [..., F]: SWIGLU of MUL_MAT(w, x)'s even and odd columns (gate and up in one mat-vec)
    MUL_MAT_SWIGLU = "MUL_MAT_SWIGLU"
    QUANTIZE_X8 = "QUANTIZE_X8"  # (x [..., K] f32) -> i32 [..., K * 5 / 16]: int8 rows, block scales, sums
    # (a [..., K], wn [K]; eps) -> QUANTIZE_X8(RMS_NORM_MUL(a, wn)): the xq of a norm-folded mat-vec on int8 x
    RMS_NORM_MUL_QUANTIZE_X8 = "RMS_NORM_MUL_QUANTIZE_X8"
    # MUL_MAT, MUL_MAT_ADD and MUL_MAT_SWIGLU of RMS_NORM_MUL(x, wn): (w, x, wn [K][, b][, xq]; eps), the
    # norm folded into the mat-vec that reads it (passes.fold_norms: where a backend's kernel computes it
    # so), or into the RMS_NORM_MUL_QUANTIZE_X8 xq its int8 kernel reads (the reference reads x and wn)
    RMS_NORM_MUL_MAT = "RMS_NORM_MUL_MAT"
    RMS_NORM_MUL_MAT_ADD = "RMS_NORM_MUL_MAT_ADD"
    RMS_NORM_MUL_MAT_SWIGLU = "RMS_NORM_MUL_MAT_SWIGLU"
    ADD = "ADD"  # (a, b) -> a + b, b broadcast to a
    MUL = "MUL"  # (a, b) -> a * b, b broadcast to a
    SCALE = "SCALE"  # (a; s) -> a * s
    RMS_NORM = "RMS_NORM"  # (a; eps) -> a / sqrt(mean(a^2, last) + eps)
    RMS_NORM_MUL = "RMS_NORM_MUL"  # (a [..., n], w [n]; eps) -> RMS_NORM(a) * w
    ROPE = "ROPE"  # (x [T, H, D], pos i32 [T]; n_dims, neox, base, freq_scale)
    VIEW = "VIEW"  # (a; shape, strides, offset) in elements of a's storage
    RESHAPE = "RESHAPE"  # (a; shape) of a contiguous a
    CONT = "CONT"  # (a) -> contiguous copy (of a view)
    CPY = "CPY"  # (a; dtype) -> a converted to dtype
    SET_ROWS = "SET_ROWS"  # (dst [R, ...], src [n, ...], idx i32 [n]) -> dst with rows idx overwritten
    # (dst [R, W], src [n, W], idx i32 [n]; n_rot, head_dim, n_dims, neox, base, freq_scale) -> SET_ROWS of
    # src with its first n_rot columns (heads of head_dim) ROPE'd at positions idx: K and V into one cache
    SET_ROWS_ROPE = "SET_ROWS_ROPE"
    SOFT_MAX = "SOFT_MAX"  # (a [..., n], mask? [m, n]; scale) -> softmax(a * scale + mask) over last dim
    SILU = "SILU"  # (a) -> a * sigmoid(a)
    SWIGLU = "SWIGLU"  # (gate, up) -> silu(gate) * up
    # (q [T, H, D], k [C, Hkv, D], v [C, Hkv, D], pos i32 [T][, k_new, v_new f32 [T, Hkv * D]]; scale,
    # rope_q) with rope_q None or ROPE's (n_dims, neox, base, freq_scale): q ROPE'd at pos first. With k_new
    # and v_new it first writes them into rows pos of k's and v's storage (k_new ROPE'd as q is; the cache
    # writes of a decode step, fuse_kv_write): a side effect, as SET_ROWS'
    FLASH_ATTN_EXT = "FLASH_ATTN_EXT"
    ARGMAX = "ARGMAX"  # (a [..., n]) -> i32 [...]
    # (logits f32 [n, V], params i32 [SAMPLE_PARAMS]) -> i32 [n]: a token a row, seeded (numpy_ref.SAMPLE)
    SAMPLE = "SAMPLE"


Shape = tuple[int, ...]
Rule = Callable[[Sequence[Shape], Sequence[str], dict], tuple[Shape, str]]


def _need(cond: bool, op: Op, msg: str) -> None:
    if not cond:
        raise IRError(f"{op.value}: {msg}")


def _broadcastable(a: Shape, b: Shape) -> bool:
    if len(b) > len(a):
        return False
    return all(db in (1, da) for da, db in zip(a[::-1], b[::-1], strict=False))


def _float(op: Op, dt: str, what: str) -> None:
    _need(dt in FLOAT_DTYPES, op, f"{what} must be f32 or f16, got {dt}")


def _i32(op: Op, dt: str, what: str) -> None:
    _need(dt == "i32", op, f"{what} must be i32, got {dt}")


def _get_rows(s, d, p):
    _need(len(s[0]) == 2 and len(s[1]) == 1, Op.GET_ROWS, f"want a [R, D] and idx [n], got {s[0]} {s[1]}")
    _i32(Op.GET_ROWS, d[1], "idx")
    return (s[1][0], s[0][1]), "f32"


# the ops MUL_MAT's kernels run, and the index of each one's QUANTIZE_X8 source (when it has one)
MUL_MAT_OPS = {Op.MUL_MAT: 2, Op.MUL_MAT_ADD: 3, Op.MUL_MAT_SWIGLU: 2}


# the ops that quantize a mat-vec's x to int8 (its xq source)
QUANTIZE_X8_OPS = frozenset({Op.QUANTIZE_X8, Op.RMS_NORM_MUL_QUANTIZE_X8})


def xq_index(op: Op) -> int | None:
    """The index of the xq source of a MUL_MAT_OPS or NORM_MUL_MAT_OPS node (None: another op)."""
    if op in MUL_MAT_OPS:
        return MUL_MAT_OPS[op]
    return MUL_MAT_OPS[NORM_MUL_MAT_OPS[op]] + 1 if op in NORM_MUL_MAT_OPS else None


def xq_source(t: Tensor) -> Tensor | None:
    """The xq source (QUANTIZE_X8 or RMS_NORM_MUL_QUANTIZE_X8) of a MUL_MAT-family node, norm-folded or
    not (None: it has none, or another op)."""
    i = xq_index(t.op)
    return t.src[i] if i is not None and len(t.src) > i else None


def x8_words(K: int) -> int:
    """i32 words of one row of QUANTIZE_X8: int8 [K], then (scale, sum) f32 pairs [K / 32]."""
    return (K + K // 4) // 4


def _quantize_x8(s, d, p):
    (x,) = s
    _float(Op.QUANTIZE_X8, d[0], "x")
    _need(len(x) >= 1 and x[-1] % 32 == 0, Op.QUANTIZE_X8, f"x's rows must be whole blocks of 32, got {x}")
    return (*x[:-1], x8_words(x[-1])), "i32"


def _mul_mat(s, d, p):
    w, x = s[:2]
    _need(len(w) == 2, Op.MUL_MAT, f"weight must be 2-D, got {w}")
    _need(len(x) >= 1 and x[-1] == w[1], Op.MUL_MAT, f"inner sizes differ: w {w} x {x}")
    if len(s) == 3:
        want = (*x[:-1], x8_words(x[-1]))
        ok = s[2] == want and d[2] == "i32"
        _need(ok, Op.MUL_MAT, f"xq must be i32 {want} (QUANTIZE_X8 of x), got {s[2]} {d[2]}")
    _float(Op.MUL_MAT, d[1], "x")
    return (*x[:-1], w[0]), "f32"


def _mul_mat_swiglu(s, d, p):
    out, dt = _mul_mat(s, d, p)
    _need(out[-1] % 2 == 0, Op.MUL_MAT_SWIGLU, f"w's rows must be gate/up pairs, got {s[0]}")
    return (*out[:-1], out[-1] // 2), dt


def _mul_mat_add(s, d, p):
    _need(len(s) in (3, 4), Op.MUL_MAT_ADD, f"want (w, x, b[, xq]), got {len(s)} sources")
    out, dt = _mul_mat([s[0], s[1], *s[3:]], [d[0], d[1], *d[3:]], p)
    b = s[2]
    _need(b in ((out[-1],), out), Op.MUL_MAT_ADD, f"b must be [{out[-1]}] or {out}, got {b}")
    _float(Op.MUL_MAT_ADD, d[2], "b")
    return out, dt


# the norm-folded mat-vecs -> the MUL_MAT op each computes of RMS_NORM_MUL(x, wn)
NORM_MUL_MAT_OPS = {Op.RMS_NORM_MUL_MAT: Op.MUL_MAT, Op.RMS_NORM_MUL_MAT_ADD: Op.MUL_MAT_ADD,
                    Op.RMS_NORM_MUL_MAT_SWIGLU: Op.MUL_MAT_SWIGLU}


def _norm_mul_mat(op: Op):
    def rule(s, d, p):
        n = 4 if op is Op.RMS_NORM_MUL_MAT_ADD else 3
        want = f"(w, x, wn{', b' if n == 4 else ''}[, xq])"
        _need(len(s) in (n, n + 1), op, f"want {want}, got {len(s)} sources")
        _need("eps" in p, op, "needs eps")
        _rms_norm_mul([s[1], s[2]], [d[1], d[2]], p)
        return RULES[NORM_MUL_MAT_OPS[op]]([s[0], s[1], *s[3:]], [d[0], d[1], *d[3:]], p)

    return rule


def _rms_norm_mul_quantize_x8(s, d, p):
    _need("eps" in p, Op.RMS_NORM_MUL_QUANTIZE_X8, "needs eps")
    _rms_norm_mul(s, d, p)
    return _quantize_x8(s[:1], ["f32"], p)


def _rms_norm_mul(s, d, p):
    a, w = s
    _float(Op.RMS_NORM_MUL, d[0], "a")
    _float(Op.RMS_NORM_MUL, d[1], "w")
    _need(w == (a[-1],), Op.RMS_NORM_MUL, f"w must be [{a[-1]}], got {w}")
    return a, "f32"


def _binary(op: Op):
    def rule(s, d, p):
        _need(_broadcastable(s[0], s[1]), op, f"{s[1]} does not broadcast to {s[0]}")
        _float(op, d[0], "a")
        _float(op, d[1], "b")
        return s[0], "f32"

    return rule


def _unary_f32(op: Op):
    def rule(s, d, p):
        _float(op, d[0], "a")
        return s[0], "f32"

    return rule


def _rope(s, d, p):
    x, pos = s
    _need(len(x) == 3, Op.ROPE, f"x must be [T, H, D], got {x}")
    _need(pos == (x[0],), Op.ROPE, f"pos must be [{x[0]}], got {pos}")
    _i32(Op.ROPE, d[1], "pos")
    n_dims = p["n_dims"]
    _need(0 < n_dims <= x[2] and n_dims % 2 == 0, Op.ROPE, f"n_dims {n_dims} vs head dim {x[2]}")
    return x, "f32"


def _view(s, d, p):
    shape, strides, offset = tuple(p["shape"]), tuple(p["strides"]), p["offset"]
    _need(len(shape) == len(strides), Op.VIEW, "shape and strides differ in length")
    _need(offset >= 0 and all(n > 0 for n in shape), Op.VIEW, f"bad view {shape} at {offset}")
    last = offset + sum((n - 1) * st for n, st in zip(shape, strides, strict=True))
    _need(last < math.prod(s[0]), Op.VIEW, f"view {shape}/{strides}+{offset} runs past source {s[0]}")
    return shape, d[0]


def _reshape(s, d, p):
    shape = tuple(p["shape"])
    _need(math.prod(shape) == math.prod(s[0]), Op.RESHAPE, f"{s[0]} -> {shape} changes the size")
    return shape, d[0]


def _cont(s, d, p):
    return s[0], d[0]


def _cpy(s, d, p):
    _need(p["dtype"] in ACT_DTYPES, Op.CPY, f"unknown dtype {p['dtype']}")
    return s[0], p["dtype"]


def _set_rows(s, d, p):
    dst, src, idx = s
    _need(dst[1:] == src[1:], Op.SET_ROWS, f"row shapes differ: dst {dst} src {src}")
    _need(idx == (src[0],), Op.SET_ROWS, f"idx must be [{src[0]}], got {idx}")
    _i32(Op.SET_ROWS, d[2], "idx")
    return dst, d[0]


def _set_rows_rope(s, d, p):
    dst, src, idx = s
    op = Op.SET_ROWS_ROPE
    _need(len(dst) == 2 and dst[1:] == src[1:], op, f"want dst [R, W] and src [n, W], got {dst} {src}")
    _need(idx == (src[0],), op, f"idx must be [{src[0]}], got {idx}")
    _i32(op, d[2], "idx")
    _float(op, d[1], "src")
    D, n_rot = p["head_dim"], p["n_rot"]
    _need(D > 0 and 0 < n_rot <= src[1] and n_rot % D == 0, op, f"n_rot {n_rot} is not whole heads of {D}")
    _need(0 < p["n_dims"] <= D and p["n_dims"] % 2 == 0, op, f"n_dims {p['n_dims']} vs head_dim {D}")
    return dst, d[0]


def _soft_max(s, d, p):
    _float(Op.SOFT_MAX, d[0], "a")
    if len(s) > 1:
        m = s[1]
        _need(len(m) == 2 and m[-1] == s[0][-1], Op.SOFT_MAX, f"mask {m} does not fit {s[0]}")
        _need(len(s[0]) >= 2 and s[0][-2] % m[0] == 0, Op.SOFT_MAX, f"mask rows {m[0]} vs {s[0]}")
    return s[0], "f32"


def _swiglu(s, d, p):
    _need(s[0] == s[1], Op.SWIGLU, f"gate {s[0]} and up {s[1]} differ")
    return s[0], "f32"


def _flash_attn(s, d, p):
    _need(len(s) in (4, 6), Op.FLASH_ATTN_EXT, f"takes q, k, v, pos[, k_new, v_new], got {len(s)} sources")
    q, k, v, pos = s[:4]
    _need(len(q) == 3 and len(k) == 3 and k == v, Op.FLASH_ATTN_EXT, f"q {q} k {k} v {v}")
    _need(q[2] == k[2] and q[1] % k[1] == 0, Op.FLASH_ATTN_EXT, f"heads/dims differ: q {q} k {k}")
    _need(pos == (q[0],), Op.FLASH_ATTN_EXT, f"pos must be [{q[0]}], got {pos}")
    _i32(Op.FLASH_ATTN_EXT, d[3], "pos")
    if len(s) == 6:
        row, op = (q[0], k[1] * k[2]), Op.FLASH_ATTN_EXT
        _need(s[4] == row and s[5] == row, op, f"k_new, v_new must be {row}, got {s[4]} {s[5]}")
        _need(d[4] == "f32" and d[5] == "f32", op, f"k_new, v_new must be f32, got {d[4]} {d[5]}")
    return q, "f32"


def _argmax(s, d, p):
    _float(Op.ARGMAX, d[0], "a")
    return s[0][:-1], "i32"


def _sample(s, d, p):
    logits, params = s
    _need(len(logits) == 2 and d[0] == "f32", Op.SAMPLE, f"logits must be f32 [n, V], got {d[0]} {logits}")
    _need(params == (SAMPLE_PARAMS,), Op.SAMPLE, f"params must be [{SAMPLE_PARAMS}], got {params}")
    _i32(Op.SAMPLE, d[1], "params")
    return logits[:1], "i32"


RULES: dict[Op, Rule] = {
    Op.GET_ROWS: _get_rows,
    Op.MUL_MAT: _mul_mat,
    Op.MUL_MAT_ADD: _mul_mat_add,
    Op.MUL_MAT_SWIGLU: _mul_mat_swiglu,
    **{op: _norm_mul_mat(op) for op in (Op.RMS_NORM_MUL_MAT, Op.RMS_NORM_MUL_MAT_ADD,
                                        Op.RMS_NORM_MUL_MAT_SWIGLU)},
    Op.QUANTIZE_X8: _quantize_x8,
    Op.RMS_NORM_MUL_QUANTIZE_X8: _rms_norm_mul_quantize_x8,
    Op.ADD: _binary(Op.ADD),
    Op.MUL: _binary(Op.MUL),
    Op.SCALE: _unary_f32(Op.SCALE),
    Op.RMS_NORM: _unary_f32(Op.RMS_NORM),
    Op.RMS_NORM_MUL: _rms_norm_mul,
    Op.ROPE: _rope,
    Op.VIEW: _view,
    Op.RESHAPE: _reshape,
    Op.CONT: _cont,
    Op.CPY: _cpy,
    Op.SET_ROWS: _set_rows,
    Op.SET_ROWS_ROPE: _set_rows_rope,
    Op.SOFT_MAX: _soft_max,
    Op.SILU: _unary_f32(Op.SILU),
    Op.SWIGLU: _swiglu,
    Op.FLASH_ATTN_EXT: _flash_attn,
    Op.ARGMAX: _argmax,
    Op.SAMPLE: _sample,
}

# ops whose result is the storage of (a view of) their first source, not a new buffer
ALIASING = frozenset({Op.VIEW, Op.RESHAPE, Op.SET_ROWS, Op.SET_ROWS_ROPE})
# ops that write rows of their first source in place (the KV-cache writes): side effects, never merged
WRITES_ROWS = frozenset({Op.SET_ROWS, Op.SET_ROWS_ROPE})


def writes_into(t: Tensor) -> list[Tensor]:
    """The sources whose storage node t writes besides its result: SET_ROWS' destination (its result
    aliases it), a FLASH_ATTN_EXT's k and v where it takes k_new and v_new; [] for a pure op."""
    if t.op in WRITES_ROWS:
        return [t.src[0]]
    if t.op is Op.FLASH_ATTN_EXT and len(t.src) == 6:
        return [t.src[1], t.src[2]]
    return []


# element-wise ops that may write their result over their first source
INPLACE_OK = frozenset({Op.ADD, Op.MUL, Op.SCALE, Op.SILU, Op.SWIGLU})


def infer(op: Op, shapes: Sequence[Shape], dtypes: Sequence[str], params: dict) -> tuple[Shape, str]:
    """Result shape and dtype of `op` on sources of these shapes/dtypes."""
    return RULES[op](list(shapes), list(dtypes), params)
