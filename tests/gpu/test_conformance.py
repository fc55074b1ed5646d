"""One conformance table: every Op on the HIP backend against the numpy reference (numpy_ref.py).

Each case builds a small graph, draws fresh random inputs (and random valid GGUF blocks for weights),
runs it on both backends and compares by normalized MSE, sum((out - ref)^2) / sum(ref^2), with a bound
per case (1e-6 for f32 paths, 1e-4 where f16 values are involved; integer results must match exactly).
The HIP backend NaN-fills every op result before its launch (debug_poison), so an element a kernel
forgets to write shows up as NaN. As ggml's test-backend-ops does, the table covers odd sizes, every
weight type for MUL_MAT, MUL_MAT_ADD and GET_ROWS, decode (1 token) and prefill (7, 64 tokens) shapes, and
attention at several context lengths. Prefill MUL_MAT rows run the tiled kernel (prefill="tiled", the f32
bound) unless labelled `blas`: those run the vendor-BLAS path (mul_mat_blas: x and w in f16, f32
arithmetic; the f16 bound, f32 weights the f32 one), at 7, 64 and 512 tokens, through the default scratch
and through one of 16 rows (`blas-tiles`: several chunks of x and tiles of w per node).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from dev import matvec_variants as V
from rocmforge import quant
from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip import launch_geometry as G
from rocmforge.backends.numpy_backend import NumpyBackend
from rocmforge.ir.graph import Graph

try:
    from rocmforge.backends.hip import HipBackend, gpu_available

    _OK, _WHY = gpu_available()
except ImportError as e:  # pragma: no cover - the package itself failed to import
    _OK, _WHY = False, f"the HIP backend failed to import: {e}"

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=f"no GPU: {_WHY}")]

Q = quant.QType
WEIGHT_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q6_K]
F32_TOL, F16_TOL = 1e-6, 1e-4


@dataclass
class Built:
    graph: Graph
    inputs: dict[str, np.ndarray]
    weights: dict[str, tuple[np.ndarray, quant.QType]]
    tol: float
    ctx: dict[str, Any] = field(default_factory=dict)  # HIP launch-context fields (mat_mul, tunables)
    check: Callable[[np.ndarray, np.ndarray], None] | None = None  # compares (out, ref) instead of tol


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[np.random.Generator], Built]


CASES: list[Case] = []


def case(cid: str):
    def deco(fn: Callable[[np.random.Generator], Built]) -> Callable[[np.random.Generator], Built]:
        CASES.append(Case(cid, fn))
        return fn

    return deco


def _normal(rng, shape, dtype="f32", scale=1.0) -> np.ndarray:
    a = rng.standard_normal(shape).astype(np.float32) * np.float32(scale)
    return a.astype(np.float16) if dtype == "f16" else a


def _tol(*dtypes: str) -> float:
    return F16_TOL if "f16" in dtypes else F32_TOL


def _min_row(qt: quant.QType) -> int:
    return quant.block_size(qt)


# ---- GET_ROWS -------------------------------------------------------------------------------------------


def _get_rows_weight(qt: quant.QType, R: int, D: int, n: int):
    def make(rng):
        g = Graph()
        w = g.weight("w", (R, D), qt.name.lower())
        idx = g.input("idx", (n,), "i32")
        g.output(g.get_rows(w, idx, "out"))
        raw = quant.random_blocks(qt, (R, D), rng)
        return Built(g, {"idx": rng.integers(0, R, n).astype(np.int32)}, {"w": (raw, qt)}, F32_TOL)

    return make


for _qt in WEIGHT_TYPES:
    _bs = quant.block_size(_qt)
    for _R, _D in [(37, max(256, _bs) if _bs > 1 else 96), (9, 3 * max(_bs, 32) if _bs > 1 else 13)]:
        if _D % max(_bs, 1):
            continue
        CASES.append(Case(f"GET_ROWS-{_qt.name}-{_R}x{_D}", _get_rows_weight(_qt, _R, _D, 5)))


def _get_rows_act(dtype: str):
    def make(rng):
        g = Graph()
        a = g.input("a", (11, 7), dtype)
        idx = g.input("idx", (4,), "i32")
        g.output(g.get_rows(a, idx, "out"))
        av = (
            rng.integers(-1000, 1000, (11, 7)).astype(np.int32)
            if dtype == "i32"
            else _normal(rng, (11, 7), dtype)
        )
        return Built(g, {"a": av, "idx": np.array([10, 0, 3, 3], np.int32)}, {}, _tol(dtype))

    return make


for _dt in ("f32", "f16", "i32"):
    CASES.append(Case(f"GET_ROWS-act-{_dt}", _get_rows_act(_dt)))


# ---- MUL_MAT ------------------------------------------------------------------------------------------


# prefill rows without options of their own: the tiled kernel (mul_mat), as before the vendor-BLAS path
TILED = C.MatMulOptions(prefill="tiled")


def _pin_prefill(ctx: dict, xshape: tuple[int, ...]) -> dict:
    """ctx with mat_mul=TILED where the case has more than MMV_MAX_TOKENS tokens and no options given."""
    if "mat_mul" not in ctx and math.prod(xshape) > C.MMV_MAX_TOKENS:
        return {**ctx, "mat_mul": TILED}
    return ctx


def _mul_mat(
    qt: quant.QType, N: int, K: int, xshape: tuple[int, ...], xdtype: str = "f32", tol: float = 0.0, **ctx
):
    ctx = _pin_prefill(ctx, xshape)

    def make(rng):
        g = Graph()
        w = g.weight("w", (N, K), qt.name.lower())
        x = g.input("x", (*xshape, K), xdtype)
        g.output(g.mul_mat(w, x, "out"))
        raw = quant.random_blocks(qt, (N, K), rng)
        return Built(g, {"x": _normal(rng, (*xshape, K), xdtype)}, {"w": (raw, qt)}, tol or _tol(xdtype), ctx)

    return make


def _mm_shapes(qt: quant.QType) -> list[tuple[int, int]]:
    bs = quant.block_size(qt)
    if bs == 256:
        return [(45, 512), (130, 256)]
    if bs == 32:
        return [(67, 160), (130, 256)]  # K = 5 blocks: an odd number of blocks per row
    return [(37, 96), (19, 13)]  # float rows: a multiple of 8, and an odd length


for _qt in WEIGHT_TYPES:
    for _N, _K in _mm_shapes(_qt):
        for _T in (1, 3, 7, 64):
            CASES.append(Case(f"MUL_MAT-{_qt.name}-{_N}x{_K}-T{_T}", _mul_mat(_qt, _N, _K, (_T,))))
CASES.append(Case("MUL_MAT-Q4_0-batched-x3d", _mul_mat(Q.Q4_0, 33, 64, (2, 5))))
CASES.append(Case("MUL_MAT-Q8_0-x-f16-T1", _mul_mat(Q.Q8_0, 33, 64, (1,), "f16")))
CASES.append(Case("MUL_MAT-Q8_0-x-f16-T9", _mul_mat(Q.Q8_0, 33, 64, (9,), "f16")))
CASES.append(Case("MUL_MAT-Q8_0-896x896-T1", _mul_mat(Q.Q8_0, 896, 896, (1,))))
CASES.append(Case("MUL_MAT-Q4_K-256x1024-T1", _mul_mat(Q.Q4_K, 256, 1024, (1,))))
# the f32-activation mat-vec (float weights use it always; quantized ones without int8 activations)
for _qt in WEIGHT_TYPES[3:]:
    for _N, _K in _mm_shapes(_qt)[:1]:
        _m = _mul_mat(_qt, _N, _K, (2,), mat_mul=C.MatMulOptions())
        CASES.append(Case(f"MUL_MAT-f32x-{_qt.name}-{_N}x{_K}-T2", _m))
CASES.append(Case("MUL_MAT-Q8_0-64x22528-T1-longK", _mul_mat(Q.Q8_0, 64, 22528, (1,))))
# dev/'s mat-vec variants (dev/matvec_variants.py): int8 (x quantized in two int8 levels) and staged (rows
# through shared memory)
for _qt in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q6_K):
    CASES.append(
        Case(
            f"MUL_MAT-int8-{_qt.name}-{_mm_shapes(_qt)[0][0]}x{_mm_shapes(_qt)[0][1]}-T1",
            _mul_mat(_qt, *_mm_shapes(_qt)[0], (1,), mat_mul=V.options(V.MUL_MAT_VEC_Q)),
        )
    )
for _qt in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q8_0):
    for _N, _K in [(37, 256), (21, 2304), (5, 4096)]:
        CASES.append(
            Case(
                f"MUL_MAT-staged-{_qt.name}-{_N}x{_K}-T1",
                _mul_mat(_qt, _N, _K, (1,), mat_mul=V.options(V.MUL_MAT_VEC_S)),
            )
        )


def _ring(depth: int, rows: int, unroll: int, blocks: int) -> dict[str, int]:
    """Tunables of mul_mat_vec_x/xq's async ring: depth, rows and steps per chunk, blocks per SM."""
    d = {"RF_MMVX_ASYNC": depth, "RF_MMVX_ROWS": rows, "RF_MMVX_UNROLL": unroll}
    return {**d, "RF_MMVX_MINB": blocks, "RF_MMVX_BPS": blocks}


