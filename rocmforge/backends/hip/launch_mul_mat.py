"""The MUL_MAT, MUL_MAT_ADD, MUL_MAT_SWIGLU and QUANTIZE_X8 launchers. MUL_MAT's kernel (kernel_choice's
table) and its geometry are chosen once, when the graph is prepared (`prepare_mul_mat`, which also compiles
it); the prepared launch only enqueues. MUL_MAT_ADD is MUL_MAT with an addend b: the same kernels, which add
b[token * b_stride + row] where they write y (b null for MUL_MAT). A kernel on int8 x reads the node's
QUANTIZE_X8 source (MUL_MAT's third, MUL_MAT_ADD's fourth), the node that passes.insert_quantize_x8 gives it
where `reads_int8_x` says so (one node per value, shared by its readers). mul_mat_blas (prefill on the
vendor BLAS) runs blas.py's steps: b copied into y first, then per tile x to f16, the weight dequantized,
one GEMM."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from ...ir.graph import Graph, Tensor
from ...ir.ops import MUL_MAT_OPS, NORM_MUL_MAT_OPS, Op, x8_words, xq_source
from . import blas as blas_mod
from .context import Ctx
from .kernel_choice import MulMatChoice, choose_mul_mat
from .launch_elementwise import EW_BLOCK, contiguous, copy_strided, grid_1d
from .launch_geometry import (
    Weight,
    dequantize_grid,
    norm_quantize_x8_launch,
    quantize_x8_launch,
    x8_row_bytes,
)
from .tensor import BLOCK, NATIVE_WEIGHTS, DevTensor, f32, i32, i64

Launcher = Callable[..., None]


def kernel_type(dtype: str, K: int, ptr: int) -> str:
    """The kernel suffix for weights of `dtype` with rows of K at address ptr: `_s` = element-wise float
    rows (not 16-byte multiples or aligned)."""
    if dtype not in NATIVE_WEIGHTS:
        raise NotImplementedError(f"no kernel reads weight type {dtype}")
    if dtype in ("f32", "f16", "bf16") and (K % 8 or ptr % 16):
        return dtype + "_s"
    return dtype


def weight_kernel_type(w: DevTensor) -> str:
    """The kernel suffix for a weight (or float activation used as one): `_s` = element-wise float rows."""
    return kernel_type(w.dtype, w.shape[-1], w.ptr)


def _copied_as_weight(w: DevTensor) -> bool:
    return (w.dtype in ("f32", "f16") and not w.is_contiguous) or w.dtype == "i32"


def as_weight(ctx: Ctx, w: DevTensor) -> DevTensor:
    """w as the weight kernels read it: float activations contiguous, i32 as f32."""
    if w.dtype in ("f32", "f16") and not w.is_contiguous:
        return contiguous(ctx, w)
    if w.dtype == "i32":
        return contiguous(ctx, w, "f32")
    return w


def mul_mat_choice(ctx: Ctx, w: DevTensor, M: int) -> MulMatChoice:
    """What MUL_MAT launches for w [N, K] and M tokens on this context (a weight that as_weight copies is
    read from a fresh, aligned allocation)."""
    N, K = w.shape
    return shape_choice(ctx, w.dtype, N, K, M, 0 if _copied_as_weight(w) else w.ptr)


def shape_choice(ctx: Ctx, dtype: str, N: int, K: int, M: int, ptr: int = 0) -> MulMatChoice:
    """What MUL_MAT launches for a weight of dtype [N, K] at ptr (0: a fresh, aligned allocation) and M
    tokens on this context."""
    dtype = "f32" if dtype == "i32" else dtype
    kt = kernel_type(dtype, K, ptr)
    row_bytes = K // BLOCK[dtype][0] * BLOCK[dtype][1]
    return choose_mul_mat(ctx.device, ctx.mat_mul, ctx.tunables, Weight(kt, N, K, row_bytes, ptr), M, ctx.pdl)


def _bound_weight(t: Tensor, weights: Mapping[str, DevTensor]) -> DevTensor | None:
    """The bound weight of a MUL_MAT-family node, norm-folded or not (None: another op, or no weight)."""
    mat = t.op in MUL_MAT_OPS or t.op in NORM_MUL_MAT_OPS
    return weights.get(t.src[0].name) if mat and t.src[0].kind == "weight" else None


def _node_choice(ctx: Ctx, t: Tensor, weights: Mapping[str, DevTensor]) -> MulMatChoice | None:
    """The choice for a MUL_MAT-family node of a bound weight (None otherwise: the int8 kernels read
    weights)."""
    w = _bound_weight(t, weights)
    return None if w is None else mul_mat_choice(ctx, w, t.src[1].n_elements // w.shape[1])


def reads_int8_x(ctx: Ctx, weights: Mapping[str, DevTensor]) -> Callable[[Tensor], bool]:
    """passes.insert_quantize_x8's predicate: the MUL_MAT (and MUL_MAT_ADD) nodes whose kernel reads int8
    x."""

    def reads(t: Tensor) -> bool:
        choice = _node_choice(ctx, t, weights) if t.op in MUL_MAT_OPS else None
        return choice is not None and choice.quantize is not None

    return reads


def folds_norm(ctx: Ctx, weights: Mapping[str, DevTensor]) -> Callable[[Tensor], bool]:
    """passes.fold_norms' predicate: the MUL_MAT, MUL_MAT_ADD and MUL_MAT_SWIGLU nodes of a bound weight whose
    kernel computes an RMS norm of x itself (norm_folds), or reads int8 x (its QUANTIZE_X8 source given):
    rms_norm_mul_quantize_x8 makes that from the norm's input and weight. None with RF_FOLD_NORMS=0."""

    def folds(t: Tensor) -> bool:
        w = _bound_weight(t, weights) if t.op in MUL_MAT_OPS else None
        if w is None or ctx.tunables.get("RF_FOLD_NORMS", FOLD_NORMS_MIB) == 0:
            return False
        M = t.src[1].n_elements // w.shape[1]
        if xq_source(t) is not None:
            return mul_mat_choice(ctx, w, M).quantize is not None
        return norm_folds(ctx, w, M, t.op is Op.MUL_MAT_SWIGLU)

    return folds


