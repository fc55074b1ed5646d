"""kernels/sample.hip run on the CPU (simt_emu.h: a std::thread per GPU thread, barriers for __syncthreads and
warp votes) against numpy_ref.SAMPLE, token for token: the kernel's selection, cuts, scan and draw, at the
default geometry and at a small one that cuts its buffer every tile, with 32- and 64-wide warps. What only
a GPU shows (its compilers, memory model, speed) is tests/gpu/test_conformance.py's SAMPLE rows."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build

from rocmforge.backends import numpy_ref as R
from rocmforge.backends import sampling as S

MAIN = r"""
#include <cstdio>
#include "sample_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int n = 0, V = 0, params[8];
    if (std::fread(&n, 4, 1, f) != 1 || std::fread(&V, 4, 1, f) != 1) return 2;
    if (std::fread(params, 4, 8, f) != 8) return 2;
    std::vector<float> x((size_t)n * V);
    if (!emu::read(f, x)) return 2;
    std::fclose(f);
    std::vector<int> out(n, -12345);
    emu::launch(n, RF_SAMPLE_BLOCK, [&] { sample_f32(x.data(), params, out.data(), V); });
    for (int v : out) std::printf("%d\n", v);
}
"""

BUILDS = {
    "default-w32": {"RF_WARP": 32},
    "small-w32": {"RF_WARP": 32, "RF_SAMPLE_BLOCK": 256, "RF_SAMPLE_UNROLL": 2, "RF_SAMPLE_CAP": 1024},
    "small-w64": {"RF_WARP": 64, "RF_SAMPLE_BLOCK": 256, "RF_SAMPLE_UNROLL": 2, "RF_SAMPLE_CAP": 1024},
}


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    return build(tmp_path_factory.mktemp("sample_emu"), "sample.hip", MAIN, BUILDS)


def _run(exe, x: np.ndarray, params: np.ndarray, tmp_path) -> np.ndarray:
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        np.array(x.shape, np.int32).tofile(fh)
        np.asarray(params, np.int32).tofile(fh)
        np.ascontiguousarray(x, np.float32).tofile(fh)
    out = subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=True, timeout=120).stdout
    return np.array(out.split(), np.int32)


def _cases():
    rng = np.random.default_rng(99)
    P = S.sample_params
    cases = []
    for V, (t, k, p) in [(7, (0.7, 40, 0.9)), (300, (1.5, 256, 1.0)), (300, (1.0, 0, 0.5)),
                         (3000, (0.0, 40, 1.0)), (5000, (0.7, 40, 0.9)), (5000, (30.0, 256, 1.0)),
                         (6001, (1.0, 1, 1.0)), (6001, (1.0, 300, 0.95))]:
        x = (rng.standard_normal((2, V)) * 3).astype(np.float32)
        seed, counter = int(rng.integers(0, 2**63)), int(rng.integers(0, 2**32))
        cases.append((f"V{V}-T{t}-k{k}-p{p}", x, P(seed, counter, t, k, p)))
    x = np.round(rng.standard_normal((2, 3000)) * 2).astype(np.float32)  # ties
    cases.append(("ties", x, P(5, 9, 1.0, 256, 1.0)))
    x = np.zeros((1, 3000), np.float32)
    x[0, ::2] = -0.0
    cases.append(("signed-zeros", x, P(5, 9, 1.0, 256, 0.9)))
    x = np.sort(rng.standard_normal((1, 9000)).astype(np.float32), 1)  # every element beats the bar
    cases.append(("ascending", x, P(5, 9, 2.0, 256, 1.0)))
    x = rng.standard_normal((3, 3000)).astype(np.float32)
    x[0, [2000, 100]] = np.nan
    x[1, [7, 5]] = np.inf
    x[2] = -np.inf
    cases.append(("non-finite", x, P(5, 9, 1.0, 40, 1.0)))
    x = (rng.standard_normal((2, 3000)) * 1e-3).astype(np.float32)
    x[1, ::5] = -np.inf
    cases.append(("flat-counter-wraps", x, P(5, 2**32 - 1, 1.0, 256, 0.99)))
    return cases


CASES = _cases()


@pytest.mark.parametrize("build", list(BUILDS))
def test_kernel_on_the_cpu_draws_the_references_tokens(binaries, build, tmp_path):
    bad = []
    for name, x, params in CASES:
        got, want = _run(binaries[build], x, params, tmp_path), R.SAMPLE(x, params)
        if not np.array_equal(got, want):
            bad.append(f"{name}: {got.tolist()} != {want.tolist()}")
    assert not bad, "\n".join(bad)