# int8-x streaming mat-vec (dev/, Q4_0/Q8_0, K % 64 == 0; min_n = 0 so that small N use it too). One
# int8 level is int8 arithmetic (F16_TOL); its nmse is ~3e-5 on average but a random variable with a long
# tail when K spans only a few blocks of 32 (one outlier sets a block's step), so those shapes run with
# two levels and the f32 bound. K = 64 and 576 end in a partial warp step and have rows that are not
# 16-byte multiples (chunks load into registers); 2304 and 4096 fill the async shared-memory ring.
_X8_SHAPES = [
    (129, 576, 3, {}),
    (1000, 4096, 1, {}),
    (67, 2304, 2, {}),
    (37, 64, 1, {"RF_MMVX_LEVELS": 2}),
    (129, 576, 1, {"RF_MMVX_LEVELS": 2}),
]
_X8_SHAPES += [
    (515, 2304, 1, t)
    for t in [
        {"RF_MMVX_LEVELS": 2},
        {"RF_MMVX_ASYNC": 0, "RF_MMVX_LEVELS": 2},
        {"RF_MMVX_ASYNC": 2, "RF_MMVX_ROWS": 2, "RF_MMVX_UNROLL": 4, "RF_MMVX_LEVELS": 2},
        {"RF_MMVX_ASYNC": 4, "RF_MMVX_ROWS": 1, "RF_MMVX_UNROLL": 2, "RF_MMVX_MINB": 8},
        {"RF_MMVX_SHFL": 0, "RF_MMVX_ASYNC": 0, "RF_MMVX_WARPS": 4, "RF_MMVX_BPS": 2},
        {"RF_MMVX_SPREAD": 0, "RF_MMVX_LEVELS": 2},
        # a deep ring: over 48 KB of shared memory a block (opt-in), fewer blocks per SM
        _ring(9, 4, 2, 2),
    ]
]
for _qt in (Q.Q4_0, Q.Q8_0):
    for _N, _K, _T, _tun in _X8_SHAPES:
        _tid = "".join(f"-{k[8:]}={v}" for k, v in _tun.items())
        CASES.append(
            Case(
                f"MUL_MAT-x8-{_qt.name}-{_N}x{_K}-T{_T}{_tid}",
                _mul_mat(
                    _qt,
                    _N,
                    _K,
                    (_T,),
                    tol=F32_TOL if _tun.get("RF_MMVX_LEVELS") == 2 else F16_TOL,
                    mat_mul=V.options(V.MUL_MAT_VEC_X, min_n=0),
                    tunables=_tun,
                ),
            )
        )


def _int8_cases(label: str, shapes: list, *kernels: C.MatMulKernel) -> None:
    """MUL_MAT cases of int8-activation kernels (F16_TOL: one int8 level) for Q4_0 and Q8_0: the first of
    `kernels` that applies, else the f32 mat-vec; every kernel from N = 1."""
    for qt in (Q.Q4_0, Q.Q8_0):
        for N, K, T, tun in shapes:
            tid = "".join(f"-{k[8:]}={v}" for k, v in tun.items())
            m = _mul_mat(qt, N, K, (T,), tol=F16_TOL, mat_mul=V.options(*kernels, min_n=0), tunables=tun)
            CASES.append(Case(f"MUL_MAT-{label}-{qt.name}-{N}x{K}-T{T}{tid}", m))


# ... with x quantized once by quantize_x8 and copied by every block (mul_mat_vec_xq; one int8 level only)
_int8_cases(
    "xq",
    [
        (129, 576, 3, {}),
        (1000, 4096, 1, {}),
        (67, 2304, 2, {}),
        (515, 2304, 1, {"RF_MMVX_ASYNC": 0}),
        (515, 2304, 1, {"RF_MMVX_ASYNC": 4, "RF_MMVX_ROWS": 1, "RF_MMVX_UNROLL": 2, "RF_MMVX_MINB": 8}),
        (515, 2304, 1, {"RF_MMVX_SHFL": 0, "RF_MMVX_ASYNC": 0, "RF_MMVX_WARPS": 4, "RF_MMVX_BPS": 2}),
        # deep rings: over 48 KB of shared memory a block (opt-in); deeper than a warp's whole work
        (2000, 4096, 2, _ring(12, 2, 2, 3)),
        (129, 2304, 3, _ring(16, 1, 2, 4)),
    ],
    C.MUL_MAT_VEC_XQ,
)


# ... read a whole GGUF block per lane (mul_mat_vec_xb, rows of 16-byte multiples; K = 576 rows are not, and
# fall back to mul_mat_vec_xq). K = 2304 and 4864 end each row in a partial chunk (8 and 24 blocks).
def _xb(rows: int, depth: int, blocks: int, warps: int = 8) -> dict[str, int]:
    return {"RF_MMVB_ROWS": rows, "RF_MMVB_ASYNC": depth, "RF_MMVB_MINB": blocks, "RF_MMVB_BPS": blocks} | (
        {"RF_MMVB_WARPS": warps} if warps != 8 else {}
    )


_int8_cases(
    "xb",
    [
        (1000, 4096, 1, {}),
        (129, 2304, 3, {}),
        (67, 4864, 2, {}),
        (5, 4864, 8, {}),  # fewer row groups than blocks; 8 columns for a stable nmse (40 outputs)
        (129, 576, 1, {}),
        (515, 4096, 1, _xb(4, 3, 2)),
        (515, 2304, 2, _xb(1, 2, 6)),
        (300, 4864, 1, _xb(2, 8, 2, warps=4)),
        (1000, 4096, 1, {**_xb(4, 4, 2), "RF_MMVB_CHAINS": 2}),
        (129, 2304, 3, {**_xb(4, 3, 3), "RF_MMVB_CHAINS": 4}),
    ],
    V.MUL_MAT_VEC_XB,
    C.MUL_MAT_VEC_XQ,
)


# ... row groups of 8 rows read in steps of 16-byte loads (mul_mat_vec_xr, K a multiple of 256; K = 576 is not
# and falls back to xq). K = 2304 (9 groups of 8 blocks), 4864 (19) and 11008 (43) end in a partial step;
# N = 5, 515, 1001 end in a partial row group; 5000 rows on 1 block an SM give blocks several groups in turn.
# K = 2048, 4096 (and 8192 with RF_MMVR_QMAX 8) take whole rows a row group.
def _xr(warps: int, minb: int, bps: int) -> dict[str, int]:
    return {"RF_MMVR_WARPS": warps, "RF_MMVR_MINB": minb, "RF_MMVR_BPS": bps}


_int8_cases(
    "xr",
    [
        (1001, 4096, 1, {}),
        (515, 4864, 2, {}),
        (5, 4864, 8, {}),  # 8 columns: nmse over 40 outputs (over 5-15 it strays past 1e-4 at times)
        (129, 2304, 3, {}),
        (129, 576, 1, {}),
        (300, 11008, 1, {}),
        (515, 4096, 1, _xr(8, 2, 2)),
        (67, 4096, 2, _xr(2, 4, 8)),
        (300, 4096, 1, _xr(1, 4, 4)),
        (5000, 2304, 1, _xr(4, 4, 1)),
        (9000, 256, 2, _xr(4, 4, 1)),
        # K split 8 ways: fewer steps than warps (K = 256: 1 step, 2304: 3); 11 steps (K = 11008) on 8 warps
        (1001, 256, 1, _xr(8, 2, 2)),
        (300, 2304, 2, _xr(8, 2, 1)),
        (129, 11008, 1, _xr(8, 2, 2)),
        # x prefetched with the next item's weights, across row groups
        (1001, 4096, 2, {**_xr(2, 6, 6), "RF_MMVR_XPF": 1}),
        (5000, 2304, 1, {**_xr(1, 12, 1), "RF_MMVR_XPF": 1}),
        # the launcher's choice of one warp a row group (XR_ONE_WARP: 1,376 row groups on a 132-SM GPU)
        (11005, 512, 2, {}),
        # Q4_0's high nibbles shifted down (the dot product where the hardware has no unsigned dp4a)
        (1001, 2304, 1, {"RF_MMV_HI16": 0}),
        # whole rows a row group (RF_MMVR_Q, XR_WHOLE; K = 4096 above too): Q = 2 (K = 2048, 4 rows a group,
        # 515 ends in 3), Q = 8 (1 row), several groups a block in turn (1 block an SM), Q turned off, as many
        # blocks as are resident, x's scales tied to the weights
        (515, 2048, 3, {}),
        (77, 8192, 1, {"RF_MMVR_QMAX": 8}),
        (5001, 4096, 2, {"RF_MMVR_BPS": 1}),
        (11008, 4096, 1, {"RF_MMVR_QMAX": 0}),
        (1001, 4096, 2, {"RF_MMVR_EVEN": 0}),
        (1001, 4096, 1, {"RF_MMVR_XDEP": 1}),
    ],
    C.MUL_MAT_VEC_XR,
    C.MUL_MAT_VEC_XQ,
)
# ... with trace_matvec_xr.py's time stamps (dev/mul_mat_vec_xr_trace.hip; results unchanged)
_int8_cases(
    "xr-trace",
    [
        (515, 4096, 2, {**_xr(1, 12, 12), "RF_MMVR_XPF": 1, "RF_MMVR_TRACE": 64}),
        (515, 4096, 1, {"RF_MMVR_TRACE": 64}),
    ],
    V.MUL_MAT_VEC_XR_TRACE,
)


