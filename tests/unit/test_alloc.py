"""Arena planner: no two live buffers overlap, sources are live when read, in-place and views behave, and
the numpy backend executing from the plan computes exactly what it computes without one."""

from __future__ import annotations

import numpy as np
import pytest
from graph_strategies import Case, assert_same_results, random_cases
from hypothesis import HealthCheck, given, settings

from rocmforge.backends.numpy_backend import NumpyBackend
from rocmforge.ir.alloc import ALIGNMENT, Plan, nbytes_of, plan
from rocmforge.ir.graph import Graph
from rocmforge.ir.passes import optimize


def _aligned_sum(p: Plan) -> int:
    return sum(-(-n // p.alignment) * p.alignment for n in p.nbytes.values())


# ---- properties on random graphs ---------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_cases())
def test_plan_is_valid_and_planned_execution_matches(case: Case):
    opt, _ = optimize(case.graph)
    for g in (case.graph, opt):
        p = plan(g)
        p.check()
        q = plan(g)  # pure and deterministic
        assert (q.offsets, q.inplace, q.lifetimes, q.arena_bytes) == (p.offsets, p.inplace, p.lifetimes,
                                                                      p.arena_bytes)
        assert p.arena_bytes <= _aligned_sum(p)
        assert p.naive_bytes == sum(nbytes_of(t) for t in g.ops() if t.op.value not in
                                    ("VIEW", "RESHAPE", "SET_ROWS"))
    ref = case.run(plan=False)  # unoptimized, one array per node
    assert_same_results(case.run(plan=True), ref)  # optimized, from one arena


# ---- hand-built cases ------------------------------------------------------------------------------

def _chain() -> Graph:
    g = Graph("chain")
    x = g.input("x", (4, 64))
    w = g.weight("w", (64, 64), "f32")
    a = g.mul_mat(w, x, "a")
    b = g.add(a, x, "b")  # a's only reader: in place
    c = g.silu(b, "c")  # SILU is element-wise too
    g.output(g.mul_mat(w, c, "d"))
    return g


def test_inplace_for_a_single_consumer_add():
    g = _chain()
    p = plan(g)
    p.check()
    assert p.inplace == {g["b"].id: g["a"].id, g["c"].id: g["b"].id}
    assert p.offsets[g["a"].id] == p.offsets[g["b"].id] == p.offsets[g["c"].id]
    assert p.lifetimes[g["a"].id] == (g["a"].id, g["b"].id)


def test_no_inplace_when_the_source_has_another_consumer():
    g = Graph("fork")
    x = g.input("x", (4, 64))
    w = g.weight("w", (64, 64), "f32")
    a = g.mul_mat(w, x, "a")
    b = g.add(a, x, "b")
    g.output(g.mul(b, a, "c"))  # a is read again after b
    p = plan(g)
    p.check()
    assert g["b"].id not in p.inplace
    assert p.offsets[g["b"].id] != p.offsets[g["a"].id]
    assert p.inplace == {g["c"].id: g["b"].id}  # c is b's last reader (an output may take a buffer)


def test_no_inplace_over_outputs_leaves_views_with_offsets_or_other_ops():
    g = Graph("no")
    x = g.input("x", (4, 64))
    w = g.weight("w", (64, 64), "f32")
    a = g.output(g.mul_mat(w, x, "a"))  # an output: never taken over
    b = g.scale(a, 2.0, "b")
    c = g.output(g.scale(x, 2.0, "c"))  # its source is a leaf
    win = g.view_2d(b, 2, 64, 64, 64, "win")  # offset view
    d = g.silu(win, "d")
    e = g.rms_norm(d, 1e-5, "e")  # not element-wise in-place capable
    g.output(g.add(e, e, "f"))
    p = plan(g)
    p.check()
    assert b.id not in p.inplace and c.id not in p.inplace
    assert g["d"].id not in p.inplace and g["e"].id not in p.inplace
    assert p.lifetimes[g["a"].id][1] == len(g)  # outputs are never released
    assert p.lifetimes[g["f"].id][1] == len(g)


def test_views_share_storage_and_extend_the_lifetime():
    g = Graph("views")
    x = g.input("x", (8, 32))
    a = g.scale(x, 3.0, "a")
    v = g.view_2d(a, 4, 32, 32, 128, "a_half")  # rows 4..7
    r = g.reshape(a, (256,), "a_flat")
    b = g.silu(g.view_2d(x, 4, 32, 32, 0, "x_top"), "b")  # allocated while a is alive (read via views)
    c = g.cont(v, "c")
    d = g.rms_norm(b, 1e-5, "d")
    g.output(g.add(d, c, "e"))
    g.output(g.silu(r, "f"))
    p = plan(g)
    p.check()
    for t in (v, r):
        assert t.id not in p.offsets  # no storage of their own
    ia = a.id
    assert p.lifetimes[ia] == (ia, g["f"].id)  # a lives until the last reader of its views
    lo, hi = p.offsets[ia], p.offsets[ia] + p.nbytes[ia]
    for t in (b, c, d):
        assert p.offsets[t.id] + p.nbytes[t.id] <= lo or p.offsets[t.id] >= hi
    be = NumpyBackend()
    gp = be.prepare(g)
    assert gp is be.prepare(g) and be.plan_of(g) is be.plan_of(gp)
    x_val = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
    outs, _ = be.run(gp, {"x": x_val})
    np.testing.assert_array_equal(outs["f"], NumpyBackend(plan=False).run(g, {"x": x_val})[0]["f"])


def test_freed_ranges_are_reused_best_fit_and_merged():
    g = Graph("reuse")
    x = g.input("x", (1, 1024))
    big = g.scale(x, 2.0, "big")  # 4 KiB
    y = g.rms_norm(big, 1e-5, "y")  # big is released after y
    small = g.view_1d(y, 64, 0, "y64")
    z = g.cont(small, "z")  # 256 B: fits into big's old range
    u = g.rms_norm(y, 1e-5, "u")  # releases y
    g.output(z)
    g.output(g.silu(u, "out"))
    p = plan(g)
    p.check()
    assert p.offsets[z.id] == p.offsets[big.id] == 0
    assert p.offsets[u.id] == 2 * 4096 and p.arena_bytes == 3 * 4096
    assert p.inplace == {g["out"].id: u.id}
    assert p.arena_bytes < _aligned_sum(p)
    assert all(off % ALIGNMENT == 0 for off in p.offsets.values())


def test_check_catches_overlap_and_dead_sources():
    g = _chain()
    p = plan(g)
    p.check()
    bad = plan(g)
    bad.inplace.clear()  # b, c claim a's range while a is still being read
    with pytest.raises(AssertionError, match="overlaps|line up|lives until"):
        bad.check()
    bad = plan(g)
    a = g["a"].id
    bad.lifetimes[a] = (a, a)  # released before b reads it
    with pytest.raises(AssertionError, match="outside its lifetime"):
        bad.check()
    bad = plan(g)
    bad.offsets[g["d"].id] = 1  # misaligned
    with pytest.raises(AssertionError, match="misaligned"):
        bad.check()


def test_backend_arena_is_allocated_once_and_reused():
    g = _chain()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    case = Case(g, {"x": rng.standard_normal((4, 64)).astype(np.float32)}, {"w": w})
    be = case.backend(plan=True)
    gp = be.prepare(g)
    arena = be.arena
    assert arena.nbytes == be.plan_of(g).arena_bytes and be.memory()["arena"] == arena.nbytes
    first = be.run(gp, case.inputs)[0]
    second = be.run(g, case.inputs)[0]  # the graph given to prepare runs its prepared form
    assert be.arena is arena
    ref = case.backend(plan=False).run(g, case.inputs)[0]
    for k in ref:
        np.testing.assert_array_equal(first[k], ref[k])
        np.testing.assert_array_equal(second[k], ref[k])
    assert not np.shares_memory(first["d"], arena)  # outputs are copies


def test_tiny_model_prefill_and_decode_match_without_plan(tmp_path):
    from rocmforge.config import ModelConfig
    from rocmforge.gguf import GGUFFile
    from rocmforge.models import GraphSpec, build_graph
    from rocmforge.synth import write_tiny_model

    f = GGUFFile.open(write_tiny_model(tmp_path / "tiny.gguf", "qwen2", tied=False))
    cfg = ModelConfig.from_gguf(f)
    spec = {n: (t.shape, t.ggml_type.name.lower()) for n, t in f.tensors.items()}
    graphs = {n: build_graph(cfg, spec, GraphSpec(n, 32)) for n in (6, 1)}
    results = []
    for use_plan in (True, False):
        be = NumpyBackend(plan=use_plan)
        out = []
        for g in graphs.values():
            be.bind_weights(g, lambda name: (f.raw(name), f.tensors[name].ggml_type))
            gp = be.prepare(g)
            if use_plan:
                be.plan_of(gp).check()
        pos = 0
        for n in (6, 1, 1):
            toks = (np.arange(n) * 7 + pos) % cfg.n_vocab
            inputs = {"inp_tokens": toks.astype(np.int32), "inp_pos": np.arange(pos, pos + n, dtype=np.int32)}
            if n > 1:  # the row whose logits are wanted
                inputs["inp_out_ids"] = np.array([n - 1], np.int32)
            o, _ = be.run(graphs[n], inputs)
            out.append(o)
            pos += n
        results.append((out, {k: v.copy() for k, v in be.state.items()}))
    (planned, s1), (plain, s2) = results
    for a, b in zip(planned, plain, strict=True):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
    for k in s2:
        np.testing.assert_array_equal(s1[k], s2[k])
    p = plan(graphs[6])
    assert p.arena_bytes * 3 < p.naive_bytes
