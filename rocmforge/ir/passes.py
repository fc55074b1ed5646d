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
from typing import Any

from .. import quant
from .cost import tensor_bytes
from .graph import Graph, Tensor, _freeze, contiguous_strides
from .ops import MUL_MAT_OPS, NORM_MUL_MAT_OPS, Op, writes_into

# leaf kinds kept even when unused: they are the graph's interface (inputs fed, state allocated)
KEEP_LEAVES = ("input", "state")


def _emit(g: Graph, t: Tensor, srcs: Sequence[Tensor]) -> Tensor:
    """A copy of t (same name, op, params) in g over the given (new) sources."""
    if t.kind == "weight":
        rows_of, interleaved = t.params.get("rows_of", ()), t.params.get("interleaved", False)
        return g.weight(t.name, t.shape, t.dtype, rows_of, interleaved)
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
    # a buffer that some SET_ROWS (or a FLASH_ATTN_EXT's k_new) writes is not a pure value: never merge it
    written = {graph.storage_root(w).id for t in graph.nodes for w in writes_into(t)}
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    seen: dict[tuple, Tensor] = {}
    writes: dict[int, int] = {}  # new storage root id -> SET_ROWS into it so far
    for t in graph.nodes:
        srcs = [new[s.id] for s in t.src]
        if t.is_leaf:
            key: tuple = (t.kind, t.name)
        elif writes_into(t) or t.id in written:
            n = new[t.id] = _emit(g, t, srcs)
            for w in writes_into(n):
                root = g.storage_root(w).id
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

    roots = {t.id: [graph.storage_root(w) for w in writes_into(t)] for t in graph.nodes if writes_into(t)}
    mark(list(graph.outputs.values()) + [graph.nodes[i] for i, rs in roots.items()
                                         if any(r.is_leaf for r in rs)])
    while True:  # a write into an intermediate matters once that intermediate is kept
        more = [graph.nodes[i] for i, rs in roots.items() if i not in live and any(r.id in live for r in rs)]
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
    """Give each MUL_MAT (MUL_MAT_ADD) for which reads_x8(node) holds (the backend's kernel for it reads
    int8 x) the quantized copy of its x as its last source: a QUANTIZE_X8 node of x, emitted just before it.
    Mat-vecs that read one value get identical nodes, which CSE merges into one (run `cse` after); a value
    written by SET_ROWS in between is quantized again."""
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    names = {t.name for t in graph.nodes}
    for t in graph.nodes:
        srcs = [new[s.id] for s in t.src]
        if len(srcs) == MUL_MAT_OPS.get(t.op) and reads_x8(t):  # a MUL_MAT (_ADD) without its xq yet
            name, n = f"{t.src[1].name}.x8", 1
            while name in names:
                n += 1
                name = f"{t.src[1].name}.x8#{n}"
            names.add(name)
            srcs.append(g.op(Op.QUANTIZE_X8, [srcs[1]], name))
        new[t.id] = _emit(g, t, srcs)
    _outputs(g, graph, new)
    return g


