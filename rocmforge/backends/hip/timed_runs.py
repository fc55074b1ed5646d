"""The HIP backend's timed runs (HipBackend's base): per-op times of a step in the backend's timing mode
(profile.TIMING_MODES, timing.py): "trace" (the untimed device graph replayed once with CUPTI activity on),
"graph" (a second capture with an event node after each kernel) or "eager" (events around each launch), and
the fallbacks between them with their reasons."""

from __future__ import annotations

import logging
from typing import Any

from ...profile import StepTimings
from . import cupti_trace
from . import timing as timing_mod
from .plan import Plan

log = logging.getLogger("rocmforge.hip")


class TimedRuns:
    """Methods of HipBackend that time a step; they use its cp, stream, timing, trace state and _capture."""

    cp: Any
    stream: Any
    timing: str
    trace_failed: str
    last_trace: list
    event_nodes_unavailable: str | None
    _plans: dict
    _capture: Any
    _launch_all: Any

    def _graph_timed(self, plan: Plan) -> StepTimings | None:
        """Per-op times from one replay of the timed graph (captured on first use, then replayed once
        untimed so that the timed replay finds it uploaded), with the untimed replay's time as wall; None
        where the timed graph cannot be captured (plan.timed_failed says why: eager timing instead)."""
        if plan.timed_graph is None:
            n_marks = 1 + sum(st.launch is not None for st in plan.steps)
            try:
                plan.timed_graph = self._capture(plan, timing_mod.EventMarks(self.cp, self.stream, n_marks))
            except Exception as e:
                plan.timed_failed = f"{type(e).__name__}: {e}"
                log.warning("timed graph capture failed (%s); timing eagerly", plan.timed_failed)
                return None
            with self.stream:
                plan.timed_graph.launch(self.stream)
        wall = timing_mod.replay_us(self.cp, self.stream, plan.device_graph)
        with self.stream:
            plan.timed_graph.launch(self.stream)
        self.stream.synchronize()
        return StepTimings(timing_mod.records(self.cp, plan.steps, plan.timed_events, True), "graph", wall)

    def _traces(self) -> bool:
        """Timed runs trace the replayed graph with CUPTI (timing="trace", not failed in this process)."""
        return self.timing == "trace" and not self.trace_failed

    def _replay_timed(self, plan: Plan) -> StepTimings | None:
        """Per-op times of a plan that replays: traced (timing="trace"), else or where tracing fails by
        the event-node graph (timing "trace" or "graph", event nodes available); None: time eagerly."""
        if self._traces() and not plan.trace_failed:
            timings = self._trace_timed(plan)
            if timings is not None:
                return timings
        if self.timing in ("trace", "graph") and not self.event_nodes_unavailable and not plan.timed_failed:
            return self._graph_timed(plan)
        return None

    def _trace_timed(self, plan: Plan) -> StepTimings | None:
        """Per-op times from one replay of the untimed graph (plan.device_graph, what untimed steps replay)
        traced by CUPTI (timing.py, cupti_trace.py), with the untimed replay's time as wall. None where
        tracing fails: CUPTI itself (self.trace_failed: not tried again in this process) or this plan's
        nodes and records (plan.trace_failed); the caller times with event nodes instead. Each failure
        logs a warning."""
        try:
            tracer = cupti_trace.activity_tracer()
        except Exception as e:
            return self._trace_fails(None, str(e))
        if plan.node_counts is None:  # captured before tracing was asked for: capture it again, counting
            try:
                plan.device_graph = self._capture(plan, count=True)
            except Exception as e:
                plan.trace_failed = f"capture: {type(e).__name__}: {e}"
            if plan.node_counts is None:
                return self._trace_fails(plan, plan.trace_failed or "no node counts")
        counts = plan.node_counts
        wall = timing_mod.replay_us(self.cp, self.stream, plan.device_graph)

        def replay() -> None:
            with self.stream:
                plan.device_graph.launch(self.stream)
            self.stream.synchronize()

        try:
            got, t0, t1 = tracer.trace(replay, sum(counts), warmup=replay)
        except Exception as e:  # enabling, flushing, the buffer callbacks
            cupti_trace.tracer_failed(f"{type(e).__name__}: {e}")
            return self._trace_fails(None, f"{type(e).__name__}: {e}")
        try:
            groups = timing_mod.split_records(timing_mod.replay_records(got, t0, t1, sum(counts)), counts)
        except timing_mod.TraceError as e:
            return self._trace_fails(plan, str(e))
        self.last_trace = [(st.node.name, g) for st, g in zip(plan.steps, groups, strict=True)]
        return StepTimings(timing_mod.trace_records(plan.steps, groups), "trace", wall)

    def _trace_fails(self, plan: Plan | None, why: str) -> None:
        """Record why tracing failed, for the plan (its nodes or records) or for the process (plan None)."""
        if plan is None:
            self.trace_failed = why
        else:
            plan.trace_failed = why
        log.warning("CUPTI-traced timing failed (%s); timing with event nodes instead", why)
        return None

    def timing_failures(self) -> list[str]:
        """Why timed runs were not measured as `timing` says: CUPTI tracing (for the process), then per
        prepared graph its capture, its node counts or traced records, its event-node capture."""
        out = [f"trace: {self.trace_failed}"] if self.trace_failed else []
        seen: set[int] = set()
        for graph, plan in self._plans.values():
            if id(plan) in seen:
                continue
            seen.add(id(plan))
            for what in ("capture_failed", "trace_failed", "timed_failed"):
                if getattr(plan, what):
                    out.append(f"{graph.name} {what}: {getattr(plan, what)}")
        return out

    def _eager_timings(self, plan: Plan, events: list) -> StepTimings:
        """Per-op times from the events around each launch, with the replayed step's time as wall where
        the graph replays (else the eager run's span, Python's launch gaps included)."""
        if plan.device_graph is not None:
            wall = timing_mod.replay_us(self.cp, self.stream, plan.device_graph)
        else:
            span = [ev for ev in events if ev is not None]
            wall = timing_mod.elapsed_us(self.cp, span[0][0], span[-1][1]) if span else 0.0
        return StepTimings(timing_mod.records(self.cp, plan.steps, events, False), "eager", wall)
