"""What the HIP backend decides from the graph alone (no GPU): which mat-vecs share a quantized x."""

from __future__ import annotations

from collections import Counter

import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.backends.hip.backend import x_key
from rocmforge.engine import Engine
from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import Op
from rocmforge.synth import write_tiny_model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_decode_mat_vecs_share_x_per_activation(tmp_path, arch):
    eng = Engine.from_gguf(write_tiny_model(tmp_path / "m.gguf", arch, wtype=Q.Q8_0), backend="numpy")
    g = eng.graph(1)
    n_layer = eng.config.n_layer
    mm = [t for t in g.nodes if t.op is Op.MUL_MAT and t.src[0].kind == "weight"]
    keys = Counter(x_key(t) for t in mm)
    assert None not in keys
    # per layer: Q, K, V read the attention norm's output; gate and up the FFN norm's; the attention
    # output and down projections their own inputs; plus the output projection
    assert sorted(keys.values()) == sorted([3] * n_layer + [2] * n_layer + [1] * (2 * n_layer + 1))
    for t in mm:  # a shared key is the value the mat-vec reads
        assert x_key(t) == t.src[1].id


def test_x_key_is_none_for_other_ops_and_for_state():
    g = Graph()
    w = g.weight("w", (8, 64), "q8_0")
    cache = g.state("cache", (4, 64))
    x = g.input("x", (1, 64))
    y = g.rms_norm(x, 1e-6, "n")
    from_state = g.mul_mat(w, g.view(cache, (1, 64), "row"), "from_state")
    from_input = g.mul_mat(w, x, "from_input")
    assert x_key(y) is None
    assert x_key(from_state) is None  # the KV cache changes within a run
    assert x_key(from_input) == x.id


def test_quantized_x_is_made_once_per_value_and_run(monkeypatch):
    """Ctx.quantized_x (no GPU: CuPy's allocator and the quantize launch replaced by fakes): the first
    node of a run that reads a value quantizes it into that value's own buffer, later readers reuse it,
    every run quantizes again, and without a key every call quantizes into its own scratch."""
    import sys
    import types

    import numpy as np

    from rocmforge.backends.hip import launch as L

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(empty=lambda n, dtype: np.empty(n, dtype)))
    made = []
    monkeypatch.setattr(L, "quantize_x8", lambda ctx, xq, x, K, M: made.append((xq.buf, K, M)))
    ctx = L.Ctx(mods=None, warp=32, n_sm=132)
    x = L.DevTensor(np.zeros(3 * 4096 * 4, np.uint8), 0, (3, 4096), "f32")
    for run in range(2):
        ctx.begin_run()
        ctx.begin_node("q", "attn_norm")
        a = ctx.quantized_x(x, 4096, 3)
        ctx.begin_node("k", "attn_norm")
        b = ctx.quantized_x(x, 4096, 3)
        ctx.begin_node("up", "ffn_norm")
        c = ctx.quantized_x(x, 4096, 3)
        assert a.buf is b.buf and c.buf is not a.buf
        assert a.shape == (3, L.x8_row_bytes(4096) // 4) and a.buf.nbytes == 3 * L.x8_row_bytes(4096)
        assert [m[0] for m in made[2 * run :]] == [a.buf, c.buf]  # once per value in each run
    ctx.begin_node(None)  # no key: quantized at every call
    d = ctx.quantized_x(x, 4096, 3)
    e = ctx.quantized_x(x, 4096, 3)
    assert len(made) == 6 and d.buf is not e.buf and d.buf is not a.buf