def fold_norms(graph: Graph, folds: Callable[[Tensor], bool]) -> Graph:
    """RMS_NORM_MUL h = (a, wn) whose every reader is a MUL_MAT, MUL_MAT_ADD or MUL_MAT_SWIGLU reading h as
    its x (h not its addend) for which folds(reader) holds (the backend's kernel computes the norm itself,
    or reads an int8 copy that can be made from a and wn), or a QUANTIZE_X8 of h read only as such readers'
    xq: each reader becomes RMS_NORM_MUL_MAT(_ADD, _SWIGLU) of a, wn (and its xq), each QUANTIZE_X8 of h
    RMS_NORM_MUL_QUANTIZE_X8 of a, wn; h is no longer computed. Not where h is an output, or a is written
    between h and a reader."""
    rd = _readers(graph)
    fused = {mm: op for op, mm in NORM_MUL_MAT_OPS.items()}  # MUL_MAT -> RMS_NORM_MUL_MAT, ...

    def mat_vec(u: Tensor | None, h: Tensor) -> bool:
        # u reads h as its x, and nothing else of h but through its xq (a QUANTIZE_X8 of h, or none)
        if u is None or u.op not in fused or u.src[1] is not h:
            return False
        n = MUL_MAT_OPS[u.op]
        xq = u.src[n] if len(u.src) > n else None
        if xq is not None and not (xq.op is Op.QUANTIZE_X8 and xq.src[0] is h):
            return False
        return (all(s is not h for s in u.src[2:n]) and folds(u)
                and not _written_between(graph, h, u, h.src[0]))

    def foldable(h: Tensor) -> bool:
        readers = rd[h.id]
        if h.op is not Op.RMS_NORM_MUL or not readers:
            return False
        for u in readers:
            if u is not None and u.op is Op.QUANTIZE_X8:  # every reader of it a mat-vec reading it as xq
                q_readers = rd[u.id]
                if not q_readers or not all(mat_vec(v, h) and v.src[MUL_MAT_OPS[v.op]] is u
                                            for v in q_readers):
                    return False
            elif not mat_vec(u, h):
                return False
        return True

    norms = {t.id: t for t in graph.nodes if foldable(t)}
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    for t in graph.nodes:
        if t.id in norms:
            continue
        if t.op is Op.QUANTIZE_X8 and t.src[0].id in norms:
            h = t.src[0]
            a, wn = new[h.src[0].id], new[h.src[1].id]
            new[t.id] = g.op(Op.RMS_NORM_MUL_QUANTIZE_X8, [a, wn], t.name, eps=h.params["eps"])
            continue
        if t.op in fused and t.src[1].id in norms:
            h = t.src[1]
            a, wn = new[h.src[0].id], new[h.src[1].id]
            srcs = [new[t.src[0].id], a, wn, *(new[s.id] for s in t.src[2:])]
            new[t.id] = g.op(fused[t.op], srcs, t.name, eps=h.params["eps"])
            continue
        new[t.id] = _emit(g, t, [new[s.id] for s in t.src])
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


# ---- fusion ---------------------------------------------------------------------------------------------
# Run on the graph a model builds, before weights are bound (`fuse`): stacking changes which weights exist.

def _readers(graph: Graph) -> dict[int, list[Tensor]]:
    """node id -> the nodes that read it (a graph output counts as a reader, None)."""
    rd: dict[int, list] = {t.id: [] for t in graph.nodes}
    for t in graph.nodes:
        for s in t.src:
            rd[s.id].append(t)
    for t in graph.outputs.values():
        rd[t.id].append(None)
    return rd


def _joined(names: Sequence[str]) -> str:
    """One name for stacked tensors, the common prefix up to a dot and suffix from a dot kept once:
    ("blk.0.attn_q.weight", "blk.0.attn_k.weight") -> "blk.0.attn_q+attn_k.weight"."""
    pre = names[0][: names[0].rfind(".", 0, len(_common(names))) + 1]
    rev = [n[len(pre):][::-1] for n in names]
    suf = rev[0][: rev[0].rfind(".", 0, len(_common(rev))) + 1][::-1]
    return pre + "+".join(n[len(pre): len(n) - len(suf)] for n in names) + suf


def _common(names: Sequence[str]) -> str:
    n = 0
    while all(len(s) > n and s[n] == names[0][n] for s in names):
        n += 1
    return names[0][:n]


def reshape_strides(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]
                    ) -> tuple[int, ...] | None:
    """Strides that give a strided view of `shape` the shape new_shape without a copy, or None where
    none do (numpy's no-copy reshape rule: only dims contiguous with each other are merged)."""
    old = [(n, s) for n, s in zip(shape, strides, strict=True) if n != 1]
    new = list(new_shape)
    out = [1] * len(new)
    oi = ni = 0
    while ni < len(new) and oi < len(old):
        oj, nj = oi + 1, ni + 1
        po, pn = old[oi][0], new[ni]
        while po != pn:
            if pn < po:
                if nj >= len(new):
                    return None
                pn *= new[nj]
                nj += 1
            else:
                if oj >= len(old):
                    return None
                po *= old[oj][0]
                oj += 1
        if any(old[k][1] != old[k + 1][0] * old[k + 1][1] for k in range(oi, oj - 1)):
            return None
        out[nj - 1] = old[oj - 1][1]
        for k in range(nj - 1, ni, -1):
            out[k - 1] = out[k] * new[k]
        oi, ni = oj, nj
    if oi < len(old) or any(n != 1 for n in new[ni:]):
        return None
    return tuple(out)


