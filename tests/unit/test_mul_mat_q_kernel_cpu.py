"""kernels/mul_mat_q.hip (prompts on int8 matrix instructions) run on the CPU (simt_emu.h, whose rf_mma_i8
computes each lane's int32 elements of the NVIDIA layout straight from shared memory) for every quantized
type: partial tiles of tokens and rows, a K that is not a multiple of the 128-element stage, bias and
residual addends. Two references: the product of the dequantized weight with x as quantize_x8 holds it
(numpy_ref.dequantize_x8; the kernel's arithmetic up to f32 rounding, so a weight granule unpacked wrong
fails by orders of magnitude), and the f32 product with x itself (the int8 bound of the conformance rows).
What only a GPU shows (the real fragment layouts, speed) is tests/gpu/test_conformance.py's mmq rows."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build

from rocmforge import quant
from rocmforge.backends import numpy_ref as R

TYPES = ["q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k"]

MAIN = r"""
#include <cstdio>
#include <vector>
#include "mul_mat_q_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[7];  // type (index into TYPES), N, K, M, row bytes, xq row bytes, b stride (-1: no b)
    if (std::fread(d, 4, 7, f) != 7) return 2;
    const int N = d[1], K = d[2], M = d[3], rb = d[4], xb = d[5];
    std::vector<rf_u8> w((size_t)N * rb), xq((size_t)M * xb);
    std::vector<float> b((size_t)M * N);
    if (!emu::read(f, w)) return 2;
    if (!emu::read(f, xq)) return 2;
    if (!emu::read(f, b)) return 2;
    std::fclose(f);
    std::vector<float> y((size_t)M * N, -7.0f);  // poisoned
    const float* bp = d[6] >= 0 ? b.data() : nullptr;
    const rf_i64 bs = d[6] >= 0 ? d[6] : 0;
    const rf_dim3 grid{(unsigned)((N + MQ_BN - 1) / MQ_BN), (unsigned)((M + MQ_BM - 1) / MQ_BM), 1};
    emu::launch(grid, MQ_THREADS, [&] {
        switch (d[0]) {
            case 0: mul_mat_q_q4_0(w.data(), rb, xq.data(), y.data(), M, N, K, bp, bs); break;
            case 1: mul_mat_q_q4_1(w.data(), rb, xq.data(), y.data(), M, N, K, bp, bs); break;
            case 2: mul_mat_q_q5_0(w.data(), rb, xq.data(), y.data(), M, N, K, bp, bs); break;
            case 3: mul_mat_q_q8_0(w.data(), rb, xq.data(), y.data(), M, N, K, bp, bs); break;
            case 4: mul_mat_q_q4_k(w.data(), rb, xq.data(), y.data(), M, N, K, bp, bs); break;
            default: mul_mat_q_q6_k(w.data(), rb, xq.data(), y.data(), M, N, K, bp, bs);
        }
    });
    for (float v : y) std::printf("%.9g\n", v);
}
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return build(tmp_path_factory.mktemp("mmq_emu"), "mul_mat_q.hip", MAIN,
                 {"mmq": {}, "wide": {"RF_MMQ_WM": 1, "RF_MMQ_WN": 4}})


def nmse(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.sum((got.astype(np.float64) - want) ** 2) / np.sum(want**2))


@pytest.mark.parametrize("wtype", TYPES)
@pytest.mark.parametrize("N, K, M, addend", [
    (67, 160, 5, None),          # K = 5 blocks (a stage and a quarter), partial row and token tiles
    (64, 512, 70, "residual"),   # two token tiles, the second of 6 tokens
    (130, 768, 9, "bias"),       # three row tiles
])
@pytest.mark.parametrize("build", ["mmq", "wide"])  # 2 x 2 tiles a warp (64 x 64 a block); 1 x 4 (32 x 128)
def test_the_int8_mat_mat_matches_the_product_of_what_it_reads(exe, tmp_path, wtype, N, K, M, addend, build):
    qt = quant.QType[wtype.upper()]
    if K % quant.block_size(qt):
        K = 256 * (K // 256 + 1)  # the K-quants' rows: whole super-blocks
    rng = np.random.default_rng(N * K + M + TYPES.index(wtype))
    raw = quant.random_blocks(qt, (N, K), rng)
    w = quant.dequantize(raw, qt, (N, K)).astype(np.float64)
    x = rng.standard_normal((M, K)).astype(np.float32)
    xq = R.QUANTIZE_X8(x)
    b = rng.standard_normal((M, N) if addend == "residual" else (N,)).astype(np.float32)
    stride = {"residual": N, "bias": 0, None: -1}[addend]
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        np.array([TYPES.index(wtype), N, K, M, raw.size // N, xq.shape[1] * 4, stride], np.int32).tofile(fh)
        for a in (raw, xq, np.resize(b, (M, N))):
            np.ascontiguousarray(a).tofile(fh)
    out = subprocess.run([str(exe[build]), str(f)], capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    got = np.array(out, np.float32).reshape(M, N)
    assert not np.any(got == -7.0), "outputs left unwritten"
    add = 0.0 if addend is None else b.astype(np.float64)
    exact = R.dequantize_x8(xq, K).astype(np.float64) @ w.T + add
    assert nmse(got, exact) < 1e-10  # f32 sums of int32 products and scales
    assert nmse(got, x.astype(np.float64) @ w.T + add) < 1e-4  # x in one int8 level (the conformance bound)
