"""One launcher per Op, named after it, each beside the numpy reference's semantics (numpy_ref.py):
launch_elementwise (element-wise ops, copies, views), launch_rows (norms, softmax, argmax, sample, rope,
row gathers and scatters), launch_attention (FLASH_ATTN_EXT), launch_mul_mat (MUL_MAT and MUL_MAT_ADD,
chosen at prepare, and QUANTIZE_X8).

A launcher takes the launch context, the preallocated output (a `DevTensor`, contiguous) and the
sources, plus the node's params, and enqueues kernels; nothing is synchronized. VIEW and RESHAPE
launch nothing: they return a new `DevTensor` over the source's storage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...ir.ops import NORM_MUL_MAT_OPS, Op
from .context import Ctx
from .launch_attention import FLASH_ATTN_EXT, decode_defines, decode_kernel, mma_kernel
from .launch_elementwise import ADD, CONT, CPY, MUL, RESHAPE, SCALE, SILU, SWIGLU, VIEW
from .launch_mul_mat import (
    MUL_MAT,
    MUL_MAT_ADD,
    MUL_MAT_SWIGLU,
    QUANTIZE_X8,
    RMS_NORM_MUL_QUANTIZE_X8,
    mul_mat_choice,
    norm_folds,
    prepare_mul_mat,
    prepare_norm_quantize_x8,
    prepare_quantize_x8,
)
from .launch_rows import (
    ARGMAX,
    GET_ROWS,
    RMS_NORM,
    RMS_NORM_MUL,
    ROPE,
    SAMPLE,
    SET_ROWS,
    SET_ROWS_ROPE,
    SOFT_MAX,
    prepare_rms_norm_mul,
    sample_defines,
)
from .tensor import DevTensor


def _norm_mul_mat_now(op: Op) -> Callable[..., None]:
    """RMS_NORM_MUL_MAT(_ADD, _SWIGLU) prepared and launched at once (scripts and tests)."""

    def now(ctx: Ctx, out: DevTensor, *srcs: DevTensor, eps: float) -> None:
        prepare_norm_mul_mat(ctx, op, out, srcs, eps)(ctx, out, *srcs, eps=eps)

    now.__name__ = op.value
    return now


LAUNCH: dict[str, Callable[..., Any]] = {
    "GET_ROWS": GET_ROWS,
    "MUL_MAT": MUL_MAT,
    "MUL_MAT_ADD": MUL_MAT_ADD,
    "MUL_MAT_SWIGLU": MUL_MAT_SWIGLU,
    "QUANTIZE_X8": QUANTIZE_X8,
    "RMS_NORM_MUL_QUANTIZE_X8": RMS_NORM_MUL_QUANTIZE_X8,
    **{op.value: _norm_mul_mat_now(op) for op in (Op.RMS_NORM_MUL_MAT, Op.RMS_NORM_MUL_MAT_ADD,
                                                  Op.RMS_NORM_MUL_MAT_SWIGLU)},
    "ADD": ADD,
    "MUL": MUL,
    "SCALE": SCALE,
    "RMS_NORM": RMS_NORM,
    "RMS_NORM_MUL": RMS_NORM_MUL,
    "ROPE": ROPE,
    "VIEW": VIEW,
    "RESHAPE": RESHAPE,
    "CONT": CONT,
    "CPY": CPY,
    "SET_ROWS": SET_ROWS,
    "SET_ROWS_ROPE": SET_ROWS_ROPE,
    "SOFT_MAX": SOFT_MAX,
    "SILU": SILU,
    "SWIGLU": SWIGLU,
    "FLASH_ATTN_EXT": FLASH_ATTN_EXT,
    "ARGMAX": ARGMAX,
    "SAMPLE": SAMPLE,
}


# the kernel file each op's launcher uses, compiled at prepare (elementwise.hip too for every launcher: its
# copies make sources contiguous)
MODULES = {
    Op.GET_ROWS: "get_rows.hip",
    Op.RMS_NORM: "norm.hip",
    Op.RMS_NORM_MUL: "norm.hip",
    Op.ROPE: "rope.hip",
    Op.SET_ROWS: "set_rows.hip",
    Op.SET_ROWS_ROPE: "rope.hip",
    Op.SOFT_MAX: "softmax.hip",
    Op.ARGMAX: "argmax.hip",
    Op.SAMPLE: "sample.hip",
}


def prepare_launch(
    ctx: Ctx,
    op: Op,
    out: DevTensor,
    srcs: Sequence[DevTensor],
    params: Mapping[str, Any],
    early: bool = False,
    weights: Sequence[bool] = (),
) -> Callable[..., Any]:
    """The launcher a graph node runs with, prepared for its tensors: MUL_MAT's and MUL_MAT_ADD's kernel
    chosen and compiled now (prepare_mul_mat), QUANTIZE_X8's compiled (early: started while the kernel
    before it ends, launch_mul_mat.early_quantize_x8); RMS_NORM_MUL's w and MUL_MAT_ADD's b (on mul_mat_vec)
    read before waiting for the kernel before where they are weights (weights: per source, whether it is
    one, i.e. no kernel writes it);
    the other ops' launchers as they are, their modules compiled now."""
    if op not in (Op.VIEW, Op.RESHAPE):
        ctx.mods.get("elementwise.hip")
    if op is Op.FLASH_ATTN_EXT:
        (T, H, D), Hkv = srcs[0].shape, srcs[1].shape[1]
        ctx.mods.get("attention.hip", RF_HEAD_DIM=D)
        if decode_kernel(ctx, T, H, Hkv, D):  # its build for the head layout (not at the first run)
            ctx.mods.get("attention.hip", **decode_defines(ctx, H, Hkv, D))
        elif mma_kernel(ctx, T, H, Hkv, D, srcs[1].dtype):  # prompts on matrix instructions
            ctx.mods.get("attention_mma.hip", RF_HEAD_DIM=D)
        if len(srcs) == 6:  # its cache writes, where the decode kernel does not take them (set_rows_rope)
            ctx.mods.get("rope.hip")
    elif op is Op.SAMPLE:
        ctx.mods.get("sample.hip", **sample_defines(ctx))
    elif op in MODULES:
        ctx.mods.get(MODULES[op])
    elif op in NORM_MUL_MAT_OPS:
        ctx.mods.get("norm.hip")  # (prompts: the norm into scratch first)
    if op is Op.MUL_MAT:
        return prepare_mul_mat(ctx, out, *srcs)
    if op is Op.MUL_MAT_SWIGLU:
        return prepare_mul_mat(ctx, out, *srcs, glu=True)
    if op is Op.MUL_MAT_ADD:  # sources w, x, b[, xq]
        w, x, b, *xq = srcs
        return prepare_mul_mat(ctx, out, w, x, *xq, b=b, b_weight=len(weights) > 2 and weights[2])
    if op is Op.QUANTIZE_X8:
        return prepare_quantize_x8(ctx, out, srcs[0], early)
    if op is Op.RMS_NORM_MUL_QUANTIZE_X8:
        return prepare_norm_quantize_x8(ctx, out, srcs[0], srcs[1], early, len(weights) > 1 and weights[1])
    if op is Op.RMS_NORM_MUL:
        return prepare_rms_norm_mul(len(weights) > 1 and weights[1])
    if op in NORM_MUL_MAT_OPS:  # sources w, x, wn[, b][, xq]
        b_weight = op is Op.RMS_NORM_MUL_MAT_ADD and len(weights) > 3 and weights[3]
        return prepare_norm_mul_mat(ctx, op, out, srcs, params["eps"], b_weight)
    return LAUNCH[op.value]


