"""Without a GPU: the conformance table's MUL_MAT and MUL_MAT_ADD cases for one mat-vec kernel (labels int8,
staged, x8, xq, xb, xr, xr-trace, f32x; tests/gpu/test_conformance.py) reach that kernel on an H100-shaped
device with cuBLAS, except where the case is meant to fall back (K = 576 rows: mul_mat_vec_xq; more than 4
tokens: mul_mat); MUL_MAT with its QUANTIZE_X8 source given reaches mul_mat_vec_xr with int8 activations, the
f32 mat-vec without. A case on int8 x has x's QUANTIZE_X8 among its sources (MUL_MAT_ADD's are given by the
case). Every prefill case reaches the vendor-BLAS path where labelled blas (blas-tiles: over several tiles),
the tiled kernel otherwise, mul_mat_q where labelled mmq (its QUANTIZE_X8 inserted by the backend)."""

from __future__ import annotations

import math

import numpy as np

from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip import launch_geometry as G
from rocmforge.backends.hip.launch_mul_mat import kernel_type
from rocmforge.backends.hip.tensor import BLOCK
from rocmforge.ir.ops import MUL_MAT_OPS, Op, xq_source
from tests.gpu import test_conformance as T

H100 = G.Device(32, 132, 227 * 1024, 228 * 1024, "sm_90", blas="cublas", mma=True)
LABELS = {
    "int8": "mul_mat_vec_q",
    "staged": "mul_mat_vec_s",
    "x8": "mul_mat_vec_x",
    "xq": "mul_mat_vec_xq",
    "xb": "mul_mat_vec_xb",
    "xr": "mul_mat_vec_xr",
    "f32x": "mul_mat_vec",
}


