"""Which kernel MUL_MAT (and MUL_MAT_ADD: the same kernels with an addend) launches, and how: the mat-vec and
mat-mat kernels as data (`MUL_MAT_KERNELS`), each with its file, entry point, weight and activation types,
the shapes it serves, its launch geometry and its defaults per device family. `choose_mul_mat` consults the
table once, when a graph is prepared; running the prepared graph makes no choices. One row is not a kernel
of ours alone: mul_mat_blas (prefill) dequantizes weight rows to f16 (dequantize.hip) for the vendor BLAS's
GEMM (blas.py); its "geometry" is its tiling (`BlasTiles`).

The launch geometries themselves are launch_geometry.py's. Tunables (HipBackend(tunables=...)) keep their -D
names; the host-side ones (`HOST_TUNABLES`: blocks per SM, row-group spreading) are arguments of the
geometry, never compile defines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .launch_geometry import (
    BlasTiles,
    Device,
    KernelLaunch,
    Weight,
    blas_geometry,
    mat_mat_geometry,
    mat_mat_q_geometry,
    mat_vec_f32_geometry,
    mat_vec_xq_geometry,
    mat_vec_xr_geometry,
    quantize_x8_launch,
    x8_row_bytes,
)

FAMILIES = ("sm_90", "gfx1100", "other")
MMV_MAX_TOKENS = 4  # up to this many tokens MUL_MAT runs a mat-vec kernel (once per token, grid y)
# tunable -> (kernel, host-side parameter of its geometry)
HOST_TUNABLES = {
    "RF_MMVX_BPS": ("mul_mat_vec_xq", "blocks_per_sm"),
    "RF_MMVB_BPS": ("mul_mat_vec_xb", "blocks_per_sm"),
    "RF_MMVR_BPS": ("mul_mat_vec_xr", "blocks_per_sm"),
    "RF_MMVR_QMAX": ("mul_mat_vec_xr", "whole_rows_max_q"),
    "RF_MMVR_EVEN": ("mul_mat_vec_xr", "even"),
    "RF_BLAS_SCRATCH": ("mul_mat_blas", "scratch_bytes"),
}
_DEFINE_PREFIXES = ("RF_MMV_", "RF_MMVQ_", "RF_MMVS_", "RF_MMVX_", "RF_MMVB_", "RF_MMVR_", "RF_MMQ_")


# geometry(kernel, device, weight, M, defaults (defaults_for), tuned defines, tuned host parameters, pdl)
# -> the launch (mul_mat_blas: its tiling), or None where the kernel does not apply
Geometry = Callable[..., "KernelLaunch | BlasTiles | None"]


@dataclass(frozen=True)
class GluEpilogue:
    """A mat-vec kernel's MUL_MAT_SWIGLU epilogue (w's rows gate/up pairs, y[i] = silu(row 2i . x) * (row
    2i + 1 . x) in one launch): the compile define that switches it on; rows: the define of the rows one
    lane's writes see together and the kernel's default for it, which must be even (None: always whole
    pairs)."""

    define: str
    rows: tuple[str, int] | None = None

    def applies(self, defines: Mapping[str, Any]) -> bool:
        return self.rows is None or defines.get(self.rows[0], self.rows[1]) % 2 == 0


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
    fewest rows it serves. entry_name: the entry points' prefix where it is not `name`. glu: its
    MUL_MAT_SWIGLU epilogue (None: the product goes to scratch and glu_pairs_f32 follows). option: what
    lets it be chosen: "int8_activations" (MatMulOptions', the decode kernels on int8 x), "mmq" (prefill
    "mmq", or "auto" where its defaults say so: mul_mat_q), "" (nothing: always where it applies).
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
    glu: GluEpilogue | None = None
    option: str = ""

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

# mul_mat_q (prefill on int8 matrix instructions): chosen by "auto" where `auto` is true, and always by
# prefill "mmq". sm_90: the vendor-BLAS path is faster (H100, data/bench/matmul_h100.json: 1.4-3.8x at
# LLaMA-7B's 11008-row weights; Qwen2.5-0.5B's pp512 88,735 vs 46,147 t/s end to end), so not by default.
# gfx1100: there is no vendor BLAS in its default path and the tiled kernel has no matrix cores (unmeasured).
# The tiling (16x16 tiles a warp) is unmeasured beyond the H100's 2x2 / 4x2 rows there.
_MMQ_TILES = {"RF_MMQ_WM": 2, "RF_MMQ_WN": 2}  # 16 x 16 tiles a warp (unmeasured)
MMQ_DEFAULTS = {
    "sm_90": {"*": {**_MMQ_TILES, "auto": False}},
    "gfx1100": {"*": {**_MMQ_TILES, "auto": True}},
    "other": {"*": {**_MMQ_TILES, "auto": False}},
}

_F32_TYPES = ("f32", "f16", "bf16")
# weight kernel types: f32/f16/bf16 rows that are not 16-byte multiples or aligned read element-wise ("_s")
KERNEL_TYPES = tuple(
    t + s
    for t in (*_F32_TYPES, "q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
    for s in (("", "_s") if t in _F32_TYPES else ("",))
)

# From N = 8192: at 4096 rows it is as fast as mul_mat_vec on f32 x (H100, graph us, data/bench/
# matvec_h100_x8.json against matvec_h100_f32.json: Q4_0 4096x4096 7.55 / 7.54, 4096x11008 17.42 / 17.36;
# Q8_0 9.74 / 9.78, 21.51 / 21.57) and costs a QUANTIZE_X8 launch besides (LLaMA-7B's attention output and
# SWIGLU rows, 2 a layer); from 11008 rows it is faster (Q4_0 14.02 / 16.99, 32000x4096 31.00 / 44.22).
MUL_MAT_VEC_XR = MatMulKernel(
    name="mul_mat_vec_xr",
    weight_types=("q4_0", "q8_0"),
    x="x8",
    serves="M <= 4, N >= 8192, K % 256 == 0 and <= 21504, rows packed and 16-byte aligned",
    geometry_doc="grid (resident blocks or fewer, M), RF_MMVR_WARPS warps; staging in shared memory",
    defaults=same_on_every_family(XR_DEFAULTS),
    geometry=mat_vec_xr_geometry,
    min_n=8192,
    glu=GluEpilogue("RF_MMVR_GLU"),  # a row group: 8 or 8 / Q (<= 4) whole rows
    option="int8_activations",
)
MUL_MAT_VEC_XQ = MatMulKernel(
    name="mul_mat_vec_xq",
    weight_types=("q4_0", "q8_0"),
    x="x8",
    serves="M <= 4, N >= 8192, K % 64 == 0 and <= 21504 (where mul_mat_vec_xr does not apply)",
    geometry_doc="grid (resident blocks, M), RF_MMVX_WARPS warps; x and an async ring in shared memory",
    defaults=same_on_every_family(XQ_DEFAULTS),
    geometry=mat_vec_xq_geometry,
    min_n=8192,
    glu=GluEpilogue("RF_MMVX_GLU", ("RF_MMVX_ROWS", 2)),
    option="int8_activations",
)
MUL_MAT_VEC = MatMulKernel(
    name="mul_mat_vec",
    weight_types=KERNEL_TYPES,
    x="f32",
    serves="M <= 4, every type and shape",
    geometry_doc="grid (N / RF_MMV_ROWS, M), RF_MMV_WARPS warps",
    defaults=same_on_every_family(MMV_DEFAULTS),
    geometry=mat_vec_f32_geometry,
    glu=GluEpilogue("RF_MMV_GLU", ("RF_MMV_ROWS", 2)),
)
MUL_MAT_Q = MatMulKernel(
    name="mul_mat_q",
    weight_types=("q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k"),
    x="x8",
    serves="M > 4 (prefill), quantized types, K % 32 == 0, where the device has int8 matrix instructions "
    "and prefill 'mmq' (or the defaults) ask for it",
    geometry_doc="grid (N / 64, M / 64), 128 threads: 64 x 64 tiles, a warp's 2 x 2 int8 MMA tiles of 16",
    defaults=MMQ_DEFAULTS,
    geometry=mat_mat_q_geometry,
    args="mat_mat",
    max_tokens=None,
    option="mmq",
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
    geometry=blas_geometry,
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
    geometry=mat_mat_geometry,
    args="mat_mat",
    max_tokens=None,
)
# in order of preference; the first that applies is chosen
MUL_MAT_KERNELS = (MUL_MAT_VEC_XR, MUL_MAT_VEC_XQ, MUL_MAT_VEC, MUL_MAT_Q, MUL_MAT_BLAS, MUL_MAT)
PREFILL = ("auto", "tiled", "blas", "mmq")


# int8_activations="auto" (HipBackend's default): the decode kernels on int8 x where a weight's rows are at
# least this long, per device family (none: never). H100, 2026-12-08, one call (rocmforge bench -r 3 beside
# llama-bench -fa 1): LLaMA-7B Q4_0 tg128 494.0 t/s on int8 x against 363.8 on f32 x (llama.cpp 352.1);
# Qwen2-0.5B Q4_0 (rows of 896) 1324.0 against 1414.6: the small models' rows stay on f32 x. Unmeasured
# elsewhere (gfx1100's int8 kernels compile; never timed).
INT8_AUTO_MIN_K = {"sm_90": 4096}


@dataclass(frozen=True)
class MatMulOptions:
    """What MUL_MAT may choose from. int8_activations (HipBackend's option) allows the kernels on int8 x:
    True everywhere they serve, "auto" where the weight's rows reach INT8_AUTO_MIN_K of the device family;
    kernels: the table, in order of preference; min_n: kernel name -> the fewest rows it serves, overriding
    the table's (tests run the int8 kernels on small weights). prefill (HipBackend's option), for more than
    MMV_MAX_TOKENS tokens: "auto" (mul_mat_q or the vendor BLAS where the table's defaults say so), "tiled"
    (mul_mat), "blas" (the vendor BLAS wherever the device has one), "mmq" (mul_mat_q on int8 matrix
    instructions for quantized weights, where the device has them)."""

    int8_activations: bool | str = False
    kernels: tuple[MatMulKernel, ...] = MUL_MAT_KERNELS
    min_n: Mapping[str, int] = field(default_factory=dict)
    prefill: str = "auto"

    def __post_init__(self) -> None:
        if self.prefill not in PREFILL:
            raise ValueError(f"prefill {self.prefill!r}: choose one of {', '.join(PREFILL)}")
        if not (isinstance(self.int8_activations, bool) or self.int8_activations == "auto"):
            raise ValueError(f"int8_activations {self.int8_activations!r}: True, False or 'auto'")


def int8_allowed(device: Device, options: MatMulOptions, w: Weight) -> bool:
    """Whether the kernels on int8 x may serve w: int8_activations True, or "auto" with w's rows at least
    INT8_AUTO_MIN_K of the device's family long."""
    if options.int8_activations == "auto":
        min_k = INT8_AUTO_MIN_K.get(device.family)
        return min_k is not None and w.K >= min_k
    return bool(options.int8_activations)


def blas_allowed(device: Device, options: MatMulOptions, base: Mapping[str, Any], M: int) -> bool:
    """Whether a row on the vendor BLAS (args "blas") may be chosen: never with prefill "tiled" or without
    a vendor BLAS; with "blas" wherever there is one; with "auto" where its defaults (base) name the
    device's BLAS among `libs` and M reaches their min_tokens."""
    if options.prefill == "tiled" or not device.blas:
        return False
    if options.prefill == "blas":
        return True
    return device.blas in base.get("libs", ()) and M >= base.get("min_tokens", 1)


def mmq_allowed(device: Device, options: MatMulOptions, base: Mapping[str, Any]) -> bool:
    """Whether mul_mat_q (int8 x, prefill) may be chosen: with prefill "mmq", or "auto" where its defaults
    (base) say so; never with "tiled" or "blas" (the geometry checks the device)."""
    return options.prefill == "mmq" or (options.prefill == "auto" and bool(base.get("auto")))


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
        if kern.option == "int8_activations" and not int8_allowed(device, options, w):
            continue
        if w.type not in kern.weight_types or (kern.max_tokens is not None and M > kern.max_tokens):
            continue
        if w.N < options.min_n.get(kern.name, kern.min_n):
            continue
        base = kern.defaults_for(device.family, w.type)
        if kern.args == "blas" and not blas_allowed(device, options, base, M):
            continue
        if kern.option == "mmq" and not mmq_allowed(device, options, base):
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
