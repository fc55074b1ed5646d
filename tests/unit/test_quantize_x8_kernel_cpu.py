"""kernels/quantize_x8.hip run on the CPU (simt_emu.h): quantize_x8 against numpy_ref.QUANTIZE_X8 and
rms_norm_mul_quantize_x8 against numpy_ref.RMS_NORM_MUL_QUANTIZE_X8 (the norm, then the int8 copy): rows
held in registers at the launcher's block (launch_geometry.norm_quantize_x8_launch) and rows read twice
(a block too small to hold them), the norm's weight read before or after the wait, all-zero rows. What only
a GPU shows is tests/gpu/test_conformance.py's rows."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build

from rocmforge.backends import numpy_ref as R
from rocmforge.backends.hip.launch_geometry import (
    QX8_NPT,
    norm_quantize_x8_launch,
    quantize_x8_launch,
    x8_row_bytes,
)

MAIN = r"""
#include <cstdio>
#include <limits>
#include <vector>
#include "quantize_x8_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[5];  // M, K, block threads, kernel (0: quantize_x8; 1: rms_norm_mul_quantize_x8), w_early
    if (std::fread(d, 4, 5, f) != 5) return 2;
    const int M = d[0], K = d[1], xb = K + K / 4;
    std::vector<float> a((size_t)M * K), wn(K);
    if (!emu::read(f, a)) return 2;
    if (!emu::read(f, wn)) return 2;
    std::fclose(f);
    std::vector<rf_u8> xq((size_t)M * xb, 0xA5);  // poisoned
    if (d[3])
        emu::launch(rf_dim3{(unsigned)M, 1, 1}, (unsigned)d[2], [&] {
            rms_norm_mul_quantize_x8(a.data(), K, wn.data(), xq.data(), xb, K, 1e-5f, d[4]);
        });
    else
        emu::launch(rf_dim3{(unsigned)((K + 1023) / 1024), (unsigned)M, 1}, (unsigned)d[2], [&] {
            quantize_x8(a.data(), K, xq.data(), xb, K);
        });
    std::fwrite(xq.data(), 1, xq.size(), stdout);
}
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return build(tmp_path_factory.mktemp("x8_emu"), "quantize_x8.hip", MAIN, {"x8": {}})["x8"]


def test_npt_mirrors_the_kernel():
    from rocmforge.backends.hip.modules import KERNEL_DIR

    assert f"#define QX8_NPT {QX8_NPT}\n" in (KERNEL_DIR / "quantize_x8.hip").read_text()


def _run(exe, tmp_path, a: np.ndarray, wn: np.ndarray, block: int, kernel: int,
         w_early: int = 0) -> np.ndarray:
    M, K = a.shape
    f = tmp_path / f"in{kernel}{w_early}.bin"
    with open(f, "wb") as fh:
        np.array([M, K, block, kernel, w_early], np.int32).tofile(fh)
        a.tofile(fh)
        wn.tofile(fh)
    out = subprocess.run([str(exe), str(f)], capture_output=True, check=True).stdout
    assert len(out) == M * x8_row_bytes(K)
    return np.frombuffer(out, np.uint8).copy().view(np.int32).reshape(M, -1)


def _close(out: np.ndarray, ref: np.ndarray, K: int) -> None:
    """int8 values within one of the reference's (a rounding tie of a value the norm's f32 sum order moved)
    and 99.9% equal, scales to f32 precision, each block's sum that of its stored values."""
    o, r = out.view(np.uint8), ref.reshape(out.shape).view(np.uint8)
    q, q_ref = o[:, :K].view(np.int8).astype(np.int32), r[:, :K].view(np.int8).astype(np.int32)
    assert np.abs(q - q_ref).max() <= 1 and np.mean(q == q_ref) > 0.999
    ds, ds_ref = (a[:, K:].copy().view(np.float32).reshape(len(a), -1, 2) for a in (o, r))
    np.testing.assert_allclose(ds[..., 0], ds_ref[..., 0], rtol=2e-6, atol=0)
    s_got = q.reshape(len(q), -1, 32).sum(-1).astype(np.float32) * ds[..., 0]
    np.testing.assert_allclose(ds[..., 1], s_got, rtol=1e-5, atol=1e-6 * np.abs(ds_ref[..., 1]).max() + 1e-30)


def _inputs(M: int, K: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10.0, (M, 1))).astype(np.float32)
    a[0, :32] = 0.0  # an all-zero block: scale 0, values 0
    wn = (1 + 0.5 * rng.standard_normal(K)).astype(np.float32)
    return a, wn


@pytest.mark.parametrize("M, K", [(1, 64), (3, 576), (1, 4096), (2, 4160)])
def test_quantize_x8_is_numpys(exe, tmp_path, M, K):
    a, wn = _inputs(M, K, K)
    got = _run(exe, tmp_path, a, wn, quantize_x8_launch(K, M, False).block[0], 0)
    np.testing.assert_array_equal(got, R.QUANTIZE_X8(a))  # the same f32 arithmetic: bit for bit


@pytest.mark.parametrize("M, K, block", [
    (1, 896, None),   # Qwen's rows at the launcher's block: 64 threads, 3.5 float4s a thread
    (3, 576, None),   # SmolLM2's, three tokens
    (1, 4096, None),  # LLaMA-7B's: 256 threads, 4 float4s each
    (2, 8192, None),  # 512 threads
    (1, 4096, 64),    # a block too small to hold the row: read twice
    (2, 96, 32),      # fewer float4s than lanes: lanes past the end
])
@pytest.mark.parametrize("w_early", [0, 1])
def test_rms_norm_mul_quantize_x8_is_the_norm_then_the_int8_copy(exe, tmp_path, M, K, block, w_early):
    a, wn = _inputs(M, K, K + M)
    launch = norm_quantize_x8_launch(K, M, 32, False)
    assert launch.grid == (M,) and launch.block[0] % 32 == 0 and launch.block[0] <= 1024
    assert K // 4 <= QX8_NPT * launch.block[0] or launch.block[0] == 1024
    got = _run(exe, tmp_path, a, wn, block or launch.block[0], 1, w_early)
    _close(got, R.RMS_NORM_MUL_QUANTIZE_X8(a, wn, eps=1e-5), K)
    if w_early:  # the same arithmetic whenever wn arrives
        np.testing.assert_array_equal(got, _run(exe, tmp_path, a, wn, block or launch.block[0], 1, 0))


def test_a_zero_row_quantizes_to_zeros(exe, tmp_path):
    """RMS_NORM of zeros is zeros (s = 1 / sqrt(eps)): values and scales 0, no NaN."""
    a = np.zeros((1, 256), np.float32)
    got = _run(exe, tmp_path, a, np.ones(256, np.float32), 32, 1)
    assert not got.any()