def _replace_groups(graph: Graph, first: dict[int, Any], member: set[int],
                    emit: Callable[[Graph, dict[int, Tensor], Any], None]) -> Graph:
    """Copy graph, emitting each group (first: the id of its first node -> the group) where its first node
    was, by emit(new graph, old id -> new node, group), which maps the members' results; the other members
    are dropped, and a node emit has already mapped is not copied."""
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    for t in graph.nodes:
        if t.id in new:
            continue
        if t.id in first:
            emit(g, new, first[t.id])
        elif t.id not in member:
            new[t.id] = _emit(g, t, [new[s.id] for s in t.src])
    _outputs(g, graph, new)
    return g


_TO_Q8_0 = {t.name.lower() for t in quant.TO_Q8_0}  # types whose blocks Q8_0 holds exactly
# a group of mat-vecs of these mixed types stacks as Q8_0 where that reads at most this many more bytes (a
# decode launch costs more: H100, 3-5 us a mat-vec in a step against ~1.4 us for 4 MB at 3 TB/s)
STACK_PROMOTE_MAX_BYTES = 4 << 20


def _stack_family(dtype: str) -> str:
    return "q8_0" if dtype in _TO_Q8_0 else dtype


def _promotion_bytes(ws: Sequence[Tensor]) -> int:
    """The bytes a stack of these weights reads more as Q8_0 than as they are."""
    return sum(quant.row_bytes(quant.QType.Q8_0, w.n_elements) - tensor_bytes(w) for w in ws)


def stack_mul_mats(graph: Graph) -> Graph:
    """MUL_MATs that read the same x with weights of one type and row length (Q, K and V; gate and up),
    each weight read by that MUL_MAT alone, become one MUL_MAT over a weight leaf that is their rows
    stacked (`rows_of`); each old result is a VIEW of its columns. A bias added to every member (an ADD of
    an [N] weight, the MUL_MAT's only reader) is stacked likewise and added once. Weights of Q4_0, Q5_0 and
    Q8_0 mixed stack as Q8_0 (their blocks converted without loss when bound, quant.to_q8_0) where that reads
    at most STACK_PROMOTE_MAX_BYTES more; otherwise each type stacks apart."""
    rd = _readers(graph)
    groups: dict[tuple, list[tuple[Tensor, Tensor | None]]] = {}
    for t in graph.nodes:
        if t.op is not Op.MUL_MAT or len(t.src) != 2:
            continue
        w, x = t.src
        if w.kind != "weight" or "rows_of" in w.params or len(rd[w.id]) != 1 or None in rd[t.id]:
            continue
        add = rd[t.id][0] if len(rd[t.id]) == 1 else None
        b = add.src[1] if add is not None and add.op is Op.ADD and add.src[0] is t else None
        if b is None or b.kind != "weight" or b.shape != (w.shape[0],) or len(rd[b.id]) != 1:
            add = b = None
        key = (x.id, _stack_family(w.dtype), w.shape[1], None if b is None else b.dtype)
        groups.setdefault(key, []).append((t, add))
    stacks: list[list[tuple[Tensor, Tensor | None]]] = []
    for grp in groups.values():
        types = {t.src[0].dtype for t, _ in grp}
        if len(types) > 1 and _promotion_bytes([t.src[0] for t, _ in grp]) > STACK_PROMOTE_MAX_BYTES:
            stacks += [[m for m in grp if m[0].src[0].dtype == d] for d in sorted(types)]  # each type apart
        else:
            stacks.append(grp)
    first: dict[int, list[tuple[Tensor, Tensor | None]]] = {}
    member: set[int] = set()
    for grp in stacks:
        if len(grp) > 1:
            first[grp[0][0].id] = grp
            member.update(t.id for t, _ in grp)
    def emit(g: Graph, new: dict[int, Tensor], grp: list[tuple[Tensor, Tensor | None]]) -> None:
        ws = [m.src[0] for m, _ in grp]
        n_tot = sum(w.shape[0] for w in ws)
        dtype = ws[0].dtype if len({w.dtype for w in ws}) == 1 else "q8_0"  # mixed: converted when bound
        w_st = g.weight(_joined([w.name for w in ws]), (n_tot, ws[0].shape[1]), dtype, [w.name for w in ws])
        out = g.mul_mat(w_st, new[grp[0][0].src[1].id], _joined([m.name for m, _ in grp]))
        if grp[0][1] is not None:
            bs = [a.src[1] for _, a in grp]
            b_st = g.weight(_joined([b.name for b in bs]), (n_tot,), bs[0].dtype, [b.name for b in bs])
            out = g.add(out, b_st, _joined([a.name for _, a in grp]))
        strides = contiguous_strides(out.shape)
        off = 0
        for (m, a), w in zip(grp, ws, strict=True):
            res = a if a is not None else m  # a member's bias ADD becomes the view (and is skipped later)
            new[res.id] = g.view(out, (*out.shape[:-1], w.shape[0]), res.name, strides, off)
            off += w.shape[0]

    return _replace_groups(graph, first, member, emit)


