"""mul_mat_q (prefill on int8 matrix instructions, kernels/mul_mat_q.hip) in the kernel table: when it is
chosen (prefill "mmq"; "auto" where the family's defaults say so), what it launches (quantize_x8 of the
prompt, then a grid of 64 x 64 tiles), and that a prefill graph gets the QUANTIZE_X8 node it reads. The
kernel's arithmetic: test_mul_mat_q_kernel_cpu.py; on a GPU: test_conformance.py's mmq rows."""

from __future__ import annotations

import math
import sys
import types

import matvec_launches as R
import pytest

from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip import launch_geometry as G
from rocmforge.backends.hip.context import Ctx
from rocmforge.backends.hip.launch_mul_mat import prepare_mul_mat, reads_int8_x
from rocmforge.backends.hip.tensor import BLOCK
from rocmforge.ir import passes
from rocmforge.ir.graph import Graph

H100 = G.Device(32, 132, 227 * 1024, 228 * 1024, "sm_90", blas="cublas", mma=True)
RX7900 = G.Device(32, 84, 64 * 1024, 64 * 1024, "gfx1100", blas="hipblas", mma=True)
MMQ = C.MatMulOptions(prefill="mmq")
QUANTIZED = ("q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")


def _choose(wt: str, M: int, dev: G.Device = H100, opts: C.MatMulOptions = MMQ, N: int = 4096,
            K: int = 4096) -> C.MulMatChoice:
    bs, ts = BLOCK[wt.removesuffix("_s")]
    return C.choose_mul_mat(dev, opts, {}, G.Weight(wt, N, K, K // bs * ts, 1 << 20), M)


@pytest.mark.parametrize("wt", QUANTIZED)
def test_mmq_serves_every_quantized_type_from_five_tokens(wt):
    K = 1024 if wt in ("q4_k", "q6_k") else 896
    for M in (5, 64, 513):
        c = _choose(wt, M, N=4864, K=K)
        assert c.kernel is C.MUL_MAT_Q and c.blas is None, (wt, M)
        assert c.launch.file == "mul_mat_q.hip" and c.launch.entry == f"mul_mat_q_{wt}"
        assert c.launch.grid == (4864 // 64, math.ceil(M / 64)) and c.launch.block == (128,)
        # the prompt quantized first, its rows as the int8 mat-vecs read them
        assert c.quantize is not None and c.quantize.entry == "quantize_x8"
        assert c.quantize.grid == (1, M) and c.x_stride == G.x8_row_bytes(K) == K + K // 4
    for M in (1, 4):  # decode stays on the mat-vecs
        assert _choose(wt, M).kernel.args == "mat_vec"


def test_float_weights_and_devices_without_int8_mma_keep_the_other_paths():
    assert _choose("f16", 64).kernel is C.MUL_MAT_BLAS  # mmq is for quantized weights; the rest as "auto"
    assert _choose("f32_s", 64, K=13).kernel is C.MUL_MAT_BLAS
    no_mma = G.Device(32, 132, family="sm_90", blas="cublas")
    assert _choose("q4_0", 64, no_mma).kernel is C.MUL_MAT_BLAS
    wave64 = G.Device(64, 104, family="other", mma=True)
    assert _choose("q4_0", 64, wave64).kernel is C.MUL_MAT


def test_the_tiling_is_a_tunable():
    c = C.choose_mul_mat(H100, MMQ, {"RF_MMQ_WM": 4, "RF_MMQ_WN": 1},
                         G.Weight("q8_0", 4864, 896, 896 // 32 * 34, 1 << 20), 300)
    assert c.launch.defines == {"RF_MMQ_WM": 4, "RF_MMQ_WN": 1}
    assert c.launch.grid == (4864 // 32, math.ceil(300 / 128))
    assert _choose("q8_0", 64).launch.defines == {"RF_MMQ_WM": 2, "RF_MMQ_WN": 2}


def test_the_defaults_per_family():
    auto = C.MatMulOptions()
    assert _choose("q4_0", 64, H100, auto).kernel is C.MUL_MAT_BLAS  # sm_90: cuBLAS on f16 tiles
    assert _choose("q4_0", 64, RX7900, auto).kernel is C.MUL_MAT_Q  # gfx1100: the WMMA kernel
    for opts in (C.MatMulOptions(prefill="tiled"), C.MatMulOptions(prefill="blas")):
        assert _choose("q4_0", 64, RX7900, opts).kernel is not C.MUL_MAT_Q
    # int8_activations is the decode mat-vecs' switch, not this one
    assert _choose("q4_0", 64, H100, C.MatMulOptions(int8_activations=True)).kernel is C.MUL_MAT_BLAS
    both = C.MatMulOptions(int8_activations=True, prefill="mmq")
    assert _choose("q4_0", 64, H100, both).kernel is C.MUL_MAT_Q


def test_a_prefill_graph_gets_the_quantize_node_and_the_launch_reads_it():
    rec = R.Recorder(32)
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = types.SimpleNamespace(empty=rec.empty)  # type: ignore[assignment]
    try:
        case = {"wt": "q4_k", "N": 130, "K": 512, "M": 70}
        ctx = Ctx(rec, H100, {}, MMQ)
        out, w, x = R.tensors(case)
        b = R.addend(case, "residual")
        g = Graph()
        wt, xt, bt = g.weight("w", w.shape, w.dtype), g.input("x", x.shape), g.input("b", b.shape)
        g.output(g.mul_mat_add(wt, xt, bt, "y"))
        insert = ("insert_quantize_x8", lambda g: passes.insert_quantize_x8(g, reads_int8_x(ctx, {"w": w})))
        g = passes.optimize(g, (insert,))[0]
        assert [t.op.name for t in g.nodes].count("QUANTIZE_X8") == 1
        xq = R.tensors({**case, "wt": "f32", "K": G.x8_words(512)})[2]
        prepare_mul_mat(ctx, out, w, x, xq, b)(ctx, out, w, x, b, xq)
    finally:
        sys.modules["cupy"] = saved  # type: ignore[assignment]
    (launch,) = [r for r in rec.launches if r["entry"] == "mul_mat_q_q4_k"]
    assert launch["grid"] == [3, 2] and launch["block"] == [128]
    # (w, row bytes, xq, y, M, N, K, b, b stride): the residual's stride is N
    assert launch["args"][1] == ["int64", 2 * 144] and launch["args"][4:7] == [["int32", 70], ["int32", 130],
                                                                                 ["int32", 512]]
    assert launch["args"][-1] == ["int64", 130]
