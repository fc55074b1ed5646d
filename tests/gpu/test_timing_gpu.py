"""Per-op timings on the GPU: in graph mode they add up to the replayed step's device time, timed runs
compute what untimed ones do, and eager timing stays available and says what it is."""

import statistics

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.backends.hip import HipBackend, gpu_available
from rocmforge.engine import Engine
from rocmforge.synth import write_tiny_model

ok, why = gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ok, reason=f"no GPU: {why}")]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """SmolLM2-135M's layer shapes, 6 layers."""
    return write_tiny_model(tmp_path_factory.mktemp("t") / "s.gguf", "llama", n_layer=6, n_embd=576,
                            n_head=9, n_head_kv=3, n_ff=1536, wtype=Q.Q4_0, seed=3)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Rows enough for the int8 whole-row mat-vec (programmatic dependent launch on sm_90+)."""
    return write_tiny_model(tmp_path_factory.mktemp("t") / "w.gguf", "llama", n_layer=1, n_embd=2048,
                            n_head=16, n_head_kv=4, n_ff=5632, wtype=Q.Q4_0, seed=4)


def _engine(path, **kw):
    be = HipBackend(**kw)
    if be.event_nodes_unavailable and kw.get("timing") != "eager":
        pytest.skip(be.event_nodes_unavailable)
    return Engine.from_gguf(path, backend=be, max_ctx=128)


def test_graph_timings_add_up_to_the_replayed_step(small):
    eng = _engine(small)
    eng.prefill(list(range(1, 33)))
    for _ in range(3):
        eng.step(timed=False)
    ratios = []
    for _ in range(7):
        tm = eng.step(timed=True).timings
        assert tm.mode == "graph" and len(tm) == len(eng.graph(1).ops())
        assert all(t.us >= 0 for t in tm)
        ratios.append(tm.sum_us / tm.wall_us)
    assert abs(statistics.median(ratios) - 1) <= 0.10, ratios
    mm = [t.us for t in tm if t.op == "MUL_MAT"]
    assert min(mm) > 0  # every kernel node got its own interval


def test_graph_timings_of_a_prompt_add_up(small):
    eng = _engine(small)
    ids = list(range(1, 65))
    eng.prefill(ids)
    eng.reset()
    eng.prefill(ids, timed=True)
    pt = eng.prefill_timings
    assert pt.mode == "graph" and len(pt) == len(eng.graph(64).ops())
    assert abs(pt.sum_us / pt.wall_us - 1) <= 0.10, (pt.sum_us, pt.wall_us)


@pytest.mark.parametrize("timing", ["graph", "eager"])
@pytest.mark.parametrize("int8", [False, True], ids=["f32-x", "int8-x"])
def test_timed_runs_compute_what_untimed_runs_do(small, wide, timing, int8):
    path = wide if int8 else small
    ids = [5, 9, 2, 77, 31]
    runs = []
    for timed in (False, True):
        eng = _engine(path, timing=timing, int8_activations=int8)
        rows = [eng.prefill(ids, all_logits=True, timed=timed)]
        toks = []
        for _ in range(6):
            r = eng.step(timed=timed)
            rows.append(r.logits[None])
            toks.append(r.token)
            assert r.timings.mode == (timing if timed else "")
        runs.append((np.concatenate(rows), toks))
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def test_eager_timing_reports_the_replayed_step_beside_it(small):
    eng = _engine(small, timing="eager")
    eng.prefill([1, 2, 3])
    eng.step(timed=False)
    tm = eng.step(timed=True).timings
    assert tm.mode == "eager" and tm.wall_us > 0 and tm.idle_us == tm.wall_us - tm.sum_us


def test_an_unknown_timing_mode_is_refused():
    with pytest.raises(ValueError, match="timing"):
        HipBackend(timing="wall")
