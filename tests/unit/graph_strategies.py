"""Hypothesis strategy: random IR graphs (DAGs) with random values, duplicate subexpressions, dead branches,
views and KV-style SET_ROWS writes. Shared by test_passes.py and test_alloc.py (imported as a sibling)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from rocmforge.backends.numpy_backend import NumpyBackend
from rocmforge.ir.graph import Graph, Tensor, contiguous_strides
from rocmforge.ir.ops import ALIASING, IRError, Op
from rocmforge.quant import QType

DIMS = (2, 3, 4, 6, 8)
OPS = ("ADD", "MUL", "SCALE", "RMS_NORM", "MUL_MAT", "SILU", "SWIGLU", "SOFT_MAX", "RESHAPE", "VIEW",
       "CONT", "CPY", "DUP", "DUP", "SET_ROWS", "GET_ROWS")


@dataclass
class Case:
    """A graph and the values to run it with."""

    graph: Graph
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def backend(self, plan: bool) -> NumpyBackend:
        be = NumpyBackend(plan=plan)
        be.bind_weights(self.graph, lambda n: (self.weights[n].reshape(-1).view(np.uint8), QType.F32))
        return be

    def run(self, plan: bool, n_runs: int = 2) -> list[tuple[dict, dict]]:
        """Outputs and state after each of n_runs runs on a fresh backend."""
        be = self.backend(plan)
        g = be.prepare(self.graph)
        res = []
        for _ in range(n_runs):
            outs, _ = be.run(g, self.inputs)
            res.append((outs, {k: v.copy() for k, v in be.state.items()}))
        return res


def _contig_chain(t: Tensor) -> bool:
    """t and every view it goes through are contiguous (numpy views of it stay views)."""
    while t.op in ALIASING:
        if t.op is Op.VIEW and tuple(t.params["strides"]) != contiguous_strides(t.shape):
            return False
        t = t.src[0]
    return True


def _writable(t: Tensor) -> bool:
    """SET_ROWS may write t: no VIEW (read-only in numpy) and no input/weight underneath."""
    while t.op in ALIASING:
        if t.op is Op.VIEW:
            return False
        t = t.src[0]
    return t.kind in ("op", "state")


@st.composite
def random_cases(draw, max_ops: int = 24) -> Case:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    T = draw(st.sampled_from((1, 2, 4)))
    g = Graph("random")
    case = Case(g)
    pool: list[Tensor] = []  # float tensors ops may take
    names = iter(range(10**6))

    def inp(shape, dtype="f32", values=None) -> Tensor:
        t = g.input(f"in{len(case.inputs)}", shape, dtype)
        case.inputs[t.name] = rng.standard_normal(shape).astype(np.float32) if values is None else values
        return t

    def weight(shape) -> Tensor:
        t = g.weight(f"w{len(case.weights)}", shape, "f32")
        case.weights[t.name] = rng.standard_normal(shape).astype(np.float32)
        return t

    for _ in range(draw(st.integers(1, 3))):
        pool.append(inp((T, draw(st.sampled_from(DIMS)))))

    def pick(cands: list[Tensor]) -> Tensor | None:
        return draw(st.sampled_from(cands)) if cands else None

    def build(kind: str, a: Tensor, name: str) -> Tensor | None:
        shape, n = a.shape, a.n_elements
        if kind in ("ADD", "MUL"):
            b = pick([t for t in pool if t.shape == shape]) if draw(st.booleans()) else None
            b = b or weight((shape[-1],))
            return g.op(Op[kind], [a, b], name)
        if kind == "SCALE":
            return g.scale(a, draw(st.sampled_from((0.5, -1.5, 2.0))), name)
        if kind == "RMS_NORM":
            return g.rms_norm(a, draw(st.sampled_from((1e-5, 1e-6))), name)
        if kind == "MUL_MAT":
            ws = [t for t in g.leaves("weight") if len(t.shape) == 2 and t.shape[1] == shape[-1]]
            w = pick(ws) if ws and draw(st.booleans()) else weight((draw(st.sampled_from(DIMS)), shape[-1]))
            return g.mul_mat(w, a, name)
        if kind == "SILU":
            return g.silu(a, name)
        if kind == "SWIGLU":
            return g.swiglu(a, pick([t for t in pool if t.shape == shape]), name)
        if kind == "SOFT_MAX":
            mask = None
            if len(shape) >= 2 and draw(st.booleans()):
                m = draw(st.sampled_from((1, shape[-2])))
                mask = inp((m, shape[-1]))
            return g.soft_max(a, name, mask, draw(st.sampled_from((1.0, 0.125))))
        if kind == "RESHAPE":
            opts = [(n,), shape] + [(n // d, d) for d in (2, 3, 4) if n % d == 0]
            opts += [(2, n // 4, 2)] if n % 4 == 0 else []
            return g.reshape(a, draw(st.sampled_from(opts)), name)
        if kind == "VIEW":
            if not _contig_chain(a):
                return None
            mode = draw(st.sampled_from(("noop", "rows", "cols", "flat")))
            c = shape[-1]
            if mode == "noop":
                return g.view(a, shape, name)
            if mode == "rows":
                r = draw(st.integers(1, n // c))
                return g.view_2d(a, r, c, c, c * draw(st.integers(0, n // c - r)), name)
            if mode == "cols" and c > 1:
                c2 = draw(st.integers(1, c - 1))
                return g.view_2d(a, n // c, c2, c, draw(st.integers(0, c - c2)), name)
            m = draw(st.integers(1, n))
            return g.view_1d(a, m, draw(st.integers(0, n - m)), name)
        if kind == "CONT":
            return g.cont(a, name)
        if kind == "CPY":
            return g.cpy(a, draw(st.sampled_from(("f16", "f32"))), name)
        if kind == "SET_ROWS":
            if len(shape) < 2:
                return None
            dsts = [t for t in pool if len(t.shape) == len(shape) and t.shape[1:] == shape[1:]
                    and t.shape[0] >= shape[0] and _writable(t)]
            if dsts and draw(st.booleans()):
                dst = pick(dsts)
            else:
                dst = g.state(f"state{len(g.leaves('state'))}", (shape[0] + draw(st.integers(0, 3)),
                                                                  *shape[1:]),
                              draw(st.sampled_from(("f32", "f16"))))
            idx = rng.choice(dst.shape[0], shape[0], replace=False).astype(np.int32)
            return g.set_rows(dst, a, inp((shape[0],), "i32", idx), name)
        if kind == "GET_ROWS":
            emb = weight((draw(st.sampled_from((5, 9))), draw(st.sampled_from(DIMS))))
            ids = rng.integers(0, emb.shape[0], T).astype(np.int32)
            return g.get_rows(emb, inp((T,), "i32", ids), name)
        raise AssertionError(kind)

    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(OPS))
        name = f"n{next(names)}"
        if kind == "DUP":  # the same computation again, under another name
            t = pick([t for t in g.ops() if t.op is not Op.SET_ROWS])
            if t is None:
                continue
            pool.append(g.op(t.op, list(t.src), name, **t.params))
            continue
        try:
            t = build(kind, pick(pool), name)
        except IRError:  # e.g. a reshape of a strided view
            continue
        if t is not None and t.dtype in ("f32", "f16"):
            pool.append(t)

    ops = [t for t in pool if not t.is_leaf] or pool
    for t in draw(st.lists(st.sampled_from(ops), min_size=1, max_size=3)):
        g.output(t, f"out_{t.name}")
    if draw(st.booleans()):
        g.output(g.argmax(draw(st.sampled_from(ops)), "argmax"))
    return case


def assert_same_results(a: list[tuple[dict, dict]], b: list[tuple[dict, dict]]) -> None:
    """Equal outputs and state, run by run, bit for bit (NaN equal to NaN)."""
    assert len(a) == len(b)
    for (oa, sa), (ob, sb) in zip(a, b, strict=True):
        assert oa.keys() == ob.keys() and sa.keys() == sb.keys()
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k], err_msg=f"output {k}")
            assert oa[k].dtype == ob[k].dtype
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=f"state {k}")
