"""Programmatic dependent launch (CUDA sm_90+, Ctx.pdl): quantize_x8 and mul_mat_vec_xr start while the
kernel before them still runs, so they must wait for it themselves. A captured device graph of steps that
each quantize a new x into one shared buffer and multiply it (quantize_x8 lets the mat-vec start at once;
the mat-vec asks for its weights before waiting) must give every step's own product; a mat-vec that read
x before waiting would read the previous step's x, and one that wrote y early would be overwritten."""

from __future__ import annotations

import numpy as np
import pytest

from rocmforge import quant
from rocmforge.backends.hip import HipBackend, gpu_available
from rocmforge.backends.hip import kernel_choice as C

ok, why = gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ok, reason=f"no GPU: {why}")]

Q = quant.QType
TOL = 1e-4  # one int8 level of x (as the conformance table's int8 mat-vecs)


@pytest.fixture(scope="module")
def hip():
    be = HipBackend(int8_activations=True)
    if be.pdl_unavailable:
        pytest.skip(f"no programmatic dependent launch: {be.pdl_unavailable}")
    be.ctx.pdl = True
    be.ctx.mat_mul = C.MatMulOptions(int8_activations=True, min_n={"mul_mat_vec_xr": 0})
    return be


def test_backend_refuses_programmatic_launch_it_cannot_do():
    be = HipBackend()
    if be.pdl_unavailable is None:
        pytest.skip("programmatic dependent launch works here")
    with pytest.raises(RuntimeError, match="programmatic_launch"):
        HipBackend(programmatic_launch=True)


# whole rows at the LLaMA-7B shapes and with a partial last row group (515 rows, Q = 2); row groups of 8 rows
# with x read in the loop (XPF 0; the launcher keeps XPF 1 for them, launched plainly) at LLaMA-7B's down
# projection and with K = 2304, both ending in a partial step; the next launch let go only after the wait
@pytest.mark.parametrize(
    "qt,N,K,tun",
    [
        (Q.Q4_0, 11008, 4096, {}),
        (Q.Q8_0, 11008, 4096, {}),
        (Q.Q4_0, 515, 2048, {}),
        (Q.Q4_0, 4096, 11008, {"RF_MMVR_XPF": 0}),
        (Q.Q8_0, 1001, 2304, {"RF_MMVR_XPF": 0, "RF_MMVR_WARPS": 1}),
        (Q.Q4_0, 300, 4096, {"RF_MMVR_PDLT": 0}),
    ],
)
def test_chain_in_device_graph(hip, qt, N, K, tun):
    from rocmforge.backends.hip.launch_mul_mat import MUL_MAT, mul_mat_choice
    from rocmforge.backends.hip.tensor import DevTensor

    cp, ctx = hip.cp, hip.ctx
    rng = np.random.default_rng()
    steps = 6
    raws = [quant.random_blocks(qt, (N, K), rng) for _ in range(steps)]
    ws = [DevTensor(cp.asarray(r.reshape(-1)), 0, (N, K), qt.name.lower()) for r in raws]
    xh = [rng.standard_normal(K).astype(np.float32) for _ in range(steps)]
    xs = [DevTensor(cp.asarray(x).view(np.uint8), 0, (1, K), "f32") for x in xh]
    ys = [DevTensor(cp.empty(4 * N, dtype=np.uint8), 0, (1, N), "f32") for _ in range(steps)]
    ctx.tunables = dict(tun)
    choice = mul_mat_choice(ctx, ws[0], 1)
    assert choice.kernel is C.MUL_MAT_VEC_XR and choice.launch.pdl and choice.quantize.pdl  # xr, early

    def run() -> None:
        for i in range(steps):
            ctx.begin_node("pdl chain")  # every step's x quantized into the same scratch buffer
            MUL_MAT(ctx, ys[i], ws[i], xs[i])
        ctx.begin_node(None)

    try:
        with hip.stream:
            run()  # eager: compiles, allocates the scratch
            hip.stream.begin_capture()
            run()
            graph = hip.stream.end_capture()
            for y in ys:
                y.buf.view(np.float32)[...] = np.nan  # unwritten rows show
            for _ in range(3):
                graph.launch(hip.stream)
            hip.stream.synchronize()
    finally:
        ctx.tunables = {}
    for i in range(steps):
        ref = quant.dequantize(raws[i], qt, (N, K)).astype(np.float64) @ xh[i].astype(np.float64)
        got = cp.asnumpy(ys[i].buf).view(np.float32).astype(np.float64)
        err = float(np.sum((got - ref) ** 2) / np.sum(ref**2))
        assert err <= TOL, f"step {i}: nmse {err:.2e} (NaN rows: {np.isnan(got).sum()})"
