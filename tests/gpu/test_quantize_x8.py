"""quantize_x8 (int8 activations for mul_mat_vec_xq) against a numpy reference, and the sharing of one
quantized activation by the mat-vecs that read it (Ctx.quantized_x) in eager runs and graph replays."""

from __future__ import annotations

import numpy as np
import pytest

from rocmforge import quant
from rocmforge.backends.hip import HipBackend, gpu_available
from rocmforge.backends.numpy_ref import NumpyBackend
from rocmforge.ir.graph import Graph

ok, why = gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ok, reason=f"no GPU: {why}")]

Q = quant.QType


def quantize_x8_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x f32 [M, K] -> (int8 values [M, K], scale [M, K / 32], block sum of x as quantized [M, K / 32]),
    q8_1 as llama.cpp's: scale amax / 127, values rint(x * 127 / amax)."""
    M, K = x.shape
    xb = x.reshape(M, K // 32, 32).astype(np.float32)
    amax = np.abs(xb).max(-1)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(xb * inv[..., None]).astype(np.int32)
    return q.reshape(M, K), d, q.sum(-1).astype(np.float32) * d


@pytest.fixture(scope="module")
def hip():
    return HipBackend()


@pytest.mark.parametrize("M,K", [(1, 64), (3, 576), (1, 4096), (2, 4160)])
def test_quantize_x8_matches_numpy(hip, M, K):
    from rocmforge.backends.hip.kernel_choice import x8_row_bytes
    from rocmforge.backends.hip.launch_mul_mat import quantize_x8
    from rocmforge.backends.hip.tensor import DevTensor

    cp = hip.cp
    rng = np.random.default_rng()
    xh = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10.0, (M, 1))).astype(np.float32)
    xh[0, :32] = 0.0  # an all-zero block: scale 0, values 0
    x = DevTensor(cp.asarray(xh).view(np.uint8), 0, (M, K), "f32")
    rb = x8_row_bytes(K)
    outs = []
    for poison in (0x55, 0xAA):  # an unwritten byte differs between the two runs
        buf = cp.full(M * rb, poison, dtype=np.uint8)
        quantize_x8(hip.ctx, DevTensor(buf, 0, (M, rb // 4), "i32"), x, K, M)
        outs.append(cp.asnumpy(buf).reshape(M, rb))
    np.testing.assert_array_equal(outs[0], outs[1])
    got = outs[0]
    q = got[:, :K].view(np.int8).astype(np.int32)
    ds = got[:, K:].copy().view(np.float32).reshape(M, K // 32, 2)
    q_ref, d_ref, s_ref = quantize_x8_ref(xh)
    assert np.abs(q - q_ref).max() <= 1  # a rounding tie may go either way on another compiler
    assert np.mean(q == q_ref) > 0.999
    np.testing.assert_allclose(ds[..., 0], d_ref, rtol=1e-6, atol=0)
    s_got = (q.reshape(M, K // 32, 32).sum(-1) * d_ref).astype(np.float32)  # the sum of what was stored
    np.testing.assert_allclose(ds[..., 1], s_got, rtol=1e-5, atol=1e-6 * np.abs(s_ref).max())
    assert np.all(q[0, :32] == 0) and ds[0, 0, 0] == 0.0


def _shared_graph(rng, tag: str = ""):
    """x read by a Q4_0 and a Q8_0 mat-vec (one quantized copy), x * 0.5 by another (a second copy). The
    weights are named by `tag`: a backend keeps the first upload of a name."""
    g = Graph()
    x = g.input("x", (1, 2304), "f32")
    specs = {"a": (Q.Q4_0, 515), "b": (Q.Q8_0, 129), "c": (Q.Q4_0, 67)}
    w = {n: g.weight(f"shared{tag}/{n}", (N, 2304), qt.name.lower()) for n, (qt, N) in specs.items()}
    g.output(g.mul_mat(w["a"], x, "ya"))
    g.output(g.mul_mat(w["b"], x, "yb"))
    g.output(g.mul_mat(w["c"], g.scale(x, 0.5, "xh"), "yc"))
    raw = {f"shared{tag}/{n}": (quant.random_blocks(qt, (N, 2304), rng), qt) for n, (qt, N) in specs.items()}
    return g, raw


@pytest.mark.parametrize("kernel", ["xq", "xb", "xr"])
def test_mat_vecs_share_one_quantized_x_in_eager_runs_and_replays(hip, monkeypatch, kernel):
    """... read by mul_mat_vec_xq, or (xb, dev/) by mul_mat_vec_xb, which all three rows allow, or (xr, the
    default) by mul_mat_vec_xr, where K is a multiple of 256 (all three rows: K = 2304)."""
    from dev import matvec_variants as V
    from rocmforge.backends.hip import kernel_choice as C
    from rocmforge.backends.hip.context import Ctx

    launches = {"xb": [], "xr": []}
    launch = Ctx.launch

    def recording(self, f, kl, args):
        for k in launches:
            prefix = f"mul_mat_vec_{k}_"
            if kl.entry.startswith(prefix):
                launches[k].append(kl.entry[len(prefix) :])  # the weight type
        return launch(self, f, kl, args)

    monkeypatch.setattr(Ctx, "launch", recording)
    rng = np.random.default_rng()
    g, raw = _shared_graph(rng, f"-{kernel}")
    ref_be = NumpyBackend()
    table = {"xq": (), "xb": (V.MUL_MAT_VEC_XB,), "xr": (C.MUL_MAT_VEC_XR,)}[kernel]
    saved = hip.ctx.mat_mul
    hip.ctx.mat_mul = V.options(*table, C.MUL_MAT_VEC_XQ, min_n=0)
    try:
        for be in (ref_be, hip):
            be.bind_weights(g, lambda name: raw[name])
            be.prepare(g)
        for run in range(4):  # eager, eager (then captured), replay, replay: new x every time
            xh = rng.standard_normal((1, 2304)).astype(np.float32) * (run + 1)
            ref, _ = ref_be.run(g, {"x": xh})
            out, _ = hip.run(g, {"x": xh})
            for name in ("ya", "yb", "yc"):
                r = ref[name].astype(np.float64)
                err = float(np.sum((out[name] - r) ** 2) / np.sum(r**2))
                assert err < 1e-4, (run, name, err)
            plan = hip._get_plan(g)
        keys = {k for k in hip.ctx._scratch if k[0] == "x8" and k[1][0] == id(plan)}
        assert len(keys) == 2  # x and x * 0.5, each quantized into its own copy
        assert plan.device_graph is not None and not plan.capture_failed
        # every mat-vec of the 2 eager runs through the kernel asked for (the 6 launches: 3 mat-vecs x 2 runs)
        expect = {
            "xq": {"xb": [], "xr": []},
            "xb": {"xb": ["q4_0", "q8_0"], "xr": []},
            "xr": {"xb": [], "xr": ["q4_0", "q8_0"]},
        }[kernel]
        assert {k: sorted(set(v)) for k, v in launches.items()} == expect, launches
        assert len(launches["xb"]) + len(launches["xr"]) >= (6 if kernel != "xq" else 0)
    finally:
        hip.ctx.mat_mul = saved
