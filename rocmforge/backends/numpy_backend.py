"""NumpyBackend: runs whole graphs on the host with the op references of numpy_ref.py, the oracle every other
backend is compared with. Quantized weights are dequantized to f32 once at bind time through
`rocmforge.quant` (a weight used only by GET_ROWS stays in its blocks and only the gathered rows are
dequantized), so a model takes about 4 bytes a parameter of host memory, checked before binding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from .. import quant
from ..ir import alloc, passes
from ..ir.graph import Graph, Tensor, check_indices
from ..ir.ops import NP_DTYPES, Op
from ..profile import OpTiming, StepTimings
from .numpy_ref import REF, QuantRows, run_op


class _Prepared:
    """A graph ready to run: the graph given, the graph run (optimized), its plan and arena slices."""

    def __init__(self, source: Graph, graph: Graph, plan: alloc.Plan | None) -> None:
        self.source, self.graph, self.plan = source, graph, plan
        self.index_bounds = graph.index_bounds()  # checked on every run
        self.bufs: dict[int, np.ndarray] = {}  # node id -> its result's slice of the arena
        self.last: dict[str, np.ndarray] = {}  # outputs of the last run (arena slices: valid until the next)

    def bind(self, arena: np.ndarray) -> None:
        if self.plan is None:
            return
        nodes = self.graph.nodes
        self.bufs = {i: arena[off: off + self.plan.nbytes[i]].view(NP_DTYPES[nodes[i].dtype])
                     .reshape(nodes[i].shape) for i, off in self.plan.offsets.items()}


def _rows_only(w: Tensor, uses: Mapping[str, set]) -> bool:
    """A weight only GET_ROWS reads (an embedding): kept in its GGUF blocks, rows dequantized when read."""
    return uses.get(w.name) == {Op.GET_ROWS} and len(w.shape) == 2


class NumpyBackend:
    """Executes graphs with the references above; weights and state (KV cache) are bound once.

    With `plan=True` (the default) `prepare` runs the IR passes (`optimize`, default: same as plan) and
    the arena planner: every intermediate is written into its planned slice of one uint8 arena, which is
    allocated at prepare time (shared by all prepared graphs, sized to the largest plan) and never per
    run; in-place ops write over their source's slice. `NumpyBackend(plan=False)` runs the graph as given,
    one fresh array per node, for comparison.
    """

    name = "numpy"
    device_name = "CPU (numpy)"

    def __init__(self, plan: bool = True, optimize: bool | None = None) -> None:
        self.weights: dict[str, Any] = {}
        self.state: dict[str, np.ndarray] = {}
        self.weight_bytes = 0
        self.use_plan = plan
        self.optimize = plan if optimize is None else optimize
        self.arena = np.empty(0, np.uint8)
        self._prepared: dict[int, _Prepared] = {}  # id(graph given or run) -> its preparation

    def supports(self, op: Op) -> bool:
        """Whether graphs may hold op (every op has its reference)."""
        return op in REF

    def bind_weights(self, graph: Graph, source: Callable[[str], tuple[np.ndarray, quant.QType]]) -> None:
        """Bind every weight leaf of graph not yet bound; source(name) gives (raw bytes, ggml type)."""
        uses = graph.weight_uses()
        for w in graph.leaves("weight"):
            if w.name in self.weights:
                continue
            raw, qtype = source(w.name)
            if _rows_only(w, uses):
                self.weights[w.name] = QuantRows(raw, qtype, w.shape)
                self.weight_bytes += int(np.asarray(raw).nbytes)
            else:
                self.weights[w.name] = quant.dequantize(raw, qtype, w.shape)
                self.weight_bytes += int(self.weights[w.name].nbytes)

    def weight_bytes_needed(self, graph: Graph, sizes: Mapping[str, tuple[quant.QType, int]]) -> int:
        """Host bytes of the graph's weights as bind_weights keeps them: f32 (dequantized), or the GGUF
        blocks of an embedding only GET_ROWS reads. sizes: name -> (ggml type, file bytes)."""
        uses = graph.weight_uses()
        return sum(sizes[w.name][1] if _rows_only(w, uses) else 4 * math.prod(w.shape)
                   for w in graph.leaves("weight"))

    def available_bytes(self) -> int | None:
        """Host memory a new allocation can get (Linux's MemAvailable); None where it cannot be read."""
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def alloc_state(self, graph: Graph) -> None:
        for s in graph.leaves("state"):
            if s.name not in self.state:
                self.state[s.name] = np.zeros(s.shape, NP_DTYPES[s.dtype])

    def reset_state(self) -> None:
        for a in self.state.values():
            a[...] = 0

    def _lookup(self, graph: Graph) -> _Prepared | None:
        p = self._prepared.get(id(graph))
        return p if p is not None and graph in (p.source, p.graph) else None

    def prepare(self, graph: Graph) -> Graph:
        """Allocate state, optimize and plan graph, size the arena; returns the graph to run."""
        self.alloc_state(graph)
        p = self._lookup(graph)
        if p is None:
            g = passes.optimize(graph)[0] if self.optimize else graph
            p = _Prepared(graph, g, alloc.plan(g) if self.use_plan else None)
            self._prepared[id(graph)] = self._prepared[id(g)] = p
            if p.plan is not None and p.plan.arena_bytes > self.arena.nbytes:
                self.arena = np.empty(p.plan.arena_bytes, np.uint8)  # grow once; rebind every plan
                for q in set(self._prepared.values()):
                    q.bind(self.arena)
            else:
                p.bind(self.arena)
        return p.graph

    def plan_of(self, graph: Graph) -> alloc.Plan | None:
        """The arena plan graph runs with (None before prepare or with plan=False)."""
        p = self._lookup(graph)
        return p.plan if p is not None else None

    def run(self, graph: Graph, inputs: Mapping[str, np.ndarray], timed: bool = False,
            fetch: Collection[str] | None = None) -> tuple[dict[str, np.ndarray], StepTimings]:
        """Run the graph op by op; timed: each op on the host clock, the whole run as wall time. Returns
        copies of the outputs named in fetch (None: all); fetch_output reads any of them until the next
        run."""
        t_run = time.perf_counter()
        p = self._lookup(graph)
        if p is None:
            self.prepare(graph)
            p = self._lookup(graph)
        graph, bufs = p.graph, p.bufs
        check_indices(p.index_bounds, inputs)
        vals: dict[int, Any] = {}
        timings: list[OpTiming] = []
        for t in graph.nodes:
            if t.kind == "input":
                if t.name not in inputs:
                    raise KeyError(f"graph {graph.name!r} needs input {t.name!r}")
                a = np.asarray(inputs[t.name], dtype=NP_DTYPES[t.dtype])
                if a.shape != t.shape:
                    raise ValueError(f"input {t.name!r}: shape {a.shape}, graph wants {t.shape}")
                vals[t.id] = a
            elif t.kind == "weight":
                vals[t.id] = self.weights[t.name]
            elif t.kind == "state":
                vals[t.id] = self.state[t.name]
            else:
                t0 = time.perf_counter() if timed else 0.0
                out = run_op(t, [vals[s.id] for s in t.src])
                buf = bufs.get(t.id)
                if buf is not None:  # into its arena slice (in place: the source's slice)
                    np.copyto(buf, out, casting="no")
                    out = buf
                vals[t.id] = out
                if timed:
                    timings.append(OpTiming(t.name, t.op.value, t.shape, (time.perf_counter() - t0) * 1e6))
        p.last = {name: vals[t.id] for name, t in graph.outputs.items()}
        outs = {name: np.array(p.last[name]) for name in (p.last if fetch is None else fetch)}
        if not timed:
            return outs, StepTimings()
        return outs, StepTimings(timings, "host", (time.perf_counter() - t_run) * 1e6)

    def fetch_output(self, graph: Graph, name: str, index: int | None = None) -> np.ndarray:
        """Output `name` of the graph's last run (index: that flat element only, as a 1-element array)."""
        p = self._lookup(graph)
        if p is None or name not in p.last:
            raise KeyError(f"graph {graph.name!r} has not run, or has no output {name!r}")
        a = p.last[name]
        if index is None:
            return np.array(a)
        if not 0 <= index < a.size:
            raise IndexError(f"output {name!r}: element {index} of a {a.shape} tensor")
        return np.array(a.reshape(-1)[index : index + 1])

    def memory(self, query_device: bool = True) -> dict[str, int]:
        """Bytes held: weights, KV cache, the shared arena (query_device: no device to ask)."""
        return {"weights": self.weight_bytes,
                "kv_cache": sum(a.nbytes for a in self.state.values()),
                "arena": int(self.arena.nbytes)}
