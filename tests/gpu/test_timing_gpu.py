"""Per-op timings on the GPU: in the default mode (trace where cupti-python works, else graph) they add up
to the replayed step's device time; trace mode lays CUPTI's records of the untimed replay onto the right
steps; timed runs compute what untimed ones do, and eager timing stays available and says what it is."""

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
    if kw.get("timing") == "trace" and be.trace_unavailable:
        pytest.skip(f"timing='trace': {be.trace_unavailable}")
    if be.event_nodes_unavailable and kw.get("timing") != "eager":
        pytest.skip(be.event_nodes_unavailable)
    return Engine.from_gguf(path, backend=be, max_ctx=128)


def _mode(eng):
    """The mode the last timed run was taken in: the backend's, unless tracing failed (then graph, and
    why is in timing_failures())."""
    be = eng.backend
    return "graph" if be.timing == "trace" and be.timing_failures() else be.timing


def _decode_ratios(eng, mode=None):
    """sum / wall of 7 timed decode steps after a prompt and 3 untimed steps, in `mode` (None: the
    backend's, _mode)."""
    eng.prefill(list(range(1, 33)))
    for _ in range(3):
        eng.step(timed=False)
    ratios = []
    for _ in range(7):
        tm = eng.step(timed=True).timings
        why = eng.backend.timing_failures()
        assert tm.mode == (mode or _mode(eng)) and len(tm) == len(eng.graph(1).ops()), (tm.mode, why)
        assert all(t.us >= 0 for t in tm)
        ratios.append(tm.sum_us / tm.wall_us)
    mm = [t.us for t in tm if "MUL_MAT" in t.op]  # (norm-folded or not)
    assert mm and min(mm) > 0  # every mat-vec got its own interval
    return ratios, tm


def test_default_timings_add_up_to_the_replayed_step(small):
    eng = _engine(small)
    ratios, tm = _decode_ratios(eng)
    assert abs(statistics.median(ratios) - 1) <= 0.10, (tm.mode, eng.backend.timing_failures(), ratios)


def test_default_timings_of_a_prompt_add_up(small):
    eng = _engine(small)
    ids = list(range(1, 65))
    eng.prefill(ids)
    eng.reset()
    eng.prefill(ids, timed=True)
    pt = eng.prefill_timings
    assert pt.mode == _mode(eng) and len(pt) == len(eng.graph(64).ops())
    assert abs(pt.sum_us / pt.wall_us - 1) <= 0.10, (pt.mode, pt.sum_us, pt.wall_us)


# the entry point each op's own kernel starts with (copies that make its sources contiguous come before it)
KERNEL_OF = {"MUL_MAT": "mul_mat", "QUANTIZE_X8": "quantize_x8", "RMS_NORM": "rms_norm", "ROPE": "rope",
             "FLASH_ATTN_EXT": "flash_attn", "SET_ROWS": "set_rows", "GET_ROWS": "get_rows", "ADD": "add_",
             "MUL": "mul_", "SCALE": "scale_", "SILU": "silu_", "SWIGLU": "swiglu_", "SOFT_MAX": "soft_max",
             "ARGMAX": "argmax", "CPY": "copy_", "CONT": "copy_", "MUL_MAT_ADD": "mul_mat",
             "RMS_NORM_MUL": "rms_norm_mul", "RMS_NORM_MUL_QUANTIZE_X8": "rms_norm_mul_quantize_x8",
             "RMS_NORM_MUL_MAT": "mul_mat", "RMS_NORM_MUL_MAT_ADD": "mul_mat"}


@pytest.mark.parametrize("int8", [False, True], ids=["f32-x", "int8-x"])
def test_trace_lays_the_untimed_replays_kernels_onto_their_ops(small, wide, int8):
    eng = _engine(wide if int8 else small, timing="trace", int8_activations=int8)
    be = eng.backend
    ratios, tm = _decode_ratios(eng, "trace")
    assert not be.timing_failures(), be.timing_failures()
    assert abs(statistics.median(ratios) - 1) <= 0.10, ratios
    # the records of the last step: one group per op, in order; each op's own kernel where it should be
    assert [n for n, _ in be.last_trace] == [t.name for t in tm]
    for t, (_, recs) in zip(tm, be.last_trace, strict=True):
        names = [r.name for r in recs]
        if t.op in ("VIEW", "RESHAPE"):
            assert not recs, (t.name, names)
        if t.op in KERNEL_OF:
            assert names and names[-1].startswith(KERNEL_OF[t.op]), (t.name, names)
        if t.op == "FLASH_ATTN_EXT":  # over splits too: one kernel (its last block combines)
            assert len([n for n in names if n.startswith("flash_attn")]) == 1, names
    # the ops add up to the traced replay's span; each holds its kernels' own time
    allr = [r for _, recs in be.last_trace for r in recs]
    span = (max(r.end for r in allr) - min(r.start for r in allr)) / 1e3
    assert tm.sum_us == pytest.approx(span, rel=1e-9)
    assert all(t.kernel_us is not None and 0 <= t.kernel_us for t in tm)
    kern = sum(t.kernel_us for t in tm)
    assert kern > 0
    if not be.ctx.pdl:  # one kernel after another (no programmatic launch): their times fit in the span
        assert kern <= span * (1 + 1e-9), (kern, span)


def test_trace_of_a_prompt_adds_up(small):
    eng = _engine(small, timing="trace")
    ids = list(range(1, 65))
    eng.prefill(ids)
    eng.reset()
    eng.prefill(ids, timed=True)
    pt = eng.prefill_timings
    assert pt.mode == "trace", eng.backend.timing_failures()
    assert len(pt) == len(eng.graph(64).ops())
    assert abs(pt.sum_us / pt.wall_us - 1) <= 0.10, (pt.sum_us, pt.wall_us)


@pytest.mark.parametrize("timing", ["trace", "graph", "eager"])
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
            assert r.timings.mode == (timing if timed else ""), eng.backend.timing_failures()
        runs.append((np.concatenate(rows), toks))
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def test_eager_timing_reports_the_replayed_step_beside_it(small):
    eng = _engine(small, timing="eager")
    eng.prefill([1, 2, 3])
    eng.step(timed=False)
    tm = eng.step(timed=True).timings
    assert tm.mode == "eager" and tm.wall_us > 0 and tm.idle_us == tm.wall_us - tm.sum_us


def test_the_default_mode_is_trace_where_cupti_python_works():
    be = HipBackend()
    assert be.timing == ("trace" if not be.trace_unavailable else "graph" if not be.event_nodes_unavailable
                         else "eager"), (be.trace_unavailable, be.event_nodes_unavailable)


def test_an_unknown_timing_mode_is_refused():
    with pytest.raises(ValueError, match="timing"):
        HipBackend(timing="wall")
