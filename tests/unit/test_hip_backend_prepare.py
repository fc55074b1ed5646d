"""HipBackend.prepare without a GPU (CuPy replaced by a fake that hands out addresses, kernels compiled by a
recorder): with int8 activations the decode graph of a Q4_0 model gets one QUANTIZE_X8 node per value its
weight mat-vecs read, each with a buffer in the arena, and every module the run needs is compiled at
prepare; the fused ops (RMS_NORM_MUL, MUL_MAT_ADD with its QUANTIZE_X8 source) prepare as MUL_MAT's and
RMS_NORM's do."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge import quant
from rocmforge.engine import Engine
from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import MUL_MAT_OPS, NORM_MUL_MAT_OPS, QUANTIZE_X8_OPS, Op, xq_source
from rocmforge.synth import write_tiny_model


class _Buf:
    """A device buffer: an address and a size; slices and .set() accept anything."""

    _next = 1 << 32

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.data = types.SimpleNamespace(ptr=_Buf._next)
        _Buf._next += (self.nbytes + 4095) // 4096 * 4096

    def __getitem__(self, _):
        return self

    def set(self, _) -> None:
        pass

    def fill(self, _) -> None:
        pass


def _fake_cupy(warp: int, sms: int) -> types.SimpleNamespace:
    props = {
        "name": b"fake H100",
        "warpSize": warp,
        "major": 9,
        "minor": 0,
        "multiProcessorCount": sms,
        "sharedMemPerBlockOptin": 227 * 1024,
        "sharedMemPerMultiprocessor": 228 * 1024,
    }
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDeviceProperties=lambda i: props, is_hip=False,
        memGetInfo=lambda: (80 << 30, 80 << 30),
    )
    pool = types.SimpleNamespace(used_bytes=lambda: 0, total_bytes=lambda: 0, get_limit=lambda: 0)
    cuda = types.SimpleNamespace(
        runtime=runtime,
        Device=lambda i: types.SimpleNamespace(use=lambda: None),
        Stream=lambda non_blocking: object(),
        alloc_pinned_memory=lambda n: bytearray(n),
    )
    return types.SimpleNamespace(
        cuda=cuda, empty=lambda n, dtype=None: _Buf(n), zeros=lambda n, dtype=None: _Buf(n),
        get_default_memory_pool=lambda: pool,
    )


def _direct(f, grid, block, args, shared_mem=0) -> None:  # pdl.PdlLauncher's launch: the function called
    f(grid, block, args)


class _Modules:
    """ModuleCache's stand-in: modules compiled, and every kernel call as (entry, args) in `calls`."""

    def __init__(self) -> None:
        self.compiled: set[tuple] = set()
        self.calls: list[tuple[str, tuple]] = []

    def get(self, file: str, **defines):
        self.compiled.add((file, tuple(sorted(defines.items()))))

        def fn(name: str):
            return lambda grid, block, args, shared_mem=0: self.calls.append((name, args))

        return types.SimpleNamespace(fn=fn)


@pytest.mark.parametrize("int8", [False, True])
def test_prepare_inserts_quantize_x8_and_compiles_every_module(tmp_path, monkeypatch, int8):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: None)
    be = HipBackend(int8_activations=int8)
    be.ctx.mods = mods = _Modules()
    path = write_tiny_model(tmp_path / "m.gguf", "llama", wtype=Q.Q4_0, n_embd=256, n_ff=512, n_head=4)
    # every mat-vec of the tiny model is small: the int8 kernels from one row, as tests/gpu do
    if int8:
        from rocmforge.backends.hip import kernel_choice as C

        be.ctx.mat_mul = C.MatMulOptions(True, min_n={"mul_mat_vec_xr": 0, "mul_mat_vec_xq": 0})
    eng = Engine.from_gguf(path, backend=be, max_ctx=64)
    g = eng.graph(1)  # bound and prepared
    ops = [t for t in g.nodes if not t.is_leaf]
    quantized = [t for t in ops if t.op is Op.QUANTIZE_X8]
    normed = [t for t in ops if t.op is Op.RMS_NORM_MUL_QUANTIZE_X8]
    mat_ops = {*MUL_MAT_OPS, *NORM_MUL_MAT_OPS}
    weight_mm = [t for t in ops if t.op in mat_ops and t.src[0].kind == "weight"]
    if not int8:
        assert not quantized and not normed and all(xq_source(t) is None for t in weight_mm)
    else:
        n_layer = eng.config.n_layer
        # the attention's and the SWIGLU's outputs quantized on their own; the norms before attention, the
        # FFN and the logits each in one launch with their int8 copy (fold_norms), read by norm-folded ops
        assert len(quantized) == 2 * n_layer and len(normed) == 2 * n_layer + 1
        assert not any(t.op is Op.RMS_NORM_MUL for t in ops)
        assert all(xq_source(t).op in QUANTIZE_X8_OPS for t in weight_mm)
        assert all((xq_source(t).op is Op.RMS_NORM_MUL_QUANTIZE_X8) == (t.op in NORM_MUL_MAT_OPS)
                   for t in weight_mm)
        plan = be.plan_of(g)
        assert all(t.id in plan.offsets for t in quantized + normed)
    files = {f for f, _ in mods.compiled}
    want = {"elementwise.hip", "norm.hip", "rope.hip", "attention.hip", "get_rows.hip"}  # rope.hip: KV writes
    want |= {"mul_mat_vec_xr.hip", "quantize_x8.hip"} if int8 else {"mul_mat_vec.hip"}
    assert want <= files, want - files


