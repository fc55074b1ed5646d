"""IR passes: CSE, DCE and no-op view removal keep what a graph computes and drop only what is redundant."""

from __future__ import annotations

import numpy as np
from graph_strategies import Case, assert_same_results, random_cases
from hypothesis import HealthCheck, given, settings

from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import Op
from rocmforge.ir.passes import PassReport, cse, dce, live_nodes, optimize, remove_noop_views


def _ops(g: Graph, op: Op) -> list[str]:
    return [t.name for t in g.nodes if t.op is op]


# ---- properties on random graphs ---------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_cases())
def test_optimized_graph_computes_the_same(case: Case):
    g = case.graph
    sig = g.signature()
    opt, report = optimize(g)
    assert g.signature() == sig  # the input graph is untouched
    assert list(opt.outputs) == list(g.outputs)
    assert {t.name for t in opt.nodes} <= {t.name for t in g.nodes}  # surviving names kept
    assert [t.id for t in opt.nodes] == list(range(len(opt)))
    assert len(opt) <= len(g) and report.nodes_before == len(g) and report.nodes_after == len(opt)
    assert _ops(opt, Op.SET_ROWS) == [n for n in _ops(g, Op.SET_ROWS)
                                      if g[n].id in live_nodes(g) or g.storage_root(g[n]).is_leaf]
    ref = Case(g, case.inputs, case.weights).run(plan=False)
    assert_same_results(Case(opt, case.inputs, case.weights).run(plan=False), ref)
    again, _ = optimize(opt)  # a fixed point: nothing left to remove
    assert again.signature() == opt.signature()


@settings(max_examples=60, deadline=None)
@given(random_cases())
def test_each_pass_alone_keeps_results(case: Case):
    ref = case.run(plan=False, n_runs=1)
    for fn in (cse, dce, remove_noop_views):
        g = fn(case.graph)
        assert_same_results(Case(g, case.inputs, case.weights).run(plan=False, n_runs=1), ref)


# ---- hand-built cases ------------------------------------------------------------------------------

def _mlp() -> Graph:
    g = Graph("mlp")
    x = g.input("x", (3, 4))
    w = g.weight("w", (5, 4), "f32")
    m1 = g.mul_mat(w, x, "m1")
    m2 = g.mul_mat(w, x, "m2")  # the same matmul again
    g.output(g.add(m1, m2, "sum"))
    return g


def test_cse_merges_a_duplicated_matmul():
    g = _mlp()
    out = cse(g)
    assert _ops(out, Op.MUL_MAT) == ["m1"]
    s = out["sum"]
    assert s.src[0] is s.src[1] is out["m1"]
    assert len(g.ops()) == 3  # input untouched


def test_cse_merges_chains_and_keeps_the_first_name():
    g = Graph("chain")
    x = g.input("x", (2, 4))
    a = g.silu(g.scale(x, 2.0, "s1"), "a1")
    b = g.silu(g.scale(x, 2.0, "s2"), "a2")
    c = g.scale(x, 3.0, "s3")  # other params: not the same
    g.output(g.add(a, b, "ab"))
    g.output(g.mul(b, c, "bc"), "bc_out")
    out = cse(g)
    assert [t.name for t in out.ops()] == ["s1", "a1", "s3", "ab", "bc"]
    assert out.outputs["bc_out"].src[0].name == "a1"


def test_cse_never_merges_set_rows_nor_reads_across_a_write():
    g = Graph("kv")
    x = g.input("x", (2, 4))
    pos = g.input("pos", (2,), "i32")
    cache = g.state("cache", (8, 4))
    before = g.cont(g.view(cache, (8, 4), "v0"), "read0")
    s1 = g.set_rows(cache, x, pos, "set1")
    s2 = g.set_rows(cache, x, pos, "set2")
    after = g.cont(g.view(cache, (8, 4), "v1"), "read1")  # same op and source as read0, later in time
    g.output(g.add(before, after, "both"))
    g.output(s2)
    out = cse(g)
    assert _ops(out, Op.SET_ROWS) == ["set1", "set2"] and s1.name in [t.name for t in out.nodes]
    assert _ops(out, Op.CONT) == ["read0", "read1"]


