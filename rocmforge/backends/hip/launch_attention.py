"""The FLASH_ATTN_EXT launcher (attention.hip): the cache split into chunks when the (token, head) tiles
alone leave the GPU idle, the chunks' partial results combined by the last block of each tile to finish
(one launch either way). Prompts over f16 caches run attention_mma.hip on matrix instructions where the
device has them (mma_kernel)."""

from __future__ import annotations

from .context import Ctx
from .launch_elementwise import contiguous
from .launch_rows import SET_ROWS_ROPE
from .tensor import DevTensor, cdiv, f32, i32, i64


def rope_args(rope: tuple | None) -> tuple:
    """The kernel's (rope_dims, rope_neox, rope_base, rope_freq_scale): rope_dims 0 where q is not ROPE'd."""
    if rope is None:
        return i32(0), i32(0), f32(1.0), f32(1.0)
    n_dims, neox, base, freq_scale = rope
    return i32(n_dims), i32(int(neox)), f32(base), f32(freq_scale)


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


# attention.hip's RF_DEC_G (the most query heads a KV head; the kernel is built for each G), RF_DEC_WARPS
# (its default), FA_DEC_ROWS; rows a group (the unit dealt to the splits: a multiple of FA_DEC_ROWS); splits
# at most (FA_DEC_MAX_SPLITS: more make the merge the longer part)
DEC_G, DEC_WARPS, DEC_ROWS, DEC_GROUP, DEC_SPLITS = 8, 4, 8, 32, 32
DEC_E = 8  # attention.hip's FA_DEC_E: the dims a lane holds (16 bytes of an f16 row)
# rows a decode split takes at least (a multiple of DEC_GROUP): below it a step splits the cache over fewer
# blocks, down to one block a KV head and no merge
DEC_SPAN = 32


DEC_TUNABLES = ("RF_DEC_WARPS", "RF_DEC_SPAN")  # HipBackend(tunables=...) names that dec_params reads


def dec_params(ctx: Ctx) -> tuple[int, int]:
    """flash_attn_decode's (warps a block, span) from the tunables RF_DEC_WARPS (1, 2, 4 or 8; a build of
    its own) and RF_DEC_SPAN (a multiple of DEC_GROUP), else DEC_WARPS and DEC_SPAN."""
    warps = int(ctx.tunables.get("RF_DEC_WARPS", DEC_WARPS))
    span = int(ctx.tunables.get("RF_DEC_SPAN", DEC_SPAN))
    if warps not in (1, 2, 4, 8):
        raise ValueError(f"RF_DEC_WARPS={warps}: choose 1, 2, 4 or 8")
    if span < DEC_GROUP or span % DEC_GROUP:
        raise ValueError(f"RF_DEC_SPAN={span}: a positive multiple of {DEC_GROUP}")
    return warps, span


def _lane_aligned(c: DevTensor) -> bool:
    """Whether flash_attn_decode's 16-byte loads of DEC_E elements a lane can read the cache view c: its row
    and head strides whole lane slices, its start 16-byte aligned."""
    return c.strides[0] % DEC_E == 0 and c.strides[1] % DEC_E == 0 and c.ptr % 16 == 0


def _split_scratch(ctx: Ctx, n_splits: int, rows: int, D: int, tiles: int) -> tuple[int, int, int, int]:
    """Pointers to the split kernels' partials, part_o [n_splits, rows, D], part_m and part_l [n_splits,
    rows], and their tickets, one a tile of blocks that merges (zero when taken, left zero by every
    launch)."""
    po = ctx.empty((n_splits, rows, D), "f32", transient=True)  # (merged by the same kernel)
    pm = ctx.empty((n_splits, rows), "f32", transient=True)
    pl = ctx.empty((n_splits, rows), "f32", transient=True)
    return po.ptr, pm.ptr, pl.ptr, ctx.zeros((tiles,), "i32").ptr


