"""What each op must move and compute: bytes read, bytes written and FLOPs of a node, from its shapes.

The fewest bytes an op can move (each source read once, the result written once) and the arithmetic it
must do; per-op timings divided into them give GB/s and FLOP/s against the device's ceilings. Weights
count in their GGUF blocks; attention counts the cache rows that hold tokens (n_kv), not the whole cache.
Aliases (VIEW, RESHAPE) move nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import quant
from .graph import Graph, Tensor
from .ops import ITEMSIZE, MUL_MAT_OPS, NORM_MUL_MAT_OPS, Op, xq_source


@dataclass(frozen=True)
class Cost:
    read: int  # bytes
    written: int  # bytes
    flops: int

    @property
    def bytes(self) -> int:
        return self.read + self.written


def tensor_bytes(t: Tensor) -> int:
    """Bytes of t's elements: activations by item size, weights in their GGUF blocks."""
    if t.dtype in ITEMSIZE:
        return t.n_elements * ITEMSIZE[t.dtype]
    qt = quant.QType[t.dtype.upper()]
    return math.prod(t.shape[:-1]) * quant.row_bytes(qt, t.shape[-1])


# FLOPs per result element of the element-wise ops
_EW_FLOPS = {Op.ADD: 1, Op.MUL: 1, Op.SCALE: 1, Op.SILU: 4, Op.SWIGLU: 5, Op.CPY: 0, Op.CONT: 0}


def node_cost(t: Tensor, n_kv: int | None = None) -> Cost:
    """t's cost; n_kv: cache rows attention reads (default: every row of its K/V views)."""
    out = tensor_bytes(t)
    if t.is_leaf or t.op in (Op.VIEW, Op.RESHAPE):
        return Cost(0, 0, 0)
    src = [tensor_bytes(s) for s in t.src]
    if t.op in MUL_MAT_OPS or t.op in NORM_MUL_MAT_OPS:  # w, x[, wn][, b][, xq]: all read
        w, x = t.src[:2]
        flops = 2 * math.prod(w.shape) * (x.n_elements // w.shape[1])
        if t.op in NORM_MUL_MAT_OPS and xq_source(t) is None:  # the norm: squares, sums, x * wn
            flops += 4 * x.n_elements
        add = t.op in (Op.MUL_MAT_ADD, Op.RMS_NORM_MUL_MAT_ADD)
        return Cost(sum(src), out, flops + (t.n_elements if add else 0))
    if t.op is Op.GET_ROWS:
        a, idx = t.src
        row = tensor_bytes(a) // a.shape[0]
        return Cost(row * idx.n_elements + src[1], out, 0)
    if t.op in (Op.SET_ROWS, Op.SET_ROWS_ROPE):  # writes src's rows into the destination in place
        return Cost(src[1] + src[2], src[1], 0)
    if t.op is Op.FLASH_ATTN_EXT:
        q, k, v = t.src[:3]
        C, Hkv, D = k.shape
        rows = C if n_kv is None else min(C, n_kv)
        T, H = q.shape[0], q.shape[1]
        row = Hkv * D * ITEMSIZE[k.dtype] + Hkv * v.shape[2] * ITEMSIZE[v.dtype]  # a cache row, K and V
        # k_new and v_new (where given) read, and written into the cache rows at pos
        written = T * row if len(src) == 6 else 0
        return Cost(src[0] + rows * row + sum(src[3:]), out + written, 2 * T * H * rows * (D + v.shape[2]))
    if t.op is Op.RMS_NORM:
        return Cost(sum(src), out, 3 * t.n_elements)
    if t.op is Op.RMS_NORM_MUL:
        return Cost(sum(src), out, 4 * t.n_elements)
    if t.op is Op.RMS_NORM_MUL_QUANTIZE_X8:  # the norm, then a scale and a rounding an element
        return Cost(sum(src), out, 6 * t.src[0].n_elements)
    if t.op is Op.ROPE:
        return Cost(sum(src), out, 3 * t.n_elements)
    if t.op is Op.SOFT_MAX:
        return Cost(sum(src), out, 5 * t.n_elements)
    if t.op in (Op.ARGMAX, Op.SAMPLE):  # a compare per logit (SAMPLE's candidates: at most 256 a row)
        return Cost(sum(src), out, t.src[0].n_elements)
    return Cost(sum(src), out, _EW_FLOPS.get(t.op, 1) * t.n_elements)


def graph_costs(graph: Graph, n_kv: int | None = None) -> dict[str, Cost]:
    """Every op node's cost, by node name."""
    return {t.name: node_cost(t, n_kv) for t in graph.nodes if not t.is_leaf}
