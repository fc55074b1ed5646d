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
    monkeypatch.setattr(L, "quantize_x8", lambda ctx, xq, x, K, M, pdl: made.append((xq.buf, K, M, pdl)))
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
    e = ctx.quantized_x(x, 4096, 3, early=True)  # for a mat-vec that starts early: so does quantize_x8
    assert len(made) == 6 and d.buf is not e.buf and d.buf is not a.buf
    assert [m[3] for m in made] == [False] * 5 + [True]


def test_early_start_for_whole_rows_with_programmatic_launch():
    """xr_early / x8_early (no GPU): only mul_mat_vec_xr without x loaded with the weights (XPF 0: the whole
    rows at K = 4096) starts while the kernel before it ends, and only with Ctx.pdl; the row groups of 8 rows
    (K = 11008, XPF 1) and the other int8 kernels stay plain launches."""
    import types

    from rocmforge.backends.hip import launch as L

    ctx = L.Ctx(mods=None, warp=32, n_sm=132)
    ctx.smem_block, ctx.smem_sm = 227 * 1024, 228 * 1024
    ctx.x8_matvec = ctx.x8_prequant = ctx.x8_blockwise = ctx.x8_groupwise = True
    buf = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1 << 20))  # a device buffer's address

    def weight(N: int, K: int, kt: str = "q4_0") -> L.DevTensor:
        return L.DevTensor(buf, 0, (N, K), kt)

    up, down = weight(11008, 4096), weight(4096, 11008)
    assert not L.x8_early(ctx, up)  # no programmatic launch
    ctx.pdl = True
    assert L.x8_early(ctx, up) and L.x8_early(ctx, weight(11008, 4096, "q8_0"))
    assert L.xr_early(ctx, L._xr_config(ctx, up, "q4_0", 11008, 4096))
    assert not L.x8_early(ctx, down)  # row groups of 8 rows: x loaded with the weights
    assert not L.x8_early(ctx, weight(4096, 4096, "q4_k"))  # not an int8 mat-vec
    ctx.tunables = {"RF_MMVR_PDL": 0}
    assert not L.x8_early(ctx, up)
    ctx.tunables = {"RF_MMVR_XPF": 0}  # row groups reading x in the loop may start early
    assert L.x8_early(ctx, down)
    ctx.tunables, ctx.x8_groupwise = {}, False  # xb: plain launches
    assert not L.x8_early(ctx, up) and not L.xr_early(ctx, None)


