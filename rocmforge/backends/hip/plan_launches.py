"""The HIP backend's launch loop (HipBackend's base): every launching step of a plan in order, eagerly
(optionally between device events) or captured as one device graph to replay."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...ir.ops import ITEMSIZE, WRITES_ROWS
from . import cupti_trace
from . import timing as timing_mod
from .plan import Plan
from .tensor import DevTensor

# bit patterns that poison a buffer (NaN for floats, INT_MIN for i32)
_POISON = {"f32": (np.uint32, 0x7FC00000), "f16": (np.uint16, 0x7E00), "i32": (np.uint32, 0x80000000)}


class PlanLaunches:
    """Methods of HipBackend that launch a plan's steps; they use its cp, stream, ctx and debug_poison."""

    cp: Any
    stream: Any
    ctx: Any
    debug_poison: bool

    def _poison(self, t: DevTensor) -> None:
        dt, bits = _POISON[t.dtype]
        n = t.n_elements * ITEMSIZE[t.dtype] // np.dtype(dt).itemsize
        t.buf[t.offset : t.offset + n * np.dtype(dt).itemsize].view(dt).fill(bits)

    def _launch_all(
        self,
        plan: Plan,
        timed: bool,
        marks: timing_mod.EventMarks | None = None,
        counter: cupti_trace.NodeCounter | None = None,
    ) -> list:
        """Launch every step. timed: device events around each launch (eager timing); marks: an event
        recorded into the capture before the first step and after each launching step (graph timing);
        counter: the capture's nodes counted after each step (trace timing)."""
        events: list = []
        if marks is not None:
            events.append(marks.mark())
        for st in plan.steps:
            if st.launch is None:
                events.append(None)
                if counter is not None:
                    counter.step(launched=False)
                continue
            if self.debug_poison and st.node.op not in WRITES_ROWS and st.node.id not in plan.ir_plan.inplace:
                self._poison(st.out)
            if timed:
                e0, e1 = self.cp.cuda.Event(), self.cp.cuda.Event()
                e0.record()
            self.ctx.begin_node((id(plan), st.node.id))  # scratch the launcher takes is the node's own
            st.launch(self.ctx, st.out, *st.srcs, **st.node.params)
            if counter is not None:
                counter.step()
            if timed:
                e1.record()
                events.append((e0, e1))
            elif marks is not None:
                events.append(marks.mark())
        self.ctx.begin_node(None)
        return events

    def _capture(
        self, plan: Plan, marks: timing_mod.EventMarks | None = None, count: bool = False
    ) -> Any:
        """Record every launch of the plan as one device graph (CUDA/HIP graph) to replay; with marks, an
        event-record node before the first step and after each launching step (plan.timed_events); count:
        the nodes each step adds, in plan.node_counts (None, and plan.trace_failed, where they cannot be
        counted: the capture itself goes on)."""
        counter = None
        if count:
            try:
                counter = cupti_trace.NodeCounter(self.stream)
            except Exception as e:
                plan.trace_failed = f"counting capture nodes: {type(e).__name__}: {e}"
        with self.stream:
            self.stream.begin_capture()
            try:
                events = self._launch_all(plan, timed=False, marks=marks, counter=counter)
            finally:
                g = self.stream.end_capture()
        if marks is not None:
            plan.timed_events = events
        if counter is not None:
            plan.node_counts = counter.counts
            plan.trace_failed = counter.failed
        return g