def _mul_mat_act(opts: C.MatMulOptions):
    """An f32 activation as the weight (6 tokens): the tiled kernel, or the vendor BLAS's f32 GEMM."""

    def make(rng):
        g = Graph()
        w = g.input("w", (21, 40), "f32")
        x = g.input("x", (6, 40), "f32")
        g.output(g.mul_mat(w, x, "out"))
        inputs = {"w": _normal(rng, (21, 40)), "x": _normal(rng, (6, 40))}
        return Built(g, inputs, {}, F32_TOL, {"mat_mul": opts})

    return make


CASES.append(Case("MUL_MAT-act-f32-w", _mul_mat_act(TILED)))
CASES.append(Case("MUL_MAT-blas-act-f32-w", _mul_mat_act(C.MatMulOptions(prefill="blas"))))


# ---- MUL_MAT_ADD: MUL_MAT's kernels with an addend -----------------------------------------------------


def _mul_mat_add(
    qt: quant.QType,
    N: int,
    K: int,
    xshape: tuple[int, ...],
    addend: str,
    bdt: str = "f32",
    xq: bool = False,
    tol: float = 0.0,
    **ctx,
):
    """MUL_MAT_ADD(w, x, b): addend "bias" (b a weight [N], as Qwen2's q/k/v biases) or "residual" (b an input
    of the output's shape); xq: x's QUANTIZE_X8 given as the fourth source (what an int8 kernel reads)."""
    ctx = _pin_prefill(ctx, xshape)

    def make(rng):
        g = Graph()
        w = g.weight("w", (N, K), qt.name.lower())
        x = g.input("x", (*xshape, K))
        weights = {"w": (quant.random_blocks(qt, (N, K), rng), qt)}
        inputs = {"x": _normal(rng, (*xshape, K))}
        if addend == "bias":
            b = g.weight("b", (N,), bdt)
            bq = Q.F16 if bdt == "f16" else Q.F32
            weights["b"] = (quant.random_blocks(bq, (N,), rng), bq)
        else:
            b = g.input("b", (*xshape, N), bdt)
            inputs["b"] = _normal(rng, (*xshape, N), bdt)
        g.output(g.mul_mat_add(w, x, b, "out", g.quantize_x8(x, "xq") if xq else None))
        return Built(g, inputs, weights, tol or _tol(bdt), ctx)

    return make


# every weight type (float rows of a multiple of 8 and of odd length: the `_s` kernels), decode and prefill
for _qt in WEIGHT_TYPES:
    for _N, _K in _mm_shapes(_qt):
        for _T in (1, 7, 64):
            for _add in ("bias", "residual"):
                _id = f"MUL_MAT_ADD-{_qt.name}-{_N}x{_K}-T{_T}-{_add}"
                CASES.append(Case(_id, _mul_mat_add(_qt, _N, _K, (_T,), _add)))
# x [2, 5, K] and its residual [2, 5, N]; f16 addends (converted to f32 before the kernel)
for _id, _m in [
    ("Q4_0-33x64-x3d-residual", _mul_mat_add(Q.Q4_0, 33, 64, (2, 5), "residual")),
    ("Q8_0-896x896-T1-bias-f16", _mul_mat_add(Q.Q8_0, 896, 896, (1,), "bias", "f16")),
    ("Q4_K-256x1024-T9-residual-f16", _mul_mat_add(Q.Q4_K, 256, 1024, (9,), "residual", "f16")),
]:
    CASES.append(Case(f"MUL_MAT_ADD-{_id}", _m))


def _mul_mat_swiglu(qt: quant.QType, F: int, K: int, xshape: tuple[int, ...], xq: bool = False, **ctx):
    """MUL_MAT_SWIGLU(w [2F, K] of gate/up row pairs, x): the mat-vec's GLU epilogue at up to 4 tokens, the
    product into scratch then glu_pairs_f32 otherwise (prefill kernels, int8 mat-vecs)."""
    ctx = _pin_prefill(ctx, xshape)

    def make(rng):
        g = Graph()
        w = g.weight("w", (2 * F, K), qt.name.lower())
        x = g.input("x", (*xshape, K))
        g.output(g.mul_mat_swiglu(w, x, "out", g.quantize_x8(x, "xq") if xq else None))
        raw = quant.random_blocks(qt, (2 * F, K), rng)
        tol = F16_TOL if xq or ctx.get("mat_mul", TILED).prefill in ("blas", "mmq") else _tol("f32")
        return Built(g, {"x": _normal(rng, (*xshape, K))}, {"w": (raw, qt)}, tol, ctx)

    return make


for _qt in (Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.F16):
    _F, _K = (768, 256) if quant.block_size(_qt) == 256 else (768, 576)
    for _T in (1, 3, 64):
        CASES.append(Case(f"MUL_MAT_SWIGLU-{_qt.name}-{_F}x{_K}-T{_T}", _mul_mat_swiglu(_qt, _F, _K, (_T,))))
CASES.append(Case("MUL_MAT_SWIGLU-Q4_0-11008x4096-T1", _mul_mat_swiglu(Q.Q4_0, 11008, 4096, (1,))))
# on int8 x: mul_mat_vec_xr's epilogue (row groups over warps; whole rows at K = 4096), mul_mat_vec_xq's
# (Q4_0: 4 rows a warp), and at 3 tokens
for _qt, _F, _K, _T in ((Q.Q8_0, 4096, 1024, 1), (Q.Q4_0, 4096, 4096, 1), (Q.Q8_0, 4096, 4096, 3),
                        (Q.Q4_0, 4096, 576, 2), (Q.Q8_0, 4096, 576, 1)):
    CASES.append(Case(f"MUL_MAT_SWIGLU-{_qt.name}-{_F}x{_K}-T{_T}-int8",
                      _mul_mat_swiglu(_qt, _F, _K, (_T,), xq=True, mat_mul=C.MatMulOptions(True))))
CASES.append(Case("MUL_MAT_SWIGLU-Q4_0-768x576-T64-blas",
                  _mul_mat_swiglu(Q.Q4_0, 768, 576, (64,), mat_mul=C.MatMulOptions(prefill="blas"))))
def _int8_read_check(qt: quant.QType, weights: dict, inputs: dict, kind: str) -> Callable:
    """The check of a norm-folded mat-vec on int8 x: against the reference of what the kernel reads (the
    dequantized weight times the x that RMS_NORM_MUL_QUANTIZE_X8's rows hold, numpy_ref), to f32 precision.
    Against the f32 composition int8 x alone is ~8e-5 nmse (a median over seeds at these shapes; SWIGLU
    rows pass 1e-4 in 60% of them), which says nothing about the kernel."""
    from rocmforge.backends import numpy_ref as R

    def check(out: np.ndarray, ref: np.ndarray) -> None:
        x = inputs["x"]
        N, K = out.shape[-1] * (2 if kind == "glu" else 1), x.shape[-1]
        w = quant.dequantize(weights["w"][0], qt, (N, K))
        xd = R.dequantize_x8(R.RMS_NORM_MUL_QUANTIZE_X8(x, weights["wn"][0], eps=1e-6), K)
        b = quant.dequantize(weights["b"][0], Q.F32, (N,)) if kind == "bias" else inputs.get("b")
        want = (R.MUL_MAT_SWIGLU(w, xd) if kind == "glu" else R.MUL_MAT(w, xd) if kind == "plain"
                else R.MUL_MAT_ADD(w, xd, b))
        assert out.shape == want.shape
        err = nmse(out, want)
        assert err <= F32_TOL, f"nmse {err:.3e} against the int8 reading's reference"
        assert nmse(out, ref) <= 1e-3  # and near the f32 composition (int8 x: ~1e-4)

    return check


def _rms_norm_mul_mat(qt: quant.QType, N: int, K: int, xshape: tuple[int, ...], kind: str, xq: bool = False,
                      **ctx):
    """RMS_NORM_MUL_MAT (kind "plain"), _ADD ("bias": a weight [N]; "residual": an input of the output's
    shape) or _SWIGLU ("glu": w [N] of gate/up pairs) of x and the norm's weight wn [K]: mul_mat_vec with the
    norm folded in at up to 4 tokens, the norm into scratch then the mat-mul otherwise; xq: with
    RMS_NORM_MUL_QUANTIZE_X8(x, wn) as its last source, what an int8 kernel reads instead (checked by
    _int8_read_check)."""
    ctx = _pin_prefill(ctx, xshape)

    def make(rng):
        g = Graph()
        w = g.weight("w", (N, K), qt.name.lower())
        x = g.input("x", (*xshape, K))
        wn = g.weight("wn", (K,), "f32")
        weights = {"w": (quant.random_blocks(qt, (N, K), rng), qt),
                   "wn": ((1 + 0.5 * rng.standard_normal(K)).astype(np.float32), Q.F32)}
        inputs = {"x": _normal(rng, (*xshape, K), scale=3.0)}
        b = None
        if kind == "bias":
            b = g.weight("b", (N,), "f32")
            weights["b"] = (quant.random_blocks(Q.F32, (N,), rng), Q.F32)
        elif kind == "residual":
            b = g.input("b", (*xshape, N))
            inputs["b"] = _normal(rng, (*xshape, N))
        xq_node = g.rms_norm_mul_quantize_x8(x, wn, 1e-6, "xq") if xq else None
        g.output(g.rms_norm_mul_mat(w, x, wn, 1e-6, "out", b=b, glu=kind == "glu", xq=xq_node))
        check = _int8_read_check(qt, weights, inputs, kind) if xq else None
        return Built(g, inputs, weights, _tol("f32"), ctx, check)

    return make