def test_cse_does_not_merge_a_buffer_that_is_written_later():
    g = Graph("w")
    x = g.input("x", (4, 3))
    y = g.input("y", (1, 3))
    idx = g.input("idx", (1,), "i32")
    a1 = g.scale(x, 2.0, "a1")
    a2 = g.scale(x, 2.0, "a2")  # equal to a1 now, but a1 is overwritten below
    s = g.set_rows(a1, y, idx, "write_a1")
    g.output(g.add(s, a2, "out"))
    out = cse(g)
    assert _ops(out, Op.SCALE) == ["a1", "a2"]
    case = Case(g, {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "y": np.ones((1, 3), np.float32),
                    "idx": np.array([2], np.int32)})
    assert_same_results(Case(out, case.inputs).run(plan=False), case.run(plan=False))


def test_dce_drops_dead_branches_and_unused_weights_but_keeps_the_interface():
    g = Graph("dead")
    x = g.input("x", (2, 4))
    g.input("unused_in", (3,))
    w = g.weight("w", (4, 4), "f32")
    g.weight("unused_w", (4,), "f32")
    dead = g.silu(g.mul_mat(w, x, "dead_mm"), "dead_silu")
    g.scale(dead, 2.0, "dead_scale")
    g.output(g.rms_norm(x, 1e-5, "norm"))
    out = dce(g)
    assert [t.name for t in out.nodes] == ["x", "unused_in", "norm"]
    assert out.outputs["norm"] is out["norm"]


def test_dce_keeps_the_kv_write_nobody_reads():
    g = Graph("kv")
    x = g.input("x", (1, 4))
    pos = g.input("pos", (1,), "i32")
    cache = g.state("cache_k_l0", (16, 4))
    k = g.scale(x, 0.5, "k")
    g.set_rows(cache, k, pos, "cache_k_set")  # nothing reads the cache in this graph
    g.output(g.silu(x, "y"))
    out = dce(g)
    assert _ops(out, Op.SET_ROWS) == ["cache_k_set"]
    assert "k" in [t.name for t in out.nodes]
    be_case = Case(out, {"x": np.ones((1, 4), np.float32), "pos": np.array([3], np.int32)})
    (_, state), = be_case.run(plan=True, n_runs=1)
    np.testing.assert_array_equal(state["cache_k_l0"][3], np.full(4, 0.5, np.float32))
    _, report = optimize(g)
    assert report.nodes_after == len(g)  # nothing else to drop


def test_dce_drops_a_write_into_a_dead_intermediate():
    g = Graph("w")
    x = g.input("x", (4, 3))
    y = g.input("y", (1, 3))
    idx = g.input("idx", (1,), "i32")
    tmp = g.scale(x, 2.0, "tmp")
    g.set_rows(tmp, y, idx, "write_tmp")
    g.output(g.silu(x, "out"))
    assert [t.name for t in dce(g).ops()] == ["out"]
    tmp_read = Graph("w2")
    x = tmp_read.input("x", (4, 3))
    y = tmp_read.input("y", (1, 3))
    idx = tmp_read.input("idx", (1,), "i32")
    tmp = tmp_read.scale(x, 2.0, "tmp")
    tmp_read.set_rows(tmp, y, idx, "write_tmp")  # its result is unused, but tmp is read afterwards
    tmp_read.output(tmp_read.silu(tmp, "out"))
    assert [t.name for t in dce(tmp_read).ops()] == ["tmp", "write_tmp", "out"]


