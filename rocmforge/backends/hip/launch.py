"""One launcher per Op, named after it, each beside the numpy reference's semantics (numpy_ref.py).

A launcher takes the launch context, the preallocated output (a `DevTensor`, contiguous) and the
sources, plus the node's params, and enqueues kernels; nothing is synchronized. VIEW and RESHAPE
launch nothing: they return a new `DevTensor` over the source's storage. Sources may be strided views:
a launcher whose kernel wants contiguous input copies it first (`contiguous`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.graph import contiguous_strides
from ...ir.ops import ITEMSIZE
from .modules import ModuleCache

# GGUF weight types the kernels read natively (their names as the IR writes them)
NATIVE_WEIGHTS = ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
# (elements, bytes) per block
BLOCK = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "q5_0": (32, 22),
    "q8_0": (32, 34),
    "q4_k": (256, 144),
    "q6_k": (256, 210),
    "i32": (1, 4),
}

MMV_MAX_TOKENS = 4  # up to this many tokens MUL_MAT runs the mat-vec kernel once per token
# weight types with an int8 (dp4a) mat-vec; x is quantized in the kernel, K * 2.25 bytes of shared memory
Q8_MATVEC = ("q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
Q8_MAX_K = 21504  # 48 KB of shared memory
# types whose rows the staged f32 mat-vec reads in 16-byte chunks (rows a multiple of 16 bytes)
STAGED_MATVEC = ("q4_0", "q4_1", "q5_0", "q8_0")
X8_MATVEC = ("q4_0", "q8_0")
# plain f32 mat-vec: 8 warps a block instead of 4 for these types when K >= MMV_WIDE_K (measured on an
# H100: Q8_0 4096x11008 64% -> 69% of copy bandwidth, Q4_0 44% -> 45%; with K = 4096 4 warps stay faster)
MMV_WIDE_TYPES = ("q4_0", "q8_0")
MMV_WIDE_K = 8192
EW_BLOCK = 256


@dataclass
class DevTensor:
    """A tensor on the device: `shape`/`strides` (elements) over `buf` (a CuPy array) from byte `offset`.

    dtype is an activation dtype (f32, f16, i32) or, for weights in GGUF blocks, the type's name (q4_0,
    bf16, ...; then strides are unused and rows are `row_bytes` apart).
    """

    buf: Any
    offset: int
    shape: tuple[int, ...]
    dtype: str
    strides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.strides:
            self.strides = contiguous_strides(self.shape)

    @property
    def ptr(self) -> int:
        return int(self.buf.data.ptr) + self.offset

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def row_bytes(self) -> int:
        bs, ts = BLOCK[self.dtype]
        return self.shape[-1] // bs * ts

    @property
    def nbytes(self) -> int:
        if self.dtype in ITEMSIZE:
            return self.n_elements * self.itemsize
        return math.prod(self.shape[:-1]) * self.row_bytes

    @property
    def is_contiguous(self) -> bool:
        return all(
            s == c
            for n, s, c in zip(self.shape, self.strides, contiguous_strides(self.shape), strict=True)
            if n > 1
        )

    def with_shape(self, shape: Sequence[int]) -> DevTensor:
        return DevTensor(self.buf, self.offset, tuple(shape), self.dtype)


# mul_mat_vec_x: bytes of a row that one warp step covers (RF_WARP / 8 pairs of blocks) per 32-lane warp
X8_PAIR_BYTES = {"q4_0": 36, "q8_0": 68}
SMEM_DEFAULT = 48 * 1024  # dynamic shared memory a block gets without the opt-in attribute
# per-type defaults (tunables override) and the smallest N that uses the kernel, from bench_matvec.py on an
# H100 (data/bench/matvec_h100_sweep_async.json): with fewer rows than ~2 per resident warp the f32
# kernel is as fast or faster (Q8_0 4096x11008: 64% of copy bandwidth against 74%)
X8_DEFAULTS = {
    "q4_0": {"RF_MMVX_ROWS": 4, "RF_MMVX_UNROLL": 2, "RF_MMVX_ASYNC": 3, "RF_MMVX_MINB": 4, "RF_MMVX_BPS": 4},
    "q8_0": {"RF_MMVX_ROWS": 1, "RF_MMVX_UNROLL": 4, "RF_MMVX_ASYNC": 3, "RF_MMVX_MINB": 6, "RF_MMVX_BPS": 6},
}
X8_MIN_N = 8192
# mul_mat_vec_xb (a GGUF block per lane): bytes of a block; per-type defaults (tunables override) from
# bench_matvec.py --sweep xb on an H200 (data/bench/matvec_h200_xb.json); Q8_0's ring fits one block per SM
XB_BLOCK_BYTES = {"q4_0": 18, "q8_0": 34}
XB_DEFAULTS = {
    "q4_0": {"RF_MMVB_ROWS": 4, "RF_MMVB_ASYNC": 4, "RF_MMVB_MINB": 2, "RF_MMVB_BPS": 2},
    "q8_0": {"RF_MMVB_ROWS": 4, "RF_MMVB_ASYNC": 4, "RF_MMVB_MINB": 2, "RF_MMVB_BPS": 2},
}
XB_MIN_N = 4096  # faster than the f32 kernel at N = 4096 (the smallest N measured) for Q4_0 and Q8_0
# mul_mat_vec_xr (row groups of 8 rows, plain 16-byte loads staged through shared memory): per-type defaults
# (tunables override) from bench_matvec.py --sweep xr on an H200, and the types it serves by default. Q4_0:
# 72-75% of copy bandwidth at 11008x4096 with one warp a row group, against xb's 50%. Q8_0 since the first
# loads no longer wait on the staging offsets (matvec_h200_xr_sweep_zinit.json; matvec_h200_xr_q8_table.json
# against matvec_h200_xb_q8_table.json, one run): 82% against 80% at 11008x4096, 79% against 73% at
# 4096x11008, 63% against 65% at 4096x4096
XR_TYPES = ("q4_0", "q8_0")
XR_DEFAULTS = {
    "q4_0": {"RF_MMVR_WARPS": 2, "RF_MMVR_MINB": 6, "RF_MMVR_BPS": 6, "RF_MMVR_XPF": 1},
    "q8_0": {"RF_MMVR_WARPS": 2, "RF_MMVR_MINB": 6, "RF_MMVR_BPS": 6, "RF_MMVR_XPF": 1},
}
XR_MIN_N = 4096
# ... and a warp per row group (no K split, no block reduction) where one round of resident one-warp blocks
# covers every row group, at least 8 of them an SM: 70.7-73.4% of copy bandwidth at 11008x4096 against
# 68.0-70.4% with 2 warps in the same runs (H200, matvec_h200_xr_sweep5*.json, _sweep6.json; Q8_0: 81-83%
# against 78-80%, _sweep_zinit.json); with fewer row groups an SM it leaves the GPU idle (52-54% at
# 4096x11008), with more it takes two rounds
XR_ONE_WARP = {
    "q4_0": {"RF_MMVR_WARPS": 1, "RF_MMVR_MINB": 12, "RF_MMVR_BPS": 12},
    "q8_0": {"RF_MMVR_WARPS": 1, "RF_MMVR_MINB": 12, "RF_MMVR_BPS": 12},
}
# ... and whole rows a row group (RF_MMVR_Q = K / (256 H): one warp a block, a row group 8 / Q whole rows,
# contiguous) where K = 256 H Q with 2 <= Q <= XR_QMAX (host-side tunable RF_MMVR_QMAX; 0 turns it off), the
# row groups spread evenly over as few rounds of resident blocks as hold them (host-side RF_MMVR_EVEN 0: as
# many blocks as are resident). H200, 11008x4096, same runs
# (matvec_h200_xr_sweep_whole_{xfirst,even,xlate,xsm,minb}.json): Q4_0 71.5-73.6% against 71.2-72.9% for row
# groups of 8 rows, Q8_0 84.4-86.3% against 80.3-82.6% (+1 point for Q4_0 with RF_MMVR_XDEP: 74.4-75.1%
# against 73.2-73.9% on one H200, matvec_h200_xr_sweep_xdep*.json, matvec_h200_xr_whole_xdep.json; 72.6-74.9%
# on six more, matvec_log.md's sixth session)
XR_QMAX = 4  # Q = 8 (K = 8192) keeps 80 registers of x a lane: untimed
_WHOLE = {"RF_MMVR_WARPS": 1, "RF_MMVR_XPF": 0, "RF_MMVR_XDEP": 1}
XR_WHOLE = {
    "q4_0": {**_WHOLE, "RF_MMVR_MINB": 12, "RF_MMVR_BPS": 12},
    # x's 40 registers a lane on top of 17 chunks: 12 blocks an SM spill, 8 do not
    "q8_0": {**_WHOLE, "RF_MMVR_MINB": 8, "RF_MMVR_BPS": 8},
}


@dataclass
class Ctx:
    """What launchers need: compiled modules, the device's shape, tunables, temporary buffers."""

    mods: ModuleCache
    warp: int
    n_sm: int
    tunables: dict[str, int] = field(default_factory=dict)
    mmv_max_tokens: int = MMV_MAX_TOKENS
    # opt-in decode mat-vec variants: q8 and staged measured slower than the plain f32 kernel on an H100;
    # x8 faster for large Q4_0/Q8_0 weights, with int8 activations (HipBackend(int8_activations=True))
    q8_matvec: bool = False  # int8 activations (dp4a) for quantized weights
    staged_matvec: bool = False  # f32, rows staged through shared memory in 16-byte chunks
    x8_matvec: bool = False  # int8 x in shared memory, warps streaming row groups (Q4_0, Q8_0)
    x8_min_n: int = X8_MIN_N  # ... for weights of at least this many rows
    # ... with x quantized once per activation (quantize_x8) and shared by the mat-vecs that read it
    # (mul_mat_vec_xq: Q/K/V, gate/up), instead of once per block (data/bench/matvec_log.md, H200)
    x8_prequant: bool = False
    # ... and read by mul_mat_vec_xb (a whole block per lane) where rows are 16-byte multiples, from xb_min_n
    x8_blockwise: bool = False
    xb_min_n: int = XB_MIN_N
    # ... or by mul_mat_vec_xr (row groups, plain loads) for xr_types where K is a multiple of 256
    x8_groupwise: bool = False
    xr_min_n: int = XR_MIN_N
    xr_types: tuple[str, ...] = XR_TYPES
    # programmatic dependent launch (pdl.py, CUDA sm_90+) of quantize_x8 and mul_mat_vec_xr (XPF 0): each
    # starts while the kernel before it ends; xr asks for its first weights before waiting (RF_MMVR_PDL)
    pdl: bool = False
    _pdl_launcher: Any = None
    smem_block: int = SMEM_DEFAULT  # dynamic shared memory a block may opt in to (device property)
    smem_sm: int = 0  # shared memory per SM (0: unknown, resident blocks not capped by it)
    _scratch: dict[Any, Any] = field(default_factory=dict)  # (node key, k) -> persistent scratch
    _node: Any = None
    _n_scratch: int = 0
    _x_key: Any = None  # the node's activation source, for sharing its quantized copy (begin_node)
    _x8_done: set[Any] = field(default_factory=set)  # sources quantized so far in this run
    _smem_set: dict[int, int] = field(default_factory=dict)  # id(function) -> opted-in shared memory

    def k(self, file: str, name: str, **defines: Any) -> Any:
        return self.mods.get(file, **defines).fn(name)

    def k_smem(self, file: str, name: str, smem: int, **defines: Any) -> Any:
        """k, for launches with `smem` bytes of dynamic shared memory: above the default 48 KB the function
        opts in (once per function, so that nothing but the first launch pays a driver call)."""
        f = self.k(file, name, **defines)
        if smem > SMEM_DEFAULT and self._smem_set.get(id(f), 0) < smem:
            f.max_dynamic_shared_size_bytes = smem
            self._smem_set[id(f)] = smem
        return f

    def launch(
        self, f: Any, grid: tuple, block: tuple, args: tuple, smem: int = 0, pdl: bool = False
    ) -> None:
        """f(grid, block, args) with smem bytes of dynamic shared memory; pdl: with programmatic dependent
        launch where Ctx.pdl is set (the kernel must wait for its predecessor itself: rf_grid_wait)."""
        if pdl and self.pdl:
            if self._pdl_launcher is None:
                from .pdl import PdlLauncher

                self._pdl_launcher = PdlLauncher()
            self._pdl_launcher(f, grid, block, args, shared_mem=smem)
        else:
            f(grid, block, args, shared_mem=smem)

    def resident_blocks(self, bps: int, smem: int) -> int:
        """Blocks per SM for a launch asking bps, no more than the SM's shared memory holds at once (each
        block's share has 1 KB reserved); bps where that memory is unknown."""
        return max(1, min(bps, self.smem_sm // (smem + 1024))) if self.smem_sm else bps

    def empty(self, shape: Sequence[int], dtype: str) -> DevTensor:
        """Scratch for a launcher. Inside a node (begin_node) it is the node's own buffer, kept across
        runs: no allocation per step, and fixed pointers, so a captured device graph can replay it."""
        import cupy

        shape = tuple(int(n) for n in shape)
        nbytes = max(1, math.prod(shape)) * ITEMSIZE[dtype]
        if self._node is None:
            return DevTensor(cupy.empty(nbytes, dtype=np.uint8), 0, shape, dtype)
        key = (self._node, self._n_scratch)
        self._n_scratch += 1
        buf = self._scratch.get(key)
        if buf is None or buf.nbytes < nbytes:
            buf = self._scratch[key] = cupy.empty(nbytes, dtype=np.uint8)
        return DevTensor(buf, 0, shape, dtype)

    def begin_node(self, key: Any, x_key: Any = None) -> None:
        """Scratch taken until the next begin_node belongs to the node `key` (None: temporary). x_key names
        the value the node reads as its activation (None: not shared), so that nodes reading the same
        value share one quantized copy of it (quantized_x)."""
        self._node, self._n_scratch, self._x_key = key, 0, x_key

    def begin_run(self) -> None:
        """A run (or a capture) starts: no activation has been quantized in it yet."""
        self._x8_done.clear()

    def quantized_x(self, x: DevTensor, K: int, M: int, early: bool = False) -> DevTensor:
        """x [M, K] f32 as quantize_x8's int8 rows: quantized by the first node of the run that reads x's
        value (begin_node's x_key), reused by the others; quantized every time without a key. early: the
        mat-vec starts early (xr_early), and so does quantize_x8."""
        import cupy

        shape = (M, x8_row_bytes(K) // 4)  # i32 words: K % 64 == 0 keeps rows 16-byte multiples
        if self._x_key is None:
            xq = self.empty(shape, "i32")
            quantize_x8(self, xq, x, K, M, pdl=early)
            return xq
        key = ("x8", self._x_key)
        buf = self._scratch.get(key)
        if buf is None or buf.nbytes < 4 * M * shape[1]:
            buf = self._scratch[key] = cupy.empty(4 * M * shape[1], dtype=np.uint8)
        xq = DevTensor(buf, 0, shape, "i32")
        if key not in self._x8_done:
            self._x8_done.add(key)
            quantize_x8(self, xq, x, K, M, pdl=early)
        return xq

    @property
    def scratch_bytes(self) -> int:
        return sum(b.nbytes for b in self._scratch.values())

    def mmv_defines(self) -> dict[str, int]:
        return {
            k: v
            for k, v in self.tunables.items()
            if k.startswith(("RF_MMV_", "RF_MMVQ_", "RF_MMVS_", "RF_MMVX_", "RF_MMVB_", "RF_MMVR_"))
        }


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _i32(v: int) -> np.int32:
    return np.int32(v)


def _i64(v: int) -> np.int64:
    return np.int64(v)


def _f32(v: float) -> np.float32:
    return np.float32(v)


def _grid_1d(ctx: Ctx, n: int) -> tuple[int]:
    return (max(1, min(-(-n // EW_BLOCK), ctx.n_sm * 32)),)


def _row_block(ctx: Ctx, n: int) -> int:
    """Threads for a one-row-per-block reduction: up to 256, a multiple of the warp."""
    return min(256, max(ctx.warp, -(-n // ctx.warp) * ctx.warp))


def _collapse(shape: Sequence[int], strides: Sequence[int]) -> tuple[list[int], list[int]]:
    """Merge dims that are contiguous with their inner neighbour; drop size-1 dims."""
    dims = [(n, s) for n, s in zip(shape, strides, strict=True) if n != 1] or [(1, 1)]
    out = [dims[-1]]
    for n, s in reversed(dims[:-1]):
        n0, s0 = out[-1]
        if s == n0 * s0:
            out[-1] = (n * n0, s0)
        else:
            out.append((n, s))
    out.reverse()
    return [n for n, _ in out], [s for _, s in out]


def copy_strided(ctx: Ctx, out: DevTensor, a: DevTensor) -> None:
    """out (contiguous, out.dtype) = a (any strided view of f32/f16/i32), converting the type."""
    shape, strides = _collapse(a.shape, a.strides)
    if len(shape) > 4:
        raise NotImplementedError(f"copy of a view with {len(shape)} non-mergeable dims")
    shape = [1] * (4 - len(shape)) + shape
    strides = [0] * (4 - len(strides)) + strides
    n = a.n_elements
    f = ctx.k("elementwise.hip", f"copy_{a.dtype}_{out.dtype}")
    f(
        _grid_1d(ctx, n),
        (EW_BLOCK,),
        (
            a.ptr,
            out.ptr,
            _i64(n),
            _i32(shape[3]),
            _i32(shape[2]),
            _i32(shape[1]),
            _i64(strides[3]),
            _i64(strides[2]),
            _i64(strides[1]),
            _i64(strides[0]),
        ),
    )


def contiguous(ctx: Ctx, a: DevTensor, dtype: str | None = None, align: int = 4) -> DevTensor:
    """a itself when contiguous, of `dtype` and `align`-byte aligned; else a contiguous copy."""
    dtype = dtype or a.dtype
    if a.is_contiguous and a.dtype == dtype and a.ptr % align == 0:
        return a
    out = ctx.empty(a.shape, dtype)
    copy_strided(ctx, out, a)
    return out


def _float_in(ctx: Ctx, a: DevTensor) -> DevTensor:
    """a contiguous as f32 or f16 (i32 is converted to f32)."""
    return contiguous(ctx, a, "f32" if a.dtype == "i32" else a.dtype)


# ---- weights --------------------------------------------------------------------------------------------


def weight_kernel_type(w: DevTensor) -> str:
    """The kernel suffix for a weight (or float activation used as one): `_s` = element-wise float rows."""
    t = w.dtype
    if t not in NATIVE_WEIGHTS:
        raise NotImplementedError(f"no kernel reads weight type {t}")
    if t in ("f32", "f16", "bf16") and (w.shape[-1] % 8 or w.ptr % 16):
        return t + "_s"
    return t


def _as_weight(ctx: Ctx, w: DevTensor) -> DevTensor:
    if w.dtype in ("f32", "f16") and not w.is_contiguous:
        return contiguous(ctx, w)
    if w.dtype == "i32":
        return contiguous(ctx, w, "f32")
    return w


# ---- the ops ------------------------------------------------------------------------------------------


def GET_ROWS(ctx: Ctx, out: DevTensor, a: DevTensor, idx: DevTensor) -> None:
    a = _as_weight(ctx, a) if a.dtype != "i32" else contiguous(ctx, a)
    idx = contiguous(ctx, idx)
    R, D = a.shape
    n = idx.shape[0]
    grid = (-(-D // (8 * 128)), n)
    if a.dtype == "i32":
        ctx.k("get_rows.hip", "get_rows_i32")(grid, (128,), (a.ptr, _i32(R), idx.ptr, out.ptr, _i32(D)))
        return
    f = ctx.k("get_rows.hip", f"get_rows_{weight_kernel_type(a)}")
    f(grid, (128,), (a.ptr, _i64(a.row_bytes), _i32(R), idx.ptr, out.ptr, _i32(D)))


def MUL_MAT(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor) -> None:
    w = _as_weight(ctx, w)
    x = contiguous(ctx, x, "f32", align=16)
    N, K = w.shape
    M = x.n_elements // K
    kt = weight_kernel_type(w)
    if (
        M <= ctx.mmv_max_tokens
        and ctx.staged_matvec
        and kt in STAGED_MATVEC
        and w.row_bytes % 16 == 0
        and w.ptr % 16 == 0
    ):
        d = ctx.mmv_defines()
        blocks = -(-N // (d.get("RF_MMVS_ROWS", 2) * d.get("RF_MMVS_WARPS", 4)))
        f = ctx.k("mul_mat_vec.hip", f"mul_mat_vec_s_{kt}", **d)
        f(
            (blocks, M),
            (d.get("RF_MMVS_WARPS", 4) * ctx.warp,),
            (w.ptr, _i64(w.row_bytes), x.ptr, _i64(K), out.ptr, _i64(N), _i32(N), _i32(K)),
        )
        return
    if (
        M <= ctx.mmv_max_tokens
        and ctx.x8_matvec
        and kt in X8_MATVEC
        and K <= Q8_MAX_K
        and K % 64 == 0
        and w.ptr % 4 == 0
    ):
        xr = _xr_config(ctx, w, kt, N, K) if ctx.x8_prequant and ctx.x8_groupwise else None
        if xr is not None:
            _mul_mat_vec_xr(ctx, out, w, ctx.quantized_x(x, K, M, xr_early(ctx, xr)), kt, N, K, M, xr)
            return
        xb = _xb_config(ctx, w, kt, N, K) if ctx.x8_prequant and ctx.x8_blockwise else None
        if xb is not None:
            _mul_mat_vec_xb(ctx, out, w, ctx.quantized_x(x, K, M), kt, N, K, M, xb)
            return
        if N >= ctx.x8_min_n:
            if ctx.x8_prequant:
                _mul_mat_vec_x(ctx, out, w, ctx.quantized_x(x, K, M), kt, N, K, M, xq=True)
            else:
                _mul_mat_vec_x(ctx, out, w, x, kt, N, K, M)
            return
    if M <= ctx.mmv_max_tokens and ctx.q8_matvec and kt in Q8_MATVEC and K <= Q8_MAX_K:
        d = ctx.mmv_defines()
        blocks = -(-N // (d.get("RF_MMVQ_ROWS", 2) * d.get("RF_MMVQ_WARPS", 8)))
        threads = d.get("RF_MMVQ_WARPS", 8) * ctx.warp
        f = ctx.k("mul_mat_vec.hip", f"mul_mat_vec_q_{kt}", **d)
        f(
            (blocks, M),
            (threads,),
            (w.ptr, _i64(w.row_bytes), x.ptr, _i64(K), out.ptr, _i64(N), _i32(N), _i32(K)),
            shared_mem=K * 9 // 4,
        )
        return
    if M <= ctx.mmv_max_tokens:
        d = ctx.mmv_defines()
        if kt in MMV_WIDE_TYPES and K >= MMV_WIDE_K and "RF_MMV_WARPS" not in d:
            d["RF_MMV_WARPS"] = 8
        rows = d.get("RF_MMV_ROWS", 2)
        threads = d.get("RF_MMV_WARPS", 4) * ctx.warp
        f = ctx.k("mul_mat_vec.hip", f"mul_mat_vec_{kt}", **d)
        f(
            (-(-N // rows), M),
            (threads,),
            (w.ptr, _i64(w.row_bytes), x.ptr, _i64(K), out.ptr, _i64(N), _i32(N), _i32(K)),
        )
        return
    f = ctx.k("mul_mat.hip", f"mul_mat_{kt}")
    f(
        (-(-N // 64), -(-M // 64)),
        (256,),
        (w.ptr, _i64(w.row_bytes), x.ptr, out.ptr, _i32(M), _i32(N), _i32(K)),
    )


def x8_row_bytes(K: int) -> int:
    """Bytes of one token of quantize_x8's output: int8 [K], then float2 (scale, sum) [K / 32]."""
    return K + K // 4


def quantize_x8(ctx: Ctx, xq: DevTensor, x: DevTensor, K: int, M: int, pdl: bool = False) -> None:
    """x [M, K] f32 (contiguous) -> xq [M, x8_row_bytes(K)] bytes: the int8 activations of mul_mat_vec_xq.
    pdl: started while the kernel before it ends (Ctx.pdl), for a mat-vec that starts early too (xr_early);
    before a plainly launched mat-vec that cost 0.2 us a pair (H200, matvec_log.md)."""
    f = ctx.k("mul_mat_vec.hip", "quantize_x8")
    args = (x.ptr, _i64(K), xq.ptr, _i64(x8_row_bytes(K)), _i32(K))
    ctx.launch(f, (cdiv(K, 1024), M), (256,), args, pdl=pdl)


def _mul_mat_vec_x(
    ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, kt: str, N: int, K: int, M: int, xq: bool = False
) -> None:
    """mul_mat_vec_x (x f32, quantized by every block) or, xq, mul_mat_vec_xq (x from quantize_x8): as many
    blocks as fit at once (RF_MMVX_BPS per SM), row groups dealt round them (or, RF_MMVX_SPREAD=0, the
    fewest blocks that give every warp the same number of groups). The async ring needs 16-byte aligned
    rows; otherwise chunks load into registers."""
    d = {**X8_DEFAULTS[kt], **ctx.mmv_defines()}
    warps, rows = d.get("RF_MMVX_WARPS", 8), d.get("RF_MMVX_ROWS", 2)
    bps = d.pop("RF_MMVX_BPS", 4)
    if xq:  # one int8 level, quantized by quantize_x8
        d.pop("RF_MMVX_LEVELS", None)
    levels = d.get("RF_MMVX_LEVELS", 1)
    ring = d.get("RF_MMVX_ASYNC", 0)
    chunk_bytes = d.get("RF_MMVX_UNROLL", 4) * X8_PAIR_BYTES[kt] * ctx.warp // 8
    x_bytes = cdiv(K * levels + K // 4, 16) * 16
    smem = x_bytes + warps * ring * rows * chunk_bytes
    if ring and (w.row_bytes % 16 or w.ptr % 16 or smem > ctx.smem_block):
        ring = d["RF_MMVX_ASYNC"] = 0
        smem = x_bytes
    bps = ctx.resident_blocks(bps, smem)
    groups = cdiv(N, rows)
    if d.get("RF_MMVX_SPREAD", 1):  # every resident block, groups dealt round them
        blocks = min(ctx.n_sm * bps, groups)
    else:  # fewest blocks that give every warp the same number of groups
        blocks = cdiv(groups, cdiv(groups, ctx.n_sm * bps * warps) * warps)
    name = f"mul_mat_vec_xq_{kt}" if xq else f"mul_mat_vec_x_{kt}"
    x_stride = x8_row_bytes(K) if xq else K
    f = ctx.k_smem("mul_mat_vec.hip", name, smem, **d)
    f(
        (blocks, M),
        (warps * ctx.warp,),
        (w.ptr, _i64(w.row_bytes), x.ptr, _i64(x_stride), out.ptr, _i64(N), _i32(N), _i32(K)),
        shared_mem=smem,
    )


def _xb_config(ctx: Ctx, w: DevTensor, kt: str, N: int, K: int) -> tuple[dict[str, int], int, int] | None:
    """mul_mat_vec_xb's (defines, shared memory bytes, blocks) for this weight, or None where it does not
    apply: fewer rows than xb_min_n, rows not 16-byte multiples or not aligned, a ring over a block's shared
    memory. As many blocks as are resident at once (RF_MMVB_BPS per SM, fewer where shared memory holds
    fewer), row groups dealt round them."""
    d = {**XB_DEFAULTS[kt], **ctx.mmv_defines()}
    warps, rows, ring = d.get("RF_MMVB_WARPS", 8), d.get("RF_MMVB_ROWS", 2), d.get("RF_MMVB_ASYNC", 4)
    bps = d.pop("RF_MMVB_BPS", 2)
    smem = cdiv(x8_row_bytes(K), 16) * 16 + warps * ring * rows * XB_BLOCK_BYTES[kt] * ctx.warp
    if N < ctx.xb_min_n or w.row_bytes % 16 or w.ptr % 16 or smem > ctx.smem_block:
        return None
    return d, smem, min(ctx.n_sm * ctx.resident_blocks(bps, smem), cdiv(N, rows))


def _mul_mat_vec_xb(
    ctx: Ctx,
    out: DevTensor,
    w: DevTensor,
    xq: DevTensor,
    kt: str,
    N: int,
    K: int,
    M: int,
    config: tuple[dict[str, int], int, int],
) -> None:
    """mul_mat_vec_xb on quantize_x8's x, launched as _xb_config says."""
    _launch_on_xq(ctx, "xb", config, config[0].get("RF_MMVB_WARPS", 8), out, w, xq, kt, N, K, M)


def _launch_on_xq(
    ctx: Ctx,
    kind: str,
    config: tuple[dict[str, int], int, int],
    warps: int,
    out: DevTensor,
    w: DevTensor,
    xq: DevTensor,
    kt: str,
    N: int,
    K: int,
    M: int,
) -> None:
    """mul_mat_vec_<kind>_<kt> (the int8 mat-vecs on quantize_x8's x): (defines, shared memory, blocks)."""
    d, smem, blocks = config
    early = kind == "xr" and xr_early(ctx, config)
    if early:  # the build that asks for its first weights, then waits for the kernel before
        d = {"RF_MMVR_PDL": 1, **d}
    elif d.get("RF_MMVR_XPF", 0):  # x comes with the weights: no such build
        d = {k: v for k, v in d.items() if k != "RF_MMVR_PDL"}
    f = ctx.k_smem("mul_mat_vec.hip", f"mul_mat_vec_{kind}_{kt}", smem, **d)
    args = (w.ptr, _i64(w.row_bytes), xq.ptr, _i64(x8_row_bytes(K)), out.ptr, _i64(N), _i32(N), _i32(K))
    ctx.launch(f, (blocks, M), (warps * ctx.warp,), args, smem, pdl=early)


def _xr_config(ctx: Ctx, w: DevTensor, kt: str, N: int, K: int) -> tuple[dict[str, int], int, int] | None:
    """mul_mat_vec_xr's (defines, shared memory bytes, blocks) for this weight, or None where it does not
    apply: a type not in xr_types, fewer rows than xr_min_n, K not a multiple of 256 (a group of 8 blocks is
    whole 16-byte chunks), rows not packed or not aligned. As many blocks as are resident at once
    (RF_MMVR_BPS per SM), no more than give every block a row group of 8 rows; one-warp blocks where one
    round of them covers the row groups (XR_ONE_WARP); whole rows a row group where K allows (XR_WHOLE)."""
    packed = w.row_bytes == K // 32 * XB_BLOCK_BYTES.get(kt, 0)
    if kt not in ctx.xr_types or N < ctx.xr_min_n or K % 256 or not packed or w.ptr % 16:
        return None
    d = dict(XR_DEFAULTS[kt])
    one = XR_ONE_WARP.get(kt)
    h = ctx.warp // 8  # groups of 8 blocks a step
    q = K // (256 * h) if K % (256 * h) == 0 else 0  # whole rows: a row is q steps
    whole = kt in XR_WHOLE and 2 <= q <= ctx.tunables.get("RF_MMVR_QMAX", XR_QMAX) and 8 % q == 0
    if whole:
        d.update(XR_WHOLE[kt])
    elif one and 8 * ctx.n_sm <= cdiv(N, 8) <= one["RF_MMVR_BPS"] * ctx.n_sm:
        d.update(one)
    d.update(ctx.mmv_defines())
    d.pop("RF_MMVR_QMAX", None)
    even = d.pop("RF_MMVR_EVEN", 1)
    warps, bps = d.get("RF_MMVR_WARPS", 4), d.pop("RF_MMVR_BPS", 4)
    whole = whole and warps == 1 and not d.get("RF_MMVR_XPF", 0)
    d.pop("RF_MMVR_Q", None)
    if whole:
        d["RF_MMVR_Q"] = q
    # staging: per warp 8 rows x h groups x (chunks of a group + 1 of padding) x 16 bytes; 2 x warps
    # x 8 partial sums
    smem = warps * 8 * h * (XB_BLOCK_BYTES[kt] // 2 + 1) * 16 + 2 * warps * 8 * 4
    if smem > ctx.smem_block:
        return None
    most = ctx.n_sm * ctx.resident_blocks(bps, smem)
    groups = cdiv(q * N if whole else N, 8)  # of Q N virtual rows where whole
    if whole and even:  # every block the same number of row groups
        return d, smem, cdiv(groups, cdiv(groups, most))
    return d, smem, min(most, groups)


def xr_early(ctx: Ctx, config: tuple[dict[str, int], int, int] | None) -> bool:
    """Whether mul_mat_vec_xr launched as `config` says starts while the kernel before it ends (Ctx.pdl; x
    not loaded with the weights, XPF 0)."""
    if not ctx.pdl or config is None:
        return False
    return not config[0].get("RF_MMVR_XPF", 0) and config[0].get("RF_MMVR_PDL", 1) > 0


def x8_early(ctx: Ctx, w: DevTensor) -> bool:
    """Whether MUL_MAT's decode mat-vec on w is an early-started mul_mat_vec_xr (and quantize_x8 with it)."""
    w = _as_weight(ctx, w)
    kt = weight_kernel_type(w)
    if not (ctx.pdl and ctx.x8_matvec and ctx.x8_prequant and ctx.x8_groupwise and kt in X8_MATVEC):
        return False
    return xr_early(ctx, _xr_config(ctx, w, kt, *w.shape))


def _mul_mat_vec_xr(
    ctx: Ctx,
    out: DevTensor,
    w: DevTensor,
    xq: DevTensor,
    kt: str,
    N: int,
    K: int,
    M: int,
    config: tuple[dict[str, int], int, int],
) -> None:
    """mul_mat_vec_xr on quantize_x8's x, launched as _xr_config says."""
    _launch_on_xq(ctx, "xr", config, config[0].get("RF_MMVR_WARPS", 4), out, w, xq, kt, N, K, M)


def _binary(ctx: Ctx, op: str, out: DevTensor, a: DevTensor, b: DevTensor) -> None:
    a, b = _float_in(ctx, a), _float_in(ctx, b)
    n = a.n_elements
    ash = list(a.shape) or [1]
    bsh = [1] * (len(ash) - len(b.shape)) + list(b.shape)
    if b.n_elements == n:
        mode, dims = 1, [[1, 1]] * 4
    elif b.n_elements == ash[-1] and bsh[-1] == ash[-1]:
        mode, dims = 2, [[ash[-1], ash[-1]]] + [[1, 1]] * 3
    else:
        mode = 0
        merged: list[list[int]] = []  # [a_n, b_n] innermost first; merge runs of "same" or "broadcast"
        for an, bn in zip(reversed(ash), reversed(bsh), strict=True):
            if an == 1:
                continue
            if merged and ((bn == an and merged[-1][0] == merged[-1][1]) or (bn == 1 and merged[-1][1] == 1)):
                merged[-1] = [merged[-1][0] * an, merged[-1][1] * bn]
            else:
                merged.append([an, bn])
        if len(merged) > 4:
            raise NotImplementedError(f"{op}: broadcast of {b.shape} to {a.shape} needs more than 4 dims")
        dims = merged + [[1, 1]] * (4 - len(merged))
    f = ctx.k("elementwise.hip", f"{op}_{a.dtype}_{b.dtype}")
    f(
        _grid_1d(ctx, n),
        (EW_BLOCK,),
        (
            a.ptr,
            b.ptr,
            out.ptr,
            _i64(n),
            _i32(mode),
            _i32(dims[0][0]),
            _i32(dims[1][0]),
            _i32(dims[2][0]),
            _i32(dims[0][1]),
            _i32(dims[1][1]),
            _i32(dims[2][1]),
            _i32(dims[3][1]),
        ),
    )


def ADD(ctx: Ctx, out: DevTensor, a: DevTensor, b: DevTensor) -> None:
    _binary(ctx, "add", out, a, b)


def MUL(ctx: Ctx, out: DevTensor, a: DevTensor, b: DevTensor) -> None:
    _binary(ctx, "mul", out, a, b)


def SCALE(ctx: Ctx, out: DevTensor, a: DevTensor, *, s: float) -> None:
    a = _float_in(ctx, a)
    n = a.n_elements
    ctx.k("elementwise.hip", f"scale_{a.dtype}")(
        _grid_1d(ctx, n), (EW_BLOCK,), (a.ptr, out.ptr, _i64(n), _f32(s))
    )


def SILU(ctx: Ctx, out: DevTensor, a: DevTensor) -> None:
    a = _float_in(ctx, a)
    n = a.n_elements
    ctx.k("elementwise.hip", f"silu_{a.dtype}")(_grid_1d(ctx, n), (EW_BLOCK,), (a.ptr, out.ptr, _i64(n)))


def SWIGLU(ctx: Ctx, out: DevTensor, gate: DevTensor, up: DevTensor) -> None:
    gate, up = _float_in(ctx, gate), _float_in(ctx, up)
    n = gate.n_elements
    f = ctx.k("elementwise.hip", f"swiglu_{gate.dtype}_{up.dtype}")
    f(_grid_1d(ctx, n), (EW_BLOCK,), (gate.ptr, up.ptr, out.ptr, _i64(n)))


def RMS_NORM(ctx: Ctx, out: DevTensor, a: DevTensor, *, eps: float) -> None:
    a = _float_in(ctx, a)
    n = a.shape[-1]
    rows = a.n_elements // n
    f = ctx.k("norm.hip", f"rms_norm_{a.dtype}")
    f((rows,), (_row_block(ctx, n),), (a.ptr, out.ptr, _i32(n), _f32(eps)))


def ROPE(
    ctx: Ctx,
    out: DevTensor,
    x: DevTensor,
    pos: DevTensor,
    *,
    n_dims: int,
    neox: bool,
    base: float,
    freq_scale: float = 1.0,
) -> None:
    x, pos = _float_in(ctx, x), contiguous(ctx, pos)
    T, H, D = x.shape
    n = x.n_elements
    f = ctx.k("rope.hip", f"rope_{x.dtype}")
    f(
        _grid_1d(ctx, n),
        (EW_BLOCK,),
        (
            x.ptr,
            pos.ptr,
            out.ptr,
            _i32(H),
            _i32(D),
            _i64(n),
            _i32(n_dims),
            _i32(int(neox)),
            _f32(base),
            _f32(freq_scale),
        ),
    )


def VIEW(ctx: Ctx, a: DevTensor, *, shape: tuple, strides: tuple, offset: int) -> DevTensor:
    if a.dtype not in ITEMSIZE or not a.is_contiguous:
        raise NotImplementedError(f"VIEW of a {a.dtype} tensor that is not a contiguous activation")
    return DevTensor(a.buf, a.offset + offset * a.itemsize, tuple(shape), a.dtype, tuple(strides))


def RESHAPE(ctx: Ctx, a: DevTensor, *, shape: tuple) -> DevTensor:
    if not a.is_contiguous:
        raise NotImplementedError("RESHAPE of a non-contiguous view")
    return DevTensor(a.buf, a.offset, tuple(shape), a.dtype)


def CONT(ctx: Ctx, out: DevTensor, a: DevTensor) -> None:
    copy_strided(ctx, out, a)


def CPY(ctx: Ctx, out: DevTensor, a: DevTensor, *, dtype: str) -> None:
    copy_strided(ctx, out, a)


def SET_ROWS(ctx: Ctx, out: DevTensor, dst: DevTensor, src: DevTensor, idx: DevTensor) -> None:
    # out is dst (the op aliases its first source): rows idx of dst are overwritten in place
    if not dst.is_contiguous:
        raise NotImplementedError("SET_ROWS into a non-contiguous view")
    src = _float_in(ctx, src)
    idx = contiguous(ctx, idx)
    R = dst.shape[0]
    W = dst.n_elements // R
    n = idx.shape[0]
    f = ctx.k("set_rows.hip", f"set_rows_{src.dtype}_{dst.dtype}")
    f((-(-W // 256), n), (256,), (dst.ptr, src.ptr, idx.ptr, _i32(R), _i32(W)))


def SOFT_MAX(
    ctx: Ctx, out: DevTensor, a: DevTensor, mask: DevTensor | None = None, *, scale: float = 1.0
) -> None:
    a = _float_in(ctx, a)
    n = a.shape[-1]
    rows = a.n_elements // n
    if mask is not None:
        mask = _float_in(ctx, mask)
        mptr, m, mt = mask.ptr, mask.shape[0], mask.dtype
    else:
        mptr, m, mt = 0, 1, "f32"
    f = ctx.k("softmax.hip", f"soft_max_{a.dtype}_{mt}")
    f((rows,), (_row_block(ctx, n),), (a.ptr, mptr, _i32(m), out.ptr, _i32(n), _f32(scale)))


def fa_tiles(head_dim: int) -> tuple[int, int]:
    """(BQ, BKV) of attention.hip for this head dim (mirrors its macros)."""
    bq = 32 if head_dim <= 64 else (16 if head_dim <= 128 else 8)
    return bq, (32 if head_dim <= 128 else 16)


def attn_splits(ctx: Ctx, T: int, H: int, Hkv: int, C: int, head_dim: int) -> tuple[int, int]:
    """(n_splits, chunk): split the cache when the (token, head) tiles alone leave the GPU idle."""
    bq, bkv = fa_tiles(head_dim)
    blocks = -(-(T * (H // Hkv)) // bq) * Hkv
    target = 2 * ctx.n_sm
    n = 1 if blocks >= target else min(cdiv(target, blocks), cdiv(C, bkv))
    chunk = cdiv(cdiv(C, n), bkv) * bkv
    return cdiv(C, chunk), chunk


def FLASH_ATTN_EXT(
    ctx: Ctx, out: DevTensor, q: DevTensor, k: DevTensor, v: DevTensor, pos: DevTensor, *, scale: float
) -> None:
    q = contiguous(ctx, q, "f32")
    pos = contiguous(ctx, pos)
    T, H, D = q.shape
    C, Hkv, _ = k.shape
    if k.dtype != v.dtype or k.strides != v.strides or k.strides[2] != 1 or k.dtype not in ("f32", "f16"):
        k, v = contiguous(ctx, k, "f32"), contiguous(ctx, v, "f32")
    n_splits, chunk = attn_splits(ctx, T, H, Hkv, C, D)
    mod = ctx.mods.get("attention.hip", RF_HEAD_DIM=D)
    bq, _ = fa_tiles(D)
    grid = (-(-(T * (H // Hkv)) // bq), Hkv, n_splits)
    common = (
        _i32(T),
        _i32(H),
        _i32(Hkv),
        _i64(k.strides[0]),
        _i64(k.strides[1]),
        _i32(C),
        _i32(chunk),
        _f32(scale),
    )
    if n_splits == 1:
        mod.fn(f"flash_attn_{k.dtype}")(
            grid, (128,), (q.ptr, k.ptr, v.ptr, pos.ptr, out.ptr, 0, 0, 0, *common)
        )
        return
    po = ctx.empty((n_splits, T, H, D), "f32")
    pm = ctx.empty((n_splits, T, H), "f32")
    pl = ctx.empty((n_splits, T, H), "f32")
    mod.fn(f"flash_attn_{k.dtype}")(
        grid, (128,), (q.ptr, k.ptr, v.ptr, pos.ptr, out.ptr, po.ptr, pm.ptr, pl.ptr, *common)
    )
    mod.fn("flash_attn_combine")(
        (T * H,), (128,), (po.ptr, pm.ptr, pl.ptr, out.ptr, _i32(T * H), _i32(n_splits))
    )


def ARGMAX(ctx: Ctx, out: DevTensor, a: DevTensor) -> None:
    a = _float_in(ctx, a)
    n = a.shape[-1]
    rows = a.n_elements // n
    ctx.k("argmax.hip", f"argmax_{a.dtype}")((rows,), (_row_block(ctx, n),), (a.ptr, out.ptr, _i32(n)))


LAUNCH: dict[str, Callable[..., Any]] = {
    name: globals()[name]
    for name in (
        "GET_ROWS",
        "MUL_MAT",
        "ADD",
        "MUL",
        "SCALE",
        "RMS_NORM",
        "ROPE",
        "VIEW",
        "RESHAPE",
        "CONT",
        "CPY",
        "SET_ROWS",
        "SOFT_MAX",
        "SILU",
        "SWIGLU",
        "FLASH_ATTN_EXT",
        "ARGMAX",
    )
}
