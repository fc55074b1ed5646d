"""kernels/argmax.hip run on the CPU (simt_emu.h) against numpy's argmax: rows split over several blocks
whose picks the last block merges (ties to the first index, NaN above every number, all -inf rows), and the
tickets left zero so a second launch computes the same. What only a GPU shows is
tests/gpu/test_conformance.py's ARGMAX rows."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build

MAIN = r"""
#include <cstdio>
#include "argmax_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[3];  // rows, n, n_blocks
    if (std::fread(d, 4, 3, f) != 3) return 2;
    const int rows = d[0], n = d[1], nb = d[2];
    std::vector<float> a((size_t)rows * n), pv((size_t)rows * nb);
    std::vector<int> pi(pv.size()), tickets(rows, 0);
    if (!emu::read(f, a)) return 2;
    std::fclose(f);
    for (int run = 0; run < 2; ++run) {
        std::vector<int> out(rows, -1);
        emu::launch(rf_dim3{(unsigned)nb, (unsigned)rows, 1}, 64, [&] {
            argmax_f32(a.data(), out.data(), n, pv.data(), pi.data(), tickets.data());
        });
        int left = 0;
        for (int t : tickets) left += t != 0;
        std::printf("tickets %d\n", left);
        for (int x : out) std::printf("%d\n", x);
    }
}
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return build(tmp_path_factory.mktemp("argmax_emu"), "argmax.hip", MAIN, {"am": {}})["am"]


def _rows(rng):
    n = 5000
    a = rng.standard_normal((6, n)).astype(np.float32)
    a[1, [700, 4100]] = 9.0  # a tie across two blocks: the first index
    a[2, [3000, 200]] = np.nan  # NaN ranks above every number: the first NaN
    a[3] = -np.inf  # nothing above -inf: index 0
    a[4, 4999] = np.inf
    a[5, :] = 1.0  # all equal
    return a


@pytest.mark.parametrize("nb", [1, 3, 7, 64])
def test_argmax_over_blocks_is_numpys(exe, tmp_path, nb):
    a = _rows(np.random.default_rng(nb))
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        np.array([a.shape[0], a.shape[1], nb], np.int32).tofile(fh)
        a.tofile(fh)
    lines = subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=True,
                           timeout=120).stdout.split("\n")
    want = np.argmax(a, axis=-1).tolist()
    assert want[1:4] == [700, 200, 0]
    for run in range(2):
        block = lines[run * 7 : run * 7 + 7]
        assert block[0] == "tickets 0"
        assert [int(x) for x in block[1:]] == want