def test_remove_noop_views():
    g = Graph("views")
    x = g.input("x", (4, 6))
    same = g.view(x, (4, 6), "same")  # no-op
    window = g.view_2d(x, 2, 6, 6, 6, "window")  # offset: kept
    strided = g.view_2d(x, 4, 3, 6, 0, "strided")  # strides: kept
    r1 = g.reshape(g.silu(same, "s"), (24,), "r1")
    r2 = g.reshape(r1, (6, 4), "r2")  # reshape of reshape -> reshape of s
    r3 = g.reshape(g.reshape(x, (2, 12), "r4"), (4, 6), "r3")  # back to x's shape -> x
    g.output(g.add(r2, r2, "o1"))
    g.output(g.add(window, window, "o2"))
    g.output(g.cont(strided, "o3"))
    g.output(g.scale(r3, 2.0, "o4"))
    out = remove_noop_views(g)
    assert out["s"].src[0] is out["x"]
    assert out["r2"].src[0] is out["s"]
    assert out["o4"].src[0] is out["x"]
    assert {"window", "strided"} <= {t.name for t in out.nodes}
    opt, report = optimize(g)
    names = {t.name for t in opt.nodes}
    assert not names & {"same", "r1", "r3", "r4"}
    assert report.stats[0].name == "remove_noop_views" and report.stats[-1].nodes_after == len(opt)
    rng = np.random.default_rng(0)
    case = Case(g, {"x": rng.standard_normal((4, 6)).astype(np.float32)})
    assert_same_results(Case(opt, case.inputs).run(plan=True), case.run(plan=False))


def test_pass_report_table_and_frame():
    g, report = optimize(_mlp())
    assert isinstance(report, PassReport)
    text = str(report)
    for name in ("remove_noop_views", "cse", "dce", "total"):
        assert name in text
    df = report.to_frame()
    assert list(df["pass"]) == ["remove_noop_views", "cse", "dce"]
    assert df["nodes_before"].iloc[0] == 5 and df["nodes_after"].iloc[-1] == len(g) == 4
    assert df.loc[df["pass"] == "cse", "removed"].item() == 1


def test_optimize_on_a_model_graph_keeps_every_cache_write(tmp_path):
    from rocmforge.config import ModelConfig
    from rocmforge.gguf import GGUFFile
    from rocmforge.models import GraphSpec, build_graph
    from rocmforge.synth import write_tiny_model

    f = GGUFFile.open(write_tiny_model(tmp_path / "tiny.gguf", "qwen2", tied=False))
    cfg = ModelConfig.from_gguf(f)
    spec = {n: (t.shape, t.ggml_type.name.lower()) for n, t in f.tensors.items()}
    for n_tokens in (1, 5):
        g = build_graph(cfg, spec, GraphSpec(n_tokens, 16))
        opt, _ = optimize(g)
        assert _ops(opt, Op.SET_ROWS) == _ops(g, Op.SET_ROWS) and len(_ops(g, Op.SET_ROWS)) == 2 * cfg.n_layer
        assert set(opt.outputs) == {"logits", "argmax"}


def _norm_graph(extra_reader: bool = False, output_h: bool = False) -> Graph:
    """x -> h = RMS_NORM_MUL(x, n) -> MUL_MAT_ADD(wq, h, bq), MUL_MAT_SWIGLU(wg, h), MUL_MAT_ADD(wo, h, x)."""
    g = Graph()
    x = g.input("x", (2, 64))
    h = g.rms_norm_mul(x, g.weight("n", (64,), "f32"), 1e-5, "h")
    q = g.mul_mat_add(g.weight("wq", (32, 64), "f32"), h, g.weight("bq", (32,), "f32"), "q")
    s = g.mul_mat_swiglu(g.weight("wg", (48, 64), "f32"), h, "s")
    o = g.mul_mat_add(g.weight("wo", (64, 64), "f32"), h, x, "o")
    g.output(q)
    g.output(s)
    g.output(g.add(o, h, "oh") if extra_reader else o)
    if output_h:
        g.output(h)
    return g


def _same_on_numpy(g: Graph, f: Graph, seed: int) -> None:
    """g and its rewrite f compute the same outputs on the numpy backend (f32 weights, x [2, 64])."""
    from rocmforge.backends.numpy_backend import NumpyBackend
    from rocmforge.quant import QType

    rng = np.random.default_rng(seed)
    weights = {w.name: rng.standard_normal(w.shape).astype(np.float32) for w in g.leaves("weight")}
    x = (3 * rng.standard_normal((2, 64))).astype(np.float32)
    outs = []
    for graph in (g, f):
        be = NumpyBackend()
        be.bind_weights(graph, lambda n: (weights[n], QType.F32))
        outs.append(be.run(be.prepare(graph), {"x": x})[0])
    for k in outs[0]:
        np.testing.assert_allclose(outs[1][k], outs[0][k], rtol=1e-6, atol=1e-6)