# the norm folded into the decode mat-vec (every weight kind of unit, 1 and 3 tokens), and a prompt's path
for _qt, _N, _K in ((Q.Q4_0, 96, 896), (Q.Q5_0, 1152, 896), (Q.Q8_0, 130, 576), (Q.Q4_K, 64, 1024),
                    (Q.Q6_K, 64, 512), (Q.F16, 40, 264), (Q.F32, 33, 100)):
    for _kind in ("plain", "bias", "residual", "glu"):
        for _T in (1, 3, 64):
            if _kind == "glu" and _N % 2:
                continue
            _id = f"RMS_NORM_MUL_MAT{'' if _kind == 'plain' else '_SWIGLU' if _kind == 'glu' else '_ADD'}"
            CASES.append(Case(f"{_id}-{_qt.name}-{_N}x{_K}-T{_T}-{_kind}",
                              _rms_norm_mul_mat(_qt, _N, _K, (_T,), _kind)))
# on int8 x: the norm in RMS_NORM_MUL_QUANTIZE_X8's copy, the mat-vec on it alone (mul_mat_vec_xr's whole rows
# at K = 4096, its row groups at 2304, mul_mat_vec_xq at 576), 1 and 3 tokens
for _qt, _N, _K in ((Q.Q4_0, 1000, 4096), (Q.Q8_0, 130, 2304), (Q.Q4_0, 96, 576), (Q.Q8_0, 64, 576)):
    for _kind in ("plain", "bias", "residual", "glu"):
        for _T in (1, 3):
            _id = f"RMS_NORM_MUL_MAT{'' if _kind == 'plain' else '_SWIGLU' if _kind == 'glu' else '_ADD'}"
            _opts = C.MatMulOptions(True, min_n={"mul_mat_vec_xr": 0, "mul_mat_vec_xq": 0})
            _m = _rms_norm_mul_mat(_qt, _N, _K, (_T,), _kind, xq=True, mat_mul=_opts)
            CASES.append(Case(f"{_id}-int8-{_qt.name}-{_N}x{_K}-T{_T}-{_kind}", _m))
# the f32-activation mat-vec with quantized weights, x's QUANTIZE_X8 given (and not read)
for _qt in (Q.Q4_0, Q.Q8_0):
    for _add in ("bias", "residual"):
        _m = _mul_mat_add(_qt, 1001, 4096, (2,), _add, xq=True, mat_mul=C.MatMulOptions())
        CASES.append(Case(f"MUL_MAT_ADD-f32x-{_qt.name}-1001x4096-T2-{_add}", _m))


def _int8_add_cases(label: str, shapes: list, *kernels: C.MatMulKernel, xq: bool = True) -> None:
    """MUL_MAT_ADD cases of int8-activation kernels (F16_TOL) for Q4_0 and Q8_0, bias and residual, as
    _int8_cases: the first of `kernels` that applies, every kernel from N = 1; x's QUANTIZE_X8 given (xq: the
    kernel reads it)."""
    for qt in (Q.Q4_0, Q.Q8_0):
        for N, K, T, tun in shapes:
            tid = "".join(f"-{k[8:]}={v}" for k, v in tun.items())
            for add in ("bias", "residual"):
                opts = V.options(*kernels, min_n=0)
                m = _mul_mat_add(qt, N, K, (T,), add, xq=xq, tol=F16_TOL, mat_mul=opts, tunables=tun)
                CASES.append(Case(f"MUL_MAT_ADD-{label}-{qt.name}-{N}x{K}-T{T}{tid}-{add}", m))


# the table's int8 kernels, every place they write y: mul_mat_vec_xr with whole rows (K = 4096: one warp,
# lanes of a row's virtual rows), row groups of 8 over several warps (K = 4864, 2304; 8 warps) and one warp a
# row group (11005 rows of K = 512); mul_mat_vec_xq where K is not a multiple of 256 (576)
_int8_add_cases(
    "xr",
    [
        (1001, 4096, 1, {}),
        (515, 4864, 2, {}),
        (129, 2304, 3, {}),
        (11005, 512, 2, {}),
        (300, 4096, 4, _xr(8, 2, 2)),
        (129, 576, 1, {}),
    ],
    C.MUL_MAT_VEC_XR,
    C.MUL_MAT_VEC_XQ,
)
_int8_add_cases("xq", [(1000, 4096, 1, {}), (129, 576, 3, {})], C.MUL_MAT_VEC_XQ)
# dev/'s variants (they share the argument list): block per lane, time-stamped xr, and the f32-x ones
_int8_add_cases("xb", [(1000, 4096, 2, {})], V.MUL_MAT_VEC_XB, C.MUL_MAT_VEC_XQ)
_int8_add_cases("xr-trace", [(515, 4096, 2, {"RF_MMVR_TRACE": 64})], V.MUL_MAT_VEC_XR_TRACE)
_int8_add_cases("x8", [(1000, 4096, 3, {"RF_MMVX_LEVELS": 2})], V.MUL_MAT_VEC_X, xq=False)
for _qt in (Q.Q4_0, Q.Q8_0):
    for _label, _kern, (_N, _K) in [
        ("int8", V.MUL_MAT_VEC_Q, _mm_shapes(_qt)[0]),
        ("staged", V.MUL_MAT_VEC_S, (37, 256)),
    ]:
        _m = _mul_mat_add(_qt, _N, _K, (1,), "residual", mat_mul=V.options(_kern))
        CASES.append(Case(f"MUL_MAT_ADD-{_label}-{_qt.name}-{_N}x{_K}-T1-residual", _m))


# ---- MUL_MAT and MUL_MAT_ADD on the vendor BLAS (mul_mat_blas) -----------------------------------------
# x to f16, the weight dequantized to f16 (f16 weights read as they are), the library's GEMM with f32
# arithmetic into f32: the f16 bound; f32 weights take an f32 GEMM on f32 x: the f32 bound
BLAS = C.MatMulOptions(prefill="blas")


def _blas_tol(qt: quant.QType) -> float:
    return F32_TOL if qt == Q.F32 else F16_TOL


def _blas_tiles(K: int) -> dict[str, int]:
    """RF_BLAS_SCRATCH for 16 rows of x and 16 of the weight in f16: several chunks and tiles per node."""
    return {"RF_BLAS_SCRATCH": 2 * G.BLAS_TILE * 2 * K + 256}


for _qt in WEIGHT_TYPES:
    _tol_b = _blas_tol(_qt)
    for _N, _K in _mm_shapes(_qt):
        for _T in (7, 64, 512):
            _m = _mul_mat(_qt, _N, _K, (_T,), tol=_tol_b, mat_mul=BLAS)
            CASES.append(Case(f"MUL_MAT-blas-{_qt.name}-{_N}x{_K}-T{_T}", _m))
        _m = _mul_mat(_qt, _N, _K, (64,), tol=_tol_b, mat_mul=BLAS, tunables=_blas_tiles(_K))
        CASES.append(Case(f"MUL_MAT-blas-tiles-{_qt.name}-{_N}x{_K}-T64", _m))
        for _add in ("bias", "residual"):
            for _T in (7, 64):
                _m = _mul_mat_add(_qt, _N, _K, (_T,), _add, tol=_tol_b, mat_mul=BLAS)
                CASES.append(Case(f"MUL_MAT_ADD-blas-{_qt.name}-{_N}x{_K}-T{_T}-{_add}", _m))
            _m = _mul_mat_add(_qt, _N, _K, (64,), _add, tol=_tol_b, mat_mul=BLAS, tunables=_blas_tiles(_K))
            CASES.append(Case(f"MUL_MAT_ADD-blas-tiles-{_qt.name}-{_N}x{_K}-T64-{_add}", _m))
