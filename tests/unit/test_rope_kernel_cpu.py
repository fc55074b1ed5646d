"""kernels/rope.hip run on the CPU (simt_emu.h) against numpy_ref: SET_ROWS_ROPE writes K (ROPE'd) and V
rows of a strided source into one cache at the rows its positions name, and ROPE (the same rotation,
rf_rope.h) is unchanged. What only a GPU shows is tests/gpu/test_conformance.py's rows."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build

from rocmforge.backends import numpy_ref as R

MAIN = r"""
#include <cstdio>
#include "rope_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[9];  // T, W, src_stride, R, n_rot, D, n_dims, neox, f16 cache
    if (std::fread(d, 4, 9, f) != 9) return 2;
    const int T = d[0], W = d[1], ss = d[2], R = d[3], n_rot = d[4], D = d[5], nd = d[6], neox = d[7];
    std::vector<float> src((size_t)(T - 1) * ss + W), dst((size_t)R * W);
    std::vector<int> idx(T);
    if (!emu::read(f, src)) return 2;
    if (std::fread(idx.data(), 4, T, f) != (size_t)T) return 2;
    if (!emu::read(f, dst)) return 2;
    std::fclose(f);
    if (d[8]) {  // an f16 cache: the same values rounded, written as f16, printed back as f32
        std::vector<rf_u16> dh(dst.size());
        for (size_t i = 0; i < dst.size(); ++i) rf_io<rf_u16>::store(dh.data(), i, dst[i]);
        emu::launch(3, 64, [&] {
            set_rows_rope_f32_f16(src.data(), ss, idx.data(), dh.data(), W, T, W, n_rot, D, nd, neox, 5e5f,
                                  0.5f);
        });
        for (size_t i = 0; i < dst.size(); ++i) dst[i] = rf_io<rf_u16>::load(dh.data(), i);
    } else {
        emu::launch(3, 64, [&] {  // fewer threads than elements: the grid-stride loop
            set_rows_rope_f32_f32(src.data(), ss, idx.data(), dst.data(), W, T, W, n_rot, D, nd, neox, 5e5f,
                                  0.5f);
        });
    }
    for (float x : dst) std::printf("%.9g\n", x);
    // ROPE over the first n_rot columns of contiguous rows, as [T, n_rot / D, D] at positions idx
    std::vector<float> x((size_t)T * n_rot), out(x.size());
    for (int t = 0; t < T; ++t)
        for (int c = 0; c < n_rot; ++c) x[(size_t)t * n_rot + c] = src[(size_t)t * ss + c];
    emu::launch(2, 64, [&] {
        rope_f32(x.data(), idx.data(), out.data(), n_rot / D, D, (rf_i64)x.size(), nd, neox, 5e5f, 0.5f);
    });
    for (float y : out) std::printf("%.9g\n", y);
}
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return build(tmp_path_factory.mktemp("rope_emu"), "rope.hip", MAIN, {"rope": {}})["rope"]


@pytest.mark.parametrize("T, Hkv, D, n_dims, neox, stride, f16", [
    (1, 3, 64, 64, 0, 960, False),   # SmolLM2's K|V columns of one token's Q/K/V row
    (3, 2, 64, 64, 1, 1152, False),  # three tokens, NEOX pairs (Qwen), rows far apart
    (2, 1, 32, 16, 0, 64, False),    # part of each head rotated, the rest copied
    (1, 3, 64, 64, 0, 960, True),    # into an f16 cache (the GPU's default)
    (3, 2, 64, 64, 1, 1152, True),
])
def test_set_rows_rope_writes_k_roped_and_v_as_is(exe, tmp_path, T, Hkv, D, n_dims, neox, stride, f16):
    rng = np.random.default_rng(T + D + n_dims)
    W = 2 * Hkv * D
    n_rot, R_rows = Hkv * D, 40
    src = rng.standard_normal((T - 1) * stride + W).astype(np.float32)
    idx = rng.choice(R_rows, T, replace=False).astype(np.int32)  # the rows are the positions
    dst = rng.standard_normal((R_rows, W)).astype(np.float32)
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        np.array([T, W, stride, R_rows, n_rot, D, n_dims, neox, int(f16)], np.int32).tofile(fh)
        for a in (src, idx, dst):
            a.tofile(fh)
    got = np.array(subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=True,
                                  timeout=120).stdout.split(), np.float32)
    rows = np.lib.stride_tricks.as_strided(src, (T, W), (stride * 4, 4))
    kw = dict(n_dims=n_dims, neox=bool(neox), base=5e5, freq_scale=0.5)
    start = dst.astype(np.float16) if f16 else dst
    want = R.SET_ROWS_ROPE(start.copy(), rows, idx, n_rot=n_rot, head_dim=D, **kw)
    if f16:  # rounded to f16 once, from the same f32 value: the same bits
        np.testing.assert_array_equal(got[: dst.size].reshape(dst.shape), want.astype(np.float32))
    else:
        np.testing.assert_allclose(got[: dst.size].reshape(dst.shape), want, rtol=1e-6, atol=1e-7)
    untouched = np.setdiff1d(np.arange(R_rows), idx)
    assert np.array_equal(got[: dst.size].reshape(dst.shape)[untouched], start[untouched].astype(np.float32))
    rope = R.ROPE(rows[:, :n_rot].reshape(T, Hkv, D).copy(), idx, **kw).reshape(-1)
    np.testing.assert_allclose(got[dst.size:], rope, rtol=1e-6, atol=1e-7)
    cache = got[: dst.size].reshape(dst.shape)
    roped = got[dst.size:].reshape(T, n_rot)  # ROPE's, bit for bit (rounded to f16 in an f16 cache)
    np.testing.assert_array_equal(roped.astype(np.float16) if f16 else roped, cache[idx, :n_rot])
