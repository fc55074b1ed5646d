"""Per-op timing records: the mode they were taken in, the run's wall time and the row for what the
per-op sum does not explain."""

import pytest

from rocmforge.engine import Engine
from rocmforge.profile import IDLE, OpTiming, StepTimings, timings_frame, top_ops
from rocmforge.synth import write_tiny_model


def _recs(*us):
    return [OpTiming(f"n{i}", op, (4,), u) for i, (op, u) in enumerate(us)]


def test_idle_row_makes_the_frame_add_up_to_the_wall_time():
    t = StepTimings(_recs(("MUL_MAT", 30.0), ("ADD", 5.0), ("MUL_MAT", 40.0)), "graph", wall_us=100.0)
    assert t.sum_us == 75.0 and t.idle_us == 25.0
    df = timings_frame(t)
    assert len(df) == 4 and df["us"].sum() == pytest.approx(100.0)
    assert df.iloc[-1]["op"] == IDLE
    top = top_ops(t, 5)
    assert list(top.index) == ["MUL_MAT", IDLE, "ADD"]
    assert top.loc["MUL_MAT", "share"] == pytest.approx(0.70)
    assert top.loc[IDLE, "count"] == 0


def test_without_a_wall_time_there_is_no_idle_row():
    t = StepTimings(_recs(("ADD", 5.0)), "eager")
    assert t.idle_us is None and len(timings_frame(t)) == 1
    assert len(timings_frame(_recs(("ADD", 5.0)))) == 1  # a plain list of records


def test_a_negative_remainder_is_kept_not_hidden():
    t = StepTimings(_recs(("ADD", 60.0)), "eager", wall_us=50.0)
    assert timings_frame(t).iloc[-1]["us"] == pytest.approx(-10.0)


def test_modes_are_checked_and_runs_join():
    with pytest.raises(ValueError, match="timing mode"):
        StepTimings([], "wall")
    a = StepTimings(_recs(("ADD", 1.0)), "graph", 3.0)
    a.extend_run(StepTimings(_recs(("MUL", 2.0)), "graph", 4.0))
    assert len(a) == 2 and a.wall_us == 7.0 and a.mode == "graph"
    with pytest.raises(ValueError, match="cannot join"):
        a.extend_run(StepTimings([], "eager", 1.0))
    assert "2 ops" in repr(a) and "graph" in repr(a)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "m.gguf", "llama")


def test_numpy_steps_and_prefills_report_host_timings_with_their_wall_time(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    eng.prefill([1, 2, 3], timed=True)
    pt = eng.prefill_timings
    assert pt.mode == "host" and len(pt) == len(eng.graph(3).ops())
    assert pt.wall_us >= pt.sum_us > 0
    res = eng.step(timed=True)
    assert res.timings.mode == "host" and res.timings.wall_us >= res.timings.sum_us
    assert eng.step().timings == [] and len(repr(res)) < 300  # untimed by default


def test_a_long_prompt_joins_its_chunks_timings(tiny, monkeypatch):
    monkeypatch.setattr("rocmforge.engine.MAX_UBATCH", 4)
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    eng.prefill(list(range(1, 10)), timed=True)  # chunks of 4, 4 and 1 tokens
    n = len(eng.graph(4).ops()) * 2 + len(eng.graph(1).ops())
    assert len(eng.prefill_timings) == n


def test_generate_keeps_the_first_steps_timings(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    list(eng.generate("the cat", max_new_tokens=4))
    st = eng.last_stats
    assert st.timings.mode == "host" and len(st.timings) == len(eng.graph(1).ops())


def test_short_reprs_and_a_timings_frame(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    assert repr(eng).startswith("Engine(") and "position 0/64" in repr(eng) and len(repr(eng)) < 200
    eng.prefill([1, 2])
    res = eng.step(timed=True)
    df = res.timings_frame()
    assert len(df) == len(res.timings) + 1 and df["us"].sum() == pytest.approx(res.timings.wall_us)
    assert "position 3/64" in repr(eng)


def test_costs_count_weights_in_blocks_and_attention_by_the_rows_in_use(tmp_path):
    from gguf import GGMLQuantizationType as Q

    from rocmforge.ir.cost import graph_costs

    path = write_tiny_model(tmp_path / "q.gguf", "llama", wtype=Q.Q8_0, n_embd=64, n_ff=96, tied=False)
    eng = Engine.from_gguf(path, backend="numpy", max_ctx=64, fuse=False)  # one MUL_MAT per weight
    g = eng.graph(1)
    node = {t.name: t for t in g.nodes}
    c = graph_costs(g, n_kv=5)
    up = c["blk.0.ffn_up"]
    assert up.read == 96 * 64 // 32 * 34 + 64 * 4 and up.written == 96 * 4 and up.flops == 2 * 96 * 64
    mms = [n for n in c if node[n].op.value == "MUL_MAT"]
    mats = sum(t.n_bytes for n, t in eng.model.tensors.items()
               if len(t.shape) == 2 and n != "token_embd.weight")
    assert sum(c[n].read for n in mms) - mats == sum(node[n].src[1].n_elements * 4 for n in mms)
    cfg = eng.config
    att5, att50 = c["blk.0.attn"], graph_costs(g, n_kv=50)["blk.0.attn"]
    kv_row = 2 * cfg.n_head_kv * cfg.head_dim * 4
    assert att50.read - att5.read == 45 * kv_row and att50.flops == 10 * att5.flops
    assert c["blk.0.k_heads"].bytes == 0  # an alias moves nothing


def test_timed_steps_carry_costs_into_the_frame_and_summaries(tiny):
    from rocmforge.profile import summary

    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    eng.prefill([1, 2])
    df = eng.step(timed=True).timings_frame()
    assert {"layer", "bytes_read", "bytes_written", "flops", "GB/s", "GFLOP/s"} <= set(df.columns)
    mm = df[df.op == "MUL_MAT"]
    assert (mm.bytes_read > 0).all() and (mm.flops > 0).all()
    assert set(df.layer) == {-1, 0, 1}
    s = summary(eng.step(timed=True).timings, by="layer")
    assert s.loc[0, "count"] == s.loc[1, "count"] and s["share"].sum() == pytest.approx(1.0)