# x [2, 5, K] and its residual; f16 x (converted, or read in place by an f16 weight's GEMM); f16 addends;
# LLaMA-7B shapes at 512 tokens through the default scratch (11008 rows: two tiles)
for _id, _m in [
    ("MUL_MAT-blas-Q4_0-batched-x3d", _mul_mat(Q.Q4_0, 33, 64, (2, 5), mat_mul=BLAS, tol=F16_TOL)),
    ("MUL_MAT-blas-Q8_0-x-f16-T9", _mul_mat(Q.Q8_0, 33, 64, (9,), "f16", mat_mul=BLAS)),
    ("MUL_MAT-blas-F16-37x96-x-f16-T64", _mul_mat(Q.F16, 37, 96, (64,), "f16", mat_mul=BLAS)),
    ("MUL_MAT-blas-Q4_0-11008x4096-T512", _mul_mat(Q.Q4_0, 11008, 4096, (512,), mat_mul=BLAS, tol=F16_TOL)),
    ("MUL_MAT-blas-Q4_K-4096x11008-T512", _mul_mat(Q.Q4_K, 4096, 11008, (512,), mat_mul=BLAS, tol=F16_TOL)),
    ("MUL_MAT-blas-Q4_0-896x896-T4096", _mul_mat(Q.Q4_0, 896, 896, (4096,), mat_mul=BLAS, tol=F16_TOL)),
    ("MUL_MAT-blas-Q6_K-896x4864-T4095", _mul_mat(Q.Q6_K, 896, 4864, (4095,), mat_mul=BLAS, tol=F16_TOL)),
    ("MUL_MAT_ADD-blas-Q4_0-33x64-x3d-residual",
     _mul_mat_add(Q.Q4_0, 33, 64, (2, 5), "residual", mat_mul=BLAS, tol=F16_TOL)),
    ("MUL_MAT_ADD-blas-Q8_0-896x896-T64-bias-f16", _mul_mat_add(Q.Q8_0, 896, 896, (64,), "bias", "f16",
                                                                  mat_mul=BLAS)),
    ("MUL_MAT_ADD-blas-Q4_K-256x1024-T9-residual-f16",
     _mul_mat_add(Q.Q4_K, 256, 1024, (9,), "residual", "f16", mat_mul=BLAS)),
]:
    CASES.append(Case(_id, _m))


# ---- MUL_MAT, MUL_MAT_ADD and MUL_MAT_SWIGLU on int8 matrix instructions (mul_mat_q) --------------------
# x quantized to int8 (quantize_x8, one level), weight granules unpacked to int8, int32 products scaled in
# f32: the int8 bound (F16_TOL) as the int8 mat-vecs'. Every quantized type at its two shapes (K = 5 blocks:
# a stage and a quarter; partial tiles of rows), odd token counts, prompts up to 4095 tokens, both addends.
MMQ = C.MatMulOptions(prefill="mmq")
_QUANTIZED = [qt for qt in WEIGHT_TYPES if qt not in (Q.F32, Q.F16, Q.BF16)]
for _qt in _QUANTIZED:
    for _N, _K in _mm_shapes(_qt):
        for _T in (5, 7, 64, 129):
            _m = _mul_mat(_qt, _N, _K, (_T,), tol=F16_TOL, mat_mul=MMQ)
            CASES.append(Case(f"MUL_MAT-mmq-{_qt.name}-{_N}x{_K}-T{_T}", _m))
        for _add in ("bias", "residual"):
            _m = _mul_mat_add(_qt, _N, _K, (65,), _add, tol=F16_TOL, mat_mul=MMQ)
            CASES.append(Case(f"MUL_MAT_ADD-mmq-{_qt.name}-{_N}x{_K}-T65-{_add}", _m))
    _F, _K = (768, 256) if quant.block_size(_qt) == 256 else (768, 576)
    CASES.append(Case(f"MUL_MAT_SWIGLU-mmq-{_qt.name}-{_F}x{_K}-T64",
                      _mul_mat_swiglu(_qt, _F, _K, (64,), mat_mul=MMQ)))
for _id, _m in [
    ("MUL_MAT-mmq-Q4_0-11008x4096-T512", _mul_mat(Q.Q4_0, 11008, 4096, (512,), mat_mul=MMQ, tol=F16_TOL)),
    ("MUL_MAT-mmq-Q8_0-4096x4096-T512", _mul_mat(Q.Q8_0, 4096, 4096, (512,), mat_mul=MMQ, tol=F16_TOL)),
    ("MUL_MAT-mmq-Q4_K-4096x11008-T512", _mul_mat(Q.Q4_K, 4096, 11008, (512,), mat_mul=MMQ, tol=F16_TOL)),
    ("MUL_MAT-mmq-Q6_K-896x4864-T4095", _mul_mat(Q.Q6_K, 896, 4864, (4095,), mat_mul=MMQ, tol=F16_TOL)),
    ("MUL_MAT-mmq-Q4_0-batched-x3d", _mul_mat(Q.Q4_0, 33, 64, (2, 5), mat_mul=MMQ, tol=F16_TOL)),
    ("MUL_MAT_ADD-mmq-Q5_0-896x896-T4096-residual",
     _mul_mat_add(Q.Q5_0, 896, 896, (4096,), "residual", mat_mul=MMQ, tol=F16_TOL)),
]:
    CASES.append(Case(_id, _m))


# ---- element-wise --------------------------------------------------------------------------------------


def _binary(op: str, ashape, bshape, adt="f32", bdt="f32"):
    def make(rng):
        g = Graph()
        a, b = g.input("a", ashape, adt), g.input("b", bshape, bdt)
        g.output(getattr(g, op)(a, b, "out"))
        return Built(g, {"a": _normal(rng, ashape, adt), "b": _normal(rng, bshape, bdt)}, {}, _tol(adt, bdt))

    return make


for _op in ("add", "mul"):
    for _as, _bs2, _adt, _bdt in [
        ((7, 33), (33,), "f32", "f32"),
        ((7, 33), (7, 33), "f32", "f32"),
        ((3, 5, 6), (5, 1), "f32", "f32"),
        ((2, 3, 4, 5), (3, 1, 5), "f32", "f32"),
        ((2, 3, 4, 5), (2, 1, 4, 1), "f32", "f32"),
        ((1000,), (1,), "f32", "f32"),
        ((7, 33), (33,), "f32", "f16"),
        ((4, 9), (4, 9), "f16", "f32"),
    ]:
        CASES.append(Case(f"{_op.upper()}-{_as}-{_bs2}-{_adt}-{_bdt}", _binary(_op, _as, _bs2, _adt, _bdt)))


def _unary(op: str, shape, dt="f32", **params):
    def make(rng):
        g = Graph()
        a = g.input("a", shape, dt)
        g.output(getattr(g, op)(a, *params.values(), "out") if op == "scale" else getattr(g, op)(a, "out"))
        return Built(g, {"a": _normal(rng, shape, dt, 3.0)}, {}, _tol(dt))

    return make


for _shape, _dt in [((7, 33), "f32"), ((1001,), "f32"), ((3, 4, 5), "f16")]:
    CASES.append(Case(f"SCALE-{_shape}-{_dt}", _unary("scale", _shape, _dt, s=-0.37)))
    CASES.append(Case(f"SILU-{_shape}-{_dt}", _unary("silu", _shape, _dt)))


def _swiglu(shape, gdt="f32", udt="f32"):
    def make(rng):
        g = Graph()
        a, b = g.input("g", shape, gdt), g.input("u", shape, udt)
        g.output(g.swiglu(a, b, "out"))
        return Built(
            g, {"g": _normal(rng, shape, gdt, 3.0), "u": _normal(rng, shape, udt)}, {}, _tol(gdt, udt)
        )

    return make


for _shape, _g, _u in [((7, 130), "f32", "f32"), ((1, 4864), "f32", "f32"), ((3, 5), "f16", "f32")]:
    CASES.append(Case(f"SWIGLU-{_shape}-{_g}-{_u}", _swiglu(_shape, _g, _u)))


def _rms_norm(shape, dt="f32"):
    def make(rng):
        g = Graph()
        a = g.input("a", shape, dt)
        g.output(g.rms_norm(a, 1e-6, "out"))
        return Built(g, {"a": _normal(rng, shape, dt, 2.0)}, {}, _tol(dt))

    return make


for _shape, _dt in [
    ((3, 896), "f32"),
    ((5, 7), "f32"),
    ((1, 4097), "f32"),
    ((2, 64), "f16"),
    ((2, 3, 40), "f32"),
]:
    CASES.append(Case(f"RMS_NORM-{_shape}-{_dt}", _rms_norm(_shape, _dt)))


def _rms_norm_mul(shape, dt="f32", wdt="f32", w_input=False):
    """RMS_NORM(a) * w, w [n] the norm's weight (a weight leaf; w_input: an input)."""

    def make(rng):
        g = Graph()
        a = g.input("a", shape, dt)
        n = shape[-1]
        inputs = {"a": _normal(rng, shape, dt, 2.0)}
        weights = {}
        if w_input:
            w = g.input("w", (n,), wdt)
            inputs["w"] = _normal(rng, (n,), wdt)
        else:
            w = g.weight("w", (n,), wdt)
            wq = Q.F16 if wdt == "f16" else Q.F32
            weights["w"] = (quant.random_blocks(wq, (n,), rng), wq)
        g.output(g.rms_norm_mul(a, w, 1e-6, "out"))
        return Built(g, inputs, weights, _tol(dt, wdt))

    return make


