"""Engine behaviour on tiny random GGUF models (numpy backend): fixed graphs, context limits, consistency."""

import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.config import ModelConfig
from rocmforge.engine import ContextOverflowError, Engine, sample
from rocmforge.gguf import GGUFFile
from rocmforge.ir import passes
from rocmforge.models import GraphSpec, build_graph
from rocmforge.synth import write_tiny_model


@pytest.fixture(scope="module", params=[("llama", Q.F32, True), ("qwen2", Q.Q8_0, False)],
                ids=["llama-f32-tied", "qwen2-q8_0"])
def tiny(request, tmp_path_factory):
    arch, wtype, tied = request.param
    return write_tiny_model(tmp_path_factory.mktemp("m") / f"{arch}.gguf", arch, wtype=wtype, tied=tied)


def test_decode_graph_is_the_same_at_every_position(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=600)
    g = eng.graph(1)
    sig = g.signature()
    eng.prefill(list(range(5)))
    eng.step()
    assert eng.n_past == 6
    eng.prefill(list(np.arange(494) % 200))  # jump ahead to position 500
    res = eng.step()
    assert res.position == 500
    assert eng.graph(1) is g and g.signature() == sig
    spec = GraphSpec(1, 600)
    # no position inside (the engine's graphs go through the fusion pass)
    assert passes.fuse(build_graph(eng.config, eng.weight_spec, spec)).signature() == sig
    # one decode graph, one per prompt bucket (5 tokens run in the 8-token graph, 494 in the 512-token one)
    assert eng.graph_keys == [(1, False), (8, False), (512, False)]


def test_going_past_max_ctx_raises_naming_it(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=8)
    eng.prefill([1, 2, 3, 4, 5, 6])
    eng.step()
    eng.step()
    with pytest.raises(ContextOverflowError, match="max_ctx=8"):
        eng.step()
    with pytest.raises(ContextOverflowError, match="max_ctx=8"):
        Engine.from_gguf(tiny, backend="numpy", max_ctx=8).prefill(list(range(9)))
    eng.reset()
    assert eng.n_past == 0
    eng.prefill([1, 2])  # room again after reset


def test_prefill_all_logits_equals_token_by_token(tiny):
    ids = [5, 17, 99, 3, 250, 42, 7]
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=32)
    full = eng.prefill(ids, all_logits=True)
    assert full.shape == (len(ids), eng.config.n_vocab)
    eng.reset()
    rows = [eng.prefill(ids[:1])] + [eng.step(t).logits for t in ids[1:]]
    np.testing.assert_allclose(np.stack(rows), full, rtol=1e-4, atol=1e-4)
    eng.reset()
    np.testing.assert_allclose(eng.prefill(ids), full[-1], rtol=1e-5, atol=1e-5)


def test_reset_clears_the_cache(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=32)
    a = eng.prefill([1, 2, 3])
    eng.reset()
    np.testing.assert_array_equal(eng.prefill([1, 2, 3]), a)