def prepare_norm_mul_mat(ctx: Ctx, op: Op, out: DevTensor, srcs: Sequence[DevTensor], eps: float,
                         b_weight: bool = False) -> Callable[..., Any]:
    """RMS_NORM_MUL_MAT(_ADD, _SWIGLU)'s launcher: with an xq source (RMS_NORM_MUL_QUANTIZE_X8 of x and wn)
    the int8 kernel on it alone; else mul_mat_vec with the norm folded in where it serves the node
    (launch_mul_mat.norm_folds), else RMS_NORM_MUL into scratch, then the mat-mul on it (prompts)."""
    glu = op is Op.RMS_NORM_MUL_MAT_SWIGLU
    n = 4 if op is Op.RMS_NORM_MUL_MAT_ADD else 3
    w, x, wn = srcs[:3]
    b = srcs[3] if n == 4 else None
    xq = srcs[n] if len(srcs) > n else None
    M = x.n_elements // w.shape[1]
    if xq is not None:  # the norm is in xq: the mat-vec reads nothing else of x
        if mul_mat_choice(ctx, w, M).quantize is None:
            raise ValueError(f"{op.value} with xq: the kernel for w {w.shape} at {M} tokens reads f32 x")
        on_xq = prepare_mul_mat(ctx, out, w, x, xq, b=b, glu=glu, b_weight=b_weight)

        def launch_xq(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, wn: DevTensor,
                      *rest: DevTensor, eps: float) -> None:
            on_xq(ctx, out, w, x, *rest)  # rest: (b, xq) or (xq,), as MUL_MAT_ADD's and MUL_MAT's launchers

        launch_xq.__name__ = op.value
        return launch_xq
    if norm_folds(ctx, w, M, glu):
        return prepare_mul_mat(ctx, out, w, x, b=b, glu=glu, b_weight=b_weight, norm=eps)
    inner = prepare_mul_mat(ctx, out, w, x, b=b, glu=glu, b_weight=b_weight)

    def launch(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, wn: DevTensor,
               b: DevTensor | None = None, *, eps: float) -> None:
        h = ctx.empty(x.shape, "f32", transient=True)
        RMS_NORM_MUL(ctx, h, x, wn, eps=eps)
        inner(ctx, out, w, h, *([] if b is None else [b]))

    launch.__name__ = op.value
    return launch
