"""Liveness-based arena planner: one byte arena for all intermediates of a graph, as ggml-alloc does.

Walk the nodes in order. A node that computes a new buffer (not a leaf, not a VIEW/RESHAPE/SET_ROWS,
which alias their first source's storage) gets an offset in the arena; a buffer is released once the
last node reading it has run. A node reads a buffer through any view of it: consumers are counted on
the storage root, so views extend the root's lifetime. The result is allocated before the sources are
released, so a node never writes over what it reads, except in place: an element-wise op
(`ops.INPLACE_OK`) takes over its first source's buffer when it is that buffer's last reader, the
source covers the whole buffer contiguously, sizes and dtypes agree and the buffer is not kept for an
output. Freed ranges are merged with their neighbours and reused best-fit (smallest block that fits,
lowest offset on ties); when none fits, the arena grows.

Weights, inputs and state (the KV cache) live outside the arena. Graph outputs are never released.
`plan` is pure and deterministic: plan the worst-case graph once and reuse the plan every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .graph import Graph, Tensor, contiguous_strides
from .ops import ALIASING, INPLACE_OK, ITEMSIZE, Op

ALIGNMENT = 256  # bytes; every buffer starts on this boundary
VIEW_OPS = frozenset({Op.VIEW, Op.RESHAPE})  # alias without reading (SET_ROWS reads and writes)


def nbytes_of(t: Tensor) -> int:
    """Bytes of t's own buffer (activations only: f32, f16, i32)."""
    return t.n_elements * ITEMSIZE[t.dtype]


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _roots(graph: Graph) -> list[int]:
    """Storage root id of every node (views, reshapes and set_rows alias their first source)."""
    root: list[int] = []
    for i, t in enumerate(graph.nodes):
        if t.id != i:
            raise ValueError(f"node {t.name!r} has id {t.id} at position {i}")
        root.append(root[t.src[0].id] if t.op in ALIASING else i)
    return root


def _owns(t: Tensor) -> bool:
    return not t.is_leaf and t.op not in ALIASING


def _readers(graph: Graph, root: list[int]) -> dict[int, list[int]]:
    """root id -> ids of the nodes reading it (once per source occurrence); views do not read."""
    readers: dict[int, list[int]] = {}
    for t in graph.nodes:
        if t.is_leaf or t.op in VIEW_OPS:
            continue
        for s in t.src:
            r = root[s.id]
            if _owns(graph.nodes[r]):
                readers.setdefault(r, []).append(t.id)
    return readers


def _whole(t: Tensor) -> bool:
    """Does t cover its storage root from offset 0, contiguously (so an in-place result lines up)?"""
    while t.op in ALIASING:
        if t.op is Op.VIEW and (t.params["offset"] != 0
                                or tuple(t.params["strides"]) != contiguous_strides(t.shape)):
            return False
        t = t.src[0]
    return True


class _Arena:
    """Free list of (offset, size) blocks, sorted and merged; `top` is the high-water mark."""

    def __init__(self) -> None:
        self.free: list[list[int]] = []
        self.top = 0

    def alloc(self, size: int) -> int:
        best = None
        for i, (_, n) in enumerate(self.free):
            if n >= size and (best is None or n < self.free[best][1]):
                best = i
        if best is not None:
            off, n = self.free[best]
            if n == size:
                del self.free[best]
            else:
                self.free[best] = [off + size, n - size]
            return off
        if self.free and sum(self.free[-1]) == self.top:  # grow the block at the end
            off = self.free.pop()[0]
        else:
            off = self.top
        self.top = off + size
        return off

    def release(self, off: int, size: int) -> None:
        i = 0
        while i < len(self.free) and self.free[i][0] < off:
            i += 1
        self.free.insert(i, [off, size])
        if i + 1 < len(self.free) and off + size == self.free[i + 1][0]:  # merge with the next
            self.free[i][1] += self.free.pop(i + 1)[1]
        if i > 0 and sum(self.free[i - 1]) == off:  # and with the previous
            self.free[i - 1][1] += self.free.pop(i)[1]