for _shape, _dt, _wdt, _win in [
    ((3, 577), "f16", "f32", False),
    ((3, 577), "f16", "f16", False),
    ((4, 577), "f32", "f16", False),
    ((5, 896), "f32", "f32", False),
    ((1, 4097), "f32", "f32", True),
    ((2, 3, 40), "f32", "f32", True),
    ((7, 5), "f16", "f16", True),
]:
    CASES.append(Case(f"RMS_NORM_MUL-{_shape}-{_dt}-w{_wdt}{'-input' if _win else ''}",
                      _rms_norm_mul(_shape, _dt, _wdt, _win)))


def _rope(T, H, D, n_dims, neox, base, freq_scale, max_pos, dt="f32"):
    def make(rng):
        g = Graph()
        x, pos = g.input("x", (T, H, D), dt), g.input("pos", (T,), "i32")
        g.output(g.rope(x, pos, "out", n_dims=n_dims, neox=neox, base=base, freq_scale=freq_scale))
        return Built(
            g,
            {"x": _normal(rng, (T, H, D), dt), "pos": rng.integers(0, max_pos, T).astype(np.int32)},
            {},
            _tol(dt),
        )

    return make


for _args in [
    (5, 3, 64, 64, False, 10000.0, 1.0, 4096),
    (5, 3, 64, 64, True, 1e6, 1.0, 32768),
    (1, 14, 64, 64, True, 1e6, 1.0, 100),
    (4, 2, 40, 32, False, 10000.0, 0.5, 2000),
    (3, 2, 40, 24, True, 500000.0, 0.25, 9000),
    (2, 2, 16, 16, False, 10000.0, 1.0, 50, "f16"),
]:
    CASES.append(Case(f"ROPE-{'-'.join(map(str, _args))}", _rope(*_args)))


# ---- views, copies, rows ----------------------------------------------------------------------------------


@case("VIEW-strided-then-CONT")
def _view_cont(rng):
    g = Graph()
    a = g.input("a", (6, 10), "f32")
    v = g.view(a, (3, 4), "v", strides=(20, 2), offset=1)
    g.output(g.cont(v, "out"))
    g.output(g.view(a, (2, 10), "v2", offset=20))  # a contiguous window, returned as is
    return Built(g, {"a": _normal(rng, (6, 10))}, {}, F32_TOL)


@case("CONT-3d-transposed-view")
def _view3(rng):
    g = Graph()
    a = g.input("a", (3, 4, 5), "f32")
    g.output(g.cont(g.view(a, (4, 3, 5), "v", strides=(5, 20, 1)), "out"))
    return Built(g, {"a": _normal(rng, (3, 4, 5))}, {}, F32_TOL)


@case("RESHAPE-then-ADD")
def _reshape(rng):
    g = Graph()
    a, b = g.input("a", (6, 10), "f32"), g.input("b", (3, 20), "f32")
    r = g.reshape(a, (3, 20), "r")
    g.output(r, "reshaped")
    g.output(g.add(r, b, "out"))
    return Built(g, {"a": _normal(rng, (6, 10)), "b": _normal(rng, (3, 20))}, {}, F32_TOL)


def _cpy(src_dt: str, dst_dt: str, strided: bool):
    def make(rng):
        g = Graph()
        a = g.input("a", (6, 10), src_dt)
        src = g.view(a, (5, 4), "v", strides=(10, 2), offset=3) if strided else a
        g.output(g.cpy(src, dst_dt, "out"))
        if src_dt == "i32":
            av = rng.integers(-70000, 70000, (6, 10)).astype(np.int32)
        else:
            av = _normal(rng, (6, 10), src_dt, 300.0 if dst_dt == "i32" else 1.0)
        return Built(g, {"a": av}, {}, _tol(src_dt, dst_dt))

    return make


for _s, _d, _st in [
    ("f32", "f16", False),
    ("f16", "f32", False),
    ("f32", "f16", True),
    ("f32", "i32", False),
    ("i32", "f32", True),
    ("f16", "f16", True),
    ("f32", "f32", True),
    ("i32", "i32", False),
]:
    CASES.append(Case(f"CPY-{_s}-{_d}-{'strided' if _st else 'contig'}", _cpy(_s, _d, _st)))


def _set_rows(dst_dt: str, R: int, W: int, n: int):
    def make(rng):
        g = Graph()
        d0 = g.input("dst", (R, W), "f32")
        dst = g.cont(d0, "dst_copy") if dst_dt == "f32" else g.cpy(d0, dst_dt, "dst_copy")
        src, idx = g.input("src", (n, W), "f32"), g.input("idx", (n,), "i32")
        g.output(g.set_rows(dst, src, idx, "out"))
        rows = rng.permutation(R)[:n].astype(np.int32)
        return Built(
            g, {"dst": _normal(rng, (R, W)), "src": _normal(rng, (n, W)), "idx": rows}, {}, _tol(dst_dt)
        )

    return make


for _args in [("f32", 16, 24, 3), ("f16", 16, 24, 3), ("f32", 300, 128, 1), ("f16", 40, 600, 7)]:
    CASES.append(Case(f"SET_ROWS-{'-'.join(map(str, _args))}", _set_rows(*_args)))


def _set_rows_rope(dst_dt: str, R: int, Hkv: int, D: int, n: int, n_dims: int, neox: bool, lead: int):
    """K|V rows [n, 2 * Hkv * D]: columns `lead`.. of wider rows (as in a stacked Q/K/V result), K's half
    ROPE'd at the row indices, into a [R, 2 * Hkv * D] cache."""

    def make(rng):
        W = 2 * Hkv * D
        g = Graph()
        d0 = g.input("dst", (R, W), "f32")
        dst = g.cont(d0, "dst_copy") if dst_dt == "f32" else g.cpy(d0, dst_dt, "dst_copy")
        wide, idx = g.input("qkv", (n, lead + W), "f32"), g.input("idx", (n,), "i32")
        src = g.view(wide, (n, W), "kv", (lead + W, 1), lead)
        g.output(g.set_rows_rope(dst, src, idx, "out", n_rot=W // 2, head_dim=D, n_dims=n_dims, neox=neox,
                                 base=1e6, freq_scale=1.0))
        rows = rng.permutation(R)[:n].astype(np.int32)
        inputs = {"dst": _normal(rng, (R, W)), "qkv": _normal(rng, (n, lead + W)), "idx": rows}
        return Built(g, inputs, {}, _tol(dst_dt))

    return make


for _args in [("f32", 64, 3, 64, 1, 64, False, 576), ("f16", 64, 3, 64, 1, 64, False, 576),
              ("f16", 4096, 2, 64, 5, 64, True, 896), ("f32", 40, 1, 128, 7, 64, True, 0)]:
    CASES.append(Case(f"SET_ROWS_ROPE-{'-'.join(map(str, _args))}", _set_rows_rope(*_args)))


# ---- softmax, argmax ------------------------------------------------------------------------------------


def _soft_max(shape, mask_shape=None, mdt="f32", scale=1.0, adt="f32"):
    def make(rng):
        g = Graph()
        a = g.input("a", shape, adt)
        inputs = {"a": _normal(rng, shape, adt, 2.0)}
        m = None
        if mask_shape:
            m = g.input("m", mask_shape, mdt)
            mv = np.where(rng.random(mask_shape) < 0.3, -np.inf, rng.standard_normal(mask_shape))
            mv[:, 0] = 0.0  # every row keeps a visible column
            inputs["m"] = mv.astype(np.float16 if mdt == "f16" else np.float32)
        g.output(g.soft_max(a, "out", mask=m, scale=scale))
        return Built(g, inputs, {}, _tol(mdt, adt) if mask_shape else _tol(adt))

    return make


for _args in [
    ((4, 3, 10), None, "f32", 0.7),
    ((4, 3, 10), (3, 10), "f32", 1.0),
    ((6, 33), (2, 33), "f16", 0.125),
    ((2, 151), None, "f32", 1.0),
    ((1, 5000), None, "f32", 1.0),
    ((3,), None, "f32", 2.0),
    ((2, 17), None, "f32", 1.0, "f16"),
]:
    CASES.append(Case(f"SOFT_MAX-{'-'.join(map(str, _args))}", _soft_max(*_args)))


def _argmax(shape, dt="f32", special=False):
    """special: rows with NaNs (two, the first wins), tied maxima (the lower index wins), all -inf."""

    def make(rng):
        g = Graph()
        a = g.input("a", shape, dt)
        g.output(g.argmax(a, "out"))
        x = _normal(rng, shape, dt)
        if special:
            rows = x.reshape(-1, shape[-1])
            n = shape[-1]
            rows[0, rng.choice(n, 2, replace=False)] = np.nan
            tie = rng.choice(n, 2, replace=False)
            rows[1, tie] = rows[1].max() + 1
            rows[2] = -np.inf
            rows[3, -1] = np.nan  # a NaN in the last place of a row
        return Built(g, {"a": x}, {}, 0.0)

    return make


for _shape, _dt in [
    ((3, 1000), "f32"),
    ((1, 151936), "f32"),
    ((5, 7), "f32"),
    ((2, 300), "f16"),
    ((2, 3, 9), "f32"),
]:
    CASES.append(Case(f"ARGMAX-{_shape}-{_dt}", _argmax(_shape, _dt)))
