"""The mat-vec variants that no HipBackend option chooses, as rows of rocmforge's MUL_MAT table
(kernel_choice.MatMulKernel), for measurements (scripts/bench_matvec.py, scripts/trace_matvec_xr.py) and
their conformance tests: put them in a context's MatMulOptions.kernels.

    mul_mat_vec_s   f32 x, rows staged through shared memory in 16-byte chunks (Q4_0, Q4_1, Q5_0, Q8_0)
    mul_mat_vec_q   int8 dot products, x quantized in two int8 levels by every block (quantized types)
    mul_mat_vec_x   int8 x quantized by every block, warps streaming row groups (Q4_0, Q8_0)
    mul_mat_vec_xb  int8 x from quantize_x8, a GGUF block per lane (Q4_0, Q8_0)
    mul_mat_vec_xr_trace  mul_mat_vec_xr's builds with time stamps (RF_MMVR_TRACE) or without arithmetic
                    (RF_MMVR_ABLATE: wrong results)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip import launch_geometry as G
from rocmforge.backends.hip.kernel_choice import MatMulKernel
from rocmforge.backends.hip.launch_geometry import Device, KernelLaunch, Weight
from rocmforge.backends.hip.tensor import cdiv

DEV_DIR = Path(__file__).resolve().parent
Q8_TYPES = ("q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
STAGED_TYPES = ("q4_0", "q4_1", "q5_0", "q8_0")
X8_TYPES = ("q4_0", "q8_0")


def _staged(kern, dev: Device, w: Weight, M, base, tuned, host, pdl) -> KernelLaunch | None:
    if w.row_bytes % 16 or w.ptr % 16:
        return None
    d = dict(tuned)
    warps = d.get("RF_MMVS_WARPS", 4)
    blocks = cdiv(w.N, d.get("RF_MMVS_ROWS", 2) * warps)
    return KernelLaunch(kern.file, kern.entry.format(type=w.type), d, (blocks, M), (warps * dev.warp,))


def _q8(kern, dev: Device, w: Weight, M, base, tuned, host, pdl) -> KernelLaunch | None:
    if w.K > G.X8_MAX_K:
        return None
    d = dict(tuned)
    warps = d.get("RF_MMVQ_WARPS", 8)
    blocks = cdiv(w.N, d.get("RF_MMVQ_ROWS", 2) * warps)
    entry = kern.entry.format(type=w.type)
    return KernelLaunch(kern.file, entry, d, (blocks, M), (warps * dev.warp,), w.K * 9 // 4)


def _x(kern, dev: Device, w: Weight, M, base, tuned, host, pdl) -> KernelLaunch | None:
    """mul_mat_vec_xq's geometry with x quantized in the block (RF_MMVX_LEVELS int8 levels of it)."""
    if not (w.K <= G.X8_MAX_K and w.K % 64 == 0 and w.ptr % 4 == 0):
        return None
    d = {**{k: v for k, v in base.items() if k.startswith("RF_")}, **tuned}
    bps = host.get("blocks_per_sm", base.get("blocks_per_sm", 4))
    return G.row_groups_launch(kern, dev, w, M, d, bps, w.K * d.get("RF_MMVX_LEVELS", 1) + w.K // 4)


# per type (tunables override) from bench_matvec.py --sweep xb on an H200; Q8_0's ring fits one block per SM
XB_DEFAULTS = {
    t: {"RF_MMVB_ROWS": 4, "RF_MMVB_ASYNC": 4, "RF_MMVB_MINB": 2, "blocks_per_sm": 2} for t in X8_TYPES
}
XB_BLOCK_BYTES = {"q4_0": 18, "q8_0": 34}


def _xb(kern, dev: Device, w: Weight, M, base, tuned, host, pdl) -> KernelLaunch | None:
    """As many blocks as are resident at once, row groups dealt round them; None where rows are not 16-byte
    multiples or aligned, or the ring is over a block's shared memory."""
    if not (w.K <= G.X8_MAX_K and w.K % 64 == 0 and w.ptr % 4 == 0):
        return None
    d = {**{k: v for k, v in base.items() if k.startswith("RF_")}, **tuned}
    warps, rows, ring = d.get("RF_MMVB_WARPS", 8), d.get("RF_MMVB_ROWS", 2), d.get("RF_MMVB_ASYNC", 4)
    smem = cdiv(G.x8_row_bytes(w.K), 16) * 16 + warps * ring * rows * XB_BLOCK_BYTES[w.type] * dev.warp
    if w.row_bytes % 16 or w.ptr % 16 or smem > dev.smem_block:
        return None
    bps = dev.resident_blocks(host.get("blocks_per_sm", base.get("blocks_per_sm", 2)), smem)
    blocks = min(dev.n_sm * bps, cdiv(w.N, rows))
    entry = kern.entry.format(type=w.type)
    return KernelLaunch(kern.file, entry, d, (blocks, M), (warps * dev.warp,), smem)


MUL_MAT_VEC_S = MatMulKernel(
    name="mul_mat_vec_s",
    weight_types=STAGED_TYPES,
    x="f32",
    serves="M <= 4, rows of 16-byte multiples, aligned",
    geometry_doc="grid (N / (RF_MMVS_ROWS RF_MMVS_WARPS), M), RF_MMVS_WARPS warps",
    defaults=C.same_on_every_family({}),
    geometry=_staged,
    file=str(DEV_DIR / "mul_mat_vec_s.hip"),
)
MUL_MAT_VEC_Q = MatMulKernel(
    name="mul_mat_vec_q",
    weight_types=Q8_TYPES,
    x="f32",
    serves="M <= 4, K <= 21504",
    geometry_doc="grid (N / (RF_MMVQ_ROWS RF_MMVQ_WARPS), M), RF_MMVQ_WARPS warps; x in shared memory",
    defaults=C.same_on_every_family({}),
    geometry=_q8,
    file=str(DEV_DIR / "mul_mat_vec_q.hip"),
)
MUL_MAT_VEC_X = MatMulKernel(
    name="mul_mat_vec_x",
    weight_types=X8_TYPES,
    x="f32",
    serves="M <= 4, N >= 8192, K % 64 == 0 and <= 21504",
    geometry_doc="mul_mat_vec_xq's",
    defaults=C.same_on_every_family(C.XQ_DEFAULTS),
    geometry=_x,
    min_n=8192,
    file=str(DEV_DIR / "mul_mat_vec_x.hip"),
)
MUL_MAT_VEC_XB = MatMulKernel(
    name="mul_mat_vec_xb",
    weight_types=X8_TYPES,
    x="x8",
    serves="M <= 4, N >= 4096, rows of 16-byte multiples, aligned",
    geometry_doc="grid (resident blocks, M), RF_MMVB_WARPS warps; x and an async ring in shared memory",
    defaults=C.same_on_every_family(XB_DEFAULTS),
    geometry=_xb,
    min_n=4096,
    file=str(DEV_DIR / "mul_mat_vec_xb.hip"),
    option="int8_activations",
)
# mul_mat_vec_xr with RF_MMVR_TRACE or RF_MMVR_ABLATE in the tunables
MUL_MAT_VEC_XR_TRACE = dataclasses.replace(C.MUL_MAT_VEC_XR, file=str(DEV_DIR / "mul_mat_vec_xr_trace.hip"))
DEV_KERNELS = (MUL_MAT_VEC_S, MUL_MAT_VEC_Q, MUL_MAT_VEC_X, MUL_MAT_VEC_XB, MUL_MAT_VEC_XR_TRACE)


def options(*kernels: MatMulKernel, min_n: int | None = None) -> C.MatMulOptions:
    """MatMulOptions with int8 activations that choose the first of `kernels` that applies, else the f32
    mat-vec (M <= 4) or the mat-mat; min_n: every kernel's fewest rows (0: from one row)."""
    table = (*kernels, C.MUL_MAT_VEC, C.MUL_MAT)
    mins = {} if min_n is None else {k.name: min_n for k in table}
    return C.MatMulOptions(int8_activations=True, kernels=table, min_n=mins)
