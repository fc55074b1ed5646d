"""Per-op timing of a step: the modes a timed run measures in (profile.TIMING_MODES) and their records.

- "trace" (CUDA with cupti-python, the default there): the untimed captured device graph itself, replayed
  once with CUPTI activity tracing on (cupti_trace.py). Each kernel (memcpy, memset) node gives a record
  with its start and end on the device; sorted by start, they are laid onto the steps in order by the
  number of nodes each step added to the capture (cupti_trace.NodeCounter). An op's time is the end of
  its last kernel minus the end of the last kernel before it (the first op: minus the first kernel's
  start): its kernels' time plus the gap the replayed step pays before them, so the per-op times add up
  to the traced replay's span, and nothing was added to the step to measure it. `kernel_us` keeps the
  kernels' own time (the sum of their end - start; a kernel launched programmatically, pdl.py, starts
  while the one before it ends, so its own time includes its wait for that kernel: kernel times may then
  add up to more than the span, the per-op times never do).
- "graph" (CUDA with cuda-bindings, where tracing is not available or failed): the step captured once
  more with an event-record node (cuEventRecordWithFlags, CU_EVENT_RECORD_EXTERNAL) after each launching
  node, replayed; an op's time is the span from the event before it to the event after it. The kernels
  run back to back as in the replayed step, but each event node costs time too (about 2.8 us on an
  H100), which the per-op times carry. CuPy's Event.record makes no node during capture, so the record
  goes through the driver API.
- "eager" (ROCm, or asked for): device events around each Python launch, so each op's time also holds
  the wait for its launch when Python issues kernels slower than the GPU runs them (2.5-5.7x the replayed
  step on an H100).

Every mode reports the untimed replayed step's device time beside the per-op times (`replay_us`, the
wall time of StepTimings), so that what the per-op sum does not explain shows as the IDLE row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


MODES = ("trace", "graph", "eager")  # the HIP backend's timing modes, the preferred first


def choose_mode(timing: str | None, unavailable: Mapping[str, str | None]) -> str:
    """The timing mode asked for (one of MODES); None: the first of MODES that can be used here.
    unavailable: mode -> why it cannot be used here (None or absent: it can; eager always can)."""
    if timing is None:
        return next(m for m in MODES if m == "eager" or not unavailable.get(m))
    if timing not in MODES:
        raise ValueError(f"timing={timing!r}: choose one of {', '.join(map(repr, MODES))}")
    if unavailable.get(timing) and timing != "eager":
        raise RuntimeError(f"timing={timing!r}: {unavailable[timing]}")
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


# ---- trace mode: CUPTI records of the untimed replay laid onto the steps ---------------------------------
@dataclass(frozen=True)
class TraceRecord:
    """One CUPTI activity record: a kernel (memcpy, memset) node's start and end in ns on CUPTI's clock
    (never to be mixed with CuPy events' times), the correlation id of the launch it came from (a graph
    launch: every node of the replay shares it), its graph's id (0: not from a graph), its name."""

    start: int
    end: int
    correlation_id: int = 0
    graph_id: int = 0
    name: str = ""
    kind: str = "kernel"  # kernel, memcpy, memset


class TraceError(RuntimeError):
    """The records of a traced replay do not match its graph's nodes."""


def replay_records(records: Sequence[TraceRecord], t0: int, t1: int, expected: int) -> list[TraceRecord]:
    """The `expected` records of one replay, sorted by start (then end): those that start inside
    [t0, t1] (CUPTI timestamps taken before the launch and after its synchronize: by start, since a
    record's end may lie past t1 by the skew of CUPTI's device-to-host clock conversion), and of these,
    where there are more, the one correlation id with exactly `expected` records (one graph launch: all
    its nodes share the launch's id). Raises TraceError where that leaves no unique answer."""
    inside = [r for r in records if t0 <= r.start <= t1 and r.start <= r.end]
    if len(inside) != expected:
        groups: dict[int, list[TraceRecord]] = {}
        for r in inside:
            groups.setdefault(r.correlation_id, []).append(r)
        fits = [g for g in groups.values() if len(g) == expected]
        if len(fits) != 1:
            if not records:
                raise TraceError(f"CUPTI delivered no records for a replay of {expected} graph nodes")
            sizes = {k: len(g) for k, g in groups.items()}
            raise TraceError(f"{len(inside)} records in the replay's window ({len(records)} delivered), "
                             f"{expected} graph nodes; records per correlation id: {sizes}")
        inside = fits[0]
    return sorted(inside, key=lambda r: (r.start, r.end))


def split_records(records: Sequence[TraceRecord], counts: Sequence[int]) -> list[list[TraceRecord]]:
    """Records in launch order cut into consecutive runs of counts[i] (the nodes step i added to the
    capture; 0 for a step that launches nothing)."""
    if sum(counts) != len(records) or any(c < 0 for c in counts):
        raise TraceError(f"{len(records)} records for {sum(counts)} graph nodes")
    out, i = [], 0
    for c in counts:
        out.append(list(records[i : i + c]))
        i += c
    return out


def trace_records(steps: Sequence[Any], groups: Sequence[Sequence[TraceRecord]]) -> list[OpTiming]:
    """One OpTiming per step (`.node`) from its records (groups[i], sorted by start): us = the end of its
    last kernel minus the latest end before it (the first step's: the first kernel's start), so the times
    add up to the span from the first start to the last end; kernel_us = the sum of its kernels' own
    times. A step with no records: 0 us. Times in microseconds."""
    starts = [r.start for g in groups for r in g]
    prev = min(starts) if starts else 0
    out = []
    for st, g in zip(steps, groups, strict=True):
        us = kern = 0.0
        if g:
            end = max(r.end for r in g)
            us = max(end - prev, 0) / 1e3
            prev = max(prev, end)
            kern = sum(r.end - r.start for r in g) / 1e3
        out.append(OpTiming(st.node.name, st.node.op.value, st.node.shape, us, kern))
    return out


def span_us(records: Sequence[TraceRecord]) -> float:
    """First start to last end, in microseconds (0 without records)."""
    if not records:
        return 0.0
    return (max(r.end for r in records) - min(r.start for r in records)) / 1e3