def fold_views(graph: Graph) -> Graph:
    """A RESHAPE of a strided VIEW becomes one VIEW of the view's source where strides allow (a column slice
    [T, H * D] split into [T, H, D], or merged back): backends reshape only contiguous tensors."""
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    for t in graph.nodes:
        srcs = [new[s.id] for s in t.src]
        if t.op is Op.RESHAPE and srcs[0].op is Op.VIEW:
            v = srcs[0]
            st = reshape_strides(v.shape, v.params["strides"], t.shape)
            if st is not None:
                new[t.id] = g.view(v.src[0], t.shape, t.name, st, v.params["offset"])
                continue
        new[t.id] = _emit(g, t, srcs)
    _outputs(g, graph, new)
    return g


def merge_ropes(graph: Graph) -> Graph:
    """ROPEs with the same positions and params over adjacent head ranges of one tensor (the Q and K columns
    of a stacked Q/K/V result, as VIEWs [T, H_i, D] with equal strides) become one ROPE over all of those
    heads; each old result is a VIEW of the merged result."""
    groups: dict[tuple, list[Tensor]] = {}
    for t in graph.nodes:
        if t.op is Op.ROPE and t.src[0].op is Op.VIEW:
            v = t.src[0]
            st = tuple(v.params["strides"])  # a token's stride matters only with several tokens
            key = (v.src[0].id, t.src[1].id, _freeze(t.params), v.shape[0], v.shape[2],
                   st if v.shape[0] > 1 else st[1:])
            groups.setdefault(key, []).append(t)
    first: dict[int, list[Tensor]] = {}
    member: set[int] = set()
    for grp in groups.values():
        grp.sort(key=lambda r: r.src[0].params["offset"])
        D = grp[0].shape[2]
        if len(grp) < 2 or tuple(grp[0].src[0].params["strides"])[1:] != (D, 1):
            continue
        runs = [[grp[0]]]  # contiguous head ranges
        for r in grp[1:]:
            prev = runs[-1][-1].src[0]
            if r.src[0].params["offset"] == prev.params["offset"] + prev.shape[1] * D:
                runs[-1].append(r)
            else:
                runs.append([r])
        for run in runs:
            if len(run) > 1:
                first[min(r.id for r in run)] = run
                member.update(r.id for r in run)
    def emit(g: Graph, new: dict[int, Tensor], run: list[Tensor]) -> None:
        v0 = run[0].src[0]
        T, D = v0.shape[0], v0.shape[2]
        H = sum(r.shape[1] for r in run)
        st = tuple(v0.params["strides"]) if T > 1 else (H * D, D, 1)
        view = g.view(new[v0.src[0].id], (T, H, D), _joined([r.src[0].name for r in run]), st,
                      v0.params["offset"])
        out = g.op(Op.ROPE, [view, new[run[0].src[1].id]], _joined([r.name for r in run]), **run[0].params)
        h = 0
        for r in run:
            new[r.id] = g.view(out, r.shape, r.name, contiguous_strides(out.shape), h * D)
            h += r.shape[1]

    return _replace_groups(graph, first, member, emit)


def _view_of(t: Tensor, shape: tuple | None = None, strides: tuple | None = None) -> Tensor | None:
    """t's source when t is a VIEW (of that shape and those strides, where given; a first dimension of one
    row leaves its stride free), else None."""
    if t.op is not Op.VIEW or (shape is not None and t.shape != shape):
        return None
    if strides is not None:
        skip = 1 if t.shape[0] == 1 else 0
        if tuple(t.params["strides"])[skip:] != tuple(strides)[skip:]:
            return None
    return t.src[0]


