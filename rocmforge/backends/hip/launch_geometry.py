"""Launch geometry of MUL_MAT's kernels (the rows of kernel_choice's table): what a choice needs of the
device and the weight (`Device`, `Weight`), what it decides (`KernelLaunch`; mul_mat_blas: `BlasTiles`), and
each row's geometry function (grid, block, shared memory, compile defines from the row's defaults and the
tunables), None where the kernel does not apply. quantize_x8's and dequantize.hip's launches, which those
rows run before theirs, are here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ...ir.ops import x8_words
from .tensor import cdiv

if TYPE_CHECKING:
    from .kernel_choice import MatMulKernel

SMEM_DEFAULT = 48 * 1024  # dynamic shared memory a block gets without the opt-in attribute
X8_MAX_K = 21504  # the int8 mat-vecs hold x in shared memory


def device_family(arch: str) -> str:
    """The defaults' key for a device arch (sm_90, gfx1100; anything else: other)."""
    if arch.startswith("sm_90"):
        return "sm_90"
    return "gfx1100" if arch == "gfx1100" else "other"


def has_mma(arch: str) -> bool:
    """Whether the device has the f16 matrix instructions rf_compat.h's rf_mma_* use (RF_MMA): CUDA sm_80+
    (mma.sync m16n8k16), RDNA3 gfx11 (WMMA, wave32)."""
    if arch.startswith("sm_"):
        digits = "".join(c for c in arch[3:] if c.isdigit())
        return bool(digits) and int(digits) >= 80
    return arch in ("gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151")  # rf_compat.h's list


