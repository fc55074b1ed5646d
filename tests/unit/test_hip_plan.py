"""What the HIP backend decides without a GPU: where QUANTIZE_X8 nodes go and which mat-vecs share one, and
which kernel MUL_MAT launches how (kernel_choice)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip import launch_geometry as G
from rocmforge.backends.hip.context import Ctx
from rocmforge.engine import Engine
from rocmforge.ir import alloc, passes
from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import Op
from rocmforge.synth import write_tiny_model

H100 = G.Device(32, 132, 227 * 1024, 228 * 1024, "sm_90")
INT8 = C.MatMulOptions(int8_activations=True)
# mul_mat_vec_xr from one row: its geometry at the 4096-row weights it once served (the table's min_n is 8192)
INT8_XR_ANY_N = C.MatMulOptions(int8_activations=True, min_n={"mul_mat_vec_xr": 0})


def _with_quantize_x8(g: Graph, reads) -> Graph:
    return passes.optimize(g, (("insert", lambda g: passes.insert_quantize_x8(g, reads)), *passes.PIPELINE))[
        0
    ]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_decode_mat_vecs_share_one_quantize_x8_per_activation(tmp_path, arch):
    """insert_quantize_x8, then CSE: one QUANTIZE_X8 node per value the weight mat-vecs read, emitted before
    its first reader, which all read it as their third source."""
    eng = Engine.from_gguf(write_tiny_model(tmp_path / "m.gguf", arch, wtype=Q.Q8_0), backend="numpy",
                           fuse=False)  # the graph as built: Q, K, V are separate mat-vecs
    g = _with_quantize_x8(eng.graph(1), lambda t: t.src[0].kind == "weight")
    n_layer = eng.config.n_layer
    mm = [t for t in g.nodes if t.op is Op.MUL_MAT and t.src[0].kind == "weight"]
    readers = Counter(t.src[2].id for t in mm)
    # per layer: Q, K, V read the attention norm's output; gate and up the FFN norm's; the attention
    # output and down projections their own inputs; plus the output projection
    assert sorted(readers.values()) == sorted([3] * n_layer + [2] * n_layer + [1] * (2 * n_layer + 1))
    for t in mm:  # a mat-vec's xq is QUANTIZE_X8 of its own x, before it
        xq = t.src[2]
        assert xq.op is Op.QUANTIZE_X8 and xq.src[0] is t.src[1] and xq.id < t.id
    quantized = [t for t in g.nodes if t.op is Op.QUANTIZE_X8]
    assert len(quantized) == len(readers)
    plan = alloc.plan(g, alignment=256)  # each in the arena, live until its last reader
    assert all(t.id in plan.offsets for t in quantized)
    assert not any(len(t.src) == 3 for t in g.nodes if t.op is Op.MUL_MAT and t.src[0].kind != "weight")


def test_quantize_x8_only_where_asked_and_again_after_a_cache_write():
    g = Graph()
    w = g.weight("w", (8, 64), "q8_0")
    w2 = g.weight("w2", (8, 64), "f16")
    cache = g.state("cache", (4, 64))
    x = g.input("x", (1, 64))
    g.output(g.mul_mat(w, g.view(cache, (1, 64), "row"), "before"))
    g.output(g.set_rows(cache, x, g.input("idx", (1,), "i32"), "write"))
    g.output(g.mul_mat(w, g.view(cache, (1, 64), "row2"), "after"))
    g.output(g.mul_mat(w2, x, "f16_weight"))
    out = _with_quantize_x8(g, lambda t: t.src[0].dtype == "q8_0")
    mm = {t.name: t for t in out.nodes if t.op is Op.MUL_MAT}
    assert len(mm["f16_weight"].src) == 2
    assert mm["before"].src[2] is not mm["after"].src[2]  # the cache changed in between
    assert [t.name for t in out.nodes if t.op is Op.QUANTIZE_X8] == ["row.x8", "row2.x8"]


def test_quantize_x8_starts_early_where_its_first_reader_does():
    """reads_int8_x / early_quantize_x8 (no GPU: weights are device tensors of a fake buffer): Q4_0 weights
    on mul_mat_vec_xr read int8 x, f16 ones do not; with programmatic launch the QUANTIZE_X8 node whose
    first reader starts early (whole rows, K = 4096) starts early, the one before row groups of 8 rows
    (K = 11008, x loaded with the weights) does not."""
    import types

    from rocmforge.backends.hip.launch_mul_mat import early_quantize_x8, reads_int8_x
    from rocmforge.backends.hip.tensor import DevTensor

    buf = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1 << 20))
    weights = {
        "up": DevTensor(buf, 0, (11008, 4096), "q4_0"),
        "gate": DevTensor(buf, 0, (11008, 4096), "q4_0"),
        "down": DevTensor(buf, 0, (4096, 11008), "q4_0"),
        "f": DevTensor(buf, 0, (11008, 4096), "f16"),
    }
    g = Graph()
    x, h = g.input("x", (1, 4096)), g.input("h", (1, 11008))
    for name in ("up", "gate", "f"):
        g.output(g.mul_mat(g.weight(name, weights[name].shape, weights[name].dtype), x, name + "_out"))
    g.output(g.mul_mat(g.weight("down", (4096, 11008), "q4_0"), h, "down_out"))
    for pdl in (False, True):
        for opts in (INT8, INT8_XR_ANY_N):
            ctx = Ctx(mods=None, device=H100, mat_mul=opts, pdl=pdl)
            out = _with_quantize_x8(g, reads_int8_x(ctx, weights))
            quantized = {t.name: t.src[2].name for t in out.nodes if t.op is Op.MUL_MAT and len(t.src) == 3}
            # down's 4096 rows: the f32 mat-vec with the table's min_n
            down = {"down_out": "h.x8"} if opts is INT8_XR_ANY_N else {}
            assert quantized == {"up_out": "x.x8", "gate_out": "x.x8", **down}
            early = {out.nodes[i].name for i in early_quantize_x8(ctx, out, weights)}
            assert early == ({"x.x8"} if pdl else set())
    ctx = Ctx(mods=None, device=H100, mat_mul=C.MatMulOptions())  # no int8 activations: none
    assert not any(reads_int8_x(ctx, weights)(t) for t in g.nodes if t.op is Op.MUL_MAT)


def _weight(N: int, K: int, kt: str = "q4_0", ptr: int = 1 << 20, pad: int = 0) -> G.Weight:
    return G.Weight(kt, N, K, K // 32 * {"q4_0": 18, "q8_0": 34}[kt] + pad, ptr)


def _xr(w: G.Weight, dev: G.Device = H100, tunables: dict | None = None, opts=INT8_XR_ANY_N,
        pdl: bool = False):
    """mul_mat_vec_xr's launch for w and one token, or None where MUL_MAT chooses another kernel."""
    c = C.choose_mul_mat(dev, opts, tunables or {}, w, 1, pdl)
    return c.launch if c.kernel is C.MUL_MAT_VEC_XR else None