def _rope_kv_group(fa: Tensor, rd: dict[int, list]) -> dict | None:
    """The nodes of one attention's RoPE and K (and V) cache writes when they can become SET_ROWS_ROPE and a
    FLASH_ATTN_EXT that ropes q (fuse_rope_kv), else None. The shape matched (merge_ropes' result):
    r = ROPE(VIEW(qkv) [T, Hq + Hkv, D]); q = VIEW(r) heads [0, Hq); K rows = VIEW(r) [T, W] after them,
    written by a SET_ROWS at pos into a cache [C, W] read only by FLASH_ATTN_EXT through a [C, Hkv, D] view.
    "kv": V rows = VIEW(qkv) [T, W] right after K's columns, written likewise into a cache of K's (both
    become one cache); else "k": V as it is, K's write alone becomes SET_ROWS_ROPE."""
    if "rope_q" in fa.params:
        return None
    q, kview, vview, pos = fa.src
    T, Hq, D = q.shape
    C, Hkv, _ = kview.shape
    W = Hkv * D
    sk = _view_of(kview, None, (W, D, 1))
    if sk is None or sk.op is not Op.SET_ROWS or kview.params["offset"] or sk.src[2] is not pos:
        return None
    ck = sk.src[0]
    if ck.kind != "state" or ck.shape != (C, W) or any(len(rd[n.id]) != 1 for n in (ck, sk, kview)):
        return None
    r = _view_of(q)
    if r is None or r.op is not Op.ROPE or r.src[1] is not pos or r.shape != (T, Hq + Hkv, D):
        return None
    Hr = Hq + Hkv
    if q.params["offset"] != 0 or _view_of(q, None, (Hr * D, D, 1)) is None or len(rd[r.id]) != 2:
        return None
    kr = sk.src[1]
    if _view_of(kr, (T, W), (Hr * D, 1)) is not r or kr.params["offset"] != Hq * D:
        return None
    rin = r.src[0]
    qkv = _view_of(rin)
    if qkv is None or rin.params["strides"][1:] != (D, 1) or len(rd[rin.id]) != 1:
        return None
    if any(len(rd[n.id]) != 1 for n in (q, kr)):
        return None
    row = rin.params["strides"][0] if T > 1 else Hr * D
    grp = {"first": (rin, r, q, kr, ck, sk, kview), "qkv": qkv, "pos": pos, "row": row,
           "off": rin.params["offset"], "T": T, "Hq": Hq, "Hkv": Hkv, "D": D, "C": C, "mode": "k"}
    sv = _view_of(vview, None, (W, D, 1))
    if sv is None or sv.op is not Op.SET_ROWS or vview.params["offset"] or sv.src[2] is not pos:
        return grp
    cv, vs = sv.src[0], sv.src[1]
    if cv.kind != "state" or cv.shape != ck.shape or cv.dtype != ck.dtype:
        return grp
    if any(len(rd[n.id]) != 1 for n in (cv, sv, vview, vs)) or _view_of(vs, (T, W)) is not qkv:
        return grp
    vrow = vs.params["strides"][0] if T > 1 else row
    if vs.params["strides"][1] != 1 or vrow != row or vs.params["offset"] != grp["off"] + Hr * D:
        return grp
    grp["first"] += (cv, sv, vview, vs)
    grp["mode"] = "kv"
    return grp


