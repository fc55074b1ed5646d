"""Which kernel MUL_MAT (and MUL_MAT_ADD: the same kernels with an addend) launches, and how: the mat-vec and
mat-mat kernels as data (`MUL_MAT_KERNELS`), each with its file, entry point, weight and activation types,
the shapes it serves, its launch geometry and its defaults per device family. `choose_mul_mat` consults the
table once, when a graph is prepared; running the prepared graph makes no choices. One row is not a kernel
of ours alone: mul_mat_blas (prefill) dequantizes weight rows to f16 (dequantize.hip) for the vendor BLAS's
GEMM (blas.py); its "geometry" is its tiling (`BlasTiles`).

Tunables (HipBackend(tunables=...)) keep their -D names; the host-side ones (`HOST_TUNABLES`: blocks per
SM, row-group spreading) are arguments of the geometry, never compile defines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ...ir.ops import x8_words
from .tensor import cdiv

FAMILIES = ("sm_90", "gfx1100", "other")
SMEM_DEFAULT = 48 * 1024  # dynamic shared memory a block gets without the opt-in attribute
MMV_MAX_TOKENS = 4  # up to this many tokens MUL_MAT runs a mat-vec kernel (once per token, grid y)
X8_MAX_K = 21504  # the int8 mat-vecs hold x in shared memory
# tunable -> (kernel, host-side parameter of its geometry)
HOST_TUNABLES = {
    "RF_MMVX_BPS": ("mul_mat_vec_xq", "blocks_per_sm"),
    "RF_MMVB_BPS": ("mul_mat_vec_xb", "blocks_per_sm"),
    "RF_MMVR_BPS": ("mul_mat_vec_xr", "blocks_per_sm"),
    "RF_MMVR_QMAX": ("mul_mat_vec_xr", "whole_rows_max_q"),
    "RF_MMVR_EVEN": ("mul_mat_vec_xr", "even"),
    "RF_BLAS_SCRATCH": ("mul_mat_blas", "scratch_bytes"),
}
_DEFINE_PREFIXES = ("RF_MMV_", "RF_MMVQ_", "RF_MMVS_", "RF_MMVX_", "RF_MMVB_", "RF_MMVR_")


def device_family(arch: str) -> str:
    """The defaults' key for a device arch (sm_90, gfx1100; anything else: other)."""
    if arch.startswith("sm_90"):
        return "sm_90"
    return "gfx1100" if arch == "gfx1100" else "other"


@dataclass(frozen=True)
class Device:
    """What the choice needs of the GPU: warp width, SMs (CUs), shared memory a block may opt in to and an
    SM holds (0: unknown), its family for the defaults, and the vendor BLAS this process can call."""

    warp: int
    n_sm: int
    smem_block: int = SMEM_DEFAULT
    smem_sm: int = 0
    family: str = "other"
    blas: str = ""  # the vendor BLAS MUL_MAT may call (blas.py): "cublas", "hipblas"; "": none

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


# geometry(kernel, device, weight, M, defaults (defaults_for), tuned defines, tuned host parameters, pdl)
# -> the launch (mul_mat_blas: its tiling), or None where the kernel does not apply
Geometry = Callable[..., "KernelLaunch | BlasTiles | None"]


@dataclass(frozen=True)
class MatMulKernel:
    """A row of the table: a kernel family of MUL_MAT, in the file `<name>.hip` of kernels/ (`file`: another
    path), entry points `<name>_<weight kernel type>`.

    x: the activation it reads, "f32" or "x8" (QUANTIZE_X8's int8 rows). serves, geometry_doc: the shapes it
    serves and its launch geometry, in words (geometry: as a function). defaults: family -> weight type ->
    compile defines and host-side parameters (lower case). args: "mat_vec" (w, row bytes, x, x stride, y,
    N, N, K, b, b stride) or "mat_mat" (w, row bytes, x, y, M, N, K, b, b stride); b: MUL_MAT_ADD's addend
    (null for MUL_MAT), b stride 0 (a bias) or N (a residual); "blas": the vendor BLAS's GEMM after
    dequantize.hip's (w tile, row bytes, f16 out, rows, K), b copied into y first (blas.py). min_n: the
    fewest rows it serves. entry_name: the entry points' prefix where it is not `name`.
    """

    name: str
    weight_types: tuple[str, ...]
    x: str
    serves: str
    geometry_doc: str
    defaults: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(repr=False)
    geometry: Geometry = field(repr=False)
    args: str = "mat_vec"
    max_tokens: int | None = MMV_MAX_TOKENS
    min_n: int = 0
    file: str = ""
    entry_name: str = ""

    def __post_init__(self) -> None:
        if not self.file:
            object.__setattr__(self, "file", f"{self.name}.hip")

    @property
    def entry(self) -> str:
        """The entry point, {type} standing for the weight's kernel type."""
        return (self.entry_name or self.name) + "_{type}"

    def defaults_for(self, family: str, wtype: str) -> dict[str, Any]:
        by_type = self.defaults.get(family, self.defaults["other"])
        return dict(by_type.get(wtype, by_type.get("*", {})))


