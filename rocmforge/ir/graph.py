"""Graph: nodes recorded by a ggml-style builder. Nothing here computes; backends execute graphs.

Leaves are inputs (written every run: token ids, positions), weights (bound once, named after their GGUF
tensor) and state (persistent device buffers such as the KV cache, outside any arena). Every other node
records (op, sources, params). Builder order is a valid execution order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ops import ALIASING, IRError, Op, Shape, infer

LEAF_KINDS = ("input", "weight", "state")


@dataclass(eq=False)
class Tensor:
    """One node: a leaf or an op over earlier nodes."""

    id: int
    name: str
    op: Op
    shape: Shape
    dtype: str
    src: tuple[Tensor, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "op"  # "op" or one of LEAF_KINDS

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def is_leaf(self) -> bool:
        return self.kind != "op"

    def key(self) -> tuple:
        """Identity of the computation (op, sources, params): equal keys compute equal values."""
        if self.is_leaf:
            return (self.kind, self.name)
        return (self.op, tuple(s.id for s in self.src), _freeze(self.params))

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.op.value}, {self.shape}, {self.dtype})"


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    return v


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


class Graph:
    """A list of nodes in execution order, with named outputs."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.nodes: list[Tensor] = []
        self.outputs: dict[str, Tensor] = {}
        self._names: set[str] = set()
        self._input_leaves: list[Tensor] = []  # Graph.inputs without a walk over every node (a step asks)

    # ---- leaves -------------------------------------------------------------------------------------
    def _add(self, t: Tensor) -> Tensor:
        if t.name in self._names:
            raise IRError(f"duplicate node name {t.name!r}")
        self._names.add(t.name)
        self.nodes.append(t)
        return t

    def _leaf(self, kind: str, name: str, shape: Sequence[int], dtype: str) -> Tensor:
        if any(int(n) <= 0 for n in shape):
            raise IRError(f"{name}: bad shape {tuple(shape)}")
        t = self._add(Tensor(len(self.nodes), name, Op.NONE, tuple(int(n) for n in shape), dtype, kind=kind))
        if kind == "input":
            self._input_leaves.append(t)
        return t

    def input(self, name: str, shape: Sequence[int], dtype: str = "f32") -> Tensor:
        return self._leaf("input", name, shape, dtype)

    def weight(self, name: str, shape: Sequence[int], dtype: str, rows_of: Sequence[str] = (),
               interleaved: bool = False) -> Tensor:
        """A weight leaf; rows_of: the GGUF tensors whose rows, stacked in this order, it is (passes.fuse);
        interleaved: their rows taken in turn instead (row i of each part, then row i + 1 of each)."""
        t = self._leaf("weight", name, shape, dtype)
        if rows_of:
            t.params["rows_of"] = tuple(rows_of)
            if interleaved:
                t.params["interleaved"] = True
        return t

    def state(self, name: str, shape: Sequence[int], dtype: str = "f32") -> Tensor:
        return self._leaf("state", name, shape, dtype)

    # ---- ops ----------------------------------------------------------------------------------------
    def op(self, op: Op, srcs: Sequence[Tensor], name: str, **params: Any) -> Tensor:
        for s in srcs:
            if s.id >= len(self.nodes) or self.nodes[s.id] is not s:
                raise IRError(f"{name}: source {s.name!r} is not a node of this graph")
        try:
            shape, dtype = infer(op, [s.shape for s in srcs], [s.dtype for s in srcs], params)
        except IRError as e:
            raise IRError(f"{name}: {e}") from None
        return self._add(Tensor(len(self.nodes), name, op, shape, dtype, tuple(srcs), dict(params)))

    def get_rows(self, a: Tensor, idx: Tensor, name: str) -> Tensor:
        return self.op(Op.GET_ROWS, [a, idx], name)

    def mul_mat(self, w: Tensor, x: Tensor, name: str, xq: Tensor | None = None) -> Tensor:
        return self.op(Op.MUL_MAT, [w, x] if xq is None else [w, x, xq], name)

    def mul_mat_swiglu(self, w: Tensor, x: Tensor, name: str, xq: Tensor | None = None) -> Tensor:
        """silu(gate) * up from one mat-vec over w's interleaved rows (gate_i, up_i): f32 [..., F]."""
        return self.op(Op.MUL_MAT_SWIGLU, [w, x] if xq is None else [w, x, xq], name)

    def mul_mat_add(self, w: Tensor, x: Tensor, b: Tensor, name: str, xq: Tensor | None = None) -> Tensor:
        return self.op(Op.MUL_MAT_ADD, [w, x, b] if xq is None else [w, x, b, xq], name)

    def rms_norm_mul_mat(self, w: Tensor, x: Tensor, wn: Tensor, eps: float, name: str,
                         b: Tensor | None = None, glu: bool = False, xq: Tensor | None = None) -> Tensor:
        """MUL_MAT (MUL_MAT_ADD with b, MUL_MAT_SWIGLU with glu) of RMS_NORM_MUL(x, wn) in one op; xq:
        RMS_NORM_MUL_QUANTIZE_X8(x, wn), where the backend's kernel reads int8 x."""
        op = (Op.RMS_NORM_MUL_MAT_SWIGLU if glu
              else Op.RMS_NORM_MUL_MAT if b is None else Op.RMS_NORM_MUL_MAT_ADD)
        srcs = [w, x, wn, *([] if b is None or glu else [b]), *([] if xq is None else [xq])]
        return self.op(op, srcs, name, eps=float(eps))

    def quantize_x8(self, x: Tensor, name: str) -> Tensor:
        return self.op(Op.QUANTIZE_X8, [x], name)

    def rms_norm_mul_quantize_x8(self, a: Tensor, wn: Tensor, eps: float, name: str) -> Tensor:
        """QUANTIZE_X8 of RMS_NORM_MUL(a, wn) in one op."""
        return self.op(Op.RMS_NORM_MUL_QUANTIZE_X8, [a, wn], name, eps=float(eps))

    def add(self, a: Tensor, b: Tensor, name: str) -> Tensor:
        return self.op(Op.ADD, [a, b], name)

    def mul(self, a: Tensor, b: Tensor, name: str) -> Tensor:
        return self.op(Op.MUL, [a, b], name)

    def scale(self, a: Tensor, s: float, name: str) -> Tensor:
        return self.op(Op.SCALE, [a], name, s=float(s))

    def rms_norm(self, a: Tensor, eps: float, name: str) -> Tensor:
        return self.op(Op.RMS_NORM, [a], name, eps=float(eps))

    def rms_norm_mul(self, a: Tensor, w: Tensor, eps: float, name: str) -> Tensor:
        return self.op(Op.RMS_NORM_MUL, [a, w], name, eps=float(eps))

    def rope(self, x: Tensor, pos: Tensor, name: str, *, n_dims: int, neox: bool, base: float,
             freq_scale: float = 1.0) -> Tensor:
        return self.op(Op.ROPE, [x, pos], name, n_dims=int(n_dims), neox=bool(neox), base=float(base),
                       freq_scale=float(freq_scale))

    def view(self, a: Tensor, shape: Sequence[int], name: str, strides: Sequence[int] | None = None,
             offset: int = 0) -> Tensor:
        """A strided window (element strides and offset) onto a's storage; no copy."""
        if strides is None:
            strides = contiguous_strides(shape)
        return self.op(Op.VIEW, [a], name, shape=tuple(int(n) for n in shape),
                       strides=tuple(int(s) for s in strides), offset=int(offset))

    def view_1d(self, a: Tensor, n: int, offset: int, name: str) -> Tensor:
        return self.view(a, (n,), name, (1,), offset)

    def view_2d(self, a: Tensor, n0: int, n1: int, stride0: int, offset: int, name: str) -> Tensor:
        """n0 rows of n1 elements, rows stride0 apart."""
        return self.view(a, (n0, n1), name, (stride0, 1), offset)

    def view_3d(self, a: Tensor, n0: int, n1: int, n2: int, stride0: int, stride1: int, offset: int,
                name: str) -> Tensor:
        return self.view(a, (n0, n1, n2), name, (stride0, stride1, 1), offset)

    def reshape(self, a: Tensor, shape: Sequence[int], name: str) -> Tensor:
        if a.op is Op.VIEW and tuple(a.params["strides"]) != contiguous_strides(a.shape):
            raise IRError(f"{name}: reshape of a non-contiguous view {a.name!r}; use cont first")
        return self.op(Op.RESHAPE, [a], name, shape=tuple(int(n) for n in shape))

    def cont(self, a: Tensor, name: str) -> Tensor:
        return self.op(Op.CONT, [a], name)

    def cpy(self, a: Tensor, dtype: str, name: str) -> Tensor:
        return self.op(Op.CPY, [a], name, dtype=dtype)

    def set_rows(self, dst: Tensor, src: Tensor, idx: Tensor, name: str) -> Tensor:
        """Overwrite rows idx of dst with src (converted to dst's dtype); the result is dst itself."""
        return self.op(Op.SET_ROWS, [dst, src, idx], name)

    def set_rows_rope(self, dst: Tensor, src: Tensor, idx: Tensor, name: str, *, n_rot: int, head_dim: int,
                      n_dims: int, neox: bool, base: float, freq_scale: float = 1.0) -> Tensor:
        """SET_ROWS of src whose first n_rot columns (heads of head_dim) are ROPE'd at positions idx."""
        return self.op(Op.SET_ROWS_ROPE, [dst, src, idx], name, n_rot=int(n_rot), head_dim=int(head_dim),
                       n_dims=int(n_dims), neox=bool(neox), base=float(base), freq_scale=float(freq_scale))

    def soft_max(self, a: Tensor, name: str, mask: Tensor | None = None, scale: float = 1.0) -> Tensor:
        return self.op(Op.SOFT_MAX, [a] if mask is None else [a, mask], name, scale=float(scale))

    def silu(self, a: Tensor, name: str) -> Tensor:
        return self.op(Op.SILU, [a], name)

    def swiglu(self, gate: Tensor, up: Tensor, name: str) -> Tensor:
        return self.op(Op.SWIGLU, [gate, up], name)

    def flash_attn_ext(self, q: Tensor, k: Tensor, v: Tensor, pos: Tensor, scale: float, name: str,
                       rope_q: tuple | None = None, kv_new: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Causal attention by position: query i sees cache rows 0..pos[i]; GQA by head groups. rope_q: ROPE's
        (n_dims, neox, base, freq_scale), q ROPE'd at pos on the way in (None: q as it is). kv_new: (k_new,
        v_new) f32 [T, Hkv * D] written into rows pos of k's and v's storage first, k_new ROPE'd as q is."""
        srcs = [q, k, v, pos, *(kv_new or ())]
        if rope_q is None:
            return self.op(Op.FLASH_ATTN_EXT, srcs, name, scale=float(scale))
        n_dims, neox, base, freq_scale = rope_q
        rope_q = (int(n_dims), bool(neox), float(base), float(freq_scale))
        return self.op(Op.FLASH_ATTN_EXT, srcs, name, scale=float(scale), rope_q=rope_q)

    def argmax(self, a: Tensor, name: str) -> Tensor:
        return self.op(Op.ARGMAX, [a], name)

    def sample(self, logits: Tensor, params: Tensor, name: str) -> Tensor:
        """A token per row of logits f32 [n, V], drawn as params i32 [8] say (seed, counter, top_k,
        temperature, top_p: an input, so one graph serves every setting): numpy_ref.SAMPLE."""
        return self.op(Op.SAMPLE, [logits, params], name)

    # ---- outputs and inspection ---------------------------------------------------------------------
    def output(self, t: Tensor, name: str | None = None) -> Tensor:
        self.outputs[name or t.name] = t
        return t

    def weight_uses(self) -> dict[str, set[Op]]:
        """Weight name -> the ops that read it (backends keep GET_ROWS/MUL_MAT-only weights in blocks)."""
        uses: dict[str, set[Op]] = {}
        for t in self.ops():
            for s in t.src:
                if s.kind == "weight":
                    uses.setdefault(s.name, set()).add(t.op)
        return uses

    def leaves(self, kind: str) -> list[Tensor]:
        return [t for t in self.nodes if t.kind == kind]

    @property
    def inputs(self) -> dict[str, Tensor]:
        return {t.name: t for t in self._input_leaves}

    def __getitem__(self, name: str) -> Tensor:
        for t in self.nodes:
            if t.name == name:
                return t
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.nodes)

    def ops(self) -> list[Tensor]:
        return [t for t in self.nodes if not t.is_leaf]

    def index_bounds(self) -> dict[str, tuple[int, str]]:
        """Input name -> (rows, node): the inputs GET_ROWS and SET_ROWS (and a FLASH_ATTN_EXT that writes
        the cache) read as row indices (through views and reshapes), with the fewest rows any of them indexes
        and that node's name."""
        bounds: dict[str, tuple[int, str]] = {}
        for t in self.ops():
            if t.op in (Op.SET_ROWS, Op.SET_ROWS_ROPE):
                idx = t.src[2]
            elif t.op is Op.GET_ROWS:
                idx = t.src[1]
            elif t.op is Op.FLASH_ATTN_EXT and len(t.src) == 6:  # its cache writes at pos
                idx = t.src[3]
            else:
                continue
            while idx.op in (Op.VIEW, Op.RESHAPE):
                idx = idx.src[0]
            if idx.kind == "input":
                rows = t.src[1 if t.op is Op.FLASH_ATTN_EXT else 0].shape[0]
                if idx.name not in bounds or rows < bounds[idx.name][0]:
                    bounds[idx.name] = (rows, t.name)
        return bounds

    def storage_root(self, t: Tensor) -> Tensor:
        """The node whose buffer t lives in (views, reshapes and set_rows alias their first source)."""
        while t.op in ALIASING:
            t = t.src[0]
        return t

    def signature(self) -> list[tuple]:
        """(op, name, shape, dtype, source names, params) per node: equal signatures, equal graphs."""
        return [(t.op.value, t.name, t.shape, t.dtype, tuple(s.name for s in t.src), _freeze(t.params))
                for t in self.nodes]

    def table(self, kinds: Iterable[str] = ("input", "weight", "state", "op")) -> str:
        """The graph as a text table: op, name, shape, dtype, sources."""
        kinds = set(kinds)
        rows = [("#", "op", "name", "shape", "dtype", "sources")]
        for t in self.nodes:
            if t.kind in kinds:
                op = t.op.value if not t.is_leaf else t.kind.upper()
                rows.append((str(t.id), op, t.name, "x".join(map(str, t.shape)), t.dtype,
                             ", ".join(s.name for s in t.src)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
                 for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_frame(self):
        """The graph as a pandas DataFrame (one row per node)."""
        import pandas as pd

        return pd.DataFrame([{"id": t.id, "op": t.op.value, "kind": t.kind, "name": t.name,
                              "shape": t.shape, "dtype": t.dtype,
                              "sources": [s.name for s in t.src]} for t in self.nodes])


def check_indices(bounds: Mapping[str, tuple[int, str]], inputs: Mapping[str, Any]) -> None:
    """Refuse row indices out of range before any kernel sees them (a kernel would skip or wrap them):
    a ValueError naming the input, the bad value and the node that would read it. bounds: the run graph's
    index_bounds(), found once when it is prepared."""
    for name, (rows, node) in bounds.items():
        a = np.asarray(inputs.get(name, ()))
        if a.size and (a.min() < 0 or a.max() >= rows):
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise ValueError(f"input {name!r}: index {bad} out of range [0, {rows}) for {node}")