@pytest.mark.parametrize("fold", [True, False])
def test_prepare_fused_ops(monkeypatch, fold):
    """x -> RMS_NORM_MUL(x, norm) -> MUL_MAT_ADD(wq, h, bias, QUANTIZE_X8(h)) -> MUL_MAT_ADD(wo, q, x): the
    launchers are the fused ops' own, and h's int8 copy starts early (its reader, a MUL_MAT_ADD on
    mul_mat_vec_xr's whole rows, has it as its last source). fold (the default): the norm and the int8 copy
    are one launch (RMS_NORM_MUL_QUANTIZE_X8) read by RMS_NORM_MUL_MAT_ADD; RF_FOLD_NORMS=0: RMS_NORM_MUL and
    QUANTIZE_X8 apart. Either way the norm's weight is read before the wait (w_early, the last argument)."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import kernel_choice as C
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend
    from rocmforge.backends.hip.launch_mul_mat import early_quantize_x8

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: _direct)
    tunables = {} if fold else {"RF_FOLD_NORMS": 0}
    be = HipBackend(int8_activations=True, programmatic_launch=True, tunables=tunables)
    be.ctx.mods = mods = _Modules()
    be.ctx.mat_mul = C.MatMulOptions(True, min_n={"mul_mat_vec_xr": 0})
    g = Graph()
    x = g.input("x", (1, 2048))
    h = g.rms_norm_mul(x, g.weight("norm", (2048,), "f32"), 1e-6, "h")
    wq, bias = g.weight("wq", (256, 2048), "q4_0"), g.weight("bq", (256,), "f32")
    q = g.mul_mat_add(wq, h, bias, "q", g.quantize_x8(h, "h.x8"))
    g.output(g.mul_mat_add(g.weight("wo", (2048, 256), "f16"), q, x, "out"))
    qtypes = {"norm": Q.F32, "wq": Q.Q4_0, "bq": Q.F32, "wo": Q.F16}
    rng = np.random.default_rng(0)
    shapes = {t.name: t.shape for t in g.leaves("weight")}
    be.bind_weights(g, lambda name: (quant.random_blocks(qtypes[name], shapes[name], rng), qtypes[name]))
    prepared = be.prepare(g)
    plan_steps = be._get_plan(prepared).steps
    steps = {st.node.name: st.launch.__name__ for st in plan_steps}
    if fold:
        assert steps == {"h.x8": "RMS_NORM_MUL_QUANTIZE_X8", "q": "RMS_NORM_MUL_MAT_ADD",
                         "out": "MUL_MAT_ADD"}
    else:
        assert steps == {"h": "RMS_NORM_MUL", "h.x8": "QUANTIZE_X8", "q": "MUL_MAT_ADD", "out": "MUL_MAT_ADD"}
    want = {"quantize_x8.hip", "mul_mat_vec_xr.hip", "mul_mat_vec.hip"} | (set() if fold else {"norm.hip"})
    assert want <= {f for f, _ in mods.compiled}
    (hq,) = [t for t in prepared.nodes if t.name == "h.x8"]
    assert early_quantize_x8(be.ctx, prepared, be.weights) == {hq.id}
    for st in plan_steps:
        st.launch(be.ctx, st.out, *st.srcs, **st.node.params)
    names = [name for name, _ in mods.calls]
    norm = "rms_norm_mul_quantize_x8" if fold else "rms_norm_mul_f32_f32"
    want_calls = [norm, "mul_mat_vec_xr_q4_0", "mul_mat_vec_f16"] if fold else [
        norm, "quantize_x8", "mul_mat_vec_xr_q4_0", "mul_mat_vec_f16"]
    assert names == want_calls
    assert int(mods.calls[0][1][-1]) == 1  # w_early
    if fold:  # the mat-vec reads the int8 copy the fused launch wrote, not x
        (q_step,) = [st for st in plan_steps if st.node.name == "q"]
        xq = [st.out for st in plan_steps if st.node.name == "h.x8"][0]
        assert mods.calls[1][1][2] == xq.ptr and q_step.srcs[-1].ptr == xq.ptr


def test_constant_operands_are_read_early_only_where_they_are_weights(monkeypatch):
    """A norm whose w another kernel computes (here an ADD) waits before reading it; a mat-vec's bias that
    is a weight is read before the wait (a build of its own), a residual after."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: _direct)
    be = HipBackend(programmatic_launch=True, tunables={"RF_FOLD_NORMS": 0})  # the norm a launch of its own
    be.ctx.mods = mods = _Modules()
    g = Graph()
    x, v = g.input("x", (1, 256)), g.input("v", (256,))
    w = g.add(v, g.weight("norm", (256,), "f32"), "w")  # computed: not a weight
    h = g.rms_norm_mul(x, w, 1e-6, "h")
    # MUL_MAT_ADD on mul_mat_vec: a bias (a weight) read before the wait, a residual (an input) after
    q = g.mul_mat_add(g.weight("wq", (64, 256), "q8_0"), h, g.weight("bq", (64,), "f32"), "q")
    g.output(g.mul_mat_add(g.weight("wo", (256, 64), "q8_0"), q, x, "out"))
    rng = np.random.default_rng(0)
    types_ = {"norm": Q.F32, "bq": Q.F32, "wq": Q.Q8_0, "wo": Q.Q8_0}
    shapes = {t.name: t.shape for t in g.leaves("weight")}
    be.bind_weights(g, lambda name: (quant.random_blocks(types_[name], shapes[name], rng), types_[name]))
    prepared = be.prepare(g)
    for st in be._get_plan(prepared).steps:
        st.launch(be.ctx, st.out, *st.srcs, **st.node.params)
    (norm,) = [args for name, args in mods.calls if name.startswith("rms_norm_mul")]
    assert int(norm[-1]) == 0
    mmv = [dict(d) for f, d in mods.compiled if f == "mul_mat_vec.hip"]
    assert sorted(d.get("RF_MMV_BCONST", 0) for d in mmv) == [0, 1]  # q's build and out's
    calls = [name for name, _ in mods.calls if name.startswith("mul_mat_vec")]
    assert calls == ["mul_mat_vec_q8_0", "mul_mat_vec_q8_0"]