for _shape, _dt in [((4, 1000), "f32"), ((4, 151936), "f32"), ((4, 300), "f16")]:
    CASES.append(Case(f"ARGMAX-nan-ties-{_shape}-{_dt}", _argmax(_shape, _dt, special=True)))


# ---- sample ---------------------------------------------------------------------------------------------


def _sample_check(params: np.ndarray, x: np.ndarray):
    """Tokens equal to the reference's, with the params and each differing row's top logits in the message
    (the draw is exact: integer weights and sums, Philox)."""

    def check(out: np.ndarray, ref: np.ndarray) -> None:
        bad = np.flatnonzero(out != ref)
        rows = [f"row {r}: {out[r]} vs {ref[r]}, top {np.sort(x[r])[::-1][:4].tolist()}" for r in bad[:4]]
        assert not len(bad), f"params {params.tolist()}; " + "; ".join(rows)

    return check


def _sample(V: int, n: int, temperature: float, top_k: int, top_p: float, special: bool = False):
    """SAMPLE over n rows of V logits ~ N(0, 3^2) (a quarter of them rounded to tenths: ties), a random
    seed and counter (near the counter's wrap one time in four); special: ties everywhere, -0 and +0, NaN,
    +inf, all -inf, increasing rows (every element beats the bar: the most cuts)."""

    def make(rng):
        from rocmforge.backends.sampling import sample_params
        from rocmforge.ir.ops import SAMPLE_PARAMS

        g = Graph()
        a = g.input("a", (n, V))
        p = g.input("p", (SAMPLE_PARAMS,), "i32")
        g.output(g.sample(a, p, "out"))
        x = (rng.standard_normal((n, V)) * 3).astype(np.float32)
        tie = rng.random((n, V)) < 0.25
        x[tie] = np.round(x[tie], 1)
        if special:
            x[0] = np.round(x[0])
            x[1] = np.where(np.arange(V) % 2, np.float32(0.0), np.float32(-0.0))
            x[1, 5:] = rng.standard_normal(V - 5).astype(np.float32) - 10
            x[2, [V // 2, V // 3]] = np.nan
            x[3, [V - 1, 1]] = np.inf
            x[4] = -np.inf
            x[5] = np.sort(x[5])
        counter = int(rng.integers(2**32 - n, 2**32)) if rng.random() < 0.25 else int(rng.integers(0, 2**32))
        seed = int(rng.integers(0, 2**64, dtype=np.uint64))
        params = sample_params(seed, counter, temperature, top_k, top_p)
        return Built(g, {"a": x, "p": params}, {}, 0.0, check=_sample_check(params, x))

    return make


for _V in (49152, 151936, 3001):
    for _t, _k, _p in [(0.0, 40, 1.0), (0.7, 40, 0.9), (1.5, 256, 1.0), (0.7, 1, 1.0), (1.5, 256, 0.9),
                       (0.7, 40, 1.0), (1.5, 0, 0.9)]:
        CASES.append(Case(f"SAMPLE-{_V}-T{_t}-k{_k}-p{_p}", _sample(_V, 4, _t, _k, _p)))
for _V, _t in [(151936, 1.0), (3001, 0.7), (300, 1.5), (7, 1.0)]:
    CASES.append(Case(f"SAMPLE-special-{_V}-T{_t}", _sample(_V, 6, _t, 256, 0.95, special=True)))
CASES.append(Case("SAMPLE-special-151936-greedy", _sample(151936, 6, 0.0, 40, 1.0, special=True)))
CASES.append(Case("SAMPLE-rows-49152-T30", _sample(49152, 33, 30.0, 256, 1.0)))  # flat: draws spread


# ---- attention ------------------------------------------------------------------------------------------


def _attn(
    T: int,
    H: int,
    Hkv: int,
    D: int,
    C: int,
    first_pos: int,
    kv_dt: str = "f32",
    pad: int = 0,
    shuffle: bool = False,
    rope: bool = False,
):
    """q [T, H, D] at positions first_pos.. over a [C, Hkv*D(+pad)] cache viewed as [C, Hkv, D]; rope: q
    ROPE'd inside the attention (NEOX pairs over all of D)."""

    def make(rng):
        g = Graph()
        W = Hkv * D + pad
        q = g.input("q", (T, H, D), "f32")
        kc, vc = g.input("kc", (C, W), kv_dt), g.input("vc", (C, W), kv_dt)
        pos = g.input("pos", (T,), "i32")
        k = g.view_3d(kc, C, Hkv, D, W, D, 0, "k")
        v = g.view_3d(vc, C, Hkv, D, W, D, 0, "v")
        rope_q = (D, True, 1e6, 1.0) if rope else None
        g.output(g.flash_attn_ext(q, k, v, pos, D**-0.5, "out", rope_q=rope_q))
        p = np.arange(first_pos, first_pos + T, dtype=np.int32)
        if shuffle:
            p = rng.permutation(p)
        inputs = {
            "q": _normal(rng, (T, H, D), scale=2.0),
            "kc": _normal(rng, (C, W), kv_dt),
            "vc": _normal(rng, (C, W), kv_dt),
            "pos": p,
        }
        return Built(g, inputs, {}, _tol(kv_dt))

    return make


for _args in [
    (1, 14, 2, 64, 1, 0),
    (1, 14, 2, 64, 100, 99),
    (1, 14, 2, 64, 1024, 700),
    (1, 32, 32, 128, 4096, 4095, "f16"),
    (1, 4, 4, 128, 300, 37, "f32", 16),
    (7, 14, 2, 64, 256, 200),
    (7, 4, 1, 128, 64, 0, "f16"),
    (64, 14, 2, 64, 64, 0),
    (64, 4, 2, 128, 512, 300, "f32", 0, True),
    (3, 2, 1, 256, 100, 90),
    (5, 6, 3, 80, 50, 10, "f16"),
    (1, 9, 3, 64, 1024, 700, "f16", 0, False, True),
    (1, 14, 2, 64, 4096, 4095, "f32", 0, False, True),
    (7, 14, 2, 64, 256, 200, "f16", 0, True, True),
    # prompts over f16 caches on matrix instructions (attention_mma.hip, where the device has them:
    # launch_attention.mma_kernel): q and P rounded to f16, within F16_TOL
    (17, 14, 2, 64, 64, 40, "f16", 0, True, True),
    (17, 4, 4, 128, 17, 0, "f16", 0, True),
    (64, 4, 4, 128, 128, 0, "f16", 0, True),
    (64, 14, 2, 64, 100, 30, "f16", 0, True),
    (333, 14, 2, 128, 400, 50, "f16", 0, True, True),
    (333, 4, 2, 128, 400, 7, "f16", 4, True),  # padded rows: K, V read one half at a time
    (1024, 8, 8, 64, 1024, 0, "f16"),
    (1024, 14, 2, 64, 2048, 1000, "f16", 0, True),
    (1024, 28, 4, 128, 1100, 60, "f16", 0, True, True),
    (4096, 14, 2, 64, 4096, 0, "f16", 0, True),  # the longest prompt a graph takes: 64 tiles a KV group
]:
    CASES.append(Case(f"FLASH_ATTN_EXT-{'-'.join(map(str, _args))}", _attn(*_args)))



def _attn_write(T: int, H: int, Hkv: int, D: int, C: int, first_pos: int, kv_dt: str, joint: bool,
                rope: bool):
    """FLASH_ATTN_EXT that first writes k_new and v_new (strided views of one [T, 3W] row, as a decode step's
    Q/K/V result is) into rows pos of the cache (fuse_kv_write): K and V in one [C, 2W] cache (joint) or
    in two, k_new ROPE'd where rope; rows pos are NaN before, and read back after (GET_ROWS) as outputs."""

    def make(rng):
        g = Graph()
        W = Hkv * D
        q = g.input("q", (T, H, D), "f32")
        pos = g.input("pos", (T,), "i32")
        qkv = g.input("qkv", (T, 3 * W), "f32")
        k_new = g.view(qkv, (T, W), "k_new", (3 * W, 1), W)
        v_new = g.view(qkv, (T, W), "v_new", (3 * W, 1), 2 * W)
        caches = {"kvc": (C, 2 * W)} if joint else {"kc": (C, W), "vc": (C, W)}
        cs = {n: g.input(n, shape, kv_dt) for n, shape in caches.items()}
        if joint:
            k = g.view_3d(cs["kvc"], C, Hkv, D, 2 * W, D, 0, "k")
            v = g.view_3d(cs["kvc"], C, Hkv, D, 2 * W, D, W, "v")
        else:
            k = g.view_3d(cs["kc"], C, Hkv, D, W, D, 0, "k")
            v = g.view_3d(cs["vc"], C, Hkv, D, W, D, 0, "v")
        rope_q = (D, True, 1e6, 1.0) if rope else None
        g.output(g.flash_attn_ext(q, k, v, pos, D**-0.5, "out", rope_q=rope_q, kv_new=(k_new, v_new)))
        for n, c in cs.items():
            g.output(g.get_rows(c, pos, n + "_rows"))
        p = np.arange(first_pos, first_pos + T, dtype=np.int32)
        inputs = {"q": _normal(rng, (T, H, D), scale=2.0), "pos": p, "qkv": _normal(rng, (T, 3 * W))}
        for n, shape in caches.items():
            inputs[n] = _normal(rng, shape, kv_dt)
            inputs[n][p] = np.nan  # the rows the op writes: a read before its write shows
        return Built(g, inputs, {}, _tol(kv_dt))

    return make


for _args in [
    (1, 14, 2, 64, 100, 99, "f16", True, True),  # Qwen's decode step: one cache, the decode kernel writes
    (1, 9, 3, 64, 1024, 0, "f16", True, True),  # SmolLM2's first step, 32 splits
    (1, 14, 2, 64, 1024, 700, "f32", False, True),  # two caches (K and V of other types), f32
    (1, 32, 32, 128, 4096, 4095, "f16", False, True),  # LLaMA-7B, the cache's last row
    (1, 4, 4, 128, 300, 37, "f16", True, False),  # no RoPE: the rows copied
    (1, 32, 2, 64, 256, 100, "f16", True, True),  # 16 heads a KV head: the tiled kernel, rows written first
    (5, 14, 2, 64, 256, 30, "f16", True, True),  # a prompt: attention_mma (or tiled), rows written first
]:
    CASES.append(Case(f"FLASH_ATTN_EXT-write-{'-'.join(map(str, _args))}", _attn_write(*_args)))

# ---- QUANTIZE_X8 ----------------------------------------------------------------------------------------


def _x8_close(out: np.ndarray, ref: np.ndarray, scale_rtol: float = 1e-6) -> None:
    """QUANTIZE_X8's rows against the reference's: the int8 values within one (a rounding tie may go either
    way on another compiler) and 99.9% equal, the scales to f32 precision (scale_rtol), the sums those of the
    stored values (the output is poisoned first: unwritten values show)."""
    K = out.shape[-1] * 16 // 5
    o, r = (a.reshape(-1, a.shape[-1]).view(np.uint8) for a in (out, ref))
    q, q_ref = o[:, :K].view(np.int8).astype(np.int32), r[:, :K].view(np.int8).astype(np.int32)
    assert np.abs(q - q_ref).max() <= 1 and np.mean(q == q_ref) > 0.999
    ds, ds_ref = (a[:, K:].copy().view(np.float32).reshape(len(a), -1, 2) for a in (o, r))
    np.testing.assert_allclose(ds[..., 0], ds_ref[..., 0], rtol=scale_rtol, atol=0)
    s_got = q.reshape(len(q), -1, 32).sum(-1).astype(np.float32) * ds_ref[..., 0]
    np.testing.assert_allclose(ds[..., 1], s_got, rtol=1e-5, atol=1e-6 * np.abs(ds_ref[..., 1]).max())


def _quantize_x8(M: int, K: int):
    def make(rng):
        g = Graph()
        g.output(g.quantize_x8(g.input("x", (M, K)), "out"))
        x = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10.0, (M, 1))).astype(np.float32)
        x[0, :32] = 0.0  # an all-zero block: scale 0, values 0
        return Built(g, {"x": x}, {}, F32_TOL, check=_x8_close)

    return make