def test_xr_config_applies_to_its_types_where_k_allows():
    """_xr_config (no GPU): mul_mat_vec_xr for xr_types (Q4_0, Q8_0) with K a multiple of 256, packed
    16-byte aligned rows and at least xr_min_n rows; staging per warp, a block per row group at most."""
    import types

    from rocmforge.backends.hip import launch as L

    ctx = L.Ctx(mods=None, warp=32, n_sm=132)
    ctx.smem_block, ctx.smem_sm = 227 * 1024, 228 * 1024
    ctx.tunables = {"RF_MMVR_QMAX": 0}  # row groups of 8 rows (whole rows: the next test)
    q4 = types.SimpleNamespace(row_bytes=4096 // 32 * 18, ptr=1 << 20)
    q8 = types.SimpleNamespace(row_bytes=4096 // 32 * 34, ptr=1 << 20)
    for N in (4096, 32000):  # 4 and 30 row groups an SM: the defaults
        d, smem, blocks = L._xr_config(ctx, q4, "q4_0", N, 4096)
        warps, bps = L.XR_DEFAULTS["q4_0"]["RF_MMVR_WARPS"], L.XR_DEFAULTS["q4_0"]["RF_MMVR_BPS"]
        assert "RF_MMVR_BPS" not in d and d["RF_MMVR_WARPS"] == warps
        assert smem == warps * 8 * 4 * 10 * 16 + 2 * warps * 8 * 4  # 4 groups of 10 chunks a row, 8 rows
        assert blocks == min(132 * bps, N // 8)
    # 1,376 row groups (10.4 an SM) fit one round of one-warp blocks: a warp each
    d, smem, blocks = L._xr_config(ctx, q4, "q4_0", 11008, 4096)
    assert d["RF_MMVR_WARPS"] == 1 and d["RF_MMVR_MINB"] == L.XR_ONE_WARP["q4_0"]["RF_MMVR_MINB"]
    assert smem == 8 * 4 * 10 * 16 + 2 * 8 * 4 and blocks == 11008 // 8
    assert L._xr_config(ctx, q4, "q4_0", 8 * 8 * 132 - 8, 4096)[0]["RF_MMVR_WARPS"] == 2  # < 8 an SM
    assert L._xr_config(ctx, q4, "q4_0", 8 * 12 * 132 + 8, 4096)[0]["RF_MMVR_WARPS"] == 2  # two rounds
    d8, smem8, _ = L._xr_config(ctx, q8, "q8_0", 11008, 4096)  # Q8_0 too, one warp a row group
    assert d8["RF_MMVR_WARPS"] == 1 and smem8 == 8 * 4 * 18 * 16 + 2 * 8 * 4
    d8, smem8, _ = L._xr_config(
        ctx, types.SimpleNamespace(row_bytes=11008 // 32 * 34, ptr=0), "q8_0", 4096, 11008
    )
    assert d8["RF_MMVR_WARPS"] == 2 and smem8 == 2 * 8 * 4 * 18 * 16 + 2 * 2 * 8 * 4
    ctx.xr_types = ("q4_0",)
    assert L._xr_config(ctx, q8, "q8_0", 11008, 4096) is None  # a type not in xr_types
    assert L._xr_config(ctx, q4, "q4_0", ctx.xr_min_n - 1, 4096) is None  # too few rows
    for K in (576, 896, 4864 + 32):  # K not a multiple of 256
        w = types.SimpleNamespace(row_bytes=K // 32 * 18, ptr=0)
        assert L._xr_config(ctx, w, "q4_0", 8192, K) is None
    assert L._xr_config(ctx, types.SimpleNamespace(row_bytes=q4.row_bytes, ptr=8), "q4_0", 8192, 4096) is None
    padded = types.SimpleNamespace(row_bytes=q4.row_bytes + 16, ptr=0)
    assert L._xr_config(ctx, padded, "q4_0", 8192, 4096) is None  # rows not packed
    ctx.tunables = {"RF_MMVR_WARPS": 8, "RF_MMVR_BPS": 1}
    w2304 = types.SimpleNamespace(row_bytes=2304 // 32 * 18, ptr=0)
    d2, smem2, blocks2 = L._xr_config(ctx, w2304, "q4_0", 5000, 2304)
    assert d2["RF_MMVR_WARPS"] == 8 and smem2 == 8 * 8 * 4 * 10 * 16 + 2 * 8 * 8 * 4 and blocks2 == 132


def test_xr_config_takes_whole_rows_where_k_is_256_h_q():
    """_xr_config (no GPU): whole rows a row group (RF_MMVR_Q = K / (256 H), 2 <= Q <= RF_MMVR_QMAX, one
    warp a block, no x prefetch, x's scales tied to the weights), the row groups (Q N / 8) spread evenly over
    the fewest rounds of resident blocks; Q8_0 with fewer blocks an SM (XR_WHOLE); off where K does not
    allow or with more warps a block."""
    import types

    from rocmforge.backends.hip import launch as L

    ctx = L.Ctx(mods=None, warp=32, n_sm=132)
    ctx.smem_block, ctx.smem_sm = 227 * 1024, 228 * 1024

    def weight(kt: str, K: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(row_bytes=K // 32 * {"q4_0": 18, "q8_0": 34}[kt], ptr=1 << 20)

    # Q4_0 K = 4096: Q = 4, 12 blocks an SM (1,584 at most); 5,504 row groups -> 4 rounds of 1,376 blocks
    for N, blocks in ((11008, 1376), (4096, 1024), (32000, 1455)):
        d, smem, b = L._xr_config(ctx, weight("q4_0", 4096), "q4_0", N, 4096)
        assert d["RF_MMVR_Q"] == 4 and d["RF_MMVR_WARPS"] == 1 and d["RF_MMVR_XPF"] == 0
        assert d["RF_MMVR_MINB"] == 12 and "RF_MMVR_QMAX" not in d and "RF_MMVR_EVEN" not in d
        assert d["RF_MMVR_XDEP"] == 1  # x's scales tied to the staged weights
        assert smem == 8 * 4 * 10 * 16 + 2 * 8 * 4 and b == blocks
    d, _, b = L._xr_config(ctx, weight("q8_0", 4096), "q8_0", 11008, 4096)  # 8 an SM: 6 rounds of 918
    assert d["RF_MMVR_Q"] == 4 and d["RF_MMVR_MINB"] == 8 and b == 918
    d, _, b = L._xr_config(ctx, weight("q4_0", 2048), "q4_0", 5001, 2048)  # Q = 2: 4 rows a group
    assert d["RF_MMVR_Q"] == 2 and b == 1251
    for K in (1024, 8192, 11008, 2304):  # Q = 1, Q = 8 > QMAX, 43 and 9 groups: row groups of 8 rows
        assert "RF_MMVR_Q" not in L._xr_config(ctx, weight("q4_0", K), "q4_0", 11008, K)[0]
    ctx.tunables = {"RF_MMVR_QMAX": 8}
    assert L._xr_config(ctx, weight("q4_0", 8192), "q4_0", 4096, 8192)[0]["RF_MMVR_Q"] == 8
    ctx.tunables = {"RF_MMVR_EVEN": 0}  # as many blocks as are resident
    assert L._xr_config(ctx, weight("q4_0", 4096), "q4_0", 11008, 4096)[2] == 1584
    ctx.tunables = {"RF_MMVR_WARPS": 2}
    assert "RF_MMVR_Q" not in L._xr_config(ctx, weight("q4_0", 4096), "q4_0", 11008, 4096)[0]
    ctx.tunables = {"RF_MMVR_Q": 4, "RF_MMVR_QMAX": 0}  # the launcher alone sets Q
    assert "RF_MMVR_Q" not in L._xr_config(ctx, weight("q4_0", 4096), "q4_0", 11008, 4096)[0]
    ctx.tunables, ctx.warp = {}, 64  # 64-wide waves: 8 groups a step, so K = 4096 is Q = 2
    assert L._xr_config(ctx, weight("q4_0", 4096), "q4_0", 11008, 4096)[0]["RF_MMVR_Q"] == 2


def test_xb_config_applies_where_rows_allow_and_caps_resident_blocks():
    """_xb_config (no GPU): mul_mat_vec_xb for rows of 16-byte multiples from xb_min_n rows, its ring within a
    block's shared memory, no more blocks than an SM's shared memory holds at once, tunables override."""
    import types

    from rocmforge.backends.hip import launch as L

    ctx = L.Ctx(mods=None, warp=32, n_sm=132)
    ctx.smem_block, ctx.smem_sm = 227 * 1024, 228 * 1024
    q4 = types.SimpleNamespace(row_bytes=4096 // 32 * 18, ptr=1 << 20)
    q8 = types.SimpleNamespace(row_bytes=4096 // 32 * 34, ptr=1 << 20)
    x_bytes = L.x8_row_bytes(4096)  # 5120, a 16-byte multiple
    d, smem, blocks = L._xb_config(ctx, q4, "q4_0", 11008, 4096)
    assert "RF_MMVB_BPS" not in d and d["RF_MMVB_ROWS"] == L.XB_DEFAULTS["q4_0"]["RF_MMVB_ROWS"]
    rows, ring = d["RF_MMVB_ROWS"], d["RF_MMVB_ASYNC"]
    assert smem == x_bytes + 8 * ring * rows * 18 * 32
    assert blocks == min(132 * min(2, ctx.smem_sm // (smem + 1024)), -(-11008 // rows))
    d8, smem8, blocks8 = L._xb_config(ctx, q8, "q8_0", 11008, 4096)
    assert smem8 == x_bytes + 8 * ring * rows * 34 * 32 and blocks8 == 132 * (ctx.smem_sm // (smem8 + 1024))
    assert L._xb_config(ctx, q4, "q4_0", ctx.xb_min_n - 1, 4096) is None  # too few rows
    assert (
        L._xb_config(ctx, types.SimpleNamespace(row_bytes=896 // 32 * 18, ptr=0), "q4_0", 8192, 896) is None
    )
    assert L._xb_config(ctx, types.SimpleNamespace(row_bytes=q4.row_bytes, ptr=8), "q4_0", 8192, 4096) is None
    ctx.tunables = {"RF_MMVB_ROWS": 2, "RF_MMVB_ASYNC": 3, "RF_MMVB_WARPS": 4}
    d2, smem2, blocks2 = L._xb_config(ctx, q4, "q4_0", 11008, 4096)
    assert d2["RF_MMVB_ROWS"] == 2 and smem2 == x_bytes + 4 * 3 * 2 * 18 * 32
    ctx.smem_block = 48 * 1024  # no opt-in: the Q8_0 ring no longer fits, Q4_0's does
    ctx.tunables = {}
    assert L._xb_config(ctx, q8, "q8_0", 11008, 4096) is None
    assert (L._xb_config(ctx, q4, "q4_0", 11008, 4096) is None) == (smem > 48 * 1024)


def test_k_smem_opts_in_above_48k_once_per_function():
    """Ctx.k_smem sets a function's dynamic shared memory limit only above the default 48 KB, and only when
    a launch needs more than the function was given before (no driver call per launch)."""
    from rocmforge.backends.hip import launch as L

    class Fn:
        def __init__(self):
            self.sets = []

        def __setattr__(self, k, v):
            if k == "max_dynamic_shared_size_bytes":
                self.sets.append(v)
            object.__setattr__(self, k, v)

    fns: dict = {}

    class Mods:
        def get(self, file, **defines):
            return self

        def fn(self, name):
            return fns.setdefault(name, Fn())

    ctx = L.Ctx(mods=Mods(), warp=32, n_sm=132)
    for need in (40 << 10, 100 << 10, 100 << 10, 80 << 10, 120 << 10):
        f = ctx.k_smem("mul_mat_vec.hip", "mul_mat_vec_xb_q4_0", need)
    ctx.k_smem("mul_mat_vec.hip", "mul_mat_vec_xb_q8_0", 60 << 10)
    assert f is fns["mul_mat_vec_xb_q4_0"] and f.sets == [100 << 10, 120 << 10]
    assert fns["mul_mat_vec_xb_q8_0"].sets == [60 << 10]