@dataclass(frozen=True)
class Device:
    """What the choice needs of the GPU: warp width, SMs (CUs), shared memory a block may opt in to and an
    SM holds (0: unknown), its family for the defaults, the vendor BLAS this process can call, and whether
    it has f16 matrix instructions."""

    warp: int
    n_sm: int
    smem_block: int = SMEM_DEFAULT
    smem_sm: int = 0
    family: str = "other"
    blas: str = ""  # the vendor BLAS MUL_MAT may call (blas.py): "cublas", "hipblas"; "": none
    mma: bool = False  # f16 matrix instructions (has_mma): attention_mma.hip runs

    def resident_blocks(self, bps: int, smem: int) -> int:
        """Blocks per SM for a launch asking bps, no more than the SM's shared memory holds at once (each
        block's share has 1 KB reserved); bps where that memory is unknown."""
        return max(1, min(bps, self.smem_sm // (smem + 1024))) if self.smem_sm else bps


@dataclass(frozen=True)
class Weight:
    """What the choice needs of MUL_MAT's w: its kernel type (weight_kernel_type), [N, K], bytes a row and
    its address (for alignment)."""

    type: str
    N: int
    K: int
    row_bytes: int
    ptr: int


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch, decided: module (file and compile defines), entry point, geometry."""

    file: str
    entry: str
    defines: Mapping[str, int]
    grid: tuple[int, ...]
    block: tuple[int, ...]
    smem: int = 0
    pdl: bool = False  # programmatic dependent launch (pdl.py): starts while the kernel before it ends


@dataclass(frozen=True)
class BlasTiles:
    """mul_mat_blas's plan for one node: y [M, N] = x [M, K] @ w [N, K]^T by the vendor BLAS's GEMM on `ab`
    operands ("f16": x converted, w dequantized or read as it is; "f32": both read as they are), f32
    arithmetic and output. x goes in chunks of m_tile tokens, w in tiles of n_tile rows, through one scratch
    buffer shared by every such node: x_bytes for x's f16 rows (0: not converted), then w_bytes for the
    weight's (0: read as it is). dequant: dequantize.hip's launch for a whole tile (None: no dequantization).
    """

    m_tile: int
    n_tile: int
    x_bytes: int
    w_bytes: int
    ab: str
    dequant: KernelLaunch | None = None

    @property
    def scratch_bytes(self) -> int:
        return self.x_bytes + self.w_bytes


def x8_row_bytes(K: int) -> int:
    """Bytes of one token of quantize_x8's output: int8 [K], then float2 (scale, sum) [K / 32]."""
    return 4 * x8_words(K)


# ---- geometries -------------------------------------------------------------------------------------------


def _x8_applies(dev: Device, w: Weight) -> bool:
    """The int8 mat-vecs: x in shared memory or registers, pairs of blocks 4-byte aligned."""
    return w.K <= X8_MAX_K and w.K % 64 == 0 and w.ptr % 4 == 0


def mat_vec_f32_geometry(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch:
    d = dict(tuned)
    wide = base.get("wide")
    if wide and w.K >= wide["min_k"] and "RF_MMV_WARPS" not in d:
        d["RF_MMV_WARPS"] = wide["RF_MMV_WARPS"]
    rows = d.get("RF_MMV_ROWS", 2)
    threads = d.get("RF_MMV_WARPS", 4) * dev.warp
    return KernelLaunch(kern.file, kern.entry.format(type=w.type), d, (cdiv(w.N, rows), M), (threads,),
                        pdl=pdl)


def mat_mat_geometry(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch:
    return KernelLaunch(kern.file, kern.entry.format(type=w.type), {}, (cdiv(w.N, 64), cdiv(M, 64)), (256,),
                        pdl=pdl)


MQ_THREADS = 128  # mul_mat_q.hip: 4 warps of 32, 2 x 2 over a block's tile


def mat_mat_q_geometry(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch | None:
    """mul_mat_q.hip: where the device has int8 matrix instructions (those of Device.mma, on 32-lane warps)
    and x's blocks of 32 tile a row; RF_MMQ_WM x RF_MMQ_WN tiles of 16 a warp (tunables, else the
    defaults'): blocks of 32 WM tokens x 32 WN rows."""
    if not dev.mma or dev.warp != 32 or w.K % 32:
        return None
    defines = {k: int(tuned.get(k, base[k])) for k in ("RF_MMQ_WM", "RF_MMQ_WN")}
    bm, bn = 32 * defines["RF_MMQ_WM"], 32 * defines["RF_MMQ_WN"]
    return KernelLaunch(kern.file, kern.entry.format(type=w.type), defines, (cdiv(w.N, bn), cdiv(M, bm)),
                        (MQ_THREADS,), pdl=pdl)


# ---- mul_mat_blas: f16 tiles for the vendor BLAS's GEMM ---------------------------------------------------

BLAS_TILE = 16  # where a node is tiled, its chunks of tokens and tiles of weight rows are multiples of this
DQ_THREADS = 256  # dequantize.hip: threads a block, 8 elements a thread
# weight kernel types the GEMM reads as they are, and its operand type: f32 rows with f32 x (f32 products
# as the tiled kernel's, nothing copied), f16 rows with x converted to f16; every other type is dequantized
# to f16 (bf16 too: exact in f16's normal range, and f16 x keeps 3 more bits than bf16 x would)
BLAS_AS_IS = {"f32": "f32", "f32_s": "f32", "f16": "f16", "f16_s": "f16"}


def dequantize_grid(rows: int, K: int) -> tuple[int]:
    """dequantize.hip's grid for `rows` rows of K: 8 elements a thread, DQ_THREADS threads a block."""
    return (max(1, cdiv(rows * K, 8 * DQ_THREADS)),)


def dequantize_launch(wtype: str, rows: int, K: int, pdl: bool = False) -> KernelLaunch:
    """dequantize.hip for `rows` rows of K of a weight of kernel type wtype."""
    entry = f"dequantize_f16_{wtype}"
    return KernelLaunch("dequantize.hip", entry, {}, dequantize_grid(rows, K), (DQ_THREADS,), pdl=pdl)


def _split(n: int, cap: int) -> int:
    """The chunk size that covers n in the fewest chunks of at most cap, as even as multiples of BLAS_TILE
    allow (n itself where cap >= n; 0 where cap < BLAS_TILE)."""
    if cap >= n:
        return n
    cap = cap // BLAS_TILE * BLAS_TILE
    if cap == 0:
        return 0
    return cdiv(cdiv(n, cdiv(n, cap)), BLAS_TILE) * BLAS_TILE


def blas_tiles(
    M: int, N: int, K: int, budget: int, ab: str, dequant: bool
) -> tuple[int, int, int, int] | None:
    """(m_tile, n_tile, x_bytes, w_bytes) of a GEMM on `ab` operands through at most `budget` bytes of
    scratch: with f16 operands x's f16 rows take up to half of it where w is dequantized too (all of it
    where not; whole where they fit), the weight's f16 rows the rest (after x_bytes rounded up to 256, so
    they start aligned). f32 operands need none. None: not even BLAS_TILE rows of each fit."""
    row = 2 * K  # bytes of an f16 row
    m_tile, x_bytes = M, 0
    if ab == "f16":
        m_tile = _split(M, (budget // 2 if dequant else budget) // row)
        x_bytes = cdiv(m_tile * row, 256) * 256 if dequant else m_tile * row
    n_tile, w_bytes = N, 0
    if dequant:
        n_tile = _split(N, max(0, budget - x_bytes) // row)
        w_bytes = n_tile * row
    if m_tile == 0 or n_tile == 0:
        return None
    return m_tile, n_tile, x_bytes, w_bytes


def blas_geometry(kern, dev, w, M, base, tuned, host, pdl) -> BlasTiles | None:
    """mul_mat_blas's tiling in scratch_bytes of scratch (RF_BLAS_SCRATCH overrides); whether the row may be
    chosen at all is choose_mul_mat's (blas_allowed)."""
    ab = BLAS_AS_IS.get(w.type, "f16")
    dequant = w.type not in BLAS_AS_IS
    t = blas_tiles(M, w.N, w.K, host.get("scratch_bytes", base["scratch_bytes"]), ab, dequant)
    if t is None:
        return None
    return BlasTiles(*t, ab, dequantize_launch(w.type, t[1], w.K, pdl) if dequant else None)


# mul_mat_vec_xq: bytes of a row that one warp step covers (RF_WARP / 8 pairs of blocks) per 32-lane warp
X8_PAIR_BYTES = {"q4_0": 36, "q8_0": 68}


def mat_vec_xq_geometry(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch | None:
    if not _x8_applies(dev, w):
        return None
    d = {**{k: v for k, v in base.items() if k.startswith("RF_")}, **tuned}
    d.pop("RF_MMVX_LEVELS", None)  # one int8 level, quantized by quantize_x8
    bps = host.get("blocks_per_sm", base.get("blocks_per_sm", 4))
    return replace(row_groups_launch(kern, dev, w, M, d, bps, x8_row_bytes(w.K)), pdl=pdl)


def row_groups_launch(
    kern: MatMulKernel, dev: Device, w: Weight, M: int, d: dict[str, int], bps: int, x_bytes: int
) -> KernelLaunch:
    """mul_mat_vec_xq's geometry (x_bytes of x in shared memory, then per warp a ring of RF_MMVX_ASYNC
    chunks): as many blocks as fit at once (bps a SM), row groups dealt round them (or, RF_MMVX_SPREAD=0,
    the fewest blocks that give every warp the same number of groups). The ring needs 16-byte aligned rows;
    otherwise chunks load into registers."""
    warps, rows = d.get("RF_MMVX_WARPS", 8), d.get("RF_MMVX_ROWS", 2)
    ring = d.get("RF_MMVX_ASYNC", 0)
    chunk_bytes = d.get("RF_MMVX_UNROLL", 4) * X8_PAIR_BYTES[w.type] * dev.warp // 8
    x_bytes = cdiv(x_bytes, 16) * 16
    smem = x_bytes + warps * ring * rows * chunk_bytes
    if ring and (w.row_bytes % 16 or w.ptr % 16 or smem > dev.smem_block):
        d["RF_MMVX_ASYNC"] = 0
        smem = x_bytes
    bps = dev.resident_blocks(bps, smem)
    groups = cdiv(w.N, rows)
    if d.get("RF_MMVX_SPREAD", 1):  # every resident block, groups dealt round them
        blocks = min(dev.n_sm * bps, groups)
    else:  # fewest blocks that give every warp the same number of groups
        blocks = cdiv(groups, cdiv(groups, dev.n_sm * bps * warps) * warps)
    entry = kern.entry.format(type=w.type)
    return KernelLaunch(kern.file, entry, d, (blocks, M), (warps * dev.warp,), smem)


# mul_mat_vec_xr: bytes of a GGUF block
XR_BLOCK_BYTES = {"q4_0": 18, "q8_0": 34}


def mat_vec_xr_geometry(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch | None:
    """None where it does not apply: K not a multiple of 256 (a group of 8 blocks is whole 16-byte chunks),
    rows not packed or not aligned, staging over a block's shared memory. As many blocks as are resident at
    once (blocks_per_sm), no more than give every block a row group of 8 rows; one-warp blocks where one
    round of them covers the row groups ("one_warp"); whole rows a row group where K allows ("whole").
    Started early (programmatic dependent launch) where pdl and x is not loaded with the weights."""
    packed = w.row_bytes == w.K // 32 * XR_BLOCK_BYTES[w.type]
    if not _x8_applies(dev, w) or w.K % 256 or not packed or w.ptr % 16:
        return None
    d = dict(base["groups"])
    host_d = dict(base["groups_host"])
    h = dev.warp // 8  # groups of 8 blocks a step
    q = w.K // (256 * h) if w.K % (256 * h) == 0 else 0  # whole rows: a row is q steps
    max_q = host.get("whole_rows_max_q", base["whole_rows_max_q"])
    whole = "whole" in base and 2 <= q <= max_q and 8 % q == 0
    one = base.get("one_warp")
    if whole:
        d.update(base["whole"])
        host_d.update(base["whole_host"])
    elif one and 8 * dev.n_sm <= cdiv(w.N, 8) <= base["one_warp_host"]["blocks_per_sm"] * dev.n_sm:
        d.update(one)
        host_d.update(base["one_warp_host"])
    d.update(tuned)
    d.pop("RF_MMVR_Q", None)  # the geometry alone sets Q
    host_d.update(host)
    warps = d.get("RF_MMVR_WARPS", 4)
    whole = whole and warps == 1 and not d.get("RF_MMVR_XPF", 0)
    if whole:
        d["RF_MMVR_Q"] = q
    # staging: per warp 8 rows x h groups x (chunks of a group + 1 of padding) x 16 bytes; 2 x warps x 8
    # partial sums
    smem = warps * 8 * h * (XR_BLOCK_BYTES[w.type] // 2 + 1) * 16 + 2 * warps * 8 * 4
    if smem > dev.smem_block:
        return None
    most = dev.n_sm * dev.resident_blocks(host_d.get("blocks_per_sm", 4), smem)
    groups = cdiv(q * w.N if whole else w.N, 8)  # of Q N virtual rows where whole
    if whole and host_d.get("even", 1):  # every block the same number of row groups
        blocks = cdiv(groups, cdiv(groups, most))
    else:
        blocks = min(most, groups)
    early = pdl and not d.get("RF_MMVR_XPF", 0) and d.get("RF_MMVR_PDL", 1) > 0
    if early:  # the build that asks for its first weights, then waits for the kernel before
        d = {"RF_MMVR_PDL": 1, **d}
    elif d.get("RF_MMVR_XPF", 0):  # x comes with the weights: no such build
        d.pop("RF_MMVR_PDL", None)
    entry = kern.entry.format(type=w.type)
    return KernelLaunch(kern.file, entry, d, (blocks, M), (warps * dev.warp,), smem, early)


def quantize_x8_launch(K: int, M: int, pdl: bool) -> KernelLaunch:
    """quantize_x8: x [M, K] f32 -> [M, x8_row_bytes(K)] bytes, a float4 a thread."""
    return KernelLaunch("quantize_x8.hip", "quantize_x8", {}, (cdiv(K, 1024), M), (256,), 0, pdl)


QX8_NPT = 4  # float4s a thread of rms_norm_mul_quantize_x8 holds (quantize_x8.hip's QX8_NPT)


def norm_quantize_x8_launch(K: int, M: int, warp: int, pdl: bool) -> KernelLaunch:
    """rms_norm_mul_quantize_x8: a [M, K] f32 -> [M, x8_row_bytes(K)] bytes, a block a row of as many warps
    as hold the row at QX8_NPT float4s a thread (at most 1024 threads; longer rows are read twice)."""
    threads = min(1024 // warp * warp, cdiv(cdiv(K // 4, QX8_NPT), warp) * warp)
    return KernelLaunch("quantize_x8.hip", "rms_norm_mul_quantize_x8", {}, (M,), (threads,), 0, pdl)