def fuse_rope_kv(graph: Graph) -> Graph:
    """Per attention: the ROPE over Q and K, K's cache write and the attention become a SET_ROWS_ROPE of K
    (its columns of the stacked Q/K/V result, ROPE'd on the way into the cache) and a FLASH_ATTN_EXT that
    ropes q as it loads it. Where V's columns follow K's, V's write joins it: one SET_ROWS_ROPE of K and V
    side by side into one cache per layer [C, 2W] (`cache_k_lN` becomes `cache_kv_lN`, K then V in each row):
    four launches become two; else three become two. Every graph of a model goes through this pass, so all
    agree on the caches. Attentions of another shape are left as they are."""
    rd = _readers(graph)
    at_first: dict[int, dict] = {}
    at_fa: dict[int, dict] = {}
    member: set[int] = set()
    for t in graph.nodes:
        if t.op is Op.FLASH_ATTN_EXT:
            grp = _rope_kv_group(t, rd)
            if grp is not None and not member.intersection(n.id for n in (*grp["first"], t)):
                at_first[min(n.id for n in grp["first"])] = grp
                at_fa[t.id] = grp
                member.update(n.id for n in (*grp["first"], t))

    def emit_writes(g: Graph, new: dict[int, Tensor], grp: dict) -> None:
        _, r, q, kr, ck, sk, kview, *v = grp["first"]
        T, Hq, Hkv, D, C, row, off = (grp[k] for k in ("T", "Hq", "Hkv", "D", "C", "row", "off"))
        W = Hkv * D
        qkv, pos = new[grp["qkv"].id], new[grp["pos"].id]
        grp["q"] = g.view(qkv, (T, Hq, D), q.name, (row, D, 1), off)
        kv3 = (C, Hkv, D)
        if grp["mode"] == "kv":
            _, sv, vview, vs = v
            src = g.view(qkv, (T, 2 * W), _joined([kr.name, vs.name]), (row, 1), off + Hq * D)
            cache = g.state(ck.name.replace("cache_k", "cache_kv", 1), (C, 2 * W), ck.dtype)
            written = g.set_rows_rope(cache, src, pos, _joined([sk.name, sv.name]), n_rot=W, head_dim=D,
                                      **r.params)
            new[kview.id] = g.view(written, kv3, kview.name, (2 * W, D, 1), 0)
            new[vview.id] = g.view(written, kv3, vview.name, (2 * W, D, 1), W)
        else:
            src = g.view(qkv, (T, W), kr.name, (row, 1), off + Hq * D)
            written = g.set_rows_rope(g.state(ck.name, ck.shape, ck.dtype), src, pos, sk.name, n_rot=W,
                                      head_dim=D, **r.params)
            new[kview.id] = g.view(written, kv3, kview.name, (W, D, 1), 0)

    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    for t in graph.nodes:
        if t.id in at_first:
            emit_writes(g, new, at_first[t.id])
        if t.id in at_fa:  # after V's nodes (in "k" mode they come between the writes and the attention)
            grp = at_fa[t.id]
            rope = grp["first"][1].params
            rope_q = (rope["n_dims"], rope["neox"], rope["base"], rope["freq_scale"])
            kview, vview = t.src[1], t.src[2]
            new[t.id] = g.flash_attn_ext(grp["q"], new[kview.id], new[vview.id], new[grp["pos"].id],
                                         t.params["scale"], t.name, rope_q=rope_q)
        elif t.id not in member and t.id not in new:
            new[t.id] = _emit(g, t, [new[s.id] for s in t.src])
    _outputs(g, graph, new)
    return g


def _kv_write_group(fa: Tensor, rd: dict[int, list]) -> dict | None:
    """One decode attention's cache writes when they can move into it (fuse_kv_write), else None: fa
    (one token, no k_new yet) reads k and v through VIEWs of SET_ROWS_ROPE / SET_ROWS nodes at fa's pos
    into state caches, each read by those views alone. K's write ROPEs all of K as fa ropes q (SET_ROWS
    without rope_q); V's is a SET_ROWS, or the second half of K's SET_ROWS_ROPE row (one [C, 2W] cache)."""
    if len(fa.src) != 4 or fa.src[0].shape[0] != 1:
        return None
    q, kview, vview, pos = fa.src
    C, Hkv, D = kview.shape
    W = Hkv * D
    wk, wv = _view_of(kview), _view_of(vview)
    if wk is None or wv is None or wk.src[2] is not pos or wv.src[2] is not pos:
        return None
    rope = fa.params.get("rope_q")
    if wk.op is Op.SET_ROWS_ROPE:
        p = wk.params
        if (p["n_dims"], p["neox"], p["base"], p["freq_scale"]) != rope:
            return None
        if (p["head_dim"], p["n_rot"]) != (D, W):
            return None
    elif wk.op is not Op.SET_ROWS or rope is not None:
        return None
    joint = wv is wk
    if not joint and wv.op is not Op.SET_ROWS:
        return None
    for w in {wk.id: wk, wv.id: wv}.values():
        if w.src[0].kind != "state" or w.src[1].dtype != "f32" or w.src[1].shape[0] != 1:
            return None
    if len(rd[wk.id]) != (2 if joint else 1) or (not joint and len(rd[wv.id]) != 1):
        return None
    if len(rd[kview.id]) != 1 or len(rd[vview.id]) != 1 or kview is vview:
        return None
    if joint and (wk.src[1].shape != (1, 2 * W) or vview.params["offset"] != kview.params["offset"] + W):
        return None
    if not joint and (wk.src[1].shape != (1, W) or wv.src[1].shape != (1, W)):
        return None
    return {"fa": fa, "wk": wk, "wv": wv, "joint": joint}


