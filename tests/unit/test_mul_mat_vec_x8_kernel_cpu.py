"""kernels/mul_mat_vec_xr.hip and mul_mat_vec_xq.hip (the decode mat-vecs on int8 x) run on the CPU
(simt_emu.h) with the launch the table chooses (kernel_choice.choose_mul_mat on a small device), against
numpy_ref's MUL_MAT of the dequantized weight and the x that quantize_x8's rows hold: every place they
write y (whole rows, row groups over several warps, one warp a row group; a residual addend) and their
MUL_MAT_SWIGLU epilogue (rows 2i, 2i + 1 gate_i, up_i; y_stride N / 2). What only a GPU shows is
tests/gpu/test_conformance.py's int8 rows."""

import subprocess
from dataclasses import replace

import numpy as np
import pytest
from simt_kernels import build, mat_vec_reference

from rocmforge import quant
from rocmforge.backends import numpy_ref as R
from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip.launch_geometry import Device, Weight, x8_row_bytes

MAIN = r"""
#include <cstdio>
#include <vector>
#include "{stem}_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[8];  // N, K, M, row bytes, with a residual, grid x, block threads, GLU
    if (std::fread(d, 4, 8, f) != 8) return 2;
    const int N = d[0], K = d[1], M = d[2], rb = d[3], xb = K + K / 4;
    std::vector<rf_u8> w((size_t)N * rb), xq((size_t)M * xb);
    std::vector<float> b((size_t)M * N);
    if (!emu::read(f, w)) return 2;
    if (!emu::read(f, xq)) return 2;
    if (!emu::read(f, b)) return 2;
    std::fclose(f);
    const int n_out = d[7] ? N / 2 : N;
    std::vector<float> y((size_t)M * n_out, -7.0f);  // poisoned
    const float* bp = d[4] ? b.data() : nullptr;
    const rf_i64 bs = d[4] ? N : 0;
    emu::launch(rf_dim3{(unsigned)d[5], (unsigned)M, 1}, (unsigned)d[6], [&] {
        {entry}(w.data(), rb, xq.data(), xb, y.data(), n_out, N, K, bp, bs);
    });
    for (float v : y) std::printf("%.9g\n", v);
}
"""

DEVICE = Device(32, 2, smem_block=48 << 10, family="sm_90")  # 2 SMs: grids of a few blocks, rows dealt round