def test_early_start_for_whole_rows_with_programmatic_launch():
    """With programmatic launch on, mul_mat_vec_xr starts while the kernel before it ends only without x
    loaded with the weights (XPF 0: the whole rows at K = 4096), and so does its quantize_x8; its row groups
    of 8 rows (K = 11008, XPF 1) stay plain launches; the other kernels (RF_PDL_BEGIN) always start early."""

    def early(w: G.Weight, tunables: dict | None = None, pdl: bool = True) -> bool:
        c = C.choose_mul_mat(H100, INT8_XR_ANY_N, tunables or {}, w, 1, pdl)
        assert c.quantize is None or c.quantize.pdl == c.launch.pdl
        return c.launch.pdl

    up, down = _weight(11008, 4096), _weight(4096, 11008)
    assert not early(up, pdl=False)  # no programmatic launch
    assert early(up) and early(_weight(11008, 4096, "q8_0"))
    assert _xr(up, pdl=True).defines["RF_MMVR_PDL"] == 1 and "RF_MMVR_PDL" not in _xr(up).defines
    assert not early(down)  # row groups of 8 rows: x loaded with the weights
    q4_k = G.Weight("q4_k", 4096, 4096, 4096 // 256 * 144, 1 << 20)  # not an int8 mat-vec
    assert early(q4_k) and not early(q4_k, pdl=False)
    assert not early(up, {"RF_MMVR_PDL": 0})
    assert early(down, {"RF_MMVR_XPF": 0})  # row groups reading x in the loop may start early
    assert early(_weight(49152, 576))  # mul_mat_vec_xq: RF_PDL_BEGIN, programmatic too


def test_xr_applies_to_its_types_where_k_allows():
    """mul_mat_vec_xr for Q4_0 and Q8_0 with K a multiple of 256, packed 16-byte aligned rows and at least
    min_n rows; staging per warp, a block per row group at most."""
    tun = {"RF_MMVR_QMAX": 0}  # row groups of 8 rows (whole rows: the next test)
    groups, groups_host = C.XR_DEFAULTS["q4_0"]["groups"], C.XR_DEFAULTS["q4_0"]["groups_host"]
    for N in (4096, 32000):  # 4 and 30 row groups an SM: the defaults
        r = _xr(_weight(N, 4096), tunables=tun)
        warps, bps = groups["RF_MMVR_WARPS"], groups_host["blocks_per_sm"]
        assert "RF_MMVR_BPS" not in r.defines and "RF_MMVR_QMAX" not in r.defines
        assert r.defines["RF_MMVR_WARPS"] == warps
        assert r.smem == warps * 8 * 4 * 10 * 16 + 2 * warps * 8 * 4  # 4 groups of 10 chunks a row, 8 rows
        assert r.grid == (min(132 * bps, N // 8), 1) and r.block == (warps * 32,)
    # 1,376 row groups (10.4 an SM) fit one round of one-warp blocks: a warp each
    r = _xr(_weight(11008, 4096), tunables=tun)
    assert r.defines["RF_MMVR_WARPS"] == 1 and r.defines["RF_MMVR_MINB"] == 12
    assert r.smem == 8 * 4 * 10 * 16 + 2 * 8 * 4 and r.grid[0] == 11008 // 8
    assert _xr(_weight(8 * 8 * 132 - 8, 4096), tunables=tun).defines["RF_MMVR_WARPS"] == 2  # < 8 an SM
    assert _xr(_weight(8 * 12 * 132 + 8, 4096), tunables=tun).defines["RF_MMVR_WARPS"] == 2  # two rounds
    r8 = _xr(_weight(11008, 4096, "q8_0"), tunables=tun)  # Q8_0 too, one warp a row group
    assert r8.defines["RF_MMVR_WARPS"] == 1 and r8.smem == 8 * 4 * 18 * 16 + 2 * 8 * 4
    r8 = _xr(_weight(4096, 11008, "q8_0", ptr=0))
    assert r8.defines["RF_MMVR_WARPS"] == 2 and r8.smem == 2 * 8 * 4 * 18 * 16 + 2 * 2 * 8 * 4
    only_q4 = dataclasses.replace(C.MUL_MAT_VEC_XR, weight_types=("q4_0",))
    opts = C.MatMulOptions(True, (only_q4, C.MUL_MAT_VEC))
    assert _xr(_weight(11008, 4096, "q8_0"), opts=opts) is None  # a type the row does not serve
    assert C.MUL_MAT_VEC_XR.min_n == 8192
    assert _xr(_weight(8191, 4096), opts=INT8) is None and _xr(_weight(8192, 4096), opts=INT8)  # too few rows
    assert _xr(_weight(100, 4096), opts=C.MatMulOptions(True, min_n={"mul_mat_vec_xr": 0})) is not None
    for K in (576, 896, 4864 + 32):  # K not a multiple of 256
        assert _xr(_weight(8192, K, ptr=0)) is None
    assert _xr(_weight(8192, 4096, ptr=8)) is None  # not aligned
    assert _xr(_weight(8192, 4096, pad=16)) is None  # rows not packed
    assert _xr(_weight(8192, 4096), opts=C.MatMulOptions()) is None  # int8 activations off
    r = _xr(_weight(5000, 2304, ptr=0), tunables={"RF_MMVR_WARPS": 8, "RF_MMVR_BPS": 1, **tun})
    assert r.defines["RF_MMVR_WARPS"] == 8 and r.grid[0] == 132
    assert r.smem == 8 * 8 * 4 * 10 * 16 + 2 * 8 * 8 * 4


def test_xr_takes_whole_rows_where_k_is_256_h_q():
    """Whole rows a row group (RF_MMVR_Q = K / (256 H), 2 <= Q <= RF_MMVR_QMAX, one warp a block, no x
    prefetch, x's scales tied to the weights), the row groups (Q N / 8) spread evenly over the fewest
    rounds of resident blocks; Q8_0 with fewer blocks an SM; off where K does not allow or with more warps
    a block."""
    # Q4_0 K = 4096: Q = 4, 12 blocks an SM (1,584 at most); 5,504 row groups -> 4 rounds of 1,376 blocks
    for N, blocks in ((11008, 1376), (4096, 1024), (32000, 1455)):
        r = _xr(_weight(N, 4096))
        d = r.defines
        assert d["RF_MMVR_Q"] == 4 and d["RF_MMVR_WARPS"] == 1 and d["RF_MMVR_XPF"] == 0
        assert d["RF_MMVR_MINB"] == 12 and "RF_MMVR_QMAX" not in d and "RF_MMVR_EVEN" not in d
        assert d["RF_MMVR_XDEP"] == 1  # x's scales tied to the staged weights
        assert r.smem == 8 * 4 * 10 * 16 + 2 * 8 * 4 and r.grid[0] == blocks
    r = _xr(_weight(11008, 4096, "q8_0"))  # 8 an SM: 6 rounds of 918
    assert r.defines["RF_MMVR_Q"] == 4 and r.defines["RF_MMVR_MINB"] == 8 and r.grid[0] == 918
    r = _xr(_weight(5001, 2048))  # Q = 2: 4 rows a group
    assert r.defines["RF_MMVR_Q"] == 2 and r.grid[0] == 1251
    for K in (1024, 8192, 11008, 2304):  # Q = 1, Q = 8 > QMAX, 43 and 9 groups: row groups of 8 rows
        assert "RF_MMVR_Q" not in _xr(_weight(11008, K)).defines
    assert _xr(_weight(4096, 8192), tunables={"RF_MMVR_QMAX": 8}).defines["RF_MMVR_Q"] == 8
    assert _xr(_weight(11008, 4096), tunables={"RF_MMVR_EVEN": 0}).grid[0] == 1584  # every resident block
    assert "RF_MMVR_Q" not in _xr(_weight(11008, 4096), tunables={"RF_MMVR_WARPS": 2}).defines
    # the geometry alone sets Q
    assert "RF_MMVR_Q" not in _xr(_weight(11008, 4096), tunables={"RF_MMVR_Q": 4, "RF_MMVR_QMAX": 0}).defines
    wave64 = G.Device(64, 132, 227 * 1024, 228 * 1024)  # 8 groups a step, so K = 4096 is Q = 2
    assert _xr(_weight(11008, 4096), dev=wave64).defines["RF_MMVR_Q"] == 2


def test_defaults_per_device_family():
    """Every kept kernel has defaults for every family; unmeasured families take sm_90's."""
    assert G.device_family("sm_90") == G.device_family("sm_90a") == "sm_90"
    assert G.device_family("gfx1100") == "gfx1100" and G.device_family("gfx90a") == "other"
    assert G.device_family("sm_80") == "other"
    for kern in C.MUL_MAT_KERNELS:
        assert set(kern.defaults) == set(C.FAMILIES), kern.name
        assert kern.weight_types and kern.x in ("f32", "x8") and kern.serves and kern.geometry_doc


def test_host_tunables_are_arguments_not_defines():
    """blocks per SM, QMAX and EVEN reach the geometry, never a compile define."""
    tun = {"RF_MMVR_BPS": 3, "RF_MMVX_BPS": 2, "RF_MMVR_EVEN": 0, "RF_MMV_WARPS": 8}
    assert C.kernel_defines(tun) == {"RF_MMV_WARPS": 8}
    assert C.host_parameters("mul_mat_vec_xr", tun) == {"blocks_per_sm": 3, "even": 0}
    r = _xr(_weight(11008, 4096), tunables={"RF_MMVR_BPS": 3, "RF_MMVR_EVEN": 0})
    assert not any(k.endswith("_BPS") for k in r.defines) and r.grid[0] == 132 * 3


def test_function_opts_in_above_48k_once_per_function():
    """Ctx.function sets a function's dynamic shared memory limit only above the default 48 KB, and only
    when a launch needs more than the function was given before (no driver call per launch)."""

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

    ctx = Ctx(mods=Mods(), device=H100)

    def launch(name: str, smem: int) -> G.KernelLaunch:
        return G.KernelLaunch("mul_mat_vec_xq.hip", name, {}, (1,), (32,), smem)

    for need in (40 << 10, 100 << 10, 100 << 10, 80 << 10, 120 << 10):
        f = ctx.function(launch("mul_mat_vec_xq_q4_0", need))
    ctx.function(launch("mul_mat_vec_xq_q8_0", 60 << 10))
    assert f is fns["mul_mat_vec_xq_q4_0"] and f.sets == [100 << 10, 120 << 10]
    assert fns["mul_mat_vec_xq_q8_0"].sets == [60 << 10]


def test_prepare_compiles_the_modules_a_run_uses():
    """prepare_launch compiles each op's kernel file (attention per head dim) and the copy kernels."""
    import types

    from rocmforge.backends.hip.launch import prepare_launch
    from rocmforge.backends.hip.tensor import DevTensor

    got = []

    class Mods:
        def get(self, file, **defines):
            got.append((file, defines))

    ctx = Ctx(mods=Mods(), device=H100)
    buf = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1 << 20))
    q, kv = DevTensor(buf, 0, (2, 4, 80), "f32"), DevTensor(buf, 0, (16, 2, 80), "f16")
    pos = DevTensor(buf, 0, (2,), "i32")
    prepare_launch(ctx, Op.FLASH_ATTN_EXT, q, [q, kv, kv, pos], {"scale": 1.0})
    prepare_launch(ctx, Op.RMS_NORM, q, [q], {"eps": 1e-6})
    prepare_launch(ctx, Op.VIEW, q, [q], {})
    assert got == [
        ("elementwise.hip", {}),
        ("attention.hip", {"RF_HEAD_DIM": 80}),
        ("elementwise.hip", {}),
        ("norm.hip", {}),
    ]


def test_int8_auto_chooses_int8_x_where_the_rows_are_long_enough_on_the_family():
    """int8_activations="auto": the int8 kernels for rows of at least INT8_AUTO_MIN_K (sm_90: 4096, LLaMA-7B's
    Q/K/V, gate/up, logits), the f32 mat-vec for the small models' (896) and on families without a measured
    threshold; the options refuse other values."""
    auto = C.MatMulOptions(int8_activations="auto")
    assert C.INT8_AUTO_MIN_K["sm_90"] == 4096

    def kernel(w, dev=H100):
        return C.choose_mul_mat(dev, auto, {}, w, 1).kernel.name

    assert kernel(_weight(12288, 4096)) == kernel(_weight(32000, 4096, "q8_0")) == "mul_mat_vec_xr"
    assert kernel(_weight(4096, 11008)) == "mul_mat_vec"  # under xr's min_n: f32 x
    assert kernel(G.Weight("q4_0", 151936, 896, 896 // 32 * 18, 0)) == "mul_mat_vec"  # Qwen's logits
    rdna3 = G.Device(32, 42, 64 * 1024, 64 * 1024, "gfx1100")
    assert kernel(_weight(12288, 4096), rdna3) == "mul_mat_vec"
    assert C.choose_mul_mat(rdna3, INT8, {}, _weight(12288, 4096), 1).kernel.name == "mul_mat_vec_xr"
    with pytest.raises(ValueError, match="int8_activations"):
        C.MatMulOptions(int8_activations="yes")