def early_quantize_x8(ctx: Ctx, graph: Graph, weights: Mapping[str, DevTensor]) -> set[int]:
    """Ids of the QUANTIZE_X8 nodes that start while the kernel before them ends (programmatic launch):
    those whose first reader's mat-vec starts so (before a plainly launched one it would cost time)."""
    first: dict[int, Tensor] = {}
    for t in graph.nodes:
        xq = xq_source(t)
        if xq is not None:
            first.setdefault(xq.id, t)
    early = set()
    for qid, t in first.items():
        choice = _node_choice(ctx, t, weights)
        if choice is not None and choice.quantize is not None and choice.quantize.pdl:
            early.add(qid)
    return early


def prepare_mul_mat(
    ctx: Ctx,
    out: DevTensor,
    w: DevTensor,
    x: DevTensor,
    xq: DevTensor | None = None,
    b: DevTensor | None = None,
    glu: bool = False,
    b_weight: bool = False,
    norm: float | None = None,
) -> Launcher:
    """MUL_MAT for these tensors' shapes and types, or with b MUL_MAT_ADD (b f32 or f16: [N], a bias every
    token adds, or out's [..., N], a residual), or with glu MUL_MAT_SWIGLU (w's rows gate/up pairs, out
    [..., N / 2]): chosen and compiled now. The returned launcher takes the node's sources as the other ops'
    launchers do: (ctx, out, w, x[, xq]) for MUL_MAT and MUL_MAT_SWIGLU, (ctx, out, w, x, b[, xq]) for
    MUL_MAT_ADD. A kernel on int8 x needs xq (QUANTIZE_X8 of x). MUL_MAT_SWIGLU on a mat-vec with a GLU
    epilogue (the table's `glu`) is one launch; on any other kernel the product goes to scratch and
    glu_pairs_f32 follows. b_weight: b is a weight (no kernel writes it): mul_mat_vec reads an f32 one
    before waiting for the kernel before it (RF_MMV_BCONST). norm (eps): RMS_NORM_MUL_MAT* (norm_folds
    says where): mul_mat_vec computes the RMS norm of x times wn itself; the launcher then takes wn after x
    (ctx, out, w, x, wn[, b])."""
    K = w.shape[1]
    M = x.n_elements // K
    N = w.shape[0]
    choice = mul_mat_choice(ctx, w, M)
    int8 = choice.quantize is not None
    op = "MUL_MAT_SWIGLU" if glu else "MUL_MAT" if b is None else "MUL_MAT_ADD"
    if glu and (b is not None or N % 2):
        raise ValueError(f"MUL_MAT_SWIGLU: w {w.shape} must have gate/up row pairs and no addend")
    if int8 and xq is None:
        raise ValueError(f"{op} with {choice.kernel.name} reads int8 x: give it QUANTIZE_X8 of x")
    if b is not None and b.n_elements not in (N, M * N):
        raise ValueError(f"MUL_MAT_ADD: b {b.shape} is neither [{N}] nor the output's [{M}, {N}]")
    # elements between consecutive tokens' rows of b: 0 for a bias (or a single token's residual), N
    b_stride = 0 if b is None or b.n_elements == N else N
    if norm is not None and not _folds(choice, glu):
        raise ValueError(f"RMS_NORM_{op} on {choice.kernel.name}: only mul_mat_vec folds the norm")
    epi = choice.kernel.glu
    epilogue = glu and epi is not None and choice.launch is not None and epi.applies(choice.launch.defines)
    builds = {}  # the kernel's builds for this node: its GLU epilogue, b read early, the norm folded in
    if epilogue:
        assert epi is not None
        builds[epi.define] = 1
    if b_weight and b is not None and b.dtype == "f32" and b.is_contiguous \
            and choice.kernel.name == "mul_mat_vec":  # (an f16 b is converted by a kernel just before)
        builds["RF_MMV_BCONST"] = 1
    if norm is not None:
        builds["RF_MMV_NORM"] = 1
    if builds:
        assert choice.launch is not None
        choice = replace(choice, launch=replace(choice.launch, defines={**choice.launch.defines, **builds}))
    if choice.blas is not None:
        run = _prepare_blas(ctx, choice, M, N, K)
    else:
        run = _prepare_kernel(ctx, choice, M, N, K, b_stride, N // 2 if epilogue else N, norm)

    if glu and not epilogue:  # the product of gate/up pairs into scratch, then one element-wise kernel
        pairs = ctx.k("elementwise.hip", "glu_pairs_f32")
        n_out = M * (N // 2)

        def MUL_MAT_SWIGLU_2(
            ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, xq: DevTensor | None = None
        ) -> None:
            y = ctx.empty((M, N), "f32", transient=True)
            run(ctx, y, w, x, xq, None)
            pairs(grid_1d(ctx, n_out), (EW_BLOCK,), (y.ptr, out.ptr, i64(n_out)))

        return MUL_MAT_SWIGLU_2

    if norm is not None:  # (ctx, out, w, x, wn[, b]; eps)

        def RMS_NORM_MUL_MAT(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, wn: DevTensor,
                             b: DevTensor | None = None, *, eps: float) -> None:
            run(ctx, out, w, x, None, b, wn)

        RMS_NORM_MUL_MAT.__name__ = f"RMS_NORM_{op}"
        return RMS_NORM_MUL_MAT

    if b is None:

        def MUL_MAT(
            ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, xq: DevTensor | None = None
        ) -> None:
            run(ctx, out, w, x, xq, None)

        return MUL_MAT

    def MUL_MAT_ADD(
        ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, b: DevTensor, xq: DevTensor | None = None
    ) -> None:
        run(ctx, out, w, x, xq, b)

    return MUL_MAT_ADD


def _folds(choice: MulMatChoice, glu: bool) -> bool:
    """Whether this choice computes an RMS norm of x folded in (RF_MMV_NORM): mul_mat_vec, with its GLU
    epilogue for MUL_MAT_SWIGLU."""
    if choice.kernel.name != "mul_mat_vec" or choice.launch is None:
        return False
    epi = choice.kernel.glu
    return not glu or (epi is not None and epi.applies(choice.launch.defines))


# RMS norms fold into mat-vecs of weights up to this many MiB (the tunable RF_FOLD_NORMS; 0: none): there a
# mat-vec's time is its dependent latency, which the fold does not lengthen, and a norm launch (~2.8 us in a
# step, H100 trace of stop 29) goes. Larger ones are issue-bound (ncu, Q4_0 11008x4096: 68 instructions a
# unit and row), where the fold's ~18 more a unit may cost more than the launch; and the logits' 76k blocks
# would each reduce the norm again. Unmeasured: a first guess to sweep.
FOLD_NORMS_MIB = 8
FOLD_TUNABLES = ("RF_FOLD_NORMS",)


def norm_folds(ctx: Ctx, w: DevTensor, M: int, glu: bool) -> bool:
    """Whether MUL_MAT (MUL_MAT_SWIGLU with glu) of w at M tokens computes an RMS norm of x folded in
    (passes.fold_norms' predicate): mul_mat_vec, w at most RF_FOLD_NORMS MiB (FOLD_NORMS_MIB)."""
    mib = ctx.tunables.get("RF_FOLD_NORMS", FOLD_NORMS_MIB)
    return w.nbytes <= mib * (1 << 20) and _folds(mul_mat_choice(ctx, w, M), glu)


def _prepare_kernel(ctx: Ctx, choice: MulMatChoice, M: int, N: int, K: int, b_stride: int,
                    y_stride: int | None = None, norm: float | None = None) -> Callable:
    """The run of a MUL_MAT kernel of ours (mat-vec or tiled mat-mat), compiled now; y_stride: elements
    between tokens' rows of the output (N; N / 2 for the GLU epilogue); norm: the folded RMS norm's eps
    (its weight wn given to the run)."""
    y_stride = N if y_stride is None else y_stride
    launch = choice.launch
    assert launch is not None
    int8 = choice.quantize is not None
    f = ctx.function(launch)
    mat_vec, x_stride = choice.kernel.args == "mat_vec", choice.x_stride

    def run(
        ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, xq: DevTensor | None, b: DevTensor | None,
        wn: DevTensor | None = None,
    ) -> None:
        w = as_weight(ctx, w)
        xp = xq.ptr if int8 else contiguous(ctx, x, "f32", align=16).ptr
        bp = 0 if b is None else contiguous(ctx, b, "f32").ptr  # 0: a null b, y = the product alone
        if mat_vec:
            args = (w.ptr, i64(w.row_bytes), xp, i64(x_stride), out.ptr, i64(y_stride), i32(N), i32(K))
        else:
            args = (w.ptr, i64(w.row_bytes), xp, out.ptr, i32(M), i32(N), i32(K))
        extra = ()
        if norm is not None:
            assert wn is not None
            extra = (contiguous(ctx, wn, "f32", align=16).ptr, f32(norm))
        ctx.launch(f, launch, (*args, bp, i64(b_stride), *extra))

    return run


def _prepare_blas(ctx: Ctx, choice: MulMatChoice, M: int, N: int, K: int) -> Callable:
    """The run of mul_mat_blas: the shared scratch (and the BLAS's workspace) taken and dequantize.hip
    compiled now. A run copies b into y (a bias through a stride-0 view of its row; f16 converted) and
    keeps it with beta 1 (the same bytes as an ADD after the GEMM: one path for both addends), then runs
    blas_steps: x's chunks through the copy kernel (a strided x made contiguous first, as the tiled
    kernel's), weight tiles through dequantize.hip, GEMMs through ctx.blas, all on the current stream."""
    tiles = choice.blas
    assert tiles is not None
    if ctx.blas is None:
        raise RuntimeError("mul_mat_blas was chosen but the context has no vendor BLAS (Ctx.blas)")
    scratch = ctx.blas_scratch(tiles.scratch_bytes)
    dq = choice.launch
    f = ctx.function(dq) if dq is not None else None
    # dequantize.hip's launch per tile size: whole tiles, and the last one where N is not a multiple
    dq_rows = {}
    if dq is not None:
        last = N - (N - 1) // tiles.n_tile * tiles.n_tile
        dq_rows = {tiles.n_tile: dq, last: replace(dq, grid=dequantize_grid(last, K))}

    def run(
        ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, xq: DevTensor | None, b: DevTensor | None
    ) -> None:
        w = as_weight(ctx, w)
        # x as the GEMM reads it: dense, f16 read in place where the GEMM is on f16, else f32
        want = "f16" if tiles.ab == "f16" and x.dtype == "f16" else "f32"
        x = contiguous(ctx, x, want, align=16)
        beta = 0.0
        if b is not None:
            if b.n_elements == N:  # a bias: every token's row of out starts as b
                b = DevTensor(b.buf, b.offset, (M, N), b.dtype, (0, b.strides[-1]))
            if b.ptr != out.ptr or b.dtype != "f32" or not b.is_contiguous:
                copy_strided(ctx, out, b)
            beta = 1.0
        base = int(scratch.data.ptr)
        steps = blas_mod.blas_steps(tiles, M, N, K, w.ptr, w.row_bytes, x.ptr, x.dtype, out.ptr, base, beta)
        for st in steps:
            if isinstance(st, blas_mod.GemmCall):
                ctx.blas.gemm(st)
            elif isinstance(st, blas_mod.ToF16):
                src = DevTensor(x.buf, x.offset + st.m0 * K * x.itemsize, (st.rows, K), x.dtype)
                copy_strided(ctx, DevTensor(scratch, st.dst - base, (st.rows, K), "f16"), src)
            else:
                args = (st.src, i64(w.row_bytes), st.dst, i32(st.rows), i32(K))
                ctx.launch(f, dq_rows[st.rows], args)

    return run


def prepare_quantize_x8(ctx: Ctx, out: DevTensor, x: DevTensor, early: bool = False) -> Launcher:
    """QUANTIZE_X8 of x [M, K] into out [M, x8_words(K)] i32, compiled now; early: started while the kernel
    before it ends (programmatic launch, where Ctx.pdl)."""
    K = x.shape[-1]
    launch = quantize_x8_launch(K, x.n_elements // K, early)
    f = ctx.function(launch)

    def QUANTIZE_X8(ctx: Ctx, out: DevTensor, x: DevTensor) -> None:
        x = contiguous(ctx, x, "f32", align=16)
        ctx.launch(f, launch, (x.ptr, i64(K), out.ptr, i64(x8_row_bytes(K)), i32(K)))

    return QUANTIZE_X8


def prepare_norm_quantize_x8(ctx: Ctx, out: DevTensor, a: DevTensor, wn: DevTensor, early: bool = False,
                             w_early: bool = False) -> Launcher:
    """RMS_NORM_MUL_QUANTIZE_X8 of a [M, K] and the norm's weight wn [K] into out [M, x8_words(K)] i32,
    compiled now; early as prepare_quantize_x8's; w_early: wn is a weight (no kernel writes it), read before
    waiting for the kernel before where it is read in place (f32, contiguous, 16-byte aligned)."""
    K = a.shape[-1]
    w_early = w_early and wn.dtype == "f32" and wn.is_contiguous and wn.ptr % 16 == 0
    launch = norm_quantize_x8_launch(K, a.n_elements // K, ctx.device.warp, early)
    f = ctx.function(launch)

    def RMS_NORM_MUL_QUANTIZE_X8(ctx: Ctx, out: DevTensor, a: DevTensor, wn: DevTensor, *,
                                 eps: float) -> None:
        a = contiguous(ctx, a, "f32", align=16)
        wn = contiguous(ctx, wn, "f32", align=16)
        args = (a.ptr, i64(K), wn.ptr, out.ptr, i64(x8_row_bytes(K)), i32(K), f32(eps), i32(int(w_early)))
        ctx.launch(f, launch, args)

    return RMS_NORM_MUL_QUANTIZE_X8


def RMS_NORM_MUL_QUANTIZE_X8(ctx: Ctx, out: DevTensor, a: DevTensor, wn: DevTensor, *, eps: float,
                             early: bool = False) -> None:
    """RMS_NORM_MUL_QUANTIZE_X8 prepared and launched at once (scripts and tests)."""
    prepare_norm_quantize_x8(ctx, out, a, wn, early)(ctx, out, a, wn, eps=eps)


def QUANTIZE_X8(ctx: Ctx, out: DevTensor, x: DevTensor, *, early: bool = False) -> None:
    """QUANTIZE_X8 prepared and launched at once (scripts and tests)."""
    prepare_quantize_x8(ctx, out, x, early)(ctx, out, x)


def _now(
    ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, xq: DevTensor | None, b: DevTensor | None,
    glu: bool = False,
) -> None:
    """MUL_MAT (b None) or MUL_MAT_ADD prepared and launched at once; without xq, a kernel on int8 x gets x
    quantized into scratch first."""
    K = w.shape[1]
    M = x.n_elements // K
    choice = mul_mat_choice(ctx, w, M)
    if choice.quantize is not None and xq is None:
        xq = ctx.empty((*x.shape[:-1], x8_words(K)), "i32")
        QUANTIZE_X8(ctx, xq, x, early=choice.quantize.pdl)
    launch = prepare_mul_mat(ctx, out, w, x, xq, b, glu)
    if b is None:
        launch(ctx, out, w, x, xq)
    else:
        launch(ctx, out, w, x, b, xq)


def MUL_MAT(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, xq: DevTensor | None = None) -> None:
    """MUL_MAT prepared and launched at once (scripts and tests; graphs prepare once, HipBackend._plan).
    Without xq, a kernel on int8 x gets x quantized into scratch first."""
    _now(ctx, out, w, x, xq, None)


def MUL_MAT_ADD(
    ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, b: DevTensor, xq: DevTensor | None = None
) -> None:
    """MUL_MAT_ADD prepared and launched at once, as MUL_MAT."""
    _now(ctx, out, w, x, xq, b)


def MUL_MAT_SWIGLU(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor, xq: DevTensor | None = None) -> None:
    """MUL_MAT_SWIGLU prepared and launched at once, as MUL_MAT."""
    _now(ctx, out, w, x, xq, None, glu=True)