def _choice(built: T.Built) -> tuple[C.MulMatChoice, int]:
    """The choice for a case's MUL_MAT (or MUL_MAT_ADD) node on the H100 with cuBLAS, and its tokens."""
    node = next(n for n in built.graph.nodes if n.op in MUL_MAT_OPS)
    w, x = node.src[:2]
    (N, K), M = w.shape, x.n_elements // w.shape[1]
    bs, ts = BLOCK[w.dtype]
    weight = G.Weight(kernel_type(w.dtype, K, 1 << 20), N, K, K // bs * ts, 1 << 20)
    opts = built.ctx.get("mat_mul", C.MatMulOptions())
    return C.choose_mul_mat(H100, opts, built.ctx.get("tunables", {}), weight, M), M


def test_prefill_cases_reach_the_tiled_kernel_or_the_blas_as_labelled():
    rng = np.random.default_rng(0)
    seen = set()
    for case in T.CASES:
        op, label = case.id.split("-")[:2]
        if op not in ("MUL_MAT", "MUL_MAT_ADD"):
            continue
        built = case.make(rng)
        choice, M = _choice(built)
        if M <= C.MMV_MAX_TOKENS:
            assert choice.kernel.args == "mat_vec", case.id
            continue
        want = {"blas": "mul_mat_blas", "mmq": "mul_mat_q"}.get(label, "mul_mat")
        assert choice.kernel.name == want, case.id
        if label == "mmq":
            # the QUANTIZE_X8 source: inserted by the backend's passes, not given by the case
            assert choice.quantize is not None and xq_source(node_of(built)) is None, case.id
            seen.add((op, "mmq", False))
            continue
        if label == "blas":
            b = choice.blas
            n = math.ceil(M / b.m_tile) * math.ceil(x_n(built) / b.n_tile)
            # a scratch of 16 rows (f32 weights need none), LLaMA-7B shapes in the default one, or x of a
            # long prompt over a long row (4095 x 4864 in f16: two chunks)
            tiles = "-tiles-" in case.id and "F32" not in case.id
            many = tiles or "11008" in case.id or "-T4095" in case.id
            assert (n > 1) == many, (case.id, b)
            seen.add((op, b.ab, n > 1))
    assert seen == {(op, ab, many) for op in ("MUL_MAT", "MUL_MAT_ADD") for ab in ("f16", "f32")
                    for many in (False, True)} - {("MUL_MAT", "f32", True), ("MUL_MAT_ADD", "f32", True)} | {
                        (op, "mmq", False) for op in ("MUL_MAT", "MUL_MAT_ADD")}


def node_of(built: T.Built):
    """A case's MUL_MAT (or MUL_MAT_ADD) node."""
    return next(n for n in built.graph.nodes if n.op in MUL_MAT_OPS)


def x_n(built: T.Built) -> int:
    """N of a case's MUL_MAT node."""
    return next(n for n in built.graph.nodes if n.op in MUL_MAT_OPS).src[0].shape[0]


def test_kernel_cases_reach_their_kernel():
    rng = np.random.default_rng(0)
    seen = set()
    for case in T.CASES:
        op, label = case.id.split("-")[:2]
        if op not in ("MUL_MAT", "MUL_MAT_ADD") or label not in LABELS:
            continue
        built = case.make(rng)
        node = next(n for n in built.graph.nodes if n.op in MUL_MAT_OPS)
        choice, M = _choice(built)
        K = node.src[0].shape[1]
        if "-given-" in case.id:  # QUANTIZE_X8 in the graph: read by the int8 default, ignored by the f32 one
            expect = "mul_mat_vec_xr" if case.id.endswith("-int8") else "mul_mat_vec"
        elif M > C.MMV_MAX_TOKENS:
            expect = "mul_mat"
        elif label in ("xb", "xr") and K % 256:
            expect = "mul_mat_vec_xq"
        else:
            expect = LABELS[label]
        assert choice.kernel.name == expect, case.id
        if op == "MUL_MAT_ADD" and choice.quantize is not None:  # no pass gives it one
            assert xq_source(node) is not None, case.id
        seen.add((op, label))
    assert seen >= {("MUL_MAT", label) for label in LABELS} | {("MUL_MAT_ADD", label) for label in LABELS}


def test_every_kernel_on_int8_x_names_the_option_that_lets_it_be_chosen():
    from dev import matvec_variants as V

    for k in (*C.MUL_MAT_KERNELS, *V.DEV_KERNELS):
        assert k.option in ("", "int8_activations", "mmq"), k.name
        assert (k.x == "x8") == bool(k.option), k.name
        assert (k.option == "mmq") == (k.x == "x8" and k.max_tokens is None), k.name
    w = G.Weight("q4_0", 8192, 4096, 4096 // 32 * 18, 0)
    pick = {(i8, p): C.choose_mul_mat(H100, C.MatMulOptions(i8, prefill=p), {}, w, m).kernel.name
            for i8 in (False, True) for p, m in (("auto", 1), ("mmq", 64))}
    assert pick == {(False, "auto"): "mul_mat_vec", (True, "auto"): "mul_mat_vec_xr",
                    (False, "mmq"): "mul_mat_q", (True, "mmq"): "mul_mat_q"}


def test_norm_folded_cases_fold_at_decode_and_not_at_prompts():
    """RMS_NORM_MUL_MAT* cases run mul_mat_vec with the norm folded in at up to 4 tokens (every weight type,
    the GLU epilogue included), the norm into scratch then the tiled kernel at 64; those labelled int8 (an
    RMS_NORM_MUL_QUANTIZE_X8 source given) an int8 mat-vec: xr where K is a multiple of 256, else xq."""
    from rocmforge.backends.hip.launch_mul_mat import _folds
    from rocmforge.ir.ops import NORM_MUL_MAT_OPS

    rng = np.random.default_rng(0)
    seen = set()
    for case in T.CASES:
        if not case.id.startswith("RMS_NORM_MUL_MAT"):
            continue
        built = case.make(rng)
        node = next(n for n in built.graph.nodes if n.op in NORM_MUL_MAT_OPS)
        w, x = node.src[:2]
        N, K = w.shape
        bs, ts = BLOCK[w.dtype]
        M = x.n_elements // K
        opts = built.ctx.get("mat_mul", C.MatMulOptions())
        weight = G.Weight(kernel_type(w.dtype, K, 1 << 20), N, K, K // bs * ts, 1 << 20)
        choice = C.choose_mul_mat(H100, opts, {}, weight, M)
        glu = node.op.value.endswith("SWIGLU")
        if case.id.split("-")[1] == "int8":
            assert xq_source(node).op is Op.RMS_NORM_MUL_QUANTIZE_X8, case.id
            assert choice.kernel.name == ("mul_mat_vec_xr" if K % 256 == 0 else "mul_mat_vec_xq"), case.id
            seen.add((node.op, "int8"))
            continue
        assert _folds(choice, glu) == (M <= C.MMV_MAX_TOKENS), case.id
        seen.add((node.op, M <= C.MMV_MAX_TOKENS))
    assert seen == {(op, f) for op in NORM_MUL_MAT_OPS for f in (False, True, "int8")}