@dataclass(frozen=True)
class MulMatChoice:
    """MUL_MAT's (or MUL_MAT_ADD's) launches for one node: the kernel's, and quantize_x8's before it for a
    kernel on int8 x. x_stride: x's row stride argument (bytes of quantize_x8's rows, f32 elements
    otherwise). blas: mul_mat_blas's tiling (launch: its dequantize kernel's for a whole tile, None where the
    GEMM reads w as it is)."""

    kernel: MatMulKernel
    launch: KernelLaunch | None
    quantize: KernelLaunch | None
    x_stride: int
    blas: BlasTiles | None = None


def x8_row_bytes(K: int) -> int:
    """Bytes of one token of quantize_x8's output: int8 [K], then float2 (scale, sum) [K / 32]."""
    return 4 * x8_words(K)


def kernel_defines(tunables: Mapping[str, int]) -> dict[str, int]:
    """The mat-vec compile defines among the tunables (host-side ones excluded)."""
    return {k: v for k, v in tunables.items() if k.startswith(_DEFINE_PREFIXES) and k not in HOST_TUNABLES}


def host_parameters(kernel: str, tunables: Mapping[str, int]) -> dict[str, int]:
    return {p: tunables[t] for t, (k, p) in HOST_TUNABLES.items() if k == kernel and t in tunables}


def same_on_every_family(
    by_type: Mapping[str, Mapping[str, Any]],
) -> dict[str, Mapping[str, Mapping[str, Any]]]:
    """Defaults measured on sm_90 (H100/H200), used unmeasured on the other families."""
    return {f: by_type for f in FAMILIES}


# ---- geometries -------------------------------------------------------------------------------------------


def _x8_applies(dev: Device, w: Weight) -> bool:
    """The int8 mat-vecs: x in shared memory or registers, pairs of blocks 4-byte aligned."""
    return w.K <= X8_MAX_K and w.K % 64 == 0 and w.ptr % 4 == 0