def _choice(kern: C.MatMulKernel, wtype: str, N: int, K: int, M: int) -> C.MulMatChoice:
    opts = C.MatMulOptions(int8_activations=True, kernels=(kern,), min_n={kern.name: 0})
    w = Weight(wtype, N, K, K // 32 * quant.type_size(quant.QType[wtype.upper()]), 0)
    return C.choose_mul_mat(DEVICE, opts, {}, w, M)


# (kernel, weight type, N, K, M, residual, glu): the geometry each picks is in the comment
CASES = [
    (C.MUL_MAT_VEC_XR, "q4_0", 40, 4096, 1, False, False),  # whole rows (Q 4): one warp, 2 rows a group
    (C.MUL_MAT_VEC_XR, "q8_0", 36, 4096, 2, True, False),   # ... two tokens, a residual
    (C.MUL_MAT_VEC_XR, "q4_0", 44, 4096, 1, False, True),   # ... the GLU epilogue (a pair a row group)
    (C.MUL_MAT_VEC_XR, "q8_0", 38, 2048, 2, False, True),   # whole rows (Q 2): 4 rows a group
    (C.MUL_MAT_VEC_XR, "q4_0", 42, 2304, 1, True, False),   # row groups of 8 over two warps
    (C.MUL_MAT_VEC_XR, "q8_0", 42, 2304, 2, False, True),   # ... the GLU epilogue (N % 8: a short group)
    (C.MUL_MAT_VEC_XR, "q4_0", 132, 512, 1, False, True),   # one warp a row group of 8
    (C.MUL_MAT_VEC_XQ, "q4_0", 26, 576, 2, True, False),    # 4 rows a warp
    (C.MUL_MAT_VEC_XQ, "q4_0", 26, 576, 1, False, True),    # ... the GLU epilogue
]


def _ids(c) -> str:
    k, t, N, K, M, res, glu = c
    return f"{k.name}-{t}-{N}x{K}-M{M}" + ("-residual" if res else "") + ("-glu" if glu else "")


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_the_int8_mat_vec_matches_the_product_of_what_it_reads(tmp_path, case):
    kern, wtype, N, K, M, residual, glu = case
    choice = _choice(kern, wtype, N, K, M)
    assert choice.kernel is kern and choice.launch is not None
    launch = choice.launch
    defines = dict(launch.defines)
    if glu:
        assert kern.glu is not None and kern.glu.applies(defines)
        defines[kern.glu.define] = 1
    defines.pop("RF_MMVR_PDL", None)  # (the emulator starts no kernel early)
    stem = kern.file.removesuffix(".hip")
    main = MAIN.replace("{stem}", stem).replace("{entry}", launch.entry)
    exe = build(tmp_path, kern.file, main, {"k": defines})["k"]

    qt = quant.QType[wtype.upper()]
    rng = np.random.default_rng(N * K + M + 7 * residual + 3 * glu)
    raw = quant.random_blocks(qt, (N, K), rng)
    w = quant.dequantize(raw, qt, (N, K))
    x = rng.standard_normal((M, K)).astype(np.float32)
    xq = R.QUANTIZE_X8(x)
    assert xq.shape[-1] * 4 == x8_row_bytes(K)
    b = rng.standard_normal((M, N)).astype(np.float32)
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        head = [N, K, M, raw.size // N, int(residual), launch.grid[0], launch.block[0], int(glu)]
        np.array(head, np.int32).tofile(fh)
        for a in (raw, xq, b):
            np.ascontiguousarray(a).tofile(fh)
    out = subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=True, timeout=300).stdout
    got = np.array(out.split(), np.float32).reshape(M, N // 2 if glu else N)
    xd = R.dequantize_x8(xq, K)  # the x the kernel reads
    want = mat_vec_reference(w, xd, b, residual, glu)
    assert np.isfinite(got).all() and not (got == -7.0).any()
    err = float(np.sum((got - want) ** 2) / np.sum(want ** 2))
    assert err < 1e-9, err  # int32 dots scaled in f32: sums in another order only


def test_the_epilogue_is_left_to_glu_pairs_where_a_lane_would_see_half_a_pair():
    # mul_mat_vec_xq with one row a warp (Q8_0's default) cannot pair rows in its epilogue
    choice = _choice(C.MUL_MAT_VEC_XQ, "q8_0", 26, 576, 1)
    assert choice.launch is not None and choice.launch.defines.get("RF_MMVX_ROWS", 2) == 1
    assert C.MUL_MAT_VEC_XQ.glu is not None and not C.MUL_MAT_VEC_XQ.glu.applies(choice.launch.defines)
    odd = replace(choice.launch, defines={**choice.launch.defines, "RF_MMVX_ROWS": 3})
    assert not C.MUL_MAT_VEC_XQ.glu.applies(odd.defines)
    assert C.MUL_MAT_VEC_XR.glu is not None and C.MUL_MAT_VEC_XR.glu.applies({})


@pytest.mark.parametrize("wtype, F, K, kernel, launches", [
    ("q4_0", 4096, 4096, "mul_mat_vec_xr_q4_0", 1),  # whole rows: the epilogue
    ("q8_0", 4096, 2304, "mul_mat_vec_xr_q8_0", 1),  # row groups of 8: the epilogue
    ("q4_0", 4096, 576, "mul_mat_vec_xq_q4_0", 1),   # 4 rows a warp: the epilogue
    ("q8_0", 4096, 576, "mul_mat_vec_xq_q8_0", 2),   # a row a warp: into scratch, then glu_pairs_f32
])
def test_mul_mat_swiglu_on_int8_x_is_one_launch_where_the_kernel_pairs_rows(monkeypatch, wtype, F, K, kernel,
                                                                            launches):
    import sys
    import types

    import matvec_launches as ML

    from rocmforge.backends.hip.context import Ctx
    from rocmforge.backends.hip.launch_mul_mat import prepare_mul_mat
    from rocmforge.backends.hip.tensor import DevTensor

    rec = ML.Recorder(32)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(empty=rec.empty))
    ctx = Ctx(rec, Device(32, 132, family="sm_90"), {}, C.MatMulOptions(int8_activations=True))
    out, w, x = ML.tensors({"wt": wtype, "N": 2 * F, "K": K, "M": 1})
    out = DevTensor(out.buf, 0, (1, F), "f32")
    xq = DevTensor(ML.FakeBuf(1 << 36, x8_row_bytes(K)), 0, (1, x8_row_bytes(K) // 4), "i32")
    prepare_mul_mat(ctx, out, w, x, xq, glu=True)(ctx, out, w, x, xq)
    assert [r["entry"] for r in rec.launches] == [kernel, "glu_pairs_f32"][:launches]
    mv = rec.launches[0]
    glu_define = {"xr": "RF_MMVR_GLU", "xq": "RF_MMVX_GLU"}[kernel.split("_")[3]]
    assert mv["defines"].get(glu_define, 0) == (launches == 1)
    y_stride = mv["args"][5]  # (w, row bytes, xq, xq stride, y, y stride, N, K, b, b stride)
    assert y_stride == ["int64", F if launches == 1 else 2 * F]
