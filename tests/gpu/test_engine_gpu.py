"""The HIP backend end to end on tiny random models: same results as numpy (seeded sampling too), plan-based
memory that stays flat over 1,000 decode steps, and captured-graph replay equal to eager launches."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.backends.hip import gpu_available
from rocmforge.engine import Engine, prompt_bucket
from rocmforge.synth import write_tiny_model

ok, why = gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ok, reason=f"no GPU: {why}")]


@pytest.fixture(
    scope="module",
    params=[("llama", Q.Q4_0, True), ("qwen2", Q.Q8_0, False), ("llama", Q.Q4_1, True)],
    ids=["llama-q4_0", "qwen2-q8_0", "llama-q4_1"],
)
def tiny(request, tmp_path_factory):
    arch, wtype, tied = request.param
    return write_tiny_model(
        tmp_path_factory.mktemp(f"m-{wtype.name.lower()}-") / "m.gguf",
        arch,
        n_embd=128,
        n_ff=256,
        wtype=wtype,
        tied=tied,
        seed=7,
    )


def _run(eng, ids, n_steps):
    rows = [eng.prefill(ids, all_logits=True)]
    toks = []
    for _ in range(n_steps):
        r = eng.step(timed=False)
        rows.append(r.logits[None])
        toks.append(r.token)
    return np.concatenate(rows), toks


def test_hip_engine_matches_numpy(tiny):
    """f32 all the way (prefill on the tiled kernel: the vendor-BLAS default is f16, checked below)."""
    from rocmforge.backends.hip import HipBackend

    ids = [3, 17, 99, 250, 7, 42, 5, 11, 64]
    ref, ref_toks = _run(Engine.from_gguf(tiny, backend="numpy", max_ctx=64), ids, 12)
    got, toks = _run(Engine.from_gguf(tiny, backend=HipBackend(prefill="tiled"), max_ctx=64, kv_dtype="f32"),
                     ids, 12)
    assert toks == ref_toks
    nmse = float(np.mean((got - ref) ** 2) / np.mean(ref**2))
    assert nmse < 1e-6, nmse


def test_blas_prefill_is_the_cuda_default_and_replays_from_a_captured_graph(tiny, monkeypatch):
    """HipBackend() on CUDA prefills on cuBLAS (mul_mat_blas: f16 tiles, GEMMs through ctypes, which CuPy's
    wrapper would refuse inside a capture): the prompt's logits are near numpy's (the f16 bound, 1e-4),
    the second and third prefills replay the captured graph (no GEMM called from Python: the capture holds
    them) and give the first, eager one's logits, bit for bit; decode after it, fed numpy's tokens, stays
    near numpy's."""
    from rocmforge.backends.hip import HipBackend
    from rocmforge.backends.hip import blas as B
    from rocmforge.backends.hip import kernel_choice as C
    from rocmforge.backends.hip.launch_mul_mat import mul_mat_choice

    be = HipBackend()
    if be.is_hip:
        pytest.skip("ROCm: hipBLAS is not the default (prefill='blas' only)")
    assert be.ctx.device.blas == "cublas", be.blas_unavailable
    calls = []
    gemm = B.Cublas.gemm

    def counting(self, g):
        calls.append(g)
        return gemm(self, g)

    monkeypatch.setattr(B.Cublas, "gemm", counting)
    ids = [3, 17, 99, 250, 7, 42, 5, 11, 64]
    ref_eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    ref = ref_eng.prefill(ids, all_logits=True)
    eng = Engine.from_gguf(tiny, backend=be, max_ctx=64, kv_dtype="f32")
    import cupy

    pool = cupy.get_default_memory_pool()
    runs, n_calls, used = [], [], []
    for _ in range(3):  # eager, then captured and replayed, then replayed
        eng.reset()
        runs.append(eng.prefill(ids, all_logits=True))
        n_calls.append(len(calls))
        used.append((pool.used_bytes(), pool.total_bytes()))
    assert used[2] == used[1]  # a replayed prefill takes no memory
    g = eng.graph(prompt_bucket(len(ids)), all_logits=True)  # the bucket the 9 tokens ran in (padded)
    plan = be._get_plan(g)
    assert plan.device_graph is not None and not plan.capture_failed, plan.capture_failed
    mm = [t for t in g.nodes if t.op.value in ("MUL_MAT", "MUL_MAT_ADD") and t.src[0].kind == "weight"]
    for t in mm:  # every weight mat-mul of the prompt on the vendor BLAS
        w = be.weights[t.src[0].name]
        assert mul_mat_choice(be.ctx, w, t.src[1].n_elements // w.shape[1]).kernel is C.MUL_MAT_BLAS, t.name
    assert n_calls[0] >= len(mm) > 0  # at least a GEMM a node, eagerly
    assert n_calls[1] == 2 * n_calls[0] and n_calls[2] == n_calls[1]  # captured once, then replayed
    np.testing.assert_array_equal(runs[1], runs[0])
    np.testing.assert_array_equal(runs[2], runs[0])
    nmse = float(np.mean((runs[0] - ref) ** 2) / np.mean(ref**2))
    assert nmse <= 1e-4, nmse
    # decode on the mat-vecs after a cuBLAS prefill, both fed numpy's greedy tokens
    toks, want = [ref_eng.next_token], []
    for _ in range(6):
        want.append(ref_eng.step(toks[-1], timed=False).logits)
        toks.append(int(np.argmax(want[-1])))
    got = np.stack([eng.step(t, timed=False).logits for t in toks[:6]])
    want = np.stack(want)
    assert float(np.mean((got - want) ** 2) / np.mean(want**2)) <= 1e-4


@pytest.mark.parametrize("prefill", ["tiled", "blas"])
def test_prefill_options_against_numpy(tiny, prefill):
    """HipBackend(prefill=...) on a longer prompt (a prefill graph of 40 tokens, replayed): the tiled kernel
    within the f32 bound of numpy, the vendor BLAS (hipBLAS too, on ROCm) within the f16 one."""
    from rocmforge.backends.hip import HipBackend

    be = HipBackend(prefill=prefill)  # "blas" without a vendor BLAS: RuntimeError saying why
    ids = [int(i) for i in np.random.default_rng(1).integers(0, 250, 40)]
    ref = Engine.from_gguf(tiny, backend="numpy", max_ctx=64).prefill(ids, all_logits=True)
    eng = Engine.from_gguf(tiny, backend=be, max_ctx=64, kv_dtype="f32")
    for _ in range(2):  # eager, then replayed
        eng.reset()
        got = eng.prefill(ids, all_logits=True)
    nmse = float(np.mean((got - ref) ** 2) / np.mean(ref**2))
    assert nmse <= (1e-6 if prefill == "tiled" else 1e-4), nmse


def test_replay_equals_eager(tiny):
    ids = [1, 2, 3, 4, 5]
    runs = []
    for replay in (False, True):
        eng = Engine.from_gguf(tiny, backend="hip", max_ctx=64)
        eng.backend.replay = replay
        runs.append(_run(eng, ids, 10))
    assert runs[1][1] == runs[0][1]
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    plan = eng.backend._get_plan(eng.graph(1))
    assert plan.device_graph is not None and not plan.capture_failed


@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_decode_chained_on_the_device_equals_steps(tiny, kv):
    """Engine.decode on the HIP backend: after two steps (the second captures the step's graph) the rest run
    as one chain (run_chain: chain_advance between replays, no host in between) and give the tokens of as
    many step() calls; a step after the chain continues from its position."""
    ids = [1, 2, 3, 4, 5]
    ref = Engine.from_gguf(tiny, backend="hip", max_ctx=96, kv_dtype=kv)
    ref.prefill(ids)
    want = [ref.step(timed=False).token for _ in range(41)]
    eng = Engine.from_gguf(tiny, backend="hip", max_ctx=96, kv_dtype=kv)
    chains = []
    run_chain = eng.backend.run_chain
    eng.backend.run_chain = lambda g, inputs, n: chains.append(n) or run_chain(g, inputs, n)
    eng.prefill(ids)
    assert eng.decode(40) + [eng.step(timed=False).token] == want
    assert chains == [39, 38]  # refused before the capture (nothing run), then one chain of the rest
    assert eng.n_past == len(ids) + 41
    eng.reset()  # the chained graph's inputs are written again by the next run
    eng.prefill(ids)
    assert eng.decode(8) == want[:8]


def test_pool_counters_stay_flat_over_1000_decode_steps(tiny):
    import cupy

    eng = Engine.from_gguf(tiny, backend="hip", max_ctx=1100)
    pool = cupy.get_default_memory_pool()
    eng.prefill([1, 2, 3])
    for _ in range(5):
        eng.step(timed=False)
    eng.step(timed=True)
    before = (pool.used_bytes(), pool.total_bytes())
    for i in range(1000):
        eng.step(timed=(i % 100 == 0))
    assert (pool.used_bytes(), pool.total_bytes()) == before
    p = eng.backend.plan_of(eng.graph(1))
    assert p is not None and p.arena_bytes > 0
    p.check()


@pytest.mark.parametrize(
    "kernels",
    ["x8", "xq", "xb", "xr"],
)
def test_int8_activations_stay_close_to_numpy(tiny, kernels, monkeypatch):
    """HipBackend(int8_activations=True): Q4_0/Q8_0 decode mat-vecs on int8 x (every kernel from one row:
    the tiny model's mat-vecs use them); logits near numpy's, as llama.cpp's q8_1 path is; replay == eager.
    xq, xb, xr: x quantized once per activation value (quantize_x8) and shared by the mat-vecs that read it
    (Q/K/V, gate/up), so fewer quantizations than mat-vecs, and a replayed step re-quantizes each new
    activation. xb (dev/): mul_mat_vec_xb for ffn_down (K = 256: rows of 16-byte multiples), the others
    (K = 128: not) on mul_mat_vec_xq; xr (the default table): mul_mat_vec_xr for ffn_down (K a multiple of
    256); x8 (dev/): mul_mat_vec_x, x quantized by every block."""
    from dev import matvec_variants as V
    from rocmforge.backends.hip import HipBackend
    from rocmforge.backends.hip import kernel_choice as C
    from rocmforge.backends.hip.context import Ctx

    table = {
        "x8": (V.MUL_MAT_VEC_X,),
        "xq": (C.MUL_MAT_VEC_XQ,),
        "xb": (V.MUL_MAT_VEC_XB, C.MUL_MAT_VEC_XQ),
        "xr": (C.MUL_MAT_VEC_XR, C.MUL_MAT_VEC_XQ),
    }[kernels]
    prequant = kernels != "x8"
    calls = {"quantize": 0, "mat-vec": 0, "xb": 0, "xr": 0}
    counter = {"quantize_x8": "quantize", "mul_mat_vec_x_": "mat-vec", "mul_mat_vec_xq_": "mat-vec"}
    counter |= {"mul_mat_vec_xb_": "xb", "mul_mat_vec_xr_": "xr"}
    launch = Ctx.launch

    def counting(self, f, kl, args):
        for prefix, name in counter.items():
            calls[name] += kl.entry.startswith(prefix)
        return launch(self, f, kl, args)

    monkeypatch.setattr(Ctx, "launch", counting)
    ids = [3, 17, 99, 250, 7, 42, 5, 11, 64]
    ref, _ = _run(Engine.from_gguf(tiny, backend="numpy", max_ctx=64), ids, 12)
    runs = []
    for replay in (False, True):
        be = HipBackend(int8_activations=True)
        assert be.ctx.mat_mul.int8_activations and be.ctx.mat_mul.kernels == C.MUL_MAT_KERNELS  # the defaults
        be.ctx.mat_mul = V.options(*table, min_n=0)
        be.replay = replay
        runs.append(_run(Engine.from_gguf(tiny, backend=be, max_ctx=64, kv_dtype="f32"), ids, 12))
    n_mv = calls["mat-vec"] + calls["xb"] + calls["xr"]
    if n_mv and prequant:  # one QUANTIZE_X8 per value: fused, each value has one (stacked) mat-vec reader
        assert 0 < calls["quantize"] <= n_mv, calls
    else:
        assert calls["quantize"] == 0, calls
    quantized = any(t in tiny.parent.name for t in ("q4_0", "q8_0"))  # the int8 kernels' weight types
    xr = kernels == "xr" and quantized  # ffn_down of a Q4_0 or Q8_0 model
    assert (calls["xr"] > 0) == xr and (calls["xb"] > 0) == (kernels == "xb" and quantized), calls
    assert (calls["mat-vec"] > 0) == quantized, calls
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    got = runs[1][0]
    nmse = float(np.mean((got - ref) ** 2) / np.mean(ref**2))
    assert nmse < 1e-3, nmse
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.9


def test_out_of_range_indices_are_refused_as_on_numpy(tiny):
    eng = Engine.from_gguf(tiny, backend="hip", max_ctx=16)
    g = eng.graph(1)
    for name, bad in [("inp_tokens", eng.config.n_vocab), ("inp_pos", 16), ("inp_pos", -1)]:
        inputs = {"inp_tokens": np.array([1], np.int32), "inp_pos": np.array([0], np.int32)}
        inputs[name] = np.array([bad], np.int32)
        with pytest.raises(ValueError, match=f"input '{name}': index {bad} out of range"):
            eng.backend.run(g, inputs)


def _sampled(eng, ids, n=16, **kw):
    eng.reset()
    gen = eng.generate(ids, max_new_tokens=n, temperature=20.0, top_k=50, top_p=0.95, **kw)
    return [g.token for g in gen]


def test_sampling_on_the_device_draws_numpys_tokens(tiny):
    """generate with a seed (a high temperature: the tiny logits are steep): the HIP backend draws on the
    device (SAMPLE in the captured decode graph; a step downloads one token id) the tokens the numpy
    backend draws, and those its own host path draws from its downloaded logits; again after replays."""
    from rocmforge.backends.hip import HipBackend

    ids = [3, 17, 99, 250, 7, 42, 5, 11, 64]
    ref = _sampled(Engine.from_gguf(tiny, backend="numpy", max_ctx=64), ids, seed=11)
    eng = Engine.from_gguf(tiny, backend=HipBackend(prefill="tiled"), max_ctx=64, kv_dtype="f32")
    got = _sampled(eng, ids, seed=11)
    assert eng.last_stats.sampling == "device" and len(got) > 1
    assert got == ref
    assert _sampled(eng, ids, seed=11) == got  # replayed
    assert _sampled(eng, ids, seed=11, device_sampling=False) == got  # drawn on the host from HIP's logits
    assert eng.last_stats.sampling == "host (asked for)"
    assert _sampled(eng, ids, seed=12) != got
    plan = eng.backend._get_plan(eng.sample_graph())
    assert plan.device_graph is not None and not plan.capture_failed, plan.capture_failed
    assert set(plan.outputs) == {"sample"}


def test_sampled_steps_keep_the_pool_flat(tiny):
    import cupy

    eng = Engine.from_gguf(tiny, backend="hip", max_ctx=600)
    pool = cupy.get_default_memory_pool()
    eng.prefill([1, 2, 3])
    tok = 4
    for _ in range(5):
        tok, _ = eng.sample_step(tok, 1.0, 40, 0.9, seed=3)
    tok, timings = eng.sample_step(tok, 1.0, 40, 0.9, seed=3, timed=True)
    assert "SAMPLE" in {t.op for t in timings}
    before = (pool.used_bytes(), pool.total_bytes())
    for i in range(500):
        tok, _ = eng.sample_step(tok, 1.0, 40, 0.9, seed=3, timed=(i % 100 == 0))
        assert 0 <= tok < eng.config.n_vocab
    assert (pool.used_bytes(), pool.total_bytes()) == before


def test_the_kv_cache_is_f16_by_default_and_matches_numpy_f16(tiny):
    """On the GPU the KV cache defaults to f16 (llama.cpp's default): half the f32 cache's bytes, and the same
    logits as the numpy backend with an f16 cache (both round f32 -> f16 to nearest even), close to f32's."""
    from rocmforge.backends.hip import HipBackend

    ids = [5, 9, 13, 2, 77]
    eng = Engine.from_gguf(tiny, backend=HipBackend(prefill="tiled"), max_ctx=64)
    f32 = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    assert eng.kv_dtype == "f16" and f32.kv_dtype == "f32"
    assert eng.memory()["kv_cache"] * 2 == f32.memory()["kv_cache"]
    got, toks = _run(eng, ids, 12)
    want, want_toks = _run(Engine.from_gguf(tiny, backend="numpy", max_ctx=64, kv_dtype="f16"), ids, 12)
    assert toks == want_toks
    assert float(np.mean((got - want) ** 2) / np.mean(want**2)) <= 1e-6
    exact, _ = _run(f32, ids, 12)
    assert float(np.mean((got - exact) ** 2) / np.mean(exact**2)) <= 1e-3
