"""kernels/norm.hip run on the CPU (simt_emu.h) against numpy_ref.RMS_NORM / RMS_NORM_MUL: rows held in
registers (up to NORM_NPT values a thread) and rows longer than that (read twice), the launcher's block
size (launch_rows.norm_block) and others. What only a GPU shows is tests/gpu/test_conformance.py's rows."""

import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from simt_kernels import build

from rocmforge.backends import numpy_ref as R
from rocmforge.backends.hip.launch_rows import NORM_NPT, norm_block

MAIN = r"""
#include <cstdio>
#include "norm_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[4];  // rows, n, block, mul (0: RMS_NORM; 1: RMS_NORM_MUL; 2: ... with w read before the wait)
    if (std::fread(d, 4, 4, f) != 4) return 2;
    const int rows = d[0], n = d[1];
    std::vector<float> a((size_t)rows * n), w(n), out(a.size(), std::numeric_limits<float>::quiet_NaN());
    if (!emu::read(f, a)) return 2;
    if (std::fread(w.data(), 4, n, f) != (size_t)n) return 2;
    std::fclose(f);
    emu::launch(rf_dim3{(unsigned)rows, 1, 1}, d[2], [&] {
        if (d[3])
            rms_norm_mul_f32_f32(a.data(), w.data(), out.data(), n, 1e-5f, d[3] == 2);
        else
            rms_norm_f32(a.data(), out.data(), n, 1e-5f);
    });
    for (float x : out) std::printf("%.9g\n", x);
}
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return build(tmp_path_factory.mktemp("norm_emu"), "norm.hip", MAIN, {"norm": {}})["norm"]


def test_npt_mirrors_the_kernel():
    from rocmforge.backends.hip.modules import KERNEL_DIR

    assert f"#define NORM_NPT {NORM_NPT}\n" in (KERNEL_DIR / "norm.hip").read_text()


def _run(exe, tmp_path, a: np.ndarray, w: np.ndarray, block: int, mul: int) -> np.ndarray:
    f = tmp_path / f"in{mul}.bin"
    rows, n = a.shape
    with open(f, "wb") as fh:
        np.array([rows, n, block, mul], np.int32).tofile(fh)
        a.tofile(fh)
        w.tofile(fh)
    return np.array(subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=True)
                    .stdout.split(), dtype=np.float32).reshape(rows, n)


@pytest.mark.parametrize("n, block", [
    (576, None), (896, None), (4096, None),  # the models' rows at the launcher's block: held
    (100, 32),                               # a short row: lanes past its end
    (4096, 256),                             # 16 values a thread: read twice
    (8200, None),                            # past NORM_NPT x 1024: read twice at the largest block
])
@pytest.mark.parametrize("mul", [0, 1, 2])  # RMS_NORM; RMS_NORM_MUL with w read after / before the wait
def test_rms_norm_is_numpys(exe, tmp_path, n, block, mul):
    block = block or norm_block(SimpleNamespace(warp=32), n)
    rng = np.random.default_rng(n + block)
    a = (rng.standard_normal((3, n)) * 3).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    got = _run(exe, tmp_path, a, w, block, mul)
    want = R.RMS_NORM_MUL(a, w, eps=1e-5) if mul else R.RMS_NORM(a, eps=1e-5)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    if mul == 2:  # the same arithmetic whenever w arrives
        np.testing.assert_array_equal(got, _run(exe, tmp_path, a, w, block, 1))
