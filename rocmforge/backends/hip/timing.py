"""Per-op timing inside a replayed device graph: an event-record node after every kernel node.

An eager timed run puts device events around each Python launch, so each op's time also holds the wait
for its launch when Python issues kernels slower than the GPU runs them (2.5-5.7x the replayed step on
an H100). Here the step is captured once more with an event-record node (cuEventRecordWithFlags,
CU_EVENT_RECORD_EXTERNAL) after each launching node and replayed: the kernels run back to back as in the
replayed step, and an op's time is the span from the event before it to the event after it, so the
per-op times add up to the timed replay's span. CuPy's Event.record makes no node during capture, so
the record goes through the driver API (cuda-bindings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...profile import OpTiming


def event_nodes_unavailable(is_hip: bool) -> str | None:
    """Why event-record nodes cannot be captured here (None: they can)."""
    if is_hip:
        return "HIP: event-record nodes are not wired up (eager per-op timing instead)"
    try:
        from cuda.bindings import driver  # noqa: F401
    except ImportError:
        return "cuda-bindings is not installed (pip install cuda-bindings)"
    return None


def choose_mode(timing: str | None, unavailable: str | None) -> str:
    """The timing mode asked for (profile.TIMING_MODES' "graph" or "eager"), None: graph where it can."""
    if timing is None:
        return "eager" if unavailable else "graph"
    if timing not in ("graph", "eager"):
        raise ValueError(f"timing={timing!r}: choose 'graph' or 'eager'")
    if timing == "graph" and unavailable:
        raise RuntimeError(f"timing='graph': {unavailable}")
    return timing


class EventMarks:
    """n events, created before the capture, recorded as graph nodes on the capturing stream in turn."""

    def __init__(self, cupy: Any, stream: Any, n: int) -> None:
        from cuda.bindings import driver as cu

        self._cu, self._stream = cu, stream
        self._flag = cu.CUevent_record_flags.CU_EVENT_RECORD_EXTERNAL
        self.events = [cupy.cuda.Event() for _ in range(n)]
        self._next = 0

    def mark(self) -> Any:
        """Record the next event into the capture; returns it."""
        cu = self._cu
        if self._next == len(self.events):
            raise IndexError(f"all {len(self.events)} events are recorded")
        ev = self.events[self._next]
        self._next += 1
        (err,) = cu.cuEventRecordWithFlags(cu.CUevent(ev.ptr), cu.CUstream(self._stream.ptr), self._flag)
        if err != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuEventRecordWithFlags (event-record node) failed: {err}")
        return ev


def elapsed_us(cupy: Any, e0: Any, e1: Any) -> float:
    """Device time between two recorded events, in microseconds (events resolve about 0.5 us)."""
    return float(cupy.cuda.get_elapsed_time(e0, e1)) * 1e3


def replay_us(cupy: Any, stream: Any, graph: Any) -> float:
    """Device time of one replay of a captured graph: replayed twice, the second timed, so that the host's
    graph launch overlaps the first replay instead of showing as idle time (running a step again writes
    the same KV rows with the same values: it changes nothing)."""
    e1, e2 = cupy.cuda.Event(), cupy.cuda.Event()
    with stream:
        graph.launch(stream)
        e1.record(stream)
        graph.launch(stream)
        e2.record(stream)
    e2.synchronize()
    return elapsed_us(cupy, e1, e2)


def records(cupy: Any, steps: Sequence[Any], events: Sequence[Any], marks: bool) -> list[OpTiming]:
    """One OpTiming per step (`.node`): marks, events[0] before the first step and then the event after
    each step (the span from the last event before it); else an (e0, e1) pair around each launch. None
    for a step that launches nothing: 0 us."""
    out, last = [], events[0] if marks else None
    for st, ev in zip(steps, events[1:] if marks else events, strict=True):
        us = 0.0
        if ev is not None and marks:
            us, last = elapsed_us(cupy, last, ev), ev
        elif ev is not None:
            us = elapsed_us(cupy, ev[0], ev[1])
        out.append(OpTiming(st.node.name, st.node.op.value, st.node.shape, us))
    return out
