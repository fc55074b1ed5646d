"""kernels/mul_mat_vec.hip (the decode mat-vec on f32 x, every block type) run on the CPU (simt_emu.h) against
numpy_ref's MUL_MAT on the dequantized weight: rows split over blocks, units over threads, the warp and
block reductions, the tail, a residual addend and the GLU epilogue. What only a GPU shows is
tests/gpu/test_conformance.py's MUL_MAT rows."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build, mat_vec_reference

from rocmforge import quant
from rocmforge.backends import numpy_ref as R

TYPES = ["q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k", "f16"]

MAIN = r"""
#include <cstdio>
#include <vector>
#include "mul_mat_vec_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[6];  // type (index into TYPES), N, K, M, row bytes, with a residual
    if (std::fread(d, 4, 6, f) != 6) return 2;
    const int N = d[1], K = d[2], M = d[3], rb = d[4];
    std::vector<rf_u8> w((size_t)N * rb);
    std::vector<float> x((size_t)M * K), b((size_t)M * N);
    if (!emu::read(f, w)) return 2;
    if (!emu::read(f, x)) return 2;
    if (!emu::read(f, b)) return 2;
    std::vector<float> wn(K);  // RF_MMV_NORM: the folded norm's weight
    if (!emu::read(f, wn)) return 2;
    std::fclose(f);
#if RF_MMV_NORM
#define ARGS w.data(), rb, x.data(), K, y.data(), n_out, N, K, bp, bs, wn.data(), 1e-5f
#else
#define ARGS w.data(), rb, x.data(), K, y.data(), n_out, N, K, bp, bs
#endif
    const int n_out = RF_MMV_GLU ? N / 2 : N;
    std::vector<float> y((size_t)M * n_out, -7.0f);  // poisoned
    const float* bp = d[5] ? b.data() : nullptr;
    const rf_i64 bs = d[5] ? N : 0;
    const rf_dim3 grid{(unsigned)((N + RF_MMV_ROWS - 1) / RF_MMV_ROWS), (unsigned)M, 1};
    emu::launch(grid, MMV_THREADS, [&] {
        switch (d[0]) {
            case 0: mul_mat_vec_q4_0(ARGS); break;
            case 1: mul_mat_vec_q4_1(ARGS); break;
            case 2: mul_mat_vec_q5_0(ARGS); break;
            case 3: mul_mat_vec_q8_0(ARGS); break;
            case 4: mul_mat_vec_q4_k(ARGS); break;
            case 5: mul_mat_vec_q6_k(ARGS); break;
            default: mul_mat_vec_f16(ARGS);
        }
    });
    for (float v : y) std::printf("%.9g\n", v);
}
"""


@pytest.fixture(scope="module")
def exes(tmp_path_factory):
    return build(tmp_path_factory.mktemp("mmv_emu"), "mul_mat_vec.hip", MAIN,
                 {"plain": {}, "glu": {"RF_MMV_GLU": 1}, "bconst": {"RF_MMV_BCONST": 1},
                  "norm": {"RF_MMV_NORM": 1}, "normglu": {"RF_MMV_NORM": 1, "RF_MMV_GLU": 1},
                  "normbconst": {"RF_MMV_NORM": 1, "RF_MMV_BCONST": 1}})


@pytest.mark.parametrize("wtype", TYPES)
@pytest.mark.parametrize("N, K, M, residual, glu", [
    (5, 512, 1, False, False),    # N odd: the last block's second row is past the end
    (8, 768, 3, True, False),     # three tokens (grid y), a residual addend
    (12, 1280, 2, False, True),   # MUL_MAT_SWIGLU's epilogue: rows 2i, 2i+1 are gate_i, up_i
])
def test_the_decode_mat_vec_matches_the_dequantized_product(exes, tmp_path, wtype, N, K, M, residual, glu):
    qt = quant.QType[wtype.upper()]
    rng = np.random.default_rng(N * K + M + TYPES.index(wtype))
    raw = quant.random_blocks(qt, (N, K), rng)
    w = quant.dequantize(raw, qt, (N, K))
    x = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((M, N)).astype(np.float32)
    wn = (1 + 0.5 * rng.standard_normal(K)).astype(np.float32)
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        np.array([TYPES.index(wtype), N, K, M, raw.size // N, int(residual)], np.int32).tofile(fh)
        for a in (raw, x, b, wn):
            np.ascontiguousarray(a).tofile(fh)
    out = subprocess.run([str(exes["glu" if glu else "plain"]), str(f)], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    got = np.array(out, np.float32).reshape(M, N // 2 if glu else N)
    want = mat_vec_reference(w, x, b, residual, glu)
    err = float(np.sum((got - want) ** 2) / np.sum(want ** 2))
    assert err < 1e-8, err  # f32 sums in another order (the GLU: silu of them)
    if not glu:  # b read before the wait (RF_MMV_BCONST, b a weight): the same result, bit for bit
        early = subprocess.run([str(exes["bconst"]), str(f)], capture_output=True, text=True, check=True,
                               timeout=300).stdout.split()
        np.testing.assert_array_equal(np.array(early, np.float32).reshape(got.shape), got)
    # the RMS norm of x and its weight folded in (RF_MMV_NORM): MUL_MAT* of RMS_NORM_MUL(x, wn)
    for variant in (["normglu"] if glu else ["norm", "normbconst"]):
        out = subprocess.run([str(exes[variant]), str(f)], capture_output=True, text=True, check=True,
                             timeout=300).stdout.split()
        normed = np.array(out, np.float32).reshape(got.shape)
        want = mat_vec_reference(w, R.RMS_NORM_MUL(x, wn, eps=1e-5), b, residual, glu)
        err = float(np.sum((normed - want) ** 2) / np.sum(want ** 2))
        assert err < 1e-8, (variant, err)