for _M, _K in [(1, 64), (3, 576), (1, 4096), (2, 4160)]:
    CASES.append(Case(f"QUANTIZE_X8-{_M}x{_K}", _quantize_x8(_M, _K)))


def _x8_norm_close(out: np.ndarray, ref: np.ndarray) -> None:
    """_x8_close for a norm's int8 copy: its scales (amax / 127 of the normalized rows) carry the f32 sum of
    squares of the kernel (per thread, then over the block) and rsqrtf against the reference's float64 norm:
    a few f32 ulps (~2^-22)."""
    _x8_close(out, ref, scale_rtol=4e-6)


def _norm_quantize_x8(M: int, K: int):
    def make(rng):
        g = Graph()
        wn = g.weight("wn", (K,), "f32")
        g.output(g.rms_norm_mul_quantize_x8(g.input("x", (M, K)), wn, 1e-6, "out"))
        x = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10.0, (M, 1))).astype(np.float32)
        x[0, :32] = 0.0  # an all-zero block: scale 0, values 0
        weights = {"wn": ((1 + 0.5 * rng.standard_normal(K)).astype(np.float32), Q.F32)}
        return Built(g, {"x": x}, weights, F32_TOL, check=_x8_norm_close)

    return make


# the rows of SmolLM2, Qwen, LLaMA-7B (a row a block, held in registers), 3 tokens, and a longer one
for _M, _K in [(1, 576), (3, 896), (1, 4096), (2, 8192), (1, 20480)]:
    CASES.append(Case(f"RMS_NORM_MUL_QUANTIZE_X8-{_M}x{_K}", _norm_quantize_x8(_M, _K)))


def _mul_mat_given_xq(qt: quant.QType, N: int, K: int, int8: bool):
    """MUL_MAT(w, x, QUANTIZE_X8(x)) as a graph builds it: the f32 kernel reads x, an int8 one xq."""

    def make(rng):
        g = Graph()
        x = g.input("x", (1, K))
        g.output(g.mul_mat(g.weight("w", (N, K), qt.name.lower()), x, "out", g.quantize_x8(x, "xq")))
        raw = quant.random_blocks(qt, (N, K), rng)
        opts = V.options(C.MUL_MAT_VEC_XR, C.MUL_MAT_VEC_XQ, min_n=0) if int8 else C.MatMulOptions()
        return Built(
            g, {"x": _normal(rng, (1, K))}, {"w": (raw, qt)}, F16_TOL if int8 else F32_TOL, {"mat_mul": opts}
        )

    return make


for _qt in (Q.Q4_0, Q.Q8_0):
    for _int8 in (False, True):
        CASES.append(
            Case(
                f"MUL_MAT-xq-given-{_qt.name}-1001x4096-T1{'-int8' if _int8 else ''}",
                _mul_mat_given_xq(_qt, 1001, 4096, _int8),
            )
        )


# ---- the table ----------------------------------------------------------------------------------------


def test_every_op_is_in_the_table():
    from rocmforge.ir.ops import Op

    covered = {c.id.split("-")[0] for c in CASES}
    assert {op.value for op in Op if op is not Op.NONE} <= covered


@pytest.fixture(scope="module")
def hip():
    # f32 x unless a row asks for int8 x (its mat_mul options): the rows name the kernel they test, and the
    # "auto" default would put f32-x rows of 4096-long rows on int8 kernels
    be = HipBackend(int8_activations=False)
    be.debug_poison = True
    return be


def nmse(out: np.ndarray, ref: np.ndarray) -> float:
    o, r = out.astype(np.float64), ref.astype(np.float64)
    fin = np.isfinite(r)
    if not np.array_equal(np.isfinite(o), fin) or not np.array_equal(o[~fin], r[~fin]):
        return float("inf")
    den = float(np.sum(r[fin] ** 2))
    return float(np.sum((o[fin] - r[fin]) ** 2)) / max(den, 1e-30)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_conformance(c: Case, hip):
    if c.id.split("-")[1] == "blas":  # without a vendor BLAS these would run the tiled kernel unnoticed
        assert hip.ctx.device.blas, f"no vendor BLAS: {hip.blas_unavailable}"
    rng = np.random.default_rng()
    b = c.make(rng)
    prefix = f"{c.id}/"
    weights = {prefix + k: v for k, v in b.weights.items()}
    for t in b.graph.leaves("weight"):  # unique names: the HIP backend binds each name once
        t.name = prefix + t.name
    ref_be = NumpyBackend()
    ref_be.bind_weights(b.graph, lambda name: weights[name])
    ref_be.prepare(b.graph)
    ref, _ = ref_be.run(b.graph, {k: v.copy() for k, v in b.inputs.items()})  # a graph may write inputs
    saved = {k: getattr(hip.ctx, k) for k in b.ctx}
    try:
        for k, v in b.ctx.items():  # before prepare: kernels are chosen there
            setattr(hip.ctx, k, v)
        hip.bind_weights(b.graph, lambda name: weights[name])
        prepared = hip.prepare(b.graph)  # with QUANTIZE_X8 nodes where a kernel reads int8 x
        out, timings = hip.run(b.graph, b.inputs, timed=True)
    finally:
        for k, v in saved.items():
            setattr(hip.ctx, k, v)
    assert [t.op for t in timings] == [t.op.value for t in prepared.ops()]  # a row a node
    for name, r in ref.items():
        o = out[name]
        assert o.shape == r.shape and o.dtype == r.dtype, (
            f"{name}: {o.shape} {o.dtype} vs {r.shape} {r.dtype}"
        )
        if b.check is not None:
            b.check(o, r)
            continue
        if r.dtype.kind in "iu" or b.tol == 0.0:
            np.testing.assert_array_equal(o, r, err_msg=name)
            continue
        err = nmse(o, r)
        assert err <= b.tol, f"{name}: nmse {err:.3e} > {b.tol:.0e} (NaN in output: {np.isnan(o).sum()})"
