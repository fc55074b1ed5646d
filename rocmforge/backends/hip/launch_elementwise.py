"""Launchers of the element-wise ops and copies: ADD, MUL, SCALE, SILU, SWIGLU, CONT, CPY, and the views
VIEW and RESHAPE (nothing launched: a new DevTensor over the source's storage). Each is beside the numpy
reference's semantics (numpy_ref.py): the context, the preallocated output (contiguous), the sources (maybe
strided views; a kernel that wants contiguous input gets a copy, `contiguous`) and the node's params."""

from __future__ import annotations

from collections.abc import Sequence

from ...ir.ops import ITEMSIZE
from .context import Ctx
from .tensor import DevTensor, f32, i32, i64

EW_BLOCK = 256


def grid_1d(ctx: Ctx, n: int) -> tuple[int]:
    return (max(1, min(-(-n // EW_BLOCK), ctx.n_sm * 32)),)


def row_block(ctx: Ctx, n: int) -> int:
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
        grid_1d(ctx, n),
        (EW_BLOCK,),
        (
            a.ptr,
            out.ptr,
            i64(n),
            i32(shape[3]),
            i32(shape[2]),
            i32(shape[1]),
            i64(strides[3]),
            i64(strides[2]),
            i64(strides[1]),
            i64(strides[0]),
        ),
    )


def contiguous(ctx: Ctx, a: DevTensor, dtype: str | None = None, align: int = 4) -> DevTensor:
    """a itself when contiguous, of `dtype` and `align`-byte aligned; else a contiguous copy."""
    dtype = dtype or a.dtype
    if a.is_contiguous and a.dtype == dtype and a.ptr % align == 0:
        return a
    out = ctx.empty(a.shape, dtype, transient=True)  # (read by the node's own kernel alone)
    copy_strided(ctx, out, a)
    return out


def float_in(ctx: Ctx, a: DevTensor) -> DevTensor:
    """a contiguous as f32 or f16 (i32 is converted to f32)."""
    return contiguous(ctx, a, "f32" if a.dtype == "i32" else a.dtype)


def _binary(ctx: Ctx, op: str, out: DevTensor, a: DevTensor, b: DevTensor) -> None:
    a, b = float_in(ctx, a), float_in(ctx, b)
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
        grid_1d(ctx, n),
        (EW_BLOCK,),
        (
            a.ptr,
            b.ptr,
            out.ptr,
            i64(n),
            i32(mode),
            i32(dims[0][0]),
            i32(dims[1][0]),
            i32(dims[2][0]),
            i32(dims[0][1]),
            i32(dims[1][1]),
            i32(dims[2][1]),
            i32(dims[3][1]),
        ),
    )


def ADD(ctx: Ctx, out: DevTensor, a: DevTensor, b: DevTensor) -> None:
    _binary(ctx, "add", out, a, b)


def MUL(ctx: Ctx, out: DevTensor, a: DevTensor, b: DevTensor) -> None:
    _binary(ctx, "mul", out, a, b)


def SCALE(ctx: Ctx, out: DevTensor, a: DevTensor, *, s: float) -> None:
    a = float_in(ctx, a)
    n = a.n_elements
    ctx.k("elementwise.hip", f"scale_{a.dtype}")(
        grid_1d(ctx, n), (EW_BLOCK,), (a.ptr, out.ptr, i64(n), f32(s))
    )


def SILU(ctx: Ctx, out: DevTensor, a: DevTensor) -> None:
    a = float_in(ctx, a)
    n = a.n_elements
    ctx.k("elementwise.hip", f"silu_{a.dtype}")(grid_1d(ctx, n), (EW_BLOCK,), (a.ptr, out.ptr, i64(n)))


def SWIGLU(ctx: Ctx, out: DevTensor, gate: DevTensor, up: DevTensor) -> None:
    gate, up = float_in(ctx, gate), float_in(ctx, up)
    n = gate.n_elements
    f = ctx.k("elementwise.hip", f"swiglu_{gate.dtype}_{up.dtype}")
    f(grid_1d(ctx, n), (EW_BLOCK,), (gate.ptr, up.ptr, out.ptr, i64(n)))


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
