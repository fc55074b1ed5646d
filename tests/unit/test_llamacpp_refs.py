"""Teacher-forced distances between logits and recorded runs: zero against itself, the log-softmax
difference otherwise, and the recorded files' own summaries reproduced from their arrays."""

import numpy as np
import pytest

from rocmforge.llamacpp import distance, distance_between, dlogp, dlogp_between, load_refs


def _record(logits: np.ndarray, tokens: np.ndarray) -> dict[str, np.ndarray]:
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
    return {
        "next_logit": logits[np.arange(len(tokens) - 1), tokens[1:]],
        "lse": lse,
        "top_ids": np.argsort(-logits, axis=-1)[:, :10],
    }


def test_dlogp_is_the_log_softmax_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 9, 50))
    tokens = rng.integers(0, 50, 9)
    ra, rb = _record(a, tokens), _record(b, tokens)
    assert np.all(dlogp(a, tokens, ra) < 1e-12)
    assert distance(a, tokens, ra)["top1_agree_pct"] == 100.0

    def logp(x):
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    want = np.abs(logp(a)[np.arange(8), tokens[1:]] - logp(b)[np.arange(8), tokens[1:]])
    np.testing.assert_allclose(dlogp(a, tokens, rb), want, rtol=1e-10)
    np.testing.assert_allclose(dlogp_between(ra, rb), want, rtol=1e-10)
    assert distance_between(ra, rb)["mean_abs_dlogp"] == pytest.approx(want.mean())


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-0.5b"])
def test_recorded_quant_vs_f32_summaries_follow_from_the_arrays(name):
    refs = load_refs(name)
    for text in refs.texts:
        got = distance_between(refs.run("quant", text), refs.run("f32", text))
        want = refs.meta["quant_vs_f32"][text]
        assert got["mean_abs_dlogp"] == pytest.approx(want["mean_abs_dlogp_nats"], rel=1e-5)
        assert got["top1_agree_pct"] == pytest.approx(want["top1_agree_pct"])
