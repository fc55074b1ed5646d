"""The research views of a run's timings: the roofline, the Chrome trace, memory over a run, the projection
onto another GPU and the notebook tables of StepTimings and StepResult."""

import json

import matplotlib
import numpy as np
import pytest

from rocmforge.engine import Engine
from rocmforge.ir.cost import Cost
from rocmforge.profile import (
    IDLE,
    IDLE_NAME,
    OpTiming,
    StepTimings,
    chrome_trace,
    find_gpu,
    memory_series,
    project,
    roofline,
    top_ops,
)
from rocmforge.synth import write_tiny_model

matplotlib.use("Agg")


def _costed(wall_us=20.0):
    """A matmul (10 us; 1000 bytes, 1000 FLOPs), an add (5 us; 600 bytes, 10 FLOPs) and an alias (0 us)."""
    t = StepTimings([OpTiming("blk.0.mm", "MUL_MAT", (4,), 10.0), OpTiming("blk.0.add", "ADD", (4,), 5.0),
                     OpTiming("blk.0.view", "VIEW", (4,), 0.0)], "graph", wall_us=wall_us)
    t.costs = {"blk.0.mm": Cost(800, 200, 1000), "blk.0.add": Cost(400, 200, 10), "blk.0.view": Cost(0, 0, 0)}
    return t


# 1 GB/s is 1000 bytes per us; 1e-4 TFLOP/s is 100 FLOP per us
CARD = {"name": "toy", "bandwidth_gbs": 1.0, "f16_tflops": 1e-4}


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    path = write_tiny_model(tmp_path_factory.mktemp("m") / "m.gguf", "llama")
    eng = Engine.from_gguf(path, backend="numpy", max_ctx=64)
    eng.prefill([1, 2, 3])
    return eng, eng.step(timed=True)


# ---- projection ----------------------------------------------------------------------------------------
def test_projection_takes_the_slower_of_memory_and_compute_per_op():
    p = project(_costed(), CARD)
    f = p.frame.set_index("name")
    assert f.loc["blk.0.mm", "projected_us"] == pytest.approx(10.0)  # compute: 1000 / 100 > 1000 / 1000
    assert f.loc["blk.0.mm", "bound"] == "compute"
    assert f.loc["blk.0.add", "projected_us"] == pytest.approx(0.6)  # memory: 600 / 1000 > 10 / 100
    assert f.loc["blk.0.add", "bound"] == "memory"
    assert f.loc["blk.0.view", "projected_us"] == 0 and f.loc["blk.0.view", "bound"] == "none"
    assert p.idle == "kept" and p.idle_us == pytest.approx(5.0)  # 20 us wall - 15 us of ops
    assert p.total_us == pytest.approx(15.6) and f.loc[IDLE_NAME, "projected_us"] == pytest.approx(5.0)
    assert p.tokens == 1 and p.tokens_per_s == pytest.approx(1e6 / 15.6)
    assert p.frame["projected_us"].sum() == pytest.approx(p.total_us)
    by = p.by_op()
    assert by.loc["MUL_MAT", "projected_us"] == pytest.approx(10.0) and by.loc["ADD", "memory_bound"] == 1
    assert "toy" in repr(p) and "tok/s" in repr(p) and "<table" in p._repr_html_()


def test_idle_policies_and_efficiencies():
    assert project(_costed(), CARD, idle="dropped").total_us == pytest.approx(10.6)
    scaled = project(_costed(), CARD, idle="scaled")
    assert scaled.idle_us == pytest.approx(5.0 * 10.6 / 15.0)  # the ops went from 15 us to 10.6
    assert scaled.total_us == pytest.approx(10.6 * 20 / 15)
    half = project(_costed(), CARD, efficiency=0.5, idle="dropped")
    assert half.total_us == pytest.approx(21.2)  # each op's floor doubled
    split = project(_costed(), CARD, efficiency=(0.5, 1.0), idle="dropped")
    assert split.total_us == pytest.approx(10.0 + 1.2)  # only the memory-bound add slows
    assert project(_costed(wall_us=12.0), CARD).idle_us == 0  # a negative remainder counts as nothing
    with pytest.raises(ValueError, match="idle"):
        project(_costed(), CARD, idle="halved")
    with pytest.raises(ValueError, match="positive"):
        project(_costed(), CARD, efficiency=0)
    with pytest.raises(ValueError, match="no costs"):
        project(StepTimings([OpTiming("a", "ADD", (1,), 1.0)], "host", 2.0), CARD)


def test_a_prefill_projects_tokens_per_second_over_its_prompt(step):
    eng, _ = step
    eng.reset()
    eng.prefill([1, 2, 3, 4, 5], timed=True)
    pt = eng.prefill_timings
    p = project(pt, "RX 7900 XT")
    assert p.tokens == 5 and p.tokens_per_s == pytest.approx(5e6 / p.total_us)
    assert project(pt, "RX 7900 XT", tokens=2).tokens_per_s == pytest.approx(2e6 / p.total_us)
    # the same run on a card with 6 times the bandwidth and more compute: no op is slower
    fast = project(pt, "MI300X", idle="dropped")
    assert fast.total_us < project(pt, "RX 7900 XT", idle="dropped").total_us