def test_staging_copies_every_input_in_one_copy_and_small_outputs_through_pinned_memory():
    """plan.Staging on host memory standing in for the device (memcpyAsync = memmove): inputs land at their
    offsets from one copy; a small output comes back through the pinned buffer, a large one is left out."""
    import ctypes

    from rocmforge.backends.hip.plan import Staging
    from rocmforge.backends.hip.tensor import DevTensor

    class HostBuf:
        def __init__(self, n: int) -> None:
            self.a = np.zeros(n, np.uint8)
            self.nbytes = n
            self.data = types.SimpleNamespace(ptr=self.a.ctypes.data)

    copies = []

    def memcpy_async(dst, src, n, kind, stream):
        copies.append(kind)
        ctypes.memmove(dst, src, n)

    runtime = types.SimpleNamespace(memcpyAsync=memcpy_async, memcpyHostToDevice=1, memcpyDeviceToHost=2)
    cp = types.SimpleNamespace(empty=lambda n, dtype=None: HostBuf(n),
                               cuda=types.SimpleNamespace(runtime=runtime, alloc_pinned_memory=bytearray))
    g = Graph()
    tok, pos = g.input("inp_tokens", (3,), "i32"), g.input("inp_pos", (3,), "i32")
    st = Staging(cp, {"inp_tokens": tok, "inp_pos": pos})
    toks, poss = np.array([7, 8, 9], np.int32), np.array([40, 41, 42], np.int32)
    st.write({"inp_tokens": toks, "inp_pos": poss}, types.SimpleNamespace(ptr=0))
    assert copies == [1]
    for name, want in (("inp_tokens", toks), ("inp_pos", poss)):
        t = st.device_input(name, g.inputs[name])
        assert np.array_equal(t.buf.a[t.offset:t.offset + 12].view(np.int32), want)
    dev = HostBuf(1 << 20)
    dev.a[64:68] = np.array([123], np.int32).view(np.uint8)
    small, big = DevTensor(dev, 64, (1,), "i32"), DevTensor(dev, 4096, (1, 200_000), "f32")
    st.plan_outputs({"argmax": small, "logits": big})
    assert set(st.outputs) == {"argmax"}  # 800 KB of logits: downloaded only when asked, not staged
    st.read_async("argmax", small, types.SimpleNamespace(ptr=0))
    got = st.result("argmax", small)
    dev.a[64:68] = 0
    assert copies == [1, 2] and got.tolist() == [123]  # a copy: the next run does not change it


