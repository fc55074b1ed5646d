"""The MUL_MAT launcher: the kernel (kernel_choice's table) and its geometry are chosen once, when the graph
is prepared (`prepare_mul_mat`, which also compiles it); the prepared launch only enqueues. quantize_x8
precedes the kernels on int8 x (the quantized x shared by the nodes that read one value: Ctx.quantized_x)."""

from __future__ import annotations

from collections.abc import Callable

from .context import Ctx, quantize_x8_args
from .kernel_choice import MulMatChoice, Weight, choose_mul_mat, quantize_x8_launch
from .launch_elementwise import contiguous
from .tensor import BLOCK, NATIVE_WEIGHTS, DevTensor, i32, i64

MulMatLaunch = Callable[[Ctx, DevTensor, DevTensor, DevTensor], None]


def _kernel_type(dtype: str, K: int, ptr: int) -> str:
    if dtype not in NATIVE_WEIGHTS:
        raise NotImplementedError(f"no kernel reads weight type {dtype}")
    if dtype in ("f32", "f16", "bf16") and (K % 8 or ptr % 16):
        return dtype + "_s"
    return dtype


def weight_kernel_type(w: DevTensor) -> str:
    """The kernel suffix for a weight (or float activation used as one): `_s` = element-wise float rows."""
    return _kernel_type(w.dtype, w.shape[-1], w.ptr)


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
    copied = _copied_as_weight(w)
    dtype = "f32" if w.dtype == "i32" else w.dtype
    ptr = 0 if copied else w.ptr
    kt = _kernel_type(dtype, K, ptr)
    row_bytes = K // BLOCK[dtype][0] * BLOCK[dtype][1]
    return choose_mul_mat(ctx.device, ctx.mat_mul, ctx.tunables, Weight(kt, N, K, row_bytes, ptr), M, ctx.pdl)


def prepare_mul_mat(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor) -> MulMatLaunch:
    """MUL_MAT for these tensors' shapes and types: chosen and compiled now; the returned launcher takes
    (ctx, out, w, x) as the other ops' launchers do."""
    K = w.shape[1]
    M = x.n_elements // K
    choice = mul_mat_choice(ctx, w, M)
    launch = choice.launch
    f = ctx.function(launch)
    quantize = (ctx.function(choice.quantize), choice.quantize) if choice.quantize else None
    mat_vec, N, x_stride = choice.kernel.args == "mat_vec", w.shape[0], choice.x_stride

    def MUL_MAT(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor) -> None:
        w = as_weight(ctx, w)
        x = contiguous(ctx, x, "f32", align=16)
        xp = ctx.quantized_x(x, K, M, quantize).ptr if quantize else x.ptr
        if mat_vec:
            args = (w.ptr, i64(w.row_bytes), xp, i64(x_stride), out.ptr, i64(N), i32(N), i32(K))
        else:
            args = (w.ptr, i64(w.row_bytes), xp, out.ptr, i32(M), i32(N), i32(K))
        ctx.launch(f, launch, args)

    return MUL_MAT


def MUL_MAT(ctx: Ctx, out: DevTensor, w: DevTensor, x: DevTensor) -> None:
    """MUL_MAT prepared and launched at once (scripts and tests; graphs prepare once, HipBackend._plan)."""
    prepare_mul_mat(ctx, out, w, x)(ctx, out, w, x)


def quantize_x8(ctx: Ctx, xq: DevTensor, x: DevTensor, K: int, M: int, pdl: bool = False) -> None:
    """x [M, K] f32 (contiguous) -> xq [M, x8_row_bytes(K)] bytes: the int8 activations of the x8 kernels.
    pdl: started while the kernel before it ends (Ctx.pdl), for a mat-vec that starts early too."""
    launch = quantize_x8_launch(K, M, pdl)
    ctx.launch(ctx.function(launch), launch, quantize_x8_args(xq, x, K))
