"""Without a GPU: the conformance table's MUL_MAT and MUL_MAT_ADD cases for one mat-vec kernel (labels int8,
staged, x8, xq, xb, xr, xr-trace, f32x; tests/gpu/test_conformance.py) reach that kernel on an H100-shaped
device, except where the case is meant to fall back (K = 576 rows: mul_mat_vec_xq; more than 4 tokens:
mul_mat); MUL_MAT with its QUANTIZE_X8 source given reaches mul_mat_vec_xr with int8 activations, the f32
mat-vec without. A case on int8 x has x's QUANTIZE_X8 among its sources (MUL_MAT_ADD's are given by the
case)."""

from __future__ import annotations

import numpy as np

from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip.launch_mul_mat import MUL_MAT_OPS, kernel_type, xq_source
from rocmforge.backends.hip.tensor import BLOCK
from tests.gpu import test_conformance as T

H100 = C.Device(32, 132, 227 * 1024, 228 * 1024, "sm_90")
LABELS = {
    "int8": "mul_mat_vec_q",
    "staged": "mul_mat_vec_s",
    "x8": "mul_mat_vec_x",
    "xq": "mul_mat_vec_xq",
    "xb": "mul_mat_vec_xb",
    "xr": "mul_mat_vec_xr",
    "f32x": "mul_mat_vec",
}


def test_kernel_cases_reach_their_kernel():
    rng = np.random.default_rng(0)
    seen = set()
    for case in T.CASES:
        op, label = case.id.split("-")[:2]
        if op not in ("MUL_MAT", "MUL_MAT_ADD") or label not in LABELS:
            continue
        built = case.make(rng)
        node = next(n for n in built.graph.nodes if n.op in MUL_MAT_OPS)
        w, x = node.src[:2]
        (N, K), M = w.shape, x.n_elements // w.shape[1]
        bs, ts = BLOCK[w.dtype]
        weight = C.Weight(kernel_type(w.dtype, K, 1 << 20), N, K, K // bs * ts, 1 << 20)
        opts = built.ctx.get("mat_mul", C.MatMulOptions())
        choice = C.choose_mul_mat(H100, opts, built.ctx.get("tunables", {}), weight, M)
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
