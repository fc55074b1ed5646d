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

from typing import Any


def event_nodes_unavailable(is_hip: bool) -> str | None:
    """Why event-record nodes cannot be captured here (None: they can)."""
    if is_hip:
        return "HIP: event-record nodes are not wired up (eager per-op timing instead)"
    try:
        from cuda.bindings import driver  # noqa: F401
    except ImportError:
        return "cuda-bindings is not installed (pip install cuda-bindings)"
    return None


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
