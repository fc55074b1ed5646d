"""timing="trace" without a GPU: CUPTI records of one replay laid onto the steps by the nodes each step
added to the capture, per-op times that add up to the replay's span, foreign records dropped, CUPTI on
only around the replay, the choice of mode, and the fall back to event-node timing, with the reason,
where cupti-python is missing or the records do not match the graph."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from rocmforge.backends.hip import cupti_trace, timing
from rocmforge.backends.hip.timing import TraceError, TraceRecord
from rocmforge.ir.ops import Op
from rocmforge.profile import OpTiming, StepTimings, chrome_trace, timings_frame


def _step(name: str, op: Op, launches: bool = True):
    node = types.SimpleNamespace(name=name, op=op, shape=(1, 4))
    return types.SimpleNamespace(node=node, launch=(lambda *a, **k: None) if launches else None)


# a decode step in miniature: norm, mat-vec, a view (nothing launched), attention (two kernels: the split
# pass and the combine), a mat-vec started while the attention's combine ends (programmatic launch)
STEPS = [_step("norm", Op.RMS_NORM), _step("q", Op.MUL_MAT), _step("q_view", Op.VIEW, launches=False),
         _step("attn", Op.FLASH_ATTN_EXT), _step("out", Op.MUL_MAT)]
COUNTS = [1, 1, 0, 2, 1]


def _replay(t: int = 1_000_000, corr: int = 7) -> list[TraceRecord]:
    """The 5 kernels of one replay from t ns on (gaps of 1-2 us; the last overlaps the one before)."""
    spans = [(0, 3000), (4000, 14000), (15500, 25500), (26500, 28500), (28000, 40000)]
    names = ["rms_norm_f32", "mul_mat_vec_q4_0", "copy_f32_f32", "flash_attn_f32", "mul_mat_vec_q4_0"]
    return [TraceRecord(t + a, t + b, corr, 3, n) for (a, b), n in zip(spans, names, strict=True)]


def test_records_map_to_steps_by_their_node_counts_and_add_up_to_the_span():
    recs = timing.replay_records(list(reversed(_replay())), 999_000, 2_000_000, 5)
    assert [r.start for r in recs] == sorted(r.start for r in recs)  # launch order, whatever the delivery
    groups = timing.split_records(recs, COUNTS)
    assert [len(g) for g in groups] == COUNTS
    assert [r.name for r in groups[3]] == ["copy_f32_f32", "flash_attn_f32"]  # a strided q made contiguous
    ops = timing.trace_records(STEPS, groups)
    assert [o.name for o in ops] == ["norm", "q", "q_view", "attn", "out"]
    # us: the step's last end minus the end before it (the first: minus the first start)
    assert [o.us for o in ops] == pytest.approx([3.0, 11.0, 0.0, 14.5, 11.5])
    assert [o.kernel_us for o in ops] == pytest.approx([3.0, 10.0, 0.0, 12.0, 12.0])
    assert sum(o.us for o in ops) == pytest.approx(timing.span_us(recs)) == pytest.approx(40.0)
    assert ops[1].op == "MUL_MAT" and ops[1].shape == (1, 4)


def test_an_end_before_the_previous_end_costs_nothing_and_the_sum_still_spans():
    a, b, c = TraceRecord(0, 10_000), TraceRecord(2_000, 8_000), TraceRecord(9_000, 12_000)
    ops = timing.trace_records(STEPS[:2] + STEPS[3:4], [[a], [b], [c]])
    assert [o.us for o in ops] == pytest.approx([10.0, 0.0, 2.0])
    assert sum(o.us for o in ops) == pytest.approx(12.0)


def test_foreign_records_are_dropped_by_window_and_by_correlation():
    ours = _replay(t=1_000_000, corr=7)
    before = _replay(t=900_000, corr=6)  # the warm-up replay, before the window opens
    after = [TraceRecord(5_000_000, 5_001_000, 9, 0, "other")]
    inside = [TraceRecord(1_010_000, 1_011_000, 8, 0, "another_thread")]  # in the window, its own launch
    got = timing.replay_records(before + ours + inside + after, 999_000, 1_050_000, 5)
    assert got == ours
    # a record that ends past the window (clock conversion) but starts in it is still ours
    late = ours[:-1] + [TraceRecord(ours[-1].start, 1_060_000, 7, 3, "mul_mat_vec_q4_0")]
    assert len(timing.replay_records(late, 999_000, 1_050_000, 5)) == 5


def test_records_that_do_not_match_the_graph_are_refused():
    with pytest.raises(TraceError, match="no records"):
        timing.replay_records([], 0, 10, 5)
    with pytest.raises(TraceError, match="5 graph nodes"):
        timing.replay_records(_replay()[:4], 0, 10**9, 5)  # one kernel missing
    two = _replay(corr=7) + _replay(t=1_000_100, corr=8)  # two launches in the window: which one?
    with pytest.raises(TraceError):
        timing.replay_records(two, 0, 10**9, 5)
    with pytest.raises(TraceError, match="4 records for 5"):
        timing.split_records(_replay()[:4], COUNTS)


def test_the_trace_mode_is_preferred_then_graph_then_eager():
    assert timing.choose_mode(None, {"trace": None, "graph": None}) == "trace"
    assert timing.choose_mode(None, {"trace": "no cupti", "graph": None}) == "graph"
    assert timing.choose_mode(None, {"trace": "HIP", "graph": "HIP"}) == "eager"
    assert timing.choose_mode("graph", {"trace": None, "graph": None}) == "graph"
    assert timing.choose_mode("eager", {"trace": "x", "graph": "y"}) == "eager"
    with pytest.raises(RuntimeError, match="no cupti"):
        timing.choose_mode("trace", {"trace": "no cupti"})
    with pytest.raises(ValueError, match="timing"):
        timing.choose_mode("wall", {})


def test_trace_is_unavailable_on_hip_and_without_cupti_python(monkeypatch):
    assert "HIP" in cupti_trace.trace_unavailable(is_hip=True)
    monkeypatch.setitem(sys.modules, "cupti", None)  # import cupti raises ImportError
    why = cupti_trace.trace_unavailable(is_hip=False)
    assert why and "cupti-python is not installed" in why


def test_libcupti_is_looked_for_in_the_toolkits_extras(tmp_path):
    lib = tmp_path / "cuda" / "extras" / "CUPTI" / "lib64"
    lib.mkdir(parents=True)
    for f in ("libcupti.so", "libcupti.so.13", "libcupti.so.2026.1.0", "libcupti.so.12"):
        (lib / f).write_bytes(b"")
    bindir = tmp_path / "nvcc_root" / "bin"
    bindir.mkdir(parents=True)
    (tmp_path / "nvcc_root" / "lib64").mkdir()
    (tmp_path / "nvcc_root" / "lib64" / "libcupti.so.13").write_bytes(b"")
    got = cupti_trace.libcupti_candidates({"CUDA_HOME": str(tmp_path / "cuda")}, nvcc=str(bindir / "nvcc"))
    names = [p.rsplit("/", 1)[-1] for p in got[:4]]
    assert names == ["libcupti.so.2026.1.0", "libcupti.so.13", "libcupti.so.12", "libcupti.so"]
    assert got[0].startswith(str(lib)) and str(tmp_path / "nvcc_root" / "lib64" / "libcupti.so.13") in got


def test_libcupti_is_loaded_from_the_toolkit_where_pathfinder_fails(monkeypatch):
    import ctypes

    def no_pathfinder(name):
        raise RuntimeError("not found")

    monkeypatch.setitem(sys.modules, "cuda.pathfinder",
                        types.SimpleNamespace(load_nvidia_dynamic_lib=no_pathfinder))
    files = ["/a/libcupti.so.13", "/b/libcupti.so.13"]
    monkeypatch.setattr(cupti_trace, "libcupti_candidates", lambda: files)
    loaded = []

    def cdll(path, mode=0):
        if path.startswith("/a"):
            raise OSError("wrong ELF class")
        loaded.append((path, mode))

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    assert cupti_trace._preload_libcupti() == "/b/libcupti.so.13"
    assert loaded == [("/b/libcupti.so.13", ctypes.RTLD_GLOBAL)]
    monkeypatch.setattr(cupti_trace, "libcupti_candidates", lambda: [])
    with pytest.raises(OSError, match="not found"):
        cupti_trace._preload_libcupti()


class _FakeCupti:
    """cupti-python's activity API as the tracer uses it: records are made only while enabled and handed
    over on flush, through the registered buffer callback."""

    class ActivityKind:
        CONCURRENT_KERNEL, KERNEL, MEMCPY, MEMSET, RUNTIME = 10, 3, 1, 2, 5

    class ActivityFlag:
        FLUSH_FORCED = 1

    def __init__(self) -> None:
        self.enabled: set[int] = set()
        self.pending: list = []
        self.clock = 1_000
        self.calls: list[str] = []
        self.callbacks = None

    def activity_register_callbacks(self, requested, completed) -> None:
        self.callbacks = (requested, completed)

    def activity_enable(self, kind) -> None:
        self.calls.append(f"enable {kind}")
        self.enabled.add(kind)

    def activity_disable(self, kind) -> None:
        self.calls.append(f"disable {kind}")
        self.enabled.discard(kind)

    def activity_flush_all(self, flag) -> None:
        self.calls.append("flush")
        done, self.pending = self.pending, []
        if done:
            self.callbacks[1](done)

    def get_timestamp(self) -> int:
        self.clock += 100
        return self.clock

    def launch(self, names, corr) -> None:
        """A replay: its kernels run now (only recorded while CONCURRENT_KERNEL is enabled)."""
        for n in names:
            start = self.clock + 10
            self.clock += 50
            if self.ActivityKind.CONCURRENT_KERNEL in self.enabled:
                self.pending.append(types.SimpleNamespace(
                    kind=self.ActivityKind.CONCURRENT_KERNEL, start=start, end=self.clock, name=n,
                    correlation_id=corr, graph_id=1))
        if self.ActivityKind.RUNTIME not in self.enabled:  # an API record the tracer must skip
            self.pending.append(types.SimpleNamespace(kind=self.ActivityKind.RUNTIME, start=0, end=0))


def test_activity_is_on_only_around_the_replay_and_foreign_records_are_dropped():
    api = _FakeCupti()
    tracer = cupti_trace.ActivityTracer(api)
    assert api.callbacks is not None and api.callbacks[0]() == (tracer.BUFFER_BYTES, 0)
    api.launch(["before"], corr=1)  # not enabled yet: nothing recorded
    got, t0, t1 = tracer.trace(lambda: api.launch(["a", "b", "c"], corr=3), 3,
                               warmup=lambda: api.launch(["a", "b", "c"], corr=2))
    assert not api.enabled  # off again
    kinds = {10, 1, 2}
    assert {c.split()[1] for c in api.calls if c.startswith("enable")} == {str(k) for k in kinds}
    assert api.calls.index("flush") < api.calls.index("enable 10")  # pending records flushed first
    assert [r.name for r in got] == ["a", "b", "c"] * 2  # the warm-up's too: the window tells them apart
    mine = timing.replay_records(got, t0, t1, 3)
    assert [r.correlation_id for r in mine] == [3, 3, 3]
    api.launch(["after"], corr=4)
    api.activity_flush_all(1)
    assert tracer.trace(lambda: None, 0)[0] == []  # records made while off never come back


def test_the_callbacks_are_registered_once_per_process_and_a_failure_is_kept(monkeypatch):
    monkeypatch.setattr(cupti_trace, "_TRACER", None)
    monkeypatch.setattr(cupti_trace, "_TRACER_FAILED", "")
    apis = []
    monkeypatch.setattr(cupti_trace, "load_cupti", lambda: apis.append(_FakeCupti()) or apis[-1])
    first = cupti_trace.activity_tracer()
    assert cupti_trace.activity_tracer() is first and len(apis) == 1
    cupti_trace.tracer_failed("CUPTI_ERROR_NOT_INITIALIZED")
    with pytest.raises(RuntimeError, match="NOT_INITIALIZED"):
        cupti_trace.activity_tracer()
    monkeypatch.setattr(cupti_trace, "_TRACER", None)
    monkeypatch.setattr(cupti_trace, "_TRACER_FAILED", "")

    def missing():
        raise ImportError("cupti-python is not installed")

    monkeypatch.setattr(cupti_trace, "load_cupti", missing)
    for _ in range(2):  # the first reason, every time
        with pytest.raises(RuntimeError, match="ImportError: cupti-python is not installed"):
            cupti_trace.activity_tracer()


def test_activity_is_turned_off_when_the_replay_raises():
    api = _FakeCupti()
    tracer = cupti_trace.ActivityTracer(api)

    def boom():
        raise RuntimeError("launch failed")

    with pytest.raises(RuntimeError, match="launch failed"):
        tracer.trace(boom, 3)
    assert not api.enabled


class _FakeDriver:
    """cuda-bindings' driver calls NodeCounter makes; `nodes` is the capture graph's node count."""

    class CUresult:
        CUDA_SUCCESS = 0

    class CUstreamCaptureStatus:
        CU_STREAM_CAPTURE_STATUS_ACTIVE = 1

    def __init__(self) -> None:
        self.nodes = 0
        self.fail = False

    def CUstream(self, ptr):
        return ptr

    def cuStreamGetCaptureInfo(self, stream):
        if self.fail:
            return (700, 0, 0, None, [], [], 0)
        return (0, 1, 5, "graph", [], [], 1)

    def cuGraphGetNodes(self, graph, n):
        assert graph == "graph" and n == 0
        return 0, None, self.nodes


def test_the_nodes_each_step_adds_are_counted():
    cu = _FakeDriver()
    c = cupti_trace.NodeCounter(types.SimpleNamespace(ptr=1), driver=cu)
    for add, launched in zip(COUNTS, [True, True, False, True, True], strict=True):
        cu.nodes += add
        c.step(launched)
    assert c.counts == COUNTS and not c.failed
    cu.fail = True
    c.step()
    assert c.counts is None and "cuStreamGetCaptureInfo" in c.failed
    c.step()  # after a failure: nothing more, no exception inside a capture


# ---- the backend's glue: HipBackend without CuPy, its replays and the tracer faked ----------------------
class _Stream:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def synchronize(self) -> None:
        pass


def _backend(monkeypatch, tracer=None, tracer_error=""):
    from rocmforge.backends.hip.backend import HipBackend
    from rocmforge.backends.hip.plan import Plan

    be = object.__new__(HipBackend)
    be.timing, be.trace_failed, be.event_nodes_unavailable, be.last_trace = "trace", "", None, []
    be.stream, be.cp = _Stream(), None
    monkeypatch.setattr(timing, "replay_us", lambda cp, stream, graph: 50.0)
    graph_mode = StepTimings([OpTiming(s.node.name, s.node.op.value, s.node.shape, 1.0) for s in STEPS],
                             "graph", 50.0)
    monkeypatch.setattr(HipBackend, "_graph_timed", lambda self, plan: graph_mode)

    def activity_tracer():
        if tracer_error:
            raise RuntimeError(tracer_error)
        return tracer

    monkeypatch.setattr(cupti_trace, "activity_tracer", activity_tracer)
    launches = []
    plan = Plan(STEPS, {}, {}, None, None, device_graph=types.SimpleNamespace(
        launch=lambda stream: launches.append(stream)), node_counts=list(COUNTS))
    return be, plan, launches


class _Tracer:
    def __init__(self, records):
        self.records = records

    def trace(self, run, expected, warmup=None):
        assert expected == sum(COUNTS)
        warmup()
        run()
        return self.records, 999_000, 2_000_000


def test_a_traced_step_reports_trace_mode_with_the_replayed_step_as_wall(monkeypatch):
    be, plan, launches = _backend(monkeypatch, _Tracer(_replay()))
    tm = be._replay_timed(plan)
    assert tm.mode == "trace" and tm.wall_us == 50.0 and len(tm) == len(STEPS)
    assert tm.sum_us == pytest.approx(40.0) and tm.idle_us == pytest.approx(10.0)
    assert len(launches) == 2  # the warm-up and the traced replay, both of the untimed graph
    assert [n for n, _ in be.last_trace] == [s.node.name for s in STEPS]
    df = timings_frame(tm)
    assert list(df.columns) == ["name", "op", "layer", "shape", "us", "kernel_us"]
    assert df["us"].sum() == pytest.approx(50.0) and df["kernel_us"].iloc[:-1].sum() == pytest.approx(37.0)
    assert chrome_trace(tm)["traceEvents"][3]["args"]["kernel_us"] == pytest.approx(10.0)


def test_without_cupti_a_timed_step_falls_back_to_event_nodes_and_says_why(monkeypatch, caplog):
    be, plan, _ = _backend(monkeypatch, tracer_error="ImportError: cupti-python is not installed")
    with caplog.at_level(logging.WARNING, logger="rocmforge.hip"):
        tm = be._replay_timed(plan)
    assert tm.mode == "graph"
    assert "cupti-python is not installed" in be.trace_failed and "cupti-python" in caplog.text
    assert not be._traces()  # not tried again by this backend
    assert be._replay_timed(plan).mode == "graph"


def test_records_that_do_not_match_fall_back_for_that_plan_only(monkeypatch, caplog):
    be, plan, _ = _backend(monkeypatch, _Tracer(_replay()[:4]))
    with caplog.at_level(logging.WARNING, logger="rocmforge.hip"):
        tm = be._replay_timed(plan)
    assert tm.mode == "graph" and "5 graph nodes" in plan.trace_failed and not be.trace_failed
    assert "timing with event nodes" in caplog.text


def test_a_tracer_that_raises_is_given_up_for_the_process(monkeypatch):
    class Broken:
        def trace(self, run, expected, warmup=None):
            raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    monkeypatch.setattr(cupti_trace, "_TRACER_FAILED", "")
    be, plan, _ = _backend(monkeypatch, Broken())
    assert be._replay_timed(plan).mode == "graph"
    assert "CUPTI_ERROR_NOT_INITIALIZED" in be.trace_failed
    assert "CUPTI_ERROR_NOT_INITIALIZED" in cupti_trace._TRACER_FAILED
    assert cupti_trace.trace_unavailable(is_hip=True)  # HIP says HIP, whatever failed


def test_op_timings_without_kernel_times_keep_their_frame():
    t = StepTimings([OpTiming("a", "ADD", (1,), 2.0)], "graph", 3.0)
    assert "kernel_us" not in timings_frame(t).columns
    assert "kernel_us" not in chrome_trace(t)["traceEvents"][2]["args"]


def test_kernel_times_come_back_from_the_csv(tmp_path):
    import pandas as pd

    from rocmforge.report import step_timings

    recs = [OpTiming("a", "ADD", (1,), 2.0, 1.5), OpTiming("v", "VIEW", (1,), 0.0, 0.0)]
    t = StepTimings(recs, "trace", 3.0)
    timings_frame(t).to_csv(tmp_path / "ops.csv", index=False)
    back = step_timings(pd.read_csv(tmp_path / "ops.csv"), "trace", 3.0)
    assert list(back) == list(t) and back.mode == "trace" and back.idle_us == pytest.approx(1.0)
