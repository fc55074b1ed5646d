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