def _mat_vec_f32(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch:
    d = dict(tuned)
    wide = base.get("wide")
    if wide and w.K >= wide["min_k"] and "RF_MMV_WARPS" not in d:
        d["RF_MMV_WARPS"] = wide["RF_MMV_WARPS"]
    rows = d.get("RF_MMV_ROWS", 2)
    threads = d.get("RF_MMV_WARPS", 4) * dev.warp
    return KernelLaunch(kern.file, kern.entry.format(type=w.type), d, (cdiv(w.N, rows), M), (threads,),
                        pdl=pdl)


def _mat_mat(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch:
    return KernelLaunch(kern.file, kern.entry.format(type=w.type), {}, (cdiv(w.N, 64), cdiv(M, 64)), (256,),
                        pdl=pdl)


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


def _blas(kern, dev, w, M, base, tuned, host, pdl) -> BlasTiles | None:
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


def _mat_vec_xq(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch | None:
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


def _mat_vec_xr(kern, dev, w, M, base, tuned, host, pdl) -> KernelLaunch | None:
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


# ---- the table ------------------------------------------------------------------------------------------

# mul_mat_vec_xr, per type (tunables override), from bench_matvec.py --sweep xr on an H200: row groups of 8
# rows; a warp per row group where one round of resident one-warp blocks covers every row group, at least 8
# of them an SM; whole rows a row group (RF_MMVR_Q = K / (256 H), one warp a block, 8 / Q whole rows) where
# K = 256 H Q with 2 <= Q <= whole_rows_max_q, the row groups spread evenly over the fewest rounds of
# resident blocks (even 0: as many blocks as are resident)
_XR_GROUPS = {"RF_MMVR_WARPS": 2, "RF_MMVR_MINB": 6, "RF_MMVR_XPF": 1}
_XR_WHOLE = {"RF_MMVR_WARPS": 1, "RF_MMVR_XPF": 0, "RF_MMVR_XDEP": 1}
_XR_SHARED = {
    "groups": _XR_GROUPS,
    "groups_host": {"blocks_per_sm": 6},
    "one_warp": {"RF_MMVR_WARPS": 1, "RF_MMVR_MINB": 12},
    "one_warp_host": {"blocks_per_sm": 12},
    "whole_rows_max_q": 4,  # Q = 8 (K = 8192) keeps 80 registers of x a lane: untimed
}
XR_DEFAULTS = {
    "q4_0": {**_XR_SHARED, "whole": {**_XR_WHOLE, "RF_MMVR_MINB": 12}, "whole_host": {"blocks_per_sm": 12}},
    # x's 40 registers a lane on top of 17 chunks: 12 blocks an SM spill, 8 do not
    "q8_0": {**_XR_SHARED, "whole": {**_XR_WHOLE, "RF_MMVR_MINB": 8}, "whole_host": {"blocks_per_sm": 8}},
}
# mul_mat_vec_xq, per type (tunables override), from bench_matvec.py on an H100
XQ_DEFAULTS = {
    "q4_0": {
        "RF_MMVX_ROWS": 4,
        "RF_MMVX_UNROLL": 2,
        "RF_MMVX_ASYNC": 3,
        "RF_MMVX_MINB": 4,
        "blocks_per_sm": 4,
    },
    "q8_0": {
        "RF_MMVX_ROWS": 1,
        "RF_MMVX_UNROLL": 4,
        "RF_MMVX_ASYNC": 3,
        "RF_MMVX_MINB": 6,
        "blocks_per_sm": 6,
    },
}
# mul_mat_vec: 8 warps a block instead of 4 for Q4_0 and Q8_0 rows of K >= 8192 (H100)
MMV_DEFAULTS = {t: {"wide": {"min_k": 8192, "RF_MMV_WARPS": 8}} for t in ("q4_0", "q8_0")}
# mul_mat_blas: chosen by default (MatMulOptions.prefill "auto") where the device's vendor BLAS is among
# `libs`, from min_tokens tokens; scratch_bytes: the f16 scratch every such node shares (RF_BLAS_SCRATCH
# overrides). Not measured yet (scripts/bench_matmul.py): cuBLAS's tensor-core GEMM is taken to beat the
# tiled f32 kernel (no matrix cores) from 5 tokens for every type on CUDA. hipBLAS (through CuPy, its graph
# capture untried) runs only when asked: prefill "blas".
_BLAS = {"scratch_bytes": 64 << 20, "min_tokens": MMV_MAX_TOKENS + 1}
BLAS_DEFAULTS = {
    "sm_90": {"*": {**_BLAS, "libs": ("cublas",)}},
    "gfx1100": {"*": {**_BLAS, "libs": ()}},
    "other": {"*": {**_BLAS, "libs": ("cublas",)}},
}

_F32_TYPES = ("f32", "f16", "bf16")
# weight kernel types: f32/f16/bf16 rows that are not 16-byte multiples or aligned read element-wise ("_s")
KERNEL_TYPES = tuple(
    t + s
    for t in (*_F32_TYPES, "q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
    for s in (("", "_s") if t in _F32_TYPES else ("",))
)

MUL_MAT_VEC_XR = MatMulKernel(
    name="mul_mat_vec_xr",
    weight_types=("q4_0", "q8_0"),
    x="x8",
    serves="M <= 4, N >= 4096, K % 256 == 0 and <= 21504, rows packed and 16-byte aligned",
    geometry_doc="grid (resident blocks or fewer, M), RF_MMVR_WARPS warps; staging in shared memory",
    defaults=same_on_every_family(XR_DEFAULTS),
    geometry=_mat_vec_xr,
    min_n=4096,
)
MUL_MAT_VEC_XQ = MatMulKernel(
    name="mul_mat_vec_xq",
    weight_types=("q4_0", "q8_0"),
    x="x8",
    serves="M <= 4, N >= 8192, K % 64 == 0 and <= 21504 (where mul_mat_vec_xr does not apply)",
    geometry_doc="grid (resident blocks, M), RF_MMVX_WARPS warps; x and an async ring in shared memory",
    defaults=same_on_every_family(XQ_DEFAULTS),
    geometry=_mat_vec_xq,
    min_n=8192,
)
MUL_MAT_VEC = MatMulKernel(
    name="mul_mat_vec",
    weight_types=KERNEL_TYPES,
    x="f32",
    serves="M <= 4, every type and shape",
    geometry_doc="grid (N / RF_MMV_ROWS, M), RF_MMV_WARPS warps",
    defaults=same_on_every_family(MMV_DEFAULTS),
    geometry=_mat_vec_f32,
)
MUL_MAT_BLAS = MatMulKernel(
    name="mul_mat_blas",
    weight_types=KERNEL_TYPES,
    x="f32",
    serves="M > 4 (prefill), every type, where the device has a vendor BLAS and the defaults (or prefill "
    "'blas') ask for it, and BLAS_TILE rows of x and w fit the scratch",
    geometry_doc="x to f16 (elementwise.hip's copy) and w to f16 (dequantize.hip: grid (rows * K / 2048), "
    "256 threads) in tiles through one shared scratch, then one GEMM a tile (f32 weights: an f32 GEMM)",
    defaults=BLAS_DEFAULTS,
    geometry=_blas,
    args="blas",
    max_tokens=None,
    file="dequantize.hip",
    entry_name="dequantize_f16",
)
MUL_MAT = MatMulKernel(
    name="mul_mat",
    weight_types=KERNEL_TYPES,
    x="f32",
    serves="M > 4 (prefill), every type and shape",
    geometry_doc="grid (N / 64, M / 64), 256 threads: 64 x 64 tiles",
    defaults=same_on_every_family({}),
    geometry=_mat_mat,
    args="mat_mat",
    max_tokens=None,
)
# in order of preference; the first that applies is chosen
MUL_MAT_KERNELS = (MUL_MAT_VEC_XR, MUL_MAT_VEC_XQ, MUL_MAT_VEC, MUL_MAT_BLAS, MUL_MAT)
PREFILL = ("auto", "tiled", "blas")


@dataclass(frozen=True)
class MatMulOptions:
    """What MUL_MAT may choose from. int8_activations (HipBackend's option) allows the kernels on int8 x;
    kernels: the table, in order of preference; min_n: kernel name -> the fewest rows it serves, overriding
    the table's (tests run the int8 kernels on small weights). prefill (HipBackend's option), for more than
    MMV_MAX_TOKENS tokens: "auto" (the vendor BLAS where the table's defaults say so), "tiled" (never the
    vendor BLAS: mul_mat), "blas" (the vendor BLAS wherever the device has one)."""

    int8_activations: bool = False
    kernels: tuple[MatMulKernel, ...] = MUL_MAT_KERNELS
    min_n: Mapping[str, int] = field(default_factory=dict)
    prefill: str = "auto"

    def __post_init__(self) -> None:
        if self.prefill not in PREFILL:
            raise ValueError(f"prefill {self.prefill!r}: choose one of {', '.join(PREFILL)}")


def blas_allowed(device: Device, options: MatMulOptions, base: Mapping[str, Any], M: int) -> bool:
    """Whether a row on the vendor BLAS (args "blas") may be chosen: never with prefill "tiled" or without
    a vendor BLAS; with "blas" wherever there is one; with "auto" where its defaults (base) name the
    device's BLAS among `libs` and M reaches their min_tokens."""
    if options.prefill == "tiled" or not device.blas:
        return False
    if options.prefill == "blas":
        return True
    return device.blas in base.get("libs", ()) and M >= base.get("min_tokens", 1)


def quantize_x8_launch(K: int, M: int, pdl: bool) -> KernelLaunch:
    """quantize_x8: x [M, K] f32 -> [M, x8_row_bytes(K)] bytes, a float4 a thread."""
    return KernelLaunch("quantize_x8.hip", "quantize_x8", {}, (cdiv(K, 1024), M), (256,), 0, pdl)


def choose_mul_mat(
    device: Device,
    options: MatMulOptions,
    tunables: Mapping[str, int],
    w: Weight,
    M: int,
    pdl: bool = False,
) -> MulMatChoice:
    """The first kernel of options.kernels that serves w [N, K] and M tokens, and its launch; for a kernel
    on int8 x, quantize_x8's launch too (started early where the kernel is). pdl: programmatic dependent
    launch is on."""
    defines = kernel_defines(tunables)
    for kern in options.kernels:
        if kern.x == "x8" and not options.int8_activations:
            continue
        if w.type not in kern.weight_types or (kern.max_tokens is not None and M > kern.max_tokens):
            continue
        if w.N < options.min_n.get(kern.name, kern.min_n):
            continue
        base = kern.defaults_for(device.family, w.type)
        if kern.args == "blas" and not blas_allowed(device, options, base, M):
            continue
        host = host_parameters(kern.name, tunables)
        launch = kern.geometry(kern, device, w, M, base, dict(defines), host, pdl)
        if launch is None:
            continue
        if isinstance(launch, BlasTiles):
            return MulMatChoice(kern, launch.dequant, None, w.K, launch)
        quantize = quantize_x8_launch(w.K, M, launch.pdl) if kern.x == "x8" else None
        return MulMatChoice(kern, launch, quantize, x8_row_bytes(w.K) if kern.x == "x8" else w.K)
    raise NotImplementedError(f"no MUL_MAT kernel for {w.type} [{w.N}, {w.K}] with {M} tokens")