def fuse_kv_write(graph: Graph) -> Graph:
    """Per decode attention (one token): the K/V cache writes before it (SET_ROWS_ROPE, SET_ROWS) move into
    the FLASH_ATTN_EXT as its k_new and v_new, so a step writes the cache and attends in one launch. The
    caches stay as they are; prompt graphs (more than one token) keep their writes."""
    rd = _readers(graph)
    groups: dict[int, dict] = {}
    member: set[int] = set()
    for t in graph.nodes:
        if t.op is Op.FLASH_ATTN_EXT:
            grp = _kv_write_group(t, rd)
            if grp is not None:
                groups[t.id] = grp
                member.update({grp["wk"].id, grp["wv"].id, t.src[1].id, t.src[2].id})

    def row_views(g: Graph, new: dict[int, Tensor], src: Tensor, W: int, names: tuple[str, str]) -> tuple:
        """k_new and v_new: the two halves of a [1, 2W] row, as views of its storage's node."""
        base, stride, off = src, 2 * W, 0
        if src.op is Op.VIEW:
            base, stride, off = src.src[0], src.params["strides"][0], src.params["offset"]
        b = new[base.id]
        return (g.view(b, (1, W), names[0], (stride, 1), off),
                g.view(b, (1, W), names[1], (stride, 1), off + W))

    def emit(g: Graph, new: dict[int, Tensor], grp: dict) -> None:
        fa, wk, wv = grp["fa"], grp["wk"], grp["wv"]
        q, kview, vview, pos = fa.src
        Hkv, D = kview.shape[1:]
        ks, vs = new[wk.src[0].id], new[wv.src[0].id]
        k = g.view(ks, kview.shape, kview.name, kview.params["strides"], kview.params["offset"])
        v = g.view(vs, vview.shape, vview.name, vview.params["strides"], vview.params["offset"])
        if grp["joint"]:
            kv_new = row_views(g, new, wk.src[1], Hkv * D, (fa.name + ".k_new", fa.name + ".v_new"))
        else:
            kv_new = (new[wk.src[1].id], new[wv.src[1].id])
        new[fa.id] = g.flash_attn_ext(new[q.id], k, v, new[pos.id], fa.params["scale"], fa.name,
                                      rope_q=fa.params.get("rope_q"), kv_new=kv_new)

    return _replace_groups(graph, groups, member | set(groups), emit)


def fuse_swiglu(graph: Graph) -> Graph:
    """SWIGLU(gate, up) of the two halves of one stacked gate|up MUL_MAT (stack_mul_mats: its weight's rows
    gate's then up's, its result read only by those two views) -> MUL_MAT_SWIGLU over a weight of the same
    rows interleaved (gate_i, up_i side by side: a mat-vec block computes both and writes silu(g) * u)."""
    rd = _readers(graph)
    first: dict[int, tuple[Tensor, Tensor]] = {}
    member: set[int] = set()
    for t in graph.nodes:
        if t.op is not Op.SWIGLU:
            continue
        gv, uv = t.src
        mm = _view_of(gv)
        if mm is None or _view_of(uv) is not mm or mm.op is not Op.MUL_MAT or len(mm.src) != 2:
            continue
        w = mm.src[0]
        F = t.shape[-1]
        if w.kind != "weight" or len(w.params.get("rows_of", ())) != 2 or w.shape[0] != 2 * F:
            continue
        whole = contiguous_strides(mm.shape)
        if (gv.params["offset"], uv.params["offset"]) != (0, F) or gv.shape != t.shape or uv.shape != t.shape:
            continue
        if gv.params["strides"] != whole or uv.params["strides"] != whole:
            continue
        if len(rd[mm.id]) != 2 or len(rd[gv.id]) != 1 or len(rd[uv.id]) != 1 or len(rd[w.id]) != 1:
            continue
        first[min(w.id, mm.id)] = (t, mm)  # emitted where the stacked weight was: x is defined before it
        member.update((gv.id, uv.id, mm.id, t.id, w.id))

    def emit(g: Graph, new: dict[int, Tensor], grp: tuple[Tensor, Tensor]) -> None:
        t, mm = grp
        w = mm.src[0]
        wi = g.weight(w.name.replace("+", "|"), w.shape, w.dtype, w.params["rows_of"], interleaved=True)
        new[t.id] = g.mul_mat_swiglu(wi, new[mm.src[1].id], t.name)

    return _replace_groups(graph, first, member, emit)