@dataclass
class Plan:
    """Arena offsets for a graph's intermediates.

    offsets/nbytes: node id -> byte offset / size of the buffer the node's result lives in (every
    non-leaf, non-aliasing node; an in-place node has its source's offset). inplace: node id -> id of
    the source whose buffer it took over. lifetimes: node id -> (node that defines the buffer, last
    node that uses it); `len(graph)` as the last use means never released (an output's buffer).
    naive_bytes: what one buffer per intermediate would take.
    """

    graph: Graph
    arena_bytes: int
    offsets: dict[int, int]
    nbytes: dict[int, int]
    inplace: dict[int, int]
    lifetimes: dict[int, tuple[int, int]]
    naive_bytes: int
    alignment: int = ALIGNMENT
    peak_live_bytes: int = 0
    protected: frozenset[int] = field(default_factory=frozenset)

    @property
    def saving(self) -> float:
        """naive_bytes / arena_bytes."""
        return self.naive_bytes / self.arena_bytes if self.arena_bytes else math.inf

    def check(self) -> None:
        """Verify the plan against the graph; raise AssertionError naming the first problem.

        Every owning node has an aligned range inside the arena; no two buffers that are alive at the
        same time overlap (an in-place node may take over its source's range at the source's last use);
        every node's sources are alive (defined, not yet released or taken over) when it runs.
        """
        g, n = self.graph, len(self.graph)
        root = _roots(g)
        owners = [t.id for t in g.nodes if _owns(t)]

        def fail(msg: str) -> None:
            raise AssertionError(f"plan of {g.name!r}: {msg}")

        def name(i: int) -> str:
            return f"#{i} {g.nodes[i].name!r}"

        if set(self.offsets) != set(owners):
            missing, extra = set(owners) - set(self.offsets), set(self.offsets) - set(owners)
            fail(f"offsets for the wrong nodes: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}")
        for i in owners:
            off, nb = self.offsets[i], self.nbytes[i]
            if nb != nbytes_of(g.nodes[i]):
                fail(f"{name(i)} needs {nbytes_of(g.nodes[i])} bytes, plan says {nb}")
            if off % self.alignment or off < 0 or off + nb > self.arena_bytes:
                fail(f"{name(i)} at [{off}, {off + nb}) is misaligned or outside the arena "
                     f"of {self.arena_bytes}")
            d, last = self.lifetimes[i]
            if d != i or last < i:
                fail(f"{name(i)} has lifetime {(d, last)}")
        for r in self.protected:
            if r in self.lifetimes and self.lifetimes[r][1] != n:
                fail(f"output buffer {name(r)} is released at #{self.lifetimes[r][1]}")
        # sources alive when read
        for t in g.nodes:
            if t.is_leaf or t.op in VIEW_OPS:
                continue
            for s in t.src:
                r = root[s.id]
                if r in self.lifetimes:
                    d, last = self.lifetimes[r]
                    if not d < t.id <= last:
                        fail(f"{name(t.id)} reads {s.name!r} (buffer of {name(r)}) outside its "
                             f"lifetime [{d}, {last}]")
        for i, s in self.inplace.items():
            r = root[s]
            if self.offsets[i] != self.offsets[r] or self.nbytes[i] != self.nbytes[r]:
                fail(f"in-place {name(i)} does not line up with its source {name(r)}")
            if self.lifetimes[r][1] != i:
                fail(f"in-place {name(i)} takes {name(r)} which lives until #{self.lifetimes[r][1]}")
        # no overlap among buffers alive at the same time
        live: list[int] = []
        for i in owners:
            live = [b for b in live if self.lifetimes[b][1] >= i]
            lo, hi = self.offsets[i], self.offsets[i] + self.nbytes[i]
            took = root[self.inplace[i]] if i in self.inplace else None
            for b in live:
                if b != took and lo < self.offsets[b] + self.nbytes[b] and self.offsets[b] < hi:
                    fail(f"{name(i)} [{lo}, {hi}) overlaps {name(b)} "
                         f"[{self.offsets[b]}, {self.offsets[b] + self.nbytes[b]}) alive "
                         f"{self.lifetimes[b]}")
            live.append(i)

    def rows(self) -> list[dict]:
        g = self.graph
        return [{"id": i, "name": g.nodes[i].name, "op": g.nodes[i].op.value, "offset": off,
                 "nbytes": self.nbytes[i], "first": self.lifetimes[i][0], "last": self.lifetimes[i][1],
                 "inplace_of": g.nodes[self.inplace[i]].name if i in self.inplace else None}
                for i, off in self.offsets.items()]

    def to_frame(self):
        """One row per buffer-owning node as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["id", "name", "op", "offset", "nbytes", "first", "last",
                                                  "inplace_of"])

    def summary(self) -> str:
        mib = 1 << 20
        return (f"{self.graph.name}: {len(self.offsets)} buffers, arena {self.arena_bytes / mib:.2f} MiB, "
                f"naive {self.naive_bytes / mib:.2f} MiB ({self.saving:.1f}x), "
                f"{len(self.inplace)} in place")

    def __str__(self) -> str:
        return self.summary()


def plan(graph: Graph, alignment: int = ALIGNMENT) -> Plan:
    """Plan the arena of graph (see the module docstring)."""
    nodes, n = graph.nodes, len(graph.nodes)
    root = _roots(graph)
    readers = _readers(graph, root)
    remaining = {r: len(rs) for r, rs in readers.items()}
    protected = frozenset(root[t.id] for t in graph.outputs.values() if _owns(nodes[root[t.id]]))

    arena = _Arena()
    offsets: dict[int, int] = {}
    nbytes: dict[int, int] = {}
    sizes: dict[int, int] = {}  # reserved (aligned) size per buffer
    inplace: dict[int, int] = {}
    lifetimes: dict[int, tuple[int, int]] = {}
    live_bytes = peak = 0

    def release(r: int, at: int) -> None:
        nonlocal live_bytes
        arena.release(offsets[r], sizes[r])
        live_bytes -= sizes[r]
        lifetimes[r] = (r, at)

    for t in nodes:
        if t.is_leaf or t.op in VIEW_OPS:
            continue
        i = t.id
        if t.op not in ALIASING:
            nb = nbytes_of(t)
            s0 = t.src[0]
            r0 = root[s0.id]
            if (t.op in INPLACE_OK and r0 in offsets and r0 not in protected
                    and remaining.get(r0) == 1 and nbytes[r0] == nb and nodes[r0].dtype == t.dtype
                    and _whole(s0)):
                offsets[i], sizes[i] = offsets[r0], sizes[r0]
                inplace[i] = s0.id
                remaining[r0] = 0
                lifetimes[r0] = (r0, i)  # handed over, not released
            else:
                sizes[i] = _align(max(nb, 1), alignment)
                offsets[i] = arena.alloc(sizes[i])
                live_bytes += sizes[i]
                peak = max(peak, live_bytes)
            nbytes[i] = nb
        for s in t.src:  # release the sources this node was the last reader of
            r = root[s.id]
            if remaining.get(r, 0) > 0:
                remaining[r] -= 1
                if remaining[r] == 0 and r not in protected:
                    release(r, i)
        if t.op not in ALIASING and remaining.get(i, 0) == 0 and i not in protected:
            release(i, i)  # nothing reads it: dead in this graph
    for r in offsets:
        if r in protected:
            lifetimes[r] = (r, n)
    naive = sum(nbytes.values())
    return Plan(graph, arena.top, offsets, nbytes, inplace, dict(sorted(lifetimes.items())), naive,
                alignment, peak, protected)
