"""kernels/attention_mma.hip run on the CPU (simt_emu.h, whose rf_mma_* compute each lane's accumulator
elements of the NVIDIA m16n8k16 layout straight from shared memory) against numpy_ref.FLASH_ATTN_EXT: prompts
of 1 to 70 tokens over f16 caches, groups of 1, 3 and 7 query heads, positions shuffled and starting past
0, q ROPE'd or not, cache rows read 16 bytes at a time or (a padded row) one half at a time, and the cache
rows past the largest position NaN (never read). Tolerance: q and P are rounded to f16 for the products
(f32 sums), as on the GPU. What only a GPU shows (the real fragment layouts, speed) is
tests/gpu/test_conformance.py's FLASH_ATTN_EXT rows with f16 caches."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build

from rocmforge.backends import numpy_ref as R

MAIN = r"""
#include <cstdio>
#include "attention_mma_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[7];  // T, H, Hkv, C, W (a cache row: Hkv * D + pad halves), rope_dims, rope_neox
    float scale;
    if (std::fread(d, 4, 7, f) != 7 || std::fread(&scale, 4, 1, f) != 1) return 2;
    const int T = d[0], H = d[1], Hkv = d[2], C = d[3], W = d[4];
    std::vector<float> q((size_t)T * H * RF_HEAD_DIM);
    std::vector<rf_u16> k((size_t)C * W), v(k.size());
    std::vector<int> pos(T);
    if (!emu::read(f, q)) return 2;
    for (auto* a : {&k, &v})
        if (!emu::read(f, *a)) return 2;
    if (std::fread(pos.data(), 4, T, f) != (size_t)T) return 2;
    std::fclose(f);
    std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
    const unsigned bx = (T * (H / Hkv) + MA_BQ - 1) / MA_BQ;
    emu::launch(rf_dim3{bx, (unsigned)Hkv, 1}, MA_THREADS, [&] {
        flash_attn_mma_f16(q.data(), k.data(), v.data(), pos.data(), out.data(), T, H, Hkv, W, RF_HEAD_DIM, C,
                           scale, d[5], d[6], 10000.0f, 1.0f);
    });
    for (float x : out) std::printf("%.9g\n", x);
}
"""


@pytest.fixture(scope="module")
def exes(tmp_path_factory):
    d = tmp_path_factory.mktemp("attention_mma_emu")
    builds = build(d, "attention_mma.hip", MAIN, {f"fa{n}": {"RF_HEAD_DIM": n} for n in (64, 128)})
    return {n: builds[f"fa{n}"] for n in (64, 128)}


def run_case(exe, tmp_path, T, H, Hkv, D, C, pos, rope=None, pad=0, seed=0):
    """(kernel output, numpy_ref's) for q [T, H, D] at positions pos over f16 caches [C, Hkv * D + pad]."""
    rng = np.random.default_rng(seed)
    W = Hkv * D + pad
    q = (rng.standard_normal((T, H, D)) * 2.0).astype(np.float32)
    kc = rng.standard_normal((C, W)).astype(np.float16)
    vc = rng.standard_normal((C, W)).astype(np.float16)
    kc[pos.max() + 1:] = np.nan  # rows no query sees (unwritten): never read, so no NaN reaches the output
    vc[pos.max() + 1:] = np.nan
    scale = D**-0.5
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        np.array([T, H, Hkv, C, W, *(rope or (0, 0))], np.int32).tofile(fh)
        np.array([scale], np.float32).tofile(fh)
        for a in (q, kc, vc, pos.astype(np.int32)):
            a.tofile(fh)
    lines = subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=True,
                           timeout=600).stdout.split()
    got = np.array(lines, np.float32).reshape(T, H, D)
    k = kc[:, : Hkv * D].reshape(C, Hkv, D)
    v = vc[:, : Hkv * D].reshape(C, Hkv, D)
    rope_q = None if rope is None else (rope[0], bool(rope[1]), 10000.0, 1.0)
    return got, R.FLASH_ATTN_EXT(q, k, v, pos.astype(np.int32), scale=scale, rope_q=rope_q)


def assert_close(got, want):
    # q and P rounded to f16 (relative 2^-11 each): errors ~1e-3 of the outputs' scale; NaN fails (poisoned)
    assert not np.isnan(got).any(), f"{np.isnan(got).sum()} outputs not written (or NaN)"
    nmse = float(np.sum((got - want) ** 2) / np.sum(want**2))
    assert nmse < 1e-6, nmse
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3)


# (T, H, Hkv, D, C, first position, shuffled, rope (n_dims, neox), row pad)
CASES = [
    (1, 4, 4, 64, 40, 0, False, None, 0),          # one token at position 0: one visible row; 4 KV heads
    (5, 6, 2, 64, 100, 61, True, (64, 1), 0),       # G = 3, 15 rows of a 64-row tile, NEOX over all of D
    (37, 2, 2, 128, 80, 0, True, None, 0),          # G = 1, shuffled from 0: a row sees only cache row 0
    (23, 7, 1, 64, 300, 150, True, (32, 0), 0),     # G = 7, 161 rows: 3 tiles, the last partial; 5 KV tiles
    (9, 14, 2, 128, 50, 3, True, (128, 1), 4),      # G = 7, padded rows (one half at a time), 2 KV heads
    (70, 3, 1, 64, 90, 10, True, None, 8),          # G = 3, 210 rows, padded rows still 16-byte aligned
    (70, 1, 1, 128, 70, 0, False, (64, 1), 0),      # G = 1, causal in order: the 64-row tile and 6 rows
    (64, 7, 1, 128, 200, 100, True, (128, 0), 0),  # G = 7, 448 rows: 7 full tiles, 7 KV tiles of 32
]


@pytest.mark.parametrize("T, H, Hkv, D, C, p0, shuffle, rope, pad", CASES)
def test_mma_attention_is_numpys(exes, tmp_path, T, H, Hkv, D, C, p0, shuffle, rope, pad):
    rng = np.random.default_rng(T * 100 + H)
    pos = np.arange(p0, p0 + T)
    if shuffle:
        pos = rng.permutation(pos)
    got, want = run_case(exes[D], tmp_path, T, H, Hkv, D, C, pos, rope, pad, seed=T + C)
    assert_close(got, want)


def test_positions_in_any_order_and_gaps(exes, tmp_path):
    # positions need not be consecutive: 17 tokens spread over 400 rows, in no order, one of them at 0
    rng = np.random.default_rng(7)
    pos = np.concatenate([[0], rng.choice(np.arange(1, 400), 16, replace=False)])
    rng.shuffle(pos)
    got, want = run_case(exes[64], tmp_path, 17, 3, 1, 64, 420, pos, (64, 0), seed=3)
    assert_close(got, want)
