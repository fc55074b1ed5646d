"""Graph-to-graph passes: common-subexpression elimination, dead-code elimination, no-op view removal, and
(for a backend whose mat-vecs read int8 x) QUANTIZE_X8 insertion.

Every pass returns a new `Graph` (the input is left untouched): surviving nodes keep their names, the
node order stays a valid execution order, and `outputs` keeps its names (an output may end up naming
the node it was merged into). `optimize` runs the pipeline and reports node counts per pass.

Side effects: SET_ROWS writes its destination's storage in place (the KV-cache write). It is never
merged with anything, and DCE keeps it whenever the storage it writes outlives the graph (a leaf:
state, input or weight) or is read by a kept node. Because a write changes what later readers of that
storage see, CSE only merges two nodes when no SET_ROWS into their sources' storage ran in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .graph import Graph, Tensor, _freeze, contiguous_strides
from .ops import Op

# ops whose effect is not only their result (they write storage another node owns)
SIDE_EFFECTS = frozenset({Op.SET_ROWS})
# leaf kinds kept even when unused: they are the graph's interface (inputs fed, state allocated)
KEEP_LEAVES = ("input", "state")


def _emit(g: Graph, t: Tensor, srcs: Sequence[Tensor]) -> Tensor:
    """A copy of t (same name, op, params) in g over the given (new) sources."""
    if t.is_leaf:
        return getattr(g, t.kind)(t.name, t.shape, t.dtype)
    return g.op(t.op, list(srcs), t.name, **t.params)


def _outputs(g: Graph, old: Graph, new: dict[int, Tensor]) -> None:
    g.outputs = {name: new[t.id] for name, t in old.outputs.items()}


# ---- CSE ----------------------------------------------------------------------------------------------

def cse(graph: Graph) -> Graph:
    """Merge nodes that compute the same thing: same op, same (merged) sources and same params.

    Leaves are unique by name. SET_ROWS is never merged, nor is a node whose buffer a SET_ROWS writes.
    A node's key also holds, for each source, the number of SET_ROWS that have written that source's
    storage so far, so a read before a cache write is never merged with the same read after it.
    """
    # a buffer that some SET_ROWS writes is not a pure value: never merge it with another
    written = {graph.storage_root(t).id for t in graph.nodes if t.op in SIDE_EFFECTS}
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    seen: dict[tuple, Tensor] = {}
    writes: dict[int, int] = {}  # new storage root id -> SET_ROWS into it so far
    for t in graph.nodes:
        srcs = [new[s.id] for s in t.src]
        if t.is_leaf:
            key: tuple = (t.kind, t.name)
        elif t.op in SIDE_EFFECTS or t.id in written:
            n = new[t.id] = _emit(g, t, srcs)
            if t.op in SIDE_EFFECTS:
                root = g.storage_root(n).id
                writes[root] = writes.get(root, 0) + 1
            continue
        else:
            versions = tuple(writes.get(g.storage_root(s).id, 0) for s in srcs)
            key = (t.op, tuple(s.id for s in srcs), _freeze(t.params), versions)
        hit = seen.get(key)
        if hit is None:
            hit = seen[key] = _emit(g, t, srcs)
        new[t.id] = hit
    _outputs(g, graph, new)
    return g


# ---- DCE ----------------------------------------------------------------------------------------------

def live_nodes(graph: Graph) -> set[int]:
    """Ids of the nodes an output or a kept side effect depends on (see `dce`)."""
    live: set[int] = set()

    def mark(stack: list[Tensor]) -> None:
        while stack:
            t = stack.pop()
            if t.id in live:
                continue
            live.add(t.id)
            stack.extend(t.src)

    roots = {t.id: graph.storage_root(t) for t in graph.nodes if t.op in SIDE_EFFECTS}
    mark(list(graph.outputs.values()) + [graph.nodes[i] for i, r in roots.items() if r.is_leaf])
    while True:  # a write into an intermediate matters once that intermediate is kept
        more = [graph.nodes[i] for i, r in roots.items() if i not in live and r.id in live]
        if not more:
            return live
        mark(more)


def dce(graph: Graph) -> Graph:
    """Drop nodes that reach no output.

    Kept as well: SET_ROWS into a leaf's storage (the KV-cache write must survive even when nothing in
    this graph reads the cache afterwards), SET_ROWS into an intermediate that is itself kept, and every
    input and state leaf (the graph's interface). Unused weights are dropped.
    """
    live = live_nodes(graph)
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    for t in graph.nodes:
        if t.id in live or t.kind in KEEP_LEAVES:
            new[t.id] = _emit(g, t, [new[s.id] for s in t.src])
    _outputs(g, graph, new)
    return g


# ---- no-op views ----------------------------------------------------------------------------------

def _noop_view(t: Tensor, a: Tensor) -> bool:
    p = t.params
    return (a.shape == t.shape and p["offset"] == 0
            and tuple(p["strides"]) == contiguous_strides(t.shape))


def remove_noop_views(graph: Graph) -> Graph:
    """Replace a VIEW/RESHAPE that leaves its source as it is (same shape, contiguous strides, offset 0)
    by the source itself, and collapse RESHAPE(RESHAPE(x)) into RESHAPE(x). Leaves dead nodes behind
    (the inner reshape): run `dce` after."""
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    for t in graph.nodes:
        srcs = [new[s.id] for s in t.src]
        if t.op is Op.VIEW and _noop_view(t, srcs[0]):
            new[t.id] = srcs[0]
            continue
        if t.op is Op.RESHAPE:
            while srcs[0].op is Op.RESHAPE:
                srcs = [srcs[0].src[0]]
            if srcs[0].shape == t.shape:
                new[t.id] = srcs[0]
                continue
        new[t.id] = _emit(g, t, srcs)
    _outputs(g, graph, new)
    return g


# ---- QUANTIZE_X8 ------------------------------------------------------------------------------------------

def insert_quantize_x8(graph: Graph, reads_x8: Callable[[Tensor], bool]) -> Graph:
    """Give each MUL_MAT for which reads_x8(node) holds (the backend's kernel for it reads int8 x) the
    quantized copy of its x as a third source: a QUANTIZE_X8 node of x, emitted just before it. Mat-vecs
    that read one value get identical nodes, which CSE merges into one (run `cse` after); a value written
    by SET_ROWS in between is quantized again."""
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    names = {t.name for t in graph.nodes}
    for t in graph.nodes:
        srcs = [new[s.id] for s in t.src]
        if t.op is Op.MUL_MAT and len(srcs) == 2 and reads_x8(t):
            name, n = f"{t.src[1].name}.x8", 1
            while name in names:
                n += 1
                name = f"{t.src[1].name}.x8#{n}"
            names.add(name)
            srcs.append(g.op(Op.QUANTIZE_X8, [srcs[1]], name))
        new[t.id] = _emit(g, t, srcs)
    _outputs(g, graph, new)
    return g


# ---- pipeline -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PassStat:
    """One pass of a pipeline: node counts (all nodes, and op nodes) before and after, and its time."""

    name: str
    nodes_before: int
    nodes_after: int
    ops_before: int
    ops_after: int
    ms: float

    @property
    def removed(self) -> int:
        return self.nodes_before - self.nodes_after


@dataclass
class PassReport:
    """What `optimize` did to one graph, pass by pass."""

    graph: str
    stats: list[PassStat] = field(default_factory=list)

    @property
    def nodes_before(self) -> int:
        return self.stats[0].nodes_before if self.stats else 0

    @property
    def nodes_after(self) -> int:
        return self.stats[-1].nodes_after if self.stats else 0

    def rows(self) -> list[dict]:
        return [{"pass": s.name, "nodes_before": s.nodes_before, "nodes_after": s.nodes_after,
                 "ops_before": s.ops_before, "ops_after": s.ops_after, "removed": s.removed,
                 "ms": round(s.ms, 3)} for s in self.stats]

    def table(self) -> str:
        head = ("pass", "nodes before", "nodes after", "ops before", "ops after", "ms")
        body = [(s.name, str(s.nodes_before), str(s.nodes_after), str(s.ops_before), str(s.ops_after),
                 f"{s.ms:.1f}") for s in self.stats]
        body.append(("total", str(self.nodes_before), str(self.nodes_after),
                     str(self.stats[0].ops_before if self.stats else 0),
                     str(self.stats[-1].ops_after if self.stats else 0),
                     f"{sum(s.ms for s in self.stats):.1f}"))
        rows = [head, *body]
        w = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"graph {self.graph}"]
        lines += ["  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
                  for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_frame(self):
        """One row per pass as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["pass", "nodes_before", "nodes_after", "ops_before",
                                                  "ops_after", "removed", "ms"])


Pass = Callable[[Graph], Graph]
PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("remove_noop_views", remove_noop_views),
    ("cse", cse),
    ("dce", dce),
)


def optimize(graph: Graph, pipeline: Sequence[tuple[str, Pass]] = PIPELINE) -> tuple[Graph, PassReport]:
    """Run the passes in order (no-op views, CSE, DCE); the input graph is not modified."""
    report = PassReport(graph.name)
    g = graph
    for name, fn in pipeline:
        t0 = time.perf_counter()
        out = fn(g)
        report.stats.append(PassStat(name, len(g), len(out), len(g.ops()), len(out.ops()),
                                     (time.perf_counter() - t0) * 1e3))
        g = out
    return g, report