def _written_between(graph: Graph, a: Tensor, b: Tensor, x: Tensor) -> bool:
    """Whether a node after a and before b writes x's storage (ops.writes_into)."""
    root = graph.storage_root(x).id
    return any(graph.storage_root(w).id == root for t in graph.nodes[a.id + 1: b.id] for w in writes_into(t))


def fuse_ops(graph: Graph) -> Graph:
    """RMS_NORM followed by a MUL by an [n] weight -> RMS_NORM_MUL; MUL_MAT followed by an ADD of a bias
    [N] or a tensor of its result's shape (the residual) -> MUL_MAT_ADD. The fused node takes the ADD's
    or MUL's name and place; the first node must have no other reader."""
    rd = _readers(graph)
    g = Graph(graph.name)
    new: dict[int, Tensor] = {}
    absorbed: set[int] = {t.id for t in graph.nodes if _fusable(graph, t, rd) is not None}
    for t in graph.nodes:
        if t.id in absorbed:
            continue
        if t.op is Op.MUL and t.src[0].id in absorbed:
            a = new[t.src[0].src[0].id]
            new[t.id] = g.rms_norm_mul(a, new[t.src[1].id], t.src[0].params["eps"], t.name)
            continue
        if t.op is Op.ADD and any(s.id in absorbed for s in t.src):
            mm = t.src[0] if t.src[0].id in absorbed else t.src[1]
            other = t.src[1] if mm is t.src[0] else t.src[0]
            new[t.id] = g.mul_mat_add(new[mm.src[0].id], new[mm.src[1].id], new[other.id], t.name)
            continue
        new[t.id] = _emit(g, t, [new[s.id] for s in t.src])
    _outputs(g, graph, new)
    return g


def _fusable(graph: Graph, t: Tensor, rd: dict[int, list]) -> Tensor | None:
    """The node that absorbs t (fuse_ops), or None."""
    if len(rd[t.id]) != 1 or rd[t.id][0] is None:
        return None
    u = rd[t.id][0]
    if t.op is Op.RMS_NORM and u.op is Op.MUL and u.src[0] is t and u.src[1] is not t:
        return u if u.src[1].shape == (t.shape[-1],) else None
    if t.op is Op.MUL_MAT and len(t.src) == 2 and u.op is Op.ADD and u.shape == t.shape:
        other = u.src[1] if u.src[0] is t else u.src[0]
        if other.op is Op.MUL_MAT and u.src[0] is other:
            return None  # ADD of two MUL_MATs: the first one absorbs
        if other is t or other.shape not in ((t.shape[-1],), t.shape):
            return None
        return None if _written_between(graph, t, u, t.src[1]) else u
    return None


def fuse(graph: Graph) -> Graph:
    """The fusion pipeline a model's graph goes through before its weights are bound: stacked mat-vecs
    (stack_mul_mats), views folded (fold_views), RoPE over Q and K at once (merge_ropes), RoPE and the K/V
    cache writes in one SET_ROWS_ROPE and q's RoPE in the attention (fuse_rope_kv), at decode those writes
    in the attention itself (fuse_kv_write), gate/up and SWIGLU in one MUL_MAT_SWIGLU (fuse_swiglu),
    RMS_NORM_MUL and MUL_MAT_ADD (fuse_ops), dead nodes dropped. The result computes what the graph did."""
    g = fold_views(merge_ropes(fold_views(stack_mul_mats(graph))))
    return dce(fuse_ops(fuse_swiglu(fuse_kv_write(fuse_rope_kv(dce(g))))))