def decode_kernel(ctx: Ctx, T: int, H: int, Hkv: int, D: int) -> bool:
    """Whether FLASH_ATTN_EXT runs flash_attn_decode (one token, at most DEC_G query heads a KV head, head
    dims up to 128 in DEC_E-element lane slices that fill whole warps and DEC_ROWS) rather than the tiled
    kernel."""
    lanes = D // DEC_E
    return (T == 1 and H // Hkv <= DEC_G and D % DEC_E == 0 and D <= 128 and ctx.warp % lanes == 0
            and DEC_ROWS % (ctx.warp // lanes) == 0)


# attention_mma.hip's MA_WARPS and MA_BQ: warps a block, (token, head) rows a block (16 a warp)
MMA_WARPS, MMA_BQ = 4, 64


def mma_kernel(ctx: Ctx, T: int, H: int, Hkv: int, D: int, kv_dtype: str) -> bool:
    """Whether FLASH_ATTN_EXT runs attention_mma.hip's flash_attn_mma_f16 rather than the tiled kernel: a
    prompt (not decode_kernel's shape) over an f16 cache, head dims a multiple of 16 up to 128, at least one
    warp's 16 (token, head) rows a KV head, on a device with f16 matrix instructions and 32-wide warps."""
    return (
        ctx.device.mma
        and ctx.warp == 32
        and kv_dtype == "f16"
        and D % 16 == 0
        and D <= 128
        and T * (H // Hkv) >= 16
        and not decode_kernel(ctx, T, H, Hkv, D)
    )


def _mma(ctx: Ctx, out: DevTensor, q: DevTensor, k: DevTensor, v: DevTensor, pos: DevTensor, scale: float,
         rope_q: tuple | None) -> None:
    """flash_attn_mma_f16: a block a 64-row tile of one KV group, the whole cache up to its positions."""
    T, H, D = q.shape
    C, Hkv, _ = k.shape
    f = ctx.k("attention_mma.hip", "flash_attn_mma_f16", RF_HEAD_DIM=D)
    grid = (cdiv(T * (H // Hkv), MMA_BQ), Hkv)
    args = (q.ptr, k.ptr, v.ptr, pos.ptr, out.ptr, i32(T), i32(H), i32(Hkv), i64(k.strides[0]),
            i64(k.strides[1]), i32(C), f32(scale), *rope_args(rope_q))
    f(grid, (MMA_WARPS * ctx.warp,), args)


def decode_defines(ctx: Ctx, H: int, Hkv: int, D: int) -> dict[str, int]:
    """attention.hip's compile defines for flash_attn_decode at this head layout (the build _decode runs)."""
    warps, _ = dec_params(ctx)
    return {"RF_HEAD_DIM": D, "RF_DEC_G": H // Hkv, **({"RF_DEC_WARPS": warps} if warps != DEC_WARPS else {})}


def _decode(ctx: Ctx, out: DevTensor, q: DevTensor, k: DevTensor, v: DevTensor, pos: DevTensor, scale: float,
            rope_q: tuple | None, kv_new: tuple[DevTensor, DevTensor] | None) -> None:
    """flash_attn_decode: the cache dealt to splits in groups of DEC_GROUP rows, KV heads x splits about
    four blocks an SM (up to DEC_SPLITS splits), so that the rows up to any position spread over them;
    kv_new (contiguous f32 rows) written into row pos by the block that reads it."""
    _, H, D = q.shape
    C, Hkv, _ = k.shape
    n_splits = max(1, min(cdiv(4 * ctx.n_sm, Hkv), cdiv(C, DEC_GROUP), DEC_SPLITS))
    warps, span = dec_params(ctx)
    f = ctx.k("attention.hip", f"flash_attn_decode_{k.dtype}", **decode_defines(ctx, H, Hkv, D))
    common = (i32(H), i32(Hkv), i64(k.strides[0]), i64(k.strides[1]), i32(C), i32(DEC_GROUP), i32(span),
              f32(scale), *rope_args(rope_q))
    grid, block = (n_splits, Hkv), (warps * ctx.warp,)
    head = (q.ptr, k.ptr, v.ptr, pos.ptr, *((kv_new[0].ptr, kv_new[1].ptr) if kv_new else (0, 0)), out.ptr)
    if n_splits == 1:
        f(grid, block, (*head, 0, 0, 0, 0, *common))
        return
    scratch = _split_scratch(ctx, n_splits, H, D, Hkv)
    f(grid, block, (*head, *scratch, *common))


def _write_rows(ctx: Ctx, cache: DevTensor, rows: DevTensor, pos: DevTensor, rope: tuple | None) -> None:
    """rows f32 [T, Hkv * D] into rows pos of the cache view [C, Hkv, D] (heads side by side in a row),
    ROPE'd where rope is given: SET_ROWS_ROPE's launcher on the view as [C, Hkv * D] rows."""
    C, Hkv, D = cache.shape
    if cache.strides[1:] != (D, 1):
        raise NotImplementedError("FLASH_ATTN_EXT's cache write into a view whose heads are not side by side")
    flat = DevTensor(cache.buf, cache.offset, (C, Hkv * D), cache.dtype, (cache.strides[0], 1))
    n_dims, neox, base, freq_scale = rope if rope is not None else (0, False, 1.0, 1.0)
    SET_ROWS_ROPE(ctx, flat, flat, rows, pos, n_rot=Hkv * D if rope else 0, head_dim=D, n_dims=n_dims,
                  neox=neox, base=base, freq_scale=freq_scale)


def FLASH_ATTN_EXT(
    ctx: Ctx, out: DevTensor, q: DevTensor, k: DevTensor, v: DevTensor, pos: DevTensor,
    k_new: DevTensor | None = None, v_new: DevTensor | None = None, *, scale: float,
    rope_q: tuple | None = None,
) -> None:
    q = contiguous(ctx, q, "f32")
    pos = contiguous(ctx, pos)
    T, H, D = q.shape
    C, Hkv, _ = k.shape
    if k.dtype != v.dtype or k.strides != v.strides or k.strides[2] != 1 or k.dtype not in ("f32", "f16"):
        if k_new is not None:  # a copy of the cache would take the writes
            raise NotImplementedError("FLASH_ATTN_EXT with k_new over a cache of another layout or dtype")
        k, v = contiguous(ctx, k, "f32"), contiguous(ctx, v, "f32")
    kv_new = None
    if k_new is not None and v_new is not None:
        kv_new = contiguous(ctx, k_new, "f32"), contiguous(ctx, v_new, "f32")
    if decode_kernel(ctx, T, H, Hkv, D) and _lane_aligned(k) and _lane_aligned(v):
        _decode(ctx, out, q, k, v, pos, scale, rope_q, kv_new)
        return
    if kv_new is not None:  # the other kernels read the cache as it is: write the rows first
        _write_rows(ctx, k, kv_new[0], pos, rope_q)
        _write_rows(ctx, v, kv_new[1], pos, None)
    if mma_kernel(ctx, T, H, Hkv, D, k.dtype):
        _mma(ctx, out, q, k, v, pos, scale, rope_q)
        return
    n_splits, chunk = attn_splits(ctx, T, H, Hkv, C, D)
    bq, _ = fa_tiles(D)
    grid = (-(-(T * (H // Hkv)) // bq), Hkv, n_splits)
    common = (
        i32(T),
        i32(H),
        i32(Hkv),
        i64(k.strides[0]),
        i64(k.strides[1]),
        i32(C),
        i32(chunk),
        f32(scale),
        *rope_args(rope_q),
    )
    f = ctx.k("attention.hip", f"flash_attn_{k.dtype}", RF_HEAD_DIM=D)
    if n_splits == 1:
        f(grid, (128,), (q.ptr, k.ptr, v.ptr, pos.ptr, out.ptr, 0, 0, 0, 0, *common))
        return
    scratch = _split_scratch(ctx, n_splits, T * H, D, grid[0] * grid[1])
    f(grid, (128,), (q.ptr, k.ptr, v.ptr, pos.ptr, out.ptr, *scratch, *common))
