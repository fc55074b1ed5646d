"""Real models on the numpy backend against llama.cpp's exact F32 run (F32 weights, F32 KV cache).

References were recorded once with llama-cpp-python (scripts/record_llamacpp_refs.py) into the package data,
rocmforge/data/refs/.
"""

import numpy as np
import pytest

from rocmforge.engine import Engine
from rocmforge.llamacpp import distance, load_refs

MODELS = ["smollm2-135m", "qwen2.5-0.5b"]

pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module", params=MODELS)
def engine_refs(request):
    eng = Engine.from_gguf(request.param, backend="numpy", max_ctx=512)
    return eng, load_refs(request.param)


def test_reference_sha_matches_model_file(engine_refs):
    import hashlib

    eng, refs = engine_refs
    h = hashlib.sha256()
    with open(eng.model.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    assert h.hexdigest() == refs.meta["source_sha256"]


def test_teacher_forced_logits_match_llamacpp_f32(engine_refs):
    eng, refs = engine_refs
    assert len(refs.texts) >= 2
    for text in refs.texts:
        toks = refs.tokens(text)
        assert len(toks) >= 200
        eng.reset()
        logits = eng.prefill(toks, all_logits=True)
        d = distance(logits, toks, refs.run("f32", text))
        print(f"{refs.name} {text}: {d}")
        assert d["top1_agree_pct"] >= 99.5, d
        assert d["mean_abs_dlogp"] <= 0.005, d


def test_greedy_generation_matches_llamacpp_f32(engine_refs):
    eng, refs = engine_refs
    assert len(refs.greedy) >= 3
    for name in refs.greedy:
        prompt = refs.arrays[f"greedy_{name}_prompt_ids"]
        want = refs.arrays[f"greedy_{name}_gen_ids"]
        assert len(want) == 32
        eng.reset()
        logits = eng.prefill(prompt)
        got = [int(np.argmax(logits))]
        for _ in range(len(want) - 1):
            got.append(eng.step(got[-1], timed=False).token)
        assert got == want.tolist(), f"{refs.name} {name}: {eng.tokenizer.decode(got)!r}"


def test_tokenizer_gives_the_reference_ids(engine_refs):
    eng, refs = engine_refs
    add_bos = refs.meta["bos"]["add_bos_used"]
    for text, entry in refs.meta["texts"].items():
        ids = eng.tokenizer.encode(entry["text"], add_bos=add_bos, parse_special=False)
        assert ids == refs.tokens(text).tolist()
    for entry in refs.meta["greedy"].values():
        ids = eng.tokenizer.encode(entry["prompt"], add_bos=add_bos, parse_special=entry["special"])
        assert ids == entry["prompt_ids"]
        assert eng.tokenizer.decode(entry["gen_ids"]) == entry["gen_text"]


@pytest.mark.parametrize("name", MODELS)
def test_same_tokens_and_logits_with_and_without_passes(name):
    from rocmforge.backends.numpy_backend import NumpyBackend

    refs = load_refs(name)
    toks = refs.tokens(refs.texts[0])[:48]
    runs = []
    for backend in (NumpyBackend(plan=False), NumpyBackend(plan=True)):
        eng = Engine.from_gguf(name, backend=backend, max_ctx=128)
        logits = [eng.prefill(toks, all_logits=True)]
        steps = [eng.step(logits=True) for _ in range(6)]
        runs.append((np.concatenate(logits + [s.logits[None] for s in steps]), [s.token for s in steps]))
    assert runs[1][1] == runs[0][1]
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    assert backend.plan_of(eng.graph(1)).arena_bytes > 0
