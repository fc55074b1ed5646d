"""The sharing of one QUANTIZE_X8 node (int8 activations, passes.insert_quantize_x8) by the mat-vecs that
read one value, in eager runs and graph replays. QUANTIZE_X8 itself is in the conformance table."""

from __future__ import annotations

import numpy as np
import pytest

from rocmforge import quant
from rocmforge.backends.hip import HipBackend, gpu_available
from rocmforge.backends.numpy_backend import NumpyBackend
from rocmforge.ir.graph import Graph

ok, why = gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ok, reason=f"no GPU: {why}")]

Q = quant.QType


@pytest.fixture(scope="module")
def hip():
    return HipBackend()


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
    """One QUANTIZE_X8 node per value, read by mul_mat_vec_xq, or (xb, dev/) by mul_mat_vec_xb, which all
    three rows allow, or (xr, the default) by mul_mat_vec_xr, where K is a multiple of 256 (K = 2304)."""
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
        ref_be.prepare(g)
        prepared = hip.prepare(g)
        for run in range(4):  # eager, eager (then captured), replay, replay: new x every time
            xh = rng.standard_normal((1, 2304)).astype(np.float32) * (run + 1)
            ref, _ = ref_be.run(g, {"x": xh})
            out, _ = hip.run(g, {"x": xh})
            for name in ("ya", "yb", "yc"):
                r = ref[name].astype(np.float64)
                err = float(np.sum((out[name] - r) ** 2) / np.sum(r**2))
                assert err < 1e-4, (run, name, err)
            plan = hip._get_plan(g)
        quantized = [t for t in prepared.ops() if t.op.value == "QUANTIZE_X8"]
        assert len(quantized) == 2  # x and x * 0.5, each quantized into a node of its own
        readers = [t.src[2] for t in prepared.ops() if t.op.value == "MUL_MAT"]
        assert sorted(q.src[0].name for q in readers) == ["x", "x", "xh"]
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