@pytest.mark.parametrize("fold", [1, 0])
def test_norms_fold_into_the_decode_mat_vecs_that_read_them(tmp_path, monkeypatch, fold):
    """Decode graphs: every RMS_NORM_MUL whose readers run mul_mat_vec becomes part of them
    (RMS_NORM_MUL_MAT*, a build with RF_MMV_NORM whose launch takes wn and eps last); prompts keep their
    layers' norms (their mat-muls are not mat-vecs); RF_FOLD_NORMS=0 keeps them all."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend
    from rocmforge.ir.ops import NORM_MUL_MAT_OPS

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: _direct)
    be = HipBackend(tunables={"RF_FOLD_NORMS": fold})
    be.ctx.mods = mods = _Modules()
    path = write_tiny_model(tmp_path / "m.gguf", "llama", wtype=Q.Q8_0, n_embd=256, n_ff=512, n_head=4)
    eng = Engine.from_gguf(path, backend=be, max_ctx=64)
    decode, prompt = eng.graph(1), eng.graph(8)
    n_layer = eng.config.n_layer
    folded = [t for t in decode.nodes if t.op in NORM_MUL_MAT_OPS]
    norms = [t for t in decode.nodes if t.op is Op.RMS_NORM_MUL]
    if fold:  # attention and FFN inputs of every layer, the logits
        assert not norms and len(folded) == 2 * n_layer + 1
        assert {t.op for t in folded} == {Op.RMS_NORM_MUL_MAT, Op.RMS_NORM_MUL_MAT_SWIGLU}  # (no biases)
        assert all(t.src[2].kind == "weight" and t.src[2].name.endswith("norm.weight") for t in folded)
        for st in be._get_plan(decode).steps:
            if st.node.op in NORM_MUL_MAT_OPS:
                st.launch(be.ctx, st.out, *st.srcs, **st.node.params)
        name, args = mods.calls[-1]
        assert name.startswith("mul_mat_vec_") and args[-1] == np.float32(eng.config.norm_eps)
        assert any(dict(d).get("RF_MMV_NORM") == 1 for f, d in mods.compiled if f == "mul_mat_vec.hip")
    else:
        assert not folded and len(norms) == 2 * n_layer + 1
    # a prompt's layers run mat-muls (their norms stay); its head is a mat-vec of the last token
    assert not any(t.op in NORM_MUL_MAT_OPS for t in prompt.nodes if t.name.startswith("blk."))
    assert sum(t.op is Op.RMS_NORM_MUL for t in prompt.nodes) == 2 * n_layer + (1 - fold)


@pytest.mark.models
def test_the_real_qwen2_5_decode_step_folds_its_layer_norms(monkeypatch):
    """Qwen2.5-0.5B on an H100-shaped fake: both norms of every layer fold (QKV 1.1 MB, gate/up 6 MB of
    weights), the output norm does not (the 145 MB logits): 5 launches a layer."""
    from gguf_factory import real_model

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: _direct)
    be = HipBackend()
    be.ctx.mods = _Modules()
    eng = Engine.from_gguf(real_model("qwen2.5-0.5b"), backend=be, max_ctx=64)
    g = eng.graph(1)
    launching = [t for t in g.nodes if not t.is_leaf and t.op not in (Op.VIEW, Op.RESHAPE)]
    per_layer = {i: [t.op for t in launching if t.name.startswith(f"blk.{i}.")]
                 for i in range(eng.config.n_layer)}
    assert all(len(ops) == 5 and Op.RMS_NORM_MUL not in ops for ops in per_layer.values()), per_layer[0]
    assert {Op.RMS_NORM_MUL_MAT_ADD, Op.RMS_NORM_MUL_MAT_SWIGLU} <= set(per_layer[0])
    head = [t.op for t in launching if not t.name.startswith("blk.")]
    assert head == [Op.GET_ROWS, Op.RMS_NORM_MUL, Op.MUL_MAT, Op.ARGMAX]


@pytest.mark.parametrize("tunables, want", [
    ({}, (("RF_DEC_G", 7), ("RF_HEAD_DIM", 64))),
    ({"RF_DEC_WARPS": 8}, (("RF_DEC_G", 7), ("RF_DEC_WARPS", 8), ("RF_HEAD_DIM", 64))),
])
def test_the_decode_attention_is_compiled_at_prepare_not_at_its_first_launch(tunables, want):
    from rocmforge.backends.hip.context import Ctx
    from rocmforge.backends.hip.launch import prepare_launch
    from rocmforge.backends.hip.launch_geometry import Device
    from rocmforge.backends.hip.tensor import DevTensor

    mods = _Modules()
    ctx = Ctx(mods, Device(32, 132), tunables)
    shapes = (("q", (1, 14, 64), "f32"), ("k", (64, 2, 64), "f16"), ("v", (64, 2, 64), "f16"),
              ("pos", (1,), "i32"))
    t = {n: DevTensor(_Buf(1 << 20), 0, shape, dt) for n, shape, dt in shapes}
    out = DevTensor(_Buf(1 << 16), 0, (1, 14, 64), "f32")
    prepare_launch(ctx, Op.FLASH_ATTN_EXT, out, [t["q"], t["k"], t["v"], t["pos"]], {"scale": 0.125})
    assert not mods.calls and ("attention.hip", want) in mods.compiled, sorted(mods.compiled)
    # a prompt of 64 on matrix instructions: attention_mma.hip's build
    mods = _Modules()
    ctx = Ctx(mods, Device(32, 132, mma=True), tunables)
    q = DevTensor(_Buf(1 << 20), 0, (64, 14, 64), "f32")
    prepare_launch(ctx, Op.FLASH_ATTN_EXT, q, [q, t["k"], t["v"], t["pos"]], {"scale": 0.125})
    assert not mods.calls and ("attention_mma.hip", (("RF_HEAD_DIM", 64),)) in mods.compiled


def test_an_int8_decode_layer_of_llama_7b_shapes_is_seven_launches(tmp_path, monkeypatch):
    """int8 activations (on, and the default "auto") on one LLaMA-7B-shaped layer (Q4_0, H100-shaped fake, the
    table's defaults): Q/K/V
    (12288 rows) and gate/up (22016) on mul_mat_vec_xr read their norm's int8 copy, one launch each with
    the norm (RMS_NORM_MUL_QUANTIZE_X8); o and down (4096 rows, under xr's min_n) the f32 mat-vec, with no
    QUANTIZE_X8 at all: 7 launches a layer, as without int8 activations."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: _direct)
    path = write_tiny_model(tmp_path / "m.gguf", "llama", wtype=Q.Q4_0, n_layer=1, n_embd=4096, n_ff=11008,
                            n_head=32, n_head_kv=32)
    layers = {}
    for int8 in (False, True, "auto"):  # "auto" (the default): these 4096-long rows on int8 x, on an sm_90
        be = HipBackend(int8_activations=int8)
        be.ctx.mods = _Modules()
        g = Engine.from_gguf(path, backend=be, max_ctx=64).graph(1)
        launching = [t for t in g.nodes if not t.is_leaf and t.op not in (Op.VIEW, Op.RESHAPE)]
        layers[int8] = [t for t in launching if t.name.startswith("blk.0.")]
    assert [(t.op, t.name) for t in layers["auto"]] == [(t.op, t.name) for t in layers[True]]
    ops8 = [t.op for t in layers[True]]
    assert len(ops8) == len(layers[False]) == 7, ops8
    assert ops8.count(Op.RMS_NORM_MUL_QUANTIZE_X8) == 2 and Op.QUANTIZE_X8 not in ops8
    assert Op.RMS_NORM_MUL not in ops8
    folded = [t for t in layers[True] if t.op in NORM_MUL_MAT_OPS]
    assert {t.op for t in folded} == {Op.RMS_NORM_MUL_MAT, Op.RMS_NORM_MUL_MAT_SWIGLU}
    assert all(xq_source(t).op is Op.RMS_NORM_MUL_QUANTIZE_X8 for t in folded)
    assert sorted(t.src[0].shape[0] for t in folded) == [3 * 4096, 2 * 11008]


def test_transient_scratch_is_one_buffer_a_plan_not_one_a_node(tmp_path, monkeypatch):
    """A prompt's launchers take scratch that nothing reads after their node (MUL_MAT_SWIGLU's product before
    glu_pairs_f32, split partials, contiguous copies) from buffers their plan's nodes share, as large as the
    largest any node takes: a 4-layer prompt of 64 tokens holds one layer's SWIGLU product, not four; the
    decode plan's are its own; node-persistent scratch (tickets) stays a node's."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend
    from rocmforge.backends.hip.context import Ctx
    from rocmforge.backends.hip.launch_geometry import Device

    ctx = Ctx(_Modules(), Device(32, 132))
    ctx.begin_node(("p", 1))
    a, b = ctx.empty((10,), "f32", transient=True), ctx.empty((3,), "f32", transient=True)
    own = ctx.empty((4,), "f32")
    ctx.begin_node(("p", 2))
    a2, own2 = ctx.empty((20,), "f32", transient=True), ctx.empty((4,), "f32")
    ctx.begin_node(("q", 1))
    a3 = ctx.empty((5,), "f32", transient=True)
    ctx.begin_node(("p", 3))
    a4 = ctx.empty((8,), "f32", transient=True)
    assert a.buf is not b.buf and own.buf is not own2.buf and a3.buf is not a2.buf
    assert a2.buf is a4.buf and a2.buf.nbytes == 80  # grown to node 2's, then shared by node 3
    ctx.begin_node(None)

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: _direct)
    path = write_tiny_model(tmp_path / "m.gguf", "llama", wtype=Q.Q4_0, n_layer=4, n_embd=256, n_ff=1024,
                            n_head=4)
    be = HipBackend(prefill="tiled")
    be.ctx.mods = _Modules()
    eng = Engine.from_gguf(path, backend=be, max_ctx=128)
    g = eng.graph(64)
    plan = be._get_plan(g)
    for st in plan.steps:
        if st.launch is not None:
            be.ctx.begin_node((id(plan), st.node.id))
            st.launch(be.ctx, st.out, *st.srcs, **st.node.params)
    be.ctx.begin_node(None)
    swiglu = [t for t in g.nodes if t.op is Op.MUL_MAT_SWIGLU]
    assert len(swiglu) == 4
    product = 64 * 2 * 1024 * 4  # M x N (gate and up) f32, into scratch before glu_pairs_f32
    transient = {k: b for k, b in be.ctx._scratch.items() if k[1] == "transient"}
    assert max(b.nbytes for b in transient.values()) == product
    assert be.ctx.scratch_bytes < 2 * product  # (4 x product, one a node, before)


def test_mmq_prompts_take_the_norm_in_their_int8_copy_too(tmp_path, monkeypatch):
    """prefill="mmq": a prompt's mat-muls read int8 x (mul_mat_q), so its norms fold into the int8 copy as
    the decode mat-vecs' do (RMS_NORM_MUL_QUANTIZE_X8, a block a token) and the folded ops launch
    mul_mat_q on it."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: _direct)
    path = write_tiny_model(tmp_path / "m.gguf", "llama", wtype=Q.Q4_0, n_layer=2, n_embd=256, n_ff=512,
                            n_head=4)
    be = HipBackend(prefill="mmq")
    be.ctx.mods = mods = _Modules()
    eng = Engine.from_gguf(path, backend=be, max_ctx=128)
    g = eng.graph(64)
    blk = [t for t in g.nodes if t.name.startswith("blk.") and not t.is_leaf]
    assert sum(t.op is Op.RMS_NORM_MUL_QUANTIZE_X8 for t in blk) == 2 * 2
    assert not any(t.op is Op.RMS_NORM_MUL for t in blk)
    folded = [t for t in blk if t.op in NORM_MUL_MAT_OPS]
    assert folded and all(xq_source(t).op is Op.RMS_NORM_MUL_QUANTIZE_X8 for t in folded)
    plan = be._get_plan(g)
    for st in plan.steps:
        if st.launch is not None and st.node in folded[:1] + [xq_source(folded[0])]:
            be.ctx.begin_node((id(plan), st.node.id))
            st.launch(be.ctx, st.out, *st.srcs, **st.node.params)
    be.ctx.begin_node(None)
    names = [name for name, _ in mods.calls]
    assert names[0] == "rms_norm_mul_quantize_x8" and names[1].startswith("mul_mat_q")
    assert mods.calls[1][1][2] == mods.calls[0][1][3]  # mul_mat_q's x: the copy the norm wrote