def test_step_reports_timings_and_memory(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    eng.prefill([1, 2, 3])
    res = eng.step(timed=True)
    n_ops = len(eng.graph(1).ops())
    assert len(res.timings) == n_ops and all(t.us >= 0 for t in res.timings)
    ops = {t.op for t in res.timings}
    assert ops >= {"MUL_MAT", "MUL_MAT_ADD", "FLASH_ATTN_EXT", "RMS_NORM_MUL"}
    assert not ops & {"SET_ROWS", "SET_ROWS_ROPE"}  # a decode step writes the cache in its attention
    cfg = eng.config
    kv = 2 * cfg.n_layer * 64 * cfg.n_head_kv * cfg.head_dim * 4
    assert res.memory["kv_cache"] == kv
    assert res.memory["weights"] > 0
    assert res.token == int(np.argmax(res.logits))


def test_generate_greedy_is_deterministic_and_streams_text(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    out1 = list(eng.generate("the cat", max_new_tokens=8))
    eng.reset()
    out2 = list(eng.generate("the cat", max_new_tokens=8))
    assert [g.token for g in out1] == [g.token for g in out2]
    assert 0 < len(out1) <= 8
    assert "".join(g.text for g in out1) == eng.tokenizer.decode([g.token for g in out1])
    assert eng.last_stats.prompt_tokens == len(eng.tokenizer.encode("the cat"))


def test_bad_token_ids_and_empty_prompt(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=16)
    with pytest.raises(ValueError, match="out of range"):
        eng.prefill([eng.config.n_vocab])
    with pytest.raises(ValueError):
        eng.prefill([])
    with pytest.raises(ValueError, match="backend"):
        Engine.from_gguf(tiny, backend="tpu")


def test_single_parse_for_config_tokenizer_and_weights(tiny):
    before = GGUFFile.parse_count
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=16)
    eng.prefill([1, 2])
    assert GGUFFile.parse_count == before + 1
    assert isinstance(eng.config, ModelConfig)


def test_sampling_rules():
    logits = np.array([0.0, 5.0, 4.0, -1.0], np.float32)
    assert sample(logits) == 1
    rng = np.random.default_rng(0)
    assert {sample(logits, 1.0, top_k=2, rng=rng) for _ in range(200)} == {1, 2}
    assert {sample(logits, 1.0, top_p=0.5, rng=rng) for _ in range(50)} == {1}


def test_generate_stops_when_the_cache_is_full(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=10)
    prompt = [5, 6, 7, 8]
    out = list(eng.generate(prompt, max_new_tokens=50))
    assert eng.n_past == 10 and len(out) <= 7
    assert eng.last_stats.stop_reason in ("max_ctx=10 reached", "eos")
    eng.reset()
    with pytest.raises(ContextOverflowError, match="max_ctx=10"):
        list(eng.generate(list(range(11)), max_new_tokens=1))


def test_hip_backend_without_a_gpu_says_what_is_missing(tiny):
    from rocmforge.backends.hip import gpu_available

    ok, why = gpu_available()
    if ok:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="needs a GPU") as e:
        Engine.from_gguf(tiny, backend="hip")
    assert why in str(e.value)


def test_row_indices_out_of_range_are_refused_before_any_op_runs(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=16)
    g = eng.graph(2)
    bounds = g.index_bounds()
    assert bounds["inp_tokens"][0] == eng.config.n_vocab and bounds["inp_pos"][0] == 16
    ok = {"inp_tokens": np.array([1, 2], np.int32), "inp_pos": np.array([0, 1], np.int32),
          "inp_out_ids": np.array([1], np.int32)}
    eng.backend.run(g, ok)
    for name, bad, word in [("inp_tokens", -1, "-1"), ("inp_tokens", eng.config.n_vocab, "out of range"),
                            ("inp_pos", 16, "index 16 out of range [0, 16)")]:
        inputs = dict(ok)
        inputs[name] = np.array([1, bad], np.int32)
        with pytest.raises(ValueError, match=re.escape(word)):
            eng.backend.run(g, inputs)


def test_prompt_buckets():
    from rocmforge.engine import prompt_bucket

    assert [prompt_bucket(n) for n in (1, 2, 3, 5, 8, 9, 33, 64, 65, 128, 129, 500, 512)] == [
        1, 2, 4, 8, 8, 16, 64, 64, 128, 128, 192, 512, 512]