def test_fold_norms_folds_every_mat_vec_reader_and_computes_the_same():
    from rocmforge.ir.passes import fold_norms

    g = _norm_graph()
    f = fold_norms(g, lambda t: True)
    assert not _ops(f, Op.RMS_NORM_MUL)
    assert sorted(_ops(f, Op.RMS_NORM_MUL_MAT_ADD)) == ["o", "q"]
    assert _ops(f, Op.RMS_NORM_MUL_MAT_SWIGLU) == ["s"]
    _same_on_numpy(g, f, 0)


def test_fold_norms_keeps_a_norm_with_another_reader_an_output_or_a_kernel_that_does_not_fold():
    from rocmforge.ir.passes import fold_norms

    assert _ops(fold_norms(_norm_graph(extra_reader=True), lambda t: True), Op.RMS_NORM_MUL) == ["h"]
    assert _ops(fold_norms(_norm_graph(output_h=True), lambda t: True), Op.RMS_NORM_MUL) == ["h"]
    assert _ops(fold_norms(_norm_graph(), lambda t: t.name != "s"), Op.RMS_NORM_MUL) == ["h"]


def test_fold_norms_moves_the_norm_into_the_int8_copy_its_int8_readers_read():
    """After insert_quantize_x8 (and before CSE: one QUANTIZE_X8 of h a reader), readers on int8 x fold the
    norm too: each QUANTIZE_X8 of h becomes RMS_NORM_MUL_QUANTIZE_X8 of (x, n), each reader the norm-folded
    op with it as its xq; readers without xq fold as before; CSE then keeps one int8 copy. The numpy
    backend computes the same."""
    from rocmforge.ir.ops import NORM_MUL_MAT_OPS, xq_source
    from rocmforge.ir.passes import cse, dce, fold_norms, insert_quantize_x8

    g = _norm_graph()
    with_xq = insert_quantize_x8(g, lambda t: t.name in ("q", "s"))  # o stays on f32 x
    assert len(_ops(with_xq, Op.QUANTIZE_X8)) == 2
    f = dce(cse(fold_norms(with_xq, lambda t: True)))
    assert not _ops(f, Op.RMS_NORM_MUL) and not _ops(f, Op.QUANTIZE_X8)
    (hq,) = [t for t in f.nodes if t.op is Op.RMS_NORM_MUL_QUANTIZE_X8]
    assert [s.name for s in hq.src] == ["x", "n"] and hq.params["eps"] == 1e-5
    folded = {t.name: t for t in f.nodes if t.op in NORM_MUL_MAT_OPS}
    assert set(folded) == {"q", "s", "o"}
    assert xq_source(folded["q"]) is hq and xq_source(folded["s"]) is hq and xq_source(folded["o"]) is None
    assert folded["q"].op is Op.RMS_NORM_MUL_MAT_ADD and folded["q"].src[3].name == "bq"
    _same_on_numpy(g, f, 1)


def test_fold_norms_keeps_a_norm_whose_int8_copy_is_read_otherwise():
    """A QUANTIZE_X8 of h that is an output, or read by a mat-vec whose predicate says no: h stays."""
    from rocmforge.ir.passes import fold_norms, insert_quantize_x8

    g = _norm_graph()
    with_xq = insert_quantize_x8(g, lambda t: t.name == "q")
    (q8,) = _ops(with_xq, Op.QUANTIZE_X8)
    with_xq.output(next(t for t in with_xq.nodes if t.name == q8))
    assert _ops(fold_norms(with_xq, lambda t: True), Op.RMS_NORM_MUL) == ["h"]
    with_xq = insert_quantize_x8(g, lambda t: t.name == "q")
    assert _ops(fold_norms(with_xq, lambda t: t.name != "q"), Op.RMS_NORM_MUL) == ["h"]
    assert _ops(fold_norms(with_xq, lambda t: t.name != "q"), Op.QUANTIZE_X8) == [q8]