def test_a_prefill_in_chunks_warns_that_its_costs_are_the_last_chunks(step, monkeypatch):
    eng, _ = step
    monkeypatch.setattr("rocmforge.engine.MAX_UBATCH", 4)
    eng.reset()
    eng.prefill(list(range(1, 7)), timed=True)  # chunks of 4 and 2 tokens
    with pytest.warns(UserWarning, match="chunks"):
        p = project(eng.prefill_timings, "RX 7900 XT")
    assert p.tokens == 6


def test_gpu_table_lookup():
    xt = find_gpu("rx 7900 xt")
    assert (xt["bandwidth_gbs"], xt["compute_units"]) == (800, 84)
    assert find_gpu("7900 XTX")["name"] == "RX 7900 XTX" and find_gpu("h100")["name"] == "H100 SXM"
    with pytest.raises(KeyError, match="ambiguous"):
        find_gpu("7900")
    with pytest.raises(KeyError, match="not among"):
        find_gpu("voodoo 2")


# ---- roofline ------------------------------------------------------------------------------------------
def test_roofline_plots_the_roofs_and_one_point_per_costed_op():
    import matplotlib.pyplot as plt

    ax = roofline(_costed(), bandwidth_gbs=800, peak_tflops=100)
    roof = ax.lines[0]
    x, y = roof.get_xdata(), roof.get_ydata()
    assert np.allclose(y, np.minimum(800 * x, 100e3))
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    pts = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert set(pts) == {"ADD", "MUL_MAT"}  # the alias has no intensity; no IDLE point
    assert np.allclose(pts["MUL_MAT"], [[1.0, 1000 / 10 / 1e3]])  # FLOP/byte, GFLOP/s
    assert np.allclose(pts["ADD"], [[10 / 600, 10 / 5 / 1e3]])
    sizes = {k: c.get_sizes()[0] for k, c in zip(pts, ax.collections, strict=True)}
    assert sizes["MUL_MAT"] > sizes["ADD"]  # sized by time
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="positive"):
        roofline(_costed(), 0, 1)


def test_roofline_of_an_engine_step_draws_on_a_given_axes(step):
    import matplotlib.pyplot as plt

    _, res = step
    fig, ax = plt.subplots()
    assert roofline(res.timings, 800, 103, ax=ax) is ax
    labels = {c.get_label() for c in ax.collections}
    assert "MUL_MAT" in labels and IDLE not in labels and "RESHAPE" not in labels
    plt.close(fig)


# ---- trace ---------------------------------------------------------------------------------------------
def test_chrome_trace_lays_ops_back_to_back_and_spans_the_wall_time(step, tmp_path):
    _, res = step
    t = res.timings
    path = tmp_path / "step.json"
    written = chrome_trace(t, path)
    trace = json.loads(path.read_text())
    assert trace == written
    ev = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(ev) == len(t) + 1 and [e["name"] for e in ev[:-1]] == [r.name for r in t]
    assert ev[-1]["cat"] == IDLE and ev[-1]["name"] == IDLE_NAME
    assert sum(e["dur"] for e in ev) == pytest.approx(t.wall_us)
    for a, b in zip(ev, ev[1:], strict=False):
        assert b["ts"] == pytest.approx(a["ts"] + a["dur"])
    for e in ev:  # what the Trace Event Format asks of a complete event
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(e) and e["dur"] >= 0
    mm = next(e for e in ev if e["cat"] == "MUL_MAT")
    c = t.costs[mm["name"]]
    assert mm["args"]["flops"] == c.flops and mm["args"]["bytes_read"] == c.read
    assert isinstance(mm["args"]["shape"], list)
    assert {e["name"] for e in trace["traceEvents"] if e["ph"] == "M"} == {"process_name", "thread_name"}
    assert trace["otherData"]["mode"] == "host"


def test_a_negative_remainder_is_no_event():
    t = StepTimings([OpTiming("a", "ADD", (1,), 6.0)], "eager", wall_us=5.0)
    trace = chrome_trace(t)
    assert [e["name"] for e in trace["traceEvents"] if e["ph"] == "X"] == ["a"]
    assert trace["otherData"]["idle_us"] == pytest.approx(-1.0)


# ---- memory over a run ---------------------------------------------------------------------------------
def test_memory_series_indexes_counters_by_step(step):
    eng, _ = step
    results = [eng.step(timed=False) for _ in range(3)]
    df = memory_series(results)
    assert list(df.index) == [0, 1, 2] and df.index.name == "step"
    assert list(df.columns) == list(eng.memory()) and (df["weights"] == eng.memory()["weights"]).all()
    mixed = memory_series([{"a": 1}, {"a": 2, "b": 5}])
    assert mixed["a"].tolist() == [1, 2] and np.isnan(mixed.loc[0, "b"]) and mixed.loc[1, "b"] == 5


# ---- notebook tables -----------------------------------------------------------------------------------
def test_step_timings_and_results_show_tables_in_a_notebook(step):
    _, res = step
    h = res.timings._repr_html_()
    assert "<table" in h and "MUL_MAT" in h and "host mode" in h and "wall" in h
    assert StepTimings()._repr_html_().count("<table") == 0
    r = res._repr_html_()
    assert f"token {res.token}" in r and f"position {res.position}" in r and "<table" in r
    top = top_ops(res.timings, 5)
    assert all(op in r for op in top.index) and "memory" in r
    assert len(repr(res)) < 300 and "<" not in repr(res.timings)