@pytest.mark.parametrize("n", [3, 37, 100])
def test_padded_prompts_compute_what_exact_graphs_do(tiny, n):
    ids = [int(t) for t in (np.arange(n) * 13 + 5) % 200]
    res = {}
    for pad in (True, False):
        eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=160, pad_prompts=pad)
        last = eng.prefill(ids)
        toks = [eng.step(timed=False).token for _ in range(4)]
        eng.reset()
        every = eng.prefill(ids, all_logits=True)
        res[pad] = (last, toks, every, eng.graph_keys)
    np.testing.assert_allclose(res[True][0], res[False][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res[True][2], res[False][2], rtol=1e-5, atol=1e-5)
    assert res[True][2].shape == (n, res[True][0].shape[-1])
    assert res[True][1] == res[False][1]
    from rocmforge.engine import prompt_bucket

    assert (prompt_bucket(n), False) in res[True][3] and (n, False) in res[False][3]


def test_a_padded_prompt_that_would_pass_max_ctx_runs_at_its_own_length(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=40)
    eng.prefill(list(range(1, 38)))  # bucket 64 > 40 rows: the 37-token graph
    assert eng.graph_keys == [(1, False), (37, False)] and eng.n_past == 37


# ---- seeded sampling (SAMPLE): on the device where the backend has it, the same definition on the host ----

SAMPLING = dict(temperature=20.0, top_k=50, top_p=0.95)  # the tiny models' logits are steep: a high T


def _tokens(eng, prompt="the cat sat", n=10, **kw):
    eng.reset()
    return [g.token for g in eng.generate(prompt, max_new_tokens=n, **kw)]


def test_generate_draws_on_the_device_as_the_reference_does_step_by_step(tiny):
    from rocmforge.backends import numpy_ref as R
    from rocmforge.backends import sampling as S

    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    got = _tokens(eng, n=12, seed=7, **SAMPLING)
    assert eng.last_stats.sampling == "device" and eng.last_stats.seed == 7
    from rocmforge.engine import prompt_bucket

    assert eng.graph_keys == [(1, False), (prompt_bucket(len(eng.tokenizer.encode("the cat sat"))), False)]
    eng.reset()
    logits = eng.prefill(eng.tokenizer.encode("the cat sat"))
    want = []
    while True:  # the counter of a token is its position: the cache's length when it is drawn
        params = S.sample_params(7, eng.n_past, SAMPLING["temperature"], SAMPLING["top_k"], SAMPLING["top_p"])
        want.append(int(R.SAMPLE(logits[None], params)[0]))
        if len(want) == len(got) or want[-1] in eng.tokenizer.stop_ids:
            break
        logits = eng.step(want[-1], timed=False).logits
    assert got == want[: len(got)] and len(got) > 1


def test_a_seed_repeats_its_text_and_another_seed_differs(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    a = _tokens(eng, seed=123, **SAMPLING)
    assert _tokens(eng, seed=123, **SAMPLING) == a
    assert sum(_tokens(eng, seed=s, **SAMPLING) != a for s in (1, 2, 3, 4)) >= 3
    assert _tokens(eng, seed=2**64 - 1, **SAMPLING)  # the whole seed range
    with pytest.raises(ValueError, match="seed"):
        _tokens(eng, seed=2**64, **SAMPLING)
    drawn = _tokens(eng, **SAMPLING)  # no seed: one is drawn and kept
    assert _tokens(eng, seed=eng.last_stats.seed, **SAMPLING) == drawn


def test_host_and_device_draw_the_same_tokens(tiny):
    from rocmforge.backends.numpy_backend import NumpyBackend

    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    dev = _tokens(eng, seed=5, **SAMPLING)
    host = _tokens(eng, seed=5, device_sampling=False, **SAMPLING)
    assert dev == host and eng.last_stats.sampling == "host (asked for)"
    _tokens(eng, seed=5, **{**SAMPLING, "top_k": 0})  # no cut: more candidates than the device keeps
    assert eng.last_stats.sampling.startswith("host (top_k=0")
    with pytest.raises(ValueError, match="device_sampling=True: top_k=300"):
        _tokens(eng, seed=5, device_sampling=True, **{**SAMPLING, "top_k": 300})

    class NoSample(NumpyBackend):  # a backend without `supports` samples on the host
        supports = None

    other = Engine.from_gguf(tiny, backend=NoSample(), max_ctx=64)
    assert _tokens(other, seed=5, **SAMPLING) == dev
    assert other.last_stats.sampling == "host (the numpy backend has no SAMPLE)"
    assert _tokens(eng, temperature=0.0) == _tokens(other, temperature=0.0, top_k=9, seed=1)
    assert eng.last_stats.sampling == "greedy"


def test_the_sampling_graph_returns_only_the_token(tiny):
    from rocmforge.ir.ops import Op

    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    g = eng.sample_graph()
    assert eng.sample_graph() is g and set(g.outputs) == {"sample"} and "inp_sample" in g.inputs
    assert [t.op for t in g.ops()][-2:] == [Op.MUL_MAT, Op.SAMPLE]
    assert Op.SAMPLE not in {t.op for t in eng.graph(1).ops()}  # greedy decode is as before
    eng.prefill([1, 2, 3])
    tok, timings = eng.sample_step(4, 1.0, 40, 1.0, seed=3, timed=True)
    assert 0 <= tok < eng.config.n_vocab and eng.n_past == 4 and timings[-1].op == "SAMPLE"
    with pytest.raises(RuntimeError, match="greedy choice"):
        eng.step()  # the sampled step's logits stayed on the device
    with pytest.raises(ValueError, match="1..256"):
        eng.sample_step(4, 1.0, 0, 1.0, seed=3)
    spec = GraphSpec(3, 64, sample=True)  # a prompt's last row drawn the same way
    pg = build_graph(eng.config, eng.weight_spec, spec)
    assert pg.name == "prefill3_sample" and pg.outputs["sample"].shape == (1,)


class _Spy:
    """Wraps a backend and records what each run downloads and what each memory call asks."""

    def __init__(self, inner) -> None:
        self.inner, self.fetched, self.memory_calls, self.element_reads = inner, [], [], []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, graph, inputs, timed=False, fetch=None):
        self.fetched.append((graph.name, None if fetch is None else tuple(fetch)))
        return self.inner.run(graph, inputs, timed, fetch=fetch)

    def fetch_output(self, graph, name, index=None):
        self.element_reads.append((name, index))
        return self.inner.fetch_output(graph, name, index)

    def memory(self, query_device=True):
        self.memory_calls.append(query_device)
        return self.inner.memory(query_device)


def test_an_untimed_step_downloads_the_token_and_its_logits_on_demand(tiny):
    from rocmforge.backends.numpy_backend import NumpyBackend

    spy = _Spy(NumpyBackend())
    eng = Engine.from_gguf(tiny, backend=spy, max_ctx=64)
    eng.prefill([1, 2, 3])
    spy.fetched.clear()
    res = eng.step()  # replayed (untimed) by default: the token id comes back, nothing else
    assert res.timings == [] and spy.fetched == [("decode", ("argmax",))] and "on the device" in repr(res)
    assert spy.memory_calls == [False]  # the step's counters: bookkeeping, no device query
    assert res.finite and spy.element_reads == [("logits", res.token)]  # one element, not the row
    lazy = res.logits
    assert lazy.shape == (eng.config.n_vocab,) and res.token == int(np.argmax(lazy))
    eng.reset()
    eng.prefill([1, 2, 3])
    eager = eng.step(logits=True)
    assert spy.fetched[-1] == ("decode", ("argmax", "logits")) and np.array_equal(eager.logits, lazy)
    later = eng.step()
    eng.step()
    with pytest.raises(RuntimeError, match="position 4 are gone: the engine has run since"):
        _ = later.logits
    assert "device_free" not in later.memory


def test_greedy_generate_downloads_token_ids_only_and_stops_on_nan(tiny):
    from rocmforge.backends.numpy_backend import NumpyBackend

    spy = _Spy(NumpyBackend())
    eng = Engine.from_gguf(tiny, backend=spy, max_ctx=64)
    toks = [g.token for g in eng.generate("the cat", max_new_tokens=6)]
    decode = [f for name, f in spy.fetched if name == "decode"]
    assert len(decode) == eng.last_stats.decode_steps == len(toks) - 1
    assert set(decode) == {("argmax",)} and {i for _, i in spy.element_reads} - {None} and all(
        i is not None for _, i in spy.element_reads)
    # a NaN in the output norm poisons every logit: the first NaN's index is not turned into a token
    norm = spy.inner.weights["output_norm.weight"]
    norm[...] = np.nan
    eng.reset()
    with pytest.raises(FloatingPointError):
        list(eng.generate([1, 2, 3], max_new_tokens=4))
    eng.reset()
    eng.prefill([1, 2])
    res = eng.step()
    assert not res.finite and np.isnan(res.logits).all()


def test_kv_dtype_defaults_to_f16_on_a_gpu_and_f32_on_numpy(tiny):
    import types

    from rocmforge.engine import default_kv_dtype

    assert default_kv_dtype(types.SimpleNamespace(name="hip")) == "f16"
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    half = Engine.from_gguf(tiny, backend="numpy", max_ctx=64, kv_dtype="f16")
    assert eng.kv_dtype == "f32" and half.kv_dtype == "f16"
    assert half.memory()["kv_cache"] * 2 == eng.memory()["kv_cache"]
    a, b = eng.prefill([1, 2, 3], all_logits=True), half.prefill([1, 2, 3], all_logits=True)
    assert not np.array_equal(a, b) and float(np.mean((a - b) ** 2) / np.mean(a**2)) < 1e-4
    with pytest.raises(ValueError, match="kv_dtype 'bf16': choose one of auto, f16, f32"):
        Engine.from_gguf(tiny, backend="numpy", kv_dtype="bf16")


class _ChainingNumpy:
    """The numpy backend with a run_chain that does what HipBackend's chain_advance does between replays
    (the step's argmax becomes the next token, the position advances), refusing the first call as an
    uncaptured graph would: what Engine.decode must do with it, checked without a GPU."""

    def __init__(self, nan_at: int | None = None) -> None:
        from rocmforge.backends.numpy_backend import NumpyBackend

        self.inner = NumpyBackend()
        self.nan_at = nan_at  # a chained step whose logits are reported as not finite
        self.calls: list[tuple[int, int, int]] = []  # (first token, first position, n) of each chain

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_chain(self, graph, inputs, n):
        self.calls.append((int(inputs["inp_tokens"][0]), int(inputs["inp_pos"][0]), n))
        if len(self.calls) == 1:
            return None
        inputs, toks, vals = dict(inputs), [], []
        for _ in range(n):
            outs, _ = self.inner.run(graph, inputs, fetch=("argmax", "logits"))
            toks.append(int(outs["argmax"][0]))
            vals.append(np.nan if len(vals) == self.nan_at else outs["logits"][0, toks[-1]])
            inputs = {**inputs, "inp_tokens": np.array([toks[-1]], np.int32),
                      "inp_pos": inputs["inp_pos"] + 1}
        return np.array(toks, np.int32), np.array(vals, np.float32)


def test_decode_gives_the_tokens_of_as_many_steps(tiny):
    ids = [5, 17, 99, 3]
    ref = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    ref.prefill(ids)
    want = [ref.step().token for _ in range(12)]
    for backend in ("numpy", _ChainingNumpy()):
        eng = Engine.from_gguf(tiny, backend=backend, max_ctx=64)
        eng.prefill(ids)
        assert eng.decode(5) == want[:5]
        assert eng.n_past == len(ids) + 5 and eng.next_token == want[4]
        assert eng.decode(6) + [eng.step().token] == want[5:]
        if not isinstance(backend, str):  # refused once (after the first step), then the rest in one chain
            assert backend.calls[:2] == [(want[0], len(ids) + 1, 4), (want[1], len(ids) + 2, 3)]
            assert backend.calls[2] == (want[5], len(ids) + 6, 5)


def test_decode_checks_its_arguments(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=8)
    with pytest.raises(RuntimeError, match="prefill"):
        eng.decode(2)
    eng.prefill([1, 2, 3])
    with pytest.raises(ValueError, match="n must be >= 1"):
        eng.decode(0)
    with pytest.raises(ContextOverflowError, match="max_ctx=8"):
        eng.decode(6)
    assert eng.n_past == 3  # nothing ran
    assert len(eng.decode(5)) == 5 and eng.n_past == 8


def test_decode_reports_logits_that_are_not_finite(tiny):
    eng = Engine.from_gguf(tiny, backend=_ChainingNumpy(nan_at=2), max_ctx=32)
    eng.prefill([1, 2, 3])
    # steps at 3 and 4 (the first refused chain), then a chain from 5 whose third step (position 7) is NaN
    with pytest.raises(FloatingPointError, match="position 7"):
        eng.decode(8)


@pytest.mark.parametrize("n_new", [1, 2, 3, 19, 40])
def test_greedy_generate_through_chains_equals_steps(tiny, n_new):
    """generate() at temperature 0 on a backend that chains (the double): the same tokens as step by step,
    and the engine left where step by step leaves it (the tokens decoded past the end taken back)."""
    runs = []
    for backend in ("numpy", _ChainingNumpy()):
        eng = Engine.from_gguf(tiny, backend=backend, max_ctx=64)
        toks = [g.token for g in eng.generate([5, 17, 99], max_new_tokens=n_new)]
        runs.append((toks, eng.n_past, eng.next_token, eng.last_stats.decode_steps, eng.step().token))
        if n_new > 3 and not isinstance(backend, str):  # chains ran: one refused, then up to CHAIN_CHUNK
            assert backend.calls and max(c[2] for c in backend.calls) <= 16
    assert runs[1] == runs[0]


def test_greedy_generate_stopped_early_takes_the_chain_back(tiny):
    eng_ref = Engine.from_gguf(tiny, backend="numpy", max_ctx=64)
    ref = eng_ref.generate([5, 17, 99], max_new_tokens=30)
    want = [next(ref).token for _ in range(7)]
    ref.close()
    eng = Engine.from_gguf(tiny, backend=_ChainingNumpy(), max_ctx=64)
    gen = eng.generate([5, 17, 99], max_new_tokens=30)
    assert [next(gen).token for _ in range(7)] == want
    gen.close()  # the consumer stops: 16-token chains ran further
    assert (eng.n_past, eng.next_token) == (eng_ref.n_past, eng_ref.next_token)
    assert eng.step().token == eng_ref.step().token
