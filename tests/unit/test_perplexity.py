"""Perplexity as llama-perplexity computes it: chunks of n_ctx tokens from an empty cache, BOS first where
the model adds one, each chunk scored on its second half."""

import math

import numpy as np
import pytest

from rocmforge.cli import main
from rocmforge.engine import Engine
from rocmforge.perplexity import log_softmax_at, perplexity
from rocmforge.synth import write_tiny_model


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    return Engine.from_gguf(write_tiny_model(tmp_path_factory.mktemp("m") / "m.gguf"), backend="numpy",
                            max_ctx=32)


def _by_steps(eng, chunk, first):
    """The chunk's NLL terms, token by token through step() (a different path from prefill's)."""
    eng.reset()
    logits = [eng.prefill(chunk[:1])]
    for t in chunk[1:-1]:
        logits.append(eng.step(t, timed=False).logits)
    lp = log_softmax_at(np.stack(logits)[first:], np.asarray(chunk[first + 1:]))
    return -lp


def test_perplexity_is_exp_of_the_mean_nll_over_second_halves(eng):
    ids = [int(t) for t in np.random.default_rng(0).integers(0, eng.config.n_vocab, 70)]
    res = perplexity(eng, ids, n_ctx=16)
    assert len(res.running) == 4 and res.n_scored == 4 * 7  # 70 // 16 chunks, 16 - 8 - 1 each
    terms = np.concatenate([_by_steps(eng, ids[i * 16:(i + 1) * 16], 8) for i in range(4)])
    assert res.nll == pytest.approx(terms.mean(), rel=1e-5)
    assert res.ppl == pytest.approx(math.exp(terms.mean()), rel=1e-5)
    assert res.ppl_err == pytest.approx(terms.std() / math.sqrt(len(terms) - 1) * res.ppl, rel=1e-3)
    assert res.running[0] == pytest.approx(math.exp(terms[:7].mean()), rel=1e-5)
    assert perplexity(eng, ids, n_ctx=16, n_chunks=2).n_scored == 14


def test_bos_replaces_each_chunks_first_token_where_the_model_adds_one(eng, monkeypatch):
    ids = list(range(5, 5 + 40))
    fed = []
    real = Engine.prefill

    def spy(self, toks, *a, **k):
        fed.append(list(toks))
        return real(self, toks, *a, **k)

    monkeypatch.setattr(Engine, "prefill", spy)
    monkeypatch.setattr(type(eng.tokenizer), "add_bos", property(lambda s: True))
    perplexity(eng, ids, n_ctx=16)
    bos = eng.tokenizer.bos_id
    assert [f[0] for f in fed] == [bos, bos] and fed[1][1:] == ids[17:32]


def test_bad_settings_are_refused(eng):
    with pytest.raises(ValueError, match="at least 32"):
        perplexity(eng, list(range(20)), n_ctx=16)
    with pytest.raises(ValueError, match="even number"):
        perplexity(eng, list(range(100)), n_ctx=15)
    with pytest.raises(ValueError, match="max_ctx"):
        perplexity(eng, list(range(200)), n_ctx=64)


def test_cli_perplexity_prints_the_running_and_final_estimate(tmp_path, capsys):
    model = write_tiny_model(tmp_path / "m.gguf")
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat " * 20)
    assert main(["perplexity", "--model", str(model), "--backend", "numpy", "-f", str(text), "-c", "16",
                 "--chunks", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1]") and "[3]" in out and "Final estimate: PPL = " in out
