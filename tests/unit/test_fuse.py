"""The fusion pass (passes.fuse): what it fuses, that fused graphs compute what unfused ones do on the
numpy backend, the stacked weights' bytes, and the launches per layer of the real models' decode graphs."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf_factory import model_kv, model_tensors, real_model, write_gguf, write_model

from rocmforge.config import ModelConfig
from rocmforge.engine import Engine
from rocmforge.gguf import GGUFFile
from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import Op
from rocmforge.ir.passes import (
    STACK_PROMOTE_MAX_BYTES,
    dce,
    fuse,
    fuse_ops,
    optimize,
    reshape_strides,
    stack_mul_mats,
)
from rocmforge.models import GraphSpec, build_graph
from rocmforge.synth import write_tiny_model

NO_LAUNCH = (Op.VIEW, Op.RESHAPE)


def _launching(g: Graph, prefix: str = "") -> list:
    return [t for t in g.nodes if not t.is_leaf and t.op not in NO_LAUNCH and t.name.startswith(prefix)]


def _graphs(path, n_tokens: int, max_ctx: int = 32) -> tuple[Graph, Graph, ModelConfig]:
    f = GGUFFile.open(path)
    cfg = ModelConfig.from_gguf(f)
    spec = {n: (t.shape, t.ggml_type.name.lower()) for n, t in f.tensors.items()}
    g = build_graph(cfg, spec, GraphSpec(n_tokens, max_ctx))
    return g, fuse(g), cfg


# ---- reshape of a strided view ---------------------------------------------------------------------------

@pytest.mark.parametrize("T,N,S,new", [
    (3, 12, 20, (3, 4, 3)), (1, 12, 20, (1, 4, 3)), (3, 12, 12, (36,)), (3, 12, 20, (36,)),
    (3, 12, 20, (3, 12, 1)), (2, 8, 16, (2, 2, 2, 2)), (4, 6, 6, (2, 12)), (4, 6, 9, (2, 12)),
])
def test_reshape_strides_agree_with_numpy(T, N, S, new):
    base = np.arange(T * S + N, dtype=np.float32)
    v = np.lib.stride_tricks.as_strided(base, (T, N), (S * 4, 4))
    got = reshape_strides((T, N), (S, 1), new)
    try:
        r = v.reshape(new, copy=False)
    except ValueError:
        assert got is None
        return
    assert got is not None
    want = tuple(s // 4 for s in r.strides)
    assert all(g == w for g, w, n in zip(got, want, new, strict=True) if n > 1), (got, want)
    np.testing.assert_array_equal(np.lib.stride_tricks.as_strided(base, new, [s * 4 for s in got]), r)


# ---- what fuse does on the tiny models ------------------------------------------------------------------

def test_llama_graph_fuses_norms_residuals_and_stacks_same_type_mat_vecs(tmp_path):
    # q, k Q4_0 and v F16 (gguf_factory's types): q and k stack, v stays alone; gate and up stack
    g, fg, cfg = _graphs(write_model(tmp_path / "m.gguf"), 1)
    ops = {op: [t for t in fg.nodes if t.op is op] for op in Op}
    assert not ops[Op.RMS_NORM] and not ops[Op.ADD] and not ops[Op.MUL]
    assert len(ops[Op.RMS_NORM_MUL]) == 2 * cfg.n_layer + 1
    assert len(ops[Op.MUL_MAT_ADD]) == 2 * cfg.n_layer  # attn_output and ffn_down + residual
    stacked = {w.name: w.params["rows_of"] for w in fg.leaves("weight") if "rows_of" in w.params}
    assert stacked["blk.0.attn_q+attn_k.weight"] == ("blk.0.attn_q.weight", "blk.0.attn_k.weight")
    assert stacked["blk.1.ffn_gate|ffn_up.weight"] == ("blk.1.ffn_gate.weight", "blk.1.ffn_up.weight")
    assert fg["blk.1.ffn_gate|ffn_up.weight"].params["interleaved"]  # MUL_MAT_SWIGLU's row pairs
    assert len(stacked) == 2 * cfg.n_layer and "blk.0.attn_v.weight" in {w.name for w in fg.leaves("weight")}
    assert not ops[Op.ROPE]  # K's and q's in FLASH_ATTN_EXT, with the cache writes (fuse_kv_write)
    assert not ops[Op.SET_ROWS_ROPE] and not ops[Op.SET_ROWS]
    assert all(t.params["rope_q"] == (cfg.rope_dim, cfg.rope_neox, cfg.rope_base, cfg.rope_scale)
               for t in ops[Op.FLASH_ATTN_EXT])
    for i in range(cfg.n_layer):
        names = [t.op.value for t in _launching(fg, f"blk.{i}.")]
        # v (F16) does not stack with q and k (Q4_0): two mat-vecs, then the attention writes K's row
        # (ROPE'd) and V's, both taken from their own results
        assert names == ["RMS_NORM_MUL", "MUL_MAT", "MUL_MAT", "FLASH_ATTN_EXT", "MUL_MAT_ADD",
                         "RMS_NORM_MUL", "MUL_MAT_SWIGLU", "MUL_MAT_ADD"], names
        fa = ops[Op.FLASH_ATTN_EXT][i]
        k_new, v_new = fa.src[4:]
        assert (fa.src[1].src[0].name, fa.src[2].src[0].name) == (f"cache_k_l{i}", f"cache_v_l{i}")
        assert k_new.shape == v_new.shape == (1, cfg.n_head_kv * cfg.head_dim)
    assert len(_launching(optimize(fg)[0])) < len(_launching(optimize(g)[0]))
    # a prompt keeps its cache writes: K's ROPE'd on the way in (SET_ROWS_ROPE), V's a SET_ROWS
    _, pg, _ = _graphs(write_model(tmp_path / "m.gguf"), 3)
    assert [t.name for t in pg.nodes if t.op is Op.SET_ROWS_ROPE] == [
        f"blk.{i}.cache_k_set" for i in range(cfg.n_layer)]
    assert all(len(t.src) == 4 for t in pg.nodes if t.op is Op.FLASH_ATTN_EXT)


def test_qwen2_biases_stack_with_their_mat_vecs(tmp_path):
    path = write_tiny_model(tmp_path / "q.gguf", "qwen2", wtype=Q.Q8_0, tied=False)
    _, fg, cfg = _graphs(path, 3)
    stacked = {w.name: w.params["rows_of"] for w in fg.leaves("weight") if "rows_of" in w.params}
    assert stacked["blk.0.attn_q+attn_k+attn_v.bias"] == tuple(f"blk.0.attn_{x}.bias" for x in "qkv")
    qkv = fg["blk.0.attn_q_b+attn_k_b+attn_v_b"]
    assert qkv.op is Op.MUL_MAT_ADD and qkv.src[0].name == "blk.0.attn_q+attn_k+attn_v.weight"
    assert qkv.shape == (3, (cfg.n_head + 2 * cfg.n_head_kv) * cfg.head_dim)


def test_fuse_ops_leaves_a_mat_vec_with_two_readers_and_a_read_across_a_write():
    g = Graph()
    w = g.weight("w", (8, 16), "f32")
    x = g.input("x", (2, 16))
    r = g.input("r", (2, 8))
    y = g.mul_mat(w, x, "y")
    g.output(g.add(y, r, "sum"))
    g.output(g.scale(y, 2.0, "twice"))  # y has a second reader: not fused
    st = g.state("s", (4, 16))
    idx = g.input("idx", (2,), "i32")
    xv = g.view(st, (2, 16), "xv", (16, 1), 0)
    y2 = g.mul_mat(w, xv, "y2")
    g.set_rows(st, x, idx, "write")  # writes what y2 read before the ADD: moving y2 later would be wrong
    g.output(g.add(y2, r, "sum2"))
    f = fuse_ops(g)
    assert {t.op for t in f.nodes if not t.is_leaf} >= {Op.MUL_MAT, Op.ADD}
    assert not any(t.op is Op.MUL_MAT_ADD for t in f.nodes)


def _fused_and_unfused(path) -> tuple[dict, Engine]:
    """fuse -> (prompt logits, 5 greedy tokens, their logits, planned weight bytes, bound weight bytes) on
    the numpy backend, checked equal between fused and unfused; and the fused engine."""
    out = {}
    for flag in (False, True):
        eng = Engine.from_gguf(path, backend="numpy", max_ctx=32, fuse=flag)
        logits = eng.prefill([1, 5, 9, 3, 7, 2, 11], all_logits=True)
        steps = [eng.step(logits=True) for _ in range(5)]
        out[flag] = (logits, [s.token for s in steps], np.stack([s.logits for s in steps]),
                     eng.device_plan()["weights"], eng.backend.weight_bytes)
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[True][2], out[False][2], rtol=1e-6, atol=1e-6)
    assert out[True][1] == out[False][1]
    return out, eng


@pytest.mark.parametrize("arch,kw", [("llama", {}), ("qwen2", {"tied": False, "qkv_bias": True})])
def test_fused_engine_computes_what_the_unfused_one_does(tmp_path, arch, kw):
    out, _ = _fused_and_unfused(write_model(tmp_path / "m.gguf", arch, **kw))
    assert out[True][3:] == out[False][3:]  # stacking moves bytes, it adds none


def test_mixed_q4_0_q5_0_q8_0_mat_vecs_stack_as_q8_0(tmp_path):
    # Q and K Q5_0, V Q8_0 (layer 0) or Q4_0 (layer 1), as Qwen2.5's Q4_K_M mix: one Q8_0 mat-vec a layer,
    # the same logits and tokens as unfused, and exactly the converted blocks' extra bytes
    types = {f"blk.{i}.attn_{p}.weight": Q.Q5_0 for i in range(2) for p in "qk"}
    types |= {"blk.0.attn_v.weight": Q.Q8_0, "blk.1.attn_v.weight": Q.Q4_0}
    path = write_gguf(tmp_path / "m.gguf", "qwen2", kv=model_kv("qwen2"),
                      tensors=model_tensors(tied=False, qkv_bias=True), types=types)
    out, eng = _fused_and_unfused(path)
    stacked = {w.name: w.dtype for w in eng.graph(1).nodes if "rows_of" in w.params}
    assert {n: d for n, d in stacked.items() if n.endswith("attn_v.weight")} == {
        "blk.0.attn_q+attn_k+attn_v.weight": "q8_0", "blk.1.attn_q+attn_k+attn_v.weight": "q8_0"}
    assert out[True][3:] == out[False][3:]  # the numpy backend keeps f32 weights: the same bytes
    # bound as Q8_0 blocks that dequantize to the parts' values bit for bit; planned at their size
    from rocmforge import quant

    f = GGUFFile.open(path)
    name = "blk.1.attn_q+attn_k+attn_v.weight"
    raw, qt = eng._weight_source(name)
    parts = [f"blk.1.attn_{p}.weight" for p in "qkv"]
    want = np.concatenate([quant.dequantize(f.raw(p), f.tensors[p].ggml_type, f.tensors[p].shape)
                           for p in parts])
    assert qt == Q.Q8_0 and raw.size == want.size // 32 * 34
    np.testing.assert_array_equal(quant.dequantize(raw, qt, want.shape).view(np.uint32), want.view(np.uint32))

    class Blocks:  # a backend that keeps the GGUF blocks as they are bound (HipBackend does)
        def weight_bytes_needed(self, graph, sizes):
            return sum(sizes[w.name][1] for w in graph.leaves("weight"))

    extra = sum(f.tensors[n].n_elements // 32 * (34 - {Q.Q5_0: 22, Q.Q4_0: 18, Q.Q8_0: 34}[t])
                for n, t in types.items())
    unfused = Engine.from_gguf(path, backend="numpy", max_ctx=32, fuse=False)
    planned = eng.device_plan(backend=Blocks())["weights"]
    assert planned == unfused.device_plan(backend=Blocks())["weights"] + extra


def test_mixed_types_stack_apart_where_q8_0_would_read_too_much_more():
    g = Graph()
    x = g.input("x", (1, 4096))
    big = 4096 * 4096 // 32 * (34 - 18)  # a Q4_0 4096 x 4096 as Q8_0: 8 MB more
    assert big > STACK_PROMOTE_MAX_BYTES
    q, k, v = (g.mul_mat(g.weight(f"{n}.weight", (4096, 4096), t), x, n)
               for n, t in (("q", "q4_0"), ("k", "q4_0"), ("v", "q8_0")))
    g.output(g.add(g.add(q, k, "qk"), v, "qkv"))
    st = {w.name: w.dtype for w in dce(stack_mul_mats(g)).leaves("weight")}
    assert st == {"q+k.weight": "q4_0", "v.weight": "q8_0"}


def test_stacked_weight_is_its_parts_rows(tmp_path):
    from rocmforge import quant

    eng = Engine.from_gguf(write_model(tmp_path / "m.gguf"), backend="numpy", max_ctx=16)
    raw, qt = eng._weight_source("blk.1.attn_q+attn_k.weight")
    parts = [eng.model.raw(f"blk.1.attn_{p}.weight") for p in ("q", "k")]
    assert qt == eng.model.tensors["blk.1.attn_q.weight"].ggml_type
    np.testing.assert_array_equal(raw, np.concatenate(parts))
    w = eng.backend.weights["blk.1.attn_q+attn_k.weight"]
    n_q = eng.model.tensors["blk.1.attn_q.weight"].shape[0]
    np.testing.assert_array_equal(w[:n_q], quant.dequantize(parts[0], qt, (n_q, eng.config.n_embd)))
    # gate and up for MUL_MAT_SWIGLU: their rows in turn, gate_i then up_i
    raw, qt = eng._weight_source("blk.1.ffn_gate|ffn_up.weight")
    parts = [eng.model.raw(f"blk.1.ffn_{p}.weight") for p in ("gate", "up")]
    assert raw.size == parts[0].size + parts[1].size and not np.array_equal(raw, np.concatenate(parts))
    w = eng.backend.weights["blk.1.ffn_gate|ffn_up.weight"]
    n_ff = eng.model.tensors["blk.1.ffn_gate.weight"].shape[0]
    for i, p in enumerate(parts):
        np.testing.assert_array_equal(w[i::2], quant.dequantize(p, qt, (n_ff, eng.config.n_embd)))


# ---- launches per layer of the real models ---------------------------------------------------------------

# launching graph nodes per layer of the fused decode graph (a kernel each on the GPU); issue 19's target
# is 8. Qwen2.5-0.5B's attn_v is Q8_0 in half its layers, Q5_0 (as Q and K) in the others: there Q, K and V
# stack as Q8_0 (Q5_0 blocks converted without loss; ~0.34 MB more a layer than one launch fewer). The
# attention writes the cache rows (fuse_kv_write).
MAX_LAUNCHES = {"smollm2-135m": 7, "qwen2.5-0.5b": 7}


@pytest.mark.models
@pytest.mark.parametrize("name", sorted(MAX_LAUNCHES))
def test_launches_per_layer_of_the_real_models_decode_graphs(name):
    f = GGUFFile.open(real_model(name))
    cfg = ModelConfig.from_gguf(f)
    spec = {n: (t.shape, t.ggml_type.name.lower()) for n, t in f.tensors.items()}
    g = build_graph(cfg, spec, GraphSpec(1, 256))
    before, after = optimize(g)[0], optimize(fuse(g))[0]
    per_layer = [len(_launching(after, f"blk.{i}.")) for i in range(cfg.n_layer)]
    head = [t for t in _launching(after) if not t.name.startswith("blk.")]
    print(name, "launching nodes", len(_launching(before)), "->", len(_launching(after)), "per layer",
          sorted(set(per_layer)))
    assert max(per_layer) <= MAX_LAUNCHES[name]
    assert [t.op for t in head] == [Op.GET_ROWS, Op.RMS_NORM_MUL, Op.MUL_MAT, Op.ARGMAX]
    assert len(_launching(after)) <= 0.62 * len(_launching(before))
    assert not any(t.op in (Op.RMS_NORM, Op.ADD, Op.MUL) for t in after.nodes)
    assert per_layer == [7] * cfg.n_layer
    qkv = {f"blk.{i}": w.dtype for w in after.leaves("weight") for i in range(cfg.n_layer)
           if w.params.get("rows_of", ())[:1] == (f"blk.{i}.attn_q.weight",)}
    v_types = {f"blk.{i}": f.tensors[f"blk.{i}.attn_v.weight"].ggml_type.name.lower()
               for i in range(cfg.n_layer)}
    if name == "qwen2.5-0.5b":  # Q8_0 where V is (Q and K converted), Q5_0 where all three are
        assert qkv == v_types and set(v_types.values()) == {"q5_0", "q8_0"}
    for i in range(cfg.n_layer):  # RoPE and the cache writes inside the attention
        ops = [t.op for t in _launching(after, f"blk.{i}.")]
        assert ops.count(Op.FLASH_ATTN_EXT) == 1 and not {Op.ROPE, Op.SET_ROWS, Op.SET_ROWS_ROPE} & set(ops)
        fa = next(t for t in _launching(after, f"blk.{i}.") if t.op is Op.FLASH_ATTN_EXT)
        assert len(fa.src) == 6 and "rope_q" in fa.params
    assert not any(t.op is Op.ROPE for t in after.nodes)
    for i in range(cfg.n_layer):
        assert Op.MUL_MAT_SWIGLU in {t.op for t in _launching(after, f"blk.{i}.")}
