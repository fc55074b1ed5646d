"""Teacher-forced perplexity of a text, chunked exactly as llama.cpp's `llama-perplexity` chunks it.

The text is tokenized as llama-perplexity does (the model's special tokens added, none parsed from the
text) and cut into len // n_ctx chunks of n_ctx tokens; each chunk is run from an empty cache, its first
token replaced by BOS where the model adds one, and scored on its second half: the log-probability of
token k + 1 from the logits at position k, for k = n_ctx / 2 ... n_ctx - 2. PPL = exp(mean NLL), and the
error estimate is llama.cpp's (std of the NLL over sqrt(count - 1), times PPL).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Perplexity:
    """The result: ppl with its error estimate, the mean NLL, the scored token count and the running PPL
    after each chunk (what llama-perplexity prints as [1]x,[2]y,...)."""

    ppl: float
    ppl_err: float
    nll: float
    n_scored: int
    n_ctx: int
    running: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"PPL = {self.ppl:.4f} +/- {self.ppl_err:.5f} ({len(self.running)} chunks of {self.n_ctx}, "
                f"{self.n_scored} tokens scored)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self})"


def log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(targets[i]) under softmax(logits[i]) in float64: [n, vocab], [n] -> [n]."""
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return z[np.arange(len(targets)), targets] - lse


def perplexity(engine, text: str | Sequence[int], n_ctx: int = 512, n_chunks: int | None = None,
               progress: Callable[[int, int, float], None] | None = None) -> Perplexity:
    """Perplexity of `text` (or token ids, used as given) on the engine's model; progress(i, n, ppl) after
    each chunk. Resets the engine's context."""
    if n_ctx < 4 or n_ctx % 2:
        raise ValueError(f"n_ctx must be an even number >= 4, got {n_ctx}")
    if n_ctx > engine.max_ctx:
        raise ValueError(f"n_ctx={n_ctx} is larger than the engine's max_ctx={engine.max_ctx}")
    tok = engine.tokenizer
    ids = tok.encode(text, parse_special=False) if isinstance(text, str) else [int(t) for t in text]
    if len(ids) < 2 * n_ctx:
        raise ValueError(f"the text has {len(ids)} tokens; perplexity at n_ctx={n_ctx} needs at least "
                         f"{2 * n_ctx} (two chunks), as llama-perplexity does")
    n = len(ids) // n_ctx if n_chunks is None else min(int(n_chunks), len(ids) // n_ctx)
    if n < 1:
        raise ValueError(f"n_chunks must be positive, got {n_chunks}")
    bos = tok.bos_id if tok.add_bos else None
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n):
        chunk = ids[i * n_ctx:(i + 1) * n_ctx]
        if bos is not None:
            chunk = [bos, *chunk[1:]]
        engine.reset()
        logits = engine.prefill(chunk, all_logits=True)  # [n_ctx, vocab]
        lp = log_softmax_at(logits[first:n_ctx - 1], np.asarray(chunk[first + 1:], dtype=np.int64))
        nll -= float(lp.sum())
        nll2 += float((lp ** 2).sum())
        count += len(lp)
        running.append(math.exp(nll / count))
        if progress is not None:
            progress(i + 1, n, running[-1])
    engine.reset()
    mean, mean2 = nll / count, nll2 / count
    var = mean2 - mean * mean
    err = math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0
    ppl = math.exp(mean)
    return Perplexity(ppl, err * ppl, mean, count, n_ctx, running)
