"""llama.cpp side by side: recorded reference logits (package data, rocmforge/data/refs) and llama-bench
JSONL runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

REFS_DIR = Path(str(files("rocmforge") / "data" / "refs"))  # scripts/record_llamacpp_refs.py writes here


@dataclass
class Refs:
    """Summaries of llama.cpp runs of one model (scripts/record_llamacpp_refs.py made them)."""

    name: str
    arrays: dict[str, np.ndarray]
    meta: dict

    @property
    def texts(self) -> list[str]:
        return [str(t) for t in self.arrays["text_names"]]

    @property
    def greedy(self) -> list[str]:
        return [str(t) for t in self.arrays["greedy_names"]]

    def tokens(self, text: str) -> np.ndarray:
        return self.arrays[f"tokens_{text}"]

    def run(self, run: str, text: str) -> dict[str, np.ndarray]:
        """run is 'f32' (the exact yardstick: F32 weights, F32 KV) or 'quant' (llama.cpp's normal CPU run)."""
        p = f"{run}_{text}_"
        return {k[len(p):]: v for k, v in self.arrays.items() if k.startswith(p)}


def load_refs(name: str, refs_dir: Path = REFS_DIR) -> Refs:
    """The recorded references of model `name` (refs_dir/<name>.npz and .json)."""
    d = np.load(refs_dir / f"{name}.npz")
    meta = json.loads((refs_dir / f"{name}.json").read_text())
    return Refs(name, {k: d[k] for k in d.files}, meta)


def _lse(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def dlogp(logits: np.ndarray, tokens: np.ndarray, ref: dict[str, np.ndarray]) -> np.ndarray:
    """|d log p(next token)| in nats at positions 0..n-2, our logits [n, n_vocab] against a recorded run."""
    nxt = tokens[1:]
    ours = logits[np.arange(len(nxt)), nxt].astype(np.float64) - _lse(logits)[:-1]
    return np.abs(ours - _logp_next(ref))


def _logp_next(run: dict[str, np.ndarray]) -> np.ndarray:
    return run["next_logit"].astype(np.float64) - run["lse"][:-1].astype(np.float64)


def dlogp_between(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """|d log p(next token)| per position between two recorded runs (e.g. llama.cpp quantized vs F32)."""
    return np.abs(_logp_next(a) - _logp_next(b))


def distance(logits: np.ndarray, tokens: np.ndarray, ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Teacher-forced distance of our logits [n, n_vocab] from a recorded run: mean |d log p(next)| in
    nats over positions 0..n-2, and top-1 agreement (%) over all positions."""
    d = dlogp(logits, tokens, ref)
    top1 = np.argmax(logits, axis=-1) == ref["top_ids"][:, 0]
    return {"mean_abs_dlogp": float(d.mean()), "max_abs_dlogp": float(d.max()),
            "top1_agree_pct": float(100.0 * top1.mean()), "n": int(len(tokens))}


def distance_between(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """The same figures between two recorded runs (e.g. llama.cpp quantized vs F32)."""
    d = dlogp_between(a, b)
    top1 = a["top_ids"][:, 0] == b["top_ids"][:, 0]
    return {"mean_abs_dlogp": float(d.mean()), "max_abs_dlogp": float(d.max()),
            "top1_agree_pct": float(100.0 * top1.mean()), "n": int(len(top1))}


def read_bench_jsonl(path: str | Path):
    """llama-bench `-o jsonl` output as a DataFrame (one row per test; pp = n_prompt, tg = n_gen)."""
    import pandas as pd

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    df = pd.DataFrame(rows)
    if not df.empty:
        df["test"] = [f"pp{p}" if p else f"tg{g}" for p, g in zip(df["n_prompt"], df["n_gen"], strict=True)]
    return df
