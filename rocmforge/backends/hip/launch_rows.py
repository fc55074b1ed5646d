"""Launchers of the row-wise ops: RMS_NORM, RMS_NORM_MUL, SOFT_MAX, ARGMAX, SAMPLE (a row a block), ROPE,
GET_ROWS, SET_ROWS (semantics: numpy_ref.py)."""

from __future__ import annotations

from collections.abc import Callable

from .context import Ctx
from .launch_elementwise import EW_BLOCK, contiguous, float_in, grid_1d, row_block
from .launch_mul_mat import as_weight, weight_kernel_type
from .tensor import DevTensor, f32, i32, i64

SAMPLE_BLOCK = 512  # kernels/sample.hip's RF_SAMPLE_BLOCK: the kernel is built for its block size
SAMPLE_TUNABLES = ("RF_SAMPLE_BLOCK", "RF_SAMPLE_UNROLL", "RF_SAMPLE_CAP")  # sample.hip's header says how


def GET_ROWS(ctx: Ctx, out: DevTensor, a: DevTensor, idx: DevTensor) -> None:
    a = as_weight(ctx, a) if a.dtype != "i32" else contiguous(ctx, a)
    idx = contiguous(ctx, idx)
    R, D = a.shape
    n = idx.shape[0]
    grid = (-(-D // (8 * 128)), n)
    if a.dtype == "i32":
        ctx.k("get_rows.hip", "get_rows_i32")(grid, (128,), (a.ptr, i32(R), idx.ptr, out.ptr, i32(D)))
        return
    f = ctx.k("get_rows.hip", f"get_rows_{weight_kernel_type(a)}")
    f(grid, (128,), (a.ptr, i64(a.row_bytes), i32(R), idx.ptr, out.ptr, i32(D)))


NORM_NPT = 8  # kernels/norm.hip's NORM_NPT: values a thread holds in registers


def norm_block(ctx: Ctx, n: int) -> int:
    """norm.hip's block for a row of n: row_block's (up to 256 threads), or about n / 4 threads for long rows
    (a multiple of the warp, at most 1024), so a row of up to NORM_NPT x 1024 values is read once, every
    load in flight at once (fewer than 256 threads on short rows measured slower)."""
    return min(1024, max(row_block(ctx, n), -(-n // (4 * ctx.warp)) * ctx.warp))


def RMS_NORM(ctx: Ctx, out: DevTensor, a: DevTensor, *, eps: float) -> None:
    a = float_in(ctx, a)
    n = a.shape[-1]
    rows = a.n_elements // n
    f = ctx.k("norm.hip", f"rms_norm_{a.dtype}")
    f((rows,), (norm_block(ctx, n),), (a.ptr, out.ptr, i32(n), f32(eps)))


def RMS_NORM_MUL(ctx: Ctx, out: DevTensor, a: DevTensor, w: DevTensor, *, eps: float,
                 w_early: bool = False) -> None:
    # a [..., n], w [n] (the norm's weight), each f32 or f16 (i32 as f32). w_early: w is a weight (no kernel
    # writes it), so the kernel may read it before waiting for the kernel before; not where w needs a copy
    # first (that copy is the kernel before)
    w_early = w_early and w.dtype in ("f32", "f16") and w.is_contiguous
    a, w = float_in(ctx, a), float_in(ctx, w)
    n = a.shape[-1]
    rows = a.n_elements // n
    f = ctx.k("norm.hip", f"rms_norm_mul_{a.dtype}_{w.dtype}")
    f((rows,), (norm_block(ctx, n),), (a.ptr, w.ptr, out.ptr, i32(n), f32(eps), i32(int(w_early))))


def prepare_rms_norm_mul(w_is_weight: bool) -> Callable[..., None]:
    """RMS_NORM_MUL's launcher for a node whose w is (w_is_weight) or is not a weight: a weight is read
    before the kernel waits for the kernel before it."""
    if not w_is_weight:
        return RMS_NORM_MUL
    launch = RMS_NORM_MUL

    def early(ctx: Ctx, out: DevTensor, a: DevTensor, w: DevTensor, *, eps: float) -> None:
        launch(ctx, out, a, w, eps=eps, w_early=True)

    early.__name__ = early.__qualname__ = "RMS_NORM_MUL"  # the op it launches (timings, plans)
    return early


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
    x, pos = float_in(ctx, x), contiguous(ctx, pos)
    T, H, D = x.shape
    n = x.n_elements
    f = ctx.k("rope.hip", f"rope_{x.dtype}")
    f(
        grid_1d(ctx, n),
        (EW_BLOCK,),
        (
            x.ptr,
            pos.ptr,
            out.ptr,
            i32(H),
            i32(D),
            i64(n),
            i32(n_dims),
            i32(int(neox)),
            f32(base),
            f32(freq_scale),
        ),
    )


def SET_ROWS(ctx: Ctx, out: DevTensor, dst: DevTensor, src: DevTensor, idx: DevTensor) -> None:
    # out is dst (the op aliases its first source): rows idx of dst are overwritten in place
    if not dst.is_contiguous:
        raise NotImplementedError("SET_ROWS into a non-contiguous view")
    src = float_in(ctx, src)
    idx = contiguous(ctx, idx)
    R = dst.shape[0]
    W = dst.n_elements // R
    n = idx.shape[0]
    f = ctx.k("set_rows.hip", f"set_rows_{src.dtype}_{dst.dtype}")
    f((-(-W // 256), n), (256,), (dst.ptr, src.ptr, idx.ptr, i32(R), i32(W)))


def SET_ROWS_ROPE(
    ctx: Ctx, out: DevTensor, dst: DevTensor, src: DevTensor, idx: DevTensor, *, n_rot: int, head_dim: int,
    n_dims: int, neox: bool, base: float, freq_scale: float = 1.0,
) -> None:
    # out is dst: rows idx of the [R, W] cache overwritten by src [T, W] (rows of both may be strided: K and
    # V's columns of the stacked Q/K/V result, K's half of a joint K/V cache), its first n_rot columns
    # ROPE'd (rope.hip)
    if dst.strides[-1] != 1:
        raise NotImplementedError("SET_ROWS_ROPE into a view whose rows are not contiguous")
    if src.dtype != "f32" or src.strides[-1] != 1:
        src = contiguous(ctx, src, "f32")
    idx = contiguous(ctx, idx)
    T, W = src.shape
    row = dst.strides[0] if dst.shape[0] > 1 else W
    f = ctx.k("rope.hip", f"set_rows_rope_f32_{dst.dtype}")
    args = (src.ptr, i64(src.strides[0]), idx.ptr, dst.ptr, i64(row), i32(T), i32(W), i32(n_rot),
            i32(head_dim), i32(n_dims), i32(int(neox)), f32(base), f32(freq_scale))
    f(grid_1d(ctx, T * W), (EW_BLOCK,), args)


def SOFT_MAX(
    ctx: Ctx, out: DevTensor, a: DevTensor, mask: DevTensor | None = None, *, scale: float = 1.0
) -> None:
    a = float_in(ctx, a)
    n = a.shape[-1]
    rows = a.n_elements // n
    if mask is not None:
        mask = float_in(ctx, mask)
        mptr, m, mt = mask.ptr, mask.shape[0], mask.dtype
    else:
        mptr, m, mt = 0, 1, "f32"
    f = ctx.k("softmax.hip", f"soft_max_{a.dtype}_{mt}")
    f((rows,), (row_block(ctx, n),), (a.ptr, mptr, i32(m), out.ptr, i32(n), f32(scale)))


ARGMAX_CHUNK = 2048  # elements a block scans: 8 a thread (a vocabulary of 150k: 75 blocks)


def ARGMAX(ctx: Ctx, out: DevTensor, a: DevTensor) -> None:
    a = float_in(ctx, a)
    n = a.shape[-1]
    rows = a.n_elements // n
    nb = max(1, min(-(-n // ARGMAX_CHUNK), 2 * ctx.n_sm))  # blocks a row: the last one merges their picks
    f = ctx.k("argmax.hip", f"argmax_{a.dtype}")
    if nb == 1:
        f((1, rows), (row_block(ctx, n),), (a.ptr, out.ptr, i32(n), 0, 0, 0))
        return
    pv, pi = ctx.empty((rows, nb), "f32", transient=True), ctx.empty((rows, nb), "i32", transient=True)
    tickets = ctx.zeros((rows,), "i32")  # left zero by every launch
    f((nb, rows), (256,), (a.ptr, out.ptr, i32(n), pv.ptr, pi.ptr, tickets.ptr))


def sample_defines(ctx: Ctx) -> dict[str, int]:
    """sample.hip's defines: those of SAMPLE_TUNABLES in ctx.tunables (HipBackend(tunables=...))."""
    return {k: int(v) for k, v in ctx.tunables.items() if k in SAMPLE_TUNABLES}


def SAMPLE(ctx: Ctx, out: DevTensor, logits: DevTensor, params: DevTensor) -> None:
    # logits f32 [n, V], params i32 [8] (sampling.sample_params) -> out i32 [n]: a row a block
    logits, params = contiguous(ctx, logits), contiguous(ctx, params)
    n, V = logits.shape
    defines = sample_defines(ctx)
    f = ctx.k("sample.hip", "sample_f32", **defines)
    f((n,), (defines.get("RF_SAMPLE_BLOCK", SAMPLE_BLOCK),), (logits.ptr, params.ptr, out.ptr, i32(V)))
